"""The checker's part for composition: layers (`layer l1 = LSTM(...)`, `l1(x)`) and
dropout sites (`dropout(v, p)`).

A mixin of `check._Checker`: it finds a layer's cell among the cells checked before it,
binds its dims, inlines it (compose.inline) into this cell's declarations and equations,
and rewrites each call into a reference to the layer's output, so that the rest of the
checker, and every stage after it, sees one flat cell.
"""

from __future__ import annotations

from dataclasses import replace

from . import ast
from .checked import REVERSE, Constraint, Decl, FailedCell, SequenceLayer, reverse_name_clash
from .checked import provably as _provably
from .checked import suggest as _suggest
from .checked import declare_dim_hint
from .compose import Inlined, inline, substitute, substitute_type
from ..core.shapes import Dim, Type


class LayerChecks:
    """Layers and dropout sites; see the module's docstring."""

    # ------------------------------------------------------------------ layers
    def declare_layer(self, stmt: ast.LayerDecl) -> None:
        """`layer l1 = LSTM(I = V, H = H)`: find the cell, bind its dims, inline it."""
        if not self._claim(stmt.name, stmt.name_span, "layer"):
            return
        self.layers[stmt.name] = None
        self.layer_spans[stmt.name] = stmt.span
        sub = self.library.get(stmt.cell)
        if isinstance(sub, FailedCell):       # its own errors say what is wrong
            self.uses_failed_cell = True
            return
        if sub is None:
            if stmt.cell == self.cell.name:
                self.error(f"cell '{stmt.cell}' cannot be a layer of itself", stmt.cell_span)
            else:
                self.error(f"unknown cell '{stmt.cell}'", stmt.cell_span,
                           _suggest(stmt.cell, self.library) or
                           "a layer's cell is defined above it in this file, or in a file "
                           "this one uses (use \"other.rnn\")")
            return
        sizes: dict[str, Dim] = {}
        ok = True
        for bind in stmt.dims:
            if bind.name not in sub.dims:
                self.error(f"cell '{sub.name}' has no dim '{bind.name}'", bind.span,
                           _suggest(bind.name, sub.dims) or
                           f"its dims: {', '.join(sub.dims)}")
                ok = False
                continue
            if bind.name in sizes:
                self.error(f"dim '{bind.name}' is bound twice", bind.span)
                ok = False
                continue
            for name in sorted(bind.size.names()):
                self.used_dims.add(name)
                if name not in self.dims:
                    self.error(f"unknown dim '{name}' in layer '{stmt.name}'", bind.span,
                               _suggest(name, self.dims) or
                               declare_dim_hint(list(self.dims), name))
                    ok = False
            if ok and _provably(bind.size - Dim.lit(1)) < 0:
                self.error(f"size {bind.size} of dim '{bind.name}' is not positive", bind.span)
                ok = False
            elif ok and _provably(bind.size - Dim.lit(1)) == 0:
                self.constraints.append(Constraint(
                    bind.size, 1, f"size {bind.size} of dim '{bind.name}' of layer "
                    f"'{stmt.name}' is not positive", bind.span))
            sizes[bind.name] = bind.size
        missing = [d for d in sub.dims if d not in sizes]
        if missing and ok:
            given = ", ".join(f"{b.name} = ..." for b in stmt.dims)
            self.error(f"layer '{stmt.name}' leaves dim{'s' if len(missing) > 1 else ''} "
                       f"{', '.join(missing)} of cell '{sub.name}' unbound", stmt.span,
                       f"bind every dim: {sub.name}(" + ", ".join(
                           f"{d} = ..." for d in sub.dims) + ")" + (
                           f"; given {given}" if given else ""))
            ok = False
        if not ok:
            return
        if sub.sequence_layers:
            self.error(f"cell '{sub.name}' cannot be a layer: it runs layer "
                       f"'{sub.sequence_layers[0].name}' over whole sequences, so it is not "
                       "one step", stmt.cell_span, "declare its layers in this cell instead")
            return
        if stmt.direction != "forward":
            self.declare_sequence_layer(stmt, sub, sizes)
            return
        # a step layer is called at every step with that step's argument, and its
        # outputs are read at every step: what its cell says of whole sequences
        # (`input once`, `final`) would silently mean something else here
        once = next((d.name for d in sub.inputs if d.once), None)
        final = next((o.name for o in sub.outputs if o.final), None)
        if once is not None or final is not None:
            what = (f"its input '{once}' is given once a sequence, and a layer is called at "
                    "every step with that step's argument" if once is not None else
                    f"its output '{final}' is final, one value a sequence, and a layer's "
                    "outputs are read at every step")
            self.error(f"cell '{sub.name}' cannot be a layer: {what}", stmt.cell_span,
                       "write its equations in this cell, or declare a cell for the layer "
                       "without `once` and `final`")
            return
        layer = inline(sub, stmt.name, sizes, stmt.span)
        for var, kind, table in [(v, "param", self.params) for v in layer.params] + \
                                [(v, "state", self.states) for v in layer.states]:
            decl = Decl(var.name, Type(var.shape, kind != "param"), var.init, var.span)
            table[var.name] = decl
            self.types[var.name] = decl.type
            self.used.add(var.name)
        for name, t, rate in layer.masks:
            decl = Decl(name, t, None, stmt.span)
            self.inputs[name] = decl
            self.types[name] = t
            self.used.add(name)
            self.dropouts.append((name, rate))
        for size, minimum, message in layer.constraints:
            self.constraints.append(Constraint(size, minimum, message, stmt.span))
        self.layers[stmt.name] = layer

    def declare_sequence_layer(self, stmt: ast.LayerDecl, sub, sizes: dict) -> None:
        """`layer l1 = bidirectional LSTM(...)` (or `reverse`): the layer runs over whole
        sequences before the steps that read it (lang/network.py splits the cell there),
        so it is not inlined. To this cell, each of its outputs is an input sequence
        (`l1.h`, both directions side by side, forward first), and its argument a value
        to compute (`l1.x`); its params and states stay the layer's own."""
        problem = next((f"its input '{d.name}' is given once a sequence" for d in sub.inputs
                        if d.once), None)
        if problem is None and sub.dropouts:
            problem = "it has dropout sites"
        hint = "a layer run over whole sequences takes per-step inputs"
        clash = reverse_name_clash(sub) if stmt.direction == "bidirectional" else None
        if problem is None and clash is not None:
            kind, name = clash
            problem = (f"its {kind} {name}{REVERSE} would share its name with the reverse "
                       f"direction's copy of {kind} {name}")
            hint = f"rename {name}{REVERSE} in cell '{sub.name}'"
        if problem is not None:
            self.error(f"cell '{sub.name}' cannot be a {stmt.direction} layer: {problem}",
                       stmt.cell_span, hint)
            return
        both = stmt.direction == "bidirectional"
        outputs: dict[str, ast.Expr] = {}
        output_types: dict[str, Type] = {}
        for o in sub.outputs:
            if o.final:
                continue        # one value a sequence: not an input sequence of this cell
            t = substitute_type(o.type, sizes)
            if both:
                t = Type(((t.shape[0].scaled(2),) if t.shape else (Dim.lit(2),)), True)
            name = f"{stmt.name}.{o.name}"
            decl = Decl(name, t, None, stmt.span)
            self.inputs[name] = decl
            self.types[name] = t
            self.used.add(name)
            outputs[o.name] = ast.Name(name, stmt.span)
            output_types[o.name] = t
        bindings = tuple((f"{stmt.name}.{d.name}", substitute_type(d.type, sizes))
                         for d in sub.inputs)
        for size, minimum, message in (
                (substitute(c.size, sizes), c.minimum,
                 f"in layer '{stmt.name}' ({sub.name}): {c.message}") for c in sub.constraints):
            self.constraints.append(Constraint(size, minimum, message, stmt.span))
        self.layers[stmt.name] = Inlined(stmt.name, sub.name, (), (), bindings, (), (),
                                         outputs, output_types, ())
        self.sequence_layers[stmt.name] = SequenceLayer(
            stmt.name, sub, stmt.direction, tuple(sizes.items()), stmt.span,
            tuple(n for n, _ in bindings), tuple(outputs))

    def resolve(self, e: ast.Expr) -> ast.Expr:
        """The expression with each layer call `l1(x)` (and `l1(x).y`, `l1.y`) replaced by
        the layer's output; the call's arguments are recorded as the layer's inputs."""
        if isinstance(e, ast.Member):
            layer_name = (e.operand.fn if isinstance(e.operand, ast.Call) else
                          e.operand.name if isinstance(e.operand, ast.Name) else None)
            if layer_name not in self.layers:
                self.error("only a layer's outputs are reached with '.'", e.span,
                           "write l1(x).y or l1.y for the output y of layer l1")
                return self.poisoned(e)
            if isinstance(e.operand, ast.Call):
                self.call_layer(e.operand)
            layer = self.layers[layer_name]
            if layer is None:
                return self.poisoned(e)
            if e.name not in layer.outputs:
                self.error(f"layer '{layer_name}' ({layer.cell}) has no output '{e.name}'",
                           e.span, _suggest(e.name, layer.outputs) or
                           f"its outputs: {', '.join(layer.outputs) or 'none'}")
                return self.poisoned(e)
            return replace(layer.outputs[e.name], span=e.span)
        if isinstance(e, ast.Call) and e.fn == "dropout" and e.fn not in self.layers:
            return self.dropout(e)
        if isinstance(e, ast.Call) and e.fn in self.layers:
            self.call_layer(e)
            layer = self.layers[e.fn]
            if layer is None:
                return self.poisoned(e)
            if len(layer.outputs) != 1:
                names = ", ".join(layer.outputs)
                self.error(f"layer '{e.fn}' ({layer.cell}) has "
                           f"{'no outputs' if not names else 'outputs ' + names}", e.span,
                           f"pick one: {e.fn}(...).{next(iter(layer.outputs))}" if names else
                           "give the cell an output to read")
                return self.poisoned(e)
            return replace(next(iter(layer.outputs.values())), span=e.span)
        if isinstance(e, ast.BinOp):
            return replace(e, left=self.resolve(e.left), right=self.resolve(e.right))
        if isinstance(e, ast.Neg):
            return replace(e, operand=self.resolve(e.operand))
        if isinstance(e, ast.Pow):
            return replace(e, base=self.resolve(e.base))
        if isinstance(e, ast.Call):
            return replace(e, args=tuple(self.resolve(a) for a in e.args))
        if isinstance(e, ast.Slice):
            return replace(e, operand=self.resolve(e.operand))
        return e

    def dropout(self, call: ast.Call) -> ast.Expr:
        """`dropout(v, p)`: v times a mask input the runtime fills, with entries 0 or
        1/(1-p) while training (inverted dropout: Srivastava et al. 2014) and 1 otherwise.
        The mask is an input of the cell, so BPTT through it is exact."""
        if len(call.args) != 2:
            self.error(f"dropout takes 2 arguments (a vector and a rate), got "
                       f"{len(call.args)}", call.span, "write dropout(h, 0.2)")
            return self.poisoned(call)
        value, rate = self.resolve(call.args[0]), call.args[1]
        if not isinstance(rate, ast.Number) or not 0.0 <= rate.value < 1.0:
            self.error("the rate of dropout must be a number in [0, 1)", rate.span,
                       "the fraction of units dropped while training, e.g. 0.2")
            return self.poisoned(call)
        k = len(self.dropout_sites) + 1
        mask, site = f"dropout.{k}", f"dropout.{k}.x"
        self.dropout_sites[site] = (mask, rate.value, call.span)
        self.lets[site] = ast.Equation(site, False, value, call.span, call.span)
        return ast.BinOp("*", ast.Name(site, call.span), ast.Name(mask, call.span), call.span)

    def declare_mask(self, site: str, t: Type) -> bool:
        """The dropout mask of `site` is an input of the value's shape."""
        mask, rate, span = self.dropout_sites[site]
        if t.rank != 1:
            got = "a scalar" if t.rank == 0 else f"a matrix {t}" if t.rank == 2 else t
            self.error(f"dropout needs a vector, got {got}", span)
            self.broken[mask] = "input"
            return False
        decl = Decl(mask, Type(t.shape, True), None, span)
        self.inputs[mask] = decl
        self.types[mask] = decl.type
        self.used.add(mask)
        self.dropouts.append((mask, rate))
        return True

    def call_layer(self, call: ast.Call) -> None:
        layer = self.layers[call.fn]
        args = tuple(self.resolve(a) for a in call.args)
        if layer is None:
            return
        if call.fn in self.called:
            line = self.called[call.fn][1].line
            self.error(f"layer '{call.fn}' is called twice (first on line {line})", call.span,
                       "a layer advances its states once a step; declare a second layer "
                       "for a second instance")
            return
        if len(args) != len(layer.bindings):
            wanted = ", ".join(f"{n.split('.')[-1]}{t}" for n, t in layer.bindings)
            self.error(f"layer '{call.fn}' ({layer.cell}) takes {len(layer.bindings)} "
                       f"input{'s' if len(layer.bindings) != 1 else ''} ({wanted}), got "
                       f"{len(args)}", call.span,
                       "arguments follow the order of the cell's input declarations")
            self.called[call.fn] = ((), call.span)
            return
        self.called[call.fn] = (args, call.span)

    def poisoned(self, e: ast.Expr) -> ast.Expr:
        """A stand-in for an expression whose error is reported: its uses add none."""
        self.broken["<error>"] = "equation"
        return ast.Name("<error>", e.span)

    def add_layer_equations(self) -> None:
        """Each called layer's input bindings and equations join this cell's."""
        for name, layer in self.layers.items():
            if layer is None:
                continue
            if name not in self.called:
                self.error(f"layer '{name}' is never called", self.layer_spans[name],
                           f"call it in an equation, e.g. y = {name}(x)")
                continue
            args, span = self.called[name]
            if len(args) != len(layer.bindings):
                continue
            for (key, expected), arg in zip(layer.bindings, args):
                self.lets[key] = ast.Equation(key, False, arg, arg.span, arg.span)
                self.bindings[key] = (expected, arg.span, f"input '{key.split('.')[-1]}' of "
                                      f"layer '{name}' ({layer.cell})")
            for eq in layer.equations:
                (self.nexts if eq.primed else self.lets)[eq.target] = eq
