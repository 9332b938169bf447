"""The names generated code gives the values of IR nodes: one rule, here.

Input: the graph's spec names (`Graph.names`, node id -> "i", "c'", "l1.h"). Output:
`ValueNames`, which the emitters call for every name a node's value takes (kernel.py,
buffers.py, emit.py, args.py for the tapes in a kernel's signature).

A node's value goes by a prefix, what the name holds, and the node's stem:
`e` the scalar in a fused loop, `w` a loop's work array, `v` a hoisted (T, B, size)
array or an unbatched one, `tape` a saved value (a kernel argument), `wpt` the packed
weights of a lone g @ W, `gT` a transposed cotangent; a rows view adds `_r` (`v_i_r`).

The stem is "_" and the spec's name spelled as an identifier where the node has one
(`e_i`, `tape_o`, `w_c__next`, `e_l1__h`), the node id where it has none (gradients,
temporaries: `e17`, `tape38`). The spelling:
- `ident` (dialect.py): a layer's dot becomes a double underscore (`l1.h` -> `l1__h`),
  and a name ending in `_r` takes one more underscore (`x_r` -> `x_r_`), so a stem never
  ends in `_r` and `v<stem>_r`, the rows view, is never another node's `v<stem>`;
- a prime is `__next` (`c'` -> `c__next`, `l1.c'` -> `l1__c__next`). A spec name the
  checker accepts has no double underscore unless a layer qualified it, so `c__next`
  could only be the spelling of a layer `c`'s value `next`, in a cell that also has a
  state `c`; even that meets nothing, by the next rule.
- Two nodes whose names spell alike (whatever the reason: a name given twice, a future
  pass) both keep their numbers. A name with any other character than a spec name's (the
  unrolled graph's `h[t=3]`) keeps its number too, so only [A-Za-z0-9_] ever reaches the
  text from a spec.

Why no value's name meets another name of a kernel: a named stem starts with `_`, a
number with a digit, so `e_i` is never `e17`; two prefixes differ in the letter after
the shorter one (`w_`/`w1` against `wpt_`/`wpt1`). Every other name a kernel takes is
none of the prefixes followed by `_` or a digit: the loop variables and sizes (`t`, `r`,
`j`, `i`, `B`, `T`, `R`), the constants `k<n>`, `dtype`, `tiles`, `threads`, `consts`,
the step GEMMs' path flags (`tiled<g>`, `tiledc<i>_<u>`, `tiledw<k>`, `split<g>`,
`splitc<i>_<u>`),
`want_din`, the arguments (`p_`, `in_`, `s0_`, `out_`, `fin_`, `dout_`, `hist_`, ...,
`dim_`), the state buffers (`s_`, `nx_`, `ds_`, `nds_`, `dnext_`), the groups' arrays
(`mm<g>`, `wt<g>`, `wr<g>`, `wp<g>`, `ws<i>_<u>`, `wsp`, `wsk`, `gc<i>`, `tgc<i>`, `gTc<i>`,
`dwc`), the persistent kernels' temporaries (`w`, `e`, `ea0`, `va0`, `held0`, ...), the
helpers (`copy2`, `sigmoid`, ...) and the modules (`np`, `math`, `cuda`). Nor is it a
Python keyword or builtin: `let lambda = ...` is `e_lambda`.
"""

from __future__ import annotations

import re
from collections import Counter

from .dialect import ident

# what a spec name can be: a NAME, qualified by a layer (`l1.h`, `dropout.1.x`), primed
_SPEC_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*'?\Z")
PRIME = "__next"


def spell(name: str) -> str | None:
    """A spec name as the identifier part of a stem (`c'` -> `c__next`), or None where it
    is not a spec name."""
    if not _SPEC_NAME.match(name):
        return None
    if name.endswith("'"):
        return ident(name[:-1]) + PRIME
    return ident(name)


class ValueNames:
    """node id -> its values' names in a module's kernels (see the module doc)."""

    def __init__(self, names: dict[int, str]):
        spelled = {nid: spell(name) for nid, name in names.items()}
        count = Counter(s for s in spelled.values() if s is not None)
        self.stems = {nid: "_" + s for nid, s in spelled.items()
                      if s is not None and count[s] == 1}

    def stem(self, nid: int) -> str:
        return self.stems.get(nid, str(nid))

    def __call__(self, prefix: str, nid: int) -> str:
        """The name under `prefix` of node nid's value: ("tape", 19) -> `tape_i`."""
        return prefix + self.stem(nid)
