"""Many-to-one: an LSTM reads sequences of different lengths and names one class for each.

    .venv/bin/python examples/classify_sequences.py                  # most frequent symbol
    .venv/bin/python examples/classify_sequences.py --task parity    # odd number of ones?
    .venv/bin/python examples/classify_sequences.py --quick          # seconds: a smoke run

The data is made here, seeded (rnndsl.train.data): for `most_frequent`, sequences of 5 to 20
symbols out of 4, labelled with the symbol that occurs most often (ties are redrawn);
for `parity`, bit strings of 2 to 12 labelled with the parity of their ones, the
classic case where the label depends on every step. Training and test sets come from
different seeds.

The model is examples/specs/classifier.rnn: an LSTM and a linear readout to K class
scores. A batch holds sequences of different lengths, padded to the longest:
`cell.forward(x, lengths=L)` freezes each sequence's state after its own end, and the
many-to-one output is each sequence's readout at its last step (`modes.last_step`).
`Trainer.step(x, labels, mask=modes.last_step_mask(T, B, L), lengths=L)` puts the loss
there only, so BPTT starts at each sequence's end. Every batch is a fresh set of
sequences, so the trainer's carried state is reset before each step.

Reported: accuracy on the held-out set next to chance (always answering the most
common class of the training set), how many held-out sequences also occur in the
training set (parity's short bit strings are few, so many do), and accuracy on longer
sequences than any seen in training (up to twice the length), which no memory of the
training set can answer.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import rnndsl
from rnndsl.cells import modes
from rnndsl.train.data import SequenceSet, most_frequent_task, parity_task
from rnndsl.train.optim import Adam
from rnndsl.train.trainer import Trainer

from common import (add_common_options, clip_norm, parse_with_quick, positive, positive_int)

SPEC = Path(__file__).resolve().parent / "specs" / "classifier.rnn"
# Each task: its maker and the lengths of its training (and held-out) sequences.
TASKS = {
    "most_frequent": (lambda n, lo, hi, seed, dtype: most_frequent_task(
        n, symbols=4, min_len=lo, max_len=hi, seed=seed, dtype=dtype), (5, 20)),
    "parity": (lambda n, lo, hi, seed, dtype: parity_task(
        n, min_len=lo, max_len=hi, seed=seed, dtype=dtype), (2, 12)),
}
QUICK = {"train": 2_000, "test": 500, "hidden": 16, "epochs": 2, "minutes": None}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Train an LSTM sequence classifier (many-to-one) on variable-length "
                    "sequences it makes itself and report held-out accuracy against chance.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", choices=sorted(TASKS), default="most_frequent")
    p.add_argument("--train", type=positive_int, default=20_000, help="training sequences")
    p.add_argument("--test", type=positive_int, default=2_000, help="held-out sequences")
    p.add_argument("--hidden", type=positive_int, default=32, help="H, the LSTM's size")
    p.add_argument("--batch", type=positive_int, default=32, help="sequences per step")
    p.add_argument("--epochs", type=positive_int, default=20, help="passes over the training set")
    p.add_argument("--minutes", type=positive, default=2.0,
                   help="stop earlier when this much time has passed")
    p.add_argument("--lr", type=positive, default=1e-2, help="Adam's learning rate")
    p.add_argument("--clip", type=clip_norm, default=5.0, help="clip the gradient's global norm")
    add_common_options(p, seed_help="seeds the training data and params; the test set "
                                     "uses seed + 1",
                       quick_help="a run of seconds (small sets and model)")
    args = parse_with_quick(p, QUICK, argv)
    if args.batch > args.train:      # else no whole batch: 0 steps, and the untrained
        p.error(f"--batch {args.batch} is more than the {args.train:,} training sequences "
                "(--train)")    # model's result reported as the trained one's
    return args


def batch_of(data: SequenceSet, rows: np.ndarray):
    """The sequences `rows`, padded only to their own longest: (x, labels, lengths)."""
    lengths = data.lengths[rows]
    T = int(lengths.max())
    return np.ascontiguousarray(data.x[:T, rows]), data.labels[rows], lengths


def accuracy(cell, data: SequenceSet, batch: int = 500) -> float:
    """Fraction of sequences whose last-step readout scores the right class highest."""
    right = 0
    for start in range(0, len(data.labels), batch):
        x, labels, lengths = batch_of(data, np.arange(start, min(start + batch,
                                                                 len(data.labels))))
        logits = modes.last_step(cell.forward(x, lengths=lengths).outputs["logits"], lengths)
        right += int((logits.argmax(axis=1) == labels).sum())
    return right / len(data.labels)


def main(argv=None) -> int:
    args = parse_args(argv)
    dtype = np.dtype(args.dtype)
    started = time.monotonic()
    make, (lo, hi) = TASKS[args.task]
    train = make(args.train, lo, hi, args.seed, dtype)
    test = make(args.test, lo, hi, args.seed + 1, dtype)
    longer = make(args.test, hi + 1, 2 * hi, args.seed + 2, dtype)
    seen = {tuple(train.ids[:n, b]) for b, n in enumerate(train.lengths)}
    overlap = np.mean([tuple(test.ids[:n, b]) in seen for b, n in enumerate(test.lengths)])
    K, features = train.num_classes, train.x.shape[2]

    Cell = rnndsl.load(SPEC, target=args.target)
    cell = Cell(I=features, H=args.hidden, K=K, dtype=dtype, seed=args.seed)
    trainer = Trainer(cell, loss="softmax_cross_entropy", optimizer=Adam(lr=args.lr),
                      clip_norm=args.clip or None, seed=args.seed)
    n_params = sum(p.size for p in cell.params.values())
    majority = int(np.bincount(train.labels, minlength=K).argmax())
    chance = float(np.mean(test.labels == majority))
    print(f"task: {args.task}, {K} classes, lengths {train.lengths.min()}..."
          f"{train.lengths.max()}; {args.train:,} training and {args.test:,} held-out "
          f"sequences")
    print(f"model: {Cell.spec.name} from examples/specs/{SPEC.name}, I={features} "
          f"H={args.hidden} K={K}, {n_params:,} params, target {args.target}, {dtype.name}")
    print(f"before training: held-out accuracy {accuracy(cell, test):.3f} "
          f"(chance {chance:.3f})")

    rng = np.random.default_rng(args.seed)
    budget = None if args.minutes is None else args.minutes * 60
    clock_start = time.monotonic()
    epochs_done, out_of_time = 0, False
    for epoch in range(args.epochs):
        order = rng.permutation(args.train)
        losses = []
        for start in range(0, args.train - args.batch + 1, args.batch):
            x, labels, lengths = batch_of(train, order[start:start + args.batch])
            T, B = x.shape[:2]
            trainer.reset_state("train")        # unrelated sequences: start from zeros
            losses.append(trainer.step(
                x, np.broadcast_to(labels, (T, B)).astype(np.int32),
                mask=modes.last_step_mask(T, B, lengths), lengths=lengths))
            if budget is not None and time.monotonic() - clock_start >= budget:
                out_of_time = True
                break
        epochs_done = epoch + (0 if out_of_time else 1)
        print(f"  epoch {epoch + 1:2d}: loss {np.mean(losses):.3f}, held-out accuracy "
              f"{accuracy(cell, test):.3f}  ({time.monotonic() - clock_start:.0f} s)",
              flush=True)
        if out_of_time:
            break
    seconds = time.monotonic() - clock_start
    final = accuracy(cell, test)
    final_longer = accuracy(cell, longer)
    longer_chance = float(np.mean(longer.labels == majority))

    print("\n=== summary ===")
    print(f"task: {args.task}, {K} classes, {args.train:,} training sequences, "
          f"{args.test:,} held out")
    print(f"model: {Cell.spec.name} H={args.hidden}, {n_params:,} params, {args.target} "
          f"{dtype.name}")
    print(f"trained: {trainer.steps} steps ({epochs_done} full epochs) in {seconds:.0f} s")
    print(f"held-out accuracy: {final:.3f} (chance {chance:.3f}, always class {majority}); "
          f"{overlap:.0%} of these sequences also occur in the training set")
    print(f"longer sequences ({hi + 1}..{2 * hi} steps, never seen): accuracy "
          f"{final_longer:.3f} (chance {longer_chance:.3f})")
    print(f"total time: {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except rnndsl.RnnError as exc:
        sys.exit(f"error: {exc}")
