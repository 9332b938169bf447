"""A cell as a `torch.nn.Module`: `Module(spec_path, **dims)`, and the autograd Function
under it that calls the cell's own forward and BPTT.

Input: a spec (and a cell in it), a target, dims, a torch dtype, a direction. Output: a
`torch.nn.Module` whose parameters are the spec's params and whose forward runs the cell
over (T, B, I) tensors, with gradients from the cell's `backward`, never from torch
autograd tracing the step.

Invariants:
- The cell reads the tensors' own memory: every CPU tensor that crosses is a zero-copy
  NumPy view (`t.detach().numpy()`), params included, and the results come back as
  tensors over the cell's arrays (`torch.from_numpy`). A copy happens only where the
  kernels need one (a non-contiguous input, as batch_first makes: cells/compiled.py).
- On the cuda target, CUDA tensors cross the same way, through
  `__cuda_array_interface__`: the kernels read and write torch's device memory, and the
  results come back as CUDA tensors over the cell's device arrays (`torch.as_tensor`).
  Token ids, a few bytes a step, go through the host (the cuda cell makes their one-hot
  rows there). The call waits for its kernels before it returns, so torch's next op on
  any stream sees their results.
- One direction is one cell call; a reverse direction reverses each sequence within its
  own length in torch (`reverse_in_lengths`, differentiable by autograd) around a
  forward call. A bidirectional layer is one call of a cell over both directions
  (cells.directions.Directional: the two at once, one a core, forward and backward),
  its outputs concatenated on the feature axis, forward first, as torch.nn.LSTM's; on
  the cuda target, a call a direction.
- Only this layer imports torch; `import rnndsl` does not (tests/interop/test_torch.py).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from functools import reduce
from typing import Mapping

import numpy as np
import torch

from ..cells.base import Cell, once_steps
from ..cells.directions import (DIRECTIONS, REVERSE, Directional, refuse_reverse_names,
                                reverse_index)
from ..cells.load import load
from ..cells.modes import check_lengths
from ..core.errors import BindError, TargetError

_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


# ---------------------------------------------------------------------- tensors <-> arrays
def numpy_dtype(dtype) -> np.dtype:
    """torch.float32 / torch.float64 -> the NumPy dtype of the cell; else a BindError."""
    if dtype not in _DTYPES:
        raise BindError(f"dtype {dtype} is not supported; use torch.float32 or torch.float64")
    return np.dtype(_DTYPES[dtype])


def torch_dtype(dtype: np.dtype):
    """The torch dtype of a cell's NumPy dtype."""
    return next(t for t, n in _DTYPES.items() if np.dtype(n) == dtype)


def host(what: str, tensor) -> np.ndarray:
    """A CPU tensor's memory as a NumPy array (no copy); a clear error for anything else."""
    check_tensor(what, tensor)
    if not torch._C._functorch.is_functorch_wrapped_tensor(tensor):
        return tensor.detach().numpy()
    return _functorch_values(what, tensor)


def check_tensor(what: str, tensor, target: str = "cpu") -> None:
    """`tensor` is a torch.Tensor on a device the `target`'s kernels read: the CPU
    always, a CUDA device on the cuda target."""
    if not isinstance(tensor, torch.Tensor):
        raise BindError(f"{what} must be a torch.Tensor, got {type(tensor).__name__}")
    kind = tensor.device.type
    if kind == "cpu" or (kind == "cuda" and target == "cuda"):
        return
    if kind == "cuda":
        raise TargetError(f"{what} is on {tensor.device}, but the module's target is "
                          f"{target!r}, whose kernels run on the CPU: make the module with "
                          "target='cuda' to run on the GPU's memory, or move the tensor "
                          "with .cpu()")
    raise TargetError(f"{what} is on {tensor.device}; rnndsl cells run on CPU tensors, and "
                      "on CUDA tensors with target='cuda': move it with .cpu()")


