"""Cells run backwards in time and both ways (rnndsl/cells/directions.py): a reverse pass
is the plain cell over each sequence reversed within its own length, a bidirectional one
is both, concatenated forward first; their gradients are checked against finite
differences, and the compiled cpu cell against the interpreter."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import rnndsl
from rnndsl.cells.directions import Directional, reverse_index, reverse_in_lengths
from rnndsl.core.errors import BindError, TargetError

SPECS = Path(__file__).resolve().parents[2] / "specs"
T, B, I, H = 5, 3, 2, 3
LENGTHS = [5, 2, 3]


def _x(seed=0):
    return np.random.default_rng(seed).standard_normal((T, B, I))


def _plain(target="interp", seed=0):
    return rnndsl.load(SPECS / "lstm.rnn", target=target)(dtype=np.float64, seed=seed,
                                                          I=I, H=H)


def test_reverse_index_reverses_within_each_length_and_is_its_own_inverse():
    idx = reverse_index(4, 3, [4, 2, 0])
    assert idx[:, 0].tolist() == [3, 2, 1, 0]
    assert idx[:, 1].tolist() == [1, 0, 2, 3]       # padding stays in place
    assert idx[:, 2].tolist() == [0, 1, 2, 3]
    a = np.arange(12.0).reshape(4, 3)[..., None]
    assert np.array_equal(reverse_in_lengths(reverse_in_lengths(a, idx), idx), a)


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_reverse_is_the_cell_over_each_sequence_backwards(lengths):
    Cls = rnndsl.load(SPECS / "lstm.rnn", target="interp")
    rev = Cls(dtype=np.float64, seed=0, direction="reverse", I=I, H=H)
    assert isinstance(rev, Directional) and sorted(rev.params) == sorted(_plain().params)
    x = _x()
    run = rev.forward(x, lengths=lengths)
    plain = _plain()
    for b in range(B):
        n = T if lengths is None else lengths[b]
        alone = plain.forward(x[:n, b:b + 1][::-1].copy())
        np.testing.assert_allclose(run.outputs["h"][:n, b], alone.outputs["h"][::-1, 0],
                                   rtol=1e-12)
        assert np.all(run.outputs["h"][n:, b] == 0)
        np.testing.assert_allclose(run.state["c"][b], alone.state["c"][0], rtol=1e-12)


def test_bidirectional_concatenates_forward_then_reverse_with_two_param_sets():
    Cls = rnndsl.load(SPECS / "lstm.rnn", target="interp")
    bi = Cls(dtype=np.float64, seed=0, direction="bidirectional", I=I, H=H)
    assert "W_i" in bi.params and "W_i_reverse" in bi.params
    assert not np.array_equal(bi.params["W_i"], bi.params["W_i_reverse"])
    x = _x()
    h0 = {"h": np.full((B, H), 0.1), "h_reverse": np.full((B, H), -0.2)}
    run = bi.forward(x, h0, lengths=LENGTHS)
    assert run.outputs["h"].shape == (T, B, 2 * H)
    assert sorted(run.state) == ["c", "c_reverse", "h", "h_reverse"]
    fwd = _plain(seed=0).forward(x, {"h": h0["h"]}, lengths=LENGTHS)
    np.testing.assert_allclose(run.outputs["h"][..., :H], fwd.outputs["h"], rtol=1e-12)
    rev = Cls(dtype=np.float64, seed=1, direction="reverse", I=I, H=H)
    back = rev.forward(x, {"h": h0["h_reverse"]}, lengths=LENGTHS)
    np.testing.assert_allclose(run.outputs["h"][..., H:], back.outputs["h"], rtol=1e-12)
    np.testing.assert_allclose(run.state["h_reverse"], back.state["h"], rtol=1e-12)


SQUARE = """cell Square {
  dims I, H, K
  input x[I]
  state h[H]
  param W[H, I], U[H, H], V[K, H], v[H]
  h' = tanh(W @ x + U @ h)
  final logits = V @ h'
  output score = sum(v * h')
}
"""


@pytest.mark.parametrize("T_, B_, K", [(5, 3, 3), (3, 3, 2), (3, 3, 3)])
def test_a_final_vector_output_joins_on_its_feature_axis_whatever_the_sizes(T_, B_, K):
    """A `final` vector output is (B, K): with T == B == K that is (T, B), the shape of a
    scalar a step, which gains an axis of 2 from two directions; the declaration, not
    the shape, says which it is. The scalar a step here stays (T, B, 2)."""
    bi = rnndsl.load_text(SQUARE, target="interp")(dtype=np.float64, seed=0, I=2, H=4, K=K,
                                                    direction="bidirectional")
    run = bi.forward(np.random.default_rng(0).standard_normal((T_, B_, 2)))
    assert run.outputs["logits"].shape == (B_, 2 * K)
    assert run.outputs["score"].shape == (T_, B_, 2)
    g = bi.backward(run, {"logits": np.ones((B_, 2 * K)), "score": np.ones((T_, B_, 2))})
    assert g.params["V"].shape == (K, 4) and g.params["V_reverse"].shape == (K, 4)


COND = """cell Cond {
  dims I, H
  input x[I]
  input once z[H]
  state h[H]
  param W[H, I], U[H, H]
  h' = tanh(W @ x + U @ h + z)
  output h'
}
"""


def test_an_input_once_gradient_is_not_reversed_when_B_and_its_size_equal_T():
    """An `input once` has no time axis: its gradient from the reverse direction is added
    as it is, also where its shape (B, H) is (T, B). Against the two directions run by
    hand: the plain cell on x and on x reversed in time."""
    n = 3                                       # T = B = H
    Cls = rnndsl.load_text(COND, target="interp")
    bi = Cls(dtype=np.float64, seed=0, direction="bidirectional", I=2, H=n)
    rng = np.random.default_rng(1)
    x, z = rng.standard_normal((n, n, 2)), rng.standard_normal((n, n))
    dY = rng.standard_normal((n, n, 2 * n))
    g = bi.backward(bi.forward({"x": x, "z": z}), {"h": dY})
    want = 0
    for suffix, flip, dy in (("", False, dY[..., :n]), ("_reverse", True, dY[..., n:])):
        one = Cls(dtype=np.float64, seed=0, I=2, H=n)
        one.params.update({k: bi.params[k + suffix] for k in one.params})
        xs = x[::-1].copy() if flip else x
        run = one.forward({"x": xs, "z": z})
        want = want + one.backward(run, {"h": dy[::-1].copy() if flip else dy}).inputs["z"]
    np.testing.assert_allclose(g.inputs["z"], want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("direction", ["reverse", "bidirectional"])
def test_an_input_once_first_in_the_dict_does_not_set_T(direction):
    """T and B come from the per-step input, whatever order the dict holds them in: with
    the (B, H) `input once` first, a reverse cell ran B steps instead of T (3 of 5
    silently dropped) and a bidirectional one failed inside NumPy."""
    Cls = rnndsl.load_text(COND, target="interp")
    cell = Cls(dtype=np.float64, seed=0, direction=direction, I=2, H=H)
    rng = np.random.default_rng(2)
    x, z = rng.standard_normal((T, B, 2)), rng.standard_normal((B, H))
    want = cell.forward({"x": x, "z": z}, lengths=LENGTHS).outputs["h"]
    got = cell.forward({"z": z, "x": x}, lengths=LENGTHS).outputs["h"]
    assert got.shape[:2] == (T, B)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("bad, message", [
    (lambda dY: np.concatenate([dY, dY], -1), r"has shape \(5, 3, 12\); expected \(5, 3, 6\)"),
    (lambda dY: dY[..., :H], r"has shape \(5, 3, 3\); expected \(5, 3, 6\)"),
    (lambda dY: dY[0], r"has shape \(3, 6\)"),
    (lambda dY: dY.astype(np.float32), "is float32 but the cell is float64"),
    (lambda dY: 1.0, "must be a NumPy array"),
    (lambda dY: np.where(dY > 0, np.nan, dY), "has a non-finite value"),
])
def test_a_two_way_backward_checks_its_cotangents_as_a_plain_cell_does(bad, message):
    """The cotangent of a joined output is checked whole before it is split between the
    directions: a wider one had its extra columns ignored, a float32 one was cast."""
    bi = _plain().__class__(dtype=np.float64, seed=0, I=I, H=H, direction="bidirectional")
    run = bi.forward(_x())
    dY = np.random.default_rng(3).standard_normal((T, B, 2 * H))
    with pytest.raises(BindError, match=r"d_outputs\['h'\] " + message):
        bi.backward(run, {"h": bad(dY)})
    with pytest.raises(BindError, match="d_outputs must be a dict keyed by output name"):
        bi.backward(run, dY)


def test_a_two_way_cell_takes_the_cell_apis_workspace():
    """The Cell API's `workspace=` (docs/language.md): taken and checked, not a
    TypeError; the results are those without it."""
    from rnndsl.cells.base import Workspace
    bi = _plain().__class__(dtype=np.float64, seed=0, I=I, H=H, direction="bidirectional")
    dY = np.random.default_rng(4).standard_normal((T, B, 2 * H))
    plain = bi.backward(bi.forward(_x()), {"h": dY})
    ws = Workspace()
    run = bi.forward(_x(), workspace=ws)
    got = bi.backward(run, {"h": dY}, workspace=ws)
    for name, value in plain.params.items():
        np.testing.assert_array_equal(got.params[name], value)
    with pytest.raises(BindError, match="workspace must be"):
        bi.forward(_x(), workspace="yes")


def _loss_and_grads(cell, x, dY, dS, lengths):
    run = cell.forward(x, lengths=lengths)
    loss = float(np.sum(run.outputs["h"] * dY) + sum(np.sum(run.state[k] * v)
                                                     for k, v in dS.items()))
    return loss, cell.backward(run, {"h": dY}, dS)


def test_bidirectional_gradients_match_finite_differences():
    Cls = rnndsl.load(SPECS / "lstm.rnn", target="interp")
    bi = Cls(dtype=np.float64, seed=3, direction="bidirectional", I=I, H=H)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((T, B, I))
    dY = rng.standard_normal((T, B, 2 * H))
    dS = {"c": rng.standard_normal((B, H)), "h_reverse": rng.standard_normal((B, H))}
    _, g = _loss_and_grads(bi, x, dY, dS, LENGTHS)
    assert sorted(g.params) == sorted(bi.params)
    def slope(array, where, eps=1e-6):
        """d loss / d array[where] by central differences."""
        old = array[where]
        array[where] = old + eps
        up, _ = _loss_and_grads(bi, x, dY, dS, LENGTHS)
        array[where] = old - eps
        down, _ = _loss_and_grads(bi, x, dY, dS, LENGTHS)
        array[where] = old
        return (up - down) / (2 * eps)

    for name, where in (("U_f", (1, 2)), ("W_g_reverse", (0, 1)), ("b_o_reverse", (2,))):
        assert abs(slope(bi.params[name], where) - g.params[name][where]) < 1e-6, name
    for where in ((0, 0, 1), (1, 1, 0), (4, 1, 1)):     # (4, 1): padding: no gradient
        assert abs(slope(x, where) - g.inputs["x"][where]) < 1e-6, where


def test_the_compiled_bidirectional_cell_is_the_interpreters():
    """cpu: the two directions run at once on two threads; the same numbers."""
    x = _x(5)
    dY = np.random.default_rng(6).standard_normal((T, B, 2 * H))
    out = {}
    for target in ("interp", "cpu"):
        Cls = rnndsl.load(SPECS / "lstm.rnn", target=target)
        bi = Cls(dtype=np.float64, seed=2, direction="bidirectional", I=I, H=H)
        run = bi.forward(x, lengths=LENGTHS)
        out[target] = (run, bi.backward(run, {"h": dY}))
        # a param changed in place is named as the user knows it (the kernels' own
        # fingerprints on the cpu target)
        again = bi.forward(x, lengths=LENGTHS)
        bi.params["W_f_reverse"] *= 2
        with pytest.raises(BindError, match=r"^param W_f_reverse was changed in place"):
            bi.backward(again, {"h": dY})
    (ri, gi), (rc, gc) = out["interp"], out["cpu"]
    np.testing.assert_allclose(rc.outputs["h"], ri.outputs["h"], rtol=1e-10, atol=1e-12)
    for k in gi.params:
        np.testing.assert_allclose(gc.params[k], gi.params[k], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gc.inputs["x"], gi.inputs["x"], rtol=1e-9, atol=1e-12)


def test_two_directions_at_once_share_the_cores_and_stay_the_same(monkeypatch):
    """Four usable cores, B = 32: one direction alone splits its rows into four blocks;
    beside the other, into its share, two; the numbers are those of one block."""
    from rnndsl.cells.compiled import CompiledCell
    from rnndsl.kernels import blas
    monkeypatch.delenv("RNNDSL_BLAS_THREADS", raising=False)
    monkeypatch.setattr(blas, "usable_cores", lambda: 4)
    seen = []
    split = CompiledCell._row_blocks
    monkeypatch.setattr(CompiledCell, "_row_blocks",
                        lambda self, rows: seen.append(split(self, rows)) or seen[-1])
    Cls = rnndsl.load(SPECS / "lstm.rnn", target="cpu")
    x = np.random.default_rng(7).standard_normal((T, 32, I))
    dY = np.random.default_rng(8).standard_normal((T, 32, 2 * H))
    bi = Cls(dtype=np.float64, seed=2, direction="bidirectional", I=I, H=H)
    one = Cls(dtype=np.float64, seed=2, I=I, H=H)
    one.forward(x)
    assert len(seen.pop()) == 4                        # alone: a block a core
    run = bi.forward(x)
    grads = bi.backward(run, {"h": dY})
    assert seen and all(len(blocks) == 2 for blocks in seen)    # beside each other: two
    seen.clear()
    monkeypatch.setenv("RNNDSL_ROW_BLOCKS", "0")
    run1 = bi.forward(x)
    grads1 = bi.backward(run1, {"h": dY})
    assert seen and all(len(blocks) == 1 for blocks in seen)
    np.testing.assert_allclose(run.outputs["h"], run1.outputs["h"], rtol=1e-13, atol=1e-14)
    for k in grads1.params:
        np.testing.assert_allclose(grads.params[k], grads1.params[k], rtol=1e-12,
                                   atol=1e-13, err_msg=k)


def test_directions_are_checked():
    Cls = rnndsl.load(SPECS / "lstm.rnn", target="interp")
    with pytest.raises(BindError, match="direction 'sideways' is not one of"):
        Cls(I=I, H=H, direction="sideways")
    bi = Cls(I=I, H=H, direction="bidirectional")
    with pytest.raises(BindError, match="has no state q"):
        bi.forward(_x().astype(np.float32), {"q": np.zeros((B, H))})
    assert type(Cls(I=I, H=H, direction="forward")) is Cls


def test_a_bidirectional_cell_cannot_name_two_arrays_alike(tmp_path):
    """A spec with W and W_reverse: the reverse direction's copy of W is W_reverse, so one
    array stood for two (weights tied without a word) and a final state was lost."""
    spec = tmp_path / "clash.rnn"
    spec.write_text("cell Clash {\n  dims I, H\n  input x[I]\n  state h[H]\n"
                    "  param W[H, I], W_reverse[H, H]\n  h' = tanh(W @ x + W_reverse @ h)\n"
                    "  output h'\n}\n")
    Cls = rnndsl.load(spec, target="interp")
    with pytest.raises(BindError, match="Clash cannot run bidirectional: its param W_reverse "
                                        "would share its name with the reverse direction's "
                                        "copy of param W"):
        Cls(I=2, H=2, direction="bidirectional")
    assert sorted(Cls(I=2, H=2, direction="reverse").params) == ["W", "W_reverse"]


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_a_cell_that_has_run_can_be_deep_copied(direction):
    """copy.deepcopy of a cell after a forward failed: it memoises a read-only mapping
    (cannot pickle 'mappingproxy'); torch's parametrized modules deep-copy their cells."""
    import copy
    cell = rnndsl.load(SPECS / "gru.rnn", target="interp")(I=I, H=H, dtype=np.float64,
                                                            direction=direction)
    x = _x()
    before = cell.forward(x).outputs["h"]
    twin = copy.deepcopy(cell)
    np.testing.assert_array_equal(twin.forward(x).outputs["h"], before)
    twin.params["W_z"][...] = 0             # a copy: the original keeps its weights
    assert not np.array_equal(twin.forward(x).outputs["h"], before)
    np.testing.assert_array_equal(cell.forward(x).outputs["h"], before)


def test_a_two_way_cells_params_and_states_go_by_the_names_users_see():
    """A misspelt param (U_i_reversed) was ignored, the model running on the old values,
    and a wrong one was named without its suffix (param U_i), which is the forward's."""
    bi = rnndsl.load(SPECS / "lstm.rnn", target="interp")(I=I, H=H, dtype=np.float64,
                                                           direction="bidirectional")
    x = _x()
    bi.params["U_i_reversed"] = np.zeros((H, H))
    with pytest.raises(BindError, match=r"LSTM \(bidirectional\) has no param U_i_reversed"):
        bi.forward(x)
    del bi.params["U_i_reversed"]
    bi.params["U_i_reverse"] = np.zeros((2, 2))
    with pytest.raises(BindError, match=r"^param U_i_reverse has shape \(2, 2\)"):
        bi.forward(x)
    bi.params["U_i_reverse"] = np.zeros((H, H))
    with pytest.raises(BindError, match=r"^state h_reverse has shape \(1, 3\); expected "
                                        r"\(3, 3\)"):
        bi.forward(x, {"h_reverse": np.zeros((1, H))})
    run = bi.forward(x)
    bi.params["U_i_reverse"] += 1
    with pytest.raises(BindError, match=r"^param U_i_reverse was changed in place .* "
                                        r"\(cell.params\['U_i_reverse'\] = new_array\)"):
        bi.backward(run, d_outputs={"h": np.ones(run.outputs["h"].shape)})


@pytest.mark.skipif(importlib.util.find_spec("numba_cuda") is None,
                    reason="numba-cuda is not installed")
def test_the_cuda_target_runs_both_directions_on_host_arrays():
    """Under the CUDA simulator (conftest.py): the reversal on the host, each direction's
    kernels on the device, the same numbers as the interpreter; device arrays refused."""
    from numba import cuda
    kw = dict(dtype=np.float64, seed=3, direction="bidirectional", I=I, H=H)
    ref = rnndsl.load(SPECS / "elman_relu.rnn", target="interp")(**kw)
    dev = rnndsl.load(SPECS / "elman_relu.rnn", target="cuda")(**kw)
    for name, value in ref.params.items():
        dev.params[name][...] = value
    x = _x(2)
    a, b = ref.forward(x, lengths=LENGTHS), dev.forward(x, lengths=LENGTHS)
    for name in a.outputs:
        np.testing.assert_allclose(b.outputs[name], a.outputs[name], rtol=1e-10)
    d = {name: np.random.default_rng(4).standard_normal(v.shape) for name, v in a.outputs.items()}
    ga, gb = ref.backward(a, d), dev.backward(b, d)
    for name in ga.params:
        np.testing.assert_allclose(gb.params[name], ga.params[name], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gb.inputs["x"], ga.inputs["x"], rtol=1e-9, atol=1e-12)
    with pytest.raises(TargetError, match="reverses sequences on the host"):
        dev.forward(cuda.to_device(x))


def test_a_forked_child_runs_a_two_way_cell_after_its_parent_did():
    """From an outside review: after a bidirectional call in the parent, the same call in
    a forked child waited for ever (the pool that runs the second direction came along
    with its count of idle threads, and started none)."""
    import multiprocessing
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    cell = rnndsl.load(SPECS / "elman.rnn", target="cpu")(
        I=2, H=3, O=2, dtype=np.float64, seed=0, direction="bidirectional")
    x = np.ones((4, 3, 2))
    want = cell.forward(x).outputs["y"]
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_forward_into, args=(cell, x, queue))
    child.start()
    child.join(60)
    alive = child.is_alive()
    if alive:
        child.kill()
    assert not alive, "the child hung"
    np.testing.assert_array_equal(queue.get(timeout=10), want)


def _forward_into(cell, x, queue):
    queue.put(cell.forward(x).outputs["y"])
