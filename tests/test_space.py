"""Search spaces in the language (`specc.compile.space`): found, named, checked at every value, substituted."""

import json
import subprocess
import sys

import pytest

import specc
from specc.compile.space import corner, default_point, substitute, values_in
from specc.core.errors import SpecError

MLP = """\
# a tuned MLP
let width = choice(64, 128, 256)  # the width

model mlp {
  input x: (28, 28)
  flatten -> dense(width, activation=choice(relu, gelu)) -> dropout(uniform(0.0, 0.5))
  dense(intrange(16, 64, step=16)) -> reshape((4, 4, -1))
  flatten -> dense(10, activation=softmax)
}

train {
  loss: sparse_categorical_crossentropy
  optimizer: adam(loguniform(1e-4, 1e-2))
  batch_size: choice(32, 64)
}
"""


def spaces_of(text):
    return {d.name: d for d in specc.loads(text, "t.model").plan.space}


def test_spaces_are_named_by_their_let_or_where_they_stand():
    dims = spaces_of(MLP)
    assert list(dims) == ["width", "dense.activation", "dropout.rate", "dense.units", "adam.learning_rate",
                          "batch_size"]
    assert dims["width"].kind == "choice" and dims["width"].choices == [64, 128, 256]
    assert dims["dense.activation"].choices == ["relu", "gelu"]  # names: as written
    assert dims["dense.units"].step == 16 and (dims["dense.units"].low, dims["dense.units"].high) == (16, 64)
    assert dims["adam.learning_rate"].written == "loguniform(1e-4, 1e-2)"


def test_names_used_twice_are_numbered_and_block_parameters_name_their_spaces():
    text = """
block res(filters) {
  conv2d(filters, 3, padding=same)
}
model m {
  input x: (8, 8, 3)
  res(choice(4, 8)) -> dense(choice(2, 3)) -> dense(choice(5, 6))
  repeat intrange(1, 3) { dense(4) }
}
"""
    assert list(spaces_of(text)) == ["res.filters", "dense.units", "dense.units_2", "repeat"]


def test_the_default_point_is_documented_per_kind_and_default_wins():
    dims = spaces_of(MLP)
    assert default_point(list(dims.values())) == {
        "width": 64, "batch_size": 32, "dense.activation": "relu", "dropout.rate": 0.25, "dense.units": 32,
        "adam.learning_rate": 0.001}
    text = MLP.replace("uniform(0.0, 0.5)", "uniform(0.0, 0.5, default=0.1)").replace(
        "choice(64, 128, 256)", "choice(64, 128, 256, default=256)")
    dims = spaces_of(text)
    assert dims["dropout.rate"].default == 0.1 and dims["width"].default == 256
    plan = specc.loads(text, "t.model").plan
    assert plan.layers[1].kwargs["units"] == 256 and plan.constants["width"] == 256  # the plan is the default point


@pytest.mark.parametrize("space, where, message", [
    ("choice(3)", "choice", "at least two values"),
    ("choice(1, 2, 1)", "1)", "lists 1 twice"),
    ("uniform(1.0, 0.5)", "1.0", "not below the high end"),
    ("loguniform(0, 1)", "0,", "log scale needs ends above 0"),
    ("intrange(1, 10, step=4)", "10", "not a whole number of steps of 4"),
    ("intrange(1.5, 4)", "1.5", "whole numbers"),
    ("uniform(0, 1, stepp=2)", "stepp", "no option `stepp`"),
    ("uniform(0, 1, default=2)", "2)", "default 2 is not in the range"),
    ("choice(4, 8, default=5)", "5)", "not one of the choices"),
    ("uniform(x, 1)", "x", "ends of `uniform` are numbers"),
    ("choice(4, uniform(1, 2))", "uniform", "a space inside a space"),
])
def test_a_malformed_space_is_a_located_error(space, where, message):
    line = f"  input x: (4,)\n  dense({space})"
    text = "model m {\n" + line + "\n}\n"
    with pytest.raises(SpecError) as err:
        specc.loads(text, "t.model")
    assert message in err.value.message
    assert (err.value.line, err.value.col) == (3, text.splitlines()[2].index(where, 8) + 1)


def test_a_space_as_a_layer_and_a_space_in_tune_are_refused_where_written():
    text = "model m {\n  input x: (4,)\n  choice(dense(3), dense(4))\n}\n"
    with pytest.raises(SpecError) as err:
        specc.loads(text)
    assert "stands for a value, not a layer" in err.value.message and (err.value.line, err.value.col) == (3, 3)


