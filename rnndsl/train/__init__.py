"""Training and using models: trainer.py (truncated BPTT), optim.py, schedule.py
(learning-rate schedules), losses.py, checkpoint.py, sample.py, data.py and corpora.py.
"""

from .trainer import Trainer  # noqa: E402,F401  (from rnndsl.train import Trainer, as in 0.1.0)
