"""The register tile's shape, shared by the tiles' generator (codegen/gemm_gen.py), the
GEMM drivers (kernels/gemm.py) and the cells that split batches into row blocks."""

MR = 8          # rows of A a tile holds
NR = 16         # columns of a panel (one 512-bit vector of float32, two of float64)
