"""Data-parallel training's costs on this machine: a step in one process, and on a Dask
LocalCluster of 1 and 2 workers (rnndsl.distributed.data_parallel), split into compute,
gradient exchange and the rest; and the exchange alone (one gradient moved between
two workers and added, as the all-reduce does it), against the gradient's size.

    .venv/bin/python benchmarks/data_parallel.py                  # the main job's model
    .venv/bin/python benchmarks/data_parallel.py --H 64 --steps 20 --json dp.json

The model is `rnndsl train`'s default: specs/char_lstm.rnn, H=128, batch 32 x 64 steps,
float32, compiled for the CPU, on the standard library's source. Each configuration
runs --warm steps first (not timed), then --steps timed ones; medians are reported.
The numbers feed docs/scale.md ("Data-parallel training").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import rnndsl  # noqa: E402
from rnndsl.distributed.cluster import Placement, open_client  # noqa: E402
from rnndsl.distributed.data_parallel import DataParallel  # noqa: E402
from rnndsl.kernels.blas import usable_cores  # noqa: E402
from rnndsl.train import corpora  # noqa: E402
from rnndsl.train.data import Vocab, tbptt_batches  # noqa: E402
from rnndsl.train.optim import Adam  # noqa: E402
from rnndsl.train.trainer import Trainer  # noqa: E402


def _trainer(args, V: int) -> Trainer:
    Cell = rnndsl.load(str(REPO / "specs" / "char_lstm.rnn"), target=args.target)
    cell = Cell(V=V, H=args.H, dtype=np.float32, seed=0)
    return Trainer(cell, output="logits", input="x", optimizer=Adam(5e-3), clip_norm=5.0)


def _chunks(args):
    text = corpora.stdlib_corpus(max_chars=args.chars).text
    vocab = Vocab.from_text(text)
    batches = list(tbptt_batches(vocab.encode(text), args.batch, args.seq))
    return len(vocab), batches


def in_process(args, V, batches) -> dict:
    """Trainer.step here, the kernels on every core."""
    os.environ["RNNDSL_BLAS_THREADS"] = str(usable_cores())
    trainer = _trainer(args, V)
    times = []
    for k in range(args.warm + args.steps):
        x, y = batches[k % len(batches)]
        started = time.perf_counter()
        trainer.step(x, y)
        if k >= args.warm:
            times.append(time.perf_counter() - started)
    return {"wall": statistics.median(times), "threads": usable_cores(),
            "params": sum(p.size for p in trainer.cell.params.values())}


def spread(args, V, batches, workers: int) -> dict:
    """DataParallel.step on a LocalCluster of `workers`, cores shared out."""
    threads = max(1, usable_cores() // workers)
    trainer = _trainer(args, V)
    with open_client(Placement(workers, threads)) as client:
        addresses = sorted(client.scheduler_info(n_workers=-1)["workers"])
        dp = DataParallel(trainer, client, addresses, threads)
        dp.start()
        for k in range(args.warm + args.steps):
            x, y = batches[k % len(batches)]
            dp.step(x, y)
        for _ in range(args.warm):          # the untimed steps' timings
            dp.timings.popleft()
        result = {**dp.overhead(), "threads": threads}
        if workers == 2:
            result["exchange_alone"] = exchange_alone(client, addresses, trainer, args)
        return result


def _add(a, b):
    return a + b


def _make(n: int, dtype: str):
    return np.ones(n, dtype)


def exchange_alone(client, addresses, trainer, args) -> dict:
    """One gradient-sized array made on each worker, then rank 0 adds rank 1's to its
    own (a transfer and an add, scheduled by Dask): the all-reduce's round for N=2,
    without compute or waiting on a slower worker; and an empty task's round trip."""
    n = sum(p.size for p in trainer.cell.params.values())
    a = client.submit(_make, n, "float32", workers=[addresses[0]], pure=False)
    b = client.submit(_make, n, "float32", workers=[addresses[1]], pure=False)
    client.gather([a, b])
    from distributed import wait
    rounds, empties, kept = [], [], []      # kept: a release would delay the next submit
    for _ in range(args.steps):
        started = time.perf_counter()       # waited for, not fetched: it stays there
        kept.append(client.submit(_add, a, b, workers=[addresses[0]], pure=False))
        wait(kept[-1:])
        rounds.append(time.perf_counter() - started)
        started = time.perf_counter()
        kept.append(client.submit(len, "", workers=[addresses[0]], pure=False))
        wait(kept[-1:])
        empties.append(time.perf_counter() - started)
    del kept
    return {"bytes": 4 * n, "round": statistics.median(rounds),
            "empty_task": statistics.median(empties)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--H", type=int, default=128)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warm", type=int, default=3)
    p.add_argument("--chars", type=int, default=2_000_000)
    p.add_argument("--target", default="cpu")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    V, batches = _chunks(args)
    results = {"model": f"char_lstm H={args.H}, batch {args.batch} x {args.seq}, float32, "
                        f"{args.target}", "cores": usable_cores(),
               "one_process": in_process(args, V, batches)}
    for workers in (1, 2):
        if workers <= usable_cores():
            results[f"workers_{workers}"] = spread(args, V, batches, workers)
    print(json.dumps(results, indent=2))
    ms = lambda s: f"{1e3 * s:.1f} ms"   # noqa: E731
    one = results["one_process"]
    print(f"\n{results['model']}; {one['params']:,} params; {results['cores']} cores")
    print(f"one process ({one['threads']} threads): {ms(one['wall'])} a step")
    for workers in (1, 2):
        r = results.get(f"workers_{workers}")
        if r:
            print(f"{workers} worker(s) x {r['threads']} thread(s): {ms(r['wall'])} a step = "
                  f"compute {ms(r['compute'])} + the rest {ms(r['overhead'])} (of which "
                  f"exchange, waiting included: {ms(r['exchange'])})")
    alone = results.get("workers_2", {}).get("exchange_alone")
    if alone:
        print(f"a gradient ({alone['bytes'] / 1e6:.2f} MB) moved and added: "
              f"{ms(alone['round'])}; an empty task's round trip: {ms(alone['empty_task'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
