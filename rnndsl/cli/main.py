"""The command line: `rnndsl check | graph | gradcheck | build | explain | train | sample
| info | sweep | export | specs`.

Every user error (a bad spec, a missing file, bad arguments) prints one clear message
and exits with status 2, before any work where it can be known before; never a traceback
(`--debug` shows one). Exit status 1 means the command ran and found a failure (gradcheck
above tolerance); 0 means all is well; 3 is kept for rnndsl's own bugs.
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import subprocess
import sys
import traceback
from pathlib import Path

from ..core.version import __version__
from . import args as cli_args
from .args import UsageError
from ..core.errors import RnnError

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUG = 0, 1, 2, 3
STAGES = ("ast", "check", "ir", "unroll", "grad")
MAX_UNROLL = 1000         # steps `check --dump-after unroll` and `graph --unroll` take
MAX_WARNINGS = 20       # a generated spec may have thousands; the first ones say enough


# ---------------------------------------------------------------------------- check
def _summary(spec) -> str:
    from ..lang.catalog import cell_summary
    return cell_summary(spec)


def _unroll_steps(text: str) -> int:
    """--unroll T: a graph of T copies of the step is printed or drawn, so T is bounded."""
    value = cli_args.at_least(1)(text)
    if value > MAX_UNROLL:
        raise argparse.ArgumentTypeError(f"at most {MAX_UNROLL} steps are unrolled, got "
                                         f"{value}")
    return value


def cmd_check(args) -> int:
    if args.unroll is not None and args.dump_after != "unroll":
        raise UsageError("--unroll sets the steps of --dump-after unroll; give that too")
    from ..pipeline import check_module_names
    from ..ir.grad import grad_step
    from ..ir.graph import lower
    from ..lang.printer import unparse
    from ..lang.specfile import read_spec
    status = EXIT_OK
    for path in args.files:
        try:
            spec_file = read_spec(path)
            # a cell named like the built module's own code (LSTM_META, tanh, ...), which
            # `rnndsl build` and the cpu target refuse
            check_module_names(spec_file)
        except RnnError as exc:
            print(exc.render() if hasattr(exc, "render") else f"error: {exc}", file=sys.stderr)
            status = EXIT_USAGE
            continue
        if not args.quiet:
            for w in spec_file.warnings[:MAX_WARNINGS]:
                print(w.render(), file=sys.stderr)
            if len(spec_file.warnings) > MAX_WARNINGS:
                print(f"{path}: ... and {len(spec_file.warnings) - MAX_WARNINGS} more "
                      "warnings", file=sys.stderr)
        cells = list(spec_file.cells.values())
        if args.cell:
            cells = [spec_file.pick(args.cell)]
        elif not cells and not args.quiet:
            print(f"{path}: ok: no cell of its own; uses {', '.join(spec_file.used)}")
        if args.dump_after == "ast":
            print(unparse(spec_file.module), end="")
        for spec in cells:
            if spec.sequence_layers:
                status = max(status, _check_network(path, spec_file, spec, args))
                continue
            if any(d.token for d in spec.inputs):
                try:      # how a token input is used is known once layers are inlined
                    lower(spec)
                except RnnError as exc:
                    print(exc.render(), file=sys.stderr)
                    status = EXIT_USAGE
                    continue
            if not args.quiet:
                print(f"{path}: ok: {_summary(spec)}")
            if args.dump_after == "check":
                for d in spec.definitions:
                    print(f"  {d.kind:<6} {d.name}{chr(39) if d.kind == 'next' else ''} : "
                          f"{'B x ' if d.type.batched else ''}{d.type}")
            elif args.dump_after in ("ir", "grad", "unroll"):
                step = lower(spec)
                if args.dump_after == "ir":
                    print(step.dump())
                elif args.dump_after == "grad":
                    grads = grad_step(step)
                    print(_step_grad_dump(step, grads))
                else:
                    from ..ir.graph import unroll
                    print(unroll(step, args.unroll or 2).dump())
    return status


def _check_network(path, spec_file, spec, args) -> int:
    """`rnndsl check` of a cell with sequence layers: each part it splits into is read
    and checked as the spec it is built from (lang/network.py)."""
    from ..ir.graph import lower
    from ..lang.network import Segment, split
    from ..lang.specfile import read_spec
    network = split(spec, {**spec_file.used, **spec_file.cells})
    for part in network.parts:
        if isinstance(part, Segment):
            part_file = read_spec(f"<{spec.name}>", text=part.text)
            lower(part_file.pick(part.name))
    n = len(network.parts)
    parts = f"{n} part{'s' if n != 1 else ''}"
    if args.dump_after in ("ir", "grad", "unroll"):
        raise UsageError(f"cell {spec.name} is a network of {parts} "
                         "(layers run over whole sequences), not one step: `rnndsl explain "
                         f"{path}` shows each part and its spec")
    if not args.quiet:
        print(f"{path}: ok: {_summary(spec)}; {parts}")
    if args.dump_after == "check":     # the parts hold the equations, not the network
        print(f"  (cell {spec.name}'s equations are its parts': `rnndsl explain {path}` "
              "shows each part and its spec)")
    return EXIT_OK


def _step_grad_dump(step, grads) -> str:
    titles: dict[int, list[str]] = {}
    for kind, table in (("d_param", grads.params), ("d_input", grads.inputs),
                        ("d_state", grads.states)):
        for name, nid in table.items():
            if nid is not None:
                titles.setdefault(nid, []).append(f"{kind} {name}")
    head = f"# cell {step.cell.name}: the adjoint of one step\n"
    return head + step.graph.dump(grads.roots(), titles)


# ---------------------------------------------------------------------------- graph
def cmd_graph(args) -> int:
    from ..core.files import write_atomically
    from ..ir.dot import to_dot
    from ..ir.grad import grad_step, grad_unrolled
    from ..ir.graph import lower, unroll
    from ..lang.specfile import read_spec
    cli_args.writable_file("-o", args.output)
    spec = read_spec(args.file).pick(args.cell)
    if spec.sequence_layers:
        raise UsageError(f"cell {spec.name} is a network of parts (layers run over whole "
                         "sequences), not one step to draw: `rnndsl explain "
                         f"{args.file}` shows each part and its spec")
    step = lower(spec)
    results: dict[int, list[str]] = {}
    if args.unroll:
        if args.unroll < 1:
            raise UsageError("--unroll takes a number of steps T >= 1")
        u = unroll(step, args.unroll)
        G, roots = u.graph, u.roots()
        title = f"{spec.name} unrolled over T={args.unroll}"
        once = [d.name for d in spec.inputs if d.once]
        if once:     # as the interpreter runs it (cells/modes.py): zeros after the first
            title += f" (input once {', '.join(once)}: given at t=0, zeros after)"
        finals = {o.name for o in spec.outputs if o.final}
        for name, seq in u.outputs.items():
            for t, nid in enumerate(seq):
                # a `final` output is the one step where its sequence ends (lengths)
                results.setdefault(nid, []).append(
                    f"final {name} if the sequence ends at t={t}" if name in finals
                    else f"output {name}[t={t}]")
        for name, nid in u.final_state.items():
            results.setdefault(nid, []).append(f"final {name}")
        forward_count = len(G)
        if args.grad:
            grads = grad_unrolled(u)
            roots = roots + grads.roots()
            for name, nid in grads.params.items():
                if nid is not None:
                    results.setdefault(nid, []).append(f"d_{name}")
            title += ", with BPTT"
    else:
        G, roots = step.graph, step.roots()
        title = f"{spec.name}: one step"
        for name, nid in step.next_state.items():
            results.setdefault(nid, []).append(f"{name}'")
        for name, nid in step.outputs.items():
            results.setdefault(nid, []).append(f"output {name}")
        forward_count = len(G)
        if args.grad:
            grads = grad_step(step)
            roots = roots + grads.roots()
            for kind, table in (("d_", grads.params), ("d_", grads.inputs),
                                ("d_prev_", grads.states)):
                for name, nid in table.items():
                    if nid is not None:
                        results.setdefault(nid, []).append(f"{kind}{name}")
            title += ", and its adjoint"
    text = to_dot(G, roots, title, results, forward_count if args.grad else None)
    if args.output is None:
        sys.stdout.write(text)
        return EXIT_OK
    out = Path(args.output)
    if out.suffix == ".svg":
        dot = shutil.which("dot")
        if dot is None:
            raise UsageError("writing SVG needs Graphviz's `dot`, which is not installed; "
                             "install it (apt-get install graphviz) or write a .dot file")
        done = subprocess.run([dot, "-Tsvg"], input=text.encode(), capture_output=True)
        if done.returncode != 0:
            raise UsageError(f"dot failed: {done.stderr.decode(errors='replace').strip()}")
        write_atomically(out, done.stdout)
    elif out.suffix in (".dot", ".gv"):
        write_atomically(out, text.encode())
    else:
        raise UsageError(f"cannot tell the format of {out}: use a .dot, .gv or .svg name")
    print(f"wrote {out} ({len(G.needed(roots))} nodes)")
    return EXIT_OK


# ---------------------------------------------------------------------------- gradcheck
def cmd_gradcheck(args) -> int:
    from ..cells.load import load
    from ..cells.gradcheck import default_dims, gradcheck, worst as worst_row
    status = EXIT_OK
    classes = []
    for path in args.files:       # every spec read and every dim checked before any work
        Cell = load(path, target=args.target, cell=args.cell)
        given = args.dims or {}
        unknown = [d for d in given if d not in Cell.spec.dims]
        if unknown:
            raise UsageError(f"--dims: {Cell.spec.name} has no dim {', '.join(unknown)} "
                             f"({path}); its dims: {', '.join(Cell.spec.dims)}")
        empty = {"state": "states", "outputs": "outputs"}.get(args.inject)
        if empty and not getattr(Cell.spec, empty):
            # the loss would be zero, every gradient zero, and the check pass on nothing
            raise UsageError(f"--inject {args.inject}: {Cell.spec.name} has no {empty} "
                             f"({path}), so the loss would be zero and nothing checked; "
                             "use --inject both")
        classes.append((path, Cell, dict(default_dims(Cell.spec), **given)))
    for path, Cell, dims in classes:
        shown = ", ".join(f"{k}={v}" for k, v in dims.items())
        print(f"{path}: cell {Cell.spec.name}({shown}), T={args.T}, B={args.B}, float64, "
              f"{args.target} target, cotangents on {args.inject}"
              + (f", dropout masks drawn once (seed {args.seed})" if Cell.spec.dropouts
                 else ""))
        rows = gradcheck(Cell, dims=dims, T=args.T, B=args.B, seed=args.seed,
                         inject=args.inject)
        width = max(len(r.what) for r in rows)
        for r in rows:
            mark = "ok" if r.passes(args.tol) else "FAIL"
            print(f"  {r.what:<{width}}  analytic {r.analytic:+.10e}  numeric "
                  f"{r.numeric:+.10e}  rel.err {r.error:.1e}  {mark}")
        bad = [r for r in rows if not r.passes(args.tol)]
        worst = worst_row(rows).error
        if bad:
            print(f"  FAILED: {len(bad)} of {len(rows)} gradients above {args.tol:g} or not "
                  f"finite (worst {worst:.1e})")
            status = EXIT_FAILED
        else:
            print(f"  passed: {len(rows)} gradients, worst relative error {worst:.1e}")
    return status


# ---------------------------------------------------------------------------- build
def _passes(args) -> tuple[str, ...]:
    from ..schedule.plan import PASSES, TARGET_PASSES
    off = set()
    for name in args.no_pass or []:
        if name not in PASSES:
            raise UsageError(f"unknown pass '{name}'; passes: {', '.join(PASSES)}")
        only = TARGET_PASSES.get(name)
        if only is not None and only != args.target:   # it would change nothing
            raise UsageError(f"--no-pass {name}: the pass acts on the {only} target only, "
                             f"and this is --target {args.target}")
        off.add(name)
    return tuple(p for p in PASSES if p not in off)


def cmd_build(args) -> int:
    from ..pipeline import build_source
    from ..build.cache import compiler_hash
    from ..build.modules import module_file_name, validate, write_module
    from ..lang.specfile import read_spec
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"-o {out_dir}: exists and is not a folder")
    passes = _passes(args)
    built = []
    for path in args.files:          # check and generate everything before writing anything
        spec_file = read_spec(path)
        if not spec_file.cells:
            raise UsageError(f"{path} defines no cell of its own (it uses "
                             f"{', '.join(spec_file.used)}): build the file that defines "
                             "them, or define a cell here")
        source = build_source(spec_file, passes, args.target, networks=True,
                              compiler=compiler_hash())
        validate(source, str(out_dir / module_file_name(spec_file)))
        built.append((path, spec_file, source))
    names = [module_file_name(spec_file) for _, spec_file, _ in built]
    twice = {n for n in names if names.count(n) > 1}
    if twice:
        raise UsageError(f"several specs would write {', '.join(sorted(twice))}; build them "
                         "into different folders")
    for name in names:             # before anything is written
        _check_replaceable(out_dir / name, args.force)
    for (path, spec_file, source), name in zip(built, names):
        target = out_dir / name
        write_module(source, target)
        written = list(spec_file.cells)
        cells = ", ".join(written)
        print(f"{path} -> {target} (cell{'s' if len(written) > 1 else ''} {cells}; "
              f"import with: from {target.stem} import {cells})")
    return EXIT_OK


def _check_replaceable(target: Path, force: bool) -> None:
    """A UsageError unless `target` may be (over)written: absent, or a module rnndsl
    wrote (its first line says so), or any file with --force; never a folder."""
    from ..build.modules import GENERATED_MARK
    if target.is_dir():
        raise UsageError(f"{target} is a folder; the module would be written there: move "
                         "it, or build into another folder (-o)")
    if not target.exists() or force:
        return
    try:
        with open(target, "rb") as f:
            head = f.read(len(GENERATED_MARK))
    except OSError as exc:
        raise UsageError(f"cannot read {target}: {exc.strerror}") from None
    if head != GENERATED_MARK:
        raise UsageError(f"{target} exists and was not written by rnndsl build; replace it "
                         "with --force, or build into another folder (-o)")


def cmd_explain(args) -> int:
    from ..schedule.explain import explain_lines
    from ..pipeline import plan_cell, token_nodes
    from ..schedule.plan import passes_for
    from ..lang.specfile import read_spec
    spec_file = read_spec(args.file)
    spec = spec_file.pick(args.cell)
    if spec.sequence_layers:
        return _explain_network(spec_file, spec, args)
    plan = plan_cell(spec, _passes(args), args.target)
    on = ", ".join(passes_for(plan.passes, args.target)) or "none"
    print(f"# cell {spec.name}: plan for the {args.target} target (passes: {on})")
    for line in explain_lines(plan, target=args.target,
                              tokens=token_nodes(plan, args.target)):
        print(line)
    from ..lang.network import layer_loops
    loops = layer_loops(spec, {**spec_file.used, **spec_file.cells})
    if loops and args.target == "cpu":
        from ..cells.network import layer_loops_reason
        print(f"layer loops ({', '.join(loops)}), chosen at each call: "
              f"{layer_loops_reason()}")
    _explain_machine(plan, args.target)
    return EXIT_OK


def _explain_machine(plan, target: str) -> None:
    """Where this machine's per-step GEMMs change ways (rnndsl.build.machine), for a cpu
    plan with a GEMM in its time loop: the kernels read those marks at each call."""
    from ..schedule.plan import LOOP_STAGES
    if target != "cpu" or not any(plan.matmuls.get(stage) for stage in LOOP_STAGES):
        return
    from ..build.machine import tuning
    from ..kernels.tile_sizes import NR, tile_choice
    mr, why = tile_choice()
    print(f"register tiles of the per-step GEMMs on this machine: {mr} rows x {NR} columns "
          f"({why})")
    for line in tuning().describe():
        print(line)


def _explain_network(spec_file, spec, args) -> int:
    """`rnndsl explain` of a cell with sequence layers: its parts in the order they run,
    each segment's spec and plan."""
    from ..lang.network import Segment, split
    from ..lang.specfile import read_spec
    from ..pipeline import plan_cell, token_nodes
    from ..schedule.explain import explain_lines
    network = split(spec, {**spec_file.used, **spec_file.cells})
    print(f"# cell {spec.name}: a network of {len(network.parts)} parts, run in turn over "
          "whole sequences (layers run backwards or both ways cannot share a time loop)")
    for k, part in enumerate(network.parts, 1):
        def shown(pairs):
            return ", ".join(f"{local} = {v[1]}" if local != v[1] else local
                             for local, v in pairs) or "none"
        if not isinstance(part, Segment):
            lay = part.layer
            print(f"\n## part {k}: layer {lay.name}, {lay.direction} {lay.cell.name} "
                  f"(inputs {shown(part.inputs)}; outputs {shown(part.outputs)})")
            continue
        print(f"\n## part {k}: segment {part.name} (inputs {shown(part.inputs)}; "
              f"outputs {shown(part.outputs)})")
        body = part.text[part.text.index(f"cell {part.name} "):]
        for line in body.rstrip().splitlines():
            print(f"#   {line}")
        plan = plan_cell(read_spec(f"<{spec.name}>", text=part.text).pick(part.name),
                         _passes(args), args.target)
        for line in explain_lines(plan, target=args.target,
                                  tokens=token_nodes(plan, args.target)):
            print(line)
    return EXIT_OK


