"""The specs shipped with rnndsl: where they are, and what each one holds.

The repository's top-level `specs/` folder ships inside the wheel as `rnndsl/specs`
(hatchling's force-include in pyproject.toml, as for `grammars/`). `specs_dir` finds it
there, or in the source tree for an editable install or a run from a checkout.
`shipped_path` is the lookup `use "lstm.rnn"` falls back to when the using file's own
folder has no such file (spec.read_spec); `shipped_specs` lists them all, one line each.

This module imports nothing of rnndsl at its top: spec.read_spec calls into it, and it
reads specs only inside `shipped_specs`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import NamedTuple

SPECS_FOLDER = "specs"
SPEC_SUFFIX = ".rnn"


def specs_dir() -> Path:
    """The shipped specs folder: the wheel's `rnndsl/specs`, or the source tree's top-level
    `specs/` for an editable install."""
    packaged = resources.files("rnndsl").joinpath(SPECS_FOLDER)
    if packaged.is_dir():
        return Path(str(packaged))
    source_tree = Path(__file__).resolve().parent.parent / SPECS_FOLDER
    assert source_tree.is_dir(), f"shipped specs not found in the package nor at {source_tree}"
    return source_tree


def shipped_path(name: str) -> Path | None:
    """Where the shipped spec called `name` is, or would be: `specs_dir() / name` for a
    bare file name such as "lstm.rnn" (the file may not exist); None for a path with a
    folder in it, which never names a shipped spec."""
    if not name or Path(name).name != name or name == "..":
        return None
    return specs_dir() / name


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
        return ", ".join(f"{d.name}{d.type}" for d in items) or "none"
    outs = ", ".join(o.name for o in cell.outputs) or "none (final state only)"
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
    from .spec import read_spec
    listing = []
    for path in sorted(specs_dir().glob("*" + SPEC_SUFFIX)):
        spec_file = read_spec(path)
        summary = " | ".join(cell_summary(c) for c in spec_file.cells.values())
        listing.append(ShippedSpec(path.name, path, summary,
                                   first_comment(spec_file.source.text)))
    return listing
