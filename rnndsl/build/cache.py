"""The build cache: where built modules live, how they are keyed, and how a warm load
finds one without reading its spec again.

`build.cached_module` writes a spec's module into `cache_dir()` under a key made of the
spec's hash (with the files it uses), rnndsl's own code, the target, the passes and the
variant. Finding that key means parsing and checking the spec, and the module's own
last lines read the spec once more to make its cell classes: with the imports that
takes (Lark, networkx), about 0.2 s of a warm load that otherwise spends 0.45 s starting
Python, NumPy, Numba and SciPy. So two small files spare a warm load both readings:

- an **index entry** (`index/<key>.json`), keyed by the spec file's resolved path and
  raw text, rnndsl's code, the target and the cell asked for. It names the module and
  the class, and holds a hash of the text of every file the spec uses, checked on each
  hit: an edited used file sends the load the slow way, which rebuilds;
- a **pickle of the checked spec file** beside the module (`<module>.spec.pickle`),
  which the module's class-making reads instead of the spec text it carries, when the
  pickle's digest is the module's SPEC_HASH.

Both are written atomically and only ever read from the cache folder, whose .py files
Python executes anyway; either missing or stale, the load takes the slow way and
writes them again. Modules written by `rnndsl build -o DIR` have neither: they read
their spec text, and load wherever they are copied.

Several processes may load, build and compile into one cache at once (test workers, a
load and its compile_ahead child, two trainings starting): every file here is written
to a fresh temporary name and renamed, and a module's text depends only on its key, so
whichever writer renames last leaves the same bytes. Numba's own cache beside the
modules needed one fix: kernels.serialise_numba_cache_saves.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pickle
import sys
import threading
from pathlib import Path

from ..core.files import write_atomically
from ..core.version import __version__


def cache_dir() -> Path:
    """$RNNDSL_CACHE_DIR, else $XDG_CACHE_HOME/rnndsl, else ~/.cache/rnndsl."""
    env = os.environ.get("RNNDSL_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rnndsl"


_COMPILER_HASH: str | None = None


def compiler_hash() -> str:
    """A hash of rnndsl's own code (every module under the package) and of the grammar:
    a changed compiler never serves an old build."""
    global _COMPILER_HASH
    if _COMPILER_HASH is None:
        from ..lang.shipped import grammar_path
        h = hashlib.sha256(__version__.encode())
        package = Path(__file__).resolve().parent.parent
        for path in sorted(package.rglob("*.py")):    # every stage, not one folder
            h.update(str(path.relative_to(package)).encode())
            h.update(path.read_bytes())
        grammar = Path(str(grammar_path()))            # it decides what a spec means
        h.update(grammar.name.encode())
        h.update(grammar.read_bytes())
        _COMPILER_HASH = h.hexdigest()[:16]
    return _COMPILER_HASH


def target_key(target: str) -> str:
    """The target as build keys name it: for the cpu, with the register tile this
    process compiles for (rnndsl.kernels.tile_sizes), which a generated module's text
    holds, so that a cache shared by machines of two kinds keeps one module each."""
    if target != "cpu":
        return target
    from ..kernels.tile_sizes import NR, tile_choice
    return f"cpu, tiles {tile_choice()[0]}x{NR}"


def module_name_for(path: Path) -> str:
    """A stable module name for a built file: its stem plus a hash of its folder."""
    folder = hashlib.sha256(str(path.resolve().parent).encode()).hexdigest()[:10]
    return f"_rnndsl_{path.stem}_{folder}"


def load_built(path: Path, name: str | None = None):
    """Import a built module file (or return it if this process already has it), under
    `name` (default: `module_name_for(path)`). One thread at a time: the module is in
    sys.modules while it runs (its classes are made from it), and a second thread took
    it from there half made ("module ... has no attribute 'CharLSTM_part1'")."""
    name = name or module_name_for(path)
    with _LOADING:
        mod = sys.modules.get(name)
        if mod is not None and getattr(mod, "__file__", None) == str(path):
            return mod
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module


_LOADING = threading.RLock()      # re-entrant: a module's import may load another


# ------------------------------------------------------------------ the checked spec
def spec_pickle_path(module_path: Path) -> Path:
    return Path(module_path).with_suffix(".spec.pickle")


def remember_spec(spec_file, module_path: Path) -> None:
    """Keep the checked spec file beside its cached module (best effort)."""
    target = spec_pickle_path(module_path)
    if target.is_file():
        return
    try:
        write_atomically(target, pickle.dumps(spec_file, protocol=pickle.HIGHEST_PROTOCOL))
    except (OSError, pickle.PicklingError, TypeError, AttributeError):
        pass     # the module reads its spec text instead


def recalled_spec(module):
    """The checked spec file kept beside `module`, if it is there and is the spec the
    module was built from (its digest is the module's SPEC_HASH); else None."""
    file = getattr(module, "__file__", None)
    if not file:
        return None
    path = spec_pickle_path(Path(file))
    if not path.is_file():
        return None
    try:
        spec_file = pickle.loads(path.read_bytes())
        digest = spec_file.digest
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError,
            TypeError, ValueError, IndexError):   # damaged or foreign: read the spec text
        return None
    return spec_file if digest == getattr(module, "SPEC_HASH", None) else None


