"""Named constants (`let`), facts of the data and training (`data.classes`, `train.steps`), and language
versions with `specc upgrade`.

Broken uses (cycles, clashes, unknown facts, a fact in its own section, too new a language) are in
tests/errors/ with their expected errors on the offending lines.
"""

import json
from pathlib import Path

import numpy as np
import pytest

import specc
from specc.cli import main
from specc.core.plan import Obj
from specc.lang.syntax import parse_text
from specc.lang.upgrade import DEFAULT_LANGUAGE, LANGUAGE, declared_language, upgrade_text

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.model"))


def _layers(plan):
    return [(layer.cls, layer.kwargs, layer.inputs) for layer in plan.layers]


def test_constants_are_used_everywhere_an_expression_is():
    with_lets = specc.loads("""
let width = 4 * 8
let blocks = width // 16
let reg = l2(1e-4)
let rate = 1 / 1000

block unit(units, regularizer=reg) {
  dense(units, kernel_regularizer=regularizer, activation=relu)
}

model m {
  input x: (width,)
  repeat blocks { unit(width) }
  dense(width // 2 - 1)
}
train { loss: mse; optimizer: adam(learning_rate=rate); batch_size: width }
""").plan
    written_out = specc.loads("""
model m {
  input x: (32,)
  repeat 2 { dense(32, kernel_regularizer=l2(1e-4), activation=relu) }
  dense(15)
}
train { loss: mse; optimizer: adam(learning_rate=0.001); batch_size: 32 }
""").plan
    assert _layers(with_lets) == _layers(written_out)
    assert with_lets.inputs[0].shape == written_out.inputs[0].shape == (32,)
    assert with_lets.train.optimizer == written_out.train.optimizer
    assert with_lets.train.batch_size == 32
    assert isinstance(with_lets.layers[0].kwargs["kernel_regularizer"], Obj)
    assert with_lets.constants == {"width": 32, "blocks": 2, "reg": "l2(1e-4)", "rate": 0.001}


def test_block_parameters_shadow_constants():
    plan = specc.loads("""
let units = 7
block b(units) { dense(units) }
model m { input x: (3,); b(5); dense(units) }
""").plan
    assert [layer.kwargs["units"] for layer in plan.layers] == [5, 7]


def _npz_spec(tmp_path, model: str, train: str = "loss: sparse_categorical_crossentropy") -> str:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(90, 6)).astype("float32")
    y = rng.integers(0, 3, size=90)  # classes 0..2
    np.savez(tmp_path / "d.npz", x=x, y=y)
    (tmp_path / "m.model").write_text(f"""
{model}
data {{ file: "d.npz"; x: x; y: y; test_split: 0.2 }}
train {{ {train} }}
""")
    return str(tmp_path / "m.model")


def test_data_facts_give_the_plan_written_with_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECC_CACHE_DIR", str(tmp_path / "cache"))
    facts = specc.load(_npz_spec(tmp_path, """
model m {
  input x: (data.features,)
  dense((data.classes + 5) * 3, activation=relu)
  dense(data.classes, activation=softmax)
}""")).plan
    numbers = specc.load(_npz_spec(tmp_path, """
model m {
  input x: (6,)
  dense(24, activation=relu)
  dense(3, activation=softmax)
}""")).plan
    assert _layers(facts) == _layers(numbers) and facts.inputs[0].shape == (6,)
    assert facts.constants == {"data.features": 6, "data.classes": 3}
    assert facts.facts.examples == 72  # 90 examples, test_split 0.2


def test_train_steps_is_what_fit_really_runs(tmp_path, monkeypatch):
    """`train.steps` is the number of optimizer updates a run makes: the schedule ends where training ends."""
    monkeypatch.setenv("SPECC_CACHE_DIR", str(tmp_path / "cache"))
    path = _npz_spec(tmp_path, "model m { input x: (6,); dense(3, activation=softmax) }",
                     "loss: sparse_categorical_crossentropy; epochs: 3; batch_size: 10; validation_split: 0.3; "
                     "optimizer: sgd(learning_rate=polynomial_decay(0.1, decay_steps=train.steps))")
    spec = specc.load(path)
    steps = spec.plan.constants["train.steps"]
    per_epoch = spec.plan.constants["train.steps_per_epoch"] if "train.steps_per_epoch" in spec.plan.constants else None
    assert per_epoch is None  # only the facts the spec names are resolved
    result = spec.run(out=tmp_path / "run", verbose=0)
    # 72 examples, of which Keras trains on floor(72 * 0.7) = 50 (ceil would be 51, 6 batches): 5 batches of 10
    assert int(result.model.optimizer.iterations.numpy()) == steps == 3 * 5
    assert spec.plan.train.optimizer.kwargs["learning_rate"].kwargs["decay_steps"] == steps


