"""The cuda target: generated numba-cuda kernels against the interpreter.

Runs on numba-cuda's simulator (conftest.py sets NUMBA_ENABLE_CUDASIM=1 before numba is
imported; RNNDSL_REAL_GPU=1 runs the same tests on a GPU). The simulator runs about
10,000 threads a second, so shapes are tiny: what these tests check is the generated
program (indices, guards, launches, stage order), which is the same at every size.
What the simulator lets through and a GPU rejects is checked by compiling every
generated kernel to PTX for compute capability 9.0, in a subprocess without the
simulator (needs numba-cuda[cu13]; skipped without it).
"""

from __future__ import annotations

import ast
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnndsl
from rnndsl.build.modules import build_source, load_built, write_module
from rnndsl.codegen.form import Arr, Assign, Call, Code, Sym
from rnndsl.core.errors import BindError
from rnndsl.lang.specfile import read_spec

pytest.importorskip("numba_cuda")
from numba import config, cuda

from rnndsl.cells.cuda import is_device_array

ROOT = Path(__file__).resolve().parents[2]
# char_lstm (two LSTMs stacked) adds only time under the simulator unless RNNDSL_LONG=1:
# tests/cells/test_layers.py checks stacking, and lstm.rnn covers the kernels it compiles to.
LONG = os.environ.get("RNNDSL_LONG") == "1"
SPECS = sorted(p for p in (ROOT / "specs").glob("*.rnn") if LONG or p.stem != "char_lstm")
# Compiling to PTX takes 6-20 s a spec: by default the specs that between them hold every
# kind of phase and kernel (reductions, a projection), all with RNNDSL_LONG=1. Elman's
# and GRU's kernels are of the kinds the LSTM's are (GEMMs, one fused elementwise kernel
# a step, copies), and two_streams' (several inputs) are of the LSTM's and the projected
# LSTM's kinds, so they wait for RNNDSL_LONG=1 too (the suite's 10-minute budget).
# the LSTM, and the layer-normalised one for its row sums; every spec with RNNDSL_LONG=1
# (the projected LSTM's PTX took 10 s: the suite's budget)
PTX_SPECS = [p for p in SPECS if LONG or p.stem in ("lstm", "layernorm_lstm")]
TOL = {np.float32: 1e-4, np.float64: 1e-10}
T, B, SIZE = 3, 2, 3


def _no_sim_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def _pair(path: Path, dtype, **kw):
    Ref = rnndsl.load(path, target="interp")
    Cuda = rnndsl.load(path, target="cuda")
    dims = {d: SIZE for d in Ref.spec.dims}
    return Cuda(dtype=dtype, seed=1, **dims, **kw), Ref(dtype=dtype, seed=1, **dims, **kw)


def _inputs(cell, rng, dtype, batch=B):
    x = {d.name: (rng.integers(0, cell._size(d)[0], (T, batch)) if d.token else   # ids
                  rng.normal(size=(T, batch) + cell._size(d)).astype(dtype))
         for d in cell.spec.inputs}
    return next(iter(x.values())) if len(x) == 1 else x


# Every spec in float64 (1e-10: the structure, tightly); float32 on the specs that between
# them hold every float32 path of the cpu test's FLOAT32_SPECS (a spec's kernels are one
# text for both dtypes), every spec in both with RNNDSL_LONG=1 (the suite's 10 minutes)
FLOAT32_SPECS = {"elman_relu", "lstm", "gru", "layernorm_lstm", "two_streams"}
DTYPE_CASES = [(p, d) for p in SPECS for d in (np.float32, np.float64)
               if LONG or d == np.float64 or p.stem in FLOAT32_SPECS]


@pytest.mark.parametrize("path,dtype", DTYPE_CASES, ids=[
    f"{p.stem}-{'f32' if d == np.float32 else 'f64'}" for p, d in DTYPE_CASES])
def test_spec_matches_interpreter(path, dtype):
    """Outputs, final states and every gradient, with given initial states and cotangents
    on the outputs and the final states."""
    _matches_interpreter(path, dtype)


def test_names_ending_in_r_are_not_other_names_rows_views(tmp_path):
    """The cpu test's cell (tests/cells/test_cpu_backend.py) through the cuda emitter."""
    from test_cpu_backend import CLASHING_NAMES
    spec = tmp_path / "clash.rnn"
    spec.write_text(CLASHING_NAMES)
    _matches_interpreter(spec, np.float64)


def _matches_interpreter(path: Path, dtype, batch=B) -> None:
    cell, ref = _pair(path, dtype)
    rng = np.random.default_rng(7)
    x = _inputs(cell, rng, dtype, batch)
    s0 = {d.name: (0.5 * rng.normal(size=(batch,) + cell._size(d))).astype(dtype)
          for d in cell.spec.states}
    run, want = cell.forward(x, state=s0), ref.forward(x, state=s0)
    tol = TOL[dtype]
    for name in want.outputs:
        assert _rel(run.outputs[name], want.outputs[name]) < tol, name
        assert isinstance(run.outputs[name], np.ndarray)
    for name in want.state:
        assert _rel(run.state[name], want.state[name]) < tol, name
    d_out = {k: rng.normal(size=v.shape).astype(dtype) for k, v in want.outputs.items()}
    d_st = {k: rng.normal(size=v.shape).astype(dtype) for k, v in want.state.items()}
    got = cell.backward(run, d_outputs=d_out, d_state=d_st)
    exp = ref.backward(want, d_outputs=d_out, d_state=d_st)
    for kind in ("params", "inputs", "state"):
        for name, value in getattr(exp, kind).items():
            g = getattr(got, kind)[name]
            assert g.shape == value.shape and g.dtype == value.dtype, (kind, name)
            assert _rel(g, value) < tol, (kind, name, _rel(g, value))


def test_device_arrays_in_device_arrays_out():
    """A training loop keeps data and params on the device: the same numbers as a host
    run, with device arrays back and nothing copied to the host."""
    path = ROOT / "specs" / "lstm.rnn"
    cell, _ = _pair(path, np.float64)
    rng = np.random.default_rng(3)
    x = _inputs(cell, rng, np.float64)
    host_run = cell.forward(x)
    dy = rng.normal(size=host_run.outputs["h"].shape)
    host_g = cell.backward(host_run, d_outputs={"h": dy})

    cell.params = {k: cuda.to_device(v) for k, v in cell.params.items()}
    run = cell.forward(cuda.to_device(x))
    assert is_device_array(run.outputs["h"]) and is_device_array(run.state["c"])
    assert _rel(run.outputs["h"].copy_to_host(), host_run.outputs["h"]) < 1e-12
    g = cell.backward(run, d_outputs={"h": cuda.to_device(dy)})
    for kind in ("params", "inputs", "state"):
        for name, value in getattr(host_g, kind).items():
            dev = getattr(g, kind)[name]
            assert is_device_array(dev), (kind, name)
            assert _rel(dev.copy_to_host(), value) < 1e-12, (kind, name)


