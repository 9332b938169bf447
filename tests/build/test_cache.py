"""The build cache's warm path (rnndsl/cache.py): a spec loaded before is found through
its index entry and its kept checked spec, without parsing or checking it again, and
never served stale."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import rnndsl
from rnndsl.build import cache
REPO = Path(__file__).resolve().parents[2]

WARM = """
import json, sys
import numpy as np
import pytest
import rnndsl
Cell = rnndsl.load(sys.argv[1])
cell = Cell(dtype=np.float64, I=2, H=3, O=2)
y = cell.forward(np.ones((2, 1, 2))).outputs["y"]
front_end = [m for m in ("lark", "networkx", "rnndsl.lang.parse", "rnndsl.codegen.emit", "rnndsl.schedule.plan",
                         "rnndsl.build.modules") if m in sys.modules]
print(json.dumps({"front_end": front_end, "name": Cell.__name__, "y": y.tolist()}))
"""


def load_in_a_new_process(spec: Path, cache_dir: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), RNNDSL_CACHE_DIR=str(cache_dir))
    out = subprocess.run([sys.executable, "-c", WARM, str(spec)], cwd=REPO, env=env,
                         text=True, capture_output=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_warm_load_reads_no_spec(tmp_path):
    """The first process builds (parses, checks, plans, emits); the second finds the
    module through the index and its checked spec in the pickle: no Lark, no networkx,
    no parser, checker or emitter imported, and the same outputs."""
    spec = REPO / "specs" / "elman.rnn"
    cold = load_in_a_new_process(spec, tmp_path)
    assert {"lark", "rnndsl.lang.parse", "rnndsl.codegen.emit", "rnndsl.build.modules"} <= set(cold["front_end"])
    assert len(list((tmp_path / "index").glob("*.json"))) == 1
    assert len(list(tmp_path.glob("elman_*.spec.pickle"))) == 1
    warm = load_in_a_new_process(spec, tmp_path)
    assert warm["front_end"] == [] and warm["name"] == "Elman"
    assert np.array_equal(warm["y"], cold["y"])


def test_an_edited_used_file_is_rebuilt_not_served_from_the_index(tmp_path, monkeypatch):
    """The index is keyed by the text of the file loaded; the files it uses are checked
    by their hashes at every hit."""
    monkeypatch.setenv("RNNDSL_CACHE_DIR", str(tmp_path / "cache"))
    base = tmp_path / "base.rnn"
    text = (REPO / "specs" / "elman_relu.rnn").read_text()
    base.write_text(text)
    top = tmp_path / "top.rnn"
    top.write_text('use "base.rnn"\n')
    first = rnndsl.load(top)
    assert rnndsl.load(top) is first                       # a hit: the same class
    base.write_text(text.replace("relu(", "tanh("))
    second = rnndsl.load(top)
    assert second.kernels.__file__ != first.kernels.__file__
    assert "tanh(" in second.spec.source.text and "relu(" in first.spec.source.text


def test_a_used_file_reached_through_a_link_pointed_elsewhere_is_read_anew(tmp_path,
                                                                             monkeypatch):
    """From an outside review: the index kept a used file by its resolved path, so after
    `ln -sfn v2.rnn base.rnn` it hashed v1 (unchanged) and served v1's module."""
    monkeypatch.setenv("RNNDSL_CACHE_DIR", str(tmp_path / "cache"))
    text = (REPO / "specs" / "elman_relu.rnn").read_text()
    (tmp_path / "v1.rnn").write_text(text)
    (tmp_path / "v2.rnn").write_text(text.replace("relu(", "tanh("))
    link = tmp_path / "base.rnn"
    link.symlink_to("v1.rnn")
    top = tmp_path / "top.rnn"
    top.write_text('use "base.rnn"\n')
    first = rnndsl.load(top)
    assert rnndsl.load(top) is first
    link.unlink()
    link.symlink_to("v2.rnn")
    second = rnndsl.load(top)
    assert "tanh(" in second.spec.source.text and "relu(" in first.spec.source.text


def test_damaged_index_and_pickle_fall_back_to_reading_the_spec(tmp_path, monkeypatch):
    monkeypatch.setenv("RNNDSL_CACHE_DIR", str(tmp_path))
    spec = REPO / "specs" / "elman.rnn"
    first = rnndsl.load(spec)
    entry, = (tmp_path / "index").glob("*.json")
    kept, = tmp_path.glob("elman_*.spec.pickle")
    entry.write_text("{not json")
    kept.write_bytes(b"not a pickle")
    assert cache.warm_class(spec, "cpu", None) is None
    assert cache.recalled_spec(first.kernels) is None
    again = rnndsl.load(spec)                       # the slow way, and the entry again
    assert again.spec.name == "Elman"
    assert json.loads(entry.read_text())["class"] == "Elman"


