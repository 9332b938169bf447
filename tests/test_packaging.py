"""A real, non-editable install finds its grammar when used from another folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import sys, numpy as np, rnndsl
from rnndsl.parse import grammar_path
assert rnndsl.__file__.startswith(sys.argv[1]), rnndsl.__file__
assert str(grammar_path()).startswith(sys.argv[1]), grammar_path()
Cell = rnndsl.load(sys.argv[2], target="interp")
run = Cell(I=3, H=4, dtype=np.float64).forward(np.ones((2, 1, 3)))
print("ok", run.outputs["h"].shape, grammar_path().name)
"""


def test_wheel_install_used_from_another_folder(tmp_path):
    target = tmp_path / "site"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(REPO)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    assert (target / "rnndsl" / "grammars" / "rnn.lark").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    spec = elsewhere / "lstm.rnn"
    spec.write_text((REPO / "specs" / "lstm.rnn").read_text())
    env = dict(os.environ, PYTHONPATH=str(target))
    run = subprocess.run([sys.executable, "-c", PROBE, str(target), str(spec)],
                         cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok (2, 1, 4) rnn.lark"
    cli = subprocess.run([sys.executable, "-m", "rnndsl", "check", "lstm.rnn"], cwd=elsewhere,
                         env=env, capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0 and "lstm.rnn: ok: cell LSTM" in cli.stdout, cli.stderr
