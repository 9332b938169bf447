"""The abstract syntax of a .rnn file: frozen dataclasses with source spans.

Produced by `parse.parse`, consumed by `check.check` and `printer.unparse`. Spans are
excluded from equality, so two parses of the same text in different layouts compare
equal: the printer round trip relies on that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from ..core.errors import Span
from ..core.shapes import Dim

NOWHERE = Span(0, 0, 0, 0)


def _span() -> Span:
    return field(default=NOWHERE, compare=False, repr=False)


# ----------------------------------------------------------------------------- expressions

@dataclass(frozen=True)
class Number:
    value: float
    span: Span = _span()


@dataclass(frozen=True)
class Name:
    """A reference to a dim-free name: input, previous state, param or intermediate."""

    name: str
    span: Span = _span()


@dataclass(frozen=True)
class Primed:
    """`h'`: the next value of state `h`, computed in this step."""

    name: str
    span: Span = _span()


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * / @
    left: "Expr"
    right: "Expr"
    span: Span = _span()


@dataclass(frozen=True)
class Neg:
    operand: "Expr"
    span: Span = _span()


@dataclass(frozen=True)
class Pow:
    base: "Expr"
    exponent: "Expr"
    span: Span = _span()


@dataclass(frozen=True)
class Call:
    fn: str
    args: tuple["Expr", ...]
    span: Span = _span()
    fn_span: Span = _span()


@dataclass(frozen=True)
class Slice:
    """`v[start:stop]` over the features; missing bounds are None (0 and the length)."""

    operand: "Expr"
    start: Dim | None
    stop: Dim | None
    span: Span = _span()


@dataclass(frozen=True)
class Member:
    """`l1(x).y` or `l1.y`: the output `y` of layer `l1` (a cell with several outputs)."""

    operand: "Expr"
    name: str
    span: Span = _span()


Expr = Union[Number, Name, Primed, BinOp, Neg, Pow, Call, Slice, Member]


# ----------------------------------------------------------------------------- declarations

@dataclass(frozen=True)
class ConstInit:
    value: float
    span: Span = _span()


@dataclass(frozen=True)
class NamedInit:
    """`glorot`, `uniform(-0.1, 0.1)`: an initialiser by name with constant arguments."""

    name: str
    args: tuple[float, ...] = ()
    span: Span = _span()


@dataclass(frozen=True)
class ParamRefInit:
    """`state h[H] = h0`: the initial state is the (learned) parameter h0."""

    name: str
    span: Span = _span()


Init = Union[ConstInit, NamedInit, ParamRefInit]


@dataclass(frozen=True)
class Var:
    """A declared name with its shape: `x[I]`, `W[H, I] ~ glorot`, `c[H] = 0.5`."""

    name: str
    shape: tuple[Dim, ...]
    init: Init | None = None
    span: Span = _span()
    shape_span: Span = _span()


@dataclass(frozen=True)
class DimsDecl:
    names: tuple[str, ...]
    span: Span = _span()
    name_spans: tuple[Span, ...] = field(default=(), compare=False, repr=False)


@dataclass(frozen=True)
class InputDecl:
    """`input x[I]`; `input once z[Z]`: one vector a sequence, given at its first step
    (one-to-many); `input token x[V]`: a one-hot vector, given as the id of its 1 (the
    compiled kernels gather weight columns instead of multiplying by zeros)."""

    vars: tuple[Var, ...]
    span: Span = _span()
    once: bool = False
    token: bool = False


@dataclass(frozen=True)
class StateDecl:
    vars: tuple[Var, ...]
    span: Span = _span()


@dataclass(frozen=True)
class ParamDecl:
    vars: tuple[Var, ...]
    span: Span = _span()


@dataclass(frozen=True)
class Equation:
    """`name = expr` (an intermediate) or `name' = expr` (a state's next value)."""

    target: str
    primed: bool
    expr: Expr
    span: Span = _span()
    target_span: Span = _span()


@dataclass(frozen=True)
class Output:
    """`output y = expr`, `output h'` (named h), or `output g` (an intermediate)."""

    name: str
    expr: Expr | None
    primed: bool = False
    span: Span = _span()
    name_span: Span = _span()
    final: bool = False     # `final y = ...`: read at each sequence's last step only


@dataclass(frozen=True)
class DimBind:
    """`I = V` in a layer declaration: the layer's dim I is the size V here."""

    name: str
    size: Dim
    span: Span = _span()


@dataclass(frozen=True)
class LayerDecl:
    """`layer l1 = LSTM(I = V, H = H)`: an instance of another cell inside this one;
    `layer l1 = bidirectional LSTM(...)` (or `reverse`) one run over whole sequences."""

    name: str
    cell: str
    dims: tuple[DimBind, ...]
    span: Span = _span()
    name_span: Span = _span()
    cell_span: Span = _span()
    direction: str = "forward"


Stmt = Union[DimsDecl, InputDecl, StateDecl, ParamDecl, LayerDecl, Equation, Output]


@dataclass(frozen=True)
class Cell:
    name: str
    body: tuple[Stmt, ...]
    span: Span = _span()
    name_span: Span = _span()


@dataclass(frozen=True)
class Use:
    path: str
    span: Span = _span()


@dataclass(frozen=True)
class Module:
    uses: tuple[Use, ...]
    cells: tuple[Cell, ...]
