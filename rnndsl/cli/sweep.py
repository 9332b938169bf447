"""`rnndsl sweep`: the points of a grid of settings, each one `rnndsl train`, compared.

spec + `--grid NAME=V1,V2,...` (repeatable; the points are the cartesian product) + any
`train` option as a setting fixed for every point -> one checkpoint a point under `--out
DIR` (named from the point: `DIR/lr=0.001,H=128.npz`, with its `.best.npz` and the text
its training printed in `.log`), a line as each point finishes (the points done, the best
so far), a closing table of validation bits/char, `DIR/results.csv` and with `--plot` a
picture. A point is exactly `rnndsl train` with its settings: `run_training` of
cli/train.py, called with a copy of the parsed arguments.

Where the points run is rnndsl.distributed's business: in this process one after
another (Dask is not imported), on a LocalCluster of `--workers N` processes sized to
the cores, or on the cluster at `--scheduler ADDR` (whose workers must see the spec,
the corpus and DIR at the same paths: a shared filesystem).

A grid name is looked up first among the spec's dims (but the vocabulary's, which the
corpus sets), then among train's options, by their long name with `-` or `_` (`lr`,
`lr-schedule`, `batch`); a name that is both is refused as ambiguous. Every name, every
value (by the option's own type and range), the spec, the corpus, each point's
settings and the fate of DIR are checked before the first point starts.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import math
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import RnnError, SpecError
from . import args as cli_args
from .figures import save_figure
from .args import UsageError
from .train import TrainError, _clock, _load_class, _prepare, _token_dims, run_training
from .train_checks import _is_zip
from .train_options import add_train_arguments

MAX_POINTS = 10_000
RESULTS = "results.csv"
NAMED_CORPORA = ("stdlib", "shakespeare", "abc")
# train's options a sweep sets itself for each point (or has its own meaning for)
LEFT_OUT = ("--checkpoint", "--best", "--json", "--resume", "--force", "--plot",
            "--dry-run")
# settings that may not be a grid's name, and why
NOT_GRIDDED = {
    "spec": "the sweep trains one spec", "dims": "name the dims themselves: --grid H=64,128",
    "threads": "each point's kernel threads come from the sweep's --threads",
    "grid": "a setting of the sweep itself", "workers": "a setting of the sweep itself",
    "scheduler": "a setting of the sweep itself", "out": "a setting of the sweep itself",
    "force": "a setting of the sweep itself", "plot": "a setting of the sweep itself",
    "dry_run": "a setting of the sweep itself", "help": "not a setting",
    "debug": "rnndsl's own option (rnndsl --debug sweep ...), not a setting",
    "temperatures": "it changes only the closing samples, not the training: give "
                    "--temperatures once",
}
# what train's checks (_prepare) do not read: points differing only in these share a check
UNCHECKED = {"lr", "clip", "optimizer", "seed", "every", "temperatures", "sample_chars",
             "checkpoint", "best", "threads", "argv", "run"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._,=+-]")
MAX_LABEL = 120


# ---------------------------------------------------------------------------- the grid
def grid_item(text: str) -> tuple[str, list[str]]:
    """`NAME=V1,V2,...` -> (NAME, the values' texts): the syntax only, at parse time."""
    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"takes NAME=V1,V2,... like lr=1e-3,3e-3; got "
                                         f"{text!r}")
    if not _NAME.match(name):
        raise argparse.ArgumentTypeError(f"{name!r} is not a setting's name")
    parts = [v.strip() for v in values.split(",")]
    if not values.strip() or any(not v for v in parts):
        raise argparse.ArgumentTypeError(f"{name}: give values separated by commas, none "
                                         f"empty, like {name}=1,2; got {values!r}")
    twice = sorted({v for v in parts if parts.count(v) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"{name}: {', '.join(twice)} given twice")
    return name, parts


@dataclass(frozen=True)
class Axis:
    """One grid name, resolved: a dim of the spec or a train option (its dest), with
    its values parsed as train parses them and each one's text for names and tables."""

    name: str
    dim: bool
    dest: str
    values: tuple
    labels: tuple[str, ...]


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The sweep parser's options by every name a grid may use: `lr-schedule` and
    `lr_schedule` (the long option without dashes, and its dest)."""
    found = {}
    for action in parser._actions:
        for flag in action.option_strings:
            if flag.startswith("--"):
                found[flag[2:]] = action
                found[flag[2:].replace("-", "_")] = action
    return found


def _label(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def _parse_value(parse, choices, name: str, text: str):
    """`text` as train's option would take it (its type, its choices), or the refusal
    the option would give."""
    try:
        value = parse(text) if parse else text
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise UsageError(f"--grid {name}={text}: {exc}") from None
    if choices is not None and value not in choices:
        raise UsageError(f"--grid {name}={text}: not one of {', '.join(map(str, choices))}")
    return value


def resolve(grid, parser, dims: list[str], vocab_dim: str, fixed_dims: dict) -> list[Axis]:
    """The grid's names as dims or options, every value parsed; unknown, doubled,
    ambiguous and refused names all named in one message."""
    options = _options(parser)
    positive = cli_args.at_least(1)
    names = [name for name, _ in grid]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"--grid: {', '.join(twice)} given in more than one --grid; give "
                         "each name once, with all its values")
    unknown = [n for n in names if n not in dims and n not in options]
    if unknown:
        ours = [d for d in dims if d != vocab_dim]
        raise UsageError(f"--grid: unknown name{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(unknown)}: a grid name is a dim of the spec ("
                         f"{', '.join(ours) or 'none'}) or an option of rnndsl train (lr, "
                         "batch, seq, clip, optimizer, ...)")
    axes = []
    for name, texts in grid:
        if name in dims and name in options:
            raise UsageError(f"--grid {name}: both a dim of the spec and an option of train; "
                             "rename the dim to sweep it")
        if name in dims:
            if name == vocab_dim:
                raise UsageError(f"--grid {name}: {name} is the vocabulary size, which the "
                                 "corpus sets")
            if name in fixed_dims:
                raise UsageError(f"--grid {name} and --dims {name}={fixed_dims[name]} both "
                                 f"set {name}: give it in one place")
            values = tuple(_parse_value(positive, None, name, t) for t in texts)
            big = next((t for t, v in zip(texts, values) if v > cli_args.MAX_DIM), None)
            if big is not None:         # as --dims refuses it: arrays fail inside NumPy
                raise UsageError(f"--grid {name}={big}: a size must be at most "
                                 f"{cli_args.MAX_DIM:,}")
            axes.append(_axis(name, True, name, values))
            continue
        action = options[name]
        refused = NOT_GRIDDED.get(action.dest) or SET_BY_SWEEP.get(action.option_strings[0])
        if refused:
            raise UsageError(f"--grid {name}: not a setting to sweep ({refused})")
        values = tuple(_parse_value(action.type, action.choices, name, t) for t in texts)
        same = next((a.name for a in axes if a.dest == action.dest), None)
        if same is not None:
            raise UsageError(f"--grid {same} and --grid {name} are the same setting: give "
                             "it once, with all its values")
        axes.append(_axis(name, False, action.dest, values))
    return axes


def _axis(name: str, dim: bool, dest: str, values: tuple) -> Axis:
    labels = tuple(_label(v) for v in values)
    twice = sorted({t for t in labels if labels.count(t) > 1})
    if dest == "corpus" and not twice:     # one file by two paths: the same corpus
        where = [str(Path(v).resolve()) if v not in NAMED_CORPORA and Path(v).exists()
                 else v for v in values]
        same = [t for t, w in zip(labels, where) if where.count(w) > 1]
        if same:
            raise UsageError(f"--grid {name}: {', '.join(same)} are one file: give it once")
    if twice:
        raise UsageError(f"--grid {name}: the value {', '.join(twice)} is given twice "
                         "(written differently)")
    return Axis(name, dim, dest, values, labels)


def fixed_options_given(argv: list[str], axes: list[Axis], parser) -> None:
    """Refuse an option given both alone and as a grid name (`--lr 0.01 --grid lr=...`):
    which one wins would be a guess."""
    for axis in axes:
        if axis.dim:
            continue
        flags = next(a.option_strings for a in parser._actions if a.dest == axis.dest)
        given = [a for a in argv if a in flags or any(a.startswith(f + "=") for f in flags)]
        if given:
            raise UsageError(f"{given[0].split('=')[0]} and --grid {axis.name} both set "
                             f"{axis.dest}: give it in one place")


@dataclass(frozen=True)
class Point:
    """One setting of every grid name: the values in the grid's order, and its name."""

    values: tuple
    labels: tuple[str, ...]
    name: str


def points(axes: list[Axis]) -> list[Point]:
    """The cartesian product, first name slowest; each point named readably and safely
    for a file (`lr=0.001,H=128`); names made unique where cleaning made two alike."""
    count = math.prod(len(a.values) for a in axes)
    if count > MAX_POINTS:
        raise UsageError(f"--grid: {count:,} points; a sweep runs at most {MAX_POINTS:,}")
    out, seen = [], set()
    for picks in itertools.product(*(range(len(a.values)) for a in axes)):
        labels = tuple(a.labels[i] for a, i in zip(axes, picks))
        name = _UNSAFE.sub("_", ",".join(f"{a.name}={t}" for a, t in zip(axes, labels)))
        if len(name) > MAX_LABEL:
            name = name[:MAX_LABEL]
        base, k = name, 2
        while name.lower() in seen:        # case-insensitive file systems too
            name, k = f"{base}-{k}", k + 1
        seen.add(name.lower())
        out.append(Point(tuple(a.values[i] for a, i in zip(axes, picks)), labels, name))
    return out


# ---------------------------------------------------------------------------- settings
def point_args(args, axes: list[Axis], point: Point, folder: Path, threads) -> argparse.Namespace:
    """The arguments of `rnndsl train` for one point: the sweep's, the point's values,
    its checkpoint in `folder`, absolute paths (a worker may run elsewhere) and
    --force (the sweep decided DIR's fate before starting)."""
    settings = argparse.Namespace(**vars(args))
    dims = dict(args.dims or {})
    for axis, value in zip(axes, point.values):
        if axis.dim:
            dims[axis.name] = value
        else:
            setattr(settings, axis.dest, value)
    settings.dims = dims or None
    settings.spec = str(Path(args.spec).absolute())
    if settings.corpus not in NAMED_CORPORA and Path(settings.corpus).exists():
        settings.corpus = str(Path(settings.corpus).absolute())
    settings.checkpoint = str((folder / f"{point.name}.npz").absolute())
    settings.best, settings.json, settings.plot = None, None, None
    settings.resume, settings.force, settings.dry_run = False, True, False
    settings.threads = threads
    settings.argv = _point_argv(args, axes, point, dims, settings.checkpoint)
    for own in ("grid", "workers", "scheduler", "out", "run", "parser"):
        vars(settings).pop(own, None)
    return settings


# the sweep's own options, which a point's `rnndsl train` has not: those taking a value
_SWEEP_ONLY = {"--grid": True, "--workers": True, "--scheduler": True, "--out": True,
               "--plot": True, "--force": False, "--dry-run": False}


def _point_argv(args, axes: list[Axis], point: Point, dims: dict,
                checkpoint: str) -> list | None:
    """The `rnndsl train` arguments a point runs as: the sweep's own command line less
    its own options, the point's values given as train's options, and its checkpoint;
    what the resume command of an interrupted point is made of (its log prints it), so
    that it continues the point as it was trained."""
    argv = list(getattr(args, "argv", None) or [])
    if not argv:
        return None
    at = argv.index("sweep") if "sweep" in argv else -1   # after the global --debug
    out, k = argv[:at] + ["train"], at + 1
    while k < len(argv):
        word = argv[k]
        name = word.split("=", 1)[0]
        if name in _SWEEP_ONLY or name == "--dims":
            k += 2 if (_SWEEP_ONLY.get(name, True) and "=" not in word) else 1
            continue
        out.append(word)
        k += 1
    if dims:
        out += ["--dims", ",".join(f"{n}={v}" for n, v in dims.items())]
    for axis, label in zip(axes, point.labels):
        if not axis.dim:
            flags = next(a.option_strings for a in args.parser._actions if a.dest == axis.dest)
            out += [flags[-1], label]
    return out + ["--checkpoint", checkpoint]


def check_points(args, axes: list[Axis], pts: list[Point]) -> None:
    """Train's own checks (spec, corpus, dims, schedule, batch against the corpus) for
    every point, before any trains; points that differ only in settings those checks do
    not read are checked once. Checkpoints go to a scratch folder: nothing is written."""
    done = set()
    with tempfile.TemporaryDirectory(prefix="rnndsl-sweep-check-") as scratch:
        for point in pts:
            settings = point_args(args, axes, point, Path(scratch), None)
            key = repr(sorted((k, repr(v)) for k, v in vars(settings).items()
                              if k not in UNCHECKED))
            if key in done:
                continue
            try:
                _prepare(settings)
            except RnnError as exc:
                if isinstance(exc, SpecError):      # a spec's error shows its place
                    raise
                raise TrainError(f"point {point.name}: {exc}") from None
            done.add(key)


def _point_files(point: Point) -> dict[str, str]:
    """The files a point writes in the sweep's folder, each with what it is."""
    return {f"{point.name}.npz": "checkpoint", f"{point.name}.best.npz": "best checkpoint",
            f"{point.name}.log": "log"}


def check_folder(folder: Path, pts: list[Point], force: bool) -> None:
    """DIR may be new, or hold other files; an earlier sweep's results or any point's
    files are overwritten only with --force."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--out {folder}: exists and is not a folder")
    above = next(p for p in folder.absolute().parents if p.exists())
    if not folder.exists() and not above.is_dir():
        raise UsageError(f"--out {folder}: {above} is not a folder, so {folder} cannot be "
                         "made")
    if not folder.is_dir() or force:
        return
    mine = [folder / RESULTS] + [folder / name for p in pts for name in _point_files(p)]
    found = [f for f in mine if f.exists()]
    if found:
        shown = ", ".join(f.name for f in found[:3]) + (" ..." if len(found) > 3 else "")
        raise UsageError(f"--out {folder} holds an earlier sweep's files ({shown}): sweeping "
                         "would overwrite them. Overwrite them with --force, or name another "
                         "folder with --out")


def _writable_png(args, folder: Path, pts: list[Point], axes: list[Axis], Cell) -> None:
    """--plot: matplotlib there, and a file the sweep neither reads (the spec, a file it
    uses, a corpus) nor writes (results.csv, a point's checkpoint, best checkpoint or
    log), nor a checkpoint (any .npz archive): the plot replaces its file without --force,
    and one of those became a PNG. Its folder may be --out, which the sweep makes."""
    path = args.plot
    if path is None:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install 'rnndsl[plot]'") from None
    if Path(path).parent.resolve() != folder.resolve():
        cli_args.writable_file("--plot", path)
    elif Path(path).is_dir():
        raise UsageError(f"--plot {path}: is a folder; give a file name")
    where = Path(path).resolve()
    corpora = [args.corpus] + [v for a in axes if a.dest == "corpus" for v in a.values]
    read = [("the spec", args.spec)] + [("a file the spec uses", f)
                                        for f in (getattr(Cell, "spec_files", None) or {})]
    read += [("a corpus the sweep reads", c) for c in corpora if isinstance(c, str)]
    for what, name in read:
        if name and Path(name).is_file() and Path(name).resolve() == where:
            raise UsageError(f"--plot {path} is {what}; name another file")
    written = {folder / RESULTS: f"the sweep's {RESULTS}"}
    for p in pts:
        written.update((folder / name, f"point {p.name}'s {what}")
                       for name, what in _point_files(p).items())
    for file, what in written.items():
        if file.resolve() == where:
            raise UsageError(f"--plot {path} is {what}, which the sweep writes; name "
                             "another file")
    if where.is_file() and _is_zip(where):
        raise UsageError(f"--plot {path} is a checkpoint (an .npz archive), which the plot "
                         "would replace: name another file")


# ---------------------------------------------------------------------------- results
@dataclass
class Row:
    """A point and how it ended: bits/char (None: it failed or was stopped)."""

    point: Point
    bits_per_char: float | None = None
    checkpoint: str | None = None
    error: str | None = None


def _bits(value: float) -> str:
    """bits/char as shown: four decimals, or powers of ten for a run that went astray."""
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.3e}"


def _best(rows: list[Row]) -> Row | None:
    scored = [r for r in rows if r.bits_per_char is not None]
    return min(scored, key=lambda r: r.bits_per_char) if scored else None


def write_results(folder: Path, axes: list[Axis], rows: list[Row]) -> None:
    """DIR/results.csv, atomically: one row a point finished so far, in the grid's order;
    the grid's names, then bits_per_char (empty where the point failed) and checkpoint
    (its absolute path)."""
    from ..core.files import write_atomically
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([a.name for a in axes] + ["bits_per_char", "checkpoint"])
    for row in rows:
        bpc = "" if row.bits_per_char is None else repr(row.bits_per_char)
        writer.writerow(list(row.point.labels) + [bpc, row.checkpoint or ""])
    write_atomically(folder / RESULTS, text.getvalue().encode())


def table(axes: list[Axis], rows: list[Row]) -> list[str]:
    """The closing table, best first; failed points last, with why."""
    ordered = sorted(rows, key=lambda r: (r.bits_per_char is None, r.bits_per_char or 0))
    head = [a.name for a in axes] + ["bits/char", "checkpoint"]
    body = [list(r.point.labels) + ([_bits(r.bits_per_char), r.checkpoint]
                                    if r.bits_per_char is not None else _unscored(r))
            for r in ordered]
    widths = [max(len(line[i]) for line in [head] + body) for i in range(len(head) - 1)]
    return ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)) + "  " + line[-1]
            for line in [head] + body]


def _unscored(row: Row) -> list[str]:
    """The table's last two cells for a point without bits/char: why, and where its
    checkpoint is when it has one (a point Ctrl-C stopped, to --resume)."""
    if row.error == "interrupted":
        return ["stopped", f"{row.checkpoint} (interrupted)"]
    return ["failed", (row.error or "").splitlines()[0]]


def plot(axes: list[Axis], rows: list[Row], path: str, title: str) -> None:
    """bits/char against the first grid name, one line for each setting of the others
    (a log axis where its values are positive numbers spanning 10x or more)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    first = axes[0]
    numeric = all(isinstance(v, (int, float)) for v in first.values)
    xs = {label: (value if numeric else i)
          for i, (label, value) in enumerate(zip(first.labels, first.values))}
    lines: dict[tuple, list[tuple]] = {}
    for row in rows:
        if row.bits_per_char is not None:
            lines.setdefault(row.point.labels[1:], []).append(
                (xs[row.point.labels[0]], row.bits_per_char))
    fig, ax = plt.subplots(figsize=(7, 4))
    for rest, pairs in lines.items():
        pairs.sort()
        label = ", ".join(f"{a.name}={t}" for a, t in zip(axes[1:], rest)) or None
        ax.plot([p[0] for p in pairs], [p[1] for p in pairs], "o-", label=label)
    if numeric and min(first.values) > 0 and max(first.values) >= 10 * min(first.values):
        ax.set_xscale("log")
    if not numeric:
        ax.set_xticks(list(xs.values()), list(xs))
    ax.set_xlabel(first.name)
    ax.set_ylabel("validation bits/char")
    ax.set_title(title)
    if len(axes) > 1:
        ax.legend(fontsize="small")
    fig.tight_layout()
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------- sweep
def _prepared(args) -> tuple[list[Axis], list[Point], object, Path]:
    """Every check, in the order a user fixes them: the cluster options, the grid's
    syntax and names, the points, DIR, --plot, then train's checks of every point."""
    from ..distributed import place
    if not args.grid:
        raise UsageError("a sweep needs at least one --grid NAME=V1,V2,... (like "
                         "--grid lr=1e-3,3e-3)")
    placement = place(args.workers, args.scheduler, args.threads)
    Cell = _load_class(args.spec, args.cell, args.target)
    _, _, vocab_dim = _token_dims(Cell.spec)
    axes = resolve(args.grid, args.parser, list(Cell.spec.dims), vocab_dim, args.dims or {})
    fixed_options_given(args.argv or [], axes, args.parser)
    pts = points(axes)
    if args.out is not None and not args.out.strip():
        raise UsageError("--out: give a folder's name (or leave --out out: "
                         f"sweep-{Path(args.spec).stem}/)")
    folder = Path(args.out or f"sweep-{Path(args.spec).stem}")
    check_folder(folder, pts, args.force)
    _writable_png(args, folder, pts, axes, Cell)
    check_points(args, axes, pts)
    return axes, pts, placement, folder


def _finished(row: Row, outcome, folder: Path) -> None:
    """Record a point's outcome in its row and write the text its training printed."""
    from ..core.files import write_atomically
    write_atomically(folder / f"{row.point.name}.log", outcome.log.encode())
    summary = outcome.summary or {}
    row.checkpoint = summary.get("checkpoint")      # also of a point Ctrl-C stopped
    if outcome.ok and summary.get("validation_bits_per_char") is not None:
        row.bits_per_char = float(summary["validation_bits_per_char"])
    else:
        error = outcome.error or ("interrupted" if outcome.status == 130 else
                                  f"exit status {outcome.status}")
        row.error = error[len("error: "):] if error.startswith("error: ") else error


def cmd_sweep(args) -> int:
    from ..distributed import runner
    axes, pts, placement, folder = _prepared(args)
    out = sys.stdout
    budget = " or ".join(x for x in (
        args.minutes and f"{args.minutes:g} minute{'' if args.minutes == 1 else 's'}",
        args.steps and f"{args.steps} step{'' if args.steps == 1 else 's'}") if x) \
        or "3 minutes"
    if any(a.dest in ("minutes", "steps") for a in axes):
        budget = "its point's --minutes or --steps"
    print(f"sweep: {len(pts)} point{'s' if len(pts) > 1 else ''} of "
          f"{' x '.join(f'{a.name} ({len(a.values)})' for a in axes)}, each `rnndsl train` "
          f"for {budget}, {placement.describe()}; checkpoints in {folder}/", file=out)
    if args.dry_run:
        for point in pts:
            print(f"  {point.name}", file=out)
        print("dry run: arguments, spec, corpus and every point's settings are fine; "
              "nothing was trained or written", file=out)
        return 0
    with runner(placement) as run:
        folder.mkdir(parents=True, exist_ok=True)
        rows = _sweep(run, args, axes, pts, placement, folder, out)
    interrupted = any(r.error == "interrupted" for r in rows)
    return _close(args, axes, rows, folder, interrupted, out)


def _sweep(run, args, axes, pts, placement, folder: Path, out) -> list[Row]:
    """Every point as a task; a line as each one finishes, and results.csv rewritten."""
    from ..distributed import Task
    rows = {p.name: Row(p) for p in pts}
    tasks = [Task(p.name, run_training, point_args(args, axes, p, folder, placement.threads))
             for p in pts]
    started, done = time.monotonic(), 0
    for outcome in run(tasks):
        row = rows[outcome.key]
        _finished(row, outcome, folder)
        done += 1
        finished = [r for r in rows.values() if r.bits_per_char is not None or r.error]
        write_results(folder, axes, finished)
        best = _best(finished)
        result = (f"{_bits(row.bits_per_char)} bits/char" if row.bits_per_char is not None
                  else "stopped by Ctrl-C, its checkpoint saved" if row.error == "interrupted"
                  else f"failed: {row.error.splitlines()[0]}")
        print(f"[{done}/{len(pts)}] {row.point.name}: {result} ({_clock(outcome.seconds)})"
              + (f" | best so far: {_bits(best.bits_per_char)} ({best.point.name})" if best
                 else "") + f" | {_clock(time.monotonic() - started)} elapsed",
              file=out, flush=True)
    return list(rows.values())


def _close(args, axes, rows: list[Row], folder: Path, interrupted: bool, out) -> int:
    """The table, results.csv's place, the plot; the exit status: 130 when Ctrl-C
    stopped the sweep, 2 when no point trained (as `train` exits 2 when its run fails),
    else 0 (a point that failed is in the table and the CSV)."""
    ran = [r for r in rows if r.bits_per_char is not None or r.error]
    print("", file=out)
    for line in table(axes, ran):
        print(line, file=out)
    print(f"results: {folder / RESULTS}", file=out)
    others = _other_points_files(folder, [r.point for r in rows])
    if others:      # an earlier sweep's, replaced with --force: not deleted, not listed
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3
                                         else "")
        print(f"note: {folder} also holds files of points not in this sweep ({shown}), "
              f"which {RESULTS} does not list", file=out)
    best = _best(ran)
    if args.plot and best is not None:
        plot(axes, ran, args.plot, f"{Path(args.spec).stem}: validation bits/char")
        print(f"plot: {args.plot}", file=out)
    if interrupted:
        trained = sum(r.bits_per_char is not None for r in rows)
        print(f"interrupted: {trained} of {len(rows)} points trained; their results are in "
              f"{folder / RESULTS}", file=out)
        return 130
    if best is None:
        failed = next(r for r in ran if r.error)
        raise TrainError(f"no point of the sweep trained; {failed.point.name}: "
                         f"{failed.error.splitlines()[0]} (each point's text: "
                         f"{folder}/NAME.log)")
    print(f"best: {_bits(best.bits_per_char)} bits/char, {best.point.name}: {best.checkpoint}",
          file=out)
    return 0


