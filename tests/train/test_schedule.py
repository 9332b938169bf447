"""Learning-rate schedules: each formula at the points that pin it (warm-up start and end,
the cosine's midpoint and floor, step decay's boundaries), the cosine by steps and by
progress agreeing, bad settings refused by name, and a Trainer that applies a schedule
and resumes it exactly from a checkpoint.

The expected values are written out by hand or from the textbook formula in float64
(`cosine_by_hand`), not from the module's code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import rnndsl
from rnndsl.train.optim import SGD, Adam
from rnndsl.train.schedule import SCHEDULES, Constant, Cosine, StepDecay, from_dict
from rnndsl.train.trainer import Trainer

from tiny_cells import TINY  # noqa: E402  (tests/ is on sys.path)
V = 3


def cosine_by_hand(s: int, warmup: int, total: int, floor: float) -> float:
    """Linear warm-up, then half a cosine over the steps that remain (e.g. Hugging Face's
    get_cosine_schedule_with_warmup, with a floor)."""
    if s < warmup:
        return (s + 1) / warmup
    q = min(1.0, (s - warmup) / (total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * q))


# ------------------------------------------------------------------ the formulas
def test_constant_is_one_after_a_linear_warm_up():
    assert [Constant()(s) for s in (0, 1, 1000)] == [1.0, 1.0, 1.0]
    ramp = Constant(warmup=4)
    assert [ramp(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_cosine_by_steps_at_the_points_that_pin_it():
    c = Cosine(warmup=10, floor=0.1, total_steps=110)
    assert c(0) == pytest.approx(0.1)          # warm-up start: 1/warmup of the peak
    assert c(9) == 1.0 and c(10) == 1.0        # warm-up end: the peak, and the cosine's start
    assert c(60) == pytest.approx(0.55)        # halfway through the rest: (1 + floor) / 2
    assert c(110) == pytest.approx(0.1)        # the floor at the end ...
    assert c(500) == pytest.approx(0.1)        # ... and after it
    for s in range(0, 111, 7):
        assert c(s) == pytest.approx(cosine_by_hand(s, 10, 110, 0.1), abs=1e-12)
    values = [c(s) for s in range(10, 111)]
    assert all(a > b for a, b in zip(values, values[1:]))        # strictly down
    assert Cosine(floor=0.0, total_steps=4)(4) == pytest.approx(0.0, abs=1e-15)


def test_cosine_by_progress_for_a_time_budget():
    c = Cosine(floor=0.2)
    assert c(0, 0.0) == 1.0
    assert c(37, 0.5) == pytest.approx(0.6)
    assert c(80, 1.0) == pytest.approx(0.2)
    assert c(10, 0.25) == pytest.approx(0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi / 4)))


def test_cosine_by_progress_equals_cosine_by_steps_at_a_steady_pace():
    """Progress s / N (a time budget at a steady pace of N steps) gives the same lrs as
    total_steps=N: the warm-up's share is estimated from the pace, exactly here."""
    by_steps = Cosine(warmup=8, floor=0.1, total_steps=40)
    by_time = Cosine(warmup=8, floor=0.1)
    for s in range(41):
        assert by_time(s, s / 40) == pytest.approx(by_steps(s), abs=1e-12)


def test_cosine_needs_to_know_the_run_s_length():
    with pytest.raises(ValueError, match="give it total_steps=, or set the trainer's progress"):
        Cosine(warmup=5)(3)


def test_step_decay_multiplies_by_gamma_at_each_boundary():
    s = StepDecay(every=3, gamma=0.5)
    assert [s(k) for k in range(8)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]
    warm = StepDecay(every=4, gamma=0.1, warmup=2)
    assert warm(0) == 0.5 and warm(1) == 1.0 and warm(3) == 1.0
    assert warm(4) == pytest.approx(0.1) and warm(8) == pytest.approx(0.01)


