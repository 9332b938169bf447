"""A generated module's metadata holds named records (rnndsl/kernels/meta.py) that read
like the tuples of rnndsl 0.1.0's modules; a saved value's record names it."""

from __future__ import annotations

import pickle
from pathlib import Path

from rnndsl.kernels.meta import Arg, Const, Size, Tape
from rnndsl.lang.specfile import read_spec
from rnndsl.pipeline import build_source

SPECS = Path(__file__).resolve().parents[2] / "specs"


def test_records_equal_the_tuples_they_replace_and_pickle():
    assert Arg("param", "W") == ("param", "W") and Arg("T") == ("T",)
    assert ("threads",) in [Arg("dim", "H"), Arg("threads")]
    kind, name = Arg("tape", 19)
    assert (kind, name) == ("tape", 19) and Arg("tape", 19).kind == "tape"
    node, size = Tape(19, Size((("H", 1),), 0))
    assert node == 19 and size == ((("H", 1),), 0)
    assert Const("value", 1.0) == ("value", 1.0)
    assert pickle.loads(pickle.dumps(Arg("input", "x"))) == Arg("input", "x")
    assert repr(Arg("param", "W")) == "Arg('param', 'W')"


def test_the_lstm_module_prints_its_metadata_as_records_one_a_line():
    source = build_source(read_spec(SPECS / "lstm.rnn"))
    meta = source[source.index("LSTM_META = dict("):]
    assert "    forward_args=[\n        Arg('dim', 'I'),\n" in meta
    assert "Const(kind='value', value=1.0)," in meta
    tapes = [line for line in meta.splitlines() if "Tape(node=" in line]
    assert any(line.rstrip().endswith("# i") for line in tapes)    # the gate i, saved
    namespace: dict = {}
    exec(compile(meta.split("    forward=")[0].replace("LSTM_META = dict(", "META = dict(")
                 + ")", "<meta>", "exec"),
         {"Arg": Arg, "Const": Const, "Size": Size, "Tape": Tape}, namespace)
    assert all(isinstance(a, Arg) for a in namespace["META"]["forward_args"])
