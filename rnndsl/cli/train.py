"""`rnndsl train`: a character (or ABC-tune) model from the shell (`rnndsl sample` and
`rnndsl info`, which read its checkpoints, are in cli/sample.py).

train: spec + corpus -> a checkpoint (.npz carrying the spec's text, the vocabulary and
the trainer's state), a progress bar (loss, learning rate, characters a second, time
left), validation bits per character every --val-every steps and at the end, the
checkpoint that validated best (<checkpoint>.best.npz), samples at two temperatures, and
optionally a loss-curve PNG and a JSON summary. The learning rate follows a schedule
(rnndsl.train.schedule: warm-up, then cosine or step decay) over the run's steps or
minutes, continued by --resume. Every argument, the spec, the corpus and the
checkpoints' fate are checked before the first step (`--dry-run` stops there); an
existing checkpoint is never overwritten without --resume or --force; Ctrl-C saves a
checkpoint and prints the command that resumes it.

The model is any cell with one token input x[V] (one-hot) and one output of V logits;
V is bound to the vocabulary's size, the other dims come from --dims (default 128).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import args as cli_args
from .train_checks import (TrainError, checkpoint_vocab, default_best, resumed_dtype, _is_zip,
                           _outputs_apart_from_inputs, _same_settings, _schedule)
from .train_options import DEFAULT_DIM, add_train_arguments
from .figures import plot_losses
from .train_stops import _StopAtStepEnd, _free_sibling, _resume_command
from ..core.errors import RnnError

EXIT_INTERRUPTED = 130


# ---------------------------------------------------------------------------- progress
class Progress:
    """A tqdm bar on a terminal; on anything else (a log file, CI) a plain line every
    `every` seconds, since a redrawn bar there is one unreadable line."""

    def __init__(self, total: float, stream=None, every: float = 10.0):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.every, self.last, self.total = (0.2 if self.tty else every), 0.0, total
        self.bar = None
        if self.tty:
            from tqdm import tqdm
            self.bar = tqdm(total=total, file=self.stream, dynamic_ncols=True, leave=True,
                            bar_format="{percentage:3.0f}%|{bar}| {postfix}")

    def show(self, done: float, text: str, force: bool = False) -> None:
        """`done` of `total` is finished; `text` says how it goes."""
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return
        self.last = now
        if self.bar is not None:
            self.bar.n = min(done, self.total)
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.refresh()
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def note(self, text: str, stream) -> None:
        """`text` on a line of its own on `stream`, above the bar where one is drawn."""
        if self.bar is not None:
            self.bar.clear()
        print(text, file=stream, flush=True)
        if self.bar is not None:
            self.bar.refresh()

    def done(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


# ---------------------------------------------------------------------------- model
def _corpus(name: str, max_chars: int | None):
    from ..train import corpora
    if name == "stdlib":
        return corpora.stdlib_corpus(max_chars=max_chars or corpora.DEFAULT_STDLIB_CHARS)
    if name == "shakespeare":
        return corpora.shakespeare_corpus(max_chars=max_chars)
    if name == "abc":
        return corpora.abc_tunes(max_chars=max_chars)
    if not name.strip():
        raise TrainError("--corpus is empty: give a UTF-8 text file (or stdlib, shakespeare "
                         "or abc)")
    path = Path(name)
    if path.is_dir():
        raise TrainError(f"--corpus {name}: is a folder; give a UTF-8 text file (or "
                         "stdlib, shakespeare or abc)")
    if not path.exists():
        raise TrainError(f"--corpus {name}: not stdlib, shakespeare or abc, and no such file")
    if not path.is_file():          # /dev/null, a pipe, a device
        raise TrainError(f"--corpus {name}: not a regular file; give a UTF-8 text file (or "
                         "stdlib, shakespeare or abc)")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        from ..core.files import undecodable_place
        line, column = undecodable_place(exc)
        raise TrainError(f"--corpus {name}:{line}:{column}: not UTF-8 text ({exc.reason} at "
                         f"byte {exc.start}); give a UTF-8 text file") from None
    except OSError as exc:
        raise TrainError(f"--corpus {name}: cannot read it ({exc.strerror})") from None
    if max_chars:
        text = text[:max_chars]
    if not text:
        raise TrainError(f"--corpus {name}: the file is empty")
    return corpora.Corpus(path.name, text, f"the file {path}", (text,), (str(path),))


def _token_dims(spec) -> tuple[str, str, str]:
    """(input, output, vocabulary dim) of a token model, or a clear refusal."""
    if spec.sequence_layers:
        lay = spec.sequence_layers[0]
        raise TrainError(f"cell {spec.name} runs layer {lay.name} {lay.direction} over whole "
                         "sequences, so at each step it would read the characters it is "
                         "to predict: rnndsl train trains next-token models; train it with "
                         "rnndsl.train.Trainer on a task that may see the whole sequence")
    masks = {name for name, _ in spec.dropouts}      # the runtime fills these
    inputs = [d for d in spec.inputs if d.name not in masks]
    if len(inputs) != 1 or len(spec.outputs) != 1:
        raise TrainError(f"cell {spec.name} needs one token input and one logits output to "
                         f"train on text; it has inputs {', '.join(d.name for d in inputs)} "
                         f"and outputs {', '.join(o.name for o in spec.outputs) or 'none'}")
    x, y = inputs[0], spec.outputs[0]
    size = x.type.shape[0] if x.type.shape else None
    if size is None or len(size.terms) != 1 or size.terms[0][1] != 1 or size.const:
        raise TrainError(f"input {x.name} of {spec.name} is {x.type}; a token input is one "
                         "dim, x[V], which train binds to the vocabulary size")
    if x.once:
        raise TrainError(f"input {x.name} of {spec.name} is `input once`, read once a "
                         "sequence, but train feeds a token at every step: declare it "
                         f"`input token {x.name}[{size}]`")
    if y.final:
        raise TrainError(f"output {y.name} of {spec.name} is a final output, given once a "
                         "sequence, but train needs the next token's logits at every step: "
                         f"declare it `output {y.name} = ...`")
    if y.type.shape != x.type.shape:
        raise TrainError(f"output {y.name} of {spec.name} is {y.type} but the input is "
                         f"{x.type}: the logits need one entry per token of the vocabulary")
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
    from ..cells.load import load
    return load(spec_path, target=target, cell=cell)


# The closing samples' start when no --prime is given: the validation text's first whole
# lines, up to this many characters (text the model never trained on).
HELD_OUT_PRIME_CHARS = 400


def held_out_prime(val_ids: np.ndarray, vocab) -> np.ndarray:
    """The ids the closing samples start from without --prime: the whole lines of the
    held-out text from its first line break on, up to HELD_OUT_PRIME_CHARS in all (the
    line break included); where it has no whole line, the cold start of _encode_prime.

    Why not a line break from a fresh state, as before: a model trained by truncated BPTT
    spends nearly every step with a state carried from the text before, and starts cold
    badly. The main job's model, primed with a line break alone, indented and then stayed
    in a run of spaces in 8 of 12 temperature-0.5 samples; after 400 characters of
    held-out code, in none, with the corpus's share of whitespace (benchmarks/RESULTS.md,
    the twelfth session; benchmarks/sample_whitespace.py --prime-code 400)."""
    text = vocab.decode(val_ids[:4 * HELD_OUT_PRIME_CHARS])
    start = text.find("\n")
    if start >= 0:
        lines = text[start:start + HELD_OUT_PRIME_CHARS]
        lines = lines[:lines.rfind("\n") + 1]
        if len(lines) > 1:
            return vocab.encode(lines)
    return _encode_prime(vocab, "", "the corpus")


def _encode_prime(vocab, prime: str, where: str) -> np.ndarray:
    """The ids of `prime`, or a refusal naming the characters the model never saw. No
    prime: a line break (the vocabulary's first symbol where the text had none)."""
    if not prime:
        return vocab.encode("\n" if "\n" in vocab else vocab.decode([0]))
    unknown = sorted({ch for ch in prime if ch not in vocab})
    if unknown:
        shown = ", ".join(repr(ch) for ch in unknown[:10])
        raise TrainError(f"--prime has characters that {where} never saw: {shown}; give "
                         f"a prime made of its {len(vocab)} symbols, or leave --prime out")
    return vocab.encode(prime)


# ---------------------------------------------------------------------------- train
@dataclass
class _Plan:
    """Everything `train` decided before its first step."""

    Cell: type
    dims: dict[str, int]
    dtype: np.dtype
    corpus: object
    vocab: object
    train_ids: np.ndarray
    val_ids: np.ndarray
    x_name: str
    y_name: str
    checkpoint: Path
    resume: bool
    schedule: object                    # the lr schedule (rnndsl.train.schedule)
    schedule_from: float | None         # the progress it resumes at; None: from its start
    best: Path | None                   # where the best checkpoint goes (None: not kept)
    best_record: dict | None            # the validation it holds, when a resumed run has one
    info: object = None                 # the checkpoint's CheckpointInfo when resuming
    prefix: np.ndarray = field(default=None, repr=False)


def _prepare(args) -> _Plan:
    """Check everything that can be checked without training: arguments together, the
    spec, the corpus, the checkpoint (its fate, and when resuming, its model)."""
    from ..train.data import Vocab, split, val_size
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise TrainError("--plot needs matplotlib: pip install 'rnndsl[plot]' (or "
                             "pip install matplotlib)") from None
    if args.resume and args.force:
        raise cli_args.UsageError("--resume continues the --checkpoint and --force starts "
                                  "afresh over it: give one of them")
    outputs = (("--plot", args.plot), ("--json", args.json),
               ("--checkpoint", args.checkpoint), ("--best", args.best))
    for option, value in outputs:
        cli_args.writable_file(option, value, TrainError)
    schedule = _schedule(args)
    if args.minutes is None and args.steps is None:
        args.minutes = 3.0
    dtype = np.dtype(args.dtype)
    Cell = _load_class(args.spec, args.cell, args.target)
    _outputs_apart_from_inputs(args, outputs, Cell)   # a checkpoint given as the spec: named above
    x_name, y_name, vocab_dim = _token_dims(Cell.spec)
    given = args.dims or {}
    _bind(Cell.spec, vocab_dim, 1, {k: v for k, v in given.items() if k != vocab_dim})
    checkpoint = Path(args.checkpoint)
    exists = checkpoint.is_file()
    if exists and not args.resume and not args.force:
        raise TrainError(f"{checkpoint} exists: training would overwrite it. Continue it with "
                         "--resume, or overwrite it with --force (or name another file with "
                         "--checkpoint)")
    corpus = _corpus(args.corpus, args.max_chars)
    info = None
    if args.resume and exists:
        from ..train.checkpoint import check_model, peek
        info = peek(checkpoint)
        user = info.meta.get("user", {})
        if "vocab" not in user:
            raise TrainError(f"{checkpoint} was not written by rnndsl train (it has no "
                             "vocabulary); train afresh with --force, or give another "
                             "--checkpoint")
        if user.get("corpus_sha256") != corpus.sha256:
            raise TrainError(f"{checkpoint} was trained on another corpus ("
                             f"{user.get('corpus', '?')}); train afresh without --resume, "
                             "or give the same --corpus and --max-chars")
        vocab = checkpoint_vocab(user, checkpoint)
        dims = dict(info.dims)
        differ = {k: v for k, v in given.items() if dims.get(k) != v}
        if differ:
            ours = ", ".join(f"{k}={v}" for k, v in given.items())
            theirs = ", ".join(f"{k}={v}" for k, v in dims.items())
            raise TrainError(f"--resume continues {checkpoint}, which has dims {theirs}, but "
                             f"--dims asks for {ours}: leave --dims out to resume, or train "
                             "afresh with --force")
        check_model(info, Cell, dims)
        dtype = resumed_dtype(args, info.dtype, checkpoint)
        schedule = _same_settings(args, user, checkpoint) or schedule
    else:
        vocab = Vocab.from_text(corpus.text)
        dims = _bind(Cell.spec, vocab_dim, len(vocab), given)
    ids = vocab.encode(corpus.text)
    val = val_size(len(ids), args.val)
    if val < 2 or len(ids) - val < 2:
        hint = "use more text" if len(ids) < 4 else \
            f"{'lower' if val >= 2 else 'raise'} --val or use more text"
        raise TrainError(f"--val {args.val:g} of the corpus's {len(ids):,} chars leaves "
                         f"{len(ids) - val:,} to train on and {val:,} to validate on; each "
                         f"needs at least 2: {hint}")
    train_ids, val_ids = split(ids, args.val)
    val_ids = val_ids[:args.val_chars + 1]
    if len(val_ids) < 2:
        raise TrainError(f"the validation part ({len(val_ids)} chars of {len(ids):,}) is too "
                         "short: raise --val or use more text")
    if len(train_ids) < args.batch + 1:
        raise TrainError(f"--batch {args.batch} rows need at least {args.batch + 1:,} chars "
                         f"to train on (a row of one step each, and the next char); the "
                         f"corpus leaves {len(train_ids):,} after --val: use a smaller "
                         "--batch, or more text")
    prefix = held_out_prime(val_ids, vocab) if args.prime is None else \
        _encode_prime(vocab, args.prime, "the corpus")
    # (a record written before validations counted the chars they score counted the
    # held-out text less one: the same validation)
    best, best_record = _best(args, checkpoint, info is not None,
                              (_scored_chars(val_ids, args), len(val_ids) - 1))
    progress = info.meta.get("trainer", {}).get("progress") if info else None
    schedule_from = progress if isinstance(progress, (int, float)) and 0 <= progress < 1 \
        else None
    return _Plan(Cell, dims, dtype, corpus, vocab, train_ids, val_ids, x_name, y_name,
                 checkpoint, info is not None, schedule, schedule_from, best, best_record,
                 info, prefix)


def _best(args, checkpoint: Path, resuming: bool, val_chars: tuple[int, ...]):
    """(where the best checkpoint goes, the validation it holds when this run continues
    it); (None, None) without validation during training. An existing best checkpoint is
    continued by --resume (if it was validated on as many chars: `val_chars`, the counts
    this run's validation has, now and as checkpoints before 0.1.0's last change counted
    it), overwritten by --force and otherwise kept: the run is refused."""
    if not args.val_every:
        if args.best:
            raise cli_args.UsageError("--best keeps the checkpoint that validates best during "
                                      "training: it needs --val-every N above 0")
        return None, None
    best = Path(args.best) if args.best else default_best(checkpoint)
    if best.resolve() == checkpoint.resolve():
        raise cli_args.UsageError(f"--best {best} is the --checkpoint itself; name another "
                                  "file")
    if not best.is_file() or (args.force and not resuming):
        return best, None
    if not resuming:
        raise TrainError(f"{best} exists (the best checkpoint of an earlier run): training "
                         "would overwrite it. Overwrite it with --force, or name another file "
                         "with --best" + ("" if args.resume else ", or continue that run with "
                                          "--resume"))
    from ..train.checkpoint import peek
    try:
        record = peek(best).meta.get("user", {}).get("validation")
    except RnnError as exc:
        raise TrainError(f"--best {best}: {exc}") from None
    if not isinstance(record, dict) or record.get("chars") not in val_chars:
        return best, None       # not comparable: the next validation replaces it
    return best, record


def _describe(plan: _Plan, args, out) -> None:
    n_params = sum(math.prod(s.evaluate(plan.dims) for s in d.type.shape)
                   for d in plan.Cell.spec.params)
    print(f"model: {plan.Cell.spec.name} from {args.spec} "
          f"({', '.join(f'{k}={v}' for k, v in plan.dims.items())}; {n_params:,} params; "
          f"{args.target}, {plan.dtype.name})", file=out)
    print(f"corpus: {plan.corpus.describe()}", file=out)
    steps = plan.info.meta.get("trainer", {}).get("steps", 0) if plan.info else 0
    where = ("its lr schedule started afresh" if plan.schedule_from is None else
             f"{plan.schedule_from:.0%} into its lr schedule")
    if plan.info and "position" not in plan.info.meta.get("user", {}):
        # saved by the Python API (examples/char_model.py --save): no place in the corpus
        where += "; from the corpus's start (the checkpoint holds no place in it)"
    row = (len(plan.train_ids) - 1) // args.batch       # each row's share of the text
    seq = f"{args.seq} steps" if row >= args.seq else \
        f"{row} steps (--seq {args.seq} is longer than a row of the text: {row})"
    symbols = f"{len(plan.vocab)} symbol{'' if len(plan.vocab) == 1 else 's'}"
    print(f"data: {symbols}; {len(plan.train_ids):,} chars to train on, "
          f"{len(plan.val_ids) - 1:,} to validate; batch {args.batch} x {seq}"
          + (f"; resuming at step {steps}, {where}" if plan.resume else ""), file=out)
    warmup = plan.schedule.warmup
    if args.steps is not None and args.minutes is None and warmup >= args.steps \
            and plan.schedule_from is None:
        print(f"note: the warm-up ({warmup} steps) is not shorter than --steps {args.steps}: "
              "the learning rate never reaches --lr (lower --warmup)", file=out)


def _plan_text(plan: _Plan, args) -> str:
    fate = ("resumed and updated" if plan.resume else
            "overwritten" if plan.checkpoint.is_file() else "written")
    return (f"plan: train for {_budget_text(args)}; {args.optimizer} at lr {args.lr:g} "
            f"({plan.schedule.describe()})"
            + (f", gradient norm clipped to {args.clip:g}" if args.clip else "")
            + (f"; each row starts afresh with probability {args.state_resets:.4g} a step"
               if args.state_resets else "; the state always carried")
            + (f"; validation every {args.val_every} steps and at the end, the best "
               f"checkpoint kept in {plan.best}" if plan.best else "; validation at the end")
            + f"; checkpoint {plan.checkpoint} {fate}"
            + (f" every {args.every} steps and at the end" if args.every else " at the end"))


def _budget_text(args) -> str:
    parts = []
    if args.minutes is not None:
        parts.append(f"{args.minutes:g} minute{'' if args.minutes == 1 else 's'}")
    if args.steps is not None:
        parts.append(f"{args.steps} step{'' if args.steps == 1 else 's'}")
    return " or ".join(parts) + (" (whichever comes first)" if len(parts) == 2 else "")


@contextlib.contextmanager
def _diverged(cell):
    """A model whose params, logits or gradients are no longer finite (too high an
    --lr: params of 1e38 are finite, and their logits are not) makes the loss or the
    clipping refuse them: that is the user's run diverging, said as such (exit 2; a
    sweep's failed point), not a bug. Any other ValueError is left as it is."""
    from ..train.losses import DivergedError
    try:
        yield
    except ValueError as exc:
        finite = all(np.isfinite(v).all() for v in cell.params.values())
        if finite and not isinstance(exc, DivergedError):
            raise
        what = "params" if not finite else exc.values
        raise TrainError(f"the model diverged: its {what} are no longer finite; lower --lr "
                         "(or --clip)") from None


class _Run:
    """One `rnndsl train` past its checks: the trainer, where it is in the corpus and in
    its lr schedule, the training loss and validation histories, and the checkpoints it
    writes (the last state, and with --val-every the one that validated best)."""

    def __init__(self, plan: _Plan, args, out, err=None):
        from ..train.optim import OPTIMIZERS
        from ..train.trainer import Trainer
        self.plan, self.args, self.out, self.err = plan, args, out, err
        self.cell = plan.Cell(dtype=plan.dtype, seed=args.seed, **plan.dims)
        self.trainer = Trainer(self.cell, output=plan.y_name, input=plan.x_name,
                               optimizer=OPTIMIZERS[args.optimizer](lr=args.lr),
                               clip_norm=args.clip or None, seed=args.seed,
                               lr_schedule=plan.schedule, state_resets=args.state_resets)
        self.position = {"epoch": 0, "chunk": 0}
        self.history: list[tuple[int, float]] = []          # (step, training loss)
        self.val_history: list[tuple[int, float]] = []      # (step, validation bits/char)
        self.best = plan.best_record        # the best checkpoint's validation, or None
        # --force replaces an earlier run: its best checkpoint goes with its last one, at
        # the first save (a run that fails before then leaves both as they were), where
        # this run has not written its own (--val-every 0 writes none)
        earlier = {default_best(plan.checkpoint), plan.best}
        # a checkpoint absent when this run started that is there at its first save was
        # written by another run given the same --checkpoint (see save)
        self.checkpoint_was_absent, self.saved_once = not plan.checkpoint.exists(), False
        self.stale_best = sorted(p for p in earlier if p is not None and args.force and
                                 not plan.resume and p.is_file() and _is_zip(p))
        self.chars, self.steps_done, self.val_seconds = 0, 0, 0.0
        self.meta = {"spec": str(args.spec), "cell": plan.Cell.spec.name,
                     "target": args.target, "vocab": plan.vocab.to_json(),
                     "corpus": plan.corpus.describe(), "corpus_sha256": plan.corpus.sha256,
                     "x": plan.x_name, "y": plan.y_name,
                     # where `rnndsl sample` starts without --prime (see held_out_prime)
                     "held_out_prime": plan.vocab.decode(held_out_prime(plan.val_ids,
                                                                        plan.vocab)),
                     "settings": {"batch": args.batch, "seq": args.seq, "val": args.val,
                                  "optimizer": args.optimizer, "lr": args.lr,
                                  "clip": args.clip, "seed": args.seed,
                                  "state_resets": args.state_resets,
                                  "lr_schedule": plan.schedule.to_dict()}}
        if plan.resume:
            user = self.trainer.load(plan.checkpoint)
            # a checkpoint saved by the Python API (Trainer.save, as the examples' --save
            # does) holds no place in the corpus nor a loss history: from the start
            self.position = user.get("position", self.position)
            self.history = [tuple(p) for p in user.get("history", [])]
            self.val_history = [tuple(p) for p in user.get("val_history", [])]
            if "validation" in user:
                self.meta["validation"] = user["validation"]
        if plan.schedule_from is None:      # a fresh run, or one whose schedule had ended
            self.trainer.restart_schedule()
        self.progress0 = plan.schedule_from or 0.0
        self.trainer.progress = self.progress0

    def save(self, path: Path | None = None) -> None:
        """The checkpoint (or `path`) with this run's place, history and settings. A
        --checkpoint that was absent when the run started and is there at its first save
        is another run's (two runs given one --checkpoint, both started before either
        saved: the second replaced the first's model, and both said all was well): this
        run's model goes to a file of its own, and the run stops saying so."""
        target = path or self.plan.checkpoint
        clash = path is None and not self.saved_once and self.checkpoint_was_absent and \
            target.exists()
        if clash:
            target = _free_sibling(target)
        self.trainer.save(target, meta={
            **self.meta, "position": self.position,
            "history": [list(h) for h in self.history],
            "val_history": [list(v) for v in self.val_history]})
        if clash:
            raise TrainError(f"{self.plan.checkpoint} appeared while this run trained: "
                             "another run was given the same --checkpoint. This run's model "
                             f"is saved as {target}, and it stopped at step "
                             f"{self.trainer.steps}; continue it with --checkpoint {target} "
                             "--resume")
        if path is None:
            self.saved_once = True
        if path is None and self.stale_best:
            for old in self.stale_best:
                if old != self.plan.best or self.best is None:
                    old.unlink(missing_ok=True)
                    print(f"removed {old}, the best checkpoint of the run --force "
                          "replaced", file=self.out)
            self.stale_best = []

    def validate(self) -> bool:
        """Bits per character on the held-out text now, recorded (the checkpoint's
        "validation" is the latest); True when it beats the best, whose checkpoint it
        then writes."""
        plan, trainer = self.plan, self.trainer
        started = time.monotonic()
        bpc = _validate(trainer, plan.vocab, plan.val_ids, self.args, plan.dtype)
        self.val_seconds += time.monotonic() - started
        record = {"bits_per_char": bpc, "chars": _scored_chars(plan.val_ids, self.args),
                  "step": trainer.steps}
        self.val_history.append((trainer.steps, bpc))
        self.meta["validation"] = record
        if plan.best is None or (self.best and bpc >= self.best["bits_per_char"]):
            return False
        self.best = record
        self.save(plan.best)
        return True

    def train(self, stop: _StopAtStepEnd) -> float:
        """Steps until the budget is spent or Ctrl-C; returns the seconds it took."""
        from ..train.data import tbptt_batches, token_feed
        args, plan, trainer = self.args, self.plan, self.trainer
        feed = token_feed(plan.Cell.spec, plan.x_name, len(plan.vocab), plan.dtype)
        batches = tbptt_batches(plan.train_ids, args.batch, args.seq)
        budget_s = args.minutes * 60 if args.minutes is not None else None
        progress = Progress(total=1.0, stream=self.err)
        start, recent = time.monotonic(), []
        self.train_started = start
        while not stop.asked:
            for k, (x_ids, y_ids) in enumerate(batches):
                if k < self.position["chunk"]:
                    continue
                if k == 0:
                    trainer.reset_state("train")
                loss = trainer.step(feed(x_ids), y_ids)
                if not math.isfinite(loss):
                    progress.done()
                    raise TrainError(f"the loss became {loss} at step {trainer.steps}: lower "
                                     "--lr or set --clip (the last good checkpoint is kept)")
                self.position["chunk"] = k + 1
                self.steps_done += 1
                self.chars += x_ids.size
                recent.append(loss)
                self.history.append((trainer.steps, float(loss)))
                elapsed = time.monotonic() - start
                fractions = []
                if budget_s is not None:
                    fractions.append(elapsed / budget_s)
                if args.steps is not None:
                    fractions.append(self.steps_done / args.steps)
                done = min(1.0, max(fractions))
                # the schedule's run: what the checkpoint had done, then this budget
                trainer.progress = self.progress0 + (1 - self.progress0) * done
                left = elapsed / max(done, 1e-9) - elapsed
                mean = float(np.mean(recent[-20:]))
                training_s = max(elapsed - self.val_seconds, 1e-9)   # chars/s: training's
                epoch = self.position["epoch"] + 1
                progress.show(done, f"step {trainer.steps} | epoch {epoch} "
                              f"{k + 1}/{len(batches)} | loss {mean:.3f} "
                              f"({mean / math.log(2):.2f} bits/char) | "
                              f"lr {trainer.last_lr:.2e} | "
                              f"{self.chars / training_s:,.0f} chars/s | "
                              f"{_clock(left)} left")
                if args.val_every and trainer.steps % args.val_every == 0:
                    best = self.validate()
                    progress.note(f"validation at step {trainer.steps}: "
                                  f"{self.val_history[-1][1]:.3f} bits/char"
                                  + (f" (the best so far: saved to {plan.best})" if best
                                     else ""), self.out)
                if args.every and trainer.steps % args.every == 0:
                    self.save()
                if done >= 1.0 or stop.asked:
                    break
            else:
                self.position = {"epoch": self.position["epoch"] + 1, "chunk": 0}
                continue
            break
        progress.done()
        return time.monotonic() - start


def cmd_train(args) -> int:
    return run_training(args)[0]


def run_training(args, out=None, err=None) -> tuple[int, dict | None]:
    """One `rnndsl train` with these parsed arguments, as a function: (its exit status,
    the summary that --json writes; None for --dry-run). Its lines go to `out` (default
    standard output) and its progress to `err` (default standard error), so that a sweep
    (rnndsl.cli.sweep) can run many of them, each a point, and keep each one's text."""
    cli_args.set_threads(args.threads)
    plan = _prepare(args)
    placement = _placement(args)
    # `--json -`: standard output holds the JSON alone, to be parsed; the report's lines
    # go to standard error with the progress
    out = out or (sys.stderr if args.json == "-" else sys.stdout)
    _describe(plan, args, out)
    if args.dry_run:
        print(_plan_text(plan, args), file=out)
        print("dry run: arguments, spec, corpus and checkpoint are fine; nothing was "
              "trained or written", file=out)
        return 0, None
    run = _Run(plan, args, out, err)
    trainer = run.trainer
    out.flush()
    _warm_up(run.cell, plan.x_name, len(plan.vocab), plan.dtype, out)
    with _StopAtStepEnd() as stop, _diverged(run.cell), _spread(run, placement, args):
        elapsed = run.train(stop)
    run.save()
    training_s = max(elapsed - run.val_seconds, 1e-9)
    summary = {"steps": run.steps_done, "total_steps": trainer.steps, "chars": run.chars,
               "seconds": round(elapsed, 3), "chars_per_second": run.chars / training_s,
               "validation_seconds": round(run.val_seconds, 3),
               "checkpoint": str(plan.checkpoint), "interrupted": stop.asked,
               "model": {"cell": plan.Cell.spec.name, "spec": str(args.spec),
                         "dims": plan.dims, "target": args.target, "dtype": plan.dtype.name},
               "corpus": plan.corpus.describe(),
               "lr_schedule": {**plan.schedule.to_dict(), "peak_lr": args.lr,
                               "last_lr": trainer.last_lr, "progress": trainer.progress}}
    print(f"trained {summary['steps']} steps ({run.chars:,} chars) in {_clock(elapsed)} "
          f"({summary['chars_per_second']:,.0f} chars/s); checkpoint: {plan.checkpoint}",
          file=out)
    if stop.asked:
        print(f"interrupted: the checkpoint holds step {trainer.steps}; resume with:\n  "
              f"{_resume_command(args, run.steps_done, elapsed)}", file=out)
        summary["validation_history"] = [list(v) for v in run.val_history]
        _write_json(args.json, summary)
        return EXIT_INTERRUPTED, summary
    if not run.val_history or run.val_history[-1][0] != trainer.steps:
        with _diverged(run.cell):
            run.validate()              # else it just ran, at this very step
    bpc, val_chars = run.meta["validation"]["bits_per_char"], _scored_chars(plan.val_ids, args)
    print(f"validation: {bpc:.3f} bits/char over {val_chars:,} chars", file=out)
    run.save()
    summary.update(validation_bits_per_char=bpc, validation_chars=val_chars,
                   validation_history=[list(v) for v in run.val_history],
                   best_checkpoint={"path": str(plan.best), **run.best} if run.best else None)
    if run.best:
        print(f"best: {run.best['bits_per_char']:.3f} bits/char at step "
              f"{run.best['step']}; checkpoint: {plan.best}", file=out)
    if args.plot:
        plot_losses(run.history, run.val_history, args.plot,
              f"{plan.Cell.spec.name} on {plan.corpus.name}")
        print(f"loss curve: {args.plot}", file=out)
    samples = []
    if args.sample_chars:
        prime = plan.vocab.decode(plan.prefix)
        lines = prime.count("\n") - 1
        if args.prime is None and lines > 0:
            print(f"\nthe samples continue {lines} whole line{'s' if lines != 1 else ''} "
                  f"from the validation text's start ({len(plan.prefix)} chars, held out "
                  "from training; not shown): --prime gives another start", file=out)
        for t in args.temperatures:
            text = _generate(run.cell, plan.vocab, plan.x_name, plan.y_name, plan.prefix,
                             args.sample_chars, t, args.seed)
            shown = args.prime or ""
            samples.append({"temperature": t, "text": shown + text, "prime": prime})
            print(f"\n--- sample at temperature {t} ---\n{shown}{text}", file=out)
    summary["samples"] = samples
    _write_json(args.json, summary)
    return 0, summary


def _placement(args):
    """--workers / --scheduler checked (None without them: Dask is never imported)."""
    if getattr(args, "workers", None) is None and getattr(args, "scheduler", None) is None:
        return None
    from ..distributed.data_parallel import plan
    return plan(args.workers, args.scheduler, args.threads, args.batch)


def _spread(run, placement, args):
    """The steps on a Dask cluster (rnndsl.distributed.data_parallel), or here."""
    if placement is None:
        return contextlib.nullcontext()
    from ..distributed.data_parallel import spread
    # the seconds of --minutes count from the training's start, as the budget does (not
    # from the cluster's, which takes seconds to start and warm up)
    return spread(run, placement, args.batch, lambda steps, saved_at: _resume_command(
        args, steps, None if saved_at is None else saved_at - run.train_started), run.out)


def _write_json(path: str | None, summary: dict) -> None:
    """The summary as JSON: to standard output for `-`; written through a link or into
    a device or pipe that exists (`--json /dev/stdout`: an atomic rename would replace
    the link itself); any other file atomically."""
    if not path:
        return
    text = json.dumps(summary, indent=2) + "\n"
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    where = Path(path)
    if where.is_symlink() or (where.exists() and not where.is_file()):
        with open(where, "w", encoding="utf-8") as f:
            f.write(text)
        return
    from ..core.files import write_atomically
    write_atomically(where, text.encode())


def _warm_up(cell, x_name: str, V: int, dtype, out) -> None:
    """Compile (or load from Numba's cache) the kernels before the clock starts: one
    kernel serves every T and B, so a one-step batch is enough. The forward that
    validation and sampling run (grad=False: its twin that writes no tapes) too, which
    otherwise compiled at the first validation, inside the budget (5 s of a 3-minute
    run for the main job's cell, on a cold cache); it compiles here while the backward
    compiles in a second process (rnndsl.build.compile_ahead), before it is waited for."""
    started = time.monotonic()
    # the interpreter compiles nothing: its warm-up is a check that one step runs
    doing = "running one step" if cell.target == "interp" else "compiling kernels"
    print(f"{doing} ...", end="", file=out, flush=True)
    from ..train.data import token_feed
    feed = token_feed(type(cell).spec, x_name, V, dtype)
    x = {x_name: feed(np.zeros((1, 1), np.int64))}
    run = cell.forward(x)
    cell.forward(x, grad=False)
    cell.backward(run)
    print(f" {time.monotonic() - started:.1f} s", file=out, flush=True)


def _validation_rows(val_ids, args) -> int:
    return max(1, min(args.batch, (len(val_ids) - 1) // args.seq))


def _scored_chars(val_ids, args) -> int:
    """How many characters a validation scores: its rows' whole length (tbptt_batches
    leaves the few after the last whole row unread), what "over N chars" counts."""
    rows = _validation_rows(val_ids, args)
    return rows * ((len(val_ids) - 1) // rows)


def _validate(trainer, vocab, val_ids, args, dtype) -> float:
    """Bits per character on the validation stream, state carried across chunks."""
    from ..train.data import tbptt_batches, token_feed
    feed = token_feed(type(trainer.cell).spec, trainer.input, len(vocab), dtype)
    rows = _validation_rows(val_ids, args)
    total = count = 0.0
    trainer.reset_state("eval")
    for x_ids, y_ids in tbptt_batches(val_ids, rows, args.seq):
        loss = trainer.evaluate(feed(x_ids), y_ids)
        total += loss * y_ids.size
        count += y_ids.size
    return total / count / math.log(2)


def _generate(cell, vocab, x_name, y_name, prefix, length: int, t: float, seed,
              strategy=None) -> str:
    from ..train.sample import Sampler, temperature
    sampler = Sampler(cell, input=x_name, output=y_name)
    ids = sampler.generate(length, strategy or temperature(t), prime=prefix, seed=seed)
    return vocab.decode(ids[0])


# ---------------------------------------------------------------------------- parsers
def add_parsers(sub) -> None:
    import argparse
    p = sub.add_parser(
        "train", help="train a token model (a character RNN) on a corpus",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train a cell with one token input x[V] and one logits output on text, "
                    "by truncated BPTT, with a progress bar; then report validation bits "
                    "per character and print samples. The learning rate warms up over "
                    "--warmup steps, then follows --lr-schedule (cosine decay by default); "
                    "every --val-every steps the model is validated and the best one so "
                    "far saved to --best. V is the vocabulary size; other "
                    f"dims default to {DEFAULT_DIM}. Every argument, the spec and the "
                    "corpus are checked before training starts. An existing checkpoint is "
                    "never overwritten unless you say --resume (continue it) or --force "
                    "(start afresh over it). Ctrl-C stops at the end of the step under "
                    "way, saves the checkpoint and prints the command that resumes it.",
        epilog="examples:\n"
               "  rnndsl train specs/char_lstm.rnn                 3 minutes on the stdlib\n"
               "  rnndsl train specs/char_lstm.rnn --dims H=256 --minutes 10 --plot loss.png\n"
               "  rnndsl train specs/char_lstm.rnn --corpus abc    folk tunes (music21)\n"
               "  rnndsl train specs/char_lstm.rnn --resume        continue a checkpoint\n"
               "  rnndsl train specs/char_lstm.rnn --dry-run       check, print the plan\n"
               "  rnndsl train specs/char_lstm.rnn --json run.json   a summary to parse\n"
               "  rnndsl train specs/char_lstm.rnn --val-every 500 --best best.npz\n"
               "  rnndsl train specs/char_lstm.rnn --lr-schedule step --decay-every 1000\n"
               "  rnndsl train specs/char_lstm.rnn --lr-schedule constant --warmup 0\n"
               "  rnndsl train specs/char_lstm.rnn --workers 2      data parallel, on Dask\n"
               "\nexit status: 0 trained, 2 bad input (nothing trained) or a lost worker "
               "(checkpoint kept), 130 interrupted (checkpoint saved)\n")
    add_train_arguments(p)
    # train's own, not in add_train_arguments: sweep's --workers places its points
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=cli_args.at_least(1), metavar="N",
                       help="train data-parallel on a Dask LocalCluster of N worker "
                            "processes started here, each step's rows split among them "
                            "(cores/N kernel threads each, or --threads); needs pip "
                            "install 'rnndsl[distributed]'")
    where.add_argument("--scheduler", metavar="ADDR",
                       help="train data-parallel on the Dask cluster whose scheduler is at "
                            "ADDR (tcp://HOST:PORT) instead")
    p.set_defaults(run=cmd_train)


__all__ = ["add_parsers", "add_train_arguments", "cmd_train", "run_training", "TrainError"]
