"""Cells as Python objects: the API contract every target keeps (DESIGN.md).

    Cell = rnndsl.load("specs/lstm.rnn", target="interp")
    cell = Cell(I=65, H=128, dtype=np.float32, seed=0)
    run = cell.forward(x, state={"h": h0})            # run.outputs, run.state
    g = cell.backward(run, d_outputs={"h": dY})      # g.params, g.inputs, g.state

`Cell` binds dims, owns the params and checks every array that crosses the API (type,
dtype, shape, finiteness) with a message naming what was expected; `Run` and `Grads`
are what forward and backward return. The targets subclass it: reference.py (the
interpreter), compiled.py (generated CPU kernels), cuda.py. A `Workspace`, lent to
forward and backward by a caller that asks for it (the trainer), lets a target reuse
its internal buffers from one call to the next.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import numpy as np

from ..core.flat import flat_views
from ..core.initialisers import initial_value

from ..core.errors import BindError
from ..core.numbers import is_whole
from ..lang import ast
from ..lang.checked import CheckedCell, Decl
from ..lang.compose import LENGTH_MASK
from ..ir.graph import StepGraph
from .seen import Seen

DTYPES = (np.float32, np.float64)
_NO_GRAD = threading.local()     # .on while a forward with grad=False runs (this thread)
_LENT = threading.local()        # .workspace: the Workspace lent to the call running here
_TWIN_LOCK = threading.Lock()    # making a class's variable-length twin, once


def check_seen(tape) -> None:
    """Before a backward: the run's inputs and params are as its forward saw them, and
    it was a forward that a backward may follow."""
    if tape.seen is None:
        raise BindError("this Run came from forward(..., grad=False), which keeps nothing "
                        "for a backward; run forward again without grad=False")
    if not tape.seen.by_kernel:    # else the backward kernel takes them (cells/compiled.py)
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


class Workspace:
    """Buffers that a caller lends a cell's forward and backward calls, to be reused from
    one call to the next instead of allocated and filled afresh (a training step's shapes
    are the same every step):

        ws = Workspace()
        run = cell.forward(x, state, workspace=ws)      # the run's tapes are ws's
        g = cell.backward(run, d_outputs, workspace=ws)  # and so are g's arrays

    What a forward returns (outputs, final states) is never the workspace's. The tapes
    its run keeps for backward are: the next forward with the workspace (of the same
    cell, shape and row split) overwrites them, and backward on the earlier run then
    raises. The gradients a backward with the workspace returns are the workspace's too,
    valid until its next backward: whoever lends it consumes them before (rnndsl.train's
    Trainer.step clips them and updates the params). Without a workspace every call's
    arrays are its own. One call at a time: a workspace is not for two threads at once.
    Targets that reuse nothing (interp, cuda) take it and ignore it.

    `blas_held`: the lender says that it holds the kernels' BLAS at one thread around
    the calls it lends the workspace to (`rnndsl.kernels.blas.kernel_threads(1)`), so
    that a call wanting one thread need not set it and set it back (0.08 ms a call in a
    training step).
    """

    MAX_SHAPES = 4        # the shapes kept (the last ones used): a short last chunk, ...

    def __init__(self) -> None:
        self._entries: dict = {}
        self.blas_held = False

    def _entry(self, key, make):
        """The buffers kept under `key`, made by `make()` the first time."""
        entry = self._entries.pop(key, None)
        if entry is None:
            entry = make()
        self._entries[key] = entry                  # the most recent last
        while len(self._entries) > self.MAX_SHAPES:
            del self._entries[next(iter(self._entries))]
        return entry

    def _holds(self, key, entry) -> bool:
        return self._entries.get(key) is entry

    def __repr__(self) -> str:
        return f"<Workspace: {len(self._entries)} shape(s)>"


def lent_workspace():
    """The Workspace lent to the forward or backward running on this thread, or None."""
    return getattr(_LENT, "workspace", None)


@contextmanager
def lending(workspace):
    """`workspace` lent to the calls made on this thread inside (`lent_workspace`)."""
    lent, _LENT.workspace = lent_workspace(), workspace
    try:
        yield
    finally:
        _LENT.workspace = lent


def check_workspace(workspace) -> None:
    if workspace is not None and not isinstance(workspace, Workspace):
        raise BindError("workspace must be an rnndsl.cells.base.Workspace or None, got "
                        f"{type(workspace).__name__}")


def _init_param(decl: Decl, shape: tuple[int, ...], rng: np.random.Generator, dtype):
    """A param's starting value: its `~ initialiser` (core/initialisers.py, the table the
    checker reads too), a number, or by default glorot for a matrix and zeros else."""
    init = decl.init
    if init is None:
        init = ast.NamedInit("glorot" if len(shape) == 2 else "zeros")
    if isinstance(init, ast.ConstInit):
        return np.full(shape, init.value, dtype=dtype)
    return initial_value(init.name, init.args, shape, rng, dtype)


DIRECTIONS = ("forward", "reverse", "bidirectional")


class Cell:
    """A cell type bound to one spec; instantiate it with dims to get params.

    `direction="reverse"` or `"bidirectional"` gives a cell run backwards in time, or
    both ways (rnndsl.cells.directions.Directional: the same API)."""

    spec: CheckedCell
    step: StepGraph
    target = "abstract"
    # rnndsl.cells.directions.Directional, set by rnndsl/cells/__init__.py, which runs
    # before any module of the package (so that this one need not import the module
    # that builds on it)
    _directional: Any = None

    def __new__(cls, *args, direction: str = "forward", **kwargs):
        if direction == "forward":
            return super().__new__(cls)
        if direction not in DIRECTIONS:
            raise BindError(f"direction {direction!r} is not one of: "
                            + ", ".join(DIRECTIONS))
        return Cell._directional(cls, direction, *args, **kwargs)

    def __init__(self, dtype=np.float32, seed: int | None = 0, direction: str = "forward",
                 **dims: int):
        spec = self.spec
        self.dtype = self._check_dtype(dtype)
        self.dims = self._check_dims(dims)
        for c in spec.constraints:
            value = c.size.evaluate(self.dims)
            if value < c.minimum:
                bound = ", ".join(f"{k}={v}" for k, v in self.dims.items())
                raise BindError(f"with {bound}: {c.message} "
                                f"({spec.source.path}:{c.span.line}:{c.span.column})")
        if seed is not None and not is_whole(seed):
            raise BindError(f"seed must be a non-negative integer or None, got {seed!r}")
        self.seed = seed
        self._token = object()   # identifies this cell's Runs (not id(): ids are reused)
        rng = np.random.default_rng(seed)
        # views of one flat buffer, in the spec's order (core/flat.py): a norm or an
        # optimiser step over the whole model is then one loop
        shapes = [self._size(d) for d in spec.params]
        bound = ", ".join(f"{k}={v}" for k, v in self.dims.items())
        try:
            _, views = flat_views(shapes, self.dtype, fill=None)
        except (MemoryError, ValueError):
            size = sum(float(np.prod(s, dtype=np.float64)) for s in shapes) * \
                self.dtype.itemsize
            raise BindError(f"{spec.name}({bound}): its params would take {size / 2**30:,.1f} "
                            "GiB, more than this machine can allocate") from None
        self.params: dict[str, np.ndarray] = {}
        for d, view in zip(spec.params, views):
            try:
                with np.errstate(over="ignore"):      # refused below, by name
                    view[...] = _init_param(d, self._size(d), rng, self.dtype)
            except MemoryError:      # an initialiser draws in float64, then casts
                raise BindError(f"{spec.name}({bound}): drawing param {d.name}'s start "
                                "needs more memory than this machine can allocate") from None
            if not np.isfinite(view).all():
                raise BindError(f"{spec.name}({bound}): param {d.name}'s initialiser gives "
                                f"values beyond {self.dtype.name}'s range (largest "
                                f"{np.finfo(self.dtype).max:.3g}); give smaller values, or "
                                "use dtype=np.float64")
            self.params[d.name] = view
        info = np.finfo(self.dtype)
        # half the smallest subnormal and below rounds to 0 in the dtype (1e-50 in float32)
        too_big = _number_beyond(spec, float(info.max), float(info.smallest_subnormal) / 2)
        if too_big is not None:     # a constant past the dtype's range: inf or 0, silently
            where = f"{spec.source.path}:{too_big.span.line}:{too_big.span.column}: " \
                if too_big.span.line else ""
            if abs(too_big.value) > float(info.max):
                raise BindError(f"{where}{spec.name}({bound}): the constant "
                                f"{too_big.value:g} is beyond {self.dtype.name}'s range "
                                f"(largest {info.max:.3g}); use a smaller one, or "
                                "dtype=np.float64")
            raise BindError(f"{where}{spec.name}({bound}): the constant {too_big.value:g} is "
                            f"too small for {self.dtype.name}: it would be 0 (smallest "
                            f"{info.smallest_subnormal:.3g}); write 0 if zero is meant, or "
                            "use dtype=np.float64")
        for d in spec.states:       # a start value past the dtype's range: inf, silently
            if isinstance(d.init, ast.ConstInit):
                with np.errstate(over="ignore"):
                    start = self.dtype.type(d.init.value)
                if not np.isfinite(start):
                    raise BindError(f"{spec.name}({bound}): state {d.name} starts at "
                                    f"{d.init.value:g}, beyond {self.dtype.name}'s range "
                                    f"(largest {info.max:.3g}); give a "
                                    "smaller start, or use dtype=np.float64")

    # ------------------------------------------------------------------ binding
    @classmethod
    def _check_dtype(cls, dtype) -> np.dtype:
        if isinstance(dtype, (int, np.integer)) and not isinstance(dtype, (bool, np.bool_)):
            dims = ", ".join(f"{d}=..." for d in cls.spec.dims)
            raise BindError(f"{cls.spec.name}({dtype!r}, ...): dims are given by name, "
                            f"{cls.spec.name}({dims}); the first positional argument is the "
                            "dtype (np.float32 or np.float64), the second the seed")
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
            if not is_whole(value, 1):
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
        return checked_array(what, value, shape, layout, self.dtype, finite)

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

    def __getstate__(self):
        """What `copy.deepcopy` (and pickle, for a class importable by name: a built
        module's) copies: the cell less what it memoises from its spec on first use (a
        read-only mapping, which cannot be copied), made again by the copy; less a stacked
        cell's per-layer network (`_net`: its class is made at run time, and pickle could
        not find it by name), made again at the copy's first per-layer call. Each dict is
        taken whole first (one C call, which holds the GIL): another thread's first calls
        add to the memos, and copy.deepcopy, iterating one as it grew, raised "dictionary
        changed size during iteration"."""
        state = {k: dict(v) if type(v) is dict else v for k, v in dict(self.__dict__).items()}
        for memo in ("_hidden_inputs", "_user_inputs", "_net"):
            state.pop(memo, None)
        return state

    @property
    def hidden_inputs(self) -> Mapping[str, Decl]:
        """Inputs the runtime fills, not the caller: dropout masks and the length mask
        (read-only, made once a cell: every call asks, some once an input)."""
        found = self.__dict__.get("_hidden_inputs")
        if found is None:
            hidden = set(dict(self.spec.dropouts)) | {LENGTH_MASK}
            found = self._hidden_inputs = MappingProxyType(
                {d.name: d for d in self.spec.inputs if d.name in hidden})
        return found

    def _inputs(self, x, hidden=None) -> tuple[dict[str, np.ndarray], int, int]:
        """The caller's inputs, checked, and the hidden ones from `hidden(T, B)`."""
        decls = self.__dict__.get("_user_inputs")     # made once: this runs every call
        if decls is None:
            decls = self._user_inputs = tuple(d for d in self.spec.inputs
                                              if d.name not in self.hidden_inputs)
        if len(decls) == 1 and type(x) is np.ndarray:    # the common case, quickly
            given = {decls[0].name: x}
        else:
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
            if d.token:
                arrays[d.name] = ids = self._token_input(d, value, size[0], T, B)
                T, B = T or ids.shape[0], B or ids.shape[1]
                continue
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
        if LENGTH_MASK in extra:
            _fill_padding(arrays, extra[LENGTH_MASK], decls)
        return arrays, T, B

    def _token_input(self, d: Decl, value, V: int, T, B) -> np.ndarray:
        """An `input token x[V]`, given as integer ids (T, B) in [0, V) or as one-hot
        rows (T, B, V), in the form this target's kernels take (`_token_form`)."""
        layout = f"ids (T, B) in [0, {V}), or one-hot rows (T, B, {V})"
        what = f"input {d.name} (input token)"
        if not isinstance(value, np.ndarray):
            raise BindError(f"{what} must be a NumPy array: {layout}; got "
                            f"{type(value).__name__}")
        if value.dtype.kind in "iu" and value.ndim == 2:      # integer ids
            ids = value
            if ids.size and (ids.min() < 0 or ids.max() >= V):
                bad = tuple(int(i) for i in np.argwhere((ids < 0) | (ids >= V))[0])
                raise BindError(f"{what} has id {ids[bad]} at index {bad}; ids are in "
                                f"[0, {V})")
        elif value.ndim == 3 and value.shape[2] == V and np.issubdtype(value.dtype,
                                                                         np.floating):
            ones = value == 1
            one_hot = (ones | (value == 0)).all(axis=2) & (ones.sum(axis=2) == 1)
            if not one_hot.all():
                bad = tuple(int(i) for i in np.argwhere(~one_hot)[0])
                raise BindError(f"{what}: row {bad} is not one-hot (one 1, the rest 0); "
                                f"give {layout}")
            ids = ones.argmax(axis=2)
        else:
            raise BindError(f"{what} has shape {value.shape} and dtype {value.dtype}; "
                            f"expected {layout}")
        if ids.ndim != 2 or ids.shape[0] < 1 or ids.shape[1] < 1:
            raise BindError(f"{what} has shape {value.shape}: a sequence needs T >= 1 "
                            "steps and B >= 1 rows")
        if (T, B) != (None, None) and ids.shape != (T, B):
            raise BindError(f"{what} has {ids.shape[0]} steps of {ids.shape[1]} rows; the "
                            f"other inputs have (T, B) = ({T}, {B})")
        return self._token_form(d, ids, V)

    def _token_form(self, d: Decl, ids: np.ndarray, V: int) -> np.ndarray:
        """What the kernels read for a token input: here the one-hot rows (T, B, V) in
        the cell's dtype; targets whose kernels gather by id take the ids."""
        out = np.zeros(ids.shape + (V,), self.dtype)
        np.put_along_axis(out, ids[..., None].astype(np.intp), 1, axis=2)
        return out

    def _hidden(self, lengths, dropout):
        """A function (T, B) -> the hidden inputs: dropout masks (ones unless `dropout`
        is a random generator or seed: then 0 or 1/(1-p), inverted dropout) and, with
        `lengths`, the mask that is 1 while each sequence runs."""
        rng = None
        if dropout is not None and dropout is not False:
            if not isinstance(dropout, np.random.Generator) and not is_whole(dropout):
                raise BindError(f"dropout must be a np.random.Generator or a non-negative "
                                f"integer seed (None: no dropout), got {dropout!r}")
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

    def initial_state(self, B: int) -> dict[str, np.ndarray]:
        """The state a forward of B rows starts from when given none: each state's
        initial value (a constant, zeros, or its learned param) for every row."""
        if not is_whole(B):
            raise BindError(f"initial_state takes the number of rows B, a non-negative "
                            f"integer, got {B!r}")
        return self._initial_state(None, int(B))[0]

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
        weight shows in the outputs (the losses refuse them, naming divergence).
        Every param as expected is the common case, checked first in one quick pass."""
        expected = self.__dict__.get("_param_shapes")
        if expected is None:
            expected = self._param_shapes = {d.name: self._size(d) for d in self.spec.params}
        check_param_table(self.spec.name, self.params, expected, self.dtype)

    # how a param of this cell is named to its user: as in its spec, unless the cell runs
    # inside a two-way or network cell, which names it so (`U_i_reverse`, `l1.U_i`)
    param_names_shown = "{}"

    def param_label(self, name: str) -> str:
        return self.param_names_shown.format(name)

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
            names = self._seen_names = read + (tuple(f"param {self.param_label(n)}"
                                                     for n in read[0])
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
        sizes = self.__dict__.get("_cotangent_sizes")      # made once: every backward asks
        if sizes is None:
            sizes = self._cotangent_sizes = (
                {o.name: tuple(d.evaluate(self.dims) for d in o.type.shape)
                 for o in self.spec.outputs},
                {d.name: self._size(d) for d in self.spec.states})
        sizes_out, sizes_state = sizes
        d_out = self._cotangents("d_outputs", d_outputs, sizes_out,
                                 lambda s: ((T, B) + s, f"(T, B{''.join(f', {n}' for n in s)})"))
        d_st = self._cotangents("d_state", d_state, sizes_state,
                                lambda s: ((B,) + s, f"(B, {s[0]})"))
        return tape, d_out, d_st

    # ------------------------------------------------------------------ the contract
    def forward(self, x, state=None, *, lengths=None, dropout=None, steps=None,
                grad: bool = True, workspace: Workspace | None = None) -> Run:
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
        (about 8 us at the char shape, 6% of a one-step forward), and the compiled cpu
        kernel writes no tapes that only BPTT reads (its inference twin); its backward
        raises.
        workspace: a `Workspace` whose buffers the run's tapes may reuse (see there)."""
        check_workspace(workspace)
        x = self._expand_once(x, steps)
        hidden = self._hidden(lengths, dropout)
        _NO_GRAD.on = not grad
        try:
            with lending(workspace):
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
                 input_grads: bool = True, workspace: Workspace | None = None) -> Grads:
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
        naming it (it compares a fingerprint of each, taken at forward: rnndsl.cells.seen).

        workspace: the `Workspace` the run's forward was lent, whose buffers the
        gradients may then be (valid until its next backward; see there). A run whose
        tapes a later forward with its workspace has reused cannot go backward."""
        check_workspace(workspace)
        d_outputs = self._final_cotangents(run, d_outputs)
        twin = getattr(run, "_twin", None)
        with lending(workspace):
            grads = (twin or self)._back(run, d_outputs, d_state, bool(input_grads))
        if not input_grads:
            grads.inputs.clear()
        for name in (twin or self).hidden_inputs:
            grads.inputs.pop(name, None)
        for d in self.spec.inputs:
            if d.token:           # ids have no gradient
                grads.inputs.pop(d.name, None)
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
        rows = None             # B, from the sequences (else from the first `once` input)
        if per_step:
            first = given[per_step[0].name]
            # a sequence: (T, B, size), or a token input's ids (T, B)
            seq_ndim = (2, 3) if per_step[0].token else (3,)
            shape = getattr(first, "shape", None)    # a NumPy or a device array
            T = shape[0] if isinstance(shape, tuple) and len(shape) in seq_ndim else None
            rows = shape[1] if T is not None else None
            if T is not None and (T < 1 or rows < 1):    # no step to give the once inputs
                raise BindError(f"input {per_step[0].name} has shape {shape}: a sequence "
                                "needs T >= 1 steps and B >= 1 rows")
            if steps is not None and steps != T:
                raise BindError(f"steps={steps}, but input {per_step[0].name} has T = {T}")
        else:
            T = once_steps(self.spec.name, steps)
        out = dict(given)
        for d in once:
            if d.name not in given or T is None:
                continue       # a missing input or a bad sequence: _inputs says which
            size = self._size(d)
            value = given[d.name]
            what, layout = f"input {d.name} (input once)", f"(B, {size[0]}): one vector a sequence"
            if isinstance(value, np.ndarray) and value.ndim != 2:
                raise BindError(f"{what} has shape {value.shape}; expected {layout}"
                                + (f" (read at the first step), not a (T, B, {size[0]}) "
                                   "sequence" if value.ndim == 3 else ""))
            if rows is None:
                rows = value.shape[0] if isinstance(value, np.ndarray) else 0
            # checked as given, (B, size), before it is spread over the T steps
            value = self._array(what, value, (rows,) + size, layout)
            seq = np.zeros((int(T),) + value.shape, self.dtype)
            seq[0] = value
            out[d.name] = seq
        return out

    def _final_outputs(self) -> set[str]:
        return {o.name for o in self.spec.outputs if o.final}

    def _finalise(self, run: Run, lengths) -> Run:
        """Each `final` output at each sequence's last step: (T, B, ...) -> (B, ...)
        (but those the kernels computed there already, `run._at_end`)."""
        finals = self._final_outputs()
        if not finals:
            return run
        run._lengths = lengths
        if lengths is not None:     # a last step needs a length of 1 or more
            from .modes import check_lengths
            check_lengths(lengths, run.T, run.B, minimum=1)
        for name in finals - getattr(run, "_at_end", frozenset()):
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
            with _TWIN_LOCK:     # two threads (a bidirectional cell's) may ask at once
                if "_lengths_cls" not in cls.__dict__:
                    cls._lengths_cls = cls._make_lengths_class()
        twin = getattr(self, "_twin_cell", None)
        if twin is None:
            twin = object.__new__(cls._lengths_cls)
            twin.dtype, twin.dims, twin.seed = self.dtype, self.dims, self.seed
            twin._token = object()
            self._twin_cell = twin
        twin.params = self.params
        twin.param_names_shown = self.param_names_shown
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


def _number_beyond(spec: CheckedCell, largest: float, vanishing: float = 0.0):
    """The first number written in the cell's equations whose size is past `largest`
    (it would be inf in that dtype), or nonzero and at most `vanishing` (it would be 0),
    or None; exponents aside."""
    import dataclasses

    def walk(node):
        if isinstance(node, ast.Number):
            if abs(node.value) > largest or 0 < abs(node.value) <= vanishing:
                return node
            return None
        if isinstance(node, ast.Pow):     # an exponent of inf still means something:
            return walk(node.base)        # |x| < 1 gives 0 (the ONNX export's test)
        if dataclasses.is_dataclass(node) and not isinstance(node, type):
            for f in dataclasses.fields(node):
                found = walk(getattr(node, f.name))
                if found is not None:
                    return found
        elif isinstance(node, (tuple, list)):
            for item in node:
                found = walk(item)
                if found is not None:
                    return found
        return None
    for definition in spec.definitions:
        found = walk(definition.expr)
        if found is not None:
            return found
    return None


def _fill_padding(arrays: dict, mask: np.ndarray, decls) -> None:
    """The steps after each sequence's end (`mask` 0) of each per-step input in `arrays`
    given the sequence's last input (copies: the caller's arrays are left alone). What
    padding holds is then never computed with: a cell computes at every step and the
    lengths mask freezes the state and zeroes the outputs after the end, but a padded
    0 in `log(x)` made the masked sum 0 * -inf = NaN, in the state and in every
    gradient. A row of length 0 reads the longest row's inputs (it has none of its own);
    a batch whose every row has length 0 has no input to read instead, and computes
    with its padding (docs/language.md says so). An `input once` is left alone (zero
    after its first step by design)."""
    ends = mask[..., 0].sum(axis=0).astype(np.intp)          # each row's length
    T = mask.shape[0]
    if ends.min(initial=T) >= T or ends.max(initial=0) == 0:
        return                     # nothing padded; or nothing to read instead
    rows = np.where(ends > 0, np.arange(len(ends)), int(np.argmax(ends)))      # (B,)
    steps = np.minimum(np.arange(T)[:, None], (ends[rows] - 1)[None, :])      # (T, B)
    for d in decls:
        if not d.once:
            arrays[d.name] = arrays[d.name][steps, rows[None, :]]


def once_steps(cell_name: str, steps) -> int:
    """`steps=`, how many steps a cell whose inputs are all `input once` runs: a positive
    int, or a BindError that says so."""
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 1:
        raise BindError(f"{cell_name}'s inputs are all 'input once': say how many steps to "
                        f"run with steps=T (a positive int), got {steps!r}")
    return int(steps)


def check_param_table(cell_name: str, params, shapes: Mapping[str, tuple], dtype) -> None:
    """A cell's params, by the names its users see (a plain cell's spec names; a two-way
    or network cell's `W_i_reverse`, `l1.W_i`, checked before its inner cells would say
    it in their own): a dict holding exactly those names (a misspelt one would be
    ignored, the model running on the old values), each an array of its shape and the
    cell's dtype. Every param as expected, the common case, is checked in one quick pass."""
    if not isinstance(params, Mapping):
        raise BindError(f"{cell_name}'s params must be a dict keyed by param name, got "
                        f"{type(params).__name__}")
    for name, shape in shapes.items():      # the common case, all as expected, quickly
        p = params.get(name)
        if type(p) is not np.ndarray or p.dtype != dtype or p.shape != shape:
            break
    else:
        if len(params) == len(shapes):
            return
    unknown = sorted(set(params) - set(shapes), key=str)
    if unknown:
        raise BindError(f"{cell_name} has no param {', '.join(map(str, unknown))}; its "
                        f"params are: {', '.join(shapes)}")
    for name, shape in shapes.items():
        checked_array(f"param {name}", params.get(name), shape, str(list(shape)), dtype,
                      finite=False)


def checked_array(what: str, value, shape: tuple[int, ...], layout: str, dtype,
                  finite: bool = True) -> np.ndarray:
    """`value` if it is a NumPy array of `dtype` and `shape` (and finite), else a
    BindError naming `what` and the `layout` expected: every array that crosses the Cell
    API (two-way and network cells' cotangents too) is checked by this one function."""
    dtype = np.dtype(dtype)
    if not isinstance(value, np.ndarray):
        raise BindError(f"{what} must be a NumPy array of shape {layout}, got "
                        f"{type(value).__name__}")
    if value.dtype != dtype:
        raise BindError(f"{what} is {value.dtype} but the cell is {dtype.name}; "
                        f"convert it with .astype(np.{dtype.name})")
    if value.shape != shape:
        raise BindError(f"{what} has shape {value.shape}; expected {shape} = {layout}")
    if finite and not np.isfinite(value).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(value))[0])
        raise BindError(f"{what} has a non-finite value ({value[where]}) at index {where}")
    return value

