"""A cell run backwards in time, or both ways: `Cell(..., direction="reverse" |
"bidirectional")`.

Input: a cell class, its dims, a direction. Output: an object with the Cell API
(`params`, `forward`, `backward`, `dims`, `dtype`, `spec`) over one cell (reverse) or two
(bidirectional), each a plain forward-in-time cell of the class.

- A reverse pass runs each sequence backwards from its own last step: with `lengths`,
  sequence b's steps 0 .. lengths[b]-1 are fed in the order lengths[b]-1 .. 0, and its
  padding stays where it was (`reverse_in_lengths`, its own inverse). Its outputs are
  put back in time order, so output t of either direction belongs to input t, and its
  final state is the state after input 0, as torch.nn.LSTM's reverse direction gives.
- A bidirectional cell holds two param sets: the spec's names for the forward direction
  and the same names ending in `_reverse` for the other (torch's naming). Each output
  is the two directions' outputs concatenated on the feature axis, forward first (a
  per-step scalar output becomes (T, B, 2)); final states come back under both names
  (`h`, `h_reverse`), and initial states are taken the same way.
- The two directions of a compiled cell run at once, one on this thread and one on a
  second (the kernels release the GIL), each held to one thread, as the cpu target's
  row blocks are; other targets run them one after the other.
- The reversal is done on the host, in NumPy. On the cuda target a direction takes
  NumPy arrays (each direction's kernels run on the device, one after the other); device
  arrays are refused, with the direction named, rather than copied back and forth.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ..core.errors import BindError, TargetError
from ..lang.checked import REVERSE, reverse_name_clash  # noqa: F401  (REVERSE: for importers)
from .base import DIRECTIONS  # noqa: F401  (for importers)
from .base import Cell, Grads, Run, check_param_table, checked_array, once_steps

def refuse_reverse_names(spec) -> None:
    """A bidirectional cell names the reverse direction's params and states NAME_reverse:
    a spec that already has `W` and `W_reverse` would have one name for two arrays (tied
    weights, a final state lost), so it is refused, the names given."""
    clash = reverse_name_clash(spec)
    if clash is not None:
        kind, name = clash
        raise BindError(f"{spec.name} cannot run bidirectional: its {kind} {name}{REVERSE} "
                        f"would share its name with the reverse direction's copy of {kind} "
                        f"{name}; rename {name}{REVERSE} in the spec")


def reverse_index(T: int, B: int, lengths) -> np.ndarray:
    """(T, B) step indices that reverse each sequence within its length (all T without
    lengths) and leave its padding in place: index[t, b] = lengths[b] - 1 - t while t <
    lengths[b], else t. Applying it twice gives the identity."""
    t = np.arange(T)[:, None]
    if lengths is None:
        return np.broadcast_to(T - 1 - t, (T, B)).copy()
    n = np.asarray(lengths, dtype=np.int64)[None, :]
    return np.where(t < n, n - 1 - t, t)


def reverse_in_lengths(a: np.ndarray, index: np.ndarray) -> np.ndarray:
    """A (T, B, ...) array with each sequence's steps taken in `index`'s order."""
    cols = np.arange(a.shape[1])[None, :]
    return np.ascontiguousarray(a[index, cols])


@dataclass
class DirectionalRun(Run):
    """A directional forward: the combined outputs and states, and each direction's own
    run (`runs`: (suffix, reversed, Run)) for its backward."""

    runs: tuple = ()
    index: Any = None          # reverse_index of the run (None without a reverse pass)


class Directional:
    """The Cell API over one reversed cell or a forward and a reversed one (see the
    module docstring). Made by `CellClass(..., direction=...)`."""

    def __init__(self, cls: type, direction: str, dtype=np.float32, seed: int | None = 0,
                 **dims):
        self.direction = direction
        self.cell_class = cls
        self.spec = cls.spec
        self.target = cls.target
        runs = ((("", True),) if direction == "reverse"
                else (("", False), (REVERSE, True)))
        if direction == "bidirectional":
            refuse_reverse_names(cls.spec)
        self.cells = []
        self.params: dict[str, np.ndarray] = {}
        for k, (suffix, reverse) in enumerate(runs):
            cell = cls(dtype=dtype, seed=None if seed is None else seed + k, **dims)
            cell.param_names_shown = "{}" + suffix      # its errors name U_i_reverse
            self.cells.append((suffix, reverse, cell))
            for name, value in cell.params.items():
                self.params[name + suffix] = value
        first = self.cells[0][2]
        self.dtype, self.dims, self.seed = first.dtype, first.dims, seed
        self._param_shapes = {name: value.shape for name, value in self.params.items()}

    def __repr__(self) -> str:
        dims = ", ".join(f"{k}={v}" for k, v in self.dims.items())
        return f"<{self.spec.name}({dims}) direction={self.direction!r}, {self.target}>"

    @property
    def hidden_inputs(self):
        """The inputs the runtime fills (dropout masks, the length mask): the cell's."""
        return self.cells[0][2].hidden_inputs

    # ------------------------------------------------------------------ forward
    def _bound(self, suffix: str, cell: Cell) -> Cell:
        """The direction's cell, reading this object's params (which may have been
        replaced: cell.params['W_reverse'] = new)."""
        cell.params = {d.name: self.params[d.name + suffix] for d in self.spec.params}
        return cell

    def _reversed_inputs(self, x, index):
        """x with every per-step sequence reversed within its length; `input once`
        arrays (B, size) and hidden inputs are left alone."""
        def flip(value, once: bool):
            a = np.asarray(value)
            return a if once or a.ndim < 2 else reverse_in_lengths(a, index)
        once = {d.name for d in self.spec.inputs if d.once}
        if isinstance(x, Mapping):
            return {k: flip(v, k in once) for k, v in x.items()}
        user = [d for d in self.spec.inputs if d.name not in self.hidden_inputs]
        return flip(x, bool(user) and user[0].once)

    def _final_outputs(self) -> set[str]:
        return {o.name for o in self.spec.outputs if o.final}

    def initial_state(self, B: int) -> dict[str, np.ndarray]:
        """Cell.initial_state: each direction's, under its names (`h`, `h_reverse`)."""
        return {name + suffix: value for suffix, _, cell in self.cells
                for name, value in self._bound(suffix, cell).initial_state(B).items()}

    def _check_params(self) -> None:
        """Every param by the names users see (`W_i_reverse`), before a direction's cell
        would name it without its suffix; a misspelt name refused, not ignored."""
        check_param_table(f"{self.spec.name} ({self.direction})", self.params,
                          self._param_shapes, self.dtype)

    def _check_states(self, state, B: int) -> None:
        """Each given initial state's shape, by the name given (`h_reverse`)."""
        first = self.cells[0][2]
        for d in self.spec.states:
            for suffix, _, _ in self.cells:
                if state is not None and d.name + suffix in state:
                    shape = (B,) + first._size(d)
                    checked_array(f"state {d.name}{suffix}", state[d.name + suffix], shape,
                                  "(B" + "".join(f", {n}" for n in shape[1:]) + ")",
                                  self.dtype)

    def _split_state(self, state, suffix: str):
        if state is None:
            return None
        if not isinstance(state, Mapping):
            raise BindError("state must be a dict keyed by state name, got "
                            f"{type(state).__name__}")
        names = {d.name for d in self.spec.states}
        known = {n + s for n in names for s, _, _ in self.cells}
        unknown = sorted(set(state) - known)
        if unknown:
            raise BindError(f"{self.spec.name} ({self.direction}) has no state "
                            f"{', '.join(unknown)}; its states are {', '.join(sorted(known))}")
        return {n: state[n + suffix] for n in names if n + suffix in state}

    def _T_B(self, x, steps) -> tuple[int, int]:
        """T and B of a call, from its first per-step input (T, B, ...); where every
        input is `input once` (B, size), T is `steps`. Not from whichever input a
        dict holds first: an `input once` array there is (B, size)."""
        once = {d.name for d in self.spec.inputs if d.once}
        if isinstance(x, Mapping):
            given = dict(x)
        else:
            user = [d for d in self.spec.inputs if d.name not in self.hidden_inputs]
            given = {user[0].name if user else "x": x}
        per_step = [np.asarray(v) for k, v in given.items() if k not in once]
        if per_step:
            a = per_step[0]
            if a.ndim < 2:
                raise BindError(f"input must be (T, B, ...), got shape {a.shape}")
            return a.shape[0], a.shape[1]
        T = once_steps(self.spec.name, steps)
        a = np.asarray(next(iter(given.values()), np.empty((0,))))
        if a.ndim < 1:
            raise BindError(f"an 'input once' is (B, size), got shape {a.shape}")
        return T, a.shape[0]

    def forward(self, x, state=None, *, lengths=None, dropout=None, steps=None,
                grad: bool = True, workspace=None) -> DirectionalRun:
        """Cell.forward for each direction (module docstring): a reverse pass sees each
        sequence backwards within its own length. A `workspace` is checked and not used:
        the two directions run at once, and a workspace serves one call at a time."""
        from .base import check_workspace
        check_workspace(workspace)
        if self.target == "cuda":
            self._refuse_device_arrays(x, state)
        T, B = self._T_B(x, steps)
        self._check_params()
        if lengths is not None:
            from .modes import check_lengths
            lengths = check_lengths(lengths, T, B)
        index = reverse_index(T, B, lengths)
        calls = []
        for k, (suffix, reverse, cell) in enumerate(self.cells):
            cell = self._bound(suffix, cell)
            xs = self._reversed_inputs(x, index) if reverse else x
            drop = dropout
            if k and isinstance(dropout, np.random.Generator):   # its own: threads
                drop = np.random.default_rng(dropout.integers(2 ** 63))
            elif k and isinstance(dropout, (int, np.integer)) and not isinstance(dropout, bool):
                drop = dropout + k
            calls.append((cell, xs, self._split_state(state, suffix), drop))
        self._check_states(state, B)
        runs = _run_all([lambda c=c: c[0].forward(c[1], c[2], lengths=lengths, dropout=c[3],
                                                  steps=steps, grad=grad)
                         for c in calls], self.target)
        outputs, finals = {}, {}
        parts: dict[str, list[np.ndarray]] = {}
        for (suffix, reverse, _), run in zip(self.cells, runs):
            for name, y in run.outputs.items():
                if reverse and not _is_final(self.spec, name):
                    y = reverse_in_lengths(y, index)
                parts.setdefault(name, []).append(y)
            for name, s in run.state.items():
                finals[name + suffix] = s
        for name, ys in parts.items():
            outputs[name] = ys[0] if len(ys) == 1 else _joined(ys, _is_scalar(self.spec, name))
        return DirectionalRun(outputs, finals, runs[0].T, runs[0].B,
                              runs=tuple((s, r, run) for (s, r, _), run in
                                         zip(self.cells, runs)), index=index)

    def _refuse_device_arrays(self, *given) -> None:
        """The reversal within lengths runs on the host: on the cuda target a direction
        takes NumPy arrays (each direction's kernels still run on the device)."""
        from .cuda import is_device_array
        for value in given:
            values = value.values() if isinstance(value, Mapping) else [value]
            if any(is_device_array(v) for v in values):
                raise TargetError(f"direction={self.direction!r} reverses sequences on the "
                                  "host: give the cuda target NumPy arrays (each direction's "
                                  "kernels run on the GPU), not device arrays")

    # ------------------------------------------------------------------ backward
    def backward(self, run: DirectionalRun, d_outputs=None, d_state=None,
                 input_grads: bool = True, workspace=None) -> Grads:
        """Cell.backward for each direction: the cotangent of a concatenated output is
        split between them (and reversed for the reverse pass), and their input
        gradients are added, each in time order."""
        from .base import check_workspace
        check_workspace(workspace)             # checked, not used: see forward
        if not isinstance(run, DirectionalRun) or len(run.runs) != len(self.cells):
            raise BindError(f"backward takes the Run that this {self.direction} cell's "
                            "forward returned")
        if self.target == "cuda":              # before the checks: they want NumPy arrays
            self._refuse_device_arrays(d_outputs, d_state)
        d_outputs = known_cotangents(self.spec.name, d_outputs, run.outputs, self.dtype)
        widths = {name: [r.outputs[name].shape[-1] if not _is_scalar(self.spec, name)
                         else 1 for _, _, r in run.runs] for name in run.outputs}
        calls = []
        for k, ((suffix, reverse, cell), (_, _, inner)) in enumerate(zip(self.cells,
                                                                         run.runs)):
            mine = {}
            for name, g in d_outputs.items():
                if len(self.cells) > 1:
                    scalar = _is_scalar(self.spec, name)
                    at = sum(widths[name][:k])
                    g = g[..., k] if scalar else g[..., at:at + widths[name][k]]
                if reverse and not _is_final(self.spec, name):
                    g = reverse_in_lengths(g, run.index)
                mine[name] = np.ascontiguousarray(g)
            states = self._split_state(d_state, suffix)
            calls.append((self._bound(suffix, cell), inner, mine, states))
        grads = _run_all([lambda c=c: c[0].backward(c[1], c[2], c[3], input_grads=input_grads)
                          for c in calls], self.target)
        params, inputs, state = {}, {}, {}
        once = {d.name for d in self.spec.inputs if d.once}   # (B, size): no time axis
        for (suffix, reverse, _), g in zip(self.cells, grads):
            params.update({n + suffix: v for n, v in g.params.items()})
            state.update({n + suffix: v for n, v in g.state.items()})
            for name, v in g.inputs.items():
                if reverse and name not in once:
                    v = reverse_in_lengths(v, run.index)
                inputs[name] = v if name not in inputs else inputs[name] + v
        return Grads(params, inputs, state)


