"""codegen/naming.py: the one rule that names the values of IR nodes."""

from __future__ import annotations

import keyword

from rnndsl.codegen.naming import ValueNames, spell


def test_spec_names_are_spelled_as_identifiers():
    assert spell("i") == "i"
    assert spell("c'") == "c__next"
    assert spell("l1.h") == "l1__h" and spell("l1.c'") == "l1__c__next"
    assert spell("dropout.1.x") == "dropout__1__x"
    assert spell("x_r") == "x_r_"           # a stem never ends in `_r` (rows views)
    assert spell("lambda") == "lambda"      # the prefix makes it e_lambda


def test_what_is_not_a_spec_name_keeps_its_number():
    """Anything but a spec name (the unrolled graph's `h'[t=3]`, text that could end a
    line) is never spelled into the source."""
    for name in ("h'[t=3]", "a b", "x)\nimport os", "", "1x", "c''", "a..b"):
        assert spell(name) is None, name
    names = ValueNames({5: "h'[t=3]", 6: "x)\nimport os"})
    assert names("e", 5) == "e5" and names("tape", 6) == "tape6"


def test_names_and_numbers_and_prefixes_never_meet():
    names = ValueNames({19: "i", 37: "c'", 40: "l1.h", 41: "e_i"})
    assert [names("e", n) for n in (19, 37, 40, 41, 17)] == \
        ["e_i", "e_c__next", "e_l1__h", "e_e_i", "e17"]
    assert names("tape", 19) == "tape_i" and names("w", 37) == "w_c__next"
    for n in (19, 37, 40, 41, 17):
        for prefix in ("e", "w", "v", "tape", "wpt", "gT"):
            made = names(prefix, n)
            assert made.isidentifier() and not keyword.iskeyword(made), made


def test_two_nodes_spelled_alike_both_keep_their_numbers():
    """c' and a layer c's value `next` spell alike (c__next): neither takes the name."""
    names = ValueNames({7: "c'", 8: "c.next", 9: "h"})
    assert names("e", 7) == "e7" and names("e", 8) == "e8" and names("e", 9) == "e_h"
