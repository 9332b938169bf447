"""ONNX export (rnndsl.onnx, `rnndsl export`) against the interpreter, run in onnxruntime.

Every shipped spec is exported and run with random inputs, random initial states and
sequence lengths, and compared with `forward` of the reference interpreter; the
standard cells must come out as ONNX's operators (RNN, LSTM, GRU), recognised by their
structure, and the rest as a Scan.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import onnx  # noqa: E402

import rnndsl  # noqa: E402
import rnndsl.onnx  # noqa: E402
import rnndsl.core.errors  # noqa: E402
from rnndsl.cli.main import main  # noqa: E402
from rnndsl.core.errors import SpecError  # noqa: E402
from rnndsl.lang.specfile import read_spec  # noqa: E402
from rnndsl.core.ops import INTERNAL, PRIMITIVES, Op  # noqa: E402
from rnndsl.interop.onnx_nodes import ONNX_RULES  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SPECS = sorted((REPO / "specs").glob("*.rnn"))
TORCH_CELLS = [(path, name) for path in sorted((REPO / "specs" / "torch").glob("*.rnn"))
               for name in read_spec(path).cells]
DIMS = dict(I=3, H=4, O=2, V=5, P=3, A=2, G=3, K=3)
OPERATORS = {"elman": "RNN", "elman_relu": "RNN", "lstm": "LSTM", "peephole_lstm": "LSTM",
             "gru": "GRU", "gru_cho": "GRU"}


def session(model):
    options = ort.SessionOptions()
    options.log_severity_level = 3     # the overridable initializers' notice
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def make_cell(spec, dtype=np.float32, text=None, **dims):
    Cell = (rnndsl.load(spec, target="interp") if text is None
            else rnndsl.load_text(text, target="interp"))
    dims = dims or {d: DIMS[d] for d in Cell.spec.dims}
    return Cell(dtype=dtype, seed=0, **dims)


def random_feed(cell, T=5, B=3, seed=1):
    """Inputs as `forward` takes them, initial states and lengths, drawn at random."""
    rng = np.random.default_rng(seed)
    xs = {}
    for d in cell.spec.inputs:
        if d.name in cell.hidden_inputs:
            continue
        size = d.type.shape[0].evaluate(cell.dims)
        if d.token:
            xs[d.name] = rng.integers(0, size, (T, B)).astype(np.int64)
        elif d.once:
            xs[d.name] = rng.normal(size=(B, size)).astype(cell.dtype)
        else:
            xs[d.name] = rng.normal(size=(T, B, size)).astype(cell.dtype)
    state = {d.name: rng.normal(size=(B, d.type.shape[0].evaluate(cell.dims)))
             .astype(cell.dtype) for d in cell.spec.states}
    lengths = rng.integers(1, T + 1, B)
    lengths[0] = T
    if B > 2 and not any(o.final for o in cell.spec.outputs):
        lengths[2] = 0          # an empty sequence keeps its start
    return xs, state, lengths


def assert_same(cell, model, T=5, B=3, tol=1e-5, seed=1):
    """The model in onnxruntime and cell.forward agree: with states and lengths given,
    and with the optional inputs left to their defaults."""
    xs, state, lengths = random_feed(cell, T, B, seed)
    x = xs if len(xs) > 1 else next(iter(xs.values()))
    sess = session(model)
    names = [o.name for o in sess.get_outputs()]
    feed = dict(xs, sequence_lens=lengths.astype(np.int32),
                **{f"initial_{k}": v for k, v in state.items()})
    for run, given in ((cell.forward(x, state, lengths=lengths), feed),
                       (cell.forward(x), dict(xs))):
        assert_session_gives(sess, names, given, run, cell.dtype, tol)


def assert_session_gives(sess, names, feed, run, dtype, tol) -> None:
    """onnxruntime's outputs for `feed` are the Run's outputs and final states (named
    final_<state>), each to `tol` of its scale."""
    got = dict(zip(names, sess.run(None, feed)))
    want = dict(run.outputs, **{f"final_{k}": v for k, v in run.state.items()})
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        assert got[name].shape == value.shape, name
        assert got[name].dtype == dtype, name
        err = float(np.abs(got[name] - value).max())
        assert err <= tol * max(1.0, float(np.abs(value).max())), (name, err)


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.stem)
def test_every_shipped_spec_runs_in_onnxruntime_as_the_interpreter(spec, tmp_path):
    cell = make_cell(spec)
    path = tmp_path / "model.onnx"
    model = rnndsl.onnx.export(cell, path)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    assert rnndsl.onnx.exported_as(model) == OPERATORS.get(spec.stem, "Scan")
    assert_same(cell, model)
    assert [i.name for i in model.graph.initializer if i.name in cell.params] == \
        list(cell.params)


@pytest.mark.parametrize("spec", [s for s in SPECS if s.stem in OPERATORS],
                         ids=lambda p: p.stem)
def test_operator_cells_also_run_as_a_scan(spec):
    cell = make_cell(spec)
    model = rnndsl.onnx.to_model(cell, operators=False)
    assert rnndsl.onnx.exported_as(model) == "Scan"
    assert_same(cell, model)


def _operator_node(model):
    return next(n for n in model.graph.node if n.op_type in ("RNN", "LSTM", "GRU"))


def test_the_operators_attributes_follow_the_specs_conventions():
    def attrs(stem):
        node = _operator_node(rnndsl.onnx.to_model(make_cell(REPO / "specs" / f"{stem}.rnn")))
        return node, {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs("gru")[1]["linear_before_reset"] == 1
    assert attrs("gru_cho")[1]["linear_before_reset"] == 0
    assert attrs("elman_relu")[1]["activations"] == [b"Relu"]
    assert attrs("elman")[1]["activations"] == [b"Tanh"]
    node, _ = attrs("peephole_lstm")
    assert len(node.input) == 8 and node.input[7]
    node, _ = attrs("lstm")
    assert len(node.input) == 7


# a standard LSTM written another way: other names, terms and factors in another order,
# two biases on one gate and none on another; the file's and cell's names say nothing
RENAMED_LSTM = """
cell Mine {
  dims  N, M
  input u[N]
  state s[M], k[M]
  param A1[M, N], A2[M, N], A3[M, N], A4[M, N]
  param B1[M, M], B2[M, M], B3[M, M], B4[M, M]
  param c1[M], c2[M], c3[M], c3b[M]

  in_gate  = sigmoid(c1 + B1 @ s + A1 @ u)
  keep     = sigmoid(A2 @ u + B2 @ s)
  cand     = tanh(c3 + A3 @ u + c3b + B3 @ s)
  out_gate = sigmoid(B4 @ s + A4 @ u + c2)
  k' = cand * in_gate + k * keep
  s' = tanh(k') * out_gate
  output s'
  output y = softmax(s')
}
"""


def test_an_lstm_is_recognised_by_its_structure_not_its_names():
    cell = make_cell(None, text=RENAMED_LSTM, N=3, M=4)
    model = rnndsl.onnx.to_model(cell)
    assert rnndsl.onnx.exported_as(model) == "LSTM"
    assert_same(cell, model)


@pytest.mark.parametrize("change", [
    ("k' = cand * in_gate + k * keep", "k' = cand * in_gate + k * keep * keep"),
    ("s' = tanh(k') * out_gate", "s' = relu(k') * out_gate"),
    ("output y = softmax(s')", "output y = softmax(k')"),      # reads the cell state
])
def test_a_cell_that_differs_from_the_operator_becomes_a_scan(change):
    cell = make_cell(None, text=RENAMED_LSTM.replace(*change), N=3, M=4)
    model = rnndsl.onnx.to_model(cell)
    assert rnndsl.onnx.exported_as(model) == "Scan"
    assert any(n.op_type == "Scan" for n in model.graph.node)
    assert_same(cell, model)


# PyTorch's form: stacked weights in torch's gate order (i, f, g, o), sliced into gates
STACKED_LSTM = """
cell Stacked {
  dims  I, H
  input x[I]
  state h[H], c[H]
  param weight_ih[4 * H, I], weight_hh[4 * H, H], bias_ih[4 * H], bias_hh[4 * H]
  z  = weight_ih @ x + bias_ih + weight_hh @ h + bias_hh
  i  = sigmoid(z[0:H])
  f  = sigmoid(z[H:2 * H])
  g  = tanh(z[2 * H:3 * H])
  o  = sigmoid(z[3 * H:4 * H])
  c' = f * c + i * g
  h' = o * tanh(c')
  output h'
}
"""


def test_stacked_weights_sliced_into_gates_are_recognised():
    cell = make_cell(None, text=STACKED_LSTM, I=3, H=4)
    model = rnndsl.onnx.to_model(cell)
    assert rnndsl.onnx.exported_as(model) == "LSTM"
    assert_same(cell, model)
    tied = STACKED_LSTM.replace("i  = sigmoid(z[0:H])", "i  = sigmoid(z[H:2 * H])")
    cell = make_cell(None, text=tied, I=3, H=4)     # i is f: an LSTM whose i and f rows agree
    model = rnndsl.onnx.to_model(cell)
    assert rnndsl.onnx.exported_as(model) == "LSTM"
    assert_same(cell, model)
    other = STACKED_LSTM.replace("g  = tanh(z[2 * H:3 * H])", "g  = tanh(z[2 * H:3 * H] * 2)")
    cell = make_cell(None, text=other, I=3, H=4)
    model = rnndsl.onnx.to_model(cell)
    assert rnndsl.onnx.exported_as(model) == "Scan"
    assert_same(cell, model)


@pytest.mark.parametrize("path, name", TORCH_CELLS, ids=lambda v: getattr(v, "stem", v))
def test_the_torch_specs_run_in_onnxruntime_and_all_but_projections_are_operators(
        path, name):
    Cell = rnndsl.load(path, target="interp", cell=name)
    cell = Cell(dtype=np.float32, seed=0, **{d: DIMS[d] for d in Cell.spec.dims})
    model = rnndsl.onnx.to_model(cell)
    kind = rnndsl.onnx.exported_as(model)
    assert (kind == "Scan") == ("Proj" in name), kind
    assert_same(cell, model)


def test_every_op_of_the_language_has_an_onnx_rule():
    missing = (PRIMITIVES | {Op.CONST, Op.DIM, Op.BATCH}) - set(ONNX_RULES)
    assert not missing
    # internal ops of adjoint graphs only, which no export writes, may lack one
    assert set(Op) - set(ONNX_RULES) <= INTERNAL | {Op.INPUT, Op.STATE, Op.PARAM, Op.SEED}


def test_export_refuses_what_is_not_a_cell_instance(tmp_path):
    Cell = rnndsl.load(REPO / "specs" / "lstm.rnn", target="interp")
    for bad in (Cell, "specs/lstm.rnn", None):
        with pytest.raises(rnndsl.onnx.ExportError, match="instance"):
            rnndsl.onnx.export(bad, tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


HARD = """cell Hard {
  dims I, H
  input x[I]
  state h[H]
  param W[H, I], U[H, H]
  h' = hard_sigmoid(W @ x + U @ h) * 0.5 + hard_sigmoid(U @ h, 0.3, 0.4) * 0.5
  output h'
}"""


def all_ops(graph) -> set[str]:
    """The op types of a graph's nodes and of its Scan bodies'."""
    ops = set()
    for node in graph.node:
        ops.add(node.op_type)
        for a in node.attribute:
            if a.HasField("g"):
                ops |= all_ops(a.g)
    return ops


def test_float64_hard_sigmoid_keeps_float64_constants():
    """HardSigmoid's alpha and beta are float32 attributes: a float64 export writes the
    line and its clip with float64 constants instead, within 1e-12; float32 keeps it."""
    cell = make_cell(None, np.float64, HARD, I=3, H=4)
    cell.params["W"] *= 4        # some units past both ends of the clip
    model = rnndsl.onnx.to_model(cell)
    assert "HardSigmoid" not in all_ops(model.graph)
    assert_same(cell, model, tol=1e-12)
    small = rnndsl.onnx.to_model(make_cell(None, np.float32, HARD, I=3, H=4))
    assert "HardSigmoid" in all_ops(small.graph)


def test_float64_softplus_does_not_overflow_where_forward_does_not():
    """From an outside review: onnxruntime's float64 Softplus is log(1 + exp(a)), inf
    from a = 710 on, where rnndsl's softplus is finite (language.md: 'computed without
    overflow'); softplus(1000 x) exported gave inf against forward's 1000."""
    text = ("cell SP {\n  dims N\n  input x[N]\n  state h[N]\n"
            "  h' = softplus(1000 * x) + 0 * h\n  output h'\n}\n")
    cell = make_cell(None, np.float64, text, N=2)
    x = np.array([[[1.0, 0.5]], [[-0.3, 2e-3]], [[-0.04, -0.02]], [[-0.8, 1e-19]]])
    want = cell.forward(x).outputs["h"]
    assert np.isfinite(want).all()
    model = rnndsl.onnx.to_model(cell)
    got = session(model).run(None, {"x": x})[0]
    # relative, each element: softplus(-40) is 4.2e-18 (log(1 + u) alone gave 0)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    assert_same(cell, model, tol=1e-12)
    small = rnndsl.onnx.to_model(make_cell(None, np.float32, text, N=2))
    assert "Softplus" in all_ops(small.graph)


def test_export_refuses_a_missing_folder_a_folder_and_a_non_finite_param(tmp_path):
    cell = make_cell(REPO / "specs" / "gru.rnn", I=3, H=4)
    with pytest.raises(rnndsl.onnx.ExportError, match=r"the folder .*typo.*sub does not "
                                                      r"exist"):
        rnndsl.onnx.export(cell, tmp_path / "typo" / "sub" / "m.onnx")
    assert not (tmp_path / "typo").exists()
    with pytest.raises(rnndsl.onnx.ExportError, match=r": is a folder; name the file"):
        rnndsl.onnx.export(cell, tmp_path)
    cell.params["W_r"][1, 2] = np.inf
    for path in (tmp_path / "m.onnx", None):
        with pytest.raises(rnndsl.onnx.ExportError, match=r"param W_r has a non-finite "
                                                          r"value \(inf\) at index \(1, 2\)"):
            rnndsl.onnx.export(cell, path) if path else rnndsl.onnx.to_model(cell)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("edit, message", [
    (lambda p, n: p.__setitem__(n, p[n].astype(np.float64)), "is float64 but the cell is"),
    (lambda p, n: p.__setitem__(n, p[n][:-1]), "has shape"),
    (lambda p, n: p.pop(n), "must be a NumPy array"),
    (lambda p, n: p.__setitem__("W_z_typo", p[n]), "has no param W_z_typo"),
])
def test_export_checks_the_params_as_a_forward_does(tmp_path, direction, edit, message):
    """A float64 param in a float32 cell was written into a model onnxruntime refused to
    open, a missing one into a graph that did not validate: each is now refused before
    anything is written, as forward refuses it, by the name it has in .params."""
    cell = rnndsl.load(REPO / "specs" / "gru.rnn", target="interp")(
        I=3, H=4, dtype=np.float32, direction=direction)
    name = "W_z" + ("_reverse" if direction == "bidirectional" else "")
    edit(cell.params, name)
    shown = name if "typo" not in message else "W_z_typo"
    with pytest.raises(rnndsl.core.errors.BindError, match=shown if "typo" in message
                       else rf"param {name} {message}"):
        rnndsl.onnx.export(cell, tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_cli_refuses_an_output_in_a_missing_folder(tmp_path, capsys):
    out = tmp_path / "typo" / "m.onnx"
    code, _, err = run(["export", REPO / "specs" / "gru.rnn", "--dims", "I=3,H=4", "-o",
                        out], capsys)
    assert code == 2 and f"-o {out}: the folder {out.parent} does not exist" in err, err
    assert not (tmp_path / "typo").exists()


def test_cli_never_writes_the_model_over_the_spec_it_reads(tmp_path, capsys):
    """`rnndsl export s.rnn -o s.rnn --force` replaced the spec with the ONNX model."""
    spec = tmp_path / "gru.rnn"
    spec.write_text((REPO / "specs" / "gru.rnn").read_text())
    code, _, err = run(["export", spec, "--dims", "I=3,H=4", "-o", spec, "--force"], capsys)
    assert code == 2 and f"-o {spec}: is the spec that export reads" in err, err
    assert spec.read_text() == (REPO / "specs" / "gru.rnn").read_text()


DIRECTIONAL = [("lstm", "LSTM"), ("gru", "GRU"), ("elman_relu", "RNN"), ("mgu", "Scan")]


def assert_directional_same(cell, model, T=5, B=3, tol=1e-5):
    """A reverse or bidirectional cell's model in onnxruntime and its forward agree:
    with each direction's initial states and lengths (one sequence empty), with the
    states but no lengths, and with the optional inputs left to their defaults."""
    xs, _, lengths = random_feed(cell, T, B)
    rng = np.random.default_rng(2)
    suffixes = [suffix for suffix, _, _ in cell.cells]
    state = {d.name + s: rng.normal(size=(B, d.type.shape[0].evaluate(cell.dims)))
             .astype(cell.dtype) for s in suffixes for d in cell.spec.states}
    initial = {f"initial_{k}": v for k, v in state.items()}
    x = xs if len(xs) > 1 else next(iter(xs.values()))
    sess = session(model)
    names = [o.name for o in sess.get_outputs()]
    cases = ((cell.forward(x, state, lengths=lengths, grad=False),
              dict(xs, sequence_lens=lengths.astype(np.int32), **initial)),
             (cell.forward(x, state, grad=False), dict(xs, **initial)),
             (cell.forward(x, grad=False), dict(xs)))
    for run, feed in cases:
        assert_session_gives(sess, names, feed, run, cell.dtype, tol)


@pytest.mark.parametrize("direction", ["reverse", "bidirectional"])
@pytest.mark.parametrize("stem, kind", DIRECTIONAL, ids=[s for s, _ in DIRECTIONAL])
def test_reverse_and_bidirectional_cells_run_in_onnxruntime_as_the_interpreter(
        stem, kind, direction, tmp_path):
    Cell = rnndsl.load(REPO / "specs" / f"{stem}.rnn", target="interp")
    cell = Cell(dtype=np.float32, seed=0, direction=direction,
                **{d: DIMS[d] for d in Cell.spec.dims})
    model = rnndsl.onnx.export(cell, tmp_path / "model.onnx")
    assert rnndsl.onnx.exported_as(model) == kind
    ops = [n.op_type for n in model.graph.node]
    if kind == "Scan":     # a Scan per direction; the reverse one reads and writes reversed
        assert ops.count("Scan") == (1 if direction == "reverse" else 2)
        assert ops.count("ReverseSequence") == 2
    else:                  # one node, both directions' weights stacked forward first
        assert ops.count(kind) == 1
        node = _operator_node(model)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["direction"] == direction.encode()
    names = [i.name for i in model.graph.input]
    assert ("initial_h_reverse" in names) == (direction == "bidirectional")
    assert_directional_same(cell, model)


@pytest.mark.parametrize("direction", ["reverse", "bidirectional"])
def test_directional_scans_keep_tokens_once_inputs_final_and_scalar_outputs(direction):
    """Token ids are reversed like vectors; an `input once` is not (it is fed at the
    first step either way); a final output is each run's last step; a per-step scalar
    becomes (T, B, 2); a start naming a param reads the direction's own."""
    for spec, text, dims in ((REPO / "specs" / "char_lstm.rnn", None, {}),
                             (None, MODES, dict(I=3, H=4, Z=2, K=3))):
        Cell = (rnndsl.load(spec, target="interp") if text is None
                else rnndsl.load_text(text, target="interp"))
        dims = dims or {d: DIMS[d] for d in Cell.spec.dims}
        cell = Cell(dtype=np.float32, seed=0, direction=direction, **dims)
        assert_directional_same(cell, rnndsl.onnx.to_model(cell))


