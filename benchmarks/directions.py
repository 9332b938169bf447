"""A bidirectional cell's two directions at once: each splitting its rows among its
share of the cores (rnndsl.cells.blocks.sharing, the default) against each splitting
them among every core as if it ran alone (four kernel threads on two cores), and one
block a direction (RNNDSL_ROW_BLOCKS=0). Forward+BPTT of a bidirectional LSTM, float32,
the best of --calls calls, three rounds in turn.

    .venv/bin/python benchmarks/directions.py
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path

import numpy as np

import rnndsl
from rnndsl.cells import blocks

SPEC = Path(__file__).resolve().parents[1] / "specs" / "lstm.rnn"
SHAPES = [(50, 32, 256, 256), (100, 16, 64, 128), (50, 64, 128, 128)]     # T, B, I, H


@contextlib.contextmanager
def way(name: str):
    """The way the directions split their rows, for the calls inside."""
    shared = blocks.sharing
    if name == "each every core":
        blocks.sharing = lambda threads: contextlib.nullcontext()
    if name == "one block each":
        os.environ["RNNDSL_ROW_BLOCKS"] = "0"
    try:
        yield
    finally:
        blocks.sharing = shared
        os.environ.pop("RNNDSL_ROW_BLOCKS", None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=15)
    args = ap.parse_args()
    ways = ("shared (default)", "each every core", "one block each")
    print(f"cores: {os.cpu_count()}; ms, best of {args.calls} calls in each of three rounds")
    print("| T, B, I, H | " + " | ".join(ways) + " |")
    print("|---|" + "---|" * len(ways))
    for T, B, I, H in SHAPES:
        cell = rnndsl.load(SPEC, target="cpu")(I=I, H=H, dtype=np.float32, seed=0,
                                               direction="bidirectional")
        x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
        d = {"h": np.ones((T, B, 2 * H), np.float32)}
        cell.backward(cell.forward(x), d, input_grads=False)     # compile
        best = {w: [] for w in ways}
        for _ in range(3):
            for w in ways:
                with way(w):
                    times = []
                    for _ in range(args.calls):
                        t0 = time.perf_counter()
                        cell.backward(cell.forward(x), d, input_grads=False)
                        times.append(time.perf_counter() - t0)
                best[w].append(1e3 * min(times))
        print(f"| {T}, {B}, {I}, {H} | " + " | ".join(
            "-".join(f"{v:.2f}" for v in (min(best[w]), max(best[w]))) for w in ways)
            + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
