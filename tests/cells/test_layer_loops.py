"""A stacked cell's two plans: one fused time loop, or a loop per layer (each layer over
the whole sequence in turn, lang/network.split with `loops`), chosen at each call by a
cost model (cells/network.layer_loops_choice). Each plan, forced, is compared with the
interpreter; the choice follows the shape; both plans read the same params."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rnndsl
from rnndsl.cells.network import LayerLoops, NetworkRun, layer_loops_choice
from rnndsl.core.errors import BindError
from rnndsl.lang.network import layer_loops, split
from rnndsl.lang.specfile import read_spec

SPECS = Path(__file__).resolve().parents[2] / "specs"
V, H = 7, 5


@pytest.fixture(scope="module")
def cells():
    ref = rnndsl.load(SPECS / "char_lstm.rnn", target="interp")(V=V, H=H, dtype=np.float64,
                                                                 seed=3)
    cpu = rnndsl.load(SPECS / "char_lstm.rnn", target="cpu")(V=V, H=H, dtype=np.float64,
                                                              seed=3)
    for name, value in ref.params.items():
        cpu.params[name][...] = value
    return ref, cpu


def test_the_split_gives_each_layer_a_loop_with_its_input_from_the_last():
    spec_file = read_spec(SPECS / "char_lstm.rnn")
    cell, library = spec_file.pick(), {**spec_file.used, **spec_file.cells}
    assert layer_loops(cell, library) == ("l1", "l2")
    parts = split(cell, library, ("l1", "l2")).parts
    assert [p.inputs for p in parts] == [(("x", ("input", "x")),), (("h1", ("let", "h1")),)]
    assert "input token x[V]" in parts[0].text and "output h1" in parts[0].text
    assert "input h1[H]" in parts[1].text and "layer l2 = LSTM" in parts[1].text
    # one layer, or none: nothing to split
    lstm = read_spec(SPECS / "lstm.rnn")
    assert layer_loops(lstm.pick(), {**lstm.used, **lstm.cells}) == ()


def test_nested_calls_run_in_one_fused_loop(tmp_path):
    """`output y = l2(l1(x))` leaves both layers in one segment, the whole cell again:
    offered a loop per layer, its compiled class split itself without end at T >= 32 and
    B < 8 (a made-up cell name past 64 characters), the docs' Tagger among them. Such a
    cell runs fused; the named form (h1 = l1(x)) still runs a loop per layer."""
    (tmp_path / "lstm.rnn").symlink_to(SPECS / "lstm.rnn")
    nested = tmp_path / "nested.rnn"
    nested.write_text('use "lstm.rnn"\ncell S {\n  dims I, H\n  input x[I]\n'
                      '  layer l1 = LSTM(I = I, H = H)\n  layer l2 = LSTM(I = H, H = H)\n'
                      '  output y = l2(l1(x))\n}\n')
    spec_file = read_spec(nested)
    assert layer_loops(spec_file.pick(), {**spec_file.used, **spec_file.cells}) == ()
    cell = rnndsl.load(nested, target="interp")(I=3, H=4, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).normal(size=(32, 2, 3))
    assert cell.forward(x).outputs["y"].shape == (32, 2, 4)


def test_the_cost_model_runs_small_batches_of_long_sequences_per_layer():
    assert layer_loops_choice(T=64, B=1) == "per_layer"
    assert layer_loops_choice(T=64, B=32) == "fused"
    assert layer_loops_choice(T=4, B=1) == "fused"        # too few steps to hoist


@pytest.mark.parametrize("way", ["fused", "per_layer"])
def test_each_plan_forced_matches_the_interpreter(cells, way, monkeypatch):
    ref, cpu = cells
    assert isinstance(cpu, LayerLoops)
    monkeypatch.setattr(cpu, "layer_loops", way)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, V, (9, 3))
    lengths = [9, 4, 1]
    state = {d.name: rng.standard_normal((3, H)) for d in ref.spec.states}
    a, b = ref.forward(ids, state, lengths=lengths), cpu.forward(ids, state, lengths=lengths)
    assert isinstance(b, NetworkRun) == (way == "per_layer")
    np.testing.assert_allclose(b.outputs["logits"], a.outputs["logits"], rtol=1e-10,
                               atol=1e-12)
    for name in a.state:
        np.testing.assert_allclose(b.state[name], a.state[name], rtol=1e-10, atol=1e-12)
    d = {"logits": rng.standard_normal(a.outputs["logits"].shape)}
    ga, gb = ref.backward(a, d), cpu.backward(b, d)
    assert sorted(gb.params) == sorted(ga.params)
    for name in ga.params:
        np.testing.assert_allclose(gb.params[name], ga.params[name], rtol=1e-9,
                                   atol=1e-11, err_msg=name)
    for name in ga.state:
        np.testing.assert_allclose(gb.state[name], ga.state[name], rtol=1e-9, atol=1e-11)


def test_auto_follows_the_shape_and_both_plans_read_replaced_params(cells, monkeypatch):
    ref, cpu = cells
    monkeypatch.setattr(cpu, "layer_loops", "auto")
    rng = np.random.default_rng(1)
    long_few = rng.integers(0, V, (40, 2))
    assert isinstance(cpu.forward(long_few), NetworkRun)
    assert not isinstance(cpu.forward(rng.integers(0, V, (40, 8))), NetworkRun)
    monkeypatch.setitem(cpu.params, "W_y", cpu.params["W_y"] * 2)    # replaced, not edited
    monkeypatch.setitem(ref.params, "W_y", ref.params["W_y"] * 2)
    np.testing.assert_allclose(cpu.forward(long_few).outputs["logits"],
                               ref.forward(long_few).outputs["logits"], rtol=1e-10,
                               atol=1e-12)
    monkeypatch.setattr(cpu, "layer_loops", "sideways")
    with pytest.raises(BindError, match="^layer_loops must be one of auto, fused, per_layer"):
        cpu.forward(long_few)
    monkeypatch.setattr(cpu, "layer_loops", "auto")
    monkeypatch.setenv("RNNDSL_LAYER_LOOPS", "bogus")      # named as the user set it
    with pytest.raises(BindError, match="^RNNDSL_LAYER_LOOPS must be one of auto, fused, "
                                        "per_layer, got 'bogus'"):
        cpu.forward(long_few)
