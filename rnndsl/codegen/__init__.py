"""Code generation: a plan -> the text of a module of kernels. form.py (the structured
kernel form the emitters build and the passes read), emit.py (the emitter), buffers.py
(its allocations), dialect.py (what differs between targets: the CPU dialect, per-op
formats), kernel.py (one kernel's loop nests), naming.py (the names of the nodes'
values), module.py (the module's header and footer), emit_cuda.py and
emit_persistent.py (the cuda target), printer_py.py (the printer of the form),
gemm_gen.py (writes kernels/gemm_tiles.py).
"""
