"""ONNX export: a cell with its params -> an ONNX model (`rnndsl.onnx.export`,
`rnndsl export SPEC --format onnx`).

Input: a `Cell` instance (rnndsl.cells: its spec, bound dims, params and dtype). Output:
an `onnx.ModelProto`, written atomically by `export`.

What the model is (docs/onnx.md):
- A cell that has the form of one of ONNX's recurrent operators (onnx_match.py decides,
  structurally: its step graph against a template spec of each operator) becomes that
  operator, RNN, LSTM (with or without peepholes) or GRU (linear_before_reset 0 or 1),
  its weights packed in ONNX's gate order from the params, plus its readouts (Elman's
  `y = sigmoid(W_hy @ h' + b_y)`) computed over the whole sequence after it.
- Every other cell becomes a `Scan` whose body is the cell's step graph, node by node
  (onnx_nodes.py); what reads only params is computed once before it, and what reads
  the inputs but no state once for the whole sequence (`_emit_scan`).
Either way the graph's inputs are the spec's inputs (T, B, size) (a token input: int64
ids (T, B); an `input once`: (B, size)), then `initial_<state>` (B, size) and
`sequence_lens` (B,) int32, both optional: each is also an initializer holding its
default (the state's declared start, (1, size), repeated over the batch; lengths of
2**31-1, cut to T), which onnxruntime uses when the input is not fed. Its outputs are
the spec's outputs as `Cell.forward` returns them, (T, B, size) (a `final` output
(B, size)), then `final_<state>` (B, size). Params are initializers named as in the
spec; dropout sites are off (evaluation), as in `forward` without `dropout=`.

A `Directional` cell (`direction="reverse"` or `"bidirectional"`, rnndsl.cells.directions)
is written the same way, per direction (`_Frame.views`): an operator cell as one node
with ONNX's `direction` attribute, a Scan cell as a Scan per direction whose reverse one
reads its inputs through ReverseSequence (each sequence within its length) and writes
its outputs back the same way. Its states' inputs and outputs are named with the
direction's suffix (`initial_h_reverse`, `final_h_reverse`), its outputs are both
directions' concatenated on the last axis, forward first, as its `forward` returns them.

A network cell (a spec with `layer l1 = bidirectional LSTM(...)` or `reverse`,
rnndsl.cells.network) is its parts, each written as above, chained into one graph in
turn (onnx_network.py); its interface follows the same rules under the network's names
(`l1.W_i_reverse`, `initial_l1.h`, `final_l1.h_reverse`). What both kinds of model
share (the optional inputs' names and defaults, the metadata, `ExportError`) is in
onnx_interface.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ..cells.base import Cell
from ..cells.directions import Directional
from ..cells.network import NetworkCell
from ..core.errors import BindError
from ..core.files import write_atomically
from ..core.ops import Op
from ..ir.graph import lower
from ..lang import ast
from .onnx_interface import (FULL_LENGTH, LENGTHS, ExportError, claim_names, input_info,
                             package)
from .onnx_network import network_model
from .onnx_nodes import Builder, Emit, elem_type, emit_nodes


def export(cell, path, *, operators: bool | None = None, metadata=None):
    """Write `cell` (an instance: dims bound, params set) as an ONNX model to `path`,
    atomically; return the `onnx.ModelProto`.

    operators: True uses ONNX's RNN/LSTM/GRU operators for a cell of their form; False
    always writes a Scan over the cell's equations; None (the default) uses them in
    float32, and a Scan in float64, since onnxruntime's CPU kernels of those
    operators take float32 only. metadata: more {key: text} for the model's
    metadata_props (`rnndsl export --params` adds the checkpoint's vocabulary as
    "rnndsl.vocab": `rnndsl.train.data.Vocab.to_json`'s text, the tokens by id)."""
    if not isinstance(path, (str, Path)):
        raise ExportError(f"export writes to a path (a str or a pathlib.Path), got "
                          f"{type(path).__name__}")
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{path}: is a folder; name the file to write, like "
                          f"{path / 'model.onnx'}")
    if not path.parent.is_dir():          # a typo in a folder's name makes no folders
        raise ExportError(f"{path}: the folder {path.parent} does not exist; create it "
                          "first, or name a file in a folder that exists")
    model = to_model(cell, operators=operators)
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ExportError(f"metadata maps text to text; got {key!r}: {value!r}")
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    write_atomically(path, model.SerializeToString())
    return model


