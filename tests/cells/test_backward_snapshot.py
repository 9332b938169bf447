"""Backward gives the gradients of the forward that was run (rnndsl/seen.py), on every
target: a param replaced between the two changes nothing (the run keeps the array its
forward read), and a param or an input changed in place makes backward raise a
BindError naming it, rather than mixing new values with the tape's old ones. Through
the variable-length twin (`lengths=`) and the cpu target's row blocks too."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import rnndsl
from rnndsl.cells import seen
from rnndsl.core.errors import BindError

ROOT = Path(__file__).resolve().parents[2]
LSTM = ROOT / "specs" / "lstm.rnn"
HAS_CUDA = importlib.util.find_spec("numba_cuda") is not None
TARGETS = ["interp", "cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not HAS_CUDA, reason="numba-cuda is not installed"))]
T, B, I, H = 3, 2, 2, 3
LENGTHS = [3, 2]


def _cell(target: str):
    return rnndsl.load(LSTM, target=target)(dtype=np.float64, seed=0, I=I, H=H)


def _data(batch: int = B):
    rng = np.random.default_rng(7)
    return (rng.standard_normal((T, batch, I)),
            {"h": rng.standard_normal((T, batch, H))})


def _flat(g) -> dict:
    return {**{f"param {k}": v for k, v in g.params.items()},
            **{f"input {k}": v for k, v in g.inputs.items()},
            **{f"state {k}": v for k, v in g.state.items()}}


def _grads(cell, x, dy, **kw) -> dict:
    return _flat(cell.backward(cell.forward(x, **kw), dy))


def _same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k in want:
        assert np.array_equal(got[k], want[k]), k


@pytest.fixture(scope="module", params=[None, LENGTHS], ids=["full", "lengths"])
def lengths(request):
    return request.param


@pytest.mark.parametrize("target", TARGETS)
def test_a_param_replaced_before_backward_changes_nothing(target, lengths):
    """`cell.params[name] = new` between forward and backward: exactly the gradients of
    the forward that ran (a fresh cell's), not of a mix; the next forward uses `new`."""
    x, dy = _data()
    kw = {"lengths": lengths} if lengths else {}
    want = _grads(_cell(target), x, dy, **kw)
    cell = _cell(target)
    run = cell.forward(x, **kw)
    for name in ("U_f", "W_i", "b_o"):
        cell.params[name] = cell.params[name] + 0.5
    _same(_flat(cell.backward(run, dy)), want)
    assert not np.array_equal(cell.forward(x, **kw).outputs["h"], run.outputs["h"])


def _changed(target, lengths, change, batch: int = B):
    """BindError from the backward of a run whose arrays `change(cell, x)` altered."""
    x, dy = _data(batch)
    kw = {"lengths": lengths} if lengths else {}
    cell = _cell(target)
    run = cell.forward(x, **kw)
    change(cell, x)
    with pytest.raises(BindError) as info:
        cell.backward(run, dy)
    return str(info.value)


@pytest.mark.parametrize("target", TARGETS)
def test_a_param_changed_in_place_before_backward_is_refused(target, lengths):
    def change(cell, x):
        cell.params["U_f"][1, 2] += 1.0

    message = _changed(target, lengths, change)
    assert message.startswith("param U_f was changed in place since this run's forward")
    assert "cell.params['U_f'] = new_array" in message


@pytest.mark.parametrize("target", TARGETS)
def test_the_input_changed_in_place_before_backward_is_refused(target, lengths):
    def change(cell, x):
        x[...] = 0.0

    if lengths is None or min(lengths) == T:
        message = _changed(target, lengths, change)
        assert message.startswith("input x was changed in place since this run's forward")
        return
    # a batch with padding is read from a copy (its padded steps given each sequence's
    # last input: base._fill_padding): the run holds what it read, and a change to x in
    # place changes nothing, as a param replaced does
    x, dy = _data()
    want = _grads(_cell(target), x, dy, lengths=lengths)
    cell = _cell(target)
    run = cell.forward(x, lengths=lengths)
    change(cell, x)
    _same(_flat(cell.backward(run, dy)), want)


@pytest.mark.parametrize("target", ["interp", "cpu"])
def test_values_swapped_in_place_are_refused(target):
    """The fingerprint weighs each value by its place: a permutation is a change."""
    def change(cell, x):
        x[[0, 1]] = x[[1, 0]]

    assert _changed(target, None, change).startswith("input x was changed")

    def swap(cell, x):
        U = cell.params["U_g"]
        assert U[0, 1] != U[2, 0]
        U[0, 1], U[2, 0] = U[2, 0], U[0, 1]

    assert _changed(target, None, swap).startswith("param U_g was changed")


@pytest.mark.parametrize("target", ["interp", "cpu"])
def test_a_value_changed_and_changed_back_is_accepted(target):
    """What backward checks is the values, not whether anything was written."""
    x, dy = _data()
    want = _grads(_cell(target), x, dy)
    cell = _cell(target)
    run = cell.forward(x)
    old, old_x = cell.params["U_o"][0, 0], x[0, 0, 0]
    cell.params["U_o"][0, 0] = 5.0
    x[0, 0, 0] = 5.0
    cell.params["U_o"][0, 0], x[0, 0, 0] = old, old_x
    _same(_flat(cell.backward(run, dy)), want)


def test_cpu_row_blocks_read_the_forwards_params(monkeypatch):
    """Two row blocks (B = 16, two threads): the blocks' backward kernels read the
    params the forward read, and an in-place change is refused."""
    monkeypatch.setenv("RNNDSL_BLAS_THREADS", "2")
    batch = 16
    x, dy = _data(batch)
    cell = _cell("cpu")
    assert len(cell._row_blocks(batch)) == 2
    want = _grads(_cell("cpu"), x, dy)
    run = cell.forward(x)
    cell.params["U_g"] = cell.params["U_g"] * 2.0
    _same(_flat(cell.backward(run, dy)), want)

    def change(cell, x):
        cell.params["W_o"][...] *= 2.0

    assert _changed("cpu", None, change, batch=batch).startswith("param W_o was changed")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_cpu_kernels_take_the_fingerprints_as_they_read(dtype):
    """One row block: the forward kernel writes the fingerprints of the params and
    inputs it reads (its `seen` argument), which are the reference's; the backward
    kernel takes them again, so that what the runtime compares is the kernel's work
    (a backward kernel that wrote none would be refused, and one that took the
    forward's would let a change through)."""
    cell = rnndsl.load(ROOT / "specs" / "char_lstm.rnn")(dtype=dtype, seed=0, V=5, H=3)
    assert cell._kernel_seen() is not None
    ids = np.random.default_rng(0).integers(0, 5, (4, 2))
    run = cell.forward(ids)
    tape = run._tape
    assert tape.seen.by_kernel and len(tape.blocks) == 1
    read = {**{f"param {n}": a for n, a in tape.params.items()},
            **{f"input {n}": a for n, a in tape.blocks[0].inputs.items()}}
    assert read["input x"].dtype == np.int64        # the token ids the kernel gathers by
    assert list(tape.seen.sums) == [seen.fingerprint(read[n]) for n in tape.seen.names]
    d = {"logits": np.ones_like(run.outputs["logits"])}
    cell.backward(run, d)          # unchanged: the backward kernel's sums are the same
    run = cell.forward(ids)
    cell.params["l2.b_o"][1] += 1.0
    with pytest.raises(BindError, match=r"^param l2\.b_o was changed in place"):
        cell.backward(run, d)


@pytest.mark.skipif(not HAS_CUDA, reason="numba-cuda is not installed")
def test_cuda_device_arrays_changed_in_place_are_refused():
    """Params and inputs held on the device: fingerprinted on the device."""
    from numba import cuda
    x, dy = _data()
    cell = _cell("cuda")
    cell.params = {k: cuda.to_device(v) for k, v in cell.params.items()}
    want = cell.backward(cell.forward(cuda.to_device(x)), dy)
    dx = cuda.to_device(x)
    run = cell.forward(dx)
    cell.params["W_f"] = cuda.to_device(cell.params["W_f"].copy_to_host() + 1.0)
    got = cell.backward(run, dy)
    assert np.array_equal(got.params["W_f"].copy_to_host(),
                          want.params["W_f"].copy_to_host())

    run = cell.forward(dx)
    U = cell.params["U_i"].copy_to_host()
    U[0, 1] += 1.0
    cell.params["U_i"].copy_to_device(U)
    with pytest.raises(BindError, match="^param U_i was changed in place"):
        cell.backward(run, dy)
    run = cell.forward(dx)
    dx.copy_to_device(np.zeros_like(x))
    with pytest.raises(BindError, match="^input x was changed in place"):
        cell.backward(run, dy)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (7,), (4, 5), (3, 2, 3)])
