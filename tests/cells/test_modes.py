"""The four modes (rnndsl/modes.py) against plain loops and finite differences."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rnndsl
from rnndsl.cells import modes
from rnndsl.core.errors import BindError
from rnndsl.train.losses import softmax_cross_entropy
from rnndsl.train.optim import Adam
from rnndsl.train.trainer import Trainer

from tiny_cells import GENERATOR  # noqa: E402  (tests/ is on sys.path)

SPECS = Path(__file__).resolve().parents[2] / "specs"

FED = '''
cell Fed {
  dims I, H
  input x[I]
  state h[H]
  param W[H, I], U[H, H], V[I, H]
  h' = tanh(W @ x + U @ h)
  output y = V @ h'
}
'''


def test_last_step_picks_each_sequences_end():
    out = np.arange(5 * 3 * 2, dtype=float).reshape(5, 3, 2)
    lengths = np.array([5, 1, 3])
    got = modes.last_step(out, lengths)
    for b, n in enumerate(lengths):
        np.testing.assert_array_equal(got[b], out[n - 1, b])
    np.testing.assert_array_equal(modes.last_step(out), out[-1])
    mask = modes.last_step_mask(5, 3, lengths)
    assert mask.sum() == 3 and mask[0, 1] and mask[2, 2] and mask[4, 0]
    with pytest.raises(BindError, match="1..T = 1..5"):
        modes.last_step(out, np.array([0, 1, 2]))


def test_many_to_one_gradient_matches_finite_differences():
    L = rnndsl.load(SPECS / "lstm.rnn", target="interp")
    c = L(I=2, H=3, dtype=np.float64, seed=0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 3, 2))
    lengths = np.array([4, 2, 3])
    w = rng.normal(size=(3, 3))

    def loss():
        run = c.forward(x, lengths=lengths)
        return float((w * modes.last_step(run.outputs["h"], lengths)).sum()), run

    value, run = loss()
    g = c.backward(run, d_outputs={"h": modes.last_step_cotangent(w, 4, lengths)})
    W = c.params["U_g"]
    for index in [(0, 0), (1, 2), (2, 1)]:
        old = W[index]
        W[index] = old + 1e-6
        up, _ = loss()
        W[index] = old - 1e-6
        down, _ = loss()
        W[index] = old
        assert abs((up - down) / 2e-6 - g.params["U_g"][index]) < 1e-7


def test_one_to_many_inputs():
    x0 = np.arange(6.0).reshape(2, 3)
    first = modes.first_step_inputs(x0, 4)
    assert first.shape == (4, 2, 3)
    np.testing.assert_array_equal(first[0], x0)
    np.testing.assert_array_equal(first[1:], 0.0)
    rep = modes.repeated_inputs(x0, 4)
    np.testing.assert_array_equal(rep, np.stack([x0] * 4))
    with pytest.raises(BindError, match="the one input must be"):
        modes.first_step_inputs(np.zeros(3), 4)


def test_feed_back_equals_rerunning_the_growing_sequence():
    Fed = rnndsl.load_text(FED, target="interp")
    c = Fed(I=2, H=4, dtype=np.float64, seed=1)
    x0 = np.random.default_rng(3).normal(size=(3, 2))
    ys, state = modes.feed_back(c, x0, 5, feedback=np.tanh)
    # the mirror: rebuild the whole input sequence and rerun it from scratch each step
    xs = [x0]
    for t in range(5):
        run = c.forward(np.stack(xs))
        np.testing.assert_allclose(ys[t], run.outputs["y"][t], rtol=1e-12)
        xs.append(np.tanh(run.outputs["y"][t]))
    np.testing.assert_allclose(state["h"], run.state["h"], rtol=1e-12)


def test_many_to_one_training_learns_a_label_from_variable_lengths():
    """Which of two symbols came first: a label only at each sequence's end."""
    Classifier = rnndsl.load_text('''
cell Classifier {
  dims I, H, K
  input x[I]
  state h[H]
  param W[H, I], U[H, H], b[H], V[K, H], c[K]
  h' = tanh(W @ x + U @ h + b)
  output logits = V @ h' + c
}''', target="interp")
    cell = Classifier(I=3, H=8, K=2, dtype=np.float64, seed=0)
    rng = np.random.default_rng(0)
    T, B = 6, 32
    trainer = Trainer(cell, optimizer=Adam(lr=1e-2), seed=0)

    def batch():
        lengths = rng.integers(2, T + 1, size=B)
        first = rng.integers(0, 2, size=B)
        ids = np.full((T, B), 2)
        ids[0] = first
        x = np.eye(3)[ids]
        labels = np.broadcast_to(first, (T, B))
        return x, labels, lengths

    losses = []
    for _ in range(300):
        x, labels, lengths = batch()
        trainer.reset_state()
        losses.append(trainer.step(x, labels, mask=modes.last_step_mask(T, B, lengths),
                                   lengths=lengths))
    x, labels, lengths = batch()
    run = cell.forward(x, lengths=lengths)
    guess = modes.last_step(run.outputs["logits"], lengths).argmax(-1)
    assert (guess == labels[0]).mean() > 0.95, losses[-10:]
    loss, _ = softmax_cross_entropy(modes.last_step(run.outputs["logits"], lengths),
                                    labels[0])
    assert loss < 0.2


