"""What every example's command line shares: --seed, --target, --dtype and --quick.

    p = argparse.ArgumentParser(...)
    ...the example's own options...
    add_common_options(p, seed_help="seeds the params and samples", quick_help="...")
    args = parse_with_quick(p, QUICK, argv)
"""

from __future__ import annotations

import argparse


def add_common_options(p: argparse.ArgumentParser, seed_help: str, quick_help: str) -> None:
    p.add_argument("--seed", type=int, default=0, help=seed_help)
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
