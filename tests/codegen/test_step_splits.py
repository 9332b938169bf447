"""Below MR rows of batch the register tiles step aside and each step's stacked GEMM is a
BLAS call, which OpenBLAS runs several times slower than its members apart once the
product reaches MICRO_SPLIT_PRODUCT (B * K * N): the kernels then multiply member by
member (forward) and term by term (the backward's g @ [U_1; ...]). Checked compiled
against the interpreter where the split runs (H = 256 at B = 3 and 5: at least three
gates, so B * H * 3H passes the mark) and where it does not (B = 1, a GEMV)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rnndsl
from rnndsl.codegen.dialect import MICRO_SPLIT_PRODUCT
from rnndsl.kernels.tile_sizes import MR

from compare_cells import compare_with_interpreter  # tests/ is on sys.path (conftest.py)

SPECS = Path(__file__).resolve().parents[2] / "specs"


@pytest.fixture(scope="module", params=["lstm", "gru"])
def cells(request):
    Compiled = rnndsl.load(SPECS / f"{request.param}.rnn")
    Interp = rnndsl.load(SPECS / f"{request.param}.rnn", target="interp")
    compiled = Compiled(dtype=np.float64, seed=1, I=5, H=256)
    interp = Interp(dtype=np.float64, I=5, H=256)
    interp.params = compiled.params
    return request.param, compiled, interp


@pytest.mark.parametrize("B", [1, 3, 5])
def test_the_split_steps_match_the_interpreter(cells, B, monkeypatch):
    monkeypatch.setenv("RNNDSL_BLAS_THREADS", "1")
    name, compiled, interp = cells
    assert B < MR
    assert B == 1 or B * 256 * (3 * 256) >= MICRO_SPLIT_PRODUCT
    source = Path(compiled.kernels.__file__).read_text()
    assert "elif split" in source and "elif splitc" in source
    x = np.random.default_rng(B).normal(size=(3, B, 5))
    compare_with_interpreter(compiled, interp, x, seed=B)
    compare_with_interpreter(compiled, interp, x, lengths=[3, 1, 2, 3, 2][:B], seed=B)
