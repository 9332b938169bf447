"""Arrays that are views of one flat buffer, back to back.

A cell's params (and a compiled backward's param gradients, and an optimiser's buffers)
are views of one 1-D buffer, so that a norm, a clip or an optimiser step over the whole
model is one loop over contiguous memory instead of one call a parameter. Nothing relies
on it for correctness: whoever wants the flat buffer asks `flat_span`, which checks, and
falls back to the arrays one at a time where the views were replaced (a user who assigns
`cell.params["W"] = W2` gets a separate array, and everything still works).
"""

from __future__ import annotations

import math
import weakref
from collections import OrderedDict
from typing import Sequence

import numpy as np

# Spans found or made lately, keyed by the arrays' ids: a training step asks about the
# same params, gradients and optimiser buffers several times (the norm, the clipping,
# the update), and checking 26 arrays' pointers costs about 0.1 ms a time. An entry holds
# weak references only (old gradients must not be kept alive): a hit needs every array
# alive and the very same object (so an id reused by a new array misses), with its
# shape unchanged (a view's memory never moves, but its shape can be reassigned).
_RECENT: OrderedDict = OrderedDict()
_RECENT_SIZE = 16


def flat_views(shapes: Sequence[tuple[int, ...]], dtype, fill: float | None = 0.0
               ) -> tuple[np.ndarray, list[np.ndarray]]:
    """One 1-D buffer (zeros, or uninitialised with fill=None) and C-contiguous views of
    it of the given shapes, in order, back to back."""
    sizes = [math.prod(s) for s in shapes]
    total = sum(sizes)
    buffer = np.zeros(total, dtype) if fill == 0.0 else np.empty(total, dtype)
    if fill not in (None, 0.0):
        buffer.fill(fill)
    views, at = [], 0
    for shape, size in zip(shapes, sizes):
        views.append(buffer[at:at + size].reshape(shape))
        at += size
    if views:
        _remember(views, buffer, 0, total)
    return buffer, views


def _remember(arrays: Sequence[np.ndarray], root: np.ndarray, begin: int, stop: int) -> None:
    key = tuple(map(id, arrays))
    _RECENT[key] = (tuple(weakref.ref(a) for a in arrays), tuple(a.shape for a in arrays),
                    weakref.ref(root), begin, stop)
    _RECENT.move_to_end(key)
    while len(_RECENT) > _RECENT_SIZE:
        _RECENT.popitem(last=False)


def _recalled(arrays: Sequence[np.ndarray]) -> np.ndarray | None:
    found = _RECENT.get(tuple(map(id, arrays)))
    if found is None:
        return None
    refs, shapes, root_ref, begin, stop = found
    root = root_ref()
    if root is None or not root.flags.writeable or not all(
            ref() is a and a.shape == s and a.flags.writeable
            for ref, a, s in zip(refs, arrays, shapes)):
        return None
    return root.reshape(-1)[begin:stop]


def _root(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def flat_span(arrays: Sequence[np.ndarray]) -> np.ndarray | None:
    """A writeable 1-D array over exactly the memory of `arrays`, if they are
    C-contiguous, of one dtype, and lie back to back in this order in one buffer; else
    None. Cheap: pointer arithmetic, no copy."""
    if not arrays:
        return None
    recalled = _recalled(arrays)
    if recalled is not None:
        return recalled
    first = arrays[0]
    if not isinstance(first, np.ndarray):
        return None
    dtype, start = first.dtype, first.ctypes.data
    end = start
    for a in arrays:
        if (not isinstance(a, np.ndarray) or a.dtype != dtype or not a.flags.c_contiguous
                or not a.flags.writeable or a.ctypes.data != end):
            return None
        end += a.nbytes
    root = _root(first)
    if not (root.flags.c_contiguous and root.dtype == dtype and root.flags.writeable):
        return None
    offset = start - root.ctypes.data
    if offset < 0 or end > root.ctypes.data + root.nbytes or offset % dtype.itemsize:
        return None
    begin = offset // dtype.itemsize
    stop = begin + (end - start) // dtype.itemsize
    _remember(arrays, root, begin, stop)
    return root.reshape(-1)[begin:stop]