def test_a_stale_pickle_is_not_used(tmp_path, monkeypatch):
    """A kept spec whose digest is not the module's SPEC_HASH is ignored."""
    monkeypatch.setenv("RNNDSL_CACHE_DIR", str(tmp_path))
    elman = rnndsl.load(REPO / "specs" / "elman.rnn")
    gru = rnndsl.load(REPO / "specs" / "gru.rnn")
    kept, = tmp_path.glob("elman_*.spec.pickle")
    other, = tmp_path.glob("gru_*.spec.pickle")
    kept.write_bytes(other.read_bytes())
    assert cache.recalled_spec(elman.kernels) is None
    assert cache.recalled_spec(gru.kernels).digest == gru.kernels.SPEC_HASH


def test_a_compiled_class_lowers_its_step_on_demand():
    from rnndsl.ir.graph import StepGraph
    Cell = rnndsl.load(REPO / "specs" / "elman.rnn")
    step = Cell.step
    assert isinstance(step, StepGraph) and Cell.step is step     # made once, then kept


def test_passes_switched_off_from_python_build_and_remember_their_own_module(tmp_path,
                                                                               monkeypatch):
    """rnndsl.load(..., no_passes=[...]) is `rnndsl build --no-pass` from Python: its own
    module (the cache key holds the passes), its own warm-load entry, and a variable-
    length twin built with the same passes; an unknown name is a TargetError that lists
    the passes."""
    monkeypatch.setenv("RNNDSL_CACHE_DIR", str(tmp_path))
    spec = REPO / "specs" / "elman.rnn"
    plain = rnndsl.load(spec)
    off = rnndsl.load(spec, no_passes=["microkernel", "hoist"])
    assert off.kernels.__file__ != plain.kernels.__file__
    assert "microkernel" in plain.meta["passes"] and "hoist" in plain.meta["passes"]
    assert "microkernel" not in off.meta["passes"] and "hoist" not in off.meta["passes"]
    assert len(list((tmp_path / "index").glob("*.json"))) == 2
    assert rnndsl.load(spec, no_passes=("hoist", "microkernel")) is off     # warm, either order
    assert rnndsl.load(spec) is plain
    x = np.random.default_rng(0).normal(size=(4, 3, 2))
    cell = off(I=2, H=3, O=2, dtype=np.float64)
    cell.forward(x, lengths=np.array([4, 2, 3]))
    assert "microkernel" not in type(cell)._lengths_cls.meta["passes"]
    with pytest.raises(rnndsl.TargetError, match="unknown pass 'fuse'.*microkernel"):
        rnndsl.load(spec, no_passes=["fuse"])


def test_a_long_spec_file_name_makes_a_short_cached_module_name(tmp_path, monkeypatch):
    """The cached module's name keeps 40 characters of the spec's (the hash keeps it
    apart): Numba's cache files add each kernel's name to it, and a file name is at most
    255 bytes (a 200-character spec name failed at the first call)."""
    from rnndsl.build.modules import MAX_CACHED_STEM, cached_module
    from rnndsl.lang.specfile import read_spec
    monkeypatch.setenv("RNNDSL_CACHE_DIR", str(tmp_path / "cache"))
    spec = tmp_path / ("e" * 200 + ".rnn")
    spec.write_text((Path(__file__).resolve().parents[2] / "specs" / "elman.rnn").read_text())
    module = cached_module(read_spec(spec))
    stem = Path(module.__file__).stem
    assert stem.startswith("e" * MAX_CACHED_STEM + "_") and len(stem) == MAX_CACHED_STEM + 17


