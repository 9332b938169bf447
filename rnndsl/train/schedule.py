"""Learning-rate schedules: how the optimiser's learning rate moves over a run.

    schedule = Cosine(warmup=100, floor=0.1, total_steps=5_000)
    trainer = Trainer(cell, optimizer=Adam(lr=5e-3), lr_schedule=schedule)
    # before each update: optimizer.hyper["lr"] = 5e-3 * schedule(step, trainer.progress)

A schedule is a frozen record of settings and one call, `schedule(step, progress)`, that
gives the factor in (0, 1] by which the peak learning rate (the optimiser's lr when the
Trainer is made) is scaled for the next update. It holds no state: where a run is in its
schedule is `step` and `progress`, which a trainer saves in its checkpoints, so a resumed
run takes the updates an uninterrupted one would.

    step      the updates already made under the schedule (0 before the first)
    progress  how far the run is, in [0, 1], when its length is known only as a
              fraction (a time budget: the share of its minutes used); None where the
              schedule's total_steps says it: progress = min(1, step / total_steps)

Every schedule starts with the same linear warm-up over `warmup` steps (0: none),

    ramp(s) = min(1, (s + 1) / warmup)

so the first update takes 1/warmup of the peak and update `warmup` the whole of it;
`to_dict` and `from_dict` carry the settings through a checkpoint's JSON.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

from ..core.numbers import is_whole

__all__ = ["Schedule", "Constant", "Cosine", "StepDecay", "SCHEDULES", "from_dict"]


def _check_int(name: str, value, low: int) -> None:
    """An int of at least `low` (a NumPy integer too; not a bool)."""
    if not is_whole(value, low):
        raise ValueError(f"{name} must be an integer of at least {low}, got {value!r}")


def _check_fraction(name: str, value, low_open: bool) -> None:
    number = isinstance(value, (int, float, np.integer, np.floating)) and \
        not isinstance(value, (bool, np.bool_))
    if not number or not (0 < value <= 1 if low_open else 0 <= value <= 1):
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise ValueError(f"{name} must be a number in {interval}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """The warm-up every schedule shares; a subclass gives `decay(step, progress)`, the
    factor after it (1 at the end of the warm-up), and its NAME in SCHEDULES."""

    NAME = ""
    warmup: int = 0

    def __post_init__(self) -> None:
        for f in fields(self):       # NumPy numbers as Python's (a checkpoint's JSON)
            value = getattr(self, f.name)
            if isinstance(value, (np.integer, np.floating)):
                object.__setattr__(self, f.name, value.item())
        _check_int("warmup", self.warmup, 0)

    def __call__(self, step: int, progress: float | None = None) -> float:
        """The factor of the peak learning rate for update `step` (0-based) at `progress`."""
        _check_int("step", step, 0)
        if progress is not None:
            number = isinstance(progress, (int, float, np.floating, np.integer)) and \
                not isinstance(progress, (bool, np.bool_))
            if not number or not 0 <= progress <= 1:
                raise ValueError(f"progress must be a number in [0, 1] or None, got "
                                 f"{progress!r}")
        ramp = min(1.0, (step + 1) / self.warmup) if self.warmup else 1.0
        return ramp * self.decay(step, progress)

    def decay(self, step: int, progress: float | None) -> float:
        return 1.0

    def describe(self) -> str:
        """A few words for a plan line: 'cosine to 0.1 x lr after a 50-step warm-up'."""
        return self._words() + (f" after a {self.warmup}-step warm-up" if self.warmup else "")

    def _words(self) -> str:
        return self.NAME

    def to_dict(self) -> dict:
        """{"kind": NAME, and each setting}: JSON, and `from_dict`'s input."""
        return {"kind": self.NAME, **asdict(self)}


@dataclass(frozen=True, kw_only=True)
class Constant(Schedule):
    """The peak learning rate after the warm-up:

        f(s) = ramp(s)
    """

    NAME = "constant"


@dataclass(frozen=True, kw_only=True)
class Cosine(Schedule):
    """Warm-up, then half a cosine from the peak down to `floor` x the peak at the end
    of the run (SGDR's annealing, Loshchilov and Hutter 2017, without restarts):

        f(s, p) = ramp(s)                                         for s < warmup
        f(s, p) = floor + (1 - floor) * (1 + cos(pi * q)) / 2     after,
            q = (p - w) / (1 - w),  w = warmup * p / s

    p is the run's progress (given, or s / total_steps) and w the share of the run the
    warm-up took: exact for a known length (p = s / N gives q = (s - warmup) /
    (N - warmup), the decay over the steps that remain), the pace so far under a time
    budget. So f = 1 when the warm-up ends, (1 + floor) / 2 halfway through the rest, and
    `floor` at p = 1 (and after it).
    """

    NAME = "cosine"
    floor: float = 0.1
    total_steps: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_fraction("floor", self.floor, low_open=False)
        if self.total_steps is not None:
            _check_int("total_steps", self.total_steps, 1)
            if self.warmup >= self.total_steps:
                raise ValueError(f"warmup ({self.warmup} steps) must be shorter than "
                                 f"total_steps ({self.total_steps}): the cosine would "
                                 "have no steps left to decay over")

    def decay(self, step: int, progress: float | None) -> float:
        if progress is None:
            if self.total_steps is None:
                raise ValueError("a cosine schedule decays over the run's length: give it "
                                 "total_steps=, or set the trainer's progress (0 to 1) "
                                 "before each step")
            progress = min(1.0, step / self.total_steps)
        if step < self.warmup:
            return 1.0
        w = self.warmup * progress / step if step else 0.0
        q = 1.0 if w >= 1 else min(1.0, max(0.0, (progress - w) / (1 - w)))
        return self.floor + (1 - self.floor) * (1 + math.cos(math.pi * q)) / 2

    def _words(self) -> str:
        return f"cosine to {self.floor:g} x lr"


@dataclass(frozen=True, kw_only=True)
class StepDecay(Schedule):
    """Warm-up, and the learning rate multiplied by `gamma` every `every` steps (counted
    from the first; PyTorch's StepLR):

        f(s) = ramp(s) * gamma ** floor(s / every)
    """

    NAME = "step"
    every: int
    gamma: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_int("every", self.every, 1)
        _check_fraction("gamma", self.gamma, low_open=True)

    def decay(self, step: int, progress: float | None) -> float:
        return self.gamma ** (step // self.every)

    def _words(self) -> str:
        return f"x {self.gamma:g} every {self.every} steps"


SCHEDULES: dict[str, type[Schedule]] = {s.NAME: s for s in (Constant, Cosine, StepDecay)}


def from_dict(record: dict) -> Schedule:
    """The schedule `to_dict` described; a ValueError naming what is wrong otherwise."""
    if not isinstance(record, dict) or record.get("kind") not in SCHEDULES:
        kind = record.get("kind") if isinstance(record, dict) else record
        raise ValueError(f"unknown schedule {kind!r}; schedules are: {', '.join(SCHEDULES)}")
    cls = SCHEDULES[record["kind"]]
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(record) - names - {"kind"})
    if unknown:
        raise ValueError(f"a {cls.NAME} schedule has no setting {', '.join(unknown)}; its "
                         f"settings are: {', '.join(sorted(names))}")
    return cls(**{k: v for k, v in record.items() if k != "kind"})
