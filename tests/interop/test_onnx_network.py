"""ONNX export of network cells (layers run over whole sequences, rnndsl.interop.
onnx_network): each model run in onnxruntime against the cell's `forward` on the same
inputs, outputs and final states, with and without initial states and lengths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import onnx  # noqa: E402

import rnndsl  # noqa: E402
import rnndsl.onnx  # noqa: E402
from rnndsl.core.errors import CheckError  # noqa: E402
from rnndsl.cli.main import main  # noqa: E402

SPECS = Path(__file__).resolve().parents[2] / "specs"

STACKED = """use "lstm.rnn"
cell BiTagger {
  dims V, H, K
  input x[V]
  layer l1 = bidirectional LSTM(I = V, H = H)
  layer l2 = bidirectional LSTM(I = 2 * H, H = H)
  param W[K, 2 * H], b[K]
  output scores = W @ l2(l1(x)) + b
}
"""

# a reverse GRU layer under forward segments, with a forward layer, a token input,
# dropout (off in the model), a cell state starting at a param, a final output and a
# param (a) that two segments read
MIXED = """use "lstm.rnn"
use "gru.rnn"
cell Mixed {
  dims V, H, K
  input token x[V]
  param E[H, V], a[H], s0[H]
  state s[H] = s0
  layer f1 = LSTM(I = H, H = H)
  layer b1 = bidirectional LSTM(I = H, H = H)
  layer r2 = reverse GRU(I = 2 * H, H = H)
  param W[K, 2 * H], b[K], U[H, H]
  e = tanh(E @ x + a)
  h1 = f1(dropout(e, 0.2))
  z = b1(h1)
  s' = tanh(U @ s + z[0:H] + r2(z) + a)
  output y = W @ z + b
  final last = s'
}
"""


def load(tmp_path, text, dtype=np.float32, **dims):
    for used in ("lstm.rnn", "gru.rnn"):
        if not (tmp_path / used).exists():
            (tmp_path / used).symlink_to(SPECS / used)
    path = tmp_path / "net.rnn"
    path.write_text(text)
    return rnndsl.load(path, target="interp")(dtype=dtype, seed=0, **dims)


def session(model):
    options = ort.SessionOptions()
    options.log_severity_level = 3     # the overridable initializers' notice
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def assert_agrees(cell, model, tol, lengths, T=5, B=3):
    """onnxruntime's outputs and final states are forward's: with every initial state
    and `lengths` fed, with the states only, and with neither (the defaults)."""
    rng = np.random.default_rng(1)
    (x_decl,) = cell.spec.inputs
    size = x_decl.type.shape[0].evaluate(cell.dims)
    x = (rng.integers(0, size, (T, B)) if x_decl.token
         else rng.normal(size=(T, B, size)).astype(cell.dtype))
    state = {d.name: rng.normal(size=(B, d.type.shape[0].evaluate(cell.dims)))
             .astype(cell.dtype) for d in cell.spec.states}
    initial = {f"initial_{k}": v for k, v in state.items()}
    sess = session(model)
    names = [o.name for o in sess.get_outputs()]
    cases = ((cell.forward(x, state, lengths=lengths, grad=False),
              dict(x=x, sequence_lens=np.asarray(lengths, np.int32), **initial)),
             (cell.forward(x, state, grad=False), dict(x=x, **initial)),
             (cell.forward(x, grad=False), dict(x=x)))
    for run, feed in cases:
        got = dict(zip(names, sess.run(None, feed)))
        want = dict(run.outputs, **{f"final_{k}": v for k, v in run.state.items()})
        assert sorted(got) == sorted(want)
        for name, value in want.items():
            assert got[name].shape == value.shape and got[name].dtype == cell.dtype, name
            err = float(np.abs(got[name] - value).max())
            assert err <= tol * max(1.0, float(np.abs(value).max())), (name, err)


def test_stacked_bidirectional_lstms_with_a_readout(tmp_path):
    cell = load(tmp_path, STACKED, V=4, H=3, K=2)
    # a param replaced after the cell was made is the one written
    cell.params["l2.W_i_reverse"] = cell.params["l2.W_i_reverse"] + np.float32(0.5)
    model = rnndsl.onnx.export(cell, tmp_path / "net.onnx")
    onnx.checker.check_model(onnx.load(str(tmp_path / "net.onnx")), full_check=True)
    assert rnndsl.onnx.exported_as(model) == \
        "network: LSTM(bidirectional), LSTM(bidirectional), Scan"
    states = [d.name for d in cell.spec.states]
    assert "l1.h_reverse" in states
    assert [i.name for i in model.graph.input] == \
        ["x"] + [f"initial_{s}" for s in states] + ["sequence_lens"]
    assert [o.name for o in model.graph.output] == ["scores"] + [f"final_{s}" for s in states]
    params = [i.name for i in model.graph.initializer if i.name in cell.params]
    assert params == list(cell.params)
    assert_agrees(cell, model, 1e-5, lengths=[5, 3, 0])


@pytest.mark.parametrize("dtype, operators, kinds, tol", [
    (np.float32, None, "Scan, LSTM(bidirectional), Scan, GRU(reverse), Scan", 1e-5),
    (np.float32, False, "Scan, Scan(bidirectional), Scan, Scan(reverse), Scan", 1e-5),
    (np.float64, None, "Scan, Scan(bidirectional), Scan, Scan(reverse), Scan", 1e-10),
], ids=["float32-operators", "float32-scans", "float64-scans"])
def test_a_reverse_gru_under_forward_segments(tmp_path, dtype, operators, kinds, tol):
    cell = load(tmp_path, MIXED, dtype=dtype, V=5, H=3, K=2)
    # the start of s, replaced after the cell was made, is what initial_s defaults to
    cell.params["s0"] = cell.params["s0"] + dtype(0.5)
    model = rnndsl.onnx.to_model(cell, operators=operators)
    assert rnndsl.onnx.exported_as(model) == "network: " + kinds
    # one initializer per param, `a` too, though two segments read it
    params = [i.name for i in model.graph.initializer if i.name in cell.params]
    assert params == list(cell.params)
    assert {"initial_r2.h", "initial_s", "initial_f1.c"} <= {i.name for i in model.graph.input}
    # a final output: every sequence at least one step long
    assert_agrees(cell, model, tol, lengths=[5, 2, 4])


TOKEN_TAGGER = """use "lstm.rnn"
cell TokTagger {
  dims V, H, K
  input token x[V]
  layer l1 = bidirectional LSTM(I = V, H = H)
  param W[K, 2 * H], b[K]
  output scores = W @ l1(x) + b
}
"""


@pytest.mark.parametrize("dtype, operators, tol", [(np.float32, None, 1e-5),
                                                  (np.float64, False, 1e-10)])
def test_token_ids_reach_a_sequence_layer_as_one_hot_rows(tmp_path, dtype, operators, tol):
    """A token input read by a bidirectional layer exported a graph onnxruntime refused
    (int64 ids fed to the LSTM as its float X) with exit 0: the ids now pass through a
    one-hot Gather, as forward makes them, before the layer."""
    cell = load(tmp_path, TOKEN_TAGGER, dtype=dtype, V=5, H=3, K=2)
    model = rnndsl.onnx.to_model(cell, operators=operators)
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node][0] == "Gather"
    assert_agrees(cell, model, tol, lengths=[5, 2, 4])


def test_a_network_with_an_input_once_is_refused_before_export(tmp_path):
    """Such a network never ran (its segment of `input once` inputs wanted steps=, which
    no call could give it), and export refused it by its part; the checker now refuses
    it where the input is declared."""
    text = """use "gru.rnn"
cell OnceNet {
  dims I, H
  input x[I]
  input once z[H]
  layer r = reverse GRU(I = I, H = H)
  state s[H]
  param U[H, H]
  s' = tanh(U @ s + z)
  output y = r(x) + s'
}
"""
    with pytest.raises(CheckError, match="input once 'z' in a cell with a layer run over "
                                         "whole sequences"):
        load(tmp_path, text, I=2, H=3)


def test_cli_exports_a_network_spec(tmp_path, capsys):
    cell = load(tmp_path, STACKED, V=4, H=3, K=2)
    out = tmp_path / "net.onnx"
    code = main(["export", str(tmp_path / "net.rnn"), "--dims", "V=4,H=3,K=2", "-o", str(out)])
    text = capsys.readouterr().out
    assert code == 0
    assert "network of parts in turn: LSTM(bidirectional), LSTM(bidirectional), Scan" in text
    x = np.random.default_rng(0).normal(size=(4, 2, 4)).astype(np.float32)
    got = session(onnx.load(str(out))).run(["scores"], {"x": x})[0]
    np.testing.assert_allclose(got, cell.forward(x).outputs["scores"], rtol=1e-5, atol=1e-5)