@pytest.mark.parametrize("make, message", [
    (lambda: Constant(warmup=-1), "warmup must be an integer of at least 0, got -1"),
    (lambda: Constant(warmup=2.5), "warmup must be an integer"),
    (lambda: Constant(warmup=True), "warmup must be an integer"),
    (lambda: Cosine(floor=1.5), r"floor must be a number in \[0, 1\], got 1.5"),
    (lambda: Cosine(floor=-0.1), r"floor must be a number in \[0, 1\]"),
    (lambda: Cosine(total_steps=0), "total_steps must be an integer of at least 1"),
    (lambda: Cosine(warmup=10, total_steps=10), r"warmup \(10 steps\) must be shorter than "
                                                r"total_steps \(10\)"),
    (lambda: StepDecay(every=0), "every must be an integer of at least 1, got 0"),
    (lambda: StepDecay(every=5, gamma=0), r"gamma must be a number in \(0, 1\], got 0"),
    (lambda: StepDecay(every=5, gamma=2.0), r"gamma must be a number in \(0, 1\]"),
    (lambda: Constant()(-1), "step must be an integer of at least 0, got -1"),
    (lambda: Constant()(3, 1.5), r"progress must be a number in \[0, 1\] or None, got 1.5"),
    (lambda: Constant()(3, float("nan")), r"progress must be a number in \[0, 1\]"),
])
def test_bad_settings_are_refused_by_name(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_settings_round_trip_through_a_dict():
    for schedule in (Constant(warmup=3), Cosine(warmup=2, floor=0.05, total_steps=9),
                     StepDecay(every=7, gamma=0.3)):
        record = schedule.to_dict()
        assert record["kind"] in SCHEDULES and from_dict(record) == schedule
    with pytest.raises(ValueError, match="unknown schedule 'linear'; schedules are: constant"):
        from_dict({"kind": "linear"})
    with pytest.raises(ValueError, match="a cosine schedule has no setting gamma"):
        from_dict({"kind": "cosine", "gamma": 0.5})


def test_describe_says_what_a_plan_line_needs():
    assert Cosine(warmup=50).describe() == "cosine to 0.1 x lr after a 50-step warm-up"
    assert StepDecay(every=100, gamma=0.5).describe() == "x 0.5 every 100 steps"
    assert Constant().describe() == "constant"


# ------------------------------------------------------------------ in a Trainer
def chunks(count: int, T: int = 4, B: int = 3):
    rng = np.random.default_rng(5)
    seq = rng.integers(0, V, size=(count * T + 1, B))
    return [(np.eye(V)[seq[k * T + 1:(k + 1) * T + 1]], seq[k * T:(k + 1) * T])
            for k in range(count)]


@pytest.fixture(scope="module")
def Tiny():
    return rnndsl.load_text(TINY, target="interp")


class RecordingSGD(SGD):
    """SGD that notes the lr each of its updates reads."""

    def step(self, params, grads):
        self.seen = getattr(self, "seen", []) + [self.hyper["lr"]]
        super().step(params, grads)


def test_the_trainer_sets_each_update_s_lr_from_the_schedule(Tiny):
    cell = Tiny(I=V, H=4, V=V, dtype=np.float64, seed=0)
    optimizer = RecordingSGD(lr=0.1)
    trainer = Trainer(cell, optimizer=optimizer,
                      lr_schedule=StepDecay(every=2, gamma=0.5, warmup=2))
    for x, y in chunks(5):
        trainer.step(x, y)
    assert optimizer.seen == pytest.approx([0.05, 0.1, 0.05, 0.05, 0.025], rel=1e-12)
    assert trainer.last_lr == optimizer.seen[-1] and trainer.peak_lr == 0.1
    plain = RecordingSGD(lr=0.1)
    Trainer(Tiny(I=V, H=4, V=V, dtype=np.float64, seed=0), optimizer=plain).step(*chunks(1)[0])
    assert plain.seen == [0.1]                    # no schedule: the optimiser's own lr


def test_a_resumed_trainer_continues_the_schedule_exactly(Tiny, tmp_path):
    data = chunks(6)

    def fresh(seed=0):
        cell = Tiny(I=V, H=4, V=V, dtype=np.float64, seed=seed)
        return Trainer(cell, optimizer=Adam(lr=0.05), clip_norm=1.0,
                       lr_schedule=Cosine(warmup=2, floor=0.1))

    straight, lrs = fresh(), []
    for k, (x, y) in enumerate(data):
        straight.progress = k / 6
        straight.step(x, y)
        lrs.append(straight.last_lr)
    first = fresh()
    for k, (x, y) in enumerate(data[:3]):
        first.progress = k / 6
        first.step(x, y)
    first.progress = 3 / 6
    first.save(tmp_path / "ck.npz")
    second = fresh(seed=9)
    second.load(tmp_path / "ck.npz")
    assert second.progress == 0.5 and second.schedule_start == 0 and second.steps == 3
    resumed = []
    for k, (x, y) in enumerate(data[3:], start=3):
        second.step(x, y)
        resumed.append(second.last_lr)
        second.progress = (k + 1) / 6
    assert resumed == lrs[3:]
    np.testing.assert_array_equal(second.cell.params["W"], straight.cell.params["W"])
    assert lrs[0] == pytest.approx(0.025) and lrs[2] == pytest.approx(0.05)


def test_restart_starts_the_warm_up_again(Tiny):
    cell = Tiny(I=V, H=4, V=V, dtype=np.float64, seed=0)
    trainer = Trainer(cell, optimizer=Adam(lr=0.01),
                      lr_schedule=Cosine(warmup=4, total_steps=8))
    for x, y in chunks(8):
        trainer.step(x, y)
    assert trainer.last_lr == pytest.approx(0.01 * cosine_by_hand(7, 4, 8, 0.1))
    trainer.restart_schedule()
    trainer.step(*chunks(1)[0])
    assert trainer.schedule_start == 8 and trainer.last_lr == pytest.approx(0.0025)


def test_the_trainer_refuses_what_is_not_a_schedule(Tiny):
    cell = Tiny(I=V, H=4, V=V, dtype=np.float64, seed=0)
    with pytest.raises(ValueError, match="lr_schedule must be an rnndsl.train.schedule"):
        Trainer(cell, lr_schedule=lambda step: 0.1)
    trainer = Trainer(cell, lr_schedule=Cosine(warmup=1))
    with pytest.raises(ValueError, match="set the trainer's progress"):
        trainer.step(*chunks(1)[0])
    assert trainer.steps == 0                     # refused before any work
