"""One table of initialisers (core/initialisers.py) for the checker and the cells: every
name the checker accepts draws, at its arity, an array of the param's shape and dtype."""

from __future__ import annotations

import numpy as np
import pytest

import rnndsl
from rnndsl.core.initialisers import INITIALISERS, initial_value
from rnndsl.lang.check import INITIALISERS as CHECKED

ARGS = {0: (), 1: (0.25,), 2: (-0.5, 0.5)}


def test_the_checker_reads_the_same_table():
    assert CHECKED is INITIALISERS


@pytest.mark.parametrize("name", sorted(INITIALISERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_each_initialiser_draws_its_shape_and_dtype(name, dtype):
    init = INITIALISERS[name]
    shape = (4, 3) if init.matrix else (5,)
    args = ARGS[init.max_args]
    a = initial_value(name, args, shape, np.random.default_rng(1), dtype)
    b = initial_value(name, args, shape, np.random.default_rng(1), dtype)
    assert a.shape == shape and a.dtype == dtype
    np.testing.assert_array_equal(a, b)                 # the seed decides


def test_the_matrix_rules():
    rng = np.random.default_rng(2)
    w = initial_value("glorot", (), (30, 20), rng, np.float64)
    assert np.abs(w).max() <= np.sqrt(6 / 50)
    q = initial_value("orthogonal", (), (6, 4), rng, np.float64)
    np.testing.assert_allclose(q.T @ q, np.eye(4), atol=1e-12)
    q = initial_value("orthogonal", (), (4, 6), rng, np.float64)
    np.testing.assert_allclose(q @ q.T, np.eye(4), atol=1e-12)


@pytest.mark.parametrize("name", sorted(INITIALISERS))
def test_every_initialiser_works_in_a_spec(name):
    init = INITIALISERS[name]
    args = ARGS[init.max_args]
    call = name + (f"({', '.join(map(str, args))})" if args else "")
    text = (f"cell C {{ dims H  input x[H]  state h[H]  param W[H, H] ~ {call}, b[H]\n"
            "  h' = tanh(W @ h + x + b)  output h' }")
    if not init.matrix:
        text = text.replace(f"W[H, H] ~ {call}, b[H]", f"W[H, H], b[H] ~ {call}")
    cell = rnndsl.load_text(text, target="interp")(H=3, seed=0)
    assert cell.params["W"].shape == (3, 3)
