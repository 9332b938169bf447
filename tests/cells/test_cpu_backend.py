"""The CPU target against the reference interpreter, and how builds behave.

Compiled kernels are built once per (spec, passes) into a session folder and compiled
once per dtype; Hypothesis examples then vary only shapes, which Numba does not
recompile for. Tolerances are DESIGN.md's: relative 1e-10 in float64, 1e-4 in float32.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnndsl
from rnndsl.build.modules import build_source, load_built, write_module
from rnndsl.core.errors import BindError
from rnndsl.cells.gradcheck import default_dims
from rnndsl.schedule.plan import PASSES
from rnndsl.lang.specfile import read_spec

REPO = Path(__file__).resolve().parents[2]
SPECS = sorted((REPO / "specs").glob("*.rnn"))
TOL = {np.float64: 1e-10, np.float32: 1e-4}
# The full matrix (every spec x dtype x passes on/off) compiles 48 kernel pairs; by
# default passes-off runs on a representative subset. RNNDSL_LONG=1 runs all of it.
LONG = os.environ.get("RNNDSL_LONG") == "1"
PASSES_OFF_SPECS = {"lstm", "gru", "two_streams"}
# A stack of two LSTMs: tests/cells/test_layers.py checks it compiled against its layers run one
# after the other; compiling it once more here costs 40 s of the suite.
LONG_ONLY_SPECS = {"char_lstm"}
# float32 by default on the specs that between them hold every float32 code path (the
# rational tanh and sigmoid, relu, layer norm's sqrt and division, a scalar param); the
# others' kernels differ from these only in structure, which float64 checks more tightly
# (1e-10 against 1e-4). RNNDSL_LONG=1 runs every spec in both.
FLOAT32_SPECS = {"elman", "elman_relu", "lstm", "gru", "layernorm_lstm", "two_streams"}


@pytest.fixture(scope="session")
def build_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cpu_build")


_built: dict = {}


def compiled(spec_path: Path, passes: tuple, folder: Path):
    """The spec's first cell compiled with `passes`. With every pass, through rnndsl.load
    and its cache: the module the user gets, whose Numba kernels the suite's other tests
    (docs, examples, layers) then load instead of compiling them again."""
    key = (spec_path, passes)
    if key not in _built and set(passes) == set(PASSES):
        module_cells = read_spec(spec_path).cells
        _built[key] = rnndsl.load(spec_path, target="cpu", cell=next(iter(module_cells)))
    if key not in _built:
        off = [p for p in PASSES if p not in passes]
        sub = folder / ("on" if not off else "off" if not passes else "no-" + "-".join(off))
        out = sub / f"{spec_path.stem}.py"
        write_module(build_source(read_spec(spec_path), passes), out)
        module = load_built(out)
        _built[key] = getattr(module, module.CELLS[0])
    return _built[key]


def rel(a, b, floor: float = 1e-30) -> float:
    """Max error relative to the reference's largest entry, or to `floor` when that is
    smaller: a gradient that is zero but for rounding (a softmax's, summed) has no
    relative error to speak of, only an error against the scale of the whole run. A run
    that is zero throughout (a ReLU cell whose units are all off) compares against the
    smallest normal float: any difference at all is then an error."""
    scale = max(float(np.abs(b).max()), floor, np.finfo(np.float64).tiny) if b.size else 1.0
    return float(np.abs(a - b).max()) / scale if b.size else 0.0


def compare(Compiled, spec_path, dtype, T, B, dims=None, seed=0):
    """The compiled cell in `dtype` against the interpreter in float64 on the same
    values (for float32: the float32 params and data, exactly widened), so that the
    error measured is the compiled cell's own: a float32 interpreter rounds too, and a
    gradient summed with cancellation (a GRU's U_z at H = 1: 0.00122 from terms of ~1)
    once differed between the two float32 runs by 1.5e-4 of itself, the interpreter's
    error four times the compiled cell's."""
    Interp = rnndsl.load(spec_path, target="interp")
    dims = dims or default_dims(Interp.spec)
    c = Compiled(dtype=dtype, seed=seed, **dims)
    i = Interp(dtype=np.float64, seed=seed, **dims)
    rng = np.random.default_rng(seed)
    for name in c.params:
        value = rng.uniform(-0.5, 0.5, size=c.params[name].shape).astype(dtype)
        c.params[name][...] = value
        i.params[name][...] = value
    x = {d.name: (rng.integers(0, c._size(d)[0], (T, B)) if d.token else   # ids
                  rng.normal(size=(T, B) + c._size(d)).astype(dtype))
         for d in Interp.spec.inputs}
    s0 = {d.name: rng.normal(size=(B,) + c._size(d)).astype(dtype) for d in Interp.spec.states}

    def wide(arrays: dict) -> dict:
        return {k: v if v.dtype.kind in "iu" else v.astype(np.float64)
                for k, v in arrays.items()}
    rc, ri = c.forward(x, state=s0), i.forward(wide(x), state=wide(s0))
    d_out = {k: rng.normal(size=v.shape).astype(dtype) for k, v in ri.outputs.items()}
    d_st = {k: rng.normal(size=v.shape).astype(dtype) for k, v in ri.state.items()}
    gc = c.backward(rc, d_outputs=d_out, d_state=d_st)
    gi = i.backward(ri, d_outputs=wide(d_out), d_state=wide(d_st))
    errors = {}
    every = [*ri.outputs.values(), *gi.params.values(), *gi.inputs.values(),
             *gi.state.values()]
    # A gradient that is zero but for rounding (a shift a softmax cancels, summed over
    # T*B rows) differs between two summation orders by a few ulps of the terms it sums:
    # 3.3e-16 against a largest value of 1.3 in a random cell. A floor of 1e-4 of the
    # run's largest value asks those to agree to 1e-14 of it (about 45 ulps), while a
    # wrong term in any gradient is still off by far more.
    floor = 1e-4 * max(float(np.abs(v).max()) for v in every if v.size)
    for k in ri.outputs:
        assert rc.outputs[k].shape == ri.outputs[k].shape and rc.outputs[k].dtype == dtype
        # an output that is zero but for rounding (the sum of a layer-normalised vector:
        # 2e-16 in a random cell) is compared against the run's scale, as gradients are
        errors[f"output {k}"] = rel(rc.outputs[k], ri.outputs[k], floor)
    for k in ri.state:
        errors[f"final state {k}"] = rel(rc.state[k], ri.state[k])
    for k in gi.params:
        assert gc.params[k].shape == gi.params[k].shape and gc.params[k].dtype == dtype
        errors[f"d param {k}"] = rel(gc.params[k], gi.params[k], floor)
    for k in gi.inputs:
        errors[f"d input {k}"] = rel(gc.inputs[k], gi.inputs[k], floor)
    for k in gi.state:
        errors[f"d state {k}"] = rel(gc.state[k], gi.state[k], floor)
    bad = {k: v for k, v in errors.items() if not v < TOL[dtype]}
    assert not bad, f"compiled differs from interp ({np.dtype(dtype).name}): {bad}"
    return errors


CASES = [(spec, dtype, passes)
         for spec in SPECS for dtype in (np.float64, np.float32)
         for passes in (tuple(PASSES), ())
         if (passes or LONG or (spec.stem in PASSES_OFF_SPECS and dtype == np.float64))
         and (LONG or spec.stem not in LONG_ONLY_SPECS)
         and (LONG or dtype == np.float64 or spec.stem in FLOAT32_SPECS)]


@pytest.mark.parametrize("spec,dtype,passes", CASES, ids=[
    f"{s.stem}-{np.dtype(d).name}-{'on' if p else 'off'}" for s, d, p in CASES])
def test_compiled_matches_interp(spec, dtype, passes, build_dir):
    # B = 11 with the passes on: the per-step GEMMs take rnndsl.kernels.gemm's register tiles
    # (B >= MR = 8: one 8-row tile and three single rows); B = 3 takes BLAS
    compare(compiled(spec, passes, build_dir), spec, dtype, T=4, B=11 if passes else 3)


# Specs and dtypes whose kernels test_compiled_matches_interp has compiled already (the
# examples compile nothing); RNNDSL_LONG=1 takes every spec in float64 and the plain
# ones in float32 too. Not the layer-normalised LSTM in float32: normalising H = 2
# features gives +-1 whatever the inputs, so its gradients are rounding noise around
# zero in both the kernel and the float32 interpreter (relative "errors" of 3e-3).
SHAPE_CASES = ([(s.stem, np.float64) for s in SPECS]
               + [(stem, np.float32) for stem in ("elman", "gru", "lstm", "two_streams")]
               if LONG else
               [("lstm", np.float64), ("two_streams", np.float64), ("gru", np.float32),
                ("layernorm_lstm", np.float64)])
# 15 examples each in the default profile; HYPOTHESIS_PROFILE=long's count otherwise
SHAPE_EXAMPLES = (15 if os.environ.get("HYPOTHESIS_PROFILE", "fast") == "fast"
                  else settings.default.max_examples)


@pytest.mark.parametrize("stem,dtype", SHAPE_CASES,
                         ids=[f"{s}-{np.dtype(d).name}" for s, d in SHAPE_CASES])
@settings(max_examples=SHAPE_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(T=st.integers(1, 6), B=st.integers(1, 12), sizes=st.lists(st.integers(1, 6), min_size=4,
                                                               max_size=4), seed=st.integers(0, 99))
def test_compiled_matches_interp_any_shape(stem, dtype, T, B, sizes, seed, build_dir):
    """T = 1 and B = 1 included; B from 8 takes the register tiles."""
    spec = REPO / "specs" / f"{stem}.rnn"
    Compiled = compiled(spec, tuple(PASSES), build_dir)
    dims = dict(zip(Compiled.spec.dims, sizes))
    compare(Compiled, spec, dtype, T=T, B=B, dims=dims, seed=seed)


def test_load_cpu_uses_cache_across_processes(tmp_path):
    env = dict(os.environ, RNNDSL_CACHE_DIR=str(tmp_path / "cache"))
    probe = ("import rnndsl, numpy as np, sys\n"
             "C = rnndsl.load(sys.argv[1], target='cpu')\n"
             "c = C(I=2, H=3, dtype=np.float64)\n"
             "print(C.kernels.__file__, c.forward(np.ones((2, 1, 2))).outputs['h'].sum())\n")
    spec = REPO / "specs" / "elman_relu.rnn"
    runs = [subprocess.run([sys.executable, "-c", probe, str(spec)], env=env,
                           capture_output=True, text=True, timeout=600) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    first, second = (r.stdout.split() for r in runs)
    assert first == second
    built = list((tmp_path / "cache").glob("*.py"))
    assert len(built) == 1 and str(built[0]) == first[0]
    assert list((tmp_path / "cache" / "__pycache__").glob("*.nbi")), "no Numba cache index"


def test_edited_spec_is_rebuilt_not_served_stale(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNDSL_CACHE_DIR", str(tmp_path / "cache"))
    spec = tmp_path / "cell.rnn"
    text = (REPO / "specs" / "elman_relu.rnn").read_text()
    spec.write_text(text)
    first = rnndsl.load(spec, target="cpu")
    spec.write_text(text.replace("relu(", "tanh("))
    second = rnndsl.load(spec, target="cpu")
    assert first.kernels.__file__ != second.kernels.__file__
    x = np.full((1, 1, 2), -3.0)
    c1, c2 = first(I=2, H=2, dtype=np.float64), second(I=2, H=2, dtype=np.float64)
    c2.params.update({k: v.copy() for k, v in c1.params.items()})
    y1, y2 = c1.forward(x).outputs["h"], c2.forward(x).outputs["h"]
    assert (y1 >= 0).all() and not np.allclose(y1, y2)


def test_generated_source_is_deterministic_and_valid():
    spec = read_spec(REPO / "specs" / "gru.rnn")
    a, b = build_source(spec), build_source(read_spec(REPO / "specs" / "gru.rnn"))
    assert a == b
    compile(a, "gru.py", "exec")
    assert "# r = sigmoid(W_r @ x + U_r @ h + b_r)" in a
    assert f"spec hash {spec.digest}" in a and f"rnndsl {rnndsl.__version__}" in a


def test_failed_write_leaves_previous_module(tmp_path, monkeypatch):
    out = tmp_path / "lstm.py"
    good = build_source(read_spec(REPO / "specs" / "lstm.rnn"))
    write_module(good, out)

    def explode(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", explode)
    with pytest.raises(OSError):
        write_module(good.replace("LSTM", "Other"), out)
    assert out.read_text() == good
    assert [p.name for p in tmp_path.iterdir()] == ["lstm.py"], "temporary file left behind"


def test_disable_jit_runs_the_same_file_as_python(tmp_path):
    out = tmp_path / "mgu.py"
    write_module(build_source(read_spec(REPO / "specs" / "mgu.rnn")), out)
    probe = ("import sys, numpy as np\n"
             "from rnndsl.build.modules import load_built\n"
             "from pathlib import Path\n"
             "m = load_built(Path(sys.argv[1]))\n"
             "import numba\n"
             "assert numba.config.DISABLE_JIT\n"
             "c = m.MGU(I=2, H=3, dtype=np.float64, seed=1)\n"
             "r = c.forward(np.ones((3, 2, 2)))\n"
             "g = c.backward(r, d_outputs={'h': np.ones((3, 2, 3))})\n"
             "print(float(r.outputs['h'].sum()), float(g.params['U_f'].sum()))\n")
    env = dict(os.environ, NUMBA_DISABLE_JIT="1")
    done = subprocess.run([sys.executable, "-c", probe, str(out)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    Interp = rnndsl.load(REPO / "specs" / "mgu.rnn", target="interp")
    i = Interp(I=2, H=3, dtype=np.float64, seed=1)
    ri = i.forward(np.ones((3, 2, 2)))
    gi = i.backward(ri, d_outputs={"h": np.ones((3, 2, 3))})
    y, dU = map(float, done.stdout.split())
    assert abs(y - ri.outputs["h"].sum()) < 1e-9 and abs(dU - gi.params["U_f"].sum()) < 1e-9


# Random cells compile afresh (seconds each), so a handful by default, each with the
# passes on or off as Hypothesis draws it (both with RNNDSL_LONG=1);
# RNNDSL_RANDOM_CPU_CELLS=N runs N (this count wins over the Hypothesis profile).
@settings(max_examples=int(os.environ.get("RNNDSL_RANDOM_CPU_CELLS", "4")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_cells_compiled_match_interp(data, tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from strategies_cells import cells
    cell = data.draw(cells(max_depth=2, max_B=10))   # B >= 8 takes the register tiles
    folder = tmp_path_factory.mktemp("random_cell")
    spec = folder / "random.rnn"
    spec.write_text(cell.text)
    both = (tuple(PASSES), ())
    for passes in both if LONG else (data.draw(st.sampled_from(both), label="passes"),):
        out = folder / ("on" if passes else "off") / "random.py"
        write_module(build_source(read_spec(spec), passes), out)
        Compiled = getattr(load_built(out), load_built(out).CELLS[0])
        compare(Compiled, spec, np.float64, T=cell.T, B=cell.B, dims=cell.dims)


def test_generated_code_names_values_after_the_spec():
    """The values the spec names carry their names (codegen/naming.py): a gate's scalar
    `e_i`, its tape `tape_i` (a kernel argument), the next state's work array
    `w_c__next`; values the spec does not name (gradients, temporaries) keep numbers."""
    source = build_source(read_spec(REPO / "specs" / "lstm.rnn"))
    forward = source[source.index("def forward_LSTM("):source.index("def backward_LSTM(")]
    for gate, fn in (("i", "sigmoid"), ("f", "sigmoid"), ("g", "tanh"), ("o", "sigmoid")):
        assert re.search(rf"^ +e_{gate} = {fn}\(.*\)  # {gate}$", forward, re.MULTILINE), gate
        assert re.search(rf"^    tape_{gate}, +# {gate} at every step, written", forward,
                         re.MULTILINE), gate
        assert f"tape_{gate}[t, r, j] = e_{gate}\n" in forward, gate
    assert re.search(r"^ +e_c__next = e\d+ \+ e\d+  # c'$", forward, re.MULTILINE)
    assert "w_c__next[r, j] = e_c__next" in forward and "copy2(s_c, w_c__next)" in forward
    assert re.search(r"^ +e\d+ = e\d+ \+ p_b_i\[j\]$", forward, re.MULTILINE)   # unnamed
    # no named value under its number: the lines that compute them name them
    assert not re.search(r"^ +(e|w|v|tape)\d+ = .*  # [ifgoch]'?$", forward, re.MULTILINE)
    assert "Saved values with a name in the spec" not in source    # the names say it


# Lets named like the names a kernel gives itself, or would give a value under a naive
# rule (`e_i` beside `i`, `c_next` beside c', `k0`, `copy2`, `tiles`, `t`, a Python keyword)
NAMES_LIKE_GENERATED = """
cell Named {
  dims I, H
  input x[I]
  state c[H], h[H]
  param W[H, I], U[H, H], b[H]
  t = W @ x + U @ h + b
  tiles = sigmoid(t)
  copy2 = tanh(t)
  k0 = tiles * copy2
  e_i = k0 + c
  i = e_i * tiles
  lambda = tanh(i)
  c_next = lambda * copy2
  dtype = c_next + e_i
  np = dtype * i
  r = np + k0
  c' = dtype + r
  h' = i * tanh(c') + c_next
  output y = h'
}
"""


def test_names_like_generated_ones_keep_apart(tmp_path):
    """Every such let gets its own prefixed name (`e_t`, `e_copy2`, `e_e_i`, `e_lambda`,
    ...), apart from the kernel's own `t`, `tiles`, `copy2`, `k0`, `np`, `r` and from
    each other; the cell matches the interpreter."""
    spec = tmp_path / "named.rnn"
    spec.write_text(NAMES_LIKE_GENERATED)
    source = build_source(read_spec(spec))
    forward = source[source.index("def forward_Named("):source.index("def backward_Named(")]
    for name in ("t", "tiles", "copy2", "k0", "e_i", "i", "lambda", "c_next", "dtype", "np",
                 "r", "c__next", "h__next"):
        assert re.search(rf"^ +e_{name} = .*  # {name.replace('__next', chr(39))}$",
                         forward, re.MULTILINE), name
    for passes in (tuple(PASSES), ()):
        out = tmp_path / ("on" if passes else "off") / "named.py"
        write_module(build_source(read_spec(spec), passes), out)
        compare(load_built(out).Named, spec, np.float64, T=4, B=9)


# Every kind of name that gets a 2-D rows view (`in_x` -> `in_x_r`), beside a name that
# ends in `_r`: the generated code once read input x_r as x's view, silently.
CLASHING_NAMES = """
cell Clash {
  dims I, H
  input x[I], x_r[I]
  state h[H], h_r[H], h_r_[H]
  param W[H, I], W_r[H, I], U[H, H], U_r[H, H]
  h' = tanh(W @ x + U @ h + W_r @ x_r)
  h_r' = sigmoid(U_r @ h_r + W @ x_r) * h
  h_r_' = h_r' + h_r_
  output y = h' * h_r'
  output y_r = h' + h_r_'
}
"""


def test_names_ending_in_r_are_not_other_names_rows_views(tmp_path):
    spec = tmp_path / "clash.rnn"
    spec.write_text(CLASHING_NAMES)
    source = build_source(read_spec(spec))
    for name in ("in_x_r", "in_x_r_", "in_x_r__r", "hist_h_r__r", "s_h_r__", "out_y_r_"):
        assert re.search(rf"\b{name}\b", source), name
    compare(rnndsl.load(spec, target="cpu"), spec, np.float64, T=4, B=9)


@pytest.mark.parametrize("spec", SPECS, ids=[s.stem for s in SPECS])
def test_every_loop_of_the_backward_step_names_its_equations(spec):
    """Issue 3: each block carries a comment naming the equation it implements. In the
    backward's time loop, every loop nest (fused elementwise work, row sums) opens with
    the equations it differentiates, or the state whose uses it sums."""
    source = build_source(read_spec(spec))
    lines = source.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("def backward_"))
    end = next(i for i in range(start + 1, len(lines)) if lines[i].startswith(("def ", "#", "@")))
    nests = [i for i in range(start, end) if re.match(r"        for r in range", lines[i])]
    assert nests, "no loop in the backward's time loop"
    unnamed = [lines[i].strip() + f" (line {i + 1})" for i in nests
               if not lines[i - 1].lstrip().startswith("# gradient ")]
    assert not unnamed, unnamed
    if spec.stem == "lstm":
        assert "# gradient through c' = f * c + i * g" in "\n".join(lines[start:end])


def test_weight_used_twice_sums_matrix_gradients(tmp_path):
    """Found by the random cells: W1 @ x0 and W1 @ s1 add two matrix gradients."""
    spec = tmp_path / "twice.rnn"
    spec.write_text("cell Twice {\n  dims D0, D1\n  input x0[D0]\n  state s0[D0], s1[D0]\n"
                    "  param W1[D0, D0], W2[D1, D0], W3[D1, D0]\n"
                    "  s0' = hard_sigmoid(W1 @ x0 + x0 + s1)\n  s1' = tanh(W1 @ s1 + s0)\n"
                    "  output y0 = W2 @ s0'\n  output y1 = W3 @ s0'\n}\n")
    for passes in (tuple(PASSES), ()):
        out = tmp_path / ("on" if passes else "off") / "twice.py"
        write_module(build_source(read_spec(spec), passes), out)
        compare(load_built(out).Twice, spec, np.float64, T=3, B=2, dims={"D0": 3, "D1": 2})


def test_backward_hoisted_work_reads_forward_hoisted_values_from_tape(tmp_path):
    """Found by the random cells: min(mean(W2 @ x1), ...) needs, in BPTT, a hoisted
    comparison that reads the forward kernel's hoisted mean."""
    spec = tmp_path / "minmean.rnn"
    spec.write_text("cell MinMean {\n  dims D0\n  input x0[D0], x1[D0]\n  state s0[D0]\n"
                    "  param W1[D0, D0], W2[D0, D0]\n"
                    "  s0' = 0.5 * s0 + 0.5 * tanh(s0 + min(mean(W2 @ x1), 2 * (W1 @ x0)))\n"
                    "  output y0 = s0'\n}\n")
    for passes in (tuple(PASSES), ()):
        out = tmp_path / ("on" if passes else "off") / "minmean.py"
        write_module(build_source(read_spec(spec), passes), out)
        compare(load_built(out).MinMean, spec, np.float64, T=2, B=3, dims={"D0": 3})


@pytest.mark.parametrize("name,body", [
    ("Swap", "  state a[D], b[D]\n  param W[D, D]\n  a' = b\n  b' = a + tanh(W @ x)\n"
             "  output y = b'\n"),
    # a' reads a slice of the state s: a view of its buffer, not a copy
    ("Halves", "  state s[2 * D], a[D]\n  param W[2 * D, D]\n"
               "  s' = tanh(W @ x + concat(a, a))\n  a' = s[D:2 * D]\n  output y = a'\n"),
])
def test_states_handed_on_unchanged_keep_their_old_values_apart(name, body, tmp_path):
    """a' = b, or a' = a slice of s: a next state is another state as it stood at the
    step's start, so the forward keeps the new states apart (nx_*) until all are
    written, and BPTT its new state gradients (nds_*). The LSTM, whose next states and
    state gradients are all computed, writes them straight into s_* and ds_*."""
    spec = tmp_path / f"{name.lower()}.rnn"
    spec.write_text(f"cell {name} {{\n  dims D\n  input x[D]\n{body}}}\n")
    source = build_source(read_spec(spec))
    assert "copy2(s_a, nx_a)" in source
    if name == "Swap":
        assert "copy2(ds_a, nds_a)" in source and "copy2(ds_b, nds_b)" in source
    lstm = build_source(read_spec(REPO / "specs" / "lstm.rnn"))
    assert "nds_" not in lstm and "nx_" not in lstm
    for passes in (tuple(PASSES), ()):
        out = tmp_path / ("on" if passes else "off") / f"{name.lower()}.py"
        write_module(build_source(read_spec(spec), passes), out)
        compare(getattr(load_built(out), name), spec, np.float64, T=4, B=3, dims={"D": 3})


def test_an_unbatched_slice_in_the_backward_loop_is_named_as_it_is_read(tmp_path):
    """A param's gradient through a slice of a concat (y0 = concat(p, p)[D1:2 D1]) is an
    unbatched slice computed in the backward loop when nothing is hoisted: it was
    written as v<id> while its readers read w<id>, and the backward failed to compile
    (NameError: w44; found by the random cells)."""
    text = textwrap.dedent("""\
        cell C {
          dims D0, D1
          input x0[D0]
          state s0[D0] = 0.5
          param W2[D0, D0], p8[D1]
          s0' = tanh(W2 @ s0 + x0)
          output y0 = concat(p8, p8)[D1:D1 + D1]
          output s0'
        }
        """)
    spec = tmp_path / "slice.rnn"
    spec.write_text(text)
    for passes in (tuple(PASSES), ()):
        out = tmp_path / ("on" if passes else "off") / "slice.py"
        write_module(build_source(read_spec(spec), passes), out)
        compare(getattr(load_built(out), "C"), spec, np.float64, T=3, B=2,
                dims={"D0": 4, "D1": 3})


def test_sums_of_zero_terms_fold_away():
    """A stacked g_k @ W_k sum's GEMM writes the whole sum into its first term; the other
    terms are zero, and the adds of them compile to nothing: the LSTM's dh and dx are
    read straight from their GEMMs' outputs (before: a loop adding k1 + k1 + k1 to each
    element, and a copy)."""
    source = build_source(read_spec(REPO / "specs" / "lstm.rnn"))
    backward = source[source.index("def backward_LSTM"):source.index("LSTM_META")]
    k0 = re.search(r"(k\d+) = consts\[\d+\]  # 0\.0", backward)
    assert k0, "the LSTM's backward reads a 0.0"
    assert not re.search(rf"\b{k0.group(1)} \+|\+ {k0.group(1)}\b", backward)
    gemm_out = re.search(r"packed_gemm\(tgc0\[t\], wsp0_1, (w\d+), threads\)", backward)
    assert gemm_out and f"copy2(ds_h, {gemm_out.group(1)})" in backward
    assert re.search(r"parallel_dot\(tgc0_r, ws0_0, (v\d+_r), threads\)\n\s+"
                     r"copy2\(din_x_r, \1\)", backward)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_small_stacked_gemms_split_member_by_member_match_interp(dtype, build_dir):
    """B = 16, H = 128: the stacked per-step products (16 x 128 by 128 x 512, and BPTT's
    16 x 512 by 512 x 128) are above OpenBLAS's small-matrix size and their members are
    not, so the generated kernels take the member-by-member branch."""
    from rnndsl.codegen.dialect import SMALL_PRODUCT     # (the suite runs with the defaults)
    B, H = 16, 128
    assert B * H * 4 * H > SMALL_PRODUCT >= B * H * H
    spec = REPO / "specs" / "lstm.rnn"
    blas = tuple(p for p in PASSES if p != "microkernel")   # the split is BLAS's path
    source = build_source(read_spec(spec), blas)
    assert "if split1:" in source and "if splitc0_1:" in source
    compare(compiled(spec, blas, build_dir), spec, dtype, T=3, B=B, dims={"I": 8, "H": H})


@pytest.mark.parametrize("stem", ["lstm", "gru", "two_streams"])
def test_backward_without_input_grads_skips_them(stem, build_dir):
    """input_grads=False: the same params' and initial states' gradients, no inputs'
    ones, and the kernel leaves out the deferred input-gradient GEMM."""
    spec = REPO / "specs" / f"{stem}.rnn"
    Compiled = compiled(spec, tuple(PASSES), build_dir)
    cell = Compiled(dtype=np.float64, seed=1, **{d: 5 for d in Compiled.spec.dims})
    rng = np.random.default_rng(0)
    x = {d.name: rng.standard_normal((4, 9, 5)) for d in Compiled.spec.inputs}
    run = cell.forward(x if len(x) > 1 else next(iter(x.values())))
    d_out = {k: rng.standard_normal(v.shape) for k, v in run.outputs.items()}
    full = cell.backward(run, d_outputs=d_out)
    lean = cell.backward(run, d_outputs=d_out, input_grads=False)
    assert full.inputs and lean.inputs == {}
    for k in full.params:
        assert np.array_equal(lean.params[k], full.params[k]), k
    for k in full.state:
        assert np.array_equal(lean.state[k], full.state[k]), k
    source = build_source(read_spec(spec))
    skipped = source.split("    if want_din:\n", 1)
    assert len(skipped) == 2 and "parallel_dot(" in skipped[1].split("\n\n")[0]


def test_interp_backward_without_input_grads():
    Interp = rnndsl.load(REPO / "specs" / "lstm.rnn", target="interp")
    cell = Interp(I=3, H=4, dtype=np.float64, seed=0)
    run = cell.forward(np.ones((2, 2, 3)))
    g = cell.backward(run, d_outputs={"h": np.ones((2, 2, 4))}, input_grads=False)
    assert g.inputs == {} and set(g.params) == {d.name for d in Interp.spec.params}


@pytest.mark.parametrize("stem, B, blocks", [("lstm", 15, 1), ("lstm", 19, 2),
                                              ("layernorm_lstm", 19, 2)])
def test_compiled_with_two_threads_matches_interp(stem, B, blocks, build_dir, monkeypatch):
    """RNNDSL_BLAS_THREADS=2. B = 19: two blocks of rows (9 and 10), each running the
    whole time loop on its own thread (runtime `_row_blocks`). B = 15, under 8 rows a
    thread: one block, whose kernel splits the per-step tiles' panels, and the big
    GEMMs' rows (T*B = 600), among two of Numba's threads."""
    monkeypatch.setenv("RNNDSL_BLAS_THREADS", "2")
    spec = REPO / "specs" / f"{stem}.rnn"
    Compiled = compiled(spec, tuple(PASSES), build_dir)
    assert len(Compiled(dtype=np.float64, I=20, H=20)._row_blocks(B)) == blocks
    compare(Compiled, spec, np.float64, T=40, B=B, dims={d: 20 for d in ("I", "H")})


def test_row_blocks_give_what_one_block_gives(build_dir, monkeypatch):
    """The same LSTM run with one thread and with two (two blocks of rows, their tapes
    kept apart, their weight gradients added): the same outputs, final states and
    gradients, with and without input gradients, with and without lengths."""
    Compiled = compiled(REPO / "specs" / "lstm.rnn", tuple(PASSES), build_dir)
    cell = Compiled(dtype=np.float64, seed=3, I=6, H=10)
    rng = np.random.default_rng(3)
    T, B = 6, 19
    x = rng.standard_normal((T, B, 6))
    h0 = {"h": rng.standard_normal((B, 10)), "c": rng.standard_normal((B, 10))}
    lengths = rng.integers(1, T + 1, size=B)
    d_out = {"h": rng.standard_normal((T, B, 10))}
    d_st = {"c": rng.standard_normal((B, 10))}

    def everything(threads, **kw):
        monkeypatch.setenv("RNNDSL_BLAS_THREADS", str(threads))
        run = cell.forward(x, state=h0, **kw)
        assert len(run._tape.blocks) == threads
        monkeypatch.setenv("RNNDSL_BLAS_THREADS", "1")   # the run's blocks decide
        full = cell.backward(run, d_outputs=d_out, d_state=d_st)
        lean = cell.backward(run, d_outputs=d_out, d_state=d_st, input_grads=False)
        assert lean.inputs == {}
        return {**{f"out {k}": v for k, v in run.outputs.items()},
                **{f"final {k}": v for k, v in run.state.items()},
                **{f"d {k}": v for k, v in full.params.items()},
                **{f"d lean {k}": v for k, v in lean.params.items()},
                **{f"d input {k}": v for k, v in full.inputs.items()},
                **{f"d state {k}": v for k, v in full.state.items()}}

    for kw in ({}, {"lengths": lengths}):
        one, two = everything(1, **kw), everything(2, **kw)
        assert one.keys() == two.keys()
        for k in one:
            assert one[k].shape == two[k].shape, k
            np.testing.assert_allclose(two[k], one[k], rtol=1e-12, atol=1e-12, err_msg=k)


def test_row_blocks_switch(build_dir, monkeypatch):
    Compiled = compiled(REPO / "specs" / "lstm.rnn", tuple(PASSES), build_dir)
    cell = Compiled(dtype=np.float64, I=2, H=3)
    monkeypatch.setenv("RNNDSL_BLAS_THREADS", "3")
    assert cell._row_blocks(30) == [(0, 10), (10, 20), (20, 30)]
    assert cell._row_blocks(23) == [(0, 11), (11, 23)]      # 8 rows a block at least
    monkeypatch.setenv("RNNDSL_ROW_BLOCKS", "0")
    assert cell._row_blocks(30) == [(0, 30)]
    monkeypatch.setenv("RNNDSL_ROW_BLOCKS", "yes")
    with pytest.raises(BindError, match="RNNDSL_ROW_BLOCKS must be 0 or 1"):
        cell._row_blocks(30)


def test_default_threads_are_row_blocks_on_every_core(build_dir, monkeypatch):
    """RNNDSL_BLAS_THREADS unset: one block of rows a usable core (8 rows a block at
    least), and one thread inside a call: never Numba's parallel GEMMs, which lost to
    one thread on a busy machine (rnndsl.kernels.blas)."""
    from rnndsl.kernels import blas
    Compiled = compiled(REPO / "specs" / "lstm.rnn", tuple(PASSES), build_dir)
    cell = Compiled(dtype=np.float64, I=2, H=3)
    monkeypatch.delenv("RNNDSL_BLAS_THREADS", raising=False)
    monkeypatch.delenv("RNNDSL_ROW_BLOCKS", raising=False)
    monkeypatch.setattr(blas, "usable_cores", lambda: 4)
    assert cell._row_blocks(64) == [(0, 16), (16, 32), (32, 48), (48, 64)]
    assert cell._row_blocks(20) == [(0, 10), (10, 20)]
    assert cell._row_blocks(15) == [(0, 15)]
    assert blas.kernel_thread_count() == 1      # the one-block call runs one thread
    monkeypatch.setattr(blas, "usable_cores", lambda: 1)
    assert cell._row_blocks(64) == [(0, 64)]
    monkeypatch.setattr(blas, "usable_cores", lambda: 4)
    monkeypatch.setenv("RNNDSL_BLAS_THREADS", "1")       # one thread, asked for
    assert cell._row_blocks(64) == [(0, 64)]


def test_gru_cotangents_stack_on_both_sides():
    """GRU's g_r and g_z stack with g_n for [W_r; W_z; W_n] and with r * g_n for
    [U_r; U_z; U_n]: each is written to both buffers, so the backward step is one GEMM
    and dU one GEMM over a contiguous tape (before: three of each, two of the dU ones
    through contiguous copies of strided tapes)."""
    from rnndsl.pipeline import plan_cell
    spec = read_spec(REPO / "specs" / "gru.rnn")
    plan = plan_cell(spec.cells["GRU"], PASSES)
    w_side, u_side = plan.cotangent_groups
    assert w_side.cotangents[:2] == u_side.cotangents[:2]
    assert w_side.cotangents[2] != u_side.cotangents[2]
    source = build_source(spec)
    backward = source[source.index("def backward_GRU"):source.index("GRU_META")]
    assert "GEMM g @ [U_r, U_z, U_n] (stacked cotangents) in register tiles" in backward
    assert backward.count("packed_gemm(") == 1 and "ascontiguousarray" not in backward
    assert backward.count("# also stacked with another group") == 2


def test_a_fused_value_read_only_through_a_folded_alias_is_not_stored(tmp_path):
    """Found by the random cells: in a fused backward group, a node whose one user outside
    the group was folded away (a sum with a zero term) was stored into an array that the
    loop never allocated (NameError: w74 at compile time). Stores and allocations now
    decide alike (Emitter.needs_array)."""
    spec = tmp_path / "random.rnn"
    spec.write_text(
        "cell Random {\n  dims D0, D1\n  input x0[D1]\n  state s0[D1], s1[D0]\n"
        "  param W1[D1, D0], W2[D1, D0], W4[D1, D1]\n"
        "  s0' = (sigmoid((s0 + x0)) * s0 + (1 - sigmoid((s0 + x0))) * "
        "tanh(((W1 @ s1) + max((W1 @ s1), (W2 @ s1)))))\n"
        "  e3 = (W4 @ s0)\n  e5 = s1\n"
        "  s1' = hard_sigmoid((s1 + (log(1 + (s1) ** 2) * mean((sum(s1) - s0)))))\n"
        "  output s1'\n}\n")
    out = tmp_path / "random.py"
    write_module(build_source(read_spec(spec), PASSES), out)
    Compiled = getattr(load_built(out), "Random")
    compare(Compiled, spec, np.float64, T=1, B=6, dims={"D0": 3, "D1": 1})


def test_a_gradient_that_cancels_to_zero_is_compared_against_the_runs_scale(tmp_path):
    """Found by the random cells: d W3 is zero in exact arithmetic (softmax ignores the
    shift W3 adds to every logit) and came out as 4e-16 from one summation order and
    1e-16 from the other; measured against a floor of 1e-6 of the run's scale that was a
    'relative error' of 2.5e-10. The floor is now 1e-4 of the run's largest value."""
    spec = tmp_path / "random.rnn"
    spec.write_text(
        "cell Random {\n  dims D0, D1\n  input x0[D1]\n  state s0[D1], s1[D0]\n"
        "  param W1[D0, D0], W3[D0, D1], a5\n"
        "  s0' = (sigmoid(max(x0, mean(s0))) * s0 + (1 - sigmoid(max(x0, mean(s0)))) * "
        "tanh((s0 + x0)))\n  e2 = s1\n"
        "  s1' = softmax(((W1 @ s1) + (sum((W3 @ s0')[0:1]) - ((e2 - mean(e2)) / "
        "sqrt(mean((e2 - mean(e2)) ** 2) + 1)))))\n"
        "  e4 = (s1 / (1 + (a5) ** 2))\n  e6 = s0'\n  e7 = s0\n  output s1'\n}\n")
    out = tmp_path / "random.py"
    write_module(build_source(read_spec(spec), PASSES), out)
    errors = compare(getattr(load_built(out), "Random"), spec, np.float64, T=3, B=7,
                     dims={"D0": 3, "D1": 1})
    assert max(errors.values()) < TOL[np.float64]


EDGES = """cell Edges {
  dims N
  input x[N]
  param p[N]
  output y = log_softmax(x)
  output a = max(x, p) + min(x, p)
  output b = max(p, x) + min(p, x)
}"""


def test_log_softmax_of_huge_logits_and_max_min_of_nan_as_the_interpreter():
    """From an outside review: the cpu kernel wrote log_softmax as x - (top + log(acc)),
    which lost log(acc) where top is large (log_softmax([1e17, 1e17, 0]) gave [0, 0,
    -1e17], and its gradient with it); and max(x, p) / min(x, p) were Python's, which
    return x when p is NaN, where the interpreter (NumPy) gives NaN."""
    x = np.array([1e17, 1e17, 0.0]).reshape(1, 1, 3)
    d_y = np.array([1.0, 0.0, 0.0]).reshape(1, 1, 3)
    runs = {}
    for target in ("interp", "cpu"):
        cell = rnndsl.load_text(EDGES, target=target)(N=3, dtype=np.float64, seed=0)
        run = cell.forward(x)
        g = cell.backward(run, d_outputs={"y": d_y})
        cell.params["p"] = np.array([np.nan, 1.0, -np.inf])
        nan = cell.forward(np.array([0.5, 2.0, 3.0]).reshape(1, 1, 3))
        runs[target] = (run.outputs["y"], g.inputs["x"], nan.outputs["a"], nan.outputs["b"])
    np.testing.assert_allclose(runs["cpu"][0][0, 0], [-np.log(2), -np.log(2), -1e17],
                               rtol=1e-15)
    np.testing.assert_allclose(runs["cpu"][1][0, 0], [0.5, -0.5, 0.0], atol=1e-15)
    for got, want in zip(runs["cpu"], runs["interp"]):
        np.testing.assert_allclose(got, want, rtol=1e-15, atol=1e-15)   # NaN where NaN
    assert np.isnan(runs["cpu"][2][0, 0, 0]) and np.isnan(runs["cpu"][3][0, 0, 0])