# ------------------------------------------------------------------ modes in the language

DECLARED = '''
cell Cls {
  dims I, H, K
  input x[I]
  state h[H]
  param W[H, I], U[H, H], V[K, H]
  h' = tanh(W @ x + U @ h)
  final logits = V @ h'
}
''' + GENERATOR.replace("cell Generator", "cell Gen")


@pytest.mark.parametrize("target", ["interp", "cpu"])
def test_a_final_output_is_the_last_step_of_the_same_cell_with_an_output(target):
    Cls = rnndsl.load_text(DECLARED, target=target, cell="Cls")
    Ref = rnndsl.load_text(DECLARED.replace("final logits", "output logits"),
                           target="interp", cell="Cls")
    cell, ref = Cls(I=3, H=4, K=2, dtype=np.float64), Ref(I=3, H=4, K=2, dtype=np.float64)
    rng = np.random.default_rng(0)
    x, lengths = rng.normal(size=(5, 3, 3)), np.array([5, 2, 3])
    got, want = cell.forward(x, lengths=lengths), ref.forward(x, lengths=lengths)
    assert got.outputs["logits"].shape == (3, 2)
    np.testing.assert_allclose(got.outputs["logits"],
                               modes.last_step(want.outputs["logits"], lengths), rtol=1e-12)
    d = rng.normal(size=(3, 2))
    g = cell.backward(got, d_outputs={"logits": d})
    gr = ref.backward(want, d_outputs={"logits": modes.last_step_cotangent(d, 5, lengths)})
    for k in gr.params:
        np.testing.assert_allclose(g.params[k], gr.params[k], rtol=1e-10, atol=1e-13)
    with pytest.raises(BindError, match=r"d_outputs\['logits'\] \(a final output\) has shape"):
        cell.backward(got, d_outputs={"logits": np.zeros((5, 3, 2))})


@pytest.mark.parametrize("target", ["interp", "cpu"])
def test_an_input_once_is_the_first_step_followed_by_zeros(target):
    Gen = rnndsl.load_text(DECLARED, target=target, cell="Gen")
    Ref = rnndsl.load_text(DECLARED.replace("input once z", "input z"), target="interp",
                           cell="Gen")
    cell, ref = Gen(Z=2, H=4, dtype=np.float64, seed=2), Ref(Z=2, H=4, dtype=np.float64,
                                                            seed=2)
    z = np.random.default_rng(1).normal(size=(3, 2))
    got = cell.forward(z, steps=6)
    want = ref.forward(modes.first_step_inputs(z, 6))
    np.testing.assert_allclose(got.outputs["y"], want.outputs["y"], rtol=1e-12)
    dY = np.random.default_rng(2).normal(size=(6, 3, 1))
    g, gr = cell.backward(got, d_outputs={"y": dY}), ref.backward(want, d_outputs={"y": dY})
    assert g.inputs["z"].shape == (3, 2)
    np.testing.assert_allclose(g.inputs["z"], gr.inputs["z"][0], rtol=1e-10, atol=1e-13)
    with pytest.raises(BindError, match="say how many steps to run with steps=T"):
        cell.forward(z)
    with pytest.raises(BindError, match=r"input z \(input once\) has shape \(6, 3, 2\)"):
        cell.forward(np.zeros((6, 3, 2)), steps=6)


def test_an_input_once_of_the_wrong_rows_is_named_as_given():
    """z given (3, 2) beside x of 4 rows was reported in its spread-out form, "input z has
    shape (6, 3, 2); expected (6, 4, 2)", shapes the caller never made."""
    cell = rnndsl.load_text("cell M {\n  dims I, Z, H\n  input x[I]\n  input once z[Z]\n"
                            "  state h[H]\n  param W[H, I], V[H, Z], U[H, H]\n"
                            "  h' = tanh(W @ x + V @ z + U @ h)\n  output h'\n}\n",
                            target="interp")(I=3, Z=2, H=4, dtype=np.float64)
    with pytest.raises(BindError, match=r"^input z \(input once\) has shape \(3, 2\); "
                                        r"expected \(4, 2\) = \(B, 2\)"):
        cell.forward({"x": np.ones((6, 4, 3)), "z": np.ones((3, 2))})
    assert cell.forward({"x": np.ones((6, 4, 3)), "z": np.ones((4, 2))}).outputs["h"].shape \
        == (6, 4, 4)


