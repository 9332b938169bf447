"""Losses for training cells: each returns the loss and its gradient in one pass.

    loss, d_pred = softmax_cross_entropy(logits, targets, mask=None)
    g = cell.backward(run, d_outputs={"logits": d_pred})

Every loss takes the cell's output as it comes out of `forward` (time-major, `(T, B, ...)`,
or any other leading axes) and returns `(loss: float, d_pred)`, where `d_pred` has the
prediction's shape and dtype and is the exact gradient of the returned loss. Returning
both at once is why these are not plain formulas: the gradient reuses the forward's
softmax or sigmoid, and `d_pred` can go straight into `cell.backward` (which insists on
the cell's dtype).

Reductions follow PyTorch's `reduction="mean"`: the mean over the positions a mask keeps
(all of them without a mask). A mask that keeps nothing gives a loss of 0 and a zero
gradient, so a chunk that is all padding is a no-op rather than a NaN.

Stability: cross-entropy uses the log-sum-exp with the row maximum subtracted, and the
binary cross-entropy the softplus form `max(z, 0) - z * y + log1p(exp(-|z|))`; no `exp`
ever sees a positive argument, so logits of 1e4 in float32 neither overflow nor warn.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

Loss = Callable[..., "tuple[float, np.ndarray]"]
_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_NO_MASK = np.zeros(0, dtype=bool)       # the compiled loss's "every position"
_JIT: list = []


def _jit_disabled() -> bool:
    """Under NUMBA_DISABLE_JIT the compiled loss would be plain Python over every element:
    the NumPy path is the one to take."""
    if not _JIT:
        from numba.core import config
        _JIT.append(bool(config.DISABLE_JIT))
    return _JIT[0]


class DivergedError(ValueError):
    """Predictions (or gradients) no longer finite: a training run diverging, or an input
    that is bad. A ValueError, as before; `rnndsl train`, whose inputs are token rows it
    made, reports it as its run diverging. `values`: which were not finite ("logits",
    "gradients")."""

    def __init__(self, message: str, values: str):
        super().__init__(message)
        self.values = values


def _check_pred(what: str, pred) -> np.ndarray:
    if not isinstance(pred, np.ndarray):
        raise ValueError(f"{what} must be a NumPy array, got {type(pred).__name__}")
    if not np.issubdtype(pred.dtype, np.floating):
        raise ValueError(f"{what} must be a floating-point array, got dtype {pred.dtype}")
    if pred.ndim == 0:
        raise ValueError(f"{what} must have at least one axis, got a 0-d array")
    bad = ~np.isfinite(pred)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DivergedError(f"{what} has a non-finite value ({pred[where]}) at index "
                            f"{where}: the model diverged (try a smaller learning rate or "
                            "gradient clipping) or its input is bad", what)
    return pred


def check_mask(mask, shape: tuple[int, ...], layout: str) -> np.ndarray | None:
    """The mask as booleans, or None for "every position". Its shape is `shape` (the
    targets' positions); 0/1 numbers are accepted as well as booleans."""
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"mask has shape {mask.shape}; expected {shape} = {layout}")
    if mask.dtype != np.bool_:
        if not (np.issubdtype(mask.dtype, np.number) and np.isin(mask, (0, 1)).all()):
            raise ValueError(f"mask must be boolean (or 0/1), got dtype {mask.dtype} with "
                             "other values")
        mask = mask.astype(bool)
    return mask


