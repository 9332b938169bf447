"""The per-step GEMM alone: rnndsl.kernels.gemm's register tiles against OpenBLAS (Numba's np.dot).

    .venv/bin/python benchmarks/microkernel.py [--steps 50] [--repeat 10] [--dtypes float32]
    .venv/bin/python benchmarks/microkernel.py --tiles      # each tile shape, one thread

    # the tiles as an AVX2 machine would run them, on this one (LLVM told to leave
    # AVX-512 out: 16 vector registers of 256 bits)
    NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES=+avx,+avx2,+fma,+f16c,+popcnt,+sse4.2,-avx512f \
        .venv/bin/python benchmarks/microkernel.py --tiles

For each benchmark shape of DESIGN.md, the LSTM's per-step products: the forward's
(B, H) @ (H, 4H) and BPTT's (B, 4H) @ (4H, H), run `--steps` times in one compiled loop,
as the time loop runs them. Each line gives GFLOP/s (median of `--repeat` runs) with one
thread and with two: for BLAS, OpenBLAS's own threads (threadpoolctl); for the tiles,
rnndsl's parallel loop over panels (Numba's threads). The tiles' weights are packed once,
outside the timing, as a kernel packs them once per call. Results are checked against
np.dot before timing. Last, a weight gradient g^T h at the mid shape, through a
transposed copy of g (as the kernels did before) and through a transposed view.

With --tiles, instead: GFLOP/s of the tiles of each shape rnndsl has (8 x 16 and 4 x 16,
rnndsl.kernels.tile_sizes), one thread, at the same products, and the shape this
machine chooses; the CPU is the one Numba compiles for (NUMBA_CPU_NAME and
NUMBA_CPU_FEATURES change it, as above; Numba caches per CPU, so the two runs do not
share machine code).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

SHAPES = {"char": (1, 128), "small": (16, 128), "mid": (32, 256), "large": (64, 512)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--tiles", action="store_true",
                    help="time each tile shape (one thread) instead of tiles against BLAS")
    args = ap.parse_args(argv)
    for key in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):   # as bench.py does
        os.environ.pop(key, None)
    if args.tiles:
        return tile_shapes(args)

    import scipy.linalg.cython_blas  # noqa: F401  the BLAS Numba's np.dot binds
    from numba import njit
    from threadpoolctl import threadpool_limits

    from rnndsl.kernels import gemm
    @njit(cache=True)
    def blas_steps(A, W, C, steps):
        for _ in range(steps):
            np.dot(A, W, C)

    @njit(cache=True)
    def tile_steps(A, Bp, C, steps, threads):
        for _ in range(steps):
            gemm.packed_gemm(A, Bp, C, threads)

    def median_s(fn):
        fn()
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    print("| shape | product (M x K x N) | dtype | BLAS 1 thread | BLAS 2 | tiles 1 thread "
          "| tiles 2 | tiles / BLAS, 2 threads |")
    print("|---|---|---|---|---|---|---|---|")
    for shape, what, (M, K, N), dname, (A, W, Bp, C, want) in _products(args):
        gemm.packed_gemm(A, Bp, C, 2)
        assert np.abs(C - want).max() <= 1e-3 * np.abs(want).max(), "tiles are wrong"
        flops = 2.0 * M * K * N * args.steps
        rates = []
        for threads in (1, 2):
            with threadpool_limits(threads):
                rates.append(flops / median_s(
                    lambda A=A, W=W, C=C: blas_steps(A, W, C, args.steps)) / 1e9)
        with threadpool_limits(1):
            for threads in (1, 2):
                rates.append(flops / median_s(
                    lambda A=A, Bp=Bp, C=C, n=threads: tile_steps(A, Bp, C, args.steps,
                                                                  n)) / 1e9)
        print(f"| {shape} {what} | {M} x {K} x {N} | {dname} | "
              + " | ".join(f"{r:.0f}" for r in rates)
              + f" | {rates[3] / rates[1]:.2f} |", flush=True)
    print("\n(GFLOP/s, median of the runs; the tiles take batches of at least "
          f"{gemm.MR} rows in the kernels: smaller ones take BLAS)")

    # A weight gradient g^T x over all T*B rows, as the kernels computed it before this
    # session (a transposed copy of g, then the GEMM) and now (BLAS reads g^T as a view).
    from rnndsl.kernels.loops import transposed

    @njit(cache=True)
    def tn_copy(G, X, out):
        np.dot(transposed(G), X, out)

    @njit(cache=True)
    def tn_view(G, X, out):
        np.dot(G.T, X, out)

    print("\n| weight gradient (mid: T*B = 1600, 4H = 1024, H = 256) | dtype | transposed copy "
          "ms | transposed view ms |")
    print("|---|---|---|---|")
    rng = np.random.default_rng(0)
    for dname in args.dtypes.split(","):
        dtype = np.dtype(dname).type
        G = rng.standard_normal((1600, 1024)).astype(dtype)
        X = rng.standard_normal((1600, 256)).astype(dtype)
        out = np.empty((1024, 256), dtype)
        with threadpool_limits(1):
            copy_ms = 1000 * median_s(lambda G=G, X=X, out=out: tn_copy(G, X, out))
            view_ms = 1000 * median_s(lambda G=G, X=X, out=out: tn_view(G, X, out))
        print(f"| dU = g^T h, one thread | {dname} | {copy_ms:.2f} | {view_ms:.2f} |")
    return 0


def tile_shapes(args) -> int:
    """GFLOP/s of each tile shape's packed GEMM, one thread, `--steps` calls a run."""
    from numba import njit

    from rnndsl.kernels import gemm
    from rnndsl.kernels.tile_sizes import tile_choice, vector_isa

    @njit(cache=True)
    def steps_8(A, Bp, C, steps):
        for _ in range(steps):
            gemm.packed_gemm_8x16(A, Bp, C, 1)

    @njit(cache=True)
    def steps_4(A, Bp, C, steps):
        for _ in range(steps):
            gemm.packed_gemm_4x16(A, Bp, C, 1)

    loops = {8: steps_8, 4: steps_4}
    assert set(loops) == set(gemm.TILE_ROWS)
    mr, why = tile_choice()
    print(f"vector ISA Numba compiles for: {vector_isa()}; this machine's tiles: {mr} x "
          f"{gemm.NR} ({why})\n")
    print("| shape | product (M x K x N) | dtype | "
          + " | ".join(f"{r} x {gemm.NR} GFLOP/s" for r in gemm.TILE_ROWS) + " |")
    print("|---|---|---|" + "---|" * len(gemm.TILE_ROWS))
    for shape, what, (M, K, N), dname, (A, W, Bp, C, want) in _products(args):
        rates = []
        for rows in gemm.TILE_ROWS:
            loops[rows](A, Bp, C, 1)
            assert np.abs(C - want).max() <= 1e-3 * np.abs(want).max(), rows
            best = min(_seconds(lambda f=loops[rows]: f(A, Bp, C, args.steps))
                       for _ in range(args.repeat))
            rates.append(2.0 * M * K * N * args.steps / best / 1e9)
        print(f"| {shape} {what} | {M} x {K} x {N} | {dname} | "
              + " | ".join(f"{r:.0f}" for r in rates) + " |", flush=True)
    return 0


def _products(args):
    """For each shape, pass (the forward's (B, H) @ (H, 4H), BPTT's (B, 4H) @ (4H, H)) and
    dtype: (shape, pass, (M, K, N), dtype name, (A, W, W packed, C, A @ W in float64))."""
    from rnndsl.kernels import gemm
    rng = np.random.default_rng(0)
    for shape in args.shapes.split(","):
        B, H = SHAPES[shape]
        for M, K, N, what in ((B, H, 4 * H, "fwd"), (B, 4 * H, H, "bwd")):
            for dname in args.dtypes.split(","):
                dtype = np.dtype(dname).type
                A = rng.standard_normal((M, K)).astype(dtype)
                W = rng.standard_normal((K, N)).astype(dtype)
                Bp = np.zeros((gemm.panel_count(N), K, gemm.NR), dtype)
                gemm.pack_rows(Bp, W, 0)
                C = np.empty((M, N), dtype)
                yield shape, what, (M, K, N), dname, (A, W, Bp, C, A.astype(np.float64) @ W)


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    sys.exit(main())
