"""Every VJP rule against a numerical JVP, one primitive at a time.

A table of gradient specs in the manner of jax's `lax_autodiff_test.py`: each case builds
a tiny IR graph straight from `rnndsl.ir.graph.Graph` (no parser, no checker), names the input
domain of every leaf and its tolerance, and is checked as `check_vjp` does it: for a
random cotangent u and a random direction v,

    <VJP(u), v>  ==  <f(x + h v) - f(x - h v), u> / 2h     (Richardson-extrapolated)

with the VJP built by `rnndsl.ir.grad.backward` from a SEED leaf and both sides evaluated by
`rnndsl.ir.interp.evaluate` in float64. Every leaf is checked on its own direction, so a rule
wrong for one operand cannot hide behind another.

Domains keep each function where it is smooth: log and sqrt and fractional powers on
positive numbers, relu/abs/hard_sigmoid away from their kinks, min/max operands drawn
from interleaved bands so they never tie.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest

from rnndsl.core import ops
from rnndsl.ir.grad import VJP_RULES, backward
from rnndsl.ir.interp import Context, evaluate
from rnndsl.ir.graph import Graph
from rnndsl.core.ops import Op
from rnndsl.core.shapes import Dim, Type

N, M = Dim.of("N"), Dim.of("M")
DIMS = {"N": 4, "M": 3}     # distinct from each other and from the batch: no silent transposes
BATCH = 5
CTX = Context(DIMS, BATCH, np.dtype(np.float64))
H = 1e-4                    # Richardson from h and h/2: truncation O(h^4)

Domain = Callable[[np.random.Generator, tuple], np.ndarray]


# ------------------------------------------------------------------ domains
def uniform(lo: float, hi: float) -> Domain:
    return lambda rng, shape: rng.uniform(lo, hi, size=shape)


def away(kinks: tuple[float, ...], margin: float = 0.2, lo: float = -3.0,
         hi: float = 3.0) -> Domain:
    """Uniform on [lo, hi] with a margin cut out around each kink."""
    def draw(rng, shape):
        x = rng.uniform(lo, hi, size=shape)
        for _ in range(100):
            near = np.zeros(np.shape(x), dtype=bool)
            for k in kinks:
                near |= np.abs(x - k) < margin
            if not near.any():
                return x
            x = np.where(near, rng.uniform(lo, hi, size=shape), x)
        raise AssertionError("domain too narrow")
    return draw


def bands(starts: tuple[float, ...], width: float) -> Domain:
    """One of several intervals [s, s + width]: two interleaved band sets never tie."""
    return lambda rng, shape: rng.choice(starts, size=shape) + rng.uniform(0, width, shape)


EVEN = bands((-2.0, 0.0, 2.0), 0.8)   # vs ODD: |a - b| >= 0.2 everywhere, either may win
ODD = bands((-1.0, 1.0), 0.8)
REALS = uniform(-2.0, 2.0)
POSITIVE = uniform(0.5, 2.0)


# ------------------------------------------------------------------ leaves and cases
@dataclass(frozen=True)
class Leaf:
    name: str
    type: Type
    domain: Domain = REALS
    kind: str = "input"       # input: batched values; param: unbatched


def vec(name, size=N, domain=REALS):
    return Leaf(name, Type((size,), True), domain)


def bscalar(name, domain=REALS):
    return Leaf(name, Type((), True), domain)


def pvec(name, size=N, domain=REALS):
    return Leaf(name, Type((size,), False), domain, "param")


def pscalar(name, domain=REALS):
    return Leaf(name, Type((), False), domain, "param")


def pmat(name, rows=M, cols=N, domain=REALS):
    return Leaf(name, Type((rows, cols), False), domain, "param")


@dataclass(frozen=True)
class Case:
    name: str
    leaves: tuple[Leaf, ...]
    build: Callable[..., int]           # build(G, *leaf_ids) -> output node
    rtol: float = 1e-6
    atol: float = 1e-12


def unary(op: Op, domain: Domain = REALS, leaf=vec, tag: str = "", **kw) -> Case:
    tag = tag or {vec: "", pvec: "_param", bscalar: "_batched_scalar",
                  pscalar: "_param_scalar"}[leaf]
    return Case(f"{op.value}{tag}", (leaf("x", domain=domain),),
                lambda G, x: G.add(op, (x,)), **kw)


def binary(op: Op, a: Leaf, b: Leaf, name: str = "") -> Case:
    return Case(f"{op.value}{name}", (a, b), lambda G, x, y: G.add(op, (x, y)))


def const(G, value):
    return G.const(value)


def pow_case(p: float, domain: Domain = POSITIVE, tag: str = "") -> Case:
    return Case(f"pow{p:g}{tag}", (vec("x", domain=domain),),
                lambda G, x: G.add(Op.POW, (x,), (p,)))


CASES: list[Case] = [
    # elementwise binary ops, same shapes
    *[binary(op, vec("a"), vec("b")) for op in (Op.ADD, Op.SUB, Op.MUL)],
    binary(Op.DIV, vec("a"), vec("b", domain=POSITIVE)),
    binary(Op.DIV, vec("a"), vec("b", domain=uniform(-2.0, -0.5)), "_negative_denominator"),
    binary(Op.MIN, vec("a", domain=EVEN), vec("b", domain=ODD)),
    binary(Op.MAX, vec("a", domain=EVEN), vec("b", domain=ODD)),
    binary(Op.MIN, vec("a", domain=ODD), vec("b", domain=EVEN), "_swapped"),
    binary(Op.MAX, vec("a", domain=ODD), vec("b", domain=EVEN), "_swapped"),
    # broadcasting: a batched vector against an unbatched param vector (unbroadcast sums
    # the batch away), against an unbatched scalar, and against a batched scalar
    *[binary(op, vec("a"), pvec("p"), "_batched_vs_param")
      for op in (Op.ADD, Op.SUB, Op.MUL)],
    binary(Op.DIV, vec("a"), pvec("p", domain=POSITIVE), "_batched_vs_param"),
    binary(Op.DIV, pvec("p"), vec("a", domain=POSITIVE), "_param_vs_batched"),
    binary(Op.MIN, vec("a", domain=EVEN), pvec("p", domain=ODD), "_batched_vs_param"),
    binary(Op.MAX, pvec("p", domain=ODD), vec("a", domain=EVEN), "_param_vs_batched"),
    *[binary(op, vec("a"), pscalar("s", domain=POSITIVE), "_vector_vs_param_scalar")
      for op in (Op.ADD, Op.SUB, Op.MUL, Op.DIV)],
    *[binary(op, pscalar("s"), vec("a", domain=POSITIVE), "_param_scalar_vs_vector")
      for op in (Op.SUB, Op.DIV)],
    binary(Op.MAX, vec("a", domain=EVEN), pscalar("s", domain=ODD), "_vector_vs_scalar"),
    *[binary(op, vec("a"), bscalar("s", domain=POSITIVE), "_vector_vs_batched_scalar")
      for op in (Op.ADD, Op.SUB, Op.MUL, Op.DIV)],
    binary(Op.MUL, pvec("p"), bscalar("s"), "_param_vector_vs_batched_scalar"),
    binary(Op.MIN, bscalar("s", domain=ODD), pvec("p", domain=EVEN), "_bscalar_vs_param"),
    binary(Op.MUL, pvec("p"), pvec("q"), "_params_only"),
    Case("mul_vector_by_constant", (vec("x"),), lambda G, x: G.add(Op.MUL, (x, const(G, 2.5)))),
    Case("div_vector_by_constant", (vec("x"),), lambda G, x: G.add(Op.DIV, (x, const(G, 3.0)))),
    Case("sub_constant_minus_vector", (vec("x"),),
         lambda G, x: G.add(Op.SUB, (const(G, 1.0), x))),
    Case("div_constant_by_vector", (vec("x", domain=POSITIVE),),
         lambda G, x: G.add(Op.DIV, (const(G, 1.0), x))),
    Case("add_sum_to_vector", (vec("x"),),           # a batched scalar from sum, broadcast
         lambda G, x: G.add(Op.MUL, (G.add(Op.SUM, (x,)), x))),
    Case("center_by_mean", (vec("x"),),
         lambda G, x: G.add(Op.SUB, (x, G.add(Op.MEAN, (x,))))),
    Case("layer_norm", (vec("x"), pvec("gamma"), pvec("beta")),
         lambda G, x, gm, bt: _layer_norm(G, x, gm, bt)),
    Case("same_operand_twice", (vec("x"),), lambda G, x: G.add(Op.MUL, (x, x))),
    # unary elementwise
    unary(Op.NEG), unary(Op.NEG, leaf=pscalar),
    unary(Op.TANH), unary(Op.SIGMOID, uniform(-4.0, 4.0)),
    unary(Op.SIGMOID, uniform(-30.0, -20.0), tag="_far_left"),
    # saturated at 1: the difference of values next to 1.0 resolves only ~eps / h, so
    # this case asks for absolute agreement (no NaN, no blow-up), not relative
    unary(Op.SIGMOID, uniform(20.0, 30.0), tag="_far_right", rtol=0.0, atol=1e-9),
    unary(Op.RELU, away((0.0,))), unary(Op.EXP), unary(Op.LOG, POSITIVE),
    unary(Op.LOG, uniform(0.01, 0.1), tag="_near_zero"), unary(Op.SQRT, POSITIVE),
    unary(Op.SQRT, uniform(0.01, 0.1), tag="_near_zero"), unary(Op.SOFTPLUS),
    unary(Op.SOFTPLUS, uniform(-30.0, 30.0), tag="_wide"),
    unary(Op.HARD_SIGMOID, away((-2.5, 2.5), lo=-4.0, hi=4.0)),
    # hard_sigmoid(x, alpha, beta): kinks where alpha * x + beta is 0 or 1
    Case("hard_sigmoid_0.5_-0.25", (vec("x", domain=away((0.5, 2.5), lo=-1.0, hi=3.5)),),
         lambda G, x: G.add(Op.HARD_SIGMOID, (x,), (0.5, -0.25))),
    Case("hard_sigmoid_-0.4_0.3", (vec("x", domain=away((0.75, -1.75), lo=-3.0, hi=2.0)),),
         lambda G, x: G.add(Op.HARD_SIGMOID, (x,), (-0.4, 0.3))),
    # greater selects: x * greater(x, p) (ONNX's ThresholdedRelu) is x above p, else 0;
    # greater itself passes no gradient, so the product's rule alone must be right
    Case("select_by_greater", (vec("x", domain=away((0.1,))),),
         lambda G, x: G.add(Op.MUL, (x, G.add(Op.GT, (x, const(G, 0.1)))))),
    unary(Op.ABS, away((0.0,))),
    unary(Op.TANH, leaf=pvec), unary(Op.EXP, leaf=bscalar),
    # constant powers
    *[pow_case(p) for p in (2.0, 3.0, 1.0, 0.0, 0.5, 1.5, -1.0, -2.0, -0.5, -1.5, 2.7)],
    *[pow_case(p, REALS, "_reals") for p in (2.0, 3.0, 4.0)],
    pow_case(-1.0, uniform(-2.0, -0.5), "_negative"),
    # over the features of one vector
    unary(Op.SOFTMAX, uniform(-3.0, 3.0)), unary(Op.LOG_SOFTMAX, uniform(-3.0, 3.0)),
    unary(Op.SOFTMAX, leaf=pvec), unary(Op.LOG_SOFTMAX, leaf=pvec),
    unary(Op.SUM), unary(Op.MEAN), unary(Op.SUM, leaf=pvec), unary(Op.MEAN, leaf=pvec),
    Case("concat2", (vec("a"), vec("b", M)), lambda G, a, b: G.add(Op.CONCAT, (a, b))),
    Case("concat3_with_param", (vec("a"), pvec("p", M), vec("b")),
         lambda G, a, p, b: G.add(Op.CONCAT, (a, p, b))),
    Case("concat_same_twice", (vec("a"),), lambda G, a: G.add(Op.CONCAT, (a, a))),
    Case("concat1", (vec("a"),), lambda G, a: G.add(Op.CONCAT, (a,))),
    Case("concat_params", (pvec("p"), pvec("q", M)), lambda G, p, q: G.add(Op.CONCAT, (p, q))),
    Case("slice_middle", (vec("x"),),
         lambda G, x: G.add(Op.SLICE, (x,), (Dim.lit(1), Dim.lit(3)))),
    Case("slice_symbolic", (vec("x", N + M),), lambda G, x: G.add(Op.SLICE, (x,), (M, N + M))),
    Case("slice_param", (pvec("p"),), lambda G, p: G.add(Op.SLICE, (p,), (Dim.lit(0), N))),
    Case("slice_of_concat", (vec("a"), vec("b", M)),
         lambda G, a, b: G.add(Op.SLICE, (G.add(Op.CONCAT, (a, b)),), (Dim.lit(2), N + M))),
    Case("matvec", (pmat("W"), vec("x")), lambda G, W, x: G.add(Op.MATVEC, (W, x))),
    Case("matvec_param_vector", (pmat("W"), pvec("p")), lambda G, W, p: G.add(Op.MATVEC, (W, p))),
    Case("matvec_square_shared", (pmat("W", N, N), vec("x")),   # W @ (W @ x)
         lambda G, W, x: G.add(Op.MATVEC, (W, G.add(Op.MATVEC, (W, x))))),
    # internal ops, made by adjoint graphs: they have rules too, so that an adjoint graph
    # (IR like any other) can itself be differentiated
    Case("matvec_t", (pmat("W"), vec("g", M)), lambda G, W, g: G.add(Op.MATVEC_T, (W, g))),
    Case("matvec_t_param_vector", (pmat("W"), pvec("g", M)),
         lambda G, W, g: G.add(Op.MATVEC_T, (W, g))),
    Case("outer", (vec("g", M), vec("x")), lambda G, g, x: G.add(Op.OUTER, (g, x))),
    Case("outer_unbatched", (pvec("g", M), pvec("x")), lambda G, g, x: G.add(Op.OUTER, (g, x))),
    *[Case(f"unbroadcast_to_{what}", (src,), lambda G, x, t=target: G.add(Op.UNBROADCAST, (x,),
                                                                          (t,)))
      for what, src, target in [
          ("param_vector", vec("x"), Type((N,), False)),
          ("batched_scalar", vec("x"), Type((), True)),
          ("scalar", vec("x"), Type((), False)),
          ("scalar_from_param", pvec("x"), Type((), False)),
          ("scalar_from_bscalar", bscalar("x"), Type((), False)),
      ]],
    Case("expand", (bscalar("s"),), lambda G, s: G.add(Op.EXPAND, (s,), (N,))),
    Case("expand_param", (pscalar("s"),), lambda G, s: G.add(Op.EXPAND, (s,), (M,))),
    Case("pad", (vec("x", M),), lambda G, x: G.add(Op.PAD, (x,), (Dim.lit(1), M + N))),
    Case("pad_param", (pvec("x", M),), lambda G, x: G.add(Op.PAD, (x,), (N, M + N))),
    Case("batch", (pvec("p"),), lambda G, p: G.add(Op.BATCH, (p,))),
    Case("batch_scalar", (pscalar("s"),), lambda G, s: G.add(Op.BATCH, (s,))),
]


def _layer_norm(G, x, gamma, beta):
    centred = G.add(Op.SUB, (x, G.add(Op.MEAN, (x,))))
    var = G.add(Op.MEAN, (G.add(Op.POW, (centred,), (2.0,)),))
    std = G.add(Op.SQRT, (G.add(Op.ADD, (var, G.const(1e-5))),))
    return G.add(Op.ADD, (G.add(Op.MUL, (gamma, G.add(Op.DIV, (centred, std)))), beta))


# ------------------------------------------------------------------ the check
def build(case: Case):
    G = Graph()
    ids = []
    for leaf in case.leaves:
        if leaf.kind == "param":
            ids.append(G.add(Op.PARAM, (), (leaf.name, leaf.type)))
        else:
            ids.append(G.add(Op.INPUT, (), (leaf.name, None, leaf.type)))
    y = case.build(G, *ids)
    seed = G.add(Op.SEED, (), ("output", "y", None, G[y].type))
    grads = backward(G, [(y, seed)], ids)
    return G, ids, y, seed, grads


def shape_of(G, nid):
    return G[nid].type.array_shape(DIMS, BATCH)


def check_vjp(case: Case, seed: int = 0) -> list[tuple[str, float, float]]:
    """(leaf, <VJP(u), v>, numerical JVP . u) for each leaf of the case."""
    G, ids, y, seed_id, grads = build(case)
    rng = np.random.default_rng(seed)
    x = {nid: leaf.domain(rng, shape_of(G, nid)) for nid, leaf in zip(ids, case.leaves)}
    u = rng.normal(size=shape_of(G, y))
    forward = evaluate(G, [y], dict(x), CTX)
    assert np.isfinite(forward[y]).all(), f"{case.name}: not finite on its domain"
    roots = [g for g in grads.values() if g is not None]
    values = evaluate(G, roots, {**x, seed_id: u}, CTX)
    rows = []
    for nid, leaf in zip(ids, case.leaves):
        v = rng.normal(size=x[nid].shape)
        g = grads[nid]
        analytic = 0.0 if g is None else float(np.sum(values[g] * v))

        def f_dot_u(step):
            shifted = dict(x)
            shifted[nid] = x[nid] + step * v
            return float(np.sum(evaluate(G, [y], shifted, CTX)[y] * u))

        def central(step):
            return (f_dot_u(step) - f_dot_u(-step)) / (2 * step)
        numeric = (4 * central(H / 2) - central(H)) / 3
        rows.append((leaf.name, analytic, numeric))
    return rows


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("seed", [0, 1])
def test_vjp_matches_numerical_jvp(case, seed):
    for name, analytic, numeric in check_vjp(case, seed):
        err = abs(analytic - numeric)
        assert err <= case.rtol * max(abs(analytic), abs(numeric)) + case.atol, (
            f"{case.name}, d/d{name}: VJP gives {analytic!r}, finite differences "
            f"{numeric!r} (relative error {err / max(abs(numeric), 1e-300):.2e})")


def test_case_names_are_unique():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_every_op_with_a_vjp_has_a_case():
    """Each primitive, and each internal op that has a rule, appears in some case."""
    covered = set()
    for case in CASES:
        G, ids, y, _, _ = build(case)
        covered |= {G[n].op for n in G.needed([y])}
    differentiable = {op for op, rules in VJP_RULES.items()
                      if op not in ops.LEAVES and (op == Op.CONCAT or any(rules))}
    assert ops.PRIMITIVES - ops.COMPARISONS <= differentiable
    assert all(VJP_RULES[op] == (None,) * len(VJP_RULES[op]) for op in ops.COMPARISONS)
    missing = differentiable - covered
    assert not missing, f"no gradient case for {sorted(op.value for op in missing)}"


def test_every_case_reaches_every_leaf():
    """A case whose output ignores a leaf would pass vacuously."""
    for case in CASES:
        G, ids, y, _, grads = build(case)
        assert all(grads[nid] is not None for nid in ids), case.name


def test_the_check_catches_a_wrong_rule(monkeypatch):
    """The harness fails a rule that is slightly off, not just one that is absent."""
    case = unary(Op.TANH)
    monkeypatch.setitem(VJP_RULES, Op.TANH, (
        lambda G, n, g: G.add(Op.MUL, (g, G.add(Op.SUB, (G.const(1.0001),
                                                          G.add(Op.MUL, (n, n)))))),))
    (name, analytic, numeric), = check_vjp(case)
    assert abs(analytic - numeric) > 1e-6 * abs(numeric)


def test_the_check_catches_a_transposed_rule(monkeypatch):
    """With a square W, W @ g and W^T @ g have the same shape: only values tell them apart."""
    case = Case("matvec_square", (pmat("W", N, N), vec("x")),
                lambda G, W, x: G.add(Op.MATVEC, (W, x)))
    rules = list(VJP_RULES[Op.MATVEC])
    rules[1] = lambda G, n, g: G.add(Op.MATVEC, (G[n].args[0], g))
    monkeypatch.setitem(VJP_RULES, Op.MATVEC, tuple(rules))
    rows = dict((name, (a, b)) for name, a, b in check_vjp(case))
    a, b = rows["x"]
    assert abs(a - b) > 1e-3 * abs(b)


def test_the_power_zero_has_a_zero_gradient_at_zero():
    """d/dx x ** 0 = 0 everywhere; the rule p * x ** (p - 1) gave 0 * inf = NaN at 0."""
    import rnndsl
    cell = rnndsl.load_text("cell P {\n  dims N\n  input x[N]\n  output a = x ** 0\n}\n",
                            target="interp")(N=4, dtype=np.float64)
    x = np.array([[[0.0, -2.0, 3.0, 800.0]]])
    run = cell.forward(x)
    np.testing.assert_array_equal(run.outputs["a"], 1.0)
    g = cell.backward(run, d_outputs={"a": np.ones_like(x)})
    np.testing.assert_array_equal(g.inputs["x"], 0.0)

