"""What a user types at `rnndsl train | sample | info | gradcheck`: every mistake is
caught before work starts (exit 2, the option named), checkpoints are never overwritten
by accident, travel with their spec, and survive comments; Ctrl-C saves.

Most tests call `rnndsl.cli.main.main` in this process (the interp target: no compiling); the
ones about signals and folders run a real `python -m rnndsl`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rnndsl.train import checkpoint
from rnndsl.cli.main import main

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "specs" / "char_lstm.rnn"
TEXT = "the cat sat on the mat. the dog sat on the log. " * 40
SMALL = ["--dims", "H=4", "--batch", "2", "--seq", "4", "--target", "interp",
         "--dtype", "float64", "--sample-chars", "5"]


def run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """A working folder with a small corpus and a copy of the spec (and what it uses)."""
    (tmp_path / "corpus.txt").write_text(TEXT)
    for name in ("char_lstm.rnn", "lstm.rnn"):
        shutil.copy(REPO / "specs" / name, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RNNDSL_BLAS_THREADS", os.environ.get("RNNDSL_BLAS_THREADS", "1"))
    return tmp_path


def train(capsys, *extra, steps=2):
    return run(["train", "char_lstm.rnn", "--corpus", "corpus.txt", "--steps", steps,
                *SMALL, *extra], capsys)


# ------------------------------------------------------------------ arguments first
@pytest.mark.parametrize("args, option", [
    (["--steps", "0"], "--steps"),
    (["--steps", "-3"], "--steps"),
    (["--minutes", "-1"], "--minutes"),
    (["--minutes", "0"], "--minutes"),
    (["--minutes", "nan"], "--minutes"),
    (["--lr", "-1"], "--lr"),
    (["--clip", "-1"], "--clip"),
    (["--temperatures", "0"], "--temperatures"),
    (["--temperatures", "0.5,-1"], "--temperatures"),
    (["--sample-chars", "-1"], "--sample-chars"),
    (["--batch", "0"], "--batch"),
    (["--seq", "0"], "--seq"),
    (["--val", "1.5"], "--val"),
    (["--val", "0"], "--val"),
    (["--every", "-1"], "--every"),
    (["--max-chars", "0"], "--max-chars"),
    (["--dims", "H=0"], "--dims"),
    (["--dims", "H"], "--dims"),
    (["--threads", "0"], "--threads"),
])
def test_bad_train_arguments_exit_2_naming_the_option_before_any_work(folder, capsys,
                                                                       args, option):
    code, out, err = run(["train", "char_lstm.rnn", "--corpus", "corpus.txt", "--target",
                          "interp", *args], capsys)
    assert code == 2, (out, err)
    assert option in err and "Traceback" not in err and "internal error" not in err
    assert out == "" and not (folder / "model.npz").exists()      # nothing ran


@pytest.mark.parametrize("argv, option", [
    (["gradcheck", "-B", "-1", SPEC], "-B"),
    (["gradcheck", "-T", "0", SPEC], "-T"),
    (["gradcheck", "--tol", "-1", SPEC], "--tol"),
    (["gradcheck", "--dims", "H=-2", SPEC], "--dims"),
    (["graph", SPEC, "--unroll", "0"], "--unroll"),
    (["check", SPEC, "--dump-after", "unroll", "--unroll", "-1"], "--unroll"),
])
def test_bad_arguments_of_other_commands_exit_2(capsys, argv, option):
    code, out, err = run(argv, capsys)
    assert code == 2 and option in err and "internal error" not in err


def test_gradcheck_names_a_dim_the_spec_lacks(capsys):
    code, _, err = run(["gradcheck", SPEC, "--dims", "Q=3"], capsys)
    assert code == 2 and "has no dim Q" in err


def test_gradcheck_checks_a_cell_with_dropout_through_fixed_masks(tmp_path, capsys):
    """A spec with dropout(...) was refused: "Drop has no input 'dropout.1'" (the masks
    are the runtime's inputs). Its gradients are now checked, the masks drawn once."""
    spec = tmp_path / "drop.rnn"
    spec.write_text("cell Drop {\n  dims I, H\n  input x[I]\n  state h[H]\n"
                    "  param W[H, I], U[H, H]\n"
                    "  h' = tanh(W @ dropout(x, 0.3) + U @ dropout(h, 0.5))\n  output h'\n}\n")
    code, out, err = run(["gradcheck", spec, "-T", "4"], capsys)
    assert code == 0, err
    assert "dropout masks drawn once (seed 0)" in out
    assert "passed: 4 gradients" in out


def test_gradcheck_checks_a_learned_start_and_a_token_input_into_a_layer(tmp_path,
                                                                           capsys):
    """A state started from a param (`state m[H] = m0`) was given a random start, so
    m0's row compared 0 with 0 and said ok; a token input fed to a bidirectional layer
    made the network return a gradient for the ids, and gradcheck an internal error."""
    spec = tmp_path / "starts.rnn"
    spec.write_text("cell Starts {\n  dims I, H\n  input x[I]\n  state m[H] = m0, h[H]\n"
                    "  param W[H, I], U[H, H], m0[H]\n  m' = tanh(W @ x + U @ m)\n"
                    "  h' = tanh(U @ h + m')\n  output h'\n}\n")
    code, out, err = run(["gradcheck", spec], capsys)
    assert code == 0, err
    (m0,) = [line for line in out.splitlines() if line.strip().startswith("param m0")]
    assert "analytic +0.0000000000e+00" not in m0 and m0.endswith("ok")
    assert "state m " not in out and "state h" in out
    shutil.copy(REPO / "specs" / "lstm.rnn", tmp_path / "lstm.rnn")
    (tmp_path / "tok.rnn").write_text(
        'use "lstm.rnn"\ncell C {\n  dims V, H\n  input token x[V]\n'
        "  layer b = bidirectional LSTM(I = V, H = H)\n  param W[V, 2 * H]\n"
        "  output y = W @ b(x)\n}\n")
    code, out, err = run(["gradcheck", tmp_path / "tok.rnn"], capsys)
    assert code == 0, err
    assert "input x" not in out and "passed:" in out


def test_gradcheck_will_not_pass_a_check_of_nothing(tmp_path, capsys):
    """--inject state on a cell without states made every cotangent, and so every
    gradient, zero: it "passed" having checked nothing."""
    spec = tmp_path / "head.rnn"
    spec.write_text("cell Head {\n  dims H, K\n  input h[H]\n  param W[K, H], b[K]\n"
                    "  output p = softmax(W @ h + b)\n}\n")
    code, out, err = run(["gradcheck", spec, "--inject", "state"], capsys)
    assert code == 2 and out == ""
    assert "--inject state: Head has no states" in err and "nothing checked" in err
    code, out, _ = run(["gradcheck", spec, "--inject", "outputs"], capsys)
    assert code == 0 and "passed: 3 gradients" in out


def test_dims_too_large_to_allocate_are_a_user_error(capsys):
    code, _, err = run(["gradcheck", SPEC, "--dims", "H=1000000000"], capsys)
    assert code == 2 and "GiB, more than this machine can allocate" in err
    assert "internal error" not in err


def test_temperatures_and_prime_are_checked_before_training(folder, capsys):
    code, out, err = train(capsys, "--prime", "xyzq")
    assert code == 2 and "'q'" in err and "'x'" in err and "never saw" in err
    assert "compiling" not in out and not (folder / "model.npz").exists()


def test_sample_chars_0_means_no_samples(folder, capsys):
    code, out, err = train(capsys, "--sample-chars", "0")
    assert code == 0, err
    assert "validation:" in out and "--- sample" not in out


def test_clip_0_switches_clipping_off(folder, capsys):
    code, out, err = train(capsys, "--clip", "0")
    assert code == 0, err


def test_a_corpus_folder_is_named_as_a_folder(folder, capsys):
    (folder / "texts").mkdir()
    code, _, err = run(["train", "char_lstm.rnn", "--corpus", "texts", "--target", "interp"],
                       capsys)
    assert code == 2 and "is a folder" in err and "no such file" not in err
    code, _, err = run(["train", "char_lstm.rnn", "--corpus", "", "--target", "interp"],
                       capsys)
    assert code == 2 and "--corpus is empty" in err, err


def test_a_corpus_that_is_not_utf8_is_placed_at_line_and_column(folder, capsys):
    """As a spec's would be: file:line:col, the column in characters (é is one)."""
    (folder / "latin1.txt").write_bytes("café ok\nnaïve ".encode() + b"\xe9t\xe9\n")
    code, _, err = run(["train", "char_lstm.rnn", "--corpus", "latin1.txt", "--target",
                        "interp"], capsys)
    assert code == 2 and "--corpus latin1.txt:2:7: not UTF-8 text" in err, err


# ------------------------------------------------------------------ never destroy work
def test_train_refuses_to_overwrite_a_checkpoint_without_resume_or_force(folder, capsys):
    assert train(capsys)[0] == 0
    before = (folder / "model.npz").read_bytes()
    code, out, err = train(capsys)
    assert code == 2 and "--resume" in err and "--force" in err
    assert (folder / "model.npz").read_bytes() == before
    code, out, err = train(capsys, "--force")
    assert code == 0, err
    assert checkpoint.peek("model.npz").meta["trainer"]["steps"] == 2   # afresh


def test_resume_with_other_dims_names_both(folder, capsys):
    assert train(capsys)[0] == 0
    code, _, err = train(capsys, "--resume", "--dims", "H=6")
    assert code == 2 and "H=4" in err and "H=6" in err


def test_the_validation_counts_the_chars_it_scores(folder, capsys, monkeypatch):
    """From an outside review: "validation: ... over N chars" counted the held-out text
    less one, where the rows of truncated BPTT leave up to rows - 1 of them unread."""
    from rnndsl.train import Trainer
    scored, real = [], Trainer.evaluate

    def counted(self, x, y, *args, **kwargs):
        scored.append(np.asarray(y).size)
        return real(self, x, y, *args, **kwargs)
    monkeypatch.setattr(Trainer, "evaluate", counted)
    code, out, err = train(capsys, "--batch", "7", "--seq", "4", "--json", "run.json",
                           "--val-every", "0")
    assert code == 0, err
    said = int(out.split("validation: ")[1].split(" over ")[1].split()[0].replace(",", ""))
    assert said == sum(scored) == json.loads((folder / "run.json").read_text())[
        "validation_chars"]
    held_out = int(out.split(" chars to train on, ")[1].split()[0].replace(",", ""))
    assert said < held_out                     # 7 rows leave some of the text unread


def test_a_best_record_counted_the_old_way_is_still_the_best(folder, capsys):
    """A best checkpoint written before validations counted the chars they score
    recorded the held-out text less one; a resumed run must still compare with it (not
    replace a better model by a worse one)."""
    from rnndsl.train import Trainer
    code, out, err = train(capsys, "--batch", "7", "--val-every", "1")
    assert code == 0, err
    held_out = int(out.split(" chars to train on, ")[1].split()[0].replace(",", ""))
    info = checkpoint.peek("model.best.npz")
    cell = checkpoint.cell_class(info, target="interp")(dtype=np.float64, **info.dims)
    trainer = Trainer(cell)
    user = trainer.load("model.best.npz")
    assert user["validation"]["chars"] < held_out          # 7 rows leave some unread
    user["validation"] = dict(user["validation"], bits_per_char=0.001, chars=held_out)
    trainer.save("model.best.npz", meta=user)              # as an earlier rnndsl counted
    before = (folder / "model.best.npz").read_bytes()
    code, out, err = train(capsys, "--resume", "--val-every", "1", "--batch", "7")
    assert code == 0, err
    assert (folder / "model.best.npz").read_bytes() == before     # 0.001 bits/char stays


def test_resume_keeps_the_first_runs_validation_text(folder, capsys):
    """--val is kept with the checkpoint: a resumed run validates on the same held-out
    text, and another --val (which would validate on trained text) is refused."""
    code, out, err = train(capsys, "--val", "0.3")
    assert code == 0, err
    first = out.split("validation: ")[1].split("\n")[0]
    code, out, err = train(capsys, "--resume")
    assert code == 0, err
    again = out.split("validation: ")[1].split("\n")[0]
    assert again.split(" over ")[1] == first.split(" over ")[1]       # "575 chars"
    code, _, err = train(capsys, "--resume", "--val", "0.1")
    assert code == 2 and "--val 0.3" in err and "--val 0.1" in err


def test_resume_keeps_the_first_runs_batch_and_seq(folder, capsys):
    """--batch and --seq are kept with the checkpoint: left out, a resumed run cuts the
    corpus as the first did and carries on where it stopped (it used to fall back to
    the defaults, 32 x 64, and start a new epoch); another value is refused."""
    assert train(capsys)[0] == 0                                # --batch 2 --seq 4
    bare = ["train", "char_lstm.rnn", "--corpus", "corpus.txt", "--steps", 2, "--target",
            "interp", "--dtype", "float64", "--sample-chars", 5, "--resume"]
    code, out, err = run(bare, capsys)
    assert code == 0, err
    assert "batch 2 x 4 steps" in out and "resuming at step 2" in out
    assert checkpoint.peek("model.npz").meta["user"]["position"]["chunk"] == 4
    for option, value, kept in (("--batch", 3, "--batch 2"), ("--seq", 8, "--seq 4")):
        code, _, err = run([*bare, option, value], capsys)
        assert code == 2 and kept in err and f"{option} {value}" in err, err


def test_resume_continues_and_resume_without_checkpoint_starts_afresh(folder, capsys):
    code, out, _ = train(capsys, "--resume")             # nothing to resume: a new model
    assert code == 0 and "resuming" not in out
    code, out, err = train(capsys, "--resume", "--dims", "H=4")   # same dims: fine
    assert code == 0, err
    assert "resuming at step 2" in out
    assert checkpoint.peek("model.npz").meta["trainer"]["steps"] == 4


def test_a_checkpoint_saved_by_the_python_api_resumes_from_the_corpus_start(folder,
                                                                           capsys):
    """From an outside review: a checkpoint that examples/char_model.py --save wrote (the
    Trainer's save, with a vocabulary but no place in the corpus) was `internal error:
    KeyError: 'position'` at --resume."""
    from rnndsl.train import Trainer
    assert train(capsys)[0] == 0
    info = checkpoint.peek("model.npz")
    cell = checkpoint.cell_class(info, target="interp")(dtype=np.float64, **info.dims)
    trainer = Trainer(cell)
    user = trainer.load("model.npz")
    trainer.save("api.npz", meta={k: user[k] for k in ("spec", "cell", "target", "vocab",
                                                       "corpus", "corpus_sha256", "x", "y")})
    code, out, err = train(capsys, "--resume", "--checkpoint", "api.npz", "--dry-run")
    assert code == 0, err
    assert "resuming at step 2, its lr schedule started afresh; from the corpus's start " \
           "(the checkpoint holds no place in it)" in out
    code, out, err = train(capsys, "--resume", "--checkpoint", "api.npz")
    assert code == 0, err
    assert checkpoint.peek("api.npz").meta["trainer"]["steps"] == 4
    assert checkpoint.peek("api.npz").meta["user"]["position"]["chunk"] > 0


def test_dry_run_checks_and_writes_nothing(folder, capsys):
    code, out, err = train(capsys, "--dry-run", "--json", "run.json")
    assert code == 0, err
    assert "dry run" in out and "plan: train for 2 steps" in out
    assert not (folder / "model.npz").exists() and not (folder / "run.json").exists()
    code, _, err = train(capsys, "--dry-run", "--corpus", "missing.txt")
    assert code == 2 and "no such file" in err


def test_one_of_a_kind_is_singular(folder, capsys):
    code, out, err = train(capsys, "--dry-run", "--minutes", "1", steps=1)
    assert code == 0, err
    assert "plan: train for 1 minute or 1 step (whichever comes first)" in out


def test_json_summary_matches_the_closing_lines(folder, capsys):
    code, out, err = train(capsys, "--json", "run.json", "--temperatures", "0.7")
    assert code == 0, err
    summary = json.loads((folder / "run.json").read_text())
    trained = next(line for line in out.splitlines() if line.startswith("trained "))
    assert trained.startswith(f"trained {summary['steps']} steps ({summary['chars']:,} chars)")
    assert trained.endswith(f"checkpoint: {summary['checkpoint']}")
    validation = next(line for line in out.splitlines() if line.startswith("validation:"))
    assert f"{summary['validation_bits_per_char']:.3f} bits/char" in validation
    assert [s["temperature"] for s in summary["samples"]] == [0.7]
    assert summary["samples"][0]["text"] in out


def test_threads_option_sets_the_kernels_threads(folder, capsys, monkeypatch):
    monkeypatch.delenv("RNNDSL_BLAS_THREADS", raising=False)
    code, _, err = train(capsys, "--threads", "1", "--dry-run")
    assert code == 0, err
    assert os.environ["RNNDSL_BLAS_THREADS"] == "1"


@pytest.mark.parametrize("extra, message", [
    (["--json", "m.npz"], "--json m.npz is a checkpoint"),
    (["--json", "m.best.npz"], "--json m.best.npz is a checkpoint"),
    (["--json", "other.npz"], "--json other.npz is a checkpoint"),
])
def test_json_never_replaces_a_checkpoint(folder, capsys, extra, message):
    """`--json model.npz` on a resumed run replaced the model just trained with a JSON
    file; another run's checkpoint was replaced as silently."""
    assert train(capsys, "--checkpoint", "m.npz", "--val-every", "1")[0] == 0
    assert train(capsys, "--checkpoint", "other.npz")[0] == 0
    before = {p.name: p.read_bytes() for p in folder.glob("*.npz")}
    assert "m.best.npz" in before
    code, _, err = train(capsys, "--checkpoint", "m.npz", "--resume", *extra)
    assert code == 2 and message in err, err
    assert {p.name: p.read_bytes() for p in folder.glob("*.npz")} == before


def test_json_goes_to_standard_output_or_through_a_link(folder, capsys):
    code, out, err = train(capsys, "--json", "-")
    assert code == 0, err
    # standard output holds the JSON alone (the report and samples were printed before
    # it, and a sample of Python holds braces); the report goes to standard error
    assert json.loads(out)["steps"] == 2
    assert "model: CharLSTM" in err and "validation:" in err
    (folder / "real.json").write_text("")
    (folder / "link.json").symlink_to(folder / "real.json")
    code, out, err = train(capsys, "--json", "link.json", "--force")
    assert code == 0, err
    assert (folder / "link.json").is_symlink()            # written through, not replaced
    assert json.loads((folder / "real.json").read_text())["steps"] == 2


def test_resume_continues_the_optimiser_lr_and_schedule_unless_given(folder, capsys):
    """A run trained with --optimizer sgd could not be resumed without repeating it
    (its state is SGD's), and --lr, --clip and the schedule fell back to the defaults."""
    first = ["--optimizer", "sgd", "--lr", "0.02", "--lr-schedule", "constant", "--warmup",
             "0", "--clip", "1"]
    assert train(capsys, "--checkpoint", "m.npz", *first)[0] == 0
    code, out, err = train(capsys, "--checkpoint", "m.npz", "--resume", "--dry-run")
    assert code == 0, err
    assert "sgd at lr 0.02 (constant), gradient norm clipped to 1" in out
    code, out, err = train(capsys, "--checkpoint", "m.npz", "--resume", "--lr", "0.001",
                           "--dry-run")
    assert code == 0 and "sgd at lr 0.001 (constant)" in out, err
    code, _, err = train(capsys, "--checkpoint", "m.npz", "--resume", "--optimizer", "adam")
    assert code == 2 and "trained with --optimizer sgd" in err, err


def test_a_resumed_run_keeps_the_checkpoints_dtype(folder, capsys):
    """A float64 checkpoint resumed without --dtype was continued, and saved, in float32
    (the option's default), silently; another --dtype given is refused, as --dims are."""
    assert train(capsys, "--checkpoint", "m.npz")[0] == 0          # SMALL: float64
    without_dtype = [a for a in SMALL if a not in ("--dtype", "float64")]
    code, out, err = run(["train", "char_lstm.rnn", "--corpus", "corpus.txt", "--steps", 1,
                          *without_dtype, "--checkpoint", "m.npz", "--resume"], capsys)
    assert code == 0, err
    assert "interp, float64)" in out and checkpoint.peek("m.npz").dtype == "float64"
    code, out, err = run(["train", "char_lstm.rnn", "--corpus", "corpus.txt", "--steps", 1,
                          *without_dtype, "--dtype", "float32", "--checkpoint", "m.npz",
                          "--resume"], capsys)
    assert code == 2 and "a float64 model, but --dtype asks for float32" in err, err


def test_force_takes_the_replaced_runs_best_checkpoint_with_it(folder, capsys):
    """train --force --val-every 0 over an earlier run left its m.best.npz beside the new
    m.npz: a 'best' model of another run, which `rnndsl sample m.best.npz` would use."""
    assert train(capsys, "--checkpoint", "m.npz", "--val-every", "1")[0] == 0
    assert (folder / "m.best.npz").is_file()
    code, out, err = train(capsys, "--checkpoint", "m.npz", "--val-every", "0", "--force")
    assert code == 0, err
    assert "removed m.best.npz, the best checkpoint of the run --force replaced" in out
    assert not (folder / "m.best.npz").exists() and (folder / "m.npz").is_file()
    # a run that writes its own best keeps it
    assert train(capsys, "--checkpoint", "m.npz", "--val-every", "1", "--force")[0] == 0
    code, out, err = train(capsys, "--checkpoint", "m.npz", "--val-every", "1", "--force")
    assert code == 0 and "removed" not in out and (folder / "m.best.npz").is_file()
    assert checkpoint.peek(folder / "m.best.npz").meta["trainer"]["steps"] <= 2


def test_a_second_ctrl_c_stops_at_once(monkeypatch):
    """The README: Ctrl-C finishes the step under way and saves; a second one stops at
    once (a KeyboardInterrupt out of the step, before any save), and leaving restores
    the handler that was there."""
    from rnndsl.cli.train import _StopAtStepEnd
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with _StopAtStepEnd() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)                       # the handler runs between bytecodes
            assert stop.asked                      # the first: asked to stop, no raise
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            pytest.fail("the second Ctrl-C did not stop the run")
    assert signal.getsignal(signal.SIGINT) is before


