"""The `simplify` pass: constant folding and algebraic identities, as nodes are made.

`peephole(graph, op, args, attrs)` returns the id of an existing (or folded) node that
computes the same value as the node asked for, or None to make it. Rules:

- constant folding: an elementwise op whose operands are all constants becomes one
  constant (computed in float64; the kernels cast constants to the cell's dtype);
- identities: x + 0, 0 + x, x - 0, x * 1, 1 * x, x / 1, x ** 1 and -(-x) are x, and
  0 - x is -x.

Each rule applies only where the result has the type the node would have had (a scalar
0 added to a vector may not stand for it, nor an unbatched value for a batched one).
x * 0 is left alone: it is NaN, not 0, when x is infinite or NaN. Users rarely write
these; they come from layers and generated cells (a bias of 0, a scale of 1), and the
pass keeps the compiled loops free of them. The graph is hash-consed, so what a rule
returns is shared like any other node.
"""

from __future__ import annotations

import math

from ..core.ops import Op, infer

_FOLD = {
    Op.ADD: lambda a, b: a + b,
    Op.SUB: lambda a, b: a - b,
    Op.MUL: lambda a, b: a * b,
    Op.DIV: lambda a, b: a / b if b != 0 else None,
    Op.NEG: lambda a: -a,
    Op.MIN: lambda a, b: min(a, b),
    Op.MAX: lambda a, b: max(a, b),
    Op.ABS: abs,
    Op.RELU: lambda a: max(a, 0.0),
    Op.TANH: math.tanh,
    Op.SIGMOID: lambda a: 1.0 / (1.0 + math.exp(-a)) if a > -700 else 0.0,
    Op.EXP: lambda a: math.exp(a) if a < 700 else None,
    Op.LOG: lambda a: math.log(a) if a > 0 else None,
    Op.SQRT: lambda a: math.sqrt(a) if a >= 0 else None,
}


def _const(graph, nid: int):
    node = graph[nid]
    return node.attrs[0] if node.op == Op.CONST else None


def peephole(graph, op: Op, args: tuple[int, ...], attrs: tuple) -> int | None:
    """A node equal to op(args) already in `graph` (or a new constant), or None."""
    consts = [_const(graph, a) for a in args]
    if op in _FOLD and args and all(c is not None for c in consts):
        value = _FOLD[op](*consts)
        if value is not None and math.isfinite(value):
            return graph.const(value)
        return None
    if op == Op.POW and consts[0] is not None:
        try:
            value = consts[0] ** attrs[0]
        except (OverflowError, ZeroDivisionError):
            return None
        return graph.const(value) if isinstance(value, float) and math.isfinite(value) \
            else None
    want = infer(op, [graph[a].type for a in args], attrs)

    def same(candidate: int) -> int | None:
        return candidate if graph[candidate].type == want else None

    if op == Op.ADD:
        if consts[1] == 0.0:
            return same(args[0])
        if consts[0] == 0.0:
            return same(args[1])
    elif op == Op.SUB:
        if consts[1] == 0.0:
            return same(args[0])
        if consts[0] == 0.0 and graph[args[1]].type == want:
            return graph.add(Op.NEG, (args[1],))
    elif op == Op.MUL:
        if consts[1] == 1.0:
            return same(args[0])
        if consts[0] == 1.0:
            return same(args[1])
    elif op == Op.DIV:
        if consts[1] == 1.0:
            return same(args[0])
    elif op == Op.POW:
        if attrs[0] == 1.0:
            return same(args[0])
    elif op == Op.NEG:
        inner = graph[args[0]]
        if inner.op == Op.NEG:
            return same(inner.args[0])
    return None
