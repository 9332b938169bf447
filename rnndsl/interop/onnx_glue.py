"""The ONNX nodes an imported model may hold between its recurrent nodes, run in NumPy.

Input: a node's op_type, its input arrays (None for a missing optional input) and its
attributes. Output: its output arrays. These are the reshaping nodes exporters write
around RNN, LSTM and GRU: PyTorch's `torch.onnx.export` of a stacked or bidirectional
nn.LSTM puts Squeeze, Transpose and Reshape between the layers, Slice (or Gather) to
pick each layer's initial state out of h0, Shape, Gather, Concat, ConstantOfShape and
Expand to make zero states of the batch's size, and Unsqueeze and Concat where weights
were not folded; rnndsl's own export (onnx_export.py) adds the elementwise arithmetic and
comparisons of its lengths and masks (Add, Min, Less, Where, Range, ...), and a readout
after a recurrent node: MatMul, Add and an activation (Sigmoid, Tanh, Relu; elman.rnn's
`y = sigmoid(W_hy @ h + b_y)` exports as an RNN node and those). Anything else (Softmax,
a Scan) is refused when the session opens, naming the op: rnndsl imports recurrent
models, not general graphs. These run on the host, in NumPy, with NumPy's broadcasting
and matmul (ONNX's).
"""

from __future__ import annotations

import functools

import numpy as np

from ..cells.directions import reverse_in_lengths, reverse_index


def _axes(ins, attrs, rank):
    """Axes from the second input (opset >= 13) or the `axes` attribute (earlier)."""
    axes = ins[1] if len(ins) > 1 and ins[1] is not None else attrs.get("axes")
    if axes is None:
        return None
    return sorted(int(a) % rank for a in np.atleast_1d(axes))


def _squeeze(ins, attrs):
    x = ins[0]
    axes = _axes(ins, attrs, x.ndim)
    if axes is None:
        axes = [k for k, n in enumerate(x.shape) if n == 1]
    return [np.squeeze(x, axis=tuple(axes))]


def _unsqueeze(ins, attrs):
    x = ins[0]
    given = ins[1] if len(ins) > 1 and ins[1] is not None else attrs["axes"]
    rank = x.ndim + len(np.atleast_1d(given))
    for a in sorted(int(a) % rank for a in np.atleast_1d(given)):
        x = np.expand_dims(x, a)
    return [x]


def _transpose(ins, attrs):
    perm = attrs.get("perm")
    return [np.transpose(ins[0], None if perm is None else [int(p) for p in perm])]


def _reshape(ins, attrs):
    x, shape = ins[0], [int(s) for s in ins[1]]
    if not attrs.get("allowzero", 0):
        shape = [x.shape[k] if s == 0 else s for k, s in enumerate(shape)]
    return [np.reshape(x, shape)]


def _concat(ins, attrs):
    return [np.concatenate([a for a in ins if a is not None], axis=int(attrs["axis"]))]


def _slice(ins, attrs):
    x = ins[0]
    if len(ins) > 1:                         # opset >= 10: starts, ends, axes, steps
        starts, ends = ins[1], ins[2]
        axes = ins[3] if len(ins) > 3 and ins[3] is not None else range(len(starts))
        steps = ins[4] if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    else:
        starts, ends = attrs["starts"], attrs["ends"]
        axes = attrs.get("axes", range(len(starts)))
        steps = [1] * len(starts)
    index = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        index[int(a) % x.ndim] = slice(int(s), int(e), int(st))
    return [x[tuple(index)]]


def _gather(ins, attrs):
    return [np.take(ins[0], ins[1].astype(np.int64), axis=int(attrs.get("axis", 0)))]


def _shape(ins, attrs):
    shape = np.array(ins[0].shape, dtype=np.int64)
    start, end = attrs.get("start", 0), attrs.get("end")
    return [shape[start:end]]


def _tensor(value):
    from onnx import numpy_helper
    return numpy_helper.to_array(value)


def _constant(ins, attrs):
    if "value" in attrs:
        return [_tensor(attrs["value"])]
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attrs:
            return [np.array(attrs[key], dtype=dtype)]
    raise KeyError("Constant without a value, value_float(s) or value_int(s)")


def _constant_of_shape(ins, attrs):
    value = _tensor(attrs["value"]).reshape(-1) if "value" in attrs \
        else np.zeros(1, np.float32)
    return [np.full([int(s) for s in ins[0]], value[0], dtype=value.dtype)]


def _expand(ins, attrs):
    x, shape = ins[0], [int(s) for s in ins[1]]
    return [np.array(np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(shape))))]


def _cast(ins, attrs):
    from onnx import helper
    return [ins[0].astype(helper.tensor_dtype_to_np_dtype(int(attrs["to"])))]


def _elementwise(fn):
    def rule(ins, attrs):
        return [np.asarray(fn(*ins))]
    return rule


def _variadic(fn):
    """ONNX's Min and Max take one or more inputs."""
    def rule(ins, attrs):
        return [np.asarray(functools.reduce(fn, ins))]
    return rule


def _sigmoid(ins, attrs):
    x = np.asarray(ins[0])
    e = np.exp(-np.abs(x))                  # never overflows
    return [np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)]


def _range(ins, attrs):
    start, limit, delta = (np.asarray(a).item() for a in ins)
    return [np.arange(start, limit, delta, dtype=np.asarray(ins[0]).dtype)]


def _reverse_sequence(ins, attrs):
    """ONNX ReverseSequence: each batch entry's first sequence_lens[b] steps reversed
    along the time axis, the rest left as they are (rnndsl's own export of a reverse
    direction writes it around a Scan, and of a length-0 sequence's state): what
    rnndsl.cells.directions does to a reverse cell's inputs, with the axes moved."""
    x, lengths = ins[0], np.asarray(ins[1], dtype=np.int64)
    axes = (int(attrs.get("time_axis", 0)), int(attrs.get("batch_axis", 1)))
    a = np.moveaxis(x, axes, (0, 1))
    out = reverse_in_lengths(a, reverse_index(a.shape[0], a.shape[1], lengths))
    return [np.moveaxis(out, (0, 1), axes)]


GLUE = {
    "Identity": lambda ins, attrs: [ins[0]],
    "Squeeze": _squeeze, "Unsqueeze": _unsqueeze, "Transpose": _transpose,
    "Reshape": _reshape, "Concat": _concat, "Slice": _slice, "Gather": _gather,
    "Shape": _shape, "Constant": _constant, "ConstantOfShape": _constant_of_shape,
    "Expand": _expand, "Cast": _cast, "Range": _range,
    "ReverseSequence": _reverse_sequence,
    "Add": _elementwise(np.add), "Sub": _elementwise(np.subtract),
    "Mul": _elementwise(np.multiply), "Min": _variadic(np.minimum),
    "Max": _variadic(np.maximum), "Equal": _elementwise(np.equal),
    "Less": _elementwise(np.less), "Greater": _elementwise(np.greater),
    "Not": _elementwise(np.logical_not), "Where": _elementwise(np.where),
    "MatMul": _elementwise(np.matmul), "Sigmoid": _sigmoid, "Tanh": _elementwise(np.tanh),
    "Relu": lambda ins, attrs: [np.maximum(ins[0], np.zeros((), ins[0].dtype))],
}