def test_device_arrays_are_checked():
    cell, _ = _pair(ROOT / "specs" / "elman.rnn", np.float32)
    x = np.zeros((T, B, SIZE), np.float64)
    with pytest.raises(BindError, match="is float64 but the cell is float32"):
        cell.forward(cuda.to_device(x))
    with pytest.raises(BindError, match=r"expected \(2, 3\) = \(B, 3\)"):
        cell.forward(cuda.to_device(x.astype(np.float32)),
                     state={"h": cuda.to_device(np.zeros((3, 3), np.float32))})


def test_device_inputs_once_ids_and_empty_sequences():
    """From an outside review of the device path: an `input once` (B, Z) on the device
    was refused as a sequence without its third axis, and one of (T, B, Z) was taken
    as a sequence (fed at every step, silently); token ids on the device were refused,
    and rows that are not one-hot accepted; T = 0 and B = 0 ran; a scalar param's
    gradient came back (1,)."""
    text = ("cell Mixed {\n  dims Z, I, H\n  input once z[Z]\n  input x[I]\n  state h[H]\n"
            "  param W[H, Z], U[H, H], A[H, I], v[1, H], s\n"
            "  h' = tanh(W @ z + U @ h + A @ x) * s\n  output y = v @ h'\n}\n")
    cell = rnndsl.load_text(text, target="cuda")(Z=2, I=3, H=4, dtype=np.float64, seed=0)
    rng = np.random.default_rng(0)
    z, x = rng.normal(size=(B, 2)), rng.normal(size=(T, B, 3))
    host = cell.forward({"z": z, "x": x})
    dev = cell.forward({"z": cuda.to_device(z), "x": cuda.to_device(x)})
    assert _rel(dev.outputs["y"].copy_to_host(), host.outputs["y"]) < 1e-12
    with pytest.raises(BindError, match=r"input z \(input once\) has shape \(3, 2, 2\); "
                                        r"expected \(B, 2\)"):
        cell.forward({"z": cuda.to_device(np.repeat(z[None], T, 0)), "x": cuda.to_device(x)})
    cell.params = {k: cuda.to_device(v) for k, v in cell.params.items()}
    run = cell.forward({"z": cuda.to_device(z), "x": cuda.to_device(x)})
    g = cell.backward(run, d_outputs={"y": cuda.to_device(np.ones((T, B, 1)))})
    assert tuple(g.params["s"].shape) == ()
    cell.params["s"] = g.params["s"]          # a device optimiser step takes it back
    cell.forward({"z": cuda.to_device(z), "x": cuda.to_device(x)})
    with pytest.raises(BindError, match=r"has shape \(0, 2, 3\): a sequence needs T >= 1"):
        cell.forward({"z": cuda.to_device(z), "x": cuda.to_device(x[:0])})

    tok = rnndsl.load_text("cell Tok {\n  dims V, H\n  input token x[V]\n  state h[H]\n"
                           "  param W[H, V], U[H, H]\n  h' = tanh(W @ x + U @ h)\n"
                           "  output h'\n}\n", target="cuda")(V=3, H=4, dtype=np.float64)
    ids = np.array([[0, 1], [2, 0]])
    run = tok.forward(cuda.to_device(ids))    # checked on the host, results on the device
    assert is_device_array(run.outputs["h"]) and is_device_array(run.state["h"])
    assert _rel(run.outputs["h"].copy_to_host(), tok.forward(ids).outputs["h"]) < 1e-12
    with pytest.raises(BindError, match="is not one-hot"):
        tok.forward(cuda.to_device(np.full((T, B, 3), 0.5)))
    # ids beside a device sequence (were refused: "input x has shape (2, 2)")
    both = rnndsl.load_text("cell Tok2 {\n  dims V, H\n  input y[H]\n  input token x[V]\n"
                            "  state h[H]\n  param W[H, V], U[H, H]\n"
                            "  h' = tanh(W @ x + U @ h + y)\n  output h'\n}\n",
                            target="cuda")(V=3, H=4, dtype=np.float64)
    y = rng.normal(size=(2, 2, 4))
    want = both.forward({"x": ids, "y": y}).outputs["h"]
    got = both.forward({"x": cuda.to_device(ids), "y": cuda.to_device(y)}).outputs["h"]
    assert _rel(got.copy_to_host(), want) < 1e-12
    with pytest.raises(BindError, match=r"input x \(input token\) has 2 steps of 2 rows; "
                                        r"the other inputs have \(T, B\) = \(1, 2\)"):
        both.forward({"y": cuda.to_device(y[:1]), "x": cuda.to_device(ids)})


def test_gemm_partial_tiles_and_strided_views():
    """The tiled GEMM at shapes that are not multiples of the tile, on column views."""
    from rnndsl.kernels.cuda import TILE, gemm
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        m, k, n = TILE + 1, 2 * TILE + 3, TILE - 1
        a = rng.normal(size=(m, k + 2)).astype(dtype)
        b = rng.normal(size=(k, n)).astype(dtype)
        out = cuda.device_array((m, n + 4), dtype)
        gemm(cuda.to_device(a)[:, 1:k + 1], cuda.to_device(b), out[:, 2:n + 2])
        assert _rel(out.copy_to_host()[:, 2:n + 2], a[:, 1:k + 1] @ b) < TOL[dtype]


def test_generated_module_says_cuda_and_is_deterministic(tmp_path):
    spec_file = read_spec(ROOT / "specs" / "gru.rnn")
    first = build_source(spec_file, target="cuda")
    assert first == build_source(spec_file, target="cuda")
    assert "for the cuda target" in first and "TARGET = 'cuda'" in first
    assert "@cuda.jit\n" in first and "@njit" not in first
    assert "cuda.jit(\"" not in first and "cuda.jit('" not in first   # lazy kernels only
    path = tmp_path / "gru_cuda.py"
    write_module(first, path)
    module = load_built(path)
    assert module.GRU.target == "cuda" and len(module.GRU_KERNELS) >= 3


def test_cli_build_target_cuda(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rnndsl", "build", "--target", "cuda",
                          str(ROOT / "specs" / "elman.rnn"), "-o", str(tmp_path)],
                         check=False, capture_output=True, text=True, env=_no_sim_env(), cwd=ROOT)
    assert out.returncode == 0, out.stderr
    text = (tmp_path / "elman.py").read_text()
    assert "TARGET = 'cuda'" in text and "forward_Elman_steps" in text


