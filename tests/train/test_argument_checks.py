"""What a user types into the Python API, checked: each mistake an outside sweep found
giving a raw NumPy or Python error (or accepted) now gets a clear rnndsl error, and
NumPy's own numbers (np.int64(10), np.float32(5)) are taken as Python's are."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import rnndsl
from rnndsl.cells import modes
from rnndsl.train.optim import SGD, Adam, RMSprop
from rnndsl.train.sample import Sampler, greedy
from rnndsl.train.schedule import Cosine, StepDecay
from rnndsl.train.trainer import Trainer

SPECS = Path(__file__).resolve().parents[2] / "specs"


@pytest.fixture(scope="module")
def char():
    return rnndsl.load(SPECS / "char_lstm.rnn", target="interp")


def test_a_trainer_takes_a_cell_not_its_class(char):
    with pytest.raises(ValueError, match="Trainer takes a cell, not the cell class CharLSTM"):
        Trainer(char)


@pytest.mark.parametrize("value", [np.float32(5), np.int64(2), 0.5])
def test_numpy_numbers_clip_like_pythons(char, value):
    t = Trainer(char(V=5, H=3, dtype=np.float64), clip_norm=value, clip_value=value)
    assert (t.clip_norm, t.clip_value) == (float(value), float(value))
    assert type(t.clip_norm) is float


@pytest.mark.parametrize("value", [True, 0, -1.0, float("inf"), float("nan"), "5"])
def test_a_clip_that_is_no_positive_finite_number_is_refused(char, value):
    with pytest.raises(ValueError, match="clip_norm must be a positive finite number or None"):
        Trainer(char(V=5, H=3, dtype=np.float64), clip_norm=value)


def test_schedules_take_numpy_numbers_and_keep_pythons():
    """Kept as Python numbers: a checkpoint writes the schedule as JSON."""
    cos = Cosine(total_steps=np.int64(10), floor=np.float32(0.25), warmup=np.int32(2))
    step = StepDecay(every=np.int64(3), gamma=np.float64(0.5))
    for schedule in (cos, step):
        json.dumps(schedule.to_dict())
    assert (cos.total_steps, cos.warmup, type(cos.total_steps)) == (10, 2, int)
    assert cos.floor == pytest.approx(0.25) and type(cos.floor) is float
    with pytest.raises(ValueError, match="total_steps must be an integer of at least 1"):
        Cosine(total_steps=np.bool_(True))


@pytest.mark.parametrize("make", [lambda v: SGD(lr=v), lambda v: Adam(lr=v),
                                  lambda v: RMSprop(lr=v), lambda v: SGD(lr=0.1, momentum=v),
                                  lambda v: Adam(weight_decay=v)])
@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_optimisers_refuse_numbers_that_are_not_finite(make, value):
    with pytest.raises(ValueError, match="must be a finite number"):
        make(value)


@pytest.mark.parametrize("seed", ["x", -1, 1.5, True])
def test_a_sampling_seed_is_checked(char, seed):
    with pytest.raises(rnndsl.RnnError, match="seed must be a non-negative integer, a "
                       "np.random.Generator or None"):
        Sampler(char(V=5, H=3, dtype=np.float64)).generate(3, greedy(), prime=[1], seed=seed)


def test_a_sampling_seed_may_be_a_numpy_integer_or_a_generator(char):
    sampler = Sampler(char(V=5, H=3, dtype=np.float64))
    a = sampler.generate(6, greedy(), prime=[1], seed=np.int64(3))
    b = sampler.generate(6, greedy(), prime=[1], seed=np.random.default_rng(3))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("dropout", ["abc", -2, 0.5, True])
def test_a_dropout_source_is_checked(dropout):
    spec = """cell D {
  dims I, H
  input x[I]
  state h[H]
  param W[H, I]
  h' = dropout(tanh(W @ x), 0.5)
  output h'
}
"""
    cell = rnndsl.load_text(spec, target="interp")(I=2, H=3, dtype=np.float64)
    with pytest.raises(rnndsl.BindError, match="dropout must be a np.random.Generator or a "
                       "non-negative integer seed"):
        cell.forward(np.zeros((2, 1, 2)), dropout=dropout)
    assert cell.forward(np.ones((2, 1, 2)), dropout=np.int64(4)).outputs["h"].shape == (2, 1, 3)


@pytest.mark.parametrize("B", [-1, 2.5, "3", None])
def test_initial_state_takes_a_row_count(char, B):
    with pytest.raises(rnndsl.BindError, match="initial_state takes the number of rows B"):
        char(V=5, H=3, dtype=np.float64).initial_state(B)


def test_initial_state_of_numpy_rows(char):
    state = char(V=5, H=3, dtype=np.float64).initial_state(np.int64(2))
    assert {v.shape for v in state.values()} == {(2, 3)}


@pytest.mark.parametrize("steps", [0, -1, 1.5])
def test_feed_back_needs_a_step(steps):
    elman = rnndsl.load(SPECS / "elman.rnn", target="interp")(I=2, H=3, O=2, dtype=np.float64)
    with pytest.raises(rnndsl.BindError, match="steps must be a whole number of at least 1"):
        modes.feed_back(elman, np.zeros((1, 2)), steps, lambda y: y, output="y")


def test_dims_given_by_position_are_named_as_the_mistake():
    lstm = rnndsl.load(SPECS / "lstm.rnn", target="interp")
    with pytest.raises(rnndsl.BindError, match=r"LSTM\(3, \.\.\.\): dims are given by name, "
                       r"LSTM\(I=\.\.\., H=\.\.\.\)"):
        lstm(3, 4)


def test_a_sequence_given_to_an_input_once_says_so():
    spec = """cell Gen {
  dims Z, H
  input once z[Z]
  state h[H]
  param W[H, Z], U[H, H]
  h' = tanh(W @ z + U @ h)
  output h'
}
"""
    cell = rnndsl.load_text(spec, target="interp")(Z=2, H=3, dtype=np.float64)
    with pytest.raises(rnndsl.BindError) as info:
        cell.forward(np.zeros((4, 3, 2)), steps=4)
    assert str(info.value) == ("input z (input once) has shape (4, 3, 2); expected (B, 2): "
                               "one vector a sequence (read at the first step), not a "
                               "(T, B, 2) sequence")