def test_float64_exports_a_scan_that_matches_closely():
    for stem in ("lstm", "two_streams", "layernorm_lstm"):
        cell = make_cell(REPO / "specs" / f"{stem}.rnn", dtype=np.float64)
        model = rnndsl.onnx.to_model(cell)
        assert rnndsl.onnx.exported_as(model) == "Scan"
        assert_same(cell, model, tol=1e-12)


MODES = """
cell Modes {
  dims  I, H, Z, K
  input x[I]
  input once z[Z]
  state h[H] = 0.25, q[H] = m0
  param W[H, I], U[H, H], C[H, Z], b[H], V[K, H], p[H] ~ uniform(-1, 1)
  param m0[H] ~ uniform(-1, 1)
  h' = tanh(W @ dropout(x, 0.3) + U @ h + C @ z + b) + hard_sigmoid(p) * 0.1 + q
  q' = 0.5 * q + 0.5 * h'
  final logits = V @ h'
  output m = mean(softplus(h')) + max(sum(abs(h')), 1) ** 0.5
  output e = concat(exp(-h'[0:2]), p[0:1], log(1 + sigmoid(h')))
  output l = log_softmax(min(h', 0.5) / 2 - sum(x[0:1]) * h)
}
"""


def test_once_and_final_inputs_dropout_and_declared_starts():
    cell = make_cell(None, text=MODES, I=3, H=4, Z=2, K=3)
    model = rnndsl.onnx.to_model(cell)
    assert rnndsl.onnx.exported_as(model) == "Scan"
    assert_same(cell, model)
    outputs = {o.name: o for o in model.graph.output}
    assert [d.dim_param or d.dim_value for d in
            outputs["logits"].type.tensor_type.shape.dim] == ["B", 3]


