"""The compiled CPU cell: a generated module's kernels behind the `Cell` API.

`compiled_cell_class(module, name)` is what every generated module calls for each of its
cells. `CompiledCell` marshals the argument lists the module's META names, splits the
batch into row blocks on threads, and keeps what backward needs; cuda.py subclasses it
with device memory.

A call lent a `Workspace` (base.py; the trainer lends one) reuses its buffers from one
call to the next, and `step_with` runs a training step's forward, loss and backward in
one launch: reusing.py, a part of CompiledCell.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from ..core.errors import BindError
from ..core.files import printable
from ..core.flat import flat_span, flat_views
from ..ir.graph import lower
from ..kernels.blas import (hold_blas, kernel_thread_count, kernel_threads, numba_threads,
                            release_blas, row_block_threads, row_blocks_enabled)
from ..kernels.malloc import keep_freed_memory
from ..kernels import tile_sizes
from ..lang.compose import with_lengths
from .base import _NO_GRAD, Cell, Grads, Run, lent_workspace
from .blocks import (_NOTHING, _CompiledTape, _RowBlock, _blas_held, _give_back, _joined,
                     _kernel_array, _rows_of, _rows_to_copy, _take_helpers, _with_copies,
                     thread_share)
from .reusing import ReusedBuffers
from .seen import Seen, compiled_fingerprints

_NO_SEEN = np.empty(0, np.uint64)   # a forward kernel's `seen` when no fingerprints are wanted


def _dim_from(value) -> "object":
    from ..core.shapes import Dim
    terms, const = value
    return Dim(tuple((str(n), int(c)) for n, c in terms), int(const))


class CompiledCell(ReusedBuffers, Cell):
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
        """The kernels' `consts`: numbers, sizes, and the marks chosen for this machine
        (kind "tuning": rnndsl.build.machine, read once a process). Made once a cell and
        marks (every call asks); the kernels only read it."""
        tuned = None
        tunes = self.__dict__.get("_tunes")
        if tunes is None:
            tunes = self._tunes = any(kind == "tuning" for kind, _ in self.meta["consts"])
        if tunes:
            from ..build.machine import tuning     # (not at import: warm loads)
            tuned = tuning()
        made = self.__dict__.get("_consts_made")
        if made is not None and made[0] is tuned:
            return made[1]
        values = []
        for kind, v in self.meta["consts"]:
            if kind == "value":
                values.append(v)
            elif kind == "dim":
                values.append(_dim_from(v).evaluate(self.dims))
            elif kind == "tuning":
                values.append(tuned.values[v])
            else:
                raise AssertionError(f"unknown constant {kind!r}")
        consts = np.array(values, dtype=self.dtype)     # (writeable: Numba types a
        self._consts_made = (tuned, consts)              # read-only array apart)
        return consts

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
        layout = self.__dict__.get("_grad_layout")     # made once: every backward asks
        if layout is None:
            layout = self._grad_layout = ([self._size(d) or (1,) for d in self.spec.params],
                                          [d.name for d in self.spec.params])
        _, views = flat_views(layout[0], self.dtype)
        return dict(zip(layout[1], views))

    def _token_form(self, d, ids: np.ndarray, V: int) -> np.ndarray:
        """Kernels built to gather by id (meta "token_ids") take the ids as int64;
        others (older modules, targets without the gather) the one-hot rows."""
        if d.name in self.meta.get("token_ids", ()):
            return np.ascontiguousarray(ids, dtype=np.int64)
        return super()._token_form(d, ids, V)

    @property
    def _at_end(self) -> frozenset[str]:
        """The `final` outputs that the forward kernel computes once, after its loop,
        from the final states (the schedule's final_at_end): (B, size) arrays, already
        at each sequence's last step. The others come back (T, B, size)."""
        return frozenset(self.meta.get("at_end", ()))

    def _output_shape(self, name: str, T: int, B: int) -> tuple[int, ...]:
        rows = (B,) if name in self._at_end else (T, B)
        return rows + self._out_size(name)

    def _output_rows(self, output: np.ndarray, name: str, r0: int, r1: int) -> np.ndarray:
        """Rows r0 .. r1-1 of a joined output: axis 1 of (T, B, size), axis 0 of an
        at-end output's (B, size)."""
        return output[r0:r1] if name in self._at_end else output[:, r0:r1]

    def _shown(self, outputs: dict) -> dict:
        """The outputs as forward returns them: a scalar output (T, B), or (B,) at the
        end, without its size-1 axis."""
        return {name: (y.reshape(y.shape[:-1]) if self._scalar_output(name) else y)
                for name, y in outputs.items()}

    def _made_run(self, outputs, finals, T: int, B: int, tape) -> Run:
        run = Run(outputs, finals, T, B, tape)
        run._at_end = self._at_end      # for _finalise (this cell may be a lengths twin)
        return run

    def _out_size(self, name: str) -> tuple[int, ...]:
        sizes = self.__dict__.get("_out_sizes")
        if sizes is None:
            sizes = self._out_sizes = {
                o.name: tuple(d.evaluate(self.dims) for d in o.type.shape) or (1,)
                for o in self.spec.outputs}
        return sizes[name]

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

    def _kernel_seen(self) -> tuple[str, ...] | None:
        """The names of what this forward's kernel fingerprints as it reads it (its
        `seen` argument): the params and inputs in its argument order ("param W",
        "input x"); None where it takes none: a module without that argument (rnndsl
        0.1.0's), or a forward that no backward may follow (grad=False). Those are the
        arrays `_seen_of` would fingerprint, and the hidden inputs, which the runtime
        made and nothing changes. The backward kernel takes them again (`_back`): each
        kernel reads these arrays anyway, so the fingerprints cost one extra pass, which
        brings them into cache for the kernel's own reads, and no call of their own
        (benchmarks/backward_snapshot.py)."""
        names = self.__dict__.get("_kernel_seen_names", False)
        if names is False:
            args = [tuple(a) for a in self.meta["forward_args"]]
            names = self._kernel_seen_names = (
                tuple(f"param {self.param_label(a[1])}" if a[0] == "param" else
                      f"{a[0]} {a[1]}" for a in args if a[0] in ("param", "input"))
                if ("seen",) in args else None)
        return None if names is None or getattr(_NO_GRAD, "on", False) else names

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
        # Plain code, not context managers: this runs every call, and the generators
        # cost more than the switches (about 10 us of a 100 us call at the char shape).
        if not self._own_threads():
            with kernel_threads(None):
                driver(*args)
            return
        changed = None if _blas_held() else hold_blas(1)
        try:
            threads = kernel_thread_count()
            if threads == 1:     # the kernel opens no parallel region (rnndsl.kernels.gemm)
                driver(*args)
            else:
                with numba_threads(threads):
                    driver(*args)
        finally:
            release_blas(changed)

    def _own_threads(self) -> bool:
        """Whether the kernels take a `threads` argument (the microkernel pass): they
        then run their own parallel loops, and can run on row blocks."""
        own = self.__dict__.get("_owns_threads")
        if own is None:
            own = self._owns_threads = ("threads",) in self.meta["forward_args"]
        return own

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
        # the tile's rows the module was built for (a built file may come from another
        # machine); modules of rnndsl 0.1.0 import the process's
        mr = getattr(self.kernels, "MR", None) or tile_sizes.MR
        if B < 2 * mr or not self._own_threads() or not row_blocks_enabled():
            return [(0, B)]     # (under two blocks' rows: one block, whatever the threads)
        share = thread_share()      # beside another direction: its share of the cores
        parts = max(1, min(row_block_threads(), B // mr, share or B))
        return [(q * B // parts, (q + 1) * B // parts) for q in range(parts)]

    def _launch_blocks(self, driver, arg_lists) -> None:
        """Each block's kernel call on its own thread (this one runs the first, the
        others `_Helper`s). The kernels are compiled `nogil`, and each runs one thread:
        its BLAS held to one, its own parallel loops off (`threads` = 1 in its
        arguments: rnndsl.kernels.gemm opens no parallel region for one thread, so
        Numba's thread count needs no setting, which costs a process-wide lock)."""
        if len(arg_lists) == 1:
            self._launch(driver, arg_lists[0])
            return
        self._launch_jobs([(driver, args) for args in arg_lists])

    def _launch_jobs(self, jobs: list[tuple]) -> None:
        """(function, args) pairs, each on its own thread (`_launch_blocks`), the first
        on this one; raises what one raised, once all have ended."""
        with _NOTHING if _blas_held() else kernel_threads(1):
            helpers = _take_helpers(len(jobs) - 1)
            for helper, (function, args) in zip(helpers, jobs[1:]):
                helper.start(function, args)
            try:
                jobs[0][0](*jobs[0][1])
            finally:
                failed = [error for error in (h.wait() for h in helpers) if error is not None]
                _give_back(helpers)
            if failed:
                raise failed[0]

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
    def _forward_args(self, params, inputs, state0, T: int, B: int, consts, threads: int,
                      seen=_NO_SEEN):
        """One block's forward argument list, and the outputs, finals and tapes it
        writes (fresh arrays, B rows). `params`: the kernels' param arrays, taken once a
        run (`_kernel_param`), which the run's backward reads too. `seen`: where the
        kernel writes its fingerprints (empty: it takes none)."""
        # A plain loop over the argument records (meta "forward_args"), not a getter a
        # kind: a one-step forward (sampling) runs this once a token, and lambdas cost
        # 5-10 us.
        outputs: dict[str, Any] = {}
        finals: dict[str, Any] = {}
        tapes: dict[tuple, Any] = {}
        args = []
        empty = self._empty
        # with grad=False the twin kernel runs, which leaves the tapes only BPTT reads
        # unwritten: each is handed an empty array of its rank (no allocation a call).
        # Only the twin: the forward kernel in its place (a module without one, or one
        # put there by hand) writes every tape, and the kernels check no bounds
        unused = self._twins_unused() if getattr(_NO_GRAD, "on", False) else ()
        for i, arg in enumerate(self.meta["forward_args"]):
            if unused and i in unused:
                args.append(self._unused_tape(arg))
                continue
            kind = arg[0]
            if kind == "param":
                value = params[arg[1]]
            elif kind == "input":
                value = inputs[arg[1]]
            elif kind == "state0":
                value = state0[arg[1]]
            elif kind == "output":
                value = outputs[arg[1]] = empty(self._output_shape(arg[1], T, B))
            elif kind == "final":
                value = finals[arg[1]] = empty((B,) + self._state_size(arg[1]))
            elif kind == "hist":
                value = tapes[arg] = self._workspace((T, B) + self._state_size(arg[1]))
            elif kind == "tape":
                value = tapes[arg] = self._workspace((T, B, self._tape_size(arg[1])))
            else:
                value = self._sized_arg(arg, T, B, consts, threads, seen, "forward")
            args.append(value)
        return args, outputs, finals, tapes

    def _twins_unused(self) -> tuple[int, ...]:
        """The forward arguments the twin leaves unwritten, where the kernel to run is the
        module's own twin (`forward_inference_<Cell>`); none for anything else in its
        place (the forward kernel, a wrapper put there by hand), which may write them."""
        meta = self.meta
        twin = meta.get("forward_inference")
        built = getattr(self.kernels, f"forward_inference_{self.spec.name}", None)
        return meta.get("inference_unused", ()) if twin is not None and twin is built else ()

    def _unused_tape(self, arg) -> np.ndarray:
        """An empty array of the rank of a tape or history the inference twin does not
        write: (T, B, size) for a tape, (T, B) + the state's shape for a history."""
        rank = 3 if arg[0] == "tape" else 2 + len(self._state_size(arg[1]))
        made = self.__dict__.setdefault("_unused_tapes", {})
        if rank not in made:
            made[rank] = np.empty((0,) * rank, self.dtype)
        return made[rank]

    def _sized_arg(self, arg, T: int, B: int, consts, threads: int, seen, which: str):
        """The arguments both kernels take alike: sizes, consts, threads, fingerprints."""
        kind = arg[0]
        if kind == "dim":
            return self.dims[arg[1]]
        if kind == "T":
            return T
        if kind == "B":
            return B
        if kind == "consts":
            return consts
        if kind == "threads":
            return threads
        if kind == "seen":
            return seen
        raise AssertionError(f"unknown {which} argument {arg}")

    def _state_size(self, name: str) -> tuple[int, ...]:
        sizes = self.__dict__.get("_state_sizes")
        if sizes is None:
            sizes = self._state_sizes = {d.name: self._size(d) for d in self.spec.states}
        return sizes[name]

    def _run(self, x, state, hidden) -> Run:
        inputs, state0, from_params, T, B, on_device, read = self._prepare(x, state, hidden)
        # a workspace holds the tapes a backward reads: a forward with grad=False keeps
        # none, and its inference twin's arguments (placeholders for the tapes it does
        # not write) must never reach the workspace's full forward, which writes them all
        # (past the end of the placeholders: memory corrupted, a crash later)
        workspace = lent_workspace() if self.target == "cpu" and \
            not getattr(_NO_GRAD, "on", False) else None
        if workspace is not None:
            params = self._host_params()
            seen = self._seen_of(params, read)
            outputs, finals, blocks, reused = self._run_reusing(
                workspace, inputs, state0, T, B, params, self._row_blocks(B))
            tape = _CompiledTape(blocks, reused.consts, self._token, frozenset(from_params),
                                 False, params, seen, reused, reused.generation)
            return self._made_run(self._shown(outputs), finals, T, B, tape)
        consts = self._consts()
        params = {d.name: self._kernel_param(d.name) for d in self.spec.params}
        rows = self._row_blocks(B)
        forward = self._forward_kernel()
        if len(rows) == 1:
            # the kernel fingerprints what it reads as it starts, where it can (no call of
            # their own); else they are taken here
            names = self._kernel_seen()
            seen = None if names is not None else self._seen_of(params, read)
            sums = _NO_SEEN if names is None else np.empty(len(names), np.uint64)
            args, outputs, finals, tapes = self._forward_args(
                params, inputs, state0, T, B, consts, kernel_thread_count(), sums)
            self._launch(forward, args)
            blocks = (_RowBlock(0, B, tapes, inputs),)
            if names is not None:
                seen = Seen.taken_by_kernel(names, sums)
        else:
            # each block's thread copies its rows of the inputs in, and its outputs
            # into their rows of the joined ones (blocks._with_copies); the final
            # states it writes through views of their rows, which are contiguous
            seen = self._seen_of(params, read)
            final_slots = self._arg_slots("forward").get("final", ())
            finals = {arg[1]: self._empty((B,) + self._state_size(arg[1]))
                      for _, arg in final_slots}
            outputs = None
            blocks, jobs = [], []
            for r0, r1 in rows:
                before: list = []
                mine = _rows_to_copy(inputs, r0, r1, 1, before)
                args, outs, _, tapes = self._forward_args(
                    params, mine, _rows_of(state0, r0, r1, axis=0), T, r1 - r0, consts, 1)
                for i, arg in final_slots:
                    args[i] = finals[arg[1]][r0:r1]
                if outputs is None:
                    outputs = {name: self._empty(self._output_shape(name, T, B))
                               for name in outs}
                after = [(self._output_rows(outputs[name], name, r0, r1), y)
                         for name, y in outs.items()]
                blocks.append(_RowBlock(r0, r1, tapes, mine))
                jobs.append((_with_copies, (forward, args, before, after)))
            self._launch_jobs(jobs)
        tape = _CompiledTape(tuple(blocks), consts, self._token, frozenset(from_params),
                             on_device, params, seen)
        return self._made_run(self._deliver(self._shown(outputs), on_device),
                              self._deliver(finals, on_device), T, B, tape)

    def _forward_kernel(self):
        """The forward kernel for this call: with grad=False, where the module has one,
        its twin that writes no tapes only BPTT reads (codegen: inference_twin; its
        arguments are the forward's, those tapes left unwritten)."""
        if getattr(_NO_GRAD, "on", False):
            return self.meta.get("forward_inference", self.meta["forward"])
        return self.meta["forward"]

    def _block_backward_args(self, block: _RowBlock, tape_params, consts, d_out, d_st,
                             T: int, skip_inputs: bool, threads: int, seen=_NO_SEEN):
        """One block's backward argument list, and the gradients it writes (fresh
        arrays: params, inputs (T, rows), states (rows)). It reads the params the
        forward read (`tape_params`), not today's: a param replaced since changes
        nothing (and one changed in place, tape.seen refuses). `seen`: where the kernel
        writes the fingerprints of what it reads (empty: it takes none)."""
        B = block.r1 - block.r0
        params = self._param_grad_arrays()
        # without input_grads the kernel may leave these unwritten: no zeroing needed
        blank = self._empty if skip_inputs else self._zeros
        inputs = {d.name: blank((T, B) + self._size(d)) for d in self.spec.inputs
                  if not d.token}     # ids have no gradient
        state = {d.name: self._zeros((B,) + self._size(d)) for d in self.spec.states}

        def cotangent(given, shape):
            return self._zeros(shape) if given is None else given.reshape(shape)

        args = []                  # a plain loop over the records, as _forward_args
        for arg in self.meta["backward_args"]:
            kind = arg[0]
            if kind == "param":
                value = tape_params[arg[1]]
            elif kind == "input":
                value = block.inputs[arg[1]]
            elif kind in ("hist", "tape"):
                value = block.arrays[arg]
            elif kind == "param_grad":
                value = params[arg[1]]
            elif kind == "input_grad":
                value = inputs[arg[1]]
            elif kind == "state0_grad":
                value = state[arg[1]]
            elif kind == "output_grad":
                value = cotangent(d_out.get(arg[1]), (T, B) + self._out_size(arg[1]))
            elif kind == "final_grad":
                value = cotangent(d_st.get(arg[1]), (B,) + self._state_size(arg[1]))
            elif kind == "input_grads":
                value = not skip_inputs
            else:
                value = self._sized_arg(arg, T, B, consts, threads, seen, "backward")
            args.append(value)
        return args, params, inputs, state

    def _back(self, run: Run, d_outputs, d_state, input_grads: bool = True) -> Grads:
        tape, d_out, d_st = self._cotangents_for(run, d_outputs, d_state)
        reused = tape.reused
        if reused is not None and tape.generation != reused.generation:
            raise BindError("this Run's tapes were overwritten by a later forward lent the "
                            "same workspace: backward needs the run of the workspace's latest "
                            "forward (or run forward without a workspace)")
        self._wait_for_backward_compile()
        T = run.T
        skip_inputs = not input_grads and "input_grads" in self._arg_slots("backward")
        workspace = lent_workspace()
        if reused is not None and workspace is not None and workspace._holds(reused.key,
                                                                             reused):
            params, inputs, state = self._back_reusing(tape, d_out, d_st, T, skip_inputs)
            for d in self.spec.states:
                if d.name in tape.from_params:
                    params[d.init.name] = self._plus_batch_sum(params[d.init.name],
                                                               state[d.name])
            return Grads(params, inputs, state)
        if len(tape.blocks) == 1:   # the forward's rows decide, not today's thread count
            seen = tape.seen
            now = np.empty_like(seen.sums) if seen.by_kernel else _NO_SEEN
            args, params, inputs, state = self._block_backward_args(
                tape.blocks[0], tape.params, tape.consts, d_out, d_st, T, skip_inputs,
                kernel_thread_count(), now)
            self._launch(self.meta["backward"], args)
            if seen.by_kernel:     # the kernel took them again as it read the arrays
                seen.compare(now)
        else:
            # each block's thread copies its rows of the cotangents in and its inputs'
            # gradients out (blocks._with_copies), as the forward's blocks do
            parts, jobs = [], []
            inputs = None
            for block in tape.blocks:
                r0, r1 = block.r0, block.r1
                before: list = []
                part = self._block_backward_args(
                    block, tape.params, tape.consts, _rows_to_copy(d_out, r0, r1, 1, before),
                    _rows_of(d_st, r0, r1, axis=0), T, skip_inputs, 1)
                if inputs is None:
                    inputs = {name: self._empty((T, run.B) + g.shape[2:])
                              for name, g in part[2].items()}
                after = [] if skip_inputs else [(inputs[name][:, r0:r1], g)
                                                for name, g in part[2].items()]
                parts.append(part)
                jobs.append((_with_copies, (self.meta["backward"], part[0], before, after)))
            self._launch_jobs(jobs)
            params = parts[0][1]
            total = flat_span(list(params.values()))
            for part in parts[1:]:      # each block's rows' share of the weight gradients
                share = flat_span(list(part[1].values()))
                if total is not None and share is not None:
                    total += share
                    continue
                for name, grad in part[1].items():
                    params[name] += grad
            state = _joined([p[3] for p in parts], axis=0)
        params = self._deliver(params, tape.on_device)
        state = self._deliver(state, tape.on_device)
        for d in self.spec.states:
            if d.name in tape.from_params:
                params[d.init.name] = self._plus_batch_sum(params[d.init.name], state[d.name])
        # shaped as declared: a scalar param's gradient (), not the kernels' (1,)
        params = {d.name: _shaped(params[d.name], self._size(d)) for d in self.spec.params}
        return Grads(params, self._deliver(inputs, tape.on_device), state)


# compile_ahead's bookkeeping: the (cell class, dtype) pairs whose first cell has been
# made, and the child processes still compiling their backward kernels
_AHEAD_LOCK = threading.Lock()
_AHEAD_ASKED: set = set()
_AHEAD_CHILDREN: dict = {}


def _shaped(array, shape: tuple):
    """`array` (host or device) as `shape`, of the same size; a device array that cannot
    take the shape (0-d, on a numba-cuda without it) is left as it is."""
    if tuple(array.shape) == tuple(shape):
        return array
    try:
        return array.reshape(shape)
    except (ValueError, TypeError, NotImplementedError):
        return array


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
                 "__doc__": f"The cell {name} from {printable(meta['spec_path'])}, compiled for "
                            "the CPU. "
                            f"Dims: {', '.join(spec.dims)}."}
    return type(name, (CompiledCell,), namespace)


