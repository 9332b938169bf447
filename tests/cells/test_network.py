"""Layers run over whole sequences inside a spec (`layer l1 = bidirectional LSTM(...)`,
`reverse`): the cell becomes a network of parts (lang/network.py, cells/network.py).
Checked: the split's parts, the errors a user meets, gradients against finite
differences through every part (with lengths, dropout off), the compiled cpu network
against the interpreter, stacked bidirectional LSTM layers against torch.nn.LSTM, a
few training steps, and the sampler's refusal."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

import rnndsl
from rnndsl.core.errors import BindError, CheckError, RnnError
from rnndsl.lang.network import LayerRun, split
from rnndsl.lang.specfile import read_spec

SPECS = Path(__file__).resolve().parents[2] / "specs"

TAGGER = """use "lstm.rnn"
cell Tagger {
  dims I, H, K
  input x[I]
  layer l1 = bidirectional LSTM(I = I, H = H)
  layer l2 = reverse LSTM(I = 2 * H, H = H)
  param W[K, H], b[K]
  h1 = l1(x)
  output y = W @ l2(h1) + b
}
"""

# a forward layer and a cell state around two sequence layers, a token input, dropout,
# a slice of a sequence layer's output and a final output
MIXED = """use "lstm.rnn"
use "gru.rnn"
cell Mixed {
  dims V, H, K
  input token x[V]
  param E[H, V]
  state s[H]
  layer f1 = LSTM(I = H, H = H)
  layer b1 = bidirectional LSTM(I = H, H = H)
  layer r2 = reverse GRU(I = 2 * H, H = H)
  param W[K, 2 * H], b[K], U[H, H]
  e = tanh(E @ x)
  h1 = f1(dropout(e, 0.2))
  z = b1(h1)
  s' = tanh(U @ s + z[0:H] + r2(z))
  output y = W @ z + b
  final last = s'
}
"""


def _spec(tmp_path, text, name="net.rnn"):
    for used in ("lstm.rnn", "gru.rnn"):
        link = tmp_path / used
        if not link.exists():
            link.symlink_to(SPECS / used)
    path = tmp_path / name
    path.write_text(text)
    return path


def _network(tmp_path, text):
    spec_file = read_spec(_spec(tmp_path, text))
    cell = next(iter(spec_file.cells.values()))
    return split(cell, {**spec_file.used, **spec_file.cells})


def test_the_split_runs_each_sequence_layer_between_the_segments_it_needs(tmp_path):
    net = _network(tmp_path, TAGGER)
    kinds = [(type(p).__name__, getattr(p, "layer", None) and p.layer.name) for p in net.parts]
    assert kinds == [("LayerRun", "l1"), ("LayerRun", "l2"), ("Segment", None)]
    # l1 reads the input itself, l2 reads l1's output: no copying segment before them
    assert net.parts[0].inputs == (("x", ("input", "x")),)
    assert net.parts[1].inputs == (("x", ("out", "l1.h")),)
    assert "output y = W @ l2_h + b" in net.parts[2].text

    mixed = _network(tmp_path, MIXED)
    names = [p.layer.name if isinstance(p, LayerRun) else "segment" for p in mixed.parts]
    assert names == ["segment", "b1", "segment", "r2", "segment"]
    first, last = mixed.parts[0], mixed.parts[-1]
    assert "layer f1 = LSTM(I = H, H = H)" in first.text and "output h1" in first.text
    assert last.states == ("s",) and "final last = s'" in last.text
    assert dict(mixed.outputs) == {"y": ("let", "y"), "last": ("final", "last")}


NESTED = """use "lstm.rnn"
cell Nested {
  dims I, H
  input x[I]
  layer l1 = %s LSTM(I = I, H = H)
  layer l2 = %s LSTM(I = %d * H, H = H)
%s
}
"""


@pytest.mark.parametrize("first, second", [("reverse", ""), ("bidirectional", ""),
                                           ("", "reverse"), ("bidirectional", "reverse")])
def test_a_layer_called_on_a_sequence_layer_inline_is_the_named_form(tmp_path, first,
                                                                     second):
    """`output y = l2(l1(x))` is `h1 = l1(x); output y = l2(h1)`. A forward l2 on a
    sequence layer's output was taken for a rename of that output and left out: no
    params, no state, y = l1(x)."""
    width = 2 if first == "bidirectional" else 1
    inline = _spec(tmp_path, NESTED % (first, second, width, "  output y = l2(l1(x))"),
                   "inline.rnn")
    named = _spec(tmp_path, NESTED % (first, second, width,
                                      "  h1 = l1(x)\n  output y = l2(h1)"), "named.rnn")
    a = rnndsl.load(inline, target="interp")(I=3, H=4, dtype=np.float64, seed=0)
    b = rnndsl.load(named, target="interp")(I=3, H=4, dtype=np.float64, seed=0)
    assert sorted(a.params) == sorted(b.params) and "l2.U_i" in a.params
    x = np.random.default_rng(0).normal(size=(3, 2, 3))
    run_a, run_b = a.forward(x), b.forward(x)
    assert sorted(run_a.state) == sorted(run_b.state) and "l2.h" in run_a.state
    np.testing.assert_array_equal(run_a.outputs["y"], run_b.outputs["y"])


def test_a_networks_backward_refuses_state_names_it_has_not(tmp_path):
    """d_state is keyed by the network's names (l1.h_reverse, l2.c): one it has not was
    filtered out part by part, and its gradient silently lost."""
    spec = _spec(tmp_path, NESTED % ("bidirectional", "", 2, "  output y = l2(l1(x))"))
    net = rnndsl.load(spec, target="interp")(I=3, H=4, dtype=np.float64, seed=0)
    run = net.forward(np.ones((3, 2, 3)))
    for name in ("h", "l1.hh", "l3.h"):
        with pytest.raises(BindError, match=f"Nested has no state {name}; its states are "
                                            r".*l1\.h_reverse"):
            net.backward(run, d_state={name: np.ones((2, 4))})
    with pytest.raises(BindError, match=r"d_state\['l2.h'\] has shape \(2, 5\)"):
        net.backward(run, d_state={"l2.h": np.ones((2, 5))})
    g = net.backward(run, d_state={"l2.h": np.ones((2, 4))})
    assert np.abs(g.params["l2.U_o"]).max() > 0
    from rnndsl.cells.base import Workspace       # the Cell API's workspace= is taken
    ws = Workspace()
    again = net.backward(net.forward(np.ones((3, 2, 3)), workspace=ws),
                         d_state={"l2.h": np.ones((2, 4))}, workspace=ws)
    np.testing.assert_array_equal(again.params["l2.U_o"], g.params["l2.U_o"])


def test_every_part_is_a_spec_that_checks_and_prints_back(tmp_path):
    for text in (TAGGER, MIXED):
        for part in _network(tmp_path, text).parts:
            reread = read_spec(tmp_path / "part.rnn", text=part.text).pick(part.name)
            assert not reread.sequence_layers


def test_an_argument_that_reads_its_own_layer_through_a_state_is_placed(tmp_path):
    text = TAGGER.replace("cell Tagger", "cell Loop").replace(
        "  input x[I]\n", "  input x[I]\n  state s[2 * H]\n").replace(
        "h1 = l1(x)", "h1 = l1(x + s[0:I])\n  s' = h1")
    path = _spec(tmp_path, text.replace("dims I, H, K", "dims I, H, K"), "loop.rnn")
    with pytest.raises(CheckError) as err:
        read_spec(path)
    shown = err.value.render() if hasattr(err.value, "render") else str(err.value)
    assert "loop.rnn:9:8" in shown and "depends on its own output" in shown


def test_a_network_cannot_be_a_layer_of_another_cell(tmp_path):
    text = TAGGER + """
