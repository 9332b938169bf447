"""Fuzzing the command line: random argument vectors for every subcommand end in exit
0 or 2 (1 where a check ran and failed), never a traceback and never `internal error`.

The vectors mix each subcommand's own options with values of every kind (negative,
zero, huge, NaN, words, dims, paths to specs, folders, corpora, checkpoints and other
files). Training is kept tiny by a prefix of small settings that the fuzzed arguments
may override (argparse keeps the last value). HYPOTHESIS_PROFILE=long runs 500 vectors
a subcommand.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnndsl.cli.main import build_parser, main

REPO = Path(__file__).resolve().parents[2]
TEXT = "the cat sat on the mat. the dog sat on the log. " * 20


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with every kind of file a user might name, and a trained checkpoint."""
    where = tmp_path_factory.mktemp("fuzz_cli")
    (where / "corpus.txt").write_text(TEXT)
    (where / "empty.txt").write_text("")
    (where / "folder").mkdir()
    (where / "binary.bin").write_bytes(bytes(range(256)))
    for name in ("char_lstm.rnn", "lstm.rnn", "elman.rnn", "two_streams.rnn"):
        shutil.copy(REPO / "specs" / name, where / name)
    (where / "broken.rnn").write_text("cell C {\n  dims H\n  state h[H]\n  h' = q\n}\n")
    np.savez(where / "other.npz", a=np.zeros(3))
    code, _, err = _main(where, ["train", "char_lstm.rnn", "--corpus", "corpus.txt",
                                 "--dims", "H=3", "--batch", "2", "--seq", "3", "--steps", "1",
                                 "--target", "interp", "--checkpoint", "model.npz",
                                 "--sample-chars", "2"])
    assert code == 0, err
    return where


