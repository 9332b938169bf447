"""What a forward read, kept for its backward: the param and input arrays a `Run` was
computed from, and a fingerprint of each.

Input: the arrays a forward read, by name ("param W_i", "input x"). Output: a `Seen`,
which the run's tape holds and backward checks before it computes anything.
Invariant: backward gives the gradients of the forward that was run, or raises.

- The run holds the arrays themselves, so a param replaced between the two
  (`cell.params["W"] = W2`) changes nothing: backward reads the array its forward read.
- It holds their fingerprints from the forward, so that one of them changed in place in
  between (`cell.params["W"] += ...`, `x[...] = 0`) makes backward raise a BindError
  naming it, where it would otherwise mix the new values with the old ones on the tape.

Why fingerprints and not copies: a copy would let backward go on with the old values
instead of raising, but it writes every byte once more, and it cost more. At the
benchmark's char shape (LSTM, T=100, B=1, I=65, H=128, float32: 388 KB of params and a
26 KB input against a forward of about 0.52 ms), measured by
benchmarks/backward_snapshot.py on a 2-core AMD EPYC VM: copying them into buffers kept
by the cell took 11.5-12.2 us (2.2-2.4% of the forward); fingerprinting them in a
compiled call of their own took 7.8-8.5 us, and with the Python around it added 15-17 us
to a forward (2.9-3.1%) and 14-15 us to a backward (1.8%), the params then coming from
L3. So the compiled cpu kernels take them themselves (their `seen` argument,
rnndsl.codegen.emit): the forward kernel as it starts, its backward kernel again, and
the runtime compares the two (`Seen.taken_by_kernel`). That costs no call and no
unboxing of its own. A weight the kernel stacks for a GEMM by a flat copy is
fingerprinted by that copy, chunk by chunk from L1 (kernels.stack_rows_seen), so its
bytes come from memory once; the others are taken first, which brings them into cache
for the kernel's transposing copies (a pass fused into those ran 4x slower: it stops
them vectorising). 5-6 us a forward (0.9-1.1%) and 5-7 us a backward (0.7-1.0%), the
median of 2000 pairs with and without; a pass over 413 KB in cache is 3.7 us, as fast
as a plain sum of the words (L2's bandwidth). Where a kernel cannot take them (row
blocks, where each kernel sees its rows' copy of x; modules from rnndsl 0.1.0; the cuda
target, which fingerprints on the device), the runtime takes them in one call.

The fingerprint of an array: its bytes in C order as 32-bit words w[0 .. n), taken in
pairs p_i = w[2i] | w[2i+1] << 32 (an odd last word is a pair with a high half of 0),
summed as sum_i (2i + 1) * p_i mod 2**64. Each weight is odd, so a change to any one pair
always changes the sum; the weights differ, so swapping two unequal values changes it too
(unless their difference times 2(j - i) is 0 mod 2**64). It catches accidents, not an
adversary. `kernels.fingerprints` computes it in one compiled call for all of a run's
arrays; `fingerprint` below, in NumPy, is the reference and what the interp target uses.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..core.errors import BindError

_MASK = (1 << 64) - 1


def fingerprint(array) -> int:
    """The fingerprint of one array (the module docstring defines it), in NumPy."""
    words = np.ascontiguousarray(array).reshape(-1).view(np.uint32)
    half = words.size // 2
    pairs = words[0:2 * half:2].astype(np.uint64) | \
        (words[1:2 * half:2].astype(np.uint64) << np.uint64(32))
    weights = np.arange(1, 2 * half, 2, dtype=np.uint64)
    total = int((pairs * weights).sum(dtype=np.uint64))     # array arithmetic wraps
    if words.size % 2:
        total += int(words[-1]) * (2 * half + 1)
    return total & _MASK


def numpy_fingerprints(arrays: tuple) -> np.ndarray:
    """The fingerprints of host arrays of any layout, in NumPy (the interp target)."""
    return np.array([fingerprint(a) for a in arrays], dtype=np.uint64)


_COMPILED: list = []       # kernels.fingerprints, or None under NUMBA_DISABLE_JIT


def compiled_fingerprints(arrays: tuple) -> np.ndarray:
    """The fingerprints of C-contiguous host arrays in one compiled call (kernels.py);
    in NumPy under NUMBA_DISABLE_JIT, where the kernel would be plain Python."""
    if not _COMPILED:
        from numba.core import config

        from ..kernels.loops import fingerprints
        _COMPILED.append(None if config.DISABLE_JIT else fingerprints)
    kernel = _COMPILED[0]
    if kernel is None or not arrays:
        return numpy_fingerprints(arrays)
    out = np.empty(len(arrays), np.uint64)
    kernel(arrays, out)
    return out


class Seen:
    """The arrays a forward read, their names ("param W", "input x") and their
    fingerprints at the forward. `fingerprints` is the target's way to take them (a
    tuple of arrays -> an array of uint64): the same function at forward and backward."""

    __slots__ = ("names", "arrays", "sums", "fingerprints", "by_kernel")

    def __init__(self, names: tuple[str, ...], arrays: tuple,
                 fingerprints: Callable[[tuple], np.ndarray]):
        assert len(names) == len(arrays), f"{len(names)} names for {len(arrays)} arrays"
        self.names = names
        self.arrays = arrays
        self.fingerprints = fingerprints
        self.by_kernel = False
        self.sums = fingerprints(arrays)

    @classmethod
    def taken_by_kernel(cls, names: tuple[str, ...], sums: np.ndarray) -> "Seen":
        """The fingerprints a forward kernel took as it read the arrays (its `seen`
        argument, rnndsl.codegen.emit): the run's backward kernel takes them again and
        the runtime compares them (`compare`, rnndsl.cells.compiled), so this keeps no
        arrays and `check` is not for it."""
        self = cls.__new__(cls)
        self.names, self.arrays, self.fingerprints = names, None, None
        self.by_kernel = True
        self.sums = sums
        return self

    def check(self) -> None:
        """Raise BindError if an array changed since the forward (the first one, named)."""
        assert not self.by_kernel, "the backward kernel takes these: compare its sums"
        self.compare(self.fingerprints(self.arrays))

    def compare(self, now: np.ndarray) -> None:
        """Raise BindError if `now`, the arrays' fingerprints taken again, differ from
        the forward's (naming the first array that changed)."""
        if now.tobytes() == self.sums.tobytes():    # 0.3 us; np.array_equal takes 2
            return
        name = self.names[int(np.flatnonzero(now != self.sums)[0])]
        kind, short = name.split(" ", 1)
        hint = (f"update params after backward, or replace this one instead "
                f"(cell.params['{short}'] = new_array): the run keeps the array it read"
                if kind == "param" else
                "change it after backward, or give forward a copy")
        raise BindError(f"{name} was changed in place since this run's forward; backward "
                        f"needs the values that forward saw: {hint}")
