"""Cells as Python objects: the API contract every backend keeps (DESIGN.md).

    Cell = rnndsl.load("specs/lstm.rnn", target="interp")
    cell = Cell(I=65, H=128, dtype=np.float32, seed=0)
    run = cell.forward(x, state={"h": h0})            # run.outputs, run.state
    g = cell.backward(run, d_outputs={"h": dY})      # g.params, g.inputs, g.state

`Cell` binds dims, owns the params and checks every array that crosses the API (type,
dtype, shape, finiteness) with a message naming what was expected. `InterpCell` runs the
reference interpreter over the unrolled graph; compiled backends subclass `Cell` too.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..lang import ast
from ..kernels.blas import (kernel_thread_count, kernel_threads, numba_threads, row_block_threads,
                   row_blocks_enabled)
from ..lang.check import CheckedCell, Decl
from ..lang.compose import LENGTH_MASK, with_lengths
from ..core import targets
from ..core.errors import BindError
from ..kernels.tile_sizes import MR
from ..ir.grad import UnrolledGrads, grad_unrolled
from ..ir.interp import Context, evaluate
from ..kernels.malloc import keep_freed_memory
from .seen import Seen, compiled_fingerprints, numpy_fingerprints
from ..ir.graph import StepGraph, Unrolled, lower, unroll

DTYPES = (np.float32, np.float64)
_NO_GRAD = threading.local()     # .on while a forward with grad=False runs (this thread)


def check_seen(tape) -> None:
    """Before a backward: the run's inputs and params are as its forward saw them, and
    it was a forward that a backward may follow."""
    if tape.seen is None:
        raise BindError("this Run came from forward(..., grad=False), which keeps nothing "
                        "for a backward; run forward again without grad=False")
    tape.seen.check()


@dataclass
class Run:
    """What `forward` returns: outputs (T, B, size), final states (B, size), and a tape."""

    outputs: dict[str, np.ndarray]
    state: dict[str, np.ndarray]
    T: int
    B: int
    _tape: Any = field(default=None, repr=False)


@dataclass
class Grads:
    """What `backward` returns: gradients for params, inputs (T, B, size), initial states."""

    params: dict[str, np.ndarray]
    inputs: dict[str, np.ndarray]
    state: dict[str, np.ndarray]


def _init_param(decl: Decl, shape: tuple[int, ...], rng: np.random.Generator, dtype):
    init = decl.init
    if init is None:
        init = ast.NamedInit("glorot" if len(shape) == 2 else "zeros")
    if isinstance(init, ast.ConstInit):
        return np.full(shape, init.value, dtype=dtype)
    name, args = init.name, init.args
    if name == "zeros":
        return np.zeros(shape, dtype=dtype)
    if name == "ones":
        return np.ones(shape, dtype=dtype)
    if name == "constant":
        return np.full(shape, args[0], dtype=dtype)
    if name == "uniform":
        return rng.uniform(args[0], args[1], size=shape).astype(dtype)
    if name == "normal":
        return rng.normal(args[0], args[1], size=shape).astype(dtype)
    if name == "glorot":  # Glorot & Bengio 2010, uniform: fan_in = columns, fan_out = rows
        limit = np.sqrt(6.0 / (shape[0] + shape[1]))
        return rng.uniform(-limit, limit, size=shape).astype(dtype)
    if name == "orthogonal":  # Saxe et al. 2014: Q of a Gaussian, signs fixed by R
        rows, cols = shape
        a = rng.normal(size=(max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))
        return (q if rows >= cols else q.T).astype(dtype)
    raise AssertionError(f"initialiser {name} passed the checker but has no implementation")


class Cell:
    """A cell type bound to one spec; instantiate it with dims to get params."""

    spec: CheckedCell
    step: StepGraph
    target = "abstract"

    def __init__(self, dtype=np.float32, seed: int | None = 0, **dims: int):
        spec = self.spec
        self.dtype = self._check_dtype(dtype)
        self.dims = self._check_dims(dims)
        for c in spec.constraints:
            value = c.size.evaluate(self.dims)
            if value < c.minimum:
                bound = ", ".join(f"{k}={v}" for k, v in self.dims.items())
                raise BindError(f"with {bound}: {c.message} "
                                f"({spec.source.path}:{c.span.line}:{c.span.column})")
        self.seed = seed
        self._token = object()   # identifies this cell's Runs (not id(): ids are reused)
        rng = np.random.default_rng(seed)
        self.params: dict[str, np.ndarray] = {
            d.name: _init_param(d, self._size(d), rng, self.dtype) for d in spec.params}

    # ------------------------------------------------------------------ binding
    @classmethod
    def _check_dtype(cls, dtype) -> np.dtype:
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise BindError(f"dtype {dtype!r} is not a NumPy dtype; use np.float32 or "
                            "np.float64") from None
        if dt not in [np.dtype(d) for d in DTYPES]:
            raise BindError(f"dtype {dt} is not supported; use np.float32 or np.float64")
        return dt

    @classmethod
    def _check_dims(cls, dims: Mapping[str, Any]) -> dict[str, int]:
        spec = cls.spec
        missing = [d for d in spec.dims if d not in dims]
        unknown = [d for d in dims if d not in spec.dims]
        if unknown:
            raise BindError(f"{spec.name} has no dim {', '.join(unknown)}; its dims are "
                            f"{', '.join(spec.dims)}")
        if missing:
            raise BindError(f"{spec.name} needs dims {', '.join(spec.dims)}; missing: "
                            f"{', '.join(missing)} (pass them as {spec.name}("
                            + ", ".join(f"{d}=..." for d in spec.dims) + "))")
        bound = {}
        for name in spec.dims:
            value = dims[name]
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) \
                    or value < 1:
                raise BindError(f"dim {name} must be a positive integer, got {value!r}")
            bound[name] = int(value)
        return bound

    def _size(self, decl: Decl) -> tuple[int, ...]:
        """The bound shape of a declaration, memoised: the Python around a one-step
        kernel (sampling calls it once a token) must cost less than the kernel."""
        cache = self.__dict__.setdefault("_sizes", {})
        key = id(decl)          # decls live as long as the class's spec holds them
        if key not in cache:
            cache[key] = (decl, tuple(d.evaluate(self.dims) for d in decl.type.shape))
        return cache[key][1]

    def __repr__(self) -> str:
        dims = ", ".join(f"{k}={v}" for k, v in self.dims.items())
        return f"<{self.spec.name}({dims}) {self.target} {self.dtype.name}>"

    # ------------------------------------------------------------------ checking arrays
    def _array(self, what: str, value, shape: tuple[int, ...], layout: str,
               finite: bool = True) -> np.ndarray:
        if not isinstance(value, np.ndarray):
            raise BindError(f"{what} must be a NumPy array of shape {layout}, got "
                            f"{type(value).__name__}")
        if value.dtype != self.dtype:
            raise BindError(f"{what} is {value.dtype} but the cell is {self.dtype.name}; "
                            f"convert it with .astype(np.{self.dtype.name})")
        if value.shape != shape:
            raise BindError(f"{what} has shape {value.shape}; expected {shape} = {layout}")
        if finite and not np.isfinite(value).all():
            where = tuple(int(i) for i in np.argwhere(~np.isfinite(value))[0])
            raise BindError(f"{what} has a non-finite value ({value[where]}) at index {where}")
        return value

    def _named(self, what: str, given, decls: tuple[Decl, ...]) -> dict[str, Any]:
        if given is None:
            return {}
        if not isinstance(given, Mapping):
            raise BindError(f"{what} must be a dict keyed by name ("
                            + ", ".join(d.name for d in decls) + f"), got "
                            f"{type(given).__name__}")
        names = [d.name for d in decls]
        for key in given:
            if key not in names:
                raise BindError(f"{self.spec.name} has no {what} '{key}'; "
                                f"its {what}s are: {', '.join(names) or 'none'}")
        return dict(given)

    @property
    def hidden_inputs(self) -> dict[str, Decl]:
        """Inputs the runtime fills, not the caller: dropout masks and the length mask."""
        hidden = set(dict(self.spec.dropouts)) | {LENGTH_MASK}
        return {d.name: d for d in self.spec.inputs if d.name in hidden}

    def _inputs(self, x, hidden=None) -> tuple[dict[str, np.ndarray], int, int]:
        """The caller's inputs, checked, and the hidden ones from `hidden(T, B)`."""
        decls = tuple(d for d in self.spec.inputs if d.name not in self.hidden_inputs)
        if len(decls) == 1 and not isinstance(x, Mapping):
            x = {decls[0].name: x}
        elif not isinstance(x, Mapping):
            raise BindError(f"{self.spec.name} has {len(decls)} inputs ("
                            + ", ".join(d.name for d in decls) + "); pass them as a dict")
        given = self._named("input", x, decls)
        missing = [d.name for d in decls if d.name not in given]
        if missing:
            raise BindError(f"missing input {', '.join(missing)}")
        T = B = None
        arrays = {}
        for d in decls:
            value = given[d.name]
            size = self._size(d)
            if isinstance(value, np.ndarray) and value.ndim != 3:
                raise BindError(f"input {d.name} has shape {value.shape}; expected 3 axes, "
                                f"(T, B, {size[0]}): time-major, one row per sequence")
            if isinstance(value, np.ndarray) and T is None:
                T, B = value.shape[:2]
                if T < 1 or B < 1:
                    raise BindError(f"input {d.name} has shape {value.shape}: a sequence "
                                    "needs T >= 1 steps and B >= 1 rows")
            arrays[d.name] = self._array(f"input {d.name}", value,
                                         (T if T else -1, B if B else -1) + size,
                                         f"(T, B, {size[0]})")
        if not decls:
            raise BindError(f"{self.spec.name} has no inputs")
        extra = hidden(T, B) if hidden is not None else {}
        for name, d in self.hidden_inputs.items():
            arrays[name] = (extra[name] if name in extra else
                            np.ones((T, B) + self._size(d), self.dtype))
        return arrays, T, B

    def _hidden(self, lengths, dropout):
        """A function (T, B) -> the hidden inputs: dropout masks (ones unless `dropout`
        is a random generator or seed: then 0 or 1/(1-p), inverted dropout) and, with
        `lengths`, the mask that is 1 while each sequence runs."""
        rng = None
        if dropout is not None and dropout is not False:
            rng = dropout if isinstance(dropout, np.random.Generator) else \
                np.random.default_rng(dropout)

        def make(T: int, B: int) -> dict[str, np.ndarray]:
            out = {}
            for name, rate in self.spec.dropouts:
                size = self._size(self.hidden_inputs[name])
                if rng is None or rate == 0.0:
                    out[name] = np.ones((T, B) + size, self.dtype)
                else:
                    keep = rng.random((T, B) + size) >= rate
                    out[name] = keep.astype(self.dtype) / self.dtype.type(1.0 - rate)
            if lengths is not None:
                from .modes import check_lengths
                arr = check_lengths(lengths, T, B)
                on = np.arange(T)[:, None] < arr[None, :]
                out[LENGTH_MASK] = on.astype(self.dtype)[..., None]
            return out
        return make

    def _initial_state(self, state, B: int) -> tuple[dict[str, np.ndarray], set[str]]:
        given = self._named("state", state, self.spec.states)
        values, from_params = {}, set()
        for d in self.spec.states:
            size = self._size(d)
            if d.name in given:
                values[d.name] = self._array(f"state {d.name}", given[d.name], (B,) + size,
                                             f"(B, {size[0]})")
            elif isinstance(d.init, ast.ParamRefInit):
                values[d.name] = np.broadcast_to(self.params[d.init.name], (B,) + size).copy()
                from_params.add(d.name)
            else:
                value = d.init.value if isinstance(d.init, ast.ConstInit) else 0.0
                values[d.name] = np.full((B,) + size, value, dtype=self.dtype)
        return values, from_params

    def _check_params(self) -> None:
        """Type, dtype and shape of every param. Not finiteness: scanning every weight on
        every call cost more than a one-step kernel when sampling, and a non-finite
        weight shows in the outputs (the losses refuse them, naming divergence)."""
        for d in self.spec.params:
            self._array(f"param {d.name}", self.params.get(d.name), self._size(d),
                        str(list(self._size(d))), finite=False)

    def _seen(self, params: Mapping[str, Any], inputs: Mapping[str, Any],
              fingerprints) -> Seen | None:
        """The params and the caller's inputs as this forward reads them (not the hidden
        inputs: the runtime makes those), fingerprinted for its backward (rnndsl.cells.seen);
        None for a forward with grad=False, which no backward may follow."""
        if getattr(_NO_GRAD, "on", False):
            return None
        names = self.__dict__.get("_seen_names")   # made once: this runs every forward
        if names is None:
            read = tuple(d.name for d in self.spec.params), tuple(
                d.name for d in self.spec.inputs if d.name not in self.hidden_inputs)
            names = self._seen_names = read + (tuple(f"param {n}" for n in read[0])
                                               + tuple(f"input {n}" for n in read[1]),)
        arrays = tuple([params[n] for n in names[0]] + [inputs[n] for n in names[1]])
        return Seen(names[2], arrays, fingerprints)

    def _cotangents(self, what: str, given, names_sizes, shape_of) -> dict[str, np.ndarray]:
        if given is None:
            return {}
        if not isinstance(given, Mapping):
            raise BindError(f"{what} must be a dict keyed by name, got {type(given).__name__}")
        out = {}
        noun = {"d_outputs": "output", "d_state": "state"}[what]
        for key, value in given.items():
            if key not in names_sizes:
                raise BindError(f"{self.spec.name} has no {noun} '{key}'; "
                                f"its {noun}s are: {', '.join(names_sizes)}")
            shape, layout = shape_of(names_sizes[key])
            out[key] = self._array(f"{what}['{key}']", value, shape, layout)
        return out

    def _scalar_output(self, name: str) -> bool:
        return next(o for o in self.spec.outputs if o.name == name).type.rank == 0

    def _backward_args(self, run, tape_type, d_outputs, d_state):
        """The run's tape (if this cell made it) and the checked cotangents."""
        tape = run._tape if isinstance(run, Run) else None
        if not isinstance(tape, tape_type) or tape.owner is not self._token:
            raise BindError("backward needs the Run that this cell's forward returned")
        check_seen(tape)
        T, B = run.T, run.B
        sizes_out = {o.name: tuple(d.evaluate(self.dims) for d in o.type.shape)
                     for o in self.spec.outputs}
        sizes_state = {d.name: self._size(d) for d in self.spec.states}
        d_out = self._cotangents("d_outputs", d_outputs, sizes_out,
                                 lambda s: ((T, B) + s, f"(T, B{''.join(f', {n}' for n in s)})"))
        d_st = self._cotangents("d_state", d_state, sizes_state,
                                lambda s: ((B,) + s, f"(B, {s[0]})"))
        return tape, d_out, d_st

    # ------------------------------------------------------------------ the contract
    def forward(self, x, state=None, *, lengths=None, dropout=None, steps=None,
                grad: bool = True) -> Run:
        """Run the cell over x (T, B, ...) from `state` (default: as declared).

        lengths: one int per sequence: sequence b runs lengths[b] steps; after that its
        state is frozen (run.state holds it at its end) and its outputs are 0.
        dropout: a np.random.Generator (or a seed) to draw the masks of the cell's
        dropout(...) sites, for training; None (evaluation) keeps every unit.
        steps: T, for a cell whose every input is `input once` (one-to-many).
        An `input once z[Z]` takes (B, Z): z at the first step, zeros after. A
        `final y = ...` output comes back as (B, ...): y at each sequence's last step.

        The run keeps the param and input arrays it read, for `backward`: until then,
        replace a param rather than change it in place (`cell.params["W"] = W2` leaves
        this run's W alone; `cell.params["W"] += ...` makes its backward raise), and do
        not change x in place. grad=False (sampling, evaluation) says no backward will
        follow: the run keeps nothing for one and skips fingerprinting what it read
        (about 8 us at the char shape, 6% of a one-step forward); its backward raises."""
        x = self._expand_once(x, steps)
        hidden = self._hidden(lengths, dropout)
        _NO_GRAD.on = not grad
        try:
            if lengths is None:
                run = self._run(x, state, hidden)
            else:
                twin = self._lengths_twin()
                run = twin._run(x, state, hidden)
                run._twin = twin
        finally:
            _NO_GRAD.on = False
        return self._finalise(run, lengths)

    def backward(self, run: Run, d_outputs=None, d_state=None,
                 input_grads: bool = True) -> Grads:
        """Gradients of sum_t <d_outputs_t, outputs_t> + <d_state, final state> (for a
        `final` output, d_outputs holds its (B, ...) cotangent: its last step's).

        input_grads=False leaves out the gradients of the input sequences (`g.inputs` is
        then empty): a layer fed with data never needs them, and the compiled cpu
        kernels then skip their work (for an LSTM, one of BPTT's three big GEMMs).

        These are the gradients of the forward that was run, at the params and inputs
        it read, on every target: a param replaced since (`cell.params["W"] = W2`)
        changes nothing, since the run holds the array its forward read. If one of
        those arrays was changed in place since (`cell.params["W"] += ...`,
        `x[...] = 0`), the values the forward saw are gone: backward raises BindError
        naming it (it compares a fingerprint of each, taken at forward: rnndsl.cells.seen)."""
        d_outputs = self._final_cotangents(run, d_outputs)
        twin = getattr(run, "_twin", None)
        grads = (twin or self)._back(run, d_outputs, d_state, bool(input_grads))
        if not input_grads:
            grads.inputs.clear()
        for name in (twin or self).hidden_inputs:
            grads.inputs.pop(name, None)
        for d in self.spec.inputs:
            if d.once and d.name in grads.inputs:   # z fed the first step only
                grads.inputs[d.name] = grads.inputs[d.name][0]
        return grads

    # ------------------------------------------------------------------ modes
    def _expand_once(self, x, steps):
        """`input once` arrays (B, size) -> (T, B, size), zero after the first step."""
        once = [d for d in self.spec.inputs if d.once]
        user = [d for d in self.spec.inputs if d.name not in self.hidden_inputs]
        if not once:
            if steps is not None:
                raise BindError(f"steps= is for cells whose inputs are all 'input once'; "
                                f"{self.spec.name} takes T from its input sequences")
            return x
        if len(user) == 1 and not isinstance(x, Mapping):
            x = {user[0].name: x}
        given = self._named("input", x, tuple(user))
        per_step = [d for d in user if not d.once and d.name in given]
        if per_step:
            first = given[per_step[0].name]
            T = first.shape[0] if isinstance(first, np.ndarray) and first.ndim == 3 else None
            if steps is not None and steps != T:
                raise BindError(f"steps={steps}, but input {per_step[0].name} has T = {T}")
        else:
            T = steps
            if not isinstance(T, (int, np.integer)) or isinstance(T, bool) or T < 1:
                raise BindError(f"{self.spec.name}'s inputs are all 'input once': say how "
                                f"many steps to run with steps=T (a positive int), got "
                                f"{steps!r}")
        out = dict(given)
        for d in once:
            if d.name not in given or T is None:
                continue       # a missing input or a bad sequence: _inputs says which
            size = self._size(d)
            value = given[d.name]
            B = value.shape[0] if isinstance(value, np.ndarray) and value.ndim == 2 else -1
            value = self._array(f"input {d.name} (input once)", value, (B,) + size,
                                f"(B, {size[0]}): one vector a sequence")
            seq = np.zeros((int(T),) + value.shape, self.dtype)
            seq[0] = value
            out[d.name] = seq
        return out

    def _final_outputs(self) -> set[str]:
        return {o.name for o in self.spec.outputs if o.final}

    def _finalise(self, run: Run, lengths) -> Run:
        """Each `final` output at each sequence's last step: (T, B, ...) -> (B, ...)."""
        finals = self._final_outputs()
        if not finals:
            return run
        run._lengths = lengths
        for name in finals:
            run.outputs[name] = self._last_step(run.outputs[name], lengths)
        return run

    def _last_step(self, full, lengths):
        """(T, B, ...) -> (B, ...) at each sequence's last step (cuda: on the device)."""
        from .modes import last_step
        return last_step(full, lengths)

    def _last_step_cotangent(self, value, T: int, lengths):
        """(B, ...) -> (T, B, ...), zero but at each sequence's last step."""
        from .modes import last_step_cotangent
        return last_step_cotangent(value, T, lengths)

    def _final_cotangents(self, run: Run, d_outputs):
        finals = self._final_outputs()
        if not finals or not isinstance(d_outputs, Mapping) or not isinstance(run, Run):
            return d_outputs
        out = dict(d_outputs)
        for name in finals & set(out):
            o = next(o for o in self.spec.outputs if o.name == name)
            size = tuple(d.evaluate(self.dims) for d in o.type.shape)
            value = self._checked_cotangent(f"d_outputs['{name}'] (a final output)",
                                            out[name], (run.B,) + size,
                                            f"(B{''.join(f', {n}' for n in size)})")
            out[name] = self._last_step_cotangent(value, run.T,
                                                  getattr(run, "_lengths", None))
        return out

    def _checked_cotangent(self, what: str, value, shape, layout: str):
        return self._array(what, value, shape, layout)

    def _lengths_twin(self) -> "Cell":
        """This cell's masked variant (compose.with_lengths), sharing its params."""
        cls = type(self)
        if "_lengths_cls" not in cls.__dict__:
            cls._lengths_cls = cls._make_lengths_class()
        twin = getattr(self, "_twin_cell", None)
        if twin is None:
            twin = object.__new__(cls._lengths_cls)
            twin.dtype, twin.dims, twin.seed = self.dtype, self.dims, self.seed
            twin._token = object()
            self._twin_cell = twin
        twin.params = self.params
        return twin

    @classmethod
    def _make_lengths_class(cls) -> type:
        raise NotImplementedError

    def _run(self, x, state, hidden) -> Run:
        raise NotImplementedError

    def _back(self, run: Run, d_outputs, d_state, input_grads: bool = True) -> Grads:
        """The gradients; input_grads=False lets a target skip the inputs' (the caller
        drops whatever it returns for them)."""
        raise NotImplementedError


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
        final = {name: values[nid].copy() for name, nid in u.final_state.items()}
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
        f"The cell {spec.name} from {spec.source.path} ({target}). Dims: "
        f"{', '.join(spec.dims)}."), "_unrolled": {}, "_grads": {}}
    return type(spec.name, (base,), namespace)