def test_trainer_fits_a_final_output_without_a_mask():
    Cls = rnndsl.load_text(DECLARED, target="interp", cell="Cls")
    cell = Cls(I=3, H=8, K=2, dtype=np.float64, seed=0)
    trainer = Trainer(cell, optimizer=Adam(lr=1e-2), seed=0)
    rng = np.random.default_rng(0)
    for _ in range(150):
        lengths = rng.integers(2, 7, size=16)
        first = rng.integers(0, 2, size=16)
        ids = np.full((6, 16), 2)
        ids[0] = first
        trainer.reset_state()
        loss = trainer.step(np.eye(3)[ids], first, lengths=lengths)
    assert loss < 0.2


LOG_CELL = """cell LogAcc {
  dims H
  input x[H]
  state h[H]
  param w[H] ~ ones
  h' = 0.5 * h + w * log(x)
  output y = log(x)
}"""


@pytest.mark.parametrize("target", ["interp", "cpu"])
def test_padding_is_never_computed_with_and_full_lengths_change_nothing(target):
    """From an outside review: the lengths mask wrote `s' = s + m * (new - s)`, so a
    zero-padded `log(x)` made the finished sequence's state, its padded outputs and
    every gradient NaN (0 * -inf), and with m = 1 the sum rounded: lengths equal to T
    changed a float32 state by 2%. Padded steps now read the sequence's last input,
    and the mask is `m * new + (1 - m) * s`."""
    Cell = rnndsl.load_text(LOG_CELL, target=target)
    cell = Cell(H=2, dtype=np.float64)
    x = np.full((3, 2, 2), 2.0)
    x[:, 0] = [[1.5, 3.0], [2.5, 0.7], [1.2, 4.0]]
    x[2:, 1] = 0.0                               # row 1 ends after 2 steps, zero-padded
    with np.errstate(all="raise"):
        run = cell.forward(x, lengths=[3, 2])
    alone = cell.forward(x[:2, 1:2])
    np.testing.assert_allclose(run.state["h"][1], alone.state["h"][0], rtol=1e-14)
    assert np.array_equal(run.outputs["y"][2, 1], [0.0, 0.0])
    g = cell.backward(run, d_state={"h": np.ones((2, 2))})
    # the gradient is the two sequences' own: row 0 over 3 steps, row 1 over 2
    g0 = cell.backward(cell.forward(x[:, :1]), d_state={"h": np.ones((1, 2))})
    g1 = cell.backward(alone, d_state={"h": np.ones((1, 2))})
    np.testing.assert_allclose(g.params["w"], g0.params["w"] + g1.params["w"], rtol=1e-13)
    assert np.array_equal(g.inputs["x"][2, 1], [0.0, 0.0])
    assert np.array_equal(x[2:, 1], np.zeros((1, 2)))      # the caller's array untouched
    # a row of length 0 keeps its start, with outputs and gradients 0 (its padding is
    # all it has: it reads the longest row's inputs instead)
    x_empty = x.copy()
    x_empty[:, 1] = 0.0                       # all padding
    with np.errstate(all="raise"):
        empty = cell.forward(x_empty, lengths=[3, 0])
    assert np.array_equal(empty.state["h"][1], [0.0, 0.0])
    assert np.array_equal(empty.outputs["y"][:, 1], np.zeros((3, 2)))
    g_empty = cell.backward(empty, d_state={"h": np.ones((2, 2))})
    np.testing.assert_allclose(g_empty.params["w"], g0.params["w"], rtol=1e-13)
    assert np.array_equal(g_empty.inputs["x"][:, 1], np.zeros((3, 2)))
    follow = rnndsl.load_text("cell Follow {\n  dims H\n  input x[H]\n  state h[H]\n"
                              "  h' = x + 0 * h\n  output h'\n}\n", target=target)
    small = follow(H=1, dtype=np.float32)
    big_then_small = np.array([1e4, 1e-3], np.float32).reshape(2, 1, 1)
    assert small.forward(big_then_small, lengths=[2]).state["h"].item() == \
        small.forward(big_then_small).state["h"].item()
