"""Cells of the cuda target: the `Cell` API over a generated module's CUDA drivers.

`cuda_cell_class(module, name)` is what a generated cuda module calls for each cell. The
class keeps the CPU target's contract (runtime.CompiledCell) and its argument lists
(`<Cell>_META`); what differs is where arrays live:

- NumPy arrays in, NumPy arrays out: inputs, states and params are copied to the device
  for the call and the results copied back.
- Device arrays in (numba-cuda's, or anything with `__cuda_array_interface__`, such as
  CuPy or PyTorch CUDA tensors), device arrays out: a training loop keeps its data on the
  GPU. Params may be device arrays too (`cell.params["W"] = cuda.to_device(W)`), and are
  then used in place; their gradients come back as device arrays when the run was on
  the device. The tape stays on the device between forward and backward.
- Device arrays are checked for dtype and shape, not for NaN: that would copy them back.
- A `final` output of a run on the device is gathered on the device, and its (B, ...)
  cotangent scattered there: nothing crosses to the host.
- Backward reads the device copies of the params and inputs that its forward made (or
  the caller's device arrays it was given), and, as on every target, refuses a run whose
  arrays the caller changed in place since (rnndsl.cells.seen): host arrays are fingerprinted
  on the host, device arrays on the device, a small kernel each, their fingerprints
  copied back together at forward and at backward (a launch from Python took about 30
  us on an H100, so about 0.4 ms a call for an LSTM's 12 params held on the device).

`require_cuda()` is the clear error when numba-cuda is missing, or when there is neither
a GPU nor the simulator (NUMBA_ENABLE_CUDASIM=1, set before numba is imported).
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from ..lang import ast as spec_ast
from ..core.errors import BindError, TargetError
from ..lang.compose import LENGTH_MASK
from .base import Run, _fill_padding, check_seen
from .blocks import _CompiledTape
from .compiled import CompiledCell, compiled_cell_class
from .seen import Seen, compiled_fingerprints


def require_cuda() -> None:
    """Raise TargetError unless kernels can run here (a GPU, or the simulator)."""
    if importlib.util.find_spec("numba_cuda") is None:
        raise TargetError("target 'cuda' needs the numba-cuda package, which is not "
                          "installed; install it with: pip install 'rnndsl[cuda]' "
                          "(or pip install numba-cuda), or use target='cpu'")
    from numba import config, cuda
    if config.ENABLE_CUDASIM:
        return
    if not cuda.is_available():
        hint = ("NUMBA_ENABLE_CUDASIM=1 is set, but only after numba was imported: set it "
                "before importing numba or rnndsl" if os.environ.get("NUMBA_ENABLE_CUDASIM")
                == "1" else "to run the cuda target without a GPU (slowly, for tests), set "
                "NUMBA_ENABLE_CUDASIM=1 before importing numba or rnndsl")
        raise TargetError("target 'cuda' found no usable CUDA GPU (no device, or no "
                          f"driver); use target='cpu', or {hint}")


def fresh_host_copy(value) -> np.ndarray:
    """A fresh C-ordered copy of a host array, for cuda.to_device. NumPy calls an array
    with a length-1 axis contiguous whatever that axis's stride (a length mask made by
    broadcasting has such a stride), and numba-cuda's reshape on a real GPU then refuses
    the device copy with "operation requires copying"; a fresh array has the canonical
    strides. (The simulator reshapes with NumPy and never shows the problem.)"""
    return np.array(value, order="C", copy=True)


def host_copy(device) -> np.ndarray:
    """A device array's values on the host (numba-cuda's, or a foreign CUDA array)."""
    if not hasattr(device, "copy_to_host"):
        from numba import cuda
        device = cuda.as_cuda_array(device)
    return device.copy_to_host()


def is_device_array(value) -> bool:
    """A device array: numba-cuda's own, the simulator's, or a foreign CUDA array."""
    return not isinstance(value, np.ndarray) and (
        hasattr(value, "copy_to_host") or hasattr(value, "__cuda_array_interface__"))


class _FromDevice(dict):
    """Inputs that the caller gave on the device, some of them (token ids, `input once`
    rows) brought to the host to be checked and formed: the results go back on the
    device, as for any device input."""


class CudaCell(CompiledCell):
    """A cell whose forward and backward run as CUDA kernels (numba-cuda)."""

    target = "cuda"

    def __init__(self, dtype=np.float32, seed: int | None = 0, **dims: int):
        require_cuda()      # a built module imports anywhere; running it needs a device
        super().__init__(dtype=dtype, seed=seed, **dims)

    # ------------------------------------------------------------------ arrays
    def _expand_once(self, x, steps):
        """An `input once` (B, size) and an `input token`'s ids (T, B) given on the
        device come to the host first, where they are checked and made into what the
        kernels read (the first step's rows, one-hot rows) as host ones are: small, and
        read once. Without this a device `once` input went unexpanded, and ids were
        refused as a sequence without its third axis."""
        small = {d.name for d in self.spec.inputs if d.once or d.token}
        user = [d for d in self.spec.inputs if d.name not in self.hidden_inputs]
        moved = False
        if small and isinstance(x, dict):
            moved = any(k in small and is_device_array(v) for k, v in x.items())
            x = {k: host_copy(v) if k in small and is_device_array(v) else v
                 for k, v in x.items()}
        elif small and is_device_array(x):
            if len(user) == 1 and user[0].name in small:
                x, moved = host_copy(x), True
        x = super()._expand_once(x, steps)
        if moved:       # the caller's arrays were on the device: so are the results
            x = _FromDevice(x if isinstance(x, dict) else {user[0].name: x})
        return x

    def _device(self, what: str, value, shape: tuple[int, ...], layout: str):
        """A checked device array for `value`, host or device (copied if strided)."""
        from numba import cuda

        from ..kernels.cuda import fast_views
        if not is_device_array(value):
            return fast_views(cuda.to_device(
                fresh_host_copy(self._array(what, value, shape, layout))))
        if not hasattr(value, "copy_to_host"):
            value = cuda.as_cuda_array(value)
        if np.dtype(value.dtype) != self.dtype:
            raise BindError(f"{what} is {value.dtype} but the cell is {self.dtype.name}; "
                            f"convert it before the call")
        if tuple(value.shape) != tuple(shape):
            raise BindError(f"{what} has shape {tuple(value.shape)}; expected {shape} = "
                            f"{layout}")
        if not value.is_c_contiguous():
            from ..kernels.cuda import clone
            value = clone(value.reshape(value.shape)) if len(shape) <= 2 else \
                cuda.to_device(value.copy_to_host())
        return fast_views(value)

    def _inputs_any(self, x, hidden=None):
        """Like Cell._inputs, for host or device arrays: (device dict, T, B, on_device,
        read), `read` the caller's arrays: the host ones, or the device ones the kernels
        read. The hidden inputs (dropout and length masks) are made on the host and
        copied."""
        from numba import cuda
        decls = tuple(d for d in self.spec.inputs if d.name not in self.hidden_inputs)
        if len(decls) == 1 and not isinstance(x, dict):
            x = {decls[0].name: x}
        given = self._named("input", x, decls)
        on_device = any(is_device_array(v) for v in given.values())
        if not on_device:
            arrays, T, B = self._inputs(x, hidden)
            return {k: self._device(f"input {k}", v, v.shape, "")
                    for k, v in arrays.items()}, T, B, isinstance(x, _FromDevice), arrays
        missing = [d.name for d in decls if d.name not in given]
        if missing:
            raise BindError(f"missing input {', '.join(missing)}")
        # token ids (brought to the host by _expand_once) in the form the kernels read;
        # the first input's gives T and B, which _token_input checks the others' against
        def host_token(d) -> bool:
            return d.token and not is_device_array(given[d.name])
        formed = {}
        if host_token(decls[0]):
            formed[decls[0].name] = self._token_input(decls[0], given[decls[0].name],
                                                      self._size(decls[0])[0], None, None)
        first = formed.get(decls[0].name, given[decls[0].name])
        if len(getattr(first, "shape", ())) != 3:
            raise BindError(f"input {decls[0].name} has shape {getattr(first, 'shape', '?')}; "
                            "expected 3 axes, (T, B, size): time-major, one row per sequence")
        T, B = first.shape[:2]
        if T < 1 or B < 1:
            raise BindError(f"input {decls[0].name} has shape {tuple(first.shape)}: a "
                            "sequence needs T >= 1 steps and B >= 1 rows")
        arrays = {}
        for d in decls:
            size = self._size(d)
            if host_token(d):
                value = formed.get(d.name)
                if value is None:
                    value = self._token_input(d, given[d.name], size[0], T, B)
                arrays[d.name] = self._device(f"input {d.name}", value, value.shape, "")
                continue
            arrays[d.name] = self._device(f"input {d.name}", given[d.name], (T, B) + size,
                                          f"(T, B, {size[0]})")
        extra = hidden(T, B) if hidden is not None else {}
        for name, d in self.hidden_inputs.items():
            value = extra.get(name)
            if value is None:
                value = np.ones((T, B) + self._size(d), self.dtype)
            arrays[name] = cuda.to_device(fresh_host_copy(value))
        mask = extra.get(LENGTH_MASK)
        if mask is not None and mask.min() == 0:
            # padding is never computed with (base._fill_padding), here by a trip through
            # the host: a call with lengths is not the fast path
            host = {d.name: arrays[d.name].copy_to_host() for d in decls}
            _fill_padding(host, mask, decls)
            arrays.update({k: cuda.to_device(fresh_host_copy(v)) for k, v in host.items()})
        return arrays, T, B, True, arrays

    def _state_any(self, state, B: int):
        from ..kernels.cuda import copy_rows, device_array, fill2
        given = self._named("state", state, self.spec.states)
        values, from_params = {}, set()
        for d in self.spec.states:
            size = self._size(d)
            if d.name in given:
                values[d.name] = self._device(f"state {d.name}", given[d.name], (B,) + size,
                                              f"(B, {size[0]})")
                continue
            values[d.name] = device_array((B,) + size, self.dtype)
            if isinstance(d.init, spec_ast.ParamRefInit):
                copy_rows(values[d.name], self._param_device(d.init.name))
                from_params.add(d.name)
            else:
                value = d.init.value if isinstance(d.init, spec_ast.ConstInit) else 0.0
                fill2(values[d.name], self.dtype.type(value))
        return values, from_params

    def _param_device(self, name: str):
        d = next(d for d in self.spec.params if d.name == name)
        shape = self._size(d)
        value = self.params.get(name)
        if value is None:
            raise BindError(f"param {name} is missing from cell.params")
        if not shape and is_device_array(value) and tuple(value.shape) == (1,):
            shape = (1,)       # a scalar param on the device as its gradient came: (1,)
        dev = self._device(f"param {name}", value, shape, str(list(shape)))
        return dev.reshape((1,)) if not shape else dev

    # ------------------------------------------------------------------ memory hooks
    def _prepare(self, x, state, hidden):
        inputs, T, B, on_device, read = self._inputs_any(x, hidden)
        state0, from_params = self._state_any(state, B)
        return inputs, state0, from_params, T, B, on_device, read

    def _seen_of(self, params: dict, read: dict) -> Seen:
        """The caller's arrays this forward read, fingerprinted: a host param or input as
        the caller holds it (the kernels read a device copy of it, which the run keeps),
        a device one as the kernels read it."""
        caller = {}
        for d in self.spec.params:
            value = self.params.get(d.name)
            caller[d.name] = params[d.name] if is_device_array(value) else value
        return self._seen(caller, read, _fingerprints)

    def _kernel_param(self, name: str):
        return self._param_device(name)

    def _empty(self, shape: tuple[int, ...]):
        from ..kernels.cuda import device_array
        return device_array(shape, self.dtype)

    def _workspace(self, shape: tuple[int, ...]):
        from ..kernels.cuda import workspace
        return workspace(shape, self.dtype)

    def _zeros(self, shape: tuple[int, ...]):
        from ..kernels.cuda import fill1
        out = self._empty(shape)
        fill1(out.reshape((int(np.prod(shape)),)), self.dtype.type(0))
        return out

    def _param_grad_arrays(self) -> dict:
        """Zeroed device arrays, one a param (a flat buffer would buy nothing here: the
        host-side optimiser sees copies)."""
        return {d.name: self._zeros(self._size(d) or (1,)) for d in self.spec.params}

    def _launch(self, driver, args) -> None:
        driver(*args)

    def _deliver(self, arrays: dict, on_device: bool) -> dict:
        return arrays if on_device else {k: v.copy_to_host() for k, v in arrays.items()}

    def _cotangents_for(self, run, d_outputs, d_state):
        tape = run._tape if isinstance(run, Run) else None
        if not isinstance(tape, _CompiledTape) or tape.owner is not self._token:
            raise BindError("backward needs the Run that this cell's forward returned")
        check_seen(tape)
        return (tape, self._cotangents_any("d_outputs", d_outputs, run.T, run.B),
                self._cotangents_any("d_state", d_state, run.T, run.B))

    def _plus_batch_sum(self, param_grad, state_grad):
        if not is_device_array(param_grad):
            return param_grad + state_grad.sum(axis=0)
        from numba import cuda
        total = param_grad.copy_to_host() + state_grad.copy_to_host().sum(axis=0)
        return cuda.to_device(total)

    # ------------------------------------------------------------------ `final` outputs
    def _last_step(self, full, lengths):
        """On the device when the run was: a gather kernel, nothing copied back."""
        if not is_device_array(full):
            return super()._last_step(full, lengths)
        from ..kernels.cuda import gather_last
        T, B = full.shape[:2]
        rest = tuple(full.shape[2:])
        out = gather_last(full.reshape((T, B, int(np.prod(rest)))), self._ends(lengths, T, B))
        return out.reshape((B,) + rest)

    def _checked_cotangent(self, what: str, value, shape, layout: str):
        if is_device_array(value):
            return self._device(what, value, shape, layout)
        return super()._checked_cotangent(what, value, shape, layout)

    def _last_step_cotangent(self, value, T: int, lengths):
        if not is_device_array(value):
            return super()._last_step_cotangent(value, T, lengths)
        from ..kernels.cuda import scatter_last
        B = value.shape[0]
        rest = tuple(value.shape[1:])
        out = scatter_last(value.reshape((B, int(np.prod(rest)))), self._ends(lengths, T, B), T)
        return out.reshape((T, B) + rest)

    @staticmethod
    def _ends(lengths, T: int, B: int):
        from numba import cuda

        from .modes import _lengths
        return cuda.to_device((_lengths(lengths, T, B) - 1).astype(np.int64))

    def _cotangents_any(self, what: str, given, T: int, B: int) -> dict:
        """d_outputs / d_state, host or device, checked and on the device."""
        if given is None:
            return {}
        if not isinstance(given, dict):
            raise BindError(f"{what} must be a dict keyed by name, got {type(given).__name__}")
        noun = "output" if what == "d_outputs" else "state"
        if what == "d_outputs":
            sizes = {o.name: tuple(d.evaluate(self.dims) for d in o.type.shape)
                     for o in self.spec.outputs}
            shape_of = lambda s: ((T, B) + s, f"(T, B{''.join(f', {n}' for n in s)})")
        else:
            sizes = {d.name: self._size(d) for d in self.spec.states}
            shape_of = lambda s: ((B,) + s, f"(B, {s[0]})")
        out = {}
        for key, value in given.items():
            if key not in sizes:
                raise BindError(f"{self.spec.name} has no {noun} '{key}'; "
                                f"its {noun}s are: {', '.join(sizes)}")
            shape, layout = shape_of(sizes[key])
            out[key] = self._device(f"{what}['{key}']", value, shape, layout)
        return out


def _fingerprints(arrays: tuple) -> np.ndarray:
    """rnndsl.cells.seen's fingerprints of host and device arrays: the host ones in one
    compiled call, the device ones on the device."""
    out = np.zeros(len(arrays), np.uint64)
    host = [k for k, a in enumerate(arrays) if not is_device_array(a)]
    device = [k for k in range(len(arrays)) if k not in set(host)]
    if host:
        out[host] = compiled_fingerprints(tuple(np.ascontiguousarray(arrays[k])
                                                for k in host))
    if device:
        from ..kernels.cuda import fingerprints
        out[device] = fingerprints(tuple(arrays[k] for k in device))
    return out


def cuda_cell_class(module, name: str) -> type:
    """The class a generated cuda module exports: its drivers behind the `Cell` API."""
    base = compiled_cell_class(module, name)
    doc = (base.__doc__ or "").replace("compiled for the CPU", "compiled for CUDA")
    return type(name, (CudaCell, base), {"__module__": module.__name__, "__doc__": doc})


