"""ONNX import: a model of RNN, LSTM and GRU nodes, run by rnndsl cells.

    session = rnndsl.onnx.InferenceSession("model.onnx", target="cpu")
    y, y_h = session.run(None, {"X": x})            # as onnxruntime's session runs it
    print(session.cells["LSTM_0"])                  # the spec text of the cell it built

Input: an ONNX model (a path, bytes or a ModelProto). When the session opens, every node
is read: each RNN, LSTM or GRU node becomes one cell per direction, whose spec text
(onnx_cells.py) is loaded with `rnndsl.load_text` on the session's target; the nodes
between them must be reshaping glue (onnx_glue.py). What rnndsl cannot run (another op,
an unknown activation, an attribute out of range) is refused then, with an
`OnnxImportError` naming the node, the attribute and its value.

`run` evaluates the nodes in the model's order. A recurrent node's weights (initializers
or graph inputs, so they may change between runs) are cut into its cells' params; each
direction runs as `cell.forward` over the (T, B, I) input, the reverse direction over
each sequence reversed within its own length (on the host), with `sequence_lens` as
`lengths` and `initial_h` / `initial_c` as the starting states. Outputs are laid out as
ONNX's: Y [T, D, B, H] (layout 0) or [B, T, D, H] (layout 1), Y_h and Y_c [D, B, H] or
[B, D, H], zeros after each sequence's end (and, as onnxruntime gives them, zero final
states for a sequence of length 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..cells.directions import reverse_in_lengths, reverse_index
from ..core.errors import BindError
from .onnx_cells import (GATES, STATES, NodeConfig, OnnxImportError, cell_text, read_config,
                         split_weights)
from .onnx_glue import GLUE

RECURRENT = ("RNN", "LSTM", "GRU")
# The inputs of each recurrent operator, in ONNX's order.
_INPUTS = {"RNN": ("X", "W", "R", "B", "sequence_lens", "initial_h"),
           "GRU": ("X", "W", "R", "B", "sequence_lens", "initial_h"),
           "LSTM": ("X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P")}


@dataclass(frozen=True)
class NodeArg:
    """A graph input or output, as onnxruntime's `get_inputs()` describes it."""

    name: str
    shape: list
    type: str


def _read_model(path_or_model):
    import onnx
    if isinstance(path_or_model, onnx.ModelProto):
        return path_or_model
    if isinstance(path_or_model, (bytes, bytearray)):
        try:
            return onnx.load_from_string(bytes(path_or_model))
        except Exception as exc:      # a protobuf parse error: not a model
            raise OnnxImportError(f"the {len(path_or_model)} bytes given are not an ONNX "
                                  f"model ({exc})") from None
    if not isinstance(path_or_model, (str, Path)):
        raise OnnxImportError(f"InferenceSession takes a path, bytes or an onnx.ModelProto, "
                              f"got {type(path_or_model).__name__}")
    path = Path(path_or_model)
    if not path.is_file():
        raise OnnxImportError(f"{path}: no such ONNX model file")
    try:
        return onnx.load(str(path))
    except Exception as exc:      # a protobuf parse error: not a model
        raise OnnxImportError(f"{path}: not an ONNX model ({exc})") from None


# The type ONNX's operators give each attribute: one of another type (clip=1, an INT)
# is an invalid model, which onnxruntime and onnx.checker refuse.
_ATTRIBUTE_TYPES = {"activation_alpha": "FLOATS", "activation_beta": "FLOATS",
                    "activations": "STRINGS", "clip": "FLOAT", "direction": "STRING",
                    "hidden_size": "INT", "layout": "INT", "input_forget": "INT",
                    "linear_before_reset": "INT"}


