"""A truncated-BPTT trainer for any cell, interpreted or compiled.

    trainer = Trainer(cell, loss="softmax_cross_entropy", optimizer=Adam(1e-2), clip_norm=5)
    for x, y in chunks:                     # consecutive (T, B, ...) pieces of long sequences
        loss = trainer.step(x, y)           # forward from the carried state, backward, update
    trainer.reset_state()                   # before the next, unrelated sequences

Truncated BPTT: the final state of one chunk is the initial state of the next, so the
forward pass sees the whole sequence, but gradients stop at chunk boundaries (no d_state
is passed back into an earlier chunk). The carried state is the one computed with the
params of its own step, before the update, as in every truncated-BPTT loop.

The trainer only uses the `Cell` API (forward, backward, params, spec), so it trains
target="interp" and target="cpu" cells alike. Cells with several inputs (the data and,
say, dropout masks) get the data as `x` and the rest as `extra_inputs`; the trainer draws
nothing itself, but its `rng` (seeded) is there for whatever the caller draws per step,
and it is saved with `save` so a resumed run draws what an uninterrupted one would.

A learning-rate schedule (rnndsl.train.schedule) scales the optimiser's lr before each
update; its position (the step it started at, the run's `progress`) is saved too:

    trainer = Trainer(cell, optimizer=Adam(5e-3),
                      lr_schedule=Cosine(warmup=50, total_steps=2_000))
    # a run of unknown length (a time budget): Cosine(warmup=50), and before each step
    trainer.progress = elapsed / budget
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from . import checkpoint
from ..cells.base import Cell, Workspace
from ..core.errors import BindError
from ..kernels.blas import kernel_threads
from .losses import LOSSES, check_mask, softmax_cross_entropy_rows
from .optim import Adam, Optimizer, clip_elementwise, clip_global_norm, global_norm
from .schedule import Schedule


def _pick(kind: str, given: str | None, decls, hint: str) -> str:
    names = [d.name for d in decls]
    if given is None:
        if len(names) != 1:
            raise BindError(f"the cell has {len(names)} {kind}s ({', '.join(names)}); say "
                            f"which one with {hint}")
        return names[0]
    if given not in names:
        raise BindError(f"the cell has no {kind} '{given}'; its {kind}s are: "
                        f"{', '.join(names)}")
    return given


class Trainer:
    """Runs steps of truncated BPTT: forward, loss, backward, clipping, optimiser step.

    loss: a name in `losses.LOSSES` or a function (pred, targets, mask) -> (loss, d_pred).
    output / input: which cell output the loss reads and which input x feeds (defaults:
    the only one). optimizer: an `optim.Optimizer` (default Adam(lr=1e-3)). clip_value
    clamps gradient elements, then clip_norm rescales to that global norm (either or both).
    seed seeds `self.rng`, the trainer's random stream for the caller's per-step draws.
    lr_schedule: a `schedule.Schedule`; before each update the optimiser's lr becomes
    `peak_lr * lr_schedule(steps - schedule_start, progress)`, where peak_lr is the
    optimiser's lr when the Trainer is made and `progress` (None, or 0 to 1) is how far
    the run is, which the caller sets when the schedule has no total_steps.
    state_resets: after each step, each row's carried state goes back to the cell's
    initial state with this probability (drawn from a stream of the trainer's own, which
    its checkpoints keep, apart from `self.rng`'s). Carried from chunk to
    chunk, a state is the initial one only where a row's stream starts, so the model
    never learns to start from it, and sampling starts there: a character model of the
    stdlib trained 3 minutes wrote, at temperature 0.5 from a line break, samples whose
    whitespace share was 0.62-1.00 (0 of 12 within 1.5 times the corpus's 0.318; 7 of 12
    with resets at 1/32, which `rnndsl train` makes by default: benchmarks/
    sample_whitespace.py, issue 19).
    reuse_buffers: lend the cell a `Workspace` (rnndsl.cells.base), so that each step
    reuses the last one's internal buffers: the run's tapes, the row blocks' copies, and
    in `step` the gradients (which the step consumes). What the trainer hands out
    (`last_run`'s outputs and state, `gradients`' results) is never reused; but
    `last_run`'s tapes are, so a backward on it fails once the next step ran. With the
    built-in softmax cross-entropy on a compiled cpu cell, `step` then runs forward,
    loss and backward as one launch of the cell's row blocks (CompiledCell.step_with:
    each block's rows of the loss on its own thread, between its kernels). False makes
    every call's arrays its own and takes forward, loss and backward apart: the same
    params, losses and states, bit for bit, more slowly (tests/train/
    test_step_workspace.py).
    """

    def __init__(self, cell, loss: str | Callable = "softmax_cross_entropy",
                 output: str | None = None, input: str | None = None,
                 optimizer: Optimizer | None = None, clip_norm: float | None = None,
                 clip_value: float | None = None, seed: int | None = 0,
                 lr_schedule: Schedule | None = None, reuse_buffers: bool = True,
                 state_resets: float = 0.0) -> None:
        if isinstance(cell, type):
            raise ValueError(f"Trainer takes a cell, not the cell class {cell.__name__}: make "
                             f"one first, e.g. {cell.__name__}(dtype=np.float32, **dims)")
        spec = cell.spec      # a class attribute, or an instance's (a two-way cell)
        self.cell = cell
        self.output = _pick("output", output, spec.outputs, "output='...'")
        self._output_rank = next(o for o in spec.outputs if o.name == self.output).type.rank
        self._user_inputs = tuple(d for d in spec.inputs if d.name not in cell.hidden_inputs)
        self.input = _pick("input", input, self._user_inputs, "input='...' (the rest go in "
                           "extra_inputs)")
        if isinstance(loss, str):
            if loss not in LOSSES:
                raise ValueError(f"unknown loss '{loss}'; losses are: {', '.join(LOSSES)}")
            self.loss_name, self.loss = loss, LOSSES[loss]
        elif callable(loss):
            self.loss_name, self.loss = getattr(loss, "__name__", "custom"), loss
        else:
            raise ValueError(f"loss must be a name ({', '.join(LOSSES)}) or a function, "
                             f"got {type(loss).__name__}")
        if optimizer is not None and not isinstance(optimizer, Optimizer):
            raise ValueError("optimizer must be an rnndsl.train.optim optimiser (SGD, RMSprop, "
                             f"Adam), got {type(optimizer).__name__}")
        self.optimizer = optimizer if optimizer is not None else Adam()
        for name, value in (("clip_norm", clip_norm), ("clip_value", clip_value)):
            if value is not None and (
                    isinstance(value, (bool, np.bool_))
                    or not isinstance(value, (int, float, np.integer, np.floating))
                    or not math.isfinite(value) or value <= 0):
                raise ValueError(f"{name} must be a positive finite number or None, got "
                                 f"{value!r}")
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.clip_value = None if clip_value is None else float(clip_value)
        if lr_schedule is not None and not isinstance(lr_schedule, Schedule):
            raise ValueError("lr_schedule must be an rnndsl.train.schedule schedule "
                             f"(Constant, Cosine, StepDecay), got {type(lr_schedule).__name__}")
        self.lr_schedule = lr_schedule
        if isinstance(state_resets, (bool, np.bool_)) or not isinstance(
                state_resets, (int, float, np.integer, np.floating)) \
                or not 0 <= state_resets <= 1:
            raise ValueError(f"state_resets must be a probability from 0 to 1, got "
                             f"{state_resets!r}")
        self.state_resets = float(state_resets)
        self.peak_lr = float(self.optimizer.hyper["lr"])
        self.schedule_start = 0                    # the step the schedule's step 0 is
        self.progress: float | None = None         # how far the run is, 0 to 1, if known
        self.last_lr = self.peak_lr                # the lr of the last update
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        # the state resets' draws: a stream apart, so that they leave self.rng's (the
        # dropout masks) as they were, and that data-parallel training, which draws them
        # for the whole batch in the driver, resets the rows one process resets
        self._reset_rng = np.random.default_rng(None if seed is None else [seed, 0x5E7])
        self.steps = 0
        self.last_grad_norm: float | None = None   # before clipping
        self.last_run = None                       # the Run of the last step or evaluate
        # lent to the cell's calls in training (cells that take one: rnndsl.cells.base.Cell)
        self._workspace = Workspace() if reuse_buffers and isinstance(cell, Cell) else None
        self._state: dict[str, np.ndarray] | None = None
        self._eval_state: dict[str, np.ndarray] | None = None

    # ------------------------------------------------------------------ carried state
    @property
    def state(self) -> dict[str, np.ndarray] | None:
        """The state the next `step` starts from (None: the cell's initial state)."""
        return self._state

    @state.setter
    def state(self, value: Mapping[str, np.ndarray] | None) -> None:
        self._state = None if value is None else {k: np.array(v) for k, v in value.items()}

    @property
    def eval_state(self) -> dict[str, np.ndarray] | None:
        """The state the next `evaluate` starts from, apart from training's."""
        return self._eval_state

    def reset_state(self, which: str = "both") -> None:
        """Forget the carried state ("train", "eval" or "both"): the next chunk starts a
        new sequence from the cell's initial state."""
        if which not in ("train", "eval", "both"):
            raise ValueError(f"which must be 'train', 'eval' or 'both', got {which!r}")
        if which in ("train", "both"):
            self._state = None
        if which in ("eval", "both"):
            self._eval_state = None

    @staticmethod
    def _following(state, B: int):
        """The carried state if it is for B rows; a batch of another size starts afresh."""
        if state is None or any(v.shape[0] != B for v in state.values()):
            return None
        return state

    def _inputs(self, x, extra_inputs) -> tuple[dict[str, np.ndarray], int]:
        names = [d.name for d in self._user_inputs]
        extra = dict(extra_inputs or {})
        if self.input in extra:
            raise BindError(f"extra_inputs has '{self.input}', which the trainer feeds with "
                            "x; pass only the other inputs there")
        unknown = [k for k in extra if k not in names]
        missing = [n for n in names if n != self.input and n not in extra]
        if unknown or missing:
            raise BindError(f"the cell's inputs are {', '.join(names)}: x feeds "
                            f"'{self.input}' and extra_inputs must give the others"
                            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
                            + (f"; missing: {', '.join(missing)}" if missing else ""))
        once = next(d.once for d in self._user_inputs if d.name == self.input)
        if not isinstance(x, np.ndarray) or x.ndim < 2:
            layout = "(B, size): one vector a sequence" if once else "(T, B, ...)"
            raise BindError(f"x must be a NumPy array {layout} for input '{self.input}', "
                            f"got {type(x).__name__} of shape {np.shape(x)}")
        # B: an `input once` is (B, size), a sequence (T, B, ...)
        return {self.input: x, **extra}, x.shape[0] if once else x.shape[1]

    def _steps(self, targets):
        """T for a cell whose inputs are all `input once` (one-to-many): the targets'
        steps, (T, B, ...) or (T, B); None for any other cell (its inputs say T)."""
        if not all(d.once for d in self._user_inputs):
            return None
        shape = np.shape(targets)
        if len(shape) < 2:
            raise BindError(f"targets must be (T, B, ...) or (T, B): the cell's inputs are "
                            f"all 'input once', so the targets say how many steps to run; "
                            f"got shape {shape}")
        return int(shape[0])

    # ------------------------------------------------------------------ steps
    @staticmethod
    def _mask(mask, lengths, T: int):
        """Positions the loss counts: the given mask, and with lengths only t < length."""
        if lengths is None:
            return mask
        running = np.arange(T)[:, None] < np.asarray(lengths)[None, :]
        return running if mask is None else (np.asarray(mask, bool) & running)

    def step(self, x, targets, mask=None, extra_inputs=None, lengths=None) -> float:
        """One chunk of truncated BPTT; returns the chunk's loss (before the update).
        Dropout sites of the cell draw their masks from `self.rng`; `lengths` (one per
        sequence) freezes each sequence after its end and leaves those steps out of the
        loss. With an lr_schedule, the update's lr is the schedule's (`last_lr`)."""
        # the gradients are the workspace's: apply consumes them before the next step
        loss, grads, run = self._gradients(x, targets, mask, extra_inputs, lengths,
                                           self._workspace)
        self.apply(grads, run)
        return loss

    def gradients(self, x, targets, mask=None, extra_inputs=None, lengths=None):
        """The first half of `step`, which changes nothing but the optimiser's lr: this
        step's lr from the schedule (first: it may refuse before any work), then
        forward from the carried state and BPTT. Returns (loss, the params' gradients,
        the run), for `apply`. Apart so that data-parallel training
        (rnndsl.distributed) can sum several processes' gradients in between: the
        gradients are the caller's own (not reused by the next step)."""
        return self._gradients(x, targets, mask, extra_inputs, lengths, None)

    def _gradients(self, x, targets, mask, extra_inputs, lengths, grad_workspace):
        """`gradients`, with the backward lent `grad_workspace` (None: fresh gradients).
        With a workspace, the kernels' BLAS is held at one thread (as each kernel call
        would hold it) for the forward, the loss and the backward together, instead of
        set and set back around each kernel call."""
        workspace = self._workspace
        if workspace is None or getattr(self.cell, "target", None) != "cpu":
            return self._forward_loss_backward(x, targets, mask, extra_inputs, lengths,
                                               grad_workspace)
        with kernel_threads(1):
            workspace.blas_held = True
            try:
                return self._forward_loss_backward(x, targets, mask, extra_inputs, lengths,
                                                   grad_workspace)
            finally:
                workspace.blas_held = False

    def _forward_loss_backward(self, x, targets, mask, extra_inputs, lengths, grad_workspace):
        if self.lr_schedule is not None:          # before any work: it may refuse
            self.last_lr = self.peak_lr * self.lr_schedule(self.steps - self.schedule_start,
                                                           self.progress)
            self.optimizer.hyper["lr"] = self.last_lr
        inputs, B = self._inputs(x, extra_inputs)
        if grad_workspace is not None and lengths is None:
            done = self._step_with(inputs, B, targets, mask, grad_workspace)
            if done is not None and done[1] is not None:
                return done
            run = done[0] if done is not None else None
        else:
            run = None
        if run is None:
            lent = {} if self._workspace is None else {"workspace": self._workspace}
            steps = self._steps(targets)
            lent.update({} if steps is None else {"steps": steps})
            run = self.cell.forward(inputs, state=self._following(self._state, B),
                                    lengths=lengths, dropout=self.rng, **lent)
        if self.output not in self.cell._final_outputs():   # a final output is (B, ...)
            mask = self._mask(mask, lengths, run.T)
        loss, d_pred = _loss_and_cotangent(self.loss, run.outputs[self.output], targets,
                                           mask)
        # the data needs no gradient: the compiled kernels skip that work
        lent = {} if grad_workspace is None else {"workspace": grad_workspace}
        grads = self.cell.backward(run, d_outputs={self.output: d_pred},
                                   input_grads=False, **lent).params
        return loss, grads, run

    def _step_with(self, inputs, B: int, targets, mask, workspace):
        """Forward, the softmax cross-entropy and backward as one launch of a compiled
        cell's row blocks (CompiledCell.step_with: each block's loss runs on its thread
        between its kernels, writing the cotangents the backward kernel reads). Returns
        (loss, gradients, run); (run, None) if the loss refused a block (a non-finite
        logit, a target out of range: the caller then takes the usual way from the run,
        which words the error); None where this way does not apply (another loss or
        cell, a mask the loss would refuse, nothing to count), before any work."""
        step_with = getattr(self.cell, "step_with", None)
        x = inputs[self.input]
        if (step_with is None or self.loss is not LOSSES["softmax_cross_entropy"]
                or self._output_rank != 1 or any(d.once for d in self._user_inputs)):
            return None            # (an `input once` is (B, size): the usual way expands it)
        targets = np.asarray(targets)
        positions = tuple(x.shape[:2])
        if targets.shape != positions or targets.dtype.kind not in "iu":
            return None
        try:
            mask = check_mask(mask, positions, "logits.shape[:-1]")
        except ValueError:
            return None
        count = targets.size if mask is None else int(np.count_nonzero(mask))
        if count == 0:
            return None
        nll = np.empty(positions)            # each position's, summed as the loss sums
        name = self.output

        def loss_rows(k: int, r0: int, r1: int, outputs, d_outputs) -> bool:
            rows = (slice(None), slice(r0, r1))
            return softmax_cross_entropy_rows(
                outputs[name], targets[rows], None if mask is None else mask[rows], count,
                d_outputs[name], nll[rows]) is not None

        done = step_with(inputs, loss_rows, self._following(self._state, B),
                         dropout=self.rng, workspace=workspace)
        if done is None:
            return None
        run, grads = done
        if grads is None:
            return run, None
        return float(nll.sum()) / count, grads.params, run

    def apply(self, grads, run) -> None:
        """The second half of `step`: clip `grads` (in place), update the params, carry
        `run`'s final state to the next step and count the step."""
        if self.clip_value is not None:
            clip_elementwise(grads, self.clip_value)
        if self.clip_norm is not None:
            self.last_grad_norm = clip_global_norm(grads, self.clip_norm)
        else:
            self.last_grad_norm = global_norm(grads)
        self.optimizer.step(self.cell.params, grads)
        # the forward's final states are fresh arrays of its own: carried, not copied
        self._state = dict(run.state)
        self.reset_rows(self.draw_resets(run.B))
        self.last_run = run
        self.steps += 1

    def draw_resets(self, B: int) -> np.ndarray | None:
        """Which of B rows start their next chunk afresh (`state_resets`): a boolean
        mask, or None when none does. One draw of B values a step, whatever the mask."""
        if not self.state_resets:
            return None
        rows = self._reset_rng.random(B) < self.state_resets
        return rows if rows.any() else None

    def reset_rows(self, rows: np.ndarray | None) -> None:
        """The carried state of the rows in the mask `rows` back to the cell's initial
        state (the run's own arrays stay as they were)."""
        if rows is None or self._state is None:
            return
        initial = self.cell.initial_state(len(rows))
        for name, value in self._state.items():
            value = self._state[name] = np.array(value)
            value[rows] = np.asarray(initial[name])[rows]

    def evaluate(self, x, targets, mask=None, extra_inputs=None, state=None,
                 lengths=None) -> float:
        """The loss without an update (and without dropout), carrying its own state
        (apart from training's) from one call to the next, or starting from `state`."""
        inputs, B = self._inputs(x, extra_inputs)
        start = state if state is not None else self._following(self._eval_state, B)
        steps = self._steps(targets)
        run = self.cell.forward(inputs, state=start, lengths=lengths, grad=False,
                                **({} if steps is None else {"steps": steps}))
        if self.output not in self.cell._final_outputs():   # a final output is (B, ...)
            mask = self._mask(mask, lengths, run.T)
        loss, _ = _loss_and_cotangent(self.loss, run.outputs[self.output], targets, mask)
        self._eval_state = dict(run.state)
        self.last_run = run
        return loss

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | Path, meta: dict | None = None) -> None:
        """A checkpoint of the cell, the optimiser and the trainer (steps, rng, carried
        states, the lr schedule's settings and position), plus the caller's meta under
        "user"; written atomically."""
        schedule = self.lr_schedule.to_dict() if self.lr_schedule is not None else None
        trainer = {"steps": self.steps, "loss": self.loss_name,
                   "rng": self.rng.bit_generator.state,
                   "reset_rng": self._reset_rng.bit_generator.state,
                   "state": self._state, "eval_state": self._eval_state,
                   "lr_schedule": schedule, "schedule_start": self.schedule_start,
                   "progress": self.progress, "peak_lr": self.peak_lr,
                   "last_lr": self.last_lr}
        checkpoint.save(path, self.cell, self.optimizer,
                        meta={"trainer": trainer, "user": meta or {}})

    def load(self, path: str | Path) -> dict:
        """Resume from `save`: params, optimiser, steps, rng, carried states and where
        the run is in its lr schedule (`schedule_start`, `progress`); returns the
        caller's meta. The schedule and peak lr stay this Trainer's own, as the
        optimiser's settings do (a resumed run may change them);
        `schedule.from_dict(peek(path).meta["trainer"]["lr_schedule"])` is the saved one.
        A checkpoint saved without a position starts the schedule at its step."""
        if not isinstance(checkpoint.peek(path).meta.get("trainer"), dict):
            raise checkpoint.CheckpointError(
                f"{path} was not written by Trainer.save (no trainer section); load it "
                "with rnndsl.train.checkpoint.load(path, cell, optimizer)")
        meta = checkpoint.load(path, self.cell, self.optimizer)
        trainer = meta["trainer"]
        self.steps = int(trainer["steps"])
        self.rng.bit_generator.state = trainer["rng"]
        if "reset_rng" in trainer:          # (checkpoints before state resets have none)
            self._reset_rng.bit_generator.state = trainer["reset_rng"]
        # carried in the checkpoint's dtype; a run resumed in another (--dtype) goes on
        # from the same state in its own, as the params were loaded into it
        self._state = _in_dtype(trainer["state"], self.cell.dtype)
        self._eval_state = _in_dtype(trainer["eval_state"], self.cell.dtype)
        self.schedule_start = int(trainer.get("schedule_start", self.steps))
        progress = trainer.get("progress")
        self.progress = None if progress is None else float(progress)
        return meta.get("user", {})

    def restart_schedule(self) -> None:
        """Start the lr schedule afresh at the next step (its warm-up and decay again; a
        warm restart, as in SGDR), with the run's progress back at 0."""
        self.schedule_start = self.steps
        self.progress = 0.0 if self.progress is not None else None


def _in_dtype(state, dtype):
    """A carried state (a dict of arrays, or None) in `dtype`."""
    if not isinstance(state, dict):
        return state
    return {k: np.asarray(v, dtype=dtype) for k, v in state.items()}


def _loss_and_cotangent(loss_fn, pred, targets, mask):
    """`loss_fn(pred, targets, mask)` -> (loss, d_pred), as a loss must return them
    (rnndsl.train.losses): a custom loss that returns something else is named here,
    not met as an unpacking error inside the step."""
    result = loss_fn(pred, targets, mask)
    if not isinstance(result, tuple) or len(result) != 2:
        name = getattr(loss_fn, "__name__", type(loss_fn).__name__)
        raise BindError(f"the loss {name} returned {type(result).__name__}; a loss returns "
                        "(loss, d_pred): the loss and its gradient with respect to the "
                        f"predictions, shaped as they are {np.shape(pred)}")
    return result
