"""rnndsl.interop.safetensors: params to and from safetensors files, the spec carried.

A loaded cell is compared with the cell that was saved (its params and its forward), and
refusals with the checkpoints' own rules (rnndsl.train.checkpoint): another cell, model
or dims is refused, a comment is not.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

safetensors_numpy = pytest.importorskip("safetensors.numpy")

import rnndsl  # noqa: E402
from rnndsl.core.errors import BindError  # noqa: E402
from rnndsl.interop import safetensors as st  # noqa: E402
from rnndsl.train.checkpoint import CheckpointError  # noqa: E402

SPECS = Path(__file__).resolve().parents[2] / "specs"
ELMAN = (SPECS / "elman.rnn").read_text()


def elman_at(folder: Path, text: str = ELMAN, target: str = "interp", **kwargs):
    """An Elman cell of a spec written to folder/elman.rnn (the class and the path)."""
    path = folder / "elman.rnn"
    path.write_text(text)
    cls = rnndsl.load(path, target=target)
    return cls(I=3, H=4, O=2, **{"dtype": np.float64, "seed": 0, **kwargs}), path


def x_of(cell, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(4, 2, 3)).astype(cell.dtype)


def test_a_cell_round_trips_without_its_spec_file(tmp_path):
    """The file carries the spec: after the .rnn is gone, load rebuilds the class and a
    cell whose params and forward are the saved cell's."""
    cell, spec = elman_at(tmp_path)
    out = tmp_path / "elman.safetensors"
    st.save(cell, out)
    spec.unlink()
    loaded = st.load(out, target="interp")
    assert loaded.spec.name == "Elman" and loaded.dims == cell.dims
    assert loaded.dtype == cell.dtype
    for n, v in cell.params.items():
        assert np.array_equal(loaded.params[n], v), n
    x = x_of(cell)
    assert np.array_equal(loaded.forward(x).outputs["y"], cell.forward(x).outputs["y"])


def test_a_network_cell_round_trips(tmp_path):
    """A cell with a bidirectional layer (a network of parts) was refused: "save needs a
    cell", where checkpoint.save takes it."""
    (tmp_path / "lstm.rnn").write_text((SPECS / "lstm.rnn").read_text())
    spec = tmp_path / "net.rnn"
    spec.write_text('use "lstm.rnn"\ncell Net {\n  dims I, H, K\n  input x[I]\n'
                    "  layer l1 = bidirectional LSTM(I = I, H = H)\n  param W[K, 2 * H]\n"
                    "  output y = W @ l1(x)\n}\n")
    Net = rnndsl.load(spec, target="interp")
    cell = Net(I=3, H=4, K=2, dtype=np.float64, seed=1)
    st.save(cell, tmp_path / "net.safetensors")
    assert "l1.W_i_reverse" in st.read(tmp_path / "net.safetensors")[0]
    x = x_of(cell)
    want = cell.forward(x).outputs["y"]
    loaded = st.load(tmp_path / "net.safetensors", target="interp")
    assert np.array_equal(loaded.forward(x).outputs["y"], want)
    other = st.load(tmp_path / "net.safetensors", cell=Net(I=3, H=4, K=2, dtype=np.float64,
                                                           seed=7))
    assert np.array_equal(other.forward(x).outputs["y"], want)
    with pytest.raises(BindError, match="whose network cells save"):
        st.save(rnndsl.load(tmp_path / "lstm.rnn", target="interp")(
            I=3, H=4, direction="bidirectional"), tmp_path / "two.safetensors")


def test_the_file_is_plain_safetensors_with_the_spec_in_its_metadata(tmp_path):
    """Any safetensors reader sees one tensor a param, dotted layer names included."""
    Char = rnndsl.load(SPECS / "char_lstm.rnn", target="interp")
    cell = Char(V=5, H=3, dtype=np.float32, seed=0)
    out = tmp_path / "char.safetensors"
    st.save(cell, out)
    tensors = safetensors_numpy.load_file(str(out))
    assert set(tensors) == set(cell.params) and "l1.W_i" in tensors
    for n, v in cell.params.items():
        assert tensors[n].dtype == np.float32 and np.array_equal(tensors[n], v), n
    info = st.peek(out)
    assert info.spec["text"] == (SPECS / "char_lstm.rnn").read_text()
    assert set(info.spec["files"]) and all(isinstance(t, str)
                                           for t in info.spec["files"].values())
    assert info.dims == {"V": 5, "H": 3} and info.dtype == "float32"


def test_load_into_a_cell_writes_its_arrays_in_place_and_casts(tmp_path):
    cell, _ = elman_at(tmp_path)
    out = tmp_path / "elman.safetensors"
    st.save(cell, out)
    other = type(cell)(I=3, H=4, O=2, dtype=np.float32, seed=5)
    held = dict(other.params)
    assert st.load(out, cell=other) is other
    for n, v in cell.params.items():
        assert other.params[n] is held[n], f"{n} was replaced, not written in place"
        assert other.params[n].dtype == np.float32
        assert np.array_equal(other.params[n], v.astype(np.float32)), n


def test_a_scalar_param_round_trips(tmp_path):
    Two = rnndsl.load(SPECS / "two_streams.rnn", target="interp")
    cell = Two(A=2, G=3, H=4, K=3, dtype=np.float64, seed=0)
    cell.params["alpha"][...] = 0.25
    out = tmp_path / "two.safetensors"
    st.save(cell, out)
    loaded = st.load(out, target="interp")
    assert loaded.params["alpha"].shape == cell.params["alpha"].shape
    assert float(loaded.params["alpha"]) == 0.25


