"""The planner is handed a step graph and its adjoint and only reads them; the pipeline
lowers each cell once, with the graph-building passes the build asks for."""

from __future__ import annotations

from pathlib import Path

import pytest

from rnndsl import pipeline
from rnndsl.ir.graph import lower
from rnndsl.lang.specfile import read_spec
from rnndsl.schedule.plan import PASSES, make_plan

SPECS = Path(__file__).resolve().parents[2] / "specs"


@pytest.mark.parametrize("passes", [PASSES, ()], ids=["passes-on", "passes-off"])
def test_make_plan_adds_nothing_to_the_graph(passes):
    cell = read_spec(SPECS / "gru.rnn").cells["GRU"]
    step, grads = pipeline.differentiate(cell, passes)
    before = len(step.graph)
    plan = make_plan(step, grads, passes)
    assert len(step.graph) == before
    assert plan.graph is step.graph and plan.grads is grads


TWO_CELLS = """
cell A {
  dims I, H
  input x[I]
  state h[H]
  param W[H, I], U[H, H]
  h' = tanh(W @ x + U @ h)
  output h'
}

cell B {
  dims H
  input x[H]
  state c[H]
  c' = c + sigmoid(x)
  output c'
}
"""


def test_each_cell_is_lowered_once_per_build(monkeypatch, tmp_path):
    calls = []

    def counting_lower(cell, **flags):
        calls.append((cell.name, flags))
        return lower(cell, **flags)

    monkeypatch.setattr(pipeline, "lower", counting_lower)
    path = tmp_path / "two.rnn"
    path.write_text(TWO_CELLS)
    pipeline.build_source(read_spec(path))
    assert sorted(name for name, _ in calls) == ["A", "B"]
    # the flags are the default passes' own: no second lowering to fix them up
    assert all(flags == {"cse": True, "simplify": True} for _, flags in calls)


def test_a_graph_built_with_other_flags_is_refused():
    """A caller that lowers by itself with flags the passes disagree with gets told, not
    a plan of a graph that the passes did not shape."""
    cell = read_spec(SPECS / "elman.rnn").cells["Elman"]
    step, grads = pipeline.differentiate(cell, passes=("cse",))   # simplify off
    with pytest.raises(AssertionError, match="pipeline.differentiate"):
        make_plan(step, grads, PASSES)