def softmax_cross_entropy(logits: np.ndarray, targets, mask=None) -> tuple[float, np.ndarray]:
    """Mean of -log softmax(logits)[target] over the positions `mask` keeps.

    logits: (..., V) floats; targets: integer class ids of shape logits.shape[:-1], each in
    [0, V); mask: booleans of the targets' shape. The gradient is
    (softmax(logits) - onehot(targets)) * mask / count.

    float32 and float64 logits go through one compiled pass (rnndsl.kernels.losses: no
    BLAS, no temporaries); other dtypes, and any input it refuses (a non-finite logit, a
    target out of range), through `softmax_cross_entropy_numpy`, the reference, which
    words the error.
    """
    if (not isinstance(logits, np.ndarray) or logits.dtype not in _KERNEL_DTYPES
            or logits.ndim == 0 or _jit_disabled()):
        return softmax_cross_entropy_numpy(logits, targets, mask)
    V = logits.shape[-1]
    positions = logits.shape[:-1]
    targets = np.asarray(targets)
    if (targets.shape != positions or not np.issubdtype(targets.dtype, np.integer)
            or V == 0 or targets.size == 0):
        return softmax_cross_entropy_numpy(logits, targets, mask)
    try:
        mask = check_mask(mask, positions, "logits.shape[:-1]")
    except ValueError:                 # the reference's checks come first, in its order
        return softmax_cross_entropy_numpy(logits, targets, mask)
    count = targets.size if mask is None else int(np.count_nonzero(mask))
    if count == 0:
        return softmax_cross_entropy_numpy(logits, targets, mask)
    flat = np.ascontiguousarray(logits).reshape(-1, V)
    d_logits = np.empty(logits.shape, logits.dtype)
    nll = np.empty(positions)
    if softmax_cross_entropy_rows(flat, targets, mask, count, d_logits, nll) is None:
        return softmax_cross_entropy_numpy(logits, targets, mask)    # it words the error
    return float(nll.sum()) / count, d_logits


def softmax_cross_entropy_rows(logits: np.ndarray, targets: np.ndarray, mask, count: int,
                               d_logits: np.ndarray, nll: np.ndarray) -> bool | None:
    """Part of a softmax cross-entropy over more rows (all of them, or a row block's in
    Trainer.step): each position's -log softmax(logits)[target] into `nll` (0 where
    `mask` says; None keeps all), and the gradient divided by `count` (the whole's kept
    positions) into d_logits. logits: (..., V) of float32 or float64, C-contiguous;
    targets, mask, nll (float64): of its positions' shape; d_logits: like logits. True;
    None where the rows hold a non-finite logit or a target out of range
    (`softmax_cross_entropy` on the whole then says which). The compiled pass of
    rnndsl.kernels.losses: one compiled version a dtype (ids as intp)."""
    from ..kernels import losses as kernels
    V = logits.shape[-1]
    flat = logits.reshape(-1, V)
    out = nll.reshape(-1) if nll.flags.c_contiguous else np.empty(nll.size)
    status = kernels.softmax_cross_entropy(
        flat, *kernels.as_bits(flat), np.ascontiguousarray(targets, dtype=np.intp).reshape(-1),
        _NO_MASK if mask is None else np.ascontiguousarray(mask, dtype=bool).reshape(-1),
        count, d_logits.reshape(-1, V), out)
    if status != kernels.OK:
        return None
    if not nll.flags.c_contiguous:      # a block's columns of the whole's (T, B)
        nll[...] = out.reshape(nll.shape)
    return True


def softmax_cross_entropy_numpy(logits: np.ndarray, targets, mask=None
                                ) -> tuple[float, np.ndarray]:
    """`softmax_cross_entropy` in NumPy: the reference, and what it falls back to."""
    logits = _check_pred("logits", logits)
    V = logits.shape[-1]
    positions = logits.shape[:-1]
    layout = "logits.shape[:-1]"
    targets = np.asarray(targets)
    if targets.shape != positions:
        raise ValueError(f"targets have shape {targets.shape}; expected {positions} = "
                         f"{layout} (one class id per position; logits are {logits.shape})")
    if not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"targets must be integer class ids, got dtype {targets.dtype}")
    bad = (targets < 0) | (targets >= V)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"target {int(targets[where])} at index {where} is out of range: "
                         f"class ids must be in [0, {V}) for logits with {V} classes")
    mask = check_mask(mask, positions, layout)
    count = targets.size if mask is None else int(mask.sum())
    d_logits = np.zeros_like(logits)
    if count == 0:
        return 0.0, d_logits
    shifted = logits - logits.max(axis=-1, keepdims=True)       # <= 0: exp cannot overflow
    exp = np.exp(shifted)
    total = exp.sum(axis=-1, keepdims=True)                     # in [1, V]: log is safe
    picked = np.take_along_axis(shifted, targets[..., None], axis=-1)[..., 0]
    nll = np.log(total[..., 0]) - picked                        # -log p(target) >= 0
    if mask is not None:
        nll = np.where(mask, nll, 0)
    loss = float(nll.sum(dtype=np.float64)) / count
    np.divide(exp, total, out=d_logits)
    np.put_along_axis(d_logits, targets[..., None],
                      np.take_along_axis(d_logits, targets[..., None], axis=-1) - 1, axis=-1)
    if mask is not None:
        d_logits *= mask[..., None]
    d_logits /= count
    return loss, d_logits


