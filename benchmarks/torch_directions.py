"""A bidirectional layer inside PyTorch: one cell call over both directions (at once, one
a core: rnndsl.interop.torch.both_at_once, the default on the cpu target) against a call
a direction, one after the other (reversed by torch ops: the way before, and the cuda
target's), alternating call by call in one process; torch.nn.LSTM in the same run for
scale. Forward and forward+backward of `rnndsl.torch.from_torch(nn.LSTM(...,
bidirectional=True))` and of `rnndsl.torch.Module("specs/lstm.rnn",
direction="bidirectional")`, float32.

    .venv/bin/python benchmarks/torch_directions.py
    .venv/bin/python benchmarks/torch_directions.py --shapes 50x4x128,50x64x256 --calls 40
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import rnndsl.interop.torch as glue  # noqa: E402
import rnndsl.torch as rt  # noqa: E402
from ab_calls import alternating_s  # noqa: E402

SPEC = HERE.parent / "specs" / "lstm.rnn"


@contextlib.contextmanager
def apart():
    glue.BOTH_AT_ONCE = False
    try:
        yield
    finally:
        glue.BOTH_AT_ONCE = True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="50x4x128,50x16x128,50x64x256",
                    help="TxBxH, comma-separated (I = H)")
    ap.add_argument("--calls", type=int, default=30, help="calls of each way a row")
    args = ap.parse_args()
    cores = os.cpu_count() or 1
    print(f"cores: {cores}; ms, medians of {args.calls} calls. The two rnndsl ways alternate "
          "call by call, with torch at one thread (its idle OpenMP threads would spin on the "
          "cores rnndsl's kernel threads use: docs/interop.md); torch.nn.LSTM after them, "
          f"at {cores} threads\n")
    print("| module | T x B x H | pass | one call, both at once | a call a direction | "
          "apart / together | torch.nn.LSTM |")
    print("|---|---|---|---|---|---|---|")
    for shape in args.shapes.split(","):
        T, B, H = (int(v) for v in shape.split("x"))
        lstm = torch.nn.LSTM(H, H, bidirectional=True)
        modules = {"from_torch(nn.LSTM)": rt.from_torch(lstm, target="cpu"),
                   "Module(lstm.rnn)": rt.Module(SPEC, target="cpu",
                                                 direction="bidirectional", I=H, H=H)}
        x = torch.randn(T, B, H)

        def call(m, part):
            if part == "forward":
                with torch.no_grad():
                    m(x)
            else:
                m(x.requires_grad_(True))[0].sum().backward()
        rows = []
        torch.set_num_threads(1)
        for name, m in modules.items():
            for part in ("forward", "forward+backward"):
                times = alternating_s({"together": contextlib.nullcontext, "apart": apart},
                                      lambda: call(m, part), args.calls)
                rows.append((name, part, *(1e3 * statistics.median(times[w])
                                           for w in ("together", "apart"))))
        torch.set_num_threads(cores)
        ref = {part: 1e3 * statistics.median(alternating_s(
            {"torch": contextlib.nullcontext}, lambda: call(lstm, part), args.calls)["torch"])
            for part in ("forward", "forward+backward")}
        for name, part, on, off in rows:
            print(f"| {name} | {T} x {B} x {H} | {part} | {on:.2f} | {off:.2f} | "
                  f"{off / on:.2f} | {ref[part]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
