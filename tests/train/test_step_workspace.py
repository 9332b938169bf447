"""A training step's reused buffers (rnndsl.cells.base.Workspace, lent by Trainer.step):
the same results as fresh arrays, bit for bit, and nothing a caller holds changes under it.

Run on the main job's cell (specs/char_lstm.rnn: a token input, two LSTM layers and a
readout), compiled for the cpu, with one block of rows and with two (each on its own
thread, their tapes, row copies and gradients kept apart).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import rnndsl
from rnndsl.cells.base import Workspace
from rnndsl.core.errors import BindError
from rnndsl.train.optim import Adam
from rnndsl.train.trainer import Trainer

from tiny_cells import TINY  # noqa: E402  (tests/ is on sys.path)

# float64: the kernels of the main job's cell in float64 (and the variable-length twin
# the trainer runs) are compiled by other tests of the suite too (the compiled kernels
# of both dtypes are checked against the interpreter elsewhere); what is tested here,
# buffers reused from call to call, is the same Python in either dtype
DTYPE = np.float64
REPO = Path(__file__).resolve().parents[2]
V, H = 11, 8
B = 19               # two row blocks with RNNDSL_BLAS_THREADS=2 (9 and 10 rows)
BLOCKS = [("1", 1), ("2", 2)]


# the main job's cell with one LSTM layer: what PerStepGrads needs, at half the compile
ONE_LAYER = """use "lstm.rnn"
cell OneLayer {
  dims  V, H
  input token x[V]
  layer l1 = LSTM(I = V, H = H)
  param W_y[V, H], b_y[V]
  h1 = l1(x)
  output logits = W_y @ h1 + b_y
}
"""


@pytest.fixture(scope="module")
def CharLSTM():
    return rnndsl.load(REPO / "specs" / "char_lstm.rnn")


@pytest.fixture(scope="module")
def PerStepGrads():
    """A one-layer twin of the main job's cell (half its compile time) with its weight
    gradients added up step by step in the backward loop (not one GEMM after it): its
    kernel adds into the gradient arrays, so a reused one must start at zero each time."""
    return rnndsl.load_text(ONE_LAYER, path=str(REPO / "specs" / "one_layer.rnn"),
                            no_passes=["defer_grads"])


def chunks(seed: int, n: int, T: int = 5):
    """n chunks of (ids, next ids), and one shorter (T - 2 steps: another shape)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n + 1):
        steps = T if k < n else T - 2
        ids = rng.integers(0, V, size=(steps + 1, B))
        out.append((ids[:-1], ids[1:]))
    return out


def train(Cell, reuse: bool, data, **step_kw):
    cell = Cell(V=V, H=H, dtype=DTYPE, seed=0)
    trainer = Trainer(cell, output="logits", input="x", optimizer=Adam(1e-2), clip_norm=0.5,
                      seed=0, reuse_buffers=reuse)
    losses = []
    for k, (x, y) in enumerate(data):
        kw = {key: value(k) for key, value in step_kw.items()}
        losses.append(trainer.step(x, y, **kw))
    return losses, cell, trainer


@pytest.mark.parametrize("threads, blocks, cell", [(t, b, "CharLSTM") for t, b in BLOCKS]
                         + [("2", 2, "PerStepGrads")])
