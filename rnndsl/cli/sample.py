"""`rnndsl sample` and `rnndsl info`: what the checkpoints of `rnndsl train` hold.

sample: checkpoint -> text, by any strategy of rnndsl.train.sample, from any folder: the
checkpoint carries its spec (and `--spec` may name another file of the same model).
info: the model, its training and validation, and the spec text a checkpoint carries.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from . import args as cli_args
from .train import TrainError, _encode_prime
from .train_checks import checkpoint_vocab
from ..core.errors import BindError


# ---------------------------------------------------------------------------- sample
def _trained_checkpoint(path: str):
    """peek(path), refused unless `rnndsl train` wrote it."""
    from ..train import checkpoint as ckpt
    info = ckpt.peek(path)
    user = info.meta.get("user", {}) if isinstance(info.meta, dict) else {}
    if not isinstance(user, dict) or "vocab" not in user:
        raise TrainError(f"{path} has no vocabulary: it was not written by rnndsl train "
                         "(rnndsl info shows what it holds)")
    return info, user


def cmd_sample(args) -> int:
    from ..train import checkpoint as ckpt
    from ..train.sample import Sampler, Sampling, greedy
    cli_args.set_threads(args.threads)
    sampling = args.top_k or args.top_p or args.temperature is not None
    if args.beam is not None and (args.greedy or sampling):
        raise cli_args.UsageError("--beam searches for the likeliest continuations; it "
                                  "does not combine with --greedy, --temperature, --top-k "
                                  "or --top-p")
    if args.beam is not None and args.n > args.beam:
        raise cli_args.UsageError(f"-n {args.n} is more than --beam {args.beam}: a beam "
                                  f"search keeps {args.beam} continuations; give -n up to "
                                  f"{args.beam}, or a wider --beam")
    if args.greedy and sampling:
        raise cli_args.UsageError("--greedy takes the likeliest token; it does not combine "
                                  "with --temperature, --top-k or --top-p")
    info, user = _trained_checkpoint(args.checkpoint)
    vocab = checkpoint_vocab(user, args.checkpoint)
    shown = args.prime or ""                # printed before each sample
    if args.prime is None and _held_out_lines(user, vocab):
        prefix = vocab.encode(user["held_out_prime"])
        lines = user["held_out_prime"].count("\n") - 1
        print(f"rnndsl sample: continuing {lines} whole line{'s' if lines != 1 else ''} of "
              f"held-out text that {args.checkpoint} carries ({len(prefix)} chars, not "
              "shown); --prime gives another start, --prime '' a line break and a fresh "
              "state", file=sys.stderr)
    else:
        prefix = _encode_prime(vocab, shown, f"{args.checkpoint}'s model")
    if args.top_k is not None and args.top_k > len(vocab):
        raise cli_args.UsageError(f"--top-k {args.top_k}: the model has only {len(vocab)} "
                                  "symbols")
    Cell = ckpt.cell_class(info, target=args.target, spec_path=args.spec)
    try:
        cell = Cell(dtype=np.dtype(info.dtype), seed=0, **info.dims)
    except BindError as exc:
        if args.spec is None or Cell.spec.name == info.cell:
            raise
        dims = ", ".join(f"{k}={v}" for k, v in info.dims.items())
        raise BindError(f"--spec {args.spec} gives cell {Cell.spec.name}, which is not the "
                        f"checkpoint's {info.cell} ({dims}): {exc}; give the spec it was "
                        "trained with, or leave --spec out (the checkpoint carries its "
                        "spec)") from None
    ckpt.load(args.checkpoint, cell)
    sampler = Sampler(cell, input=user.get("x"), output=user.get("y"))
    if args.beam is not None:
        for h in sampler.beam_search(args.beam, args.length, prime=prefix)[:args.n]:
            print(f"[log-prob {h.logprob:.2f}] {shown}{vocab.decode(h.ids)}")
        return 0
    strategy = greedy() if args.greedy else Sampling(
        1.0 if args.temperature is None else args.temperature, args.top_k, args.top_p)
    ids = sampler.generate(args.length, strategy, prime=np.tile(prefix, (args.n, 1)),
                           seed=args.seed)
    for k, row in enumerate(ids):
        if k:
            print("---")                  # between samples, not after the last
        print(shown + vocab.decode(row))
    return 0


def _held_out_lines(user: dict, vocab) -> bool:
    """Whether the checkpoint carries whole lines of held-out text to start from (rnndsl
    train writes them since the fourteenth session; older checkpoints start cold), all
    of them symbols of the model."""
    text = user.get("held_out_prime")
    return isinstance(text, str) and text.count("\n") > 1 and all(ch in vocab for ch in text)


# ---------------------------------------------------------------------------- info
def _number(value, spec: str) -> str:
    """A number of a checkpoint's meta as `spec` formats it; anything else as it is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format(value, spec)
    return "?" if value is None else repr(value)


