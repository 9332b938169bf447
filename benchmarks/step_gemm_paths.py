"""The three ways a step's stacked GEMM can run below MR rows of batch, side by side.

    .venv/bin/python benchmarks/step_gemm_paths.py                  # the default grid
    .venv/bin/python benchmarks/step_gemm_paths.py --K 256 512 --B 2 4

Each step of a recurrent cell multiplies a (B, K) state by stacked weights (K, N), with
N = gates x K. Under MR rows the register tiles step aside, and the kernels choose per
call: one BLAS call on the stack, the same member by member from B*K*N >= the
machine's micro_split_product, or the tiles, a row at a time, from B*K*n >= its
micro_tile_product (n a member's width; both timed at first use on each machine:
rnndsl/build/machine.py, `rnndsl explain` prints them). This times the three ways, one
thread, as the kernels call them (rnndsl.kernels.step_paths: from compiled code, the
best of 5 runs of `--calls` calls), and prints microseconds a call, the fastest, and
the way the kernels take here, with `lscpu`'s model. Like bench.py it runs without OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE.
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
from pathlib import Path  # noqa: E402

from rnndsl.build.machine import tuning  # noqa: E402
from rnndsl.kernels.step_paths import StepOperands  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_bench import cpu_name  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--K", type=int, nargs="+", default=[128, 256, 384, 512],
                    help="the state's width (each member is K x K)")
    ap.add_argument("--B", type=int, nargs="+", default=[2, 4, 6], help="batch rows")
    ap.add_argument("--gates", type=int, default=4, help="members a stack (LSTM: 4)")
    ap.add_argument("--calls", type=int, default=100)
    args = ap.parse_args(argv)
    marks = tuning()
    print(f"CPU: {cpu_name()}; float32, one thread, best of 5 x {args.calls} calls")
    print(f"the kernels' marks: {marks.source}: {marks.values}")
    print("| K, N | B | one call us | member by member us | tiles us | fastest | "
          "the kernels take |")
    print("|---|---|---|---|---|---|---|")
    split, tile = marks.values["micro_split_product"], marks.values["micro_tile_product"]
    for K in args.K:
        N = args.gates * K
        for B in args.B:
            ops = StepOperands(B, K, K, args.gates)
            us = {way: 1e6 * ops.seconds(way, args.calls, rounds=5)
                  for way in ("one call", "by member", "tiles")}
            taken = ("tiles" if B >= 2 and B * K * K >= tile else
                     "by member" if B >= 2 and B * K * N >= split else "one call")
            print(f"| {K}, {N} | {B} | {us['one call']:.1f} | {us['by member']:.1f} | "
                  f"{us['tiles']:.1f} | {min(us, key=us.get)} | {taken} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
