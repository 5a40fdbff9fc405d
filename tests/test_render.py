"""specc/lang/render.py: the one spelling of a Python value as spec text, read back by the parser as that value."""

import pytest

from specc.core import nodes as n
from specc.lang.fmt import format_expr
from specc.lang.render import is_name, render_shape, render_value, spec_string
from specc.lang.syntax import parse_text


@pytest.mark.parametrize("value, text", [
    (True, "true"), (False, "false"), (None, "none"), (3, "3"), (-2, "-2"), (0.5, "0.5"), (1e-05, "1e-05"),
    ("relu", "relu"), ("two words", '"two words"'), ("none", '"none"'), ("model", '"model"'),
    ("tab\there", '"tab\\there"'), ((4,), "(4,)"), ((), "()"), ((1, 2), "(1, 2)"), ([], "[]"),
    ([1, (2, "same")], "[1, (2, same)]"),
])
def test_values_are_spelled_as_the_parser_reads_them(value, text):
    assert render_value(value) == text
    spec = parse_text(f"model m {{\n  input x: (4,)\n  dense(1, k={text})\n}}\n", "r.model")
    [arg] = spec.models[0].body[-1].steps[0].kwargs
    assert format_expr(arg.value) == text  # read back, and written again the same


def test_what_has_no_spelling_is_refused():
    with pytest.raises(ValueError):
        render_value(float("inf"))
    with pytest.raises(TypeError):
        render_value({"a": 1})


def test_a_leaf_spells_what_it_knows_inside_sequences_too():
    seen = []

    def leaf(v):
        seen.append(v)
        return "1.5" if isinstance(v, float) else None

    assert render_value([0.25, ("a", 2.0)], leaf) == "[1.5, (a, 1.5)]"
    assert seen == [[0.25, ("a", 2.0)], 0.25, ("a", 2.0), "a", 2.0]


def test_shapes_and_names():
    assert render_shape([None, 28, 28]) == "(none, 28, 28)" and render_shape((4,)) == "(4,)"
    assert render_shape(["data.features"]) == "(data.features,)"
    assert is_name("dense_1") and not is_name("1x") and not is_name("True") and not is_name("a.b")
    assert spec_string('say "hi"\n') == '"say \\"hi\\"\\n"'


def test_fmt_writes_tuples_and_lists_as_render_does():
    tup = n.Tuple(items=[n.Number(value=4, text="4")])
    lst = n.List(items=[n.Str(value="a b"), n.Name(id="same")])
    assert format_expr(tup) == render_value((4,)) and format_expr(lst) == render_value(["a b", "same"])
