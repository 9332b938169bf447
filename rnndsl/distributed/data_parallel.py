"""Synchronous data-parallel training on Dask: one model, each step's batch rows split
across worker processes.

Input: the driver's `Trainer` (fresh, or resumed from a checkpoint: params, optimiser
state, step count, carried state) and a `Placement` (`--workers N` or `--scheduler
ADDR`). Output: `DataParallel`, which stands in for that Trainer in a training loop
(`step`, `save`, `evaluate`, `reset_state`, `steps`, `last_lr`, `progress`) while the
steps run on the workers; on leaving `spread` the Trainer holds the workers' state.

How a step runs (the design, and why):
- Persistent replicas, not shipped params: each worker holds a replica (the cell, a
  Trainer with the optimiser's state, and its rows' truncated-BPTT state carried from
  chunk to chunk) in its process, made once and keyed by the run's id. A step sends a
  worker only its rows' ids (T x B_i integers) and a few numbers, and gets back a few
  numbers: the params never travel during training.
- Gradients: each replica runs forward and BPTT on its rows and weighs its gradient by
  its share of the step's positions (the loss is a mean over the whole batch, so rows
  split 17 + 15 weigh 17/32 and 15/32).
- All-reduce by recursive doubling, as Dask tasks pinned to the workers: in round r,
  worker i adds its partial sum and worker (i XOR 2^r)'s, the lower rank's first; after
  log2 N rounds every worker holds the total, each having received log2 N gradients (no
  process receives all of them, and the driver none). Workers beyond the largest power
  of two first fold their gradients into a partner, and take the last round's operands
  as their partner does. Every worker adds the same operands in the same order, so the
  totals are identical to the bit.
- Update: every replica clips and applies the same update to the same total, so the
  params stay identical; every FINGERPRINT_EVERY steps (and at each sync) the workers'
  CRC-32s of their params are compared, and a difference stops the run.
- The driver sees each step's (loss, positions) and pulls params, optimiser state and
  the rows' carried states (`sync`) only to validate or write a checkpoint, which it
  writes itself, as one process does: a checkpoint does not know how many workers made
  it, so any N (or none) resumes any.

Invariants: a lost worker (killed, or restarted by its nanny) raises `WorkerLost`
naming it and the last checkpoint, after which nothing is written; a worker never runs
another's tasks (a replica lives in one process only).
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
import uuid
import zlib
from dataclasses import dataclass, field

import numpy as np

from ..core.errors import RnnError
from ..core.flat import flat_span
from .cluster import Placement, open_client, place

FINGERPRINT_EVERY = 20      # steps between the params' cross-checks: a CRC a worker
POLL_S = 0.5                # while waiting on a step, how often to ask which workers live
TIMINGS_KEPT = 1000         # steps whose timings `overhead` summarises


class DataParallelError(RnnError):
    """A data-parallel run that cannot go on as asked."""


class WorkerLost(DataParallelError):
    """A worker died (or was restarted) mid-run: its rows' state is gone."""


class ReplicasDiverged(DataParallelError):
    """The workers' params are no longer identical."""


# ---------------------------------------------------------------------------- the plan
def plan(workers: int | None, scheduler: str | None, threads: int | None,
         batch: int) -> Placement:
    """`--workers` / `--scheduler` / `--threads` checked with `--batch`, before any work:
    each worker trains at least one row of each batch."""
    placement = place(workers, scheduler, threads)
    if workers is not None and workers > batch:
        raise DataParallelError(f"--workers {workers} with --batch {batch}: each worker "
                                "trains at least one row of the batch; lower --workers or "
                                "raise --batch")
    return placement


