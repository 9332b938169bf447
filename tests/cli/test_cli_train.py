"""`rnndsl train` and `rnndsl sample` end to end, in fresh processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rnndsl.train import checkpoint
REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "specs" / "char_lstm.rnn"
TEXT = "the cat sat on the mat. the dog sat on the log. " * 40


def rnndsl(*args, cwd):
    return subprocess.run([sys.executable, "-m", "rnndsl", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A few steps on a small text with the reference interpreter (fast to start)."""
    where = tmp_path_factory.mktemp("train")
    (where / "corpus.txt").write_text(TEXT)
    done = rnndsl("train", SPEC, "--corpus", "corpus.txt", "--dims", "H=8", "--steps", 4,
                  "--batch", 4, "--seq", 8, "--target", "interp", "--dtype", "float64",
                  "--checkpoint", "m.npz", "--sample-chars", 20, "--every", 2,
                  "--prime", "the ", cwd=where)
    assert done.returncode == 0, done.stderr
    return where, done


def test_train_reports_progress_validation_and_samples(trained):
    where, done = trained
    out = done.stdout
    assert "model: CharLSTM" in out and f"V={len(set(TEXT))}, H=8" in out   # V: the corpus
    assert "trained 4 steps" in out
    bpc = float(out.split("validation: ")[1].split(" bits/char")[0])
    assert 0 < bpc < 8
    assert "--- sample at temperature 0.5 ---\nthe " in out
    assert "--- sample at temperature 1.0 ---" in out
    assert "step 1 |" in done.stderr and "chars/s" in done.stderr and "left" in done.stderr


def test_checkpoint_carries_spec_hash_vocab_and_trainer_state(trained):
    where, _ = trained
    info = checkpoint.peek(where / "m.npz")
    assert info.cell == "CharLSTM" and info.dims == {"V": len(set(TEXT)), "H": 8}
    user = info.meta["user"]
    assert user["spec"] == str(SPEC) and user["position"]["chunk"] == 4
    assert len(user["history"]) == 4 and info.meta["trainer"]["steps"] == 4


def test_resume_continues_where_training_stopped(trained, tmp_path):
    where, _ = trained
    (tmp_path / "corpus.txt").write_text(TEXT)
    (tmp_path / "m.npz").write_bytes((where / "m.npz").read_bytes())
    done = rnndsl("train", SPEC, "--corpus", "corpus.txt", "--steps", 2, "--batch", 4,
                  "--seq", 8, "--target", "interp", "--dtype", "float64",
                  "--checkpoint", "m.npz", "--resume", "--sample-chars", 5, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "resuming at step 4" in done.stdout
    info = checkpoint.peek(tmp_path / "m.npz")
    assert info.meta["trainer"]["steps"] == 6 and info.meta["user"]["position"]["chunk"] == 6


def test_sample_generates_from_the_checkpoint(trained):
    where, _ = trained
    done = rnndsl("sample", "m.npz", "--prime", "the ", "--length", 30, "-n", 2,
                  "--target", "interp", "--seed", 3, cwd=where)
    assert done.returncode == 0, done.stderr
    samples = done.stdout.split("---\n")
    assert len([s for s in samples if s.strip()]) == 2
    assert all(s.startswith("the ") and len(s.rstrip("\n")) == 34 for s in samples if s)
    again = rnndsl("sample", "m.npz", "--prime", "the ", "--length", 30, "-n", 2,
                   "--target", "interp", "--seed", 3, cwd=where)
    assert again.stdout == done.stdout                           # seeded: repeatable
    beam = rnndsl("sample", "m.npz", "--prime", "the", "--length", 5, "--beam", 3,
                  "--target", "interp", cwd=where)
    assert beam.returncode == 0, beam.stderr
    lines = beam.stdout.splitlines()
    scores = [float(line.split("]")[0].split()[-1]) for line in lines]
    assert len(lines) == 1 and scores == sorted(scores, reverse=True)


def test_a_changed_spec_is_refused(trained, tmp_path):
    where, _ = trained
    edited = tmp_path / "char_lstm.rnn"
    edited.write_text(SPEC.read_text().replace("b_y[V]", "b_y[V] ~ ones")
                      .replace('use "lstm.rnn"', f'use "{REPO / "specs" / "lstm.rnn"}"'))
    done = rnndsl("sample", where / "m.npz", "--spec", edited, "--target", "interp",
                  cwd=tmp_path)
    assert done.returncode == 2
    assert "was: param b_y[V]" in done.stderr and "now: param b_y[V] ~ ones" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("args, message", [
    (["--dims", "H=8,Q=2"], "has no dim Q"),
    (["--dims", "V=3,H=8"], "V is the vocabulary size"),
    (["--corpus", "missing.txt"], "no such file"),
])
def test_train_refuses_bad_arguments(tmp_path, args, message):
    (tmp_path / "corpus.txt").write_text(TEXT)
    done = rnndsl("train", SPEC, "--corpus", "corpus.txt", "--steps", 1, "--target",
                  "interp", *args, cwd=tmp_path)
    assert done.returncode == 2, done.stdout
    assert message in done.stderr and "Traceback" not in done.stderr


def test_a_cell_that_is_not_a_token_model_is_refused(tmp_path):
    (tmp_path / "corpus.txt").write_text(TEXT)
    done = rnndsl("train", REPO / "specs" / "two_streams.rnn", "--corpus", "corpus.txt",
                  "--steps", 1, "--target", "interp", cwd=tmp_path)
    assert done.returncode == 2
    assert "needs one token input and one logits output" in done.stderr


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
    (tmp_path / "corpus.txt").write_text(TEXT)
    done = rnndsl("train", SPEC, "--corpus", "corpus.txt", "--dims", "H=4", "--steps", 2,
                  "--batch", 2, "--seq", 4, "--target", "interp", "--plot", "loss.png",
                  "--sample-chars", 2, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_hot_training_data_matches_the_text(tmp_path):
    """The vocabulary is the corpus's sorted characters; V follows it."""
    from rnndsl.train.data import Vocab
    vocab = Vocab.from_text(TEXT)
    assert len(vocab) == len(set(TEXT)) == 14
    assert vocab.decode(vocab.encode("the cat")) == "the cat"
    assert np.all(np.diff(vocab.encode("".join(sorted(set(TEXT))))) == 1)
