"""The helpers kernels call are compiled once per type signature, not once per constant.

A generated kernel passes constants to its helpers (`stack_rows_seen(ws, 0, W, seen, 6)`,
`pack_cols_t(wp, U, 0)`). Numba types a constant as Literal[int](6), and a plain
dispatcher compiles a version of the helper for each value, every one of them linked
into the kernel (rnndsl.kernels.loops._HelperDispatcher).
"""

from __future__ import annotations

import numpy as np
from numba import njit, types

from rnndsl.kernels import gemm, loops


@njit(error_model="numpy")
def _stack_two(dst, a, b, seen):
    loops.stack_rows_seen(dst, 0, a, seen, 3)
    loops.stack_rows_seen(dst, 2, b, seen, 5)


@njit(error_model="numpy")
def _pack_two(panels, a, b):
    gemm.pack_cols_t(panels, a, 0)
    gemm.pack_cols_t(panels, b, 3)


def _literal_signatures(dispatcher) -> list:
    return [sig for sig in dispatcher.signatures
            if any(isinstance(t, types.Literal) for t in sig)]


def test_constant_arguments_do_not_make_a_version_each():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    b = np.arange(6, 12, dtype=np.float32).reshape(2, 3)
    dst = np.zeros((4, 3), np.float32)
    seen = np.zeros(8, np.uint64)
    before = set(loops.stack_rows_seen.signatures)
    _stack_two(dst, a, b, seen)

    assert np.array_equal(dst, np.vstack([a, b]))
    assert seen[3] == loops.fingerprint(a) and seen[5] == loops.fingerprint(b)
    assert seen[3] != seen[5] and not seen[[0, 1, 2, 4, 6, 7]].any()
    new = set(loops.stack_rows_seen.signatures) - before
    # one version for these types (none where a kernel of this process made it already)
    assert len(new) <= 1, f"two calls' constants made versions {sorted(map(str, new))}"
    assert not _literal_signatures(loops.stack_rows_seen)


def test_pack_cols_t_at_two_constant_offsets_is_one_version():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    b = np.arange(12, 24, dtype=np.float32).reshape(3, 4)
    panels = np.zeros((1, 4, gemm.NR), np.float32)
    before = set(gemm.pack_cols_t.signatures)
    _pack_two(panels, a, b)

    assert np.array_equal(panels[0, :, :6], np.hstack([a.T, b.T]))
    assert len(set(gemm.pack_cols_t.signatures) - before) <= 1
    assert not _literal_signatures(gemm.pack_cols_t)
