"""rnndsl cells as JAX functions (the optional extra `pip install 'rnndsl[jax]'`).

    import rnndsl.jax
    f = rnndsl.jax.function(cell)                  # cell: any bound rnndsl cell
    outputs, state = jax.jit(f)(rnndsl.jax.params(cell), x)
    grads = jax.grad(lambda p: loss(f(p, x)[0]))(params)

The code is in rnndsl/interop/jax.py; docs/interop.md shows it in use. This face only
re-exports it, so that `import rnndsl` never imports jax.
"""

from __future__ import annotations

try:
    import jax  # noqa: F401
except ImportError as exc:          # say what to install, not just what is missing
    raise ImportError("rnndsl.jax needs JAX: pip install 'rnndsl[jax]'") from exc

from .interop.jax import function, params

__all__ = ["function", "params"]
