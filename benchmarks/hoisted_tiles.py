"""The GEMMs over all T*B rows (a hoisted input projection, a readout after the loop, the
backward's input gradient) in OpenBLAS or in rnndsl's register tiles (`tiled_dot`: the
weights packed at each call, the rows in blocks of MC): the kernels choose by the
machine's `hoisted_tile_product` mark (rnndsl.build.machine). This prints

1. the GEMMs alone, one thread, float32: GFLOP/s of each way and their ratio, for B as
   the transposed view of a stack (the forward's projections) and in C order (the
   backward's input gradient);
2. whole cells at bench.py's shapes: forward(x, grad=False) and forward + backward with
   the mark forced to "never" (BLAS) and to 1 (the tiles), alternating call by call.

    .venv/bin/python benchmarks/hoisted_tiles.py
    .venv/bin/python benchmarks/hoisted_tiles.py --part cells --cells lstm --shapes mid
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import rnndsl  # noqa: E402
from ab_calls import alternating_s  # noqa: E402
from bench import SHAPES  # noqa: E402
from rnndsl.build import machine  # noqa: E402
from rnndsl.kernels.blas import hold_blas  # noqa: E402
from rnndsl.kernels.gemm import parallel_dot, tiled_dot  # noqa: E402

GEMMS = [  # (M, K, N): T*B rows of a block, and the products bench.py's cells make
    (16, 16, 64), (64, 64, 256), (100, 65, 128), (256, 64, 256), (800, 64, 512),
    (800, 256, 256), (800, 256, 1024), (1600, 512, 512), (1600, 512, 2048),
    (800, 1024, 256), (3200, 128, 163)]
SPECS = {"elman": "specs/elman.rnn", "lstm": "specs/lstm.rnn", "gru": "specs/gru.rnn"}


@njit(cache=False)
def _repeat(way, A, B, C, calls):
    for _ in range(calls):
        way(A, B, C, 1)


def gemms(rounds: int) -> None:
    held = hold_blas(1)
    print("| (M x K) @ (K x N) | B | OpenBLAS GFLOP/s | tiles GFLOP/s | tiles / BLAS |")
    print("|---|---|---|---|---|")
    try:
        for M, K, N in GEMMS:
            rng = np.random.default_rng(0)
            A = rng.standard_normal((M, K)).astype(np.float32)
            C = np.empty((M, N), np.float32)
            for layout in ("W.T view", "C order"):
                B = (rng.standard_normal((N, K)).astype(np.float32).T if layout == "W.T view"
                     else rng.standard_normal((K, N)).astype(np.float32))
                calls = max(2, int(2e8 // (2 * M * K * N)))
                best = {}
                for name, way in (("blas", parallel_dot), ("tiles", tiled_dot)):
                    _repeat(way, A, B, C, 1)
                    best[name] = float("inf")
                for _ in range(rounds):
                    for name, way in (("blas", parallel_dot), ("tiles", tiled_dot)):
                        t0 = time.perf_counter()
                        _repeat(way, A, B, C, calls)
                        best[name] = min(best[name], (time.perf_counter() - t0) / calls)
                flops = 2 * M * K * N
                print(f"| ({M} x {K}) @ ({K} x {N}) | {layout} | "
                      f"{flops / best['blas'] / 1e9:.0f} | {flops / best['tiles'] / 1e9:.0f} | "
                      f"{best['blas'] / best['tiles']:.3f} |", flush=True)
    finally:
        from rnndsl.kernels.blas import release_blas
        release_blas(held)


def _with_mark(value):
    chosen = machine.Tuning(dict(machine.DEFAULTS, hoisted_tile_product=int(value)),
                            f"forced: hoisted_tile_product={value}")

    @contextlib.contextmanager
    def within():
        before = machine.tuning
        machine.tuning = lambda: chosen
        try:
            yield
        finally:
            machine.tuning = before
    return within


def cells(names: list[str], shapes: list[str], rounds: int) -> None:
    ways = {"BLAS": _with_mark(machine.NEVER), "tiles": _with_mark(1)}
    print("| cell | shape | call | BLAS ms (best / median) | tiles ms (best / median) "
          "| BLAS / tiles (medians) |")
    print("|---|---|---|---|---|---|")
    for name in names:
        Cell = rnndsl.load(HERE.parent / SPECS[name])
        for shape in shapes:
            T, B, I, H = SHAPES[shape]
            dims = dict(I=I, H=H, **({"O": H} if "O" in Cell.spec.dims else {}))
            cell = Cell(**dims, dtype=np.float32, seed=0)
            x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
            out = next(iter(Cell.spec.outputs)).name
            dy = {out: np.ones_like(cell.forward(x).outputs[out])}

            def fb():
                cell.backward(cell.forward(x), dy, input_grads=False)
            for call, fn in (("forward(grad=False)", lambda: cell.forward(x, grad=False)),
                             ("forward+backward", fb)):
                times = alternating_s(ways, fn, rounds)
                a, b = times["BLAS"], times["tiles"]
                print(f"| {name} | {shape} | {call} | {1e3 * min(a):.3f} / "
                      f"{1e3 * statistics.median(a):.3f} | {1e3 * min(b):.3f} / "
                      f"{1e3 * statistics.median(b):.3f} | "
                      f"{statistics.median(a) / statistics.median(b):.3f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["gemms", "cells", "both"], default="both")
    ap.add_argument("--cells", default="elman,lstm,gru")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--rounds", type=int, default=30, help="calls of each way (cells)")
    args = ap.parse_args()
    from rnndsl.build.machine import cpu_model
    print(f"CPU: {cpu_model()}; float32\n")
    if args.part in ("gemms", "both"):
        gemms(rounds=7)
        print()
    if args.part in ("cells", "both"):
        cells(args.cells.split(","), args.shapes.split(","), args.rounds)


if __name__ == "__main__":
    main()
