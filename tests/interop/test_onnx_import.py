"""ONNX import (rnndsl.onnx.InferenceSession) against onnxruntime.

Each model is written here with `onnx.helper`: one RNN, LSTM or GRU node (or several,
with the reshaping glue exporters put between them) with one attribute or input under
test, random weights, random inputs. onnxruntime runs it, rnndsl's session runs it, and
every output must agree within 1e-5 (float32). Most run on the reference interpreter; a
few on the compiled cpu target. What rnndsl cannot run must be refused when the session
opens, naming the attribute and its value.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import rnndsl  # noqa: E402
import rnndsl.onnx  # noqa: E402
from rnndsl.core.errors import BindError, RnnError  # noqa: E402
from rnndsl.interop.onnx_cells import cell_text, read_config  # noqa: E402
from rnndsl.interop.onnx_import import reverse_within  # noqa: E402

GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}
OUTPUTS = {"RNN": ("Y", "Y_h"), "LSTM": ("Y", "Y_h", "Y_c"), "GRU": ("Y", "Y_h")}
TOL = 1e-5


def _info(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def recurrent_model(op, *, I=3, H=4, T=5, B=3, direction="forward", layout=0, bias=True,
                    peepholes=False, lengths=False, initial=False, weights_as_inputs=False,
                    seed=0, scale=0.5, **attrs):
    """A model of one `op` node and a feed for it, drawn at random."""
    rng = np.random.default_rng(seed)
    D = 2 if direction == "bidirectional" else 1
    G = GATES[op]

    def normal(*shape):
        return (scale * rng.normal(size=shape)).astype(np.float32)

    weights = {"W": normal(D, G * H, I), "R": normal(D, G * H, H)}
    if bias:
        weights["B"] = normal(D, 2 * G * H)
    if peepholes:
        weights["P"] = normal(D, 3 * H)
    x_shape = (B, T, I) if layout else (T, B, I)
    feed = {"X": rng.normal(size=x_shape).astype(np.float32)}
    inputs = [_info("X", list(x_shape))]
    slots = {"X": "X", **{k: k for k in weights}}
    if lengths:
        lens = rng.integers(1, T + 1, B).astype(np.int32)
        lens[0] = T
        feed["sequence_lens"] = lens
        inputs.append(_info("sequence_lens", [B], TensorProto.INT32))
        slots["sequence_lens"] = "sequence_lens"
    if initial:
        states = ("initial_h", "initial_c") if op == "LSTM" else ("initial_h",)
        for s in states:
            shape = (B, D, H) if layout else (D, B, H)
            feed[s] = rng.normal(size=shape).astype(np.float32)
            inputs.append(_info(s, list(shape)))
            slots[s] = s
    initializers = []
    for k, v in weights.items():
        if weights_as_inputs:
            feed[k] = v
            inputs.append(_info(k, list(v.shape)))
        else:
            initializers.append(numpy_helper.from_array(v, k))
    order = ["X", "W", "R", "B", "sequence_lens", "initial_h"] + \
        (["initial_c", "P"] if op == "LSTM" else [])
    node_inputs = [slots.get(k, "") for k in order]
    while node_inputs and not node_inputs[-1]:
        node_inputs.pop()
    node = helper.make_node(op, node_inputs, list(OUTPUTS[op]), hidden_size=H,
                            direction=direction, layout=layout, **attrs)
    outputs = [_info(o, None) for o in OUTPUTS[op]]
    graph = helper.make_graph([node], "g", inputs, outputs, initializers)
    return _model(graph), feed


def _model(graph):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    return model


def run_ort(model, feed):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    s = ort.InferenceSession(model.SerializeToString(), options,
                             providers=["CPUExecutionProvider"])
    return s.run(None, feed)


def assert_matches_ort(model, feed, target="interp"):
    want = run_ort(model, feed)
    session = rnndsl.onnx.InferenceSession(model, target=target)
    got = session.run(None, feed)
    assert len(got) == len(want)
    for name, g, w in zip([o.name for o in session.get_outputs()], got, want):
        assert g.shape == w.shape, (name, g.shape, w.shape)
        np.testing.assert_allclose(g, w, rtol=TOL, atol=TOL, err_msg=name)
    return session


# ------------------------------------------------------------------ structure
@pytest.mark.parametrize("op", ["RNN", "LSTM", "GRU"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_directions_with_lengths_and_initial_states(op, direction):
    model, feed = recurrent_model(op, direction=direction, lengths=True, initial=True)
    assert_matches_ort(model, feed)


@pytest.mark.parametrize("op", ["RNN", "LSTM", "GRU"])
def test_an_empty_sequence(op):
    """onnxruntime's final states of a sequence of length 0 are zeros."""
    model, feed = recurrent_model(op, lengths=True, initial=True, direction="bidirectional")
    feed["sequence_lens"] = np.array([5, 0, 3], np.int32)
    assert_matches_ort(model, feed)


