"""The one driver: a checked spec file, passes and a target -> a generated module's text.

    checked cell --lower--> step graph --grad--> step + adjoint --make_plan--> plan
                 --emit (target's dialect)--> text

Pure: it reads and writes no files (build/ writes, caches and imports what this returns)
and is the only place, beside the CLI's inspection commands, that strings the stages
together. Reading and checking a spec (lang.specfile.read_spec) comes before it; the
parts of a network cell, spec texts that lang/network.py writes, are checked here.
"""

from __future__ import annotations

import ast
import hashlib
from collections import Counter
from dataclasses import dataclass

from .codegen.dialect import gathered_tokens
from .codegen.emit import module_footer, module_header
from .codegen.module import network_record
from .codegen.printer_py import safe_comment
from .core import targets
from .core.errors import CheckError, Diagnostic, RnnError
from .ir.grad import StepGrads, grad_step
from .ir.graph import StepGraph, lower
from .lang.check import MAX_CELL_NAME
from .lang.checked import CheckedCell
from .lang.compose import with_lengths
from .lang.network import LayerRun, renamed_part, split
from .lang.specfile import SpecFile, read_spec
from .schedule.plan import GRAPH_PASSES, PASSES, TARGET_PASSES, Plan, make_plan


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


def plan_cell(cell: CheckedCell, passes=PASSES, target: str = "cpu") -> Plan:
    """lower -> grad -> schedule: the plan that `rnndsl explain` prints and emit reads,
    for `target` (another target's passes are left out: final_at_end changes the
    schedule, which only the cpu emitter follows)."""
    passes = [p for p in passes if TARGET_PASSES.get(p, target) == target]
    step, grads = differentiate(cell, passes)
    return make_plan(step, grads, passes)


def token_nodes(plan: Plan, target: str) -> frozenset[int]:
    """The plan's `input token` nodes that `target`'s kernels take as ids (its dialect
    gathers weight columns by id): for `rnndsl explain`."""
    _, dialect = backend(target)
    return frozenset(plan.step.inputs[name] for name in gathered_tokens(plan.step.cell,
                                                                        dialect))


def build_source(spec_file: SpecFile, passes=PASSES, target: str = "cpu",
                 variant: str | None = None, networks: bool = False,
                 tile_rows: int | None = None, compiler: str | None = None) -> str:
    """The full text of the generated module for every cell defined in a spec file.
    variant="lengths" builds each cell's variable-length form (compose.with_lengths).

    A cell with sequence layers is a network of parts (lang/network.py). networks=True
    writes it too, as `rnndsl build` does: each part is a cell of the module under a name
    of its own, and the network's class is made of theirs at import
    (cells/network.built_network_class). Without it such a cell is left out: `rnndsl.load`
    builds each part as a spec of its own (cells/load.py), so the build cache's module of
    the spec has no use for them. `tile_rows`: the cpu target's register tile (None: the
    one this machine takes, rnndsl.kernels.tile_sizes). `compiler`: the hash of rnndsl's
    code that built it, written into the module (codegen.module.module_header says why)."""
    emit_cell, dialect = backend(target)
    cells = [c for c in spec_file.cells.values() if not c.sequence_layers]
    nets = [c for c in spec_file.cells.values() if c.sequence_layers] if networks else []
    if variant == "lengths":
        if nets:    # a network passes lengths on to its parts' classes, which build theirs
            raise BuildError("the lengths variant is built for plain cells only")
        cells = [with_lengths(c) for c in cells]
    elif variant is not None:
        raise BuildError(f"unknown build variant '{variant}'")
    taken = set(spec_file.used) | set(spec_file.cells)
    parts = {net.name: network_parts(net, {**spec_file.used, **spec_file.cells}, taken)
             for net in nets}
    names = [c.name for c in spec_file.cells.values() if networks or not c.sequence_layers]
    text = [module_header(str(spec_file.source.path), spec_file.digest, names, target,
                          dialect, {n: [p.name for p in ps] for n, ps in parts.items()},
                          tile_rows, compiler)]
    sections = [(c, "") for c in cells]       # (cell, a comment line under its title)
    sections += [(p.cell, "\n# " + safe_comment(f"part {k} of {n}: {p.what}"))
                 for n, ps in parts.items() for k, p in enumerate(ps, 1)]
    for cell, note in sections:
        plan = plan_cell(cell, passes, target)
        text.append(f"\n\n# {'-' * 70} cell {cell.name}{note}\n\n")
        text.append(emit_cell(plan, cell.source.path, cell.source.text,
                              spec_file.digest).source)
    for net in nets:
        text.append(f"\n\n# {'-' * 70} network {net.name}\n\n")
        text.append(network_record(net.name, str(net.source.path), net.source.text,
                                   [(p.split_name, p.name, p.what) for p in parts[net.name]]))
    text.append("\n\n# The files this spec uses, so that its cells' layers resolve wherever this\n"
                "# module is imported from.\n"
                f"SPEC_FILES = {dict(sorted(spec_file.used_files.items()))!r}\n"
                f"VARIANT = {variant!r}\n")
    text.append(module_footer([c.name for c in cells] + [p.name for ps in parts.values()
                                                         for p in ps],
                              dialect, [net.name for net in nets]))
    source = "".join(text)
    _check_class_names(source, cells + nets, parts)
    return source


