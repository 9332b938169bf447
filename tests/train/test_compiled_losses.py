"""The compiled softmax cross-entropy (rnndsl.kernels.losses) against the NumPy path it
replaces in a training step (losses.softmax_cross_entropy_numpy, itself checked against
naive formulas in test_losses.py): the same loss and gradient, the same errors, the
same refusals, in float32 (to 1e-6) and float64 (to 1e-12)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rnndsl.kernels import losses as kernels
from rnndsl.train import losses
from rnndsl.train.losses import softmax_cross_entropy, softmax_cross_entropy_numpy

TOLERANCE = {np.float32: 1e-6, np.float64: 1e-12}


@pytest.fixture
def compiled_only(monkeypatch):
    """softmax_cross_entropy must not fall back to NumPy (the call under test is the
    compiled one)."""
    def refuse(*args, **kwargs):
        raise AssertionError("took the NumPy path")
    monkeypatch.setattr(losses, "softmax_cross_entropy_numpy", refuse)


def check_same(logits, targets, mask=None):
    rtol = TOLERANCE[logits.dtype.type]
    want_loss, want_d = softmax_cross_entropy_numpy(logits, targets, mask)
    return rtol, want_loss, want_d


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(64, 32, 163), (3, 5, 1), (4, 2, 16), (2, 3, 17), (7, 96),
                                   (33,)])
@pytest.mark.parametrize("masked", [False, True])
def test_matches_the_numpy_path(dtype, shape, masked, compiled_only, monkeypatch):
    rng = np.random.default_rng(sum(shape))
    logits = (rng.standard_normal(shape) * 4).astype(dtype)
    logits.flat[::7] -= 60               # near exp's float32 floor (-87), and below it
    logits.flat[::11] -= 120
    targets = rng.integers(0, shape[-1], size=shape[:-1])
    mask = (rng.random(shape[:-1]) < 0.7) if masked else None
    if mask is not None:
        mask.flat[0] = True
    loss, d = softmax_cross_entropy(logits, targets, mask)
    monkeypatch.undo()
    rtol, want_loss, want_d = check_same(logits, targets, mask)
    assert d.dtype == logits.dtype and d.shape == logits.shape
    assert loss == pytest.approx(want_loss, rel=rtol)
    # each element to rtol of the gradient's scale (1 / count): the smallest are 0 there
    np.testing.assert_allclose(d, want_d, rtol=rtol, atol=rtol * np.abs(want_d).max())
    if mask is not None:
        assert not d[~mask].any()


def test_masks_of_numbers_and_strided_inputs(compiled_only, monkeypatch):
    rng = np.random.default_rng(7)
    logits = rng.standard_normal((6, 8, 10)).astype(np.float32)
    targets = rng.integers(0, 10, size=(8, 6)).T             # not C-contiguous
    mask = (rng.random((6, 8)) < 0.5).astype(np.int64)
    mask[0, 0] = 1
    strided = logits[:, ::2]
    loss, d = softmax_cross_entropy(strided, targets[:, ::2], mask[:, ::2])
    loss_bool, _ = softmax_cross_entropy(strided, targets[:, ::2], mask[:, ::2].astype(bool))
    monkeypatch.undo()
    rtol, want_loss, want_d = check_same(strided, targets[:, ::2], mask[:, ::2])
    assert loss == loss_bool == pytest.approx(want_loss, rel=rtol)
    np.testing.assert_allclose(d, want_d, rtol=rtol, atol=1e-9)


def test_huge_logits_are_stable():
    logits = np.array([[[1e4, 0.0, -1e4], [0.0, 1e4, 1e4], [-1e4, -1e4, -1e4]]],
                      dtype=np.float32)
    targets = np.array([[1, 2, 0]])
    loss, d = softmax_cross_entropy(logits, targets)
    want_loss, want_d = softmax_cross_entropy_numpy(logits, targets)
    assert loss == pytest.approx(want_loss, rel=1e-7)
    np.testing.assert_array_equal(d, want_d)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_logits_raise_the_numpy_paths_error(bad, dtype):
    logits = np.zeros((3, 4, 5), dtype)
    logits[2, 1, 3] = bad
    targets = np.zeros((3, 4), int)
    mask = np.ones((3, 4), bool)
    mask[2, 1] = False                   # masked out, and still refused, as NumPy does
    for m in (None, mask):
        with pytest.raises(ValueError) as compiled:
            softmax_cross_entropy(logits, targets, m)
        with pytest.raises(ValueError) as reference:
            softmax_cross_entropy_numpy(logits, targets, m)
        assert str(compiled.value) == str(reference.value)
        assert "non-finite value" in str(compiled.value) and "(2, 1, 3)" in str(compiled.value)


@pytest.mark.parametrize("targets", [np.array([[0, 5]]), np.array([[-1, 0]]),
                                     np.array([[0, 2**40]]), np.array([[0.0, 1.0]]),
                                     np.array([0, 1])])
def test_bad_targets_raise_the_numpy_paths_error(targets):
    logits = np.zeros((1, 2, 5), np.float32)
    with pytest.raises(ValueError) as compiled:
        softmax_cross_entropy(logits, targets)
    with pytest.raises(ValueError) as reference:
        softmax_cross_entropy_numpy(logits, targets)
    assert str(compiled.value) == str(reference.value)


def test_other_dtypes_and_empty_masks_go_the_numpy_way():
    z = np.ones((2, 2, 3), np.float16)
    loss, d = softmax_cross_entropy(z, np.zeros((2, 2), int))
    assert d.dtype == np.float16 and loss == pytest.approx(math.log(3), rel=1e-3)
    loss, d = softmax_cross_entropy(z.astype(np.float32), np.zeros((2, 2), int),
                                    np.zeros((2, 2), bool))
    assert loss == 0.0 and not d.any()
    with pytest.raises(ValueError, match="boolean"):
        softmax_cross_entropy(z.astype(np.float32), np.zeros((2, 2), int), np.full((2, 2), 0.5))


def test_float32_exp_within_two_ulp_and_zero_below_its_range():
    x = -np.linspace(0, 87, 1_000_001, dtype=np.float64).astype(np.float32)
    e = np.empty_like(x)
    total = kernels._exp_f32_row(x, np.float32(0), e)
    exact = np.exp(x.astype(np.float64))
    assert np.max(np.abs(e - exact) / exact) < 2 * 2.0 ** -24
    assert total == pytest.approx(exact.sum(), rel=1e-9)
    low = np.array([-87.5, -100, -1e30, -np.inf], np.float32)
    e = np.empty_like(low)
    assert kernels._exp_f32_row(low, np.float32(0), e) == 0.0 and not e.any()


def test_the_row_maximum_read_as_integers():
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        rows = [rng.standard_normal(37).astype(dtype), -np.abs(rng.standard_normal(5)),
                np.array([-0.0, 0.0, -5.0]), np.array([-7.0, -5.0, -6.0]),
                np.array([np.finfo(dtype).max, -np.finfo(dtype).max]),
                np.array([np.finfo(dtype).tiny, 1e-300 if dtype == np.float64 else 1e-40])]
        for row in rows:
            row = np.ascontiguousarray(row, dtype=dtype)
            bits, exponent, shift, magnitude = kernels.as_bits(row)
            top, best = kernels._check_and_max(bits, exponent, shift, magnitude)
            assert top != exponent
            assert np.array([best]).astype(bits.dtype).view(dtype)[0] == row.max()
        for bad in (np.inf, -np.inf, np.nan):
            row = np.array([1.0, bad, 2.0], dtype)
            bits, exponent, shift, magnitude = kernels.as_bits(row)
            assert kernels._check_and_max(bits, exponent, shift, magnitude)[0] == exponent
