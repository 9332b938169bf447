"""One ONNX RNN, LSTM or GRU node -> the spec text of a cell per direction, and its weights.

Input: a node's operator and attributes (as Python values, read by onnx_import.py).
Output: a `NodeCells`: one spec text per direction (forward, reverse), written from
ONNX's equations (onnx.ai, operators RNN, LSTM, GRU) with the node's activations, clip,
input_forget and linear_before_reset in them; and `split_weights`, which cuts ONNX's
stacked W, R, B and P into the spec's params, one per gate.

What the spec text holds is generated here, never copied from the file: the cell's name
is made from the operator and the node's position, the params are named after ONNX's
gates (W_i, R_i, Wb_i, Rb_i, P_i), and the only values taken from the file, the
activations' alpha and beta and the clip, are checked to be finite floats and written by
`number`. Names in the file (nodes, tensors) never reach spec text.

Activations are written with the language's functions, each exactly ONNX's definition
(as onnxruntime computes it): LeakyRelu is `relu(a) + alpha * min(a, 0)`, Elu is
`relu(a) + alpha * (exp(min(a, 0)) - 1)`, Softsign `a / (1 + abs(a))`, ThresholdedRelu
`a * greater(a, alpha)`, HardSigmoid `hard_sigmoid(a, alpha, beta)`. Clip bounds each
gate activation's input, `max(min(a, clip), -clip)`, but not the LSTM's cell state where
h reads it (onnxruntime clips no more; ONNX's text says "the input of activations").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core.errors import RnnError


class OnnxImportError(RnnError):
    """An ONNX model rnndsl cannot run: names the node, the attribute and its value."""


# Per operator: ONNX's gate order in W/R/B, the activations a direction takes and their
# defaults, the states.
GATES = {"RNN": ("i",), "LSTM": ("i", "o", "f", "c"), "GRU": ("z", "r", "h")}
DEFAULT_ACTIVATIONS = {"RNN": ("Tanh",), "LSTM": ("Sigmoid", "Tanh", "Tanh"),
                       "GRU": ("Sigmoid", "Tanh")}
STATES = {"RNN": ("h",), "LSTM": ("h", "c"), "GRU": ("h",)}

# Which activations read alpha and beta, and their defaults when the lists run out:
# onnxruntime's (rnn_helpers.cc), which the tests compare against: LeakyRelu 0.01,
# HardSigmoid 0.2 and 0.5, Elu 1.0, every other 0 (ONNX's text says "as the operators",
# which would make ThresholdedRelu's and Affine's alpha 1; onnxruntime is what runs).
_USES = {"Relu": (False, False), "Tanh": (False, False), "Sigmoid": (False, False),
         "Affine": (True, True), "LeakyRelu": (True, False), "ThresholdedRelu": (True, False),
         "ScaledTanh": (True, True), "HardSigmoid": (True, True), "Elu": (True, False),
         "Softsign": (False, False), "Softplus": (False, False)}
_DEFAULTS = {name: tuple(float(np.float32(v)) for v in values) for name, values in
             {"LeakyRelu": (0.01, 0.0), "HardSigmoid": (0.2, 0.5), "Elu": (1.0, 0.0)}.items()}
# (as the float32 values onnxruntime computes with, like the attributes' own values)
ACTIVATIONS = tuple(_USES)
_ONE_CALL = {"Relu", "Tanh", "Sigmoid", "HardSigmoid", "Softplus"}   # written as f(a)
_BY_LOWER = {name.lower(): name for name in ACTIVATIONS}
DIRECTIONS = ("forward", "reverse", "bidirectional")


@dataclass(frozen=True)
class Activation:
    name: str           # canonical: one of ACTIVATIONS
    alpha: float = 0.0
    beta: float = 0.0

    def apply(self, a: str) -> str:
        """This activation of the value named `a`, as spec text."""
        al, be = number(self.alpha), number(self.beta)
        return {
            "Relu": f"relu({a})", "Tanh": f"tanh({a})", "Sigmoid": f"sigmoid({a})",
            "Affine": f"{al} * {a} + {be}",
            "LeakyRelu": f"relu({a}) + {al} * min({a}, 0)",
            "ThresholdedRelu": f"{a} * greater({a}, {al})",
            "ScaledTanh": f"{al} * tanh({be} * {a})",
            "HardSigmoid": f"hard_sigmoid({a}, {al}, {be})",
            "Elu": f"relu({a}) + {al} * (exp(min({a}, 0)) - 1)",
            "Softsign": f"{a} / (1 + abs({a}))",
            "Softplus": f"softplus({a})",
        }[self.name]

    def factor(self, a: str) -> str:
        """apply(a) as the right operand of a product: a sum in parentheses."""
        text = self.apply(a)
        return text if self.name in _ONE_CALL else f"({text})"


@dataclass(frozen=True)
class NodeConfig:
    """What a recurrent node computes, its attributes read and checked."""

    operator: str                   # "RNN", "LSTM" or "GRU"
    where: str                      # how messages name the node
    direction: str
    hidden_size: int | None
    activations: tuple[tuple[Activation, ...], ...]   # per direction
    clip: float | None
    input_forget: bool
    linear_before_reset: bool
    layout: int
    peepholes: bool = False         # an LSTM given P

    @property
    def directions(self) -> tuple[str, ...]:
        return ("forward", "reverse") if self.direction == "bidirectional" \
            else (self.direction,)


def number(value: float) -> str:
    """A finite float as spec text that reads back to the same double ("(-0.5)" in
    parentheses, since the grammar's numbers carry no sign)."""
    assert math.isfinite(value), value
    text = repr(float(value))
    return f"({text})" if text.startswith("-") else text


def read_config(operator: str, attrs: dict, where: str) -> NodeConfig:
    """Check a node's attributes against what rnndsl can run; refuse the rest by name."""
    known = {"activation_alpha", "activation_beta", "activations", "clip", "direction",
             "hidden_size", "layout"}
    known |= {"input_forget"} if operator == "LSTM" else set()
    known |= {"linear_before_reset"} if operator == "GRU" else set()
    for name in attrs:
        if name not in known:
            raise OnnxImportError(f"{where}: attribute {name}={attrs[name]!r} is not an "
                                  f"attribute of ONNX's {operator} that rnndsl knows")
    direction = _text(attrs.get("direction", "forward"))
    if direction not in DIRECTIONS:
        raise OnnxImportError(f"{where}: direction={direction!r} is not one of "
                              f"{', '.join(DIRECTIONS)}")
    layout = int(attrs.get("layout", 0))
    if layout not in (0, 1):
        raise OnnxImportError(f"{where}: layout={layout} is not 0 or 1")
    hidden = attrs.get("hidden_size")
    if hidden is not None and int(hidden) <= 0:
        raise OnnxImportError(f"{where}: hidden_size={hidden} is not positive")
    clip = attrs.get("clip")
    if clip is not None:
        clip = float(clip)
        if not (math.isfinite(clip) and clip > 0):
            raise OnnxImportError(f"{where}: clip={clip!r} is not a positive finite number")
    flags = {}
    for flag in ("input_forget", "linear_before_reset"):
        value = int(attrs.get(flag, 0))
        if value not in (0, 1):
            raise OnnxImportError(f"{where}: {flag}={value} is not 0 or 1")
        flags[flag] = bool(value)
    n_dirs = 2 if direction == "bidirectional" else 1
    acts = _activations(operator, attrs, n_dirs, where)
    return NodeConfig(operator, where, direction, None if hidden is None else int(hidden),
                      acts, clip, flags["input_forget"], flags["linear_before_reset"], layout)


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _activations(operator: str, attrs: dict, n_dirs: int, where: str):
    """The activations of each direction, with their alpha and beta, consumed from the
    lists in order as onnxruntime does (only by the activations that read them)."""
    per = len(DEFAULT_ACTIVATIONS[operator])
    names = [_text(a) for a in attrs.get("activations", [])]
    # one direction's list, with its alpha and beta, serves both (onnxruntime 1.32
    # refuses it); the defaults too
    shared = not names or (len(names) == per and n_dirs == 2)
    if not names:
        names = list(DEFAULT_ACTIVATIONS[operator]) * n_dirs
    elif shared:
        names = names * 2
    if len(names) != per * n_dirs:
        raise OnnxImportError(
            f"{where}: activations={names!r} has {len(names)} entries; {operator} with "
            f"{n_dirs} direction{'s' if n_dirs > 1 else ''} takes {per * n_dirs}")
    alphas = [float(a) for a in attrs.get("activation_alpha", [])]
    betas = [float(b) for b in attrs.get("activation_beta", [])]
    for label, values in (("activation_alpha", alphas), ("activation_beta", betas)):
        for v in values:
            if not math.isfinite(v):
                raise OnnxImportError(f"{where}: {label} holds {v!r}, not a finite number")
    out = []
    for name in names[:per] if shared else names:
        canonical = name if name in _USES else None
        if canonical is None:
            near = _BY_LOWER.get(name.lower())
            raise OnnxImportError(f"{where}: activations holds {name!r}, not one of "
                                  f"{', '.join(ACTIVATIONS)}" + (
                                      f" (the names are case-sensitive, as onnxruntime reads "
                                      f"them: write {near!r})" if near else ""))
        uses_alpha, uses_beta = _USES[canonical]
        alpha, beta = _DEFAULTS.get(canonical, (0.0, 0.0))
        if uses_alpha and alphas:
            alpha = alphas.pop(0)
        if uses_beta and betas:
            beta = betas.pop(0)
        out.append(Activation(canonical, alpha, beta))
    if shared:
        out = out * n_dirs
    return tuple(tuple(out[d * per:(d + 1) * per]) for d in range(n_dirs))


# ------------------------------------------------------------------ spec text
def cell_text(config: NodeConfig, name: str, direction: int) -> str:
    """The spec of one direction of the node, as a cell named `name` (a generated
    identifier), from ONNX's equations with this node's attributes."""
    acts = config.activations[direction]
    write = {"RNN": _rnn, "LSTM": _lstm, "GRU": _gru}[config.operator]
    equations = write(config, acts)
    gates = GATES[config.operator]
    states = ", ".join(f"{s}[H]" for s in STATES[config.operator])
    lines = [f"# ONNX {config.operator}, {config.directions[direction]} direction, "
             f"as rnndsl.onnx.InferenceSession imported it",
             f"# activations: {', '.join(_describe(a) for a in acts)}"
             + (f"; clip {number(config.clip)}" if config.clip is not None else "")
             + ("; input_forget" if config.input_forget else "")
             + (f"; linear_before_reset {int(config.linear_before_reset)}"
                if config.operator == "GRU" else ""),
             f"cell {name} {{",
             "  dims  I, H",
             "  input x[I]",
             f"  state {states}",
             "  param " + ", ".join(f"W_{g}[H, I]" for g in gates),
             "  param " + ", ".join(f"R_{g}[H, H]" for g in gates),
             "  param " + ", ".join(f"Wb_{g}[H]" for g in gates),
             "  param " + ", ".join(f"Rb_{g}[H]" for g in gates)]
    if config.peepholes:
        lines.append("  param P_i[H], P_o[H], P_f[H]       # peepholes")
    lines.append("")
    lines += [f"  {e}" for e in equations]
    lines.append("  output h'")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _describe(a: Activation) -> str:
    uses_alpha, uses_beta = _USES[a.name]
    args = ([f"alpha={number(a.alpha)}"] if uses_alpha else []) + \
        ([f"beta={number(a.beta)}"] if uses_beta else [])
    return a.name + (f"({', '.join(args)})" if args else "")


def _clipped(config: NodeConfig, expr: str) -> str:
    if config.clip is None:
        return expr
    c = number(config.clip)
    return f"max(min({expr}, {c}), -{c})"


def _gate(config: NodeConfig, g: str, inner: str) -> str:
    return _clipped(config, f"W_{g} @ x + R_{g} @ h{inner} + Wb_{g} + Rb_{g}")


def _rnn(config, acts):
    (f,) = acts
    return [f"a = {_gate(config, 'i', '')}",
            f"h' = {f.apply('a')}"]


def _lstm(config, acts):
    f, g, h = acts
    peep = " + P_{} * c" if config.peepholes else ""
    out = [f"a_i = {_gate(config, 'i', peep.format('i'))}",
           f"i = {f.apply('a_i')}"]
    if config.input_forget:
        out.append("f = 1 - i                      # input_forget: the gates coupled")
    else:
        out += [f"a_f = {_gate(config, 'f', peep.format('f'))}",
                f"f = {f.apply('a_f')}"]
    peep_o = " + P_o * c'" if config.peepholes else ""
    out += [f"a_c = {_gate(config, 'c', '')}",
            f"g = {g.apply('a_c')}",
            "c' = f * c + i * g",
            f"a_o = {_gate(config, 'o', peep_o)}",
            f"o = {f.apply('a_o')}",
            f"h' = o * {h.factor(NEW_C)}"]
    return out


NEW_C = "c'"     # clip bounds the gates' inputs, not the cell state h reads (as onnxruntime)


def _gru(config, acts):
    f, g = acts
    out = [f"a_z = {_gate(config, 'z', '')}",
           f"z = {f.apply('a_z')}",
           f"a_r = {_gate(config, 'r', '')}",
           f"r = {f.apply('a_r')}"]
    if config.linear_before_reset:
        pre = "W_h @ x + Wb_h + r * (R_h @ h + Rb_h)"
    else:
        pre = "W_h @ x + R_h @ (r * h) + Wb_h + Rb_h"
    out += [f"a_h = {_clipped(config, pre)}",
            f"n = {g.apply('a_h')}",
            "h' = (1 - z) * n + z * h"]
    return out


# ------------------------------------------------------------------ weights
def split_weights(operator: str, d: int, W, R, B, P, H: int, dtype) -> dict[str, np.ndarray]:
    """Direction d's params of the spec from ONNX's stacked tensors (B may be None:
    zeros; P None: the cell has no peepholes), gates in ONNX's order."""
    gates = GATES[operator]
    n = len(gates)
    out = {}
    for k, g in enumerate(gates):
        rows = slice(k * H, (k + 1) * H)
        out[f"W_{g}"] = W[d, rows, :]
        out[f"R_{g}"] = R[d, rows, :]
        out[f"Wb_{g}"] = B[d, rows] if B is not None else np.zeros(H)
        out[f"Rb_{g}"] = B[d, n * H + k * H:n * H + (k + 1) * H] if B is not None \
            else np.zeros(H)
    if P is not None:
        for k, g in enumerate(("i", "o", "f")):
            out[f"P_{g}"] = P[d, k * H:(k + 1) * H]
    return {k: np.ascontiguousarray(v, dtype=dtype) for k, v in out.items()}
