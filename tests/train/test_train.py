"""The truncated-BPTT trainer: it learns, repeats itself, truncates where it should.

Checked against independent references: a NumPy mirror of a cell's forward (for the
inputs the trainer passes through), one long `cell.forward` (for the state carried across
chunks), central differences of the loss from a fixed initial state (for the gradient the
trainer applies: exactly the chunk's, none through the carried state).
"""

from __future__ import annotations

import numpy as np
import pytest

import rnndsl
from rnndsl.core.errors import BindError
from rnndsl.train.losses import binary_cross_entropy, softmax_cross_entropy
from rnndsl.train.optim import SGD, Adam
from rnndsl.train.trainer import Trainer

from tiny_cells import GENERATOR, TINY  # noqa: E402  (tests/ is on sys.path)
# A second input as a dropout mask would be: the trainer passes it through untouched.
MASKED = """
cell Masked {
  dims I, H, V
  input x[I], m[H]
  state h[H]
  param W[H, I], U[H, H] ~ orthogonal, b[H] ~ zeros, Wo[V, H], bo[V] ~ zeros
  h' = tanh(W @ x + U @ h + b)
  output logits = Wo @ (h' * m) + bo
}
"""
SCORE = """
cell Score {
  dims I, H
  input x[I]
  state h[H]
  param W[H, I], U[H, H] ~ orthogonal, b[H] ~ zeros, v[H] ~ uniform(-0.1, 0.1), c ~ 0
  h' = tanh(W @ x + U @ h + b)
  output s = sum(v * h') + c
}
"""
V = 3


@pytest.fixture(scope="module")
def Tiny():
    return rnndsl.load_text(TINY, target="interp")


def delay_task(seed: int, chunks: int, T: int = 8, B: int = 6):
    """One-hot symbols; the target at each step is the PREVIOUS symbol, so the first step
    of every chunk needs the state carried from the chunk before."""
    rng = np.random.default_rng(seed)
    seq = rng.integers(0, V, size=(chunks * T + 1, B))
    for k in range(chunks):
        ids = seq[k * T + 1:(k + 1) * T + 1]
        yield np.eye(V)[ids], seq[k * T:(k + 1) * T]


def train_losses(Tiny, cell_seed=0, chunks=30):
    cell = Tiny(I=V, H=12, V=V, dtype=np.float64, seed=cell_seed)
    trainer = Trainer(cell, optimizer=Adam(lr=0.05), clip_norm=5.0, seed=1)
    return [trainer.step(x, y) for x, y in delay_task(0, chunks)], trainer


def test_loss_falls_on_a_task_that_needs_memory(Tiny):
    losses, trainer = train_losses(Tiny)
    assert losses[0] > 0.8 * np.log(V)               # chance at the start
    assert np.mean(losses[-5:]) < 0.1                # learnt, across chunk boundaries too
    assert trainer.steps == 30 and trainer.last_grad_norm > 0


def test_same_seed_same_losses(Tiny):
    first, _ = train_losses(Tiny, chunks=8)
    again, _ = train_losses(Tiny, chunks=8)
    other, _ = train_losses(Tiny, cell_seed=1, chunks=8)
    assert first == again
    assert first != other


def test_chunks_see_the_same_forward_as_one_long_sequence(Tiny):
    cell = Tiny(I=V, H=5, V=V, dtype=np.float64, seed=3)
    trainer = Trainer(cell, optimizer=SGD(lr=0.0))   # params fixed: only the carry differs
    chunks = list(delay_task(2, 3, T=4, B=2))
    outputs, losses = [], []
    for x, y in chunks:
        losses.append(trainer.step(x, y))
        outputs.append(trainer.last_run.outputs["logits"])
    x_all = np.concatenate([x for x, _ in chunks])
    y_all = np.concatenate([y for _, y in chunks])
    long = cell.forward(x_all)
    np.testing.assert_allclose(np.concatenate(outputs), long.outputs["logits"], rtol=1e-12)
    np.testing.assert_allclose(trainer.state["h"], long.state["h"], rtol=1e-12)
    assert np.mean(losses) == pytest.approx(
        softmax_cross_entropy(long.outputs["logits"], y_all)[0], rel=1e-12)