cell Outer {
  dims I, H, K
  input x[I]
  layer t = Tagger(I = I, H = H, K = K)
  output y = t(x)
}
"""
    with pytest.raises(CheckError, match="cannot be a layer: it runs layer 'l1' over whole"):
        read_spec(_spec(tmp_path, text))


def _numeric(loss, array, i, eps=1e-6) -> float:
    """d loss / d array[i] by central differences (array put back as it was)."""
    old = array[i]
    array[i] = old + eps
    up = loss()
    array[i] = old - eps
    down = loss()
    array[i] = old
    return (up - down) / (2 * eps)


def _fd_check(cell, x, lengths, names):
    rng = np.random.default_rng(3)
    run = cell.forward(x, lengths=lengths)
    weights = {k: rng.standard_normal(v.shape) for k, v in run.outputs.items()}
    grads = cell.backward(run, weights)

    def loss():
        r = cell.forward(x, lengths=lengths)
        return sum(float((r.outputs[k] * w).sum()) for k, w in weights.items())
    for name in names:
        p = cell.params[name]
        for flat in (0, p.size // 2, p.size - 1):
            i = np.unravel_index(flat, p.shape)
            np.testing.assert_allclose(grads.params[name][i], _numeric(loss, p, i),
                                       rtol=1e-6, atol=1e-9, err_msg=name)
    return grads


@pytest.mark.parametrize("target", ["interp", "cpu"])
def test_gradients_through_every_part_match_finite_differences(tmp_path, target):
    Cls = rnndsl.load(_spec(tmp_path, TAGGER), target=target)
    cell = Cls(dtype=np.float64, seed=1, I=3, H=4, K=2)
    assert "l1.W_i_reverse" in cell.params and "l2.U_o" in cell.params
    assert "l2.U_o_reverse" not in cell.params        # l2 runs one way: reverse
    x = np.random.default_rng(0).standard_normal((6, 3, 3))
    lengths = [6, 2, 4]
    grads = _fd_check(cell, x, lengths, ["W", "l1.W_i", "l1.U_f_reverse", "l2.U_o", "l2.b_g"])
    # the input's gradient too, inside and past a sequence's end

    def loss():
        return float(cell.forward(x, lengths=lengths).outputs["y"].sum())
    run = cell.forward(x, lengths=lengths)
    g = cell.backward(run, {"y": np.ones_like(run.outputs["y"])}).inputs["x"]
    np.testing.assert_allclose(g[1, 1, 2], _numeric(loss, x, (1, 1, 2)), rtol=1e-6)
    assert np.all(g[2:, 1] == 0)                      # sequence 1 ends after 2 steps
    assert sorted(grads.state) == sorted(cell.spec.states[k].name
                                         for k in range(len(cell.spec.states)))


@pytest.mark.skipif(os.environ.get("RNNDSL_LONG") != "1",
                    reason="RNNDSL_LONG=1 only: compiles three segments and a GRU (30 s); "
                    "the cpu parts are checked by finite differences on Tagger")
def test_the_compiled_network_computes_what_the_interpreter_does(tmp_path):
    path = _spec(tmp_path, MIXED)
    dims = dict(V=7, H=4, K=3)
    ref = rnndsl.load(path, target="interp")(dtype=np.float64, seed=2, **dims)
    cpu = rnndsl.load(path, target="cpu")(dtype=np.float64, seed=2, **dims)
    for name, value in ref.params.items():
        cpu.params[name][...] = value
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 7, (5, 3))
    lengths = [5, 3, 1]
    state = {d.name: rng.standard_normal((3,) + cpu._size(d))
             for d in cpu.spec.states}
    a = ref.forward(ids, state, lengths=lengths)
    b = cpu.forward(ids, state, lengths=lengths)
    assert a.outputs["last"].shape == (3, 4)         # final: (B, H)
    for k in a.outputs:
        np.testing.assert_allclose(b.outputs[k], a.outputs[k], rtol=1e-10, atol=1e-12)
    for k in a.state:
        np.testing.assert_allclose(b.state[k], a.state[k], rtol=1e-10, atol=1e-12)
    d = {k: rng.standard_normal(v.shape) for k, v in a.outputs.items()}
    ga, gb = ref.backward(a, d), cpu.backward(b, d)
    assert sorted(ga.params) == sorted(gb.params) == sorted(ref.params)
    for k in ga.params:
        np.testing.assert_allclose(gb.params[k], ga.params[k], rtol=1e-9, atol=1e-11,
                                   err_msg=k)
    for k in ga.state:
        np.testing.assert_allclose(gb.state[k], ga.state[k], rtol=1e-9, atol=1e-11)


def test_mixed_network_gradients_match_finite_differences(tmp_path):
    cell = rnndsl.load(_spec(tmp_path, MIXED), target="interp")(dtype=np.float64, seed=4,
                                                                 V=5, H=3, K=2)
    ids = np.random.default_rng(1).integers(0, 5, (4, 2))
    _fd_check(cell, ids, [4, 3], ["E", "f1.U_i", "b1.W_o_reverse", "r2.U_z", "U", "W"])


TORCH_STACK = """use "torch/lstm.rnn"
cell BiStack {
  dims I, H
  input x[I]
  layer l0 = bidirectional TorchLSTM(I = I, H = H)
  layer l1 = bidirectional TorchLSTM(I = 2 * H, H = H)
  output y = l1(l0(x))
}
"""


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="needs torch")
def test_stacked_bidirectional_layers_are_torch_lstm_num_layers_2(tmp_path):
    import torch
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "lstm.rnn").symlink_to(SPECS / "torch" / "lstm.rnn")
    path = tmp_path / "bistack.rnn"
    path.write_text(TORCH_STACK)
    I, H, T, B = 3, 4, 5, 2
    torch.manual_seed(0)
    m = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True).double()
    cell = rnndsl.load(path, target="cpu")(dtype=np.float64, I=I, H=H)
    for layer in (0, 1):
        for suffix, ours in (("", ""), ("_reverse", "_reverse")):
            for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                value = getattr(m, f"{kind}_l{layer}{suffix}").detach().numpy()
                cell.params[f"l{layer}.{kind}{ours}"][...] = value
    x = np.random.default_rng(0).standard_normal((T, B, I))
    xt = torch.tensor(x, requires_grad=True)
    y, (h, c) = m(xt)
    run = cell.forward(x)
    np.testing.assert_allclose(run.outputs["y"], y.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(run.state["l1.h_reverse"], h[3].detach().numpy(), rtol=1e-10)
    np.testing.assert_allclose(run.state["l0.c"], c[0].detach().numpy(), rtol=1e-10)
    d = np.random.default_rng(1).standard_normal(y.shape)
    y.backward(torch.tensor(d))
    g = cell.backward(run, {"y": d})
    np.testing.assert_allclose(g.inputs["x"], xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g.params["l0.weight_hh_reverse"],
                               m.weight_hh_l0_reverse.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g.params["l1.bias_ih"], m.bias_ih_l1.grad.numpy(),
                               rtol=1e-9, atol=1e-12)


def test_a_network_trains_and_refuses_to_sample(tmp_path):
    from rnndsl.train.optim import Adam
    from rnndsl.train.sample import SampleError, Sampler
    from rnndsl.train.trainer import Trainer
    cell = rnndsl.load(_spec(tmp_path, TAGGER), target="cpu")(I=3, H=8, K=3, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((10, 8, 3)).astype(np.float32)
    # a label a bidirectional model can know and a forward one cannot: the next input's sign
    labels = (np.roll(x[..., 0], -1, axis=0) > 0).astype(np.int64)
    trainer = Trainer(cell, loss="softmax_cross_entropy", optimizer=Adam(2e-2))
    losses = [trainer.step(x, labels) for _ in range(40)]
    assert losses[-1] < 0.8 * losses[0]
    with pytest.raises(SampleError, match="layer l1 runs over whole sequences"):
        Sampler(cell)


BICHAR = """use "lstm.rnn"
cell BiChar {
  dims V, H
  input token x[V]
  layer l1 = bidirectional LSTM(I = V, H = H)
  param W[V, 2 * H], b[V]
  output logits = W @ l1(x) + b
}
"""


def test_token_ids_reach_a_sequence_layer_as_one_hot_rows(tmp_path):
    """A token input fed straight to a bidirectional layer refused its ids ("input x has
    shape (3, 2); expected 3 axes"): the ids went as they were to the layer's LSTM,
    which reads vectors. They are now its one-hot rows, as one-hot rows given are, and
    the trainer, which passes ids, trains such a model."""
    from rnndsl.train.optim import Adam
    from rnndsl.train.trainer import Trainer
    cell = rnndsl.load(_spec(tmp_path, BICHAR), target="interp")(V=4, H=3, dtype=np.float64)
    ids = np.array([[0, 1], [2, 3], [1, 1]])
    by_ids, by_rows = cell.forward(ids), cell.forward(np.eye(4)[ids])
    np.testing.assert_array_equal(by_ids.outputs["logits"], by_rows.outputs["logits"])
    d = {"logits": np.random.default_rng(0).normal(size=by_ids.outputs["logits"].shape)}
    g_ids, g_rows = cell.backward(by_ids, d_outputs=d), cell.backward(by_rows, d_outputs=d)
    for name in g_rows.params:
        np.testing.assert_array_equal(g_ids.params[name], g_rows.params[name], err_msg=name)
    assert g_ids.inputs == {} and g_rows.inputs == {}    # a token input has no gradient
    with pytest.raises(BindError, match=r"input x \(input token\) has id 7 at index \(1, 0\)"):
        cell.forward(np.array([[0, 1], [7, 2]]))
    trainer = Trainer(cell, output="logits", input="x", optimizer=Adam(5e-2), seed=0)
    text = np.random.default_rng(1).integers(0, 4, (9, 2))
    losses = [trainer.step(text[:-1], text[1:]) for _ in range(20)]
    assert losses[-1] < losses[0]


def test_a_networks_params_go_by_its_names_and_it_deep_copies(tmp_path):
    """A misspelt param of a network (l1.U_i_reversed, WW) was ignored, and a wrong one
    named by its part (param U_i); a network that had run could not be deep-copied."""
    import copy
    cell = rnndsl.load(_spec(tmp_path, TAGGER), target="interp")(I=2, H=3, K=2,
                                                                 dtype=np.float64)
    x = np.random.default_rng(0).normal(size=(4, 2, 2))
    want = cell.forward(x).outputs["y"]
    twin = copy.deepcopy(cell)
    np.testing.assert_array_equal(twin.forward(x).outputs["y"], want)
    twin.params["W"][...] = 0
    np.testing.assert_array_equal(cell.forward(x).outputs["y"], want)
    for name in ("l1.U_i_reversed", "WW"):
        bad = copy.deepcopy(cell)
        bad.params[name] = np.zeros((3, 3))
        with pytest.raises(BindError, match=f"Tagger has no param {name}; its params are: "):
            bad.forward(x)
    run = cell.forward(x)
    cell.params["l1.U_i_reverse"] += 1
    with pytest.raises(BindError, match=r"^param l1.U_i_reverse was changed in place"):
        cell.backward(run, d_outputs={"y": np.ones(run.outputs["y"].shape)})
    cell.params["l1.U_i_reverse"] = np.zeros((2, 2))
    with pytest.raises(BindError, match=r"^param l1.U_i_reverse has shape \(2, 2\)"):
        cell.forward(x)


def test_state_resets_start_a_networks_rows_afresh(tmp_path):
    """Trainer(state_resets=1) on a network (a two-way layer, a reverse one) and on a
    two-way cell: every row's next chunk starts from the initial state, which
    `initial_state` gives under the names the runs' final states have."""
    from rnndsl.train.optim import SGD
    from rnndsl.train.trainer import Trainer
    net = rnndsl.load(_spec(tmp_path, TAGGER), target="interp")(I=2, H=3, K=2, seed=0,
                                                                 dtype=np.float64)
    two_way = rnndsl.load(SPECS / "lstm.rnn", target="interp")(
        I=2, H=3, seed=0, dtype=np.float64, direction="bidirectional")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 5, 2))
    for cell, loss, target in ((net, "softmax_cross_entropy", rng.integers(0, 2, (4, 5))),
                               (two_way, "mse", rng.standard_normal((4, 5, 6)))):
        start = cell.initial_state(5)
        trainer = Trainer(cell, loss=loss, output=None if cell is net else "h",
                          optimizer=SGD(lr=0.0), state_resets=1.0)
        trainer.step(x, target)
        assert sorted(trainer.state) == sorted(trainer.last_run.state) == sorted(start)
        for name, value in trainer.state.items():
            assert np.array_equal(value, start[name]), name
            assert not np.array_equal(trainer.last_run.state[name], start[name]), name


