"""torch.nn.RNN, LSTM and GRU as rnndsl cells: `from_torch(m)` and `TorchRNN.to_torch()`.

Input: a torch.nn.RNN (tanh or relu), LSTM (with or without proj_size) or GRU, of any
num_layers, bias, batch_first and bidirectional. Output: a `TorchRNN`, a torch.nn.Module
with the same parameters (names, shapes, values) whose forward takes and returns what
the torch module's does, computed by the specs of specs/torch/, which state PyTorch's
conventions (torch's stacked weights, two biases, gate orders i, f, g, o and r, z, n).

Invariants: the parameters are torch's, by name and shape, so `m.state_dict()` loads
into a TorchRNN and back unchanged; each spec param is torch's per-layer name without
its `_l{k}` (`weight_ih_l1_reverse` is the `weight_ih` of layer 1's reverse cell).
Layers and directions are chained on the host: one cell call per layer and direction.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch.nn.utils.rnn import PackedSequence, pad_packed_sequence

from ..cells.base import Cell
from ..cells.load import load
from ..core.errors import BindError
from ..lang.shipped import specs_dir
from .torch import REVERSE, both_at_once, lengths_array, numpy_dtype, run_cell

# torch's mode -> the spec file of specs/torch/ and its cell, with and without biases
SPECS = {
    "RNN_TANH": ("rnn_tanh.rnn", "TorchRNNTanh"),
    "RNN_RELU": ("rnn_relu.rnn", "TorchRNNReLU"),
    "LSTM": ("lstm.rnn", "TorchLSTM"),
    "LSTM_PROJ": ("lstm_proj.rnn", "TorchLSTMProj"),
    "GRU": ("gru.rnn", "TorchGRU"),
}
_TORCH_CLASSES = {"RNN_TANH": "RNN", "RNN_RELU": "RNN", "LSTM": "LSTM", "GRU": "GRU"}


def torch_spec(mode: str, bias: bool = True, proj: bool = False) -> tuple[Path, str]:
    """(spec path, cell name) of the shipped spec for a torch mode ("LSTM", "GRU",
    "RNN_TANH", "RNN_RELU"), with or without biases, and for LSTM with a projection."""
    key = "LSTM_PROJ" if mode == "LSTM" and proj else mode
    if key not in SPECS:
        raise BindError(f"no torch spec for mode {mode!r}; modes: " + ", ".join(_TORCH_CLASSES))
    file, name = SPECS[key]
    return specs_dir() / "torch" / file, name if bias else name + "NoBias"


def _mode_of(m: torch.nn.Module) -> str:
    if not isinstance(m, torch.nn.RNNBase) or m.mode not in _TORCH_CLASSES:
        raise BindError(f"from_torch takes a torch.nn.RNN, LSTM or GRU, got "
                        f"{type(m).__name__}")
    return m.mode


def _check_config(mode, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                  bidirectional, proj_size) -> None:
    """What torch.nn.RNNBase refuses at construction, refused as a BindError before any
    cell is made (else it shows later, as a misleading error or not at all)."""
    if mode not in _TORCH_CLASSES:
        raise BindError(f"mode {mode!r} is not one of: " + ", ".join(_TORCH_CLASSES))
    for key, value, least in (("input_size", input_size, 1), ("hidden_size", hidden_size, 1),
                              ("num_layers", num_layers, 1), ("proj_size", proj_size, 0)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise BindError(f"{key} must be an int, got {type(value).__name__}")
        if value < least:
            raise BindError(f"{key} is {value} but must be at least {least}, as in torch")
    for key, value in (("bias", bias), ("batch_first", batch_first),
                       ("bidirectional", bidirectional)):
        if not isinstance(value, bool):
            raise BindError(f"{key} must be a bool, got {type(value).__name__}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or \
            not 0 <= dropout <= 1:
        raise BindError(f"dropout is {dropout!r} but must be a number in [0, 1] (the "
                        "probability of zeroing a unit between layers), as in torch")
    if proj_size and mode != "LSTM":
        raise BindError("proj_size is for mode 'LSTM' only, as in torch")
    if proj_size >= hidden_size:
        raise BindError(f"proj_size is {proj_size} but must be smaller than hidden_size "
                        f"({hidden_size}), as in torch")


def from_torch(m: torch.nn.Module, *, target: str = "cpu") -> "TorchRNN":
    """An rnndsl `TorchRNN` computing what the torch.nn.RNN / LSTM / GRU `m` computes,
    with a copy of its weights (same names, shapes, dtype), on `target`'s kernels.

    It is a drop-in for `m`: the same forward signature and results, `(output, h_n)`,
    or `(output, (h_n, c_n))` for an LSTM, and the same `state_dict()` keys. The copy is
    independent of `m`: training one leaves the other as it was."""
    mode = _mode_of(m)
    dtypes = {p.dtype for p in m.parameters()}
    devices = {p.device for p in m.parameters()}
    if len(devices) > 1:
        raise BindError(f"{type(m).__name__}'s parameters are on several devices (" + ", ".join(
            sorted(map(str, devices))) + "): move it to one with .to(device)")
    device = devices.pop() if devices else torch.device("cpu")
    if device.type not in ("cpu", "cuda") or (device.type == "cuda" and target != "cuda"):
        raise BindError(f"{type(m).__name__} is on {device}, which target {target!r} does not "
                        "run on: call .cpu() first" + (", or pass target='cuda'"
                                                       if device.type == "cuda" else ""))
    out = TorchRNN(mode, m.input_size, m.hidden_size, num_layers=m.num_layers,
                   bias=m.bias, batch_first=m.batch_first, dropout=m.dropout,
                   bidirectional=m.bidirectional, proj_size=getattr(m, "proj_size", 0),
                   target=target, dtype=dtypes.pop() if len(dtypes) == 1 else torch.float32)
    out.to(device).load_state_dict(m.state_dict())
    for name, param in m.named_parameters():        # a frozen weight stays frozen
        out.get_parameter(name).requires_grad_(param.requires_grad)
    out.train(m.training)
    return out


class TorchRNN(torch.nn.Module):
    """torch.nn.RNN / LSTM / GRU computed by rnndsl cells (specs/torch/), one cell per
    layer and direction, chained in Python: layer k + 1 reads layer k's output tensor,
    and the two directions of a bidirectional layer run in one call, at once, one a
    core (on the cuda target, one after the other; a fused multi-layer plan is later
    work). Made by `from_torch(m)`, or like torch's modules:
    `TorchRNN("LSTM", 8, 16, num_layers=2, bidirectional=True)`, drawing torch's
    starts (uniform on +-1/sqrt(hidden_size)).

    forward(input, hx=None, lengths=None) -> (output, h_n), or (output, (h_n, c_n)) for
    an LSTM, exactly as torch's: input (T, B, I) ((B, T, I) with batch_first), (T, I)
    unbatched, or a PackedSequence (then output is one too); hx, h_n, c_n are
    (num_layers * num_directions, B, H) (h of an LSTM with proj_size: (..., B, P)).
    `lengths` (one int per sequence) is rnndsl's shortcut for a padded batch: what a
    PackedSequence of it gives, padded, without packing.
    """

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, *, target: str = "cpu",
                 dtype=torch.float32):
        super().__init__()
        _check_config(mode, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                      bidirectional, proj_size)
        self.mode, self.input_size, self.hidden_size = mode, input_size, hidden_size
        self.num_layers, self.bias, self.batch_first = num_layers, bias, batch_first
        self.dropout, self.bidirectional, self.proj_size = float(dropout), bidirectional, \
            proj_size
        self.target = target
        path, name = torch_spec(mode, bias, proj_size > 0)
        self.cell_class = load(path, target=target, cell=name)
        self._cells: dict[tuple, Cell] = {}
        for name_, shape in self._shapes(numpy_dtype(dtype)).items():
            self.register_parameter(name_, torch.nn.Parameter(torch.empty(shape, dtype=dtype)))
        self.reset_parameters()

    # ------------------------------------------------------------------ names and shapes
    @property
    def suffixes(self) -> tuple[str, ...]:
        return ("", REVERSE) if self.bidirectional else ("",)

    @property
    def out_size(self) -> int:
        """The size of h: proj_size if set, else hidden_size."""
        return self.proj_size or self.hidden_size

    def _dims(self, layer: int) -> dict[str, int]:
        I = self.input_size if layer == 0 else self.out_size * len(self.suffixes)
        dims = {"I": I, "H": self.hidden_size}
        return dict(dims, P=self.proj_size) if self.proj_size else dims

    def _shapes(self, dtype) -> dict[str, tuple[int, ...]]:
        """torch's parameter names and shapes, in torch's order (layer, direction,
        weight_ih, weight_hh, bias_ih, bias_hh, weight_hr), from the spec's params."""
        shapes = {}
        for layer in range(self.num_layers):
            probe = self._cell(layer, "", dtype)
            for suffix in self.suffixes:
                for d in self.cell_class.spec.params:
                    shapes[self.torch_name(d.name, layer, suffix)] = probe.params[d.name].shape
        return shapes

    @staticmethod
    def torch_name(param: str, layer: int, suffix: str = "") -> str:
        """The spec param `weight_ih` of layer 1's reverse cell is `weight_ih_l1_reverse`."""
        return f"{param}_l{layer}{suffix}"

    def reset_parameters(self) -> None:
        """torch's starts: every weight and bias uniform on +-1/sqrt(hidden_size)."""
        bound = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0.0
        for p in self.parameters():
            torch.nn.init.uniform_(p, -bound, bound)

    def extra_repr(self) -> str:
        extra = [f"{self.mode}", f"{self.input_size}, {self.hidden_size}",
                 f"num_layers={self.num_layers}", f"target={self.target!r}"]
        for key, default in (("bias", True), ("batch_first", False), ("dropout", 0.0),
                             ("bidirectional", False), ("proj_size", 0)):
            if getattr(self, key) != default:
                extra.append(f"{key}={getattr(self, key)}")
        return ", ".join(extra)

    # ------------------------------------------------------------------ torch's RNNBase API
    def flatten_parameters(self) -> None:
        """A no-op, for code written for torch's modules (`self.rnn.flatten_parameters()`):
        torch packs cuDNN's weights into one buffer here; rnndsl's cells read each
        parameter's own memory at every call, so there is nothing to pack."""

    @property
    def nonlinearity(self) -> str:
        """An RNN's "tanh" or "relu", as torch.nn.RNN has it (LSTM and GRU have none)."""
        if not self.mode.startswith("RNN_"):
            raise AttributeError(f"a TorchRNN of mode {self.mode} has no nonlinearity, as "
                                 f"torch.nn.{_TORCH_CLASSES[self.mode]} has none")
        return self.mode[4:].lower()

    @property
    def _flat_weights_names(self) -> list[str]:
        return [name for name, _ in self.named_parameters()]

    @property
    def _flat_weights(self) -> list[torch.nn.Parameter]:
        return list(self.parameters())

    @property
    def all_weights(self) -> list[list[torch.nn.Parameter]]:
        """The parameters grouped by layer and direction, in torch's order: [[weight_ih_l0,
        weight_hh_l0, bias_ih_l0, bias_hh_l0], [weight_ih_l0_reverse, ...], ...]."""
        return [[getattr(self, self.torch_name(d.name, layer, suffix))
                 for d in self.cell_class.spec.params]
                for layer in range(self.num_layers) for suffix in self.suffixes]

    def _cell(self, layer: int, suffix: str, dtype) -> Cell:
        """A layer's cell for a direction (suffix "both": over both, `both_at_once`)."""
        key = (layer, suffix, dtype.str)
        if key not in self._cells:
            both = {"direction": "bidirectional"} if suffix == "both" else {}
            self._cells[key] = self.cell_class(dtype=dtype, seed=0, **both,
                                               **self._dims(layer))
        return self._cells[key]

    # ------------------------------------------------------------------ forward
    def forward(self, input, hx=None, lengths=None):
        packed = isinstance(input, PackedSequence)
        if packed:
            if lengths is not None:
                raise BindError("a PackedSequence carries its lengths: pass lengths=None")
            x, lengths = pad_packed_sequence(input, batch_first=self.batch_first)
        elif not isinstance(input, torch.Tensor):
            raise BindError(f"input must be a torch.Tensor or a PackedSequence, got "
                            f"{type(input).__name__}")
        else:
            x = input
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(1 if not self.batch_first else 0)
            hx = _map_state(hx, lambda t: t.unsqueeze(1))
        if x.dim() != 3:
            raise BindError(f"input has shape {tuple(x.shape)}; expected (T, B, "
                            f"{self.input_size}) (batch_first: (B, T, {self.input_size})), "
                            "or (T, I) unbatched")
        if x.dtype != self._dtype():
            raise BindError(f"input is {x.dtype} but the module's parameters are "
                            f"{self._dtype()}; convert it with .to({self._dtype()})")
        if self.batch_first:
            x = x.transpose(0, 1)
        initial = self._initial(hx, x.shape[1])
        if x.shape[1] == 0:          # no sequences: empty results, as torch gives them
            output, h_n, c_n = self._empty(x)
        else:
            output, h_n, c_n = self._layers(x, initial, lengths_array(lengths))
        if self.batch_first:
            output = output.transpose(0, 1)
        state = (h_n, c_n) if self.mode == "LSTM" else h_n
        if unbatched:
            output, state = output.squeeze(1 if not self.batch_first else 0), \
                _map_state(state, lambda t: t.squeeze(1))
        if packed:
            output = _repack(output, input, self.batch_first)
        return output, state

    def _empty(self, x) -> tuple:
        """(output, h_n, c_n) of a batch of no sequences (time-major), in the graph of x
        and the params as torch's are (a backward through them gives zero gradients)."""
        n = self.num_layers * len(self.suffixes)
        zero = x.reshape(-1)[:0].sum() + sum(p.reshape(-1)[:0].sum()
                                             for p in self.parameters())

        def empty(*shape):
            return x.new_zeros(shape) + zero
        c_n = empty(n, 0, self.hidden_size) if self.mode == "LSTM" else None
        return empty(x.shape[0], 0, self.out_size * len(self.suffixes)), \
            empty(n, 0, self.out_size), c_n

    def _initial(self, hx, B: int) -> list[dict]:
        """hx as one dict of initial states per (layer, direction), torch's order."""
        n = self.num_layers * len(self.suffixes)
        if hx is None:
            return [{} for _ in range(n)]
        lstm = self.mode == "LSTM"
        if lstm != isinstance(hx, (tuple, list)):
            raise BindError("hx must be a tuple (h_0, c_0) for an LSTM" if lstm else
                            f"hx must be one tensor for mode {self.mode}")
        if lstm and len(hx) != 2:
            raise BindError(f"hx must be a tuple (h_0, c_0) for an LSTM, got a "
                            f"{type(hx).__name__} of {len(hx)}")
        named = dict(zip(("h", "c"), hx)) if lstm else {"h": hx}
        sizes = {"h": self.out_size, "c": self.hidden_size}
        for key, t in named.items():
            if not isinstance(t, torch.Tensor):
                raise BindError(f"initial state {key} must be a torch.Tensor, got "
                                f"{type(t).__name__}")
            if tuple(t.shape) != (n, B, sizes[key]):
                raise BindError(f"initial state {key} has shape {tuple(t.shape)}; expected "
                                f"(num_layers * num_directions, B, size) = "
                                f"({n}, {B}, {sizes[key]})")
            if t.dtype != self._dtype():
                raise BindError(f"initial state {key} is {t.dtype} but the module's "
                                f"parameters are {self._dtype()}; convert it with "
                                f".to({self._dtype()})")
        return [{k: t[i] for k, t in named.items()} for i in range(n)]

    def _layers(self, x, initial: list[dict], lengths):
        """Layer by layer, direction by direction: (output, h_n, c_n) time-major."""
        dtype = numpy_dtype(self._dtype())
        finals = []
        both = len(self.suffixes) == 2 and both_at_once(self.target)
        for layer in range(self.num_layers):
            if layer:
                _check_finite(x, layer)
            outs = []
            if both:      # one call over both directions: at once, one a core
                cell = self._cell(layer, "both", dtype)
                params = {p.name + suffix: getattr(self, self.torch_name(p.name, layer, suffix))
                          for suffix in self.suffixes for p in self.cell_class.spec.params}
                given = {k + suffix: t for d, suffix in enumerate(self.suffixes)
                         for k, t in initial[layer * 2 + d].items()}
                o, f = run_cell(cell, {"x": x}, given, params, lengths)
                outs.append(o["h"])
                finals += [{k: f[k + suffix] for k in ("h", "c") if k + suffix in f}
                           for suffix in self.suffixes]
            for d, suffix in enumerate(self.suffixes if not both else ()):
                cell = self._cell(layer, suffix, dtype)
                params = {p.name: getattr(self, self.torch_name(p.name, layer, suffix))
                          for p in cell.spec.params}
                o, f = run_cell(cell, {"x": x}, initial[layer * len(self.suffixes) + d],
                                params, lengths, reverse=suffix == REVERSE)
                outs.append(o["h"])
                finals.append(f)
            x = outs[0] if len(outs) == 1 else torch.cat(outs, -1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = torch.nn.functional.dropout(x, self.dropout, training=True)
        h_n = torch.stack([f["h"] for f in finals])
        c_n = torch.stack([f["c"] for f in finals]) if self.mode == "LSTM" else None
        return x, h_n, c_n

    def _dtype(self):
        dtypes = {p.dtype for p in self.parameters()}
        if len(dtypes) != 1:
            raise BindError("the module's parameters have several dtypes; convert them "
                            "with .float() or .double()")
        return dtypes.pop()

    # ------------------------------------------------------------------ back to torch
    def to_torch(self) -> torch.nn.Module:
        """The torch.nn.RNN / LSTM / GRU with this module's configuration and a copy of
        its weights (in their dtype), on the device they are on."""
        cls = getattr(torch.nn, _TORCH_CLASSES[self.mode])
        kwargs = dict(num_layers=self.num_layers, bias=self.bias,
                      batch_first=self.batch_first, dropout=self.dropout,
                      bidirectional=self.bidirectional, dtype=self._dtype())
        if self.mode.startswith("RNN_"):
            kwargs["nonlinearity"] = self.mode[4:].lower()
        if self.proj_size:
            kwargs["proj_size"] = self.proj_size
        m = cls(self.input_size, self.hidden_size, **kwargs)
        m.to(next(self.parameters()).device).load_state_dict(self.state_dict())
        for name, param in self.named_parameters():
            m.get_parameter(name).requires_grad_(param.requires_grad)
        return m.train(self.training)

    # ------------------------------------------------------------------ pickling
    def __getstate__(self):
        """What a pickle (`torch.save(model)`, `copy.deepcopy`) holds: the module less
        its cell class and cells, which are made again from the shipped spec on load
        (a class made by `load` has no importable name)."""
        state = dict(self.__dict__)
        state.pop("cell_class", None)
        state["_cells"] = {}
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        path, name = torch_spec(self.mode, self.bias, self.proj_size > 0)
        self.cell_class = load(path, target=self.target, cell=name)


def _check_finite(x: torch.Tensor, layer: int) -> None:
    """Layer `layer`'s input, the output of the layer under it, is finite: the cell would
    refuse it as its "input x", which the caller never gave (torch.nn.RNN passes an inf
    on where a layer overflows; rnndsl checks what crosses into each of its cells)."""
    bad = ~torch.isfinite(x.detach())
    if bad.any():
        where = tuple(int(i) for i in bad.nonzero()[0])
        raise BindError(f"layer {layer - 1}'s output (the input of layer {layer}) has a "
                        f"non-finite value ({x.detach()[where].item()}) at index {where} "
                        "(step, batch, feature), though the input was finite: layer "
                        f"{layer - 1} overflowed; use smaller weights or inputs, or float64")


def _map_state(state, f):
    """f over hx / h_n, or over each of an LSTM's (h, c); None stays None."""
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return tuple(f(t) for t in state)
    return f(state)


def _repack(output: torch.Tensor, like: PackedSequence, batch_first: bool) -> PackedSequence:
    """A padded output (in the batch's own order) packed as `like` is: the same batch
    sizes and sorting indices, so it lines up with torch's output step for step."""
    if batch_first:
        output = output.transpose(0, 1)
    order = like.sorted_indices if like.sorted_indices is not None else \
        torch.arange(output.shape[1])
    data = torch.cat([output[t, order[:int(n)]] for t, n in enumerate(like.batch_sizes)])
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)
