"""A cell as a JAX function: `function(cell)` -> f(params, x, state=None, *, lengths=None,
steps=None) -> (outputs, final_state), usable under `jax.jit`, `jax.grad` and `jax.vmap`.

Input: a bound cell (any target: its dims, dtype and kernels). Output: a function of JAX
arrays whose forward runs the cell's forward and whose VJP runs the cell's BPTT, each
through `jax.pure_callback`, joined by a `jax.custom_vjp`; JAX never traces the step.

Invariants:
- `f` reads the params it is given, never `cell.params`: every call binds them to a
  private worker cell (one per `function`, made from the cell's class, dims and dtype),
  under a lock, so the caller's cell is never changed and concurrent callbacks do not
  mix params.
- The VJP's residuals are the primal arguments (params, inputs, initial states, lengths),
  nothing else: a `Run` is a host object that cannot live in a JAX residual. The backward
  callback runs the forward again from them, then the cell's backward on that run. So a
  gradient costs one extra forward over the cell's own forward + BPTT, and backward
  reads exactly the params the forward read, whatever happened between the two under
  `jit`. At the benchmark's small LSTM shape (T=100, B=16, I=64, H=128, float32) a
  forward took 4.1 ms and forward + BPTT 20.9 ms; `jax.jit(jax.grad(f))` 24.6 ms
  (benchmarks/jax_callback.py, best of 40 on a busy 2-core machine).
- Shapes, dtypes and names are checked when `f` is traced, as `BindError`s; what only the
  values show (a NaN in x, a length out of range) is checked by the cell inside the
  callback, and JAX reports it as a `JaxRuntimeError` whose text holds rnndsl's message.
- Only this layer imports jax; `import rnndsl` does not (tests/interop/test_jax.py).
"""

from __future__ import annotations

import threading
from functools import partial
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

from ..cells.base import Cell, once_steps
from ..cells.directions import Directional
from ..cells.network import NetworkCell
from ..core.errors import BindError, TargetError

SECOND_DERIVATIVE = (
    "rnndsl.jax differentiates once, in reverse mode: differentiating a gradient that went "
    "through a cell (jax.hessian, grad of grad, jax.jvp of a VJP) would need the derivative "
    "of its BPTT kernels, which rnndsl does not make")


def params(cell: Cell) -> dict[str, jax.Array]:
    """A copy of `cell.params` as JAX arrays: the starting point of a JAX training loop."""
    _check_cell(cell)
    _check_x64(cell)
    return {name: jnp.array(value) for name, value in cell.params.items()}


def function(cell: Cell):
    """The cell as a function of JAX arrays, differentiable by `jax.grad`:

        f = rnndsl.jax.function(cell)
        outputs, state = f(params, x)              # dicts keyed by the spec's names
        outputs, state = f(params, x, {"h": h0}, lengths=lengths)

    params: a dict of every param of the spec (`rnndsl.jax.params(cell)` copies the
    cell's), shaped as declared, in the cell's dtype. x: (T, B, I) for a cell with one
    input, else a dict by input name (an `input token` takes int ids (T, B), an `input
    once` (B, size)). state: a dict of some or all initial states (B, size); those left
    out start as the spec declares and get no gradient of their own. lengths: optional
    ints (B,), as `cell.forward` takes them. steps: T for a cell whose inputs are all
    `input once`. Returns (outputs, final_state): outputs (T, B, ...) by output name (a
    `final` output (B, ...)), final states (B, size) by state name.

    Gradients flow to params, float inputs and the given initial states; int inputs
    (token ids, lengths) get none. Dropout sites keep every unit (evaluation). A float64
    cell needs `jax.config.update("jax_enable_x64", True)`. The gradient reruns the
    forward inside its callback (see the module docstring): one forward more than the
    cell's own forward + BPTT, about a fifth more for an LSTM. Under `jax.vmap` the cell
    runs once per mapped element (pure_callback's "sequential" method). Once
    differentiable: no second derivatives through the cell.
    """
    _check_cell(cell)
    runner = _Runner(cell)

    # steps (a Python int or None) is static: it sets the results' shapes
    @partial(jax.custom_vjp, nondiff_argnums=(4,))
    def call(params, inputs, state, lengths, steps):
        return runner.forward(params, inputs, state, lengths, steps)

    def call_fwd(params, inputs, state, lengths, steps):
        return (runner.forward(params, inputs, state, lengths, steps),
                (params, inputs, state, lengths))

    def call_bwd(steps, residuals, cotangents):
        return runner.backward(*residuals, steps, *cotangents)

    call.defvjp(call_fwd, call_bwd)

    def f(params, x, state=None, *, lengths=None, steps=None):
        args = runner.check(params, x, state, lengths, steps)
        return call(*args)

    f.__doc__ = f"{cell!r} as a JAX function: (params, x, state=None, *, lengths=None, " \
                "steps=None) -> (outputs, final_state); see rnndsl.jax.function."
    f.cell = cell
    return f


