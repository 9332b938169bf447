"""Saving the pictures `train --plot` and `sweep --plot` draw."""

from __future__ import annotations

import io
from pathlib import Path

from ..core.files import write_atomically


def save_figure(fig, path) -> None:
    """Write a matplotlib figure to `path` in the format its suffix names where
    matplotlib has it (.svg, .pdf, .png, ...), else PNG, all at once: rendered in
    memory, then written atomically, so that an error names the user's file (not a
    temporary one) and a failure leaves an earlier picture intact."""
    suffix = Path(path).suffix.lower().lstrip(".")
    kind = suffix if suffix in fig.canvas.get_supported_filetypes() else "png"
    buffer = io.BytesIO()
    fig.savefig(buffer, format=kind, dpi=120)
    write_atomically(Path(path), buffer.getvalue())
