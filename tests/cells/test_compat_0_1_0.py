"""Modules that rnndsl 0.1.0 wrote with `rnndsl build -o` still import and run.

tests/golden/built_0_1_0/ holds modules built by rnndsl 0.1.0 (commit faa67f4, before
the package was split into stage folders): they import `rnndsl.kernels`, `rnndsl.gemm`,
`rnndsl.runtime` (compiled_cell_class), `rnndsl.cuda_kernels` and `rnndsl.cuda_runtime`,
and carry 0.1.0's metadata. Each must load through today's runtime and compute what
today's reference interpreter computes.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import rnndsl

REPO = Path(__file__).resolve().parents[2]
BUILT = REPO / "tests" / "golden" / "built_0_1_0"


def _import(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)     # the shims say they moved
        spec.loader.exec_module(module)
    return module


def _close(a, b, what):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=what)


def test_a_0_1_0_module_with_layers_imports_and_reads_its_used_files(tmp_path):
    """char_lstm.py carries lstm.rnn's text (SPEC_FILES): its layers resolve from there."""
    shutil.copy(BUILT / "char_lstm.py", tmp_path / "char_lstm.py")
    module = _import(tmp_path / "char_lstm.py", "_old_CharLSTM")
    cell = module.CharLSTM(dtype=np.float32, seed=0, V=5, H=3)
    assert cell.params["l2.U_f"].shape == (3, 3) and cell.params["W_y"].shape == (5, 3)
    assert [name for name, _ in module.CharLSTM.spec.layers] == ["l1", "l2"]


@pytest.mark.parametrize("file, cell, dims", [("elman.py", "Elman", {"I": 3, "H": 4, "O": 2})])
def test_a_0_1_0_cpu_module_imports_and_runs(tmp_path, file, cell, dims):
    shutil.copy(BUILT / file, tmp_path / file)
    module = _import(tmp_path / file, f"_old_{cell}")
    assert module.RNNDSL_VERSION == "0.1.0"
    assert {"rnndsl.gemm", "rnndsl.runtime"} <= set(sys.modules)     # through the shims
    Old = getattr(module, cell)
    Ref = rnndsl.load_text(Old.spec.source.text, target="interp", cell=cell,
                           path=str(REPO / "specs" / "x.rnn"))
    old, ref = Old(dtype=np.float64, seed=3, **dims), Ref(dtype=np.float64, seed=3, **dims)
    for name in ref.params:
        _close(old.params[name], ref.params[name], name)
    x = np.random.default_rng(0).normal(size=(4, 2, dims.get("I", dims.get("V"))))
    run_old, run_ref = old.forward(x), ref.forward(x)
    for name in run_ref.outputs:
        _close(run_old.outputs[name], run_ref.outputs[name], name)
    out = next(iter(run_ref.outputs))
    d_out = {out: np.ones_like(run_ref.outputs[out])}
    g_old, g_ref = old.backward(run_old, d_outputs=d_out), ref.backward(run_ref,
                                                                        d_outputs=d_out)
    for name in g_ref.params:
        _close(g_old.params[name], g_ref.params[name], f"d {name}")
    # its kernels take no fingerprints (no `seen` argument): the runtime takes them
    run_old = old.forward(x)
    assert not run_old._tape.seen.by_kernel
    old.params["W_hh"][0, 0] += 1.0
    with pytest.raises(rnndsl.BindError, match="^param W_hh was changed in place"):
        old.backward(run_old, d_outputs=d_out)


def test_a_0_1_0_cuda_module_imports_and_runs_on_the_simulator(tmp_path):
    pytest.importorskip("numba_cuda")
    from numba import config
    if not config.ENABLE_CUDASIM:
        pytest.skip("a real GPU: tests/cells/test_cuda_backend.py covers today's kernels there")
    shutil.copy(BUILT / "cuda" / "gru.py", tmp_path / "gru.py")
    module = _import(tmp_path / "gru.py", "_old_cuda_gru")
    Ref = rnndsl.load(REPO / "specs" / "gru.rnn", target="interp")
    dims = {"I": 2, "H": 3}
    old, ref = module.GRU(dtype=np.float64, seed=1, **dims), Ref(dtype=np.float64, seed=1,
                                                                 **dims)
    x = np.random.default_rng(1).normal(size=(2, 1, 2))
    run_old, run_ref = old.forward(x), ref.forward(x)
    _close(np.asarray(run_old.outputs["h"]), run_ref.outputs["h"], "h")