def _check_cell(cell) -> None:
    if not isinstance(cell, (Cell, Directional, NetworkCell)):
        raise BindError(f"rnndsl.jax needs a cell (an instance: Cell(I=..., H=...)), got "
                        f"{type(cell).__name__}" + (
                            ": instantiate the class with its dims first"
                            if isinstance(cell, type) and issubclass(cell, (Cell, NetworkCell))
                            else ""))


def _twin(cell):
    """A cell of its own, made as the caller's was (a two-way cell: the same direction)."""
    if isinstance(cell, Directional):
        return Directional(cell.cell_class, cell.direction, dtype=cell.dtype, seed=cell.seed,
                           **cell.dims)
    return type(cell)(dtype=cell.dtype, seed=cell.seed, **cell.dims)


def _check_x64(cell: Cell) -> None:
    if cell.dtype == np.float64 and not jax.config.read("jax_enable_x64"):
        raise BindError(f"{cell!r} is float64, but JAX runs in float32 unless told: call "
                        "jax.config.update('jax_enable_x64', True) first, or make the "
                        "cell with dtype=np.float32")


def _once(callback):
    """`callback` (a pure_callback, which JAX cannot differentiate) with a JVP rule that
    raises rnndsl's TargetError: differentiating the forward's or the backward's callback
    (jax.hessian, grad of grad) is a second derivative, where JAX's own message would
    advise a custom_jvp."""
    call = jax.custom_jvp(callback)

    @call.defjvp
    def refuse(primals, tangents):
        raise TargetError(SECOND_DERIVATIVE)

    return call


def _float0(value) -> np.ndarray:
    """The cotangent JAX takes for an int argument: zeros of dtype float0."""
    return np.zeros(np.shape(value), jax.dtypes.float0)


