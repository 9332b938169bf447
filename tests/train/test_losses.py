"""Losses against naive float64 formulas and central finite differences.

Each loss returns (loss, d_pred); both halves are checked independently: the value against
the textbook formula written out naively in float64 (softmax by division, log of the
sigmoid), the gradient against central differences of the value. Stability is checked
where the naive formulas break (logits of 1e4 in float32).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from rnndsl.train.losses import LOSSES, binary_cross_entropy, bits_per_char, mse, softmax_cross_entropy


def naive_cross_entropy(logits, targets, mask):
    """-log(exp(z_t) / sum(exp(z))) averaged over kept positions, element by element."""
    total, count = 0.0, 0
    for idx in np.ndindex(targets.shape):
        if mask is not None and not mask[idx]:
            continue
        z = logits[idx].astype(np.float64)
        total += -math.log(math.exp(z[targets[idx]]) / sum(math.exp(v) for v in z))
        count += 1
    return total / count


def naive_bce(logits, targets, mask):
    """-[y log s + (1 - y) log(1 - s)], s = 1 / (1 + exp(-z)), averaged over kept elements."""
    s = 1 / (1 + np.exp(-logits.astype(np.float64)))
    terms = -(targets * np.log(s) + (1 - targets) * np.log(1 - s))
    if mask is None:
        return terms.mean()
    keep = np.broadcast_to(mask.reshape(mask.shape + (1,) * (terms.ndim - mask.ndim)),
                           terms.shape)
    return terms[keep].mean()


def finite_differences(fn, x, eps=1e-6):
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        plus = fn(x)
        x[idx] = old - eps
        minus = fn(x)
        x[idx] = old
        grad[idx] = (plus - minus) / (2 * eps)
    return grad


shapes = st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(2, 5))


@given(shape=shapes, seed=st.integers(0, 2**31 - 1), masked=st.booleans())
def test_cross_entropy_matches_naive_formula_and_finite_differences(shape, seed, masked):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=shape)
    targets = rng.integers(0, shape[-1], size=shape[:-1])
    mask = rng.random(shape[:-1]) < 0.6 if masked else None
    if mask is not None:
        mask.flat[0] = True
    loss, d = softmax_cross_entropy(logits, targets, mask)
    assert loss == pytest.approx(naive_cross_entropy(logits, targets, mask), rel=1e-12)
    fd = finite_differences(lambda z: softmax_cross_entropy(z, targets, mask)[0], logits)
    np.testing.assert_allclose(d, fd, atol=1e-8)
    if mask is not None:
        assert not d[~mask].any()


@given(shape=shapes, seed=st.integers(0, 2**31 - 1), masked=st.booleans())
def test_bce_matches_naive_formula_and_finite_differences(shape, seed, masked):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, size=shape)
    targets = rng.random(shape)           # soft labels as well as hard ones
    targets[..., 0] = 1.0
    mask = rng.random(shape[:2]) < 0.6 if masked else None
    if mask is not None:
        mask.flat[0] = True
    loss, d = binary_cross_entropy(logits, targets, mask)
    assert loss == pytest.approx(naive_bce(logits, targets, mask), rel=1e-10)
    fd = finite_differences(lambda z: binary_cross_entropy(z, targets, mask)[0], logits)
    np.testing.assert_allclose(d, fd, atol=1e-8)


@given(shape=shapes, seed=st.integers(0, 2**31 - 1), mask_rank=st.sampled_from([0, 2, 3]))
def test_mse_matches_mean_of_squares_and_finite_differences(shape, seed, mask_rank):
    rng = np.random.default_rng(seed)
    pred, target = rng.normal(size=shape), rng.normal(size=shape)
    mask = rng.random(shape[:mask_rank]) < 0.6 if mask_rank else None
    if mask is not None:
        mask.flat[0] = True
    loss, d = mse(pred, target, mask)
    sq = (pred - target) ** 2
    if mask is None:
        expected = sq.mean()
    else:
        expected = sq[np.broadcast_to(mask.reshape(mask.shape + (1,) * (3 - mask_rank)),
                                      shape)].mean()
    assert loss == pytest.approx(expected, rel=1e-12)
    fd = finite_differences(lambda p: mse(p, target, mask)[0], pred)
    np.testing.assert_allclose(d, fd, atol=1e-8)


def test_cross_entropy_is_stable_at_huge_logits_in_float32():
    logits = np.array([[[1e4, 0.0, -1e4], [0.0, 1e4, 1e4], [-1e4, -1e4, -1e4]]],
                      dtype=np.float32)                       # (1, 3, 3)
    targets = np.array([[1, 2, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")                        # no overflow warnings either
        loss, d = softmax_cross_entropy(logits, targets)
    # -log p: 1e4 (a sure miss), log 2 (a tie of two), log 3 (three equal)
    assert loss == pytest.approx((1e4 + math.log(2) + math.log(3)) / 3, rel=1e-6)
    assert d.dtype == np.float32 and np.isfinite(d).all()
    np.testing.assert_allclose(d[0, 0], np.array([1, -1, 0]) / 3, atol=1e-7)
    np.testing.assert_allclose(d[0, 1], np.array([0, 0.5, -0.5]) / 3, atol=1e-7)


def test_bce_is_stable_at_huge_logits_in_float32():
    logits = np.array([[1e4, -1e4, 1e4, -1e4]], dtype=np.float32)
    targets = np.array([[1.0, 0.0, 0.0, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, d = binary_cross_entropy(logits, targets)
    assert loss == pytest.approx(2e4 / 4, rel=1e-6)           # two sure hits, two misses
    np.testing.assert_allclose(d, np.array([[0, 0, 1, -1]]) / 4, atol=1e-7)
    assert d.dtype == np.float32


def test_gradient_keeps_dtype_and_shape():
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        z = rng.normal(size=(3, 2, 4)).astype(dtype)
        assert softmax_cross_entropy(z, rng.integers(0, 4, (3, 2)))[1].dtype == dtype
        assert mse(z, np.zeros((3, 2, 4)))[1].dtype == dtype
        scalar = rng.normal(size=(3, 2)).astype(dtype)         # a scalar output: (T, B)
        loss, d = binary_cross_entropy(scalar, np.ones((3, 2)))
        assert d.shape == (3, 2) and d.dtype == dtype


def test_mask_equals_the_loss_of_the_kept_positions():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 3, 5))
    targets = rng.integers(0, 5, (4, 3))
    mask = np.zeros((4, 3), dtype=bool)
    mask[:2, 1] = True
    loss, d = softmax_cross_entropy(logits, targets, mask)
    kept, kept_d = softmax_cross_entropy(logits[:2, 1:2], targets[:2, 1:2])
    assert loss == pytest.approx(kept)
    np.testing.assert_allclose(d[:2, 1:2], kept_d * (2 / 2))
    assert softmax_cross_entropy(logits, targets, mask.astype(int))[0] == loss  # 0/1 ok


def test_empty_mask_gives_zero_loss_and_gradient():
    z = np.ones((2, 2, 3))
    for loss_fn, t in ((softmax_cross_entropy, np.zeros((2, 2), int)), (mse, np.zeros(z.shape)),
                       (binary_cross_entropy, np.zeros(z.shape))):
        loss, d = loss_fn(z, t, np.zeros((2, 2), bool))
        assert loss == 0.0 and not d.any()


@pytest.mark.parametrize("targets, message", [
    (np.array([[0, 3]]), r"target 3 at index \(0, 1\) is out of range.*\[0, 3\)"),
    (np.array([[-1, 0]]), r"target -1 at index \(0, 0\) is out of range"),
    (np.array([[0.0, 1.0]]), "integer class ids"),
    (np.array([0, 1]), r"targets have shape \(2,\); expected \(1, 2\)"),
])
def test_cross_entropy_rejects_bad_targets(targets, message):
    with pytest.raises(ValueError, match=message):
        softmax_cross_entropy(np.zeros((1, 2, 3)), targets)


def test_losses_reject_bad_input_with_clear_messages():
    z = np.zeros((2, 2, 3))
    with pytest.raises(ValueError, match=r"mask has shape \(2,\); expected \(2, 2\)"):
        softmax_cross_entropy(z, np.zeros((2, 2), int), np.ones(2, bool))
    with pytest.raises(ValueError, match="boolean"):
        softmax_cross_entropy(z, np.zeros((2, 2), int), np.full((2, 2), 0.5))
    bad = z.copy()
    bad[1, 0, 2] = np.nan
    with pytest.raises(ValueError, match=r"non-finite value \(nan\) at index \(1, 0, 2\)"):
        softmax_cross_entropy(bad, np.zeros((2, 2), int))
    with pytest.raises(ValueError, match=r"not a probability"):
        binary_cross_entropy(z, np.full(z.shape, 1.5))
    with pytest.raises(ValueError, match=r"targets have shape \(2, 2\); expected the pred"):
        mse(z, np.zeros((2, 2)))
    with pytest.raises(ValueError, match="leading part"):
        mse(z, z, np.ones((3,), bool))
    with pytest.raises(ValueError, match="floating-point"):
        mse(np.zeros((2, 2), int), np.zeros((2, 2)))


def test_table_and_bits_per_char():
    assert LOSSES == {"softmax_cross_entropy": softmax_cross_entropy, "mse": mse,
                      "binary_cross_entropy": binary_cross_entropy}
    # a uniform guess over 256 symbols costs exactly 8 bits
    loss, _ = softmax_cross_entropy(np.zeros((1, 1, 256)), np.array([[7]]))
    assert bits_per_char(loss) == pytest.approx(8.0)
