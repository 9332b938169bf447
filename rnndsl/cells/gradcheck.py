"""Gradient checking: a cell's BPTT gradients against central finite differences.

For a random loss L = sum_t <dY_t, Y_t> + <dS, S_T> (cotangents injected on the outputs
and/or the final states), each gradient the cell returns (every param, every input
sequence, every initial state) is checked along a random direction v: the analytic
<grad, v> against (L(p + hv) - L(p - hv)) / 2h, Richardson-extrapolated from h and h/2,
so the truncation error is O(h^4). Used by `rnndsl gradcheck` and by the test suite.

Rounding sets a floor under what a finite difference can resolve: each loss value is
exact only to a few ulps of the sum of its terms' magnitudes, so the estimate carries an
absolute error of order eps * sum|terms| / h. A gradient that is small next to the loss
(an initial state seen through five saturating steps) would otherwise show a large
relative error that is the difference's rounding, not a wrong rule. Each row carries
that bound as `noise`, and `error` measures the disagreement relative to the larger of
the two values and the smallest magnitude the difference resolves to DEFAULT_TOLERANCE
(noise / DEFAULT_TOLERANCE): a plain relative error wherever it is meaningful.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..lang import ast

DEFAULT_TOLERANCE = 1e-6
# Rounding of one loss value, in ulps of sum|terms|: measured at most 4 on specs/ with the
# Richardson combination; 16 per value (48 after the combination's factor 3) leaves margin.
LOSS_ULPS = 16


@dataclass(frozen=True)
class GradCheckRow:
    what: str          # "param W_i", "input x", "state h"
    analytic: float
    numeric: float
    noise: float = 0.0  # bound on the numeric value's rounding error (absolute)

    @property
    def error(self) -> float:
        """Relative error, on a scale no finer than the difference can resolve; NaN
        where either side is not finite (a NaN or inf gradient never passes)."""
        if not (math.isfinite(self.analytic) and math.isfinite(self.numeric)):
            return math.nan
        scale = max(abs(self.analytic), abs(self.numeric), self.noise / DEFAULT_TOLERANCE)
        return 0.0 if scale < 1e-13 else abs(self.analytic - self.numeric) / scale

    def passes(self, tol: float) -> bool:
        """Within `tol` (NaN never is)."""
        return self.error < tol


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
    # a token input is ids (no gradient to check); an `input once` one vector a row; the
    # rest random vectors at every step. The runtime's own inputs (dropout masks, the
    # length mask) are not the caller's.
    given = [d for d in spec.inputs if d.name not in cell.hidden_inputs]
    x = {d.name: (rng.integers(0, cell._size(d)[0], (T, B)) if d.token else
                  rng.normal(size=(B,) + cell._size(d)) if d.once else
                  rng.normal(size=(T, B) + cell._size(d))) for d in given}
    # with every input `once`, T says how many steps to run (only then passed: a subclass
    # may override forward(x, state)); with dropout(...) sites, the same masks every call
    # (a seed draws them afresh each time), so that the gradient through them is checked
    options = {"steps": T} if all(d.once for d in given) else {}
    if spec.dropouts:
        options["dropout"] = seed
    # a state that starts from a learned param (`state m[H] = m0`) is left to start so:
    # given one, the param's gradient would be zero, and its row check nothing
    s0 = {d.name: rng.normal(scale=0.5, size=(B,) + cell._size(d)) for d in spec.states
          if not isinstance(d.init, ast.ParamRefInit)}
    run = cell.forward(x, state=s0, **options)
    d_out = {} if inject == "state" else {
        name: rng.normal(size=y.shape) for name, y in run.outputs.items()}
    d_st = {} if inject == "outputs" else {
        name: rng.normal(size=s.shape) for name, s in run.state.items()}
    grads = cell.backward(run, d_outputs=d_out, d_state=d_st)

    def loss() -> tuple[float, float]:
        """The loss, and the sum of its terms' magnitudes (the scale of its rounding)."""
        r = cell.forward(x, state=s0, **options)
        terms = [r.outputs[n] * d for n, d in d_out.items()]
        terms += [r.state[n] * d for n, d in d_st.items()]
        return (sum(float(np.sum(t)) for t in terms),
                sum(float(np.sum(np.abs(t))) for t in terms))

    def directional(target: np.ndarray, v: np.ndarray) -> tuple[float, float]:
        scales = []

        def central(step: float) -> float:
            base = target.copy()
            target[...] = base + step * v
            plus, s_plus = loss()
            target[...] = base - step * v
            minus, s_minus = loss()
            target[...] = base
            scales.extend((s_plus, s_minus))
            return (plus - minus) / (2 * step)
        estimate = (4 * central(h / 2) - central(h)) / 3
        # (4 c(h/2) - c(h)) / 3 turns a rounding of d per loss value into at most 3 d / h
        noise = 3 * LOSS_ULPS * np.finfo(np.float64).eps * max(scales) / h
        return estimate, noise

    rows = []
    groups = [(f"param {n}", cell.params[n], grads.params[n]) for n in cell.params]
    groups += [(f"input {n}", x[n], grads.inputs[n]) for n in x if n in grads.inputs]
    groups += [(f"state {n}", s0[n], grads.state[n]) for n in s0]
    for what, target, grad in groups:
        v = rng.normal(size=target.shape)
        numeric, noise = directional(target, v)
        rows.append(GradCheckRow(what, float(np.sum(grad * v)), numeric, noise))
    return rows


def worst(rows: list[GradCheckRow]) -> GradCheckRow:
    """The row with the largest error, a NaN one first."""
    return max(rows, key=lambda r: math.inf if math.isnan(r.error) else r.error)