def test_a_two_way_cell_trains_and_its_checkpoint_is_refused_clearly(tmp_path):
    """A Trainer takes a cell made with direction="bidirectional" (its spec is the
    instance's); a checkpoint, which holds one spec class, refuses it by name."""
    from rnndsl.train import checkpoint
    from rnndsl.train.optim import Adam
    from rnndsl.train.trainer import Trainer
    cell = rnndsl.load(SPECS / "lstm.rnn", target="interp")(
        I=2, H=3, seed=0, dtype=np.float64, direction="bidirectional")
    rng = np.random.default_rng(1)
    x, target = rng.standard_normal((4, 5, 2)), 0.5 * rng.standard_normal((4, 5, 6))
    trainer = Trainer(cell, loss="mse", output="h", optimizer=Adam(5e-2))
    losses = [trainer.step(x, target) for _ in range(30)]
    assert losses[-1] < 0.7 * losses[0]
    with pytest.raises(RnnError, match=r"direction='bidirectional'\) is not one"):
        checkpoint.save(tmp_path / "two_way.npz", cell)
    assert not (tmp_path / "two_way.npz").exists()


def test_the_network_rejects_what_it_cannot_do(tmp_path):
    Cls = rnndsl.load(_spec(tmp_path, TAGGER), target="interp")
    with pytest.raises(BindError, match="give each its direction in the spec"):
        Cls(I=2, H=2, K=2, direction="reverse")
    cell = Cls(I=2, H=2, K=2)
    with pytest.raises(BindError, match="no state l3.h"):
        cell.forward(np.zeros((2, 1, 2)), {"l3.h": np.zeros((1, 2))})
    with pytest.raises(RnnError):
        cell.backward(object(), {})