def cmd_info(args) -> int:
    from ..train import checkpoint as ckpt
    info = ckpt.peek(args.checkpoint)
    meta = info.meta if isinstance(info.meta, dict) else {}
    user = meta.get("user", {}) if isinstance(meta.get("user"), dict) else {}
    trainer = meta.get("trainer", {}) if isinstance(meta.get("trainer"), dict) else {}
    spec = info.spec or {}
    n_params = sum(int(np.prod(s)) for s in info.params.values())
    report = {
        "checkpoint": str(args.checkpoint), "cell": info.cell,
        "spec": spec.get("path", user.get("spec")), "dims": info.dims, "dtype": info.dtype,
        "params": n_params, "optimizer": info.optimizer, "steps": trainer.get("steps"),
        "corpus": user.get("corpus"), "validation": user.get("validation"),
        "rnndsl_version": info.rnndsl_version, "spec_text": spec.get("text"),
        "used_files": sorted(spec.get("files", {}) or {}),
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    dims = ", ".join(f"{k}={v}" for k, v in info.dims.items())
    print(f"checkpoint: {args.checkpoint} (written by rnndsl {info.rnndsl_version})")
    print(f"model: {info.cell}({dims}), {info.dtype}, {n_params:,} params"
          + (f", optimiser {info.optimizer}" if info.optimizer else ""))
    if report["steps"] is not None:
        print(f"trained: {report['steps']} steps"
              + (f" on {report['corpus']}" if report["corpus"] else ""))
    val = report["validation"]
    if isinstance(val, dict):        # (a hand-edited header may hold anything here)
        bits, chars = val.get("bits_per_char"), val.get("chars")
        print(f"validation: {_number(bits, '.3f')} bits/char over {_number(chars, ',')} "
              f"chars (at step {val.get('step', '?')})")
    if "vocab" in user:
        vocab = checkpoint_vocab(user, args.checkpoint)
        print(f"vocabulary: {len(vocab)} symbol{'' if len(vocab) == 1 else 's'}")
        if _held_out_lines(user, vocab):
            text = user["held_out_prime"]
            print(f"samples start from: {text.count(chr(10)) - 1} whole lines of held-out "
                  f"text ({len(text)} chars; rnndsl sample without --prime)")
    if spec.get("text") is not None:
        used = report["used_files"]
        print(f"spec: {spec.get('path')} (carried in the checkpoint"
              + (f", with {', '.join(used)}" if used else "") + ")")
        for line in spec["text"].rstrip("\n").splitlines():
            print(f"  | {line}")
    else:
        print(f"spec: {report['spec'] or 'unknown'} (not carried: the checkpoint predates "
              "carried specs)")
    return 0


# ---------------------------------------------------------------------------- parsers
def add_parsers(sub) -> None:
    positive, nonneg = cli_args.at_least(1), cli_args.at_least(0)
    p = sub.add_parser(
        "sample", help="generate text from a trained checkpoint",
        description="Load a checkpoint written by rnndsl train and generate text. The "
                    "checkpoint carries its spec, so this works from any folder, after the "
                    "spec moved or was deleted; --spec uses another file instead (it must "
                    "describe the same model). The prefix runs once; each new token "
                    "advances the carried state by one step.")
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("--spec", help="a spec file to use instead of the one the checkpoint "
                   "carries (same model, comments and layout aside)")
    p.add_argument("--prime", help="text to start from (characters the model knows); "
                   "printed before the sample. Without it a sample continues the whole lines "
                   "of held-out validation text (up to 400 chars) that rnndsl train stored "
                   "in the checkpoint, as its closing samples do, and they are not printed: "
                   "a model trained with its state carried starts badly from nothing (at "
                   "low temperatures it may fall into a run of spaces). --prime '' starts "
                   "from a line break and a fresh state, as checkpoints without held-out "
                   "lines do")
    p.add_argument("--length", type=positive, default=500,
                   help="tokens to generate (default 500)")
    p.add_argument("-n", type=positive, default=1, help="how many samples (default 1)")
    p.add_argument("--temperature", type=cli_args.above(0),
                   help="above 0 (default 1.0; --greedy for the likeliest token)")
    p.add_argument("--top-k", type=positive, help="sample among the k likeliest tokens")
    p.add_argument("--top-p", type=cli_args.probability, help="nucleus sampling: the "
                   "likeliest tokens holding probability p, in (0, 1]")
    p.add_argument("--greedy", action="store_true", help="always the likeliest token")
    p.add_argument("--beam", type=positive, metavar="WIDTH",
                   help="beam search: the most likely continuations (WIDTH at least 1)")
    p.add_argument("--seed", type=nonneg, default=0)
    p.add_argument("--target", choices=("cpu", "interp"), default="cpu")
    p.add_argument("--threads", type=positive, metavar="N",
                   help="threads the kernels may use (sets RNNDSL_BLAS_THREADS)")
    p.set_defaults(run=cmd_sample)

    p = sub.add_parser(
        "info", help="show what a checkpoint holds",
        description="Print a checkpoint's model (cell, dims, dtype, params), how far it "
                    "was trained and on what, its validation bits/char, and the spec text "
                    "it carries.")
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("--json", action="store_true", help="print it as JSON")
    p.set_defaults(run=cmd_info)



__all__ = ["add_parsers", "cmd_sample", "cmd_info"]