def cell_array(what: str, tensor, target: str):
    """What the cell reads for a tensor, over the tensor's own memory: a NumPy view of a
    CPU tensor; on the cuda target, a CUDA tensor itself (the cell reads it through
    `__cuda_array_interface__`, which a tensor that requires grad refuses: detached),
    made contiguous on the GPU where it is not (batch_first's transpose; the expanded
    ones that `y.sum()` gives backward as its cotangent)."""
    check_tensor(what, tensor, target)
    if tensor.device.type == "cpu":
        return host(what, tensor)
    return _unwrapped(what, tensor).detach().contiguous()


def _functorch_values(what: str, tensor: torch.Tensor) -> np.ndarray:
    """The values under torch.func.grad and vjp, whose backward hands over its
    cotangents wrapped for gradient tracking: read with torch.func's layers off (a
    wrapped tensor has no memory of its own)."""
    _unwrapped(what, tensor)
    with torch._C._DisableFuncTorch():
        return tensor.detach().numpy()


VMAP_REFUSED = ("{what} comes batched by torch.func.vmap (jacrev and hessian batch with "
                "it too), which rnndsl cells do not take: give the batch as the cell's B "
                "axis, or take a Jacobian with torch.autograd.functional.jacobian")


def _unwrapped(what: str, tensor: torch.Tensor) -> torch.Tensor:
    """The tensor under torch.func's gradient-tracking wrappers. vmap's batched tensors
    are refused: a cell call maps over its batch rows already."""
    from torch._C import _functorch as functorch
    inner = tensor
    while functorch.is_functorch_wrapped_tensor(inner):
        if functorch.is_batchedtensor(inner) or not functorch.is_gradtrackingtensor(inner):
            raise TargetError(VMAP_REFUSED.format(what=what))
        inner = functorch.get_unwrapped(inner)
    return inner


def _tensor(array) -> torch.Tensor:
    """A cell's result as a tensor over the same memory: a NumPy array's (a copy only if
    read-only, which torch would otherwise warn about), or a device array's, as a CUDA
    tensor (torch keeps the array alive while the tensor lives)."""
    if not isinstance(array, np.ndarray):
        return torch.as_tensor(array)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array)


# ---------------------------------------------------------------------- the autograd Function
@dataclass(eq=False)
class Call:
    """One cell call: the cell, the names of the tensors given to `CellFunction.apply`
    (inputs, then initial states, then params) and of what it returns (outputs, then
    final states), the lengths (NumPy ints, or None), and whether a backward may follow
    (if not, the cell keeps nothing for one: `Cell.forward(grad=False)`)."""

    cell: Cell
    inputs: tuple[str, ...]
    states: tuple[str, ...]
    params: tuple[str, ...]
    outputs: tuple[str, ...]
    finals: tuple[str, ...]
    lengths: np.ndarray | None = None
    grad: bool = True       # False: no backward can follow (no_grad, nothing requires grad)
    dropout: int | None = None   # the seed of the call's dropout masks (None: keep all)
    steps: int | None = None     # how many steps, where every input is `input once`
    run: object = None      # the cell's Run, from forward to setup_context
    device: object = None   # the torch.device the tensors are on (forward sets it)


def one_device(named: Mapping[str, torch.Tensor]) -> torch.device:
    """The one device all the tensors of a call are on; torch's error where they are
    not (the cell would hand back gradients on another device than their tensors')."""
    devices = {t.device for t in named.values()}
    if len(devices) > 1:
        where = {}
        for what, t in named.items():
            where.setdefault(t.device, what)
        first, second = list(where.items())[:2]
        raise BindError("Expected all tensors to be on the same device, but found at least "
                        f"two devices, {first[0]} ({first[1]}) and {second[0]} "
                        f"({second[1]}): move them with .to(device)")
    return devices.pop() if devices else torch.device("cpu")