def test_step_applies_the_gradient_of_its_chunk_only(Tiny):
    """With SGD(lr=1) the update is -grad; the grad must equal central differences of the
    chunk's loss from the carried state held fixed (truncation at the boundary)."""
    cell = Tiny(I=V, H=4, V=V, dtype=np.float64, seed=4)
    trainer = Trainer(cell, optimizer=SGD(lr=1.0))
    (x1, y1), (x2, y2) = delay_task(5, 2, T=5, B=3)
    mask = np.ones(y2.shape, bool)
    mask[0, 1] = False
    trainer.step(x1, y1)
    carried = {k: v.copy() for k, v in trainer.state.items()}
    before = {k: v.copy() for k, v in cell.params.items()}
    trainer.step(x2, y2, mask=mask)
    applied = {k: before[k] - cell.params[k] for k in before}

    def loss_at(params):
        cell.params = params
        return softmax_cross_entropy(cell.forward(x2, state=carried).outputs["logits"],
                                     y2, mask)[0]
    after, eps = cell.params, 1e-6
    for name, value in before.items():
        for idx in np.ndindex(value.shape):
            plus, minus = dict(before), dict(before)
            plus[name], minus[name] = value.copy(), value.copy()
            plus[name][idx] += eps
            minus[name][idx] -= eps
            fd = (loss_at(plus) - loss_at(minus)) / (2 * eps)
            assert applied[name][idx] == pytest.approx(fd, rel=1e-6, abs=1e-9), (name, idx)
    cell.params = after


def test_extra_inputs_reach_the_cell(Tiny):
    Masked = rnndsl.load_text(MASKED, target="interp")
    cell = Masked(I=V, H=4, V=V, dtype=np.float64, seed=2)
    trainer = Trainer(cell, input="x", optimizer=SGD(lr=0.0), seed=7)
    (x, y), = delay_task(1, 1, T=4, B=3)
    m = (trainer.rng.random((4, 3, 4)) > 0.5) / 0.5          # inverted dropout, p = 0.5
    loss = trainer.evaluate(x, y, extra_inputs={"m": m})
    p = cell.params                                           # a NumPy mirror of the cell
    h, logits = np.zeros((3, 4)), []
    for t in range(4):
        h = np.tanh(x[t] @ p["W"].T + h @ p["U"].T + p["b"])
        logits.append((h * m[t]) @ p["Wo"].T + p["bo"])
    z = np.array(logits)
    log_p = z - np.log(np.exp(z).sum(-1, keepdims=True))
    expected = -np.take_along_axis(log_p, y[..., None], -1).mean()
    assert loss == pytest.approx(expected, rel=1e-12)
    assert trainer.step(x, y, extra_inputs={"m": m}) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(BindError, match="extra_inputs must give the others; missing: m"):
        trainer.step(x, y)
    with pytest.raises(BindError, match="'x', which the trainer feeds with x"):
        trainer.step(x, y, extra_inputs={"x": x, "m": m})
    with pytest.raises(BindError, match="2 inputs .x, m.; say which one with input="):
        Trainer(cell)


def test_carried_state_follows_the_batch_size(Tiny):
    cell = Tiny(I=V, H=5, V=V, dtype=np.float64, seed=0)
    trainer = Trainer(cell, optimizer=SGD(lr=0.0))
    (x, y), = delay_task(0, 1, T=3, B=4)
    trainer.step(x, y)
    assert trainer.state["h"].shape == (4, 5)
    small = trainer.step(x[:, :2], y[:, :2])                  # B changed: start afresh
    assert small == pytest.approx(softmax_cross_entropy(
        cell.forward(x[:, :2]).outputs["logits"], y[:, :2])[0], rel=1e-12)
    trainer.reset_state()
    assert trainer.state is None and trainer.eval_state is None


