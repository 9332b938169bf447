"""Compile a cell's backward kernel in a second process while this one compiles its
forward.

A cell met for the first time compiles two kernels: its forward at the first forward
call, its backward at the first backward. Numba compiles one function at a time in a
process (its compiler lock), most of that in LLVM, so on a machine with two cores one
of them idles. An LSTM took 2.5 s and then 3.4 s here, a layer-normalised LSTM 4.4 and
8.7 s (`benchmarks/compile_time.py`).

So at a cell's first forward in a process, when its backward kernel is neither
compiled nor in Numba's cache, a child process compiles it for the exact signature the
backward call will have and writes it to Numba's cache. The first backward waits for
the child, and then loads the kernel from the cache like any later process would. If
the child fails, the backward compiles in this process, as it would have anyway.

It happens when a core is to spare (see `enabled`); RNNDSL_COMPILE_AHEAD=1 asks for it
always, 0 never. It is off on a machine with one core, and under NUMBA_DISABLE_JIT. A process that only runs forward calls (sampling) still has
its backward compiled beside it, once: the next process that trains finds it cached.

The child is `python -m rnndsl.build.compile_ahead`, reading one pickled request on stdin:
the generated module's name and file (Numba's cache is keyed by the module's name, so
the child imports it under the same one), the kernel's name, and the signature.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

from ..kernels.blas import usable_cores
from ..core.errors import BindError

# How long a backward call waits for the child before compiling in this process.
WAIT_SECONDS = 600.0


def enabled() -> bool:
    """Whether to compile ahead: RNNDSL_COMPILE_AHEAD=1 yes, 0 no; unset, when a core is
    to spare: two or more, with the load average (the last minute's) under their count.
    On a machine whose cores are all busy (a test run with a worker a core, say) a
    second process gains nothing and costs its start and the Numba internals it compiles
    again, about 1.5 s of a core. (Not "a core below": the last run's compile, seconds
    ago, still weighs in the average, and would switch it off for the run after an
    edit.) Never on one core, nor under NUMBA_DISABLE_JIT."""
    value = os.environ.get("RNNDSL_COMPILE_AHEAD", "").strip()
    if value not in ("", "0", "1"):
        raise BindError(f"RNNDSL_COMPILE_AHEAD must be 0 or 1, got {value!r}")
    if value == "0" or usable_cores() < 2:
        return False
    from numba.core import config
    if config.DISABLE_JIT:
        return False
    if value == "1":
        return True
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):    # no load average here (Windows)
        return True
    return load < usable_cores()


def load_cached(dispatcher, sig: tuple) -> bool:
    """Whether `dispatcher` has `sig`, compiled in this process or loaded now from
    Numba's cache (what Dispatcher.compile does before it compiles; nothing compiles
    here)."""
    from numba.core.compiler_lock import global_compiler_lock
    with global_compiler_lock:
        if tuple(sig) in dispatcher.overloads:
            return True
        cache = getattr(dispatcher, "_cache", None)
        if cache is None:
            return False
        cres = cache.load_overload(sig, dispatcher.targetctx)
        if cres is None:
            return False
        dispatcher._cache_hits[sig] += 1
        dispatcher.targetctx.insert_user_function(cres.entry_point, cres.fndesc,
                                                  [cres.library])
        dispatcher.add_overload(cres)
        return True


class Child:
    """A child process compiling one kernel into Numba's cache."""

    def __init__(self, process: subprocess.Popen, what: str):
        self.process, self.what = process, what
        self.returncode: int | None = None
        self.stderr = ""
        self._lock = threading.Lock()

    def wait(self, timeout: float = WAIT_SECONDS) -> bool:
        """Wait for the child (at most `timeout` s); whether it compiled the kernel."""
        with self._lock:
            if self.returncode is None:
                try:
                    _, err = self.process.communicate(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    _, err = self.process.communicate()
                self.returncode = self.process.returncode
                self.stderr = (err or b"").decode(errors="replace")
            return self.returncode == 0


def start(module, kernel: str, sig: tuple) -> Child | None:
    """Compile `module.kernel` for `sig` in a child process, unless it is compiled or
    cached already (then it is loaded here and None is returned)."""
    dispatcher = getattr(module, kernel)
    if load_cached(dispatcher, sig):
        return None
    request = pickle.dumps((module.__name__, module.__file__, kernel, tuple(sig)))
    package_root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, PYTHONPATH=package_root + (os.pathsep + path if path else ""))
    try:
        process = subprocess.Popen([sys.executable, "-m", "rnndsl.build.compile_ahead"],
                                   stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, env=env)
    except OSError:          # no processes to be had: the backward compiles here later
        return None
    try:
        process.stdin.write(request)
        process.stdin.close()
    except OSError:          # the child died at once; its stderr says why
        pass
    process.stdin = None     # written and closed: communicate() must not touch it
    return Child(process, f"{module.__name__}.{kernel}")


def _compile_request(request: bytes) -> None:
    """The child: import the module under the parent's name for it (Numba's cache key),
    and compile the kernel, which writes Numba's cache."""
    from .cache import load_built
    name, file, kernel, sig = pickle.loads(request)
    getattr(load_built(Path(file), name), kernel).compile(sig)


if __name__ == "__main__":
    _compile_request(sys.stdin.buffer.read())