@contextmanager
def on_device(device: torch.device):
    """Run a cell call on `device`: for a CUDA device, in numba-cuda's context of that
    GPU, and wait for the call's kernels before leaving, so that torch's next op, on
    whatever stream, reads their results (numba-cuda launches on the default stream)."""
    if device is None or device.type != "cuda":
        yield
        return
    from numba import cuda
    index = device.index if device.index is not None else torch.cuda.current_device()
    with cuda.gpus[index]:
        yield
        cuda.synchronize()


class CellFunction(torch.autograd.Function):
    """The cell's forward as a torch op; its backward is the cell's BPTT.

    `apply(call, *inputs, *initial_states, *params)` returns (*outputs, *final_states).
    Once differentiable: a double backward would need the adjoint's adjoint. The tensors
    it read are saved for backward, so that torch's own check names one changed in place
    in between (the cell checks too: cells/seen.py)."""

    @staticmethod
    def vmap(info, in_dims, call, *tensors):
        """torch.func.vmap over a cell call: refused by name (torch's own message asks
        for a vmap rule), as jacrev's batched tensors are (`_unwrapped`)."""
        raise TargetError(VMAP_REFUSED.format(what=f"a call of cell {call.cell.spec.name}"))

    # forward and setup_context apart (not forward(ctx, ...)): torch.func's transforms
    # (torch.func.grad, vjp, jacrev) take only a Function written this way
    @staticmethod
    def forward(call: Call, *tensors):
        n_in, n_st = len(call.inputs), len(call.states)
        cell = call.cell
        target = cell.target
        named = dict(zip((*(f"input {n}" for n in call.inputs),
                          *(f"state {n}" for n in call.states),
                          *(f"param {n}" for n in call.params)), tensors))
        for what, t in named.items():
            check_tensor(what, t, target)
        tokens = {f"input {d.name}" for d in cell.spec.inputs if d.token}
        call.device = one_device({k: t for k, t in named.items() if k not in tokens})

        def read(what: str, t):
            # token ids go through the host: the cuda cell makes their one-hot rows there
            return host(what, t.cpu()) if what in tokens else cell_array(what, t, target)

        for name, value in zip(call.params, tensors[n_in + n_st:]):
            cell.params[name] = read(f"param {name}", value)
        inputs = {n: read(f"input {n}", t) for n, t in zip(call.inputs, tensors)}
        state = {n: read(f"state {n}", t)
                 for n, t in zip(call.states, tensors[n_in:n_in + n_st])}
        with on_device(call.device):
            run = cell.forward(inputs, state=state or None, lengths=call.lengths,
                               dropout=call.dropout, grad=call.grad,
                               **({} if call.steps is None else {"steps": call.steps}))
            results = tuple(_tensor(run.outputs[n]) for n in call.outputs) + tuple(
                _tensor(run.state[n]) for n in call.finals)
        call.run = run            # for setup_context: one Call an apply
        return results

    @staticmethod
    def setup_context(ctx, inputs, output):
        call, tensors = inputs[0], inputs[1:]
        ctx.call, ctx.run = call, call.run
        ctx.set_materialize_grads(False)      # an unused result costs its cotangent nothing
        ctx.save_for_backward(*tensors, *output)

    @staticmethod
    def backward(ctx, *grads):
        found = CellFunction._backward(ctx, *grads)
        if not torch.is_grad_enabled():
            return found
        # create_graph=True (torch.func.grad runs backward so too): the gradients are
        # marked so that differentiating them raises, where once_differentiable alone
        # would let them through with no graph when the cotangents need none (y.sum()'s),
        # and a penalty on them would silently drop its part of the gradient
        anchor = next((t for t in ctx.saved_tensors if t.requires_grad), None)
        if anchor is None:
            return found
        return tuple(g if g is None else _OnceDifferentiable.apply(anchor, g)
                     for g in found)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def _backward(ctx, *grads):
        ctx.saved_tensors        # torch's in-place check, before the cell's
        call, run = ctx.call, ctx.run
        target = call.cell.target
        n_out = len(call.outputs)
        d_out = {n: cell_array(f"d_outputs['{n}']", g, target)
                 for n, g in zip(call.outputs, grads[:n_out]) if g is not None}
        d_st = {n: cell_array(f"d_state['{n}']", g, target)
                for n, g in zip(call.finals, grads[n_out:]) if g is not None}
        need = ctx.needs_input_grad[1:]
        n_in, n_st = len(call.inputs), len(call.states)

        def pick(found: Mapping[str, np.ndarray], names, wanted):
            return [_tensor(found[n]) if w and n in found else None
                    for n, w in zip(names, wanted)]

        with on_device(call.device):
            g = call.cell.backward(run, d_outputs=d_out, d_state=d_st,
                                   input_grads=any(need[:n_in]))
            return (None, *pick(g.inputs, call.inputs, need[:n_in]),
                    *pick(g.state, call.states, need[n_in:n_in + n_st]),
                    *pick(g.params, call.params, need[n_in + n_st:]))


