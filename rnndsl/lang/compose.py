"""Layers: a checked cell inlined into another under a prefix (deep RNNs, readout heads).

Input: a checked sub-cell, the layer's name and the sizes its dims take in the outer
cell. Output: an `Inlined` record of declarations and equations whose names carry the
prefix (`l1.W_i`, `l1.h`), whose shapes are written in the outer cell's dims, and whose
input is a binding equation (`l1.x = <argument>`) that the outer checker types. Used by
`check` only; everything downstream (IR, BPTT, the backends) sees one flat cell, so the
layers of a network share one time loop and one backward pass.

Qualified names contain a dot, which the grammar keeps out of every name a user writes,
so a layer's names can never meet the outer cell's; `emit.ident` turns the dot into a
double underscore, which the checker also reserves.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Mapping

from . import ast
from ..core.errors import Span
from ..core.shapes import Dim, Type


def substitute(size: Dim, sizes: Mapping[str, Dim]) -> Dim:
    """`size` with each of its dims replaced by that dim's size in the outer cell."""
    result = Dim.lit(size.const)
    for name, coef in size.terms:
        result = result + sizes[name].scaled(coef)
    return result


def substitute_type(t: Type, sizes: Mapping[str, Dim]) -> Type:
    return Type(tuple(substitute(d, sizes) for d in t.shape), t.batched)


@dataclass(frozen=True)
class Inlined:
    """One layer, ready for the outer checker.

    params/states: `ast.Var`s with qualified names and outer shapes. bindings: the input
    names (qualified) in declaration order with their outer types. equations: the
    sub-cell's definitions, qualified, in its evaluation order. outputs: output name ->
    the expression that reads it in the outer cell. constraints: (size, minimum,
    message) of the sub-cell, in outer dims."""

    name: str
    cell: str
    params: tuple[ast.Var, ...]
    states: tuple[ast.Var, ...]
    bindings: tuple[tuple[str, Type], ...]
    masks: tuple[tuple[str, Type, float], ...]
    equations: tuple[ast.Equation, ...]
    outputs: dict[str, ast.Expr]
    output_types: dict[str, Type]
    constraints: tuple[tuple[Dim, int, str], ...]


def inline(sub, prefix: str, sizes: Mapping[str, Dim], span: Span) -> Inlined:
    """Qualify every name of the checked cell `sub` with `prefix.` and write its sizes in
    the outer dims. Spans of what is made point at `span` (the layer's declaration): an
    error there is about the layer, since `sub` itself has been checked."""

    def q(name: str) -> str:
        return f"{prefix}.{name}"

    def rename(e: ast.Expr) -> ast.Expr:
        if isinstance(e, ast.Number):
            return replace(e, span=span)
        if isinstance(e, ast.Name):
            return ast.Name(q(e.name), span)
        if isinstance(e, ast.Primed):
            return ast.Primed(q(e.name), span)
        if isinstance(e, ast.BinOp):
            return ast.BinOp(e.op, rename(e.left), rename(e.right), span)
        if isinstance(e, ast.Neg):
            return ast.Neg(rename(e.operand), span)
        if isinstance(e, ast.Pow):
            return ast.Pow(rename(e.base), rename(e.exponent), span)
        if isinstance(e, ast.Call):   # a function: the sub-cell's own layers are inlined
            return ast.Call(e.fn, tuple(rename(a) for a in e.args), span, span)
        if isinstance(e, ast.Slice):
            start = substitute(e.start, sizes) if e.start is not None else None
            stop = substitute(e.stop, sizes) if e.stop is not None else None
            return ast.Slice(rename(e.operand), start, stop, span)
        raise AssertionError(f"a checked cell holds no {type(e).__name__}")

    def var(decl) -> ast.Var:
        init = decl.init
        if isinstance(init, ast.ParamRefInit):
            init = ast.ParamRefInit(q(init.name), span)
        shape = tuple(substitute(d, sizes) for d in decl.type.shape)
        return ast.Var(q(decl.name), shape, init, span, span)

    rates = dict(sub.dropouts)
    equations = tuple(ast.Equation(q(d.name), d.kind == "next", rename(d.expr), span, span)
                      for d in sub.definitions)
    outputs: dict[str, ast.Expr] = {}
    for o in sub.outputs:
        kind, name = o.source
        outputs[o.name] = (ast.Primed(q(name), span) if kind == "next"
                           else ast.Name(q(name), span))
    return Inlined(
        prefix, sub.name,
        params=tuple(var(d) for d in sub.params),
        states=tuple(var(d) for d in sub.states),
        bindings=tuple((q(d.name), substitute_type(d.type, sizes)) for d in sub.inputs
                       if d.name not in rates),
        masks=tuple((q(d.name), substitute_type(d.type, sizes), rates[d.name])
                    for d in sub.inputs if d.name in rates),
        equations=equations,
        outputs=outputs,
        output_types={o.name: substitute_type(o.type, sizes) for o in sub.outputs},
        constraints=tuple((substitute(c.size, sizes), c.minimum,
                           f"in layer '{prefix}' ({sub.name}): {c.message}")
                          for c in sub.constraints))


# ---------------------------------------------------------------------------- lengths
LENGTH_MASK = "length.mask"


def with_lengths(cell):
    """The cell for batches of sequences of different lengths: one more input, a mask
    m[1] (1 while the sequence runs, 0 after it ends), and every state update written as
    `s' = m * new + (1 - m) * s`, every output as `m * y`. After its end a sequence's
    state is frozen and its outputs are zero; gradients stay exact because the masking is
    part of the graph that BPTT differentiates. (`s + m * (new - s)` rounded: with m = 1
    it is not `new` where s is much larger, and lengths equal to T changed the results;
    the padded steps' inputs, which could make `new` infinite and the masked sum NaN,
    are the sequence's last input, cells/base.Cell._inputs.) A `final` output is left as it is: only its
    value at each sequence's last step is read, where m is 1, and so a final output
    that reads only the next states has the same value after the end, where the states
    are frozen (the schedule's final_at_end computes it once there)."""
    from .checked import Decl, Definition, OutputRef

    span = cell.ast.span if cell.ast is not None else None
    mask = Decl(LENGTH_MASK, Type((Dim.lit(1),), True), None, span)
    on = ast.Name("length.on", span)
    off = ast.Name("length.off", span)
    definitions = [Definition("let", "length.on",
                              ast.Call("sum", (ast.Name(LENGTH_MASK, span),), span, span),
                              Type((), True), span),
                   Definition("let", "length.off", ast.BinOp("-", ast.Number(1.0, span), on,
                                                             span), Type((), True), span)]
    for d in cell.definitions:
        if d.kind != "next":
            definitions.append(d)
            continue
        new = f"{d.name}.new"
        definitions.append(Definition("let", new, d.expr, d.type, d.span))
        old = ast.Name(d.name, span)
        kept = ast.BinOp("+", ast.BinOp("*", on, ast.Name(new, span), span),
                         ast.BinOp("*", off, old, span), span)
        definitions.append(Definition("next", d.name, kept, d.type, d.span))
    outputs = []
    for o in cell.outputs:
        if o.final:
            outputs.append(o)
            continue
        kind, name = o.source
        value = ast.Primed(name, span) if kind == "next" else ast.Name(name, span)
        masked = f"{o.name}.masked"
        definitions.append(Definition("let", masked, ast.BinOp("*", on, value, span),
                                      o.type, o.span))
        outputs.append(OutputRef(o.name, ("value", masked), o.type, o.span, o.final))
    return replace(cell, inputs=cell.inputs + (mask,), definitions=tuple(definitions),
                   outputs=tuple(outputs))
