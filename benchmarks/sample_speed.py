"""How long sampling takes a token: the main job's cell, one row, as `rnndsl sample` runs it.

    .venv/bin/python benchmarks/sample_speed.py [--tokens 1000] [--runs 7] [--V 98 --H 128]

Each token is one T = 1 forward(grad=False) of the compiled kernel plus the Python around
it (the Sampler's strategy, the checks, the arguments of the call). The cell is
specs/char_lstm.rnn (two LSTM layers and a readout) with its initial params drawn by
seed 0: the time does not depend on training. Prints microseconds a token, the best and
the median of --runs runs of --tokens tokens at temperature 0.5, after a warm-up that
compiles (or loads) the kernel, and `lscpu`'s model name. To compare two versions of
rnndsl, run it in each (a git worktree, with PYTHONPATH pointing at it) on a quiet
machine, alternating.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_bench import cpu_name  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--V", type=int, default=98, help="vocabulary (the stdlib corpus's: 98)")
    ap.add_argument("--H", type=int, default=128)
    args = ap.parse_args(argv)

    import rnndsl
    from rnndsl.train.sample import Sampler, temperature
    spec = Path(__file__).resolve().parents[1] / "specs" / "char_lstm.rnn"
    cell = rnndsl.load(spec)(V=args.V, H=args.H, seed=0)
    sampler = Sampler(cell)
    sampler.generate(50, temperature(0.5), prime=[0], seed=0)       # compile or load
    per_token = []
    for run in range(args.runs):
        started = time.perf_counter()
        sampler.generate(args.tokens, temperature(0.5), prime=[0], seed=run)
        per_token.append((time.perf_counter() - started) / args.tokens * 1e6)
    print(f"{cpu_name()}; rnndsl {rnndsl.__file__}")
    print(f"char_lstm (V={args.V}, H={args.H}, float32), one row, temperature 0.5: "
          f"{min(per_token):.1f} us a token best, {statistics.median(per_token):.1f} median "
          f"({args.runs} runs of {args.tokens} tokens)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