def test_a_value_that_breaks_the_model_is_located_on_that_value_and_named():
    text = MLP.replace("step=16", "step=8, default=32")
    with pytest.raises(SpecError) as err:
        specc.loads(text, "t.model")
    found = {d.message.split(":")[0]: d for d in err.value.diagnostics}
    assert set(found) == {"with `dense.units` = 24", "with `dense.units` = 40", "with `dense.units` = 56"}
    d = found["with `dense.units` = 24"]
    assert "cannot take input of shape (None, 24)" in d.message and d.span.line == 7
    assert d.notes[0].startswith("it fails at line 7:") and "reshape" in d.notes[0]


def test_an_option_that_is_not_a_keras_name_is_located_on_the_option():
    with pytest.raises(SpecError) as err:
        specc.loads(MLP.replace("choice(relu, gelu)", "choice(relu, gelux)"), "t.model")
    e = err.value
    assert e.message == "with `dense.activation` = gelux: unknown activation `gelux`" and e.hint == "did you mean `gelu`?"
    assert (e.line, e.col) == (6, MLP.splitlines()[5].index("gelu") + 1)


def test_a_combination_that_breaks_only_at_a_corner_is_found():
    text = """
model m {
  input x: (4,)
  dense(choice(2, 8)) -> dense(intrange(2, 8, step=6)) -> reshape((4, -1))
}
"""
    # 2 and 8 each work with the other at its default (2 -> 2, 8 ok); the smallest corner gives (2,) -> reshape
    # (4, -1) fails; so does the default point itself.
    with pytest.raises(SpecError) as err:
        specc.loads(text)
    assert any("reshape" in d.message or "Reshape" in d.message for d in err.value.diagnostics)


def test_substitute_replaces_only_the_spaces_and_keeps_comments_and_the_result_checks():
    plan = specc.loads(MLP, "t.model").plan
    point = corner(plan.space, largest=True)
    text = substitute(MLP, plan.space, point)
    assert "# a tuned MLP" in text and "# the width" in text
    assert "let width = 256" in text and "dense(64)" in text and "batch_size: 64" in text
    assert "adam(0.01)" in text and "dropout(0.5)" in text
    assert len(text.splitlines()) == len(MLP.splitlines())
    concrete = specc.loads(text, "t.model").plan
    assert concrete.space == [] and concrete.train.batch_size == 64
    assert values_in(MLP, plan.space, text) == {d.name: d.text_of(point[d.name]) for d in plan.space}
    assert values_in(MLP, plan.space, text.replace("# the width", "# edited")) is None


def test_a_drawn_float_is_written_as_the_very_number_drawn():
    plan = specc.loads(MLP, "t.model").plan
    point = {**default_point(plan.space), "adam.learning_rate": 0.000123456789, "dropout.rate": 0.99999512}
    text = substitute(MLP, plan.space, point)
    assert "adam(0.000123456789)" in text and "dropout(0.99999512)" in text


def test_an_option_that_is_an_operation_keeps_its_meaning_in_the_text():
    text = "model m {\n  input x: (4,)\n  dense(2 * choice(1 + 1, 3))\n}\n"
    plan = specc.loads(text).plan
    assert plan.layers[0].kwargs["units"] == 4
    concrete = specc.loads(substitute(text, plan.space, default_point(plan.space))).plan
    assert concrete.layers[0].kwargs["units"] == 4


def test_a_space_over_several_lines_leaves_every_later_line_where_it_was():
    text = "let width = choice(\n  16,\n  32,\n)\nmodel m {\n  input x: (4,)\n  dense(width)\n}\n"
    plan = specc.loads(text).plan
    out = substitute(text, plan.space, {"width": 32})
    assert out.splitlines()[6] == "  dense(width)" and specc.loads(out).plan.constants["width"] == 32
    assert values_in(text, plan.space, out) == {"width": "32"}


def test_values_in_reads_options_that_hold_the_text_between_spaces():
    text = "model m {\n  input x: (8, 8, 1)\n  zeropadding2d(padding=(choice((1, 1), (2, 2)), choice((1, 1), (0, 0))))\n}\n"
    plan = specc.loads(text).plan
    point = {d.name: d.choices[-1] for d in plan.space}
    assert values_in(text, plan.space, substitute(text, plan.space, point)) == {
        plan.space[0].name: "(2, 2)", plan.space[1].name: "(0, 0)"}


