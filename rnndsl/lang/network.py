"""A cell with layers run over whole sequences, split into the parts that run in turn.

`layer l1 = bidirectional LSTM(I = V, H = H)` (or `reverse`) cannot share the cell's
time loop: its backward direction reads step T before step 1. So such a cell is a
network of parts, each over the whole sequence, one after another:
  - a *segment*: a plain cell (one time loop, compiled like any other) holding the
    equations, states and forward layers of one level;
  - a *layer run*: a sequence layer, its cell run forward, backwards or both ways
    (cells/directions.py).
The level of an equation is how many sequence layers stand between it and the cell's
inputs. A state's reads and its update are at one level (they form a loop), which is
why a sequence layer's argument may not depend on its own output through a state: that
is reported here, at the layer's call. Values that cross from a part to a later one are
sequences: a segment gives them as outputs, the next takes them as inputs.

Input: a checked cell with `sequence_layers`, and the checked cells it may name (the
library). Output: `Network`: the parts in order, each a spec text that `rnndsl.load_text`
builds like any other (so the kernel cache, checkpoints and targets work unchanged), with
the names that join them. Names in the texts are the spec's own; values that need a new
name get a fresh identifier that the spec does not use.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from . import ast
from .checked import CheckedCell, SequenceLayer
from .printer import unparse
from ..core.errors import CheckError, Diagnostic

Value = tuple[str, str]      # ("input", x) ("let", h) ("state", s) ("next", s)
                             # ("arg", "l1.x") ("out", "l1.h")


@dataclass(frozen=True)
class Segment:
    """A plain cell over the whole sequence: `name` in `text`. inputs/outputs: (its
    name for the value, the value); states: the network's states it holds."""

    name: str
    text: str
    inputs: tuple[tuple[str, Value], ...]
    outputs: tuple[tuple[str, Value], ...]
    states: tuple[str, ...]


@dataclass(frozen=True)
class LayerRun:
    """A sequence layer: its cell (`name` in `text`) run in `layer.direction`. inputs:
    (the cell's input, the value given); outputs: (the cell's output, the value made)."""

    layer: SequenceLayer
    name: str
    text: str
    inputs: tuple[tuple[str, Value], ...]
    outputs: tuple[tuple[str, Value], ...]


@dataclass(frozen=True)
class Network:
    cell: CheckedCell
    parts: tuple[Segment | LayerRun, ...]
    outputs: tuple[tuple[str, Value], ...]       # the cell's outputs: (name, value)


def split(cell: CheckedCell, library: dict[str, CheckedCell],
          loops: tuple[str, ...] = ()) -> Network:
    """The parts of `cell` (module docstring); a CheckError where a sequence layer's
    argument depends on its own output. `loops` names forward layers to run as parts of
    their own too, each over the whole sequence (a loop per layer, as cuDNN runs stacks:
    the layer after one then has its whole input before its loop, and its input
    projection leaves the loop)."""
    return _Splitter(cell, library, loops).network()


def layer_loops(cell: CheckedCell, library: dict[str, CheckedCell]) -> tuple[str, ...]:
    """The forward layers of `cell` that can each run as a loop of its own: all of them,
    or none where that split is not possible (a layer's cell with `input once` or
    dropout, a layer's output read by name elsewhere, its argument reading its own
    output through a state); none for a cell with fewer than two."""
    if cell.ast is None or cell.sequence_layers:
        return ()
    names = tuple(s.name for s in cell.ast.body if isinstance(s, ast.LayerDecl))
    if len(names) < 2:
        return ()
    for s in cell.ast.body:
        if isinstance(s, ast.LayerDecl):
            sub = library.get(s.cell)
            if sub is None or sub.dropouts or sub.sequence_layers or any(
                    d.once for d in sub.inputs):
                return ()
    try:
        network = split(cell, library, names)
    except (CheckError, KeyError):
        return ()
    # each layer a part of its own, or no loops: nested calls (`l2(l1(x))`) are left in
    # one segment, the whole cell again, whose class would then split itself without end
    held = [[n for n in names if f"layer {n} = " in part.text] for part in network.parts]
    return names if all(len(h) <= 1 for h in held) else ()