def test_options_are_spelt_in_full(folder, capsys):
    """An abbreviation (--batc for --batch) slipped past resume's check of which options
    were given; options are now spelt in full."""
    assert train(capsys, "--checkpoint", "m.npz")[0] == 0
    code, _, err = train(capsys, "--checkpoint", "m.npz", "--resume", "--batc", "3")
    assert code == 2 and "unrecognized arguments: --batc 3" in err, err


def test_a_damaged_header_is_named_not_an_internal_error(folder, capsys):
    assert train(capsys, "--checkpoint", "m.npz")[0] == 0
    arrays = dict(np.load(folder / "m.npz"))
    header = json.loads(arrays["__header__"].tobytes())
    version, header["format_version"] = header["format_version"], "two"
    arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(folder / "bad.npz", **arrays)
    code, _, err = run(["info", "bad.npz"], capsys)
    assert code == 2 and "format_version is 'two'" in err, err
    # a vocabulary that is no list of tokens was an internal error (TypeError) in info,
    # sample and train --resume
    header["format_version"] = version
    vocab = json.loads(header["meta"]["user"]["vocab"])
    header["meta"]["user"]["vocab"] = json.dumps({**vocab, "tokens": 5})
    arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    np.savez(folder / "bad.npz", **arrays)
    for argv in (["info", "bad.npz"], ["sample", "bad.npz", "--length", "3"]):
        code, _, err = run(argv, capsys)
        assert code == 2 and "bad.npz is corrupt: its vocabulary cannot be read" in err, err


