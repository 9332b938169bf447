"""What counts as a whole number where the user gives one (a seed, a row count, a number
of steps, a dim): a Python or NumPy integer, never a bool (True is an int to Python, and
`seed=True` or `steps=True` is a mistake, not 1)."""

from __future__ import annotations

import numpy as np


def is_whole(value, low: int = 0) -> bool:
    """An int (Python's or NumPy's, not a bool) of at least `low`."""
    return (isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
            and value >= low)