def test_steps_with_reused_buffers_give_the_same_params_bit_for_bit(threads, blocks, cell,
                                                                     monkeypatch, request):
    """Params, losses, carried state and optimiser buffers after N steps, with a shorter
    last chunk, a mask and per-sequence lengths on some steps: identical with and
    without the trainer's workspace."""
    CharLSTM = request.getfixturevalue(cell)
    monkeypatch.setenv("RNNDSL_BLAS_THREADS", threads)
    data = chunks(0, 6)
    rng = np.random.default_rng(1)
    masks = [rng.random(x.shape) < 0.8 for x, _ in data]
    lengths = [rng.integers(1, x.shape[0] + 1, size=B) for x, _ in data]
    kw = {"mask": lambda k: masks[k] if k in (1, 2) else None,
          "lengths": lambda k: lengths[k] if k in (2, 3) else None}
    fresh = train(CharLSTM, False, data, **kw)
    reused = train(CharLSTM, True, data, **kw)
    assert len(reused[2].last_run._tape.blocks) == blocks
    assert reused[2]._workspace is not None and fresh[2]._workspace is None
    assert reused[0] == fresh[0]
    for name, value in fresh[1].params.items():
        np.testing.assert_array_equal(reused[1].params[name], value, err_msg=name)
    for name, value in fresh[2].state.items():
        np.testing.assert_array_equal(reused[2].state[name], value, err_msg=name)
    for name, value in fresh[2].last_run.outputs.items():
        np.testing.assert_array_equal(reused[2].last_run.outputs[name], value, err_msg=name)
    for kind, buffers in fresh[2].optimizer.buffers.items():
        for name, value in buffers.items():
            np.testing.assert_array_equal(reused[2].optimizer.buffers[kind][name], value)


@pytest.mark.parametrize("threads, blocks", BLOCKS)
def test_what_a_call_hands_out_is_not_overwritten_by_the_next(CharLSTM, threads, blocks,
                                                             monkeypatch):
    """Outputs and final states of a forward lent a workspace, and the gradients of a
    backward not lent it, stay as they were through later calls with the workspace;
    the gradients of a backward lent it are the workspace's (and equal fresh ones)."""
    monkeypatch.setenv("RNNDSL_BLAS_THREADS", threads)
    cell = CharLSTM(V=V, H=H, dtype=DTYPE, seed=2)
    rng = np.random.default_rng(2)
    xs = [rng.integers(0, V, size=(5, B)) for _ in range(3)]
    d_out = [{"logits": rng.standard_normal((5, B, V)).astype(DTYPE)} for _ in range(3)]
    ws = Workspace()

    def copies(arrays):
        return {k: v.copy() for k, v in arrays.items()}

    run1 = cell.forward(xs[0], workspace=ws)
    assert len(run1._tape.blocks) == blocks
    held = {"out": (run1.outputs, copies(run1.outputs)), "state": (run1.state,
                                                                   copies(run1.state))}
    g1 = cell.backward(run1, d_outputs=d_out[0], input_grads=False)         # its own
    held["g1"] = (g1.params, copies(g1.params))
    run2 = cell.forward(xs[1], state=run1.state, workspace=ws)
    held["out2"] = (run2.outputs, copies(run2.outputs))
    g2 = cell.backward(run2, d_outputs=d_out[1], input_grads=False, workspace=ws)
    fresh2 = cell.backward(run2, d_outputs=d_out[1], input_grads=False)
    for name, value in fresh2.params.items():
        np.testing.assert_array_equal(g2.params[name], value, err_msg=name)
    run3 = cell.forward(xs[2], state=run2.state, workspace=ws)
    g3 = cell.backward(run3, d_outputs=d_out[2], input_grads=False, workspace=ws)
    for what, (now, before) in held.items():
        for name, value in before.items():
            np.testing.assert_array_equal(now[name], value, err_msg=f"{what} {name}")
    # lent the workspace, a backward's gradients are its buffers: the next one's
    assert all(g3.params[name] is g2.params[name] for name in g2.params)


def test_backward_of_a_run_whose_tapes_were_reused_raises(CharLSTM):
    cell = CharLSTM(V=V, H=H, dtype=DTYPE, seed=3)
    rng = np.random.default_rng(3)
    x = rng.integers(0, V, size=(4, 3))
    d_out = {"logits": np.ones((4, 3, V), DTYPE)}
    ws = Workspace()
    old = cell.forward(x, workspace=ws)
    other_shape = cell.forward(x[:2], workspace=ws)     # kept apart: old stays valid
    expected = cell.backward(old, d_outputs=d_out).params
    new = cell.forward(x[::-1].copy(), workspace=ws)
    with pytest.raises(BindError, match="overwritten by a later forward lent the same"):
        cell.backward(old, d_outputs=d_out)
    with pytest.raises(BindError, match="overwritten by a later forward lent the same"):
        cell.backward(old, d_outputs=d_out, workspace=ws)
    cell.backward(new, d_outputs=d_out, workspace=ws)
    cell.backward(other_shape, d_outputs={"logits": np.ones((2, 3, V), DTYPE)})
    again = cell.forward(x, workspace=ws)
    got = cell.backward(again, d_outputs=d_out, workspace=ws).params
    for name, value in expected.items():
        np.testing.assert_array_equal(got[name], value, err_msg=name)
    with pytest.raises(BindError, match="workspace must be"):
        cell.forward(x, workspace={})