def test_summary_shows_the_resolved_values(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SPECC_CACHE_DIR", str(tmp_path / "cache"))
    path = _npz_spec(tmp_path, "let hidden = 2 * 8\nmodel m { input x: (data.features,); dense(hidden); "
                               "dense(data.classes) }")
    assert main(["summary", path, "--no-cost"]) == 0
    out = capsys.readouterr().out
    assert "let hidden    = 16" in out and "data.classes  = 3  (file d.npz)" in out
    assert "data.features = 6" in out
    assert main(["summary", path, "--no-cost", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["constants"] == {"hidden": 16, "data.features": 6, "data.classes": 3}


def test_a_fact_of_missing_data_is_a_located_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECC_CACHE_DIR", str(tmp_path / "cache"))
    text = 'model m { input x: (4,); dense(data.classes) }\ndata { file: "nowhere.npz"; x: x; y: y }\n'
    with pytest.raises(specc.UserError) as info:
        specc.loads(text, str(tmp_path / "m.model"))
    d = info.value.first
    assert (d.span.line, d.span.col) == (1, 32) and d.message.startswith("`data.classes` needs the data")


def test_a_regression_target_has_no_classes(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECC_CACHE_DIR", str(tmp_path / "cache"))
    text = "model m { input x: (1,); dense(data.classes) }\ndata { x: [[0.5], [1.5]]; y: [0.25, 2.75] }\n"
    with pytest.raises(specc.UserError) as info:
        specc.loads(text)
    assert "classes" in info.value.message and info.value.first.span.col == 32


# --- language versions and `specc upgrade` ------------------------------------------------------------------------


def test_a_file_without_a_declaration_is_version_1():
    assert DEFAULT_LANGUAGE == 1 and LANGUAGE == 2
    assert specc.loads("model m { input x: (2,); dense(1) }\ndevice: cpu\n").plan.language == 1
    assert specc.loads("language: 2\nmodel m { input x: (2,); dense(1) }\ndevice { kind: cpu }\n").plan.device == "cpu"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_upgrade_keeps_meaning_comments_and_layout(path):
    text = path.read_text()
    out = upgrade_text(text, str(path))
    assert declared_language(parse_text(out)) == LANGUAGE
    assert upgrade_text(out) == out  # nothing more to do
    assert specc.format_text(out) == out  # shipped specs are formatted, and stay so
    comments = [line.split("#", 1)[1] for line in text.splitlines() if "#" in line]
    assert [line.split("#", 1)[1] for line in out.splitlines() if "#" in line] == comments
    before, after = specc.loads(text, str(path)).plan, specc.loads(out, str(path)).plan
    assert after.model_dump() == {**before.model_dump(), "language": LANGUAGE}
    changed = [line for line in out.splitlines() if line not in text.splitlines()]
    assert set(changed) <= {"language: 2", "device {", "  kind: auto", "  kind: cpu", "}"}, changed


def test_upgrade_replaces_an_old_declaration_and_keeps_a_trailing_comment():
    text = "language: 1  # written in 2025\nmodel m {\n  input x: (2,)\n  dense(1)\n}\n\ndevice: cpu  # laptop\n"
    assert upgrade_text(text) == ("language: 2  # written in 2025\nmodel m {\n  input x: (2,)\n  dense(1)\n}\n\n"
                                  "device {\n  kind: cpu\n}  # laptop\n")


def test_upgrade_command_writes_checks_and_diffs(tmp_path, capsys):
    path = tmp_path / "old.model"
    path.write_text("# a net\n\nmodel m {\n  input x: (2,)\n  dense(1)\n}\n\ndevice: auto\n")
    assert main(["upgrade", "--check", str(path)]) == 1
    assert main(["upgrade", "--diff", str(path)]) == 1
    assert "+language: 2" in capsys.readouterr().out and "device: auto" in path.read_text()
    assert main(["upgrade", str(path)]) == 0
    assert path.read_text() == "# a net\n\nlanguage: 2\n\nmodel m {\n  input x: (2,)\n  dense(1)\n}\n\ndevice {\n  kind: auto\n}\n"
    assert main(["upgrade", "--check", str(path)]) == 0
    assert main(["check", str(path)]) == 0


@pytest.mark.parametrize("value", ["0", "v", "-1"])
def test_upgrade_refuses_a_version_it_cannot_start_from(value):
    with pytest.raises(specc.UserError) as info:
        upgrade_text(f"language: {value}\nmodel m {{\n  input x: (2,)\n  dense(1)\n}}\n")
    assert info.value.first.span.line == 1 and "from 1 to 2" in info.value.message
