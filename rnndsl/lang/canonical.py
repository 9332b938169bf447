"""A checked cell's canonical form: what a model is, without how its spec was written.

Input: a `CheckedCell` (layers inlined, definitions in evaluation order). Output: a text
with one line per dim, input, state, param (with its initialiser), equation and output,
each printed by the AST printer, and its hash. Comments, blank lines, spacing, the
order of declarations within a kind, the names of used files and of the cells that
layers come from do not count; a changed shape, initialiser, equation, name or dim does.

Why: a checkpoint must stay loadable after a comment is added to its spec (or the spec
is reformatted), and must still be refused when the model it describes changed. The raw
text's hash (`SpecFile.digest`) keys the build cache, where any byte matters; this form
decides compatibility. `describe_change` names what changed, for the refusal.
"""

from __future__ import annotations

import difflib
import hashlib

from . import printer
from .checked import CheckedCell, Decl

CANONICAL_VERSION = 1     # bump if the form below changes: old digests then mismatch


def _decl(kind: str, d: Decl) -> str:
    shape = "[" + ", ".join(printer.dim(s) for s in d.type.shape) + "]"
    text = f"{kind} {d.name}{shape}"
    if d.init is not None:
        text += f" ~ {printer.init(d.init)}"
    return text


def canonical_form(spec: CheckedCell) -> str:
    """The model's canonical text (see the module docstring), one item a line."""
    lines = [f"cell {spec.name}", "dims " + ", ".join(spec.dims)]
    lines += sorted(_decl("input once" if d.once else "input", d) for d in spec.inputs)
    lines += sorted(_decl("state", d) for d in spec.states)
    lines += sorted(_decl("param", d) for d in spec.params)
    for d in spec.definitions:
        target = d.name + ("'" if d.kind == "next" else "")
        lines.append(f"{d.kind} {target} = {printer.expr(d.expr)}")
    for o in spec.outputs:
        word = "final" if o.final else "output"
        lines.append(f"{word} {o.name} <- {o.source[0]} {o.source[1]}")
    lines += [f"dropout {name} {rate!r}" for name, rate in spec.dropouts]
    return "\n".join(lines) + "\n"


def canonical_digest(spec: CheckedCell) -> str:
    """A short hash of `canonical_form(spec)`."""
    return form_digest(canonical_form(spec))


def form_digest(form: str) -> str:
    """A short hash of a canonical form's text."""
    text = f"v{CANONICAL_VERSION}\n" + form
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def network_form(outer: CheckedCell, parts) -> str:
    """The canonical form of a network cell (lang/network.py): its outer form (inputs,
    states and params under the network's names), then each part, in the order they
    run: a layer's direction, the sizes it binds and what feeds it and what it gives,
    or a segment of the cell's own equations, each followed by its cell's form.
    `parts` pairs each part (a LayerRun or a Segment) with its checked cell. The outer
    form alone has no equation: an edited equation of a network (or of a layer's cell)
    changed nothing in it, and a checkpoint of the old model loaded into the new."""
    lines = [canonical_form(outer).rstrip("\n")]
    for k, (part, cell) in enumerate(parts, 1):
        layer = getattr(part, "layer", None)
        if layer is not None:
            sizes = ", ".join(f"{n} = {printer.dim(d)}" for n, d in layer.sizes)
            lines.append(f"part {k}: layer {layer.name} = {layer.direction} ({sizes})")
        else:
            lines.append(f"part {k}: equations")
        lines += [f"  in {name} <- {' '.join(value)}" for name, value in part.inputs]
        lines += [f"  out {name} -> {' '.join(value)}" for name, value in part.outputs]
        lines += ["  " + line for line in canonical_form(cell).splitlines()]
    return "\n".join(lines) + "\n"


def describe_change(old: str, new: str, limit: int = 4) -> str:
    """What differs between two canonical forms, as `was: ...` / `now: ...` lines."""
    removed, added = [], []
    for line in difflib.unified_diff(old.splitlines(), new.splitlines(), lineterm="", n=0):
        if line.startswith(("---", "+++", "@@")):
            continue
        (removed if line.startswith("-") else added).append(line[1:])
    parts = [f"was: {r}" for r in removed[:limit]] + [f"now: {a}" for a in added[:limit]]
    more = max(0, len(removed) - limit) + max(0, len(added) - limit)
    if more:
        parts.append(f"(and {more} more changed lines)")
    return "\n  ".join(parts) if parts else "(no difference in the model)"
