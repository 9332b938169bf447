"""Small specs that several test files share: an Elman recurrence with a readout of V
logits (the trainer's tests, interpreted, so that each runs in milliseconds) and a
one-to-many cell whose only input is given once a sequence."""

TINY = """
cell Tiny {
  dims I, H, V
  input x[I]
  state h[H]
  param W[H, I], U[H, H] ~ orthogonal, b[H] ~ zeros, Wo[V, H], bo[V] ~ zeros
  h' = tanh(W @ x + U @ h + b)
  output logits = Wo @ h' + bo
}
"""

# docs/language.md's one-to-many cell: its input `once`, so a call says how many steps
GENERATOR = """
cell Generator {
  dims Z, H
  input once z[Z]
  state h[H]
  param W[H, Z], U[H, H], v[1, H]
  h' = tanh(W @ z + U @ h)
  output y = v @ h'
}
"""
