"""The schedule's `readout_after`: the forward's work that feeds no state (a readout,
`output y = sigmoid(V @ h' + c)`) runs after the time loop, over all T*B rows, reading
the loop's values from their tapes; the plan choice forced both ways and checked
compiled against the interpreter (with and without variable lengths, at batches below
and above the register tiles' MR rows, one and two row blocks, token inputs, a lent
workspace), and what a next state needs stays in the loop."""

from __future__ import annotations

import os

import numpy as np
import pytest

import rnndsl
from rnndsl.cells.base import Workspace
from rnndsl.lang.specfile import read_spec
from rnndsl.pipeline import plan_cell
from rnndsl.schedule.explain import explain_lines
from rnndsl.schedule.plan import PASSES

from compare_cells import compare_with_interpreter  # tests/ is on sys.path (conftest.py)

LONG = os.environ.get("RNNDSL_LONG") == "1"
PATH = "tests/readout_after.rnn"
# y and z feed no state (they move); s feeds h' (it stays); seq reads the state before
# the step and the input; fin is a final output, which final_at_end takes
READOUTS = """
cell Readouts {
  dims I, H, K
  input x[I]
  state h[H]
  param W[H, I], U[H, H], V[K, H], c[K], A[K, I], V2[K, H], F[K, H]
  s = tanh(U @ h)
  h' = tanh(W @ x + s)
  output y = sigmoid(V @ h' + c)
  output z = V2 @ h' + A @ x + V @ h
  output seq = s * 2
  final fin = F @ h'
}
"""
DIMS = {"I": 3, "H": 4, "K": 5}


def _plan(text: str, name: str, passes=PASSES):
    return plan_cell(read_spec(PATH, text=text).cells[name], passes)


def test_only_what_feeds_no_state_moves():
    plan = _plan(READOUTS, "Readouts")
    G, out = plan.graph, plan.step.outputs
    moved = plan.order["after"]
    assert all(plan.stage[n] == "after" for n in moved)
    for name in ("y", "z", "seq"):
        assert plan.stage[out[name]] == "after", name
    s = next(a for a in G[out["seq"]].args if G[a].op.value == "tanh")   # s = tanh(U @ h)
    assert plan.stage[s] == "fwd"                       # h' needs s at every step
    assert plan.stage[plan.step.next_state["h"]] == "fwd"
    assert plan.at_end == ("fin",)                      # final_at_end's, not ours
    # the loop values the moved work reads are taped: h', s and the state before a step
    assert plan.step.next_state["h"] in plan.saved and s in plan.saved
    assert "h" in plan.saved_states
    lines = explain_lines(plan, "forward")
    assert any(line.startswith("  after the loop, all T*B rows: GEMM [V, V2] @ h'")
               for line in lines), lines
    loop = lines[lines.index("  for t in 0 .. T-1:") + 1:]
    loop = loop[:next(i for i, line in enumerate(loop) if not line.startswith("    "))]
    assert not any("V" in line for line in loop), loop
    off = _plan(READOUTS, "Readouts", [p for p in PASSES if p != "readout_after"])
    assert not off.order["after"] and off.stage[out["y"]] == "fwd"


def test_the_generated_forward_runs_them_after_its_loop():
    from rnndsl.build.modules import build_source
    source = build_source(read_spec(PATH, text=READOUTS))
    forward = source.split("def forward_Readouts(")[1].split("\ndef ")[0]
    loop, after = forward.split("    copy2(fin_h, s_h)\n")
    assert "out_y[t]" not in loop and "out_seq[t]" not in loop
    assert "out_y_r[r, j] = e_y" in after and "out_z_r[r, j] = " in after    # straight in
    assert "tape_y_r[r, j] = e_y" in after          # and taped: sigmoid's gradient reads y
    assert "parallel_dot(tape_h__next_r, " in after        # the readout: one GEMM


@pytest.fixture(scope="module", params=["on", "off"])
def cells(request):
    no = () if request.param == "on" else ("readout_after",)
    Compiled = rnndsl.load_text(READOUTS, path=PATH, no_passes=no)
    Interp = rnndsl.load_text(READOUTS, path=PATH, target="interp")
    compiled = Compiled(dtype=np.float64, seed=2, **DIMS)
    assert ("# feeding no state: after the time loop" in
            open(compiled.kernels.__file__).read()) == (request.param == "on")
    interp = Interp(dtype=np.float64, **DIMS)
    interp.params = compiled.params
    return compiled, interp


def _compare(cells, B: int, lengths=None, workspace=None, T: int = 7):
    x = np.random.default_rng(B).normal(size=(T, B, 3))
    compare_with_interpreter(*cells, x, lengths, workspace, seed=B)


@pytest.mark.parametrize("B", [1, 3, 9])
@pytest.mark.parametrize("lengths", [None, "some"], ids=["full", "lengths"])
def test_compiled_matches_the_interpreter(cells, B, lengths, monkeypatch):
    if lengths and "readout_after" not in cells[0].meta["passes"] and not LONG:
        pytest.skip("RNNDSL_LONG=1 only: the pass off with lengths compiles a twin (6 s) "
                    "for the path every other spec's tests take")
    monkeypatch.setenv("RNNDSL_BLAS_THREADS", "1")
    _compare(cells, B, None if lengths is None else [7, 2, 5, 1, 6, 7, 3, 4, 7][:B])


def test_row_blocks_and_a_workspace_match_the_interpreter(cells, monkeypatch):
    monkeypatch.setenv("RNNDSL_BLAS_THREADS", "2")
    assert len(cells[0]._row_blocks(16)) == 2
    _compare(cells, 16)
    workspace = Workspace()
    for lengths in (None, [7] * 8 + [3] * 8):
        _compare(cells, 16, lengths, workspace)
        _compare(cells, 16, lengths, workspace)     # the buffers reused


def test_a_token_model_with_its_readout_after_the_loop_matches_the_interpreter():
    """The main job's model (two LSTM layers and a readout, token inputs): its logits
    after the loop, compiled against the interpreter, forward and every gradient."""
    from pathlib import Path
    spec = Path(rnndsl.__file__).resolve().parent.parent / "specs" / "char_lstm.rnn"
    Compiled = rnndsl.load(spec)
    assert "# feeding no state: after the time loop" in open(Compiled.kernels.__file__).read()
    compiled = Compiled(dtype=np.float64, seed=3, V=6, H=4)
    interp = rnndsl.load(spec, target="interp")(dtype=np.float64, V=6, H=4)
    interp.params = compiled.params
    ids = np.random.default_rng(4).integers(0, 6, (5, 3))
    rc, ri = compiled.forward(ids), interp.forward(ids)
    np.testing.assert_allclose(rc.outputs["logits"], ri.outputs["logits"], rtol=1e-10,
                               atol=1e-12)
    dy = {"logits": np.random.default_rng(5).normal(size=ri.outputs["logits"].shape)}
    gc, gi = compiled.backward(rc, dy), interp.backward(ri, dy)
    for k, v in gi.params.items():
        np.testing.assert_allclose(gc.params[k], v, rtol=1e-9, atol=1e-12, err_msg=k)
