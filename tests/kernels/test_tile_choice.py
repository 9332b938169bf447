"""The register tile's rows, chosen for the CPU (rnndsl.kernels.tile_sizes): 8 with
AVX-512, 4 without (where 8 rows' sums spill out of 16 vector registers); RNNDSL_TILES
picks one by hand. The suite pins 8x16 (tests/conftest.py); here a cell is built and run
under 4x16 in a process of its own (the choice is made once a process), compiled against
the interpreter at batches around both row counts; and the two tiles' build keys kept
apart, so that a shared cache holds a module for each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rnndsl.core.errors import BindError
from rnndsl.kernels import tile_sizes

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("env, isa", [
    ({"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": "+avx,+avx2,+fma,-avx512f"}, "avx2"),
    ({"NUMBA_CPU_NAME": "generic"}, "other"),
    # an empty or partial feature list keeps the named CPU's own features, as in LLVM
    ({"NUMBA_CPU_NAME": "skylake-avx512", "NUMBA_CPU_FEATURES": ""}, "avx512"),
    ({"NUMBA_CPU_NAME": "skylake-avx512", "NUMBA_CPU_FEATURES": "+avx2"}, "avx512"),
], ids=["haswell", "generic", "skx-empty", "skx-partial"])
def test_the_vector_isa_is_the_one_numba_compiles_for(env, isa):
    """Asked of Numba's own target machine, which a process makes once: so in a process
    of its own (LLVM compiles for any x86 CPU, whatever this one is)."""
    done = subprocess.run(
        [sys.executable, "-c", "from rnndsl.kernels.tile_sizes import vector_isa; "
                               "print(vector_isa())"],
        capture_output=True, text=True, timeout=300,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")}, **env})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == isa


@pytest.mark.parametrize("isa, rows", [("avx512", 8), ("avx2", 4), ("other", 4)])
def test_the_rows_follow_the_vector_registers(isa, rows, monkeypatch):
    monkeypatch.delenv("RNNDSL_TILES", raising=False)
    monkeypatch.setattr(tile_sizes, "vector_isa", lambda: isa)
    mr, why = tile_sizes.tile_choice.__wrapped__()
    assert mr == rows and why.startswith("AVX-512") == (isa == "avx512")
    assert "vector registers" in why


def test_rnndsl_tiles_picks_by_hand_and_refuses_what_has_no_tiles(monkeypatch):
    monkeypatch.setenv("RNNDSL_TILES", "4x16")
    assert tile_sizes.tile_choice.__wrapped__() == (4, "RNNDSL_TILES=4x16")
    monkeypatch.setenv("RNNDSL_TILES", "6x16")
    with pytest.raises(BindError, match=r"RNNDSL_TILES must be auto or one of 8x16, 4x16, "
                                        r"got '6x16'"):
        tile_sizes.tile_choice.__wrapped__()


CHILD = r"""
import json, sys
import numpy as np
import rnndsl
from rnndsl.kernels import tile_sizes
Cell = rnndsl.load(sys.argv[1])
Ref = rnndsl.load(sys.argv[1], target="interp")
errors = {}
for B in (3, 4, 5, 9, 13):
    cell = Cell(dtype=np.float64, seed=1, I=6, H=20)
    ref = Ref(dtype=np.float64, I=6, H=20)
    ref.params = cell.params
    x = np.random.default_rng(B).normal(size=(5, B, 6))
    run, want = cell.forward(x), ref.forward(x)
    dy = {"h": np.random.default_rng(B + 1).normal(size=run.outputs["h"].shape)}
    got_g, want_g = cell.backward(run, dy), ref.backward(want, dy)
    errors[B] = max([float(np.abs(run.outputs["h"] - want.outputs["h"]).max())]
                    + [float(np.abs(got_g.params[k] - want_g.params[k]).max())
                       for k in want_g.params])
module = sys.modules[Cell.__module__]
print(json.dumps({"MR": tile_sizes.MR, "module": module.__file__, "errors": errors,
                  "kernel_MR": module.MR}))
"""


def _child(tiles: str, cache: Path) -> dict:
    env = dict(os.environ, RNNDSL_TILES=tiles, RNNDSL_CACHE_DIR=str(cache))
    done = subprocess.run([sys.executable, "-c", CHILD, str(REPO / "specs" / "lstm.rnn")],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_cell_compiled_for_four_row_tiles_matches_the_interpreter(tmp_path):
    """B = 3 is under both row counts (BLAS, or one-row tiles); 4 and 5 take the 4-row
    tile (and a one-row tail); 9 and 13, two row blocks' worth."""
    four = _child("4x16", tmp_path)
    assert four["MR"] == 4 and four["kernel_MR"] == 4
    text = Path(four["module"]).read_text()
    assert "packed_gemm_4x16 as packed_gemm" in text and "\nMR = 4\n" in text
    assert all(err < 1e-10 for err in four["errors"].values()), four["errors"]


def test_modules_for_two_tiles_are_kept_apart_in_one_cache(monkeypatch):
    """A cache shared by machines of two kinds (a home folder on a network drive) holds
    a module for each tile: their texts differ, so their names must."""
    from rnndsl.build.cache import target_key
    keys = set()
    for rows in tile_sizes.TILE_ROWS:
        monkeypatch.setattr(tile_sizes, "tile_choice", lambda rows=rows: (rows, "test"))
        keys.add(target_key("cpu"))
    assert len(keys) == len(tile_sizes.TILE_ROWS)
    assert target_key("cuda") == "cuda"