def test_the_compiled_fingerprint_is_the_reference(dtype, shape):
    from rnndsl.kernels import loops as kernels
    a = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    assert int(kernels.fingerprint(a)) == seen.fingerprint(a)
    b = np.random.default_rng(2).standard_normal((2, 3)).astype(dtype)
    assert list(seen.compiled_fingerprints((a, b))) == [seen.fingerprint(a),
                                                         seen.fingerprint(b)]


def test_the_fingerprint_sees_one_bit_and_a_swap():
    a = np.random.default_rng(3).standard_normal(33).astype(np.float32)
    base = seen.fingerprint(a)
    for i in (0, 16, 32):
        for bit in (0, 31):
            b = a.copy()
            b.view(np.uint32)[i] ^= np.uint32(1 << bit)
            assert seen.fingerprint(b) != base
    b = a.copy()
    b[[3, 20]] = b[[20, 3]]
    assert seen.fingerprint(b) != base


@pytest.mark.parametrize("target", TARGETS)
def test_a_forward_with_grad_false_is_the_same_forward_and_refuses_a_backward(target,
                                                                             lengths):
    """grad=False (what sampling and evaluation use) skips the fingerprints; its outputs
    are the same, and a backward on it says why it cannot run."""
    cell = _cell(target)
    x, dy = _data()
    kept, bare = cell.forward(x, lengths=lengths), cell.forward(x, lengths=lengths,
                                                                   grad=False)
    for name in kept.outputs:
        assert np.array_equal(np.asarray(bare.outputs[name]), np.asarray(kept.outputs[name]))
    with pytest.raises(BindError, match=r"grad=False"):
        cell.backward(bare, dy)
    _same(_flat(cell.backward(kept, dy)), _grads(cell, x, dy, lengths=lengths))


@pytest.mark.parametrize("batch", [2, 8], ids=["blas-steps", "register-tiles"])
def test_every_param_the_cpu_kernels_read_is_checked(monkeypatch, batch):
    """One row block, below and at MR rows (the backward stacks [U_i; ...] by flat
    copies, which fingerprint as they copy, or packs them into panels, which do not):
    a change in place to any one param between forward and backward is refused,
    naming that param, whichever way the kernels read it."""
    monkeypatch.setenv("RNNDSL_BLAS_THREADS", "1")
    x, dy = _data(batch)
    cell = _cell("cpu")
    assert len(cell._row_blocks(batch)) == 1 and cell._kernel_seen() is not None
    for name in cell.params:
        run = cell.forward(x)
        old = cell.params[name].flat[-1]
        cell.params[name].flat[-1] += 1.0
        with pytest.raises(BindError, match=f"^param {name} was changed in place"):
            cell.backward(run, dy)
        cell.params[name].flat[-1] = old
        cell.backward(cell.forward(x), dy)     # restored: accepted
