"""Parsing: the grammar, spans kept beside the tree, and golden AST fixtures.

tests/fixtures/parse/NAME.model is parsed and compared with NAME.json; run
`pytest tests/test_syntax.py --update-golden` to rewrite the .json files on purpose.
"""

import json
from pathlib import Path

import pytest

from specc.core import nodes as n
from specc.lang.syntax import _parser, grammar_text, parse_text

FIXTURES = Path(__file__).parent / "fixtures" / "parse"
CASES = sorted(FIXTURES.glob("*.model"))


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_golden_ast(path, update_golden):
    got = parse_text(path.read_text(), path.name).model_dump(mode="json")
    golden = path.with_suffix(".json")
    if update_golden:
        golden.write_text(json.dumps(got, indent=1) + "\n")
    assert golden.exists(), f"no golden file {golden.name}: run pytest --update-golden once, and review it"
    assert got == json.loads(golden.read_text())


def test_grammar_is_lalr_from_its_own_file():
    assert _parser().options.parser == "lalr"
    assert "start:" in grammar_text()


def test_layout_and_comments_do_not_change_the_tree():
    a = parse_text("model m {\n  input x: (4,)\n  dense(3, activation=relu)\n}\n")
    b = parse_text("# a comment\nmodel m { input x: (4,) ; dense(3,\n      activation = relu)  # inline\n}")
    assert a == b
    assert a.models[0].body[1].span != b.models[0].body[1].span  # the spans differ, equality ignores them


def test_spans_point_at_source():
    text = "model m {\n  input x: (4,)\n  dense(3, activation=relu)\n}\n"
    chain = parse_text(text).models[0].body[1]
    call = chain.steps[0]
    assert (call.span.line, call.span.col, call.span.end_col) == (3, 3, 28)
    assert (call.name_span.line, call.name_span.col, call.name_span.end_col) == (3, 3, 8)
    kw = call.kwargs[0]
    assert text.splitlines()[2][kw.span.col - 1: kw.span.end_col - 1] == "activation=relu"


def test_expressions():
    spec = parse_text("block b(f, k=3) { conv2d(f * 2 + 1, (k, k), strides=-1, rate=1e-3, pad=\"same\", l=[1, 2,]) }")
    call = spec.blocks[0].body[0].steps[0]
    assert call.args[0] == n.BinOp(op="+", left=n.BinOp(op="*", left=n.Name(id="f"), right=n.Number(value=2)),
                                   right=n.Number(value=1))
    assert call.args[1] == n.Tuple(items=[n.Name(id="k"), n.Name(id="k")])
    kw = {k.name: k.value for k in call.kwargs}
    assert kw["strides"] == n.Number(value=-1)
    assert kw["rate"] == n.Number(value=0.001)
    assert kw["pad"] == n.Str(value="same")
    assert kw["l"] == n.List(items=[n.Number(value=1), n.Number(value=2)])


def test_numbers():
    body = parse_text("model m { input x: (1_000,) }").models[0].body
    assert body[0].shape == [1000]
    vals = [parse_text(f"device: {t}").settings[0].value for t in ("1.5", ".5", "1e3", "2.", "1_0")]
    assert [v.value for v in vals] == [1.5, 0.5, 1000.0, 2.0, 10]


def test_statement_forms():
    spec = parse_text(
        "model m {\n input a: (3,)\n input b: (3,) int32\n h = a -> dense(2) -> relu\n"
        " [h, b] -> concatenate\n repeat 2 { dense(4) }\n parallel add { branch { dense(4) } branch {} }\n output h\n}"
    )
    body = spec.models[0].body
    assert [type(s).__name__ for s in body] == ["Input", "Input", "Chain", "Chain", "Repeat", "Parallel", "Output"]
    assert body[1].dtype == "int32"
    assert body[2].target == "h" and [type(s).__name__ for s in body[2].steps] == ["Ref", "Call", "Ref"]
    assert body[3].steps[0] == n.Refs(names=["h", "b"])
    assert body[5].branches[1].body == []


def test_windows_line_endings_and_byte_order_mark(tmp_path):
    import specc

    text = "model m {\r\n  input x: (3,)\r\n  dense(2)  # comment\r\n}\r\n"
    assert parse_text(text) == parse_text(text.replace("\r\n", "\n"))
    path = tmp_path / "bom.model"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert specc.load(path).plan.layers[0].cls == "Dense"


def test_the_wheel_ships_the_grammar():
    import tomllib

    root = Path(__file__).resolve().parent.parent
    config = tomllib.loads((root / "pyproject.toml").read_text())
    include = config["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert include == {"grammar/specc.lark": "specc/specc.lark"}
    assert grammar_text() == (root / "grammar" / "specc.lark").read_text()
