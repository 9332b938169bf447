"""How long numba-cuda takes to compile each persistent kernel of the cuda target: the
one that streams the recurrent weights (`<which>_<Cell>_steps`) and the one that holds
them (`..._steps_held`, the hold_weights pass), to PTX for sm_90 in float32. A process
compiles a kernel on its first launch, and compiles only the kernels it launches.

    .venv/bin/python benchmarks/cuda_compile_time.py [SPEC ...]   # default: lstm two_streams

Needs numba-cuda's compiler (`pip install 'numba-cuda[cu13]'`), not a GPU; run it
without NUMBA_ENABLE_CUDASIM. Each kernel is compiled --repeat times (default 3) and the
best and median are printed, since this machine's timings vary from run to run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("specs", nargs="*", default=["lstm", "two_streams"], metavar="SPEC",
                    help="spec names in specs/ (default: lstm two_streams)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    from numba import types

    from rnndsl.build.modules import build_source, load_built, write_module
    from rnndsl.kernels.cuda import kernel_ptx
    from rnndsl.lang.specfile import read_spec
    out = Path(tempfile.mkdtemp())
    print("# seconds to compile to PTX (sm_90, float32): best / median of "
          f"{args.repeat}")
    for name in args.specs:
        target = out / f"{name}.py"
        write_module(build_source(read_spec(ROOT / "specs" / f"{name}.rnn"), target="cuda"),
                     target)
        module = load_built(target)
        for cell in module.CELLS:
            for kernel_name, kernel, kinds in getattr(module, cell + "_KERNELS"):
                if "_steps" not in kernel_name:
                    continue
                times = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    kernel_ptx(kernel, kinds, types.float32)
                    times.append(time.perf_counter() - t0)
                print(f"{name:14s} {kernel_name:34s} {min(times):6.2f} "
                      f"{statistics.median(times):6.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
