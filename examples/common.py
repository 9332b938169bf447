"""What every example's command line shares: --seed, --target, --dtype and --quick, and
the argument types that refuse a value out of range when the command line is read
(`--batch 0`, `--lr nan`), where a traceback deep in training came after it.

    p = argparse.ArgumentParser(...)
    ...the example's own options...
    add_common_options(p, seed_help="seeds the params and samples", quick_help="...")
    args = parse_with_quick(p, QUICK, argv)
"""

from __future__ import annotations

import argparse
import math


def _number(kind, test, what: str):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not test(value):
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value
    parse.__name__ = what       # argparse names the type in its messages
    return parse


positive_int = _number(int, lambda v: v >= 1, "an integer >= 1")
whole = _number(int, lambda v: v >= 0, "an integer >= 0")
positive = _number(float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
# a gradient-norm bound: 0 turns clipping off, as `rnndsl train --clip 0` does
clip_norm = _number(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0 "
                                                                 "(0: no clipping)")
fraction = _number(float, lambda v: 0 < v < 1, "a fraction in (0, 1)")


def add_char_training_options(p: argparse.ArgumentParser) -> None:
    """The budget and the optimiser of a character model's truncated BPTT, as
    char_model.py and folk_tunes.py (the same model on another text) take them."""
    p.add_argument("--minutes", type=positive, default=3.0, help="train this long")
    p.add_argument("--steps", type=positive_int, help="or stop after this many steps")
    p.add_argument("--batch", type=positive_int, default=32, help="sequences per step")
    p.add_argument("--seq", type=positive_int, default=64, help="steps of truncated BPTT per chunk")
    p.add_argument("--lr", type=positive, default=5e-3, help="Adam's learning rate")
    p.add_argument("--clip", type=clip_norm, default=5.0, help="clip the gradient's global norm")


def add_common_options(p: argparse.ArgumentParser, seed_help: str, quick_help: str) -> None:
    p.add_argument("--seed", type=whole, default=0, help=seed_help)
    p.add_argument("--target", choices=("cpu", "interp"), default="cpu",
                   help="cpu: compiled Numba kernels; interp: the NumPy reference")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--quick", action="store_true",
                   help=quick_help + "; flags given with it still win")


def parse_with_quick(parser: argparse.ArgumentParser, quick: dict, argv=None):
    """Parse argv; with --quick, the `quick` values become the defaults, so a flag given
    on the command line still wins (`--quick --target cpu`)."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--quick", action="store_true")
    if first.parse_known_args(argv)[0].quick:
        parser.set_defaults(**quick)
    return parser.parse_args(argv)
