"""What `rnndsl train` checks before it trains, beside its arguments' ranges (cli/args.py):
the learning-rate schedule its options make, that no file it writes is one it reads or
another it writes (or a checkpoint that --json or --plot would replace), and which of a
resumed run's settings come from the checkpoint. Kept apart from cli/train.py, which runs
the training."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import args as cli_args
from .train_options import DEFAULT_DECAY_GAMMA, DEFAULT_LR_FLOOR
from ..core.errors import RnnError


class TrainError(RnnError):
    """Arguments or files that `train`/`sample` cannot use."""


def checkpoint_vocab(user: dict, checkpoint):
    """The vocabulary a checkpoint's trainer recorded; a hand-edited or damaged one is
    the checkpoint's fault, said so (not a TypeError deep inside Vocab)."""
    from ..train.data import DataError, Vocab
    try:
        return Vocab.from_json(user["vocab"])
    except DataError as exc:
        raise TrainError(f"{checkpoint} is corrupt: its vocabulary cannot be read "
                         f"({exc})") from None


def _schedule(args):
    """--lr-schedule with its settings, each refused where the schedule has no use for it."""
    from ..train.schedule import Constant, Cosine, StepDecay
    for dest, option, kind in (("lr_floor", "--lr-floor", "cosine"),
                               ("decay_every", "--decay-every", "step"),
                               ("decay_gamma", "--decay-gamma", "step")):
        if getattr(args, dest) is not None and args.lr_schedule != kind:
            raise cli_args.UsageError(f"{option} is a setting of --lr-schedule {kind}; "
                                      f"--lr-schedule {args.lr_schedule} has no use for it")
    if args.lr_schedule == "cosine":
        floor = DEFAULT_LR_FLOOR if args.lr_floor is None else args.lr_floor
        return Cosine(warmup=args.warmup, floor=floor)
    if args.lr_schedule == "step":
        if args.decay_every is None:
            raise cli_args.UsageError("--lr-schedule step needs --decay-every N: the lr is "
                                      "multiplied by --decay-gamma (default "
                                      f"{DEFAULT_DECAY_GAMMA:g}) every N steps")
        gamma = DEFAULT_DECAY_GAMMA if args.decay_gamma is None else args.decay_gamma
        return StepDecay(warmup=args.warmup, every=args.decay_every, gamma=gamma)
    return Constant(warmup=args.warmup)


def default_best(checkpoint: Path) -> Path:
    """Where the checkpoint that validated best goes without --best: model.best.npz
    beside model.npz."""
    return checkpoint.with_name(f"{checkpoint.stem}.best{checkpoint.suffix or '.npz'}")


def _outputs_apart_from_inputs(args, outputs, Cell=None) -> None:
    """No file train writes may be the spec, a file the spec uses, or the corpus it
    reads: --force would overwrite them with a checkpoint (or a JSON, or a PNG). No two
    may be one file (`--json model.npz` replaced the checkpoint just written), and
    --json and --plot, which replace their file without --force, may not name a
    checkpoint (any .npz archive: another run's, say)."""
    inputs = [("the spec", args.spec), ("the corpus", args.corpus)]
    # the interp's classes hold them as spec_files, a compiled one's module as SPEC_FILES
    # (which the default target's check missed): the record a checkpoint carries has both
    from ..train.checkpoint import spec_record
    files = spec_record(Cell)["files"] if Cell is not None else {}
    inputs += [("a file the spec uses", path) for path in files
               if Path(path).resolve() != Path(args.spec).resolve()]
    read = {Path(path).resolve(): what for what, path in inputs
            if path and Path(path).is_file()}
    if args.checkpoint and not args.best:
        outputs = (*outputs, ("the best checkpoint (from --checkpoint)",
                              str(default_best(Path(args.checkpoint)))))
    written: dict[Path, str] = {}
    for option, value in outputs:
        if not value or value == "-":                  # --json -: standard output
            continue
        where = Path(value).resolve()
        if where in read:
            raise cli_args.UsageError(f"{option} {value} is {read[where]} that train "
                                      "reads; name another file")
        if where in written:
            raise cli_args.UsageError(f"{option} {value} is the {written[where]} itself; "
                                      "name another file")
        written[where] = option
        if option in ("--json", "--plot") and Path(value).is_file() and _is_zip(value):
            raise cli_args.UsageError(
                f"{option} {value} is a checkpoint (an .npz archive), which train would "
                f"replace with its {'JSON summary' if option == '--json' else 'loss curve'}: "
                "name another file")


