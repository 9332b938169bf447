"""Checkpoints: round trips, refusal of another spec, dims or class, atomic writes.

"Another spec" is the case a checkpoint exists to catch: the same cell name loaded from an
edited spec text (here one initialiser changed), whose params have the same names and
shapes and would load without complaint.
"""

from __future__ import annotations

import json

import os
import zipfile

import numpy as np
import pytest

import rnndsl
from rnndsl.train import checkpoint
from rnndsl.train.checkpoint import CheckpointError, load, peek, save
from rnndsl.core.errors import RnnError
from rnndsl.train.optim import SGD, Adam

SPEC = """
cell Mixer {
  dims I, H
  input x[I]
  state h[H]
  param W[H, I], U[H, H] ~ orthogonal, b[H] ~ zeros
  h' = tanh(W @ x + U @ h + b)
  output h'
}
"""
EDITED = SPEC.replace("b[H] ~ zeros", "b[H] ~ ones")
OTHER = SPEC.replace("cell Mixer", "cell Blender")


@pytest.fixture(scope="module")
def Mixer():
    return rnndsl.load_text(SPEC, target="interp")


def trained(Mixer, seed=0, steps=3):
    """A cell and an Adam with non-trivial state."""
    cell = Mixer(I=3, H=4, dtype=np.float64, seed=seed)
    opt = Adam(lr=0.01)
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        opt.step(cell.params, {k: rng.normal(size=v.shape) for k, v in cell.params.items()})
    return cell, opt


def test_round_trip_params_optimizer_and_meta(Mixer, tmp_path):
    cell, opt = trained(Mixer)
    meta = {"step": 3, "vocab": ["a", "b", "\n"], "nested": {"lr": 0.01, "ids": np.arange(4)},
            "rng": np.random.default_rng(5).bit_generator.state}
    path = tmp_path / "ck.npz"
    save(path, cell, opt, meta)
    fresh, fresh_opt = Mixer(I=3, H=4, dtype=np.float64, seed=99), Adam(lr=0.01)
    held = fresh.params["W"]
    got = load(path, fresh, fresh_opt)
    assert fresh.params["W"] is held                         # loaded in place
    for k in cell.params:
        np.testing.assert_array_equal(fresh.params[k], cell.params[k])
    assert fresh_opt.t == opt.t == 3
    for kind, bufs in opt.buffers.items():
        for name, buf in bufs.items():
            np.testing.assert_array_equal(fresh_opt.buffers[kind][name], buf)
    assert got["step"] == 3 and got["vocab"] == ["a", "b", "\n"]
    np.testing.assert_array_equal(got["nested"]["ids"], np.arange(4))
    restored = np.random.default_rng(0)
    restored.bit_generator.state = got["rng"]
    assert restored.random() == np.random.default_rng(5).random()


def test_param_names_with_dots_slashes_and_case(tmp_path, Mixer):
    cell = Mixer(I=2, H=2, dtype=np.float32)
    odd = {"l1.W_i": np.ones((2, 2), np.float32), "l1/b": np.full(3, 2.0, np.float32),
           "W": np.zeros(1, np.float32), "w": np.full(1, 7.0, np.float32), "a0": np.eye(2)}
    cell.params = odd                      # a stacked model's qualified names
    save(tmp_path / "odd.npz", cell)
    info = peek(tmp_path / "odd.npz")
    assert info.params == {k: v.shape for k, v in odd.items()}
    target = Mixer(I=2, H=2, dtype=np.float32)
    target.params = {k: np.zeros_like(v) for k, v in odd.items()}
    load(tmp_path / "odd.npz", target)
    for k, v in odd.items():
        np.testing.assert_array_equal(target.params[k], v)


def test_edited_spec_with_the_same_class_name_is_refused(Mixer, tmp_path):
    cell, _ = trained(Mixer)
    save(tmp_path / "ck.npz", cell)
    Edited = rnndsl.load_text(EDITED, target="interp")
    assert Edited.__name__ == "Mixer" and Edited.digest != Mixer.digest
    other = Edited(I=3, H=4, dtype=np.float64, seed=1)
    before = {k: v.copy() for k, v in other.params.items()}
    with pytest.raises(CheckpointError) as err:
        load(tmp_path / "ck.npz", other)
    message = str(err.value)
    assert "was: param b[H] ~ zeros" in message and "now: param b[H] ~ ones" in message
    assert "load it with the spec" in message
    for k in before:                                          # nothing was changed
        np.testing.assert_array_equal(other.params[k], before[k])
    assert isinstance(err.value, RnnError)