def test_an_op_without_an_onnx_rule_is_refused_naming_it_and_its_place(monkeypatch):
    from rnndsl.interop import onnx_nodes
    monkeypatch.delitem(onnx_nodes.ONNX_RULES, Op.SOFTPLUS)
    cell = make_cell(None, text=MODES, I=3, H=4, Z=2, K=3)
    with pytest.raises(SpecError) as info:
        rnndsl.onnx.to_model(cell)
    text = info.value.render()
    assert "softplus" in text and "<text>:12:" in text and "output m" in text


def test_import_rnndsl_does_not_import_onnx():
    code = ("import sys, rnndsl, rnndsl.cli.main; rnndsl.cli.main.build_parser(); "
            "print('onnx' in sys.modules, 'onnxruntime' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["False", "False"]


# ---------------------------------------------------------------------------- CLI
def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_writes_an_operator_model_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "lstm.onnx"
    argv = ["export", REPO / "specs" / "lstm.rnn", "--dims", "I=3,H=4", "-o", out]
    code, text, err = run(argv, capsys)
    assert code == 0, err
    assert "LSTM node" in text and out.is_file()
    before = out.read_bytes()
    code, _, err = run(argv + ["--seed", "1"], capsys)
    assert code == 2 and "--force" in err and out.read_bytes() == before
    code, _, err = run(argv + ["--seed", "1", "--force"], capsys)
    assert code == 0 and out.read_bytes() != before
    cell = make_cell(REPO / "specs" / "lstm.rnn", I=3, H=4)
    cell.params.update(make_cell(REPO / "specs" / "lstm.rnn", I=3, H=4).params)
    assert_same(type(cell)(dtype=np.float32, seed=1, I=3, H=4), onnx.load(str(out)))


def test_cli_exports_a_bidirectional_cell(tmp_path, capsys):
    out = tmp_path / "gru.onnx"
    code, text, err = run(["export", REPO / "specs" / "gru.rnn", "--dims", "I=3,H=4",
                           "--direction", "bidirectional", "-o", out], capsys)
    assert code == 0, err
    assert "GRU node, direction bidirectional" in text and "final_h_reverse" in text
    cell = rnndsl.load(REPO / "specs" / "gru.rnn", target="interp")(
        dtype=np.float32, seed=0, I=3, H=4, direction="bidirectional")
    x = np.random.default_rng(0).normal(size=(4, 2, 3)).astype(np.float32)
    got = session(onnx.load(str(out))).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, cell.forward(x).outputs["h"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("extra, message", [
    (["--dims", "I=3"], "--dims"),
    (["--dims", "I=3,H=4,Q=1"], "--dims"),
    (["--dims", "I=3,H=0"], "--dims"),
    (["--dims", "I=3,H=4", "--cell", "Nope"], "--cell"),
    (["--dims", "I=3,H=4", "--format", "tflite"], "--format"),
    (["--dims", "I=3,H=4", "--scan", "--operators"], "--scan"),
    (["--dims", "I=3,H=4", "--params", "missing.npz"], "missing.npz"),
    (["--dims", "I=3,H=4", "--direction", "up"], "--direction"),
    (["--dims", "I=3,H=4", "--direction", "reverse", "--params", "m.npz"], "--params"),
])
def test_cli_bad_arguments_exit_2_naming_the_option(tmp_path, capsys, extra, message):
    out = tmp_path / "m.onnx"
    code, _, err = run(["export", REPO / "specs" / "lstm.rnn", "-o", out] + extra, capsys)
    assert code == 2 and message in err and "Traceback" not in err, err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_cli_missing_spec_and_folder_output_exit_2(tmp_path, capsys):
    code, _, err = run(["export", tmp_path / "nope.rnn", "--dims", "I=3", "-o",
                        tmp_path / "m.onnx"], capsys)
    assert code == 2 and "nope.rnn" in err
    code, _, err = run(["export", REPO / "specs" / "lstm.rnn", "--dims", "I=3,H=4", "-o",
                        tmp_path], capsys)
    assert code == 2 and "folder" in err


def test_cli_help_teaches_with_an_example(capsys):
    assert main(["export", "--help"]) == 0
    text = capsys.readouterr().out
    assert "rnndsl export specs/lstm.rnn --dims I=8,H=16 -o lstm.onnx" in text


def test_the_python_in_docs_onnx_md_runs(tmp_path, monkeypatch):
    text = (REPO / "docs" / "onnx.md").read_text()
    blocks = [b.split("\n", 1)[1] for b in text.split("```")[1::2] if b.startswith("python")]
    assert blocks
    (tmp_path / "specs").symlink_to(REPO / "specs")
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, "docs/onnx.md", "exec"), {})
    assert (tmp_path / "lstm.onnx").is_file()