def _check_params_finite(cell) -> None:
    """A NaN or inf param would make every output NaN in whatever runs the model."""
    for name, value in cell.params.items():
        value = np.asarray(value)
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            where = tuple(int(i) for i in np.argwhere(~np.isfinite(value))[0])
            raise ExportError(f"param {name} has a non-finite value ({value[where]}) at "
                              f"index {where}; the model would compute it into every "
                              "output: set the param to finite values before exporting")


def _check_param_types(cell) -> None:
    """Every param as the cell's forward would take it (a NumPy array of the cell's
    dtype and shape; none missing, none it has not), before anything is written: a
    float64 param in a float32 cell made a model onnxruntime refuses to open, a missing
    one a graph that does not validate."""
    if isinstance(cell, Cell):
        cell._check_params()
        return
    known: set[str] = set()
    if isinstance(cell, Directional):       # by the names it holds: W_i_reverse
        one = cell.cells[0][2]
        for suffix, _, _ in cell.cells:
            for d in cell.spec.params:
                size = one._size(d)
                one._array(f"param {d.name}{suffix}", cell.params.get(d.name + suffix),
                           size, str(list(size)), finite=False)
                known.add(d.name + suffix)
    else:                                   # a network: each part reads its own names
        for k, where in enumerate(cell.network.parts):
            try:
                part = cell.part_cell(k)
            except KeyError as exc:
                raise BindError(f"{cell.spec.name}'s param {exc.args[0]} is missing from "
                                ".params: every param of the spec is needed") from None
            layer = getattr(where, "layer", None)
            known |= {f"{layer.name}.{n}" if layer is not None else n for n in part.params}
            try:
                _check_param_types(part)
            except BindError as exc:       # the layer's own names: say whose they are
                if layer is None:
                    raise
                raise BindError(f"layer {layer.name} ({layer.name}.NAME in "
                                f"{cell.spec.name}.params): {exc}") from None
    unknown = sorted(set(cell.params) - known)
    if unknown:                              # a misspelt name would be left out
        raise BindError(f"{cell.spec.name} has no param {', '.join(unknown)}; its params "
                        f"are: {', '.join(sorted(known))}")


def to_model(cell, *, operators: bool | None = None):
    """The ONNX model of `cell` (see the module docstring)."""
    from onnx import helper
    if isinstance(cell, (Cell, Directional, NetworkCell)):
        _check_param_types(cell)
        _check_params_finite(cell)
    if isinstance(cell, NetworkCell):     # its parts, each through this function
        return network_model(cell, lambda part: to_model(part, operators=operators))
    if not isinstance(cell, (Cell, Directional)):
        what = (f"the cell class {cell.__name__}" if isinstance(cell, type)
                else repr(cell)[:60])
        raise ExportError(f"export takes a cell instance, with dims bound and params set "
                          f"(like rnndsl.load(spec)(I=8, H=16), or with direction="
                          f"'reverse' or 'bidirectional'); got {what}")
    spec = cell.spec
    if operators is None:
        operators = cell.dtype == np.float32
    b = Builder()
    frame = _Frame.make(cell, b)
    step = lower(spec)
    found = None
    if operators:
        from .onnx_match import match_operator
        found = match_operator(step, cell.dims)
    if found is not None:
        from .onnx_operator import emit_operator
        results = emit_operator(frame, step, found)
        kind = found.operator
    else:
        results = [_emit_scan(view, step) for view in frame.views()]
        kind = "Scan"
    frame.finish(results)
    for name, value in cell.params.items():
        b.initializer(name, np.asarray(value))
    used = _read_names(b.nodes) | {o.name for o in frame.outputs}
    graph = helper.make_graph(b.nodes, spec.name, frame.inputs, frame.outputs,
                              initializer=[t for t in b.initializers if t.name in used],
                              doc_string=f"cell {spec.name} from {spec.source.path}")
    return package(graph, cell, kind, direction=frame.direction)


def _read_names(nodes) -> set[str]:
    """Every name the nodes read, those of their subgraphs (a Scan's body) included: an
    initializer none of them reads is left out of the model (onnxruntime warns of each,
    'Removing initializer ...': the operator form has no use for some of the frame's
    constants)."""
    names: set[str] = set()
    for node in nodes:
        names.update(node.input)
        for attribute in node.attribute:
            for graph in [attribute.g] * attribute.HasField("g") + list(attribute.graphs):
                names |= _read_names(graph.node)
    return names


