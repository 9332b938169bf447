"""The Python around a compiled kernel call: what `Cell.forward` and `Cell.backward` cost
besides the kernels, at the benchmark's char shape (one row, where it matters most: a
sampling step, or a forward of 0.1-0.2 ms).

    .venv/bin/python benchmarks/call_overhead.py
    .venv/bin/python benchmarks/call_overhead.py --spec specs/lstm.rnn --B 16

It times each call as users make it, then again with the cell's kernels swapped for
functions that return at once, so that the second number is the Python alone: argument
checks, the arrays the call allocates, the row blocks, the thread settings, the Run.
Best of --repeat rounds of --number calls each (timeit's rule: the minimum is the cost,
the rest is the machine's noise).
"""

from __future__ import annotations

import argparse
import timeit
from pathlib import Path

import numpy as np

import rnndsl

HERE = Path(__file__).resolve().parent


def best_us(fn, number: int, repeat: int) -> float:
    fn()
    return 1e6 * min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", default=str(HERE / "specs" / "elman_tanh.rnn"))
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--B", type=int, default=1)
    ap.add_argument("--I", type=int, default=65)
    ap.add_argument("--H", type=int, default=128)
    ap.add_argument("--number", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    Cell = rnndsl.load(args.spec, target="cpu")
    cell = Cell(I=args.I, H=args.H, dtype=np.float32, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.T, args.B, args.I)).astype(np.float32)
    out = next(iter(Cell.spec.outputs)).name
    dy = {out: rng.standard_normal(cell.forward(x).outputs[out].shape).astype(np.float32)}
    run = cell.forward(x)

    calls = {
        "forward(x, grad=False)": lambda: cell.forward(x, grad=False),
        "forward(x)": lambda: cell.forward(x),
        "backward(run, input_grads=False)": lambda: cell.backward(run, dy,
                                                                  input_grads=False),
    }
    whole = {name: best_us(fn, args.number, args.repeat) for name, fn in calls.items()}
    meta = cell.meta
    kernels = {k: meta[k] for k in ("forward", "forward_inference", "backward") if k in meta}
    # The backward kernel fingerprints what it reads and the call compares them with the
    # forward's (rnndsl.cells.seen): the stand-in writes the forward's, as the real
    # kernel would (a copy of a few words).
    seen_at = [i for i, a in enumerate(meta["backward_args"]) if a[0] == "seen"]
    seen = run._tape.seen
    sums = seen.sums if seen is not None and seen.by_kernel else None

    def backward_stand_in(*a):
        for i in seen_at:
            if sums is not None and a[i].size:
                a[i][...] = sums
    try:
        for k in kernels:
            meta[k] = backward_stand_in if k == "backward" else (lambda *a: None)
        alone = {name: best_us(fn, args.number, args.repeat) for name, fn in calls.items()}
    finally:
        meta.update(kernels)

    print(f"{Path(args.spec).name}, T={args.T} B={args.B} I={args.I} H={args.H}, float32; "
          f"best of {args.repeat} x {args.number} calls")
    print("| call | us a call | of which Python (kernels swapped out) | share |")
    print("|---|---|---|---|")
    for name in calls:
        print(f"| {name} | {whole[name]:.1f} | {alone[name]:.1f} | "
              f"{alone[name] / whole[name]:.0%} |")


if __name__ == "__main__":
    main()