@pytest.mark.parametrize("threads", ["1", "2"])
def test_the_trainers_hand_outs_stay_as_they_were(CharLSTM, threads, monkeypatch):
    """`gradients` returns the caller's own arrays (data-parallel training sends them
    away), and each step's last_run keeps its outputs and state."""
    monkeypatch.setenv("RNNDSL_BLAS_THREADS", threads)
    data = chunks(4, 3)
    cell = CharLSTM(V=V, H=H, dtype=DTYPE, seed=4)
    trainer = Trainer(cell, output="logits", input="x", optimizer=Adam(1e-2), clip_norm=0.5)
    loss, grads, run = trainer.gradients(*data[0])
    kept = {k: v.copy() for k, v in grads.items()}
    trainer.apply(grads, run)
    runs = []
    for x, y in data[1:]:
        trainer.step(x, y)
        runs.append((trainer.last_run, {k: v.copy() for k, v in
                                        trainer.last_run.outputs.items()},
                     {k: v.copy() for k, v in trainer.last_run.state.items()}))
    clipped = {k: v.copy() for k, v in grads.items()}
    loss_again, grads_again, _ = trainer.gradients(*data[0])
    for name in kept:
        np.testing.assert_array_equal(grads[name], clipped[name], err_msg=name)
        assert not np.shares_memory(grads[name], grads_again[name])
    for run, outputs, state in runs:
        for name, value in outputs.items():
            np.testing.assert_array_equal(run.outputs[name], value)
        for name, value in state.items():
            np.testing.assert_array_equal(run.state[name], value)
    # an earlier step's run cannot go backward (its params were updated in place since,
    # and its tapes are the workspace's, which the later steps took)
    with pytest.raises(BindError):
        cell.backward(runs[0][0], d_outputs={"logits": runs[0][1]["logits"]})


def test_targets_without_reuse_take_the_workspace_and_train_the_same():
    Tiny = rnndsl.load_text(TINY, target="interp")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 3, 2))
    y = rng.integers(0, 3, size=(4, 3))
    params = []
    for reuse in (False, True):
        cell = Tiny(I=2, H=4, V=3, dtype=np.float64, seed=0)
        trainer = Trainer(cell, optimizer=Adam(1e-2), reuse_buffers=reuse)
        for _ in range(3):
            trainer.step(x, y)
        params.append(cell.params)
        run = cell.forward(x, workspace=Workspace())
        cell.backward(run, d_outputs={"logits": np.ones((4, 3, 3))}, workspace=Workspace())
    for name, value in params[0].items():
        np.testing.assert_array_equal(params[1][name], value)


def test_an_error_in_another_blocks_call_is_raised_and_the_threads_go_on(CharLSTM):
    cell = CharLSTM(V=V, H=H, dtype=DTYPE, seed=6)
    done = []

    def driver(tag, fail):
        done.append(tag)
        if fail:
            raise RuntimeError(f"block {tag} failed")

    with pytest.raises(RuntimeError, match="block 1 failed"):
        cell._launch_blocks(driver, [(0, False), (1, True), (2, False)])
    assert sorted(done) == [0, 1, 2]
    done.clear()
    cell._launch_blocks(driver, [(0, False), (1, False)])
    assert sorted(done) == [0, 1]