def row_slices(batch: int, n: int) -> list[slice]:
    """n contiguous slices of the batch's rows, their sizes differing by one at most."""
    bounds = np.linspace(0, batch, n + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def reduction_rounds(n: int) -> tuple[int, list[int]]:
    """(P, the partner distances of recursive doubling among the first P ranks), P the
    largest power of two <= n; ranks P.. fold into rank - P before the rounds."""
    P = 1 << (n.bit_length() - 1)
    return P, [1 << r for r in range(P.bit_length() - 1)]


# ---------------------------------------------------------------------------- worker side
@dataclass
class _Blueprint:
    """What a worker needs to make its replica: the spec's text (no shared filesystem
    needed), the trainer's settings and its state at the start."""

    spec: dict
    target: str
    dims: dict
    dtype: str
    loss: str
    output: str
    input: str
    clip_norm: float | None
    clip_value: float | None
    lr_schedule: object
    peak_lr: float
    schedule_start: int
    steps: int
    last_lr: float
    seed: object
    optimizer: object
    params: dict
    threads: int | None


@dataclass
class _Replica:
    trainer: object
    rank: int
    pending: tuple | None = None        # (loss, positions, run) awaiting the total
    timings: dict = field(default_factory=dict)


_REPLICAS: dict[str, _Replica] = {}


def _replica(run_id: str) -> _Replica:
    try:
        return _REPLICAS[run_id]
    except KeyError:
        raise WorkerLost("a worker restarted and lost its replica of the model") from None


def _make_replica(run_id: str, rank: int, blueprint: _Blueprint, state) -> int:
    """Build this worker's replica and compile (or load) its kernels; returns its pid."""
    from ..cells.load import load_text
    from ..train.trainer import Trainer
    if blueprint.threads is not None:
        os.environ["RNNDSL_BLAS_THREADS"] = str(blueprint.threads)
    spec = blueprint.spec
    Cell = load_text(spec["text"], target=blueprint.target, cell=spec["cell"],
                     path=spec["path"], files=spec["files"])
    cell = Cell(dtype=np.dtype(blueprint.dtype), seed=0, **blueprint.dims)
    for name, value in blueprint.params.items():
        cell.params[name][...] = value
    optimizer = blueprint.optimizer
    optimizer.load_state_dict(optimizer.state_dict())   # its buffers as one flat buffer
    # dropout masks (if the cell has any) from a stream of each rank's own: the rows'
    # masks are independent draws, though not the ones one process would draw
    seed = None if blueprint.seed is None else [blueprint.seed, rank, blueprint.steps]
    trainer = Trainer(cell, loss=blueprint.loss, output=blueprint.output,
                      input=blueprint.input, optimizer=optimizer,
                      clip_norm=blueprint.clip_norm, clip_value=blueprint.clip_value,
                      seed=seed, lr_schedule=blueprint.lr_schedule)
    # no resets of its own: the driver draws them for the whole batch (_apply's `resets`)
    trainer.peak_lr, trainer.schedule_start = blueprint.peak_lr, blueprint.schedule_start
    trainer.steps, trainer.last_lr = blueprint.steps, blueprint.last_lr
    trainer.state = state
    _warm_up(trainer)
    _REPLICAS[run_id] = _Replica(trainer, rank)
    return os.getpid()


def _warm_up(trainer) -> None:
    """One step of one row through forward and backward: the kernels compile (or load
    from the cache) now, not in the first timed step."""
    from ..train.data import token_feed
    cell, spec = trainer.cell, type(trainer.cell).spec
    decl = next(d for d in spec.inputs if d.name == trainer.input)
    V = decl.type.shape[0].evaluate(cell.dims)
    run = cell.forward({trainer.input: token_feed(spec, trainer.input, V, cell.dtype)(
        np.zeros((1, 1), np.int64))})
    cell.backward(run)


def _flat(grads: dict, names: list[str]) -> np.ndarray:
    arrays = [grads[n] for n in names]
    whole = flat_span(arrays)
    return whole if whole is not None else np.concatenate([a.reshape(-1) for a in arrays])


def _unflat(total: np.ndarray, like: dict) -> dict:
    out, at = {}, 0
    for name, p in like.items():
        out[name] = total[at:at + p.size].reshape(p.shape)
        at += p.size
    return out


def _fingerprint(params: dict) -> int:
    crc = 0
    for p in params.values():
        crc = zlib.crc32(np.ascontiguousarray(p).view(np.uint8), crc)
    return crc


def _gradients(run_id: str, x, y, progress, reset: bool, weight: float) -> np.ndarray:
    """Forward and BPTT on this worker's rows; returns the gradient weighted by the
    rows' share of the step's positions (kept here for the reduction)."""
    started = time.perf_counter()
    replica = _replica(run_id)
    trainer = replica.trainer
    if reset:
        trainer.reset_state("train")
    trainer.progress = progress
    loss, grads, run = trainer.gradients(x, y)
    flat = _flat(grads, list(trainer.cell.params))
    flat *= flat.dtype.type(weight)
    replica.pending = (float(loss), int(y.size), run)
    replica.timings = {"compute": time.perf_counter() - started,
                       "computed": time.perf_counter()}
    return flat


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a + b


def _apply(run_id: str, check: bool, resets, *parts: np.ndarray) -> tuple:
    """The last round's sum (or the one gradient), clipped and applied as one process
    applies it, then this replica's rows of the driver's state resets (a mask, or None);
    returns what the driver reports."""
    replica = _replica(run_id)
    started = time.perf_counter()
    waited = started - replica.timings["computed"]
    trainer = replica.trainer
    total = parts[0] if len(parts) == 1 else parts[0] + parts[1]
    loss, positions, run = replica.pending
    replica.pending = None
    trainer.apply(_unflat(total, trainer.cell.params), run)
    trainer.reset_rows(resets)
    fingerprint = _fingerprint(trainer.cell.params) if check else None
    return (loss, positions, trainer.last_grad_norm, trainer.last_lr, trainer.steps,
            fingerprint, replica.timings["compute"] + time.perf_counter() - started, waited)


def _snapshot(run_id: str, full: bool) -> dict:
    """This replica's carried state and fingerprint; with `full`, all that a
    checkpoint holds of the trainer too."""
    trainer = _replica(run_id).trainer
    out = {"state": trainer.state, "fingerprint": _fingerprint(trainer.cell.params)}
    if full:
        out.update(params={k: v.copy() for k, v in trainer.cell.params.items()},
                   optimizer=trainer.optimizer.state_dict(), steps=trainer.steps,
                   last_lr=trainer.last_lr, last_grad_norm=trainer.last_grad_norm)
    return out


def _drop(run_id: str) -> None:
    _REPLICAS.pop(run_id, None)


# ---------------------------------------------------------------------------- driver side
class DataParallel:
    """A Trainer's stand-in whose steps run on the workers at `addresses`, one rank
    each, rows split by `row_slices`. See the module's docstring."""

    def __init__(self, local, client, addresses: list[str], threads: int | None,
                 checkpoint=None, saved_step: int | None = None):
        self.local, self.client, self.addresses = local, client, list(addresses)
        self.threads, self.checkpoint, self.saved_step = threads, checkpoint, saved_step
        self.saved_at = None          # when this run last saved the checkpoint
        self.id = f"rnndsl-dp-{uuid.uuid4().hex[:12]}"
        self.progress = local.progress
        self.steps, self.last_lr = local.steps, local.last_lr
        self.last_grad_norm = local.last_grad_norm
        # a dict a step (wall, compute, exchange), the last TIMINGS_KEPT steps
        self.timings: collections.deque = collections.deque(maxlen=TIMINGS_KEPT)
        self.pids: dict[str, int] = {}
        self._reset = False
        self._stale = False
        self._slices: list[slice] | None = None
        self._held: list = []                   # the last step's futures

    # the Trainer's surface that a training loop and its validation read
    @property
    def cell(self):
        return self.local.cell

    @property
    def input(self):
        return self.local.input

    def _submit(self, rank: int, fn, *args):
        return self.client.submit(fn, *args, workers=[self.addresses[rank]],
                                  allow_other_workers=False, pure=False)

    def start(self) -> None:
        """Make the replicas from the local trainer's state (each with its rows of the
        carried state, when it has one)."""
        from ..train.checkpoint import spec_record
        from ..train.losses import LOSSES
        t = self.local
        if t.loss_name not in LOSSES:
            raise DataParallelError("data-parallel training needs a loss named in "
                                    f"rnndsl.train.losses.LOSSES, not {t.loss_name!r}")
        blueprint = _Blueprint(
            spec=spec_record(type(t.cell)), target=getattr(type(t.cell), "target", "cpu"),
            dims=dict(t.cell.dims), dtype=np.dtype(t.cell.dtype).name, loss=t.loss_name,
            output=t.output, input=t.input, clip_norm=t.clip_norm, clip_value=t.clip_value,
            lr_schedule=t.lr_schedule, peak_lr=t.peak_lr, schedule_start=t.schedule_start,
            steps=t.steps, last_lr=t.last_lr, seed=t.seed, optimizer=t.optimizer,
            params={k: np.array(v) for k, v in t.cell.params.items()}, threads=self.threads)
        state = t.state
        rows = next(iter(state.values())).shape[0] if state else None
        slices = row_slices(rows, len(self.addresses)) if rows else None
        futures = []
        for rank in range(len(self.addresses)):
            part = ({k: v[slices[rank]] for k, v in state.items()}
                    if slices and slices[rank].stop > slices[rank].start else None)
            futures.append(self._submit(rank, _make_replica, self.id, rank, blueprint, part))
        self.pids = dict(zip(self.addresses, self._results(futures)))

    def step(self, x, targets) -> float:
        """One synchronous step of the whole batch (x and targets as the Trainer takes
        them), its rows split across the workers; returns the batch's mean loss."""
        started = time.perf_counter()
        B, n = targets.shape[1], len(self.addresses)
        if n > B:
            raise DataParallelError(f"a batch of {B} rows cannot be split across {n} "
                                    "workers")
        slices = self._slices = row_slices(B, n)
        check = (self.steps + 1) % FINGERPRINT_EVERY == 0
        total = targets.size
        grads = [self._submit(r, _gradients, self.id, np.ascontiguousarray(x[:, s]),
                              np.ascontiguousarray(targets[:, s]), self.progress,
                              self._reset, targets[:, s].size / total)
                 for r, s in enumerate(slices)]
        # the state resets drawn here for the whole batch, as one process draws them
        resets = self.local.draw_resets(B)
        applied = self._reduce_and_apply(grads, check, resets)
        # the last step's futures are let go only now: releasing them just before
        # submitting would hold this step's submission back by the client's batching
        # interval (10 ms: one message to the scheduler per interval at most)
        self._held = grads + applied
        try:
            results = self._results(applied)
        except ValueError:          # a loss refusing non-finite logits: show the params
            self._stale = True
            self.sync(check=False)
            raise
        self._reset, self._stale = False, True
        loss = sum(r[0] * r[1] for r in results) / sum(r[1] for r in results)
        _, _, self.last_grad_norm, self.last_lr, self.steps, _, _, _ = results[0]
        if check:
            self._compare([r[5] for r in results], "after the update")
        self.timings.append({"wall": time.perf_counter() - started,
                             "compute": max(r[6] for r in results),
                             "exchange": max(r[7] for r in results)})
        return loss

    def _reduce_and_apply(self, grads: list, check: bool, resets=None) -> list:
        """The all-reduce's tasks (see the module's docstring), the last round fused
        into each worker's update (with its rows of the state resets); returns the
        updates' futures, in rank order."""
        n = len(grads)
        P, distances = reduction_rounds(n)
        part = list(grads[:P])
        for e in range(P, n):                   # fold the ranks beyond P
            part[e - P] = self._submit(e - P, _add, grads[e - P], grads[e])
        for d in distances[:-1]:
            part = [self._submit(i, _add, part[min(i, i ^ d)], part[max(i, i ^ d)])
                    for i in range(P)]
        applied = []
        for rank in range(n):
            i = rank if rank < P else rank - P
            if not distances:
                operands = (part[0],)
            else:
                d = distances[-1]
                operands = (part[min(i, i ^ d)], part[max(i, i ^ d)])
            mine = None
            if resets is not None and resets[self._slices[rank]].any():
                mine = resets[self._slices[rank]]
            applied.append(self._submit(rank, _apply, self.id, check, mine, *operands))
        return applied

    def _results(self, futures: list) -> list:
        """The futures' results, checking while waiting that every worker lives (a
        task pinned to a dead worker would wait for ever). A step takes no extra round
        trip for the check unless it runs longer than POLL_S.

        Each result is waited for with that timeout until it is here, not only until its
        task has finished: a worker that dies after its task finished and before its
        result is fetched loses that result, and the scheduler runs the task again,
        pinned to the dead worker, so an unbounded gather (as `Client.gather` is) waited
        for ever (an outside test saw 3 hangs in 15 kills)."""
        results = []
        for future in futures:
            while True:
                try:
                    results.append(future.result(timeout=POLL_S))
                    break
                except TimeoutError:
                    self._check_workers()
        return results

    def _check_workers(self) -> None:
        alive = set(self.client.scheduler_info(n_workers=-1)["workers"])
        lost = [a for a in self.addresses if a not in alive]
        if lost:
            raise WorkerLost(self._lost_text(lost))

    def _lost_text(self, lost: list[str]) -> str:
        slices = self._slices or [None] * len(self.addresses)
        named = []
        for a in lost:
            s = slices[self.addresses.index(a)]
            rows = f", rows {s.start}-{s.stop - 1} of each batch" if s is not None else ""
            named.append(f"{a} (pid {self.pids.get(a, '?')}{rows})")
        several = len(named) > 1
        return (f"Dask worker{'s' if several else ''} {', '.join(named)} "
                f"{'were' if several else 'was'} "
                f"lost during step {self.steps + 1}: the run stopped there")

    def _compare(self, fingerprints: list[int], when: str) -> None:
        if len(set(fingerprints)) > 1:
            raise ReplicasDiverged(
                f"the workers' params differ at step {self.steps} ({when}): CRC-32s "
                + ", ".join(f"{a}: {f:08x}" for a, f in zip(self.addresses, fingerprints))
                + ". They add the same gradients in the same order, so a worker computed "
                "differently (another CPU or library version?); "
                + self._saved_text())

    def _saved_text(self) -> str:
        if self.saved_step is None:
            return "no checkpoint was written by this run yet"
        return f"the checkpoint {self.checkpoint} holds step {self.saved_step}, intact"

    # ------------------------------------------------------------------ the driver's copy
    def sync(self, check: bool = True) -> None:
        """The local trainer takes the workers' state (rank 0's params and optimiser,
        every rank's rows of the carried state), as one process would hold it now."""
        self.local.progress = self.progress
        if not self._stale:
            return
        futures = [self._submit(r, _snapshot, self.id, r == 0)
                   for r in range(len(self.addresses))]
        snaps = self._results(futures)
        if check:
            self._compare([s["fingerprint"] for s in snaps], "at a checkpoint")
        first, t = snaps[0], self.local
        for name, value in first["params"].items():
            t.cell.params[name][...] = value
        t.optimizer.load_state_dict(first["optimizer"])
        t.optimizer.hyper["lr"] = first["last_lr"]
        t.steps, t.last_lr = first["steps"], first["last_lr"]
        t.last_grad_norm = first["last_grad_norm"]
        states = [s["state"] for s in snaps]
        t.state = (None if any(s is None for s in states) else
                   {k: np.concatenate([s[k] for s in states]) for k in states[0]})
        self._stale = False

    def save(self, path, meta: dict | None = None) -> None:
        self.sync()
        self.local.save(path, meta)
        if self.checkpoint is not None and os.path.abspath(path) == \
                os.path.abspath(self.checkpoint):
            self.saved_step, self.saved_at = self.local.steps, time.monotonic()

    def evaluate(self, *args, **kwargs) -> float:
        self.sync()
        return self.local.evaluate(*args, **kwargs)

    def reset_state(self, which: str = "both") -> None:
        self.local.reset_state(which)
        if which in ("train", "both"):
            self._reset = True

    def close(self) -> None:
        """Forget the replicas (a joined cluster lives on), on the workers still there
        (asking a dead one would wait for Dask's timeout)."""
        with contextlib.suppress(Exception):
            alive = set(self.client.scheduler_info(n_workers=-1)["workers"])
            there = [a for a in self.addresses if a in alive]
            if there:
                self.client.run(_drop, self.id, workers=there, on_error="ignore")

    def describe_steps(self) -> str:
        m = {k: f"{1e3 * v:.1f} ms" for k, v in self.overhead().items()}
        # each a median of its own: the exchange, which includes a worker's wait for the
        # slowest one's gradient, overlaps the compute, so it is no part of the rest
        return (f"data parallel: a step took {m['wall']} (median of the last "
                f"{len(self.timings)}): {m['compute']} computing on the slowest worker, "
                f"{m['overhead']} more in Dask; the gradients' exchange {m['exchange']} "
                "(from a worker's gradient to its update, the wait for the slowest "
                "included)")

    def overhead(self) -> dict:
        """Median seconds a step: its wall time, the slowest worker's compute, the
        gradient exchange (from a worker's gradient to its update's start) and the
        rest (scheduling and the driver's round trip)."""
        if not self.timings:
            return {}
        med = {k: float(np.median([t[k] for t in self.timings]))
               for k in ("wall", "compute", "exchange")}
        med["overhead"] = med["wall"] - med["compute"]
        return med


# ---------------------------------------------------------------------------- the run
def _addresses(client, placement: Placement, batch: int) -> list[str]:
    """The workers to use, in a fixed order: all of a cluster started here; of a joined
    one (open_client waited for one to be there), as many as the batch has rows."""
    workers = sorted(client.scheduler_info(n_workers=-1)["workers"])
    return workers[:batch]


@contextlib.contextmanager
def spread(run, placement: Placement, batch: int, resume, out=None):
    """Run `run`'s training steps on the placement's cluster: `run.trainer` (a Trainer)
    is replaced by a `DataParallel` inside, and holds the workers' final state on
    leaving. A lost worker becomes a `WorkerLost` that names the checkpoint left
    intact and the command that continues it: `resume(steps, saved_at)`, given the
    steps of this run that the checkpoint holds and when it was saved (time.monotonic;
    None, None where it holds none of them), since the command gives what is left of
    --steps and --minutes."""
    local = run.trainer
    started = time.monotonic()
    first = local.steps
    saved = local.steps if run.plan.resume else None
    with open_client(placement) as client:
        addresses = _addresses(client, placement, batch)
        dp = DataParallel(local, client, addresses, placement.threads,
                          checkpoint=run.plan.checkpoint, saved_step=saved)
        try:
            dp.start()
            if out is not None:
                print(describe(placement, batch, len(addresses), time.monotonic() - started),
                      file=out, flush=True)
            run.trainer = dp
            yield dp
            dp.sync()
            if out is not None and dp.timings:
                print(dp.describe_steps(), file=out, flush=True)
        except WorkerLost as exc:
            ran = dp.saved_step is not None and dp.saved_step > first
            command = resume(dp.saved_step - first, dp.saved_at) if ran else \
                resume(None, None)
            raise WorkerLost(f"{exc}. {dp._saved_text().capitalize()}; resume it (with any "
                             f"--workers, or none) with:\n  {command}") from None
        finally:
            run.trainer = local
            if placement.scheduler is not None:
                dp.close()


def describe(placement: Placement, batch: int, n: int, seconds: float) -> str:
    sizes = sorted({s.stop - s.start for s in row_slices(batch, n)})
    rows = " or ".join(map(str, sizes))
    where = (f"the Dask cluster at {placement.scheduler}" if placement.scheduler else
             "a Dask LocalCluster")
    threads = ("" if placement.threads is None else
               f", {placement.threads} kernel thread{'s' if placement.threads > 1 else ''} "
               "each")
    return (f"data parallel: {n} worker{'s' if n > 1 else ''} on {where}, {rows} of the "
            f"{batch} rows of each batch each{threads}; gradients all-reduced each step "
            f"(ready in {seconds:.1f} s)")
