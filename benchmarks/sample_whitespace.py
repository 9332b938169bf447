"""How much whitespace a trained character model writes at low temperature, and why.

    .venv/bin/rnndsl train specs/char_lstm.rnn            # writes model.npz
    .venv/bin/python benchmarks/sample_whitespace.py model.npz --seeds 12
    .venv/bin/python benchmarks/sample_whitespace.py model.npz --prime-code 400

Issue 19 asks that the main job's temperature-0.5 sample read like Python: at most 1.5
times the corpus's share of whitespace characters. This prints, for a checkpoint that
`rnndsl train` wrote on the stdlib corpus:
  1. the whitespace share and the longest run of spaces of samples at --temperature
     (300 characters each, primed as `rnndsl train`'s closing samples are: with a line
     break) over --seeds seeds, beside the corpus's own share;
  2. the model's probability that a space follows a line break and k spaces (from a
     fresh state), beside how often a run of k spaces at a line's start goes on in the
     corpus itself. At temperature t a sample draws from p**(1/t), renormalised, so where
     a space is the likeliest next character its share grows: once the model puts much
     more on "another space" than the corpus does, a low-temperature sample stays in the
     run.
"""

from __future__ import annotations

import argparse
import collections
import re
import statistics
import sys

import numpy as np


def corpus_runs(text: str) -> collections.Counter:
    """Lengths of the runs of spaces that open a line."""
    return collections.Counter(len(m) for m in re.findall(r"(?<=\n) +", text))


def whitespace_share(text: str) -> float:
    return sum(ch in " \t\n" for ch in text) / max(1, len(text))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--seeds", type=int, default=12)
    ap.add_argument("--temperature", type=float, default=0.5)
    ap.add_argument("--length", type=int, default=300)
    ap.add_argument("--prime-code", type=int, default=0, metavar="N",
                    help="prime each sample with up to N characters of code from the "
                         "corpus's last 60,000 (text `rnndsl train` never trains on: it "
                         "holds out the corpus's tail), cut at a line break, 1,000 "
                         "characters further on for each seed; default 0: a line break "
                         "alone, as `rnndsl train`'s closing samples")
    args = ap.parse_args(argv)

    from rnndsl.train import checkpoint
    from rnndsl.train.corpora import stdlib_corpus
    from rnndsl.train.data import Vocab
    from rnndsl.train.sample import Sampler, temperature
    info = checkpoint.peek(args.checkpoint)
    user = info.meta["user"]
    vocab = Vocab.from_json(user["vocab"])
    cell = checkpoint.cell_class(info)(dtype=np.dtype(info.dtype), **info.dims)
    checkpoint.load(args.checkpoint, cell)
    sampler = Sampler(cell, input=user["x"], output=user["y"])
    text = stdlib_corpus().text

    held_out = text[-60_000:]
    shares, runs = [], []
    for seed in range(args.seeds):
        prime = "\n"
        if args.prime_code:
            start = held_out.find("\n", 1000 * seed) + 1
            code = held_out[start:start + args.prime_code]
            prime = code[:code.rfind("\n") + 1] or prime
        ids = sampler.generate(args.length, temperature(args.temperature),
                               prime=vocab.encode(prime), seed=seed)
        sample = vocab.decode(ids[0])
        shares.append(whitespace_share(sample))
        runs.append(max((len(m) for m in re.findall(r" +", sample)), default=0))
    corpus_share = whitespace_share(text)
    print(f"# {args.checkpoint}: {info.cell} {info.dims}, step "
          f"{info.meta.get('trainer', {}).get('steps', '?')}")
    print(f"whitespace share of the corpus: {corpus_share:.3f} (issue 19's bound, 1.5x: "
          f"{1.5 * corpus_share:.3f})")
    primed = (f"primed with up to {args.prime_code} chars of held-out code"
              if args.prime_code else "primed with a line break")
    print(f"samples at temperature {args.temperature}, {primed}, {args.seeds} seeds: share median "
          f"{statistics.median(shares):.3f}, max {max(shares):.3f}; within the bound: "
          f"{sum(s <= 1.5 * corpus_share for s in shares)} of {args.seeds}")
    print(f"longest run of spaces in each: {runs}")

    counts = corpus_runs(text)
    space = vocab.encode(" ")[0]
    print("\n| k spaces after a line break | model: p(another space) | corpus: runs of k "
          "that go on |")
    print("|---|---|---|")
    for k in (0, 4, 8, 12, 16, 20, 24, 32, 48):
        primed = sampler.prime(vocab.encode("\n" + " " * k))
        p = float(np.exp(primed.logp[0][space]))
        at_least = sum(v for n, v in counts.items() if n >= k) if k else \
            text.count("\n")
        longer = sum(v for n, v in counts.items() if n > k)
        print(f"| {k} | {p:.3f} | {longer / at_least:.3f} |" if at_least else
              f"| {k} | {p:.3f} | - |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
