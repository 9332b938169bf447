"""Views of one flat buffer (core/flat.py): made in order, found again only when they
truly lie back to back, so that a caller who replaced or reordered arrays gets None
(and its one-at-a-time path) rather than a span over the wrong memory."""

from __future__ import annotations

import numpy as np
import pytest

from rnndsl.core.flat import flat_span, flat_views

SHAPES = [(3, 4), (4,), (), (2, 2)]


def test_views_lie_back_to_back_in_order():
    buffer, views = flat_views(SHAPES, np.float32)
    assert buffer.shape == (12 + 4 + 1 + 4,) and not buffer.any()
    assert [v.shape for v in views] == SHAPES
    for i, v in enumerate(views):
        v[...] = i + 1
    np.testing.assert_array_equal(buffer, np.repeat([1, 2, 3, 4], [12, 4, 1, 4]))
    span = flat_span(views)
    assert span is not None and np.shares_memory(span, buffer)
    np.testing.assert_array_equal(span, buffer)
    span[:] = -1                      # writes reach the views
    assert all((v == -1).all() for v in views)


def test_a_span_of_some_views_covers_only_them():
    buffer, views = flat_views(SHAPES, np.float64)
    span = flat_span(views[1:3])
    assert span.size == 5
    span[:] = 7
    assert (views[1] == 7).all() and views[2] == 7
    assert not views[0].any() and not views[3].any()


@pytest.mark.parametrize("spoil", ["replaced", "reordered", "gap", "dtype", "transposed",
                                   "read-only", "not an array"])
def test_anything_but_back_to_back_views_gives_none(spoil):
    _, views = flat_views(SHAPES, np.float32)
    if spoil == "replaced":
        views[1] = views[1].copy()
    elif spoil == "reordered":
        views[0], views[1] = views[1], views[0]
    elif spoil == "gap":
        del views[1]
    elif spoil == "dtype":
        _, other = flat_views([(3, 4), (4,)], np.float64)
        views = other[:1] + views[1:]
    elif spoil == "transposed":
        views[0] = views[0].T
    elif spoil == "read-only":
        views[3].flags.writeable = False
    else:
        views[2] = 1.0
    assert flat_span(views) is None


def test_fill_none_leaves_memory_for_the_caller():
    buffer, views = flat_views([(2,), (3,)], np.float32, fill=None)
    assert buffer.size == 5 and flat_span(views) is not None
    assert flat_span([]) is None


def test_a_remembered_span_is_checked_again_and_keeps_nothing_alive():
    """flat_span remembers recent answers (a training step asks about the same arrays
    several times); a reused id, a replaced view or a changed shape must not fool it,
    and it must not hold old gradients in memory."""
    import gc
    import weakref
    buffer, views = flat_views([(2, 3), (4,)], np.float32)
    first = flat_span(views)
    assert flat_span(views) is not first and np.shares_memory(flat_span(views), buffer)
    views[0].shape = (3, 2)                        # same memory, another shape: still flat
    assert flat_span(views) is not None
    swapped = [views[0].copy(), views[1]]
    assert flat_span(swapped) is None
    ref = weakref.ref(buffer)
    del buffer, views, first, swapped
    gc.collect()
    assert ref() is None                           # nothing was kept alive
    _, fresh = flat_views([(2, 3), (4,)], np.float32)   # ids may be reused: still right
    fresh[1] = np.zeros(4, np.float32)
    assert flat_span(fresh) is None
