"""The lecture's input/output modes, on top of any cell (every target).

    many-to-many   aligned: an output at every step; `cell.forward(x)` as it is.
    many-to-one    a sequence in, one result out: the output at each sequence's last
                   step (`last_step`), trained with a loss there only (`last_step_mask`,
                   or `last_step_cotangent` for a hand-written loss).
    one-to-many    one input, a sequence out: the input at the first step and zeros
                   after (`first_step_inputs`), or at every step (`repeated_inputs`);
                   or each output fed back as the next input (`feed_back`).
    one-to-one     T = 1.

Variable lengths come from `cell.forward(x, lengths=...)`: a sequence's state is frozen
after its end, so `run.state` is each sequence's state at its own last step.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..core.errors import BindError
from ..core.numbers import is_whole


def check_lengths(lengths, T: int, B: int, minimum: int = 0) -> np.ndarray:
    """`lengths` as B integers in minimum..T, or a BindError saying what is wrong."""
    arr = np.asarray(lengths)
    if isinstance(lengths, (list, tuple)) and any(isinstance(n, (bool, np.bool_))
                                                  for n in lengths):
        raise BindError(f"lengths must be {B} integers, one per sequence; got "
                        f"{list(lengths)!r}, which holds True or False")
    if arr.shape != (B,) or arr.dtype.kind not in "iu":
        raise BindError(f"lengths must be {B} integers, one per sequence; got {arr.dtype} "
                        f"of shape {arr.shape}")
    if arr.size and (arr.min() < minimum or arr.max() > T):
        what = "lengths" if minimum == 0 else "for a last step, lengths"
        raise BindError(f"{what} must lie in {minimum}..T = {minimum}..{T}; got "
                        f"{arr.min()}..{arr.max()}")
    return arr


def _lengths(lengths, T: int, B: int) -> np.ndarray:
    """Each sequence's length, for a last step (at least 1); None: all of T."""
    return np.full(B, T) if lengths is None else check_lengths(lengths, T, B, minimum=1)


def last_step(outputs: np.ndarray, lengths=None) -> np.ndarray:
    """(T, B, ...) -> (B, ...): each sequence's output at its own last step."""
    T, B = outputs.shape[:2]
    ends = _lengths(lengths, T, B) - 1
    return outputs[ends, np.arange(B)]


def last_step_mask(T: int, B: int, lengths=None) -> np.ndarray:
    """(T, B) booleans, true only at each sequence's last step: a loss mask for
    many-to-one training with `Trainer` (targets repeated along T)."""
    ends = _lengths(lengths, T, B) - 1
    mask = np.zeros((T, B), bool)
    mask[ends, np.arange(B)] = True
    return mask


def last_step_cotangent(d_last: np.ndarray, T: int, lengths=None) -> np.ndarray:
    """(B, ...) gradient of a loss of `last_step(outputs)` -> (T, B, ...) d_outputs."""
    B = d_last.shape[0]
    ends = _lengths(lengths, T, B) - 1
    d = np.zeros((T,) + d_last.shape, d_last.dtype)
    d[ends, np.arange(B)] = d_last
    return d


def first_step_inputs(x0: np.ndarray, T: int) -> np.ndarray:
    """(B, I) -> (T, B, I): x0 at the first step, zeros after (one-to-many)."""
    x0 = np.asarray(x0)
    if x0.ndim != 2:
        raise BindError(f"the one input must be (B, features), got shape {x0.shape}")
    x = np.zeros((T,) + x0.shape, x0.dtype)
    x[0] = x0
    return x


def repeated_inputs(x0: np.ndarray, T: int) -> np.ndarray:
    """(B, I) -> (T, B, I): the same input at every step (a conditioning vector)."""
    x0 = np.asarray(x0)
    if x0.ndim != 2:
        raise BindError(f"the one input must be (B, features), got shape {x0.shape}")
    return np.ascontiguousarray(np.broadcast_to(x0, (T,) + x0.shape))


def feed_back(cell, x0: np.ndarray, steps: int, feedback: Callable[[np.ndarray], np.ndarray],
              output: str | None = None, state=None) -> tuple[np.ndarray, dict]:
    """One-to-many with the output fed back: x0 is the first input, `feedback(y_t)` the
    next one. Each step runs the compiled cell for T = 1 from the carried state, so the
    work is linear in `steps`. Returns the outputs (steps, B, ...) and the final state.
    (For training with the output fed back, write the feedback into the cell as a state,
    as specs/jordan.rnn does: then BPTT sees it.)"""
    spec = type(cell).spec
    names = [o.name for o in spec.outputs]
    if not is_whole(steps, 1):
        raise BindError(f"steps must be a whole number of at least 1, got {steps!r}")
    if output is None:
        if len(names) != 1:
            raise BindError(f"the cell has outputs {', '.join(names)}; say which is fed "
                            "back with output='...'")
        output = names[0]
    elif output not in names:
        raise BindError(f"the cell has no output '{output}'; its outputs: {', '.join(names)}")
    x = np.asarray(x0)
    ys = []
    for _ in range(steps):
        run = cell.forward(x[None], state=state)
        y = run.outputs[output][0]
        ys.append(y)
        state = run.state
        x = np.asarray(feedback(y), dtype=cell.dtype)
    return np.stack(ys), state
