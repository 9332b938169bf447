"""The files shipped with rnndsl: its specs and its grammar, and where they are.

The repository's top-level `specs/` folder ships inside the wheel as `rnndsl/specs`
(hatchling's force-include in pyproject.toml, as for `grammars/`). `specs_dir` finds it
there, or in the source tree for an editable install or a run from a checkout.
`shipped_path` is the lookup `use "lstm.rnn"` falls back to when the using file's own
folder has no such file (specfile.read_spec); catalog.py lists them, one line each.

This module imports nothing of rnndsl: specfile.read_spec calls into it.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

SPECS_FOLDER = "specs"
SPEC_SUFFIX = ".rnn"
GRAMMAR_NAME = "rnn.lark"


def specs_dir() -> Path:
    """The shipped specs folder: the wheel's `rnndsl/specs`, or the source tree's top-level
    `specs/` for an editable install."""
    packaged = resources.files("rnndsl").joinpath(SPECS_FOLDER)
    if packaged.is_dir():
        return Path(str(packaged))
    source_tree = Path(__file__).resolve().parents[2] / SPECS_FOLDER
    assert source_tree.is_dir(), f"shipped specs not found in the package nor at {source_tree}"
    return source_tree


def shipped_path(name: str) -> Path | None:
    """Where the shipped spec called `name` is, or would be: `specs_dir() / name` for a
    bare file name such as "lstm.rnn" (the file may not exist); None for a path with a
    folder in it, which never names a shipped spec."""
    if not name or Path(name).name != name or name == "..":
        return None
    return specs_dir() / name


def grammar_path() -> Path:
    """The grammar shipped inside the wheel, or the source tree's for an editable install."""
    packaged = resources.files("rnndsl").joinpath("grammars").joinpath(GRAMMAR_NAME)
    if packaged.is_file():
        return Path(str(packaged))
    source_tree = Path(__file__).resolve().parents[2] / "grammars" / GRAMMAR_NAME
    assert source_tree.is_file(), f"grammar not found in the package nor at {source_tree}"
    return source_tree