def renamed_part(part: Segment | LayerRun, name: str) -> str:
    """The part's spec text with its cell called `name`. A built module holds each part
    as a cell of its own beside the spec's cells, and a layer run's cell (`LSTM`) may be
    one of those too, or the part of another network: there each part takes a name of
    its own (pipeline.build_source). The other cells in the text are the ones it uses."""
    from .parse import parse      # Lark: not for a warm load, which imports this module
    module = parse(part.text)
    cells = tuple(replace(c, name=name) if c.name == part.name else c for c in module.cells)
    return unparse(ast.Module(module.uses, cells))


# ---------------------------------------------------------------------------- the walk
class _Splitter:
    def __init__(self, cell: CheckedCell, library: dict[str, CheckedCell],
                 loops: tuple[str, ...] = ()):
        assert cell.ast is not None, "a network is split from its spec"
        self.cell, self.library = cell, library
        body = cell.ast.body
        self.seq = {s.name: s for s in cell.sequence_layers}
        self.forward_layers = {s.name: s for s in body
                               if isinstance(s, ast.LayerDecl) and s.name not in self.seq}
        self.input_vars = {v.name: (s, v) for s in body if isinstance(s, ast.InputDecl)
                           for v in s.vars}
        self.state_vars = {v.name: v for s in body if isinstance(s, ast.StateDecl)
                           for v in s.vars}
        self.param_vars = {v.name: v for s in body if isinstance(s, ast.ParamDecl)
                           for v in s.vars}
        self.types = {d.name: d.type for d in cell.definitions}
        self.types.update({d.name: d.type for d in (*cell.inputs, *cell.states)})
        # units: what computes a value (one AST equation, or a sequence layer's argument)
        self.units: dict[Value, ast.Expr] = {}
        self.stmt_of: dict[Value, object] = {}
        self.outputs_ref: list[ast.Output] = []
        for s in body:
            if isinstance(s, ast.Equation):
                key = ("next" if s.primed else "let", s.target)
                self.units[key], self.stmt_of[key] = s.expr, s
            elif isinstance(s, ast.Output) and s.expr is not None:
                self.units[("let", s.name)], self.stmt_of[("let", s.name)] = s.expr, s
            elif isinstance(s, ast.Output):
                self.outputs_ref.append(s)
        self.calls: dict[str, ast.Call] = {}          # sequence layer -> its call
        for expr in list(self.units.values()):
            self._find_calls(expr)
        for name, call in self.calls.items():
            for arg_name, arg in zip(self.seq[name].inputs, call.args):
                self.units[("arg", arg_name)] = arg
        self.owner: dict[str, Value] = {}               # forward layer -> unit calling it
        self.deps = {key: self._reads(key, expr) for key, expr in self.units.items()}
        self.alias = self._aliases()
        # forward layers run as loops of their own: what their arguments read comes from
        # an earlier part, so the equation that calls one is a level above those reads
        self.cuts: dict[str, set[Value]] = {}
        for name in loops:
            call = self._forward_call(name)
            reads: set[Value] = set()
            for arg in call.args:
                reads |= self._reads(self.owner[name], arg)
            self.cuts[name] = reads

    def _find_calls(self, e) -> None:
        if isinstance(e, ast.Call) and e.fn in self.seq:
            self.calls[e.fn] = e
        for child in _children(e):
            self._find_calls(child)

    def _forward_call(self, layer: str) -> ast.Call:
        """The call of a forward layer, in whatever unit makes it."""
        found = []

        def walk(e):
            if isinstance(e, ast.Call) and e.fn == layer:
                found.append(e)
            for child in _children(e):
                walk(child)
        for expr in self.units.values():
            walk(expr)
        return found[0]

    def _seq_output(self, layer: str, name: str | None) -> Value:
        outs = self.seq[layer].outputs
        return ("out", f"{layer}.{name if name is not None else outs[0]}")

    def _reads(self, key: Value, e) -> set[Value]:
        """The values an expression reads; a forward layer it calls is owned by `key`."""
        found: set[Value] = set()

        def walk(e) -> None:
            if isinstance(e, ast.Name):
                n = e.name
                if n in self.input_vars:
                    found.add(("input", n))
                elif n in self.state_vars:
                    found.add(("state", n))
                elif ("let", n) in self.units:
                    found.add(("let", n))
                return
            if isinstance(e, ast.Primed):
                found.add(("next", e.name))
                return
            if isinstance(e, ast.Call) and e.fn in self.seq:
                found.add(self._seq_output(e.fn, None))
                return
            if isinstance(e, ast.Member):
                op = e.operand
                layer = op.fn if isinstance(op, ast.Call) else getattr(op, "name", None)
                if layer in self.seq:
                    found.add(self._seq_output(layer, e.name))
                    return
                if isinstance(op, ast.Name) and layer in self.forward_layers:
                    found.add(("layer", layer))
                    return
            if isinstance(e, ast.Call) and e.fn in self.forward_layers:
                self.owner[e.fn] = key
            for child in _children(e):
                walk(child)
        walk(e)
        return found

    def _aliases(self) -> dict[Value, Value]:
        """Units that only rename a value (`h1 = l1(x)`, `e = x`): the value itself."""
        alias: dict[Value, Value] = {}
        finals = {s.name for s in self.cell.ast.body if isinstance(s, ast.Output) and s.final}
        changed = True
        while changed:
            changed = False
            for key, e in self.units.items():
                if key in alias or key[0] == "next" or key[1] in finals:
                    continue
                target = None
                if isinstance(e, (ast.Call, ast.Member)) and len(self.deps[key]) == 1:
                    (dep,) = self.deps[key]
                    # `l1(x)` and `l1(x).c` of a sequence layer l1 rename its output; a
                    # step layer called on it (`l2(l1(x))`) reads that output alone too,
                    # but computes: it is no alias
                    called = e if isinstance(e, ast.Call) else e.operand
                    if dep[0] == "out" and (not isinstance(called, ast.Call) or
                                            called.fn in self.seq):
                        target = dep
                elif isinstance(e, ast.Name):
                    (dep,) = self.deps[key] or {None}
                    if dep is not None and dep[0] in ("input", "let"):
                        target = alias.get(dep, dep)
                if target is not None:
                    alias[key] = target
                    changed = True
        return alias

    def resolve(self, v: Value) -> Value:
        return self.alias.get(v, v)

    # ------------------------------------------------------------------ levels
    def levels(self) -> tuple[dict[Value, int], dict[str, int]]:
        lvl = {key: 0 for key in self.units}
        dir_lvl = {name: 1 for name in self.seq}
        limit = len(self.seq) + len(self.cuts)

        def level(v: Value) -> int:
            kind, name = v
            if kind == "input":
                return 0
            if kind == "state":
                return lvl.get(("next", name), 0)
            if kind == "out":
                return dir_lvl[name.split(".")[0]]
            if kind == "layer":
                return lvl[self.owner[name]]
            return lvl[v]

        for _ in range(limit * (len(self.units) + len(self.seq)) + 2):
            changed = False
            for key, deps in self.deps.items():
                new = max([lvl[key]] + [level(d) for d in deps])
                if new != lvl[key]:
                    lvl[key], changed = new, True
            for name, reads in self.cuts.items():
                owner = self.owner[name]
                new = max([lvl[owner]] + [1 + level(self.resolve(d)) for d in reads])
                if new != lvl[owner]:
                    lvl[owner], changed = new, True
            for name, layer in self.seq.items():
                new = 1 + max([0] + [lvl[("arg", a)] for a in layer.inputs
                                     if ("arg", a) in lvl])
                if new != dir_lvl[name]:
                    dir_lvl[name], changed = new, True
            if any(v > limit for v in [*lvl.values(), *dir_lvl.values()]):
                self._cycle(lvl, dir_lvl, limit)
            if not changed:
                return lvl, dir_lvl
        self._cycle(lvl, dir_lvl, limit)     # pragma: no cover - the limit is reached first
        raise AssertionError("unreachable")

    def _cycle(self, lvl, dir_lvl, limit) -> None:
        """Report the sequence layers whose argument depends on their own output."""
        errors = []
        for name, layer in self.seq.items():
            if dir_lvl[name] <= limit:
                continue
            states = sorted(k[1] for k, v in lvl.items() if k[0] == "next" and v > limit)
            through = (f" through state{'s' if len(states) > 1 else ''} "
                       + ", ".join(f"'{s}'" for s in states)) if states else ""
            call = self.calls.get(name)
            errors.append(Diagnostic(
                f"the argument of {layer.direction} layer '{name}' depends on its own "
                f"output{through}", self.cell.source, call.span if call else layer.span,
                "a layer run over whole sequences reads all of its input before the steps "
                "that read its output: its argument may use inputs, params, other layers "
                "and states that do not read it"))
        raise CheckError(errors or [Diagnostic("a cycle through a sequence layer",
                                               self.cell.source, self.cell.ast.span)])

    # ------------------------------------------------------------------ parts
    def network(self) -> Network:
        lvl, dir_lvl = self.levels()
        for u, deps in self.deps.items():
            for d in deps:
                if d[0] == "layer" and lvl[self.owner[d[1]]] < lvl[u]:
                    stmt = self.stmt_of.get(u)
                    raise CheckError([Diagnostic(
                        f"layer '{d[1]}' is read after a sequence layer that its call comes "
                        "before", self.cell.source,
                        stmt.span if stmt is not None else self.cell.ast.span,
                        f"read {d[1]}(...) where it is called, or give its value a name")])
        top = max([0, *lvl.values(), *dir_lvl.values()])
        taken = self._names()
        # who makes each value: (part index, that part's name for it)
        made: dict[Value, tuple[int, str]] = {}
        wanted: dict[Value, set[int]] = {}        # value -> levels of the parts reading it
        parts: list = []
        order: list[tuple[str, object, int]] = []
        for k in range(top + 1):
            order += [("layer", n, k) for n in self.seq if dir_lvl[n] == k]
            if any(lvl[u] == k and u not in self.alias for u in self.units):
                order.append(("segment", None, k))
        # what each part reads, so that earlier parts know what to hand on
        reads_at: list[set[Value]] = []
        for kind, name, k in order:
            if kind == "layer":
                reads_at.append({self.resolve(("arg", a)) if ("arg", a) in self.units
                                 else ("input", a) for a in self.seq[name].inputs})
            else:
                reads_at.append(self._segment_reads(lvl, k))
        for i, values in enumerate(reads_at):
            for v in values:
                wanted.setdefault(v, set()).add(i)
        outs = self._output_values()
        for v in outs.values():
            wanted.setdefault(v, set()).add(len(order))
        for i, (kind, name, k) in enumerate(order):
            if kind == "layer":
                parts.append(self._layer_run(name, made, i))
            else:
                later = {v for v, users in wanted.items() if any(u > i for u in users)}
                parts.append(self._segment(k, lvl, later, made, i, taken))
        return Network(self.cell, tuple(parts),
                       tuple((name, self.resolve(v)) for name, v in outs.items()))

    def _output_values(self) -> dict[str, Value]:
        outs: dict[str, Value] = {}
        for s in self.cell.ast.body:
            if not isinstance(s, ast.Output):
                continue
            if s.final:
                outs[s.name] = ("final", s.name)
            elif s.expr is not None:
                outs[s.name] = self.resolve(("let", s.name))
            elif s.primed:
                outs[s.name] = ("next", s.name)
            else:
                outs[s.name] = self.resolve(("let", s.name))
        return outs

    def _segment_units(self, lvl, k) -> list[Value]:
        return [u for u in self.units if lvl[u] == k and u not in self.alias]

    def _segment_reads(self, lvl, k) -> set[Value]:
        mine = set(self._segment_units(lvl, k))
        own_states = {("state", u[1]) for u in mine if u[0] == "next"}
        reads = set()
        for u in mine:
            for d in self.deps[u]:
                d = self.resolve(d)
                if d in mine or d in own_states or d[0] == "layer":
                    continue
                reads.add(d)
        return reads

    def _names(self) -> set[str]:
        body = self.cell.ast.body
        names = set(self.input_vars) | set(self.state_vars) | set(self.param_vars)
        names |= {s.name for s in body if isinstance(s, ast.LayerDecl)}
        names |= {k[1] for k in self.units if k[0] in ("let", "next")}
        names |= {s.name for s in body if isinstance(s, ast.Output)}
        names |= set(self.library) | set(self.cell.dims) | {self.cell.name}
        return names

    @staticmethod
    def _fresh(base: str, taken: set[str]) -> str:
        base = base.replace(".", "_").strip("_") or "v"
        while "__" in base:
            base = base.replace("__", "_")
        name, k = base, 2
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name

    def _layer_run(self, name: str, made, index: int) -> LayerRun:
        layer = self.seq[name]
        inputs = []
        for a in layer.inputs:
            inputs.append((a.split(".", 1)[1], self.resolve(("arg", a))))
        outputs = []
        for o in layer.outputs:
            v = ("out", f"{name}.{o}")
            made[v] = (index, o)
            outputs.append((o, v))
        text = unparse(ast.Module((), tuple(self._cell_asts([layer.cell.name]))))
        return LayerRun(layer, layer.cell.name, text, tuple(inputs), tuple(outputs))

    def _cell_asts(self, names: list[str]) -> list[ast.Cell]:
        """The ASTs of these library cells and of the cells their layers use, each once,
        a cell after those it uses."""
        done: dict[str, ast.Cell] = {}

        def visit(name: str) -> None:
            if name in done:
                return
            cell = self.library[name]
            for s in cell.ast.body:
                if isinstance(s, ast.LayerDecl):
                    visit(s.cell)
            done[name] = cell.ast
        for n in names:
            visit(n)
        return list(done.values())

    def _segment(self, k: int, lvl, later: set[Value], made, index: int,
                 taken: set[str]) -> Segment:
        units = self._segment_units(lvl, k)
        mine = set(units)
        own = {u[1] for u in units if u[0] == "next"}
        span = self.cell.ast.span
        inputs: list[tuple[str, Value]] = []
        renamed: dict[Value, str] = {}        # read here under a new name
        decls: list = []
        reads = sorted(self._segment_reads(lvl, k))
        for v in reads:
            kind, name = v
            if kind == "input":
                stmt, var = self.input_vars[name]
                decls.append(replace(stmt, vars=(var,)))
                inputs.append((name, v))
                continue
            if kind in ("let", "state"):
                local = name
            else:                      # ("next", s), ("out", "l1.h"), ("arg", ...)
                local = self._fresh(name + ("_next" if kind == "next" else ""), taken)
                renamed[v] = local
            t = self.types[name]     # a next value has its state's type
            decls.append(ast.InputDecl((ast.Var(local, t.shape, None, span, span),), span))
            inputs.append((local, v))
        # states of this level, and the params read here
        states = [self.state_vars[s] for s in self.state_vars if s in own]
        params: dict[str, ast.Var] = {}
        for u in units:
            for n in _names_in(self.units[u]):
                if n in self.param_vars:
                    params[n] = self.param_vars[n]
        for var in states:
            if isinstance(var.init, ast.ParamRefInit):
                params[var.init.name] = self.param_vars[var.init.name]
        body: list = [ast.DimsDecl(self.cell.dims, span)] + decls
        if states:
            body.append(ast.StateDecl(tuple(states), span))
        if params:
            body.append(ast.ParamDecl(tuple(p for n, p in self.param_vars.items()
                                            if n in params), span))
        layers = [self.forward_layers[n] for n in self.forward_layers
                  if self.owner.get(n) in mine]
        body += layers
        outputs: list[tuple[str, Value]] = []
        out_stmts: list = []
        named_outputs = {s.name: s for s in self.cell.ast.body if isinstance(s, ast.Output)}
        for u in units:
            e = self._rename(self.units[u], renamed)
            stmt = self.stmt_of.get(u)
            if u[0] == "arg":
                local = self._fresh(u[1], taken)
                out_stmts.append(ast.Output(local, e, False, span, span))
                outputs.append((local, u))
                made[u] = (index, local)
                continue
            body.append(replace(stmt, expr=e))
            if isinstance(stmt, ast.Output):
                if not stmt.final:
                    outputs.append((stmt.name, u))
                    made[u] = (index, stmt.name)
                else:
                    outputs.append((stmt.name, ("final", stmt.name)))
        for s in self.outputs_ref:
            v = ("next", s.name) if s.primed else ("let", s.name)
            if v in mine:
                out_stmts.append(s)
                outputs.append((s.name, v if not s.final else ("final", s.name)))
                if not s.final:
                    made[v] = (index, s.name)
        for v in sorted(later):
            if v in made or not (v in mine or (v[0] == "state" and v[1] in own)):
                continue
            kind, name = v
            if kind == "let" and name not in named_outputs:
                out_stmts.append(ast.Output(name, None, False, span, span))
                local = name
            else:
                local = self._fresh(name + {"state": "_prev", "next": "_next"}.get(kind, "_out"),
                                    taken)
                value = ast.Primed(name, span) if kind == "next" else ast.Name(name, span)
                out_stmts.append(ast.Output(local, value, False, span, span))
            outputs.append((local, v))
            made[v] = (index, local)
        body += out_stmts
        name = self._fresh(f"{self.cell.name}_part{index + 1}", taken)
        seg = ast.Cell(name, tuple(body), span, span)
        needed = self._cell_asts([s.cell for s in layers])
        text = unparse(ast.Module((), tuple(needed) + (seg,)))
        return Segment(name, text, tuple(inputs), tuple(outputs),
                       tuple(v.name for v in states))

    def _rename(self, e, renamed: dict[Value, str]):
        """e with reads of sequence layers and of next values made elsewhere written as
        the inputs that carry them."""
        def sub(e):
            if isinstance(e, ast.Primed) and ("next", e.name) in renamed:
                return ast.Name(renamed[("next", e.name)], e.span)
            if isinstance(e, ast.Call) and e.fn in self.seq:
                return ast.Name(renamed[self.resolve(self._seq_output(e.fn, None))], e.span)
            if isinstance(e, ast.Member):
                op = e.operand
                layer = op.fn if isinstance(op, ast.Call) else getattr(op, "name", None)
                if layer in self.seq:
                    return ast.Name(renamed[self._seq_output(layer, e.name)], e.span)
            if isinstance(e, ast.Name) and ("let", e.name) in self.alias:
                target = self.alias[("let", e.name)]
                if target[0] in ("input", "let"):
                    return ast.Name(target[1], e.span)
                return ast.Name(renamed[target], e.span)
            if isinstance(e, ast.BinOp):
                return replace(e, left=sub(e.left), right=sub(e.right))
            if isinstance(e, ast.Neg):
                return replace(e, operand=sub(e.operand))
            if isinstance(e, ast.Pow):
                return replace(e, base=sub(e.base), exponent=sub(e.exponent))
            if isinstance(e, ast.Call):
                return replace(e, args=tuple(sub(a) for a in e.args))
            if isinstance(e, ast.Slice):
                return replace(e, operand=sub(e.operand))
            if isinstance(e, ast.Member):
                return replace(e, operand=sub(e.operand))
            return e
        return sub(e)


def _children(e) -> tuple:
    if isinstance(e, ast.BinOp):
        return (e.left, e.right)
    if isinstance(e, (ast.Neg,)):
        return (e.operand,)
    if isinstance(e, ast.Pow):
        return (e.base, e.exponent)
    if isinstance(e, ast.Call):
        return e.args
    if isinstance(e, (ast.Slice, ast.Member)):
        return (e.operand,)
    return ()


def _names_in(e) -> set[str]:
    found = set()

    def walk(e):
        if isinstance(e, ast.Name):
            found.add(e.name)
        for c in _children(e):
            walk(c)
    walk(e)
    return found


__all__ = ["Network", "Segment", "LayerRun", "split", "layer_loops", "renamed_part"]
