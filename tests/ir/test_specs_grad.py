"""BPTT through every spec against central finite differences, and a checker that can fail.

The corpus crossed with every variant: each `specs/*.rnn` x T in {1, 2, 5} x where the loss
puts its cotangents (outputs only, final state only, both). T = 1 has no recurrence to
differentiate through; T = 5 does, four times. State-only injection checks that the final
state's cotangent flows back through the states alone; outputs-only that nothing leaks
in from a zero state seed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import rnndsl
from rnndsl.ir import grad
from rnndsl.cells.gradcheck import DEFAULT_TOLERANCE, GradCheckRow, gradcheck, worst
from rnndsl.core.ops import Op

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.rnn"))


@pytest.fixture(scope="module")
def cells():
    """Loaded once per spec: the unrolled graphs and their adjoints are cached per T."""
    return {path.stem: rnndsl.load(path, target="interp") for path in SPECS}


def _report(rows) -> str:
    return "\n".join(f"  {r.what:<14} analytic {r.analytic:+.12e} numeric {r.numeric:+.12e}"
                     f" (noise {r.noise:.1e}) error {r.error:.2e}" for r in rows)


@pytest.mark.parametrize("inject", ["outputs", "state", "both"])
@pytest.mark.parametrize("T", [1, 2, 5])
@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_spec_gradients_match_finite_differences(cells, path, T, inject):
    Cell = cells[path.stem]
    rows = gradcheck(Cell, T=T, inject=inject)
    expected = {f"param {d.name}" for d in Cell.spec.params}
    expected |= {f"input {d.name}" for d in Cell.spec.inputs if not d.token}   # ids: none
    expected |= {f"state {d.name}" for d in Cell.spec.states}
    assert {r.what for r in rows} == expected
    assert worst(rows).error < DEFAULT_TOLERANCE, f"{path.name} T={T} {inject}:\n" + \
        _report(rows)


def test_gradients_are_not_trivially_zero(cells):
    """A checker comparing zeros with zeros would pass anything: most rows carry signal."""
    rows = gradcheck(cells["lstm"], T=3)
    assert sum(abs(r.analytic) > 1e-3 for r in rows) >= len(rows) - 1


def test_other_dims_and_batch_and_seed(cells):
    rows = gradcheck(cells["two_streams"], dims={"A": 2, "G": 1, "H": 3, "K": 4}, T=3, B=3,
                     seed=7)
    assert worst(rows).error < DEFAULT_TOLERANCE, _report(rows)


def test_error_is_relative_above_the_rounding_floor():
    """Relative error where the difference resolves it; no finer than its rounding."""
    assert GradCheckRow("p", 1.0, 1.0 + 1e-7, noise=1e-10).error == pytest.approx(1e-7, 1e-6)
    assert GradCheckRow("p", 0.0, 0.0).error == 0.0
    # a gradient of 1e-6 next to a rounding of 1e-9: 5e-11 apart is rounding, not a bug
    assert GradCheckRow("p", 1e-6, 1e-6 + 5e-11, noise=1e-9).error < DEFAULT_TOLERANCE
    # ... but 100% off is caught all the same
    assert GradCheckRow("p", 1e-6, 2e-6, noise=1e-9).error > 1e-4
    assert GradCheckRow("p", 1e-6, -1e-6, noise=1e-9).error > 1e-4


# ------------------------------------------------------------------ the checker can fail
def _wrong_tanh(G, n, g):       # d tanh = 1 - y, the square forgotten
    return G.add(Op.MUL, (g, G.add(Op.SUB, (G.const(1.0), n))))


def _wrong_sigmoid(G, n, g):    # y (1 - y) with the factor y dropped
    return G.add(Op.MUL, (g, G.add(Op.SUB, (G.const(1.0), n))))


def _transposed_matvec(G, n, g):  # W @ g instead of W^T @ g where W is square (the U_*)
    w = G[n].args[0]
    rows, cols = G[w].type.shape
    return G.add(Op.MATVEC if rows == cols else Op.MATVEC_T, (w, g))


def _slightly_wrong_tanh(G, n, g):  # off by one part in a thousand
    return G.add(Op.MUL, (g, G.add(Op.SUB, (G.const(1.001), G.add(Op.MUL, (n, n))))))


BROKEN = [
    ("elman", Op.TANH, 0, _wrong_tanh),
    ("lstm", Op.SIGMOID, 0, _wrong_sigmoid),
    ("gru", Op.MATVEC, 1, _transposed_matvec),
    ("elman", Op.TANH, 0, _slightly_wrong_tanh),
]


@pytest.mark.parametrize("spec,op,position,rule", BROKEN,
                         ids=[f"{s}-{r.__name__.strip('_')}" for s, _, _, r in BROKEN])
def test_a_broken_vjp_rule_is_caught(monkeypatch, spec, op, position, rule):
    rules = list(grad.VJP_RULES[op])
    rules[position] = rule
    monkeypatch.setitem(grad.VJP_RULES, op, tuple(rules))
    Cell = rnndsl.load(next(p for p in SPECS if p.stem == spec), target="interp")  # fresh caches
    rows = gradcheck(Cell, T=3)
    assert worst(rows).error > 1e-3, _report(rows)


def test_broken_rule_does_not_outlive_the_test():
    """monkeypatch restored the table: a fresh load checks clean again."""
    Cell = rnndsl.load(next(p for p in SPECS if p.stem == "elman"), target="interp")
    assert worst(gradcheck(Cell, T=3)).error < DEFAULT_TOLERANCE


@pytest.mark.parametrize("inputs", ["input once x[I]", "input once x[I]\n  input z[H]"])
def test_gradcheck_runs_cells_with_inputs_read_once(inputs):
    """`input once` takes one vector a row, and a cell whose inputs are all `once` runs T
    steps (`rnndsl gradcheck -T`): gradcheck refused the first and fed the second
    (T, B, size) sequences."""
    extra = " + z" if "z" in inputs else ""
    text = (f"cell C {{\n  dims I, H\n  {inputs}\n  state h[H]\n  param W[H, I], U[H, H]\n"
            f"  h' = tanh(W @ x + U @ h{extra})\n  output h'\n}}\n")
    Cell = rnndsl.load_text(text, target="interp")
    rows = gradcheck(Cell, T=3)
    assert {r.what for r in rows} >= {"input x", "param U", "state h"}
    bad = worst(rows)
    assert bad.error < DEFAULT_TOLERANCE, _report(rows)
