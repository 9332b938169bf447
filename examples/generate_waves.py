"""One-to-many: from one input vector, an LSTM generates a whole sequence (a sine wave).

    .venv/bin/python examples/generate_waves.py                # both input modes, ~2 min
    .venv/bin/python examples/generate_waves.py --mode first   # the vector at step 0 only
    .venv/bin/python examples/generate_waves.py --quick        # seconds: a smoke run

The data is made here, seeded (`rnndsl.train.data.sine_task`): each example is one vector
(the frequency, scaled to [-1, 1], and the phase as a point on the circle) and the 50
steps of sin(2 pi f t + phase) it stands for, f between 1/40 and 1/8 cycles a step.
Training and test sets come from different seeds.

The model is examples/specs/wave_generator.rnn: an LSTM and a linear readout to one
value a step, trained with the mean squared error at every step (`Trainer` with
loss="mse"). The lecture's one-to-many has two ways to give the one input:

- first: the vector at the first step and zeros after (`modes.first_step_inputs`); the
  LSTM must keep frequency and phase in its state and run the oscillation itself;
- every: the same vector at every step (`modes.repeated_inputs`), a conditioning input.

Reported per mode: held-out MSE next to predicting zeros (the waves' mean square, 0.5),
and a plot in text of one held-out wave against the model's.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import rnndsl
from rnndsl.cells import modes
from rnndsl.train.data import sine_task
from rnndsl.train.optim import Adam
from rnndsl.train.trainer import Trainer

from common import (add_common_options, clip_norm, parse_with_quick, positive, positive_int)

SPEC = Path(__file__).resolve().parent / "specs" / "wave_generator.rnn"
LAYOUTS = {"first": modes.first_step_inputs, "every": modes.repeated_inputs}
QUICK = {"train": 640, "test": 200, "hidden": 16, "epochs": 5, "minutes": None}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Train an LSTM to generate a sine wave from one vector (one-to-many), "
                    "given at the first step only or at every step; report held-out MSE "
                    "against predicting zeros.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--mode", choices=("first", "every", "both"), default="both",
                   help="how the one input vector is laid out in time")
    p.add_argument("--train", type=positive_int, default=5_000, help="training examples")
    p.add_argument("--test", type=positive_int, default=1_000, help="held-out examples")
    p.add_argument("--steps", type=positive_int, default=50, help="length of each wave")
    p.add_argument("--hidden", type=positive_int, default=32, help="H, the LSTM's size")
    p.add_argument("--batch", type=positive_int, default=32, help="examples per step")
    p.add_argument("--epochs", type=positive_int, default=40, help="passes over the training set")
    p.add_argument("--minutes", type=positive, default=1.0,
                   help="per mode: stop earlier when this much time has passed")
    p.add_argument("--lr", type=positive, default=1e-2, help="Adam's learning rate")
    p.add_argument("--clip", type=clip_norm, default=1.0, help="clip the gradient's global norm")
    add_common_options(p, seed_help="seeds the training data and params; the test set "
                                     "uses seed + 1",
                       quick_help="a run of seconds (small sets and model)")
    args = parse_with_quick(p, QUICK, argv)
    if args.batch > args.train:      # else no whole batch: 0 steps, and the untrained
        p.error(f"--batch {args.batch} is more than the {args.train:,} training examples "
                "(--train)")    # model's result reported as the trained one's
    return args


def held_out_mse(cell, x: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean squared error over every step of every held-out wave, and the predictions."""
    pred = cell.forward(x).outputs["y"]
    return float(np.mean((pred.astype(np.float64) - targets) ** 2)), pred


def text_plot(target: np.ndarray, pred: np.ndarray, rows: int = 11) -> str:
    """One wave and the model's version of it as characters: `*` the target, `o` the
    model, `@` both in one cell; time runs left to right, -1 at the bottom, +1 at the top."""
    grid = [[" "] * len(target) for _ in range(rows)]

    def row(v: float) -> int:
        return round((1 - float(np.clip(v, -1, 1))) / 2 * (rows - 1))

    for t, (a, b) in enumerate(zip(target, pred)):
        grid[row(a)][t] = "*"
        grid[row(b)][t] = "@" if row(a) == row(b) else "o"
    return "\n".join("  |" + "".join(r) for r in grid)


