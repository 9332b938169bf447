"""A kernel's arguments: each is a record `(kind, name)` in the module's metadata
(`forward_args`, `backward_args`, which the cells marshal), a Python name in the
generated signature, and a note on its signature line saying what it is in the spec's
words."""

from __future__ import annotations

from .dialect import ident

_NAMES = {"dim": "dim_{}", "param": "p_{}", "input": "in_{}", "state0": "s0_{}",
          "output": "out_{}", "final": "fin_{}", "output_grad": "dout_{}",
          "final_grad": "dfin_{}", "param_grad": "dp_{}", "input_grad": "din_{}",
          "state0_grad": "ds0_{}", "hist": "hist_{}"}

_NOTES = {
    "dim": "the size {}", "T": "steps", "B": "rows (sequences)",
    "consts": "the constants k0, k1, ... below", "threads": "threads for the GEMMs",
    "seen": "fingerprints of the params and inputs, written unless empty",
    "input_grads": "whether to write the inputs' gradients",
    "param": "param {}", "input": "input {}, (T, B, size)",
    "state0": "state {} at the start, (B, size)",
    "output": "output {}, written, (T, B, size)",
    "final": "state {} at the end, written, (B, size)",
    "output_grad": "d output {}, (T, B, size)", "final_grad": "d state {} at the end",
    "param_grad": "d param {}, written", "input_grad": "d input {}, written",
    "state0_grad": "d state {} at the start, written"}


def arg_name(arg: tuple, value_name) -> str:
    """The argument's name in the generated signature (spec names pass through ident; a
    tape is named as its node's value, by `value_name`, naming.ValueNames)."""
    kind = arg[0]
    if kind == "tape":
        return value_name("tape", arg[1])
    if kind in ("T", "B", "consts", "threads", "seen"):
        return kind
    if kind == "input_grads":
        return "want_din"
    return _NAMES[kind].format(ident(arg[1]))


def arg_note(arg: tuple, which: str, names: dict[int, str], token_names=()) -> str:
    """What the argument is, for its signature line: a saved value by its spec name
    (`names`: node id -> name) or its IR id, whether the kernel writes or reads it."""
    kind, name = arg[0], (arg[1] if len(arg) > 1 else None)
    saved = "written" if which == "forward" else "read"     # the forward saves for BPTT
    if kind == "tape":
        label = names.get(name)
        return ((label if label else f"%{name} of the IR") +
                f" at every step, {saved}, (T, B, size)")
    if kind == "hist":
        return f"state {name} before each step, {saved}, (T, B, size)"
    if kind == "input" and name in token_names:
        return f"input {name}: ids, (T, B)"
    return _NOTES[kind].format(name)
