"""Keep freed memory in the process for reuse, instead of returning it to the OS.

Every forward allocates its tapes and outputs afresh (T*B*H floats each; 29 of them for
the layer-normalised LSTM), and the generated kernels allocate their work arrays the same
way. glibc's malloc serves each block above its mmap threshold (128 KB to 32 MB) with a
fresh mmap and unmaps it on free, so the next call touches new pages and pays a page
fault for each: measured here (a VM), allocating and filling 29 arrays of 100x16x128
float32 takes about 10 ms as malloc comes and under 1.3 ms tuned, and the LSTM's forward
at the benchmark's small shape goes from 9.1-12.2 ms to 4.3-6.3 ms (one BLAS thread;
`benchmarks/malloc_effect.py`, recorded in benchmarks/RESULTS.md).

`keep_freed_memory()` raises the mmap threshold to 1 GiB and the trim threshold to 2 GiB
with mallopt(3), so that such blocks come from the heap and a freed one is handed out
again. It is process-wide and the trade is the one PyTorch's caching allocator makes:
the process holds on to memory at its peak. Compiled cells call it when they are made;
RNNDSL_MALLOC=system leaves malloc as it is. On anything but glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = (1 << 31) - 1       # mallopt takes a C int

_state: dict[str, bool] = {}


def keep_freed_memory() -> bool:
    """Tune glibc's malloc once per process; True when it is tuned."""
    if "tuned" not in _state:
        _state["tuned"] = _tune()
    return _state["tuned"]


def _tune() -> bool:
    if os.environ.get("RNNDSL_MALLOC") == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):          # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