def train_mode(mode: str, train, test, args, dtype) -> dict:
    """Train a fresh cell with one input layout; its held-out MSE, time and one plot."""
    x_train = LAYOUTS[mode](train.inputs, args.steps)
    x_test = LAYOUTS[mode](test.inputs, args.steps)
    Cell = rnndsl.load(SPEC, target=args.target)
    cell = Cell(I=train.inputs.shape[1], H=args.hidden, dtype=dtype, seed=args.seed)
    trainer = Trainer(cell, loss="mse", optimizer=Adam(lr=args.lr), clip_norm=args.clip or None,
                      seed=args.seed)
    before, _ = held_out_mse(cell, x_test, test.targets)
    print(f"\n[{mode}] {Cell.spec.name}, H={args.hidden}, "
          f"{sum(p.size for p in cell.params.values()):,} params; held-out MSE before "
          f"training {before:.4f}")
    rng = np.random.default_rng(args.seed)
    budget = None if args.minutes is None else args.minutes * 60
    start, out_of_time = time.monotonic(), False
    for epoch in range(args.epochs):
        order = rng.permutation(len(train.inputs))
        losses = []
        for first in range(0, len(order) - args.batch + 1, args.batch):
            rows = order[first:first + args.batch]
            trainer.reset_state("train")        # every example starts from the zero state
            losses.append(trainer.step(np.ascontiguousarray(x_train[:, rows]),
                                       train.targets[:, rows]))
            if budget is not None and time.monotonic() - start >= budget:
                out_of_time = True
                break
        if epoch % 5 == 4 or out_of_time or epoch == args.epochs - 1:
            print(f"  epoch {epoch + 1:2d}: training MSE {np.mean(losses):.4f}, held-out "
                  f"{held_out_mse(cell, x_test, test.targets)[0]:.4f}  "
                  f"({time.monotonic() - start:.0f} s)", flush=True)
        if out_of_time:
            break
    seconds = time.monotonic() - start
    mse, pred = held_out_mse(cell, x_test, test.targets)
    print(f"  held-out wave 0 (f = {test.frequency[0]:.3f} cycles a step), * target, "
          f"o model:\n{text_plot(test.targets[:, 0, 0], pred[:, 0, 0])}")
    return {"mse": mse, "before": before, "steps": trainer.steps, "seconds": seconds}


def main(argv=None) -> int:
    args = parse_args(argv)
    dtype = np.dtype(args.dtype)
    started = time.monotonic()
    train = sine_task(args.train, steps=args.steps, seed=args.seed, dtype=dtype)
    test = sine_task(args.test, steps=args.steps, seed=args.seed + 1, dtype=dtype)
    zeros = float(np.mean(test.targets.astype(np.float64) ** 2))
    print(f"task: sine waves of {args.steps} steps from (frequency, cos phase, sin phase); "
          f"{args.train:,} training and {args.test:,} held-out examples")
    results = {mode: train_mode(mode, train, test, args, dtype)
               for mode in (("first", "every") if args.mode == "both" else (args.mode,))}

    print("\n=== summary ===")
    print(f"task: sine_task, {args.steps} steps, {args.train:,} training and {args.test:,} "
          f"held-out waves; model H={args.hidden}, {args.target} {dtype.name}")
    for mode, r in results.items():
        print(f"mode {mode}: held-out MSE {r['mse']:.4f} (zeros {zeros:.4f}; before "
              f"training {r['before']:.4f}); {r['steps']} steps in {r['seconds']:.0f} s")
    print(f"total time: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except rnndsl.RnnError as exc:
        sys.exit(f"error: {exc}")
