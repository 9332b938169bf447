"""`rnndsl train` and `rnndsl sample` end to end, in fresh processes (the checks of
arguments in this one): training, validation during training and the best checkpoint,
the learning-rate schedule across --resume, and the cuda target under the simulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from rnndsl.cli.main import main
from rnndsl.train import checkpoint
from rnndsl.train.schedule import Cosine

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "specs" / "char_lstm.rnn"
TEXT = "the cat sat on the mat. the dog sat on the log. " * 40


def rnndsl(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "rnndsl", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=600, env=env)


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


def test_a_spec_of_another_cell_is_named_as_such(trained, tmp_path):
    where, _ = trained
    done = rnndsl("sample", where / "m.npz", "--spec", REPO / "specs" / "lstm.rnn",
                  "--target", "interp", cwd=tmp_path)
    assert done.returncode == 2
    assert "lstm.rnn gives cell LSTM, which is not the checkpoint's CharLSTM (V=" \
        in done.stderr and "LSTM has no dim V" in done.stderr
    assert "leave --spec out" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("args, message", [
    (["--dims", "H=8,Q=2"], "has no dim Q"),
    (["--dims", "V=3,H=8"], "V is the vocabulary size"),
    (["--corpus", "missing.txt"], "no such file"),
    (["--state-resets", "1.5"], "--state-resets: must be from 0 to 1"),
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


# ------------------------------------------------------------------ validation, best
def _validation_lines(out: str) -> list[tuple[int, float]]:
    lines = [line for line in out.splitlines() if line.startswith("validation at step ")]
    return [(int(line.split()[3].rstrip(":")), float(line.split()[4])) for line in lines]


@pytest.fixture(scope="module")
def validated(tmp_path_factory):
    """Six steps at a high constant lr, validated after each: the validation falls, then
    rises (seeded, float64: the same every time), so the best is not the last."""
    where = tmp_path_factory.mktemp("validated")
    (where / "corpus.txt").write_text(TEXT)
    done = rnndsl("train", SPEC, "--corpus", "corpus.txt", "--dims", "H=8", "--steps", 6,
                  "--batch", 4, "--seq", 8, "--target", "interp", "--dtype", "float64",
                  "--lr", 0.2, "--lr-schedule", "constant", "--warmup", 0,
                  "--val-every", 1, "--checkpoint", "m.npz", "--sample-chars", 0,
                  "--json", "run.json", cwd=where)
    assert done.returncode == 0, done.stderr
    return where, done, json.loads((where / "run.json").read_text())


def test_val_every_prints_each_validation_and_the_json_keeps_the_history(validated):
    _, done, summary = validated
    printed = _validation_lines(done.stdout)
    history = [tuple(h) for h in summary["validation_history"]]
    assert [step for step, _ in printed] == [step for step, _ in history] == [1, 2, 3, 4, 5, 6]
    assert [round(bpc, 3) for _, bpc in history] == [bpc for _, bpc in printed]
    assert summary["validation_bits_per_char"] == history[-1][1]     # the last, not redone
    assert all(0 < bpc < 8 for _, bpc in history)


def test_the_best_checkpoint_holds_the_best_validation(validated):
    where, done, summary = validated
    history = summary["validation_history"]
    step, bpc = min(history, key=lambda h: h[1])
    assert step != 6, ("the validation no longer rises at the end of this run; pick "
                       f"settings under which it does: {history}")
    best = summary["best_checkpoint"]
    assert best["path"] == "m.best.npz" and (best["step"], best["bits_per_char"]) == (step, bpc)
    assert f"best: {bpc:.3f} bits/char at step {step}; checkpoint: m.best.npz" in done.stdout
    info = checkpoint.peek(where / "m.best.npz")
    assert info.meta["trainer"]["steps"] == step
    assert info.meta["user"]["validation"] == {"bits_per_char": bpc, "step": step,
                                               "chars": summary["validation_chars"]}
    # its params are the ones that validated so: validate them again
    from rnndsl.cli.train import _validate
    from rnndsl.train.data import Vocab, split
    from rnndsl.train.trainer import Trainer
    cell = checkpoint.cell_class(info, target="interp")(dtype=np.float64, **info.dims)
    checkpoint.load(where / "m.best.npz", cell)
    vocab = Vocab.from_json(info.meta["user"]["vocab"])
    val_ids = split(vocab.encode(TEXT), 0.05)[1][:50_001]
    again = _validate(Trainer(cell), vocab, val_ids, SimpleNamespace(batch=4, seq=8),
                      np.float64)
    assert again == pytest.approx(bpc, rel=1e-12)
    last = checkpoint.peek(where / "m.npz")
    assert last.meta["trainer"]["steps"] == 6
    assert last.meta["user"]["validation"]["bits_per_char"] == history[-1][1]


def test_sample_reads_the_best_checkpoint(validated):
    where, _, _ = validated
    done = rnndsl("sample", "m.best.npz", "--prime", "the ", "--length", 8,
                  "--target", "interp", cwd=where)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("the ") and len(done.stdout.rstrip("\n")) == 12


def test_validating_leaves_the_training_as_it_was(tmp_path):
    """The compiled kernels, where a forward could reuse what training holds: the same
    training losses with a validation after every step as without any."""
    (tmp_path / "corpus.txt").write_text(TEXT)
    runs = {}
    for every in (1, 0):
        done = rnndsl("train", SPEC, "--corpus", "corpus.txt", "--dims", "H=4", "--steps", 4,
                      "--batch", 2, "--seq", 4, "--target", "cpu", "--val-chars", 40,
                      "--val-every", every, "--checkpoint", f"v{every}.npz",
                      "--sample-chars", 0, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        runs[every] = checkpoint.peek(tmp_path / f"v{every}.npz").meta["user"]
    assert len(_validation_lines(done.stdout)) == 0
    assert runs[1]["history"] == runs[0]["history"] and len(runs[1]["history"]) == 4
    assert runs[1]["validation"] == runs[0]["validation"]
    assert len(runs[1]["val_history"]) == 4 and len(runs[0]["val_history"]) == 1
    assert not (tmp_path / "v0.best.npz").exists() and (tmp_path / "v1.best.npz").is_file()


# ------------------------------------------------------------------ the lr schedule
def _interrupt(path: Path, progress: float) -> None:
    """Make a finished run's checkpoint look like one stopped at `progress` of its
    budget, as Ctrl-C leaves it (the trainer saves how far its run was)."""
    from rnndsl.train.optim import Adam
    from rnndsl.train.trainer import Trainer
    info = checkpoint.peek(path)
    cell = checkpoint.cell_class(info, target="interp")(dtype=np.float64, **info.dims)
    trainer = Trainer(cell, optimizer=Adam())
    user = trainer.load(path)
    trainer.progress = progress
    trainer.save(path, meta=user)


def test_resume_continues_the_lr_schedule_and_restarts_a_finished_one(tmp_path):
    (tmp_path / "corpus.txt").write_text(TEXT)
    common = ["--corpus", "corpus.txt", "--batch", 4, "--seq", 8, "--target", "interp",
              "--dtype", "float64", "--warmup", 2, "--lr-floor", 0.2, "--val-every", 0,
              "--checkpoint", "m.npz", "--sample-chars", 0, "--json", "run.json"]
    done = rnndsl("train", SPEC, "--dims", "H=4", "--steps", 4, *common, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    first = json.loads((tmp_path / "run.json").read_text())["lr_schedule"]
    cosine = Cosine(warmup=2, floor=0.2)
    assert first["kind"] == "cosine" and first["progress"] == 1.0
    assert first["last_lr"] == pytest.approx(5e-3 * cosine(3, 3 / 4))
    _interrupt(tmp_path / "m.npz", 0.5)
    done = rnndsl("train", SPEC, "--steps", 2, "--resume", *common, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "resuming at step 4, 50% into its lr schedule" in done.stdout
    # the resumed budget covers the half that was left: progress 0.5, then 0.75
    resumed = json.loads((tmp_path / "run.json").read_text())["lr_schedule"]
    assert resumed["last_lr"] == pytest.approx(5e-3 * cosine(5, 0.75), rel=1e-12)
    trainer = checkpoint.peek(tmp_path / "m.npz").meta["trainer"]
    assert (trainer["steps"], trainer["schedule_start"], trainer["progress"]) == (6, 0, 1.0)
    done = rnndsl("train", SPEC, "--steps", 2, "--resume", *common, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "resuming at step 6, its lr schedule started afresh" in done.stdout
    again = json.loads((tmp_path / "run.json").read_text())["lr_schedule"]
    assert again["last_lr"] == pytest.approx(5e-3)         # warmed up again: the peak
    assert checkpoint.peek(tmp_path / "m.npz").meta["trainer"]["schedule_start"] == 6


@pytest.mark.parametrize("args, message", [
    (["--lr-schedule", "linear"], "argument --lr-schedule: invalid choice: 'linear'"),
    (["--lr-schedule", "step"], "--lr-schedule step needs --decay-every N"),
    (["--lr-schedule", "constant", "--lr-floor", "0.2"],
     "--lr-floor is a setting of --lr-schedule cosine"),
    (["--decay-every", "10"], "--decay-every is a setting of --lr-schedule step"),
    (["--lr-floor", "1.5"], "argument --lr-floor: must be from 0 to 1, got 1.5"),
    (["--lr-schedule", "step", "--decay-every", "5", "--decay-gamma", "0"],
     "argument --decay-gamma: must be above 0 and at most 1"),
    (["--warmup", "-1"], "argument --warmup: must be at least 0"),
    (["--val-every", "-1"], "argument --val-every: must be at least 0"),
    (["--val-every", "0", "--best", "b.npz"], "--best keeps the checkpoint that validates "
                                              "best during training: it needs --val-every"),
    (["--best", "m.npz", "--checkpoint", "m.npz"], "--best m.npz is the --checkpoint itself"),
    (["--best", "old.best.npz"], "old.best.npz exists (the best checkpoint of an earlier run)"),
])
def test_schedule_and_validation_options_are_checked_first(tmp_path, monkeypatch, capsys,
                                                           args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text(TEXT)
    (tmp_path / "old.best.npz").write_bytes(b"a best checkpoint")
    code = main(["train", str(SPEC), "--corpus", "corpus.txt", "--steps", "1", "--target",
                 "interp", *args])
    out, err = capsys.readouterr()
    assert code == 2, out
    assert message in err and "Traceback" not in err
    assert "compiling" not in out and not (tmp_path / "model.npz").exists()


def test_dry_run_states_the_schedule_and_the_validation(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text(TEXT)
    code = main(["train", str(SPEC), "--corpus", "corpus.txt", "--steps", "30", "--target",
                 "interp", "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert ("plan: train for 30 steps; adam at lr 0.005 (cosine to 0.1 x lr after a 50-step "
            "warm-up), gradient norm clipped to 5; each row starts afresh with probability "
            "0.03125 a step; validation every 200 steps and at the end, "
            "the best checkpoint kept in model.best.npz;") in out
    assert "note: the warm-up (50 steps) is not shorter than --steps 30" in out
    code = main(["train", str(SPEC), "--corpus", "corpus.txt", "--steps", "30", "--target",
                 "interp", "--dry-run", "--lr-schedule", "step", "--decay-every", "10",
                 "--warmup", "0", "--val-every", "0", "--state-resets", "0"])
    out, _ = capsys.readouterr()
    assert "adam at lr 0.005 (x 0.5 every 10 steps), " in out
    assert "; the state always carried;" in out
    assert "; validation at the end;" in out and "note:" not in out


# ------------------------------------------------------------------ the cuda target
def test_train_on_the_cuda_target_under_the_simulator(tmp_path):
    """Numba's CUDA simulator must be switched on before numba is imported: a fresh
    process with NUMBA_ENABLE_CUDASIM=1 (on a GPU, RNNDSL_REAL_GPU=1 runs it there)."""
    pytest.importorskip("numba_cuda")
    env = dict(os.environ)
    if os.environ.get("RNNDSL_REAL_GPU") != "1":
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    (tmp_path / "corpus.txt").write_text(TEXT)
    done = rnndsl("train", SPEC, "--corpus", "corpus.txt", "--max-chars", 200, "--dims", "H=4",
                  "--batch", 2, "--seq", 3, "--steps", 2, "--val-chars", 6, "--target", "cuda",
                  "--sample-chars", 0, "--checkpoint", "gpu.npz", "--json", "run.json",
                  cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "(V=14, H=4; 518 params; cuda, float32)" in done.stdout
    assert "trained 2 steps" in done.stdout
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["model"]["target"] == "cuda" and summary["total_steps"] == 2
    assert 0 < summary["validation_bits_per_char"] < 8
    info = checkpoint.peek(tmp_path / "gpu.npz")
    assert info.meta["trainer"]["steps"] == 2 and info.meta["user"]["target"] == "cuda"
    sampled = rnndsl("sample", "gpu.npz", "--length", 5, "--target", "interp", cwd=tmp_path)
    assert sampled.returncode == 0 and len(sampled.stdout.rstrip("\n")) == 5, sampled.stderr


# ------------------------------------------------------------------ no compile on the clock
TINY = """cell Tiny {{
  # {tag}: a module of its own, so that its kernels compile in this test
  dims V, H
  input token x[V]
  state h[H]
  param W[H, V], U[H, H], b[H], W_y[V, H], b_y[V]
  h' = tanh(W @ x + U @ h + b)
  output logits = W_y @ h' + b_y
}}
"""


def test_every_kernel_compiles_before_the_clock_starts(tmp_path, monkeypatch, capsys):
    """Training, validation and the closing samples run only kernels the warm-up made:
    none (the forward that validation and sampling run, with grad=False, included)
    compiles inside the time budget."""
    import uuid

    from numba.core import event

    import rnndsl.cli.train as train_cli
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text(TEXT)
    (tmp_path / "tiny.rnn").write_text(TINY.format(tag=uuid.uuid4().hex))
    phase = {"now": "before"}
    compiled = []
    warm_up = train_cli._warm_up

    def marked(*args, **kwargs):
        warm_up(*args, **kwargs)
        phase["now"] = "after"
    monkeypatch.setattr(train_cli, "_warm_up", marked)

    class Compiles(event.Listener):
        def on_start(self, ev):
            compiled.append((phase["now"], ev.data["dispatcher"].py_func.__name__))

        def on_end(self, ev):
            pass
    with event.install_listener("numba:compile", Compiles()):
        code = main(["train", "tiny.rnn", "--corpus", "corpus.txt", "--dims", "H=6",
                     "--steps", "4", "--batch", "2", "--seq", "5", "--val-every", "2",
                     "--sample-chars", "10", "--checkpoint", "m.npz"])
    out, err = capsys.readouterr()
    assert code == 0, err
    kernels = [(when, name) for when, name in compiled if name.endswith("_Tiny")]
    assert {name for _, name in kernels} >= {"forward_Tiny", "forward_inference_Tiny"}
    assert [name for when, name in kernels if when == "after"] == []


@pytest.mark.parametrize("decls, message", [
    ("input once x[V]\n  state h[V]\n  h' = tanh(x + h)\n  output logits = h'",
     "input x of C is `input once`, read once a sequence, but train feeds a token at "
     "every step: declare it `input token x[V]`"),
    ("input token x[V]\n  state h[V]\n  h' = tanh(x + h)\n  final logits = h'",
     "output logits of C is a final output, given once a sequence, but train needs the "
     "next token's logits at every step"),
])
def test_a_token_model_that_cannot_train_is_refused_before_it_starts(decls, message):
    """What --dry-run passed and the first step then refused (an `input once`, with the
    Python API's steps= in its message) or worded as a shape mismatch (a final output)."""
    from rnndsl.cli.train import TrainError, _token_dims
    from rnndsl.lang.specfile import read_spec
    text = f"cell C {{\n  dims V\n  {decls}\n}}\n"
    spec = read_spec("c.rnn", text=text).cells["C"]
    with pytest.raises(TrainError) as info:
        _token_dims(spec)
    assert str(info.value).startswith(message)