INITS = """
cell Inits {
  dims I, H, V
  input x[I]
  state h[H] = h0, c[H] = 0.5
  param W[H, I], U[H, H], h0[H] ~ uniform(-1, 1), Wo[V, H], bo[V] ~ zeros
  c' = tanh(W @ x + U @ h) * c
  h' = tanh(c' + h)
  output logits = Wo @ h' + bo
}
"""


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_state_resets_start_some_rows_afresh(p):
    """With state_resets=p each row's next chunk starts from the cell's initial state
    (here a learned h0 and a constant 0.5) with probability p; the others carry the
    run's final state. The run's own arrays stay as the forward left them."""
    Inits = rnndsl.load_text(INITS, target="interp")
    cell = Inits(I=V, H=4, V=V, dtype=np.float64, seed=0)
    trainer = Trainer(cell, optimizer=SGD(lr=0.0), seed=3, state_resets=p)
    B = 64
    (x, y), = delay_task(0, 1, T=3, B=B)
    trainer.step(x, y)
    run = trainer.last_run
    final = {k: v.copy() for k, v in run.state.items()}
    start = {"h": np.broadcast_to(cell.params["h0"], (B, 4)), "c": np.full((B, 4), 0.5)}
    fresh = np.all([np.all(trainer.state[k] == start[k], axis=1) for k in start], axis=0)
    carried = np.all([np.all(trainer.state[k] == final[k], axis=1) for k in start], axis=0)
    assert np.all(fresh | carried)
    assert {0.0: fresh.sum() == 0, 1.0: fresh.all(),
            0.5: 10 < fresh.sum() < B - 10}[p], fresh.sum()
    for k in final:     # the Run's final states are not the carried arrays changed
        assert np.array_equal(run.state[k], final[k])


def test_state_resets_must_be_a_probability(Tiny):
    cell = Tiny(I=V, H=5, V=V, dtype=np.float64, seed=0)
    for bad in (-0.1, 1.5, "1/32", True):
        with pytest.raises(ValueError, match="state_resets must be a probability"):
            Trainer(cell, state_resets=bad)


def test_evaluate_carries_its_own_state_and_does_not_train(Tiny):
    cell = Tiny(I=V, H=5, V=V, dtype=np.float64, seed=0)
    trainer = Trainer(cell, optimizer=Adam(0.1))
    (x1, y1), (x2, y2) = delay_task(3, 2, T=3, B=2)
    params = {k: v.copy() for k, v in cell.params.items()}
    trainer.evaluate(x1, y1)
    second = trainer.evaluate(x2, y2)
    long = cell.forward(np.concatenate([x1, x2])).outputs["logits"][3:]
    assert second == pytest.approx(softmax_cross_entropy(long, y2)[0], rel=1e-12)
    assert trainer.state is None and trainer.steps == 0
    for k in params:
        np.testing.assert_array_equal(cell.params[k], params[k])
    given = {"h": np.full((2, 5), 0.3)}
    expected = softmax_cross_entropy(cell.forward(x2, state=given).outputs["logits"], y2)[0]
    assert trainer.evaluate(x2, y2, state=given) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("loss", ["mse", "binary_cross_entropy"])
def test_scalar_output_trains_with_mse_and_bce(loss):
    Score = rnndsl.load_text(SCORE, target="interp")
    cell = Score(I=2, H=8, dtype=np.float64, seed=0)
    trainer = Trainer(cell, loss=loss, optimizer=Adam(lr=0.05))
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(40):
        x = rng.normal(size=(5, 8, 2))
        target = (x[..., 0] > x[..., 1]).astype(float)        # (T, B), as the output
        losses.append(trainer.step(x, target))
    assert trainer.last_run.outputs["s"].shape == (5, 8)
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])


@pytest.mark.parametrize("resets", [0.0, 0.4])
def test_save_and_load_resume_exactly(Tiny, tmp_path, resets):
    """Halfway saved and loaded into another trainer: the same losses as straight on,
    the same random streams after (the state resets' included)."""
    chunks = list(delay_task(9, 6))
    cell = Tiny(I=V, H=6, V=V, dtype=np.float64, seed=0)
    trainer = Trainer(cell, optimizer=Adam(lr=0.05), clip_norm=1.0, seed=3,
                      state_resets=resets)
    straight = [trainer.step(x, y) for x, y in chunks]
    draws = trainer.rng.random(3), trainer.draw_resets(50)
    cell = Tiny(I=V, H=6, V=V, dtype=np.float64, seed=0)
    first = Trainer(cell, optimizer=Adam(lr=0.05), clip_norm=1.0, seed=3,
                    state_resets=resets)
    resumed = [first.step(x, y) for x, y in chunks[:3]]
    first.save(tmp_path / "ck.npz", meta={"note": "halfway"})
    cell = Tiny(I=V, H=6, V=V, dtype=np.float64, seed=42)     # other params: overwritten
    second = Trainer(cell, optimizer=Adam(lr=0.05), clip_norm=1.0, seed=0,
                     state_resets=resets)
    assert second.load(tmp_path / "ck.npz") == {"note": "halfway"}
    resumed += [second.step(x, y) for x, y in chunks[3:]]
    assert resumed == straight and second.steps == 6
    np.testing.assert_array_equal(second.rng.random(3), draws[0])
    if resets:
        np.testing.assert_array_equal(second.draw_resets(50), draws[1])
        unreset = Trainer(Tiny(I=V, H=6, V=V, dtype=np.float64, seed=0),
                          optimizer=Adam(lr=0.05), clip_norm=1.0, seed=3)
        assert [unreset.step(x, y) for x, y in chunks] != straight   # resets happened