def test_other_class_dims_and_optimizer_are_refused(Mixer, tmp_path):
    cell, opt = trained(Mixer)
    save(tmp_path / "ck.npz", cell, opt)
    Blender = rnndsl.load_text(OTHER, target="interp")
    with pytest.raises(CheckpointError, match="holds a Mixer cell .* not a Blender"):
        load(tmp_path / "ck.npz", Blender(I=3, H=4, dtype=np.float64))
    with pytest.raises(CheckpointError, match=r"holds Mixer\(I=3, H=4\); this cell is "
                                              r"Mixer\(I=3, H=5\)"):
        load(tmp_path / "ck.npz", Mixer(I=3, H=5, dtype=np.float64))
    with pytest.raises(CheckpointError, match="state is for 'Adam'; this optimiser is SGD"):
        load(tmp_path / "ck.npz", Mixer(I=3, H=4, dtype=np.float64), SGD(0.1))
    save(tmp_path / "bare.npz", cell)
    with pytest.raises(CheckpointError, match="holds no optimiser state"):
        load(tmp_path / "bare.npz", Mixer(I=3, H=4, dtype=np.float64), Adam())


def test_another_dtype_is_cast(Mixer, tmp_path):
    cell, _ = trained(Mixer)
    save(tmp_path / "ck.npz", cell)
    small = Mixer(I=3, H=4, dtype=np.float32)
    load(tmp_path / "ck.npz", small)
    assert small.params["W"].dtype == np.float32
    np.testing.assert_allclose(small.params["W"], cell.params["W"], rtol=1e-6)