@pytest.mark.parametrize("op", ["RNN", "LSTM", "GRU"])
def test_layout_1(op):
    """Batch-major: onnxruntime's CPU kernels refuse layout 1, so the reference is the
    same node in layout 0 with its inputs and outputs transposed."""
    kw = dict(direction="bidirectional", lengths=True, initial=True, seed=2)
    model, feed = recurrent_model(op, layout=1, **kw)
    model0, _ = recurrent_model(op, layout=0, **kw)        # the same weights
    feed0 = {k: v.transpose(1, 0, 2) if v.ndim == 3 else v for k, v in feed.items()}
    want = run_ort(model0, feed0)
    want = [want[0].transpose(2, 0, 1, 3)] + [w.transpose(1, 0, 2) for w in want[1:]]
    got = rnndsl.onnx.InferenceSession(model, target="interp").run(None, feed)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("op", ["RNN", "LSTM", "GRU"])
def test_defaults_no_bias_no_lengths_no_states(op):
    model, feed = recurrent_model(op, bias=False, seed=3)
    assert_matches_ort(model, feed)


def test_weights_as_graph_inputs_change_between_runs():
    model, feed = recurrent_model("LSTM", weights_as_inputs=True, lengths=True,
                                  direction="bidirectional")
    session = assert_matches_ort(model, feed)
    assert {"W", "R", "B"} <= {a.name for a in session.get_inputs()}
    feed2 = {**feed, "W": feed["W"] * 2, "R": feed["R"][:, ::-1].copy()}
    for g, w in zip(session.run(None, feed2), run_ort(model, feed2)):
        np.testing.assert_allclose(g, w, rtol=TOL, atol=TOL)


def test_peepholes():
    model, feed = recurrent_model("LSTM", peepholes=True, lengths=True, initial=True,
                                  direction="bidirectional")
    session = assert_matches_ort(model, feed)
    assert "P_i * c" in session.cells["LSTM_0"]


def test_input_forget():
    model, feed = recurrent_model("LSTM", input_forget=1, peepholes=True, initial=True)
    session = assert_matches_ort(model, feed)
    assert "f = 1 - i" in session.cells["LSTM_0"]


@pytest.mark.parametrize("lbr", [0, 1])
def test_gru_linear_before_reset(lbr):
    model, feed = recurrent_model("GRU", linear_before_reset=lbr, initial=True,
                                  lengths=True, direction="bidirectional", seed=4)
    assert_matches_ort(model, feed)


@pytest.mark.parametrize("op", ["RNN", "LSTM", "GRU"])
def test_clip(op):
    model, feed = recurrent_model(op, clip=0.7, scale=1.5, initial=True, seed=5)
    session = assert_matches_ort(model, feed)
    assert "min(" in session.cells[f"{op}_0"]


# ------------------------------------------------------------------ activations
ACTIVATIONS = [
    ("Relu", [], []), ("Tanh", [], []), ("Sigmoid", [], []),
    ("Affine", [0.7], [-0.2]), ("LeakyRelu", [0.3], []), ("LeakyRelu", [], []),
    ("ThresholdedRelu", [0.1], []), ("ScaledTanh", [1.5], [0.6]),
    ("HardSigmoid", [0.3], [0.4]), ("HardSigmoid", [], []), ("Elu", [0.8], []),
    ("Softsign", [], []), ("Softplus", [], []),
]


@pytest.mark.parametrize("act,alpha,beta", ACTIVATIONS,
                         ids=[f"{a}{'_' + str(al[0]) if al else ''}"
                              for a, al, _ in ACTIVATIONS])
def test_each_activation_in_rnn(act, alpha, beta):
    attrs = {"activations": [act]}
    if alpha:
        attrs["activation_alpha"] = alpha
    if beta:
        attrs["activation_beta"] = beta
    model, feed = recurrent_model("RNN", initial=True, lengths=True, scale=0.8, **attrs)
    assert_matches_ort(model, feed)


def test_lstm_activations_and_alphas_consumed_in_order():
    """Both directions' own activations; alpha and beta go to those that read them."""
    model, feed = recurrent_model(
        "LSTM", direction="bidirectional", initial=True, clip=2.0,
        activations=["HardSigmoid", "LeakyRelu", "Softsign",
                     "Sigmoid", "Elu", "ScaledTanh"],
        activation_alpha=[0.25, 0.05, 0.9, 1.2], activation_beta=[0.45, 0.7])
    session = assert_matches_ort(model, feed)
    assert "hard_sigmoid(a_i, 0.25, 0.44999998807907104)" in session.cells["LSTM_0"]
    assert "1.2000000476837158 * tanh(0.699999988079071 * c')" in \
        session.cells["LSTM_0_reverse"]


