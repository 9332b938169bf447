"""Code generation: a plan -> the text of a module of kernels. emit.py (the CPU dialect
and the shared emitter), emit_cuda.py and emit_persistent.py (the cuda target),
printer_py.py (the printer), gemm_gen.py (writes kernels/gemm_tiles.py).
"""
