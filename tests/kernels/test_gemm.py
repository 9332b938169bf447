"""rnndsl.kernels.gemm, the register-tiled GEMM of the per-step products: against NumPy on random
shapes (every tail: rows below MR, a last panel past N), both packings, one and two
threads, in the tiles of each shape a machine may choose (8 and 4 rows); the committed
tiles file against its generator; the machine code vectorised."""

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnndsl.kernels import gemm, gemm_tiles

from rnndsl.codegen import gemm_gen

TILE_ROWS = st.sampled_from(gemm.TILE_ROWS)


def _reference(A, W):
    return A.astype(np.float64) @ W.astype(np.float64)


def _check(C, A, W):
    want = _reference(A, W)
    tol = 1e-4 if C.dtype == np.float32 else 1e-12
    scale = np.abs(A).astype(np.float64) @ np.abs(W).astype(np.float64) + 1e-30
    assert np.all(np.abs(C - want) <= tol * scale), np.max(np.abs(C - want) / scale)


@given(M=st.integers(1, 21), K=st.integers(0, 37), N=st.integers(1, 40),
       dtype=st.sampled_from([np.float32, np.float64]), threads=st.sampled_from([1, 2]),
       mr=TILE_ROWS, seed=st.integers(0, 2**31 - 1))
def test_packed_gemm_matches_numpy(M, K, N, dtype, threads, mr, seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((M, K)).astype(dtype)
    W = rng.standard_normal((K, N)).astype(dtype)
    Bp = np.zeros((gemm.panel_count(N), K, gemm.NR), dtype)
    gemm.pack_rows(Bp, W, 0)
    C = np.full((M, N), np.nan, dtype)       # every entry must be written
    gemm.PACKED_GEMM[mr](A, Bp, C, threads)
    _check(C, A, W)


@given(M=st.integers(1, 12), K=st.integers(1, 20), sizes=st.lists(st.integers(1, 20),
       min_size=1, max_size=4), dtype=st.sampled_from([np.float32, np.float64]),
       mr=TILE_ROWS, seed=st.integers(0, 2**31 - 1))
def test_stacked_packings_match_numpy(M, K, sizes, dtype, mr, seed):
    """Stacked members as the generated kernels pack them: forward weights W_k (n_k, K)
    side by side transposed (pack_cols_t), backward ones stacked as rows (pack_rows)."""
    rng = np.random.default_rng(seed)
    members = [rng.standard_normal((n, K)).astype(dtype) for n in sizes]
    N = sum(sizes)
    A = rng.standard_normal((M, K)).astype(dtype)
    fwd = np.zeros((gemm.panel_count(N), K, gemm.NR), dtype)
    j0 = 0
    for W in members:
        gemm.pack_cols_t(fwd, W, j0)
        j0 += W.shape[0]
    C = np.empty((M, N), dtype)
    gemm.PACKED_GEMM[mr](A, fwd, C, 1)
    _check(C, A, np.concatenate(members).T)

    G = rng.standard_normal((M, N)).astype(dtype)   # d(stacked gates) @ [W_1; ...; W_n]
    bwd = np.zeros((gemm.panel_count(K), N, gemm.NR), dtype)
    k0 = 0
    for W in members:
        gemm.pack_rows(bwd, W, k0)
        k0 += W.shape[0]
    D = np.empty((M, K), dtype)
    gemm.PACKED_GEMM[mr](G, bwd, D, 2)
    _check(D, G, np.concatenate(members))


def test_padding_columns_stay_zero():
    W = np.arange(1.0, 7.0).reshape(2, 3)
    Bp = np.zeros((1, 2, gemm.NR))      # as the kernels allocate them
    gemm.pack_rows(Bp, W, 0)
    assert np.array_equal(Bp[0, :, :3], W) and not Bp[0, :, 3:].any()


def test_tiles_file_is_what_the_generator_writes():
    with open(gemm_gen.TILES_PATH, encoding="utf-8") as f:
        assert f.read() == gemm_gen.tiles_module_source(), \
            "rnndsl/gemm_tiles.py is stale: run python -m rnndsl.codegen.gemm_gen"
    assert gemm_gen.main(["--check"]) == 0


@pytest.mark.parametrize("mr", gemm.TILE_ROWS)
def test_tiles_compile_to_vector_fmas(mr):
    """The speed rests on LLVM's SLP vectoriser turning each tile's scalar products into
    vector FMAs. A fresh, uncached compile (Numba shows no machine code for cached ones)
    must hold packed float32 multiply-adds on vector registers."""
    if gemm.config.DISABLE_JIT:
        pytest.skip("NUMBA_DISABLE_JIT=1: nothing is compiled")
    panels = getattr(gemm_tiles, f"panels_{mr}x{gemm.NR}")
    fresh = gemm._vectorised_njit(panels.py_func, cache=False)
    A = np.ones((mr, 3), np.float32)
    Bp = np.ones((1, 3, gemm.NR), np.float32)
    C = np.empty((mr, gemm.NR), np.float32)
    fresh(A, Bp, C, 0, 1)
    assert np.all(C == 3.0)
    asm = "\n".join(fresh.inspect_asm().values())
    packed = re.findall(r"\bv(?:fmadd\d+|mul)ps\s[^\n]*%[yz]mm", asm)
    assert len(packed) >= mr, f"{len(packed)} packed float32 multiply(-add)s"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_parallel_big_gemms_match_numpy(dtype, threads):
    """The GEMMs over all T*B rows, split among threads: by rows of C (parallel_dot,
    blocks of 64 rows or more) and by the summed rows (parallel_dot_tn, 256 or more)."""
    rng = np.random.default_rng(threads)
    A = rng.standard_normal((777, 33)).astype(dtype)
    W = rng.standard_normal((33, 20)).astype(dtype)
    C = np.full((777, 20), np.nan, dtype)
    gemm.parallel_dot(A, W, C, threads)
    _check(C, A, W)
    G = rng.standard_normal((1100, 24)).astype(dtype)
    X = rng.standard_normal((1100, 7)).astype(dtype)
    D = np.full((24, 7), np.nan, dtype)
    gemm.parallel_dot_tn(G, X, D, threads)
    _check(D, G.T, X)