# ---------------------------------------------------------------------------- frame
@dataclass
class _Frame:
    """What both kinds of model share: the graph's inputs (the spec's inputs, the
    optional initial states and lengths), the sizes T and B read from the first input,
    each state's start (B, size), the lengths (B,) and the mask (T, B, 1)."""

    cell: object
    b: Builder
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    sequences: dict[str, str] = field(default_factory=dict)   # spec input -> (T, B, ...)
    tokens: set[str] = field(default_factory=set)
    starts: dict[str, str] = field(default_factory=dict)      # state -> (B, size)
    T: str = ""              # [T], int64
    B: str = ""              # [B], int64
    lengths: str = ""        # (B,), int64, each in 0..T
    mask: str = ""           # (T, B, 1), bool: true while a sequence runs
    runs: tuple = (("", False),)   # (suffix, reversed) of each direction, forward first
    all_starts: dict = field(default_factory=dict)   # suffix -> {state: (B, size)}
    suffix: str = ""         # a view's direction: its params are named name + suffix
    reverse: bool = False    # a view whose sequences run backwards within their lengths

    @property
    def direction(self) -> str:
        """ONNX's `direction` attribute for the cell."""
        return getattr(self.cell, "direction", "forward")

    def param(self, name: str) -> str:
        """The ONNX name of a spec param in this view's direction."""
        return name + self.suffix

    def views(self) -> list["_Frame"]:
        """One frame per direction, forward first: its starts, its param suffix, and (the
        reverse one) its per-step inputs reversed within each sequence's length (an
        `input once` is not: it is fed at the first step either way)."""
        out = []
        for suffix, reverse in self.runs:
            sequences, tokens = self.sequences, set(self.tokens)
            if reverse:
                once = {d.name for d in self.cell.spec.inputs if d.once}
                sequences = {k: v if k in once else self.reversed(v)
                             for k, v in sequences.items()}
                tokens |= {sequences[k] for k in self.tokens}
            out.append(replace(self, suffix=suffix, reverse=reverse, sequences=sequences,
                               tokens=tokens, starts=self.all_starts[suffix]))
        return out

    def reversed(self, value: str) -> str:
        """A (T, B, ...) sequence with each sequence's steps 0 .. length-1 in reverse
        order and its padding left in place: rnndsl's reverse pass (its own inverse)."""
        return self.b.op("ReverseSequence", [value, self.lengths], hint=value + ".rev",
                         batch_axis=1, time_axis=0)

    @property
    def dtype(self) -> np.dtype:
        return self.cell.dtype

    @property
    def dims(self) -> dict[str, int]:
        return self.cell.dims

    def size(self, decl) -> int:
        (d,) = decl.type.shape
        return d.evaluate(self.dims)

    def emit(self, batch_shape: str, b: Builder | None = None) -> Emit:
        return Emit(b or self.b, self.dims, self.dtype, batch_shape, set(self.tokens))

    @classmethod
    def make(cls, cell, b: Builder) -> "_Frame":
        from onnx import helper
        f = cls(cell, b)
        spec = cell.spec
        if isinstance(cell, Directional):
            f.runs = tuple((suffix, reverse) for suffix, reverse, _ in cell.cells)
        claim_names(cell, b)
        hidden = dict(spec.dropouts)
        users = [d for d in spec.inputs if d.name not in hidden]
        per_step = [d for d in users if not d.once]
        if not per_step:
            raise ExportError(f"{spec.name}: every input is `input once`, so the length of "
                              "the sequence would need one more input; ONNX export needs "
                              "at least one input given at every step")
        ft = elem_type(cell.dtype)
        f.inputs += [input_info(d, cell.dims, cell.dtype) for d in users]
        first = per_step[0].name
        f.T = b.op("Shape", [first], hint="T", start=0, end=1)
        f.B = b.op("Shape", [first], hint="B", start=1, end=2)
        t_scalar = b.op("Squeeze", [f.T], hint="T.scalar")
        steps = b.op("Range", [b.const(np.int64(0)), t_scalar, b.const(np.int64(1))],
                     hint="steps")
        for d in users:
            if d.token:
                f.tokens.add(d.name)
            if d.once:    # (B, size) -> (T, B, size): the value at the first step, 0 after
                first_step = b.op("Cast", [b.op("Equal", [steps, b.const(np.int64(0))])],
                                  to=ft)
                first_step = b.op("Reshape", [first_step, b.const(np.array([-1, 1, 1],
                                                                            np.int64))])
                f.sequences[d.name] = b.op("Mul", [b.op("Unsqueeze", [
                    d.name, b.const(np.array([0], np.int64))]), first_step], hint=d.name + ".seq")
            else:
                f.sequences[d.name] = d.name
        for suffix, _ in f.runs:
            starts = f.all_starts[suffix] = {}
            for d in spec.states:
                size = f.size(d)
                name = "initial_" + d.name + suffix
                b.initializer(name, _declared_start(cell, d, size, suffix))
                f.inputs.append(helper.make_tensor_value_info(name, ft, ["B", size]))
                starts[d.name] = b.op("Expand", [name, b.op("Concat", [
                    f.B, b.const(np.array([size], np.int64))], axis=0)],
                    hint=d.name + suffix + ".start")
        f.starts = f.all_starts[""]
        b.initializer(LENGTHS, np.array([FULL_LENGTH], np.int32))
        f.inputs.append(helper.make_tensor_value_info(LENGTHS, elem_type(np.int32), ["B"]))
        lengths = b.op("Expand", [b.op("Cast", [LENGTHS], to=elem_type(np.int64)), f.B])
        f.lengths = b.op("Min", [lengths, f.T], hint="lengths")
        running = b.op("Less", [b.op("Unsqueeze", [steps, b.const(np.array([1], np.int64))]),
                                b.op("Unsqueeze", [f.lengths,
                                                   b.const(np.array([0], np.int64))])])
        f.mask = b.op("Unsqueeze", [running, b.const(np.array([2], np.int64))], hint="mask")
        return f

    def finish(self, results: list[tuple[dict[str, str], dict[str, str]]]) -> None:
        """The graph's outputs from each direction's (sequences, finals): each output's
        (T, B, ...) sequence (a batched scalar (T, B, 1)) in time order (a `final` one in
        its run's order), joined on the last axis forward first, and each state's final
        value (B, size) under the direction's suffix."""
        from onnx import helper
        b, spec, ft = self.b, self.cell.spec, elem_type(self.dtype)
        for o in spec.outputs:
            sizes = [d.evaluate(self.dims) for d in o.type.shape]
            parts = [self._last(seqs[o.name], len(sizes) or 1) if o.final else seqs[o.name]
                     for seqs, _ in results]
            value = parts[0] if len(parts) == 1 else b.op("Concat", parts, axis=-1)
            if not sizes and len(parts) == 1:
                value = b.op("Squeeze", [value, b.const(np.array([-1], np.int64))])
            elif len(parts) > 1:
                sizes = [len(parts) * (sizes[0] if sizes else 1)]
            shape = (["B"] if o.final else ["T", "B"]) + sizes
            b.op("Identity", [value], out=o.name)
            self.outputs.append(helper.make_tensor_value_info(o.name, ft, shape))
        for (suffix, _), (_, finals) in zip(self.runs, results):
            for d in spec.states:
                name = "final_" + d.name + suffix
                b.op("Identity", [finals[d.name]], out=name)
                self.outputs.append(helper.make_tensor_value_info(name, ft,
                                                                  ["B", self.size(d)]))

    def _last(self, value: str, rank: int) -> str:
        """Each sequence's value at its last step: (T, B, ...) -> (B, ...)."""
        b = self.b
        last = b.op("Sub", [self.lengths, b.const(np.array(1, np.int64))])
        last = b.op("Max", [last, b.const(np.array(0, np.int64))])
        by_row = b.op("Transpose", [value], perm=[1, 0] + list(range(2, 2 + rank)))
        return b.op("GatherND", [by_row, b.op("Unsqueeze", [
            last, b.const(np.array([1], np.int64))])], batch_dims=1)


