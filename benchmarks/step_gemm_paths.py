"""The three ways a step's stacked GEMM can run below MR rows of batch, side by side.

    .venv/bin/python benchmarks/step_gemm_paths.py                  # the default grid
    .venv/bin/python benchmarks/step_gemm_paths.py --K 256 512 --B 2 4

Each step of a recurrent cell multiplies a (B, K) state by stacked weights (K, N), with
N = gates x K. Under MR rows the register tiles step aside, and the kernels choose per
call (rnndsl/codegen/dialect.py): one BLAS call on the stack, the same member by member
from B*K*N >= MICRO_SPLIT_PRODUCT, or the tiles, a row at a time, from B*K*n >=
MICRO_TILE_PRODUCT (n a member's width). This times the three ways, one thread, as
the kernels call them (from compiled code, the best of 5 runs of `--calls` calls),
and prints microseconds a call, the fastest, and the way the kernels take, with
`lscpu`'s model. Like bench.py it runs without OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE.
"""

from __future__ import annotations

import os
import sys

_BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
if any(v in os.environ for v in _BLAS_VARS) or os.environ.get("OPENBLAS_NUM_THREADS") != "1":
    env = {k: v for k, v in os.environ.items() if k not in _BLAS_VARS}
    env["OPENBLAS_NUM_THREADS"] = "1"       # as inside the kernels
    os.execve(sys.executable, [sys.executable] + sys.argv, env)

import argparse  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402
from numba.typed import List  # noqa: E402

from rnndsl.codegen.dialect import MICRO_SPLIT_PRODUCT, MICRO_TILE_PRODUCT  # noqa: E402
from rnndsl.kernels.gemm import NR, pack_cols_t, packed_gemm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_bench import cpu_name  # noqa: E402


@njit(nogil=True)
def _whole(h, wt, out, n):
    for _ in range(n):
        np.dot(h, wt, out)


@njit(nogil=True)
def _by_member(h, parts, outs, n):
    for _ in range(n):
        for k in range(len(parts)):
            np.dot(h, parts[k], outs[k])


@njit(nogil=True)
def _tiles(h, wp, out, n):
    for _ in range(n):
        packed_gemm(h, wp, out, 1)


def best_us(fn, args, calls: int) -> float:
    fn(*args, 1)
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        fn(*args, calls)
        runs.append((time.perf_counter() - t0) / calls)
    return 1e6 * min(runs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--K", type=int, nargs="+", default=[128, 256, 384, 512],
                    help="the state's width (each member is K x K)")
    ap.add_argument("--B", type=int, nargs="+", default=[2, 4, 6], help="batch rows")
    ap.add_argument("--gates", type=int, default=4, help="members a stack (LSTM: 4)")
    ap.add_argument("--calls", type=int, default=100)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"CPU: {cpu_name()}; float32, one thread, best of 5 x {args.calls} calls")
    print("| K, N | B | one call us | member by member us | tiles us | fastest | "
          "the kernels take |")
    print("|---|---|---|---|---|---|---|")
    for K in args.K:
        N = args.gates * K
        W = rng.standard_normal((N, K)).astype(np.float32)
        wt = np.ascontiguousarray(W.T)
        parts = List([np.ascontiguousarray(wt[:, k * K:(k + 1) * K])
                      for k in range(args.gates)])
        wp = np.zeros((-(-N // NR), K, NR), np.float32)
        pack_cols_t(wp, W, 0)
        for B in args.B:
            h = rng.standard_normal((B, K)).astype(np.float32)
            out = np.empty((B, N), np.float32)
            outs = List([np.empty((B, K), np.float32) for _ in range(args.gates)])
            us = {"one call": best_us(_whole, (h, wt, out), args.calls),
                  "member by member": best_us(_by_member, (h, parts, outs), args.calls),
                  "tiles": best_us(_tiles, (h, wp, out), args.calls)}
            taken = ("tiles" if B >= 2 and B * K * K >= MICRO_TILE_PRODUCT else
                     "member by member" if B >= 2 and B * K * N >= MICRO_SPLIT_PRODUCT
                     else "one call")
            print(f"| {K}, {N} | {B} | {us['one call']:.1f} | {us['member by member']:.1f} | "
                  f"{us['tiles']:.1f} | {min(us, key=us.get)} | {taken} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
