"""The Cell API over a network of parts: a cell with layers run over whole sequences.

`layer l1 = bidirectional LSTM(I = V, H = H)` splits a cell into parts that run one
after another, each over the whole sequence (lang/network.py): segments, which are plain
cells compiled like any other, and layer runs, a layer's cell run backwards or both ways
(cells/directions.py). This class calls them in order and hands each the sequences the
earlier ones made; its backward calls them in reverse, handing each part's input
gradients to the part that made those inputs, and adding where a value fed several.

Names, as the spec sees them: the params and states of the segments keep theirs (`W_y`,
`l2.c` for a forward layer l2); a sequence layer's are qualified by the layer, its
reverse direction's with the `_reverse` suffix of cells/directions.py (`l1.W_i`,
`l1.W_i_reverse`, `l1.h_reverse`). A sequence layer's output is both directions side by
side, forward first (as torch's bidirectional layers give them).
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, replace
from typing import Any, Mapping

import numpy as np

from ..core.errors import BindError
from ..core.files import printable
from ..lang import ast
from ..lang.checked import CheckedCell
from ..lang.network import LayerRun, Network, Segment, split
from .base import Cell, Grads, Run, check_param_table
from .directions import REVERSE, known_cotangents


@dataclass
class NetworkRun(Run):
    """A network's forward: its outputs and final states, and each part's own Run."""

    runs: tuple = ()


def network_class(spec: CheckedCell, library: dict[str, CheckedCell], target: str,
                  load_part, spec_files: dict[str, str] | None = None,
                  loops: tuple[str, ...] = ()) -> type:
    """The cell class of a checked cell with sequence layers (or with `loops`, forward
    layers run as loops of their own), on `target`: its parts' classes built now by
    `load_part(text, cell, path)` (cells/load.py: through the kernel cache on a compiled
    target, like any spec)."""
    network = split(spec, library, loops)
    classes = []
    for part in network.parts:
        if isinstance(part, LayerRun):
            # the layer's cell from its own file: the module `rnndsl.load` of that file
            # builds, so the kernel cache holds it once
            sub = part.layer.cell
            classes.append(load_part(sub.source.text, sub.name, str(sub.source.path)))
        else:
            classes.append(load_part(part.text, part.name, f"<{spec.name}>"))
    attrs = dict(spec=_outer_spec(spec, network, classes), target=target,
                 network=network, part_classes=tuple(classes),
                 spec_files=dict(spec_files or {}))
    return type(spec.name, (NetworkCell,), attrs)


def built_network_class(module, name: str) -> type:
    """The class of network cell `name` in a module that `rnndsl build` wrote: made at
    import of the classes of its parts, which the module holds as cells of their own
    (pipeline.build_source), from the spec and the files it uses that the module carries:
    nothing is read from disk and nothing compiled beyond what those classes do."""
    from ..lang.specfile import read_spec
    record = getattr(module, f"{name}_NETWORK")
    spec_file = read_spec(record["spec_path"], record["spec_text"],
                          files=getattr(module, "SPEC_FILES", {}))
    parts = list(record["parts"])      # (the cell split() names, the module's class)
    classes = []

    def load_part(text: str, cell: str, path: str) -> type:
        k = len(classes)
        if k >= len(parts) or parts[k][0] != cell:
            raise _stale(module, name)
        classes.append(getattr(module, parts[k][1]))
        return classes[-1]
    cls = network_class(spec_file.cells[name], {**spec_file.used, **spec_file.cells},
                        module.TARGET, load_part, spec_file.used_files)
    if len(classes) != len(parts):
        raise _stale(module, name)
    cls.__module__ = module.__name__
    cls.__doc__ = (f"The network cell {name} from {printable(record['spec_path'])}, its parts "
                   f"compiled for the {module.TARGET} target. Dims: "
                   f"{', '.join(cls.spec.dims)}.")
    return cls


def _stale(module, name: str) -> Exception:
    """A built module whose parts of a network are not the ones this rnndsl splits it
    into (another version wrote it): only a rebuild makes them agree."""
    from ..pipeline import BuildError
    return BuildError(f"{module.__name__} was built by rnndsl "
                      f"{getattr(module, 'RNNDSL_VERSION', '?')}, whose parts of {name} are "
                      "not the ones this rnndsl runs: rebuild it with `rnndsl build`")


def _outer_spec(spec: CheckedCell, network: Network, classes) -> CheckedCell:
    """The cell as its users see it: its own inputs (not the sequences that pass between
    its parts), and every part's params and states under the network's names."""
    params, states = {}, {}
    for part, cls in zip(network.parts, classes):
        for kind, table in (("params", params), ("states", states)):
            for d in getattr(cls.spec, kind):
                if isinstance(part, Segment):
                    table.setdefault(d.name, d)
                    continue
                for suffix in _suffixes(part):
                    name = f"{part.layer.name}.{d.name}{suffix}"
                    table[name] = replace(d, name=name)
    hidden = {m for m, _ in spec.dropouts} | {i for p in network.parts
                                              if isinstance(p, LayerRun) for i in p.layer.outputs}
    inputs = tuple(d for d in spec.inputs if "." not in d.name and d.name not in hidden)
    return replace(spec, inputs=inputs, states=tuple(states.values()),
                   params=tuple(params.values()), definitions=(), dropouts=())


def _suffixes(part: LayerRun) -> tuple[str, ...]:
    return ("", REVERSE) if part.layer.direction == "bidirectional" else ("",)


class NetworkCell:
    """Cell.forward / Cell.backward over the parts (module docstring)."""

    spec: CheckedCell
    target: str
    network: Network
    part_classes: tuple = ()
    spec_files: dict = {}
    hidden_inputs: dict = {}

    _check_dims = classmethod(Cell._check_dims.__func__)
    _size = Cell._size
    _token_input = Cell._token_input         # ids checked and made one-hot rows,
    _token_form = Cell._token_form           # for a layer run whose cell takes vectors

    def __init__(self, dtype=np.float32, seed: int | None = 0, direction: str = "forward",
                 **dims):
        if direction != "forward":
            raise BindError(f"{self.spec.name} has layers run over whole sequences; give "
                            "each its direction in the spec (layer l = bidirectional ...), "
                            f"not direction={direction!r}")
        self.dtype = Cell._check_dtype.__func__(type(self), dtype)
        self.dims = self._check_dims(dims)
        self.seed = seed
        self.parts: list = []
        self.params: dict[str, np.ndarray] = {}
        for k, (part, cls) in enumerate(zip(self.network.parts, self.part_classes)):
            part_seed = None if seed is None else seed + 1000 * k
            if isinstance(part, Segment):
                cell = cls(dtype=self.dtype, seed=part_seed, **self.dims)
                for name, value in cell.params.items():
                    self.params.setdefault(name, value)
            else:
                sizes = {n: size.evaluate(self.dims) for n, size in part.layer.sizes}
                cell = cls(dtype=self.dtype, seed=part_seed, direction=part.layer.direction,
                           **sizes)
                for inner in [c for _, _, c in getattr(cell, "cells", ())] or [cell]:
                    # its errors name the network's param (l1.U_i_reverse)
                    inner.param_names_shown = (f"{part.layer.name}."
                                               + inner.param_names_shown)
                for name, value in cell.params.items():
                    self.params[f"{part.layer.name}.{name}"] = value
            self.parts.append(cell)
        self._param_shapes = {name: value.shape for name, value in self.params.items()}

    def _check_params(self) -> None:
        """Every param by the network's names (`l1.W_i_reverse`, `W_y`), before a part
        would name it in its own; a misspelt name refused, not ignored."""
        check_param_table(self.spec.name, self.params, self._param_shapes, self.dtype)

    def __repr__(self) -> str:
        dims = ", ".join(f"{k}={v}" for k, v in self.dims.items())
        return f"<{self.spec.name}({dims}), {len(self.parts)} parts, {self.target}>"

    def _final_outputs(self) -> set[str]:
        return {o.name for o in self.spec.outputs if o.final}

    # ------------------------------------------------------------------ names
    def part_cell(self, k: int):
        """Part k's cell, reading this network's params (which may have been replaced);
        the ONNX exporter writes each part from it."""
        part, cell = self.network.parts[k], self.parts[k]
        if isinstance(part, Segment):
            cell.params = {d.name: self.params[d.name] for d in cell.spec.params}
        else:
            cell.params = {n: self.params[f"{part.layer.name}.{n}"] for n in cell.params}
        return cell

    def _part_names(self, k: int, given: Mapping | None) -> dict | None:
        """The entries of a state (or state gradient) dict that belong to part k, under
        its own names."""
        if given is None:
            return None
        part = self.network.parts[k]
        if isinstance(part, Segment):
            mine = {d.name for d in self.part_classes[k].spec.states}
            return {n: v for n, v in given.items() if n in mine}
        prefix = part.layer.name + "."
        return {n[len(prefix):]: v for n, v in given.items() if n.startswith(prefix)}

    def initial_state(self, B: int) -> dict[str, np.ndarray]:
        """Cell.initial_state: every part's, under the network's names."""
        values: dict[str, np.ndarray] = {}
        for k in range(len(self.parts)):
            values.update(self._state_names(k, self.part_cell(k).initial_state(B)))
        return values

    def _state_names(self, k: int, state: Mapping) -> dict:
        part = self.network.parts[k]
        if isinstance(part, Segment):
            return dict(state)
        return {f"{part.layer.name}.{n}": v for n, v in state.items()}

    def _inputs(self, x) -> dict:
        names = [d.name for d in self.spec.inputs]
        if not isinstance(x, Mapping):
            if len(names) != 1:
                raise BindError(f"{self.spec.name} has inputs {', '.join(names)}: pass a "
                                "dict keyed by input name")
            return {("input", names[0]): x}
        unknown = sorted(set(x) - set(names))
        missing = [n for n in names if n not in x]
        if unknown or missing:
            raise BindError(f"{self.spec.name}'s inputs are {', '.join(names)}; "
                            + (f"unknown: {', '.join(unknown)}" if unknown else
                               f"missing: {', '.join(missing)}"))
        return {("input", n): v for n, v in x.items()}

    # ------------------------------------------------------------------ forward
    def forward(self, x, state=None, *, lengths=None, dropout=None, steps=None,
                grad: bool = True, workspace=None) -> NetworkRun:
        """Cell.forward over the parts in turn. A `workspace` is checked and not used:
        each part's calls allocate their own (a workspace serves one cell's calls)."""
        from .base import check_workspace
        check_workspace(workspace)
        if state is not None and not isinstance(state, Mapping):
            raise BindError("state must be a dict keyed by state name, got "
                            f"{type(state).__name__}")
        if state is not None:
            known = {d.name for d in self.spec.states}
            unknown = sorted(set(state) - known)
            if unknown:
                raise BindError(f"{self.spec.name} has no state {', '.join(unknown)}; its "
                                f"states are {', '.join(sorted(known))}")
        self._check_params()
        values: dict[Any, np.ndarray] = self._inputs(x)
        runs, finals = [], {}
        for k, part in enumerate(self.network.parts):
            cell = self.part_cell(k)
            given = {local: self._part_input(cell, local, v, values[v])
                     for local, v in part.inputs}
            run = cell.forward(given, self._part_names(k, state), lengths=lengths,
                               dropout=_dropout_for(dropout, k), steps=steps, grad=grad)
            for local, v in part.outputs:
                values[v] = run.outputs[local]
            finals.update(self._state_names(k, run.state))
            runs.append(run)
        first = runs[0]
        outputs = {name: values[v] for name, v in self.network.outputs}
        return NetworkRun(outputs, finals, first.T, first.B, runs=tuple(runs))

    def _part_input(self, cell, local: str, key, value):
        """The network's input `key` as part `cell`'s input `local` takes it: token ids
        (T, B) of an `input token` become one-hot rows where the part's cell takes plain
        vectors (a bidirectional layer's LSTM reads x[I]), as ids through a forward layer
        are; anything else as it is."""
        if key[0] != "input" or not (isinstance(value, np.ndarray) and value.ndim == 2):
            return value
        outer = next(d for d in self.spec.inputs if d.name == key[1])
        inner = next((d for d in cell.spec.inputs if d.name == local), None)
        if not outer.token or inner is None or inner.token:
            return value
        return self._token_input(outer, value, self._size(outer)[0], None, None)

    # ------------------------------------------------------------------ backward
    def backward(self, run: NetworkRun, d_outputs=None, d_state=None,
                 input_grads: bool = True, workspace=None) -> Grads:
        """Cell.backward over the parts in reverse: each part's input gradients are the
        output gradients of the parts that made those inputs."""
        from .base import check_workspace
        check_workspace(workspace)             # checked, not used: see forward
        if not isinstance(run, NetworkRun) or len(run.runs) != len(self.parts):
            raise BindError(f"backward takes the Run that this {self.spec.name}'s forward "
                            "returned")
        d_outputs = known_cotangents(self.spec.name, d_outputs, run.outputs, self.dtype)
        # by the network's names (l1.h, l2.c_reverse): a misspelt one is refused here,
        # not filtered out part by part
        d_state = known_cotangents(self.spec.name, d_state, run.state, self.dtype, "d_state")
        grads: dict[Any, np.ndarray] = {}

        def add(v, g) -> None:
            g = np.asarray(g)
            grads[v] = g if v not in grads else grads[v] + g
        for name, v in self.network.outputs:
            if name in d_outputs:
                add(v, d_outputs[name])
        params: dict[str, np.ndarray] = {}
        state: dict[str, np.ndarray] = {}
        for k in reversed(range(len(self.parts))):
            part, cell = self.network.parts[k], self.part_cell(k)
            mine = {local: grads[v] for local, v in part.outputs if v in grads}
            cut = any(v[0] != "input" for _, v in part.inputs)
            g = cell.backward(run.runs[k], mine, self._part_names(k, d_state),
                              input_grads=cut or input_grads)
            for local, v in part.inputs:
                if local in g.inputs:
                    add(v, g.inputs[local])
            for n, value in g.params.items():
                full = n if isinstance(part, Segment) else f"{part.layer.name}.{n}"
                params[full] = value if full not in params else params[full] + value
            state.update(self._state_names(k, g.state))
        inputs = {}
        if input_grads:     # a token input has none (its one-hot rows' are no ids')
            inputs = {d.name: grads[("input", d.name)] for d in self.spec.inputs
                      if ("input", d.name) in grads and not d.token}
        return Grads(params, inputs, state)


def _dropout_for(dropout, k: int):
    """Part k's dropout: its own stream from a Generator, seed + k from a seed."""
    if k and isinstance(dropout, np.random.Generator):
        return np.random.default_rng(dropout.integers(2 ** 63))
    if k and isinstance(dropout, (int, np.integer)) and not isinstance(dropout, bool):
        return dropout + k
    return dropout


# ---------------------------------------------------------------------------- layer loops
# A stacked cell runs as one time loop (every layer, each step) or as a loop per layer
# (lang/network.split with `loops`: each layer over the whole sequence in turn, so that
# the next layer's input projection is one GEMM over all T*B rows, as cuDNN runs stacks).
# The cost model, from benchmarks/layer_loops.py on this project's CPU (a 2-core AMD
# EPYC; per-layer time / fused time, forward+BPTT of char_lstm, T=64): at B=32 0.93-1.01,
# at B=8 0.97-1.01; at B=1-4 0.81-0.89 with H=256 and 0.95-1.04 with H=128. One fused
# loop wins or ties where the per-step GEMMs run in the register tiles (B at least MR
# rows); below that they are BLAS calls on a few rows, and hoisting the next layer's
# input projection out of the loop pays, once there are enough steps to hoist.
PER_LAYER_MIN_STEPS = 32
LAYER_LOOPS = ("auto", "fused", "per_layer")


def layer_loops_choice(T: int, B: int) -> str:
    """"per_layer" or "fused" for a call of T steps and B sequences (see above)."""
    from ..kernels.tile_sizes import MR
    return "per_layer" if B < MR and T >= PER_LAYER_MIN_STEPS else "fused"


def layer_loops_reason() -> str:
    from ..kernels.tile_sizes import MR
    return (f"one fused time loop at {MR}+ sequences a call (the per-step GEMMs run in "
            f"the register tiles); below {MR}, and with {PER_LAYER_MIN_STEPS}+ steps, a "
            "loop per layer, each layer's input projection one GEMM over all T*B rows "
            "(benchmarks/layer_loops.py: per layer / fused 0.81-0.89 at B=1-4 and H=256, "
            "0.95-1.04 at H=128, 0.93-1.01 at B=32)")


class LayerLoops:
    """Mixed into a compiled class of a stacked cell (`with_layer_loops`): each call runs
    the fused kernels, or the network of one loop per layer where `layer_loops_choice`
    says so. Both read the same params (one dict); a Run says which made it, and
    `backward` follows it. `layer_loops` forces one ("fused", "per_layer") or lets the
    cost model choose ("auto"); `RNNDSL_LAYER_LOOPS` sets it for a process."""

    layer_loops = "auto"
    loops: tuple[str, ...] = ()
    _loops_class: type | None = None

    def _choice(self, x, steps) -> str:
        forced = _forced()
        way = forced or self.layer_loops
        if way not in LAYER_LOOPS:
            setting = "RNNDSL_LAYER_LOOPS" if forced else "layer_loops"
            raise BindError(f"{setting} must be one of {', '.join(LAYER_LOOPS)}, got "
                            f"{way!r}")
        if way != "auto":
            return way
        first = next(iter(x.values())) if isinstance(x, Mapping) else x
        shape = getattr(first, "shape", ())
        if steps is not None or len(shape) < 2:
            return "fused"
        return layer_loops_choice(shape[0], shape[1])

    def _per_layer(self) -> "NetworkCell":
        """The network cell of one loop per layer that this cell's calls on that plan
        run, made at the first such call. Made once under a lock: two threads making
        their own each (the second replacing the first's) left a run that the cell's
        backward no longer knew ("backward needs the Run that this cell's forward
        returned")."""
        net = self.__dict__.get("_net")
        if net is None:
            with _PER_LAYER_LOCK:
                net = self.__dict__.get("_net")
                if net is None:
                    cls = type(self)
                    if cls._loops_class is None:
                        cls._loops_class = _loops_class_of(cls)
                    net = cls._loops_class(dtype=self.dtype, seed=None, **self.dims)
                    self._net = net
        net.params = self.params          # the one set of params, whatever replaced it
        return net

    def forward(self, x, state=None, *, lengths=None, dropout=None, steps=None,
                grad: bool = True, **more):
        if self._choice(x, steps) == "per_layer":
            return self._per_layer().forward(x, state, lengths=lengths, dropout=dropout,
                                             steps=steps, grad=grad)
        return super().forward(x, state, lengths=lengths, dropout=dropout, steps=steps,
                               grad=grad, **more)

    def backward(self, run, d_outputs=None, d_state=None, input_grads: bool = True,
                 **more):
        if isinstance(run, NetworkRun):
            return self._per_layer().backward(run, d_outputs, d_state, input_grads)
        return super().backward(run, d_outputs, d_state, input_grads, **more)


_PER_LAYER_LOCK = threading.RLock()


def _forced() -> str | None:
    import os
    return os.environ.get("RNNDSL_LAYER_LOOPS") or None


_WITH_LOOPS: dict[type, type] = {}


def with_layer_loops(cls: type, load_text, library: dict[str, CheckedCell] | None = None
                     ) -> type:
    """`cls` (a compiled cpu class), or its subclass that may run a loop per layer where
    the cell's forward layers can each run alone (lang/network.layer_loops). `load_text`
    builds the parts' classes when a call first runs per layer (cells/load.py's). The
    subclass is bound in the module under a name of its own (`Stack_layer_loops`),
    which its __qualname__ says, so that its cells pickle (pickle finds a class by its
    module and name; it found the module's plain class, and refused)."""
    if cls in _WITH_LOOPS:
        return _WITH_LOOPS[cls]
    from ..lang.network import layer_loops
    spec = cls.spec
    stacked = spec.ast is not None and sum(
        1 for s in spec.ast.body if isinstance(s, ast.LayerDecl)) >= 2
    made = cls
    if stacked and getattr(cls, "target", None) == "cpu":
        names = layer_loops(spec, library if library is not None else _library_of(cls))
        if names:
            qualname = f"{cls.__qualname__}_layer_loops"
            made = type(cls.__name__, (LayerLoops, cls),
                        {"loops": names, "_load_text": staticmethod(load_text),
                         "__module__": cls.__module__,
                         "__doc__": cls.__doc__, "__qualname__": qualname})
            module = sys.modules.get(cls.__module__)
            if module is not None:
                setattr(module, qualname, made)
    _WITH_LOOPS[cls] = made
    return made


def _library_of(cls) -> dict[str, CheckedCell]:
    from .compiled import _spec_file_of
    spec_file = _spec_file_of(cls.kernels, cls.meta)
    return {**spec_file.used, **spec_file.cells}


def _loops_class_of(cls) -> type:
    """The per-layer network of a LayerLoops class, its parts built with its passes."""
    from ..schedule.plan import PASSES
    on = set(cls.meta.get("passes", PASSES))
    off = tuple(p for p in PASSES if p not in on and p in _cpu_passes())

    def load_part(text: str, name: str, path: str) -> type:
        return cls._load_text(text, "cpu", name, path=path, no_passes=off)
    return network_class(cls.spec, _library_of(cls), "cpu", load_part, loops=cls.loops)


def _cpu_passes() -> set[str]:
    from ..schedule.plan import PASSES, passes_for
    return set(passes_for(PASSES, "cpu"))