def _is_zip(path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


# what a resumed run keeps of the first one's settings: --val (the held-out text), and
# --batch and --seq (the rows the corpus is cut into, so its place in the corpus and the
# state it carries, one row a sequence)
_KEPT_SETTINGS = (("val", "--val", float, "would validate on text it trained on"),
                  ("batch", "--batch", int, "would cut the corpus into other rows, losing "
                   "its place in it and the state it carries"),
                  ("seq", "--seq", int, "would cut the corpus into other chunks, losing its "
                   "place in it"))


# what a resumed run takes from the first one where it is not given again (and is free
# to change where it is: a lower --lr to fine-tune, say)
_CONTINUED_SETTINGS = (("lr", "--lr", float), ("clip", "--clip", float),
                       ("state_resets", "--state-resets", float))
_SCHEDULE_OPTIONS = ("--lr-schedule", "--warmup", "--lr-floor", "--decay-every",
                     "--decay-gamma")


def option_given(args, option: str) -> bool:
    """Whether the command line named `option` (`--dtype float32` or `--dtype=...`), as
    against its default standing."""
    return any(a == option or a.startswith(option + "=")
               for a in getattr(args, "argv", None) or [])


def resumed_dtype(args, dtype_of_checkpoint: str, checkpoint) -> np.dtype:
    """A resumed run's dtype: the checkpoint's, where --dtype is left out (a float64
    model was continued, and saved, in float32, the option's default); another one
    given is refused, as other --dims are."""
    ours = np.dtype(dtype_of_checkpoint)
    if not option_given(args, "--dtype"):
        args.dtype = ours.name
        return ours
    if np.dtype(args.dtype) != ours:
        raise TrainError(f"--resume continues {checkpoint}, a {ours.name} model, but --dtype "
                         f"asks for {args.dtype}: leave --dtype out to resume, or train "
                         "afresh with --force")
    return ours


def _same_settings(args, user: dict, checkpoint: Path):
    """A resumed run continues with the first one's --val, --batch and --seq: where one
    of them is left out it is the checkpoint's, and where another value is given it is
    refused. Its --optimizer likewise (the optimiser's state is one kind's). Its --lr,
    --clip, --state-resets and lr schedule are the first run's unless given again.
    Checkpoints from before a setting was kept take whatever is given. Returns the
    first run's lr schedule where it continues, else None."""
    kept_settings = user.get("settings", {})
    def given(option: str) -> bool:
        return option_given(args, option)
    for key, option, kind, why in _KEPT_SETTINGS:
        kept = kept_settings.get(key)
        if not isinstance(kept, (int, float)) or isinstance(kept, bool) or \
                kept == getattr(args, key):
            continue
        if given(option):
            raise TrainError(f"--resume continues {checkpoint}, which was trained with "
                             f"{option} {kept:g}; {option} {getattr(args, key):g} {why}: "
                             f"leave {option} out to resume, or train afresh with --force")
        setattr(args, key, kind(kept))
    optimizer = kept_settings.get("optimizer")
    if isinstance(optimizer, str) and optimizer != args.optimizer:
        if given("--optimizer"):
            raise TrainError(f"--resume continues {checkpoint}, which was trained with "
                             f"--optimizer {optimizer}, and carries that optimiser's state; "
                             f"--optimizer {args.optimizer} cannot continue it: leave "
                             "--optimizer out to resume, or train afresh with --force")
        args.optimizer = optimizer
    for key, option, kind in _CONTINUED_SETTINGS:
        kept = kept_settings.get(key)
        if isinstance(kept, (int, float)) and not isinstance(kept, bool) and \
                not given(option):
            setattr(args, key, kind(kept))
    record = kept_settings.get("lr_schedule")
    if record is None or any(given(option) for option in _SCHEDULE_OPTIONS):
        return None
    from ..train.schedule import from_dict
    try:
        return from_dict(record)
    except (ValueError, TypeError) as exc:
        raise TrainError(f"{checkpoint}'s lr schedule is damaged ({exc}); give "
                         "--lr-schedule to resume with another") from None
