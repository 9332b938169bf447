"""Hypothesis profiles: `fast` by default, `long` with HYPOTHESIS_PROFILE=long (500 examples)."""

import os

from hypothesis import settings

# The suite runs one worker per core; kernels' BLAS threads would oversubscribe them.
os.environ.setdefault("RNNDSL_BLAS_THREADS", "1")

settings.register_profile("fast", max_examples=40, deadline=None)
settings.register_profile("long", max_examples=500, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))
