"""How much whitespace a trained character model writes at low temperature, and why.

    .venv/bin/rnndsl train specs/char_lstm.rnn            # writes model.npz
    .venv/bin/python benchmarks/sample_whitespace.py model.npz --seeds 12
    .venv/bin/python benchmarks/sample_whitespace.py model.npz --prime-code 400

Issue 19 asks that the main job's temperature-0.5 sample read like Python: at most 1.5
times the corpus's share of whitespace characters. This prints, for a checkpoint that
`rnndsl train` wrote on the stdlib corpus:
  1. the whitespace share and the longest run of spaces of samples at --temperature
     (300 characters each, primed with a line break from a fresh state, as `rnndsl
     train`'s closing samples were before they continued held-out lines; --prime-code N
     starts them from held-out code, as they now do) over --seeds seeds, beside the
     corpus's own share;
  2. the model's probability that a space follows a line break and k spaces (from a
     fresh state), beside how often a run of k spaces at a line's start goes on in the
     corpus itself. At temperature t a sample draws from p**(1/t), renormalised, so where
     a space is the likeliest next character its share grows: once the model puts much
     more on "another space" than the corpus does, a low-temperature sample stays in the
     run.

With --torch MINUTES it also trains PyTorch's model of the main job (nn.LSTM + nn.Linear,
benchmarks/train_bench.py's recipe: the same initial params, data, batch, Adam, clipping)
for MINUTES in this process and puts it through the same protocol, sampled with the same
strategy and seeds: whether a 3-minute model of this size writes Python at temperature
0.5 at all, whichever framework trained it.
"""

from __future__ import annotations

import argparse
import collections
import re
import statistics
import sys
from pathlib import Path

import numpy as np


def corpus_runs(text: str) -> collections.Counter:
    """Lengths of the runs of spaces that open a line."""
    return collections.Counter(len(m) for m in re.findall(r"(?<=\n) +", text))


def whitespace_share(text: str) -> float:
    return sum(ch in " \t\n" for ch in text) / max(1, len(text))


class RnndslModel:
    """A checkpoint `rnndsl train` wrote, sampled by rnndsl's Sampler."""

    def __init__(self, path: str):
        from rnndsl.train import checkpoint
        from rnndsl.train.data import Vocab
        from rnndsl.train.sample import Sampler
        info = checkpoint.peek(path)
        user = info.meta["user"]
        self.vocab = Vocab.from_json(user["vocab"])
        cell = checkpoint.cell_class(info)(dtype=np.dtype(info.dtype), **info.dims)
        checkpoint.load(path, cell)
        self.sampler = Sampler(cell, input=user["x"], output=user["y"])
        self.title = (f"{path}: {info.cell} {info.dims}, step "
                      f"{info.meta.get('trainer', {}).get('steps', '?')}")

    def sample(self, prime: str, length: int, strategy, seed: int) -> str:
        ids = self.sampler.generate(length, strategy, prime=self.vocab.encode(prime),
                                    seed=seed)
        return self.vocab.decode(ids[0])

    def next_logp(self, text: str) -> np.ndarray:
        """log p(next token) after `text`, from a fresh state."""
        return self.sampler.prime(self.vocab.encode(text)).logp[0]


class TorchModel:
    """PyTorch's model of the main job, trained here for `minutes` as train_bench.py's
    torch row trains it (state carried between chunks, reset at each epoch)."""

    def __init__(self, minutes: float):
        import torch
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import train_bench as tb
        from rnndsl.train.data import Vocab, one_hot, tbptt_batches
        from rnndsl.train.corpora import DEFAULT_STDLIB_CHARS, stdlib_corpus
        torch.manual_seed(tb.SETTINGS["seed"])
        self.torch, self.one_hot = torch, one_hot
        self.vocab = Vocab.from_text(stdlib_corpus(max_chars=DEFAULT_STDLIB_CHARS).text)
        _, V, train_ids, _ = tb.load_data("stdlib", None)
        info = tb.MODELS["char_lstm_128"]
        self.model = tb.torch_model(info.kind, tb.initial_params(info, V))
        step, reset, _ = tb.torch_trainer(self.model, V)
        batches = tbptt_batches(train_ids, tb.SETTINGS["batch"], tb.SETTINGS["seq"])
        steps, chars, seconds = tb.train_for(batches, minutes * 60, step, reset)
        self.V = V
        self.title = (f"PyTorch (nn.LSTM + nn.Linear, train_bench's recipe), {minutes:g} "
                      f"minutes: {steps:,} steps, {chars / seconds:,.0f} chars/s")

    def _run(self, ids, state):
        x = self.torch.from_numpy(self.one_hot(np.asarray(ids)[:, None], self.V, np.float32))
        with self.torch.no_grad():
            logits, state = self.model(x, state)
        return np.log(self.torch.softmax(logits[-1, 0].double(), 0).numpy())[None], state

    def sample(self, prime: str, length: int, strategy, seed: int) -> str:
        rng = np.random.default_rng(seed)
        logp, state = self._run(self.vocab.encode(prime), None)
        out = []
        for _ in range(length):
            tok = int(strategy(logp, rng)[0])
            out.append(tok)
            logp, state = self._run([tok], state)
        return self.vocab.decode(out)

    def next_logp(self, text: str) -> np.ndarray:
        return self._run(self.vocab.encode(text), None)[0][0]


