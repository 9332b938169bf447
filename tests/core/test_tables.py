"""Every op has a row in every table, and the IR keeps its own invariants.

The tables are keyed by `ops.Op`: the shape rule (`ops.SHAPE_RULES`), the interpreter
(`interp.INTERP_RULES`), the derivative rules (`grad.VJP_RULES`) and each target's code
(`kernel.codegen_rules`: leaves, elementwise formats, view and op emitters). A new op
that misses one of them fails here by name, before any cell happens to use it. Each op is
also built once as a real node (`EXAMPLES`), so the rules are exercised, not only looked
up (the codegen rows are looked up only: the cells' tests run the code they write).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rnndsl.ir import grad

from rnndsl.ir import interp

from rnndsl.codegen import kernel
from rnndsl.codegen.emit_cuda import _CudaKernel
from rnndsl.core import ops
from rnndsl.ir.grad import backward, grad_step, grad_unrolled, rules_for
from rnndsl.ir.interp import Context, evaluate
from rnndsl.ir.graph import Graph, lower, unroll
from rnndsl.core.ops import Op
from rnndsl.core.shapes import Dim, Type
from rnndsl.lang.specfile import read_spec
from rnndsl.schedule.plan import ELEMENTWISE

SPECS = sorted((Path(__file__).resolve().parents[2] / "specs").glob("*.rnn"))
N, M = Dim.of("N"), Dim.of("M")
DIMS = {"N": 4, "M": 3}
BATCH = 2


def _leaves(G: Graph) -> dict[str, int]:
    """A batched vector, a batched scalar, a param vector, scalar and matrix."""
    return {
        "x": G.add(Op.INPUT, (), ("x", None, Type((N,), True))),
        "g": G.add(Op.INPUT, (), ("g", None, Type((M,), True))),
        "s": G.add(Op.STATE, (), ("s", Type((), True))),
        "p": G.add(Op.PARAM, (), ("p", Type((N,), False))),
        "a": G.add(Op.PARAM, (), ("a", Type((), False))),
        "W": G.add(Op.PARAM, (), ("W", Type((M, N), False))),
    }


def _unary(op):
    return lambda G, v: G.add(op, (v["x"],))


def _binary(op):
    return lambda G, v: G.add(op, (v["x"], v["p"]))


# One node of every op, built from the leaves above.
EXAMPLES = {
    Op.INPUT: lambda G, v: v["x"],
    Op.STATE: lambda G, v: v["s"],
    Op.PARAM: lambda G, v: v["W"],
    Op.CONST: lambda G, v: G.const(2.5),
    Op.DIM: lambda G, v: G.add(Op.DIM, (), (N,)),
    Op.SEED: lambda G, v: G.add(Op.SEED, (), ("output", "y", None, Type((N,), True))),
    **{op: _binary(op) for op in (Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.MIN, Op.MAX, Op.GT)},
    **{op: _unary(op) for op in (Op.NEG, Op.TANH, Op.SIGMOID, Op.RELU, Op.EXP, Op.LOG,
                                 Op.SQRT, Op.SOFTPLUS, Op.HARD_SIGMOID, Op.ABS, Op.SIGN,
                                 Op.SOFTMAX, Op.LOG_SOFTMAX, Op.SUM, Op.MEAN)},
    Op.POW: lambda G, v: G.add(Op.POW, (v["x"],), (3.0,)),
    Op.CONCAT: lambda G, v: G.add(Op.CONCAT, (v["x"], v["g"], v["p"])),
    Op.SLICE: lambda G, v: G.add(Op.SLICE, (v["x"],), (Dim.lit(1), N)),
    Op.MATVEC: lambda G, v: G.add(Op.MATVEC, (v["W"], v["x"])),
    Op.MATVEC_T: lambda G, v: G.add(Op.MATVEC_T, (v["W"], v["g"])),
    Op.OUTER: lambda G, v: G.add(Op.OUTER, (v["g"], v["x"])),
    Op.UNBROADCAST: lambda G, v: G.add(Op.UNBROADCAST, (v["x"],), (Type((N,), False),)),
    Op.EXPAND: lambda G, v: G.add(Op.EXPAND, (v["s"],), (N,)),
    Op.PAD: lambda G, v: G.add(Op.PAD, (v["g"],), (Dim.lit(1), M + Dim.lit(2))),
    Op.BATCH: lambda G, v: G.add(Op.BATCH, (v["p"],)),
}


def _feeds(G: Graph, v: dict[str, int], rng) -> dict[int, np.ndarray]:
    return {nid: rng.uniform(0.5, 1.5, size=G[nid].type.array_shape(DIMS, BATCH))
            for nid in v.values()}


# ------------------------------------------------------------------ every op, every table
def test_examples_cover_every_op():
    assert set(EXAMPLES) == set(Op), f"no example node for {set(Op) - set(EXAMPLES)}"


@pytest.mark.parametrize("op", list(Op), ids=lambda op: op.value)
def test_every_op_has_a_shape_rule(op):
    assert op in ops.SHAPE_RULES, f"{op} has no shape rule in ops.SHAPE_RULES"


@pytest.mark.parametrize("op", list(Op), ids=lambda op: op.value)
def test_every_op_has_an_interpreter_rule(op):
    if op in interp.FED:
        assert op in ops.LEAVES and op not in (Op.CONST, Op.DIM)
        return
    assert op in interp.INTERP_RULES, f"{op} has no rule in interp.INTERP_RULES"


def test_only_leaves_are_fed():
    assert interp.FED == ops.LEAVES - {Op.CONST, Op.DIM}


@pytest.mark.parametrize("op", list(Op), ids=lambda op: op.value)
def test_every_op_has_one_vjp_rule_per_operand(op):
    assert op in grad.VJP_RULES, f"{op} has no row in grad.VJP_RULES"
    G = Graph()
    nid = EXAMPLES[op](G, _leaves(G))
    assert G[nid].op == op
    rules = rules_for(G, nid)
    assert len(rules) == len(G[nid].args), (
        f"{op.value} has {len(G[nid].args)} operands but {len(rules)} VJP rules")
    if op != Op.CONCAT:
        assert len(grad.VJP_RULES[op]) == len(G[nid].args)


def test_concat_rules_are_made_per_arity():
    G = Graph()
    v = _leaves(G)
    for args in [(v["x"],), (v["x"], v["p"]), (v["x"], v["g"], v["p"], v["x"])]:
        nid = G.add(Op.CONCAT, args)
        assert len(rules_for(G, nid)) == len(args)
        assert all(rule is not None for rule in rules_for(G, nid))


@pytest.mark.parametrize("op", [op for op in Op if op not in ops.LEAVES],
                         ids=lambda op: op.value)
def test_every_op_evaluates_to_its_types_shape(op):
    """The interpreter rule runs, and its result has the shape the shape rule promised."""
    G = Graph()
    v = _leaves(G)
    nid = EXAMPLES[op](G, v)
    ctx = Context(DIMS, BATCH, np.dtype(np.float64))
    values = evaluate(G, [nid], _feeds(G, v, np.random.default_rng(0)), ctx)
    assert values[nid].shape == G[nid].type.array_shape(DIMS, BATCH)
    assert values[nid].dtype == np.float64
    assert np.isfinite(values[nid]).all()


@pytest.mark.parametrize("op", [op for op in Op if op not in ops.LEAVES],
                         ids=lambda op: op.value)
def test_every_vjp_rule_gives_its_operands_type(op):
    G = Graph()
    v = _leaves(G)
    nid = EXAMPLES[op](G, v)
    seed = G.add(Op.SEED, (), ("output", "y", None, G[nid].type))
    args = G[nid].args
    found = backward(G, [(nid, seed)], list(args))   # checks types and arity inside
    for pos, (a, rule) in enumerate(zip(args, rules_for(G, nid))):
        if rule is None:
            assert found[a] is None
        else:
            assert found[a] is not None and G[found[a]].type == G[a].type, (op, pos)


def test_comparisons_have_no_gradient():
    assert grad.VJP_RULES[Op.GT] == (None, None)
    assert grad.VJP_RULES[Op.SIGN] == (None,)


def test_primitives_are_the_non_leaf_non_internal_ops():
    assert ops.PRIMITIVES | ops.LEAVES | ops.INTERNAL == set(Op)
    assert not ops.PRIMITIVES & ops.INTERNAL and not ops.PRIMITIVES & ops.LEAVES


def test_every_primitive_is_reachable_from_the_surface():
    surface = {op for op, _ in ops.FUNCTIONS.values()} | set(ops.BINARY_OPS.values())
    surface |= {Op.NEG, Op.POW, Op.SLICE}   # unary minus, **, x[a:b]
    assert ops.PRIMITIVES <= surface, f"unreachable: {ops.PRIMITIVES - surface}"
    assert surface <= ops.PRIMITIVES, f"surface writes internal ops: {surface - ops.PRIMITIVES}"


KERNELS = {"cpu": kernel._Kernel, "cuda": _CudaKernel}


@pytest.mark.parametrize("target", KERNELS)
@pytest.mark.parametrize("op", list(Op), ids=lambda op: op.value)
def test_every_op_has_a_codegen_row(op, target):
    """Each target writes every op: a leaf read in place, an elementwise format, or a
    method of the kernel class named in its view or op table."""
    cls = KERNELS[target]
    rules = kernel.codegen_rules(cls)
    assert op in rules, (f"{target}: {cls.__name__} has no code for {op} (no format, and "
                         "no row in VIEW_EMITTERS or OP_EMITTERS)")
    kind, how = rules[op]
    assert kind in kernel.CODEGEN_KINDS
    if kind in ("view", "op"):
        assert callable(getattr(cls, how, None)), f"{target}: {cls.__name__}.{how} ({op})"


@pytest.mark.parametrize("target", KERNELS)
@pytest.mark.parametrize("op", sorted(ELEMENTWISE, key=lambda op: op.value),
                         ids=lambda op: op.value)
def test_every_elementwise_op_has_a_format(op, target):
    cls = KERNELS[target]
    assert op in cls.formats, f"{target}: {cls.__name__}.formats has no format for {op}"
    assert kernel.codegen_rules(cls)[op] == ("elementwise", cls.formats[op].__name__)


def test_codegen_kinds_follow_the_op_sets():
    """Leaves have no code and only leaves; the view and op tables hold no elementwise op
    (emit_stage sends those to the fused loop nests, never to emit_other)."""
    for cls in KERNELS.values():
        kinds = {op: kind for op, (kind, _) in kernel.codegen_rules(cls).items()}
        assert {op for op, kind in kinds.items() if kind == "leaf"} == ops.LEAVES
        assert {op for op, kind in kinds.items() if kind == "elementwise"} == ELEMENTWISE
    assert kernel.codegen_rules(_CudaKernel)[Op.TANH] == ("elementwise", "_cuda_expr")


# ------------------------------------------------------------------ the IR's invariants
@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_networkx_edges_match_operands_for_every_spec(path):
    cell = read_spec(path).pick()
    step = lower(cell)
    step.graph.check_edges()
    u = unroll(step, 3)
    u.graph.check_edges()
    grads = grad_unrolled(u)          # adds the adjoint to the unrolled graph
    assert grads.roots()
    u.graph.check_edges()
    step_grads = grad_step(step)      # adds the one-step adjoint to the step graph
    assert step_grads.roots()
    step.graph.check_edges()


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_ids_are_a_topological_order(path):
    u = unroll(lower(read_spec(path).pick()), 2)
    grad_unrolled(u)
    for nid, node in enumerate(u.graph.nodes):
        assert all(a < nid for a in node.args), (nid, node)


def test_check_edges_catches_a_disagreement():
    G = Graph()
    v = _leaves(G)
    y = G.add(Op.MUL, (v["x"], v["x"]))
    G.check_edges()
    assert G.nx.edges[v["x"], y]["positions"] == (0, 1)
    G.nx.edges[v["x"], y]["positions"] = (0,)
    with pytest.raises(AssertionError, match="disagree"):
        G.check_edges()
    G.nx.edges[v["x"], y]["positions"] = (0, 1)
    G.nx.add_edge(v["p"], y, positions=(0,))
    with pytest.raises(AssertionError, match="disagree"):
        G.check_edges()


def test_hash_consing_shares_identical_nodes():
    G = Graph()
    v = _leaves(G)
    assert G.add(Op.INPUT, (), ("x", None, Type((N,), True))) == v["x"]
    size = len(G)
    t1 = G.add(Op.TANH, (v["x"],))
    assert G.add(Op.TANH, (v["x"],)) == t1
    m1 = G.add(Op.MUL, (t1, v["p"]))
    assert G.add(Op.MUL, (G.add(Op.TANH, (v["x"],)), v["p"])) == m1
    assert G.const(1.0) == G.const(1) == G.add(Op.CONST, (), (1.0,))
    assert len(G) == size + 3
    assert G.nx.number_of_nodes() == len(G)


def test_hash_consing_tells_different_nodes_apart():
    G = Graph()
    v = _leaves(G)
    assert G.add(Op.SUB, (v["x"], v["p"])) != G.add(Op.SUB, (v["p"], v["x"]))
    assert G.add(Op.POW, (v["x"],), (2.0,)) != G.add(Op.POW, (v["x"],), (3.0,))
    assert G.add(Op.SLICE, (v["x"],), (Dim.lit(0), Dim.lit(2))) != \
        G.add(Op.SLICE, (v["x"],), (Dim.lit(1), Dim.lit(3)))
    assert G.const(1.0) != G.const(2.0)
    assert G.add(Op.PARAM, (), ("q", Type((N,), False))) != v["p"]


def test_hash_consing_shares_param_only_work_across_steps():
    """In an unrolled graph a value that reads only params is computed once."""
    text = """cell C {
      dims H
      input x[H]
      state h[H]
      param W[H, H], b[H]
      h' = tanh(W @ h + x + exp(b) * 2)
    }"""
    step = lower(read_spec("<t>", text=text).pick())
    u = unroll(step, 4)
    exps = [n for n in u.graph.nodes if n.op == Op.EXP]
    tanhs = [n for n in u.graph.nodes if n.op == Op.TANH]
    assert len(exps) == 1 and len(tanhs) == 4
