"""Symbolic sizes and value types, shared by the checker, the IR and the backends.

A size is linear in the cell's dims (`H`, `4*H`, `I + H`, `3`), so shapes can be compared
and added before any dim is bound. A value's type is its feature shape plus whether it
carries the implicit batch axis: inputs, states and everything computed from them are
batched; parameters and constants are not. At run time a batched vector of size d is a
(B, d) array, a batched scalar (B, 1), an unbatched vector (d,), an unbatched scalar (),
and a matrix parameter (rows, cols): NumPy broadcasting then does the right thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping


@dataclass(frozen=True)
class Dim:
    """`sum(coef * name) + const`, kept canonical (sorted names, no zero coefficients)."""

    terms: tuple[tuple[str, int], ...] = ()
    const: int = 0

    @staticmethod
    def of(name: str) -> "Dim":
        return Dim(((name, 1),), 0)

    @staticmethod
    def lit(value: int) -> "Dim":
        return Dim((), int(value))

    @staticmethod
    def _make(coefs: Mapping[str, int], const: int) -> "Dim":
        return Dim(tuple(sorted((n, c) for n, c in coefs.items() if c != 0)), const)

    def __add__(self, other: "Dim") -> "Dim":
        coefs = dict(self.terms)
        for name, coef in other.terms:
            coefs[name] = coefs.get(name, 0) + coef
        return Dim._make(coefs, self.const + other.const)

    def __neg__(self) -> "Dim":
        return Dim(tuple((n, -c) for n, c in self.terms), -self.const)

    def __sub__(self, other: "Dim") -> "Dim":
        return self + (-other)

    def scaled(self, factor: int) -> "Dim":
        return Dim._make({n: c * factor for n, c in self.terms}, self.const * factor)

    def names(self) -> set[str]:
        return {name for name, _ in self.terms}

    @property
    def is_constant(self) -> bool:
        return not self.terms

    def evaluate(self, dims: Mapping[str, int]) -> int:
        return self.const + sum(coef * dims[name] for name, coef in self.terms)

    def __str__(self) -> str:
        parts = []
        for name, coef in self.terms:
            term = name if abs(coef) == 1 else f"{abs(coef)} * {name}"
            if not parts:
                parts.append(term if coef > 0 else f"-{term}")
            else:
                parts.append(f"+ {term}" if coef > 0 else f"- {term}")
        if self.const or not parts:
            if not parts:
                parts.append(str(self.const))
            else:
                parts.append(f"+ {self.const}" if self.const > 0 else f"- {-self.const}")
        return " ".join(parts)


def shape_str(shape: tuple[Dim, ...]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


@dataclass(frozen=True)
class Type:
    """A value's feature shape and whether it has the implicit batch axis."""

    shape: tuple[Dim, ...]
    batched: bool

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_scalar(self) -> bool:
        return not self.shape

    def with_batch(self, batched: bool) -> "Type":
        return Type(self.shape, batched)

    def __str__(self) -> str:
        return shape_str(self.shape)

    def array_shape(self, dims: Mapping[str, int], batch: int) -> tuple[int, ...]:
        """The NumPy shape of a value of this type, with the batch bound."""
        sizes = tuple(d.evaluate(dims) for d in self.shape)
        if not self.batched:
            return sizes
        return (batch,) + (sizes if sizes else (1,))


SCALAR = Type((), False)
