"""Composition: layers (deep RNNs, readout heads), dropout sites and variable lengths.

Each is checked against an independent construction: a stacked cell against its layers
run one after the other as separate cells; a variable-length batch against each sequence
run alone at its own length; dropout against the same cell with the masks applied by
hand. Checker errors are checked message by message.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnndsl
from rnndsl.core.errors import BindError, CheckError

REPO = Path(__file__).resolve().parents[2]
SPECS = REPO / "specs"


def lstm_interp():
    return rnndsl.load(SPECS / "lstm.rnn", target="interp")


def run_stack_by_hand(c, x):
    """CharLSTM as two separate LSTM cells and a NumPy readout: the reference."""
    L = lstm_interp()
    V, H = c.dims["V"], c.dims["H"]
    l1, l2 = L(I=V, H=H, dtype=c.dtype), L(I=H, H=H, dtype=c.dtype)
    for k in l1.params:
        l1.params[k] = c.params["l1." + k]
        l2.params[k] = c.params["l2." + k]
    r1 = l1.forward(x)
    r2 = l2.forward(r1.outputs["h"])
    logits = r2.outputs["h"] @ c.params["W_y"].T + c.params["b_y"]
    return l1, l2, r1, r2, logits


@pytest.mark.parametrize("target", ["interp", "cpu"])
def test_stacked_lstm_equals_its_layers_run_one_after_the_other(target):
    # char_lstm with a dense input (its x is a token): any real x, and x's gradient
    text = (SPECS / "char_lstm.rnn").read_text().replace("input token x[V]", "input x[V]")
    assert "input x[V]" in text
    Char = rnndsl.load_text(text, path=str(SPECS / "char_lstm.rnn"), target=target)
    c = Char(V=5, H=4, dtype=np.float64, seed=3)
    assert "l1.W_i" in c.params and "l2.U_f" in c.params and c.params["W_y"].shape == (5, 4)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 3, 5))
    run = c.forward(x)
    l1, l2, r1, r2, logits = run_stack_by_hand(c, x)
    np.testing.assert_allclose(run.outputs["logits"], logits, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(run.state["l2.c"], r2.state["c"], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(run.state["l1.h"], r1.state["h"], rtol=1e-12, atol=1e-13)

    dY = rng.normal(size=logits.shape)
    g = c.backward(run, d_outputs={"logits": dY})
    g2 = l2.backward(r2, d_outputs={"h": dY @ c.params["W_y"]})
    g1 = l1.backward(r1, d_outputs={"h": g2.inputs["x"]})
    for k in g1.params:
        np.testing.assert_allclose(g.params["l1." + k], g1.params[k], rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(g.params["l2." + k], g2.params[k], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g.inputs["x"], g1.inputs["x"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g.params["W_y"],
                               np.einsum("tbv,tbh->vh", dY, r2.outputs["h"]), rtol=1e-10)


NESTED = '''
use "specs/lstm.rnn"
cell Two {
  dims I, H
  input x[I]
  layer a = LSTM(I = I, H = H)
  layer b = LSTM(I = H, H = H)
  output h = b(a(x))
}
cell Head {
  dims H, K
  input h[H]
  param W[K, H], c[K]
  output p = softmax(W @ h + c)
}
cell Deep {
  dims I, H, K
  input x[I]
  layer stack = Two(I = I, H = 2 * H)
  layer head = Head(H = 2 * H, K = K)
  output p = head(stack(x))
}
'''


def test_layers_nest_and_a_stateless_cell_is_a_readout_head(monkeypatch):
    monkeypatch.chdir(REPO)
    Deep = rnndsl.load_text(NESTED, target="interp", cell="Deep", path="nested.rnn")
    d = Deep(I=3, H=2, K=5, dtype=np.float64, seed=1)
    assert d.params["stack.a.U_i"].shape == (4, 4)
    assert sorted(d.spec.states[i].name for i in range(4)) == [
        "stack.a.c", "stack.a.h", "stack.b.c", "stack.b.h"]
    x = np.random.default_rng(1).normal(size=(4, 2, 3))
    run = d.forward(x)
    L = lstm_interp()
    a, b = L(I=3, H=4, dtype=np.float64), L(I=4, H=4, dtype=np.float64)
    for k in a.params:
        a.params[k] = d.params["stack.a." + k]
        b.params[k] = d.params["stack.b." + k]
    h = b.forward(a.forward(x).outputs["h"]).outputs["h"]
    z = h @ d.params["head.W"].T + d.params["head.c"]
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(run.outputs["p"], p, rtol=1e-12)


def test_a_built_module_with_layers_imports_anywhere(tmp_path):
    """The module carries the texts of the files it uses: copied elsewhere, it loads."""
    out = tmp_path / "build"
    subprocess.run([sys.executable, "-m", "rnndsl", "build", str(SPECS / "char_lstm.rnn"),
                    "-o", str(out)], check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "char_lstm.py").write_bytes((out / "char_lstm.py").read_bytes())
    code = ("import numpy as np; from char_lstm import CharLSTM; "
            "c = CharLSTM(V=3, H=2, dtype=np.float64); "
            "print(c.forward(np.array([[0], [2]])).outputs['logits'].shape)")   # ids (T, B)
    done = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(2, 1, 3)"


# ------------------------------------------------------------------------------ errors

BASE = 'use "specs/lstm.rnn"\ncell C {\n  dims V, H\n  input x[V]\n'


@pytest.mark.parametrize("body, message", [
    ("  layer l = LSTN(I = V, H = H)\n  output y = l(x)\n",
     "unknown cell 'LSTN'"),
    ("  layer l = LSTM(I = V)\n  output y = l(x)\n",
     "layer 'l' leaves dim H of cell 'LSTM' unbound"),
    ("  layer l = LSTM(I = V, H = H, K = H)\n  output y = l(x)\n",
     "cell 'LSTM' has no dim 'K'"),
    ("  layer l = LSTM(I = V, H = Q)\n  output y = l(x)\n",
     "unknown dim 'Q' in layer 'l'"),
    ("  layer l = LSTM(I = H, H = H)\n  output y = l(x)\n",
     "input 'x' of layer 'l' (LSTM) is [H], but the argument is [V]"),
    ("  layer l = LSTM(I = V, H = H)\n  y = l(x)\n  output z = l(x)\n",
     "layer 'l' is called twice (first on line 6)"),
    ("  layer l = LSTM(I = V, H = H)\n  output z = x\n",
     "layer 'l' is never called"),
    ("  layer l = LSTM(I = V, H = H)\n  output y = l(x, x)\n",
     "layer 'l' (LSTM) takes 1 input (x[V]), got 2"),
    ("  layer l = LSTM(I = V, H = H)\n  output y = l(x).c\n",
     "layer 'l' (LSTM) has no output 'c'"),
    ("  layer l = LSTM(I = V, H = H)\n  output y = l + x\n",
     "'l' is a layer; call it"),
    ("  output y = x.h\n", "only a layer's outputs are reached with '.'"),
    ("  param a__b[V]\n  output y = x * a__b\n", "names with a double underscore are reserved"),
    ("  output y = dropout(x, 1.5)\n", "the rate of dropout must be a number in [0, 1)"),
    ("  output y = dropout(x)\n", "dropout takes 2 arguments"),
])
def test_layer_errors(monkeypatch, body, message):
    monkeypatch.chdir(REPO)
    with pytest.raises(CheckError) as info:
        rnndsl.load_text(BASE + body + "}\n", target="interp", cell="C", path="c.rnn")
    assert message in str(info.value), str(info.value)
    assert "c.rnn:" in str(info.value)


# ------------------------------------------------------------------------------ lengths

@pytest.mark.parametrize("target", ["interp", "cpu"])
def test_variable_lengths_equal_each_sequence_run_alone(target):
    L = rnndsl.load(SPECS / "lstm.rnn", target=target)
    c = L(I=3, H=4, dtype=np.float64, seed=0)
    rng = np.random.default_rng(2)
    T, B = 6, 4
    x = rng.normal(size=(T, B, 3))
    lengths = np.array([6, 2, 0, 5])
    run = c.forward(x, lengths=lengths)
    dY, dc = rng.normal(size=(T, B, 4)), rng.normal(size=(B, 4))
    g = c.backward(run, d_outputs={"h": dY}, d_state={"c": dc})
    assert sorted(g.inputs) == ["x"]              # the length mask is not the caller's
    total = {k: np.zeros_like(v) for k, v in c.params.items()}
    for b, n in enumerate(lengths):
        if n == 0:    # an empty sequence: initial state, zero outputs, zero gradients
            np.testing.assert_array_equal(run.state["h"][b], 0.0)
            np.testing.assert_allclose(g.state["c"][b], dc[b])
            continue
        r = c.forward(x[:n, b:b + 1])
        gb = c.backward(r, d_outputs={"h": dY[:n, b:b + 1]}, d_state={"c": dc[b:b + 1]})
        np.testing.assert_allclose(run.outputs["h"][:n, b], r.outputs["h"][:, 0], rtol=1e-12)
        np.testing.assert_array_equal(run.outputs["h"][n:, b], 0.0)
        np.testing.assert_allclose(run.state["c"][b], r.state["c"][0], rtol=1e-12)
        np.testing.assert_allclose(g.inputs["x"][:n, b], gb.inputs["x"][:, 0], rtol=1e-10,
                                   atol=1e-13)
        np.testing.assert_array_equal(g.inputs["x"][n:, b], 0.0)
        np.testing.assert_allclose(g.state["h"][b], gb.state["h"][0], rtol=1e-10, atol=1e-13)
        for k in total:
            total[k] += gb.params[k]
    for k in total:
        np.testing.assert_allclose(g.params[k], total[k], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("lengths, message", [
    (np.array([1, 2]), "lengths must be 3 integers"),
    (np.array([1.0, 2.0, 3.0]), "lengths must be 3 integers"),
    (np.array([1, 9, 2]), "lengths must lie in 0..T = 0..4"),
    ([True, 3, 2], "which holds True or False"),           # not the length 1
    (np.array([True, False, True]), "lengths must be 3 integers"),
])
def test_bad_lengths_are_refused(lengths, message):
    c = lstm_interp()(I=2, H=2, dtype=np.float64)
    with pytest.raises(BindError, match=message.replace(".", r"\.")):
        c.forward(np.zeros((4, 3, 2)), lengths=lengths)


# ------------------------------------------------------------------------------ dropout

DROPPED = '''
cell D {
  dims I, H
  input x[I]
  state h[H]
  param W[H, I], U[H, H]
  h' = tanh(W @ dropout(x, 0.5) + U @ h)
  output y = dropout(h', 0.25)
}
'''


def test_dropout_masks_are_hidden_inputs_with_the_expected_statistics():
    D = rnndsl.load_text(DROPPED, target="interp")
    d = D(I=3, H=4, dtype=np.float64, seed=0)
    assert [name for name, _ in d.spec.dropouts] == ["dropout.1", "dropout.2"]
    x = np.random.default_rng(0).normal(size=(5, 2, 3))
    plain = d.forward(x)          # evaluation: every unit kept
    U, W = d.params["U"], d.params["W"]
    h = np.zeros((2, 4))
    for t in range(5):
        h = np.tanh(x[t] @ W.T + h @ U.T)
        np.testing.assert_allclose(plain.outputs["y"][t], h, rtol=1e-12)
    masks = d._hidden(None, np.random.default_rng(7))(2000, 8)
    m1 = masks["dropout.1"]
    assert set(np.unique(m1)) == {0.0, 2.0}
    assert abs((m1 == 0).mean() - 0.5) < 0.01 and abs(m1.mean() - 1.0) < 0.02
    m2 = masks["dropout.2"]
    assert set(np.round(np.unique(m2), 12)) == {0.0, round(1 / 0.75, 12)}
    assert abs((m2 == 0).mean() - 0.25) < 0.01


def test_training_dropout_is_the_cell_with_the_masks_applied_by_hand():
    D = rnndsl.load_text(DROPPED, target="interp")
    d = D(I=3, H=4, dtype=np.float64, seed=0)
    x = np.random.default_rng(0).normal(size=(5, 2, 3))
    run = d.forward(x, dropout=np.random.default_rng(11))
    masks = d._hidden(None, np.random.default_rng(11))(5, 2)   # the same draws
    h = np.zeros((2, 4))
    for t in range(5):
        h = np.tanh((x[t] * masks["dropout.1"][t]) @ d.params["W"].T + h @ d.params["U"].T)
        np.testing.assert_allclose(run.outputs["y"][t], h * masks["dropout.2"][t], rtol=1e-12)
    g = d.backward(run, d_outputs={"y": np.ones((5, 2, 4))})
    assert sorted(g.inputs) == ["x"]
    with pytest.raises(BindError, match="has no input 'dropout.1'"):
        d.forward({"x": x, "dropout.1": np.ones((5, 2, 3))})


def test_cuda_lengths_and_dropout_match_the_interpreter():
    """Under the CUDA simulator (tests/conftest.py): the masked twin and the hidden
    dropout inputs take the same path on the cuda target."""
    pytest.importorskip("numba.cuda")
    from rnndsl.cells.cuda import require_cuda
    try:
        require_cuda()
    except rnndsl.RnnError as exc:
        pytest.skip(str(exc))
    text = DROPPED.replace("cell D", "cell DL")
    Ref = rnndsl.load_text(text, target="interp")
    Cuda = rnndsl.load_text(text, target="cuda")
    ref, dev = Ref(I=2, H=3, dtype=np.float64, seed=0), Cuda(I=2, H=3, dtype=np.float64, seed=0)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 2, 2))
    lengths = np.array([4, 2])
    a = ref.forward(x, lengths=lengths, dropout=np.random.default_rng(1))
    b = dev.forward(x, lengths=lengths, dropout=np.random.default_rng(1))
    np.testing.assert_allclose(b.outputs["y"], a.outputs["y"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b.state["h"], a.state["h"], rtol=1e-10, atol=1e-12)
    dY = rng.normal(size=(4, 2, 3))
    ga, gb = ref.backward(a, d_outputs={"y": dY}), dev.backward(b, d_outputs={"y": dY})
    for k in ga.params:
        np.testing.assert_allclose(gb.params[k], ga.params[k], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gb.inputs["x"], ga.inputs["x"], rtol=1e-9, atol=1e-12)