def test_text_the_terminal_cannot_encode_is_escaped(folder, capsys):
    """A corpus of any symbols, printed where stdout is latin-1 (a Windows console, a
    file under another locale): escaped, not an internal error after the work."""
    (folder / "u.txt").write_text("".join(f"日本語 {i}\n" for i in range(200)))
    assert run(["train", "char_lstm.rnn", "--corpus", "u.txt", "--steps", "2", *SMALL,
                "--checkpoint", "u.npz"], capsys)[0] == 0
    done = subprocess.run([sys.executable, "-m", "rnndsl", "sample", "u.npz", "--target",
                           "interp", "--length", "30", "--prime", "日"], cwd=folder,
                          capture_output=True, env=dict(os.environ, PYTHONIOENCODING="latin-1"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"\\u65e5")


def test_an_export_of_another_cells_checkpoint_names_the_cell(folder, capsys):
    pytest.importorskip("onnx")
    assert train(capsys, "--checkpoint", "m.npz")[0] == 0
    code, _, err = run(["export", "lstm.rnn", "-o", "x.onnx", "--params", "m.npz"], capsys)
    assert code == 2 and "holds a CharLSTM" in err and "--dims" not in err, err


# ------------------------------------------------------------------ checkpoints travel
LINES = "".join(f"line {i}: the cat sat on the mat.\n" for i in range(120))


def test_sample_without_prime_continues_the_held_out_lines_as_train_did(folder, capsys):
    """A model trained with its state carried starts badly from nothing (the main job's
    fell into runs of spaces): train's closing samples continue whole lines of held-out
    text, which the checkpoint now carries, and `rnndsl sample` without --prime starts
    there too: the same text as train's sample at the same temperature and seed. With
    --prime '' it starts from a line break, as a checkpoint without those lines does."""
    (folder / "lines.txt").write_text(LINES)
    code, out, err = run(["train", "char_lstm.rnn", "--corpus", "lines.txt", "--steps", 2,
                          *SMALL, "--checkpoint", "m.npz", "--temperatures", "0.5",
                          "--sample-chars", "16", "--seed", "3", "--json", "s.json"], capsys)
    assert code == 0, err
    trained = json.loads((folder / "s.json").read_text())["samples"][0]
    held_out = trained["prime"]
    assert held_out.count("\n") > 2 and held_out in LINES

    base = ["sample", "m.npz", "--target", "interp", "--length", "16", "--temperature",
            "0.5", "--seed", "3"]
    code, out, err = run(base, capsys)
    assert code == 0, err
    assert out == trained["text"] + "\n"              # the held-out lines not printed
    lines = held_out.count("\n") - 1
    assert f"continuing {lines} whole lines of held-out text" in err
    code, info, err = run(["info", "m.npz"], capsys)
    assert code == 0 and f"samples start from: {lines} whole lines" in info, err

    # a beam's log-probability tells the starts apart, however little the model learnt
    beam = ["sample", "m.npz", "--target", "interp", "--length", "6", "--beam", "2"]
    code, out, err = run(beam, capsys)
    code, given, err = run(beam + ["--prime", held_out], capsys)
    assert code == 0 and out == given.replace(held_out, ""), err
    code, cold, err = run(beam + ["--prime", ""], capsys)
    assert code == 0 and "held-out" not in err, err
    header = checkpoint.peek(folder / "m.npz")
    meta = header.meta
    del meta["user"]["held_out_prime"]                 # as rnndsl train wrote it before
    cell = checkpoint.cell_class(header, target="interp")(dtype=np.float64, **header.dims)
    checkpoint.load(folder / "m.npz", cell)
    checkpoint.save(folder / "old.npz", cell, meta=meta)
    code, old, err = run(["sample", "old.npz", *beam[2:]], capsys)
    assert code == 0 and "held-out" not in err, err
    assert old == cold and _log_probs(cold) != _log_probs(out)


def _log_probs(beams: str) -> list[str]:
    return [line.split("]")[0] for line in beams.splitlines() if line.startswith("[log-prob")]


def test_sample_works_from_another_folder_after_the_spec_is_deleted(folder, capsys,
                                                                   tmp_path_factory,
                                                                   monkeypatch):
    assert train(capsys, "--checkpoint", "m.npz")[0] == 0
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    shutil.move(folder / "m.npz", elsewhere / "m.npz")
    (folder / "char_lstm.rnn").unlink()
    (folder / "lstm.rnn").unlink()
    monkeypatch.chdir(elsewhere)
    code, out, err = run(["sample", "m.npz", "--target", "interp", "--length", "10",
                          "--prime", "the "], capsys)
    assert code == 0, err
    assert out.startswith("the ") and len(out.rstrip("\n")) == 14


def test_a_comment_or_new_layout_keeps_a_checkpoint_loadable(folder, capsys):
    assert train(capsys, "--checkpoint", "m.npz")[0] == 0
    spec = folder / "char_lstm.rnn"
    spec.write_text("# a comment added after training\n" + spec.read_text()
                    .replace("param W_y[V, H], b_y[V]", "param W_y[V, H],   b_y[V]  # out"))
    code, out, err = run(["sample", "m.npz", "--spec", spec, "--target", "interp",
                          "--length", "5"], capsys)
    assert code == 0, err
    code, out, err = train(capsys, "--checkpoint", "m.npz", "--resume")
    assert code == 0 and "resuming at step 2" in out, err


def test_a_real_change_is_refused_naming_what_changed(folder, capsys):
    assert train(capsys, "--checkpoint", "m.npz")[0] == 0
    spec = folder / "char_lstm.rnn"
    spec.write_text(spec.read_text().replace("W_y @ h2 + b_y", "W_y @ h1 + b_y"))
    code, _, err = run(["sample", "m.npz", "--spec", spec, "--target", "interp"], capsys)
    assert code == 2
    assert "was: output logits = W_y @ h2 + b_y" in err
    assert "now: output logits = W_y @ h1 + b_y" in err
    code, _, err = train(capsys, "--checkpoint", "m.npz", "--resume")
    assert code == 2 and "W_y @ h1" in err


def test_a_checkpoint_uses_its_own_text_not_a_shipped_spec_of_that_name(folder, capsys):
    """The carried text wins: a changed lstm.rnn next to the checkpoint is not read."""
    assert train(capsys, "--checkpoint", "m.npz")[0] == 0
    lstm = folder / "lstm.rnn"
    lstm.write_text(lstm.read_text().replace("b_f[H] ~ ones", "b_f[H] ~ zeros"))
    code, _, err = run(["sample", "m.npz", "--target", "interp", "--length", "5"], capsys)
    assert code == 0, err


def test_sample_refuses_other_npz_files_clearly(folder, capsys):
    np.savez(folder / "weights.npz", a=np.array([{"x": 1}], dtype=object))
    code, _, err = run(["sample", "weights.npz"], capsys)
    assert code == 2 and "not an rnndsl checkpoint" in err and "allow_pickle" not in err
    cell = __import__("rnndsl").load(folder / "lstm.rnn", target="interp")(I=2, H=3)
    checkpoint.save(folder / "bare.npz", cell)
    code, _, err = run(["sample", "bare.npz"], capsys)
    assert code == 2 and "not written by rnndsl train" in err


@pytest.mark.parametrize("argv, message", [
    (["--beam", "0"], "--beam"),
    (["-n", "0"], "-n"),
    (["--length", "0"], "--length"),
    (["--temperature", "0"], "--temperature"),
    (["--top-p", "1.5"], "--top-p"),
    (["--beam", "2", "--greedy"], "--beam"),
    (["--prime", "Q"], "never saw: 'Q'"),
    (["--top-k", "1000"], "--top-k"),
    (["--beam", "2", "-n", "3"], "-n 3 is more than --beam 2"),
])
def test_bad_sample_arguments_exit_2(folder, capsys, argv, message):
    assert train(capsys, "--checkpoint", "m.npz")[0] == 0
    code, _, err = run(["sample", "m.npz", "--target", "interp", *argv], capsys)
    assert code == 2 and message in err, err
    assert "Python" not in err        # CLI advice, not the Python API's


def test_info_shows_what_a_checkpoint_holds(folder, capsys):
    assert train(capsys, "--checkpoint", "m.npz")[0] == 0
    code, out, err = run(["info", "m.npz"], capsys)
    assert code == 0, err
    assert "CharLSTM(V=14, H=4)" in out and "trained: 2 steps on corpus.txt" in out
    assert "validation:" in out and "bits/char" in out
    assert "  | cell CharLSTM {" in out
    code, out, _ = run(["info", "m.npz", "--json"], capsys)
    report = json.loads(out)
    assert report["steps"] == 2 and report["dims"] == {"V": 14, "H": 4}
    assert report["spec_text"] == SPEC.read_text()
    assert report["validation"]["bits_per_char"] > 0


def test_huge_dims_are_refused_and_out_of_memory_names_the_commands_options(folder, capsys):
    """--dims H=10**20 was an internal error inside NumPy; out of memory in gradcheck
    advised --batch and --seq, which gradcheck has not."""
    code, _, err = run(["gradcheck", "lstm.rnn", "--dims", "I=2,H=99999999999999999999"],
                       capsys)
    assert code == 2 and "a size must be at most 2,147,483,647" in err, err
    (folder / "wide.rnn").write_text("cell Wide {\n  dims N\n  input x[N]\n"
                                     "  output a = tanh(x)\n}\n")      # no params to refuse
    code, _, err = run(["gradcheck", "wide.rnn", "--dims", "N=1000000000"], capsys)
    assert code == 2 and "out of memory" in err and "fewer rows (-B)" in err, err
    assert "--batch" not in err


# ------------------------------------------------------------------ gradcheck, compiled
def test_gradcheck_checks_the_compiled_kernels(capsys):
    code, out, err = run(["gradcheck", REPO / "specs" / "elman.rnn", "--target", "cpu",
                          "-T", "2"], capsys)
    assert code == 0, err
    assert "cpu target" in out and "passed:" in out


# ------------------------------------------------------------------ Ctrl-C
def test_ctrl_c_saves_a_checkpoint_and_prints_the_resume_command(folder):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    child = subprocess.Popen(
        [sys.executable, "-m", "rnndsl", "train", "char_lstm.rnn", "--corpus", "corpus.txt",
         "--minutes", "5", "--every", "0", "--checkpoint", "m.npz", *SMALL],
        cwd=folder, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen = ""
    deadline = time.monotonic() + 120
    while "running one step ..." not in seen and time.monotonic() < deadline:
        seen += child.stdout.readline()
    assert "running one step ..." in seen, seen      # the interpreter compiles nothing
    time.sleep(1.5)                  # a few steps into training
    child.send_signal(signal.SIGINT)
    out, err = child.communicate(timeout=120)
    out = seen + out
    assert child.returncode == 130, (out, err)
    assert "interrupted" in out and "--resume" in out and "Traceback" not in err
    steps = checkpoint.peek(folder / "m.npz").meta["trainer"]["steps"]
    assert steps >= 1 and f"trained {steps} steps" in out
    resume = out.split("resume with:")[1].strip().splitlines()[0]
    minutes = float(resume.split("--minutes ")[1].split()[0])   # what is left of 5
    assert resume.count("--minutes") == 1 and 4 < minutes < 5 and resume.endswith("--resume")


def test_the_resume_command_after_ctrl_c_ends_where_the_run_would_have(folder, capsys,
                                                                        monkeypatch):
    """From an outside review: the command printed after Ctrl-C repeated `--steps 7`,
    which with --resume means 7 more, and the lr schedule was stretched over them. It
    now gives what is left, and the resumed run ends with the uninterrupted one's
    params, bit for bit (float64, the interpreter)."""
    import shlex
    from rnndsl.cli import train as cli_train
    from rnndsl.train import Trainer
    assert train(capsys, "--checkpoint", "whole.npz", "--every", "0", steps=7)[0] == 0
    steps, real_step = [0], Trainer.step

    def counted(self, *args, **kwargs):
        steps[0] += 1
        return real_step(self, *args, **kwargs)
    with monkeypatch.context() as patched:
        patched.setattr(Trainer, "step", counted)
        patched.setattr(cli_train._StopAtStepEnd, "asked", property(lambda s: steps[0] >= 3))
        code, out, err = train(capsys, "--checkpoint", "cut.npz", "--every", "0", steps=7)
    assert code == 130, err
    resume = shlex.split(out.split("resume with:")[1].strip().splitlines()[0])
    assert resume[0] == "rnndsl" and resume.count("--steps") == 1
    assert resume[resume.index("--steps") + 1] == "4"
    code, out, err = run(resume[1:], capsys)
    assert code == 0, err
    whole, cut = (checkpoint._read(folder / name)[0]["params"] for name in ("whole.npz",
                                                                            "cut.npz"))
    assert whole.keys() == cut.keys()
    for name in whole:
        assert np.array_equal(whole[name], cut[name]), name


# ------------------------------------------------------------------ progress display
class _Terminal:
    """A stream that says it is a terminal, as stderr does in a shell."""

    def __init__(self):
        self.text = ""

    def isatty(self):
        return True

    def write(self, text):
        self.text += text

    def flush(self):
        pass


def test_progress_is_a_tqdm_bar_on_a_terminal_and_plain_lines_elsewhere():
    import io
    from rnndsl.cli.train import Progress
    tty = _Terminal()
    bar = Progress(total=1.0, stream=tty)
    bar.show(0.5, "step 7 | loss 1.000", force=True)
    bar.done()
    assert bar.tty and "50%|" in tty.text and "step 7 | loss 1.000" in tty.text
    log = io.StringIO()
    lines = Progress(total=1.0, stream=log, every=0.0)
    lines.show(0.25, "step 1 | loss 2.000")
    lines.show(0.5, "step 2 | loss 1.500")
    lines.done()
    assert log.getvalue() == "step 1 | loss 2.000\nstep 2 | loss 1.500\n"


# ------------------------------------------------------------------ shipped specs, files
def test_specs_lists_every_shipped_spec(capsys):
    code, out, err = run(["specs"], capsys)
    assert code == 0, err
    for path in sorted((REPO / "specs").glob("*.rnn")):
        assert any(line.startswith(path.name + " ") for line in out.splitlines()), path.name
    assert "cell LSTM(I, H): inputs x[I]; states h[H], c[H]; 12 params; outputs h" in out
    code, out, _ = run(["specs", "--paths"], capsys)
    assert code == 0 and all(Path(line).is_file() for line in out.splitlines())


@pytest.mark.parametrize("argv", [
    ["build", REPO / "specs" / "elman.rnn", "-o", "/dev/null/x"],
    ["graph", REPO / "specs" / "elman.rnn", "-o", "/dev/null/x.dot"],
])
def test_a_path_that_cannot_be_written_is_a_user_error(capsys, argv):
    code, _, err = run(argv, capsys)
    assert code == 2 and "internal error" not in err
    assert "error: /dev/null" in err or "the folder /dev/null does not exist" in err


def test_a_carried_shipped_spec_wins_in_another_install(tmp_path, monkeypatch):
    """A checkpoint of a spec that used a shipped lstm.rnn carries it under the path of
    the install that trained it; elsewhere (another install, a folder with an lstm.rnn
    of its own) the carried text is still what loads."""
    import rnndsl
    from rnndsl.lang.shipped import specs_dir
    (tmp_path / "model.rnn").write_text((REPO / "specs" / "char_lstm.rnn").read_text())
    monkeypatch.chdir(tmp_path)
    cell = rnndsl.load("model.rnn", target="interp")(V=3, H=2, dtype=np.float64)
    checkpoint.save("m.npz", cell)
    header = checkpoint.peek("m.npz").spec
    assert list(header["files"]) == [str(specs_dir() / "lstm.rnn")]
    moved = {"/elsewhere/site-packages/rnndsl/specs/lstm.rnn": header["files"].popitem()[1]}
    info = checkpoint.peek("m.npz")
    info.spec["files"] = moved
    (tmp_path / "lstm.rnn").write_text("cell LSTM { dims I, H  input x[I]  state h[H]\n"
                                       "  h' = x }\n")      # a different LSTM beside it
    Cell = checkpoint.cell_class(info, target="interp")
    assert len(Cell.spec.params) == len(type(cell).spec.params)
    checkpoint.load("m.npz", Cell(V=3, H=2, dtype=np.float64))


def test_a_file_of_uses_only_checks_and_is_not_built(tmp_path, capsys):
    (tmp_path / "only.rnn").write_text(f'use "{REPO / "specs" / "lstm.rnn"}"\n')
    code, out, _ = run(["check", tmp_path / "only.rnn"], capsys)
    assert code == 0 and "no cell of its own; uses LSTM" in out
    code, _, err = run(["build", tmp_path / "only.rnn", "-o", tmp_path / "out"], capsys)
    assert code == 2 and "defines no cell of its own" in err
    assert not (tmp_path / "out").exists()


def test_check_shows_at_most_20_warnings_and_counts_the_rest(tmp_path, capsys):
    params = ", ".join(f"P{i}[H]" for i in range(50))
    (tmp_path / "many.rnn").write_text(f"cell C {{\n  dims H\n  input x[H]\n  state h[H]\n"
                                       f"  param {params}\n"
                                       "  h' = tanh(h + x)\n}\n")
    code, out, err = run(["check", tmp_path / "many.rnn"], capsys)
    assert code == 0, err
    assert err.count("warning:") == 20 and "... and 30 more warnings" in err


def test_a_reader_that_leaves_early_is_not_an_error(tmp_path):
    """`rnndsl explain ... | head -2`: the pipe closes early; exit 0, no traceback."""
    done = subprocess.run(f"{sys.executable} -m rnndsl explain {REPO / 'specs' / 'lstm.rnn'}"
                          " | head -1", shell=True, capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.stdout.startswith("# cell LSTM") and "Traceback" not in done.stderr


@pytest.mark.parametrize("argv", [["build", "specs/elman.rnn", "-o", "\x00"],
                                  ["check", "spec\x00.rnn"],
                                  ["train", "specs/char_lstm.rnn", "--checkpoint", "m\x00.npz"]])
def test_a_nul_character_in_an_argument_is_a_usage_error(argv, capsys):
    """Found by tests/cli/test_fuzz_cli.py: `build -o '\\0'` was an internal error
    (ValueError: embedded null character) once the spec had been read."""
    from rnndsl.cli.main import main
    assert main(argv) == 2
    assert "contains a NUL character" in capsys.readouterr().err


@pytest.mark.parametrize("command", [["check"], ["build", "-o", "out"], ["train", "--resume"],
                                     ["info"]])
def test_a_checkpoint_given_where_a_spec_goes_is_named_as_one(folder, capsys, command):
    """`rnndsl train --resume model.npz` takes model.npz for the spec (--resume is a flag):
    the error says it is a zip (a checkpoint), not "not UTF-8 text", and how to resume."""
    np.savez(folder / "model.npz", W=np.ones(3))
    code, out, err = run([command[0], "model.npz", *command[1:]], capsys)
    if command[0] == "info":          # info reads checkpoints: this one has no header
        assert code == 2 and "is not an rnndsl checkpoint" in err, err
        return
    assert code == 2, out
    assert "model.npz: a zip archive (an .npz checkpoint or params file?), not a .rnn spec" \
        in err and "--resume --checkpoint CHECKPOINT" in err
    assert "not UTF-8" not in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["E_META", "tanh", "SPEC_FILES"])
def test_check_refuses_a_cell_name_the_built_module_takes(tmp_path, capsys, name):
    """`rnndsl check` passed cells named like the built module's own code (another cell's
    E_META, a helper, a module constant) that `rnndsl build` and the cpu target refuse."""
    spec = tmp_path / "clash.rnn"
    spec.write_text("cell E {\n  dims I\n  input x[I]\n  output y = x * 2\n}\n"
                    f"cell {name} {{\n  dims I\n  input x[I]\n  output y = x * 3\n}}\n")
    code, out, err = run(["check", spec], capsys)
    assert code == 2
    assert (f"clash.rnn:6:6: error: '{name}' cannot name a cell: the generated module "
            "already uses that name for its own code") in err


@pytest.mark.parametrize("second", ["inference_E", "inference_inference_E"])
def test_check_refuses_a_cell_whose_kernels_another_cell_names(tmp_path, capsys, second):
    """A cell named inference_E would have the kernel forward_inference_E, which is E's
    forward without gradients: the module would define it twice, the second replacing
    the first. Refused by check and build, at the longer name, naming both cells."""
    spec = tmp_path / "twins.rnn"
    first = second.removeprefix("inference_")
    body = ("  dims I\n  input x[I]\n  state h[I]\n  param W[I, I], U[I, I]\n"
            "  h' = tanh(W @ x + U @ h)\n  output h'\n}\n")
    spec.write_text(f"cell {first} {{\n{body}cell {second} {{\n{body}")
    for command in (["check", spec], ["build", spec, "-o", tmp_path / "out"]):
        code, out, err = run(command, capsys)
        assert code == 2, out
        assert (f"twins.rnn:9:6: error: '{second}' cannot name a cell beside '{first}': the "
                f"generated module would define the kernel 'forward_{second}' for both") in err
    assert not (tmp_path / "out" / "twins.py").exists()


@pytest.mark.parametrize("extra, message", [
    (["--checkpoint", "char_lstm.rnn", "--force"],
     "--checkpoint char_lstm.rnn is the spec that train reads; name another file"),
    (["--checkpoint", "corpus.txt", "--force"],
     "--checkpoint corpus.txt is the corpus that train reads; name another file"),
    (["--json", "char_lstm.rnn"], "--json char_lstm.rnn is the spec that train reads"),
    (["--best", "corpus.txt"], "--best corpus.txt is the corpus that train reads"),
    (["--resume", "--force"], "--resume continues the --checkpoint and --force starts "
                              "afresh over it: give one of them"),
])
def test_train_never_writes_over_what_it_reads(folder, capsys, extra, message):
    """--force replaced the spec (or the corpus) with a zip when --checkpoint named it;
    --resume --force resumed and ignored --force."""
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    code, out, err = run(["train", "char_lstm.rnn", "--corpus", "corpus.txt", "--steps", 1,
                          *SMALL, *extra], capsys)
    assert code == 2 and message in err, err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_running_out_of_memory_is_a_user_error_not_a_bug(capsys, monkeypatch):
    """A MemoryError past the up-front size checks (an initialiser drawing in float64
    what fits in float32, a training step's buffers) said 'internal error ... a bug in
    rnndsl' with status 3."""
    import rnndsl.cells.base as base

    def no_memory(*args, **kwargs):
        raise MemoryError("Unable to allocate 6.71 GiB")
    monkeypatch.setattr(base, "_init_param", no_memory)
    code, _, err = run(["gradcheck", SPEC, "--target", "interp"], capsys)
    assert code == 2 and "internal error" not in err
    assert "'s start needs more memory than this machine can allocate" in err
    monkeypatch.setattr(base.Cell, "__init__", no_memory)
    code, _, err = run(["gradcheck", SPEC, "--target", "interp"], capsys)
    assert code == 2 and "internal error" not in err
    assert "error: out of memory (Unable to allocate 6.71 GiB): this machine cannot hold" \
        in err


def test_graph_refuses_a_missing_folder_and_build_names_the_file_it_cannot_write(
        tmp_path, capsys, monkeypatch):
    """`rnndsl graph -o /nonexistent/g.dot` made /nonexistent (train refuses a missing
    folder); a build into a folder it may not write named its temporary file."""
    code, _, err = run(["graph", REPO / "specs" / "elman.rnn", "-o",
                        tmp_path / "missing" / "g.dot"], capsys)
    assert code == 2 and "the folder" in err and "missing does not exist" in err
    assert not (tmp_path / "missing").exists()
    import tempfile

    def refused(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".elman.abc.tmp"))
    monkeypatch.setattr(tempfile, "mkstemp", refused)
    code, _, err = run(["build", REPO / "specs" / "elman.rnn", "-o", tmp_path / "out"], capsys)
    assert code == 2 and f"error: {tmp_path / 'out' / 'elman.py'}: Permission denied" in err
    assert ".tmp" not in err


def test_build_refuses_a_module_name_too_long_for_numbas_cache_files(tmp_path, capsys):
    """A 240-character spec file name built a module whose first call failed with
    OSError: File name too long (Numba's cache file names add the kernel's name)."""
    from rnndsl.build.modules import MAX_MODULE_NAME
    text = (REPO / "specs" / "elman.rnn").read_text()
    long, short = (tmp_path / ("b" * n + ".rnn") for n in (MAX_MODULE_NAME + 1,
                                                           MAX_MODULE_NAME))
    long.write_text(text)
    short.write_text(text)
    code, _, err = run(["build", long, "-o", tmp_path / "out"], capsys)
    assert code == 2 and f"in {MAX_MODULE_NAME + 1} characters" in err
    assert f"name the spec file in at most {MAX_MODULE_NAME} bytes of UTF-8" in err
    assert not (tmp_path / "out").exists()
    code, out, err = run(["build", short, "-o", tmp_path / "out"], capsys)
    assert code == 0, err
    assert (tmp_path / "out" / ("b" * MAX_MODULE_NAME + ".py")).is_file()


def test_module_names_count_bytes_and_a_name_not_utf8_builds_a_module_that_imports(
        tmp_path, capsys):
    """From an outside review: 80 CJK characters (240 bytes) passed the length check, and
    the module's first call failed (File name too long); a spec file whose name is not
    UTF-8 (r\xe9seau.rnn, decoded by Python to a lone surrogate) built a module whose
    class could not be made (the path in its __doc__), and gradcheck was exit 3."""
    from rnndsl.build.modules import MAX_MODULE_NAME
    text = (REPO / "specs" / "elman.rnn").read_text()
    wide = tmp_path / ("漢" * (MAX_MODULE_NAME // 3 + 1) + ".rnn")
    wide.write_text(text)
    code, _, err = run(["build", wide, "-o", tmp_path / "out"], capsys)
    assert code == 2 and f"in {MAX_MODULE_NAME // 3 + 1} characters, " \
        f"{3 * (MAX_MODULE_NAME // 3 + 1)} bytes in UTF-8" in err, err
    latin1 = Path(os.fsdecode(bytes(tmp_path) + b"/r\xe9seau.rnn"))
    latin1.write_text(text)
    code, _, err = run(["gradcheck", latin1, "--dims", "I=2,H=3", "-T", "2", "-B", "1"],
                       capsys)
    assert code == 0, err
    code, out, err = run(["build", latin1, "-o", tmp_path / "out"], capsys)
    assert code == 0, err
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); from r_seau import Elman; "
             "print(Elman.__doc__)")
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0 and "/r\\udce9seau.rnn, compiled" in done.stdout, done.stderr


def test_a_module_built_by_a_changed_rnndsl_differs_on_disk(tmp_path, capsys, monkeypatch):
    """From an outside review: Numba's cache beside a built module is keyed by the
    module's text, which did not change when rnndsl's kernel helpers did, so a module
    rebuilt after an upgrade kept running the old machine code. The text now carries
    the compiler's hash."""
    from rnndsl.build import cache
    spec = REPO / "specs" / "elman.rnn"
    assert run(["build", spec, "-o", tmp_path], capsys)[0] == 0
    first = (tmp_path / "elman.py").read_text()
    assert f"COMPILER_HASH = {cache.compiler_hash()!r}" in first
    monkeypatch.setattr(cache, "compiler_hash", lambda: "0123456789abcdef")
    assert run(["build", spec, "-o", tmp_path], capsys)[0] == 0
    second = (tmp_path / "elman.py").read_text()
    assert second != first and "COMPILER_HASH = '0123456789abcdef'" in second


def test_a_full_disk_names_the_file_and_leaves_no_temporary_file(tmp_path, capsys,
                                                                 monkeypatch):
    """A write that ran out of space said only "error: No space left on device"."""
    import errno
    real = os.fdopen

    class Full:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "fdopen", lambda fd, *a, **k: Full(real(fd, *a, **k)))
    code, _, err = run(["build", REPO / "specs" / "elman.rnn", "-o", tmp_path], capsys)
    assert code == 2 and f"{tmp_path / 'elman.py'}: No space left on device" in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra, message", [
    (["--val", "0.99999"], f"--val 0.99999 of the corpus's {len(TEXT):,} chars leaves 0 to "
                           f"train on and {len(TEXT):,} to validate on; each needs at least "
                           "2: lower --val"),
    (["--max-chars", "10"], "--val 0.05 of the corpus's 10 chars leaves 10 to train on and 0 "
                            "to validate on; each needs at least 2: raise --val"),
    (["--batch", "100000"], "--batch 100000 rows need at least 100,001 chars to train on"),
    (["--corpus", "/dev/null"], "--corpus /dev/null: not a regular file"),
])
def test_data_too_short_is_said_in_the_options_words(folder, capsys, extra, message):
    """The data library's own words reached the user ('split: a stream of 10 items ...
    val_fraction=0.05', 'tbptt_batches: ...'), and /dev/null was 'no such file'."""
    code, out, err = train(capsys, *extra)
    assert code == 2 and message in err, err
    assert "split:" not in err and "tbptt_batches" not in err


