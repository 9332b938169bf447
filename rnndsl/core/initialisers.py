"""The param initialisers of the language (`param W[H, I] ~ glorot`), one table: what the
checker accepts (arity, matrices only) and what a cell draws, side by side, so that a new
initialiser cannot be accepted by one and missing from the other.

Each draws from a NumPy Generator, in float64, then rounds once to the cell's dtype (a
float32 cell and a float64 cell of one seed start from the same numbers, rounded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class Initialiser:
    name: str
    min_args: int
    max_args: int
    matrix: bool          # initialises matrices only (its rule reads the two sizes)
    draw: Callable        # (shape, args, rng) -> float64 array of that shape
    doc: str


def _glorot(shape, args, rng):
    """Glorot & Bengio 2010, uniform: fan_in = columns, fan_out = rows."""
    limit = np.sqrt(6.0 / (shape[0] + shape[1]))
    return rng.uniform(-limit, limit, size=shape)


def _orthogonal(shape, args, rng):
    """Saxe et al. 2014: Q of a Gaussian matrix, signs fixed by R's diagonal."""
    rows, cols = shape
    q, r = np.linalg.qr(rng.normal(size=(max(rows, cols), min(rows, cols))))
    q = q * np.sign(np.diag(r))
    return q if rows >= cols else q.T


INITIALISERS: dict[str, Initialiser] = {i.name: i for i in (
    Initialiser("zeros", 0, 0, False, lambda s, a, rng: np.zeros(s), "all 0"),
    Initialiser("ones", 0, 0, False, lambda s, a, rng: np.ones(s), "all 1"),
    Initialiser("constant", 1, 1, False, lambda s, a, rng: np.full(s, a[0]), "all c"),
    Initialiser("uniform", 2, 2, False, lambda s, a, rng: rng.uniform(a[0], a[1], size=s),
                "uniform in [low, high)"),
    Initialiser("normal", 2, 2, False, lambda s, a, rng: rng.normal(a[0], a[1], size=s),
                "normal(mean, std)"),
    Initialiser("glorot", 0, 0, True, _glorot, _glorot.__doc__),
    Initialiser("orthogonal", 0, 0, True, _orthogonal, _orthogonal.__doc__),
)}


def initial_value(name: str, args: tuple, shape: tuple[int, ...], rng: np.random.Generator,
                  dtype) -> np.ndarray:
    """A param's starting value: the named initialiser drawn for `shape`, in `dtype`."""
    found = INITIALISERS.get(name)
    if found is None:    # the checker refuses unknown names: reaching here is a bug
        raise AssertionError(f"initialiser {name} passed the checker but has no "
                             "implementation")
    return np.asarray(found.draw(shape, tuple(args), rng)).astype(dtype)
