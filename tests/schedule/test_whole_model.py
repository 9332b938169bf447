"""Whole-model plan choices, each forced both ways and checked compiled against the
interpreter: `hoist_outputs` (the backward's work that only the outputs' cotangents
need, a readout's W_y^T @ d_logits, runs over all T*B rows before the backward loop)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rnndsl
from rnndsl.lang.specfile import read_spec
from rnndsl.pipeline import plan_cell
from rnndsl.schedule.explain import explain_lines
from rnndsl.schedule.plan import PASSES

ROOT = Path(__file__).resolve().parents[2]
PATH = str(ROOT / "specs" / "readout_test.rnn")     # beside lstm.rnn, for the use
# one LSTM layer and two readouts: one from the new state, one (a bias-free projection
# of the state through tanh) that also feeds nothing back
READOUT = """use "lstm.rnn"
cell Readout {
  dims  I, H, V
  input x[I]
  layer l = LSTM(I = I, H = H)
  param W_y[V, H], b_y[V], W_p[V, H]
  h = l(x)
  output logits = W_y @ h + b_y
  output p = tanh(W_p @ h) * 2
}
"""
CHOICES = {"all passes": (), "without hoist_outputs": ("hoist_outputs",),
           "no passes": PASSES}


@pytest.mark.parametrize("choice", list(CHOICES))
def test_readout_plans_match_the_interpreter(choice):
    Compiled = rnndsl.load_text(READOUT, path=PATH, no_passes=CHOICES[choice])
    Interp = rnndsl.load_text(READOUT, path=PATH, target="interp")
    dims = {"I": 3, "H": 4, "V": 5}
    c, i = Compiled(dtype=np.float64, seed=2, **dims), Interp(dtype=np.float64, **dims)
    i.params = c.params
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 9, 3))
    rc, ri = c.forward(x), i.forward(x)
    dy = {k: rng.normal(size=v.shape) for k, v in ri.outputs.items()}
    ds = {k: rng.normal(size=v.shape) for k, v in ri.state.items()}
    gc, gi = c.backward(rc, dy, ds), i.backward(ri, dy, ds)
    for k, v in ri.outputs.items():
        np.testing.assert_allclose(rc.outputs[k], v, rtol=1e-10, atol=1e-12)
    for table in ("params", "inputs", "state"):
        for k, v in getattr(gi, table).items():
            np.testing.assert_allclose(getattr(gc, table)[k], v, rtol=1e-9, atol=1e-12,
                                       err_msg=f"{table} {k}")


def test_the_readout_gradient_leaves_the_backward_loop_only_with_the_pass():
    cell = read_spec(PATH, text=READOUT).cells["Readout"]

    def backward_lines(passes):
        lines = explain_lines(plan_cell(cell, passes), "backward")
        loop = lines.index("  for t in T-1 .. 0:")
        return lines[1:loop], lines[loop:]

    before, loop = backward_lines(PASSES)
    assert "  all T*B rows: GEMM g @ W_y" in before
    assert not any("W_y" in line and "GEMM g @" in line for line in loop)
    before, loop = backward_lines([p for p in PASSES if p != "hoist_outputs"])
    assert not before
    assert any("GEMM g @ W_y" in line for line in loop)
