"""benchmarks/train_bench.py's pieces that its numbers rest on: the arguments, the
budget loop, the validation measure, the tables, and (with PyTorch) that its PyTorch
models compute rnndsl's model from the same weights. The timed runs themselves take
minutes and are not run here."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import train_bench  # noqa: E402


def test_defaults_run_everything_with_the_step_breakdown():
    args = train_bench.parse_args([])
    assert args.models == list(train_bench.MODELS)
    assert args.corpora == ["stdlib"]
    assert args.frameworks == ["rnndsl", "torch", "torch_compile"]
    assert (args.minutes, args.other_minutes) == (3.0, 3.0)
    assert args.step_breakdown is True and args.torch_threads is None


def test_choosing_models_drops_the_breakdown_unless_asked():
    args = train_bench.parse_args(["--models", "char_gru,char_lnlstm", "--minutes", "0.5",
                                   "--other-minutes", "0.25", "--corpora", "stdlib,shakespeare"])
    assert args.models == ["char_gru", "char_lnlstm"]
    assert args.corpora == ["stdlib", "shakespeare"]
    assert (args.minutes, args.other_minutes, args.step_breakdown) == (0.5, 0.25, False)
    assert train_bench.parse_args(["--torch-threads", "1"]).torch_threads == 1
    args = train_bench.parse_args(["--models", "none", "--step-breakdown"])
    assert args.models == [] and args.step_breakdown is True


@pytest.mark.parametrize("argv", [["--models", "char_rnn"], ["--frameworks", "jax"],
                                  ["--minutes", "0"], ["--minutes", "nan"],
                                  ["--corpora", "abc"], ["--models", "none"],
                                  ["--torch-threads", "0"], ["--max-chars", "0"]])
def test_bad_arguments_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        train_bench.parse_args(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_torch_compile_runs_only_for_the_loop_model():
    args = train_bench.parse_args(["--models", "char_lstm_128,char_lnlstm"])
    assert train_bench.plan(args) == [
        ("char_lstm_128", "stdlib", "rnndsl"), ("char_lstm_128", "stdlib", "torch"),
        ("char_lnlstm", "stdlib", "rnndsl"), ("char_lnlstm", "stdlib", "torch"),
        ("char_lnlstm", "stdlib", "torch_compile")]


def test_train_for_stops_at_the_first_step_past_the_budget_and_resets_each_epoch():
    ticks = iter(range(100))
    chunks = [(np.zeros((4, 2), np.int32), None), (np.zeros((3, 2), np.int32), None)]
    resets, seen = [], []

    def step(x_ids, y_ids):
        seen.append(x_ids.shape[0])
        return 1.0
    done = train_bench.train_for(chunks, 3.5, step, lambda: resets.append(len(seen)),
                                 clock=lambda: next(ticks))
    assert done == (4, 8 + 6 + 8 + 6, 4)        # steps, chars, seconds
    assert seen == [4, 3, 4, 3] and resets == [0, 2]


def test_train_for_refuses_a_non_finite_loss():
    chunks = [(np.zeros((2, 1), np.int32), None)]
    with pytest.raises(RuntimeError, match="nan at step 1"):
        train_bench.train_for(chunks, 10.0, lambda x, y: math.nan, lambda: None)


def test_validation_bits_weights_each_chunk_by_its_size():
    val_ids = np.arange(21, dtype=np.int32)  # batch 4, seq 3: 4 rows of 5, chunks of 3 and 2

    def evaluate(x_ids, y_ids):
        assert x_ids.shape[1] == 4 and np.array_equal(y_ids, x_ids + 1)
        return float(x_ids.shape[0])            # a chunk's mean loss: its length
    bits = train_bench.validation_bits(evaluate, val_ids, batch=4, seq=3)
    assert bits == pytest.approx((3 * 12 + 2 * 8) / 20 / math.log(2))
    uniform = train_bench.validation_bits(lambda x, y: math.log(96), val_ids, 32, 64)
    assert uniform == pytest.approx(math.log2(96))   # 20 ids: one row, one short chunk


def _row(framework, cps, **extra):
    return {"model": "char_lstm_128", "corpus": "stdlib", "framework": framework,
            "label": framework, "minutes": 0.5, "steps": 10, "chars_per_second": cps,
            "validation_bits_per_char": 3.25, "notes": "", **extra}


def test_results_table_gives_rnndsl_over_each_peer():
    rows = [_row("rnndsl", 30_000.0), _row("torch", 12_000.0),
            _row("torch_compile", 0.0, error="exit 1: boom")]
    text = train_bench.format_results(rows)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["model", "corpus", "framework"]
    assert lines[1].split()[5:] == ["30,000", "3.250", "-"]
    assert "12,000" in lines[2] and "2.50" in lines[2] and "3.250" in lines[2]
    assert "failed: exit 1: boom" in lines[3]
    md = train_bench.format_results(rows, markdown=True).splitlines()
    assert md[1] == "|" + "---|" * len(train_bench.RESULT_HEADER)
    assert md[3].startswith("| char_lstm_128 | stdlib | torch | 0.5 | 10 | 12,000 | 3.250 | "
                            "2.50 |")


def test_breakdown_table_shows_the_overhead_share():
    keys = [k for k, _ in train_bench.BREAKDOWN_ROWS]
    result = {k: 1.0 for k in keys} | {"step": 20.0, "overhead": 3.0, "overhead_pct": 15.0,
                                        "python": 0.8, "python_pct": 4.0}
    text = train_bench.format_breakdown({"as is": result, "OPENBLAS_NUM_THREADS=1": result})
    assert "OPENBLAS_NUM_THREADS=1" in text.splitlines()[0]
    assert "3.00 (15.0%)" in next(l for l in text.splitlines() if "model's kernels" in l)
    assert "0.80 (4.0%)" in next(l for l in text.splitlines() if "Python overhead" in l)
    assert len(text.splitlines()) == 1 + len(keys)


@pytest.mark.parametrize("name", ["char_lstm_128", "char_gru", "char_lnlstm"])
def test_the_torch_models_compute_rnndsl_models_from_the_same_weights(name):
    """Same logits from the same weights, carried state included, and the same gradient
    norm: the params held at zero in PyTorch (nn.LSTM's bias_hh, nn.GRU's b_hr and b_hz)
    get no gradient."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F
    from rnndsl.train.losses import softmax_cross_entropy
    model = dataclasses.replace(train_bench.MODELS[name], H=6)
    V = 5
    params = train_bench.initial_params(model, V)
    Cell = __import__("rnndsl").load(model.spec, target="interp")
    cell = Cell(dtype=np.float32, seed=0, V=V, H=6)
    rng = np.random.default_rng(0)
    for key in cell.params:       # biases and gains away from their 0 and 1
        params[key] = cell.params[key] = (params[key] + rng.normal(0, 0.3, params[key].shape)
                                          ).astype(np.float32)
    x = np.eye(V, dtype=np.float32)[rng.integers(0, V, (7, 3))]
    y = rng.integers(0, V, (7, 3))
    net = train_bench.torch_model(model.kind, params)
    first = cell.forward(x)
    logits, state = net(torch.from_numpy(x))
    np.testing.assert_allclose(logits.detach().numpy(), first.outputs["logits"], atol=1e-5)
    loss, d_logits = softmax_cross_entropy(first.outputs["logits"], y)
    grads = cell.backward(first, d_outputs={"logits": d_logits}).params
    F.cross_entropy(logits.reshape(-1, V), torch.from_numpy(y).ravel()).backward()
    theirs = sum(float((p.grad ** 2).sum()) for p in net.parameters() if p.requires_grad)
    assert theirs == pytest.approx(sum(float((g ** 2).sum()) for g in grads.values()),
                                   rel=1e-4)
    second = cell.forward(x, state=first.state)
    logits, _ = net(torch.from_numpy(x), train_bench._detached(state))
    np.testing.assert_allclose(logits.detach().numpy(), second.outputs["logits"], atol=1e-5)


def test_rnndsl_train_gets_every_setting_and_a_constant_lr_where_it_has_schedules(tmp_path):
    model = train_bench.MODELS["char_gru"]
    old = train_bench.rnndsl_command(model, "shakespeare", 0.5, None, tmp_path, frozenset())
    assert old[old.index("train") + 1] == str(model.spec) and "--force" in old
    given = {k: old[old.index(k) + 1] for k in ("--dims", "--minutes", "--corpus", "--batch",
                                                "--seq", "--lr", "--clip", "--every",
                                                "--sample-chars", "--json")}
    assert given == {"--dims": "H=128", "--minutes": "0.5", "--corpus": "shakespeare",
                     "--batch": "32", "--seq": "64", "--lr": "0.005", "--clip": "5",
                     "--every": "0", "--sample-chars": "0", "--json": str(tmp_path / "run.json")}
    assert "--lr-schedule" not in old and "--max-chars" not in old
    new = train_bench.rnndsl_command(model, "stdlib", 3, 1000, tmp_path,
                                     frozenset({"--lr-schedule", "--val-every"}))
    assert new[-8:] == ["--lr-schedule", "constant", "--warmup", "0", "--val-every", "0",
                        "--max-chars", "1000"]
