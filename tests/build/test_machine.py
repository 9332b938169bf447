"""The marks where a step's GEMM changes ways, chosen for the machine (rnndsl.build.machine):
timed at first use and cached per CPU and BLAS, read back by later processes, read by
the kernels at each call, printed by `rnndsl explain`; and the kernels match the
interpreter with each way forced through them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnndsl
from rnndsl.build import machine
from rnndsl.core.errors import BindError

ROOT = Path(__file__).resolve().parents[2]
# a grid small enough to time in a test: two shapes a mark
TINY = {name: (below, above, members, [(2, 16), (3, 24)])
        for name, (below, above, members, _) in machine.GRIDS.items()}


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A fresh cache and no marks chosen yet in this process (as a new process)."""
    monkeypatch.setenv("RNNDSL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(machine, "_CHOSEN", {})
    monkeypatch.setattr(machine, "GRIDS", TINY)
    return tmp_path


def test_the_mark_is_the_one_that_costs_least_over_the_grid():
    rows = [(100, 1.0, 2.0), (200, 1.0, 1.5), (400, 2.0, 1.0), (800, 4.0, 1.0)]
    assert machine.crossover(rows) == 400
    assert machine.crossover(list(reversed(rows))) == 400          # any order
    # a big win below a small loss: switch from the win on
    assert machine.crossover([(100, 2.0, 1.0), (200, 1.0, 1.5), (800, 4.0, 1.0)]) == 100
    # a small win below a big loss: from after the loss
    assert machine.crossover([(100, 1.1, 1.0), (200, 1.0, 3.0), (800, 4.0, 1.0)]) == 800
    # a tie keeps the way below (the larger mark)
    assert machine.crossover([(100, 1.0, 1.0), (200, 1.0, 0.5)]) == 200
    # losing at the largest product measured, and no more won below: never switch
    assert machine.crossover([(100, 1.0, 0.5), (200, 1.0, 2.0)]) == machine.NEVER
    assert machine.crossover([(100, 1.0, 1.2), (200, 1.0, 1.1)]) == machine.NEVER


def test_first_use_times_the_ways_and_caches_them_for_this_cpu(fresh, monkeypatch, capsys):
    monkeypatch.setenv("RNNDSL_TUNING", "auto")
    chosen = machine.tuning()
    assert "timing this machine's per-step GEMM paths" in capsys.readouterr().err
    assert set(chosen.values) == set(machine.DEFAULTS)
    assert chosen.path is not None and chosen.path.parent == fresh / "machine"
    record = json.loads(chosen.path.read_text())
    assert record["key"] == machine.machine_key()
    assert record["values"] == chosen.values
    for name, (below, above, _, shapes) in TINY.items():     # the timings it chose from
        assert record["timings"][name]["ways"] == [below, above]
        rows = record["timings"][name]["B, K, N, us"]
        assert [r[:2] for r in rows] == [list(s) for s in shapes]
        assert all(r[3] > 0 and r[4] > 0 for r in rows)
    assert machine.tuning() is chosen                          # once a process

    # a later process reads the record: nothing timed again
    monkeypatch.setattr(machine, "_CHOSEN", {})
    monkeypatch.setattr(machine, "measure", lambda *a, **k: pytest.fail("timed again"))
    again = machine.tuning()
    assert again.values == chosen.values and again.path == chosen.path
    assert "measured on" in again.source and machine.cpu_model() in again.source


def test_a_record_for_another_machine_or_broken_is_timed_again(fresh, monkeypatch):
    monkeypatch.setenv("RNNDSL_TUNING", "auto")
    path = machine.record_path(machine.machine_key())
    path.parent.mkdir(parents=True)
    other = dict(machine.machine_key(), blas="openblas 0.0 Prescott")
    for text in ("{not json", "null", "[]",       # JSON, not a record: was exit 3
                 json.dumps({"version": machine.RECORD_VERSION, "key": other,
                             "values": {n: 5 for n in machine.DEFAULTS}})):
        path.write_text(text)
        monkeypatch.setattr(machine, "_CHOSEN", {})
        monkeypatch.setattr(machine, "measure", lambda *a, **k: ({n: 7 for n in
                                                                  machine.DEFAULTS}, {}))
        assert machine.tuning().values == {n: 7 for n in machine.DEFAULTS}
        assert json.loads(path.read_text())["key"] == machine.machine_key()


def test_default_and_measure_and_a_bad_setting(fresh, monkeypatch):
    monkeypatch.setenv("RNNDSL_TUNING", "default")
    assert machine.tuning().values == machine.DEFAULTS
    assert "RNNDSL_TUNING=default" in machine.tuning().source
    monkeypatch.setenv("RNNDSL_TUNING", "measure")          # times again, rewrites
    path = machine.record_path(machine.machine_key())
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"stale": True}))
    monkeypatch.setattr(machine, "measure", lambda *a, **k: ({n: 9 for n in
                                                              machine.DEFAULTS}, {}))
    assert machine.tuning().values == {n: 9 for n in machine.DEFAULTS}
    assert json.loads(path.read_text())["values"] == {n: 9 for n in machine.DEFAULTS}
    monkeypatch.setenv("RNNDSL_TUNING", "fast")
    with pytest.raises(BindError, match="RNNDSL_TUNING must be auto, default or measure"):
        machine.tuning()


