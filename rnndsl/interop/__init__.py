"""rnndsl cells inside other frameworks: torch.py (a cell as a `torch.nn.Module`, its
gradients through a `torch.autograd.Function` over the cell's own BPTT) and
torch_rnn.py (`from_torch`: torch.nn.RNN, LSTM and GRU as rnndsl cells, weights in and
out). Takes cells (rnndsl.cells) and gives framework objects; nothing below this layer
imports a framework, and `import rnndsl` imports none (tests/interop).

Also: jax.py (a cell as a JAX function: a `jax.custom_vjp` over the cell's forward and
BPTT through `jax.pure_callback`; `rnndsl.jax` is its face) and safetensors.py (a cell's
params as a safetensors file carrying the spec, checked on load as checkpoints are: it
reuses train.checkpoint, so this layer sits above train).
"""