# ------------------------------------------------------------------ the warm index
def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _index_path(path, spec_path: Path, text: str, target: str, cell: str | None,
                off: tuple[str, ...]) -> Path:
    """The entry of a load of `path`, as given (`specs/lstm.rnn`; the entry records the
    paths a cell and its used files are shown by, which follow from it) and resolved."""
    key = hashlib.sha256("\0".join([str(path), str(spec_path), text, compiler_hash(),
                                    target_key(target), str(cell), *off]).encode())
    return cache_dir() / "index" / f"{key.hexdigest()[:32]}.json"


def warm_class(path, target: str, cell: str | None, off: tuple[str, ...] = ()):
    """(class, shown, files) that a previous load of this spec file (with these passes
    off) made, if the index knows it and nothing it depends on changed; else None (then
    load the slow way, then remember). The module's class may have been made by a load
    of another file of the same text: `shown` is the path this load's cell is shown by,
    and `files` the texts of the files it uses by the paths `use` reached them through
    (cells/load.py gives the class these)."""
    try:
        spec_path = Path(path).resolve()
        text = spec_path.read_text()
        entry = json.loads(_index_path(path, spec_path, text, target, cell, off).read_text())
        texts = {}
        for used, digest in entry["uses"].items():
            texts[used] = Path(used).read_text()
            if _text_hash(texts[used]) != digest:
                return None
        if any(Path(p).exists() for p in entry.get("absent", ())):
            return None     # a file now shadows a shipped spec that the entry used
        module_path = Path(entry["module"])
        if not module_path.is_file():
            return None
        files = {shown: texts[used] for shown, used in entry["files"].items()}
        cls = getattr(load_built(module_path), entry["class"])
        return cls, str(entry["shown"]), files
    except (OSError, ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError,
            SyntaxError, NameError, ImportError):
        return None          # stale, or the module damaged on disk: the slow way rebuilds


def _shadowing_paths(spec_path: Path, uses: dict[str, str]) -> list[str]:
    """Where a file would take the place of a shipped spec that this load used: a `use`
    looks in the using file's folder before the shipped specs (spec.read_spec), so a file
    of that name appearing beside the spec or beside one of its own used files makes the
    entry stale."""
    from ..lang.shipped import specs_dir
    shipped_folder = specs_dir().resolve()
    shipped = [Path(p) for p in uses if Path(p).resolve().parent == shipped_folder]
    folders = {spec_path.parent} | {Path(p).parent for p in uses
                                    if Path(p).resolve().parent != shipped_folder}
    return sorted(str(folder / s.name) for folder in folders for s in shipped)


def remember_class(path, target: str, cell: str | None, spec_file, cls,
                   off: tuple[str, ...] = ()) -> None:
    """Write the index entry `warm_class` reads for this load (best effort)."""
    module = sys.modules.get(cls.__module__)
    module_file = getattr(module, "__file__", None)
    if not module_file or Path(module_file).resolve().parent != cache_dir().resolve():
        return    # only modules of the cache folder
    try:
        spec_path = Path(path).resolve()
        text = spec_path.read_text()
        if text != spec_file.source.text:
            return    # the file changed under us: remember nothing
        # each used file by the path `use` reached it through, links kept: a link
        # pointed elsewhere since is then read anew (its old target has not changed)
        uses = {os.path.abspath(p): _text_hash(t) for p, t in spec_file.used_files.items()}
        # the path as this process imported it: load_built then finds the same module
        entry = {"module": module_file, "class": cls.__name__, "uses": uses,
                 "absent": _shadowing_paths(spec_path, uses),
                 "shown": str(cls.spec.source.path),
                 "files": {str(p): os.path.abspath(p) for p in spec_file.used_files}}
        write_atomically(_index_path(path, spec_path, text, target, cell, off),
                         json.dumps(entry, indent=1).encode())
    except (OSError, UnicodeDecodeError):
        pass