@pytest.mark.parametrize("threads", ["1", "2"])
def test_the_step_takes_one_launch_and_refuses_what_the_loss_refuses(CharLSTM, threads,
                                                                     monkeypatch):
    """Trainer.step runs forward, loss and backward through CompiledCell.step_with (not
    forward and backward apart); a bad target or a diverged model is refused with the
    loss's own words, and the step changes nothing."""
    monkeypatch.setenv("RNNDSL_BLAS_THREADS", threads)
    x, y = chunks(7, 1)[0]
    cell = CharLSTM(V=V, H=H, dtype=DTYPE, seed=7)
    trainer = Trainer(cell, output="logits", input="x", optimizer=Adam(1e-2), clip_norm=0.5)
    trainer.step(x, y)                               # compiles, and builds the workspace
    monkeypatch.setattr(cell, "backward", lambda *a, **k: pytest.fail("backward called"),
                        raising=False)
    before = {k: v.copy() for k, v in cell.params.items()}
    trainer.step(x, y)
    assert any(not np.array_equal(cell.params[k], v) for k, v in before.items())
    monkeypatch.undo()
    monkeypatch.setenv("RNNDSL_BLAS_THREADS", threads)
    bad = y.copy()
    bad[3, 5] = V
    before = {k: v.copy() for k, v in cell.params.items()}
    steps = trainer.steps
    with pytest.raises(ValueError, match=r"target 11 at index \(3, 5\) is out of range"):
        trainer.step(x, bad)
    cell.params["W_y"][0, 0] = np.inf
    with pytest.raises(ValueError, match="logits has a non-finite value"):
        trainer.step(x, y)
    cell.params["W_y"][0, 0] = before["W_y"][0, 0]
    assert trainer.steps == steps
    for name, value in before.items():
        np.testing.assert_array_equal(cell.params[name], value, err_msg=name)


def test_a_step_whose_params_change_between_its_kernels_is_refused(CharLSTM):
    """step_with checks, before the first block's backward kernel, that what its forward
    read is unchanged (rnndsl.cells.seen), as backward does."""
    cell = CharLSTM(V=V, H=H, dtype=DTYPE, seed=8)
    x = np.random.default_rng(8).integers(0, V, size=(4, 3))

    def meddle(k, r0, r1, outputs, d_outputs):
        d_outputs["logits"][...] = 1
        cell.params["b_y"] += 1
        return True

    with pytest.raises(BindError, match="param b_y was changed in place"):
        cell.step_with(x, meddle, workspace=Workspace())
    run, grads = cell.step_with(x, lambda k, r0, r1, o, d: d["logits"].fill(1) or True,
                                workspace=Workspace())
    want = cell.backward(cell.forward(x), d_outputs={"logits": np.ones((4, 3, V),
                                                                       DTYPE)},
                         input_grads=False)
    for name, value in want.params.items():
        np.testing.assert_array_equal(grads.params[name], value, err_msg=name)


@pytest.mark.parametrize("threads, blocks", BLOCKS)
def test_inference_forwards_lent_a_workspace_leave_it_sound(CharLSTM, threads, blocks,
                                                            monkeypatch):
    """From an outside review: forward(x, grad=False, workspace=ws) ran the workspace's
    full forward kernel on the inference twin's arguments, whose tapes are 0-size
    placeholders: it wrote past them (a segfault later), and a later forward and
    backward lent the workspace raised KeyError: Arg('hist', 'c'). A forward with
    grad=False keeps no tapes, and takes no workspace."""
    monkeypatch.setenv("RNNDSL_BLAS_THREADS", threads)
    cell = CharLSTM(V=V, H=H, dtype=DTYPE, seed=3)
    x = np.random.default_rng(3).integers(0, V, size=(6, B))
    d_out = {"logits": np.ones((6, B, V), DTYPE)}
    ws = Workspace()
    want = cell.forward(x, grad=False).outputs["logits"]
    for _ in range(3):
        np.testing.assert_array_equal(cell.forward(x, grad=False, workspace=ws)
                                      .outputs["logits"], want)
    run = cell.forward(x, workspace=ws)
    assert len(run._tape.blocks) == blocks
    g = cell.backward(run, d_outputs=d_out, workspace=ws)
    fresh = cell.backward(cell.forward(x), d_outputs=d_out)
    for name, value in fresh.params.items():
        np.testing.assert_array_equal(g.params[name], value, err_msg=name)


