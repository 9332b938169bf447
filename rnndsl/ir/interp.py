"""The reference backend: NumPy over the UNROLLED graph, forward and adjoint alike.

Input: an IR graph, the nodes wanted, and arrays for its leaves. Output: an array for
every node evaluated. It knows nothing of cells, time loops or kernels: BPTT here is the
symbolic adjoint of the whole unrolled sequence, evaluated node by node, which is what
makes it an independent reference for the compiled backends (they run the adjoint of ONE
step in a backward time loop).

Arrays follow `shapes.Type.array_shape`: a batched vector (B, d), a batched scalar (B, 1),
an unbatched vector (d,), an unbatched scalar (), a matrix (rows, cols).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from .graph import Graph
from ..core.ops import LEAVES, Op, hard_sigmoid_coefficients
from ..core.shapes import Type


@dataclass(frozen=True)
class Context:
    dims: Mapping[str, int]
    batch: int
    dtype: np.dtype


def _sigmoid(x):
    # exp of a non-positive number only: no overflow warnings at either end
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _log_softmax(x):
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _reduce(fn):
    def rule(args, attrs, ctx):
        (x,) = args
        out = fn(x, axis=-1, keepdims=True)
        return out if x.ndim == 2 else out.reshape(())
    return rule


def _concat(args, attrs, ctx):
    if any(a.ndim == 2 for a in args):
        args = [a if a.ndim == 2 else np.broadcast_to(a, (ctx.batch, a.shape[0])) for a in args]
    return np.concatenate(args, axis=-1)


def _slice(args, attrs, ctx):
    (x,), (start, stop) = args, attrs
    return x[..., start.evaluate(ctx.dims):stop.evaluate(ctx.dims)]


def _outer(args, attrs, ctx):
    g, x = args
    if g.ndim == 2:
        return g.T @ x
    return np.outer(g, x)


def _unbroadcast(args, attrs, ctx):
    (g,), (target,) = args, attrs
    if g.ndim == 2 and not target.batched:
        g = g.sum(axis=0)
    if target.rank == 0:
        g = g.sum(axis=-1, keepdims=target.batched)
        if not target.batched:
            g = g.reshape(())
    return g


def _expand(args, attrs, ctx):
    (g,), (dim,) = args, attrs
    n = dim.evaluate(ctx.dims)
    shape = (g.shape[0], n) if g.ndim == 2 else (n,)
    return np.broadcast_to(g, shape).copy()


def _pad(args, attrs, ctx):
    (g,), (start, total) = args, attrs
    s, n = start.evaluate(ctx.dims), total.evaluate(ctx.dims)
    out = np.zeros(g.shape[:-1] + (n,), dtype=g.dtype)
    out[..., s:s + g.shape[-1]] = g
    return out


def _batch(args, attrs, ctx):
    (x,) = args
    shape = (ctx.batch,) + (x.shape if x.ndim else (1,))
    return np.broadcast_to(x, shape).copy()


def _typed(fn):
    """Keep the cell's dtype: NumPy promotes some mixed cases to float64."""
    def rule(args, attrs, ctx):
        return np.asarray(fn(*args), dtype=ctx.dtype)
    return rule


def _hard_sigmoid(args, attrs, ctx):
    alpha, beta = hard_sigmoid_coefficients(attrs)
    return np.asarray(np.clip(args[0] * alpha + beta, 0, 1), dtype=ctx.dtype)


InterpRule = Callable[[list, tuple, Context], np.ndarray]

INTERP_RULES: dict[Op, InterpRule] = {
    Op.CONST: lambda args, attrs, ctx: np.asarray(attrs[0], dtype=ctx.dtype),
    Op.DIM: lambda args, attrs, ctx: np.asarray(attrs[0].evaluate(ctx.dims), dtype=ctx.dtype),
    Op.ADD: _typed(np.add), Op.SUB: _typed(np.subtract), Op.MUL: _typed(np.multiply),
    Op.DIV: _typed(np.divide), Op.NEG: _typed(np.negative),
    Op.POW: lambda args, attrs, ctx: np.asarray(np.power(args[0], attrs[0]), dtype=ctx.dtype),
    Op.MIN: _typed(np.minimum), Op.MAX: _typed(np.maximum),
    Op.TANH: _typed(np.tanh), Op.SIGMOID: _typed(_sigmoid),
    Op.RELU: _typed(lambda x: np.maximum(x, 0)), Op.EXP: _typed(np.exp),
    Op.LOG: _typed(np.log), Op.SQRT: _typed(np.sqrt),
    Op.SOFTPLUS: _typed(lambda x: np.logaddexp(0, x)),
    Op.HARD_SIGMOID: _hard_sigmoid, Op.ABS: _typed(np.abs),
    Op.SOFTMAX: _typed(_softmax), Op.LOG_SOFTMAX: _typed(_log_softmax),
    Op.SUM: _reduce(np.sum), Op.MEAN: _reduce(np.mean),
    Op.CONCAT: _concat, Op.SLICE: _slice,
    Op.MATVEC: lambda args, attrs, ctx: args[1] @ args[0].T,
    Op.MATVEC_T: lambda args, attrs, ctx: args[1] @ args[0],
    Op.OUTER: _outer, Op.UNBROADCAST: _unbroadcast, Op.EXPAND: _expand, Op.PAD: _pad,
    Op.BATCH: _batch,
    Op.GT: _typed(lambda a, b: (a > b)), Op.SIGN: _typed(np.sign),
}
# Leaves other than constants are fed by the caller.
FED = frozenset(LEAVES) - {Op.CONST, Op.DIM}


def evaluate(G: Graph, roots, feeds: Mapping[int, np.ndarray], ctx: Context,
             known: dict[int, np.ndarray] | None = None) -> dict[int, np.ndarray]:
    """Evaluate `roots` and all they read. `known` values are reused and extended in place.
    Overflow and invalid operations give inf and NaN quietly, as the compiled kernels do:
    what reads the results (a loss, a check of the outputs) says what went wrong, where
    NumPy's RuntimeWarnings would name a line of this file."""
    values = known if known is not None else {}
    values.update(feeds)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        return _evaluate(G, roots, ctx, values)


def _evaluate(G: Graph, roots, ctx: Context, values: dict) -> dict[int, np.ndarray]:
    for nid in G.needed(roots):
        if nid in values:
            continue
        node = G[nid]
        if node.op in FED:
            raise KeyError(f"leaf %{nid} ({G.label(nid)}) was not fed")
        out = INTERP_RULES[node.op]([values[a] for a in node.args], node.attrs, ctx)
        assert out.shape == expected_shape(node.type, ctx), (
            f"%{nid} {node.op.value} gave shape {out.shape}, expected "
            f"{expected_shape(node.type, ctx)}")
        values[nid] = out
    return values


def expected_shape(t: Type, ctx: Context) -> tuple[int, ...]:
    return t.array_shape(ctx.dims, ctx.batch)