# ---------------------------------------------------------------------------- compiled
def _dim_from(value) -> "object":
    from ..core.shapes import Dim
    terms, const = value
    return Dim(tuple((str(n), int(c)) for n, c in terms), int(const))


@dataclass
class _CompiledTape:
    blocks: tuple                   # _RowBlock: one, or one per thread (_row_blocks)
    consts: np.ndarray              # host scalars: kernels take them by value
    owner: object                   # the cell's token: ids of dead objects get reused
    from_params: frozenset = frozenset()   # states that started at a learned param
    on_device: bool = False         # (cuda) did the caller pass device arrays?
    params: dict = field(default_factory=dict)   # the param arrays the kernels read
    seen: Seen | None = None        # and the caller's arrays, fingerprinted (rnndsl.cells.seen)


class CompiledCell(Cell):
    """A cell whose forward and backward are generated kernels (module `kernels`).

    The driver functions take the arrays that META's argument lists name; this class
    marshals them once for every compiled target. What a target does differently with
    memory is in the hooks below (`_prepare`, `_empty`, `_zeros`, `_kernel_param`,
    `_launch`, `_deliver`, `_cotangents_for`, `_plus_batch_sum`): NumPy arrays on the
    host here, device arrays in cuda_runtime.CudaCell.
    """

    target = "cpu"
    kernels: Any = None
    meta: dict = {}

    def __init__(self, dtype=np.float32, seed: int | None = 0, **dims: int):
        # each call's tapes and work arrays: reused heap blocks, not fresh pages (malloc.py)
        keep_freed_memory()
        super().__init__(dtype=dtype, seed=seed, **dims)
        self._compile_backward_ahead()

    @classmethod
    def _make_lengths_class(cls) -> type:
        from ..build.modules import cached_module
        from ..schedule.plan import PASSES, passes_for
        spec_file = _spec_file_of(cls.kernels, cls.meta)
        # the passes this class was built with (its module lists those of its target)
        off = set(passes_for(PASSES, cls.target)) - set(cls.meta["passes"])
        module = cached_module(spec_file, [p for p in PASSES if p not in off],
                               target=cls.target, variant="lengths")
        return getattr(module, cls.spec.name)

    def _consts(self) -> np.ndarray:
        values = [v if kind == "value" else _dim_from(v).evaluate(self.dims)
                  for kind, v in self.meta["consts"]]
        return np.array(values, dtype=self.dtype)

    def _tape_size(self, nid) -> int:
        """The feature size of a taped node, memoised like `_size`."""
        cache = self.__dict__.setdefault("_tape_sizes", {})
        if nid not in cache:
            cache.update({n: _dim_from(size).evaluate(self.dims)
                          for n, size in self.meta["tapes"]})
        return cache[nid]

    def _param(self, name: str) -> np.ndarray:
        value = np.ascontiguousarray(self.params[name])
        return value.reshape(1) if value.ndim == 0 else value

    def _out_size(self, name: str) -> tuple[int, ...]:
        o = next(o for o in self.spec.outputs if o.name == name)
        return tuple(d.evaluate(self.dims) for d in o.type.shape) or (1,)

    # ------------------------------------------------------------------ memory hooks
    def _prepare(self, x, state, hidden):
        """(inputs, initial states, states from params, T, B, on_device, read), checked;
        `read`: the inputs as the caller's arrays that the kernels read (`_seen`)."""
        inputs, T, B = self._inputs(x, hidden)
        state0, from_params = self._initial_state(state, B)
        self._check_params()
        inputs = {k: _kernel_array(v) for k, v in inputs.items()}
        state0 = {k: _kernel_array(v) for k, v in state0.items()}
        return inputs, state0, from_params, T, B, False, inputs

    def _seen_of(self, params: dict, read: dict) -> Seen:
        """The arrays the forward's kernels read from the caller, fingerprinted: here the
        params and inputs they are given (C-contiguous; a copy where the caller's were
        not, which nothing else can change)."""
        return self._seen(params, read, compiled_fingerprints)

    def _kernel_param(self, name: str):
        return self._param(name)

    def _workspace(self, shape: tuple[int, ...]):
        """An array only the tape holds (never handed to the user)."""
        return self._empty(shape)

    def _empty(self, shape: tuple[int, ...]):
        return np.empty(shape, self.dtype)

    def _zeros(self, shape: tuple[int, ...]):
        return np.zeros(shape, self.dtype)

    def _launch(self, driver, args) -> None:
        # Kernels built with the microkernel pass run their own parallel loops on
        # Numba's threads (the `threads` argument), so the BLAS inside stays at one.
        own_threads = ("threads",) in self.meta["forward_args"]
        with kernel_threads(1 if own_threads else None), \
                numba_threads(kernel_thread_count() if own_threads else None):
            driver(*args)

    def _deliver(self, arrays: dict, on_device: bool) -> dict:
        return arrays

    def _cotangents_for(self, run, d_outputs, d_state):
        """(tape, d_outputs, d_state), checked and contiguous."""
        tape, d_out, d_st = self._backward_args(run, _CompiledTape, d_outputs, d_state)
        return (tape, {k: _kernel_array(v) for k, v in d_out.items()},
                {k: _kernel_array(v) for k, v in d_st.items()})

    def _plus_batch_sum(self, param_grad, state_grad):
        """A learned initial state's param collects its batch's gradient."""
        return param_grad + state_grad.sum(axis=0)

    # ------------------------------------------------------------------ row blocks
    def _row_blocks(self, B: int) -> list[tuple[int, int]]:
        """The batch rows each thread runs the whole time loop on: [(0, B)], or with
        more threads (by default one a core; RNNDSL_BLAS_THREADS) and MR+ rows a
        thread, contiguous blocks.

        A cell's rows never meet (DESIGN.md: each row is its own sequence), so each
        thread can run the entire forward or backward on its rows with no barrier
        between steps, and the elementwise work and the copies go parallel too, not
        only the GEMMs. Under MR rows a thread the kernel splits its GEMMs' panels
        among the threads instead (rnndsl.kernels.gemm), since a block that small would lose
        the register tiles, if RNNDSL_BLAS_THREADS asks for more than one thread
        (rnndsl.kernels.blas says why not by default). RNNDSL_ROW_BLOCKS=0 keeps one block (to
        measure the gain)."""
        if ("threads",) not in self.meta["forward_args"] or not row_blocks_enabled():
            return [(0, B)]
        parts = max(1, min(row_block_threads(), B // MR))
        return [(q * B // parts, (q + 1) * B // parts) for q in range(parts)]

    def _launch_blocks(self, driver, arg_lists) -> None:
        """Each block's kernel call on its own thread (this one runs the first). The
        kernels are compiled `nogil`, and each runs one thread: its BLAS held to one,
        its own parallel loops off (`threads` = 1 in its arguments)."""
        if len(arg_lists) == 1:
            self._launch(driver, arg_lists[0])
            return
        with kernel_threads(1), numba_threads(1):
            pending = [_block_pool().submit(driver, *args) for args in arg_lists[1:]]
            try:
                driver(*arg_lists[0])
            finally:
                for future in pending:
                    future.result()

    # ------------------------------------------------------------------ compiling ahead
    def _kernel_signatures(self) -> tuple[tuple, tuple]:
        """The Numba signatures of this cell's forward and backward kernel calls: the
        argument lists of one block at T = B = 1 (never run), whose arrays are of the
        kinds every call passes (this dtype, C-contiguous, writeable)."""
        import numba
        T = B = 1
        inputs = {d.name: self._zeros((T, B) + self._size(d)) for d in self.spec.inputs}
        state0 = {d.name: self._zeros((B,) + self._size(d)) for d in self.spec.states}
        consts = self._consts()
        params = {d.name: self._kernel_param(d.name) for d in self.spec.params}
        forward, _, _, tapes = self._forward_args(params, inputs, state0, T, B, consts, 1)
        backward = self._block_backward_args(_RowBlock(0, B, tapes, inputs), params, consts,
                                             {}, {}, T, False, 1)[0]
        return (tuple(numba.typeof(a) for a in forward),
                tuple(numba.typeof(a) for a in backward))

    def _compile_backward_ahead(self) -> None:
        """When the first cell of this class and dtype is made in the process: if its
        backward kernel is neither compiled nor cached, have a child process compile it
        while this one goes on to its first forward (rnndsl.build.compile_ahead)."""
        key = (type(self), self.dtype)
        if key in _AHEAD_ASKED:
            return
        with _AHEAD_LOCK:
            if key in _AHEAD_ASKED:
                return
            _AHEAD_ASKED.add(key)
            from ..build import compile_ahead
            if not compile_ahead.enabled() or not hasattr(self.meta["backward"], "overloads"):
                return
            child = compile_ahead.start(self.kernels, self.meta["backward"].__name__,
                                        self._kernel_signatures()[1])
            if child is not None:
                _AHEAD_CHILDREN[key] = child

    def _wait_for_backward_compile(self) -> None:
        """The first backward waits for the child compiling its kernel, if there is one,
        and then loads it from Numba's cache (or compiles it here, if the child failed)."""
        child = _AHEAD_CHILDREN.pop((type(self), self.dtype), None)
        if child is not None and not child.wait():
            import warnings
            lines = child.stderr.strip().splitlines()
            warnings.warn(f"rnndsl: the second process compiling {child.what} failed (exit "
                          f"{child.returncode}); compiling it here instead. Its last words: "
                          + (lines[-1] if lines else "(none)")
                          + "; RNNDSL_COMPILE_AHEAD=0 switches compiling ahead off",
                          RuntimeWarning, stacklevel=3)

    # ------------------------------------------------------------------ the drivers
    def _forward_args(self, params, inputs, state0, T: int, B: int, consts, threads: int):
        """One block's forward argument list, and the outputs, finals and tapes it
        writes (fresh arrays, B rows). `params`: the kernels' param arrays, taken once a
        run (`_kernel_param`), which the run's backward reads too."""
        states = {d.name: d for d in self.spec.states}
        outputs: dict[str, Any] = {}
        finals: dict[str, Any] = {}
        tapes: dict[tuple, Any] = {}
        args = []
        for arg in self.meta["forward_args"]:
            kind = arg[0]
            if kind == "dim":
                args.append(self.dims[arg[1]])
            elif kind in ("T", "B"):
                args.append(T if kind == "T" else B)
            elif kind == "consts":
                args.append(consts)
            elif kind == "threads":
                args.append(threads)
            elif kind == "param":
                args.append(params[arg[1]])
            elif kind == "input":
                args.append(inputs[arg[1]])
            elif kind == "state0":
                args.append(state0[arg[1]])
            elif kind == "output":
                outputs[arg[1]] = self._empty((T, B) + self._out_size(arg[1]))
                args.append(outputs[arg[1]])
            elif kind == "final":
                finals[arg[1]] = self._empty((B,) + self._size(states[arg[1]]))
                args.append(finals[arg[1]])
            elif kind == "hist":
                tapes[arg] = self._workspace((T, B) + self._size(states[arg[1]]))
                args.append(tapes[arg])
            elif kind == "tape":
                tapes[arg] = self._workspace((T, B, self._tape_size(arg[1])))
                args.append(tapes[arg])
            else:
                raise AssertionError(f"unknown forward argument {arg}")
        return args, outputs, finals, tapes

    def _run(self, x, state, hidden) -> Run:
        inputs, state0, from_params, T, B, on_device, read = self._prepare(x, state, hidden)
        consts = self._consts()
        params = {d.name: self._kernel_param(d.name) for d in self.spec.params}
        seen = self._seen_of(params, read)
        rows = self._row_blocks(B)
        if len(rows) == 1:
            args, outputs, finals, tapes = self._forward_args(
                params, inputs, state0, T, B, consts, kernel_thread_count())
            self._launch(self.meta["forward"], args)
            blocks = (_RowBlock(0, B, tapes, inputs),)
        else:
            blocks, parts = [], []
            for r0, r1 in rows:
                mine = _rows_of(inputs, r0, r1, axis=1)
                args, outputs, finals, tapes = self._forward_args(
                    params, mine, _rows_of(state0, r0, r1, axis=0), T, r1 - r0, consts, 1)
                blocks.append(_RowBlock(r0, r1, tapes, mine))
                parts.append((args, outputs, finals))
            self._launch_blocks(self.meta["forward"], [p[0] for p in parts])
            outputs = _joined([p[1] for p in parts], axis=1)
            finals = _joined([p[2] for p in parts], axis=0)
        shown = {name: (y.reshape((T, B)) if self._scalar_output(name) else y)
                 for name, y in outputs.items()}
        tape = _CompiledTape(tuple(blocks), consts, self._token, frozenset(from_params),
                             on_device, params, seen)
        return Run(self._deliver(shown, on_device), self._deliver(finals, on_device), T, B,
                   tape)

    def _block_backward_args(self, block: _RowBlock, tape_params, consts, d_out, d_st,
                             T: int, skip_inputs: bool, threads: int):
        """One block's backward argument list, and the gradients it writes (fresh
        arrays: params, inputs (T, rows), states (rows)). It reads the params the
        forward read (`tape_params`), not today's: a param replaced since changes
        nothing (and one changed in place, tape.seen refuses)."""
        B = block.r1 - block.r0
        sizes_state = {d.name: self._size(d) for d in self.spec.states}
        params = {d.name: self._zeros(self._size(d) or (1,)) for d in self.spec.params}
        # without input_grads the kernel may leave these unwritten: no zeroing needed
        blank = self._empty if skip_inputs else self._zeros
        inputs = {d.name: blank((T, B) + self._size(d)) for d in self.spec.inputs}
        state = {d.name: self._zeros((B,) + self._size(d)) for d in self.spec.states}
        args = []
        for arg in self.meta["backward_args"]:
            kind = arg[0]
            if kind == "dim":
                args.append(self.dims[arg[1]])
            elif kind in ("T", "B"):
                args.append(T if kind == "T" else B)
            elif kind == "consts":
                args.append(consts)
            elif kind == "threads":
                args.append(threads)
            elif kind == "input_grads":
                args.append(not skip_inputs)
            elif kind == "param":
                args.append(tape_params[arg[1]])
            elif kind == "input":
                args.append(block.inputs[arg[1]])
            elif kind == "output_grad":
                size = self._out_size(arg[1])
                given = d_out.get(arg[1])
                args.append(self._zeros((T, B) + size) if given is None
                            else given.reshape((T, B) + size))
            elif kind == "final_grad":
                given = d_st.get(arg[1])
                args.append(self._zeros((B,) + sizes_state[arg[1]]) if given is None
                            else given)
            elif kind == "param_grad":
                args.append(params[arg[1]])
            elif kind == "input_grad":
                args.append(inputs[arg[1]])
            elif kind == "state0_grad":
                args.append(state[arg[1]])
            elif kind in ("hist", "tape"):
                args.append(block.arrays[arg])
            else:
                raise AssertionError(f"unknown backward argument {arg}")
        return args, params, inputs, state

    def _back(self, run: Run, d_outputs, d_state, input_grads: bool = True) -> Grads:
        tape, d_out, d_st = self._cotangents_for(run, d_outputs, d_state)
        self._wait_for_backward_compile()
        T = run.T
        skip_inputs = not input_grads and ("input_grads",) in self.meta["backward_args"]
        if len(tape.blocks) == 1:   # the forward's rows decide, not today's thread count
            args, params, inputs, state = self._block_backward_args(
                tape.blocks[0], tape.params, tape.consts, d_out, d_st, T, skip_inputs,
                kernel_thread_count())
            self._launch(self.meta["backward"], args)
        else:
            parts = []
            for block in tape.blocks:
                r0, r1 = block.r0, block.r1
                parts.append(self._block_backward_args(
                    block, tape.params, tape.consts, _rows_of(d_out, r0, r1, axis=1),
                    _rows_of(d_st, r0, r1, axis=0), T, skip_inputs, 1))
            self._launch_blocks(self.meta["backward"], [p[0] for p in parts])
            params = parts[0][1]
            for part in parts[1:]:      # each block's rows' share of the weight gradients
                for name, grad in part[1].items():
                    params[name] += grad
            inputs = _joined([p[2] for p in parts], axis=1)
            state = _joined([p[3] for p in parts], axis=0)
        params = self._deliver(params, tape.on_device)
        state = self._deliver(state, tape.on_device)
        for d in self.spec.states:
            if d.name in tape.from_params:
                params[d.init.name] = self._plus_batch_sum(params[d.init.name], state[d.name])
        if not tape.on_device:
            params = {d.name: params[d.name].reshape(self._size(d)) for d in self.spec.params}
        return Grads(params, self._deliver(inputs, tape.on_device), state)


@dataclass
class _RowBlock:
    """The rows r0 .. r1-1 of a compiled run, as one kernel call saw them: its tapes and
    its inputs (the caller's arrays for a single block, contiguous copies otherwise)."""
    r0: int
    r1: int
    arrays: dict[tuple, Any]        # ("hist", name) / ("tape", nid) -> (T, rows, size)
    inputs: dict[str, Any]


def _kernel_array(value: np.ndarray) -> np.ndarray:
    """The array as the kernels take it: C-contiguous and writeable. Numba compiles a
    kernel once for each kind of array it is called with, and a read-only one (a memory
    map, a broadcast) is another kind: another 2-9 s compile. A copy costs less."""
    if value.flags.c_contiguous and value.flags.writeable:
        return value
    return np.array(value, order="C")


def _rows_of(arrays: Mapping[str, np.ndarray], r0: int, r1: int, axis: int) -> dict:
    """Rows r0 .. r1-1 (batch axis `axis`) of each array, as C-contiguous copies."""
    index = (slice(None),) * axis + (slice(r0, r1),)
    return {k: np.ascontiguousarray(v[index]) for k, v in arrays.items()}


def _joined(parts: list[dict], axis: int) -> dict:
    """The blocks' arrays put back together along the batch axis."""
    return {k: np.concatenate([p[k] for p in parts], axis=axis) for k in parts[0]}


_POOL = None

# compile_ahead's bookkeeping: the (cell class, dtype) pairs whose first cell has been
# made, and the child processes still compiling their backward kernels
_AHEAD_LOCK = threading.Lock()
_AHEAD_ASKED: set = set()
_AHEAD_CHILDREN: dict = {}


def _block_pool():
    """The threads that run row blocks beside the caller's (made once, kept)."""
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor
        # threads start as blocks need them; row_block_threads caps how many do
        _POOL = ThreadPoolExecutor(max_workers=64, thread_name_prefix="rnndsl-rows")
    return _POOL


def _spec_file_of(module, meta):
    """The spec file a generated module was built from: the checked one kept beside a
    cached module (cache.recalled_spec), or else read from the texts it carries."""
    from ..build.cache import recalled_spec
    kept = recalled_spec(module)
    if kept is not None:
        return kept
    from ..lang.specfile import read_spec
    return read_spec(meta["spec_path"], meta["spec_text"],
                     files=getattr(module, "SPEC_FILES", {}))


class _LoweredOnDemand:
    """A compiled cell class's `step` (its one-step graph), made when first asked for:
    the kernels do not need it, and making it imports networkx, 0.08 s of a warm load."""

    def __get__(self, obj, owner):
        step = lower(owner.spec)
        owner.step = step     # the class keeps it: the next access is a plain attribute
        return step


def compiled_cell_class(module, name: str) -> type:
    """The class a generated module exports: its kernels behind the `Cell` API."""
    meta = getattr(module, f"{name}_META")
    spec = _spec_file_of(module, meta).cells[name]
    if getattr(module, "VARIANT", None) == "lengths":
        spec = with_lengths(spec)
    namespace = {"spec": spec, "step": _LoweredOnDemand(), "kernels": module, "meta": meta,
                 "digest": getattr(module, "SPEC_HASH", ""), "__module__": module.__name__,
                 "__doc__": f"The cell {name} from {meta['spec_path']}, compiled for the CPU. "
                            f"Dims: {', '.join(spec.dims)}."}
    return type(name, (CompiledCell,), namespace)