def test_cli_exports_a_checkpoints_params(tmp_path, capsys):
    from rnndsl.train import checkpoint
    cell = make_cell(REPO / "specs" / "gru.rnn", I=3, H=4)
    for value in cell.params.values():
        value += np.random.default_rng(5).normal(size=value.shape).astype(value.dtype)
    checkpoint.save(tmp_path / "gru.npz", cell)
    out = tmp_path / "gru.onnx"
    code, text, err = run(["export", REPO / "specs" / "gru.rnn", "--dims", "I=3,H=4", "-o",
                           out, "--params", tmp_path / "gru.npz"], capsys)
    assert code == 0, err
    assert "GRU node" in text
    assert_same(cell, onnx.load(str(out)))
    code, _, err = run(["export", REPO / "specs" / "gru.rnn", "--dims", "I=3,H=5", "-o",
                        tmp_path / "other.onnx", "--params", tmp_path / "gru.npz"], capsys)
    assert code == 2 and "H" in err and not (tmp_path / "other.onnx").exists()
    assert "--dims: H=5 but" in err and "holds H=4" in err


def test_cli_takes_a_checkpoints_dims_and_writes_its_vocabulary(tmp_path, capsys):
    """`export --params` asked for --dims the checkpoint knows, and left the vocabulary
    (which character each id is) out of the model: a checkpoint of `rnndsl train` now
    gives both, the vocabulary in the metadata as `rnndsl.train.data.Vocab.to_json`."""
    from rnndsl.train import checkpoint
    from rnndsl.train.data import Vocab
    vocab = Vocab.from_text("hello world\n")
    cell = make_cell(REPO / "specs" / "gru.rnn", I=len(vocab), H=4)
    checkpoint.save(tmp_path / "gru.npz", cell,         # laid out as rnndsl train does
                    meta={"user": {"vocab": vocab.to_json()}})
    out = tmp_path / "gru.onnx"
    code, text, err = run(["export", REPO / "specs" / "gru.rnn", "-o", out, "--params",
                           tmp_path / "gru.npz"], capsys)
    assert code == 0, err
    assert f"GRU(I={len(vocab)}, H=4)" in text
    model = onnx.load(str(out))
    props = {p.key: p.value for p in model.metadata_props}
    assert Vocab.from_json(props["rnndsl.vocab"]).tokens == vocab.tokens
    assert_same(cell, model)


