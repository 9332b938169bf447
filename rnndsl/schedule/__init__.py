"""The schedule: plan.py takes a step graph and its adjoint and decides, as data, what
runs where (hoisting, fused matmuls, elementwise groups, deferred weight gradients,
the target's passes); `rnndsl explain` prints it.
"""
