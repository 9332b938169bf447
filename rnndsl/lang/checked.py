"""The checked cell: what `check` produces and every later stage reads.

A `CheckedCell` holds its dims, its inputs, states and params (`Decl`s with symbolic
types), its definitions in evaluation order, its outputs and the size constraints to
test when dims are bound. The small helpers at the end word the checker's messages.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

from . import ast
from ..core.errors import Diagnostic, Source, Span
from ..core.shapes import Dim, Type


@dataclass(frozen=True)
class Decl:
    """A declared input, state or param with its type and initialiser."""

    name: str
    type: Type
    init: ast.Init | None
    span: Span
    once: bool = False      # an input given once a sequence, at its first step
    token: bool = False     # a one-hot input, given as ids (`input token x[V]`)

@dataclass(frozen=True)
class Definition:
    """One equation, in evaluation order: kind is 'let', 'next' (h' = ...) or 'output'."""

    kind: str
    name: str
    expr: ast.Expr
    type: Type
    span: Span


@dataclass(frozen=True)
class OutputRef:
    """An output's name and where its value comes from: ('value', name) or ('next', state)."""

    name: str
    source: tuple[str, str]
    type: Type
    span: Span
    final: bool = False     # read at each sequence's last step only (many-to-one)

@dataclass(frozen=True)
class Constraint:
    """A size that must be at least `minimum` once dims are bound (slice bounds)."""

    size: Dim
    minimum: int
    message: str
    span: Span


@dataclass(frozen=True)
class SequenceLayer:
    """`layer l1 = bidirectional LSTM(I = V, H = H)` (or `reverse`): a layer run over
    whole sequences, which the cell does not inline (lang/network.py).

    inputs: the names its argument values take in the cell (`l1.x`); outputs: the names
    of its per-step outputs, each an input sequence of the cell (`l1.<name>`)."""

    name: str
    cell: "CheckedCell"
    direction: str
    sizes: tuple[tuple[str, Dim], ...]      # its dims, in the outer cell's
    span: Span
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class CheckedCell:
    name: str
    source: Source
    dims: tuple[str, ...]
    inputs: tuple[Decl, ...]
    states: tuple[Decl, ...]
    params: tuple[Decl, ...]
    definitions: tuple[Definition, ...]
    outputs: tuple[OutputRef, ...]
    constraints: tuple[Constraint, ...]
    warnings: tuple[Diagnostic, ...] = field(default=(), compare=False)
    ast: ast.Cell | None = field(default=None, compare=False, repr=False)
    layers: tuple[tuple[str, str], ...] = ()        # (layer name, cell name), inlined
    dropouts: tuple[tuple[str, float], ...] = ()    # (mask input, rate): see `dropout`
    # layers run over whole sequences (`bidirectional`, `reverse`): such a cell is a
    # network of parts (lang/network.py), not one time loop
    sequence_layers: tuple[SequenceLayer, ...] = ()


class Poison(Exception):
    """An expression failed; its error is already recorded."""


# The words that open statements: reserved, so a state can always be written `name'`.
KEYWORDS = frozenset({"cell", "dims", "input", "state", "param", "output", "use", "layer",
                      "final", "once", "token"})


def declare_dim_hint(dims: list[str], name: str) -> str | None:
    """`declare it: dims H, name` for an unknown dim, unless `name` is a keyword, which no
    dim may take (its declaration says so already)."""
    return None if name in KEYWORDS else f"declare it: dims {', '.join(dims + [name])}"


def suggest(name: str, candidates) -> str | None:
    close = difflib.get_close_matches(name, sorted(candidates), n=3, cutoff=0.6)
    return f"did you mean {' or '.join(repr(c) for c in close)}?" if close else None


def article(noun: str) -> str:
    return ("an " if noun[0] in "aeiou" else "a ") + noun


def arguments_text(low: int, high: int) -> str:
    if high == 0:
        return "no arguments"
    count = str(low) if low == high else f"{low} to {high}"
    return f"{count} argument{'' if high == 1 else 's'}"


def provably(size: Dim) -> int:
    """+1 if size >= 0 for all dims >= 1, -1 if size < 0 for all, 0 if it depends."""
    coefs = [c for _, c in size.terms]
    if all(c >= 0 for c in coefs) and size.const + sum(coefs) >= 0:
        return 1
    if all(c <= 0 for c in coefs) and size.const + sum(coefs) < 0:
        return -1
    return 0


class FailedCell:
    """In a checker's library: a cell that is defined (in this file or a used one) but
    failed its own checks, whose errors are reported where it is. A layer of it is then
    no error of its own ("unknown cell"), only a cell that cannot be checked."""

    def __init__(self, name: str):
        self.name = name


class UsesFailedCell(Exception):
    """A cell whose only fault is a layer of a FailedCell: it cannot be checked, and has
    no error of its own to report (read_spec counts it failed too)."""


# the reverse direction's names in a bidirectional cell: NAME_reverse, as torch's
REVERSE = "_reverse"


def reverse_name_clash(cell) -> tuple[str, str] | None:
    """(kind, name) of the first param or state NAME of `cell` (a CheckedCell) that has a
    NAME_reverse beside it, or None. Run bidirectional, the reverse direction's copy of
    NAME would be NAME_reverse too: one name for two arrays. The checker refuses such a
    cell as a bidirectional layer, and a two-way cell (cells/directions.py) when made."""
    for kind, decls in (("param", cell.params), ("state", cell.states)):
        names = {d.name for d in decls}
        clash = sorted(n for n in names if n + REVERSE in names)
        if clash:
            return kind, clash[0]
    return None
