"""Every `model` example in docs/language.md parses, checks and builds."""

import re
from pathlib import Path

import pytest

import specc
from specc.build import build
from specc.syntax import parse_text

DOC = Path(__file__).resolve().parent.parent / "docs" / "language.md"
EXAMPLES = re.findall(r"```model\n(.*?)```", DOC.read_text(), re.S)


def test_doc_has_examples():
    assert len(EXAMPLES) >= 10


@pytest.mark.parametrize("text", EXAMPLES, ids=[f"example{i + 1}" for i in range(len(EXAMPLES))])
def test_doc_example(text):
    ast = parse_text(text, "docs/language.md")
    assert ast.models, "each example shows a model"
    built = build(specc.loads(text, "docs/language.md").plan)
    assert built.model.count_params() > 0