# ---------------------------------------------------------------------------- specs
def cmd_specs(args) -> int:
    from ..lang.catalog import shipped_specs
    from ..lang.shipped import specs_dir
    listing = shipped_specs()
    if args.paths:
        for spec in listing:
            print(spec.path)
        return EXIT_OK
    print(f"# the specs shipped with rnndsl ({specs_dir()}); use \"NAME.rnn\" finds them "
          "when the using file's folder has no file of that name")
    width = max(len(spec.name) for spec in listing)
    for spec in listing:
        print(f"{spec.name:<{width}}  {spec.summary}")
        if spec.comment:
            print(f"{'':<{width}}  # {spec.comment}")
    return EXIT_OK


# ---------------------------------------------------------------------------- main
NO_PASS_HELP = ("switch an optimisation pass off (repeatable): cse, simplify, hoist, "
                "hoist_outputs, fuse_matmul, fuse_elementwise, defer_grads; for --target "
                "cpu microkernel (the per-step GEMMs in rnndsl's register tiles; off, one "
                "BLAS call a step) and final_at_end (a final output read from the final "
                "states computed once after the loop; off, at every step) and "
                "readout_after (the forward's work that feeds no state, a readout, run "
                "after the loop over all T*B rows; off, at every step); for --target "
                "cuda persistent (each time loop as one cooperative kernel; off, each step "
                "is launched from the host) and hold_weights (the "
                "recurrent weights held in shared memory across the steps, at small "
                "batches where they fit; off, read from global memory at every step)")


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad argument reported in two lines (the message and where the
    options are listed) instead of the whole usage block above it, and options spelt in
    full: argparse's abbreviations (`--batc 3` for `--batch 3`) would slip past the
    checks that ask which options were given (`train --resume` keeps the first run's
    --batch unless it is given), and a later option could change what one means."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)     # the subcommands' parsers too
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n"
                              f"  (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rnndsl",
        description="Write recurrent cells as equations in .rnn files; check them, draw "
                    "their graphs, check their BPTT gradients, and compile them.",
        epilog="examples:\n"
               "  rnndsl check specs/*.rnn                 check specs, show warnings\n"
               "  rnndsl check specs/lstm.rnn --dump-after ir\n"
               "  rnndsl graph specs/gru.rnn -o gru.svg    one step as a picture\n"
               "  rnndsl graph specs/elman.rnn --unroll 3 --grad -o bptt.dot\n"
               "  rnndsl gradcheck specs/lstm.rnn -T 5     gradients vs finite differences\n"
               "  rnndsl build specs/lstm.rnn -o build/    compile: from lstm import LSTM\n"
               "  rnndsl explain specs/lstm.rnn            the compiled loop nest\n"
               "  rnndsl train specs/char_lstm.rnn         a character model, 3 minutes\n"
               "  rnndsl sweep specs/char_lstm.rnn --grid lr=1e-3,3e-3 --workers 2   a grid\n"
               "  rnndsl sample model.npz --prime 'def '   text from the trained model\n"
               "  rnndsl info model.npz                    what a checkpoint holds\n"
               "  rnndsl export specs/lstm.rnn --dims I=8,H=16 -o lstm.onnx   as ONNX\n"
               "  rnndsl specs                             the specs shipped with rnndsl\n"
               "\nexit status: 0 ok, 1 a check failed, 2 bad input (spec, arguments, "
               "files), 3 a bug in rnndsl (please report it), 130 interrupted",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"rnndsl {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show Python tracebacks (for reporting bugs)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("check", help="parse and check spec files",
                       description="Parse and check .rnn files: names, shapes, updates, "
                                   "cycles. Errors show file:line:col and a caret.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--cell", help="check only this cell of a file with several")
    p.add_argument("--dump-after", choices=STAGES, metavar="STAGE",
                   help="print the text form after a stage: ast (the spec as the printer "
                        "writes it), check (typed equations in evaluation order), ir (the "
                        "step graph), unroll (the unrolled graph, see --unroll), grad (the "
                        "adjoint of one step)")
    p.add_argument("--unroll", type=_unroll_steps, metavar="T",
                   help=f"steps for --dump-after unroll (default 2, at most {MAX_UNROLL})")
    p.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    p.set_defaults(run=cmd_check)

    p = sub.add_parser("graph", help="write a cell's computation graph as Graphviz DOT/SVG",
                       description="Write the IR graph of one step (or of T unrolled steps) "
                                   "as Graphviz DOT, or SVG when Graphviz's dot is installed.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--cell", help="the cell to draw, in a file with several")
    p.add_argument("--unroll", type=_unroll_steps, metavar="T",
                   help=f"draw T unrolled steps (T from 1 to {MAX_UNROLL})")
    p.add_argument("--grad", action="store_true",
                   help="add the adjoint: of one step, or BPTT over the unrolled steps")
    p.add_argument("-o", "--output", metavar="OUT",
                   help="out.dot or out.svg (default: DOT on standard output)")
    p.set_defaults(run=cmd_graph)

    p = sub.add_parser("gradcheck", help="check BPTT gradients against finite differences",
                       description="Run a cell in float64 and compare every gradient "
                                   "(params, inputs, initial states) with central finite "
                                   "differences along a random direction: the reference "
                                   "interpreter by default, or the compiled kernels with "
                                   "--target cpu (or cuda). Exit status 1 if any gradient "
                                   "is above --tol.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--cell", help="the cell to check, in a file with several")
    p.add_argument("--target", choices=("interp", "cpu", "cuda"), default="interp",
                   help="what computes the gradients: interp (the NumPy reference; "
                        "default), cpu (the compiled Numba kernels, compiled in float64 "
                        "first: a few seconds), cuda (numba-cuda kernels)")
    p.add_argument("-T", type=cli_args.at_least(1), default=3,
                   help="sequence length (default 3)")
    p.add_argument("-B", type=cli_args.at_least(1), default=2, help="batch size (default 2)")
    p.add_argument("--dims", metavar="H=8,I=4", type=cli_args.dims,
                   help="dim sizes (default: distinct small sizes 3, 4, 5, ...)")
    p.add_argument("--inject", choices=("outputs", "state", "both"), default="both",
                   help="where the random loss puts its cotangents (default both)")
    p.add_argument("--seed", type=cli_args.at_least(0), default=0)
    p.add_argument("--tol", type=cli_args.above(0), default=1e-6,
                   help="largest relative error that passes, above 0 (default 1e-6)")
    p.set_defaults(run=cmd_gradcheck)

    p = sub.add_parser("build", help="compile specs into importable Python modules",
                       description="Generate a module of Numba kernels for each spec, named "
                                   "after the spec file (specs/lstm.rnn -> OUT/lstm.py), "
                                   "holding each cell as a class: `from lstm import LSTM`. "
                                   "A stem that is a Python keyword or a module Python or "
                                   "rnndsl imports (math, numpy, ...) gets a cell_ prefix "
                                   "(cell_math.py). Writes are atomic: a failed build leaves "
                                   "the previous module in place, and an error in any of the "
                                   "specs writes none of them. A module an earlier build "
                                   "wrote is replaced; any other file of that name is kept "
                                   "unless --force.")
    p.add_argument("files", nargs="+", metavar="SPEC")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--force", action="store_true",
                   help="replace files in the output folder that rnndsl did not write")
    p.add_argument("--target", choices=("cpu", "cuda"), default="cpu",
                   help="cpu: Numba @njit kernels (default); cuda: numba-cuda kernels, which "
                        "need the numba-cuda package and a GPU (or NUMBA_ENABLE_CUDASIM=1) "
                        "to run, not to build")
    p.add_argument("--no-pass", action="append", metavar="PASS", help=NO_PASS_HELP)
    p.set_defaults(run=cmd_build)

    p = sub.add_parser("explain", help="print a cell's compiled plan as a loop nest",
                       description="Show what a compiled target does: which work is hoisted "
                                   "out of the time loop, which matmuls share one GEMM, which "
                                   "elementwise ops are fused, and what BPTT defers.")
    p.add_argument("file", metavar="SPEC")
    p.add_argument("--cell", help="the cell to explain, in a file with several")
    p.add_argument("--target", choices=("cpu", "cuda"), default="cpu",
                   help="the compiled target whose plan to show (default cpu); the loop "
                        "nest is the same, the passes that apply differ")
    p.add_argument("--no-pass", action="append", metavar="PASS",
                   help=NO_PASS_HELP + "; see what each one changes in the plan")
    p.set_defaults(run=cmd_explain)

    p = sub.add_parser("specs", help="list the specs shipped with rnndsl",
                       description="List the .rnn specs that ship inside the rnndsl "
                                   "package, with what each cell is. A spec's `use "
                                   "\"lstm.rnn\"` finds a shipped spec when its own folder "
                                   "has no file of that name (docs/language.md, `use`).")
    p.add_argument("--paths", action="store_true",
                   help="print only the files' paths (to copy one: cp $(rnndsl specs "
                        "--paths | grep /lstm.rnn) .)")
    p.set_defaults(run=cmd_specs)

    from . import export, sample, sweep, train
    train.add_parsers(sub)
    sample.add_parsers(sub)
    sweep.add_parsers(sub)
    export.add_parsers(sub)
    # --debug after the command too (`rnndsl gradcheck F --debug`, as the internal
    # error's message suggests it): SUPPRESS keeps the main parser's value otherwise
    for command in sub.choices.values():
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show Python tracebacks (for reporting bugs)")
    return parser