def _declared_start(cell, d, size: int, suffix: str = "") -> np.ndarray:
    """A state's start as `forward` makes it without `state=`: 0, the declared number,
    or the param it names (the direction's own); (1, size), repeated over the batch in
    the graph."""
    if isinstance(d.init, ast.ParamRefInit):
        value = np.asarray(cell.params[d.init.name + suffix])
    elif isinstance(d.init, ast.ConstInit):
        value = np.full(size, d.init.value)
    else:
        value = np.zeros(size)
    return value.astype(cell.dtype).reshape(1, size)


# ---------------------------------------------------------------------------- Scan
def _reading(step, leaf_ops) -> set[int]:
    """The nodes that read a leaf of one of `leaf_ops`, directly or not."""
    G = step.graph
    out: set[int] = set()
    for nid in G.needed(step.roots()):
        node = G[nid]
        if node.op in leaf_ops or any(a in out for a in node.args):
            out.add(nid)
    return out


def _emit_scan(frame: _Frame, step):
    """A Scan over T whose body is the part of the step graph that reads the states;
    states frozen and outputs 0 after each sequence's end, as `forward(x, lengths=...)`
    does. What reads only params is computed once before it, what reads the inputs
    but no state once for all T steps (the input's products: one MatMul of T*B rows),
    and fed to the body step by step. Returns the outputs' sequences and the final
    states."""
    from onnx import helper
    b, spec, G = frame.b, frame.cell.spec, step.graph
    ft = elem_type(frame.dtype)
    order = G.needed(step.roots())
    in_body = _reading(step, (Op.STATE,))
    per_input = _reading(step, (Op.INPUT,)) - in_body
    names = {nid: frame.param(p) for p, nid in step.params.items()}
    emit_nodes(frame.emit(frame.B), step,
               [n for n in order if n not in in_body and n not in per_input], names)

    # the inputs' part over the whole sequence: batched values are (T, B, ...) there
    e_seq = frame.emit(b.op("Concat", [frame.T, frame.B], axis=0, hint="TB"))
    seq_names = {n: v for n, v in names.items() if G[n].op != Op.BATCH}   # (B, ...) ones
    hidden = dict(spec.dropouts)
    for d in spec.inputs:
        nid = step.inputs[d.name]
        if nid not in per_input:
            continue
        if d.name in hidden:       # dropout off: the mask is ones
            size = frame.size(d)
            seq_names[nid] = b.op("Expand", [b.const(np.ones(size, frame.dtype)),
                                             e_seq.batched_shape(size)], hint=d.name)
        else:
            seq_names[nid] = frame.sequences[d.name]
    emit_nodes(e_seq, step, [n for n in order if n in per_input], seq_names)

    roots = set(step.roots())
    crossing = sorted(n for n in per_input
                      if n in roots or any(n in G[u].args for u in in_body))
    body = Builder(prefix="step/", root=b)
    e = frame.emit(frame.B, body)
    body_inputs, body_outputs, scanned = [], [], []
    for d in spec.states:
        name = body.fresh(d.name)
        names[step.states[d.name]] = name
        body_inputs.append(helper.make_tensor_value_info(name, ft, ["B", frame.size(d)]))
    for nid in crossing:
        label = G.names.get(nid, G.label(nid))
        name = body.fresh(label)
        names[nid] = name
        scanned.append(seq_names[nid])
        is_ids = seq_names[nid] in frame.tokens
        if is_ids:
            e.tokens.add(name)
        body_inputs.append(helper.make_tensor_value_info(
            name, elem_type(np.int64) if is_ids else ft, None))
    running = body.fresh("running")
    body_inputs.append(helper.make_tensor_value_info(running, elem_type(np.bool_), ["B", 1]))
    scanned.append(frame.mask)
    emit_nodes(e, step, [n for n in order if n in in_body], names)

    zero = e.scalar(0.0)
    for d in spec.states:
        new, old = names[step.next_state[d.name]], names[step.states[d.name]]
        out = body.op("Where", [running, new, old], hint=d.name + "'")
        body_outputs.append(helper.make_tensor_value_info(out, ft, None))
    for o in spec.outputs:
        out = body.op("Where", [running, names[step.outputs[o.name]], zero], hint=o.name)
        body_outputs.append(helper.make_tensor_value_info(out, ft, None))
    graph = helper.make_graph(body.nodes, f"{spec.name}{frame.suffix}_step", body_inputs,
                              body_outputs)
    results = b.op("Scan", [frame.starts[d.name] for d in spec.states] + scanned,
                   hint="scan", n_out=len(spec.states) + len(spec.outputs),
                   body=graph, num_scan_inputs=len(scanned))
    results = results if isinstance(results, list) else [results]
    k = len(spec.states)
    finals = {d.name: results[i] for i, d in enumerate(spec.states)}
    sequences = {o.name: results[k + i] for i, o in enumerate(spec.outputs)}
    if frame.reverse:     # back in time order; a final output is taken in run order
        sequences = {o.name: sequences[o.name] if o.final else frame.reversed(sequences[o.name])
                     for o in spec.outputs}
    return sequences, finals