@pytest.mark.skipif(os.environ.get("RNNDSL_REAL_GPU") == "1", reason="a GPU is present")
def test_no_gpu_and_no_simulator_is_a_clear_error():
    code = textwrap.dedent("""
        import rnndsl, sys
        from numba import cuda
        if cuda.is_available():
            sys.exit(3)
        try:
            rnndsl.load("specs/elman.rnn", target="cuda")
        except rnndsl.TargetError as exc:
            print(exc)
            sys.exit(0)
        sys.exit(1)
    """)
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                         text=True, env=_no_sim_env(), cwd=ROOT)
    if out.returncode == 3:
        pytest.skip("this machine has a GPU")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "found no usable CUDA GPU" in out.stdout
    assert "NUMBA_ENABLE_CUDASIM=1" in out.stdout


PTX_SCRIPT = textwrap.dedent("""
    import sys, tempfile
    from pathlib import Path
    from numba import cuda, types
    try:
        cuda.compile_ptx(lambda a: None, (types.float32[:],), cc=(9, 0))
    except Exception as exc:          # no NVVM: numba-cuda[cu13] is not installed
        print(f"no PTX compiler: {exc}")
        sys.exit(77)
    from rnndsl.kernels import cuda as cuda_kernels
    from rnndsl.build.modules import build_source, load_built, write_module
    from rnndsl.kernels.cuda import kernel_ptx
    from rnndsl.lang.specfile import read_spec

    count = 0
    for ft in (types.float32, types.float64) if "--shared" in sys.argv else ():
        table = dict(cuda_kernels.KERNEL_SIGNATURES)
        for name, kernel in cuda_kernels.GEMM_KERNELS.items():
            if name == str(ft):
                table["gemm"] = (kernel, ("a2", "a2", "a2"))
        for name, (kernel, kinds) in sorted(table.items()):
            kernel_ptx(kernel, kinds, ft)
            count += 1
    # --splitk: the specs built with the "splitk" GEMM phases too; only the persistent
    # kernels differ, so only they compile
    from rnndsl.codegen import emit_persistent
    variants = {"--splitk": ("GEMM_SCHEME", "splitk")}
    paths = [a for a in sys.argv[1:] if not a.startswith("--")]
    # a spec's kernels are one text for both dtypes: float32 (what GPUs train in) by
    # default, float64 too with --both (RNNDSL_LONG=1)
    spec_dtypes = (types.float32, types.float64) if "--both" in sys.argv else (types.float32,)
    defaults = {name: getattr(emit_persistent, name) for name, _ in variants.values()}
    out = Path(tempfile.mkdtemp())
    for variant in [a for a in sys.argv[1:] if a in variants] or [None]:
        if variant:
            setattr(emit_persistent, *variants[variant])
        for path in paths:
            spec_file = read_spec(path)
            target = out / f"{Path(path).stem}_{(variant or '-')[2:]}_cuda.py"
            text = build_source(spec_file, target="cuda")
            # every spec holds its recurrent weights (hold_weights is on by default)
            assert "held0 = cuda.shared.array(" in text, path
            assert variant is None or "K split among" in text, variant
            write_module(text, target)
            module = load_built(target)
            for cell in module.CELLS:
                for name, kernel, kinds in getattr(module, cell + "_KERNELS"):
                    if variant and not name.endswith("_steps"):
                        continue
                    for ft in spec_dtypes:
                        kernel_ptx(kernel, kinds, ft)
                        count += 1
        for name, value in defaults.items():
            setattr(emit_persistent, name, value)
    print(f"compiled {count} kernels to PTX")
""")


@pytest.mark.parametrize("what", [("--shared",), *((str(p),) for p in PTX_SPECS),
                                  ("--splitk", str(ROOT / "specs" / "lstm.rnn"),
                                   *([str(ROOT / "specs" / "gru_cho.rnn")] if LONG else []))],
                         ids=["cuda_kernels", *(p.stem for p in PTX_SPECS), "persistent_variants"])
def test_every_kernel_compiles_to_ptx_for_sm90(what):
    """What the simulator accepts but a GPU rejects (lists in kernels, mixed dtypes,
    Python objects) fails here, without a GPU: the shared kernels, then each spec's
    (one test each, so that the workers share the compiling; float32, and float64 too
    with RNNDSL_LONG=1; their persistent kernels hold the recurrent weights in shared
    memory, the hold_weights pass), and the LSTM's
    persistent kernels with the "splitk" GEMM phases (with RNNDSL_LONG=1 the Cho GRU's
    too, two held GEMMs a step)."""
    out = subprocess.run([sys.executable, "-c", PTX_SCRIPT, *what, *(["--both"] if LONG else [])],
                         check=False, capture_output=True, text=True, env=_no_sim_env(), cwd=ROOT,
                         timeout=600)
    if out.returncode == 77:
        pytest.skip(out.stdout.strip() + " (pip install 'numba-cuda[cu13]')")
    assert out.returncode == 0, out.stdout + out.stderr[-4000:]
    assert re.search(r"compiled [1-9]\d* kernels", out.stdout), out.stdout


def test_simulator_is_what_the_suite_runs_on():
    """Guards the conftest: without the simulator flag set before numba's import, these
    tests would silently try a real device."""
    if os.environ.get("RNNDSL_REAL_GPU") == "1":
        assert not config.ENABLE_CUDASIM
    else:
        assert config.ENABLE_CUDASIM


@pytest.mark.skipif(not config.ENABLE_CUDASIM, reason="the simulator's own threads")
def test_simulated_shared_arrays_are_one_a_block(monkeypatch):
    """rnndsl.kernels.cuda mends numba-cuda's simulator, which made a block's shared
    array with no lock: threads reaching `cuda.shared.array` together each got an array
    of their own, and a GEMM then read tiles that no other thread wrote (once in CI).
    Here making an array takes 2 ms, with the GIL free, so that every thread reaches the
    line while the first is making it: each thread's write must still reach thread 0."""
    import time

    from rnndsl.kernels import cuda as kernels      # mends the simulator on import
    assert kernels.SIMULATOR

    @cuda.jit
    def gather(out):
        buf = cuda.shared.array(16, np.float64)
        buf[cuda.threadIdx.x] = cuda.threadIdx.x + 1.0
        cuda.syncthreads()
        if cuda.threadIdx.x == 0:
            for i in range(16):
                out[i] = buf[i]

    empty = np.empty

    def slow_empty(*args, **kwargs):
        time.sleep(0.002)
        return empty(*args, **kwargs)

    for _ in range(3):
        out = np.zeros(16)
        with monkeypatch.context() as patch:
            patch.setattr(np, "empty", slow_empty)
            gather[1, 16](out)
        np.testing.assert_array_equal(out, np.arange(1.0, 17.0))