def _printable_anywhere() -> None:
    """Text a model writes (any symbol of any corpus) printed to a terminal or a file
    whose encoding lacks some of it (Windows' cp1252, a latin-1 locale): escaped
    (\\u65e5), not an internal error after the work is done."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):   # not a text stream of io's
            pass


# what each command's options shrink, for the out-of-memory message
_SHRINK = {
    "train": "smaller dims (--dims), fewer rows (--batch) or shorter sequences (--seq)",
    "sweep": "smaller dims (--grid H=...), fewer rows (--batch) or shorter sequences (--seq)",
    "gradcheck": "smaller dims (--dims), fewer rows (-B) or fewer steps (-T)",
    "sample": "fewer samples (-n) or a narrower --beam",
}


def main(argv: list[str] | None = None) -> int:
    _printable_anywhere()
    parser = build_parser()
    given = list(sys.argv[1:] if argv is None else argv)
    bad = next((a for a in given if isinstance(a, str) and "\x00" in a), None)
    if bad is not None:    # no shell can pass one; main(argv) from Python can, and every
        # path and name would then fail deep inside (ValueError: embedded null character)
        print(f"error: argument {bad!r} contains a NUL character", file=sys.stderr)
        return EXIT_USAGE
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:                    # named by the command's parser, which lists its options
            where = f"{parser.prog} {args.command}" if args.command else parser.prog
            parser.exit(EXIT_USAGE, f"{where}: error: unrecognized arguments: "
                                    f"{' '.join(extra)}\n  (see: {where} --help)\n")
    except SystemExit as exc:        # --help, --version (0) or a bad argument (2)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    args.argv = list(sys.argv[1:] if argv is None else argv)   # train's resume command
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.run(args)
    except RnnError as exc:
        print(exc.render() if hasattr(exc, "render") else f"error: {exc}", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:      # `rnndsl explain ... | head`: the reader left; not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except OSError as exc:       # a path the user gave that cannot be read or written
        if exc.errno is None:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror}", file=sys.stderr)
        if not exc.filename and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            # Numba writing a kernel's machine code into the cache names no file
            from ..build.cache import cache_dir
            print(f"  hint: the disk of the output or of rnndsl's kernel cache "
                  f"({cache_dir()}) is full: free space there, or set RNNDSL_CACHE_DIR to "
                  "a folder on another disk", file=sys.stderr)
        if args.debug:
            traceback.print_exc()
        return EXIT_USAGE
    except MemoryError as exc:   # the machine's limit, not a bug: say what to shrink
        if args.debug:
            traceback.print_exc()
        shrink = _SHRINK.get(args.command, "smaller dims (--dims)")
        print(f"error: out of memory{f' ({exc})' if str(exc) else ''}: this machine cannot "
              f"hold what the command needs; use {shrink}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as exc:  # a bug: say so plainly, keep the traceback behind --debug
        if args.debug:
            traceback.print_exc()
        print(f"internal error: {type(exc).__name__}: {exc}\nthis is a bug in rnndsl "
              f"{__version__}; rerun with --debug for the traceback and report it",
              file=sys.stderr)
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())