@dataclass(frozen=True)
class NetworkPart:
    """A part of a network cell (lang/network.py) as a cell of a built module: `cell`,
    checked from the part's text with its cell called `name`, a name that no other cell
    of the module (the spec's, the files' it uses, other parts') has."""

    name: str
    split_name: str      # the part's cell as lang/network.split names it
    cell: CheckedCell
    what: str            # for the module's comments: which layer or equations, from where


def network_parts(net: CheckedCell, library: dict[str, CheckedCell],
                  taken: set[str]) -> list[NetworkPart]:
    """The parts of `net`, in the order they run, each a checked cell of its own named
    apart from `taken` (to which their names are added). A layer run's cell is named by
    the network, the part's place and the layer (`BiTagger_part1_l1`): the layer's cell
    (`LSTM`) may be a cell of the module too, or a part of another network."""
    made = []
    for k, part in enumerate(split(net, library).parts, 1):
        if isinstance(part, LayerRun):
            name = _fresh(f"{net.name}_part{k}_{part.layer.name}", taken)
            sub = part.layer.cell
            what = (f"layer {part.layer.name}, {part.layer.direction} {sub.name} (cell "
                    f"{sub.name} from {sub.source.path})")
        else:
            name = _fresh(part.name, taken)
            what = f"a segment of {net.name}'s own equations, states and forward layers"
        text = part.text if name == part.name else renamed_part(part, name)
        cell = read_spec(f"<{net.name}>", text=text).cells[name]
        made.append(NetworkPart(name, part.name, cell, what))
    return made


def _fresh(base: str, taken: set[str]) -> str:
    """`base`, or `base_2`, ... : the first not in `taken`, at most MAX_CELL_NAME long."""
    name, k = _short(base), 2
    while name in taken:
        name, k = _short(f"{base}_{k}"), k + 1
    taken.add(name)
    return name


def _short(name: str) -> str:
    """A part's name within the cell name limit (it names the part's kernels and their
    cache files): a network of a long name with a layer of a long name passed `rnndsl
    check` and `rnndsl.load`, and `rnndsl build` refused it, at line 1 of a text the
    user never wrote. Cut, with a hash of the whole name to keep it apart."""
    if len(name) <= MAX_CELL_NAME:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:MAX_CELL_NAME - len(digest) - 1]}_{digest}"


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


class NameClashError(CheckError):
    """A cell (or a network's part) named like something the generated module already
    binds for its own code: `rnndsl check` reports it as `rnndsl build` would."""


def check_module_names(spec_file: SpecFile) -> None:
    """Raise NameClashError where the spec file's cells could not be classes of their own
    names in the module `rnndsl build` writes (the cpu target's); whatever else stops
    that module from being built is left to the checks that place it."""
    try:     # (any tile: the names do not depend on it, and choosing one asks LLVM)
        build_source(spec_file, networks=True, tile_rows=8)
    except NameClashError:
        raise
    except RnnError:
        pass


def _check_class_names(source: str, cells, parts: dict[str, list[NetworkPart]]) -> None:
    """Each cell is a class of its own name in the module, beside the module's imports,
    helpers and every cell's kernels (`forward_LSTM`, `LSTM_META`, ...), and so is each
    part of a network. A cell named like one of those would replace it, or be replaced,
    and the module would break or compute something else: that is the spec's error,
    reported at the cell's name (at the network's, for a part's)."""
    bound = _module_bindings(source)
    errors = [Diagnostic(f"'{c.name}' cannot name a cell: the generated module already "
                         f"uses that name for its own code",
                         c.source, c.ast.name_span if c.ast is not None else None,
                         hint="rename the cell")
              for c in cells if bound[c.name] > 1]
    by_name = {c.name: c for c in cells}
    errors += [Diagnostic(f"'{p.name}' cannot name a part of cell '{net}': the generated "
                          "module already uses that name for its own code",
                          by_name[net].source, by_name[net].ast.name_span,
                          hint="rename the cell")
               for net, ps in parts.items() for p in ps if bound[p.name] > 1]
    errors += _kernel_name_clashes(bound, cells)
    if errors:
        raise NameClashError(errors)


def _kernel_name_clashes(bound: Counter, cells) -> list[Diagnostic]:
    """A cell's kernels are named after it (`forward_A`, `forward_inference_A`,
    `backward_A`), so two cells can ask for one kernel name: `inference_A`'s forward is
    A's forward without gradients. The module would define it twice and the second
    would replace the first. Reported at the longer name (the one that took the other's
    kernel name), naming both cells. `bound`: the module's names (_module_bindings)."""
    errors, blamed = [], set()
    for name in (name for name, count in bound.items() if count > 1):
        involved = [c for c in cells if name.endswith("_" + c.name)]
        if len(involved) < 2:
            continue
        cell = max(involved, key=lambda c: len(c.name))
        if cell.name in blamed:
            continue
        blamed.add(cell.name)
        others = " and ".join(f"'{c.name}'" for c in involved if c is not cell)
        errors.append(Diagnostic(
            f"'{cell.name}' cannot name a cell beside {others}: the generated module "
            f"would define the kernel '{name}' for both", cell.source,
            cell.ast.name_span if cell.ast is not None else None,
            hint="rename one of the cells"))
    return errors


def validate(source: str, filename: str) -> None:
    """The generated text must be Python: a failure here is a bug, reported as one."""
    try:
        compile(source, filename, "exec")
    except SyntaxError as exc:  # pragma: no cover - a bug in the emitter
        raise AssertionError(f"rnndsl generated invalid Python in {filename}: {exc}") from exc