def _check_types(node, where: str) -> None:
    from onnx import AttributeProto, helper
    for a in node.attribute:
        want = _ATTRIBUTE_TYPES.get(a.name)
        got = AttributeProto.AttributeType.Name(a.type)
        if want is not None and got != want:
            raise OnnxImportError(
                f"{where}: attribute {a.name}={helper.get_attribute_value(a)!r} is {got}, "
                f"but ONNX's {node.op_type} takes {a.name} as {want} (onnxruntime refuses "
                f"the model too): write it as {want}")


def _node_arg(value_info) -> NodeArg:
    from onnx import TensorProto
    t = value_info.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in t.shape.dim] if t.HasField("shape") else None
    elem = TensorProto.DataType.Name(t.elem_type).lower() if t.elem_type else "undefined"
    return NodeArg(value_info.name, dims, f"tensor({elem})")


def _attributes(node) -> dict:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class _Recurrent:
    """One RNN/LSTM/GRU node: its config, a cell class per direction, and instances of
    them per (I, H, dtype) met at run time."""

    def __init__(self, node, config: NodeConfig, names: list[str], classes: list[type]):
        self.node = node
        self.config = config
        self.names = names
        self.classes = classes
        self._instances: dict = {}
        self.fed_weights = False

    def instance(self, d: int, I: int, H: int, dtype):
        key = (d, I, H, np.dtype(dtype))
        if key not in self._instances:
            self._instances[key] = self.classes[d](I=I, H=H, dtype=dtype, seed=0)
        return self._instances[key]

    def label(self, slot: str) -> str:
        """How a message names one of the node's inputs: its slot, and the model's name
        for it where that differs (`initial_h 'h0'`)."""
        name = dict(zip(_INPUTS[self.node.op_type], self.node.input)).get(slot, slot)
        return slot if name == slot else f"{slot} {name!r}"

    def run(self, ins: dict) -> list:
        """The node's outputs (Y, Y_h[, Y_c]) from its inputs by ONNX's slot names."""
        c = self.config
        for slot, a in ins.items():    # named here as the model names them, not as the cell
            if slot != "sequence_lens" and a.dtype.kind == "f" and not np.isfinite(a).all():
                where = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
                raise BindError(f"{c.where}: {self.label(slot)} has a non-finite value "
                                f"({a[where]}) at index {where}")
        X, H, starts, lengths = self._read(ins)
        ys, finals = [], {s: [] for s in STATES[c.operator]}
        for d, direction in enumerate(c.directions):
            cell = self.instance(d, X.shape[2], H, X.dtype)
            for name, value in split_weights(c.operator, d, ins["W"], ins["R"], ins.get("B"),
                                             ins.get("P"), H, X.dtype).items():
                cell.params[name] = value
            state = {s: np.ascontiguousarray(a[d], dtype=X.dtype)
                     for s, a in starts.items() if a is not None}
            reverse = direction == "reverse"
            x = reverse_within(X, lengths) if reverse else X
            run = cell.forward(np.ascontiguousarray(x), state or None, lengths=lengths,
                               grad=False)
            ys.append(reverse_within(run.outputs["h"], lengths) if reverse
                      else run.outputs["h"])
            for s in finals:
                finals[s].append(_zero_where_empty(run.state[s], lengths))
        Y = np.stack(ys, axis=1)                                   # (T, D, B, H)
        outs = [Y.transpose(2, 0, 1, 3) if c.layout == 1 else Y]
        for s in STATES[c.operator]:
            F = np.stack(finals[s], axis=0)                        # (D, B, H)
            outs.append(F.transpose(1, 0, 2) if c.layout == 1 else F)
        return outs

    def _read(self, ins: dict):
        """X as (T, B, I), the hidden size, the initial states as (D, B, H) (None where
        not given) and the lengths, each checked against the others."""
        c, where = self.config, self.config.where
        X = _float_input(ins, "X", where)
        if X.ndim != 3:
            raise BindError(f"{where}: X is {X.shape}; it must be 3-D")
        if c.layout == 1:
            X = X.transpose(1, 0, 2)
        T, B, I = X.shape
        D, G = len(c.directions), len(GATES[c.operator])
        W, R = _float_input(ins, "W", where), _float_input(ins, "R", where)
        H = c.hidden_size or (W.shape[1] // G if W.ndim == 3 else 0)
        if W.ndim == 3 and W.shape[:2] == (D, G * H) and W.shape[2] != I and self.fed_weights:
            raise BindError(f"{where}: {self.label('X')} {ins['X'].shape} and "
                            f"{self.label('W')} {tuple(W.shape)}, both fed, disagree on the "
                            f"input size ({I} against {W.shape[2]}): X's last axis is W's")
        if W.ndim == 3 and W.shape[:2] == (D, G * H) and W.shape[2] != I:
            want = (B, T, W.shape[2]) if c.layout == 1 else (T, B, W.shape[2])
            raise BindError(f"{where}: {self.label('X')} is {ins['X'].shape} but must be "
                            f"{want}: its last axis is the input size of W "
                            f"{tuple(W.shape)}")
        _expect(W, "W", (D, G * H, I), where)
        _expect(R, "R", (D, G * H, H), where)
        _expect(ins.get("B"), "B", (D, 2 * G * H), where)
        _expect(ins.get("P"), "P", (D, 3 * H), where)
        starts = {}
        for s in STATES[c.operator]:
            a = ins.get("initial_" + s)
            if a is not None and c.layout == 1:
                _expect(a, "initial_" + s, (B, D, H), where)
                a = a.transpose(1, 0, 2)
            _expect(a, "initial_" + s, (D, B, H), where)
            starts[s] = a
        return X, H, starts, _lengths(ins.get("sequence_lens"), T, B, where)


def _float_input(ins, name, where):
    a = ins.get(name)
    if a is None:
        raise BindError(f"{where}: input {name} is missing")
    if a.dtype not in (np.float32, np.float64):
        raise BindError(f"{where}: {name} is {a.dtype}; rnndsl runs float32 and float64")
    return a


def _expect(a, name, shape, where):
    if a is not None and tuple(a.shape) != tuple(shape):
        raise BindError(f"{where}: {name} is {tuple(a.shape)} but must be {tuple(shape)} "
                        "(from X, W and hidden_size)")


def _lengths(a, T, B, where):
    """sequence_lens as `forward`'s lengths, or None where every sequence runs T steps."""
    if a is None:
        return None
    a = np.asarray(a)
    if a.shape != (B,) or a.dtype.kind not in "iu":
        raise BindError(f"{where}: sequence_lens is {a.dtype} {a.shape}; it must be "
                        f"int32 ({B},)")
    if (a < 0).any() or (a > T).any():
        raise BindError(f"{where}: sequence_lens {a.tolist()} must lie in [0, {T}]")
    return None if (a == T).all() else a.astype(np.int64)


def _zero_where_empty(final: np.ndarray, lengths) -> np.ndarray:
    """onnxruntime's final state of a sequence of length 0 is zeros (rnndsl's `forward`
    keeps the start there); the session gives what onnxruntime gives."""
    if lengths is None or (lengths > 0).all():
        return final
    return np.where((lengths > 0)[:, None], final, 0).astype(final.dtype)


def reverse_within(x: np.ndarray, lengths) -> np.ndarray:
    """x (T, B, ...) with each sequence b's first lengths[b] steps reversed; the padding
    after them stays where it is (the cells' own reversal: rnndsl.cells.directions)."""
    return reverse_in_lengths(x, reverse_index(x.shape[0], x.shape[1], lengths))


class InferenceSession:
    """onnxruntime's InferenceSession, for models of RNN, LSTM and GRU nodes, on rnndsl.

    `run(output_names, feed)` returns a list of arrays; `get_inputs()` and
    `get_outputs()` describe the graph. `cells` maps each generated cell's name
    (`LSTM_0`, `LSTM_0_reverse`: the operator, its index among the model's recurrent
    nodes, the direction) to its spec text; `cell(name)` gives an instance holding the
    model's weights, to train or change. `sess_options`, `providers` and
    `provider_options` are taken for onnxruntime's signature and ignored: `target`
    ("cpu", "interp", "cuda") says where the cells run. The second argument is the
    target where it is a string, and onnxruntime's `sess_options` otherwise, so that
    code written for onnxruntime (`InferenceSession(path, options, providers)`) runs."""

    def __init__(self, path_or_model, target="cpu", providers=None, *, sess_options=None,
                 provider_options=None):
        from onnx import numpy_helper
        from ..cells.load import load_text
        if not isinstance(target, str):    # onnxruntime's sess_options (or None)
            target = "cpu"
        model = _read_model(path_or_model)
        graph = model.graph
        self.target = target
        self._initializers = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self._inputs = [_node_arg(v) for v in graph.input if v.name not in self._initializers]
        self._outputs = [_node_arg(v) for v in graph.output]
        # what a feed may set: the graph's inputs, those with an initializer (a default)
        # too; an initializer that is no input is a constant, as onnxruntime keeps it
        self._feedable = {v.name for v in graph.input}
        self._types = {v.name: v.type.tensor_type.elem_type for v in graph.input
                       if v.name not in self._initializers}
        self._nodes: list = []
        self.cells: dict[str, str] = {}
        self.cell_classes: dict[str, type] = {}
        self._owner: dict[str, tuple[_Recurrent, int]] = {}
        # the values a node may read: the graph's inputs and initializers, and what the
        # nodes before it write (ONNX orders a graph's nodes so)
        defined = {v.name for v in graph.input} | set(self._initializers)
        for k, node in enumerate(graph.node):
            where = f"node {k} ({node.op_type} {node.name!r})"
            if node.domain not in ("", "ai.onnx"):
                raise OnnxImportError(f"{where}: domain {node.domain!r} is not ONNX's own")
            _check_node_inputs(node, where, defined)
            defined.update(name for name in node.output if name)
            if node.op_type in RECURRENT:
                self._nodes.append(self._recurrent(node, where, load_text))
            elif node.op_type in GLUE:
                attrs = _attributes(node)
                if node.op_type == "Constant" and not {
                        "value", "value_float", "value_floats", "value_int",
                        "value_ints"} & set(attrs):
                    raise OnnxImportError(
                        f"{where}: a Constant of {', '.join(sorted(attrs)) or 'no value'}; "
                        "rnndsl imports a Constant's value, value_float(s) or value_int(s)")
                self._nodes.append((node, attrs))
            else:
                raise OnnxImportError(
                    f"{where}: op_type={node.op_type!r} is not an operator rnndsl imports "
                    f"(RNN, LSTM, GRU, and between them {', '.join(sorted(GLUE))})")

    def _recurrent(self, node, where: str, load_text) -> _Recurrent:
        _check_types(node, where)
        self._check_float_inputs(node, where)
        config = read_config(node.op_type, _attributes(node), where)
        if node.op_type == "LSTM" and len(node.input) > 7 and node.input[7]:
            config = replace(config, peepholes=True)
        self._check_weights(node, config)
        index = sum(1 for n in self._nodes if isinstance(n, _Recurrent))
        names, classes = [], []
        for d, direction in enumerate(config.directions):
            name = f"{node.op_type}_{index}" + ("_reverse" if direction == "reverse" and
                                                  config.direction == "bidirectional" else "")
            text = cell_text(config, name, d)
            self.cells[name] = text
            classes.append(load_text(text, target=self.target, path=f"{name}.rnn"))
            self.cell_classes[name] = classes[-1]
            names.append(name)
        rec = _Recurrent(node, config, names, classes)
        rec.fed_weights = dict(zip(_INPUTS[node.op_type], node.input)).get("W") \
            not in self._initializers      # W fed at run time: X and W may be the wrong one
        for d, name in enumerate(names):
            self._owner[name] = (rec, d)
        return rec

    def _check_weights(self, node, config: NodeConfig) -> None:
        """Weights held as initializers are checked now, against hidden_size and the
        directions (weights fed at run time are checked then, as BindErrors)."""
        slots = dict(zip(_INPUTS[node.op_type], node.input))
        D, G = len(config.directions), len(GATES[node.op_type])
        W, R = (self._initializers.get(slots.get(s, "")) for s in ("W", "R"))
        if W is None or R is None:
            return
        H = config.hidden_size or R.shape[-1]
        if W.ndim != 3 or R.shape != (D, G * H, H) or W.shape[:2] != (D, G * H):
            raise OnnxImportError(
                f"{config.where}: W {W.shape} and R {R.shape} do not fit hidden_size={H} "
                f"with {D} direction{'s' if D > 1 else ''} ({node.op_type} has {G} gates: "
                f"W must be ({D}, {G * H}, input size), R ({D}, {G * H}, {H}))")

    # ------------------------------------------------------------------ onnxruntime's face
    def get_inputs(self) -> list[NodeArg]:
        return list(self._inputs)

    def get_outputs(self) -> list[NodeArg]:
        return list(self._outputs)

    def run(self, output_names, input_feed: dict, run_options=None) -> list[np.ndarray]:
        if isinstance(output_names, (str, bytes)) or not (
                output_names is None or all(isinstance(n, str) for n in output_names)):
            raise BindError(f"output names must be a list of names, or None for all the "
                            f"model's outputs: not {output_names!r}"
                            + (f" (write [{output_names!r}])"
                               if isinstance(output_names, str) else ""))
        if not isinstance(input_feed, Mapping):
            raise BindError(f"the feed must be a dict of input name -> array, not a "
                            f"{type(input_feed).__name__}; the model's inputs: "
                            f"{', '.join(a.name for a in self._inputs)}")
        values = dict(self._initializers)
        for name, value in input_feed.items():
            if name not in self._feedable:
                constant = (" (an initializer of the model, not an input: a constant)"
                            if name in self._initializers else "")
                raise BindError(f"the model has no input {name!r}{constant}; its inputs: "
                                f"{', '.join(a.name for a in self._inputs)}")
            values[name] = np.asarray(value)
            _check_feed_type(name, values[name], self._types.get(name))
        missing = [a.name for a in self._inputs if a.name not in values]
        if missing:
            raise BindError(f"missing input{'s' if len(missing) > 1 else ''}: "
                            f"{', '.join(missing)}")
        for item in self._nodes:
            if isinstance(item, _Recurrent):
                self._run_recurrent(item, values)
            else:
                self._run_glue(*item, values)
        names = output_names or [o.name for o in self._outputs]
        for name in names:
            if name not in values:
                raise BindError(f"the model computes no value named {name!r}")
        return [values[name] for name in names]

    def _run_recurrent(self, rec: _Recurrent, values: dict) -> None:
        node = rec.node
        ins = {slot: _value(values, name, rec.config.where)
               for slot, name in zip(_INPUTS[node.op_type], node.input) if name}
        for name, out in zip(node.output, rec.run(ins)):
            if name:
                values[name] = out

    def _check_float_inputs(self, node, where: str) -> None:
        """The node's float inputs that the file fixes (an initializer's dtype, a graph
        input's declared type) are float32 or float64, the dtypes rnndsl runs: refused
        when the session opens, where a run would have said it."""
        from onnx import TensorProto
        for slot, name in zip(_INPUTS[node.op_type], node.input):
            if not name or slot == "sequence_lens":
                continue
            if name in self._initializers:
                dtype = self._initializers[name].dtype
                if dtype not in (np.float32, np.float64):
                    raise OnnxImportError(f"{where}: its {slot} ({name!r}) is an initializer "
                                          f"of {dtype}; rnndsl runs float32 and float64")
            elif self._types.get(name) not in (None, 0, TensorProto.FLOAT,
                                               TensorProto.DOUBLE):
                declared = TensorProto.DataType.Name(self._types[name]).lower()
                raise OnnxImportError(f"{where}: its {slot} ({name!r}) is declared "
                                      f"{declared}; rnndsl runs float32 and float64")

    def _run_glue(self, node, attrs, values: dict) -> None:
        ins = [_value(values, name, node.op_type) if name else None for name in node.input]
        try:
            outs = GLUE[node.op_type](ins, attrs)
        except (ValueError, IndexError, TypeError) as exc:
            # the feed's shapes disagree with the graph's (a batch size baked into a
            # Reshape, an index past an axis): NumPy's words, placed at the node
            where = f"{node.op_type} {node.name!r}" if node.name else node.op_type
            shapes = ", ".join(str(np.shape(v)) for v in ins if v is not None)
            raise BindError(f"node {where} cannot take its inputs of shapes {shapes}: "
                            f"{exc}") from None
        for name, out in zip(node.output, outs):
            if name:
                values[name] = out

    # ------------------------------------------------------------------ the cells
    def cell(self, name: str, dtype=np.float32, feed: dict | None = None):
        """A new instance of the cell `name` with the model's weights (from its
        initializers, or from `feed` where the weights are graph inputs), to train or
        change; a reverse direction's cell reads each sequence reversed."""
        if name not in self._owner:
            raise KeyError(f"no cell {name!r}; the session's cells: {', '.join(self.cells)}")
        rec, d = self._owner[name]
        values = {**self._initializers, **{k: np.asarray(v) for k, v in (feed or {}).items()}}
        slots = dict(zip(_INPUTS[rec.node.op_type], rec.node.input))
        W, R = (_value(values, slots[s], rec.config.where) for s in ("W", "R"))
        B, P = (_value(values, slots[s], rec.config.where) if slots.get(s) else None
                for s in ("B", "P"))
        H = R.shape[-1]
        cell = self.cell_classes[name](I=W.shape[-1], H=H, dtype=dtype, seed=0)
        for key, value in split_weights(rec.node.op_type, d, W, R, B, P, H, dtype).items():
            cell.params[key] = value
        return cell


def _check_node_inputs(node, where: str, defined: set) -> None:
    """A recurrent node without X, W or R, or any node reading a value that nothing
    before it defines, can never run: refused when the session opens."""
    if node.op_type in RECURRENT:
        slots = dict(zip(_INPUTS[node.op_type], node.input))
        absent = [slot for slot in ("X", "W", "R") if not slots.get(slot)]
        if absent:
            raise OnnxImportError(
                f"{where}: input{'s' if len(absent) > 1 else ''} {', '.join(absent)} "
                f"missing: {node.op_type} needs X, W and R (its inputs are "
                f"{', '.join(_INPUTS[node.op_type])}, the optional ones may be '')")
    unknown = [name for name in node.input if name and name not in defined]
    if unknown:
        raise OnnxImportError(
            f"{where}: reads {', '.join(map(repr, unknown))}, which is neither an input "
            "or initializer of the graph nor written by a node before it")


def _check_feed_type(name: str, value: np.ndarray, elem: int | None) -> None:
    """A fed array has the element type the model declares for the input, as
    onnxruntime requires ("Unexpected input data type"); an undeclared type takes any."""
    from onnx import TensorProto, helper
    if not elem:
        return
    want = np.dtype(helper.tensor_dtype_to_np_dtype(elem))
    if value.dtype != want:
        onnx_name = TensorProto.DataType.Name(elem).lower()
        raise BindError(f"input {name!r} is {value.dtype} but the model declares it "
                        f"tensor({onnx_name}), {want.name}: convert it with "
                        f".astype(np.{want.name})")


def _value(values: dict, name: str, where: str):
    if name not in values:
        raise BindError(f"{where}: its input {name!r} is neither fed, an initializer, nor "
                        "computed by an earlier node")
    return values[name]