def test_a_damaged_cached_module_is_built_again(tmp_path):
    """A cached module cut short on disk (a full disk, a crash of another program) made
    every later load raise a raw SyntaxError (`rnndsl gradcheck`: internal error); the
    next load now builds it again. Each process only loads the class: nothing compiles."""
    env = dict(os.environ, PYTHONPATH=str(REPO), RNNDSL_CACHE_DIR=str(tmp_path))
    probe = "import sys, rnndsl; print(rnndsl.load(sys.argv[1]).__name__)"
    spec = str(REPO / "specs" / "elman.rnn")

    def load() -> str:
        out = subprocess.run([sys.executable, "-c", probe, spec], cwd=REPO, env=env,
                             text=True, capture_output=True, timeout=600, check=False)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout.strip()
    assert load() == "Elman"
    module, = tmp_path.glob("elman_*.py")
    whole = module.read_text()
    for damaged in (whole[:len(whole) // 2], whole[:whole.index("\nSPEC_FILES")]):
        module.write_text(damaged)          # cut inside a string; cut between definitions
        assert load() == "Elman"
        assert module.read_text() == whole


def test_a_cache_folder_that_is_a_file_is_named_so(tmp_path, monkeypatch):
    """RNNDSL_CACHE_DIR naming a file said "cannot write the build cache at
    <file>/elman_....py: File exists"."""
    from rnndsl.core.errors import RnnError
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("")
    monkeypatch.setenv("RNNDSL_CACHE_DIR", str(not_a_folder))
    with pytest.raises(RnnError, match=f"the build cache {not_a_folder} is a file, not a "
                                       "folder: move it, or set RNNDSL_CACHE_DIR"):
        rnndsl.load(REPO / "specs" / "elman.rnn")


def test_a_copy_of_a_spec_in_another_folder_is_shown_by_its_own_path(tmp_path, monkeypatch):
    """From an outside review: the build cache keys a module by the spec's text, and a
    compiled class kept the path of the load that built it: a copy loaded later (or the
    same file by another path) named the first file in its errors, its checkpoints
    (`rnndsl info`) and `rnndsl sample --spec`, even once that file was deleted."""
    from rnndsl.core.errors import BindError
    from rnndsl.train.checkpoint import spec_record
    monkeypatch.setenv("RNNDSL_CACHE_DIR", str(tmp_path / "cache"))
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        for name in ("char_lstm.rnn", "lstm.rnn"):
            (tmp_path / folder / name).write_text((REPO / "specs" / name).read_text())
        (tmp_path / folder / "sized.rnn").write_text(
            "cell Sized {\n  dims I, H\n  input x[I]\n  state h[H]\n"
            "  param W[H, I], U[H, H], b[H - 1]\n  h' = tanh(W @ x + U @ h)\n"
            "  output h'\n}\n")
    first = rnndsl.load(tmp_path / "a" / "sized.rnn")
    assert first.spec.source.path == str(tmp_path / "a" / "sized.rnn")
    shutil.rmtree(tmp_path / "a")
    for _ in range(2):                          # built from a's module, then from the index
        Sized = rnndsl.load(tmp_path / "b" / "sized.rnn")
        assert Sized.kernels is first.kernels       # one module: nothing compiled twice
        with pytest.raises(BindError, match=f"{tmp_path / 'b' / 'sized.rnn'}:5:"):
            Sized(I=2, H=1)
        assert spec_record(Sized)["path"] == str(tmp_path / "b" / "sized.rnn")
    assert rnndsl.load(tmp_path / "b" / "sized.rnn") is Sized
    cell = Sized(I=2, H=3, dtype=np.float64)     # pickles, as a cell of the module's own
    again = pickle.loads(pickle.dumps(cell))
    assert type(again) is Sized and again.spec.source.path == Sized.spec.source.path
    # a network, with the file it uses, and its class from the index
    (tmp_path / "a").mkdir()
    for name in ("char_lstm.rnn", "lstm.rnn"):
        (tmp_path / "a" / name).write_text((REPO / "specs" / name).read_text())
    rnndsl.load(tmp_path / "a" / "char_lstm.rnn")
    for _ in range(2):
        record = spec_record(rnndsl.load(tmp_path / "b" / "char_lstm.rnn"))
        assert record["path"] == str(tmp_path / "b" / "char_lstm.rnn")
        assert list(record["files"]) == [str(tmp_path / "b" / "lstm.rnn")]


def test_a_damaged_numba_cache_file_is_compiled_again(tmp_path):
    """From an outside review: a kernel's Numba cache file cut short or garbled (a full
    disk, a crash) made every later call raise UnpicklingError (gradcheck: internal
    error, exit 3) until the user deleted it. It now reads as a miss and is rewritten."""
    env = dict(os.environ, PYTHONPATH=str(REPO), RNNDSL_CACHE_DIR=str(tmp_path))
    probe = ("import sys, numpy as np, rnndsl\n"
             "cell = rnndsl.load(sys.argv[1])(I=2, H=3, O=2, dtype=np.float64)\n"
             "print(cell.forward(np.ones((2, 1, 2))).outputs['y'].sum())\n")
    spec = str(REPO / "specs" / "elman.rnn")

    def forward() -> str:
        out = subprocess.run([sys.executable, "-c", probe, spec], cwd=REPO, env=env,
                             text=True, capture_output=True, timeout=600, check=False)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout.strip().splitlines()[-1]
    first = forward()
    kernels = sorted((tmp_path / "__pycache__").glob("elman_*.nbc"))
    indexes = sorted((tmp_path / "__pycache__").glob("elman_*.nbi"))
    assert kernels and indexes
    kernels[0].write_bytes(kernels[0].read_bytes()[:100])       # cut short
    assert forward() == first
    # garbled: unpickling raises what it likes, here bytes of 2**63 - 1 (OverflowError)
    with open(indexes[0], "rb") as f:
        pickle.load(f)                                            # Numba's version record
        head = indexes[0].read_bytes()[:f.tell()]
    indexes[0].write_bytes(head + b"\x8e" + (2 ** 63 - 1).to_bytes(8, "little"))
    with pytest.raises(OverflowError):              # what it raises, unguarded
        pickle.loads(indexes[0].read_bytes()[len(head):])
    assert forward() == first
