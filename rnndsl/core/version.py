"""rnndsl's version: one place, read by the face, the generated modules' headers,
the cache's key and the checkpoints."""

__version__ = "0.1.0"
