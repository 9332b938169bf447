"""`rnndsl export`: a spec (with bound dims, and params from its initialisers or a
checkpoint) -> a model file other tools open. One format today: ONNX
(rnndsl.interop.onnx_export; docs/onnx.md).

Every argument is checked before any work, each refusal naming its option, exit 2: the
output exists (without --force), is a folder or is in a folder that does not exist, the
format is unknown, onnx is not installed, the spec or --cell or --params cannot be read,
a dim is missing or unknown.
The file is written atomically: a failure leaves no file and any previous one intact.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from . import args as cli_args
from .args import UsageError

FORMATS = ("onnx",)


def cmd_export(args) -> int:
    out = Path(args.output)
    if out.is_dir():
        raise UsageError(f"-o {out}: is a folder; name the file to write, like "
                         f"{out / 'model.onnx'}")
    cli_args.writable_file("-o", args.output)     # a missing folder is not made
    for what, path in (("the spec", args.spec), ("the --params checkpoint", args.params)):
        if path is not None and Path(path).is_file() and out.resolve() == \
                Path(path).resolve():        # --force would replace it with the model
            raise UsageError(f"-o {out}: is {what} that export reads; name another file")
    if out.exists() and not args.force:
        raise UsageError(f"-o {out}: exists; overwrite it with --force, or name another file")
    if args.operators and args.scan:
        raise UsageError("--operators and --scan contradict each other; give one")
    if args.direction != "forward" and args.params is not None:
        raise UsageError(f"--params with --direction {args.direction}: a checkpoint of "
                         "rnndsl train holds one direction's params; export a reverse or "
                         "bidirectional cell from Python (rnndsl.onnx.export) with the "
                         "params set")
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise UsageError("--format onnx needs the onnx package: pip install 'rnndsl[onnx]'"
                         ) from None
    from ..cells.load import load
    from ..core.errors import SpecFileError
    from ..lang.specfile import read_spec
    spec_file = read_spec(args.spec)
    try:
        spec = spec_file.pick(args.cell)
    except SpecFileError as exc:
        raise UsageError(f"--cell: {exc}" if args.cell else str(exc)) from None
    given = dict(args.dims or {})
    trained = None
    if args.params is not None:      # a checkpoint knows its dims (and its vocabulary)
        from ..train import checkpoint as ckpt
        trained = ckpt.peek(args.params)
        if trained.cell != spec.name:
            dims = ", ".join(f"{k}={v}" for k, v in trained.dims.items())
            raise UsageError(f"--params {args.params} holds a {trained.cell} ({dims}), not "
                             f"the spec's {spec.name}: give the spec it was trained with "
                             f"(rnndsl info {args.params} shows it)")
        differ = {d: (v, trained.dims[d]) for d, v in given.items()
                  if d in trained.dims and trained.dims[d] != v}
        if differ:
            raise UsageError("--dims: " + ", ".join(
                f"{d}={v} but {args.params} holds {d}={t}" for d, (v, t) in differ.items())
                + "; leave --dims out to take the checkpoint's")
        given = {**trained.dims, **given}
    unknown = [d for d in given if d not in spec.dims]
    missing = [d for d in spec.dims if d not in given]
    example = ",".join(f"{d}=8" for d in spec.dims)
    if unknown:
        raise UsageError(f"--dims: {spec.name} has no dim {', '.join(unknown)}; its dims: "
                         f"{', '.join(spec.dims)} (like --dims {example})")
    if missing:
        raise UsageError(f"--dims: {spec.name} needs a size for {', '.join(missing)} "
                         f"(like --dims {example})")
    Cell = load(args.spec, target="interp", cell=args.cell)
    cell = Cell(dtype=np.dtype(args.dtype), seed=args.seed, direction=args.direction,
                **given)
    if args.params is not None:
        from ..train import checkpoint as ckpt
        ckpt.load(args.params, cell)
    from ..interop.onnx_export import export
    from ..interop.onnx_interface import NETWORK, exported_as
    operators = True if args.operators else False if args.scan else None
    # the token of each id, as the checkpoint holds it (rnndsl.train.data.Vocab.to_json)
    vocab = (trained.meta.get("user", {}).get("vocab") if trained is not None
             and isinstance(trained.meta, dict) else None)
    model = export(cell, out, operators=operators, metadata={
        "rnndsl.vocab": vocab} if isinstance(vocab, str) else None)
    kind = exported_as(model)
    if kind.startswith(NETWORK):
        what = f"a network of parts in turn: {kind[len(NETWORK):]}"
    else:
        what = (f"one ONNX {kind} node" if kind != "Scan"
                else "an ONNX Scan over its equations")
    if args.direction != "forward":
        what += f", direction {args.direction}"
    dims = ", ".join(f"{k}={v}" for k, v in cell.dims.items())
    ins = ", ".join(i.name for i in model.graph.input)
    outs = ", ".join(o.name for o in model.graph.output)
    print(f"{args.spec} -> {out}: cell {spec.name}({dims}) as {what} ({args.dtype}, opset "
          f"{model.opset_import[0].version})\n  inputs: {ins}\n  outputs: {outs}")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser(
        "export", help="write a cell as a model file other tools open (ONNX)",
        description="Write a cell, its dims bound and its params set, as an ONNX model. "
                    "A cell of the form of ONNX's RNN, LSTM (with or without peepholes) or "
                    "GRU (either reset convention) becomes that operator, whatever its "
                    "names; any other cell becomes a Scan over its equations. Inputs: the "
                    "spec's inputs (T, B, size), then initial_<state> (B, size) and "
                    "sequence_lens (B,) int32, both optional; outputs: the spec's outputs "
                    "(T, B, size), then final_<state> (B, size). A cell with layers run "
                    "over whole sequences (layer l1 = bidirectional ...) is its parts in "
                    "turn, each written so. docs/onnx.md has more.",
        epilog="examples:\n"
               "  rnndsl export specs/lstm.rnn --dims I=8,H=16 -o lstm.onnx\n"
               "      one ONNX LSTM node; run it with onnxruntime:\n"
               "      onnxruntime.InferenceSession('lstm.onnx').run(None, {'x': x})\n"
               "  rnndsl export specs/mgu.rnn --dims I=8,H=16 -o mgu.onnx --force\n"
               "      a Scan over the cell's equations, overwriting mgu.onnx\n"
               "  rnndsl export specs/char_lstm.rnn --dims V=65,H=128 --params "
               "model.npz -o char.onnx\n"
               "      a trained model (rnndsl train's checkpoint); x is int64 ids (T, B)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", metavar="SPEC", help="the .rnn file")
    p.add_argument("--dims", metavar="I=8,H=16", type=cli_args.dims,
                   help="the size of every dim of the cell (required)")
    p.add_argument("--format", choices=FORMATS, default="onnx",
                   help="the file's format (default onnx, the only one today)")
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="the model file to write, like model.onnx")
    p.add_argument("--cell", help="the cell to export, in a file with several")
    p.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="the model's float type (default float32; in float64 every cell "
                        "is a Scan unless --operators: onnxruntime's RNN, LSTM and GRU "
                        "kernels take float32 only)")
    p.add_argument("--seed", type=cli_args.at_least(0), default=0,
                   help="seed of the params' initialisers (default 0)")
    p.add_argument("--params", metavar="CHECKPOINT",
                   help="take the params from a checkpoint (rnndsl train's .npz) of this "
                        "cell, instead of the initialisers; its dims too, where --dims "
                        "leaves them out, and its vocabulary, into the model's metadata "
                        "(rnndsl.vocab)")
    p.add_argument("--direction", choices=("forward", "reverse", "bidirectional"),
                   default="forward",
                   help="run the cell forward in time (default), from each sequence's "
                        "end, or both ways (a second param set, NAME_reverse; outputs "
                        "joined forward first, as torch's bidirectional modules)")
    p.add_argument("--scan", action="store_true",
                   help="always a Scan over the equations, even for a cell of an "
                        "operator's form")
    p.add_argument("--operators", action="store_true",
                   help="use ONNX's RNN/LSTM/GRU operators where the cell has their form, "
                        "in float64 too")
    p.set_defaults(run=cmd_export)
