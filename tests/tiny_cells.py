"""Small specs the trainer's tests share (tests/train/): an Elman recurrence with a
readout of V logits, interpreted, so that each test runs in milliseconds."""

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
