"""Stage 2: AST -> checked cell.

Input: one `ast.Cell` and its `Source`. Output: a `CheckedCell` in which every name
resolves, every state has exactly one next value, nothing depends on itself within a
step, and every expression has a symbolic `Type`. Definitions come out in evaluation
order. Every rejected construct gets its own message at its own place; errors are
collected (a failed expression poisons only what depends on it) and raised together as
one `CheckError`. Unused dims, inputs, params and intermediates are warnings.
"""

from __future__ import annotations

import builtins
import keyword
import math
from dataclasses import replace

from ..core.initialisers import INITIALISERS
from . import ast
from .check_layers import LayerChecks
from .checked import (CheckedCell, Constraint, Decl, Definition, FailedCell, OutputRef,
                      SequenceLayer, UsesFailedCell)
from .checked import Poison as _Poison
from .checked import arguments_text as _arguments
from .checked import article as _a
from .checked import provably as _provably
from .checked import KEYWORDS, declare_dim_hint
from .checked import suggest as _suggest
from .compose import Inlined
from ..core.errors import CheckError, Diagnostic, Source, Span, Warnings, shorten
from ..core.ops import BINARY_OPS, CONSTANT_ARGS, FUNCTIONS, Op, ShapeMismatch, infer
from ..core.shapes import Dim, Type, shape_str

__all__ = ["check", "CheckedCell", "Constraint", "Decl", "Definition", "FailedCell", "OutputRef",
           "KEYWORDS", "INITIALISERS", "RESERVED_CELL_NAMES",
           "RESERVED_DIM_NAMES"]

# A cell becomes a class of that name in generated modules, beside these module names.
RESERVED_CELL_NAMES = frozenset({"math", "sys", "np", "njit", "compiled_cell_class"})
# a cell's name is in its kernels' names and their cache files' (forward_inference_NAME)
MAX_CELL_NAME = 64
# the cell classes' own arguments, beside which their dims are passed by name
RESERVED_DIM_NAMES = frozenset({"self", "cls", "dtype", "seed", "direction"})
_BUILTINS = frozenset(dir(builtins))


