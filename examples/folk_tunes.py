"""An LSTM on folk tunes in ABC notation (O'Neill's and Ryan's collections), sampling new ones.

    .venv/bin/python examples/folk_tunes.py                  # 3 minutes, then 3 new tunes
    .venv/bin/python examples/folk_tunes.py --header 'M:2/2\\nL:1/8\\nK:Gmaj' --tunes 5
    .venv/bin/python examples/folk_tunes.py --quick          # seconds: a smoke run

Needs music21 (pip install 'rnndsl[music]'): its corpus ships the ABC transcriptions of
O'Neill's Music of Ireland (1903) and Ryan's Mammoth Collection (1883), and it reads
the sampled tunes back. `rnndsl.train.data.abc_tunes()` splits the files into tunes and
writes each in a folk-rnn-like normal form (`M:`, `L:`, `K:`, the music), one tune per
document, a blank line after each.

The model is the character model of char_model.py (specs/char_lstm.rnn: two LSTMs and
a readout), trained the same way on a stream of whole tunes; only the data and the
sampling differ. Tunes are shuffled (seeded) and the last few held out, so validation
is on tunes the model never saw. Sampling primes the model with a header, by default
"M:6/8\\nL:1/8\\nK:Dmaj\\n" (a jig in D), and continues each tune one character at a
time (`Sampler.prime` once, then `Sampler.step`) until it writes the blank line that
ends a tune in ABC.

How good are the tunes? Besides bits per character, music21 parses each sampled tune
and counts its inner bars (all but the first and last, which may be pickups) whose
notes fill exactly the meter; the same count on held-out real tunes is the reference.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings

import numpy as np

import rnndsl
from rnndsl.train.data import Vocab, abc_tunes
from rnndsl.train.optim import Adam
from rnndsl.train.sample import Sampler, temperature
from rnndsl.train.trainer import Trainer

# The sibling example, next to this file: a tune model is a character model on other text.
from char_model import (ROOT, SPEC, clock, train_stream, unigram_bits, validation_bits,
                        warm_up)
from common import (add_char_training_options, add_common_options, fraction, parse_with_quick,
                    positive, positive_int, whole)

QUICK = {"max_chars": 150_000, "hidden": 32, "batch": 16, "seq": 32, "steps": 150,
         "minutes": None, "lr": 1e-2, "tunes": 2, "max_tune_chars": 300, "reference": 10}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Train a 2-layer LSTM on ABC folk tunes from music21's corpus (O'Neill "
                    "and Ryan collections), report validation bits per character, and "
                    "sample new tunes from a header.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--max-chars", type=whole, default=0,
                   help="use at most this much of the corpus, whole tunes (0: all of it)")
    p.add_argument("--hidden", type=positive_int, default=128, help="H, the size of each LSTM")
    add_char_training_options(p)
    p.add_argument("--val", type=fraction, default=0.05, help="fraction of the tunes held out")
    p.add_argument("--header", default=r"M:6/8\nL:1/8\nK:Dmaj\n", type=header_lines,
                   help=r"the start of every sampled tune (meter, unit length, key), "
                        r"lines apart by \n")
    p.add_argument("--tunes", type=positive_int, default=3, help="how many tunes to sample")
    p.add_argument("--temperature", type=positive, default=0.8, help="sampling temperature")
    p.add_argument("--max-tune-chars", type=whole, default=1000,
                   help="give up on a tune that has not ended after this many characters")
    p.add_argument("--reference", type=whole, default=40,
                   help="held-out real tunes to measure bars on, for comparison")
    add_common_options(p, seed_help="seeds the split, params, samples",
                       quick_help="a run of seconds (part of the corpus, small model, "
                                  "fixed steps)")
    return parse_with_quick(p, QUICK, argv)


def header_lines(text: str) -> str:
    """`--header` as typed (`\\n` between lines) -> the header's lines, ending in a newline."""
    text = text.replace("\\n", "\n")
    return text if text.endswith("\n") else text + "\n"


def sample_tunes(sampler: Sampler, vocab: Vocab, header: str, n: int, t: float,
                 max_chars: int, seed: int) -> list[tuple[str, bool]]:
    """n tunes after `header`, each to the blank line that ends it (or max_chars).

    The header runs through the model once, for all n rows; then each step feeds the
    chosen characters back (a T = 1 forward). A row that has ended keeps stepping with
    the others but its later characters are dropped. Returns (tune, ended) pairs.
    """
    rng = np.random.default_rng(seed)
    strategy = temperature(t)
    newline = int(vocab.encode("\n")[0])
    header_ids = vocab.encode(header)
    primed = sampler.prime(header_ids, batch=n)
    rows: list[list[int]] = [[] for _ in range(n)]
    last = [int(header_ids[-1])] * n            # a tune ends at two newlines in a row
    ended = [False] * n
    for _ in range(max_chars):
        ids = strategy(primed.logp, rng)
        for b, i in enumerate(ids.tolist()):
            if not ended[b]:
                rows[b].append(i)
                ended[b] = i == last[b] == newline
                last[b] = i
        if all(ended):
            break
        primed = sampler.step(primed, ids)
    return [(header + vocab.decode(np.array(r, dtype=np.int64)).rstrip("\n"), done)
            for r, done in zip(rows, ended)]