def _other_points_files(folder: Path, pts: list[Point]) -> list[str]:
    """The checkpoints and logs in `folder` of points this sweep has not: an earlier
    sweep's, which --force let this one replace around."""
    ours = {name for p in pts for name in _point_files(p)}
    return sorted(f.name for f in folder.iterdir() if f.is_file() and f.name not in ours
                  and "=" in f.name and f.name.endswith((".npz", ".log")))   # NAME=VALUE


# ---------------------------------------------------------------------------- parsers
SET_BY_SWEEP = {
    "--checkpoint": "each point's checkpoint is DIR/NAME.npz (choose DIR with --out)",
    "--best": "each point's best checkpoint is DIR/NAME.best.npz (choose DIR with --out)",
    "--json": "the sweep's results go to DIR/results.csv",
    "--resume": "a sweep trains each point afresh",
}


class _SetBySweep(argparse.Action):
    """A train option that a sweep sets itself for each point: refused, saying why,
    rather than argparse's bare 'unrecognized arguments'."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string}: not a sweep's option: {SET_BY_SWEEP[option_string]}")


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "sweep", help="train a grid of settings, one point a task, and compare them",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train every point of a grid of settings (the cartesian product of "
                    "the --grid options) as its own `rnndsl train`, in this process one "
                    "after another, on a Dask LocalCluster of --workers N processes, or on "
                    "the Dask cluster at --scheduler ADDR (whose workers must see the spec, "
                    "corpus and DIR at the same paths). A grid name is a dim of the spec "
                    "(H) or an option of train (lr, batch, clip, optimizer, ...); every "
                    "other train option is a setting fixed for all points. Each point's "
                    "checkpoint is DIR/NAME=VALUE,....npz (with .best.npz and the text its "
                    "training printed in .log); a line as each point finishes shows the "
                    "best so far; the closing table of validation bits/char is also "
                    "written to DIR/results.csv. Everything is checked before the first "
                    "point starts; an earlier sweep's files in DIR are overwritten only "
                    "with --force.",
        epilog="examples:\n"
               "  rnndsl sweep specs/char_lstm.rnn --grid lr=1e-3,3e-3 --grid H=128,256 "
               "--minutes 2\n"
               "  rnndsl sweep specs/char_lstm.rnn --grid lr=1e-3,3e-3,1e-2 --steps 500 "
               "--workers 3\n"
               "  rnndsl sweep specs/char_lstm.rnn --grid clip=1,5 --scheduler "
               "tcp://10.0.0.5:8786 --out /shared/sweeps/clip\n"
               "  rnndsl sweep specs/char_lstm.rnn --grid H=64,128 --dry-run   check, "
               "list the points\n"
               "\nexit status: 0 swept (a failed point is in the table), 2 bad input "
               "(nothing trained) or no point trained, 130 interrupted\n")
    add_train_arguments(p, leave_out=LEFT_OUT)
    p.add_argument("--grid", action="append", type=grid_item, metavar="NAME=V1,V2",
                   help="a setting and its values, separated by commas (repeatable: the "
                        "points are every combination): a dim of the spec (H=128,256) or "
                        "a train option by its long name (lr=1e-3,3e-3, batch=16,32, "
                        "optimizer=adam,sgd)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=cli_args.at_least(1), metavar="N",
                       help="start a Dask LocalCluster of N worker processes here, each "
                            "training one point at a time on cores/N kernel threads (or "
                            "--threads); needs pip install 'rnndsl[distributed]'")
    where.add_argument("--scheduler", metavar="ADDR",
                       help="join the Dask cluster whose scheduler is at ADDR "
                            "(tcp://HOST:PORT) instead")
    p.add_argument("--out", metavar="DIR",
                   help="where the checkpoints, logs and results.csv go (default "
                        "sweep-<spec name>/)")
    p.add_argument("--force", action="store_true",
                   help="overwrite an earlier sweep's results and checkpoints in DIR")
    p.add_argument("--plot", metavar="PNG",
                   help="also draw bits/char against the first grid name (needs matplotlib)")
    p.add_argument("--dry-run", action="store_true",
                   help="check everything, list the points, and stop without training or "
                        "writing anything")
    for flag in SET_BY_SWEEP:
        p.add_argument(flag, action=_SetBySweep, nargs=0 if flag == "--resume" else None,
                       help=argparse.SUPPRESS, dest=f"refused_{flag[2:]}")
    p.set_defaults(run=cmd_sweep, parser=p)


__all__ = ["add_parsers", "cmd_sweep"]
