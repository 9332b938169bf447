"""Optimisers and gradient clipping, over a cell's params dict, updated IN PLACE.

    opt = Adam(lr=1e-3)
    clip_global_norm(g.params, 5.0)
    opt.step(cell.params, g.params)          # cell.params' arrays change in place

Updates are in place because cells (and compiled kernels) hold references to their param
arrays: rebinding `params[name]` to a new array would leave them training a copy. Each
optimiser keeps its buffers per param name, in the param's dtype, and implements the
update rule written in PyTorch's documentation of `torch.optim` (the pseudo-code is copied
into each docstring, with the same symbols), so results can be checked against PyTorch.

The updates, the norm and the clipping are compiled loops (rnndsl.kernels.optim): they call
no BLAS, so no library's thread pool wakes up between two kernel calls to compete with the
kernels' threads, and each makes one pass over memory. When the params, the gradients and
the buffers are each views of one flat buffer (a cell's params are; a compiled backward's
gradients are; the buffers are made so), a step is one call over the whole model; else
one call a param.

`state_dict()` is a plain dict of numbers, strings and dicts of arrays: it goes through
`checkpoint.save` into an .npz and comes back through `load_state_dict`, after which the
next step is the one an uninterrupted run would take.
"""

from __future__ import annotations

import math
import weakref
from typing import Mapping

import numpy as np

from ..core.flat import flat_span, flat_views
from ..kernels import optim as kernels

_KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _check_pairs(params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
    for name, g in grads.items():
        if name not in params:
            raise ValueError(f"gradient for '{name}', which is not a param; params are: "
                             + ", ".join(params))
        p = params[name]
        if not isinstance(p, np.ndarray) or not isinstance(g, np.ndarray):
            raise ValueError(f"param and gradient '{name}' must be NumPy arrays, got "
                             f"{type(p).__name__} and {type(g).__name__}")
        if p.shape != g.shape:
            raise ValueError(f"gradient '{name}' has shape {g.shape}; the param is {p.shape}")
        if not p.flags.writeable:
            raise ValueError(f"param '{name}' is read-only; optimisers update params in place")


def _check_number(name: str, value, low: float, high: float = math.inf,
                  high_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    inside = low <= value and (value < high if high_open else value <= high)
    if not inside:
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be in [{low}, {high}{bracket}, got {value}")
    return value


class Optimizer:
    """Common bookkeeping: hyperparameters, the step counter t and per-param buffers.

    A subclass names its buffers (BUFFERS), says which of them its settings use
    (`_used`), and implements `_update(p, g, buffers, fresh)` over 1-D arrays of one
    dtype, which `step` calls once over the whole model where it lies in flat buffers,
    else once a param."""

    BUFFERS: tuple[str, ...] = ()

    def __init__(self, **hyper: float) -> None:
        self.hyper = hyper
        self.t = 0
        self.buffers: dict[str, dict[str, np.ndarray]] = {b: {} for b in self.BUFFERS}
        self._last: tuple | None = None     # the last whole-model step's arrays (`_again`)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.hyper.items())
        return f"{type(self).__name__}({args})"

    def _used(self) -> tuple[str, ...]:
        """The buffers these settings update (the others stay empty)."""
        return self.BUFFERS

    def step(self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
        """One update of every param that has a gradient (params without one are left)."""
        used = self._used()
        again = self._again(params, grads, used)
        if again is not None:
            self.t += 1
            self._update(again[0], again[1], dict(zip(used, again[2:])), False)
            return
        self._last = None
        _check_pairs(params, grads)
        self.t += 1
        names = list(grads)
        ps = [params[n] for n in names]
        gs = [_contiguous(grads[n], params[n].dtype) for n in names]
        fresh = {n for n in names if any(n not in self.buffers[k] for k in used)}
        bufs = {k: self._buffers_for(k, names, ps) for k in used}
        whole = [flat_span(ps), flat_span(gs)] + [flat_span(bufs[k]) for k in used]
        if all(a is not None for a in whole) and (not fresh or len(fresh) == len(names)):
            self._update(whole[0], whole[1], dict(zip(used, whole[2:])), bool(fresh))
            if all(gs[i] is grads[n] for i, n in enumerate(names)):
                self._last = (used, tuple(names), tuple(map(id, gs)), tuple(map(id, ps)),
                              tuple((k, self.buffers[k], tuple(map(id, bufs[k])))
                                    for k in used),
                              tuple(ps), tuple(whole), tuple(gs), tuple(bufs.values()))
            return
        for i, name in enumerate(names):
            p = ps[i]
            work = p if p.flags.c_contiguous else np.ascontiguousarray(p)
            self._update(work.reshape(-1), gs[i].reshape(-1),
                         {k: bufs[k][i].reshape(-1) for k in used}, name in fresh)
            if work is not p:
                p[...] = work

    def _again(self, params, grads, used) -> tuple | None:
        """The flat spans of the last step (params, gradients, buffers), if this step is
        over the very same arrays: the same objects under the same names in the same
        order (ids compared, which `_last` keeps alive, so that none was reused), the
        buffers unchanged, the params writeable. A training loop whose gradients are
        views of one buffer it reuses (Trainer.step) then skips the checks and the
        look-ups, 0.1-0.2 ms a step. The last step's arrays are kept for this: its
        gradients too (one model's worth), until the next step."""
        last = self._last
        if last is None or last[0] != used or tuple(grads) != last[1]:
            return None
        names = last[1]
        if tuple(map(id, grads.values())) != last[2] or tuple(
                map(id, map(params.get, names))) != last[3]:
            return None
        buffers = self.buffers
        for kind, held, ids in last[4]:
            if buffers.get(kind) is not held or tuple(map(id, map(held.get, names))) != ids:
                return None
        if not all(p.flags.writeable for p in last[5]):
            return None
        return last[6]

    def _buffers_for(self, kind: str, names: list[str], like: list[np.ndarray]
                     ) -> list[np.ndarray]:
        """The `kind` buffers of these params, made (zeros, as views of one flat buffer)
        for those that have none or one of another shape; converted where a state
        restored from a run in another dtype left them in that dtype."""
        held = self.buffers[kind]
        missing = [i for i, n in enumerate(names)
                   if n not in held or held[n].shape != like[i].shape]
        if missing:
            _, views = flat_views([like[i].shape for i in missing], like[missing[0]].dtype)
            for i, view in zip(missing, views):
                held[names[i]] = view
        for i, n in enumerate(names):     # another dtype: restored state, or mixed params
            if held[n].dtype != like[i].dtype:
                held[n] = held[n].astype(like[i].dtype)
        return [held[n] for n in names]

    def _update(self, p: np.ndarray, g: np.ndarray, buffers: dict[str, np.ndarray],
                fresh: bool) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """{"kind", "hyper", "t", "buffers": {kind: {param name: array}}}, arrays copied."""
        return {"kind": type(self).__name__, "hyper": dict(self.hyper), "t": self.t,
                "buffers": {k: {n: a.copy() for n, a in b.items()}
                            for k, b in self.buffers.items()}}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore buffers and the step counter; hyperparameters stay this object's own
        (a resumed run may change the learning rate), but the kind must match. The
        buffers come back as views of one flat buffer a kind, as `step` makes them."""
        kind = state.get("kind") if isinstance(state, Mapping) else None
        if kind != type(self).__name__:
            raise ValueError(f"optimiser state is for {kind!r}; this optimiser is "
                             f"{type(self).__name__}")
        buffers = state.get("buffers", {})
        if set(buffers) != set(self.BUFFERS):
            raise ValueError(f"{kind} state has buffers {sorted(buffers)}; expected "
                             f"{sorted(self.BUFFERS)}")
        self.t = int(state.get("t", 0))
        self._last = None
        self.buffers = {}
        for k in self.BUFFERS:
            arrays = {n: np.asarray(a) for n, a in buffers[k].items()}
            self.buffers[k] = {}
            if arrays:
                dtype = np.result_type(*arrays.values())
                _, views = flat_views([a.shape for a in arrays.values()], dtype, fill=None)
                for (n, a), view in zip(arrays.items(), views):
                    view[...] = a
                    self.buffers[k][n] = view if a.dtype == dtype else a.copy()


def _contiguous(g, dtype) -> np.ndarray:
    """g as a C-contiguous array of `dtype`: g itself where it is one (a 0-d one too)."""
    if isinstance(g, np.ndarray) and g.dtype == dtype and g.flags.c_contiguous:
        return g
    return np.ascontiguousarray(g, dtype=dtype)


def _typed(p: np.ndarray, *values: float):
    """The scalars in p's dtype: a float32 model updates in float32 arithmetic."""
    if p.dtype not in _KERNEL_DTYPES:
        raise ValueError(f"optimisers update float32 or float64 params, got {p.dtype}")
    return tuple(p.dtype.type(v) for v in values)


def _unused(p: np.ndarray) -> np.ndarray:
    return p[:0]


class SGD(Optimizer):
    """Stochastic gradient descent with momentum (torch.optim.SGD, dampening 0):

        g_t = grad + weight_decay * theta_{t-1}                (if weight_decay != 0)
        b_t = g_t at t = 1, else momentum * b_{t-1} + g_t      (if momentum != 0)
        g_t = g_t + momentum * b_t if nesterov else b_t        (if momentum != 0)
        theta_t = theta_{t-1} - lr * g_t
    """

    BUFFERS = ("momentum_buffer",)

    def __init__(self, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr=_check_number("lr", lr, 0.0),
                         momentum=_check_number("momentum", momentum, 0.0),
                         weight_decay=_check_number("weight_decay", weight_decay, 0.0))
        if nesterov and self.hyper["momentum"] == 0:
            raise ValueError("nesterov=True needs a momentum above 0")
        self.nesterov = bool(nesterov)

    def _used(self):
        return self.BUFFERS if self.hyper["momentum"] else ()

    def _update(self, p, g, buffers, fresh):
        lr, mu, wd = _typed(p, self.hyper["lr"], self.hyper["momentum"],
                            self.hyper["weight_decay"])
        b = buffers.get("momentum_buffer", _unused(p))
        kernels.sgd_update(p, g, b, lr, mu, wd, self.nesterov, fresh)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["hyper"]["nesterov"] = self.nesterov
        return state


class RMSprop(Optimizer):
    """RMSprop (torch.optim.RMSprop), with v, b and g_ave starting at 0:

        g_t = grad + weight_decay * theta_{t-1}                (if weight_decay != 0)
        v_t = alpha * v_{t-1} + (1 - alpha) * g_t**2
        v~_t = v_t - g_ave_t**2, g_ave_t = alpha * g_ave_{t-1} + (1 - alpha) * g_t
                                                               (if centered, else v~_t = v_t)
        b_t = momentum * b_{t-1} + g_t / (sqrt(v~_t) + eps); theta_t = theta_{t-1} - lr * b_t
                                                               (if momentum > 0)
        theta_t = theta_{t-1} - lr * g_t / (sqrt(v~_t) + eps)  (otherwise)
    """

    BUFFERS = ("square_avg", "momentum_buffer", "grad_avg")

    def __init__(self, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 momentum: float = 0.0, weight_decay: float = 0.0,
                 centered: bool = False) -> None:
        super().__init__(lr=_check_number("lr", lr, 0.0),
                         alpha=_check_number("alpha", alpha, 0.0, 1.0),
                         eps=_check_number("eps", eps, 0.0),
                         momentum=_check_number("momentum", momentum, 0.0),
                         weight_decay=_check_number("weight_decay", weight_decay, 0.0))
        self.centered = bool(centered)

    def _used(self):
        return (("square_avg",) + (("momentum_buffer",) if self.hyper["momentum"] > 0 else ())
                + (("grad_avg",) if self.centered else ()))

    def _update(self, p, g, buffers, fresh):
        h = self.hyper
        lr, alpha, rest, eps, mu, wd = _typed(p, h["lr"], h["alpha"], 1 - h["alpha"],
                                              h["eps"], h["momentum"], h["weight_decay"])
        kernels.rmsprop_update(p, g, buffers["square_avg"],
                               buffers.get("momentum_buffer", _unused(p)),
                               buffers.get("grad_avg", _unused(p)),
                               lr, alpha, rest, eps, mu, wd, self.centered)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["hyper"]["centered"] = self.centered
        return state


class Adam(Optimizer):
    """Adam (torch.optim.Adam, amsgrad off; weight decay is the L2 kind, added to g_t),
    with m and v starting at 0:

        g_t = grad + weight_decay * theta_{t-1}                (if weight_decay != 0)
        m_t = beta1 * m_{t-1} + (1 - beta1) * g_t
        v_t = beta2 * v_{t-1} + (1 - beta2) * g_t**2
        m^_t = m_t / (1 - beta1**t);  v^_t = v_t / (1 - beta2**t)
        theta_t = theta_{t-1} - lr * m^_t / (sqrt(v^_t) + eps)

    t counts calls to `step`, as PyTorch's per-param step counts do when every param has
    a gradient at every step.
    """

    BUFFERS = ("exp_avg", "exp_avg_sq")

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        super().__init__(lr=_check_number("lr", lr, 0.0),
                         beta1=_check_number("betas[0]", betas[0], 0.0, 1.0, high_open=True),
                         beta2=_check_number("betas[1]", betas[1], 0.0, 1.0, high_open=True),
                         eps=_check_number("eps", eps, 0.0),
                         weight_decay=_check_number("weight_decay", weight_decay, 0.0))

    def _update(self, p, g, buffers, fresh):
        h = self.hyper
        correction1 = 1 - h["beta1"] ** self.t
        correction2 = 1 - h["beta2"] ** self.t
        beta1, rest1, beta2, rest2, step_size, c2, eps, wd = _typed(
            p, h["beta1"], 1 - h["beta1"], h["beta2"], 1 - h["beta2"], h["lr"] / correction1,
            correction2, h["eps"], h["weight_decay"])
        kernels.adam_update(p, g, buffers["exp_avg"], buffers["exp_avg_sq"], beta1, rest1,
                            beta2, rest2, step_size, c2, eps, wd)


_LAST_SPAN: list = [None]      # (the arrays, weakly; their shapes; their flat span)


def _whole(arrays: list) -> np.ndarray | None:
    """flat_span(arrays) where it is float32 or float64, else None; remembered for the
    very same arrays as the last call (a step's norm and clipping ask it about one
    model's gradients, and a trainer that reuses them asks about the same arrays every
    step): identity checks instead of flat_span's look-up, 0.03-0.05 ms a step."""
    last = _LAST_SPAN[0]
    if last is not None and len(last[0]) == len(arrays) and all(
            ref() is a and a.shape == shape and a.flags.writeable
            for ref, a, shape in zip(last[0], arrays, last[1])):
        return last[2]
    whole = flat_span(arrays)
    if whole is None or whole.dtype not in _KERNEL_DTYPES:
        _LAST_SPAN[0] = None
        return None
    _LAST_SPAN[0] = (tuple(weakref.ref(a) for a in arrays), tuple(a.shape for a in arrays),
                     whole)
    return whole


def _flat_or_each(grads: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The gradients as 1-D arrays for the compiled loops: one over all of them where
    they lie in one flat buffer, else one each (a copy only where one is not
    C-contiguous or not float32/float64; such a copy is read, never written back)."""
    arrays = [g if type(g) is np.ndarray else np.asarray(g) for g in grads.values()]
    whole = _whole(arrays)
    if whole is not None:
        return [whole]
    return [(a if a.dtype in _KERNEL_DTYPES else a.astype(np.float64)).reshape(-1)
            for a in arrays]


def global_norm(grads: Mapping[str, np.ndarray]) -> float:
    """sqrt of the sum of squares of every gradient element, accumulated in float64
    (a compiled loop: no BLAS call, see the module's docstring)."""
    return math.sqrt(sum(kernels.sum_squares(a) for a in _flat_or_each(grads)))


def _writable_each(grads: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """1-D views to change the gradients in place through (flat where they are)."""
    arrays = list(grads.values())
    whole = _whole(arrays) if all(type(a) is np.ndarray for a in arrays) else None
    return arrays if whole is None else [whole]


def clip_global_norm(grads: Mapping[str, np.ndarray], max_norm: float) -> float:
    """Scale every gradient by max_norm / norm when the global norm exceeds max_norm (as
    torch.nn.utils.clip_grad_norm_, without its 1e-6); in place. Returns the norm before
    clipping, so a training loop can log it. A non-finite norm is an error: scaling
    would spread the NaN into every param."""
    max_norm = _check_number("max_norm", max_norm, 0.0)
    norm = global_norm(grads)
    if not math.isfinite(norm):
        bad = [n for n, g in grads.items() if not np.isfinite(g).all()]
        from .losses import DivergedError
        raise DivergedError(f"gradient norm is {norm}: non-finite gradients in "
                            f"{', '.join(bad)}; the model diverged or its input is bad",
                            "gradients")
    if norm > max_norm:
        factor = max_norm / norm
        for g in _writable_each(grads):
            if g.dtype in _KERNEL_DTYPES and g.flags.c_contiguous:
                kernels.scale(g.reshape(-1), g.dtype.type(factor))
            else:
                g *= g.dtype.type(factor)
    return norm


def clip_elementwise(grads: Mapping[str, np.ndarray], limit: float) -> None:
    """Clamp every gradient element to [-limit, limit], in place (clip_grad_value_)."""
    limit = _check_number("limit", limit, 0.0)
    for g in _writable_each(grads):
        if g.dtype in _KERNEL_DTYPES and g.flags.c_contiguous:
            kernels.clamp(g.reshape(-1), g.dtype.type(limit))
        else:
            np.clip(g, -limit, limit, out=g)


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam}
