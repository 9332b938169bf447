"""The shipped specs as a listing (`rnndsl specs`): each file, what its cells are, and
the first line of its opening comment. Reads every spec, so it sits above specfile.py;
shipped.py, which specfile.py consults, only knows where the files are."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from .shipped import SPEC_SUFFIX, specs_dir
from .specfile import read_spec


class ShippedSpec(NamedTuple):
    """One line of the listing: the file name `use` takes, where it is, what it holds."""

    name: str       # "lstm.rnn": what `use "..."` names
    path: Path      # the file, inside specs_dir()
    summary: str    # its own cells, each as `rnndsl check` describes it, joined by " | "
    comment: str    # the text of its opening comment's first line, "" without one


def cell_summary(cell) -> str:
    """One line saying what a checked cell is, in the form `rnndsl check` prints:
    `cell LSTM(I, H): inputs x[I]; states h[H], c[H]; 12 params; outputs h'`."""
    def decls(items):
        return ", ".join(("token " if getattr(d, "token", False) else "") + f"{d.name}{d.type}"
                         for d in items) or "none"
    outs = ", ".join(o.name for o in cell.outputs) or "none (final state only)"
    if cell.sequence_layers:        # a network: its own inputs, and its sequence layers
        inputs = [d for d in cell.inputs if "." not in d.name]
        layers = ", ".join(f"{s.name} ({s.direction} {s.cell.name})"
                           for s in cell.sequence_layers)
        states = [d for d in cell.states]
        return (f"cell {cell.name}({', '.join(cell.dims)}): inputs {decls(inputs)}; "
                f"layers over whole sequences {layers}; states {decls(states)} and "
                f"those layers' own; outputs {outs}")
    return (f"cell {cell.name}({', '.join(cell.dims)}): inputs {decls(cell.inputs)}; "
            f"states {decls(cell.states)}; {len(cell.params)} params; outputs {outs}")


def first_comment(text: str) -> str:
    """The first line of the comment a spec opens with (blank lines before it skipped),
    without its `#`; "" when the file starts with something else."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        return stripped[1:].strip() if stripped.startswith("#") else ""
    return ""


def shipped_specs() -> list[ShippedSpec]:
    """Every shipped spec, by file name, each read and checked (a spec that does not
    check is a bug of the release, and raises its SpecError)."""
    listing = []
    for path in sorted(specs_dir().glob("*" + SPEC_SUFFIX)):
        spec_file = read_spec(path)
        summary = " | ".join(cell_summary(c) for c in spec_file.cells.values())
        listing.append(ShippedSpec(path.name, path, summary,
                                   first_comment(spec_file.source.text)))
    return listing