class _Runner:
    """What the callbacks share: the private worker cell, its lock, the spec's names."""

    def __init__(self, cell: Cell):
        self.cell = cell
        self.dtype = cell.dtype
        # a cell of its own, made as the caller's was: binding params to it for a call
        # never touches the caller's cell, and its Runs never mix with the caller's
        self.worker = _twin(cell)
        self.lock = threading.Lock()
        spec = cell.spec
        hidden = cell.hidden_inputs
        # a two-way cell (direction="reverse" or "bidirectional": cells.directions) has
        # its directions' params and states by suffixed names (W_reverse, h_reverse), and
        # a bidirectional one's outputs joined on the feature axis (a scalar's stacked)
        suffixes = ([suffix for suffix, _, _ in cell.cells] if isinstance(cell, Directional)
                    else [""])
        self.base = cell.cells[0][2] if isinstance(cell, Directional) else cell
        self.joined = len(suffixes)
        self.inputs = tuple(d for d in spec.inputs if d.name not in hidden)
        self.states = {d.name + suffix: self.base._size(d) for suffix in suffixes
                       for d in spec.states}
        self.params = {name: tuple(value.shape) for name, value in cell.params.items()}
        self.outputs = tuple(spec.outputs)

    # ------------------------------------------------------------------ trace-time checks
    def check(self, params, x, state, lengths, steps):
        """(params, inputs, state, lengths, steps) as the custom_vjp takes them, with
        names, shapes and dtypes checked (a BindError naming what is wrong)."""
        _check_x64(self.cell)
        params = self._check_params(params)
        inputs = self._check_inputs(x)
        T, B = self._time_and_batch(inputs, steps)
        state = self._check_state(state, B)
        if lengths is not None:
            lengths = jnp.asarray(lengths)
            if lengths.shape != (B,) or not jnp.issubdtype(lengths.dtype, jnp.integer):
                raise BindError(f"lengths has shape {lengths.shape} and dtype "
                                f"{lengths.dtype}; expected ({B},) integers, one a sequence")
        return params, inputs, state, lengths, (None if steps is None else int(T))

    def _array(self, what: str, value, shape: tuple | None, layout: str) -> jax.Array:
        value = jnp.asarray(value)
        if value.dtype != self.dtype:
            raise BindError(f"{what} is {value.dtype} but the cell is {self.dtype.name}; "
                            f"convert it with .astype(jnp.{self.dtype.name})")
        if shape is not None and value.shape != shape:
            raise BindError(f"{what} has shape {value.shape}; expected {shape} = {layout}")
        return value

    def _check_params(self, params) -> dict[str, jax.Array]:
        spec = self.cell.spec
        if not isinstance(params, Mapping):
            raise BindError("params must be a dict keyed by param name (rnndsl.jax.params("
                            f"cell) makes one), got {type(params).__name__}")
        unknown = [n for n in params if n not in self.params]
        missing = [n for n in self.params if n not in params]
        if unknown or missing:
            raise BindError(f"params do not match {spec.name}'s: "
                            + (f"unknown {', '.join(map(str, unknown))}; " if unknown else "")
                            + (f"missing {', '.join(missing)}; " if missing else "")
                            + "give every param of the spec, by name")
        return {n: self._array(f"param {n}", params[n], shape, str(list(shape)))
                for n, shape in self.params.items()}

    def _check_inputs(self, x) -> dict[str, jax.Array]:
        names = [d.name for d in self.inputs]
        if len(self.inputs) == 1 and not isinstance(x, Mapping):
            x = {names[0]: x}
        if not isinstance(x, Mapping):
            raise BindError(f"{self.cell.spec.name} has {len(names)} inputs "
                            f"({', '.join(names)}); pass them as a dict")
        unknown = [n for n in x if n not in names]
        missing = [n for n in names if n not in x]
        if unknown or missing:
            raise BindError(f"inputs do not match {self.cell.spec.name}'s "
                            f"({', '.join(names)}): "
                            + ", ".join(([f"unknown {', '.join(map(str, unknown))}"]
                                         if unknown else [])
                                        + ([f"missing {', '.join(missing)}"]
                                           if missing else [])))
        out = {}
        for d in self.inputs:
            value = jnp.asarray(x[d.name])
            size = self.base._size(d)
            if d.token and jnp.issubdtype(value.dtype, jnp.integer):
                if value.ndim != 2:
                    raise BindError(f"input {d.name} (input token) has shape {value.shape}; "
                                    "expected ids (T, B)")
                out[d.name] = value
                continue
            rank, layout = (1, f"(B, {size[0]})") if d.once else (2, f"(T, B, {size[0]})")
            if value.ndim != rank + 1 or value.shape[rank:] != size:
                raise BindError(f"input {d.name} has shape {value.shape}; expected {layout}")
            out[d.name] = self._array(f"input {d.name}", value, None, layout)
        return out

    def _time_and_batch(self, inputs, steps) -> tuple[int, int]:
        """T and B from the per-step inputs (or `steps` and the `input once` ones)."""
        per_step = [inputs[d.name].shape[:2] for d in self.inputs if not d.once]
        once = [inputs[d.name].shape[0] for d in self.inputs if d.once]
        if per_step and not once and steps is not None:
            raise BindError(f"steps= is for cells whose inputs are all 'input once'; "
                            f"{self.cell.spec.name} takes T from its input sequences")
        if per_step:
            T, B = per_step[0]
            if steps is not None and steps != T:
                raise BindError(f"steps={steps}, but the inputs have T = {T}")
        else:
            T, B = once_steps(self.cell.spec.name, steps), once[0]
        for shape in per_step + [(T, b) for b in once]:
            if tuple(shape) != (T, B):
                raise BindError(f"the inputs disagree on (T, B): {tuple(shape)} against "
                                f"({T}, {B})")
        if T < 1 or B < 1:           # as the cell says, but here when traced, not run
            raise BindError(f"the inputs have T = {T}, B = {B}: a sequence needs T >= 1 "
                            "steps and B >= 1 rows")
        return int(T), int(B)

    def _check_state(self, state, B: int) -> dict[str, jax.Array]:
        if state is None:
            return {}
        if not isinstance(state, Mapping):
            raise BindError(f"state must be a dict keyed by state name ("
                            f"{', '.join(self.states)}), got {type(state).__name__}")
        out = {}
        for name, value in state.items():
            if name not in self.states:
                raise BindError(f"{self.cell.spec.name} has no state '{name}'; its states "
                                f"are: {', '.join(self.states)}")
            size = self.states[name]
            out[name] = self._array(f"state {name}", value, (B,) + size, f"(B, {size[0]})")
        return out

    # ------------------------------------------------------------------ shapes of results
    def _result_shapes(self, inputs, lengths, steps):
        """ShapeDtypeStructs of (outputs, final states), from the inputs' shapes."""
        T, B = self._time_and_batch(inputs, steps)
        dims = self.cell.dims
        outputs = {}
        for o in self.outputs:
            size = tuple(d.evaluate(dims) for d in o.type.shape)
            if self.joined > 1:
                size = (size[0] * self.joined,) + size[1:] if size else (self.joined,)
            outputs[o.name] = jax.ShapeDtypeStruct(((B,) if o.final else (T, B)) + size,
                                                   self.dtype)
        states = {n: jax.ShapeDtypeStruct((B,) + size, self.dtype)
                  for n, size in self.states.items()}
        return outputs, states

    # ------------------------------------------------------------------ the callbacks
    def _run(self, params, inputs, state, lengths, steps, grad: bool):
        """The worker cell's forward with these params (the caller holds the lock)."""
        cell = self.worker
        for name, value in params.items():
            cell.params[name] = np.asarray(value)
        inputs = {n: np.asarray(v) for n, v in inputs.items()}
        state = {n: np.asarray(v) for n, v in state.items()}
        lengths = None if lengths is None else np.asarray(lengths)
        return cell.forward(inputs, state or None, lengths=lengths, steps=steps, grad=grad)

    def forward(self, params, inputs, state, lengths, steps):
        """(outputs, final states) of the cell, through a pure_callback."""
        def host(params, inputs, state, lengths):
            with self.lock:
                run = self._run(params, inputs, state, lengths, steps, grad=False)
            return ({o.name: run.outputs[o.name] for o in self.outputs},
                    {n: run.state[n] for n in self.states})

        return _once(lambda *args: jax.pure_callback(
            host, self._result_shapes(inputs, lengths, steps), *args,
            vmap_method="sequential"))(params, inputs, state, lengths)

    def backward(self, params, inputs, state, lengths, steps, d_outputs, d_state):
        """The VJP: forward again from the residuals, then the cell's backward; int
        arguments get float0 zeros."""
        floats = [n for n, v in inputs.items() if jnp.issubdtype(v.dtype, jnp.floating)]

        def host(params, inputs, state, lengths, d_outputs, d_state):
            with self.lock:
                run = self._run(params, inputs, state, lengths, steps, grad=True)
                g = self.worker.backward(
                    run, d_outputs={n: np.asarray(v) for n, v in d_outputs.items()},
                    d_state={n: np.asarray(v) for n, v in d_state.items()},
                    input_grads=bool(floats))
            d_inputs = {n: g.inputs[n] if n in g.inputs else np.zeros(np.shape(inputs[n]),
                                                                        self.dtype)
                        for n in floats}
            d_state0 = {n: g.state[n] if n in g.state else np.zeros(np.shape(state[n]), self.dtype)
                        for n in state}
            return {n: g.params[n] for n in params}, d_inputs, d_state0

        shapes = (
            {n: jax.ShapeDtypeStruct(v.shape, self.dtype) for n, v in params.items()},
            {n: jax.ShapeDtypeStruct(inputs[n].shape, self.dtype) for n in floats},
            {n: jax.ShapeDtypeStruct(v.shape, self.dtype) for n, v in state.items()})
        d_params, d_inputs, d_state0 = _once(lambda *args: jax.pure_callback(
            host, shapes, *args, vmap_method="sequential"))(
                params, inputs, state, lengths, d_outputs, d_state)
        d_inputs = {n: d_inputs[n] if n in d_inputs else _float0(v)
                    for n, v in inputs.items()}
        d_lengths = None if lengths is None else _float0(lengths)
        return d_params, d_inputs, d_state0, d_lengths


__all__ = ["function", "params"]
