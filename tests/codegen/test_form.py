"""The structured kernel form (rnndsl/codegen/form.py): what the passes read from it,
on small hand-built forms."""

from rnndsl.codegen import form
from rnndsl.codegen.emit_cuda import kinds
from rnndsl.codegen.form import Arr, Assign, Block, Call, Code, Reshape, Sym, code, fix
from rnndsl.codegen.printer_py import Printer

T, B, t, r, j = (Sym(n, "i") for n in ("T", "B", "t", "r", "j"))
a, b, mm = Sym("a", "a2"), Sym("b", "a2"), Sym("mm0", "a2")


def test_a_view_nothing_reads_is_pruned_and_one_read_in_a_nested_loop_is_kept():
    p = Printer()
    with p.indent("def f(a, b, flag):"):
        p.assign(Sym("v1", "a2"), Arr(a, (("all",), ("slice", Code("0"), Code("2")))))
        v2 = Sym("v2", "a2")
        p.assign(v2, Arr(a, (("all",), ("slice", Code("2"), Code("4")))))
        p.assign(Sym("v3", "a1"), Reshape(v2, Code("(4,)")))     # read by nothing
        p.assign(Sym("x", "i"), code("len({})", a))                 # not a view
        with p.indent(form.for_loop(t, code("range({})", T))):
            with p.indent(form.for_loop(r, code("range({})", B))):
                p.call("copy1", Arr(b, fix(r)), Arr(Sym("v1", "a2"), fix(r)))
        with p.indent(code("if {}:", Sym("flag", "x"))):
            p.assign(Sym("v4", "a1"), Arr(b, fix(Code("0"))))   # the block's only line
    pruned = form.text(form.prune_dead_views(p.body))
    assert "v1 = a[:, 0:2]" in pruned and "x = len(a)" in pruned and "v4 = b[0]" in pruned
    assert "v2" not in pruned and "v3" not in pruned       # v3 first, then v2 with it
    assert "copy1(b[r], v1[r])" in pruned
    compile(pruned, "<pruned>", "exec")


def test_a_kernels_parameters_are_its_free_names_with_the_kinds_the_emitter_gave():
    e, k0, tape = Sym("e5", "f"), Sym("k0", "f"), Sym("tape3", "a3")
    dim = Code("2 * dim_H", [Sym("dim_H", "i")])
    body = [Assign(Code("j, r", [j, r]), Code("cuda.grid(2)"), unpack=True),
            Block(code("if {} < {} and {} < {}:", j, dim, r, B), [
                Assign(e, code("{} * {}", Arr(a, fix(r, j)), k0)),
                Assign(Arr(tape, fix(t, r, j)), e),
                Assign(Arr(b, fix(r, j)), Arr(Arr(tape, fix(t)), fix(r, j)), op="+=")])]
    params = form.free_syms(body)
    # the grid's variables and e5 are bound; tape3 is 3-D however it is indexed
    assert kinds(params) == [("B", "i"), ("a", "a2"), ("b", "a2"), ("dim_H", "i"),
                             ("k0", "f"), ("t", "i"), ("tape3", "a3")]


def test_a_name_of_two_kinds_is_an_emitter_bug():
    body = [Call("copy2", (Sym("w1", "a2"), Sym("w1", "a1")))]
    try:
        form.free_syms(body)
    except AssertionError as exc:
        assert "w1" in str(exc)
    else:
        raise AssertionError("w1 of two kinds was accepted")


def test_an_operands_items_are_data():
    view = Arr(mm, (("all",), ("slice", Code("dim_H", [Sym("dim_H", "i")]), None)))
    assert view == "mm0[:, dim_H:]" and view.array is mm
    assert view.items[1][1].syms[0].kind == "i"
    assert {s.name for s in view.syms} == {"mm0", "dim_H"}
    step = Arr(Arr(Sym("hist_c", "a3"), fix(t)), fix(r, j))
    assert step == "hist_c[t][r, j]" and step.array.name == "hist_c"


def test_every_specs_drivers_are_pruned_and_read_every_constant_they_keep():
    from pathlib import Path

    from rnndsl.codegen.emit import _Emitter
    from rnndsl.lang.specfile import read_spec
    from rnndsl.pipeline import plan_cell
    for path in sorted(Path(__file__).resolve().parents[2].glob("specs/*.rnn")):
        for cell in read_spec(path).cells.values():
            em = _Emitter(plan_cell(cell), str(path), "", "")
            fwd, _ = em.forward_kernel(em.kernel_nodes("forward"))
            em.backward_kernel(em.kernel_nodes("backward"))
            once = form.prune_dead_views(form.fill_consts(fwd))
            assert form.text(form.prune_dead_views(once)) == form.text(once), path
            read = {s.name for st in form.walk(once) for s in st.reads()}
            kept = {st.target.name for st in form.walk(once)
                    if isinstance(st, Assign) and isinstance(st.target, Sym)
                    and st.target.kind == "f" and st.target.name.startswith("k")}
            assert kept and kept <= read, (path, kept - read)


def test_the_persistent_pass_reads_operands_items_and_kinds_from_the_form():
    """A step's copy into columns of a work array from a tape's step: the phase indexes
    both at full rank from the operands' items, and the kernel's parameters (hist_c a
    3-D array, dim_H an int that only a slice bound names) come from the same data."""
    from rnndsl.codegen.emit_persistent import PersistentLoop
    dim_h = Sym("dim_H", "i")
    w, hist = Sym("w3", "a2"), Sym("hist_c", "a3")
    cols = (("all",), ("slice", dim_h, code("2 * {}", dim_h)))
    loop = form.for_loop(t, code("range({})", T))
    loop.body = [Call("copy2", (Arr(w, cols), Arr(hist, fix(t))))]
    made = PersistentLoop([loop], {}, Sym("k0", "f")).kernel("f_steps", "test")
    assert "w3[r, dim_H + j] = hist_c[t, r, j]" in made.text
    assert [(p, p.kind) for p in made.params] == [("T", "i"), ("dim_H", "i"),
                                                  ("hist_c", "a3"), ("w3", "a2")]
    # the extent of the destination's columns, from the slice's bounds
    assert "(2 * dim_H - dim_H)" in made.text
