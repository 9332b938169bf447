"""The IR and its derivatives: graph.py (a checked cell -> the networkx graph of one step,
`lower`, and of T steps, `unroll`), simplify.py, grad.py (a table of VJP rules -> the
adjoint graph), interp.py (NumPy over the unrolled graph: the reference) and dot.py
(Graphviz).
"""