# ---------------------------------------------------------------------- directions
def reversal(T: int, B: int, lengths: np.ndarray | None) -> torch.Tensor:
    """The rows of a (T * B, ...) view of a sequence that reverse each sequence within
    its own length: step t of sequence b reads step lengths[b] - 1 - t, and the padding
    after it stays in place (the cell masks it). A permutation that is its own inverse."""
    steps = reverse_index(T, B, lengths)        # (T, B): the step each one reads
    return torch.from_numpy((steps * B + np.arange(B)[None, :]).reshape(-1))


def _take_rows(seq: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    T, B = seq.shape[:2]
    return seq.reshape(T * B, -1).index_select(0, rows).reshape(seq.shape)


class _OnceDifferentiable(torch.autograd.Function):
    """A gradient the cell's BPTT returned, passed through as it is; differentiating it
    (a double backward: a gradient penalty, a Hessian-vector product) raises. `anchor`,
    a tensor that requires grad, makes the result require grad too."""

    @staticmethod
    def forward(anchor: torch.Tensor, grad: torch.Tensor):
        return grad.view_as(grad)

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, _):
        raise TargetError(
            "rnndsl cells differentiate once: differentiating a gradient that went through "
            "a cell (a gradient penalty, a Hessian-vector product: a double backward) "
            "would need the derivative of its BPTT kernels, which rnndsl does not make")


class _Reverse(torch.autograd.Function):
    """A sequence reversed within its lengths; its gradient is reversed the same way
    (the permutation is its own inverse): one row gather each way, where torch's own
    advanced indexing scatters its gradient back with an accumulating index_put, which
    took about twice the time in the backward of a 2-layer bidirectional LSTM here."""

    @staticmethod
    def forward(seq: torch.Tensor, rows: torch.Tensor):
        return _take_rows(seq, rows)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.rows = inputs[1]

    @staticmethod
    def backward(ctx, grad):
        return _take_rows(grad, ctx.rows), None