def test_a_run_resumes_in_another_dtype_from_the_carried_state(Tiny, tmp_path):
    """A float32 checkpoint resumed by a float64 trainer (rnndsl train --resume --dtype
    float64): its params, optimiser and carried state come over, converted; the carried
    state once came as float32 and the first step refused it."""
    chunks = list(delay_task(6, 6))
    first = Trainer(Tiny(I=V, H=6, V=V, dtype=np.float32, seed=0), optimizer=Adam(lr=0.05),
                    seed=3)
    for x, y in chunks[:3]:
        first.step(x.astype(np.float32), y)
    first.save(tmp_path / "ck.npz")
    second = Trainer(Tiny(I=V, H=6, V=V, dtype=np.float64, seed=1), optimizer=Adam(lr=0.05),
                     seed=0)
    second.load(tmp_path / "ck.npz")
    carried = first._state
    assert carried and all(v.dtype == np.float32 for v in carried.values())
    for name, value in second._state.items():
        assert value.dtype == np.float64
        np.testing.assert_array_equal(value, carried[name].astype(np.float64))
    for x, y in chunks[3:]:
        assert np.isfinite(second.step(x, y))


def test_bad_configuration_is_refused(Tiny):
    Elman = rnndsl.load("specs/elman.rnn", target="interp")
    cell = Elman(I=2, H=3, O=1, dtype=np.float64)
    with pytest.raises(BindError, match=r"2 outputs \(y, h\); say which one with output="):
        Trainer(cell, loss="mse")
    with pytest.raises(BindError, match="no output 'z'; its outputs are: y, h"):
        Trainer(cell, output="z")
    with pytest.raises(ValueError, match="unknown loss 'hinge'; losses are: softmax_cross"):
        Trainer(cell, output="y", loss="hinge")
    with pytest.raises(ValueError, match="clip_norm must be a positive finite number"):
        Trainer(cell, output="y", clip_norm=0)


def test_custom_loss_and_clip_value(Tiny):
    cell = Tiny(I=V, H=4, V=V, dtype=np.float64, seed=0)
    seen = []

    def loss(pred, targets, mask):
        seen.append(pred.shape)
        return binary_cross_entropy(pred, targets, mask)
    trainer = Trainer(cell, loss=loss, optimizer=SGD(lr=1.0), clip_value=1e-3)
    (x, _), = delay_task(0, 1, T=3, B=2)
    before = {k: v.copy() for k, v in cell.params.items()}
    trainer.step(x, np.ones((3, 2, V)))
    assert seen == [(3, 2, V)]
    for k in before:                                          # every step within the clamp
        assert np.abs(cell.params[k] - before[k]).max() <= 1e-3 + 1e-15


def test_cpu_cell_trains_like_the_interpreter():
    """The trainer only uses the Cell API: a compiled Elman takes the same steps."""
    losses = {}
    for target in ("interp", "cpu"):
        Elman = rnndsl.load("specs/elman.rnn", target=target)
        cell = Elman(I=3, H=5, O=2, dtype=np.float64, seed=0)
        trainer = Trainer(cell, loss="mse", output="y", optimizer=Adam(lr=0.05))
        rng = np.random.default_rng(0)
        losses[target] = [trainer.step(rng.normal(size=(6, 4, 3)), rng.random((6, 4, 2)))
                          for _ in range(4)]
    np.testing.assert_allclose(losses["cpu"], losses["interp"], rtol=1e-10)