@pytest.mark.parametrize("operators", [True, False], ids=["operators", "scan"])
def test_every_initializer_is_read_by_a_node(operators):
    """The LSTM's operator form carried a constant no node read (onnxruntime: 'Removing
    initializer const_7. It is not used by any node'), once a layer in a network."""
    def read(nodes) -> set:
        names = set()
        for node in nodes:
            names.update(node.input)
            for a in node.attribute:
                if a.HasField("g"):
                    names |= read(a.g.node)
        return names
    for path in SPECS:
        cell = rnndsl.load(path, target="interp")(dtype=np.float32, seed=0, **{
            d: 3 for d in read_spec(path).pick().dims})
        model = rnndsl.onnx.to_model(cell, operators=operators)
        unread = [t.name for t in model.graph.initializer
                  if t.name not in read(model.graph.node)]
        assert not unread, f"{path.stem}: {unread}"


def test_a_constant_past_float32s_range_exports_as_infinity_without_a_warning():
    """`x ** 1e50` in a float32 cell: the constant is float32's infinity, as in the
    cell's own kernels, and NumPy's overflow warning does not reach the user."""
    import warnings
    text = ("cell Huge {\n  dims H\n  input x[H]\n  state h[H]\n"
            "  h' = tanh(x + h) ** 100000000000000000000000000000000000000000000000000\n"
            "  output h'\n}\n")
    cell = rnndsl.load_text(text, target="interp")(dtype=np.float32, seed=0, H=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = rnndsl.onnx.to_model(cell)
    consts = [onnx.numpy_helper.to_array(t) for t in model.graph.initializer]
    consts += [onnx.numpy_helper.to_array(a.t) for n in model.graph.node
               for a in n.attribute if a.HasField("t")]
    assert any(c.size == 1 and np.isinf(c).all() for c in consts)
