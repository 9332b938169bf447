"""forward(x, grad=False) on the cpu target runs the forward kernel's inference twin
(`forward_inference_<Cell>`: no stores into the tapes only BPTT reads). This times the
same call with the twin and with the training forward kernel in its place, in turn in
one process, float32, and prints the best and the median of each and their ratio.

    .venv/bin/python benchmarks/inference_twin.py                 # LSTM, GRU at four shapes
    .venv/bin/python benchmarks/inference_twin.py lstm:large gru:mid
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

import rnndsl

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from ab_calls import alternating_s, best_median_cells  # noqa: E402
from bench import CELLS, SHAPES  # noqa: E402

CALLS = {"char": 400, "small": 150, "mid": 60, "large": 12}


@contextmanager
def _inference_kernel(cell, kernel):
    """`kernel` in the twin's place for the calls inside."""
    kept = cell.meta["forward_inference"]
    cell.meta["forward_inference"] = kernel
    try:
        yield
    finally:
        cell.meta["forward_inference"] = kept


def main(argv: list[str]) -> int:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cases", nargs="*", metavar="CELL:SHAPE",
                    help=f"cells {', '.join(CELLS)}; shapes {', '.join(SHAPES)} (default: "
                         "lstm and gru at every shape)")
    cases = ap.parse_args(argv).cases or [f"{c}:{s}" for c in ("lstm", "gru") for s in SHAPES]
    print("| cell, shape | training kernel best / median ms | twin best / median ms | "
          "median ratio |")
    print("|---|---|---|---|")
    for case in cases:
        cell, shape = case.split(":")
        T, B, I, H = SHAPES[shape]
        c = rnndsl.load(CELLS[cell][0], target="cpu")(I=I, H=H, dtype=np.float32, seed=0)
        x = np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)
        twin, train = c.meta["forward_inference"], c.meta["forward"]
        times = alternating_s({"train": lambda: _inference_kernel(c, train),
                               "twin": lambda: _inference_kernel(c, twin)},
                              lambda: c.forward(x, grad=False), CALLS[shape])
        print(f"| {cell} {shape} | {best_median_cells(times['train'], times['twin'])}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
