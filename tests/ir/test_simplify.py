"""The `cse` and `simplify` passes: what they remove, and that the values do not move."""

from __future__ import annotations

import numpy as np
import pytest

import rnndsl
from rnndsl.build.modules import build_source
from rnndsl.ir.graph import lower
from rnndsl.core.ops import Op
from rnndsl.schedule.plan import PASSES
from rnndsl.lang.specfile import read_spec

NOISY = '''
cell S {
  dims I, H
  input x[I]
  state h[H]
  param W[H, I], U[H, H], b[H]
  a = W @ x * 1 + 0 + b * (2 - 1)
  h' = tanh(a + U @ h - 0) / 1
  output y = -(-h') * exp(0) + tanh(W @ x * 1 + 0 + b) + (0 - h) + h * 0
}
'''


def spec_of(text: str, tmp_path):
    path = tmp_path / "s.rnn"
    path.write_text(text)
    return path, read_spec(path).pick()


def ops_of(step) -> list[Op]:
    return [step.graph[n].op for n in step.graph.needed(step.roots())]


def test_simplify_folds_constants_and_drops_identities(tmp_path):
    _, cell = spec_of(NOISY, tmp_path)
    plain, simple = lower(cell), lower(cell, simplify=True)
    G = simple.graph
    consts = [G[n].attrs[0] for n in G.needed(simple.roots()) if G[n].op == Op.CONST]
    assert 1.0 not in consts                  # x * 1, x / 1, exp(0), 2 - 1: all gone
    assert consts.count(0.0) == 1             # only h * 0 keeps its 0 (NaN * 0 is NaN)
    assert ops_of(simple).count(Op.NEG) == 1  # -(-h') is h'; 0 - h became -h
    assert ops_of(simple).count(Op.EXP) == 0
    assert len(ops_of(simple)) < len(ops_of(plain)) - 8


def test_cse_off_keeps_each_occurrence(tmp_path):
    _, cell = spec_of(NOISY, tmp_path)
    shared, separate = lower(cell), lower(cell, cse=False)
    # W @ x is written twice: one matvec with CSE, two without
    assert ops_of(shared).count(Op.MATVEC) == 2        # W @ x and U @ h
    assert ops_of(separate).count(Op.MATVEC) == 3


@pytest.mark.parametrize("off", [(), ("simplify",), ("cse",), ("cse", "simplify")])
def test_compiled_with_and_without_the_passes_matches_the_interpreter(tmp_path, off):
    path, _ = spec_of(NOISY, tmp_path)
    from rnndsl.build.modules import cached_module
    from rnndsl.lang.specfile import read_spec as read
    module = cached_module(read(path), passes=tuple(p for p in PASSES if p not in off))
    compiled = module.S(I=3, H=4, dtype=np.float64, seed=1)
    ref = rnndsl.load(path, target="interp")(I=3, H=4, dtype=np.float64, seed=1)
    x = np.random.default_rng(0).normal(size=(5, 2, 3))
    a, b = ref.forward(x), compiled.forward(x)
    np.testing.assert_allclose(b.outputs["y"], a.outputs["y"], rtol=1e-12, atol=1e-13)
    dY = np.random.default_rng(1).normal(size=(5, 2, 4))
    ga, gb = ref.backward(a, d_outputs={"y": dY}), compiled.backward(b, d_outputs={"y": dY})
    for k in ga.params:
        np.testing.assert_allclose(gb.params[k], ga.params[k], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gb.inputs["x"], ga.inputs["x"], rtol=1e-10, atol=1e-12)


def test_the_generated_source_names_the_passes(tmp_path):
    path, _ = spec_of(NOISY, tmp_path)
    source = build_source(read_spec(path))
    assert "Optimizations: cse, defer_grads, final_at_end, fuse_elementwise, fuse_matmul, " \
           "hoist, hoist_outputs, microkernel, readout_after, simplify." in source
