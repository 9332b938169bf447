"""The one driver: a checked spec file, passes and a target -> a generated module's text.

    checked cell --lower--> step graph --grad--> step + adjoint --make_plan--> plan
                 --emit (target's dialect)--> text

Pure: it reads and writes no files (build/ writes, caches and imports what this returns)
and is the only place, beside the CLI's inspection commands, that strings the stages
together. Reading and checking a spec (lang.specfile.read_spec) comes before it.
"""

from __future__ import annotations

import ast
from collections import Counter

from .codegen.dialect import gathered_tokens
from .codegen.emit import module_footer, module_header
from .core import targets
from .core.errors import CheckError, Diagnostic, RnnError
from .ir.grad import StepGrads, grad_step
from .ir.graph import StepGraph, lower
from .lang.checked import CheckedCell
from .lang.compose import with_lengths
from .lang.specfile import SpecFile
from .schedule.plan import GRAPH_PASSES, PASSES, Plan, make_plan


class BuildError(RnnError):
    """No module can be built as asked (an unknown target or variant), or it could not
    be written (the spec itself was fine)."""


def backend(target: str):
    """(emit, dialect) of a compiled target, from the target registry (core/targets.py):
    a target's emitter is imported only when it is asked for."""
    record = targets.target(target)
    if not record.compiled:
        raise BuildError(f"target '{target}' runs no generated code; compiled targets: "
                         + ", ".join(targets.COMPILED))
    return targets.resolve(record.emitter), targets.resolve(record.dialect)


def differentiate(cell: CheckedCell, passes=PASSES) -> tuple[StepGraph, StepGrads]:
    """A cell's one-step graph, lowered once with the graph-building passes among
    `passes` (cse, simplify: they act as nodes are added), and its adjoint, which
    grad_step adds to the same graph: the planner needs both in one graph."""
    flags = {name: name in passes for name in GRAPH_PASSES}
    step = lower(cell, **flags)
    grads = grad_step(step)
    for d in cell.inputs:
        if d.token:          # given as ids: no gradient to compute
            grads.inputs[d.name] = None
    return step, grads


def plan_cell(cell: CheckedCell, passes=PASSES) -> Plan:
    """lower -> grad -> schedule: the plan that `rnndsl explain` prints and emit reads."""
    step, grads = differentiate(cell, passes)
    return make_plan(step, grads, passes)


def token_nodes(plan: Plan, target: str) -> frozenset[int]:
    """The plan's `input token` nodes that `target`'s kernels take as ids (its dialect
    gathers weight columns by id): for `rnndsl explain`."""
    _, dialect = backend(target)
    return frozenset(plan.step.inputs[name] for name in gathered_tokens(plan.step.cell,
                                                                        dialect))


def build_source(spec_file: SpecFile, passes=PASSES, target: str = "cpu",
                 variant: str | None = None) -> str:
    """The full text of the generated module for every cell defined in a spec file.
    variant="lengths" builds each cell's variable-length form (compose.with_lengths)."""
    emit_cell, dialect = backend(target)
    # a cell with sequence layers is a network of parts, each built as a spec of its
    # own when the cell is loaded (lang/network.py, cells/network.py)
    cells = [c for c in spec_file.cells.values() if not c.sequence_layers]
    if variant == "lengths":
        cells = [with_lengths(c) for c in cells]
    elif variant is not None:
        raise BuildError(f"unknown build variant '{variant}'")
    names = [c.name for c in cells]
    parts = [module_header(str(spec_file.source.path), spec_file.digest, names, target,
                           dialect)]
    for cell in cells:
        plan = plan_cell(cell, passes)
        parts.append(f"\n\n# {'-' * 70} cell {cell.name}\n\n")
        parts.append(emit_cell(plan, cell.source.path, cell.source.text,
                               spec_file.digest).source)
    parts.append("\n\n# The files this spec uses, so that its cells' layers resolve wherever this\n"
                 "# module is imported from.\n"
                 f"SPEC_FILES = {dict(sorted(spec_file.used_files.items()))!r}\n"
                 f"VARIANT = {variant!r}\n")
    parts.append(module_footer(names, dialect))
    source = "".join(parts)
    _check_class_names(source, cells)
    return source


def _module_bindings(source: str) -> Counter:
    """How many times each name is bound at the top level of a module's text."""
    bound: Counter = Counter()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound[node.name] += 1
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            bound.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return bound


def _check_class_names(source: str, cells) -> None:
    """Each cell is a class of its own name in the module, beside the module's imports,
    helpers and every cell's kernels (`forward_LSTM`, `LSTM_META`, ...). A cell named
    like one of those would replace it, or be replaced, and the module would break or
    compute something else: that is the spec's error, reported at the cell's name."""
    bound = _module_bindings(source)
    errors = [Diagnostic(f"'{c.name}' cannot name a cell: the generated module already "
                         f"uses that name for its own code",
                         c.source, c.ast.name_span if c.ast is not None else None,
                         hint="rename the cell")
              for c in cells if bound[c.name] > 1]
    if errors:
        raise CheckError(errors)


def validate(source: str, filename: str) -> None:
    """The generated text must be Python: a failure here is a bug, reported as one."""
    try:
        compile(source, filename, "exec")
    except SyntaxError as exc:  # pragma: no cover - a bug in the emitter
        raise AssertionError(f"rnndsl generated invalid Python in {filename}: {exc}") from exc