@pytest.mark.skipif(not config.ENABLE_CUDASIM, reason="the simulator's own scheduling")
def test_simulated_launches_switch_threads_often_and_put_the_interval_back():
    """rnndsl.kernels.cuda: during a launch on the simulator the GIL changes hands every
    0.5 ms (not every 5), so that a block's threads are not kept waiting on the thread
    that polls them; afterwards the process's own interval is back, also after a launch
    that raised."""
    import rnndsl.kernels.cuda as kernels

    @cuda.jit
    def record(out):
        if cuda.threadIdx.x == 0:
            out[0] = sys.getswitchinterval()
        cuda.syncthreads()

    @cuda.jit
    def fail(out):
        out[10] = 1.0           # past the end: the simulator raises

    before = sys.getswitchinterval()
    sys.setswitchinterval(0.004)
    try:
        out = np.zeros(1)
        record[1, 4](out)
        assert out[0] == pytest.approx(kernels.SIMULATOR_SWITCH_INTERVAL)
        assert sys.getswitchinterval() == pytest.approx(0.004)
        with pytest.raises(IndexError):
            fail[1, 1](np.zeros(1))
        assert sys.getswitchinterval() == pytest.approx(0.004)
    finally:
        sys.setswitchinterval(before)


@pytest.mark.skipif(not LONG, reason="RNNDSL_LONG=1 only (12 s); .ci/gpu runs the harness "
                    "for real where a GPU is lent")
def test_gpu_benchmark_runs_on_the_simulator():
    """benchmarks/gpu.py cannot be measured without a GPU; its --tiny mode keeps the
    harness (the CPU check, the device-resident timing loop) working."""
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--tiny",
                          "--cells", "lstm"], check=False, capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr[-4000:]
    assert "CUDA simulator" in out.stdout and "lstm  tiny" in out.stdout


HOST_LOOP_SPECS = ("lstm", "gru", "two_streams", "layernorm_lstm")


def _without_persistent(name: str, tmp_path):
    from rnndsl.schedule.plan import PASSES
    passes = tuple(p for p in PASSES if p != "persistent")
    target = tmp_path / f"{name}_host_loop.py"
    write_module(build_source(read_spec(ROOT / "specs" / f"{name}.rnn"), passes=passes,
                              target="cuda"), target)
    return load_built(target)


def _driver_time_loops(source: str) -> int:
    """How many `for t` loops the host drivers (the undecorated functions) hold."""
    import ast
    count = 0
    for fn in ast.parse(source).body:
        if isinstance(fn, ast.FunctionDef) and not fn.decorator_list:
            count += sum(isinstance(n, ast.For) and getattr(n.target, "id", "") == "t"
                         for n in ast.walk(fn))
    return count


@pytest.mark.parametrize("name", HOST_LOOP_SPECS)
def test_host_driven_time_loop_matches_interpreter(name, tmp_path):
    """With the `persistent` pass off, each step is launched from the host: that path
    stays correct too (outputs, states, every gradient; float64)."""
    module = _without_persistent(name, tmp_path)
    assert _driver_time_loops(Path(module.__file__).read_text()) == 2
    _built_matches_interpreter(module, name, SIZE, seed=1)


def _built_matches_interpreter(module, name: str, size: int, seed: int) -> None:
    """A built cuda module's first cell against the interpreter, float64: outputs and
    every gradient, every dim `size`."""
    cls = getattr(module, module.CELLS[0])
    Ref = rnndsl.load(ROOT / "specs" / f"{name}.rnn", target="interp")
    dims = {d: size for d in Ref.spec.dims}
    cell, ref = (cls(dtype=np.float64, seed=seed, **dims),
                 Ref(dtype=np.float64, seed=seed, **dims))
    rng = np.random.default_rng(seed + 1)
    x = _inputs(cell, rng, np.float64)
    run, want = cell.forward(x), ref.forward(x)
    d_out = {k: rng.normal(size=v.shape) for k, v in want.outputs.items()}
    got, exp = cell.backward(run, d_outputs=d_out), ref.backward(want, d_outputs=d_out)
    for key, value in want.outputs.items():
        assert _rel(run.outputs[key], value) < 1e-10, key
    for kind in ("params", "inputs", "state"):
        for key, value in getattr(exp, kind).items():
            assert _rel(getattr(got, kind)[key], value) < 1e-10, (kind, key)


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_time_loop_runs_as_one_persistent_kernel(path):
    """The pass must not quietly fall back to the host loop on any spec: no driver keeps
    a `for t` loop, and each cell has a forward and a backward persistent kernel."""
    source = build_source(read_spec(path), target="cuda")
    assert _driver_time_loops(source) == 0
    for cell in read_spec(path).cells:
        assert f"def forward_{cell}_steps(" in source
        assert f"def backward_{cell}_steps(" in source
    assert "grid.sync()" in source and "launch_persistent(" in source


def _driver(before: list, loop: list) -> list:
    """A driver's statements in the structured form: `before`, then `for t in range(T)`
    over `loop`."""
    from rnndsl.codegen.form import code, for_loop
    block = for_loop(Sym("t", "i"), code("range({})", Sym("T", "i")))
    block.body = loop
    return [*before, block]


def _cols(array, lo: int, hi: int):
    """array[:, lo:hi]"""
    return Arr(array, (("all",), ("slice", Code(str(lo)), Code(str(hi)))))


def _shared_elements(kernel: str) -> int:
    """How many elements a kernel's text declares in shared memory, a name counted once."""
    sizes = {}
    for m in re.finditer(r"^\s*(\w+) = cuda\.shared\.array\((.*), [\w.]+\)$", kernel,
                         re.MULTILINE):
        shape = ast.literal_eval(m.group(2))
        sizes[m.group(1)] = math.prod(shape if isinstance(shape, tuple) else (shape,))
    return sum(sizes.values())


def test_persistent_barriers_follow_the_dependencies():
    """A barrier goes exactly where a phase touches what an earlier phase since the last
    barrier wrote, or writes what one read; views count as the array they view."""
    from rnndsl.codegen.emit_persistent import PersistentLoop
    a, b, c, d, v, w = (Sym(n, "a2") for n in ("a", "b", "c", "d", "v", "w"))
    k0 = Sym("k0", "f")
    driver = _driver(
        [Assign(v, _cols(a, 0, 2))],       # v = a[:, 0:2]
        [Call("copy2", (b, a)), Call("copy2", (c, a)), Call("copy2", (a, d)),
         Call("gemm", (v, b, d)), Call("fill2", (c, k0)), Call("copy2", (d, b)),
         Assign(w, _cols(c, 1, 3)), Call("copy2", (w, b))])
    made = PersistentLoop(driver, {}, k0).kernel("forward_X_steps", "test")
    text, work, params = made.text, made.work, made.params
    body = text.split("for t in range(T):")[1]
    phases = [line.strip() for line in body.splitlines()
              if line.strip().startswith(("# copy2", "# fill2", "# d = ", "grid.sync"))]
    assert phases == [
        "# copy2(b, a)", "# copy2(c, a)",       # both only read a: no barrier
        "grid.sync()", "# copy2(a, d)",         # writes a, which both read
        "grid.sync()", "# d = v @ b: a block a tile, staged in shared memory",  # v is a view of a
        "# fill2(c, k0)",                        # c: last touched before the barrier
        "grid.sync()", "# copy2(d, b)",         # d was written by the GEMM
        "# copy2(w, b)",                         # w views c: untouched since the barrier
        "grid.sync()"]                           # the step's end
    # its parameters: what the phases use (not the in-loop view w), with their kinds
    assert [(p, p.kind) for p in params] == [("T", "i"), ("a", "a2"), ("b", "a2"),
                                             ("c", "a2"), ("d", "a2"), ("k0", "f"),
                                             ("v", "a2")]
    assert "def forward_X_steps(\n    T,\n    a," in text and "d.shape[0]" in work
    assert "= v[i0 + ra0, kb + ka0] if" in text     # a view made before the loop: an argument
    assert "c[r, 1 + j] = b[r, j]" in text     # one made inside it: composed


