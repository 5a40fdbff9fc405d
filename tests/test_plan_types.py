"""The plan's settings are typed (`specc.core.plan`): a tokenizer, a task, the `expect` contracts and the facts of
the data are models, not dicts with a "kind" key; they dump to the plain data they always did (the facts cache
hashes it), print as the spec writes them (`specc diff`), and a value of the wrong type is a located error."""

from typing import get_args

import pytest

import specc
from specc.compile import expect
from specc.core import plan as p
from specc.core.errors import SpecError
from specc.data import facts
from specc.lang.sections import TASKS, TOKENIZERS, TRAIN
from specc.tools.diff import diff_settings, show

HEAD = "model m {\n  input x: (4,)\n  dense(2)\n}\n"
TEXT = "model m {\n  input x: (8,)\n  embedding(100, 4)\n  flatten\n  dense(2)\n}\n"


def _data(settings: str) -> p.DataPlan:
    plan = specc.loads(TEXT + "data {\n  file: \"t.txt\"\n  sequence_length: 8\n" + settings + "}\n").plan
    assert plan.data is not None
    return plan.data


def test_tokenizer_and_task_are_typed_and_dump_as_before():
    trained = _data("  tokenizer: wordpiece(vocab_size=2000)\n  task: masked_tokens\n")
    assert trained.tokenizer == p.TokenizerPlan(kind="wordpiece", vocab_size=2000)
    assert trained.task == p.MaskedTokens(rate=0.15) and trained.task_kind == "masked_tokens"
    dumped = trained.model_dump(mode="json")
    assert dumped["tokenizer"] == {"kind": "wordpiece", "vocab_size": 2000}
    assert dumped["task"] == {"kind": "masked_tokens", "rate": 0.15}

    saved = _data("  tokenizer: \"runs/pretrain\"\n  task: next_token\n")
    assert saved.tokenizer == p.SavedTokenizer(path="runs/pretrain")
    assert saved.task == "next_token" == saved.task_kind
    assert saved.model_dump(mode="json")["tokenizer"] == {"path": "runs/pretrain"}
    assert _data("  tokenizer: chars\n").task_kind == "classify"


def test_typed_settings_print_as_the_spec_writes_them():
    """`specc diff` shows a setting as spec text; a tokenizer or task printed as a dict before."""
    a = specc.loads(TEXT + "data {\n  file: \"t.txt\"\n  sequence_length: 8\n  tokenizer: chars\n}\n").plan
    b = specc.loads(TEXT + "data {\n  file: \"t.txt\"\n  sequence_length: 8\n"
                    "  tokenizer: words(vocab_size=8000)\n  task: masked_tokens(rate=0.2)\n}\n").plan
    changes = {c.key: (show(c.old), show(c.new)) for c in diff_settings(a, b)}
    assert changes["data.tokenizer"] == ("chars", "words(vocab_size=8000)")
    assert changes["data.task"] == ("classify", "masked_tokens(rate=0.2)")
    assert str(p.SavedTokenizer(path="runs/pretrain")) == '"runs/pretrain"'


def test_expect_and_facts_are_the_plans_types():
    plan = specc.loads(HEAD + "train { loss: mse }\nexpect { params: at_most(12) }\n").plan
    assert isinstance(plan.expect, p.ExpectPlan) and str(plan.expect.params) == "at_most(12)"
    # Importable where they were: the same classes.
    assert (expect.ExpectPlan, expect.Bound, expect.LossTarget) == (p.ExpectPlan, p.Bound, p.LossTarget)
    assert (facts.Facts, facts.FACT_NAMES) == (p.Facts, p.FACT_NAMES)
    with pytest.raises(ValueError):  # the plan holds facts, nothing else
        p.Plan(name="m", inputs=[], layers=[], outputs=[], facts={"examples": 3})


@pytest.mark.parametrize("setting, shown", [
    ("loss: 3", "`3`"), ("loss: mse; optimizer: 3", "`3`"), ("loss: mse; metrics: [accuracy, 1]", "`['accuracy', 1]`")])
def test_a_training_object_of_the_wrong_type_is_a_located_error(setting, shown):
    """Keras failed on these at `run` (`loss: 3`); the plan's types find them at `check`, where they are written."""
    line = "train { " + setting + " }"
    with pytest.raises(SpecError) as info:
        specc.loads(HEAD + line + "\n")
    (diag,) = info.value.diagnostics
    key, value = (part.strip() for part in setting.rsplit(";", 1)[-1].split(":"))
    assert diag.message == f"{TRAIN[key].mistake()}, got {shown}"  # `loss` is a Keras loss, got `3`
    assert (diag.span.line, diag.span.col) == (5, line.rindex(value) + 1)


def test_per_output_losses_and_metrics_still_check():
    two = "model m {\n  input x: (4,)\n  a = x -> dense(3)\n  b = x -> dense(1)\n  output a, b\n}\n"
    train = specc.loads(two + "train {\n  loss: [mse, mae]\n  metrics: [[accuracy], [mae]]\n}\n").plan.train
    assert train is not None and train.loss == ["mse", "mae"] and train.metrics == [["accuracy"], ["mae"]]


def test_the_registry_names_the_kinds_the_plan_types():
    """`specc.lang.sections` lists the tokenizers and tasks a spec may write; the plan's types take exactly those."""
    assert TOKENIZERS == get_args(p.TokenizerPlan.model_fields["kind"].annotation)
    assert TASKS == get_args(p.TaskKind)
