"""Optimisers and gradient clipping, over a cell's params dict, updated IN PLACE.

    opt = Adam(lr=1e-3)
    clip_global_norm(g.params, 5.0)
    opt.step(cell.params, g.params)          # cell.params' arrays change in place

Updates are in place because cells (and compiled kernels) hold references to their param
arrays: rebinding `params[name]` to a new array would leave them training a copy. Each
optimiser keeps its buffers per param name, in the param's dtype, and implements the
update rule written in PyTorch's documentation of `torch.optim` (the pseudo-code is copied
into each docstring, with the same symbols), so results can be checked against PyTorch.

`state_dict()` is a plain dict of numbers, strings and dicts of arrays: it goes through
`checkpoint.save` into an .npz and comes back through `load_state_dict`, after which the
next step is the one an uninterrupted run would take.
"""

from __future__ import annotations

import math
from typing import Mapping

import numpy as np


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
    inside = low <= value and (value < high if high_open else value <= high)
    if not inside:
        bracket = ")" if high_open else "]"
        raise ValueError(f"{name} must be in [{low}, {high}{bracket}, got {value}")
    return value


class Optimizer:
    """Common bookkeeping: hyperparameters, the step counter t and per-param buffers."""

    BUFFERS: tuple[str, ...] = ()

    def __init__(self, **hyper: float) -> None:
        self.hyper = hyper
        self.t = 0
        self.buffers: dict[str, dict[str, np.ndarray]] = {b: {} for b in self.BUFFERS}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.hyper.items())
        return f"{type(self).__name__}({args})"

    def step(self, params: Mapping[str, np.ndarray], grads: Mapping[str, np.ndarray]) -> None:
        """One update of every param that has a gradient (params without one are left)."""
        _check_pairs(params, grads)
        self.t += 1
        for name, g in grads.items():
            self._update(name, params[name], g.astype(params[name].dtype, copy=False))

    def _buffer(self, kind: str, name: str, like: np.ndarray) -> np.ndarray:
        buf = self.buffers[kind].get(name)
        if buf is None or buf.shape != like.shape:
            buf = self.buffers[kind][name] = np.zeros_like(like)
        elif buf.dtype != like.dtype:     # state restored from a run in another dtype
            buf = self.buffers[kind][name] = buf.astype(like.dtype)
        return buf

    def _update(self, name: str, p: np.ndarray, g: np.ndarray) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """{"kind", "hyper", "t", "buffers": {kind: {param name: array}}}, arrays copied."""
        return {"kind": type(self).__name__, "hyper": dict(self.hyper), "t": self.t,
                "buffers": {k: {n: a.copy() for n, a in b.items()}
                            for k, b in self.buffers.items()}}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore buffers and the step counter; hyperparameters stay this object's own
        (a resumed run may change the learning rate), but the kind must match."""
        kind = state.get("kind") if isinstance(state, Mapping) else None
        if kind != type(self).__name__:
            raise ValueError(f"optimiser state is for {kind!r}; this optimiser is "
                             f"{type(self).__name__}")
        buffers = state.get("buffers", {})
        if set(buffers) != set(self.BUFFERS):
            raise ValueError(f"{kind} state has buffers {sorted(buffers)}; expected "
                             f"{sorted(self.BUFFERS)}")
        self.t = int(state.get("t", 0))
        self.buffers = {k: {n: np.array(a, copy=True) for n, a in buffers[k].items()}
                        for k in self.BUFFERS}


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

    def _update(self, name, p, g):
        lr, mu, wd = self.hyper["lr"], self.hyper["momentum"], self.hyper["weight_decay"]
        if wd:
            g = g + p.dtype.type(wd) * p
        if mu:
            fresh = name not in self.buffers["momentum_buffer"]
            b = self._buffer("momentum_buffer", name, p)
            if fresh:
                b[...] = g
            else:
                b *= p.dtype.type(mu)
                b += g
            g = g + p.dtype.type(mu) * b if self.nesterov else b
        p -= p.dtype.type(lr) * g

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

    def _update(self, name, p, g):
        h = {k: p.dtype.type(v) for k, v in self.hyper.items()}
        if h["weight_decay"]:
            g = g + h["weight_decay"] * p
        v = self._buffer("square_avg", name, p)
        v *= h["alpha"]
        v += (1 - h["alpha"]) * g * g
        if self.centered:
            g_ave = self._buffer("grad_avg", name, p)
            g_ave *= h["alpha"]
            g_ave += (1 - h["alpha"]) * g
            denom = np.sqrt(v - g_ave * g_ave) + h["eps"]
        else:
            denom = np.sqrt(v) + h["eps"]
        if h["momentum"] > 0:
            b = self._buffer("momentum_buffer", name, p)
            b *= h["momentum"]
            b += g / denom
            p -= h["lr"] * b
        else:
            p -= h["lr"] * g / denom

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

    def _update(self, name, p, g):
        h = self.hyper
        dt = p.dtype.type
        if h["weight_decay"]:
            g = g + dt(h["weight_decay"]) * p
        m = self._buffer("exp_avg", name, p)
        v = self._buffer("exp_avg_sq", name, p)
        m *= dt(h["beta1"])
        m += dt(1 - h["beta1"]) * g
        v *= dt(h["beta2"])
        v += dt(1 - h["beta2"]) * g * g
        correction1 = 1 - h["beta1"] ** self.t
        correction2 = 1 - h["beta2"] ** self.t
        denom = np.sqrt(v / dt(correction2)) + dt(h["eps"])
        p -= dt(h["lr"] / correction1) * m / denom


def global_norm(grads: Mapping[str, np.ndarray]) -> float:
    """sqrt of the sum of squares of every gradient element, accumulated in float64."""
    total = 0.0
    for g in grads.values():
        flat = np.asarray(g, dtype=np.float64).ravel()
        total += float(flat @ flat)
    return math.sqrt(total)


def clip_global_norm(grads: Mapping[str, np.ndarray], max_norm: float) -> float:
    """Scale every gradient by max_norm / norm when the global norm exceeds max_norm (as
    torch.nn.utils.clip_grad_norm_, without its 1e-6); in place. Returns the norm before
    clipping, so a training loop can log it. A non-finite norm is an error: scaling
    would spread the NaN into every param."""
    max_norm = _check_number("max_norm", max_norm, 0.0)
    norm = global_norm(grads)
    if not math.isfinite(norm):
        bad = [n for n, g in grads.items() if not np.isfinite(g).all()]
        raise ValueError(f"gradient norm is {norm}: non-finite gradients in "
                         f"{', '.join(bad)}; the model diverged or its input is bad")
    if norm > max_norm:
        scale = max_norm / norm
        for g in grads.values():
            g *= g.dtype.type(scale)
    return norm


def clip_elementwise(grads: Mapping[str, np.ndarray], limit: float) -> None:
    """Clamp every gradient element to [-limit, limit], in place (clip_grad_value_)."""
    limit = _check_number("limit", limit, 0.0)
    for g in grads.values():
        np.clip(g, -limit, limit, out=g)


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam}
