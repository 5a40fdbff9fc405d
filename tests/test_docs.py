"""Every `model` example in docs/language.md parses, checks and builds."""

import re
from pathlib import Path

import pytest

import specc
from specc.compile.build import build
from specc.lang.syntax import parse_text

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


FAMILIES = DOC.parent / "families.md"
FAMILY_SPECS = ("cifar10_resnet20", "shakespeare_gpt", "sst2_bert_pretrain", "sst2_bert_finetune", "sst2_lstm",
                "reverse_digits", "recommender", "movielens", "diabetes_regression")


def test_families_doc_shows_each_family_spec_as_it_is():
    """docs/families.md shows the specs whole; a spec edited without its copy there fails here."""
    blocks = re.findall(r"```model\n(.*?)```", FAMILIES.read_text(), re.S)
    specs = DOC.parent.parent / "specs"
    assert sorted(blocks) == sorted((specs / f"{name}.model").read_text() for name in FAMILY_SPECS)
