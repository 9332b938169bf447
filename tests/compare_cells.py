"""A compiled cell against the interpreter on one batch: outputs, final states and
every gradient (params, inputs, initial states), float64. Shared by the schedule's
plan-choice tests (tests/schedule/test_final_at_end.py, test_readout_after.py)."""

from __future__ import annotations

import numpy as np


def compare_with_interpreter(compiled, interp, x, lengths=None, workspace=None,
                             seed: int = 0) -> None:
    """compiled and interp hold the same params; x (T, B, I); `workspace` is lent to the
    compiled cell's forward and backward (the interpreter takes none)."""
    rng = np.random.default_rng(seed)
    lent = {} if workspace is None else {"workspace": workspace}
    rc, ri = compiled.forward(x, lengths=lengths, **lent), interp.forward(x, lengths=lengths)
    for k, v in ri.outputs.items():
        assert rc.outputs[k].shape == v.shape, k
        np.testing.assert_allclose(rc.outputs[k], v, rtol=1e-10, atol=1e-12, err_msg=k)
    for k, v in ri.state.items():
        np.testing.assert_allclose(rc.state[k], v, rtol=1e-10, atol=1e-12, err_msg=k)
    dy = {k: rng.normal(size=v.shape) for k, v in ri.outputs.items()}
    gc, gi = compiled.backward(rc, dy, **lent), interp.backward(ri, dy)
    for table in ("params", "inputs", "state"):
        for k, v in getattr(gi, table).items():
            np.testing.assert_allclose(getattr(gc, table)[k], v, rtol=1e-9, atol=1e-12,
                                       err_msg=f"{table} {k}")
