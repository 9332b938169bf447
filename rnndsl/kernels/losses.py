"""Compiled loops of a training step's loss: softmax cross-entropy and its gradient, in
one pass over the logits in memory.

Input: logits (N, V) of float32 or float64, C-contiguous; targets (N,) class ids; a mask
(N,) of booleans, or an empty one for "every row". Output: d_logits (N, V), written
whole, and each row's -log softmax(logits)[target] in float64 (0 where the mask says).
Invariant: no library call (no BLAS, no thread pool), one thread, and nothing written to
the logits. Where a value is inf or NaN, or a target is out of range, the call stops and
says so (its status); the caller then goes the NumPy way, which words the error
(rnndsl.train.losses).

Why compiled: NumPy's version makes about ten passes over the (T*B, V) logits, most with
a temporary (max, subtract, exp, sum, take, divide, put, scale, the finiteness check);
this one reads each row from memory once and works on it in L1:

    for r in rows:            (every row checked, masked or not, as NumPy checks them all)
        check: no inf or NaN in logits[r]; m = max(logits[r]); 0 <= targets[r] < V
        if the mask leaves row r out: d_logits[r] = 0; next row
        e = exp(logits[r] - m) into d_logits[r]; s = sum(e) in float64
        nll[r] = log(s) - (logits[r, t] - m)               t = targets[r]
        d_logits[r] = (e / s - onehot(t)) / count          NumPy's order of rounding

Optimizations: the check and the max are one pass over the values read as integers
(their max vectorises; a float max did not, fastmath flags or not), the sum is
reassociated so that it vectorises, and float32 exp is a polynomial in plain float32
arithmetic (Cephes' expf, within 1.4 ulp of the exact value), which vectorises where
libm's exp stays scalar (about 10 ns an element here). float64 calls libm's exp. The
main job's logits (2048 x 163 float32): 0.33 ms, against NumPy's 0.70.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from .loops import serialise_numba_cache_saves

serialise_numba_cache_saves()

OK, NON_FINITE, BAD_TARGET = 0, 1, 2      # the statuses `softmax_cross_entropy` returns

# float32 exp (Cephes expf): x = n ln 2 + r, |r| <= ln 2 / 2, e^r by a polynomial, times
# 2^n made from its bits (a table lookup instead, a gather, kept the loop from
# vectorising: 1.1 ms against 0.15 for the logits of the main job). The arguments are
# <= 0 here; below -87 the result is 0 (e^-87 is 1.6e-38; 2^n stays a normal float).
_F32 = np.float32
_LOG2E = _F32(1.44269504088896341)
_LN2_HI = _F32(0.693359375)
_LN2_LO = _F32(-2.12194440e-4)
_EXP_LOW = _F32(-87.0)
_HALF = _F32(0.5)
_ONE = _F32(1.0)
_ZERO = _F32(0.0)
_E0, _E1, _E2, _E3, _E4, _E5 = (_F32(c) for c in (
    1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
    5.0000001201e-1))
_BIAS = np.int32(127)
_MANTISSA_BITS = np.int32(23)


@njit(cache=True, nogil=True, error_model="numpy")
def _exp_f32_row(row, m, e):
    """e[j] = exp(row[j] - m) for float32 (row[j] <= m); returns their sum in float64.
    No fastmath here: reassociating would undo the two-part ln 2 of the reduction."""
    for j in range(row.size):
        x = row[j] - m
        low = x < _EXP_LOW
        x = _EXP_LOW if low else x
        n = np.floor(x * _LOG2E + _HALF)
        r = x - n * _LN2_HI - n * _LN2_LO
        p = _E0 * r + _E1
        p = p * r + _E2
        p = p * r + _E3
        p = p * r + _E4
        p = p * r + _E5
        two_n = np.int32((np.int32(n) + _BIAS) << _MANTISSA_BITS).view(np.float32)
        e[j] = _ZERO if low else (p * r * r + r + _ONE) * two_n
    return _sum64(e)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "nsz"})
def _sum64(e):
    """The sum of e in float64, reassociated (so that it vectorises)."""
    s = 0.0
    for j in range(e.size):
        s += np.float64(e[j])
    return s


@njit(cache=True, nogil=True, error_model="numpy")
def _exp_f64_row(row, m, e):
    """e[j] = exp(row[j] - m) by libm, in float64; returns the sum."""
    s = 0.0
    for j in range(row.size):
        v = math.exp(row[j] - m)
        e[j] = v
        s += v
    return s


def exp_row(row, m, e):
    """e[j] = exp(row[j] - m), returning the sum in float64: `_exp_f32_row` for float32,
    libm's exp for float64 (chosen as Numba compiles it; plain Python under
    NUMBA_DISABLE_JIT)."""
    s = 0.0
    for j in range(row.size):
        e[j] = math.exp(row[j] - m)
        s += float(e[j])
    return s


@overload(exp_row, jit_options={"error_model": "numpy"})
def _exp_row_impl(row, m, e):
    if isinstance(row.dtype, types.Float) and row.dtype.bitwidth == 32:
        return lambda row, m, e: _exp_f32_row(row, m, e)
    return lambda row, m, e: _exp_f64_row(row, m, e)


@njit(cache=True, nogil=True, error_model="numpy")
def _check_and_max(bits, exponent, sign_shift, magnitude):
    """One pass over a row's values read as integers: (the largest `bits & exponent`,
    equal to `exponent` iff a value is inf or NaN; the bits of the largest value).
    Integers because their max vectorises and a float max did not (0.12 ms against
    0.03 for the main job's logits, flags or not): flipping a negative float's
    magnitude bits orders the floats as signed integers (-0.0 just below 0.0), and
    flipping them back gives the float's bits."""
    top = bits[0] & exponent
    best = bits[0] ^ ((bits[0] >> sign_shift) & magnitude)
    for j in range(1, bits.size):
        b = bits[j]
        e = b & exponent
        top = e if e > top else top
        k = b ^ ((b >> sign_shift) & magnitude)
        best = k if k > best else best
    return top, best ^ ((best >> sign_shift) & magnitude)


@njit(cache=True, nogil=True, error_model="numpy")
def softmax_cross_entropy(logits, bits, exponent, sign_shift, magnitude, targets, mask, count,
                          d_logits, nll):
    """The status; d_logits written, and nll (N,) float64: each row's -log
    softmax[target], 0 for a row the mask leaves out (the caller sums them, so that the
    sum's order is its own, whatever rows a call covers).

    logits, d_logits: (N, V) of one float dtype, C-contiguous; bits: the logits' N * V
    values read as integers of their width, and exponent, sign_shift, magnitude: their
    exponent bits, sign position and magnitude bits (`as_bits` gives all four); targets
    (N,) ints; mask (N,) booleans or empty (every row kept); count: the number of kept
    rows of the whole the call is part of, > 0."""
    N, V = logits.shape
    dtype = logits.dtype.type
    c = dtype(count)
    one = dtype(1)
    zero = dtype(0)
    keep_all = mask.size == 0
    top_bits = np.empty(1, bits.dtype)       # a row's max: its bits in, its value out
    top_value = top_bits.view(logits.dtype)
    for r in range(N):
        top, m_bits = _check_and_max(bits[r * V:(r + 1) * V], exponent, sign_shift,
                                     magnitude)
        if top == exponent:
            return NON_FINITE
        t = targets[r]
        if t < 0 or t >= V:
            return BAD_TARGET
        row = logits[r]
        d = d_logits[r]
        if not (keep_all or mask[r]):
            for j in range(V):
                d[j] = zero
            nll[r] = 0.0
            continue
        top_bits[0] = m_bits
        m = top_value[0]
        s = exp_row(row, m, d)
        nll[r] = math.log(s) - np.float64(row[t] - m)
        # NumPy's order: (e / sum - onehot) / count, each rounded in the logits' dtype
        s_t = dtype(s)
        e_t = d[t]
        for j in range(V):
            d[j] = d[j] / s_t / c
        d[t] = (e_t / s_t - one) / c
    return OK


def as_bits(a: np.ndarray) -> tuple:
    """A C-contiguous float32 or float64 array's values as integers of their width (a
    flat view), the mask of their exponent bits, the sign's position and the mask of
    the magnitude bits: the first four arguments of `softmax_cross_entropy` after it."""
    if a.dtype == np.float32:
        return (a.reshape(-1).view(np.int32), np.int32(0x7F800000), np.int32(31),
                np.int32(0x7FFFFFFF))
    return (a.reshape(-1).view(np.int64), np.int64(0x7FF0000000000000), np.int64(63),
            np.int64(0x7FFFFFFFFFFFFFFF))
