"""The op set of the IR and each op's shape rule.

One enum names every op. Surface primitives are what a spec can write; internal ops only
appear in adjoint graphs (transposed matvec, outer product, unbroadcast, ...). Each stage
keeps its own table keyed by `Op` (`SHAPE_RULES` here, `interp.INTERP_RULES`,
`grad.VJP_RULES`); `tests/core/test_tables.py` asserts that no op is missing from any of them.

A shape rule takes the operands' `Type`s and the node's attrs and returns the result's
`Type`, or raises `ShapeMismatch` with a sentence the checker places under a caret.
"""

from __future__ import annotations

import enum
from typing import Callable, Sequence

from .shapes import Dim, Type, shape_str


class Op(enum.Enum):
    # leaves: their attrs say which value they stand for
    INPUT = "input"          # (name, t, type): one step's input; t is None in the step graph
    STATE = "state"          # (name, type): a state's value entering the step (or sequence)
    PARAM = "param"          # (name, type)
    CONST = "const"          # (value,): an unbatched scalar
    DIM = "dim"              # (dim,): the size of a dim expression, as an unbatched scalar
    SEED = "seed"            # (kind, name, t, type): a cotangent fed to the adjoint graph
    # elementwise, with scalar and batch broadcasting
    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    NEG = "neg"
    POW = "pow"              # (exponent,)
    MIN = "min"
    MAX = "max"
    TANH = "tanh"
    SIGMOID = "sigmoid"
    RELU = "relu"
    EXP = "exp"
    LOG = "log"
    SQRT = "sqrt"
    SOFTPLUS = "softplus"
    HARD_SIGMOID = "hard_sigmoid"
    ABS = "abs"
    # over the features of one vector
    SOFTMAX = "softmax"
    LOG_SOFTMAX = "log_softmax"
    SUM = "sum"
    MEAN = "mean"
    CONCAT = "concat"
    SLICE = "slice"          # (start, stop): Dims
    MATVEC = "matvec"        # W @ x
    # internal: only adjoint graphs and lowering make these
    MATVEC_T = "matvec_t"    # W^T @ g
    OUTER = "outer"          # sum over the batch of g x^T
    UNBROADCAST = "unbroadcast"  # (type,): sum a cotangent down to an operand's type
    EXPAND = "expand"        # (dim,): a scalar repeated over dim features
    PAD = "pad"              # (start, total): a vector placed at start in zeros of total
    BATCH = "batch"          # an unbatched value repeated over the batch
    # a comparison: surface `greater(a, b)`, also made by adjoint graphs (relu's, max's)
    GT = "gt"                # 1 where a > b, else 0; no gradient
    SIGN = "sign"


LEAVES = frozenset({Op.INPUT, Op.STATE, Op.PARAM, Op.CONST, Op.DIM, Op.SEED})
INTERNAL = frozenset({Op.MATVEC_T, Op.OUTER, Op.UNBROADCAST, Op.EXPAND, Op.PAD, Op.BATCH,
                      Op.SIGN})
# Primitives whose value is piecewise constant: their VJP rules are None (no gradient).
COMPARISONS = frozenset({Op.GT})
PRIMITIVES = frozenset(Op) - LEAVES - INTERNAL

# Surface function names: name -> (op, arity); None arity means one or more.
FUNCTIONS: dict[str, tuple[Op, int | None]] = {
    "tanh": (Op.TANH, 1), "sigmoid": (Op.SIGMOID, 1), "relu": (Op.RELU, 1),
    "exp": (Op.EXP, 1), "log": (Op.LOG, 1), "sqrt": (Op.SQRT, 1),
    "softplus": (Op.SOFTPLUS, 1), "hard_sigmoid": (Op.HARD_SIGMOID, 1), "abs": (Op.ABS, 1),
    "min": (Op.MIN, 2), "max": (Op.MAX, 2), "greater": (Op.GT, 2),
    "softmax": (Op.SOFTMAX, 1), "log_softmax": (Op.LOG_SOFTMAX, 1),
    "sum": (Op.SUM, 1), "mean": (Op.MEAN, 1), "concat": (Op.CONCAT, None),
}

BINARY_OPS: dict[str, Op] = {"+": Op.ADD, "-": Op.SUB, "*": Op.MUL, "/": Op.DIV, "@": Op.MATVEC}

# hard_sigmoid(x) = clip(HARD_SIGMOID_SLOPE * x + 0.5, 0, 1), as in ONNX and Keras.
HARD_SIGMOID_SLOPE = 0.2

# Functions that also take trailing constant numbers, which become the node's attrs:
# hard_sigmoid(a, alpha, beta) = clip(alpha * a + beta, 0, 1) (ONNX's HardSigmoid).
CONSTANT_ARGS: dict[str, tuple[str, ...]] = {"hard_sigmoid": ("alpha", "beta")}
_CONSTANT_DEFAULTS: dict[str, tuple[float, ...]] = {"hard_sigmoid": (HARD_SIGMOID_SLOPE, 0.5)}


def constant_attrs(fn: str, values) -> tuple:
    """The attrs of a call's constants: () where they are the defaults, so that
    `hard_sigmoid(x, 0.2, 0.5)` and `hard_sigmoid(x)` are one node."""
    values = tuple(float(v) for v in values)
    return () if values == _CONSTANT_DEFAULTS[fn] else values


def hard_sigmoid_coefficients(attrs: tuple) -> tuple[float, float]:
    """(alpha, beta) of a HARD_SIGMOID node: its attrs, or the defaults."""
    return tuple(attrs) if attrs else _CONSTANT_DEFAULTS["hard_sigmoid"]