def test_workspace_arrays_have_the_asked_shape_and_dtype():
    """The drivers' and tapes' allocator; under the simulator (and by default) the
    buffer pool is off and each call allocates."""
    from rnndsl.kernels.cuda import POOL, workspace, workspace_like
    assert not POOL
    for shape, dtype in (((3, 2, 5), np.float32), (7, np.float64), ((0, 4), np.float32)):
        a = workspace(shape, dtype)
        want = (shape,) if isinstance(shape, int) else shape
        assert tuple(a.shape) == want and a.dtype == np.dtype(dtype)
        assert tuple(workspace_like(a).shape) == want


def test_persistent_pass_is_named_only_for_the_cuda_target():
    from rnndsl.schedule.plan import PASSES, passes_for
    assert "persistent" in PASSES and "persistent" not in passes_for(PASSES, "cpu")
    spec_file = read_spec(ROOT / "specs" / "elman.rnn")
    assert "persistent" in build_source(spec_file, target="cuda").split("Optimizations:")[1]
    assert "persistent" not in build_source(spec_file).split("Optimizations:")[1].split("\n")[0]


def test_a_bad_blocks_cap_is_a_clear_error(monkeypatch):
    from rnndsl.kernels.cuda import persistent_grid
    from rnndsl.core.errors import TargetError
    monkeypatch.setenv("RNNDSL_CUDA_BLOCKS", "lots")
    with pytest.raises(TargetError, match="RNNDSL_CUDA_BLOCKS must be a positive whole"):
        persistent_grid(None, 100)
    monkeypatch.setenv("RNNDSL_CUDA_BLOCKS", "8")
    if config.ENABLE_CUDASIM:
        assert persistent_grid(None, 100) == (1, 64)      # the simulator: one block
        return
    from rnndsl.kernels.cuda import _copy1
    a = cuda.device_array(1 << 20, np.float32)
    blocks, threads = persistent_grid(_copy1, 1 << 20, a, a)
    assert blocks == 8 and threads == 256                  # a GPU: the cap holds


def test_the_cuda_doc_example_runs(monkeypatch):
    """docs/cuda.md's Python example, as written (under the simulator here)."""
    text = (ROOT / "docs" / "cuda.md").read_text()
    block = text.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(ROOT)
    scope: dict = {}
    exec(compile(block, "docs/cuda.md", "exec"), scope)
    assert is_device_array(scope["run"].outputs["h"])
    assert is_device_array(scope["grads"].params["U_i"])
    assert tuple(scope["grads"].params["U_i"].shape) == (16, 16)


@pytest.mark.parametrize("lengths", [None, np.array([4, 2, 3])], ids=["full", "lengths"])
def test_a_final_output_stays_on_the_device(lengths):
    """Device arrays in: the `final` output comes back as a device array, its (B, K)
    cotangent may be one, and both match the interpreter."""
    from test_modes import DECLARED      # its cell Cls has `final logits = V @ h'`
    Cuda = rnndsl.load_text(DECLARED, target="cuda", cell="Cls")
    Ref = rnndsl.load_text(DECLARED, target="interp", cell="Cls")
    cell, ref = Cuda(I=3, H=4, K=2, dtype=np.float64), Ref(I=3, H=4, K=2, dtype=np.float64)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(4, 3, 3))
    got, want = cell.forward(cuda.to_device(x), lengths=lengths), ref.forward(x, lengths=lengths)
    assert is_device_array(got.outputs["logits"])
    assert _rel(got.outputs["logits"].copy_to_host(), want.outputs["logits"]) < 1e-12
    d = rng.normal(size=(3, 2))
    g = cell.backward(got, d_outputs={"logits": cuda.to_device(d)})
    gr = ref.backward(want, d_outputs={"logits": d})
    for k in gr.params:
        assert is_device_array(g.params[k])
        assert _rel(g.params[k].copy_to_host(), gr.params[k]) < 1e-10, k


