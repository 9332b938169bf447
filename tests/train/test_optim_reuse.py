"""An optimiser step over the very same arrays as the last one (a trainer whose gradients
are views of one buffer it reuses) skips its checks and look-ups (`Optimizer._again`):
the same updates as the full path, and the full path again as soon as anything changed."""

from __future__ import annotations

import numpy as np
import pytest

from rnndsl.core.flat import flat_views
from rnndsl.train.optim import SGD, Adam, RMSprop

SHAPES = {"W": (4, 3), "b": (4,), "s": ()}


def model(seed: int):
    rng = np.random.default_rng(seed)
    _, views = flat_views(list(SHAPES.values()), np.float32, fill=None)
    params = dict(zip(SHAPES, views))
    for v in params.values():
        v[...] = rng.standard_normal(v.shape)
    _, views = flat_views(list(SHAPES.values()), np.float32)
    return params, dict(zip(SHAPES, views)), rng


@pytest.mark.parametrize("make", [lambda: Adam(0.01), lambda: SGD(0.1, momentum=0.9),
                                  lambda: RMSprop(0.01, momentum=0.5, centered=True)],
                         ids=["adam", "sgd", "rmsprop"])
def test_repeated_steps_over_the_same_arrays_match_fresh_arrays(make):
    params, grads, rng = model(0)
    again, _, _ = model(0)
    opt, ref = make(), make()
    for step in range(6):
        values = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in grads.items()}
        for k, v in values.items():
            grads[k][...] = v                       # the same arrays every step
        opt.step(params, grads)
        ref.step(again, {k: v.copy() for k, v in values.items()})    # new ones each step
        if step:
            assert opt._last is not None
    for k in params:
        np.testing.assert_array_equal(params[k], again[k], err_msg=k)
    assert opt.t == ref.t == 6


def test_anything_changed_takes_the_full_path():
    params, grads, rng = model(1)
    opt = Adam(0.01)
    for g in grads.values():
        g[...] = 1.0
    opt.step(params, grads)
    opt.step(params, grads)
    # a param made read-only is refused, as on the first step
    assert opt._last is not None
    params["b"].flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        opt.step(params, grads)
    params["b"].flags.writeable = True
    opt.step(params, grads)
    # a replaced param: it is the one updated (not the flat buffer's old view)
    old_view = params["W"]
    params["W"] = params["W"].copy()
    before = old_view.copy()
    opt.step(params, grads)
    np.testing.assert_array_equal(old_view, before)
    assert not np.array_equal(params["W"], before)
    # restored buffers: the restored values are the ones used
    opt.step(params, grads)
    state = opt.state_dict()
    opt.step(params, grads)
    other = Adam(0.01)
    other.load_state_dict(state)
    p1 = {k: v.copy() for k, v in params.items()}
    opt.load_state_dict(state)
    opt.step(params, grads)
    other.step(p1, {k: v.copy() for k, v in grads.items()})
    for k in params:
        np.testing.assert_array_equal(params[k], p1[k], err_msg=k)
