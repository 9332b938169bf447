"""Two ways of one cell timed call by call: the pass benchmarks' shared loop
(final_at_end.py, readout_after.py)."""

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


def ab_cells(ms: dict, digits: int = 2) -> str:
    """The table cells after a row's label: forward on, off, off/on, then forward+BPTT."""
    out = []
    for part in ("f", "fb"):
        on, off = ms["on", part], ms["off", part]
        out += [f"{on:.{digits}f}", f"{off:.{digits}f}", f"{off / on:.2f}"]
    return " | ".join(out) + " |"