def test_the_compiled_target_loads_what_the_interpreter_saved(tmp_path):
    cell, _ = elman_at(tmp_path, seed=3)
    out = tmp_path / "elman.safetensors"
    st.save(cell, out)
    compiled = st.load(out)                         # target="cpu" by default
    assert compiled.target == "cpu"
    x = x_of(cell)
    got, want = compiled.forward(x).outputs["y"], cell.forward(x).outputs["y"]
    assert np.abs(got - want).max() <= 1e-10 * np.abs(want).max()


def test_a_comment_in_the_spec_changes_nothing(tmp_path):
    cell, _ = elman_at(tmp_path)
    out = tmp_path / "elman.safetensors"
    st.save(cell, out)
    (tmp_path / "new").mkdir()
    commented, _ = elman_at(tmp_path / "new", "# a new comment\n" + ELMAN.replace(
        "\n", "   \n"), seed=9)
    st.load(out, cell=commented)
    assert np.array_equal(commented.params["W_hh"], cell.params["W_hh"])


@pytest.mark.parametrize("change, message", [
    ("dims", r"holds Elman\(I=3, H=4, O=2\); this cell is Elman\(I=3, H=5, O=2\)"),
    ("model", "was: .*tanh"),
    ("cell", "holds a Elman cell"),
])
def test_another_model_is_refused_and_nothing_changes(tmp_path, change, message):
    cell, _ = elman_at(tmp_path)
    out = tmp_path / "elman.safetensors"
    st.save(cell, out)
    (tmp_path / "other").mkdir()
    if change == "dims":
        other = type(cell)(I=3, H=5, O=2, dtype=np.float64, seed=1)
    elif change == "model":
        other, _ = elman_at(tmp_path / "other", ELMAN.replace("h' = tanh(", "h' = relu("),
                            seed=1)
    else:
        other = rnndsl.load(SPECS / "lstm.rnn", target="interp")(I=3, H=4, seed=1)
    before = {n: v.copy() for n, v in other.params.items()}
    with pytest.raises(CheckpointError, match=message):
        st.load(out, cell=other)
    for n, v in before.items():
        assert np.array_equal(other.params[n], v), n


def test_a_file_from_another_tool_loads_by_name_into_a_given_cell(tmp_path):
    cell, _ = elman_at(tmp_path)
    rng = np.random.default_rng(2)
    weights = {n: rng.normal(size=v.shape) for n, v in cell.params.items()}
    out = tmp_path / "plain.safetensors"
    safetensors_numpy.save_file(weights, str(out))
    st.load(out, cell=cell)
    for n, v in weights.items():
        assert np.array_equal(cell.params[n], v), n
    with pytest.raises(st.SafetensorsError, match="carries no rnndsl spec"):
        st.load(out)


@pytest.mark.parametrize("edit, message", [
    (lambda w: w.pop("b_y"), "missing b_y"),
    (lambda w: w.update(W_zz=w["b_y"]), "not params of the cell: W_zz"),
    (lambda w: w.update(b_y=w["b_y"][:1]), r"tensor b_y has shape \(1,\)"),
    (lambda w: w.update(b_y=w["b_y"].astype(np.int32)), "tensor b_y is int32"),
])
def test_a_file_whose_tensors_are_not_the_params_is_refused(tmp_path, edit, message):
    cell, _ = elman_at(tmp_path)
    weights = {n: v.copy() for n, v in cell.params.items()}
    edit(weights)
    out = tmp_path / "plain.safetensors"
    safetensors_numpy.save_file(weights, str(out))
    with pytest.raises(st.SafetensorsError, match=message):
        st.load(out, cell=cell)


def test_missing_and_corrupt_files_are_named(tmp_path):
    with pytest.raises(st.SafetensorsError, match="no such file"):
        st.load(tmp_path / "none.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(st.SafetensorsError, match="not a readable safetensors file"):
        st.load(bad)
    with pytest.raises(BindError, match="needs a cell"):
        st.save(type(elman_at(tmp_path)[0]), tmp_path / "x.safetensors")


def test_save_checks_the_params_and_the_path_first(tmp_path):
    """A param of the wrong shape was written, and then refused by load; a folder gave
    a raw IsADirectoryError; a two-way cell was called no cell at all."""
    cell, _ = elman_at(tmp_path)
    cell.params["b_h"] = np.zeros(5)
    with pytest.raises(BindError, match=r"param b_h has shape \(5,\); expected \(4,\)"):
        st.save(cell, tmp_path / "w.safetensors")
    cell.params["b_h"] = np.zeros(4, np.float32)
    with pytest.raises(BindError, match="param b_h is float32 but the cell is float64"):
        st.save(cell, tmp_path / "w.safetensors")
    cell.params["b_h"] = np.zeros(4)
    with pytest.raises(st.SafetensorsError, match="is a folder; name the file"):
        st.save(cell, tmp_path)
    two = type(cell)(I=3, H=4, O=2, direction="bidirectional")
    with pytest.raises(BindError, match="holds two sets"):
        st.save(two, tmp_path / "w.safetensors")
    assert not (tmp_path / "w.safetensors").exists()


def test_a_failed_save_leaves_the_previous_file_whole(tmp_path, monkeypatch):
    cell, _ = elman_at(tmp_path)
    out = tmp_path / "elman.safetensors"
    st.save(cell, out)
    before = out.read_bytes()

    def fail(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", fail)
    cell.params["b_h"][...] = 7.0
    with pytest.raises(OSError, match="disk full"):
        st.save(cell, out)
    monkeypatch.undo()
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elman.rnn", "elman.safetensors"]
