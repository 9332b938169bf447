"""Gradient checking: a cell's BPTT gradients against central finite differences.

For a random loss L = sum_t <dY_t, Y_t> + <dS, S_T> (cotangents injected on the outputs
and/or the final states), each gradient the cell returns (every param, every input
sequence, every initial state) is checked along a random direction v: the analytic
<grad, v> against (L(p + hv) - L(p - hv)) / 2h, Richardson-extrapolated from h and h/2,
so the truncation error is O(h^4). Used by `rnndsl gradcheck` and by the test suite.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_TOLERANCE = 1e-6


@dataclass(frozen=True)
class GradCheckRow:
    what: str          # "param W_i", "input x", "state h"
    analytic: float
    numeric: float

    @property
    def error(self) -> float:
        scale = max(abs(self.analytic), abs(self.numeric))
        return 0.0 if scale < 1e-13 else abs(self.analytic - self.numeric) / scale


def default_dims(spec) -> dict[str, int]:
    """Distinct small sizes (3, 4, 5, ...), so a transposed matrix cannot pass unnoticed."""
    return {name: 3 + i for i, name in enumerate(spec.dims)}


def gradcheck(Cell, dims: dict[str, int] | None = None, T: int = 3, B: int = 2,
              seed: int = 0, h: float = 1e-5, inject: str = "both",
              param_scale: float = 0.5) -> list[GradCheckRow]:
    """Check every gradient of `Cell` (a class from `rnndsl.load`) in float64.

    inject: "outputs", "state" or "both": where the loss puts its random cotangents.
    """
    assert inject in ("outputs", "state", "both"), inject
    spec = Cell.spec
    dims = dict(default_dims(spec), **(dims or {}))
    cell = Cell(dtype=np.float64, seed=seed, **dims)
    rng = np.random.default_rng(seed + 1)
    for name, value in cell.params.items():   # random, not initial, values: no zero biases
        value[...] = rng.uniform(-param_scale, param_scale, size=value.shape)
    x = {d.name: rng.normal(size=(T, B) + cell._size(d)) for d in spec.inputs}
    s0 = {d.name: rng.normal(scale=0.5, size=(B,) + cell._size(d)) for d in spec.states}
    run = cell.forward(x, state=s0)
    d_out = {} if inject == "state" else {
        name: rng.normal(size=y.shape) for name, y in run.outputs.items()}
    d_st = {} if inject == "outputs" else {
        name: rng.normal(size=s.shape) for name, s in run.state.items()}
    grads = cell.backward(run, d_outputs=d_out, d_state=d_st)

    def loss() -> float:
        r = cell.forward(x, state=s0)
        total = sum(float(np.sum(r.outputs[n] * d)) for n, d in d_out.items())
        return total + sum(float(np.sum(r.state[n] * d)) for n, d in d_st.items())

    def directional(target: np.ndarray, v: np.ndarray) -> float:
        def central(step: float) -> float:
            base = target.copy()
            target[...] = base + step * v
            plus = loss()
            target[...] = base - step * v
            minus = loss()
            target[...] = base
            return (plus - minus) / (2 * step)
        return (4 * central(h / 2) - central(h)) / 3

    rows = []
    groups = [(f"param {n}", cell.params[n], grads.params[n]) for n in cell.params]
    groups += [(f"input {n}", x[n], grads.inputs[n]) for n in x]
    groups += [(f"state {n}", s0[n], grads.state[n]) for n in s0]
    for what, target, grad in groups:
        v = rng.normal(size=target.shape)
        rows.append(GradCheckRow(what, float(np.sum(grad * v)), directional(target, v)))
    return rows


def worst(rows: list[GradCheckRow]) -> GradCheckRow:
    return max(rows, key=lambda r: r.error)