class _Checker(LayerChecks):
    def __init__(self, cell: ast.Cell, source: Source, library=None):
        self.cell, self.source = cell, source
        self.library: dict[str, CheckedCell] = dict(library or {})
        self.layers: dict[str, Inlined | None] = {}     # None: declared with an error
        self.layer_spans: dict[str, Span] = {}
        self.sequence_layers: dict[str, SequenceLayer] = {}   # bidirectional, reverse
        self.called: dict[str, tuple[tuple[ast.Expr, ...], Span]] = {}
        self.bindings: dict[str, tuple[Type, Span, str]] = {}   # "l1.x" -> expected
        self.dropout_sites: dict[str, tuple[str, float, Span]] = {}  # value -> mask, rate
        self.dropouts: list[tuple[str, float]] = []
        self.errors: list[Diagnostic] = []
        self.uses_failed_cell = False     # a layer of a FailedCell: no error, but no cell
        self.warnings = Warnings()
        self.dims: dict[str, Span] = {}
        self.inputs: dict[str, Decl] = {}
        self.states: dict[str, Decl] = {}
        self.params: dict[str, Decl] = {}
        self.lets: dict[str, ast.Equation | ast.Output] = {}   # value-defining equations
        self.nexts: dict[str, ast.Equation] = {}
        self.outputs: dict[str, ast.Output] = {}
        self.used: set[str] = set()
        self.used_dims: set[str] = set()
        self.types: dict[str, Type] = {}       # value name or "name'" -> type
        self.broken: dict[str, str] = {}       # declared with an error: name -> kind
        self.constraints: list[Constraint] = []

    # ------------------------------------------------------------------ reporting
    def error(self, message: str, span: Span, hint: str | None = None) -> None:
        self.errors.append(Diagnostic(message, self.source, span, hint))

    def text(self, span: Span) -> str:
        """The source text under a span, for messages that quote an operand."""
        lines = self.source.lines
        if span.line != span.end_line or not (1 <= span.line <= len(lines)):
            return "this expression"
        return shorten(lines[span.line - 1][span.column - 1:span.end_column - 1])

    # ------------------------------------------------------------------ declarations
    def value_names(self) -> set[str]:
        return (set(self.inputs) | set(self.states) | set(self.params) | set(self.lets)
                | set(self.broken))

    def kind_of(self, name: str) -> str | None:
        """'input', 'state', 'param' or 'layer' for a declared name, also one declared with
        an error."""
        for table, kind in ((self.inputs, "input"), (self.states, "state"),
                            (self.params, "param"), (self.layers, "layer")):
            if name in table:
                return kind
        return self.broken.get(name)

    def _claim(self, name: str, span: Span, what: str) -> bool:
        """Reserve a value name; report a duplicate. Returns whether the name was free."""
        kind = self.kind_of(name)
        if kind is None and name in self.lets:
            kind = "output" if isinstance(self.lets[name], ast.Output) else "equation"
        if kind is not None:
            self.error(f"'{name}' is already declared as {_a(kind)}", span,
                       f"each name is declared once; rename this {what}")
            return False
        if name in self.dims:
            dim_span = self.dims[name]
            if (dim_span.line, dim_span.column) < (span.line, span.column):
                message = f"'{name}' is already declared as a dim (a size)"
            else:  # dims are declared first, wherever they stand
                message = f"'{name}' is also declared as a dim (a size), on line {dim_span.line}"
            self.error(message, span,
                       f"rename this {what}: dims and values share one namespace")
            return False
        if name in FUNCTIONS or name == "dropout":
            self.error(f"'{name}' is a built-in function and cannot name {_a(what)}", span)
            return False
        if name in KEYWORDS:
            self.error(f"'{name}' is a keyword of the language and cannot name {_a(what)}",
                       span, "rename it")
            return False
        if "." not in name and "__" in name:
            self.error(f"'{name}': names with a double underscore are reserved", span,
                       "generated code spells a layer's names with '__' (l1.W -> l1__W); "
                       "rename it")
            return False
        return True

    def shape(self, var: ast.Var) -> tuple[Dim, ...] | None:
        ok = True
        for dim in var.shape:
            for name in sorted(dim.names()):
                self.used_dims.add(name)
                if name not in self.dims:
                    hint = _suggest(name, self.dims) or (
                        declare_dim_hint(list(self.dims), name))
                    self.error(f"unknown dim '{name}' in the shape of '{var.name}'",
                               var.shape_span, hint)
                    ok = False
            if ok and _provably(dim - Dim.lit(1)) < 0:
                self.error(f"size {dim} of '{var.name}' is not positive", var.shape_span)
                ok = False
            elif ok and _provably(dim - Dim.lit(1)) == 0:   # e.g. H - 1: checked when bound
                self.constraints.append(Constraint(
                    dim, 1, f"size {dim} of '{var.name}' is not positive", var.shape_span))
        return var.shape if ok else None

    def declare(self, stmt) -> None:
        if isinstance(stmt, ast.DimsDecl):
            for name, span in zip(stmt.names, stmt.name_spans):
                if name in self.dims:
                    self.error(f"dim '{name}' is declared twice", span)
                elif name in RESERVED_DIM_NAMES:
                    self.error(f"'{name}' cannot name a dim: a cell takes its dims as keyword "
                               "arguments beside its own (Cell(dtype=..., seed=..., "
                               "direction=..., H=...)), so this one could never be given",
                               span, "rename the dim")
                    self.dims[name] = span      # known: its uses add no errors
                elif self._claim(name, span, "dim"):
                    self.dims[name] = span
            return
        kind = {ast.InputDecl: "input", ast.StateDecl: "state", ast.ParamDecl: "param"}[
            type(stmt)]
        for var in stmt.vars:
            if not self._claim(var.name, var.span, kind):
                if self.kind_of(var.name) is None:  # it clashed with a dim or a function
                    self.broken[var.name] = kind
                continue
            # a name declared with an error stays known, so that its uses add no errors
            self.broken[var.name] = kind
            shape = self.shape(var)
            if shape is None:
                continue
            if kind in ("input", "state") and len(shape) != 1:
                self.error(f"{kind} '{var.name}' must be a vector, got {shape_str(shape)}",
                           var.shape_span, f"write {var.name}[1] for a single feature"
                           if not shape else "matrices can only be params")
                continue
            if kind == "param" and len(shape) > 2:
                self.error(f"param '{var.name}' has {len(shape)} axes; params are scalars, "
                           f"vectors or matrices", var.shape_span)
                continue
            del self.broken[var.name]
            decl = Decl(var.name, Type(shape, kind != "param"), var.init, var.span,
                        once=getattr(stmt, "once", False),
                        token=getattr(stmt, "token", False))
            {"input": self.inputs, "state": self.states, "param": self.params}[kind][
                var.name] = decl
            self.types[var.name] = decl.type

    def check_inits(self) -> None:
        overflow = set()
        for decl in (*self.params.values(), *self.states.values()):
            init = decl.init
            values = (init.value,) if isinstance(init, ast.ConstInit) else (
                init.args if isinstance(init, ast.NamedInit) else ())
            if not all(math.isfinite(v) for v in values):
                self.error(f"a number in the initialiser of '{decl.name}' is too large for a "
                           "float", init.span)
                overflow.add(decl.name)
        for decl in self.params.values():
            init = decl.init
            if decl.name in overflow:
                continue
            if isinstance(init, ast.NamedInit):
                if init.name not in INITIALISERS:
                    self.error(f"unknown initialiser '{init.name}'", init.span,
                               _suggest(init.name, INITIALISERS) or
                               "known: " + ", ".join(INITIALISERS))
                    continue
                known = INITIALISERS[init.name]
                low, high, matrix = known.min_args, known.max_args, known.matrix
                if not low <= len(init.args) <= high:
                    self.error(f"'{init.name}' takes {_arguments(low, high)}, got "
                               f"{len(init.args)}", init.span)
                elif matrix and decl.type.rank != 2:
                    self.error(f"'{init.name}' initialises matrices, but '{decl.name}' is "
                               f"{decl.type}", init.span, "use zeros, uniform(a, b) or "
                               "normal(mean, std) for vectors")
                elif init.name == "normal" and init.args[1] < 0:
                    self.error("normal(mean, std) needs std >= 0", init.span)
                elif init.name == "uniform" and init.args[0] > init.args[1]:
                    self.error("uniform(low, high) needs low <= high", init.span)
                elif init.name == "uniform" and not math.isfinite(init.args[1] - init.args[0]):
                    self.error("uniform(low, high): high - low is too large for a float",
                               init.span, "keep the range within about +-1e307")
            elif isinstance(init, ast.ParamRefInit):
                self.error("a param's initialiser is a number or a name like glorot, "
                           f"not a reference to '{init.name}'", init.span)
        for decl in self.states.values():
            init = decl.init
            if isinstance(init, (ast.NamedInit, ast.ParamRefInit)):
                self.used.add(init.name)
            param = self.params.get(init.name) if isinstance(init, ast.ParamRefInit) else None
            if isinstance(init, ast.NamedInit) or (
                    param is None and isinstance(init, ast.ParamRefInit)
                    and init.name in INITIALISERS and self.kind_of(init.name) is None):
                self.error(f"state '{decl.name}' starts at the initialiser '{init.name}'; "
                           "a state starts at a number or at a param", init.span,
                           f"declare a param {decl.name}0{decl.type} ~ {init.name} and "
                           f"write state {decl.name}{decl.type} = {decl.name}0")
            elif not isinstance(init, ast.ParamRefInit) or init.name in self.broken:
                continue
            elif param is None and self.kind_of(init.name) is not None:
                self.error(f"state '{decl.name}' starts at '{init.name}', which is "
                           f"{_a(self.kind_of(init.name))}; a state starts at a number or at "
                           "a param", init.span)
            elif param is None:
                self.error(f"unknown param '{init.name}' as the initial value of "
                           f"'{decl.name}'", init.span, _suggest(init.name, self.params))
            elif param.type.shape != decl.type.shape:
                self.error(f"state '{decl.name}' is {decl.type} but its initial value "
                           f"'{init.name}' is {param.type}", init.span)


    # ------------------------------------------------------------------ equations
    def collect(self, stmt) -> None:
        if isinstance(stmt, ast.Equation):
            kind = self.kind_of(stmt.target)
            if stmt.primed:
                if kind == "state" and stmt.target in self.broken:
                    return  # its declaration's error is enough
                if kind is None:
                    self.error(f"'{stmt.target}' is not a declared state", stmt.target_span,
                               f"declare it: state {stmt.target}[...]")
                elif kind != "state":       # an input, a param, a layer, a dim, ...
                    self.error(f"'{stmt.target}' is {_a(kind)}, only states have a next value",
                               stmt.target_span)
                elif stmt.target in self.nexts:
                    self.error(f"state '{stmt.target}' is updated twice", stmt.target_span,
                               "each state gets exactly one next value per step")
                else:
                    self.nexts[stmt.target] = stmt
            else:
                if kind == "state":
                    self.error(f"cannot assign to state '{stmt.target}': it is the previous "
                               "value", stmt.target_span,
                               f"write {stmt.target}' = ... for the next value")
                elif kind is not None:
                    self.error(f"cannot assign to '{stmt.target}': it is {_a(kind)}",
                               stmt.target_span)
                elif self._claim(stmt.target, stmt.target_span, "equation"):
                    self.lets[stmt.target] = stmt
        elif isinstance(stmt, ast.Output):
            if stmt.name in self.outputs:
                self.error(f"output '{stmt.name}' is declared twice", stmt.name_span)
                return
            if stmt.expr is not None and not self._claim(stmt.name, stmt.name_span, "output"):
                return
            self.outputs[stmt.name] = stmt
            if stmt.expr is not None:
                self.lets[stmt.name] = stmt

    def deps(self, expr: ast.Expr) -> set[str]:
        """Names of equation values this expression reads (`h'` as "h'")."""
        found: set[str] = set()

        def walk(e):
            if isinstance(e, ast.Name) and e.name in self.lets:
                found.add(e.name)
            elif isinstance(e, ast.Primed) and e.name in self.nexts:
                found.add(e.name + "'")
            for child in _children(e):
                walk(child)
        walk(expr)
        return found

    def order(self) -> list[str]:
        """Evaluation order of lets and nexts; reports a cycle within a step."""
        import networkx as nx    # here, not at the top: a warm load checks nothing
        graph = nx.DiGraph()
        position: dict[str, int] = {}
        defs = {**{n: s for n, s in self.lets.items()},
                **{n + "'": s for n, s in self.nexts.items()}}
        for i, (key, stmt) in enumerate(defs.items()):
            graph.add_node(key)
            position[key] = (stmt.span.line, stmt.span.column)
        for key, stmt in defs.items():
            for dep in self.deps(stmt.expr):
                graph.add_edge(dep, key)
        for component in list(nx.strongly_connected_components(graph)):
            if len(component) == 1 and not graph.has_edge(*component, *component):
                continue
            cycle = nx.find_cycle(graph.subgraph(component))
            names = [b for _, b in reversed(cycle)]   # each name uses the next one
            first = min(names, key=lambda k: position[k])
            start = names.index(first)
            loop = names[start:] + names[:start] + [first]
            stmt = defs[first]
            span = stmt.target_span if isinstance(stmt, ast.Equation) else stmt.name_span
            uses = ", ".join(f"{a} uses {b}" for a, b in zip(loop, loop[1:]))
            self.error("a cycle within one step: " + uses, span,
                       "within a step, a value cannot depend on itself; use a state's "
                       "previous value (h, not h') to carry it to the next step")
            graph.remove_nodes_from(component)
        return list(nx.lexicographical_topological_sort(graph, key=lambda k: position[k]))

    # ------------------------------------------------------------------ expressions
    def infer(self, expr: ast.Expr) -> Type:
        if isinstance(expr, ast.Number):
            if not math.isfinite(expr.value):
                self.error(f"the number {self.text(expr.span)} is too large for a float",
                           expr.span)
                raise _Poison
            if expr.value == 0 and _nonzero_digits(self.text(expr.span)):
                # 1e-400 reads as 0.0: a term meant to be tiny would vanish silently
                self.error(f"the number {self.text(expr.span)} is too small for a float: "
                           "it would be 0", expr.span, "write 0 if zero is meant")
                raise _Poison
            return Type((), False)
        if isinstance(expr, ast.Name):
            return self.name_type(expr)
        if isinstance(expr, ast.Primed):
            kind = self.kind_of(expr.name)
            if kind == "state" and expr.name in self.broken:
                raise _Poison  # its declaration's error is enough
            if kind != "state":
                what = f"{_a(kind)}, not a state" if kind else "not a state"
                self.error(f"'{expr.name}' is {what}, so {expr.name}' has no meaning",
                           expr.span, "only a state's next value is written with a prime")
                raise _Poison
            if expr.name not in self.nexts:
                raise _Poison  # reported as "never updated"
            key = expr.name + "'"
            if key not in self.types:
                raise _Poison
            return self.types[key]
        if isinstance(expr, ast.BinOp):
            left, right = self.infer_all([expr.left, expr.right])
            return self.apply(BINARY_OPS[expr.op], [left, right], (), expr,
                              operands=[expr.left, expr.right], symbol=expr.op)
        if isinstance(expr, ast.Neg):
            return self.apply(Op.NEG, [self.infer(expr.operand)], (), expr,
                              operands=[expr.operand])
        if isinstance(expr, ast.Pow):
            (base,) = self.infer_all([expr.base], then=lambda: self.exponent(expr))
            return self.apply(Op.POW, [base], (), expr, operands=[expr.base])
        if isinstance(expr, ast.Call):
            return self.call(expr)
        if isinstance(expr, ast.Slice):
            return self.slice(expr)
        raise AssertionError(f"unknown expression node {expr!r}")

    def infer_all(self, exprs, then=None) -> list[Type]:
        """Each operand's type; every operand (and `then`, a further check) is checked
        even after one fails, so that independent errors are all reported."""
        types, failed = [], False
        for e in exprs:
            try:
                types.append(self.infer(e))
            except _Poison:
                failed = True
        try:
            if then is not None:
                then()
        except _Poison:
            failed = True
        if failed:
            raise _Poison
        return types

    def name_type(self, expr: ast.Name) -> Type:
        name = expr.name
        self.used.add(name)
        if name in self.types and name not in self.lets:
            return self.types[name]
        if name in self.lets:
            if name not in self.types:
                raise _Poison
            return self.types[name]
        if name in self.broken:
            raise _Poison  # its declaration's error is enough
        if name in self.layers:
            self.error(f"'{name}' is a layer; call it to advance it one step: {name}(...)",
                       expr.span)
        elif name in self.dims:
            self.error(f"'{name}' is a dim (a size), not a value", expr.span,
                       "dims appear only in shapes and slice bounds; for a learned number "
                       "declare a param, for an average over features use mean(...)")
        elif name in FUNCTIONS:
            self.error(f"'{name}' is a function; call it: {name}(...)", expr.span)
        else:
            hint = _suggest(name, self.value_names())
            if name in self.outputs:
                hint = f"'{name}' names an output of a state; write {name}' for its value"
            self.error(f"unknown name '{name}'", expr.span, hint)
        raise _Poison

    def exponent(self, expr: ast.Pow) -> float:
        return self.constant(expr.exponent, "the exponent of **",
                             "for a variable exponent write exp(b * log(a))")

    def call(self, expr: ast.Call) -> Type:
        if expr.fn not in FUNCTIONS:
            if expr.fn in self.value_names():
                self.error(f"'{expr.fn}' is a value, not a function", expr.fn_span)
            elif expr.fn in self.library:      # a cell, called as if it were a layer
                self.error(f"'{expr.fn}' is a cell, not a function: a cell runs as a layer",
                           expr.fn_span, f"declare one, `layer l = {expr.fn}(...)` with its "
                           "dims bound, and call it: l(x)")
            else:
                self.error(f"unknown function '{expr.fn}'", expr.fn_span,
                           _suggest(expr.fn, FUNCTIONS) or
                           "functions: " + ", ".join(sorted(FUNCTIONS)))
            raise _Poison
        op, arity = FUNCTIONS[expr.fn]
        constants = CONSTANT_ARGS.get(expr.fn, ())
        args = expr.args
        if constants and len(args) == arity + len(constants):
            for arg, what in zip(args[arity:], constants):
                self.constant(arg, f"the {what} of {expr.fn}")
            args = args[:arity]
        elif arity is not None and len(expr.args) != arity:
            also = (f" (or {arity + len(constants)}, with the constants "
                    f"{', '.join(constants)})" if constants else "")
            self.error(f"{expr.fn} takes {arity} argument{'s' if arity > 1 else ''}{also}, "
                       f"got {len(expr.args)}", expr.span)
            raise _Poison
        if arity is None and not expr.args:
            self.error(f"{expr.fn} needs at least one argument", expr.span)
            raise _Poison
        types = self.infer_all(args)
        return self.apply(op, types, (), expr, operands=list(args), symbol=expr.fn)

    def constant(self, expr: ast.Expr, what: str,
                 hint: str = "write the number itself, e.g. hard_sigmoid(x, 0.2, 0.5)"
                 ) -> float:
        """A constant number (possibly negated): an exponent, hard_sigmoid's alpha."""
        e, sign = expr, 1.0
        while isinstance(e, ast.Neg):
            sign, e = -sign, e.operand
        if not isinstance(e, ast.Number):
            self.error(f"{what} must be a constant number", expr.span, hint)
            raise _Poison
        if not math.isfinite(e.value):
            self.error(f"the number {self.text(e.span)} is too large for a float", e.span)
            raise _Poison
        return sign * e.value

    def slice(self, expr: ast.Slice) -> Type:
        base = self.infer(expr.operand)
        if base.rank != 1:
            self.error(f"only vectors can be sliced; this is "
                       f"{'a scalar' if base.rank == 0 else base}", expr.span)
            raise _Poison
        length = base.shape[0]
        start = expr.start if expr.start is not None else Dim.lit(0)
        stop = expr.stop if expr.stop is not None else length
        for bound in (start, stop):
            for name in sorted(bound.names()):
                self.used_dims.add(name)
                if name not in self.dims:
                    self.error(f"unknown dim '{name}' in a slice bound", expr.span,
                               _suggest(name, self.dims) or
                               declare_dim_hint(list(self.dims), name))
                    raise _Poison
        where = f"slice [{start}:{stop}] of a vector of size {length}"
        for size, minimum, message in ((start, 0, f"{where} starts before 0"),
                                       (stop - start, 1, f"{where} is empty"),
                                       (length - stop, 0, f"{where} ends past the end")):
            verdict = _provably(size - Dim.lit(minimum))
            if verdict < 0:
                self.error(message, expr.span)
                raise _Poison
            if verdict == 0:
                self.constraints.append(Constraint(size, minimum, message, expr.span))
        return self.apply(Op.SLICE, [base], (start, stop), expr, operands=[expr.operand])

    def apply(self, op: Op, types: list[Type], attrs: tuple, expr, operands=None,
              symbol=None) -> Type:
        if op != Op.MATVEC and any(t.rank == 2 for t in types):
            i = next(i for i, t in enumerate(types) if t.rank == 2)
            what = self.text(operands[i].span) if operands else "the operand"
            self.error(f"{what} is a matrix {types[i]}; a matrix can only stand left of @",
                       operands[i].span if operands else expr.span,
                       "elementwise operations and functions take vectors and scalars")
            raise _Poison
        if op == Op.CONCAT and any(t.rank == 0 for t in types):
            i = next(i for i, t in enumerate(types) if t.rank == 0)
            self.error(f"concat joins vectors, but {self.text(operands[i].span)} is a scalar",
                       operands[i].span)
            raise _Poison
        try:
            return infer(op, types, attrs)
        except ShapeMismatch as exc:
            detail = str(exc)
            if operands and len(operands) == 2 and op != Op.MATVEC:
                a, b = (self.text(o.span) for o in operands)
                detail = (f"shapes do not match in '{symbol}': {a} is {types[0]} but {b} is "
                          f"{types[1]}")
                if types[0].rank == 2 or types[1].rank == 2:
                    detail += "; a matrix can only stand left of @"
            elif op == Op.MATVEC:
                a, b = (self.text(o.span) for o in operands)
                detail = f"{a} @ {b}: " + detail
            elif symbol:
                detail = f"{symbol}: {detail}"
            self.error(detail, expr.span)
            raise _Poison from None

    # ------------------------------------------------------------------ driver
    def run(self) -> CheckedCell:
        body = self.cell.body
        for stmt in body:
            if isinstance(stmt, ast.DimsDecl):
                self.declare(stmt)
        for stmt in body:
            if isinstance(stmt, (ast.InputDecl, ast.StateDecl, ast.ParamDecl)):
                self.declare(stmt)
        for stmt in body:
            if isinstance(stmt, ast.LayerDecl):
                self.declare_layer(stmt)
        self.check_inits()
        for stmt in body:
            if isinstance(stmt, (ast.Equation, ast.Output)):
                if stmt.expr is not None:
                    stmt = replace(stmt, expr=self.resolve(stmt.expr))
                self.collect(stmt)
        self.add_layer_equations()
        definitions = []
        for key in self.order():
            primed = key.endswith("'")
            name = key[:-1] if primed else key
            stmt = self.nexts[name] if primed else self.lets[name]
            try:
                t = self.infer(stmt.expr)
            except _Poison:
                if name in self.dropout_sites:     # its mask: no second error where read
                    self.broken[self.dropout_sites[name][0]] = "input"
                continue
            if t.rank == 2 and name in self.dropout_sites:
                self.declare_mask(name, t)        # "dropout needs a vector, got [H, H]"
                continue
            if t.rank == 2:       # a bare param name: no operation saw the matrix
                self.error(f"{name} is a matrix {t}; a matrix can only stand left of @",
                           stmt.span, "a value, an output or a next state is a vector or a "
                           "scalar: multiply the matrix by a vector (W @ x)")
                continue
            if primed:
                declared = self.states[name].type
                if t.shape != declared.shape:
                    self.error(f"{name}' is {t} but state '{name}' is {declared}", stmt.span,
                               "the next value must have the state's shape")
                    continue
                t = declared
            elif name in self.dropout_sites and not self.declare_mask(name, t):
                continue
            elif name in self.bindings:
                expected, span, what = self.bindings[name]
                if t.shape != expected.shape:
                    self.error(f"{what} is {expected}, but the argument is {t}", span)
                    continue
                t = expected
            self.types[key] = t
            kind = "next" if primed else ("output" if isinstance(stmt, ast.Output) else "let")
            definitions.append(Definition(kind, name, stmt.expr, t, stmt.span))
        outputs = self.output_refs()
        self.report_unused()
        self.report_spelled_alike()
        if self.errors:
            self.errors.sort(key=lambda d: (d.span.line, d.span.column) if d.span else (0, 0))
            raise CheckError(self.errors)
        if self.uses_failed_cell:
            raise UsesFailedCell(self.cell.name)
        checked = CheckedCell(
            self.cell.name, self.source, tuple(self.dims), tuple(self.inputs.values()),
            tuple(self.states.values()), tuple(self.params.values()), tuple(definitions),
            tuple(outputs), tuple(self.constraints),
            tuple(sorted(self.warnings.items, key=lambda d: (d.span.line, d.span.column))),
            self.cell, tuple((n, lay.cell) for n, lay in self.layers.items() if lay),
            tuple(self.dropouts), tuple(self.sequence_layers.values()))
        if checked.sequence_layers:      # its parts must be computable in turn
            once = [d for d in checked.inputs if d.once]
            if once:      # the parts would take it as a sequence: read at every step
                layer = checked.sequence_layers[0]
                raise CheckError([Diagnostic(
                    f"input once '{once[0].name}' in a cell with a layer run over whole "
                    f"sequences ({layer.direction} layer '{layer.name}'): rnndsl cannot "
                    "run that yet", self.source, once[0].span,
                    "give it as a sequence (input, not input once) that is zero after "
                    "the first step, or feed it to a forward layer of another cell")])
            from .network import split
            split(checked, self.library)
        return checked

    def report_spelled_alike(self) -> None:
        """Generated code spells a layer's dot as a double underscore (`l1.W` ->
        `l1__W`), which no name a user writes has; but a layer whose name ends in `_`
        beside one whose value starts with `_` spell alike (`a_.b`, `a._b` -> `a___b`)."""
        seen: dict[str, str] = {}
        for table in (self.inputs, self.states, self.params):
            for name in table:
                spelled = name.replace(".", "__")
                if spelled in seen and seen[spelled] != name:
                    self.error(f"'{seen[spelled]}' and '{name}' would be one name in "
                               f"generated code ({spelled})", table[name].span,
                               "rename a layer so that its name does not end in '_', or "
                               "the value so that it does not start with '_'")
                seen.setdefault(spelled, name)

    def output_refs(self) -> list[OutputRef]:
        refs = []
        for name, stmt in self.outputs.items():
            if stmt.expr is not None:
                if name in self.types:
                    refs.append(OutputRef(name, ("value", name), self.types[name], stmt.span,
                                          stmt.final))
            elif name in self.broken:
                continue  # its declaration's error is enough
            elif stmt.primed:
                if name not in self.states:
                    self.error(f"'{name}' is not a state, so output {name}' has no meaning",
                               stmt.name_span, _suggest(name, self.states))
                elif name + "'" in self.types:
                    refs.append(OutputRef(name, ("next", name), self.types[name + "'"],
                                          stmt.span, stmt.final))
            else:
                if name in self.states:
                    self.error(f"output '{name}' would be the previous value of state "
                               f"'{name}'", stmt.name_span, f"write output {name}' for the "
                               "value this step computes")
                elif name in self.lets:
                    self.used.add(name)
                    if name in self.types:
                        refs.append(OutputRef(name, ("value", name), self.types[name],
                                              stmt.span, stmt.final))
                elif self.kind_of(name) is not None:
                    self.error(f"output '{name}' is {_a(self.kind_of(name))}; outputs are "
                               "computed values", stmt.name_span)
                else:
                    self.error(f"unknown name '{name}' in output", stmt.name_span,
                               _suggest(name, self.value_names()))
        return refs

    def report_unused(self) -> None:
        for name, decl in self.states.items():
            if name not in self.nexts and "." not in name:   # a layer's: its call failed
                self.error(f"state '{name}' is never updated", decl.span,
                           f"add an equation {name}' = ... (write {name}' = {name} to keep it)")
        if not self.errors:
            for name, decl in self.states.items():
                if name not in self.used:
                    self.warnings.add(f"state '{name}' is never read, so it carries nothing "
                                      "from one step to the next", self.source, decl.span,
                                      "make it an intermediate, or read it in an equation")
        for table, kind in ((self.inputs, "input"), (self.params, "param")):
            for name, decl in table.items():
                if name not in self.used and "." not in name:
                    self.warnings.add(f"{kind} '{name}' is never used", self.source, decl.span)
        for name, span in self.dims.items():
            if name not in self.used_dims:
                self.warnings.add(f"dim '{name}' is never used", self.source, span)
        for name, stmt in self.lets.items():
            if isinstance(stmt, ast.Equation) and name not in self.used and "." not in name:
                self.warnings.add(f"'{name}' is computed but never used", self.source,
                                  stmt.target_span)
        if not self.outputs and not self.states:
            self.error(f"cell '{self.cell.name}' has no states and no outputs", self.cell.span)
        if not self.inputs and not self.failed_inputs():
            self.error(f"cell '{self.cell.name}' has no input", self.cell.name_span,
                       "a cell runs over an input sequence: declare one, e.g. input x[I]")
        name = self.cell.name
        if len(name) > MAX_CELL_NAME:
            self.error(f"a cell name of {len(name)} characters is too long: at most "
                       f"{MAX_CELL_NAME} (it names the cell's kernels, and their files in "
                       "Numba's cache, whose names are at most 255 bytes)",
                       self.cell.name_span, "shorten the name")
        if keyword.iskeyword(name) or name in RESERVED_CELL_NAMES or \
                (name.startswith("__") and name.endswith("__")):
            # a dunder would rebind the module's own (__name__, __doc__, ...)
            self.error(f"'{name}' cannot name a cell: it would not be a usable Python "
                       "class name", self.cell.name_span, "rename the cell")
        elif name in _BUILTINS:
            # the module's kernels call Python's builtins (`for t in range(T)`, max, ...):
            # a class of that name would hide one from them
            self.error(f"'{name}' cannot name a cell: it is one of Python's builtins, which "
                       "the generated module's code uses", self.cell.name_span,
                       "rename the cell")
        if name in ("reverse", "bidirectional"):
            # `layer l = reverse(I = I)` would read the name as the layer's direction
            self.error(f"'{name}' cannot name a cell: a layer of it would read as the "
                       f"direction `layer l = {name} CELL(...)`", self.cell.name_span,
                       "rename the cell")

    def failed_inputs(self) -> bool:
        """Whether some input declaration failed (its error already explains the rest)."""
        return any(isinstance(s, ast.InputDecl) for s in self.cell.body)


def _nonzero_digits(text: str) -> bool:
    """Whether a number's text has a nonzero digit before its exponent (1e-400 has)."""
    return any(c in "123456789" for c in text.lower().split("e")[0])


def _children(expr: ast.Expr):
    if isinstance(expr, ast.BinOp):
        return (expr.left, expr.right)
    if isinstance(expr, ast.Neg):
        return (expr.operand,)
    if isinstance(expr, ast.Pow):
        return (expr.base, expr.exponent)
    if isinstance(expr, ast.Call):
        return expr.args
    if isinstance(expr, ast.Slice):
        return (expr.operand,)
    return ()


def check(cell: ast.Cell, source: Source, library=None) -> CheckedCell:
    """Check one cell; raise `CheckError` listing every problem found. `library` maps
    cell names to the checked cells this one may use as layers."""
    return _Checker(cell, source, library).run()