@pytest.mark.parametrize("act, alpha, beta", [("LeakyRelu", [0.3], []),
                                               ("Affine", [0.7], [-0.2]),
                                               ("ScaledTanh", [1.5], [0.6])])
def test_one_directions_activations_serve_both_with_their_alpha_and_beta(act, alpha, beta):
    """A bidirectional node given one direction's list: the reverse direction took its
    activations but not their alpha and beta (used up by the forward), falling back to
    the defaults (Affine and ScaledTanh's 0: a reverse output of 0). onnxruntime refuses
    such a node; it is compared with the node that writes the list out for both."""
    attrs = {"activation_alpha": alpha} if alpha else {}
    attrs.update({"activation_beta": beta} if beta else {})
    model, feed = recurrent_model("RNN", direction="bidirectional", activations=[act],
                                  **attrs)
    both, _ = recurrent_model("RNN", direction="bidirectional", activations=[act] * 2,
                              **{k: v * 2 for k, v in attrs.items()})
    session = rnndsl.onnx.InferenceSession(model, target="interp")
    ours = session.cells["RNN_0_reverse"].splitlines()[1]
    assert ours == session.cells["RNN_0"].splitlines()[1], ours
    for got, want in zip(session.run(None, feed), run_ort(both, feed)):
        np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL)


def test_what_the_file_fixes_is_refused_when_the_session_opens(tmp_path):
    """Float weights of another dtype, an input declared float16 and a Constant of a
    string opened, to fail only at run; a glue node given shapes its graph did not
    expect raised NumPy's error unplaced; an initializer that is no graph input could
    be fed, silently replacing the model's weights (onnxruntime refuses that feed)."""
    from rnndsl.interop.onnx_cells import OnnxImportError
    model, feed = recurrent_model("RNN")
    w = next(t for t in model.graph.initializer if t.name == "W")
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w).astype(np.int32), "W"))
    with pytest.raises(OnnxImportError, match=r"its W \('W'\) is an initializer of int32"):
        rnndsl.onnx.InferenceSession(model, target="interp")
    model, feed = recurrent_model("RNN")
    model.graph.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    with pytest.raises(OnnxImportError, match=r"its X \('X'\) is declared float16"):
        rnndsl.onnx.InferenceSession(model, target="interp")
    model, feed = recurrent_model("RNN")
    session = rnndsl.onnx.InferenceSession(model, target="interp")
    with pytest.raises(BindError, match="the model has no input 'W' \\(an initializer of "
                                        "the model, not an input: a constant\\)"):
        session.run(None, {**feed, "W": np.zeros_like(feed["X"])})
    model, feed = recurrent_model("RNN", B=3)
    g = model.graph
    g.initializer.append(numpy_helper.from_array(np.array([5, 3, 4], np.int64), "shape"))
    g.node.append(helper.make_node("Reshape", [g.output[0].name, "shape"], ["flat"],
                                   name="to_TBH"))
    g.output.append(_info("flat", None))
    session = rnndsl.onnx.InferenceSession(model, target="interp")
    wrong = {**feed, "X": feed["X"][:, :2]}
    with pytest.raises(BindError, match="node Reshape 'to_TBH' cannot take its inputs of "
                                        "shapes"):
        session.run(None, wrong)
    g.node.append(helper.make_node("Constant", [], ["s"], value_string="text"))
    with pytest.raises(OnnxImportError, match="a Constant of value_string"):
        rnndsl.onnx.InferenceSession(model, target="interp")


def test_gru_activations():
    model, feed = recurrent_model("GRU", activations=["HardSigmoid", "ThresholdedRelu"],
                                  activation_alpha=[0.3, 0.05], activation_beta=[0.5],
                                  initial=True, linear_before_reset=1)
    assert_matches_ort(model, feed)


# ------------------------------------------------------------------ compiled target
def test_compiled_cpu_bidirectional_lstm():
    model, feed = recurrent_model("LSTM", direction="bidirectional", lengths=True,
                                  initial=True, peepholes=True, seed=6)
    assert_matches_ort(model, feed, target="cpu")


def test_compiled_cpu_gru_with_activations():
    model, feed = recurrent_model("GRU", activations=["HardSigmoid", "ThresholdedRelu"],
                                  activation_alpha=[0.3, 0.05], activation_beta=[0.5],
                                  clip=1.5, seed=7)
    assert_matches_ort(model, feed, target="cpu")