def _elementwise_mask(mask, pred: np.ndarray) -> tuple[np.ndarray | None, int]:
    """A mask over positions (a leading part of pred's shape) or over every element; the
    count is that of the ELEMENTS it keeps, as a mean over elements needs."""
    if mask is None:
        return None, pred.size
    shape = np.shape(mask)
    if shape != pred.shape[:len(shape)]:
        raise ValueError(f"mask has shape {shape}; expected a leading part of the "
                         f"prediction's shape {pred.shape} (e.g. {pred.shape[:2]} for "
                         "(T, B) positions)")
    mask = check_mask(mask, shape, "a leading part of the prediction's shape")
    full = mask.reshape(shape + (1,) * (pred.ndim - len(shape)))
    per_position = math.prod(pred.shape[len(shape):])
    return full, int(mask.sum()) * per_position


def _check_target(targets, pred: np.ndarray) -> np.ndarray:
    targets = np.asarray(targets)
    if targets.shape != pred.shape:
        raise ValueError(f"targets have shape {targets.shape}; expected the prediction's "
                         f"shape {pred.shape}")
    if not (np.issubdtype(targets.dtype, np.number) or targets.dtype == np.bool_):
        raise ValueError(f"targets must be numbers, got dtype {targets.dtype}")
    if not np.isfinite(targets).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(targets))[0])
        raise ValueError(f"targets have a non-finite value at index {where}")
    return targets.astype(pred.dtype, copy=False)


def mse(pred: np.ndarray, target, mask=None) -> tuple[float, np.ndarray]:
    """Mean of (pred - target)**2 over the elements kept (PyTorch's MSELoss: no 1/2).

    mask may cover positions (e.g. (T, B) for a (T, B, O) prediction) or every element.
    """
    pred = _check_pred("pred", pred)
    target = _check_target(target, pred)
    mask, count = _elementwise_mask(mask, pred)
    if count == 0:
        return 0.0, np.zeros_like(pred)
    diff = pred - target
    if mask is not None:
        diff = np.where(mask, diff, 0).astype(pred.dtype, copy=False)
    loss = float(np.square(diff, dtype=np.float64).sum()) / count
    return loss, (diff * (2.0 / count)).astype(pred.dtype, copy=False)


def binary_cross_entropy(logits: np.ndarray, targets, mask=None) -> tuple[float, np.ndarray]:
    """Mean of -[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))] from logits z.

    Written as softplus(z) - y z = max(z, 0) - y z + log1p(exp(-|z|)), finite for any z;
    targets y are probabilities in [0, 1] (hard 0/1 labels or soft ones). The gradient is
    (sigmoid(z) - y) / count. mask as in `mse`.
    """
    logits = _check_pred("logits", logits)
    targets = _check_target(targets, logits)
    if ((targets < 0) | (targets > 1)).any():
        where = tuple(int(i) for i in np.argwhere((targets < 0) | (targets > 1))[0])
        raise ValueError(f"target {targets[where]} at index {where} is not a probability: "
                         "binary cross-entropy needs targets in [0, 1]")
    mask, count = _elementwise_mask(mask, logits)
    if count == 0:
        return 0.0, np.zeros_like(logits)
    e = np.exp(-np.abs(logits))                                 # in (0, 1]
    terms = np.maximum(logits, 0) - logits * targets + np.log1p(e)
    sigmoid = np.where(logits >= 0, 1 / (1 + e), e / (1 + e))
    d_logits = sigmoid - targets
    if mask is not None:
        terms = np.where(mask, terms, 0)
        d_logits = np.where(mask, d_logits, 0)
    loss = float(terms.sum(dtype=np.float64)) / count
    return loss, (d_logits / count).astype(logits.dtype, copy=False)


def bits_per_char(nats: float) -> float:
    """A mean cross-entropy in nats per character, in bits per character (divide by ln 2)."""
    return float(nats) / math.log(2.0)


LOSSES: dict[str, Loss] = {
    "softmax_cross_entropy": softmax_cross_entropy,
    "mse": mse,
    "binary_cross_entropy": binary_cross_entropy,
}