def known_cotangents(cell: str, given, values: Mapping, dtype, what: str = "d_outputs"
                     ) -> dict:
    """The cotangents a backward was given (`d_outputs` of the run's outputs, `d_state`
    of its final states), as a dict, each checked as a plain cell checks its own: a
    NumPy array of the cell's dtype, of the shape of the value it is the cotangent of,
    finite; a BindError names the first that is not, or a name the run has none of.
    None stands for zeros and is left out."""
    noun = {"d_outputs": "output", "d_state": "state"}[what]
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise BindError(f"{what} must be a dict keyed by {noun} name ({', '.join(values)}), "
                        f"got {type(given).__name__}")
    unknown = sorted(set(given) - set(values))
    if unknown:
        raise BindError(f"{cell} has no {noun} {', '.join(unknown)}; its {noun}s are "
                        f"{', '.join(values)}")
    out = {}
    for name, g in given.items():
        if g is None:
            continue
        shape = np.shape(values[name])
        g = checked_array(f"{what}['{name}']", g, shape, f"the run's {noun} {name}", dtype)
        out[name] = g
    return out


def _is_final(spec, name: str) -> bool:
    return any(o.name == name and o.final for o in spec.outputs)


def _is_scalar(spec, name: str) -> bool:
    """Whether output `name` is a scalar a step (or a sequence), which comes back as
    (T, B) (or (B,)) and gains an axis of 2 from two directions. From the declaration,
    not the shape: a `final` vector output is (B, K), which is (T, B) when T == B == K."""
    return any(o.name == name and o.type.rank == 0 for o in spec.outputs)


def _joined(ys: list[np.ndarray], scalar: bool) -> np.ndarray:
    return np.stack(ys, axis=-1) if scalar else np.concatenate(ys, axis=-1)


def _run_all(calls: list, target: str) -> list:
    """Each call's result; a compiled cell's two calls at once, on this thread and a
    second one, each held to one kernel thread (as cells.compiled's row blocks are) and
    splitting its rows among its share of the cores only (blocks.sharing)."""
    if len(calls) == 1 or target != "cpu":
        return [c() for c in calls]
    from ..kernels.blas import kernel_threads, numba_threads, row_block_threads
    from .blocks import _block_pool, sharing
    share = max(1, row_block_threads() // len(calls))   # each direction its cores' share

    def alone(call):
        with numba_threads(1), sharing(share):
            return call()
    with kernel_threads(1), numba_threads(1), sharing(share):
        pending = [_block_pool().submit(alone, c) for c in calls[1:]]
        try:
            first = calls[0]()
        finally:
            rest = [p.result() for p in pending]
    return [first] + rest