# ------------------------------------------------------------------ chained, with glue
def test_stacked_bidirectional_lstm_with_glue():
    """Two bidirectional LSTM layers joined as torch.onnx.export joins them: Y
    (T, 2, B, H) -> Transpose -> (T, B, 2, H) -> Reshape -> (T, B, 2H); the layers'
    initial states sliced out of one h0 (4, B, H)."""
    rng = np.random.default_rng(8)
    T, B, I, H = 6, 2, 3, 4

    def w(*shape):
        return numpy_helper.from_array((0.5 * rng.normal(size=shape)).astype(np.float32))

    inits = []
    for layer, i in enumerate((I, 2 * H)):
        for name, shape in (("W", (2, 4 * H, i)), ("R", (2, 4 * H, H)), ("B", (2, 8 * H))):
            t = w(*shape)
            t.name = f"{name}{layer}"
            inits.append(t)
    for name, value in (("axes0", [0]), ("s0", [0]), ("e0", [2]), ("s1", [2]), ("e1", [4]),
                        ("shape", [0, 0, -1])):
        inits.append(numpy_helper.from_array(np.array(value, np.int64), name))
    nodes = [
        helper.make_node("Slice", ["h0", "s0", "e0", "axes0"], ["h0_0"]),
        helper.make_node("Slice", ["h0", "s1", "e1", "axes0"], ["h0_1"]),
        helper.make_node("LSTM", ["X", "W0", "R0", "B0", "", "h0_0"], ["Y0", "", ""],
                         hidden_size=H, direction="bidirectional", name="layer0"),
        helper.make_node("Transpose", ["Y0"], ["Y0t"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["Y0t", "shape"], ["X1"]),
        helper.make_node("LSTM", ["X1", "W1", "R1", "B1", "", "h0_1"], ["Y1", "Yh1", "Yc1"],
                         hidden_size=H, direction="bidirectional", name="layer1"),
        helper.make_node("Transpose", ["Y1"], ["Y1t"], perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["Y1t", "shape"], ["out"]),
        helper.make_node("Identity", ["Yh1"], ["h_n"]),
    ]
    graph = helper.make_graph(nodes, "stacked", [_info("X", [T, B, I]), _info("h0", [4, B, H])],
                              [_info("out", None), _info("h_n", None)], inits)
    feed = {"X": rng.normal(size=(T, B, I)).astype(np.float32),
            "h0": rng.normal(size=(4, B, H)).astype(np.float32)}
    session = assert_matches_ort(_model(graph), feed)
    assert sorted(session.cells) == ["LSTM_0", "LSTM_0_reverse", "LSTM_1", "LSTM_1_reverse"]
    out, = session.run(["out"], feed)
    assert out.shape == (T, B, 2 * H)


def test_different_operators_chained_in_an_older_opset():
    """GRU -> Squeeze (axes as an attribute, opset 11) -> RNN: glue of the older form."""
    rng = np.random.default_rng(10)
    T, B, I, H = 4, 3, 2, 5

    def w(name, *shape):
        return numpy_helper.from_array((0.5 * rng.normal(size=shape)).astype(np.float32),
                                       name)

    nodes = [helper.make_node("GRU", ["X", "Wg", "Rg"], ["Yg"], hidden_size=H,
                              linear_before_reset=1),
             helper.make_node("Squeeze", ["Yg"], ["Xr"], axes=[1]),
             helper.make_node("RNN", ["Xr", "Wr", "Rr", "Br"], ["Y", "Y_h"], hidden_size=H,
                              activations=["Relu"], direction="reverse")]
    graph = helper.make_graph(nodes, "chain", [_info("X", [T, B, I])],
                              [_info("Y", None), _info("Y_h", None)],
                              [w("Wg", 1, 3 * H, I), w("Rg", 1, 3 * H, H),
                               w("Wr", 1, H, H), w("Rr", 1, H, H), w("Br", 1, 2 * H)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    model.ir_version = 6
    session = assert_matches_ort(model, {"X": rng.normal(size=(T, B, I)).astype(np.float32)})
    assert list(session.cells) == ["GRU_0", "RNN_1"]


# ------------------------------------------------------------------ round trip
@pytest.mark.parametrize("spec", ["lstm", "peephole_lstm", "gru", "gru_cho"])
def test_round_trip_of_an_exported_spec(spec, tmp_path):
    cell = rnndsl.load(f"specs/{spec}.rnn", target="interp")(I=3, H=4, dtype=np.float32,
                                                             seed=1)
    path = tmp_path / f"{spec}.onnx"
    model = rnndsl.onnx.export(cell, str(path))
    assert rnndsl.onnx.exported_as(model).split(":")[0] in ("LSTM", "GRU")
    session = rnndsl.onnx.InferenceSession(str(path), target="interp")
    x = np.random.default_rng(2).normal(size=(5, 2, 3)).astype(np.float32)
    got = session.run(None, {"x": x})
    run = cell.forward(x)
    want = [run.outputs["h"]] + [run.state[d.name] for d in cell.spec.states]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("spec", ["lstm", "gru", "elman"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_round_trip_of_an_exported_directional_cell(spec, direction, tmp_path):
    """rnndsl's export of a cell that matches an operator (one operator node, the
    ReverseSequence glue around a length-0 sequence's state of a reverse direction, and
    elman.rnn's readout: MatMul, Add, Sigmoid) imports back, with and without sequence
    lengths."""
    Cell = rnndsl.load(f"specs/{spec}.rnn", target="interp")
    dims = {"I": 3, "H": 4, "O": 2}
    cell = Cell(**{d: dims[d] for d in Cell.spec.dims}, dtype=np.float32, seed=1,
                direction=direction)
    path = tmp_path / f"{spec}.onnx"
    rnndsl.onnx.export(cell, str(path))
    session = rnndsl.onnx.InferenceSession(str(path), target="interp")
    names = [o.name for o in session.get_outputs()]
    x = np.random.default_rng(2).normal(size=(5, 3, 3)).astype(np.float32)
    lengths = np.array([5, 0, 3])
    for run, feed in ((cell.forward(x), {"x": x}),
                      (cell.forward(x, lengths=lengths),
                       {"x": x, "sequence_lens": lengths.astype(np.int32)})):
        got = dict(zip(names, session.run(None, feed)))
        want = dict(run.outputs, **{f"final_{k}": v for k, v in run.state.items()})
        assert sorted(got) == sorted(want)
        for name, value in want.items():
            np.testing.assert_allclose(got[name], value, rtol=TOL, atol=TOL, err_msg=name)


# ------------------------------------------------------------------ the cells
def test_cells_are_spec_text_that_loads_and_holds_the_weights():
    model, feed = recurrent_model("GRU", direction="bidirectional", initial=True,
                                  linear_before_reset=1)
    session = rnndsl.onnx.InferenceSession(model, target="interp")
    Y, Y_h = session.run(None, feed)
    for d, name in enumerate(["GRU_0", "GRU_0_reverse"]):
        Cell = rnndsl.load_text(session.cells[name], target="interp")
        assert Cell.__name__ == name
        cell = session.cell(name)
        x = feed["X"] if d == 0 else feed["X"][::-1]
        run = cell.forward(np.ascontiguousarray(x), {"h": feed["initial_h"][d]})
        y = run.outputs["h"] if d == 0 else run.outputs["h"][::-1]
        np.testing.assert_allclose(y, Y[:, d], rtol=TOL, atol=TOL)
        np.testing.assert_allclose(run.state["h"], Y_h[d], rtol=TOL, atol=TOL)
        grads = cell.backward(run, d_outputs={"h": np.ones_like(run.outputs["h"])})
        assert set(grads.params) == set(cell.params)       # trainable


def test_an_imported_cell_exports_as_the_operator_again(tmp_path):
    """The cells are written in ONNX's form: one with the default activations and no
    clip is recognised by the exporter (onnx_match.py) as the operator it came from."""
    for op, attrs in (("LSTM", dict(peepholes=True)), ("GRU", dict(linear_before_reset=1)),
                      ("GRU", dict(linear_before_reset=0)), ("RNN", {})):
        model, feed = recurrent_model(op, **attrs)
        session = rnndsl.onnx.InferenceSession(model, target="interp")
        cell = session.cell(f"{op}_0")
        again = rnndsl.onnx.export(cell, str(tmp_path / f"{op}.onnx"))
        assert rnndsl.onnx.exported_as(again).startswith(op), rnndsl.onnx.exported_as(again)
        got = run_ort(again, {"x": feed["X"]})
        for g, w in zip(got, session.run(None, feed)):
            np.testing.assert_allclose(g, w.reshape(g.shape), rtol=TOL, atol=TOL)


def test_the_cell_docs_onnx_md_prints_is_the_one_generated():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "onnx.md").read_text()
    shown = doc.split("prints the forward direction's cell:\n\n```text\n")[1].split("```")[0]
    config = read_config("GRU", {"direction": "bidirectional", "linear_before_reset": 1,
                                 "activations": [b"HardSigmoid", b"Tanh"] * 2}, "node 0")
    assert cell_text(config, "GRU_0", 0) == shown


def test_names_from_the_file_never_reach_spec_text():
    evil = 'x }\ncell Evil { dims I  input x[I]  output x }  # "'
    model, feed = recurrent_model("RNN")
    g = model.graph
    g.node[0].name = evil
    for item in list(g.input) + list(g.output) + list(g.initializer):
        item.name = evil + item.name
    g.node[0].input[:] = [evil + n for n in g.node[0].input]
    g.node[0].output[:] = [evil + n for n in g.node[0].output]
    feed = {evil + k: v for k, v in feed.items()}
    session = assert_matches_ort(model, feed)
    assert list(session.cells) == ["RNN_0"]
    assert "Evil" not in session.cells["RNN_0"] and '"' not in session.cells["RNN_0"]


def test_get_inputs_and_outputs_like_onnxruntime():
    model, _ = recurrent_model("LSTM", lengths=True)
    session = rnndsl.onnx.InferenceSession(model.SerializeToString(), target="interp",
                                           providers=["CPUExecutionProvider"])
    assert [(a.name, a.shape) for a in session.get_inputs()] == \
        [("X", [5, 3, 3]), ("sequence_lens", [3])]
    assert [a.type for a in session.get_inputs()] == ["tensor(float)", "tensor(int32)"]
    assert [a.name for a in session.get_outputs()] == ["Y", "Y_h", "Y_c"]


def test_reverse_within_lengths():
    x = np.arange(12).reshape(4, 3)
    got = reverse_within(x, np.array([4, 2, 0]))
    assert got[:, 0].tolist() == [9, 6, 3, 0]
    assert got[:, 1].tolist() == [4, 1, 7, 10]
    assert got[:, 2].tolist() == [2, 5, 8, 11]


# ------------------------------------------------------------------ refusals
REFUSED = [
    (dict(activations=["Gelu"]), "activations holds 'Gelu'"),
    (dict(activations=["Tanh", "Tanh"]), "activations=['Tanh', 'Tanh'] has 2 entries"),
    (dict(direction="sideways"), "direction='sideways'"),
    (dict(layout=2), "layout=2"),
    (dict(clip=-1.0), "clip=-1.0"),
    (dict(activations=["LeakyRelu"], activation_alpha=[float("inf")]),
     "activation_alpha holds inf"),
    (dict(linear_before_reset=1), "attribute linear_before_reset=1"),
    (dict(activations=["tanh"]), "activations holds 'tanh', not one of Relu, Tanh"),
    (dict(activations=["LeakyRelu"], activation_alpha=[1]),
     "attribute activation_alpha=[1] is INTS, but ONNX's RNN takes activation_alpha as FLOATS"),
    (dict(clip=1), "attribute clip=1 is INT, but ONNX's RNN takes clip as FLOAT"),
]


@pytest.mark.parametrize("attrs,message", REFUSED, ids=[m for _, m in REFUSED])
def test_refusals_name_the_attribute_and_value(attrs, message):
    attrs = dict(attrs)
    direction = attrs.pop("direction", "forward")
    layout = attrs.pop("layout", 0)
    model, _ = recurrent_model("RNN", direction=direction, layout=layout, **attrs)
    with pytest.raises(rnndsl.onnx.OnnxImportError, match=None) as info:
        rnndsl.onnx.InferenceSession(model, target="interp")
    assert message in str(info.value)
    assert isinstance(info.value, RnnError)


def test_weights_that_do_not_fit_hidden_size_are_refused():
    model, _ = recurrent_model("GRU", H=4)
    (hidden,) = [a for a in model.graph.node[0].attribute if a.name == "hidden_size"]
    hidden.i = 5
    with pytest.raises(rnndsl.onnx.OnnxImportError, match=r"do not fit hidden_size=5"):
        rnndsl.onnx.InferenceSession(model, target="interp")


def test_an_op_outside_the_recurrent_set_is_refused():
    model, _ = recurrent_model("RNN")
    g = model.graph
    g.node.append(helper.make_node("Softmax", ["Y_h"], ["Z"]))
    with pytest.raises(rnndsl.onnx.OnnxImportError, match="op_type='Softmax'"):
        rnndsl.onnx.InferenceSession(model, target="interp")


def test_bad_feeds_are_bind_errors():
    model, feed = recurrent_model("RNN", lengths=True)
    session = rnndsl.onnx.InferenceSession(model, target="interp")
    with pytest.raises(BindError, match="missing input: sequence_lens"):
        session.run(None, {"X": feed["X"]})
    with pytest.raises(BindError, match="no input 'Q'"):
        session.run(None, {**feed, "Q": feed["X"]})
    with pytest.raises(BindError, match=r"sequence_lens \[9, "):
        session.run(None, {**feed, "sequence_lens": np.array([9, 1, 1], np.int32)})


def test_output_names_and_a_feed_of_the_wrong_kind_are_bind_errors():
    model, feed = recurrent_model("RNN")
    session = rnndsl.onnx.InferenceSession(model, target="interp")
    # a string is not walked letter by letter (its 'Y' is an output, its '_' is not)
    with pytest.raises(BindError, match=r"a list of names.*not 'Y_h' \(write \['Y_h'\]\)"):
        session.run("Y_h", feed)
    with pytest.raises(BindError, match="a list of names"):
        session.run([0], feed)
    for bad in ([feed["X"]], None, feed["X"]):
        with pytest.raises(BindError, match=r"the feed must be a dict .*inputs: X"):
            session.run(None, bad)
    (y_h,) = session.run(["Y_h"], feed)
    np.testing.assert_allclose(y_h, run_ort(model, feed)[1], rtol=TOL, atol=TOL)


def test_onnxruntimes_positional_session_options_and_providers_are_taken():
    """onnxruntime's signature: InferenceSession(path, sess_options, providers)."""
    model, feed = recurrent_model("GRU")
    options = ort.SessionOptions()
    session = rnndsl.onnx.InferenceSession(model, options, ["CPUExecutionProvider"])
    assert session.target == "cpu"
    want = run_ort(model, feed)
    for got, w in zip(session.run(None, feed), want):
        np.testing.assert_allclose(got, w, rtol=TOL, atol=TOL)
    assert rnndsl.onnx.InferenceSession(model, "interp").target == "interp"


@pytest.mark.parametrize("inputs, missing", [(["X", "W"], "input R missing"),
                                             (["", "W", "R"], "input X missing"),
                                             (["X", "", ""], "inputs W, R missing")])
def test_a_node_without_x_w_or_r_is_refused_when_the_session_opens(inputs, missing):
    model, _ = recurrent_model("RNN")
    node = model.graph.node[0]
    del node.input[:]
    node.input.extend(inputs)
    with pytest.raises(rnndsl.onnx.OnnxImportError, match=rf"node 0 \(RNN ''\): {missing}"):
        rnndsl.onnx.InferenceSession(model, target="interp")


def test_a_node_reading_a_value_nothing_defines_is_refused_when_the_session_opens():
    model, _ = recurrent_model("LSTM")
    node = model.graph.node[0]
    node.input[2] = "R_typo"
    with pytest.raises(rnndsl.onnx.OnnxImportError,
                       match=r"reads 'R_typo', which is neither an input or initializer"):
        rnndsl.onnx.InferenceSession(model, target="interp")


def test_a_feed_of_another_dtype_is_refused_as_onnxruntime_does():
    model, feed = recurrent_model("LSTM")
    session = rnndsl.onnx.InferenceSession(model, target="interp")
    with pytest.raises(BindError, match=r"input 'X' is float64 but the model declares it "
                                        r"tensor\(float\), float32"):
        session.run(None, {"X": feed["X"].astype(np.float64)})


@pytest.mark.parametrize("layout", [0, 1])
def test_an_x_of_the_wrong_feature_size_is_blamed_on_x(layout):
    model, feed = recurrent_model("LSTM", I=2, T=5, B=3, layout=layout)
    session = rnndsl.onnx.InferenceSession(model, target="interp")
    wrong = (3, 5, 7) if layout else (5, 3, 7)
    want = r"\(3, 5, 2\)" if layout else r"\(5, 3, 2\)"
    with pytest.raises(BindError, match=rf"X is {re.escape(str(wrong))} but must be {want}"):
        session.run(None, {"X": np.zeros(wrong, np.float32)})


def test_x_and_fed_weights_that_disagree_blame_neither():
    """With W fed at run time, a wrong W is as likely as a wrong X: the message named X
    the culprit and gave the shape it 'must' have."""
    model, feed = recurrent_model("LSTM", I=2, T=5, B=3, weights_as_inputs=True)
    session = rnndsl.onnx.InferenceSession(model, target="interp")
    feed = dict(feed, W=np.zeros(feed["W"].shape[:2] + (7,), np.float32))
    with pytest.raises(BindError, match=r"X \(5, 3, 2\) and W \(1, 16, 7\), both fed, "
                                        r"disagree on the input size \(2 against 7\)"):
        session.run(None, feed)


def test_a_non_finite_feed_is_named_as_the_model_names_it():
    model, feed = recurrent_model("LSTM", initial=True)
    node = model.graph.node[0]
    node.input[5] = "h0"                       # the model's own name for initial_h
    model.graph.input[1].name = "h0"
    feed["h0"] = feed.pop("initial_h")
    session = rnndsl.onnx.InferenceSession(model, target="interp")
    bad = feed["X"].copy()
    bad[1, 2, 0] = np.nan
    with pytest.raises(BindError, match=r"X has a non-finite value \(nan\) at index "
                                        r"\(1, 2, 0\)"):
        session.run(None, {**feed, "X": bad})
    bad = feed["h0"].copy()
    bad[0, 1, 3] = np.inf
    with pytest.raises(BindError, match=r"initial_h 'h0' has a non-finite value \(inf\) "
                                        r"at index \(0, 1, 3\)"):
        session.run(None, {**feed, "h0": bad})


@pytest.mark.parametrize("source, words", [
    (b"garbage", "the 7 bytes given are not an ONNX model"),
    (42, "InferenceSession takes a path, bytes or an onnx.ModelProto, got int"),
])
def test_what_is_not_a_model_is_an_import_error(source, words):
    with pytest.raises(rnndsl.onnx.OnnxImportError) as info:
        rnndsl.onnx.InferenceSession(source, target="interp")
    assert words in str(info.value)


# ------------------------------------------------------------------ the language's additions
NEW_FUNCTIONS = """
cell Selects {
  dims  I, H
  input x[I]
  state h[H]
  param W[H, I], U[H, H], t[H] ~ 0.1
  a  = W @ x + U @ h
  h' = a * greater(a, t) + hard_sigmoid(a, 0.3, -0.1) - hard_sigmoid(-a)
  output h'
}
"""


def test_greater_and_hard_sigmoid_with_constants_export_and_run_in_onnxruntime(tmp_path):
    """The functions ONNX's activations needed export too (as a Scan's body)."""
    cell = rnndsl.load_text(NEW_FUNCTIONS, target="interp")(I=3, H=4, seed=0)
    model = rnndsl.onnx.export(cell, str(tmp_path / "selects.onnx"))
    x = np.random.default_rng(0).normal(size=(4, 2, 3)).astype(np.float32)
    y, h = run_ort(model, {"x": x})
    run = cell.forward(x)
    np.testing.assert_allclose(y, run.outputs["h"], rtol=TOL, atol=TOL)
    np.testing.assert_allclose(h, run.state["h"], rtol=TOL, atol=TOL)


def test_cuda_target_runs_the_new_functions():
    """On numba-cuda's simulator (tests/conftest.py), tiny: the generated kernels'
    formats for greater and hard_sigmoid(a, alpha, beta)."""
    pytest.importorskip("numba_cuda")
    model, feed = recurrent_model("GRU", activations=["HardSigmoid", "ThresholdedRelu"],
                                  activation_alpha=[0.3, 0.05], activation_beta=[0.5],
                                  T=2, B=2, I=2, H=2, seed=9)
    assert_matches_ort(model, feed, target="cuda")


# ------------------------------------------------------------------ models PyTorch wrote
@pytest.mark.parametrize("kind", ["lstm_2_layers_bidirectional", "gru_batch_first"])
def test_a_model_torch_onnx_export_wrote(kind, tmp_path):
    """torch.onnx.export's (TorchScript exporter's) glue: Shape, Gather, Unsqueeze,
    Concat and Expand for the zero states, Transpose and Reshape between the layers,
    Concat of the final states; compared with torch itself and with onnxruntime."""
    torch = pytest.importorskip("torch")
    import warnings
    torch.manual_seed(0)
    if kind.startswith("lstm"):
        m = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True)
        x = torch.randn(5, 2, 3)
    else:
        m = torch.nn.GRU(3, 4, batch_first=True)
        x = torch.randn(2, 5, 3)
    path = tmp_path / f"{kind}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), str(path), dynamo=False, opset_version=14,
                          input_names=["x"])
    session = rnndsl.onnx.InferenceSession(str(path), target="interp")
    feed = {"x": x.numpy()}
    got = session.run(None, feed)
    with torch.no_grad():
        y, h = m(x)
    want = [y.numpy()] + ([t.numpy() for t in h] if isinstance(h, tuple) else [h.numpy()])
    for g, w, o in zip(got, want, run_ort(onnx.load(str(path)), feed)):
        np.testing.assert_allclose(g, w, rtol=TOL, atol=TOL)
        np.testing.assert_allclose(g, o, rtol=TOL, atol=TOL)


def test_the_new_functions_compiled_match_the_interpreter_with_gradients():
    """The cpu target's forward and BPTT of greater and hard_sigmoid(a, alpha, beta)
    against the reference interpreter, float64 (gradients checked against finite
    differences in tests/ir/test_vjp.py)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4, 2, 3))
    results = []
    for target in ("interp", "cpu"):
        cell = rnndsl.load_text(NEW_FUNCTIONS, target=target)(I=3, H=4, dtype=np.float64,
                                                              seed=0)
        run = cell.forward(x)
        g = cell.backward(run, d_outputs={"h": np.ones_like(run.outputs["h"])})
        results.append([run.outputs["h"], g.inputs["x"]] + [g.params[k] for k in "WUt"])
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