def test_timing_that_fails_falls_back_to_the_defaults(fresh, monkeypatch):
    monkeypatch.setenv("RNNDSL_TUNING", "auto")

    def broken(*a, **k):
        raise RuntimeError("no BLAS here")
    monkeypatch.setattr(machine, "measure", broken)
    chosen = machine.tuning()
    assert chosen.values == machine.DEFAULTS and "no BLAS here" in chosen.source


@pytest.mark.parametrize("way, marks", [
    ("one call", {"micro_split_product": machine.NEVER, "micro_tile_product": machine.NEVER}),
    ("by member", {"micro_split_product": 1, "micro_tile_product": machine.NEVER}),
    ("tiles", {"micro_split_product": 1, "micro_tile_product": 1}),
])
def test_each_way_forced_through_the_marks_matches_the_interpreter(way, marks, monkeypatch):
    """B = 3 (under MR rows), H = 12: the marks alone decide the way; the kernels read
    them from `consts` at each call, so one compiled module runs all three."""
    chosen = machine.Tuning(dict(machine.DEFAULTS, **marks), f"forced: {way}")
    monkeypatch.setattr(machine, "tuning", lambda: chosen)
    spec = ROOT / "specs" / "lstm.rnn"
    cpu = rnndsl.load(spec)(I=5, H=12, dtype=np.float64, seed=4)
    ref = rnndsl.load(spec, target="interp")(I=5, H=12, dtype=np.float64)
    ref.params = cpu.params
    consts = cpu._consts()
    names = [v for kind, v in cpu.meta["consts"] if kind == "tuning"]
    assert sorted(set(names)) == ["micro_split_product", "micro_tile_product"]
    for name, value in zip(names, consts[[k == "tuning" for k, _ in cpu.meta["consts"]]]):
        assert value == float(chosen.values[name])
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, 3, 5))
    a, b = cpu.forward(x), ref.forward(x)
    np.testing.assert_allclose(a.outputs["h"], b.outputs["h"], rtol=1e-10, atol=1e-12)
    dy = {"h": rng.standard_normal((6, 3, 12))}
    ga, gb = cpu.backward(a, dy), ref.backward(b, dy)
    for name in gb.params:
        np.testing.assert_allclose(ga.params[name], gb.params[name], rtol=1e-9, atol=1e-11,
                                   err_msg=name)
    np.testing.assert_allclose(ga.inputs["x"], gb.inputs["x"], rtol=1e-9, atol=1e-11)


def test_explain_prints_the_marks_and_where_they_came_from():
    out = subprocess.run([sys.executable, "-m", "rnndsl", "explain", "specs/lstm.rnn"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "per-step GEMMs under 8 rows on this machine (the built-in marks, " \
           "RNNDSL_TUNING=default)" in out.stdout           # (the suite's setting)
    assert f"member by member from B*K*N >= {machine.DEFAULTS['micro_split_product']:,}" \
        in out.stdout
