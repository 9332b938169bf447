"""Below MR rows of batch the register tiles step aside and each step's stacked GEMM is a
BLAS call, which OpenBLAS runs several times slower than its members apart once the
product reaches MICRO_SPLIT_PRODUCT (B * K * N): the kernels then multiply member by
member (forward) and term by term (the backward's g @ [U_1; ...]). Where even a member
is past MICRO_TILE_PRODUCT, the tiles run below MR rows too. Checked compiled against
the interpreter on each path: B = 1 (a GEMV: one a member on the params as they are
where their stacked copy would cost more than the further calls, ROW_CALL_ELEMENTS, at
H = 256; the stack, left whole, at H = 16), H = 256 at B = 3 and 5 (at least three
gates: B * H * 3H passes the first mark), H = 512 at B = 4 (B * H * H passes the
second)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rnndsl
from rnndsl.codegen.dialect import MICRO_SPLIT_PRODUCT, MICRO_TILE_PRODUCT
from rnndsl.kernels.tile_sizes import MR, ROW_CALL_ELEMENTS

from compare_cells import compare_with_interpreter  # tests/ is on sys.path (conftest.py)

SPECS = Path(__file__).resolve().parents[2] / "specs"


@pytest.fixture(scope="module", params=["lstm", "gru"])
def classes(request):
    return (rnndsl.load(SPECS / f"{request.param}.rnn"),
            rnndsl.load(SPECS / f"{request.param}.rnn", target="interp"))


@pytest.mark.parametrize("B, H, path", [(1, 16, "whole"), (1, 256, "row"),
                                        (3, 256, "split"), (5, 256, "split"),
                                        (4, 512, "tiles")])
def test_each_step_path_matches_the_interpreter(classes, B, H, path, monkeypatch):
    monkeypatch.setenv("RNNDSL_BLAS_THREADS", "1")
    Compiled, Interp = classes
    compiled = Compiled(dtype=np.float64, seed=1, I=5, H=H)
    interp = Interp(dtype=np.float64, I=5, H=H)
    interp.params = compiled.params
    assert B < MR
    assert (B * H * H >= MICRO_TILE_PRODUCT) == (path == "tiles")
    assert (B >= 2 and B * H * 3 * H >= MICRO_SPLIT_PRODUCT) == (path in ("split", "tiles"))
    T = 3
    members = sum(d.name.startswith("U_") for d in compiled.spec.params)   # U @ h's
    assert (B == 1 and (members - 1) * T * ROW_CALL_ELEMENTS <= H * members * H) == \
        (path == "row")
    source = Path(compiled.kernels.__file__).read_text()
    assert "elif split" in source and "elif splitc" in source and "if tiledc" in source
    assert "elif row" in source
    x = np.random.default_rng(B).normal(size=(T, B, 5))
    compare_with_interpreter(compiled, interp, x, seed=B)
    compare_with_interpreter(compiled, interp, x, lengths=[3, 1, 2, 3, 2][:B], seed=B)
