"""A recognised cell (onnx_match.py) -> one ONNX RNN, LSTM or GRU node, and its readouts.

Input: the export's frame (onnx_export.py: the graph's inputs, starts, lengths, mask,
and its directions), the cell's step graph and its `OperatorMatch`. Output: for each
direction, each output's (T, B, ...) sequence and each state's final value, as ONNX
names.

The operator's weights are built in the graph from the params (initializers named as in
the spec), in ONNX's layout: W [1, gates*H, I] and R [1, gates*H, H] stacked in its gate
order (iofc for LSTM, zrh for GRU), B [1, 2*gates*H] = Wb then Rb (a cell's one bias is
Wb, Rb is zero; two biases are Wb and Rb), P [1, 3*H] (iof) for peepholes; a reverse
or bidirectional cell's are its directions' stacked on the first axis, forward first
(its params NAME and NAME_reverse). onnxruntime folds these constant nodes when it
loads the model.
"""

from __future__ import annotations

import numpy as np

from ..core.ops import Op
from .onnx_nodes import emit_nodes


def emit_operator(frame, step, match):
    """One operator node for all of the cell's directions (ONNX's `direction`: its
    weights, starts and outputs stacked on the num_directions axis, forward first), then
    each direction's readouts; returns each direction's (sequences, finals), as
    `_Frame.finish` takes them. ONNX's reverse direction, like rnndsl's, starts each
    sequence at its own last step and writes Y in time order, so its input is X as is."""
    b, t = frame.b, match.template
    views = frame.views()
    hidden_state = match.state(t.hidden)
    H = frame.size(next(d for d in step.cell.states if d.name == hidden_state))
    (x_name,) = step.inputs
    X = frame.sequences[x_name]
    axis0 = b.const(np.array([0], np.int64))
    weights = [_weights(view, match, H) for view in views]

    def joined(parts, hint):
        return parts[0] if len(parts) == 1 else b.op("Concat", parts, axis=0, hint=hint)

    states = ("h", "c") if t.operator == "LSTM" else ("h",)
    lengths = b.op("Cast", [frame.lengths], to=6)     # int32, as the operators take it
    inputs = [X] + [joined([w[k] for w in weights], k) for k in "WRB"] + [lengths]
    inputs += [joined([b.op("Unsqueeze", [view.starts[match.state(s)], axis0])
                       for view in views], "initial_" + s) for s in states]
    if t.peepholes:
        inputs.append(joined([w["P"] for w in weights], "P"))
    attrs = dict(t.attrs)
    if "activations" in attrs:      # ONNX lists them per direction
        attrs["activations"] = list(attrs["activations"]) * len(views)
    n_out = 3 if t.operator == "LSTM" else 2
    outs = b.op(t.operator, inputs, hint=t.operator, n_out=n_out, hidden_size=H,
                direction=frame.direction, **attrs)
    # a sequence of length 0 keeps its start, as forward's does (onnxruntime's LSTM
    # leaves something else in Y_h and Y_c there)
    empty = b.op("Unsqueeze", [b.op("Equal", [frame.lengths, b.const(np.array(0, np.int64))]),
                               b.const(np.array([1], np.int64))], hint="empty")
    results = []
    for k, view in enumerate(views):
        at = b.const(np.array(k, np.int64), hint="direction")
        Y = b.op("Gather", [outs[0], at], axis=1, hint="Y" + view.suffix)   # (T, B, H)
        finals = {}
        for j, s in enumerate(states):
            name = match.state(s)
            last = b.op("Gather", [outs[1 + j], at], axis=0, hint="Y_" + s + view.suffix)
            finals[name] = b.op("Where", [empty, view.starts[name], last],
                                hint="final_" + s + view.suffix)
        results.append((_readouts(view, step, hidden_state, Y, X), finals))
    return results


def _weights(view, match, H: int) -> dict[str, str]:
    """One direction's W [1, gates*H, I], R [1, gates*H, H], B [1, 2*gates*H] and, with
    peepholes, P [1, 3*H], built from its params (named with its suffix) in ONNX's gate
    order (see the module docstring)."""
    b, t = view.b, match.template
    zeros = b.const(np.zeros(H, view.dtype), hint="zeros_H")
    axis0 = b.const(np.array([0], np.int64))

    def ref(name):     # a param, or rows of one (onnx_match.unstacked)
        if name not in match.rows:
            return view.param(name)
        param, start, stop = match.rows[name]
        return b.op("Slice", [view.param(param), b.const(np.array([start], np.int64)),
                              b.const(np.array([stop], np.int64)), axis0],
                    hint=name + view.suffix)

    def stacked(names, hint):
        return b.op("Unsqueeze", [b.op("Concat", [ref(n) for n in names], axis=0), axis0],
                    hint=hint + view.suffix)

    def total(params):
        if not params:
            return zeros
        out = ref(params[0])
        for p in params[1:]:
            out = b.op("Add", [out, ref(p)])
        return out

    out = {"W": stacked([match.param("W_" + g) for g in t.gates], "W"),
           "R": stacked([match.param("R_" + g) for g in t.gates], "R")}
    wb, rb = [], []
    for g in t.gates:
        if t.operator == "GRU" and g == "h" and "bias:bw_h" in match.binding:
            wb.append(total(match.bias("bw_h")))      # linear_before_reset=1: apart
            rb.append(total(match.bias("br_h")))
            continue
        params = match.bias("b_" + g)
        wb.append(ref(params[0]) if params else zeros)
        rb.append(ref(params[1]) if len(params) > 1 else zeros)
    out["B"] = b.op("Unsqueeze", [b.op("Concat", wb + rb, axis=0), axis0],
                    hint="B" + view.suffix)
    if t.peepholes:
        out["P"] = stacked([match.param("P_" + g) for g in "iof"], "P")
    return out


def _readouts(view, step, hidden_state: str, Y: str, X: str) -> dict[str, str]:
    """Each output's (T, B, ...) sequence in time order: the hidden state's Y, or a
    readout of it, the input and the direction's params, computed over the whole
    sequence and 0 past each sequence's end. Y and X are both in time order, so output
    t of the reverse direction reads its own h'(t) and x(t)."""
    b, G = view.b, step.graph
    hidden = step.next_state[hidden_state]
    (x_name,) = step.inputs
    sequences = {}
    e = view.emit(b.op("Concat", [view.T, view.B], axis=0, hint="TB"))
    names = {nid: view.param(p) for p, nid in step.params.items()}
    names.update({hidden: Y, step.inputs[x_name]: X})
    zero = e.scalar(0.0)
    for name, nid in step.outputs.items():
        if nid == hidden:
            sequences[name] = Y
            continue
        emit_nodes(e, step, _needed_until(G, nid, set(names)), names)
        sequences[name] = b.op("Where", [view.mask, names[nid], zero], hint=name + view.suffix)
    return sequences


def _needed_until(G, root: int, known: set[int]) -> list[int]:
    """The nodes `root` reads, not looking past those in `known`, in id order."""
    seen, stack = set(), [root]
    while stack:
        nid = stack.pop()
        if nid in seen:
            continue
        seen.add(nid)
        if nid not in known and G[nid].op not in (Op.PARAM, Op.CONST, Op.DIM):
            stack.extend(G[nid].args)
    return sorted(seen)