class ShapeMismatch(Exception):
    """Raised by a shape rule; the checker turns it into a placed `CheckError`."""


ShapeRule = Callable[[Sequence[Type], tuple], Type]


def _broadcast(types: Sequence[Type], attrs: tuple) -> Type:
    """Elementwise: equal shapes, or a scalar against anything.

    Matrices pass here because adjoint graphs add weight gradients; the checker keeps
    them out of the surface language, where a matrix only stands left of @.
    """
    shapes = {t.shape for t in types if t.shape}
    if len(shapes) > 1:
        raise ShapeMismatch("shapes differ: " + " vs ".join(shape_str(s) for s in shapes))
    shape = shapes.pop() if shapes else ()
    return Type(shape, any(t.batched for t in types))


def _same(types: Sequence[Type], attrs: tuple) -> Type:
    return types[0]


def _vector(types: Sequence[Type], what: str) -> Type:
    (t,) = types
    if t.rank != 1:
        raise ShapeMismatch(f"{what} needs a vector, got {'a scalar' if t.rank == 0 else t}")
    return t


def _over_features(types: Sequence[Type], attrs: tuple) -> Type:
    return _vector(types, "this function")


def _reduce(types: Sequence[Type], attrs: tuple) -> Type:
    t = _vector(types, "a reduction over features")
    return Type((), t.batched)


def _concat(types: Sequence[Type], attrs: tuple) -> Type:
    size = Dim.lit(0)
    for t in types:
        if t.rank != 1:
            raise ShapeMismatch(f"concat joins vectors, got {'a scalar' if t.rank == 0 else t}")
        size = size + t.shape[0]
    return Type((size,), any(t.batched for t in types))


def _slice(types: Sequence[Type], attrs: tuple) -> Type:
    t = _vector(types, "a slice")
    start, stop = attrs
    return Type((stop - start,), t.batched)


def _matvec(types: Sequence[Type], attrs: tuple) -> Type:
    w, x = types
    if w.rank != 2:
        raise ShapeMismatch(f"the left of @ must be a matrix, got "
                            f"{'a scalar' if w.rank == 0 else 'a vector ' + str(w)}")
    if x.rank != 1:
        raise ShapeMismatch(f"the right of @ must be a vector, got "
                            f"{'a scalar' if x.rank == 0 else 'a matrix ' + str(x)}")
    if w.shape[1] != x.shape[0]:
        raise ShapeMismatch(f"the matrix is {w} but the vector is {x}: the matrix's "
                            f"{w.shape[1]} columns must match the vector's size {x.shape[0]}")
    return Type((w.shape[0],), x.batched)


def _matvec_t(types: Sequence[Type], attrs: tuple) -> Type:
    w, g = types
    assert w.rank == 2 and g.shape == (w.shape[0],), (w, g)
    return Type((w.shape[1],), g.batched)


def _outer(types: Sequence[Type], attrs: tuple) -> Type:
    g, x = types
    assert g.rank == 1 and x.rank == 1, (g, x)
    return Type((g.shape[0], x.shape[0]), False)


def _unbroadcast(types: Sequence[Type], attrs: tuple) -> Type:
    (g,), (target,) = types, attrs
    assert target.rank == 0 or target.shape == g.shape, (g, target)
    assert g.batched or not target.batched, (g, target)
    return target


def _expand(types: Sequence[Type], attrs: tuple) -> Type:
    (g,), (dim,) = types, attrs
    assert g.rank == 0, g
    return Type((dim,), g.batched)


def _pad(types: Sequence[Type], attrs: tuple) -> Type:
    (g,), (_start, total) = types, attrs
    assert g.rank == 1, g
    return Type((total,), g.batched)


def _batch(types: Sequence[Type], attrs: tuple) -> Type:
    (t,) = types
    assert not t.batched, t
    return Type(t.shape, True)


def _leaf_typed(types: Sequence[Type], attrs: tuple) -> Type:
    return attrs[-1]


def _unbatched_scalar(types: Sequence[Type], attrs: tuple) -> Type:
    return Type((), False)


SHAPE_RULES: dict[Op, ShapeRule] = {
    Op.INPUT: _leaf_typed, Op.STATE: _leaf_typed, Op.PARAM: _leaf_typed, Op.SEED: _leaf_typed,
    Op.CONST: _unbatched_scalar, Op.DIM: _unbatched_scalar,
    Op.ADD: _broadcast, Op.SUB: _broadcast, Op.MUL: _broadcast, Op.DIV: _broadcast,
    Op.MIN: _broadcast, Op.MAX: _broadcast, Op.GT: _broadcast,
    Op.NEG: _same, Op.POW: _same, Op.TANH: _same, Op.SIGMOID: _same, Op.RELU: _same,
    Op.EXP: _same, Op.LOG: _same, Op.SQRT: _same, Op.SOFTPLUS: _same,
    Op.HARD_SIGMOID: _same, Op.ABS: _same, Op.SIGN: _same,
    Op.SOFTMAX: _over_features, Op.LOG_SOFTMAX: _over_features,
    Op.SUM: _reduce, Op.MEAN: _reduce, Op.CONCAT: _concat, Op.SLICE: _slice,
    Op.MATVEC: _matvec, Op.MATVEC_T: _matvec_t, Op.OUTER: _outer,
    Op.UNBROADCAST: _unbroadcast, Op.EXPAND: _expand, Op.PAD: _pad, Op.BATCH: _batch,
}


def infer(op: Op, types: Sequence[Type], attrs: tuple = ()) -> Type:
    return SHAPE_RULES[op](types, attrs)