def test_an_input_once_in_a_network_is_refused_at_its_declaration(tmp_path):
    """The network's parts took an `input once` as a sequence: a (B, I) array was
    refused naming the inner cell, a (T, B, I) one read at every step. Until the parts
    can take it, the checker says so where it is declared."""
    text = ('use "lstm.rnn"\ncell O {\n  dims I, H\n  input once x[I]\n'
            '  layer l = bidirectional LSTM(I = I, H = H)\n  output z = l(x)\n}\n')
    with pytest.raises(CheckError, match=r"net\.rnn:4:14: error: input once 'x' in a cell "
                                         r"with a layer run over whole sequences"):
        rnndsl.load(_spec(tmp_path, text), target="interp")


def test_check_explain_and_build_describe_the_network(tmp_path, capsys):
    from rnndsl.cli.main import main
    path = _spec(tmp_path, MIXED)
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "layers over whole sequences b1 (bidirectional LSTM), r2 (reverse GRU)" in out
    assert "5 parts" in out
    # --dump-after check printed nothing for a network: its parts hold the equations
    assert main(["check", str(path), "--dump-after", "check"]) == 0
    assert f"(cell Mixed's equations are its parts': `rnndsl explain {path}`" in \
        capsys.readouterr().out
    assert main(["explain", str(path)]) == 0
    out = capsys.readouterr().out
    assert "## part 2: layer b1, bidirectional LSTM" in out
    assert "#     final last = s'" in out
    assert main(["build", str(path), "-o", str(tmp_path / "out")]) == 0
    assert "(cell Mixed; import with: from net import Mixed)" in capsys.readouterr().out
    assert "Mixed = built_network_class(" in (tmp_path / "out" / "net.py").read_text()
    # a next-token model must not see the future: rnndsl train refuses before any work
    tokens = _spec(tmp_path, MIXED.replace("param W[K, 2 * H], b[K]", "param W[V, 2 * H], b[V]")
                   .replace("  final last = s'\n", "").replace("  s' = tanh(U @ s + z[0:H] "
                   "+ r2(z))\n", "  s' = tanh(U @ s + z[0:H])\n").replace(
                   "  layer r2 = reverse GRU(I = 2 * H, H = H)\n", ""), "lm.rnn")
    assert main(["train", str(tokens), "--steps", "3", "--checkpoint",
                 str(tmp_path / "m.npz")]) == 2
    assert "would read the characters it is to predict" in capsys.readouterr().err
    assert not (tmp_path / "m.npz").exists()
