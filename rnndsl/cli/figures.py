"""The pictures `train --plot` and `sweep --plot` draw, and how they are saved."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

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


def plot_losses(history, val_history, path: str, title: str) -> None:
    """`train --plot`: the loss a step (and its mean of 20) and the validations, in
    bits/char, against the step."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = np.array([h[0] for h in history])
    loss = np.array([h[1] for h in history]) / math.log(2)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, loss, lw=0.6, alpha=0.4, label="per step")
    if len(loss) >= 20:
        smooth = np.convolve(loss, np.ones(20) / 20, mode="valid")
        ax.plot(steps[19:], smooth, lw=1.5, label="mean of 20")
    if val_history:
        ax.plot([v[0] for v in val_history], [v[1] for v in val_history], "o-", lw=1.5,
                ms=3, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (bits/char)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    try:
        save_figure(fig, path)
    finally:
        plt.close(fig)
