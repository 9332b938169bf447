"""Random cells from `strategies_cells`: each parses, checks, runs, and differentiates right.

For every cell Hypothesis draws: `load_text` accepts it; a forward pass gives finite
outputs and states of the promised shapes; the IR invariants hold on its step, unrolled and
adjoint graphs; and `gradcheck` (T in 1..4, small B, random sizes) finds every gradient
within 1e-6 of central finite differences. A disagreement is only excused when a
relu/abs/min/max/hard_sigmoid argument sat within `KINK_MARGIN` of its kink at the
checked point, where a finite difference does not measure a derivative at all.

`HYPOTHESIS_PROFILE=long` (tests/conftest.py) runs 500 cells instead of 40.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, assume, given, note, settings

import rnndsl
from rnndsl.ir.grad import grad_step, grad_unrolled
from rnndsl.cells.gradcheck import DEFAULT_TOLERANCE, gradcheck, worst
from rnndsl.ir.graph import unroll

from strategies_cells import RandomCell, cells, kink_distance

KINK_MARGIN = 1e-3   # far above h * |v| * sensitivity for gradcheck's h = 1e-5


def probed(Cell):
    """A subclass of `Cell` that records how near each forward pass came to a kink."""
    distances: list[float] = []

    class Probe(Cell):
        def forward(self, x, state=None):
            run = super().forward(x, state)
            tape = run._tape
            distances.append(kink_distance(tape.unrolled.graph, tape.values))
            return run
    Probe.__name__ = Cell.__name__
    return Probe, distances


def _report(rows) -> str:
    return "\n".join(f"  {r.what:<10} analytic {r.analytic:+.12e} numeric {r.numeric:+.12e}"
                     f" error {r.error:.2e}" for r in rows)


SETTINGS = settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@SETTINGS
@given(cells())
def test_random_cell_runs_and_its_gradients_match_finite_differences(cell: RandomCell):
    note(str(cell))
    Cell = rnndsl.load_text(cell.text, target="interp")
    spec = Cell.spec

    # forward: finite, shaped as the contract says
    c = Cell(dtype=np.float64, seed=0, **cell.dims)
    rng = np.random.default_rng(0)
    size = {d.name: tuple(x.evaluate(cell.dims) for x in d.type.shape)
            for d in spec.inputs + spec.states}
    x = {d.name: rng.normal(size=(cell.T, cell.B) + size[d.name]) for d in spec.inputs}
    run = c.forward(x if len(spec.inputs) > 1 else x[spec.inputs[0].name])
    for o in spec.outputs:
        out = run.outputs[o.name]
        shape = tuple(d.evaluate(cell.dims) for d in o.type.shape)
        assert out.shape == (cell.T, cell.B) + shape and out.dtype == np.float64
        assert np.isfinite(out).all(), f"output {o.name} is not finite"
    for d in spec.states:
        assert run.state[d.name].shape == (cell.B,) + size[d.name]
        assert np.isfinite(run.state[d.name]).all(), f"state {d.name} is not finite"

    # the IR keeps its invariants on this cell's graphs
    Cell.step.graph.check_edges()
    u = unroll(Cell.step, cell.T)
    grad_unrolled(u)
    u.graph.check_edges()

    # BPTT against finite differences
    Probe, distances = probed(Cell)
    rows = gradcheck(Probe, dims=cell.dims, T=cell.T, B=cell.B)
    bad = worst(rows)
    if bad.error >= DEFAULT_TOLERANCE:
        note(f"kink distance at the checked point: {distances[0]:.2e}")
        assume(distances[0] > KINK_MARGIN)   # a kink inside the step: not a verdict
    assert bad.error < DEFAULT_TOLERANCE, f"{bad.what}: error {bad.error:.2e}\n" + \
        _report(rows)


@SETTINGS
@given(cells(max_T=2))
def test_random_cell_has_a_one_step_adjoint(cell: RandomCell):
    """The compiled backends' adjoint of ONE step builds for every cell, types checked."""
    note(str(cell))
    Cell = rnndsl.load_text(cell.text, target="interp")
    step = Cell.step
    grads = grad_step(step)
    step.graph.check_edges()
    for name, nid in step.params.items():
        if grads.params[name] is not None:
            assert step.graph[grads.params[name]].type == step.graph[nid].type
    for name, nid in {**step.inputs, **step.states}.items():
        found = {**grads.inputs, **grads.states}[name]
        if found is not None:
            assert step.graph[found].type == step.graph[nid].type


def test_kink_distance_sees_kinks():
    text = """cell K {
      dims H
      input x[H]
      state h[H]
      h' = relu(x) + max(h, x) + hard_sigmoid(x) + abs(h)
    }"""
    Cell = rnndsl.load_text(text, target="interp")
    Probe, distances = probed(Cell)
    cell = Probe(H=3, dtype=np.float64)
    x = np.full((1, 1, 3), 2.0)
    cell.forward(x, state={"h": np.full((1, 3), 1.5)})
    assert distances[-1] == 0.5                 # |x| = 2, |h - x| = 0.5, |x - 2.5| = 0.5
    cell.forward(x, state={"h": np.full((1, 3), 2.0)})
    assert distances[-1] == 0.0                 # h ties x in max
