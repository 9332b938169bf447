"""benchmarks/gpu_probe.py's source surgery, which its phase timings rest on (the probes
themselves need a GPU)."""

from __future__ import annotations

import itertools
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_probe  # noqa: E402

KERNEL = textwrap.dedent('''
    @cuda.jit
    def forward_X_steps(a, b):
        grid = cuda.cg.this_grid()
        for t in range(T):
            # copy2(a, b)
            for flat in range(tid, n, nthreads):
                a[flat] = b[flat]
            # mm = a @ b: a block a tile
            for tile in range(n):
                c[tile] = 0
            grid.sync()
            # gates
            x = 1
            # the next step reads what this one wrote
            grid.sync()


    def after():
        pass
''')


def test_drop_phases_cuts_one_phase_and_keeps_the_barriers():
    count = itertools.count()
    cut = gpu_probe.drop_phases(KERNEL, "forward_X_steps", lambda c: next(count) == 1)
    assert "c[tile] = 0" not in cut and "# mm = a @ b" not in cut
    assert "a[flat] = b[flat]" in cut and "x = 1" in cut
    assert cut.count("grid.sync()") == 2 and "def after():" in cut
    nothing = gpu_probe.drop_phases(KERNEL, "forward_X_steps", lambda c: False)
    assert nothing == KERNEL
    only_barriers = gpu_probe.drop_phases(
        KERNEL, "forward_X_steps", lambda c: not c.startswith("# the next step"))
    body = only_barriers.split("for t in range(T):")[1].split("def after")[0]
    assert [line.strip() for line in body.strip().splitlines()] == [
        "grid.sync()", "# the next step reads what this one wrote", "grid.sync()"]


def test_the_probe_refuses_to_measure_without_a_gpu(capsys):
    assert gpu_probe.main() == 1                 # the suite runs on the simulator
    assert "none is here" in capsys.readouterr().out
