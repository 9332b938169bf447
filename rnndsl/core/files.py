"""Files written so that a failure loses nothing: a temporary file in the same folder,
then a rename over the target (the build cache, built modules, checkpoints, pictures).
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


def _process_umask() -> int:
    # os.umask only reads the mask by setting it; at import, before any thread of ours
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _process_umask()


def write_atomically(path: Path, data: bytes) -> None:
    """Write a temporary file in the same folder, then rename: a failure at any point
    leaves the previous file intact and no temporary file behind. The file gets the
    mode `open()` would give it (0o666 less the umask), not mkstemp's owner-only 0o600,
    so a build folder can be shared as any other."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # the stem shortened: a name near the 255 bytes a file name holds fits with it,
        # where the temporary one's dot and suffix would not
        fd, tmp = tempfile.mkstemp(prefix=f".{utf8_prefix(path.stem, 100)}.", suffix=".tmp",
                                   dir=path.parent)
    except OSError as exc:    # named by the file meant, not by the temporary one
        blocker = _not_a_folder(path) if isinstance(exc, (FileExistsError, NotADirectoryError)) \
            else None
        if blocker is not None:     # mkdir said "File exists" of a folder that is not one
            raise NotADirectoryError(errno.ENOTDIR, f"{blocker} is not a folder (a file, "
                                     "or a link to nothing)", str(path)) from None
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename in (None, tmp):
            # a full disk says "No space left on device" and names no file
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        raise


def _not_a_folder(path: Path) -> Path | None:
    """The first folder on `path`'s way that is something else (a file, a link to
    nothing), if any: os.path's tests, which say False where a stat fails (no
    permission), rather than raise in the middle of reporting another error."""
    for parent in reversed(path.parents):
        if os.path.lexists(parent) and not os.path.isdir(parent):
            return parent
    return None


def utf8_prefix(text: str, size: int) -> str:
    """The longest prefix of `text` whose UTF-8 form is at most `size` bytes (a file
    name's limit counts bytes: 80 CJK characters are 240)."""
    return text.encode("utf-8", "surrogateescape")[:size].decode("utf-8", "ignore")


def printable(text: str) -> str:
    """`text` with lone surrogates (a file name that is not UTF-8, as Python decodes it:
    'r\\udce9seau.rnn') spelled as escapes: a class's __doc__, or anything else encoded
    to UTF-8, cannot hold them."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def undecodable_place(exc: UnicodeDecodeError) -> tuple[int, int]:
    """The line and column (1-based; the column counts characters, not bytes) of the
    first byte that did not decode, so that an error about a file that is not UTF-8
    names the place as every other error does: file:line:col."""
    data, at = exc.object, exc.start
    start = data.rfind(b"\n", 0, at) + 1
    line = data.count(b"\n", 0, at) + 1
    column = len(data[start:at].decode("utf-8", errors="replace")) + 1
    return line, column