def _main(where: Path, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    os.chdir(where)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    finally:
        os.chdir(here)
    return code, out.getvalue(), err.getvalue()


def _options(command: str) -> list[str]:
    """The option strings of one subcommand, read from the parser itself, so that an
    option added later is fuzzed too."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices[command]
    # (--debug shows the traceback of an error: what the checks below refuse)
    return [s for a in sub._actions for s in a.option_strings
            if s not in ("-h", "--help", "--debug")]


PATHS = ["char_lstm.rnn", "lstm.rnn", "elman.rnn", "two_streams.rnn", "broken.rnn",
         "missing.rnn", "folder", "corpus.txt", "empty.txt", "binary.bin", "model.npz",
         "other.npz", "out/x.npz", "/dev/null/x", ""]
VALUES = ["-1", "0", "1", "2", "3", "0.5", "1e-9", "1e300", "nan", "inf", "-inf", "abc",
          "H=3", "H=0", "H=-1", "Q=2", "H=3,I=2", "H", "=", ",", "0.5,1.0", "0,1", "t",
          "interp", "cpu", "cuda", "float32", "float64", "adam", "sgd", "both", "ir",
          "grad", "lstm", "LSTM", "CharLSTM", "Nope", "é", "\x00"]
# settings that keep a run that gets through short; later arguments override them
PREFIX = {
    "train": ["char_lstm.rnn", "--corpus", "corpus.txt", "--dims", "H=3", "--batch", "2",
              "--seq", "3", "--steps", "1", "--sample-chars", "2", "--target", "interp",
              "--checkpoint", "fuzzed.npz", "--force", "--every", "0", "--val-chars", "40"],
    "sweep": ["char_lstm.rnn", "--corpus", "corpus.txt", "--dims", "H=3", "--batch", "2",
              "--seq", "3", "--steps", "1", "--sample-chars", "2", "--target", "interp",
              "--every", "0", "--val-chars", "40", "--grid", "seed=0,1", "--out", "swept",
              "--force"],
    "sample": ["model.npz", "--target", "interp", "--length", "3"],
    "gradcheck": ["elman.rnn", "-T", "2", "-B", "1", "--target", "interp"],
    "info": ["model.npz"], "check": ["elman.rnn"], "graph": ["elman.rnn"],
    "explain": ["elman.rnn"], "build": ["elman.rnn", "-o", "built"], "specs": [],
    "export": ["elman.rnn", "--dims", "I=2,H=3,O=2", "-o", "fuzzed.onnx", "--force"],
}
# what a fuzzed value may not do: run for minutes, or compile float64 kernels
SLOW = {("train", "--minutes"), ("train", "--steps"), ("train", "--max-chars"),
        ("train", "--target"), ("train", "--corpus"), ("train", "--batch"),
        ("train", "--seq"), ("train", "--dims"), ("train", "--sample-chars"),
        ("train", "--val-chars"), ("train", "--workers"),     # a cluster: seconds to start
        ("sample", "--target"), ("sample", "--length"), ("sample", "-n"), ("sample", "--beam"),
        ("gradcheck", "--target"),
        ("sweep", "--minutes"), ("sweep", "--steps"), ("sweep", "--max-chars"),
        ("sweep", "--target"), ("sweep", "--corpus"), ("sweep", "--batch"),
        ("sweep", "--seq"), ("sweep", "--dims"), ("sweep", "--sample-chars"),
        ("sweep", "--val-chars"), ("sweep", "--workers"),    # a cluster: seconds to start
        ("gradcheck", "-T"), ("gradcheck", "-B"), ("gradcheck", "--dims")}


@st.composite
def argv(draw, command: str):
    options = [o for o in _options(command) if (command, o) not in SLOW]
    tokens = list(PREFIX[command])
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.sampled_from(["option", "option+value", "value", "path"]))
        if kind in ("option", "option+value") and options:
            tokens.append(draw(st.sampled_from(options)))
        if kind in ("option+value", "value"):
            tokens.append(draw(st.sampled_from(VALUES) | st.text(max_size=6)))
        if kind == "path":
            tokens.append(draw(st.sampled_from(PATHS)))
    return [command] + tokens


def _check(workdir, args):
    code, out, err = _main(workdir, args)
    allowed = {0, 1, 2} if args[0] in ("gradcheck", "check") else {0, 2}
    assert code in allowed, (args, code, err[-2000:])
    assert "Traceback" not in err and "internal error" not in err, (args, err[-2000:])
    if code == 2:
        assert "error" in err, (args, err)


COMMANDS = ["train", "sample", "info", "gradcheck", "check", "graph", "explain", "build",
            "specs", "sweep", "export"]


@pytest.mark.parametrize("command", COMMANDS)
def test_fuzzed_arguments_exit_cleanly(workdir, command):
    @settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)
    @given(argv(command))
    def run(args):
        _check(workdir, args)
    run()


@pytest.mark.parametrize("args", [
    ["train", "char_lstm.rnn", "--corpus", "empty.txt", "--target", "interp"],
    ["train", "char_lstm.rnn", "--corpus", "binary.bin", "--target", "interp"],
    ["train", "elman.rnn", "--corpus", "corpus.txt", "--target", "interp"],
    ["train", "char_lstm.rnn", "--corpus", "corpus.txt", "--max-chars", "3",
     "--target", "interp"],
    ["train", "char_lstm.rnn", "--corpus", "corpus.txt", "--batch", "1000",
     "--target", "interp"],
    ["train", "char_lstm.rnn", "--corpus", "corpus.txt", "--target", "interp",
     "--scheduler", "nowhere"],
    ["train", "char_lstm.rnn", "--corpus", "corpus.txt", "--target", "interp",
     "--workers", "2", "--batch", "1"],
    ["train", "char_lstm.rnn", "--corpus", "corpus.txt", "--target", "interp",
     "--workers", "1", "--scheduler", "tcp://h:1"],
    ["sample", "other.npz"], ["sample", "corpus.txt"], ["sample", "folder"],
    ["info", "binary.bin"], ["info", "folder"],
    ["sample", "model.npz", "--spec", "broken.rnn", "--target", "interp"],
    ["sample", "model.npz", "--spec", "elman.rnn", "--target", "interp"],
    ["check", "\x00"], ["build", "elman.rnn", "-o", "corpus.txt"],
    ["explain", "char_lstm.rnn", "--no-pass", "nope"],
    ["export", "elman.rnn", "--dims", "I=2,H=3", "-o", "e.onnx"],
    ["export", "elman.rnn", "--dims", "I=2,H=3,O=2", "-o", "corpus.txt"],
    ["export", "elman.rnn", "--dims", "I=2,H=3,O=2", "-o", "folder"],
    ["export", "broken.rnn", "--dims", "H=2", "-o", "b.onnx"],
    ["export", "elman.rnn", "--dims", "I=2,H=3,O=2", "-o", "e.onnx", "--params", "other.npz"],
])
def test_known_bad_invocations_exit_2(workdir, args):
    code, _, err = _main(workdir, args)
    assert code == 2, (args, code, err)
    assert "Traceback" not in err and "internal error" not in err
