"""IR nodes -> ONNX nodes: the builder that collects a graph's nodes and initializers, and
one rule per `Op` (`ONNX_RULES`) that writes a node of the step graph as ONNX nodes.

Input: a `StepGraph` (rnndsl.ir), the nodes wanted and the ONNX names of the leaves they
read. Output: the ONNX name of every node, with its nodes appended to a `Builder`.

Values keep the interpreter's layout (rnndsl.ir.interp): a batched vector (B, d), a
batched scalar (B, 1), an unbatched vector (d,), an unbatched scalar (), a matrix
(rows, cols); ONNX's broadcasting is NumPy's, so the elementwise rules are one node each.
The same rules serve a whole sequence at once, where batched values are (T, B, d): every
rule works on the last axis (used for the readouts after an ONNX RNN/LSTM/GRU node).
An op without a rule is refused with a `SpecError` naming the op and the equation it
comes from (`refuse`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..core.errors import Diagnostic, SpecError
from ..core.ops import LEAVES, Op, hard_sigmoid_coefficients
from ..ir.graph import StepGraph

OPSET = 18            # ReduceMean takes its axes as an input from 18 on
IR_VERSION = 8        # what opset 18 needs; onnxruntime >= 1.14 reads it

_ELEM = {np.dtype(np.float32): 1, np.dtype(np.float64): 11, np.dtype(np.int64): 7,
         np.dtype(np.int32): 6, np.dtype(np.bool_): 9}


def elem_type(dtype) -> int:
    """The onnx.TensorProto element type of a NumPy dtype."""
    return _ELEM[np.dtype(dtype)]


class Builder:
    """The nodes of one ONNX graph (the model's, or a Scan body's). Initializers always
    live in the root builder: a body reads them from the outer scope."""

    def __init__(self, prefix: str = "", root: "Builder | None" = None):
        from onnx import helper
        self.helper = helper
        self.prefix = prefix
        self.nodes: list = []
        self.root = root or self
        if root is None:
            self.initializers: list = []
            self._consts: dict = {}
            self._names: set[str] = set()
            self._transposed: dict[str, str] = {}

    def fresh(self, hint: str) -> str:
        """A name no other value of the model has: `hint`, or `hint_2`, `hint_3`..."""
        names = self.root._names
        base = self.prefix + hint
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}_{n}"
        names.add(name)
        return name

    def claim(self, name: str) -> str:
        """Reserve an exact name (a graph input, output or param)."""
        assert name not in self.root._names, f"the name {name!r} is taken twice"
        self.root._names.add(name)
        return name

    def op(self, kind: str, inputs, hint: str | None = None, n_out: int = 1,
           out: str | list[str] | None = None, **attrs):
        """Append one node; return its output name (a list of them with n_out > 1)."""
        if out is None:
            outs = [self.fresh(hint or kind.lower()) for _ in range(n_out)]
        else:
            outs = [out] if isinstance(out, str) else list(out)
        self.nodes.append(self.helper.make_node(kind, list(inputs), outs,
                                                name=self.fresh("node/" + kind), **attrs))
        return outs[0] if n_out == 1 else outs

    def initializer(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper
        self.root.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def const(self, array, dtype=None, hint: str = "const") -> str:
        """A constant tensor (an initializer of the root graph, shared by value)."""
        arr = np.asarray(array, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        root = self.root
        if key not in root._consts:
            root._consts[key] = root.initializer(root.fresh(hint), arr)
        return root._consts[key]

    def transposed(self, name: str) -> str:
        """W^T of a param, made once in the root graph (outside any time loop)."""
        root = self.root
        if name not in root._transposed:
            root._transposed[name] = root.op("Transpose", [name], hint=name + ".T",
                                             perm=[1, 0])
        return root._transposed[name]


@dataclass
class Emit:
    """Where a rule writes: its builder, the bound dims, the float dtype, the name of
    the batch's shape as a 1-D int64 tensor ([B] inside a step, [T, B] over a whole
    sequence), and which names hold token ids rather than vectors."""

    b: Builder
    dims: dict[str, int]
    dtype: np.dtype
    batch_shape: str
    tokens: set[str] = field(default_factory=set)

    def scalar(self, value: float) -> str:
        # a constant past the dtype's range is its infinity, as in the cell's own kernels
        # (NumPy's overflow warning would reach the user of `rnndsl export` as noise)
        with np.errstate(over="ignore"):
            return self.b.const(np.asarray(value, dtype=self.dtype))

    def ints(self, values) -> str:
        return self.b.const(np.asarray(values, dtype=np.int64), hint="ints")

    def batched_shape(self, *sizes: int) -> str:
        """The batch shape followed by `sizes`, as a 1-D int64 tensor."""
        return self.b.op("Concat", [self.batch_shape, self.ints(list(sizes))],
                         hint="shape", axis=0)


Rule = Callable[[Emit, StepGraph, int, list], str]


def _unary(kind: str, **attrs) -> Rule:
    def rule(e, step, nid, args):
        return e.b.op(kind, args, **attrs)
    return rule


def _binary(kind: str) -> Rule:
    def rule(e, step, nid, args):
        return e.b.op(kind, args)
    return rule


def _size(e: Emit, dim) -> int:
    return dim.evaluate(e.dims)


def _const(e, step, nid, args):
    return e.scalar(step.graph[nid].attrs[0])


def _dim(e, step, nid, args):
    return e.scalar(_size(e, step.graph[nid].attrs[0]))


def _pow(e, step, nid, args):
    return e.b.op("Pow", [args[0], e.scalar(step.graph[nid].attrs[0])])


def _reduce(kind: str) -> Rule:
    def rule(e, step, nid, args):
        batched = step.graph[nid].type.batched
        return e.b.op(kind, [args[0], e.ints([-1])], keepdims=1 if batched else 0)
    return rule


def _concat(e, step, nid, args):
    G = step.graph
    node = G[nid]
    parts = list(args)
    if node.type.batched:     # an unbatched vector joins a batched one: repeat it over B
        for i, a in enumerate(node.args):
            if not G[a].type.batched:
                size = _size(e, G[a].type.shape[0])
                parts[i] = e.b.op("Expand", [parts[i], e.batched_shape(size)])
    return e.b.op("Concat", parts, axis=-1)


def _slice(e, step, nid, args):
    start, stop = step.graph[nid].attrs
    return e.b.op("Slice", [args[0], e.ints([_size(e, start)]), e.ints([_size(e, stop)]),
                            e.ints([-1])])


def _matvec(e, step, nid, args):
    G = step.graph
    w, x = G[nid].args
    wt = e.b.transposed(args[0]) if G[w].op == Op.PARAM else \
        e.b.op("Transpose", [args[0]], perm=[1, 0])
    if args[1] in e.tokens:   # W @ one_hot(id) is column id of W: row id of W^T
        return e.b.op("Gather", [wt, args[1]], axis=0)
    return e.b.op("MatMul", [args[1], wt])


def _batch(e, step, nid, args):
    t = step.graph[nid].type
    sizes = [_size(e, d) for d in t.shape] or [1]
    return e.b.op("Expand", [args[0], e.batched_shape(*sizes)])


def _expand(e, step, nid, args):
    (dim,) = step.graph[nid].attrs
    return e.b.op("Expand", [args[0], e.ints([_size(e, dim)])])


def _pad(e, step, nid, args):
    G = step.graph
    start, total = (_size(e, d) for d in G[nid].attrs)
    size = _size(e, G[G[nid].args[0]].type.shape[0])
    return e.b.op("Pad", [args[0], e.ints([start, total - start - size]), e.scalar(0.0),
                          e.ints([-1])])


def _hard_sigmoid(e, step, nid, args):
    """HardSigmoid in float32; in float64 min(max(alpha * a + beta, 0), 1) with constants
    of the model's dtype, since HardSigmoid's alpha and beta are float32 attributes (0.2
    would be 0.20000000298..., an error of 1e-9 where float64 exports hold 1e-12)."""
    alpha, beta = hard_sigmoid_coefficients(step.graph[nid].attrs)
    if np.dtype(e.dtype) != np.float32:
        line = e.b.op("Add", [e.b.op("Mul", [args[0], e.scalar(alpha)]), e.scalar(beta)])
        return e.b.op("Min", [e.b.op("Max", [line, e.scalar(0.0)]), e.scalar(1.0)])
    return e.b.op("HardSigmoid", args, alpha=alpha, beta=beta)


def _softplus(e, step, nid, args):
    """Softplus in float32; in float64 relu(a) + log1p(exp(-|a|)), as rnndsl computes
    it, since onnxruntime's float64 Softplus is log(1 + exp(a)), inf from a = 710 on
    (softplus(1000 x) was inf against forward's 1000). ONNX has no log1p: log1p(u) is
    u * log(w) / (w - 1) with w = 1 + u (Goldberg's form: the rounding of w cancels),
    and u where w rounds to 1; log(1 + u) alone gave 0 for softplus(-40)."""
    if np.dtype(e.dtype) == np.float32:
        return e.b.op("Softplus", args)
    u = e.b.op("Exp", [e.b.op("Neg", [e.b.op("Abs", args)])])
    w = e.b.op("Add", [u, e.scalar(1.0)])
    rise = e.b.op("Sub", [w, e.scalar(1.0)])
    ratio = e.b.op("Div", [e.b.op("Mul", [u, e.b.op("Log", [w])]), rise])
    log1p = e.b.op("Where", [e.b.op("Equal", [rise, e.scalar(0.0)]), u, ratio])
    return e.b.op("Add", [e.b.op("Relu", args), log1p])


def _gt(e, step, nid, args):
    return e.b.op("Cast", [e.b.op("Greater", args)], to=elem_type(e.dtype))


ONNX_RULES: dict[Op, Rule] = {
    Op.CONST: _const, Op.DIM: _dim,
    Op.ADD: _binary("Add"), Op.SUB: _binary("Sub"), Op.MUL: _binary("Mul"),
    Op.DIV: _binary("Div"), Op.MIN: _binary("Min"), Op.MAX: _binary("Max"),
    Op.NEG: _unary("Neg"), Op.POW: _pow,
    Op.TANH: _unary("Tanh"), Op.SIGMOID: _unary("Sigmoid"), Op.RELU: _unary("Relu"),
    Op.EXP: _unary("Exp"), Op.LOG: _unary("Log"), Op.SQRT: _unary("Sqrt"),
    Op.SOFTPLUS: _softplus, Op.ABS: _unary("Abs"), Op.SIGN: _unary("Sign"),
    Op.HARD_SIGMOID: _hard_sigmoid,
    Op.SOFTMAX: _unary("Softmax", axis=-1), Op.LOG_SOFTMAX: _unary("LogSoftmax", axis=-1),
    Op.SUM: _reduce("ReduceSum"), Op.MEAN: _reduce("ReduceMean"),
    Op.CONCAT: _concat, Op.SLICE: _slice, Op.MATVEC: _matvec,
    Op.BATCH: _batch, Op.EXPAND: _expand, Op.PAD: _pad, Op.GT: _gt,
    # MATVEC_T, OUTER and UNBROADCAST appear only in adjoint graphs, which no export
    # writes: they have no rule, and `refuse` names them if a forward graph ever has one
}


def emit_nodes(e: Emit, step: StepGraph, order, names: dict[int, str]) -> dict[int, str]:
    """Write the nodes of `order` (ids in topological order) not yet in `names`; leaves
    must be in `names` already, except constants and params (a param's ONNX name is its
    own). Returns `names`, extended."""
    G = step.graph
    for nid in order:
        if nid in names:
            continue
        node = G[nid]
        if node.op == Op.PARAM:
            names[nid] = node.attrs[0]
            continue
        assert node.op not in LEAVES or node.op in (Op.CONST, Op.DIM), \
            f"leaf %{nid} ({G.label(nid)}) has no ONNX name"
        rule = ONNX_RULES.get(node.op)
        if rule is None:
            refuse(step, nid)
        names[nid] = rule(e, step, nid, [names[a] for a in node.args])
    return names


def refuse(step: StepGraph, nid: int):
    """A `SpecError` naming the op of node `nid` and the equation it belongs to."""
    G, cell = step.graph, step.cell
    owner = _owning_definition(step, nid)
    d = next((d for d in cell.definitions if d.name == owner), None)
    op = G[nid].op.value
    where = f" in the equation for {owner}" if owner else ""
    raise SpecError(Diagnostic(
        f"cannot export to ONNX: the op {op}(...){where} has no ONNX equivalent in "
        "rnndsl's exporter", cell.source, d.span if d is not None else None,
        hint="export the cell without it, or file an issue naming the op"))


def _owning_definition(step: StepGraph, nid: int) -> str | None:
    """The name of the first equation whose value reads node `nid` (its own, if it is
    one): equations are lowered in order, so that is where it was written."""
    G = step.graph
    reads = {nid}
    for other in range(nid, len(G)):
        if other != nid and not any(a in reads for a in G[other].args):
            continue
        reads.add(other)
        name = G.names.get(other)
        if name is not None and G[other].op not in LEAVES:
            return name.rstrip("'")
    return None
