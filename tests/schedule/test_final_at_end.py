"""The schedule's `final_at_end`: a `final` output that reads the step only through the
next states is computed once, after the forward loop, from the final states; the plan
choice forced both ways and checked compiled against the interpreter (with and without
variable lengths, one and two row blocks, a lent workspace), and the outputs that must
stay in the loop (they read an input, a value the backward reads, a node another
output needs at every step) stay there."""

from __future__ import annotations

import numpy as np
import pytest

import rnndsl
from rnndsl.cells.base import Workspace
from rnndsl.lang.specfile import read_spec
from rnndsl.pipeline import plan_cell
from rnndsl.schedule.explain import explain_lines
from rnndsl.schedule.plan import PASSES

from compare_cells import compare_with_interpreter  # tests/ is on sys.path (conftest.py)

PATH = "tests/final_at_end.rnn"
# three final outputs and an ordinary one: `logits` and `last` read only h' (they move),
# `mixed` reads the input too (it stays in the loop)
MANY = """
cell Many {
  dims I, H, K
  input x[I]
  state h[H]
  param W[H, I], U[H, H], V[K, H], c[K], V2[K, H], A[K, I]
  h' = tanh(W @ x + U @ h)
  final logits = V @ h' + c
  final last = h'
  final mixed = V2 @ h' + A @ x
  output seq = h' * 2
}
"""
DIMS = {"I": 3, "H": 4, "K": 5}


# readout_after would take the outputs that stay in the loop (they feed no state) out
# of it: here they stay, to see what final_at_end leaves in the loop
OURS = [p for p in PASSES if p != "readout_after"]


def _plan(text: str, name: str, passes=OURS):
    return plan_cell(read_spec(PATH, text=text).cells[name], passes)


def test_only_the_outputs_read_from_the_final_states_move():
    plan = _plan(MANY, "Many")
    assert plan.at_end == ("logits", "last")
    G = plan.graph
    moved = plan.order["last"]
    assert moved and all(plan.stage[n] == "last" for n in moved)
    assert plan.step.outputs["logits"] in moved
    assert not any(n in plan.saved for n in moved)          # nothing of it is taped
    assert plan.stage[plan.step.outputs["mixed"]] == "fwd"
    assert any(G[n].op.value == "matvec" and G[G[n].args[0]].attrs[0] == "V" for n in moved)
    lines = explain_lines(plan, "forward")
    assert "  after the loop, from the final states, B rows: final logits, last" in lines
    off = _plan(MANY, "Many", [p for p in OURS if p != "final_at_end"])
    assert _plan(MANY, "Many", PASSES).stage[plan.step.outputs["mixed"]] == "after"
    assert off.at_end == () and not off.order["last"]


@pytest.mark.parametrize("body, why", [
    ("z = V @ h'\n  final a = z + c\n  final b = z + A @ x", "b needs z at every step"),
    ("final p = tanh(V @ h')", "the backward reads tanh's value at every step"),
    ("final q = V @ h + c", "it reads the state before the step"),
])
def test_outputs_that_need_the_loop_stay_in_it(body, why):
    text = MANY.split("  final logits")[0] + "  " + body + "\n}\n"
    plan = _plan(text, "Many")
    assert plan.at_end == (), why
    assert not plan.order["last"], why


def test_the_generated_forward_computes_them_after_its_loop():
    from rnndsl.build.modules import build_source
    source = build_source(read_spec(PATH, text=MANY), passes=OURS)
    forward = source.split("def forward_Many(")[1].split("\ndef ")[0]
    after = forward.split("    copy2(fin_h, s_h)\n")[1]
    assert "copy2(out_logits, w_logits)" in after and "copy2(out_last, s_h)" in after
    assert "out_mixed[t]" in forward.split("    copy2(fin_h, s_h)\n")[0]
    assert "out_logits,    # output logits at each sequence's end, written, (B, size)" \
        in forward


@pytest.fixture(scope="module", params=["on", "off"])
def cells(request):
    no = () if request.param == "on" else ("final_at_end",)
    Compiled = rnndsl.load_text(MANY, path=PATH, no_passes=no)
    assert bool(Compiled.meta.get("at_end")) == (request.param == "on")
    Interp = rnndsl.load_text(MANY, path=PATH, target="interp")
    compiled = Compiled(dtype=np.float64, seed=2, **DIMS)
    interp = Interp(dtype=np.float64, **DIMS)
    interp.params = compiled.params
    return compiled, interp


def _compare(cells, B: int, lengths=None, workspace=None):
    x = np.random.default_rng(B).normal(size=(7, B, 3))
    compare_with_interpreter(*cells, x, lengths, workspace, seed=B)


@pytest.mark.parametrize("lengths", [None, [7, 2, 5]], ids=["full", "lengths"])
def test_compiled_matches_the_interpreter(cells, lengths):
    _compare(cells, 3, lengths)
    if lengths is not None and cells[0].meta.get("at_end"):     # the masked twin's too
        assert cells[0]._lengths_twin().meta.get("at_end") == ("logits", "last")


def test_row_blocks_and_a_workspace_match_the_interpreter(cells, monkeypatch):
    monkeypatch.setenv("RNNDSL_BLAS_THREADS", "2")
    assert len(cells[0]._row_blocks(16)) == 2
    _compare(cells, 16)
    workspace = Workspace()
    for lengths in (None, [7] * 8 + [3] * 8):
        _compare(cells, 16, lengths, workspace)
        _compare(cells, 16, lengths, workspace)     # the buffers reused


def test_a_sequence_without_a_last_step_is_refused_either_way(cells, monkeypatch):
    """A final output needs each sequence's last step: a length of 0 is refused as the
    per-step way refuses it, also where every final output was computed at the end (here
    forced by counting only those two as final), though the kernel has a value."""
    c, i = cells
    x = np.zeros((3, 2, 3))
    if c.meta.get("at_end"):
        monkeypatch.setattr(c, "_final_outputs", lambda: set(c.meta["at_end"]))
    for cell in (c, i):
        with pytest.raises(rnndsl.BindError, match=r"for a last step, lengths must lie in 1"):
            cell.forward(x, lengths=[3, 0])