def test_a_comment_or_layout_change_loads_but_a_checkpoint_without_spec_compares_raw(
        Mixer, tmp_path):
    """Compatibility is the model's canonical form; checkpoints from before the spec was
    carried (no "spec" section) still compare the raw text's hash."""
    cell, _ = trained(Mixer)
    save(tmp_path / "ck.npz", cell)
    Commented = rnndsl.load_text("# trained last week\n" + SPEC.replace("dims I, H",
                                                                        "dims  I,H  # sizes"),
                                 target="interp")
    assert Commented.digest != Mixer.digest
    again = Commented(I=3, H=4, dtype=np.float64, seed=5)
    load(tmp_path / "ck.npz", again)
    np.testing.assert_array_equal(again.params["W"], cell.params["W"])
    old = dict(np.load(tmp_path / "ck.npz"))
    header = json.loads(old["__header__"].tobytes())
    del header["spec"]
    old["__header__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(tmp_path / "old.npz", **old)
    assert peek(tmp_path / "old.npz").spec is None
    load(tmp_path / "old.npz", Mixer(I=3, H=4, dtype=np.float64))
    with pytest.raises(CheckpointError, match="expected spec hash"):
        load(tmp_path / "old.npz", again)


def test_missing_and_corrupt_files(Mixer, tmp_path):
    cell = Mixer(I=3, H=4, dtype=np.float64)
    with pytest.raises(CheckpointError, match="no checkpoint at .*nope.npz .no such file"):
        load(tmp_path / "nope.npz", cell)
    with pytest.raises(CheckpointError, match="it is a folder"):
        peek(tmp_path)
    (tmp_path / "junk.npz").write_bytes(b"\x00not a zip at all" * 10)
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load(tmp_path / "junk.npz", cell)
    (tmp_path / "m.rnn").write_text(SPEC)       # the spec given for the checkpoint
    with pytest.raises(CheckpointError, match=r"m.rnn is a text file \(a .rnn spec\), not a "
                       "checkpoint: checkpoints are .npz archives that rnndsl train writes"):
        peek(tmp_path / "m.rnn")
    save(tmp_path / "ck.npz", cell)
    data = (tmp_path / "ck.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load(tmp_path / "cut.npz", cell)
    np.savez(tmp_path / "plain.npz", W=np.zeros(3))
    with pytest.raises(CheckpointError, match="not an rnndsl checkpoint"):
        peek(tmp_path / "plain.npz")
    with pytest.raises(CheckpointError, match="no checkpoint at /dev/null: it is not a "
                                              "regular file"):     # it said "no such file"
        peek("/dev/null")


def _edited(path, tmp_path, edit):
    """A copy of the checkpoint at `path` with its JSON header changed by `edit`."""
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(arrays["__header__"].tobytes().decode())
    edit(header)
    arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    out = tmp_path / "edited.npz"
    np.savez(out, **arrays)
    return out


@pytest.mark.parametrize("edit, message", [
    (lambda h: h.pop("dims"), "its header has no 'dims'"),
    (lambda h: h["dims"].update(H="4"), "its header's 'dims' is .*, not sizes by dim name"),
    (lambda h: h.update(dtype="int8"), "its header's 'dtype' is 'int8', not float32"),
    (lambda h: h.update(cell="import os"), "its header's 'cell' is 'import os'"),
    (lambda h: h["spec"].update(text=5), "its header's spec 'text' is 5, not a string"),
    (lambda h: h["spec"].update(files={"a.rnn": 1}), "its header's spec 'files' is"),
    (lambda h: h.update(spec=[1]), "its header's 'spec' is \\[1\\], not a spec record"),
])
def test_a_hand_edited_header_is_named_corrupt(Mixer, tmp_path, edit, message):
    """Each field a checkpoint's readers use is checked where it is read (they once
    failed with a KeyError or a format error: rnndsl info's exit 3)."""
    save(tmp_path / "ck.npz", Mixer(I=3, H=4, dtype=np.float64))
    with pytest.raises(CheckpointError, match="is corrupt: " + message):
        peek(_edited(tmp_path / "ck.npz", tmp_path, edit))


def test_unsaveable_meta_is_refused_before_writing(Mixer, tmp_path):
    cell = Mixer(I=3, H=4, dtype=np.float64)
    with pytest.raises(ValueError, match=r"meta\['when'\] has type object"):
        save(tmp_path / "ck.npz", cell, meta={"when": object()})
    with pytest.raises(ValueError, match="string keys"):
        save(tmp_path / "ck.npz", cell, meta={1: 2})
    assert not list(tmp_path.iterdir())


def test_failed_save_leaves_the_previous_checkpoint(Mixer, tmp_path, monkeypatch):
    cell, opt = trained(Mixer)
    path = tmp_path / "ck.npz"
    save(path, cell, opt, {"step": 1})
    before = path.read_bytes()
    cell.params["W"] += 1.0

    def crash(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        save(path, cell, opt, {"step": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.npz"]   # no temporary file left
    assert peek(path).meta == {"step": 1}
    save(path, cell, opt, {"step": 2})                            # and a good save replaces it
    assert peek(path).meta == {"step": 2}


def test_peek(Mixer, tmp_path):
    cell, opt = trained(Mixer)
    save(tmp_path / "ck.npz", cell, opt, {"epoch": 4})
    info = peek(tmp_path / "ck.npz")
    assert (info.cell, info.digest, info.dims, info.dtype) == \
        ("Mixer", Mixer.digest, {"I": 3, "H": 4}, "float64")
    assert info.params == {"W": (4, 3), "U": (4, 4), "b": (4,)}
    assert info.optimizer == "Adam" and info.meta == {"epoch": 4}
    with zipfile.ZipFile(tmp_path / "ck.npz") as z:              # no pickle inside
        assert all(not name.endswith(".pkl") for name in z.namelist())
    assert checkpoint.FORMAT == "rnndsl-checkpoint"


def test_a_spec_file_without_the_checkpoints_cell_names_it(Mixer, tmp_path):
    """`rnndsl sample CKPT --spec FILE` where FILE defines several cells, none of them the
    checkpoint's: the error pointed to a --cell option that sample does not have."""
    cell, opt = trained(Mixer)
    save(tmp_path / "m.npz", cell, optimizer=opt)
    spec = tmp_path / "two.rnn"
    spec.write_text(OTHER + OTHER.replace("cell Blender", "cell Shaker"))
    info = peek(tmp_path / "m.npz")
    with pytest.raises(CheckpointError, match=r"two.rnn has no cell Mixer, the cell the "
                       r"checkpoint holds; it has Blender, Shaker: give a spec file that "
                       r"defines Mixer"):
        checkpoint.cell_class(info, target="interp", spec_path=spec)


NETWORK = """use "lstm.rnn"
cell BiTagger {
  dims V, H, K
  input x[V]
  layer l1 = bidirectional LSTM(I = V, H = H)
  param W[K, 2 * H], b[K]
  output scores = W @ l1(x) + b
}
"""


def test_a_network_whose_equations_changed_is_refused(tmp_path, monkeypatch):
    """From an outside review: a network cell's canonical form held its inputs, states
    and params but no equation (nor its layers'), so a checkpoint or safetensors file of
    the old model loaded into one whose equations changed. Its form now holds each part
    and its cell. A network's checkpoint written with the earlier form still loads."""
    from rnndsl.lang.canonical import canonical_form
    monkeypatch.chdir(tmp_path)
    Old = rnndsl.load_text(NETWORK, target="interp", path="tagger.rnn")
    New = rnndsl.load_text(NETWORK.replace("W @ l1(x) + b", "W @ tanh(l1(x)) + b"),
                           target="interp", path="tagger.rnn")
    Deeper = rnndsl.load_text(NETWORK.replace('use "lstm.rnn"', 'use "gru.rnn"')
                              .replace("LSTM(", "GRU("), target="interp", path="tagger.rnn")
    save("old.npz", Old(V=5, H=4, K=3, seed=0))
    load("old.npz", Old(V=5, H=4, K=3, seed=1))               # the same model: fine
    with pytest.raises(CheckpointError, match=r"(?s)different BiTagger model.*was: .*"
                                              r"W @ l1_h \+ b.*now: .*tanh"):
        load("old.npz", New(V=5, H=4, K=3, seed=1))
    with pytest.raises(CheckpointError, match="different BiTagger model"):
        load("old.npz", Deeper(V=5, H=4, K=3, seed=1))   # (its params differ too)
    # written before the form held its parts: the outer form's digest, accepted
    monkeypatch.setattr(checkpoint, "_model_form", lambda cls: canonical_form(cls.spec))
    Earlier = rnndsl.load_text(NETWORK, target="interp", path="tagger.rnn")
    save("earlier.npz", Earlier(V=5, H=4, K=3, seed=0))
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert peek("earlier.npz").spec["canonical_digest"] != \
        peek("old.npz").spec["canonical_digest"]
    load("earlier.npz", Old(V=5, H=4, K=3, seed=1))