def test_host_arrays_reach_the_device_with_canonical_strides():
    """numba-cuda's DeviceNDArray.reshape on a real GPU (the simulator reshapes with
    NumPy) refuses an array whose strides are not the canonical C strides of its shape,
    even where NumPy calls it contiguous: the length mask, (T, B, 1) with stride 0 on
    its last axis, failed on the H100 with "operation requires copying". Every host
    array goes through fresh_host_copy on its way to the device."""
    from test_modes import DECLARED
    from rnndsl.cells.cuda import fresh_host_copy

    def canonical(shape, itemsize):
        return tuple(itemsize * int(np.prod(shape[k + 1:])) for k in range(len(shape)))
    cell = rnndsl.load_text(DECLARED, target="cuda", cell="Cls")(I=3, H=4, K=2)
    twin = cell._lengths_twin()
    mask = twin._hidden(np.array([4, 2, 3]), None)(4, 3)["length.mask"]
    # the case that failed: NumPy leaves it as it is
    assert np.ascontiguousarray(mask).strides != canonical(mask.shape, mask.itemsize)
    odd = np.ones((4, 3, 2))[:, :, :1]
    for value in (mask, odd, np.broadcast_to(np.ones(3), (4, 3))):
        copy = fresh_host_copy(value)
        assert copy.strides == canonical(copy.shape, copy.itemsize)
        np.testing.assert_array_equal(copy, value)


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_fast_device_views_span_what_numpy_views_span(data):
    """cuda_kernels._basic_view (DeviceArray's O(ndim) slicing on a GPU) against NumPy:
    for random arrays and unit-step slices, the view it makes has NumPy's shape and
    strides and starts and ends where NumPy's view of the same slices does."""
    from numpy.lib.array_utils import byte_bounds

    from rnndsl.kernels.cuda import _basic_view

    class Pointer:                      # stands in for numba-cuda's MemoryPointer
        def __init__(self, start, stop):
            self.start, self.stop = start, stop

        def view(self, start, stop):
            assert 0 <= start <= stop <= self.stop - self.start
            return Pointer(self.start + start, self.start + stop)

    class View:
        def __init__(self, shape, strides, dtype, stream, gpu_data):
            self.shape, self.strides, self.dtype = shape, strides, np.dtype(dtype)
            self.stream, self.gpu_data = stream, gpu_data

    shape = tuple(data.draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    base = np.zeros(shape, np.float32)
    whole = View(base.shape, base.strides, base.dtype, 0, Pointer(0, base.nbytes))
    item = tuple(slice(data.draw(st.integers(0, n)), data.draw(st.integers(0, n)))
                 for n in shape[:data.draw(st.integers(1, len(shape)))])
    want = base[item]
    got = _basic_view(whole, item, View)
    if want.size == 0:
        assert got is None              # left to numba-cuda
        return
    lo, hi = byte_bounds(want)
    origin = byte_bounds(base)[0]
    assert got.shape == want.shape and got.strides == want.strides
    assert got.viewed is whole          # keeps a pooled buffer from going back early
    assert (got.gpu_data.start, got.gpu_data.stop) == (lo - origin, hi - origin)
    assert _basic_view(whole, (0,) + item[1:], View) is None      # an integer index


# (spec, RESIDENT_CAP or None for the default, every dim). Every spec holds its weights
# in test_spec_matches_interpreter (the pass is on by default), and the grid emulator's
# cases below hold them across blocks, in several rounds of items, with split sums; the
# cases at H = 18 (15-40 s of simulator each) wait for RNNDSL_LONG=1.
HELD_CASES = [("lstm", 64, 6)] + (
    [("lstm", None, 18), ("gru_cho", None, 18), ("projected_lstm", None, 18),
     ("gru", None, 18), ("gru_cho", 64, 6)] if LONG else [])


@pytest.mark.parametrize("name,cap,size", HELD_CASES)
def test_held_weights_match_the_interpreter(name, cap, size, tmp_path, monkeypatch):
    """The hold_weights pass: each step's GEMM against the recurrent weights reads them
    from shared memory, where each block loaded its own columns before the first step.
    At H = 18 the weights fit (the simulator's grid is one block of 64 threads, which
    holds them all), and at B = 2 holding pays (1 block x 2 rows <= 72 and 18 columns),
    so the kernels that hold them run: the LSTM's forward has 72 items (4 rows of a
    column) for 64 threads, two rounds, and its backward 18, each summed by 3 threads
    whose parts are added in shared memory. With RESIDENT_CAP at 64 elements they do not
    fit, and the host must launch the kernels that stream them instead. float64, against
    the interpreter."""
    from rnndsl.kernels import cuda as cuda_kernels
    from rnndsl.codegen import emit_persistent
    if cap is not None:
        monkeypatch.setattr(emit_persistent, "RESIDENT_CAP", cap)
    target = tmp_path / f"{name}_held.py"
    write_module(build_source(read_spec(ROOT / "specs" / f"{name}.rnn"), target="cuda"),
                 target)
    source = target.read_text()
    # forward and backward each have a kernel that holds the recurrent product's weights
    assert source.count("held0 = cuda.shared.array(") >= 2
    caps = {int(n) for n in re.findall(r"held\d = cuda.shared.array\((\d+),", source)}
    assert caps and max(caps) <= emit_persistent.RESIDENT_CAP, caps
    module = load_built(target)
    launched = []
    monkeypatch.setattr(module, "launch_persistent", lambda kernel, work, *args: (
        launched.append(kernel.py_func.__name__), cuda_kernels.launch_persistent(
            kernel, work, *args)))
    _built_matches_interpreter(module, name, size, seed=5)
    assert all(n.endswith("_held") == (cap is None) for n in launched), launched


@pytest.mark.parametrize("scheme", ["tiles", "splitk"])
def test_every_persistent_kernel_fits_the_static_shared_memory_limit(scheme, monkeypatch):
    """A block's static shared memory may not pass 48 KiB, a limit the simulator and
    compile_ptx do not enforce (the GPU refuses the launch). Every spec's persistent
    kernels, with their weights held and with each GEMM scheme, counted at 8 bytes an
    element (float64); and the held phases take what the rest leaves."""
    from rnndsl.codegen import emit_persistent
    monkeypatch.setattr(emit_persistent, "GEMM_SCHEME", scheme)
    held = 0
    for path in SPECS:
        source = build_source(read_spec(path), target="cuda")
        for kernel in re.split(r"\n(?=@cuda.jit\n)", source):
            if "grid = cuda.cg.this_grid()" not in kernel:
                continue
            used = _shared_elements(kernel)
            assert used * 8 <= 48 * 1024, (path.stem, kernel.split("(")[0], used)
            held += "held0 = cuda.shared.array(" in kernel
    assert held >= 2 * len(SPECS)


def test_held_weights_leave_alone_what_the_loop_writes_or_indexes_by_step(monkeypatch):
    """Only a right operand that no step writes and that is not a step's slice is held:
    the backward's `tgc0[t] @ ws0_1` holds ws0_1, never the per-step tgc0[t]; and a
    product against a tape (`hist_h[t]`) would be indexed by t. The rule on a made-up
    loop: every gemm's b and what is held."""
    from rnndsl.codegen import emit_persistent
    from rnndsl.codegen.emit_persistent import PersistentLoop
    u, s, w, out1, out2, out3 = (Sym(n, "a2") for n in ("u", "s", "w", "out1", "out2",
                                                         "out3"))
    hist = Arr(Sym("hist", "a3"), (("fix", Sym("t", "i")),))
    driver = _driver([], [Call("gemm", (s, u, out1)), Call("gemm", (s, hist, out2)),
                          Call("gemm", (s, w, out3)), Call("copy2", (w, out1))])
    k0 = Sym("k0", "f")
    plain = PersistentLoop(driver, {}, k0).kernel("k", "about")
    assert plain.held is None and "held" not in plain.text
    made = PersistentLoop(driver, {}, k0, hold=True).kernel("k", "about")
    assert made.text == plain.text              # the kernel that streams them, unchanged
    held = made.held
    text = held.text
    assert held.name == "k_held" and "def k_held(\n    T,\n    hist," in text
    assert [p.kind for p in held.params if p == "hist"] == ["a3"]
    assert "held0 = cuda.shared.array(" in text and "held1" not in text
    assert "u, held in shared memory" in text
    # the two other "tiles" phases share one pair of staging arrays; u takes what they leave
    assert text.count("sa = cuda.shared.array(") == 1
    cap = int(re.search(r"held0 = cuda.shared.array\((\d+),", text).group(1))
    assert _shared_elements(text) == emit_persistent.SHARED_ELEMENTS
    # the host's check: u's depth and columns, the cap, and the rows that every block reads
    assert held.checks == [("u.shape[0]", "u.shape[1]", str(cap), "out1.shape[0]")]
    # on the grid the held kernel asks for, where the check passes, a block's columns fit
    from types import SimpleNamespace as Array

    from rnndsl.kernels import cuda as cuda_kernels
    from rnndsl.kernels.cuda import THREADS, held_grid_fits, held_threads
    monkeypatch.setattr(cuda_kernels, "persistent_grid",
                        lambda kernel, work: (max(1, -(-work // THREADS)), THREADS))
    chosen = []
    for rows, depth, cols in ((64, 512, 2048), (6, 512, 2048), (1, 2048, 512), (3, 1000, 7),
                              (1, 1, 1), (2, 700, 2800), (1, cap - 1, 9), (1, cap, 9)):
        shapes = {n: Array(shape=(rows, depth)) for n in ("s", "w")}
        shapes.update({n: Array(shape=(rows, cols)) for n in ("out1", "out2", "out3")})
        shapes.update(u=Array(shape=(depth, cols)), hist=Array(shape=(9, depth, cols)))
        work = eval(held.work, {"held_threads": held_threads}, shapes)
        checks = [tuple(eval(c, {}, shapes) for c in check) for check in held.checks]
        assert work >= held_threads(depth, cols, cap, rows)
        if held_grid_fits(None, work, checks):
            blocks = -(-work // THREADS)
            assert (depth + 1) * -(-cols // blocks) <= cap and rows * blocks <= cols
            chosen.append((rows, depth, cols))
    # not (64, ...) and (3, ...), where holding does not pay; not (1, cap, 9), whose
    # column padded by one does not fit; not (1, cap - 1, 9), where copy2 widens the
    # grid to 15 blocks (3839 items), each of which would read the row: 15 > 9 columns
    assert chosen == [(6, 512, 2048), (1, 2048, 512), (1, 1, 1), (2, 700, 2800)]


def test_holding_pays_at_small_batches():
    """cuda_kernels.held_threads, the grid a held GEMM asks for, worked by hand for an
    LSTM (cap 5120 elements, what its kernels' other shared arrays leave; a column
    padded by one; 256 threads a block), the numbers docs/cuda.md gives. At H = 512,
    forward: U is 512 x 2048, 9 columns a block (10 x 513 > 5120), 228 blocks, each
    reading the step's B rows of h: holding reads 228 B rows of 512 against U's 2048
    columns of 512, so it pays up to B = 8; backward: U^T is 2048 x 512, 2 columns a
    block, 256 blocks, up to B = 2. At H = 1024: 4 columns a block and 1024 blocks
    forward (B <= 4), 1 column and 1024 blocks backward (B = 1). A column that does not
    fit asks for nothing."""
    from rnndsl.kernels.cuda import held_threads
    source = build_source(read_spec(ROOT / "specs" / "lstm.rnn"), target="cuda")
    assert set(re.findall(r"held0 = cuda.shared.array\((\d+),", source)) == {"5120"}
    assert held_threads(512, 2048, 5120, 8) == 228 * 256
    assert held_threads(512, 2048, 5120, 9) == 0
    assert held_threads(2048, 512, 5120, 2) == 256 * 256
    assert held_threads(2048, 512, 5120, 3) == 0
    assert held_threads(1024, 4096, 5120, 4) == 1024 * 256
    assert held_threads(1024, 4096, 5120, 5) == 0
    assert held_threads(4096, 1024, 5120, 1) == 1024 * 256
    assert held_threads(4096, 1024, 5120, 2) == 0
    assert held_threads(512, 2048, 5120) == 228 * 256        # rows 0: wherever it fits
    assert held_threads(6000, 10, 5120, 1) == 0               # a column does not fit


def test_a_step_holds_where_it_pays_and_streams_where_not():
    """At B = 5 and H = 3 the LSTM's forward holds U (3 x 12: one simulated block x 5
    rows <= 12 columns) and its backward streams U^T (12 x 3: 5 rows > 3 columns), the
    two paths in one cell, against the interpreter in float64."""
    source = build_source(read_spec(ROOT / "specs" / "lstm.rnn"), target="cuda")
    assert "def forward_LSTM_steps_held(" in source and "def backward_LSTM_steps_held(" in source
    _matches_interpreter(ROOT / "specs" / "lstm.rnn", np.float64, batch=5)


# the simulator's one block of 64 threads; test_splitk_gemm_phases_on_a_grid_of_several_blocks
# runs the LSTM's by default, on two blocks
@pytest.mark.skipif(not LONG, reason="RNNDSL_LONG=1 only (20 s each on the simulator)")
@pytest.mark.parametrize("name", ["lstm", "gru", "projected_lstm"])
def test_splitk_gemm_phases_match_the_interpreter(name, tmp_path, monkeypatch):
    """emit_persistent's "splitk" GEMM phases (16 x 16 tiles, K split among 16-thread
    groups, partial sums added in shared memory), not yet the default: at sizes that
    give several tiles, partial tiles and several rounds of K (H = 18: the backward's
    product has K = 72, three rounds on the simulator), float64, against the
    interpreter. With RNNDSL_LONG=1 (20 s each)."""
    from rnndsl.codegen import emit_persistent
    monkeypatch.setattr(emit_persistent, "GEMM_SCHEME", "splitk")
    target = tmp_path / f"{name}_splitk.py"
    write_module(build_source(read_spec(ROOT / "specs" / f"{name}.rnn"), target="cuda"),
                 target)
    source = target.read_text()
    assert "K split among its 16-thread groups" in source
    _built_matches_interpreter(load_built(target), name, 18, seed=3)


# (spec, batch, every other dim, blocks, passes off) on blocks of 8 threads: the
# simulator runs a cooperative grid as one block, so what a block does among several ran
# only on a GPU until tests/grid_emulator.py. At B = 1 every product is held: for the
# LSTM, U's 20 columns 7 a block (the last block 6) forward, 7 items for 8 threads, and
# U^T's 5 columns 2 a block (the last 1) backward, each 5-deep sum split among 4
# threads. By default the specs that between them hold every kind of phase (two held
# products a step, layer-norm reductions, several inputs and three held products); the
# rest with RNNDSL_LONG=1. The LSTM at B = 5, H = 4: 12 items a block forward, two
# rounds, while the backward streams (3 blocks x 5 rows > 4 columns); without the pass,
# the "tiles" phases at B = 17 have two row tiles (17 > 16 rows), one a block. With
# RNNDSL_LONG=1 every spec at B = 5 too, and the GRU without the pass on 4 blocks.
GRID_SPECS = [p for p in SPECS if LONG or p.stem in (
    "lstm", "gru_cho", "layernorm_lstm", "two_streams")]
GRID_CASES = [(p.stem, 1, 5, 3, ()) for p in GRID_SPECS] + [
    ("lstm", 5, 4, 3, ()), ("lstm", 17, 2, 2, ("hold_weights",))] + (
    [(p.stem, 5, 5, 3, ()) for p in SPECS if p.stem != "lstm"]
    + [("gru", 3, 7, 4, ("hold_weights",))] if LONG else [])


@pytest.mark.parametrize("name,batch,size,blocks,off", GRID_CASES)
def test_persistent_kernels_on_a_grid_of_several_blocks(name, batch, size, blocks, off,
                                                        tmp_path, monkeypatch):
    """The persistent kernels on a cooperative grid of several blocks of 8 threads, run
    at once on CPU threads (tests/grid_emulator.py: each block its own shared memory,
    filled with NaN; syncthreads a block's barrier, grid.sync the grid's), float64,
    outputs and every gradient against the interpreter; and which kernels ran: at B = 1
    the ones that hold the weights, without the pass the ones that stream them."""
    launched = _on_a_grid(name, batch, size, blocks, 8, off, tmp_path, monkeypatch)
    if off:
        assert not any(k.endswith("_held") for k in launched), launched
    elif batch == 1:
        assert all(k.endswith("_held") for k in launched), launched
    elif (name, batch, size) == ("lstm", 5, 4):
        assert launched == ["forward_LSTM_steps_held", "backward_LSTM_steps"], launched


def test_splitk_gemm_phases_on_a_grid_of_several_blocks(tmp_path, monkeypatch):
    """The "splitk" GEMM phases (not the default) across 2 blocks of 16 threads, one
    16-thread group each: the LSTM at B = 2, H = 9 has 3 output tiles forward (the last
    4 columns wide) and 1 backward (9 wide), and the backward's K = 36 takes 5 rounds
    of 8 rows. Its weights are streamed (hold_weights off), so that every product takes
    the "splitk" phase. (The one-block simulator runs, with RNNDSL_LONG=1, go to
    H = 18.)"""
    from rnndsl.codegen import emit_persistent
    monkeypatch.setattr(emit_persistent, "GEMM_SCHEME", "splitk")
    _on_a_grid("lstm", 2, 9, 2, 16, ("hold_weights",), tmp_path, monkeypatch)
    source = (tmp_path / "lstm_grid.py").read_text()
    assert "K split among its 16-thread groups" in source


def _on_a_grid(name, batch, size, blocks, threads, off, tmp_path, monkeypatch) -> list[str]:
    """Build `name` without the passes `off`, run its persistent kernels on the grid
    emulator (on a GPU, on the GPU with the same grid: the choice between holding and
    streaming the weights is made for that grid), and compare with the interpreter
    (float64); returns the names of the kernels launched."""
    from grid_emulator import run_grid

    from rnndsl.kernels import cuda as cuda_kernels
    from rnndsl.schedule.plan import PASSES
    monkeypatch.setattr(cuda_kernels, "persistent_grid", lambda *_: (blocks, threads))
    passes = [p for p in PASSES if p not in off]
    target = tmp_path / f"{name}_grid.py"
    spec = ROOT / "specs" / f"{name}.rnn"
    write_module(build_source(read_spec(spec), passes, target="cuda"), target)
    module = load_built(target)
    launched = []

    def launch(kernel, work, *args):
        launched.append(kernel)
        if config.ENABLE_CUDASIM:
            run_grid(kernel, blocks, threads, *args)
        else:           # RNNDSL_REAL_GPU=1: the same small grid, on the GPU
            kernel[blocks, threads](*args)
    monkeypatch.setattr(module, "launch_persistent", launch)
    cls = getattr(module, module.CELLS[0])
    Ref = rnndsl.load(spec, target="interp")
    dims = {d: size for d in Ref.spec.dims}
    cell, ref = cls(dtype=np.float64, seed=4, **dims), Ref(dtype=np.float64, seed=4, **dims)
    rng = np.random.default_rng(9)
    x = _inputs(cell, rng, np.float64, batch)
    run, want = cell.forward(x), ref.forward(x)
    d_out = {k: rng.normal(size=v.shape) for k, v in want.outputs.items()}
    got, exp = cell.backward(run, d_outputs=d_out), ref.backward(want, d_outputs=d_out)
    names = [k.py_func.__name__ for k in launched]
    # both time loops ran on the emulated grid
    assert {n.split("_")[0] for n in names} == {"forward", "backward"}
    for key, value in want.outputs.items():
        assert _rel(run.outputs[key], value) < 1e-10, key
    for kind in ("params", "inputs", "state"):
        for key, value in getattr(exp, kind).items():
            assert _rel(getattr(got, kind)[key], value) < 1e-10, (kind, key)
    return names


def test_the_weights_are_streamed_when_python_switches_the_pass_off(tmp_path, monkeypatch):
    """rnndsl.load(..., no_passes=["hold_weights"]): the persistent kernels read the
    recurrent weights from global memory at every step; by default they hold them."""
    monkeypatch.setenv("RNNDSL_CACHE_DIR", str(tmp_path))
    spec = ROOT / "specs" / "gru.rnn"
    held = Path(rnndsl.load(spec, target="cuda").kernels.__file__).read_text()
    streamed = rnndsl.load(spec, target="cuda", no_passes=["hold_weights"])
    text = Path(streamed.kernels.__file__).read_text()
    assert "held0 = cuda.shared.array(" in held
    assert "held0" not in text and "held_threads(" not in text and "grid.sync()" in text
    assert "hold_weights" not in streamed.meta["passes"]


def test_device_padding_is_never_computed_with():
    """A zero-padded log(x) on the device made a finished sequence's state NaN, as it
    did on the host (tests/cells/test_modes.py): padded steps read the last input."""
    text = ("cell LogAcc {\n  dims H\n  input x[H]\n  state h[H]\n  param w[H] ~ ones\n"
            "  h' = 0.5 * h + w * log(x)\n  output y = log(x)\n}\n")
    cell = rnndsl.load_text(text, target="cuda")(H=2, dtype=np.float64)
    ref = rnndsl.load_text(text, target="interp")(H=2, dtype=np.float64)
    x = np.full((3, 3, 2), 2.0)
    x[2:, 1] = 0.0
    x[:, 2] = 0.0                                   # a row of length 0
    lengths = np.array([3, 2, 0])
    got = cell.forward(cuda.to_device(x), lengths=lengths)
    want = ref.forward(x, lengths=lengths)
    state = got.state["h"].copy_to_host()
    assert np.isfinite(state).all()
    assert _rel(state, want.state["h"]) < 1e-12
    assert _rel(got.outputs["y"].copy_to_host(), want.outputs["y"]) < 1e-12
