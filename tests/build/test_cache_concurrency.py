"""Processes sharing a build cache at once (rnndsl/cache.py, rnndsl/build.py): two loads
of one spec into a fresh cache, and two `rnndsl build`s into one folder, both succeed
and agree; and Numba's cache, beside the modules, keeps both of two versions of one
function saved at once (kernels.serialise_numba_cache_saves)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "specs" / "elman.rnn"

LOAD = """
import json, sys
import numpy as np
import rnndsl
Cell = rnndsl.load(sys.argv[1], target="cpu")
cell = Cell(dtype=np.float64, seed=0, I=2, H=3, O=2)
x = np.random.default_rng(0).standard_normal((4, 2, 2))
run = cell.forward(x)
g = cell.backward(run, {"y": np.ones((4, 2, 2))})
kernels = sys.modules[Cell.__module__]
print(json.dumps({"module": kernels.__file__,
                  "grads": {k: v.tolist() for k, v in {**g.params, **g.inputs}.items()},
                  "loaded": {k: sum(getattr(kernels, k).stats.cache_hits.values())
                             for k in ("forward_Elman", "backward_Elman")}}))
"""


def _at_once(commands: list[list[str]], tmp_path: Path) -> list[subprocess.CompletedProcess]:
    """Start every command before waiting for any, with a fresh rnndsl and Numba cache."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), RNNDSL_CACHE_DIR=str(tmp_path / "cache"),
               NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    procs = [subprocess.Popen(c, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for c in commands]
    done = []
    for p, c in zip(procs, commands):
        out, err = p.communicate(timeout=600)
        done.append(subprocess.CompletedProcess(c, p.returncode, out, err))
    for d in done:
        assert d.returncode == 0, d.stderr[-3000:]
    return done


def _leftovers(folder: Path) -> list[Path]:
    """Temporary files a writer left behind (write_atomically's and Numba's)."""
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name]


def test_two_processes_loading_one_spec_at_once_agree(tmp_path):
    """Both build (or find) the module and run: the same module file, the same
    gradients, one index entry, nothing half-written. Each kernel is compiled by one of
    them, and loaded from Numba's cache by the other (kernels.loops._one_compiler)."""
    a, b = (json.loads(d.stdout.strip().splitlines()[-1]) for d in _at_once(
        [[sys.executable, "-c", LOAD, str(SPEC)]] * 2, tmp_path))
    for kernel in a["loaded"]:
        assert sorted((a["loaded"][kernel], b["loaded"][kernel])) == [0, 1], kernel
    assert a["module"] == b["module"]
    assert a["grads"].keys() == b["grads"].keys()
    for k in a["grads"]:
        assert np.array_equal(a["grads"][k], b["grads"][k]), k
    cache = tmp_path / "cache"
    assert [p.name for p in cache.glob("*.py")] == [Path(a["module"]).name]
    assert len(list((cache / "index").glob("*.json"))) == 1
    assert _leftovers(tmp_path) == []
    # and a third process, warm, loads what they left
    warm = json.loads(_at_once([[sys.executable, "-c", LOAD, str(SPEC)]],
                               tmp_path)[0].stdout.strip().splitlines()[-1])
    assert warm["grads"] == a["grads"] and warm["loaded"] == {k: 1 for k in a["loaded"]}


def test_two_builds_into_one_folder_at_once_agree(tmp_path):
    from rnndsl.build.cache import compiler_hash
    from rnndsl.build.modules import build_source
    from rnndsl.lang.specfile import read_spec
    out = tmp_path / "built"
    _at_once([[sys.executable, "-m", "rnndsl", "build", str(SPEC), "-o", str(out)]] * 2,
             tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["elman.py"]
    assert (out / "elman.py").read_text() == build_source(read_spec(SPEC),
                                                          compiler=compiler_hash())


def test_two_saves_of_one_function_at_once_keep_both(tmp_path):
    """Two processes saving two signatures of one function: here two threads, each
    with its own handle on one index, both reading the empty index before either
    writes it (unless a save waits for the other, as rnndsl makes them). Each
    signature must load back its own data."""
    import rnndsl.kernels.loops  # noqa: F401  serialises the saves
    from numba.core.caching import IndexDataCacheFile
    handles = [IndexDataCacheFile(str(tmp_path), "f-1.py311", "stamp") for _ in range(2)]
    both_read = threading.Barrier(2)
    for handle in handles:
        def read(load=handle._load_index):
            overloads = load()
            try:
                both_read.wait(timeout=1.0)
            except threading.BrokenBarrierError:     # the other save is waiting on ours
                pass
            return overloads
        handle._load_index = read
    saves = [threading.Thread(target=h.save, args=(key, data))
             for h, key, data in zip(handles, ("sig_a", "sig_b"), ("code A", "code B"))]
    for s in saves:
        s.start()
    for s in saves:
        s.join()
    fresh = IndexDataCacheFile(str(tmp_path), "f-1.py311", "stamp")
    assert (fresh.load("sig_a"), fresh.load("sig_b")) == ("code A", "code B")
