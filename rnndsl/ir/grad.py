"""Stage 4: symbolic reverse mode. IR graph + seeds -> adjoint nodes in the same graph.

`VJP_RULES[op]` holds one rule per operand: `rule(G, nid, g) -> cotangent id`, or `None`
where that operand gets no gradient. A rule builds IR (so the adjoint is IR too, shown
by `rnndsl graph --grad`, and later compiled), may reuse the node's own output (tanh,
sigmoid, exp, sqrt and softmax do), and returns a cotangent of exactly its operand's type:
`unbroadcast` sums a batched or vector cotangent down to a param or a scalar.

`backward` is the driver: a reversed topological walk from the seeds, cotangents
accumulated with `add`, an arity and a type check with context at every step.
BPTT is `backward` over the unrolled graph (`grad_unrolled`); `grad_step` is the adjoint
of ONE step, which the compiled backends run in a backward time loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from .graph import Graph, StepGraph, Unrolled
from ..core.ops import LEAVES, Op, hard_sigmoid_coefficients
from ..core.shapes import Dim, Type

Rule = Optional[Callable[[Graph, int, int], int]]


def unbroadcast(G: Graph, g: int, target: Type) -> int:
    """Sum a cotangent down to the type of the operand it flows to."""
    return g if G[g].type == target else G.add(Op.UNBROADCAST, (g,), (target,))


def _arg(G: Graph, nid: int, i: int) -> int:
    return G[nid].args[i]


def _ub(i: int, make: Callable[[Graph, int, int], int]) -> Rule:
    """A rule for operand i whose raw cotangent may need summing down to its type."""
    def rule(G: Graph, nid: int, g: int) -> int:
        return unbroadcast(G, make(G, nid, g), G[_arg(G, nid, i)].type)
    return rule


def _mul(G, a, b):
    return G.add(Op.MUL, (a, b))


def _sub(G, a, b):
    return G.add(Op.SUB, (a, b))


def _div(G, a, b):
    return G.add(Op.DIV, (a, b))


def _hard_sigmoid_rule(G, nid, g):
    """alpha where 0 < alpha * x + beta < 1 (strictly: 0 at the kinks), else 0; written
    on x's bounds, so the default's are -2.5 < x < 2.5."""
    alpha, beta = hard_sigmoid_coefficients(G[nid].attrs)
    x = _arg(G, nid, 0)
    if alpha == 0:
        return _mul(G, g, G.const(0.0))
    lo, hi = sorted((-beta / alpha, (1.0 - beta) / alpha))
    inside = _mul(G, G.add(Op.GT, (x, G.const(lo))), G.add(Op.GT, (G.const(hi), x)))
    return _mul(G, g, _mul(G, G.const(alpha), inside))


def _pow_rule(G, nid, g):
    (p,) = G[nid].attrs
    x = _arg(G, nid, 0)
    if p == 0:          # x ** 0 is 1 everywhere: 0 * x ** -1 would be NaN at x = 0
        return _mul(G, g, G.const(0.0))
    slope = G.const(p) if p == 1 else _mul(G, G.const(p), G.add(Op.POW, (x,), (p - 1.0,)))
    return _mul(G, g, slope)


def _min_max(i: int, is_max: bool) -> Rule:
    """The chosen operand gets g; ties go to the left operand (a >= b for max, a <= b for min)."""
    def make(G, nid, g):
        a, b = G[nid].args
        other_wins = G.add(Op.GT, (b, a) if is_max else (a, b))
        mask = other_wins if i == 1 else _sub(G, G.const(1.0), other_wins)
        return _mul(G, g, mask)
    return _ub(i, make)


def _softmax(G, nid, g):
    y = nid
    return _mul(G, y, _sub(G, g, G.add(Op.SUM, (_mul(G, g, y),))))


def _log_softmax(G, nid, g):
    return _sub(G, g, _mul(G, G.add(Op.EXP, (nid,)), G.add(Op.SUM, (g,))))


def _size(G, nid, i=0) -> Dim:
    return G[_arg(G, nid, i)].type.shape[0]


def _concat(i: int) -> Rule:
    def make(G, nid, g):
        offset = Dim.lit(0)
        for a in G[nid].args[:i]:
            offset = offset + G[a].type.shape[0]
        stop = offset + G[_arg(G, nid, i)].type.shape[0]
        return G.add(Op.SLICE, (g,), (offset, stop))
    return _ub(i, make)


def _un_unbroadcast(G, nid, g):
    """The adjoint of summing down: repeat back over features, then over the batch."""
    src = G[_arg(G, nid, 0)].type
    if G[g].type.rank == 0 and src.rank == 1:
        g = G.add(Op.EXPAND, (g,), (src.shape[0],))
    if src.batched and not G[g].type.batched:
        g = G.add(Op.BATCH, (g,))
    return g


VJP_RULES: dict[Op, tuple[Rule, ...]] = {
    **{leaf: () for leaf in LEAVES},
    Op.ADD: (_ub(0, lambda G, n, g: g), _ub(1, lambda G, n, g: g)),
    Op.SUB: (_ub(0, lambda G, n, g: g), _ub(1, lambda G, n, g: G.add(Op.NEG, (g,)))),
    Op.MUL: (_ub(0, lambda G, n, g: _mul(G, g, _arg(G, n, 1))),
             _ub(1, lambda G, n, g: _mul(G, g, _arg(G, n, 0)))),
    Op.DIV: (_ub(0, lambda G, n, g: _div(G, g, _arg(G, n, 1))),
             _ub(1, lambda G, n, g: G.add(Op.NEG, (_mul(G, g, _div(G, n, _arg(G, n, 1))),)))),
    Op.NEG: (lambda G, n, g: G.add(Op.NEG, (g,)),),
    Op.POW: (_pow_rule,),
    Op.MIN: (_min_max(0, False), _min_max(1, False)),
    Op.MAX: (_min_max(0, True), _min_max(1, True)),
    Op.TANH: (lambda G, n, g: _mul(G, g, _sub(G, G.const(1.0), _mul(G, n, n))),),
    Op.SIGMOID: (lambda G, n, g: _mul(G, g, _mul(G, n, _sub(G, G.const(1.0), n))),),
    Op.RELU: (lambda G, n, g: _mul(G, g, G.add(Op.GT, (_arg(G, n, 0), G.const(0.0)))),),
    Op.EXP: (lambda G, n, g: _mul(G, g, n),),
    Op.LOG: (lambda G, n, g: _div(G, g, _arg(G, n, 0)),),
    Op.SQRT: (lambda G, n, g: _div(G, g, _mul(G, G.const(2.0), n)),),
    Op.SOFTPLUS: (lambda G, n, g: _mul(G, g, G.add(Op.SIGMOID, (_arg(G, n, 0),))),),
    Op.HARD_SIGMOID: (_hard_sigmoid_rule,),
    Op.ABS: (lambda G, n, g: _mul(G, g, G.add(Op.SIGN, (_arg(G, n, 0),))),),
    Op.SOFTMAX: (_softmax,),
    Op.LOG_SOFTMAX: (_log_softmax,),
    Op.SUM: (lambda G, n, g: G.add(Op.EXPAND, (g,), (_size(G, n),)),),
    Op.MEAN: (lambda G, n, g: _div(G, G.add(Op.EXPAND, (g,), (_size(G, n),)),
                                   G.add(Op.DIM, (), (_size(G, n),))),),
    # CONCAT is variadic: its rules are made per arity by `rules_for`.
    Op.CONCAT: (),
    Op.SLICE: (lambda G, n, g: G.add(Op.PAD, (g,), (G[n].attrs[0], _size(G, n))),),
    Op.MATVEC: (lambda G, n, g: G.add(Op.OUTER, (g, _arg(G, n, 1))),
                lambda G, n, g: G.add(Op.MATVEC_T, (_arg(G, n, 0), g))),
    Op.MATVEC_T: (lambda G, n, g: G.add(Op.OUTER, (_arg(G, n, 1), g)),
                  lambda G, n, g: G.add(Op.MATVEC, (_arg(G, n, 0), g))),
    Op.OUTER: (lambda G, n, g: G.add(Op.MATVEC, (g, _arg(G, n, 1))),
               lambda G, n, g: G.add(Op.MATVEC_T, (g, _arg(G, n, 0)))),
    Op.UNBROADCAST: (_un_unbroadcast,),
    Op.EXPAND: (lambda G, n, g: G.add(Op.SUM, (g,)),),
    Op.PAD: (lambda G, n, g: G.add(Op.SLICE, (g,), (G[n].attrs[0],
                                                    G[n].attrs[0] + _size(G, n))),),
    Op.BATCH: (lambda G, n, g: unbroadcast(G, g, G[_arg(G, n, 0)].type),),
    Op.GT: (None, None),
    Op.SIGN: (None,),
}


def rules_for(G: Graph, nid: int) -> tuple[Rule, ...]:
    node = G[nid]
    if node.op == Op.CONCAT:
        return tuple(_concat(i) for i in range(len(node.args)))
    return VJP_RULES[node.op]


def backward(G: Graph, seeds: list[tuple[int, int]], wrt: list[int],
             totals: dict[int, int] | None = None) -> dict[int, int | None]:
    """Cotangents of `wrt` given (node, seed) pairs; None where no path carries gradient."""
    wrt_set = set(wrt)
    seeded = [n for n, _ in seeds]
    order = G.needed(seeded)
    reaches: set[int] = set()         # nodes that depend on some wrt leaf
    for nid in order:
        if nid in wrt_set or any(a in reaches for a in G[nid].args):
            reaches.add(nid)
    pending: dict[int, list[int]] = {}
    for nid, seed in seeds:
        assert G[seed].type == G[nid].type, (
            f"seed %{seed} is {G[seed].type} but node %{nid} is {G[nid].type}")
        pending.setdefault(nid, []).append(seed)
    total: dict[int, int] = {}
    for nid in reversed(order):
        if nid not in reaches or nid not in pending:
            continue
        parts = pending.pop(nid)
        first_new = len(G.nodes)
        g = parts[0]
        for p in parts[1:]:
            g = G.add(Op.ADD, (g, p))
        total[nid] = g
        node = G[nid]
        rules = rules_for(G, nid)
        assert len(rules) == len(node.args), (
            f"{node.op.value} has {len(node.args)} operands but {len(rules)} VJP rules")
        for pos, (arg, rule) in enumerate(zip(node.args, rules)):
            if rule is None or arg not in reaches:
                continue
            contribution = rule(G, nid, g)
            assert G[contribution].type == G[arg].type, (
                f"VJP of {node.op.value} (node %{nid}) for operand {pos} gave "
                f"{G[contribution].type} (batched={G[contribution].type.batched}), but the "
                f"operand %{arg} is {G[arg].type} (batched={G[arg].type.batched})")
            pending.setdefault(arg, []).append(contribution)
        for made in range(first_new, len(G.nodes)):
            G.adjoint_of.setdefault(made, nid)
    if totals is not None:      # every node's summed cotangent, for the planner
        totals.update(total)
    return {w: total.get(w) for w in wrt}


@dataclass
class UnrolledGrads:
    """Seeds and gradient nodes of BPTT over an unrolled graph (None: zero gradient)."""

    output_seeds: dict[str, list[int]]
    state_seeds: dict[str, int]
    params: dict[str, int | None]
    inputs: dict[str, list[int | None]]
    initial_state: dict[str, int | None]

    def roots(self) -> list[int]:
        found = list(self.params.values()) + list(self.initial_state.values())
        found += [n for seq in self.inputs.values() for n in seq]
        return [n for n in found if n is not None]


def grad_unrolled(u: Unrolled) -> UnrolledGrads:
    """BPTT: reverse mode over the whole unrolled graph, seeded on every output and state."""
    G = u.graph
    out_seeds = {name: [G.add(Op.SEED, (), ("output", name, t, G[nid].type))
                        for t, nid in enumerate(seq)] for name, seq in u.outputs.items()}
    state_seeds = {name: G.add(Op.SEED, (), ("state", name, None, G[nid].type))
                   for name, nid in u.final_state.items()}
    pairs = [(nid, out_seeds[name][t]) for name, seq in u.outputs.items()
             for t, nid in enumerate(seq)]
    pairs += [(nid, state_seeds[name]) for name, nid in u.final_state.items()]
    wrt = list(u.params.values()) + list(u.initial_state.values())
    wrt += [n for seq in u.inputs.values() for n in seq]
    found = backward(G, pairs, wrt)
    return UnrolledGrads(
        out_seeds, state_seeds,
        {name: found[nid] for name, nid in u.params.items()},
        {name: [found[n] for n in seq] for name, seq in u.inputs.items()},
        {name: found[nid] for name, nid in u.initial_state.items()})


@dataclass
class StepGrads:
    """The adjoint of one step: cotangents flowing into the step, gradients out of it."""

    next_state_seeds: dict[str, int]
    output_seeds: dict[str, int]
    params: dict[str, int | None]
    inputs: dict[str, int | None]
    states: dict[str, int | None]
    cotangents: dict[int, int] = field(default_factory=dict)   # node -> its total cotangent

    def roots(self) -> list[int]:
        found = [*self.params.values(), *self.inputs.values(), *self.states.values()]
        return [n for n in found if n is not None]


def grad_step(step: StepGraph) -> StepGrads:
    """Reverse mode over one step, seeded by d(next state) and d(outputs) of that step."""
    G = step.graph
    next_seeds = {name: G.add(Op.SEED, (), ("next", name, None, G[nid].type))
                  for name, nid in step.next_state.items()}
    out_seeds = {name: G.add(Op.SEED, (), ("output", name, None, G[nid].type))
                 for name, nid in step.outputs.items()}
    pairs = [(step.next_state[n], s) for n, s in next_seeds.items()]
    pairs += [(step.outputs[n], s) for n, s in out_seeds.items()]
    wrt = [*step.params.values(), *step.inputs.values(), *step.states.values()]
    totals: dict[int, int] = {}
    found = backward(G, pairs, wrt, totals)
    return StepGrads(next_seeds, out_seeds,
                     {n: found[i] for n, i in step.params.items()},
                     {n: found[i] for n, i in step.inputs.items()},
                     {n: found[i] for n, i in step.states.items()}, totals)