def test_a_param_the_kernels_read_a_copy_of_follows_changes_in_place(CharLSTM):
    """From an outside review: lent a workspace, the kernels kept reading the copy made
    of a param that is not C-contiguous (Fortran order) at the first call, while an
    optimiser changed the user's array in place: from the second step on a Trainer
    trained on stale weights, with no error."""
    cell = CharLSTM(V=V, H=H, dtype=DTYPE, seed=4)
    cell.params["W_y"] = np.asfortranarray(cell.params["W_y"])
    x = np.random.default_rng(4).integers(0, V, size=(5, B))
    ws = Workspace()
    for _ in range(3):
        with_ws = cell.forward(x, workspace=ws)
        cell.backward(with_ws, d_outputs={"logits": np.ones((5, B, V), DTYPE)},
                      workspace=ws)
        np.testing.assert_array_equal(with_ws.outputs["logits"],
                                      cell.forward(x).outputs["logits"])
        cell.params["W_y"] -= 0.25             # in place, as rnndsl.train.optim does


def test_two_threads_first_on_the_per_layer_plan_share_one_network(CharLSTM):
    """From an outside review: two threads making a stacked cell's first call on the
    per-layer plan at once each built its network (one took the parts' module from
    sys.modules half made: AttributeError), and the later replaced the earlier's, whose
    backward then said its run was not this cell's."""
    import threading
    cell = CharLSTM(V=V, H=H, dtype=DTYPE, seed=5)
    cell.layer_loops = "per_layer"
    x = np.random.default_rng(5).integers(0, V, size=(12, 3))
    start, errors, grads = threading.Barrier(3), [], []

    def work():
        start.wait()
        try:
            run = cell.forward(x)
            grads.append(cell.backward(run, d_outputs={"logits": np.ones((12, 3, V),
                                                                          DTYPE)}))
        except Exception as exc:          # noqa: BLE001  (reported below)
            errors.append(f"{type(exc).__name__}: {exc}")
    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(grads) == 3
    for g in grads[1:]:
        for name, value in grads[0].params.items():
            np.testing.assert_array_equal(g.params[name], value, err_msg=name)


def test_a_stacked_cells_cells_pickle(CharLSTM):
    """A stacked cell's class that may run a loop per layer was made under the module's
    class name without being bound there: pickle found the plain class and refused."""
    import pickle
    cell = CharLSTM(V=V, H=H, dtype=DTYPE, seed=6)
    again = pickle.loads(pickle.dumps(cell))
    assert type(again) is CharLSTM
    x = np.random.default_rng(6).integers(0, V, size=(4, 3))
    np.testing.assert_array_equal(again.forward(x).outputs["logits"],
                                  cell.forward(x).outputs["logits"])


def test_a_cell_pickles_after_a_per_layer_call_and_copies_while_another_thread_runs(
        CharLSTM):
    """From an outside review: after a call on the per-layer plan a stacked cell held its
    network cell, whose class pickle cannot find by name (PicklingError, also from a
    spawn child's start); and copy.deepcopy while another thread made the cell's first
    calls raised "dictionary changed size during iteration" (10-17 of 30 cells)."""
    import copy
    import pickle
    import threading
    cell = CharLSTM(V=V, H=H, dtype=DTYPE, seed=7)
    cell.layer_loops = "per_layer"
    x = np.random.default_rng(7).integers(0, V, size=(12, 3))
    want = cell.forward(x).outputs["logits"]
    again = pickle.loads(pickle.dumps(cell))
    np.testing.assert_array_equal(again.forward(x).outputs["logits"], want)
    failures = []
    for _ in range(10):
        fresh = CharLSTM(V=V, H=H, dtype=DTYPE, seed=7)
        fresh.layer_loops = "per_layer"
        runner = threading.Thread(target=fresh.forward, args=(x,))
        runner.start()
        while runner.is_alive():
            try:
                copy.deepcopy(fresh)
            except RuntimeError as exc:
                failures.append(str(exc))
                break
        runner.join()
    assert failures == []
