"""rnndsl.kernels.malloc: compiled cells keep freed memory for reuse (glibc's mallopt), and
RNNDSL_MALLOC=system leaves malloc alone. What it buys is measured, not asserted:
benchmarks/RESULTS.md (2026-11-26) and the module's docstring."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                                reason="mallopt is glibc's")

PROBE = """
import numpy as np, rnndsl, rnndsl.kernels.malloc as m
assert m._state == {}, m._state            # nothing is tuned on import
Cell = rnndsl.load("specs/elman.rnn", target="cpu")
Cell(I=2, H=3, O=2)
print("tuned", m._state.get("tuned"))
"""


def _run(extra_env: dict) -> str:
    env = {k: v for k, v in os.environ.items() if k != "RNNDSL_MALLOC"}
    env.update(PYTHONPATH=str(ROOT), **extra_env)
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, text=True,
                         capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_making_a_compiled_cell_tunes_malloc():
    assert "tuned True" in _run({})


def test_rnndsl_malloc_system_leaves_it_alone():
    assert "tuned False" in _run({"RNNDSL_MALLOC": "system"})
