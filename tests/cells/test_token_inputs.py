"""`input token x[V]`: a one-hot input given as ids. The compiled cpu kernels gather
weight columns by id (W @ x) and add into them (dW); every other target runs the one-hot
vector. Each is checked against the interpreter running the same cell with an ordinary
input fed one-hot rows, with the plan's passes on and off, through layers, row blocks
and the variable-length variant."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnndsl
from rnndsl.core.errors import BindError
from rnndsl.lang.parse import parse
from rnndsl.lang.printer import unparse
from rnndsl.schedule.plan import PASSES
from rnndsl.train.sample import Sampler, temperature

ROOT = Path(__file__).resolve().parents[2]
LONG = os.environ.get("RNNDSL_LONG") == "1"

# the main job's cell, specs/char_lstm.rnn: two stacked LSTMs (shipped lstm.rnn) and a
# readout; the token reaches W @ x through a layer, in a stacked GEMM group
# ([W_i; W_f; W_g; W_o] @ x). Loaded from its own text and path, so its compiled module
# is the one the other tests of the main job's cell load (one compile for the suite).
CHAR_PATH = str(ROOT / "specs" / "char_lstm.rnn")
CHAR = Path(CHAR_PATH).read_text()
# a token alone in its product (no GEMM group), and beside an ordinary input
LONE = """cell Lone {
  dims  V, H, I
  input token x[V]
  input z[I]
  state h[H]
  param W[H, V], U[H, H], Z[H, I], b[H]
  h' = tanh(W @ x + U @ h + Z @ z + b)
  output h'
}
"""
PATH = str(ROOT / "specs" / "token_test.rnn")     # beside lstm.rnn, for the use


def _path(text: str) -> str:
    return CHAR_PATH if text is CHAR else PATH


def _pair(text: str, no_passes=()):
    token = rnndsl.load_text(text, path=_path(text), no_passes=no_passes)
    plain = rnndsl.load_text(text.replace("input token", "input"), path=_path(text),
                             target="interp")
    return token, plain


def _inputs(text: str, T: int, B: int, dims: dict, rng):
    ids = rng.integers(0, dims["V"], (T, B))
    x = {"x": ids}
    if "input z" in text:
        x["z"] = rng.normal(size=(T, B, dims["I"]))
    onehot = dict(x, x=np.eye(dims["V"])[ids])
    return x, onehot


@pytest.mark.parametrize("text, dims", [(CHAR, {"V": 7, "H": 5}),
                                        (LONE, {"V": 6, "H": 4, "I": 3})],
                         ids=["stacked-layers", "lone-product"])
@pytest.mark.parametrize("passes", ["on", "off", "hoist off"])
@pytest.mark.parametrize("B", [1, 3, 16], ids=["columns", "one-block", "row-blocks"])
def test_compiled_gather_matches_the_interpreter_on_one_hot_rows(text, dims, passes, B):
    """B = 1: fewer tokens (4) than ids, so the gather reads down W's own columns
    (gather_cols); B = 3 and 16, more: rows of the stacked W^T (gather_rows). With the
    hoist pass off the gather stays in the time loop, where the microkernel pass's
    tiles must leave it alone (they once packed it, and 8+ rows read past the stack)."""
    if text is CHAR and passes == "off" and not LONG:
        pytest.skip("RNNDSL_LONG=1 only: the main job's cell with every pass off is a "
                    "kernel pair (20 s) no other test compiles; the lone product runs the "
                    "gather with the passes off, and 'hoist off' the stacked one in the loop")
    off = {"on": (), "off": PASSES, "hoist off": ("hoist",)}[passes]
    Token, Plain = _pair(text, no_passes=off)
    token, plain = Token(dtype=np.float64, seed=1, **dims), Plain(dtype=np.float64, **dims)
    plain.params = token.params
    rng = np.random.default_rng(2)
    x, onehot = _inputs(text, 4, B, dims, rng)
    run_t, run_p = token.forward(x), plain.forward(onehot)
    for name, y in run_p.outputs.items():
        np.testing.assert_allclose(run_t.outputs[name], y, rtol=1e-10, atol=1e-12)
    dy = {n: rng.normal(size=y.shape) for n, y in run_p.outputs.items()}
    g_t, g_p = token.backward(run_t, d_outputs=dy), plain.backward(run_p, d_outputs=dy)
    for name, g in g_p.params.items():
        np.testing.assert_allclose(g_t.params[name], g, rtol=1e-9, atol=1e-12, err_msg=name)
    assert "x" not in g_t.inputs                 # ids have no gradient
    assert sorted(g_t.inputs) == sorted(k for k in g_p.inputs if k != "x")
    for name in g_t.inputs:
        np.testing.assert_allclose(g_t.inputs[name], g_p.inputs[name], rtol=1e-9, atol=1e-12)


def test_the_kernels_gather_and_scatter_instead_of_multiplying():
    from rnndsl.lang.specfile import read_spec
    from rnndsl.pipeline import build_source
    spec = read_spec(CHAR_PATH, text=CHAR)
    source = build_source(spec)
    assert "gather_rows(" in source and "gather_cols(" in source and "scatter_cols(" in source
    assert "token_ids=('x',)" in source
    plain = build_source(read_spec(CHAR_PATH, text=CHAR.replace("input token", "input")))
    assert "gather_rows(" not in plain and "token_ids" not in plain
    off = build_source(read_spec(PATH, text=LONE), passes=())
    assert "gather_rows(wt0, in_x[t], mm0)" in off        # a step's gather
    assert "scatter_cols(" in off


def test_variable_lengths_with_a_token_input():
    Token, Plain = _pair(CHAR)
    dims = {"V": 7, "H": 5}
    token, plain = Token(dtype=np.float64, **dims), Plain(dtype=np.float64, **dims)
    plain.params = token.params
    rng = np.random.default_rng(3)
    x, onehot = _inputs(CHAR, 5, 4, dims, rng)
    lengths = [5, 2, 3, 1]
    run_t, run_p = token.forward(x, lengths=lengths), plain.forward(onehot, lengths=lengths)
    np.testing.assert_allclose(run_t.outputs["logits"], run_p.outputs["logits"], atol=1e-12)
    dy = {"logits": rng.normal(size=run_p.outputs["logits"].shape)}
    g_t, g_p = token.backward(run_t, d_outputs=dy), plain.backward(run_p, d_outputs=dy)
    for name, g in g_p.params.items():
        np.testing.assert_allclose(g_t.params[name], g, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("target", ["cpu", "interp"])
def test_ids_and_one_hot_rows_are_the_same_input(target):
    Token = rnndsl.load_text(CHAR, path=CHAR_PATH, target=target)
    cell = Token(V=7, H=5, dtype=np.float32)
    ids = np.random.default_rng(4).integers(0, 7, (3, 2))
    a, b = cell.forward(ids), cell.forward(np.eye(7, dtype=np.float32)[ids])
    np.testing.assert_array_equal(a.outputs["logits"], b.outputs["logits"])
    ids32 = ids.astype(np.int32)                     # any integer dtype
    np.testing.assert_array_equal(cell.forward(ids32).outputs["logits"], a.outputs["logits"])


@pytest.mark.parametrize("value, message", [
    (np.array([[0, 7]]), r"id 7 at index \(0, 1\); ids are in \[0, 7\)"),
    (np.array([[-1, 0]]), r"id -1 at index \(0, 0\)"),
    (np.full((2, 2, 7), 0.5, np.float32), r"row \(0, 0\) is not one-hot"),
    (np.zeros((2, 2, 7), np.float32), r"row \(0, 0\) is not one-hot"),
    (np.zeros((2, 2, 5), np.float32), r"expected ids \(T, B\) in \[0, 7\), or one-hot rows"),
    (np.zeros(3, np.int64), r"shape \(3,\) and dtype int64; expected ids"),
    (np.zeros((0, 2), np.int64), r"a sequence needs T >= 1"),
    ([[0, 1]], r"must be a NumPy array"),
])
def test_bad_token_inputs_are_named(value, message):
    cell = rnndsl.load_text(CHAR, path=CHAR_PATH)(V=7, H=5, dtype=np.float32)
    with pytest.raises(BindError, match=message):
        cell.forward(value)


def test_a_token_used_as_a_vector_is_refused_at_its_declaration(tmp_path):
    bad = LONE.replace("h' = tanh(W @ x + U @ h + Z @ z + b)",
                       "h' = tanh(W @ x + U @ h + Z @ z + b) * sum(x)")
    with pytest.raises(rnndsl.SpecError) as info:
        rnndsl.load_text(bad, path="bad.rnn")
    first = info.value.render().splitlines()[0]
    assert first.startswith("bad.rnn:3:15: error: token input 'x' feeds sum(...)"), first
    path = tmp_path / "bad.rnn"
    path.write_text(bad)
    done = subprocess.run([sys.executable, "-m", "rnndsl.cli.main", "check", str(path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "token input 'x' feeds sum(...)" in done.stderr
    matrix = LONE.replace("W @ x", "W @ x + (x @ W) @ h")
    with pytest.raises(rnndsl.SpecError):
        rnndsl.load_text(matrix, path="bad.rnn")


def test_the_printer_keeps_the_token_word():
    text = unparse(parse(LONE, "lone.rnn"))
    assert "input token x[V]" in text
    assert unparse(parse(text, "lone.rnn")) == text


def test_explain_says_gather_on_cpu_and_gemm_on_cuda(tmp_path):
    path = tmp_path / "lone.rnn"
    path.write_text(LONE)
    cmd = [sys.executable, "-m", "rnndsl.cli.main", "explain", str(path)]
    cpu = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    cuda = subprocess.run(cmd + ["--target", "cuda"], capture_output=True, text=True,
                          cwd=ROOT)
    assert cpu.returncode == 0 and cuda.returncode == 0, cpu.stderr + cuda.stderr
    assert "gather [W] columns by the ids of token x" in cpu.stdout
    assert "scatter d_W columns by the ids of token x" in cpu.stdout
    assert "gather" not in cuda.stdout and "GEMM [W] @ x" in cuda.stdout


def test_the_cuda_target_takes_ids_as_one_hot_rows():
    Token = rnndsl.load_text(LONE, path=PATH, target="cuda")
    Plain = rnndsl.load_text(LONE.replace("input token", "input"), path=PATH, target="interp")
    dims = {"V": 4, "H": 3, "I": 2}
    token, plain = Token(dtype=np.float64, **dims), Plain(dtype=np.float64, **dims)
    plain.params = token.params
    x, onehot = _inputs(LONE, 2, 2, dims, np.random.default_rng(5))
    run_t, run_p = token.forward(x), plain.forward(onehot)
    np.testing.assert_allclose(run_t.outputs["h"], run_p.outputs["h"], atol=1e-12)
    g = token.backward(run_t, d_outputs={"h": np.ones_like(run_p.outputs["h"])})
    assert sorted(g.inputs) == ["z"]


def test_sampling_feeds_ids():
    Token, _ = _pair(CHAR)
    Plain = rnndsl.load_text(CHAR.replace("input token", "input"), path=CHAR_PATH)
    token, plain = Token(V=7, H=5), Plain(V=7, H=5)
    plain.params = token.params
    prime = np.array([1, 2, 3])
    a = Sampler(token).generate(12, temperature(1.0), prime=prime, seed=0)
    b = Sampler(plain).generate(12, temperature(1.0), prime=prime, seed=0)
    np.testing.assert_array_equal(a, b)


def test_token_is_how_data_arrives_not_another_model(tmp_path):
    """A checkpoint of the one-hot char model loads into the token one and back (the
    README says the model and its checkpoints are the same): `token` is not part of the
    model's canonical form."""
    from rnndsl.lang.canonical import canonical_form
    from rnndsl.lang.specfile import read_spec
    from rnndsl.train import checkpoint
    plain = CHAR.replace("input token", "input")
    assert canonical_form(read_spec(CHAR_PATH, text=CHAR).cells["CharLSTM"]) == \
        canonical_form(read_spec(CHAR_PATH, text=plain).cells["CharLSTM"])
    Token = rnndsl.load_text(CHAR, path=CHAR_PATH, target="interp")
    Plain = rnndsl.load_text(plain, path=CHAR_PATH, target="interp")
    saved = Plain(V=7, H=5, seed=3)
    checkpoint.save(tmp_path / "m.npz", saved)
    loaded = Token(V=7, H=5, seed=9)
    checkpoint.load(tmp_path / "m.npz", loaded)
    for name, value in saved.params.items():
        np.testing.assert_array_equal(loaded.params[name], value)
