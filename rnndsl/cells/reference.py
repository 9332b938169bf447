"""The reference cell: NumPy over the unrolled graph (ir/interp.py), BPTT by reverse
mode over it (ir/grad.py). Independent of the compiled path by design: the compiled
targets are tested against it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core import targets
from ..core.files import printable
from ..ir.grad import UnrolledGrads, grad_unrolled
from ..ir.graph import Unrolled, lower, unroll
from ..ir.interp import Context, evaluate
from ..lang.checked import CheckedCell
from ..lang.compose import with_lengths
from .base import Cell, Grads, Run, check_seen  # noqa: F401
from .seen import Seen, numpy_fingerprints

@dataclass
class _Tape:
    unrolled: Unrolled
    values: dict[int, np.ndarray]
    ctx: Context
    from_params: set[str]
    owner: object   # the cell's token: ids of dead objects get reused
    seen: Seen      # the params and inputs the values were computed from (rnndsl.cells.seen)


class InterpCell(Cell):
    """The reference: NumPy over the unrolled graph; BPTT by reverse mode over it."""

    target = "interp"
    _unrolled: dict[int, Unrolled]
    _grads: dict[int, UnrolledGrads]

    @classmethod
    def unrolled(cls, T: int) -> Unrolled:
        if T not in cls._unrolled:
            cls._unrolled[T] = unroll(cls.step, T)
        return cls._unrolled[T]

    @classmethod
    def unrolled_grads(cls, T: int) -> UnrolledGrads:
        if T not in cls._grads:
            cls._grads[T] = grad_unrolled(cls.unrolled(T))
        return cls._grads[T]

    @classmethod
    def _make_lengths_class(cls) -> type:
        return make_cell_class(with_lengths(cls.spec), "interp", cls.digest)

    def _run(self, x, state, hidden) -> Run:
        inputs, T, B = self._inputs(x, hidden)
        state0, from_params = self._initial_state(state, B)
        # the tape holds what it was fed: copies of the states (backward needs them, and
        # the compiled targets keep their own copies too), the params and inputs as they
        # are, fingerprinted
        state0 = {k: v.copy() for k, v in state0.items()}
        self._check_params()
        seen = self._seen(self.params, inputs, numpy_fingerprints)
        u = self.unrolled(T)
        feeds = {u.params[n]: a for n, a in self.params.items()}
        feeds.update({u.initial_state[n]: a for n, a in state0.items()})
        for name, seq in u.inputs.items():
            feeds.update({nid: inputs[name][t] for t, nid in enumerate(seq)})
        ctx = Context(self.dims, B, self.dtype)
        values = evaluate(u.graph, u.roots(), feeds, ctx)
        outputs = {}
        for name, seq in u.outputs.items():
            stacked = np.stack([values[nid] for nid in seq])
            outputs[name] = stacked[..., 0] if self._scalar_output(name) else stacked
        # in the spec's order, as the compiled targets give them (not evaluation order)
        final = {d.name: values[u.final_state[d.name]].copy() for d in self.spec.states}
        return Run(outputs, final, T, B, _Tape(u, values, ctx, from_params, self._token,
                                               seen))

    def _back(self, run: Run, d_outputs, d_state, input_grads: bool = True) -> Grads:
        tape, d_out, d_st = self._backward_args(run, _Tape, d_outputs, d_state)
        T, B = run.T, run.B
        sizes_state = {d.name: self._size(d) for d in self.spec.states}
        u = tape.unrolled
        grads = self.unrolled_grads(T)
        feeds = {}
        for name, seeds in grads.output_seeds.items():
            given = d_out.get(name)
            for t, seed in enumerate(seeds):
                if given is None:
                    feeds[seed] = np.zeros(u.graph[seed].type.array_shape(self.dims, B),
                                           dtype=self.dtype)
                else:
                    feeds[seed] = given[t].reshape(B, -1)
        for name, seed in grads.state_seeds.items():
            given = d_st.get(name)
            feeds[seed] = given if given is not None else np.zeros(
                (B,) + sizes_state[name], dtype=self.dtype)
        values = evaluate(u.graph, grads.roots(), feeds, tape.ctx, known=dict(tape.values))

        def value(nid, shape):
            return values[nid].copy() if nid is not None else np.zeros(shape, self.dtype)

        params = {d.name: value(grads.params[d.name], self._size(d)) for d in self.spec.params}
        inputs = {d.name: np.stack([value(n, (B,) + self._size(d))
                                    for n in grads.inputs[d.name]])
                  for d in self.spec.inputs}
        state = {d.name: value(grads.initial_state[d.name], (B,) + self._size(d))
                 for d in self.spec.states}
        for d in self.spec.states:  # a learned initial state collects its batch's gradient
            if d.name in tape.from_params:
                params[d.init.name] += state[d.name].sum(axis=0)
        return Grads(params, inputs, state)




def make_cell_class(spec: CheckedCell, target: str = "interp", digest: str = "") -> type:
    """A `Cell` subclass named after the spec's cell, bound to its graph."""
    base = targets.resolve(targets.target(target).cell_class)
    step = lower(spec)
    namespace = {"spec": spec, "step": step, "digest": digest, "__doc__": (
        f"The cell {spec.name} from {printable(str(spec.source.path))} ({target}). Dims: "
        f"{', '.join(spec.dims)}."), "_unrolled": {}, "_grads": {}}
    return type(spec.name, (base,), namespace)


