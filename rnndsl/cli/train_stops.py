"""How a training run stops and is continued: Ctrl-C at the end of the step under way
(or a sweep driver's request), the command that resumes a stopped run with what is left
of its budget, and the file a run's model goes to when another run took its checkpoint.
Kept apart from cli/train.py, which plans and runs the steps."""

from __future__ import annotations

import math
import shlex
import signal
from pathlib import Path


def _free_sibling(path: Path) -> Path:
    """`model.2.npz` beside `model.npz` (or .3, ...): the first name not taken."""
    k = 2
    while path.with_name(f"{path.stem}.{k}{path.suffix}").exists():
        k += 1
    return path.with_name(f"{path.stem}.{k}{path.suffix}")


def _resume_command(args, steps_done: int | None = None,
                    seconds_done: float | None = None) -> str:
    """The command that continues this run from its checkpoint. With `steps_done` and
    `seconds_done` (a run stopped by Ctrl-C), --steps and --minutes become what is
    left of them, since with --resume they count from the checkpoint on: the resumed
    run then ends where this one would have, its lr schedule exactly as this one's
    (`--steps 1500` again trained 1,500 more steps, the schedule stretched over them)."""
    argv = list(getattr(args, "argv", None) or [])
    if not argv:
        argv = ["train", str(args.spec), "--checkpoint", str(args.checkpoint)]
    argv = [a for a in argv if a not in ("--force", "--dry-run")]
    if steps_done is not None:
        left = {}
        if args.steps is not None:
            left["--steps"] = str(max(args.steps - steps_done, 1))
        if args.minutes is not None:
            minutes = max(args.minutes - (seconds_done or 0.0) / 60, 0.01)
            left["--minutes"] = f"{math.ceil(minutes * 100) / 100:g}"
        argv = _without_options(argv, left)
        for option, value in left.items():
            argv += [option, value]
    if "--resume" not in argv:
        argv.append("--resume")
    return shlex.join(["rnndsl", *argv])


def _without_options(argv: list[str], options) -> list[str]:
    """argv less each of `options` with its value (`--steps 5` or `--steps=5`)."""
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in options:
            skip = True
        elif not (a.startswith("--") and a.split("=", 1)[0] in options and "=" in a):
            kept.append(a)
    return kept


class _StopAtStepEnd:
    """Ctrl-C during training: finish the step under way, then stop and save (a second
    Ctrl-C stops at once). Only the main thread can set signal handlers: on a cluster's
    worker thread (a sweep's point) the driver asks through a Dask Event instead
    (rnndsl.distributed.tasks.stop_requested); elsewhere off the main thread Ctrl-C
    behaves as usual."""

    def __init__(self):
        self._asked = False
        self._remote = None
        self.previous = None

    @property
    def asked(self) -> bool:
        return self._asked or (self._remote is not None and self._remote())

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:            # not the main thread
            self.previous = None
            from ..distributed.tasks import stop_requested
            self._remote = stop_requested()
        return self

    def _handle(self, signum, frame):
        if self._asked:
            raise KeyboardInterrupt
        self._asked = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        if self._remote is not None:
            self._remote.close()
        return False
