"""A readout after the time loop, or at every step? The shipped specs with one, both ways.

    .venv/bin/python benchmarks/readout_after.py                 # the default cases
    .venv/bin/python benchmarks/readout_after.py --cases elman-char --repeat 200

The forward's work that feeds no state (Elman's `output y = sigmoid(W_hy @ h' + b_y)`,
the main job's `output logits = W_y @ l2.h' + b_y`) runs, with the schedule's
`readout_after` pass (on by default, cpu target), after the time loop as one GEMM over
all T*B rows, reading h' from its tape; without it, as one GEMM a step. This times the
cpu target's forward and forward+BPTT both ways (`rnndsl.load(..., no_passes=
["readout_after"])`), interleaved call by call, and prints the medians and off/on (above
1: after the loop wins), with `lscpu`'s model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import rnndsl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ab_calls import ab_cells, interleaved_ms  # noqa: E402
from train_bench import cpu_name  # noqa: E402  lscpu's model name, as the other benchmarks

SPECS = Path(__file__).resolve().parent.parent / "specs"
# name: (spec, dims, T, B); bench.py's char and small shapes, and the main job's
CASES = {
    "elman-char": ("elman.rnn", {"I": 65, "H": 128, "O": 65}, 100, 1),
    "elman-small": ("elman.rnn", {"I": 64, "H": 128, "O": 64}, 100, 16),
    "char_lstm-1": ("char_lstm.rnn", {"V": 96, "H": 128}, 100, 1),
    "char_lstm-main": ("char_lstm.rnn", {"V": 96, "H": 128}, 64, 32),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated: "
                    + ", ".join(CASES))
    ap.add_argument("--repeat", type=int, default=60, help="calls timed per case and way")
    args = ap.parse_args(argv)
    print(f"CPU: {cpu_name()}; cpu target, float32, medians of {args.repeat} calls, "
          "the two ways interleaved")
    print("| case | T, B | forward on ms | off ms | off/on | forward+BPTT on ms | off ms "
          "| off/on |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.cases.split(","):
        spec, dims, T, B = CASES[name]
        classes = {"on": rnndsl.load(SPECS / spec),
                   "off": rnndsl.load(SPECS / spec, no_passes=["readout_after"])}
        cells = {way: cls(seed=0, **dims) for way, cls in classes.items()}
        rng = np.random.default_rng(0)
        (x_dim,) = cells["on"].spec.inputs
        if x_dim.token:
            x = rng.integers(0, dims["V"], (T, B))
        else:
            x = rng.standard_normal((T, B, dims["I"])).astype(np.float32)
        d = {k: rng.standard_normal(v.shape).astype(np.float32)
             for k, v in cells["on"].forward(x).outputs.items()}
        ms = interleaved_ms(cells, x, d, args.repeat, warm=5)
        print(f"| {name} | {T}, {B} | {ab_cells(ms, 3)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
