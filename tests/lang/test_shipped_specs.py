"""The shipped specs (rnndsl/shipped.py) and how `use` finds them, from the source tree.

tests/test_packaging.py checks the same from a real, non-editable wheel install.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import rnndsl
from rnndsl.cli import main as cli
from rnndsl.core.errors import CheckError
from rnndsl.lang.catalog import first_comment, shipped_specs
from rnndsl.lang.shipped import shipped_path, specs_dir
from rnndsl.lang.specfile import read_spec

REPO = Path(__file__).resolve().parents[2]
SPECS = sorted((REPO / "specs").glob("*.rnn"))

# a cell of its own beside the `use`, so that the file loads without cell=
HEAD = """
cell Head { dims H, K  input h[H]  param V[K, H]  output p = softmax(V @ h) }
"""

# an "lstm.rnn" that is not the shipped one: a cell LSTM with one state
MINE = """# not the shipped LSTM
cell LSTM { dims I, H  input x[I]  state h[H]  param W[H, I], U[H, H]
            h' = tanh(W @ x + U @ h)  output h' }
"""


def model(folder: Path, use: str = "lstm.rnn") -> Path:
    path = folder / "model.rnn"
    path.write_text(f'use "{use}"\n' + HEAD)
    return path


# ----------------------------------------------------------------------------- the folder

def test_specs_dir_is_the_source_trees_specs_folder():
    assert Path(rnndsl.__file__).resolve().parent == REPO / "rnndsl"   # run from the tree
    assert not (REPO / "rnndsl" / "specs").exists()
    assert specs_dir().resolve() == REPO / "specs"
    assert sorted(specs_dir().glob("*.rnn")) == SPECS


def test_shipped_path_takes_a_bare_file_name_only():
    assert shipped_path("lstm.rnn") == specs_dir() / "lstm.rnn"
    assert shipped_path("nope.rnn") == specs_dir() / "nope.rnn"     # where it would be
    for name in ("specs/lstm.rnn", "../lstm.rnn", "./lstm.rnn", "..", "", "/tmp/lstm.rnn"):
        assert shipped_path(name) is None, name


# ----------------------------------------------------------------------------- the listing

def test_shipped_specs_lists_every_spec_as_rnndsl_check_describes_it():
    listing = shipped_specs()
    assert [s.name for s in listing] == [p.name for p in SPECS]
    for s in listing:
        assert s.path == specs_dir() / s.name
        cells = read_spec(s.path).cells.values()
        assert s.summary == " | ".join(cli._summary(c) for c in cells), s.name
        assert "\n" not in s.summary and "\n" not in s.comment
    lstm = next(s for s in listing if s.name == "lstm.rnn")
    assert lstm.summary == ("cell LSTM(I, H): inputs x[I]; states h[H], c[H]; 12 params; "
                            "outputs h")
    assert lstm.comment == ("Long short-term memory (Hochreiter & Schmidhuber 1997, with the "
                            "forget gate of Gers,")
    # char_lstm.rnn uses lstm.rnn: only its own cell is listed
    char = next(s for s in listing if s.name == "char_lstm.rnn")
    assert char.summary.startswith("cell CharLSTM(V, H): ") and "|" not in char.summary


def test_first_comment_is_the_opening_comments_first_line():
    assert first_comment("\n  # One.\n# Two.\ncell A {}") == "One."
    assert first_comment('use "x.rnn"\n# not a header\n') == ""
    assert first_comment("cell A { dims I }   # trailing\n") == ""
    assert first_comment("") == ""


# ----------------------------------------------------------------------------- use

def test_use_of_a_bare_name_finds_the_shipped_spec(tmp_path):
    spec_file = read_spec(model(tmp_path))
    lstm = spec_file.used["LSTM"]
    assert lstm.source.path == str(specs_dir() / "lstm.rnn")
    assert lstm.source.text == (REPO / "specs" / "lstm.rnn").read_text()
    assert spec_file.used_files == {str(specs_dir() / "lstm.rnn"): lstm.source.text}
    Cell = rnndsl.load(tmp_path / "model.rnn", target="interp", cell="LSTM")
    run = Cell(I=3, H=4, dtype=np.float64).forward(np.ones((2, 1, 3)))
    assert run.outputs["h"].shape == (2, 1, 4)


def test_a_shipped_spec_brings_the_specs_it_uses(tmp_path):
    spec_file = read_spec(model(tmp_path, "char_lstm.rnn"))
    assert {n: c.source.path for n, c in spec_file.used.items()} == {
        "LSTM": str(specs_dir() / "lstm.rnn"), "CharLSTM": str(specs_dir() / "char_lstm.rnn")}


def test_the_own_folders_spec_wins_over_a_shipped_one(tmp_path):
    (tmp_path / "lstm.rnn").write_text(MINE)
    lstm = read_spec(model(tmp_path)).used["LSTM"]
    assert lstm.source.path == str(tmp_path / "lstm.rnn")
    assert [s.name for s in lstm.states] == ["h"]       # the shipped LSTM has h and c


def test_a_missing_bare_name_says_both_places_it_looked(tmp_path):
    with pytest.raises(CheckError) as info:
        read_spec(model(tmp_path, "nope.rnn"))
    (d,) = info.value.diagnostics
    assert d.message == (f"cannot use 'nope.rnn': no such file (looked for "
                         f"{tmp_path / 'nope.rnn'}, then for the shipped spec "
                         f"{specs_dir() / 'nope.rnn'})")
    assert d.hint == ("paths in use are relative to this file; a bare file name not found "
                      "there is looked for among the specs shipped with rnndsl")
    assert (d.span.line, d.span.column) == (1, 1)


def test_a_path_with_a_folder_never_reaches_the_shipped_specs(tmp_path):
    # lstm.rnn is shipped, but "cells/lstm.rnn" means this folder's cells/
    with pytest.raises(CheckError) as info:
        read_spec(model(tmp_path, "cells/lstm.rnn"))
    (d,) = info.value.diagnostics
    assert re.fullmatch(r"cannot use 'cells/lstm\.rnn': no such file \(looked for \S+\)",
                        d.message), d.message
    assert d.hint == "paths in use are relative to this file"


# ----------------------------------------------------------------------------- carried texts

def test_a_carried_text_wins_over_a_shipped_spec_of_the_same_name(tmp_path):
    path = model(tmp_path)
    assert not (tmp_path / "lstm.rnn").exists()
    assert (specs_dir() / "lstm.rnn").read_text() != MINE
    spec_file = read_spec(path, files={str(tmp_path / "lstm.rnn"): MINE})
    lstm = spec_file.used["LSTM"]
    assert lstm.source.text == MINE
    assert lstm.source.path == str(tmp_path / "lstm.rnn")


def test_a_carried_text_of_a_shipped_path_wins_over_the_shipped_file(tmp_path):
    # a module built against a shipped spec carries it under the shipped path: when the
    # shipped file has changed since, the carried text is still the one read
    path = model(tmp_path)
    shipped = str(specs_dir() / "lstm.rnn")
    lstm = read_spec(path, files={shipped: MINE}).used["LSTM"]
    assert (lstm.source.path, lstm.source.text) == (shipped, MINE)
    # and what a build carries reads back to the same spec
    built = read_spec(path)
    again = read_spec(path, built.source.text, files=built.used_files)
    assert again.digest == built.digest


def test_a_carried_text_of_a_shipped_path_needs_no_shipped_file(tmp_path):
    # carried for a shipped spec that this install does not have (gone in a later release)
    path = model(tmp_path, "gone.rnn")
    gone = specs_dir() / "gone.rnn"
    assert not gone.exists()
    lstm = read_spec(path, files={str(gone): MINE}).used["LSTM"]
    assert (lstm.source.path, lstm.source.text) == (str(gone), MINE)


def test_a_warm_load_notices_a_file_that_now_shadows_a_shipped_spec(tmp_path, monkeypatch):
    """The warm index remembers which shipped specs a load used; a file of that name put
    beside the spec afterwards is what `use` now finds, so the entry is stale."""
    import rnndsl
    monkeypatch.setenv("RNNDSL_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "model.rnn").write_text('use "elman_relu.rnn"\n')
    first = rnndsl.load(tmp_path / "model.rnn", target="cpu")
    assert [d.name for d in first.spec.params] == ["W_xh", "W_hh", "b_h"]
    (tmp_path / "elman_relu.rnn").write_text(
        "cell ElmanReLU {\n  dims I, H\n  input x[I]\n  state h[H]\n  param W[H, I]\n"
        "  h' = relu(W @ x)\n  output h'\n}\n")
    again = rnndsl.load(tmp_path / "model.rnn", target="cpu")
    assert [d.name for d in again.spec.params] == ["W"]
