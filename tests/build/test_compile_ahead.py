"""The backward kernel compiled in a second process (rnndsl.build.compile_ahead), and the
kernel signatures it compiles for: the ones the calls have."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnndsl
from rnndsl.build import compile_ahead
from rnndsl.core.errors import BindError

REPO = Path(__file__).resolve().parents[2]

CHILD = """
import json, os, sys
import numpy as np
import rnndsl, rnndsl.kernels.blas, rnndsl.cells.compiled as runtime
import rnndsl.build.compile_ahead
rnndsl.build.compile_ahead.usable_cores = lambda: 2   # two cores, whatever this machine has
Cell = rnndsl.load("specs/elman.rnn")
cell = Cell(dtype=np.float64, I=3, H=4, O=2)
started = (type(cell), cell.dtype) in runtime._AHEAD_CHILDREN
x = np.random.default_rng(0).normal(size=(5, 2, 3))
run = cell.forward(x)
grads = cell.backward(run, d_outputs={k: np.ones_like(v) for k, v in run.outputs.items()})
backward = cell.meta["backward"]
sig = cell._kernel_signatures()[1]
print(json.dumps({"started": started, "hits": backward.stats.cache_hits.get(sig, 0),
                  "misses": backward.stats.cache_misses.get(sig, 0),
                  "finite": bool(np.isfinite(grads.params["W_hh"]).all())}))
"""


def run_child(tmp_path, ahead: str) -> dict:
    """CHILD in a fresh process with an empty rnndsl cache (the module's Numba cache
    is beside it; rnndsl's shared kernels keep theirs) and RNNDSL_COMPILE_AHEAD=ahead."""
    env = dict(os.environ, PYTHONPATH=str(REPO), RNNDSL_COMPILE_AHEAD=ahead,
               RNNDSL_CACHE_DIR=str(tmp_path / "rnndsl"))
    out = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, env=env, text=True,
                         capture_output=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_backward_compiles_in_a_child_and_loads_from_the_cache(tmp_path):
    got = run_child(tmp_path, "1")
    # the child compiled the backward; this process loaded it and compiled nothing
    assert got == {"started": True, "hits": 1, "misses": 0, "finite": True}, got


def test_switched_off_no_child_starts(tmp_path):
    got = run_child(tmp_path, "0")
    assert got == {"started": False, "hits": 0, "misses": 1, "finite": True}, got


def test_the_switch_and_its_gates(monkeypatch):
    monkeypatch.setattr(compile_ahead, "usable_cores", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.5, 0.5, 0.5))
    monkeypatch.delenv("RNNDSL_COMPILE_AHEAD")
    assert compile_ahead.enabled()
    monkeypatch.setattr(os, "getloadavg", lambda: (2.5, 2.0, 2.0))    # every core busy
    assert not compile_ahead.enabled()
    monkeypatch.setenv("RNNDSL_COMPILE_AHEAD", "1")                    # asked for: yes
    assert compile_ahead.enabled()
    monkeypatch.setattr(compile_ahead, "usable_cores", lambda: 1)     # no core to spare
    assert not compile_ahead.enabled()
    monkeypatch.setattr(compile_ahead, "usable_cores", lambda: 2)
    monkeypatch.setenv("RNNDSL_COMPILE_AHEAD", "0")
    assert not compile_ahead.enabled()
    monkeypatch.setenv("RNNDSL_COMPILE_AHEAD", "yes")
    with pytest.raises(BindError, match="RNNDSL_COMPILE_AHEAD must be 0 or 1"):
        compile_ahead.enabled()


def test_a_failed_child_leaves_the_backward_to_this_process(tmp_path):
    """A child that cannot do its work (here: asked for a kernel the module lacks)
    reports it, and the caller goes on (the backward then compiles in-process)."""
    Cell = rnndsl.load(REPO / "specs" / "elman.rnn")
    cell = Cell(dtype=np.float64, I=2, H=2, O=2)
    sig = cell._kernel_signatures()[1]

    class Module:    # the real module's name and file, a kernel it does not have
        __name__ = cell.kernels.__name__
        __file__ = cell.kernels.__file__
        backward_Nothing = cell.meta["backward"].__class__(
            py_func=lambda: None, locals={}, targetoptions={"nopython": True})

    child = compile_ahead.start(Module, "backward_Nothing", sig)
    assert child is not None and child.wait() is False
    assert "backward_Nothing" in child.stderr


def test_a_failed_child_is_reported_and_the_backward_still_runs(monkeypatch):
    """The cell's backward warns that its child failed, then compiles in-process."""
    from rnndsl.cells import compiled as runtime
    Cell = rnndsl.load(REPO / "specs" / "elman.rnn")
    cell = Cell(dtype=np.float64, I=2, H=2, O=2)

    class Failed:
        what, returncode, stderr = "_rnndsl_elman.backward_Elman", 1, "Traceback\nBoom: no"

        def wait(self):
            return False

    monkeypatch.setitem(runtime._AHEAD_CHILDREN, (Cell, np.dtype(np.float64)), Failed())
    run = cell.forward(np.ones((2, 1, 2)))
    with pytest.warns(RuntimeWarning, match="failed \\(exit 1\\).*Boom: no"):
        grads = cell.backward(run, d_outputs={k: np.ones_like(v)
                                             for k, v in run.outputs.items()})
    assert np.isfinite(grads.params["W_hh"]).all()
    assert (Cell, np.dtype(np.float64)) not in runtime._AHEAD_CHILDREN   # warned once


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_predicted_signatures_are_the_calls_signatures(dtype, monkeypatch):
    """What a child compiles must be what the calls use, or the child's work is lost:
    one block and two, B = 1 and 19, a read-only input (copied, not a new kind of
    array to compile for), with and without input gradients: one signature each."""
    Cell = rnndsl.load(REPO / "specs" / "lstm.rnn")
    cell = Cell(dtype=dtype, I=3, H=4)
    forward_sig, backward_sig = cell._kernel_signatures()
    rng = np.random.default_rng(0)
    for threads, B, input_grads in (("1", 1, True), ("2", 19, False), ("1", 19, True)):
        monkeypatch.setenv("RNNDSL_BLAS_THREADS", threads)
        x = rng.normal(size=(3, B, 3)).astype(dtype)
        x.setflags(write=False)
        run = cell.forward(x)
        cell.backward(run, d_outputs={"h": np.ones_like(run.outputs["h"])},
                      input_grads=input_grads)
    mine = lambda sigs: {s for s in sigs if s[-1].dtype == forward_sig[-1].dtype}
    assert mine(cell.meta["forward"].signatures) == {forward_sig}
    assert mine(cell.meta["backward"].signatures) == {backward_sig}
