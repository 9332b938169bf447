"""The records of a generated module's metadata (`<Cell>_META`): what each entry is, by
name, in the text a person reads and in what the runtime reads.

Each is a tuple, so that code reading the metadata by position (and modules rnndsl 0.1.0
wrote, whose entries are plain tuples) reads both alike: `Tape(19, size) == (19, size)`.

- `Arg(kind, *rest)`: one argument of a kernel, in order: `Arg("param", "W_i")`,
  `Arg("tape", 19)` (a saved value, by IR node), `Arg("T")` (a size);
- `Const(kind, value)`: the kernels' typed constant k<n>: ("value", 1.0), ("dim",
  Size) for a size the runtime evaluates once the dims are bound, or ("tuning", name)
  for a mark chosen for the machine (rnndsl.build.machine);
- `Size(terms, const)`: a linear size, sum(coef * dim) + const, as core/shapes.Dim;
- `Tape(node, size)`: a value the forward saves for BPTT, and its feature size.
"""

from __future__ import annotations

from collections import namedtuple

Const = namedtuple("Const", "kind value")
Size = namedtuple("Size", "terms const")
Tape = namedtuple("Tape", "node size")


class Arg(tuple):
    """A kernel argument: its kind, then what names it (nothing for a size like T)."""

    __slots__ = ()

    def __new__(cls, kind: str, *rest):
        return super().__new__(cls, (kind, *rest))

    @property
    def kind(self) -> str:
        return self[0]

    def __repr__(self) -> str:
        return "Arg(" + ", ".join(repr(x) for x in self) + ")"

    def __reduce__(self):        # a pickle (the spec cache, a Dask task) holds the record
        return (Arg, tuple(self))