def report(model, text: str, args) -> None:
    from rnndsl.train.sample import temperature
    held_out = text[-60_000:]
    shares, runs = [], []
    for seed in range(args.seeds):
        prime = args.prime
        if args.prime_code:
            start = held_out.find("\n", 1000 * seed) + 1
            code = held_out[start:start + args.prime_code]
            prime = code[:code.rfind("\n") + 1] or prime
        sample = model.sample(prime, args.length, temperature(args.temperature), seed)
        shares.append(whitespace_share(sample))
        runs.append(max((len(m) for m in re.findall(r" +", sample)), default=0))
    corpus_share = whitespace_share(text)
    print(f"# {model.title}")
    print(f"whitespace share of the corpus: {corpus_share:.3f} (issue 19's bound, 1.5x: "
          f"{1.5 * corpus_share:.3f})")
    primed = (f"primed with up to {args.prime_code} chars of held-out code"
              if args.prime_code else "primed with a line break" if args.prime == "\n"
              else f"primed with {args.prime!r}")
    print(f"samples at temperature {args.temperature}, {primed}, {args.seeds} seeds: share median "
          f"{statistics.median(shares):.3f}, max {max(shares):.3f}; within the bound: "
          f"{sum(s <= 1.5 * corpus_share for s in shares)} of {args.seeds}")
    print(f"longest run of spaces in each: {runs}")

    counts = corpus_runs(text)
    space = model.vocab.encode(" ")[0]
    print("\n| k spaces after a line break | model: p(another space) | corpus: runs of k "
          "that go on |")
    print("|---|---|---|")
    for k in (0, 4, 8, 12, 16, 20, 24, 32, 48):
        p = float(np.exp(model.next_logp("\n" + " " * k)[space]))
        at_least = sum(v for n, v in counts.items() if n >= k) if k else \
            text.count("\n")
        longer = sum(v for n, v in counts.items() if n > k)
        print(f"| {k} | {p:.3f} | {longer / at_least:.3f} |" if at_least else
              f"| {k} | {p:.3f} | - |")
    print()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", nargs="?", help="a checkpoint `rnndsl train` wrote on "
                    "the stdlib corpus (optional with --torch)")
    ap.add_argument("--torch", type=float, metavar="MINUTES",
                    help="also train PyTorch's model of the main job for MINUTES and "
                         "sample it the same way (needs torch)")
    ap.add_argument("--seeds", type=int, default=12)
    ap.add_argument("--temperature", type=float, default=0.5)
    ap.add_argument("--length", type=int, default=300)
    ap.add_argument("--prime-code", type=int, default=0, metavar="N",
                    help="prime each sample with up to N characters of code from the "
                         "corpus's last 60,000 (text `rnndsl train` never trains on: it "
                         "holds out the corpus's tail), cut at a line break, 1,000 "
                         "characters further on for each seed (`rnndsl train`'s closing "
                         "samples start from held-out lines too); default 0: --prime")
    ap.add_argument("--prime", default="\n", metavar="TEXT",
                    help="the text each sample starts from (default: a line break, from "
                         "a fresh state); '# ==== ' starts a new file of the stdlib corpus "
                         "(its separator line)")
    args = ap.parse_args(argv)
    if args.checkpoint is None and args.torch is None:
        ap.error("give a checkpoint, --torch MINUTES, or both")

    from rnndsl.train.corpora import stdlib_corpus
    text = stdlib_corpus().text
    if args.checkpoint is not None:
        report(RnndslModel(args.checkpoint), text, args)
    if args.torch is not None:
        report(TorchModel(args.torch), text, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
