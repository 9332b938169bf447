"""Two ways of one cell timed call by call: the benchmarks' shared loops
(final_at_end.py, readout_after.py; inference_twin.py, block_copies.py)."""

from __future__ import annotations

import statistics
import time


def interleaved_ms(cells: dict, x, d: dict, repeat: int, warm: int = 3) -> dict:
    """{(way, "f" | "fb"): median ms} of each cell's forward and forward+BPTT (backward
    without input gradients), the ways alternating call by call (each first half the
    time), after `warm` untimed rounds."""
    times = {(way, part): [] for way in cells for part in ("f", "fb")}
    ways = list(cells)
    for i in range(repeat + warm):
        for way in (ways if i % 2 else ways[::-1]):
            cell = cells[way]
            t0 = time.perf_counter()
            run = cell.forward(x)
            t1 = time.perf_counter()
            cell.backward(run, d, input_grads=False)
            t2 = time.perf_counter()
            if i >= warm:
                times[way, "f"].append(t1 - t0)
                times[way, "fb"].append(t2 - t0)
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def alternating_s(ways: dict, call, rounds: int, warm: int = 2) -> dict:
    """{way: [seconds]} of `call()` with each way in place in turn, call by call:
    `ways[name]` is a context manager factory that puts that way in place around one
    call. The first `warm` rounds are not kept."""
    times: dict = {way: [] for way in ways}
    for k in range(rounds + warm):
        for way, within in ways.items():
            with within():
                t0 = time.perf_counter()
                call()
                elapsed = time.perf_counter() - t0
            if k >= warm:
                times[way].append(elapsed)
    return times


def best_median_cells(a: list, b: list) -> str:
    """Table cells for two ways' seconds: best / median ms of each, then the ratio of
    their medians (a over b)."""
    ma, mb = statistics.median(a), statistics.median(b)
    return (f"{1e3 * min(a):.3f} / {1e3 * ma:.3f} | {1e3 * min(b):.3f} / {1e3 * mb:.3f} | "
            f"{ma / mb:.3f} |")


def ab_cells(ms: dict, digits: int = 2) -> str:
    """The table cells after a row's label: forward on, off, off/on, then forward+BPTT."""
    out = []
    for part in ("f", "fb"):
        on, off = ms["on", part], ms["off", part]
        out += [f"{on:.{digits}f}", f"{off:.{digits}f}", f"{off / on:.2f}"]
    return " | ".join(out) + " |"
