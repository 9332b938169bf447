"""A real wheel, installed non-editable, finds its grammar and its shipped specs when used
from another folder."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import sys, numpy as np, rnndsl
from rnndsl.lang.parse import grammar_path
assert rnndsl.__file__.startswith(sys.argv[1]), rnndsl.__file__
assert str(grammar_path()).startswith(sys.argv[1]), grammar_path()
Cell = rnndsl.load(sys.argv[2], target="interp")
run = Cell(I=3, H=4, dtype=np.float64).forward(np.ones((2, 1, 3)))
print("ok", run.outputs["h"].shape, grammar_path().name)
"""

# a spec in a folder of its own that uses the shipped LSTM and stacks a readout on it
USES_SHIPPED = """use "lstm.rnn"

cell Tagger {
  dims  I, H, K
  input x[I]
  layer lstm = LSTM(I = I, H = H)
  param W[K, H]
  output p = softmax(W @ lstm(x))
}
"""

SHIPPED_PROBE = """
import sys, numpy as np, rnndsl
from rnndsl.lang.catalog import shipped_specs
from rnndsl.lang.shipped import specs_dir
from rnndsl.lang.specfile import read_spec
site, spec = sys.argv[1], sys.argv[2]
assert str(specs_dir()) == site + "/rnndsl/specs", specs_dir()
used = read_spec(spec).used["LSTM"].source.path
assert used == site + "/rnndsl/specs/lstm.rnn", used
Cell = rnndsl.load(spec, target="interp")
run = Cell(I=3, H=4, K=5, dtype=np.float64).forward(np.ones((2, 1, 3)))
print("ok", run.outputs["p"].shape, Cell.__name__)
print(" ".join(s.name for s in shipped_specs()))
"""


@pytest.fixture(scope="module")
def wheel_install(tmp_path_factory):
    """(the wheel, the folder it is installed into): built and installed once, with pip,
    from the working tree, no dependencies (the test's own environment provides them)."""
    root = tmp_path_factory.mktemp("packaging")
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    build = subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w",
                                  str(root / "dist"), str(REPO)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    (wheel,) = (root / "dist").glob("rnndsl-*.whl")
    site = root / "site"
    install = subprocess.run(pip + ["install", "--no-deps", "--target", str(site), str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    return wheel, site


def _run(args, cwd, site):
    env = dict(os.environ, PYTHONPATH=str(site))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_wheel_holds_the_grammar_and_every_spec(wheel_install):
    wheel, _ = wheel_install
    specs = sorted(str(p.relative_to(REPO / "specs")) for p in (REPO / "specs").rglob("*.rnn"))
    assert "lstm.rnn" in specs and "torch/lstm.rnn" in specs   # rnndsl.torch's too
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        missing = [s for s in specs if f"rnndsl/specs/{s}" not in names]
        assert not missing, f"specs missing from {wheel.name}: {missing}"
        assert "rnndsl/grammars/rnn.lark" in names
        for spec in specs:   # shipped as they are in the repository
            assert (zf.read(f"rnndsl/specs/{spec}").decode()
                    == (REPO / "specs" / spec).read_text()), spec


def test_wheel_install_used_from_another_folder(wheel_install, tmp_path):
    _, target = wheel_install
    assert (target / "rnndsl" / "grammars" / "rnn.lark").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    spec = elsewhere / "lstm.rnn"
    spec.write_text((REPO / "specs" / "lstm.rnn").read_text())
    run = _run(["-c", PROBE, str(target), str(spec)], elsewhere, target)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "ok (2, 1, 4) rnn.lark"
    cli = _run(["-m", "rnndsl", "check", "lstm.rnn"], elsewhere, target)
    assert cli.returncode == 0 and "lstm.rnn: ok: cell LSTM" in cli.stdout, cli.stderr


def test_wheel_install_uses_a_shipped_spec(wheel_install, tmp_path):
    _, site = wheel_install
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    spec = elsewhere / "tagger.rnn"
    spec.write_text(USES_SHIPPED)
    assert not (elsewhere / "lstm.rnn").exists()
    run = _run(["-c", SHIPPED_PROBE, str(site), str(spec)], elsewhere, site)
    assert run.returncode == 0, run.stderr
    loaded, listed = run.stdout.strip().splitlines()
    assert loaded == "ok (2, 1, 5) Tagger"
    assert listed.split() == sorted(p.name for p in (REPO / "specs").glob("*.rnn"))