# ------------------------------------------------------------------ `input once`
GEN2 = """
cell Gen2 {
  dims Z, H
  input once z[Z]
  input u[1]
  state h[H]
  param W[H, Z], U[H, H], A[H, 1], v[1, H]
  h' = tanh(W @ z + U @ h + A @ u)
  output y = v @ h'
}"""


def test_an_input_once_fed_as_x_carries_the_state_as_any_input():
    """With x an `input once` (B, Z), the trainer took Z for B and started every chunk
    afresh where Z != B: the losses must not depend on which input x feeds."""
    Gen2 = rnndsl.load_text(GEN2, target="interp")
    T, H, Z, B = 4, 5, 2, 3
    rng = np.random.default_rng(0)
    data = [(rng.normal(size=(B, Z)), rng.normal(size=(T, B, 1)), rng.normal(size=(T, B, 1)))
            for _ in range(3)]
    by_z = Trainer(Gen2(Z=Z, H=H, dtype=np.float64, seed=0), loss="mse",
                   optimizer=SGD(0.1), input="z")
    by_u = Trainer(Gen2(Z=Z, H=H, dtype=np.float64, seed=0), loss="mse",
                   optimizer=SGD(0.1), input="u")
    a = [by_z.step(z, y, extra_inputs={"u": u}) for z, y, u in data]
    b = [by_u.step(u, y, extra_inputs={"z": z}) for z, y, u in data]
    np.testing.assert_allclose(a, b, rtol=1e-12)
    z, y, u = data[0]
    assert by_z.evaluate(z, y, extra_inputs={"u": u}) == pytest.approx(
        by_u.evaluate(u, y, extra_inputs={"z": z}), rel=1e-12)


def test_a_one_to_many_cell_trains_for_as_many_steps_as_its_targets():
    """A cell whose inputs are all `input once` needs steps=T; the trainer takes T from
    the targets (it had no way to pass it)."""
    Gen = rnndsl.load_text(GENERATOR, target="interp")
    cell = Gen(Z=2, H=5, dtype=np.float64, seed=0)
    z, y = np.ones((3, 2)), np.full((4, 3, 1), 0.5)
    trainer = Trainer(cell, loss="mse", optimizer=SGD(0.1))
    run = cell.forward(z, steps=4)
    want = float(np.mean((run.outputs["y"] - y) ** 2))
    assert trainer.evaluate(z, y) == pytest.approx(want, rel=1e-12)
    losses = [trainer.step(z, y) for _ in range(20)]
    assert losses[-1] < losses[0]


def test_token_ids_beside_an_input_once():
    """Token ids (T, B) beside an `input once` (B, Z): the cell took T only from a 3-D
    input, and refused z as if it were a sequence."""
    Cond = rnndsl.load_text("""
cell Cond {
  dims V, Z, H
  input token x[V]
  input once z[Z]
  state h[H]
  param W[H, V], Q[H, Z], U[H, H], Y[V, H]
  h' = tanh(W @ x + Q @ z + U @ h)
  output logits = Y @ h'
}""", target="interp")
    cell = Cond(V=4, Z=2, H=5, dtype=np.float64, seed=0)
    ids, z = np.array([[1, 2], [0, 3]]), np.ones((2, 2))
    by_ids = cell.forward({"x": ids, "z": z}).outputs["logits"]
    one_hot = cell.forward({"x": np.eye(4)[ids], "z": z}).outputs["logits"]
    np.testing.assert_array_equal(by_ids, one_hot)
    trainer = Trainer(cell, input="x")
    assert np.isfinite(trainer.step(ids, np.array([[2, 0], [3, 1]]), extra_inputs={"z": z}))


def test_numpy_numbers_and_a_loss_that_returns_one_value(Tiny):
    trainer = Trainer(Tiny(I=V, H=4, V=V, dtype=np.float64), state_resets=np.float32(0.25))
    assert trainer.state_resets == 0.25
    from rnndsl.train.schedule import Cosine
    assert Cosine(warmup=1)(3, np.float32(0.5)) > 0
    bad = Trainer(Tiny(I=V, H=4, V=V, dtype=np.float64), loss=lambda p, t, m: 1.0)
    with pytest.raises(BindError, match=r"returned float; a loss returns \(loss, d_pred\)"):
        bad.step(np.eye(3)[np.zeros((2, 2), int)], np.zeros((2, 2), int))