def full_bars(tune: str) -> tuple[int, int]:
    """(inner bars whose notes fill the meter, inner bars) of a tune, read by music21.

    The first and last bars are left out: a pickup and the bar that completes it are
    short by design. Section ends inside a tune do the same, which is why real tunes
    score below 100%. A tune music21 cannot read counts as (0, 0).
    """
    import music21
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            score = music21.converter.parse("X:1\n" + tune, format="abc")
    # music21 raises many kinds of exception on malformed ABC; all mean "unreadable".
    except Exception:  # noqa: BLE001
        return 0, 0
    part = score.parts[0] if score.parts else score
    inner = list(part.getElementsByClass("Measure"))[1:-1]
    full = sum(1 for m in inner
               if abs(m.duration.quarterLength - m.barDuration.quarterLength) < 1e-9)
    return full, len(inner)


def bar_score(tunes) -> tuple[int, int]:
    counts = [full_bars(t) for t in tunes]
    return sum(c[0] for c in counts), sum(c[1] for c in counts)


def percent(full: int, total: int) -> str:
    return f"{full}/{total} = {100 * full / total:.0f}%" if total else "0/0"


def main(argv=None) -> int:
    args = parse_args(argv)
    dtype = np.dtype(args.dtype)
    started = time.monotonic()
    corpus = abc_tunes(max_chars=args.max_chars or None)
    vocab = Vocab.from_text(corpus.text)
    V = len(vocab)
    order = np.random.default_rng(args.seed).permutation(len(corpus.documents))
    n_val = max(1, round(len(order) * args.val))
    train_tunes = [corpus.documents[i] for i in order[:-n_val]]
    val_tunes = [corpus.documents[i] for i in order[-n_val:]]
    train_ids = vocab.encode("".join(train_tunes))
    val_ids = vocab.encode("".join(val_tunes))
    try:                     # checked before training, where it lost the trained model
        vocab.encode(args.header)
    except ValueError as exc:
        sys.exit(f"error: --header: {exc}")

    Cell = rnndsl.load(SPEC, target=args.target)
    cell = Cell(V=V, H=args.hidden, dtype=dtype, seed=args.seed)
    trainer = Trainer(cell, optimizer=Adam(lr=args.lr), clip_norm=args.clip or None,
                      seed=args.seed)
    n_params = sum(p.size for p in cell.params.values())
    print(f"corpus: {corpus.describe()}")
    print(f"model: {Cell.spec.name} from {SPEC.relative_to(ROOT)}, V={V} H={args.hidden}, "
          f"{n_params:,} params, target {args.target}, {dtype.name}")
    print(f"data: {len(train_tunes):,} tunes ({len(train_ids):,} chars) to train on, "
          f"{len(val_tunes):,} ({len(val_ids):,} chars) held out; batch {args.batch} x "
          f"{args.seq} steps")
    print(f"kernels ready in {warm_up(cell, V, dtype):.1f} s")

    stats = train_stream(trainer, train_ids, V, args, dtype)
    bits = validation_bits(trainer, val_ids, V, args.batch, args.seq, dtype)
    uniform, unigram = math.log2(V), unigram_bits(train_ids, val_ids[1:], V)

    tunes = sample_tunes(Sampler(cell), vocab, args.header, args.tunes, args.temperature,
                         args.max_tune_chars, args.seed)
    sampled_bars = bar_score(t for t, _ in tunes)
    reference_bars = bar_score(t.rstrip("\n") for t in val_tunes[:args.reference])
    for k, (tune, done) in enumerate(tunes, 1):
        full, total = full_bars(tune)
        print(f"\n--- tune {k} (temperature {args.temperature}; {percent(full, total)} "
              f"full inner bars{'' if done else '; no ending within the length limit'}) ---")
        print(f"X:{k}\n{tune}")
    print("\n=== summary ===")
    print(f"corpus: {corpus.name}, {len(corpus.documents):,} tunes, {len(corpus):,} chars, "
          f"sha256 {corpus.sha256[:16]}, V={V}")
    print(f"model: {Cell.spec.name} H={args.hidden}, {n_params:,} params, {args.target} "
          f"{dtype.name}")
    print(f"trained: {stats['steps']} steps, {stats['chars']:,} chars in "
          f"{clock(stats['seconds'])} ({stats['chars'] / stats['seconds']:,.0f} chars/s, "
          f"{stats['chars'] / len(train_ids):.2f} epochs)")
    print(f"validation: {bits:.3f} bits/char over {len(val_tunes)} held-out tunes "
          f"(uniform {uniform:.3f}; unigram {unigram:.3f})")
    print(f"sampled tunes: {len(tunes)}, {sum(d for _, d in tunes)} ended with a blank line; "
          f"full inner bars {percent(*sampled_bars)} (held-out real tunes: "
          f"{percent(*reference_bars)} over {min(args.reference, len(val_tunes))} tunes)")
    print(f"total time: {clock(time.monotonic() - started)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except rnndsl.RnnError as exc:      # music21 missing, a bad size: one line, no traceback
        sys.exit(f"error: {exc}")