def test_values_in_takes_linear_time_on_a_text_that_does_not_match():
    import time

    text = "model m {\n  input x: (4,)\n" + "  dense(choice(4, 8))\n" * 24 + "  dense(2)\n}\n"
    plan = specc.loads(text).plan
    other = "model m {\n  input x: (4,)\n" + "  dense(4)\n" * 60 + "  dense(3)\n}\n"
    began = time.perf_counter()
    assert values_in(text, plan.space, other) is None
    assert time.perf_counter() - began < 2  # a backtracking match took 35 s for 10 spaces


@pytest.mark.parametrize("text, message", [
    ("block choice(n) {\n  dense(n)\n}\nmodel m {\n  input x: (4,)\n  choice(3)\n}\n", "a block cannot be named"),
    ("device { kind: choice(cpu, gpu) }\nmodel m {\n  input x: (4,)\n  dense(3)\n}\n", "`device`'s settings are not"),
    ("language: choice(2, 1)\nmodel m {\n  input x: (4,)\n  dense(3)\n}\n", "the file's settings are not tuned"),
    ("model m {\n  input x: (4,)\n  dense(choice(3, 4, default=3, default=4))\n}\n", "`default` is given twice"),
    ("model m {\n  input x: (4,)\n  dense(intrange(1.0, 8))\n}\n", "got `1.0`"),
])
def test_spaces_where_they_cannot_be_and_odd_spellings_are_refused(text, message):
    with pytest.raises(SpecError) as err:
        specc.loads(text)
    assert message in err.value.render()


def test_a_float_range_where_a_whole_number_belongs_is_found_by_check():
    text = MLP.replace("batch_size: choice(32, 64)", "batch_size: 32\n  epochs: uniform(1, 3)")
    with pytest.raises(SpecError) as err:
        specc.loads(text, "t.model")
    assert "with `epochs` = 1.66" in err.value.message and err.value.hint == "`intrange(1, 3)` draws whole numbers"


def test_an_astronomical_intrange_is_checked_at_its_ends_without_listing_it():
    text = "model m {\n  input x: (4,)\n  dropout(0.1) -> dense(intrange(1, 100_000_000_000_000, default=8))\n}\n"
    with pytest.raises(SpecError) as err:
        specc.loads(text)
    assert "would have" in err.value.render() and "100000000000000" in err.value.render()


def test_diff_of_a_spec_and_its_chosen_values_lists_exactly_the_chosen_values():
    from specc.tools.diff import diff_plans, render_diff

    plan = specc.loads(MLP, "t.model").plan
    point = {**default_point(plan.space), "width": 128, "dense.activation": "gelu"}
    chosen = specc.loads(substitute(MLP, plan.space, point), "b.model").plan
    d = diff_plans(plan, chosen, "a.model", "b.model")
    assert {c.name: (c.old, c.new) for c in d.space} == {x.name: (x.written, x.text_of(point[x.name]))
                                                         for x in plan.space}
    assert "search space width: choice(64, 128, 256) -> 128" in render_diff(d)
    assert d.to_dict()["space"][0] == {"space": "width", "old": "choice(64, 128, 256)", "new": "128"}


def test_summary_shows_the_space_and_the_parameter_count_at_its_corners(tmp_path):
    from specc.tools.tune import describe_space, format_space

    (tmp_path / "t.model").write_text(MLP)
    out = subprocess.run([sys.executable, "-m", "specc", "summary", "t.model", "--no-cost", "--format", "json"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    described = json.loads(out.stdout)["search_space"]
    assert [d["name"] for d in described["space"]][0] == "width"
    # smallest: width 64, units 16; largest: width 256, units 64 (dense 784*w + w, w*u + u, then 10 outputs)
    small = 784 * 64 + 64 + 64 * 16 + 16 + 16 * 10 + 10
    large = 784 * 256 + 256 + 256 * 64 + 64 + 64 * 10 + 10
    assert described["params"] == {"default": 784 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10, "smallest": small,
                                   "largest": large}
    text = format_space(describe_space(specc.loads(MLP, "t.model").plan))
    assert "search space: 6 values" in text and f"{large:,} at its largest" in text


def test_a_spec_with_spaces_runs_at_its_default_point(data_dir, tmp_path):
    text = MLP.replace("train {", "data { dataset: mnist; scale: 1/255 }\ntrain {\n  epochs: 1")
    result = specc.loads(text, str(tmp_path / "t.model")).run(out=tmp_path / "run", limit=512)
    assert result.model.get_layer("dense").units == 64 and result.metrics["batch_size"] == 32
