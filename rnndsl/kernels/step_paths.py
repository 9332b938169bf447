"""A recurrent step's stacked GEMM, (B, K) @ (K, N) with N = members x n, run the ways a
kernel can run it, `calls` times over, from compiled code as the kernels call it:

- `one_call`: one BLAS call on the stacked weights;
- `by_member`: one BLAS call a member (each (K, n) block of the stack);
- `in_tiles`: rnndsl's register tiles (rnndsl.kernels.gemm), one thread.

rnndsl.build.machine times them at first use to choose, for the CPU and BLAS at hand,
where the kernels switch from one to the next; benchmarks/step_gemm_paths.py prints them.
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit

from .gemm import NR, pack_cols_t, packed_gemm_8x16

# The marks are timed below MR rows (at most 6 here), where the tiles of either shape run
# a row at a time: the 8-row tiles' driver is that on any machine, whatever its own MR.


@njit(cache=True, nogil=True, error_model="numpy")
def one_call(h, wt, out, calls):
    for _ in range(calls):
        np.dot(h, wt, out)


@njit(cache=True, nogil=True, error_model="numpy")
def by_member(h, parts, outs, calls):
    for _ in range(calls):
        for k in range(parts.shape[0]):
            np.dot(h, parts[k], outs[k])


@njit(cache=True, nogil=True, error_model="numpy")
def in_tiles(h, wp, out, calls):
    for _ in range(calls):
        packed_gemm_8x16(h, wp, out, 1)


class StepOperands:
    """The arrays of one step's GEMM, (B, K) @ (K, members * n), in each way's layout."""

    def __init__(self, B: int, K: int, n: int, members: int, dtype=np.float32, seed=0):
        rng = np.random.default_rng(seed)
        N = members * n
        W = rng.standard_normal((N, K)).astype(dtype)       # as a param: (N, K)
        self.B, self.K, self.n, self.members = B, K, n, members
        self.h = rng.standard_normal((B, K)).astype(dtype)
        self.wt = np.ascontiguousarray(W.T)
        self.parts = np.ascontiguousarray(self.wt.reshape(K, members, n).transpose(1, 0, 2))
        self.out = np.empty((B, N), dtype)
        self.outs = np.empty((members, B, n), dtype)
        self.wp = np.zeros((-(-N // NR), K, NR), dtype)
        pack_cols_t(self.wp, W, 0)

    @property
    def product(self) -> int:
        """B * K * N, the stacked product's size (multiply-adds)."""
        return self.B * self.K * self.n * self.members

    def seconds(self, way: str, calls: int, rounds: int = 3) -> float:
        """The best of `rounds` runs of `calls` calls, in seconds a call."""
        fn, args = {"one call": (one_call, (self.h, self.wt, self.out)),
                    "by member": (by_member, (self.h, self.parts, self.outs)),
                    "tiles": (in_tiles, (self.h, self.wp, self.out))}[way]
        fn(*args, 1)
        best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            fn(*args, calls)
            best = min(best, (time.perf_counter() - t0) / calls)
        return best
