"""Modules on disk: generated source (from pipeline.py) -> a file -> an imported module.

`write_module` validates the text (ast.parse, compile) and writes it atomically (a
temporary file, then a rename), so a failed build never leaves a half-written module
and the previous build stays in place. `cached_module` keeps built modules in a cache
folder keyed by the spec's hash, the rnndsl version and the passes, and reuses them
across processes. Where that folder is, how a module file is imported (`load_built`,
under a name derived from its path, the same in every process, which Numba's on-disk
cache needs) and how a warm load skips reading its spec live in `cache.py`.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import keyword
import sys
import unicodedata
from pathlib import Path

from ..core.files import utf8_prefix, write_atomically
from ..lang.specfile import SpecFile
from ..pipeline import BuildError, build_source, validate  # noqa: F401  (re-exported)
from ..schedule.plan import PASSES
from .cache import (cache_dir, compiler_hash, load_built, module_name_for, remember_spec,
                    target_key)


# The first bytes of every module rnndsl generates (codegen/module.py): `rnndsl build`
# replaces such a file, and no other without --force.
GENERATED_MARK = b'"""rnndsl kernels for '
# Module names a built module must not take: beside them in sys.path it would shadow the
# standard library's or a package that rnndsl, the kernels or an integration imports (or
# be shadowed by it): threadpoolctl.py would silently undo the kernels' hold on BLAS's
# threads. Any other package installed here is added when a module is named (`_taken`).
_TAKEN_NAMES = frozenset(sys.stdlib_module_names) | {
    "numpy", "numba", "llvmlite", "rnndsl", "lark", "networkx", "scipy", "threadpoolctl",
    "tqdm", "yaml", "numba_cuda", "torch", "jax", "jaxlib", "onnx", "onnxruntime",
    "safetensors", "dask", "distributed", "matplotlib", "music21", "hypothesis", "pytest"}


@functools.lru_cache(maxsize=1)
def _taken() -> frozenset:
    """_TAKEN_NAMES and the top-level modules of every package installed in this Python
    (a `torch.py` beside a script would shadow torch)."""
    try:
        installed = importlib.metadata.packages_distributions()
    except Exception:       # a broken distribution's metadata: the fixed list still holds
        installed = {}
    return _TAKEN_NAMES | frozenset(installed)


# how much of a spec file's name a cached module's name keeps, in UTF-8 bytes
MAX_CACHED_STEM = 40
# the longest module name `rnndsl build` writes, in UTF-8 bytes (what a file name's limit
# counts: 80 CJK characters are 240): Numba's cache files beside the module are named
# <module>.<kernel>-<line>.py311.nbi (a kernel's name is up to about 90 ASCII
# characters: a cell name is at most 64), and a file name holds at most 255 bytes
MAX_MODULE_NAME = 100



def module_file_name(spec_file: SpecFile) -> str:
    """specs/lstm.rnn -> lstm.py; a stem that is not an identifier is made one, and one
    that is a keyword, a taken module name (math, numpy, an installed package) or a
    dunder name (`__init__`, which would make the output folder a package) gets a
    prefix: cell_math.py. The stem is NFKC-normalised first, as Python normalises the
    name in `from ﬁlter import ...` (to `filter`) before it looks for the file."""
    stem = unicodedata.normalize("NFKC", Path(spec_file.source.path).stem)
    # a character that cannot go on an identifier ("x²": `from x² import` is a syntax
    # error) becomes "_"
    name = "".join(ch if ("a" + ch).isidentifier() else "_" for ch in stem)
    if not name or not name.isidentifier() or keyword.iskeyword(name) or \
            name in _taken() or name.startswith("__"):
        name = "cell_" + name
    size = len(name.encode())
    if size > MAX_MODULE_NAME:
        counted = (f"{size} characters" if size == len(name) else
                   f"{len(name)} characters, {size} bytes in UTF-8,")
        raise BuildError(f"{spec_file.source.path}: its module would be named after the "
                         f"file, in {counted} and Numba's cache files beside it, which add "
                         "each kernel's name, could not be made (a file name holds 255 "
                         f"bytes): name the spec file in at most {MAX_MODULE_NAME} "
                         "bytes of UTF-8 (a letter of ASCII takes 1, an accented one 2, "
                         "a CJK character 3)")
    return name + ".py"


def write_module(source: str, path: Path) -> None:
    """Validate, then write atomically."""
    validate(source, str(path))
    write_atomically(path, source.encode())


def cached_module(spec_file: SpecFile, passes=PASSES, target: str = "cpu",
                  variant: str | None = None):
    """The built module of a spec file, from the cache or built into it now.

    The key is the spec's hash (with the files it uses), rnndsl's own code, the target
    and the passes, so an edited spec or an upgraded rnndsl is rebuilt, never served
    stale; Numba's cache beside each module keeps its machine code across processes.
    """
    passes = tuple(sorted(passes))
    key = hashlib.sha256(
        f"{spec_file.digest}|{compiler_hash()}|{target_key(target)}|{passes}|{variant}".encode())
    stem = "".join(ch if ch.isalnum() else "_" for ch in Path(spec_file.source.path).stem)
    # the hash keeps it apart; a long stem would make Numba's cache file names, which
    # add each kernel's name, longer than a file name may be
    stem = utf8_prefix(stem, MAX_CACHED_STEM)
    path = cache_dir() / f"{stem}_{key.hexdigest()[:16]}.py"

    def build() -> None:
        try:
            write_module(build_source(spec_file, passes, target, variant,
                                      compiler=compiler_hash()), path)
        except OSError as exc:
            folder = cache_dir()
            if folder.exists() and not folder.is_dir():
                raise BuildError(f"the build cache {folder} is a file, not a folder: move "
                                 "it, or set RNNDSL_CACHE_DIR to a folder") from None
            raise BuildError(f"cannot write the build cache at {path}: {exc.strerror}; "
                             "set RNNDSL_CACHE_DIR to a writable folder") from None
    if not path.is_file():
        build()
    remember_spec(spec_file, path)    # the module's classes read it, not the spec again
    try:
        module = load_built(path)
        cells = getattr(module, "CELLS", None)      # the module's last lines define them
        if cells is not None and all(hasattr(module, name) for name in cells):
            return module
    except Exception:     # noqa: BLE001 - its import failed: rebuilt below
        pass
    # damaged on disk (cut short by a full disk, edited by hand): rnndsl writes a module
    # atomically, and one it wrote whole imports and defines every cell it lists
    sys.modules.pop(module_name_for(path), None)
    build()
    return load_built(path)