def reverse_in_lengths(seq: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """seq (T, B, ...) with each sequence reversed by `reversal`'s rows, differentiably."""
    return _Reverse.apply(seq, rows)


# torch.compile (dynamo) traces what it calls, NumPy included, and the cell's host code
# is no graph it can take: it runs eagerly, a graph break, and the model around it compiles
@torch.compiler.disable
def run_cell(cell: Cell, inputs: dict, state: dict, params: dict, lengths=None,
             reverse: bool = False, dropout: int | None = None,
             steps: int | None = None) -> tuple[dict, dict]:
    """One direction of a cell over time-major tensors: (outputs, final states), by name.

    `inputs` maps input names to (T, B, ...) tensors (an `input once` to (B, ...));
    `state` the initial states given (the others start as the spec says); `params` every
    param. A reverse run feeds each sequence backwards from its own last step and gives
    its per-step outputs back in the original order (a `final` output is the reverse
    run's last step: the sequence's first). `dropout`: the seed of the spec's dropout
    masks (None: every unit kept, as in evaluation). `steps`: how many steps to run, where
    every input is an `input once` (the cell refuses it otherwise)."""
    once = {d.name for d in cell.spec.inputs if d.once}
    finals = cell._final_outputs()
    order = None
    if reverse and inputs:
        per_step = [t for n, t in inputs.items() if n not in once]
        if per_step:
            T, B = per_step[0].shape[:2]
        else:                         # every input once (B, size): T is `steps`
            T, B = once_steps(cell.spec.name, steps), next(iter(inputs.values())).shape[0]
        if lengths is not None:       # checked before they index anything
            lengths = check_lengths(lengths, T, B)
        order = reversal(T, B, lengths).to(next(iter(inputs.values())).device)
        inputs = {n: t if n in once else reverse_in_lengths(t, order)
                  for n, t in inputs.items()}
    tensors = (*inputs.values(), *state.values(), *params.values())
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    call = Call(cell, tuple(inputs), tuple(state), tuple(params),
                tuple(o.name for o in cell.spec.outputs), state_names(cell), lengths, grad,
                dropout, steps)
    flat = CellFunction.apply(call, *tensors)
    outputs = dict(zip(call.outputs, flat))
    if order is not None:
        outputs = {n: o if n in finals else reverse_in_lengths(o, order)
                   for n, o in outputs.items()}
    return outputs, dict(zip(call.finals, flat[len(call.outputs):]))


def dropout_seed(module: torch.nn.Module, spec) -> int | None:
    """A seed for one call's dropout masks, drawn from torch's default generator (so
    `torch.manual_seed` makes a run repeatable), where the spec has dropout sites and
    the module is training; None (every unit kept) in eval mode, as torch's dropout."""
    if not module.training or not any(rate > 0 for _, rate in spec.dropouts):
        return None
    return int(torch.randint(0, 2 ** 62, (1,)).item())


def state_names(cell) -> tuple[str, ...]:
    """The names of a cell's final states: the spec's, or for both directions in one
    cell (cells.directions.Directional) each with its direction's suffix (`h`,
    `h_reverse`), forward first."""
    suffixes = [suffix for suffix, _, _ in cell.cells] if isinstance(cell, Directional) \
        else [""]
    return tuple(d.name + suffix for suffix in suffixes for d in cell.spec.states)


def both_at_once(target: str) -> bool:
    """Whether a bidirectional layer runs as one cell call over both directions
    (cells.directions.Directional: the two at once, one a core, and each sequence
    reversed in NumPy), rather than a call a direction, reversed by torch ops. Not on the
    cuda target, whose directions would reverse device memory on the host."""
    return BOTH_AT_ONCE and target != "cuda"


# benchmarks/torch_directions.py switches it off to time a call a direction
BOTH_AT_ONCE = True


def lengths_array(lengths) -> np.ndarray | None:
    """`lengths` (a tensor, a list, an array) as NumPy integers; the cell checks them."""
    if lengths is None:
        return None
    if isinstance(lengths, torch.Tensor):
        lengths = lengths.detach().cpu().numpy()
    return np.asarray(lengths)


# ---------------------------------------------------------------------- the Module
class Module(torch.nn.Module):
    """A cell of a `.rnn` spec as a `torch.nn.Module`.

        m = rnndsl.torch.Module("specs/lstm.rnn", I=8, H=16)
        y, state = m(x)                  # x: (T, B, 8); y: (T, B, 16); state["c"]: (B, 16)

    Parameters: the spec's params as `nn.Parameter`s, named as in the spec. A layer's
    params (`l1.W_i` in a stacked spec) live in a submodule per layer, so the dotted name
    is the parameter's name in `named_parameters()` and `state_dict()` (`m.l1.W_i`). The
    reverse direction of a bidirectional module has its own params, named with torch's
    suffix: `W_i_reverse`, `l1.W_i_reverse` (a module of direction "reverse" alone has
    the spec's names: it is the spec's cell, reading backwards). They start as the
    spec's initialisers draw them with `seed` (the reverse direction with seed + 1).

    Memory: the cell reads the parameters' own memory at each call (a zero-copy NumPy
    view taken afresh each forward, so `.double()`, `load_state_dict` and optimisers,
    which update in place after backward, are all seen), and its results come back as
    tensors over its arrays. Update params after backward, as optimisers do: one changed
    in place between a forward and its backward makes that backward raise.

    `forward(x, state=None, lengths=None, steps=None)`: x is a (T, B, I) tensor, or
    (B, T, I) with batch_first; a cell with several inputs takes a dict of them (an
    `input once` as (B, size), an `input token` as integer ids). `state`: a dict of
    (B, size) initial states (missing ones start as the spec says; a bidirectional
    module's reverse states are keyed `h_reverse`, ...). `lengths`: one int per sequence
    (after its end a sequence's state is frozen and its outputs are 0; a reverse
    direction starts at each sequence's own last step). `steps`: how many steps to run,
    for a cell whose inputs are all `input once` (no sequence to take T from). Returns
    `(outputs, state)`: the output tensor where the cell has one output, else a dict by
    name, (T, B, size) (batch_first: (B, T, size)); `state` the final states, a dict of
    (B, size) tensors.

    direction: "forward", "reverse" (each sequence read backwards; outputs in the
    original order) or "bidirectional" (both, outputs concatenated on the feature axis,
    forward first; a scalar output gains an axis of 2). On the cpu target the two
    directions run as one call, at once, one a core (rnndsl.cells.directions); on the
    cuda target one call each, one after the other.

    On the cuda target the parameters and inputs may be CUDA tensors (`.cuda()`): the
    kernels then run on their memory and return CUDA tensors (docs/interop.md).
    """

    def __init__(self, spec_path, *, cell: str | None = None, target: str = "cpu",
                 dtype=torch.float32, batch_first: bool = False, direction: str = "forward",
                 seed: int | None = 0, **dims: int):
        super().__init__()
        if direction not in DIRECTIONS:
            raise BindError(f"direction {direction!r} is not one of: " + ", ".join(DIRECTIONS))
        self.cell_class = load(spec_path, target=target, cell=cell)
        if direction == "bidirectional":
            refuse_reverse_names(self.cell_class.spec)
        self.target, self.batch_first, self.direction = target, bool(batch_first), direction
        np_dtype = numpy_dtype(dtype)
        self._cells: dict[tuple[str, str], Cell] = {}
        for i, (suffix, _) in enumerate(self.runs):
            start = self.cell_class(dtype=np_dtype, seed=None if seed is None else seed + i,
                                    **dims)
            self.dims = start.dims
            self._cells[(np_dtype.str, suffix)] = start
            for name, value in start.params.items():
                self._register(name + suffix, torch.nn.Parameter(torch.from_numpy(
                    value.copy())))

    @property
    def runs(self) -> tuple[tuple[str, bool], ...]:
        """(name suffix, reversed?) of each direction run: the forward (or the only)
        direction's names are the spec's, a bidirectional module's reverse ones end in
        REVERSE."""
        return {"forward": (("", False),), "reverse": (("", True),),
                "bidirectional": (("", False), (REVERSE, True))}[self.direction]

    def extra_repr(self) -> str:
        dims = ", ".join(f"{k}={v}" for k, v in self.dims.items())
        return (f"{self.cell_class.spec.name}({dims}), target={self.target!r}, "
                f"direction={self.direction!r}, batch_first={self.batch_first}")

    # ------------------------------------------------------------------ params
    def _register(self, name: str, param: torch.nn.Parameter) -> None:
        """Register `l1.W_i` as the parameter W_i of a submodule l1 (made on first use)."""
        *path, leaf = name.split(".")
        owner: torch.nn.Module = self
        for part in path:
            if part not in owner._modules:
                _check_free(owner, part, name)
                owner.add_module(part, torch.nn.Module())
            owner = owner._modules[part]
        _check_free(owner, leaf, name)
        owner.register_parameter(leaf, param)

    def param(self, name: str) -> torch.Tensor:
        """The tensor of a param by its dotted name (`l1.W_i`), as it is now: a Parameter,
        or whatever `torch.func.functional_call` put in its place."""
        return reduce(getattr, name.split("."), self)

    def to_cell(self, direction: str | None = None) -> Cell:
        """An rnndsl cell (this module's target and dtype) holding copies of this
        module's current weights: to sample from, to checkpoint, or to hand to
        `rnndsl.onnx.export`. A bidirectional module holds two; `direction` ("forward"
        or "reverse") picks one. The cell itself runs forward in time: a reverse
        direction's cell expects its sequences reversed."""
        suffixes = ({"forward": "", "reverse": REVERSE} if self.direction == "bidirectional"
                    else {self.direction: ""})
        if direction is None and len(suffixes) == 1:
            direction = self.direction
        if direction not in suffixes:
            raise BindError(f"this module's direction is {self.direction!r}: to_cell takes "
                            + " or ".join(f"direction={d!r}" for d in suffixes))
        suffix = suffixes[direction]
        spec = self.cell_class.spec
        weights = {d.name: self.param(d.name + suffix).detach() for d in spec.params}
        cell = self.cell_class(dtype=self._dtype(weights), seed=0, **self.dims)
        for name, value in weights.items():
            cell.params[name][...] = value.cpu().numpy().reshape(cell.params[name].shape)
        return cell

    # ------------------------------------------------------------------ pickling
    def __getstate__(self):
        """What a pickle (`torch.save(model)`, `copy.deepcopy`) holds: the module less
        its cell class and cells, with the spec's texts (the file's and those it uses),
        from which the class is made again on load, in any process (a class made by
        `load` has no importable name). The cells only cache: the params are the
        module's."""
        from ..train.checkpoint import spec_record
        state = dict(self.__dict__)
        record = spec_record(state.pop("cell_class"))
        state["_spec_texts"] = {k: record[k] for k in ("path", "text", "files", "cell")}
        state["_cells"] = {}
        return state

    def __setstate__(self, state):
        from ..cells.load import load_text
        state = dict(state)
        record = state.pop("_spec_texts")
        super().__setstate__(state)
        self.cell_class = load_text(record["text"], target=self.target, cell=record["cell"],
                                    path=record["path"], files=record["files"])

    def _cell(self, dtype: np.dtype, suffix: str) -> Cell:
        """The cell that runs a direction in a dtype (one a dtype: `.double()` works);
        suffix "both": one over both directions (`both_at_once`)."""
        key = (dtype.str, suffix)
        if key not in self._cells:
            both = {"direction": "bidirectional"} if suffix == "both" else {}
            self._cells[key] = self.cell_class(dtype=dtype, seed=0, **both, **self.dims)
        return self._cells[key]

    # ------------------------------------------------------------------ forward
    def forward(self, x, state: Mapping[str, torch.Tensor] | None = None, lengths=None,
                steps: int | None = None):
        spec = self.cell_class.spec
        params = {d.name: self.param(d.name) for d in spec.params}
        dtype = self._dtype(params)
        inputs = self._inputs(x, dtype)
        state = self._states(state, dtype)
        lengths = lengths_array(lengths)
        outs, finals = [], {}
        if self.direction == "bidirectional" and both_at_once(self.target):
            mine = {n + suffix: self.param(n + suffix) for suffix, _ in self.runs
                    for n in params}
            o, finals = run_cell(self._cell(dtype, "both"), inputs, state, mine, lengths,
                                 dropout=dropout_seed(self, spec), steps=steps)
            outs.append(o)
        for suffix, reverse in self.runs if not outs else ():
            cell = self._cell(dtype, suffix)
            mine = {n: self.param(n + suffix) for n in params}
            given = {d.name: state[d.name + suffix] for d in spec.states
                     if d.name + suffix in state}
            o, f = run_cell(cell, inputs, given, mine, lengths, reverse,
                            dropout_seed(self, spec), steps)
            outs.append(o)
            finals.update({n + suffix: v for n, v in f.items()})
        outputs = self._joined(outs)
        if self.batch_first:
            finals_out = {o.name for o in spec.outputs if o.final}
            outputs = {n: v if n in finals_out else v.transpose(0, 1)
                       for n, v in outputs.items()}
        if len(outputs) == 1:
            return next(iter(outputs.values())), finals
        return outputs, finals

    def _dtype(self, params: Mapping[str, torch.Tensor]) -> np.dtype:
        """The cell dtype the params are in now (all alike)."""
        dtypes = {p.dtype for p in params.values()}
        if len(dtypes) != 1:
            raise BindError("the module's parameters have several dtypes (" + ", ".join(
                sorted(str(d) for d in dtypes)) + "); convert them with .float() or .double()")
        return numpy_dtype(dtypes.pop())

    def _inputs(self, x, dtype: np.dtype) -> dict[str, torch.Tensor]:
        """The caller's inputs by name, time-major, checked for dtype (ids aside)."""
        spec = self.cell_class.spec
        hidden = self._cell(dtype, "").hidden_inputs
        decls = [d for d in spec.inputs if d.name not in hidden]
        if not isinstance(x, Mapping):
            if len(decls) != 1:
                raise BindError(f"{spec.name} has {len(decls)} inputs (" + ", ".join(
                    d.name for d in decls) + "); pass them as a dict of tensors")
            x = {decls[0].name: x}
        out = {}
        for d in decls:
            if d.name not in x:
                continue                          # the cell names what is missing
            t = x[d.name]
            check_tensor(f"input {d.name}", t, self.target)
            if not d.token and t.dtype != torch_dtype(dtype):
                raise BindError(f"input {d.name} is {t.dtype} but the module's parameters "
                                f"are {dtype.name}; convert it with .to(torch.{dtype.name})")
            if self.batch_first and not d.once:
                t = t.transpose(0, 1)
            out[d.name] = t
        unknown = set(x) - {d.name for d in decls}
        if unknown:
            raise BindError(f"{spec.name} has no input {', '.join(sorted(unknown))}; its "
                            "inputs are: " + ", ".join(d.name for d in decls))
        return out

    def _states(self, state, dtype: np.dtype) -> dict[str, torch.Tensor]:
        """The caller's initial states by name, checked for type and dtype."""
        if state is None:
            return {}
        names = [d.name + s for s, _ in self.runs for d in self.cell_class.spec.states]
        if not isinstance(state, Mapping):
            raise BindError("state must be a dict of (B, size) tensors keyed by: "
                            + ", ".join(names))
        unknown = [k for k in state if k not in names]
        if unknown:
            raise BindError(f"no state {', '.join(unknown)}; the states are: "
                            + ", ".join(names))
        want = torch_dtype(dtype)
        for name, t in state.items():
            if not isinstance(t, torch.Tensor):
                raise BindError(f"state {name} must be a torch.Tensor, got {type(t).__name__}")
            if t.dtype != want:
                raise BindError(f"state {name} is {t.dtype} but the module's parameters are "
                                f"{want}; convert it with .to({want})")
        return dict(state)

    def _joined(self, outs: list[dict]) -> dict[str, torch.Tensor]:
        """One direction's outputs as they are; two concatenated on the feature axis,
        forward first (a scalar output, with no feature axis, gains one of 2)."""
        if len(outs) == 1:
            return outs[0]
        scalar = {o.name for o in self.cell_class.spec.outputs if o.type.rank == 0}
        return {n: torch.stack([o[n] for o in outs], -1) if n in scalar
                else torch.cat([o[n] for o in outs], -1) for n in outs[0]}


def _check_free(owner: torch.nn.Module, name: str, full: str) -> None:
    """A param (or layer) name must not hide an attribute nn.Module has."""
    if hasattr(owner, name) and name not in owner._parameters and name not in owner._modules:
        raise BindError(f"param '{full}' cannot be a torch parameter: '{name}' is the name "
                        "of an attribute of torch.nn.Module; rename it in the spec")