def test_a_seq_longer_than_a_row_says_what_runs(folder, capsys):
    code, out, err = train(capsys, "--seq", "100000", "--dry-run")
    assert code == 0, err
    row = (len(TEXT) - round(len(TEXT) * 0.05) - 1) // 2     # 2 rows of the training part
    assert (f"batch 2 x {row} steps (--seq 100000 is longer than a row of the text: {row})"
            in out)


@pytest.mark.parametrize("argv, message", [
    (["check", REPO / "specs" / "elman.rnn", "--dump-after", "unroll", "--unroll",
      "100000000"], "--unroll: at most 1000 steps are unrolled, got 100000000"),
    (["graph", REPO / "specs" / "elman.rnn", "--unroll", "5000", "-o", "g.dot"],
     "--unroll: at most 1000 steps are unrolled, got 5000"),
    (["check", REPO / "specs" / "elman.rnn", "--unroll", "3"],
     "--unroll sets the steps of --dump-after unroll; give that too"),
    (["build", REPO / "specs" / "elman.rnn", "-o", "out", "--target", "cuda", "--no-pass",
      "microkernel"], "--no-pass microkernel: the pass acts on the cpu target only, and "
                      "this is --target cuda"),
    (["explain", REPO / "specs" / "elman.rnn", REPO / "specs" / "gru.rnn"],
     "rnndsl explain: error: unrecognized arguments: "),
    (["sample", "m.npz", "--greedy", "--temperature", "0.5"],
     "--greedy takes the likeliest token; it does not combine with --temperature"),
])
def test_options_that_would_do_nothing_or_hang_are_refused(tmp_path, monkeypatch, capsys,
                                                           argv, message):
    """Each was accepted: --unroll 1e8 ran for ever printing nothing; --unroll without
    --dump-after unroll, a pass of the other target, and --temperature with --greedy were
    ignored; a second spec given to explain pointed to `rnndsl --help`."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run(argv, capsys)
    assert code == 2 and message in err, err
    assert not (tmp_path / "out").exists() and not (tmp_path / "g.dot").exists()
    if argv[0] == "explain":
        assert "(see: rnndsl explain --help)" in err


def test_explain_says_why_a_stateless_cells_time_loops_are_empty(tmp_path, capsys):
    """A cell with no state (a network's readout segment) printed `for t in 0 .. T-1:`
    and `for t in T-1 .. 0:` with nothing under them."""
    spec = tmp_path / "readout.rnn"
    spec.write_text("cell R {\n  dims I, K\n  input x[I]\n  param W[K, I]\n"
                    "  output y = W @ x\n}\n")
    code, out, err = run(["explain", spec], capsys)
    assert code == 0, err
    lines = out.splitlines()
    for loop in ("  for t in 0 .. T-1:", "  for t in T-1 .. 0:"):
        after = lines[lines.index(loop) + 1]
        assert after == "    (nothing: no state carries a step to the next, so all runs " \
                        "over T*B rows)", out


# ------------------------------------------------------------------ the closing samples
LINES = "".join(f"line {i}: the cat sat on the mat\n" for i in range(120))


def test_closing_samples_continue_held_out_lines_unless_primed(folder, capsys):
    """Without --prime the samples start from the validation text's first whole lines
    (text the model never trained on), said so and recorded; --prime replaces them."""
    from rnndsl.train.data import Vocab, split
    (folder / "corpus.txt").write_text(LINES)
    code, out, err = train(capsys, "--json", "run.json", "--val", "0.3")
    assert code == 0, err
    prime = json.loads((folder / "run.json").read_text())["samples"][0]["prime"]
    vocab = Vocab.from_text(LINES)
    train_ids, val_ids = split(vocab.encode(LINES), 0.3)
    assert prime.startswith("\n") and prime.endswith("\n") and len(prime) <= 400
    assert prime in vocab.decode(val_ids) and prime not in vocab.decode(train_ids)
    lines = prime.count("\n") - 1
    assert lines >= 2
    assert f"the samples continue {lines} whole lines from the validation text's start" \
        in out
    code, out, err = train(capsys, "--json", "run.json", "--val", "0.3", "--prime", "line ",
                           "--force")
    assert code == 0, err
    assert json.loads((folder / "run.json").read_text())["samples"][0]["prime"] == "line "
    assert "the samples continue" not in out
    # --prime '': a line break and a fresh state, as `rnndsl sample --prime ''` starts
    code, out, err = train(capsys, "--json", "run.json", "--val", "0.3", "--prime", "",
                           "--force")
    assert code == 0, err
    assert json.loads((folder / "run.json").read_text())["samples"][0]["prime"] == "\n"


def test_the_held_out_start_is_whole_lines_or_a_line_break():
    from rnndsl.cli.train import HELD_OUT_PRIME_CHARS, held_out_prime
    from rnndsl.train.data import Vocab
    vocab = Vocab.from_text(LINES + "xyz tail of a line")
    got = vocab.decode(held_out_prime(vocab.encode("tail of a line\n" + LINES), vocab))
    assert got.startswith("\nline 0:") and got.endswith("\n")
    assert HELD_OUT_PRIME_CHARS - 40 < len(got) <= HELD_OUT_PRIME_CHARS
    # no line break to start from, or no whole line after it: a line break alone
    assert vocab.decode(held_out_prime(vocab.encode("xyz" * 50), vocab)) == "\n"
    assert vocab.decode(held_out_prime(vocab.encode("xyz\nxyz"), vocab)) == "\n"


def test_a_cold_start_is_a_line_break_even_where_a_tab_sorts_first():
    """Without --prime (rnndsl sample) a sample starts from a line break, not from the
    vocabulary's first symbol, which a tab or a space would be in many texts."""
    from rnndsl.cli.train import _encode_prime
    from rnndsl.train.data import Vocab
    tabbed = Vocab.from_text("a\tb\nc d")
    assert tabbed.decode([0]) == "\t"
    assert tabbed.decode(_encode_prime(tabbed, "", "the corpus")) == "\n"
    one_line = Vocab.from_text("no line breaks here")
    assert one_line.decode(_encode_prime(one_line, "", "the corpus")) == " "


def test_a_full_disk_that_names_no_file_points_at_the_kernel_cache(capsys, monkeypatch):
    """Numba writing machine code into a full kernel cache raises an OSError with no file
    name: the error said only "No space left on device"."""
    import errno
    from rnndsl.cli import main as cli_main

    def full(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(cli_main, "cmd_check", full)
    monkeypatch.setenv("RNNDSL_CACHE_DIR", "/somewhere/cache")
    code, _, err = run(["check", REPO / "specs" / "elman.rnn"], capsys)
    assert code == 2 and "error: No space left on device" in err
    assert "hint: the disk of the output or of rnndsl's kernel cache (/somewhere/cache) " \
           "is full" in err


@pytest.mark.parametrize("option", ["--json", "--checkpoint"])
def test_a_used_spec_is_refused_as_an_output_on_the_compiled_target(folder, capsys, option):
    """From an outside review: on the cpu target (the default) the check that no output
    is a file the spec uses saw no used files (a compiled class keeps them in its
    module), so `--json lstm.rnn` replaced char_lstm.rnn's layer spec with JSON."""
    before = (folder / "lstm.rnn").read_text()
    code, _, err = train(capsys, option, "lstm.rnn", "--force", "--target", "cpu",
                         "--dry-run")
    assert code == 2 and f"{option} lstm.rnn is a file the spec uses that train reads" \
        in err, err
    assert (folder / "lstm.rnn").read_text() == before


@pytest.mark.parametrize("option", ["--checkpoint", "--json", "--plot"])
def test_an_output_folder_that_refuses_writes_is_found_before_training(folder, capsys,
                                                                       monkeypatch, option):
    """From an outside review: a folder that could not be written in (read-only,
    immutable) was found out when the checkpoint was saved, after training: the model
    was lost (and --plot's error named a temporary file). The folder is now tried
    first. (Root ignores permission bits, so the refusal is made here by hand.)"""
    import tempfile
    (folder / "ro").mkdir()
    real = tempfile.mkstemp

    def refusing(*args, **kwargs):
        if Path(kwargs.get("dir", "")).name == "ro":
            raise PermissionError(1, "Operation not permitted")
        return real(*args, **kwargs)
    monkeypatch.setattr(tempfile, "mkstemp", refusing)
    name = {"--checkpoint": "m.npz", "--json": "a.json", "--plot": "p.png"}[option]
    code, out, err = train(capsys, option, f"ro/{name}", "--dry-run")
    assert code == 2 and f"{option} ro/{name}: cannot write in the folder ro (Operation " \
        "not permitted)" in err, err


def test_plot_writes_the_format_its_suffix_names(folder, capsys):
    """--plot loss.svg wrote PNG data under that name."""
    pytest.importorskip("matplotlib")
    code, _, err = train(capsys, "--plot", "loss.svg", "--sample-chars", "0")
    assert code == 0, err
    assert (folder / "loss.svg").read_bytes().lstrip().startswith((b"<?xml", b"<svg"))
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


def test_a_checkpoint_another_run_wrote_meanwhile_is_not_replaced(folder, capsys,
                                                                   monkeypatch):
    """From an outside review: two runs given one --checkpoint, both started before either
    saved, both passed the check at the start; the second's save replaced the first's
    model, and both said all was well. A checkpoint that appears while a run trains is
    left alone: the run saves its model beside it, and stops saying so."""
    from rnndsl.train import Trainer
    real = Trainer.step

    def other_run_saves_first(self, *args, **kwargs):
        if not (folder / "shared.npz").exists():
            (folder / "shared.npz").write_bytes(b"the other run's model")
        return real(self, *args, **kwargs)
    monkeypatch.setattr(Trainer, "step", other_run_saves_first)
    code, out, err = train(capsys, "--checkpoint", "shared.npz", steps=3)
    assert code == 2, err
    assert "shared.npz appeared while this run trained: another run was given the same " \
           "--checkpoint. This run's model is saved as shared.2.npz" in err
    assert (folder / "shared.npz").read_bytes() == b"the other run's model"
    assert checkpoint.peek(folder / "shared.2.npz").meta["trainer"]["steps"] == 3
    monkeypatch.setattr(Trainer, "step", real)
    code, out, err = train(capsys, "--checkpoint", "shared.2.npz", "--resume", steps=1)
    assert code == 0, err
