"""Loops and scalar functions that every generated CPU module imports.

Kept in one real module so that Numba compiles each once per array type and caches it on
disk for all cells (`cache=True`), instead of once per generated module. Copies, fills
and transposes are explicit loops: Numba's slice assignment costs about half a second of
compile time at every place it is written.
"""

import math

import numpy as np
from numba import njit


@njit(cache=True, error_model="numpy")
def copy1(dst, src):
    for j in range(dst.shape[0]):
        dst[j] = src[j]


@njit(cache=True, error_model="numpy")
def copy2(dst, src):
    for r in range(dst.shape[0]):
        for j in range(dst.shape[1]):
            dst[r, j] = src[r, j]


@njit(cache=True, error_model="numpy")
def copy_rows(dst, src):
    # every row of dst gets the vector src
    for r in range(dst.shape[0]):
        for j in range(dst.shape[1]):
            dst[r, j] = src[j]


@njit(cache=True, error_model="numpy")
def copy_t(dst, src):
    # dst = src transposed
    for i in range(dst.shape[0]):
        for j in range(dst.shape[1]):
            dst[i, j] = src[j, i]


@njit(cache=True, error_model="numpy")
def transposed(src):
    out = np.empty((src.shape[1], src.shape[0]), src.dtype)
    copy_t(out, src)
    return out


@njit(cache=True, error_model="numpy")
def fill1(dst, value):
    for j in range(dst.shape[0]):
        dst[j] = value


@njit(cache=True, error_model="numpy")
def fill2(dst, value):
    for r in range(dst.shape[0]):
        for j in range(dst.shape[1]):
            dst[r, j] = value


@njit(cache=True, error_model="numpy")
def add_into1(dst, src):
    for j in range(dst.shape[0]):
        dst[j] += src[j]


@njit(cache=True, error_model="numpy")
def add_into2(dst, src):
    for r in range(dst.shape[0]):
        for j in range(dst.shape[1]):
            dst[r, j] += src[r, j]

@njit(cache=True, error_model="numpy")
def sigmoid(x, one):
    # 1 / (1 + exp(-x)), written so that exp never overflows
    if x >= 0:
        return one / (one + math.exp(-x))
    e = math.exp(x)
    return e / (one + e)


@njit(cache=True, error_model="numpy")
def softplus(x, zero, one):
    # log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), stable at both ends
    return max(x, zero) + math.log1p(math.exp(-abs(x)))


@njit(cache=True, error_model="numpy")
def sign(x, zero, one):
    if x > zero:
        return one
    if x < zero:
        return -one
    return zero
