"""The compiled CPU cell: a generated module's kernels behind the `Cell` API.

`compiled_cell_class(module, name)` is what every generated module calls for each of its
cells. `CompiledCell` marshals the argument lists the module's META names, splits the
batch into row blocks on threads, and keeps what backward needs; cuda.py subclasses it
with device memory.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from ..core.flat import flat_span, flat_views
from ..ir.graph import lower
from ..kernels.blas import (kernel_thread_count, kernel_threads, numba_threads,
                            row_block_threads, row_blocks_enabled)
from ..kernels.malloc import keep_freed_memory
from ..kernels.tile_sizes import MR
from ..lang.compose import with_lengths
from .base import Cell, Grads, Run, check_seen  # noqa: F401
from .seen import Seen, compiled_fingerprints

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

    def _param_grad_arrays(self) -> dict[str, np.ndarray]:
        """Zeroed arrays for one backward call's param gradients: views of one flat
        buffer (core/flat.py), so that the norm, the clipping and the optimiser step of
        a training step are one loop each over the whole model."""
        shapes = [self._size(d) or (1,) for d in self.spec.params]
        _, views = flat_views(shapes, self.dtype)
        return dict(zip((d.name for d in self.spec.params), views))

    def _token_form(self, d, ids: np.ndarray, V: int) -> np.ndarray:
        """Kernels built to gather by id (meta "token_ids") take the ids as int64;
        others (older modules, targets without the gather) the one-hot rows."""
        if d.name in self.meta.get("token_ids", ()):
            return np.ascontiguousarray(ids, dtype=np.int64)
        return super()._token_form(d, ids, V)

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
        """A learned initial state's param collects its batch's gradient (in place: the
        gradient stays a view of the flat buffer)."""
        param_grad += state_grad.sum(axis=0).reshape(param_grad.shape)
        return param_grad

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
        inputs = {d.name: (self._token_form(d, np.zeros((T, B), np.int64), self._size(d)[0])
                           if d.token else self._zeros((T, B) + self._size(d)))
                  for d in self.spec.inputs}
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
        args = self._arguments("forward", T, B, consts, threads, {
            "param": lambda a: params[a[1]],
            "input": lambda a: inputs[a[1]],
            "state0": lambda a: state0[a[1]],
            "output": lambda a: _kept(outputs, a[1],
                                      self._empty((T, B) + self._out_size(a[1]))),
            "final": lambda a: _kept(finals, a[1],
                                     self._empty((B,) + self._size(states[a[1]]))),
            "hist": lambda a: _kept(tapes, a,
                                    self._workspace((T, B) + self._size(states[a[1]]))),
            "tape": lambda a: _kept(tapes, a,
                                    self._workspace((T, B, self._tape_size(a[1])))),
        })
        return args, outputs, finals, tapes

    def _arguments(self, which: str, T: int, B: int, consts, threads: int,
                   take: Mapping[str, Any]) -> list:
        """A kernel's argument list, read from its metadata (`forward_args` or
        `backward_args`: (kind, name) records): the kinds both kernels take from here,
        the others each from its getter in `take` (called with the record)."""
        shared = {"dim": lambda a: self.dims[a[1]], "T": lambda a: T, "B": lambda a: B,
                  "consts": lambda a: consts, "threads": lambda a: threads}
        args = []
        for arg in self.meta[f"{which}_args"]:
            get = shared.get(arg[0]) or take.get(arg[0])
            if get is None:
                raise AssertionError(f"unknown {which} argument {arg}")
            args.append(get(arg))
        return args

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
        params = self._param_grad_arrays()
        # without input_grads the kernel may leave these unwritten: no zeroing needed
        blank = self._empty if skip_inputs else self._zeros
        inputs = {d.name: blank((T, B) + self._size(d)) for d in self.spec.inputs
                  if not d.token}     # ids have no gradient
        state = {d.name: self._zeros((B,) + self._size(d)) for d in self.spec.states}

        def cotangent(given, shape):
            return self._zeros(shape) if given is None else given.reshape(shape)

        args = self._arguments("backward", T, B, consts, threads, {
            "input_grads": lambda a: not skip_inputs,
            "param": lambda a: tape_params[a[1]],
            "input": lambda a: block.inputs[a[1]],
            "output_grad": lambda a: cotangent(d_out.get(a[1]),
                                               (T, B) + self._out_size(a[1])),
            "final_grad": lambda a: cotangent(d_st.get(a[1]), (B,) + sizes_state[a[1]]),
            "param_grad": lambda a: params[a[1]],
            "input_grad": lambda a: inputs[a[1]],
            "state0_grad": lambda a: state[a[1]],
            "hist": lambda a: block.arrays[a],
            "tape": lambda a: block.arrays[a],
        })
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
            total = flat_span(list(params.values()))
            for part in parts[1:]:      # each block's rows' share of the weight gradients
                share = flat_span(list(part[1].values()))
                if total is not None and share is not None:
                    total += share
                    continue
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


def _kept(into: dict, key, value):
    """value, also recorded in `into` under key (the arrays a kernel call writes)."""
    into[key] = value
    return value


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


