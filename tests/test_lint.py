"""Lint (specc/tools/lint.py): every rule warns on a spec with the mistake and is silent once it is fixed.

Cases in tests/lint/ state their expected warnings as comments on the offending line,

    dense(2, activation=softmax)  # warning@9: W104 `dense` has 2 output units | hint: give it 3 units

(`warning@COL: CODE` then prefixes of the message and hint); each `*_fixed.model` is a corrected variant and
must lint clean. Specs with data rules carry their data inline, so no dataset is needed.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import specc
from specc.cli import main
from specc.tools.lint import COST, LINT_CODES, RULES, lint_cost, lint_plan, lint_report, rules_table

ROOT = Path(__file__).resolve().parent.parent
CASES = sorted((ROOT / "tests" / "lint").glob("*.model"))
BROKEN = [c for c in CASES if not c.stem.endswith("_fixed")]
FIXED = [c for c in CASES if c.stem.endswith("_fixed")]
ANNOTATION = re.compile(r"\bwarning@(\d+):\s*(W\d{3})\s+(.*)$")
DOC = ROOT / "docs" / "lint.md"


def expectations(path: Path) -> list[dict]:
    out = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        m = ANNOTATION.search(line)
        if m:
            message, _, hint = m.group(3).partition(" | hint: ")
            out.append({"at": (lineno, int(m.group(1))), "code": m.group(2), "message": message.strip(), "hint": hint})
    return out


def lint_file(path: Path):
    return lint_plan(specc.load(path).plan)


@pytest.mark.parametrize("path", BROKEN, ids=lambda p: p.stem)
def test_case_warns_where_stated(path):
    expected = expectations(path)
    assert expected, f"{path.name} states no expected warning"
    found = lint_file(path)
    shown = "\n".join(d.render() for d in found)
    assert len(found) == len(expected), shown
    for exp, d in zip(expected, found):  # both in source order
        assert (d.span.line, d.span.col) == exp["at"] and d.code == exp["code"], shown
        assert d.severity == "warning" and d.message.startswith(exp["message"]), shown
        assert d.hint and d.hint.startswith(exp["hint"]), shown


@pytest.mark.parametrize("path", FIXED, ids=lambda p: p.stem)
def test_fixed_variant_is_clean(path):
    found = lint_file(path)
    assert not found, "\n".join(d.render() for d in found)


def test_every_code_has_a_case_and_a_fixed_variant():
    for code in LINT_CODES:
        cases = [c for c in BROKEN if any(e["code"] == code for e in expectations(c))]
        assert cases, f"no case in tests/lint/ shows {code}"
        assert any((c.parent / f"{c.stem}_fixed.model").is_file() for c in cases), f"no fixed variant for {code}"


def test_ignore_comments_silence_exactly_their_codes():
    path = ROOT / "tests" / "lint" / "ignore_comments.model"
    text = re.sub(r"# specc: ignore(\[[^\]]*\])?", "#", path.read_text())
    found = lint_plan(specc.loads(text, str(path)).plan)
    # Without the comments: everything they silenced is back, beside the W107 they leave.
    assert sorted((d.span.line, d.code) for d in found) == [(4, "W107"), (5, "W105"), (5, "W107"), (6, "W107"),
                                                           (7, "W101")]
    assert [(d.span.line, d.code) for d in lint_file(path)] == [(5, "W107")]


def test_training_shapes_leave_the_random_state_alone():
    """W111 makes fresh layers, which draw their seeds from Python's `random`: the run's build after lint must get
    the weights it would get without lint. In a block, the warning notes the use."""
    import random

    from specc.compile.build import build_shapes

    plan = specc.load(ROOT / "tests" / "lint" / "W111_random_crop_in_block.model").plan
    built = build_shapes(plan)
    random.seed(0)
    before = random.getstate()
    found = lint_plan(plan, built)
    assert random.getstate() == before
    assert [(d.code, d.notes) for d in found] == [("W111", ["in block `augment`, used at line 9"])]


def test_run_overrides_change_the_training_steps():
    plan = specc.load(ROOT / "tests" / "lint" / "W106_schedule_horizon_fixed.model").plan
    assert lint_report(plan).diagnostics == []
    assert [d.code for d in lint_report(plan, epochs=50).diagnostics] == ["W106"]  # 150 steps, schedule 15
    assert [d.code for d in lint_report(plan, limit=4).diagnostics] == ["W106"]  # 1 step per epoch: 5 steps


def test_data_rules_are_skipped_when_the_data_cannot_be_read():
    text = ("model m { input x: (3,); dense(2, activation=softmax) }\n"
            "data { file: \"missing.npz\" }\ntrain { loss: sparse_categorical_crossentropy; batch_size: 1 }\n")
    report = lint_report(specc.loads(text, "<lint>").plan)
    assert report.diagnostics == [] and len(report.skipped) == 1 and "missing.npz" in report.skipped[0]


def test_shipped_specs_are_lint_clean():
    for path in sorted((ROOT / "specs").glob("*.model")):
        found = lint_file(path)
        assert not found, "\n".join(d.render() for d in found)


def test_check_prints_warnings_and_still_succeeds(capsys):
    path = ROOT / "tests" / "lint" / "W110_softmax_single_unit.model"
    assert main(["check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: ok\n"
    assert err.startswith(f"{path}:3:12: warning: `dense` applies softmax over a single unit") and "[W110]" in err
    assert main(["check", "--format", "json", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["errors"] == [] and [(w["severity"], w["code"], w["line"]) for w in report["warnings"]] == [
        ("warning", "W110", 3)]


def test_strict_makes_warnings_errors():
    path = ROOT / "tests" / "lint" / "W104_units_not_classes.model"
    proc = subprocess.run([sys.executable, "-m", "specc", "check", "--strict", "--format", "json", str(path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    errors = json.loads(proc.stdout)["errors"]
    assert [(e["severity"], e["code"], e["line"], e["col"]) for e in errors] == [("error", "W104", 4, 9)]


def test_run_prints_the_warnings_before_training(tmp_path, capsys):
    path = ROOT / "tests" / "lint" / "W106_schedule_horizon.model"
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning: `cosine_decay` decays over 1,000 steps" in err and "[W106]" in err
    assert (tmp_path / "run" / "metrics.json").is_file()


def _doc_sections() -> dict[str, str]:
    text = DOC.read_text()
    heads = list(re.finditer(r"^## (W\d{3})\b.*$", text, re.M))
    return {m.group(1): text[m.end(): heads[i + 1].start() if i + 1 < len(heads) else len(text)]
            for i, m in enumerate(heads)}


def test_docs_list_every_code_with_an_example_that_triggers_it():
    sections = _doc_sections()
    assert sorted(sections) == sorted(LINT_CODES)
    for code, body in sections.items():
        example = re.search(r"```model\n(.*?)```", body, re.S)
        shown = re.search(r"```text\n(.*?)```", body, re.S)
        assert example and shown, f"docs/lint.md: {code} needs a `model` example and the `text` it prints"
        found = [d for d in lint_plan(specc.loads(example.group(1), "spec.model").plan) if d.code == code]
        assert found, f"docs/lint.md: the example of {code} does not trigger it"
        assert found[0].render() == shown.group(1).rstrip("\n"), f"docs/lint.md: {code} shows another warning"
        title, why = LINT_CODES[code]
        assert f"## {code}: {title}\n" in DOC.read_text() and " ".join(why.split()) in " ".join(body.split()), code
        assert "**Fix.**" in body, code


def test_every_rule_is_documented_and_every_documented_code_is_a_rule():
    """docs/lint.md has a section per registered rule (W201's under "Codes outside lint"), titled with its summary
    and holding its rationale, and a table made from the registry; no section names a code that is not a rule."""
    text = DOC.read_text()
    heads = list(re.finditer(r"^#{2,3} (W\d{3}): (.*)$", text, re.M))
    assert {m.group(1): m.group(2) for m in heads} == {code: r.summary for code, r in RULES.items()}
    for i, m in enumerate(heads):
        body = text[m.end(): heads[i + 1].start() if i + 1 < len(heads) else len(text)]
        assert " ".join(RULES[m.group(1)].docs.split()) in " ".join(body.split()), m.group(1)
    assert rules_table() in text, "docs/lint.md: paste `specc.tools.lint.rules_table()` under `## The rules`"
    assert len({r.name for r in RULES.values()}) == len(RULES)
    assert sorted(LINT_CODES) == sorted(code for code, r in RULES.items() if r.needs != COST)


def test_the_cost_rule_reads_the_cost_figures_and_is_silenced_like_the_others():
    """W201 is a rule of the registry run on the figures `specc.tools.cost` makes (here written by hand: no
    compilation), and `# specc: ignore[W201]` silences it through the same function as every other code."""
    from specc.tools.cost import CostReport

    text = ("model m { input x: (4,); dense(2) }\n"
            "train {\n  loss: mse\n  batch_size: 4096\n}\n")
    cost = CostReport(None, None, 16 * 2**20, 2**20, "$SPECC_DEVICE_MEMORY", 4096, 1, False, largest_batch=51)
    [d] = lint_cost(specc.loads(text, "mlp.model").plan, cost)
    assert d.render() == (
        "mlp.model:4:3: warning: batch_size 4096 needs 16.0 MiB on the device for a training step, more than 90% of "
        "its 1.0 MiB ($SPECC_DEVICE_MEMORY) [W201]\n 4 |   batch_size: 4096\n   |   ^~~~~~~~~~~~~~~~\n"
        "note: peak of XLA's compiled training step (arguments + outputs - donated + temporaries); 10% is kept free "
        "for what the step's analysis does not count\nhint: use `batch_size: 51` (the largest that fits, checked by "
        "compiling it), or keep the effective batch with gradient accumulation: `batch_size: 32` and "
        "`gradient_accumulation_steps=128` in the optimizer, e.g. `optimizer: adam(..., "
        "gradient_accumulation_steps=128)`")
    quiet = specc.loads(text.replace("4096\n", "4096  # specc: ignore[W201]\n"), "mlp.model").plan
    assert lint_cost(quiet, cost) == []
    fits = CostReport(None, None, 2**10, 2**20, "$SPECC_DEVICE_MEMORY", 4096, 1, True)
    assert lint_cost(specc.loads(text, "mlp.model").plan, fits) == []
    assert all(d.code != "W201" for d in lint_plan(specc.loads(text, "mlp.model").plan))


def test_batch_norm_statistics_span_the_devices_of_a_data_parallel_batch():
    """Why W108 ignores the per-device batch: on JAX, Keras's DataParallel normalizes over the global batch.
    If this fails, batch norm on one example per device is broken after all and W108 must count per device."""
    script = (
        "import numpy as np, jax, keras\n"
        "x = np.random.RandomState(0).randn(4, 3).astype('float32')\n"
        "def step():\n"
        "    inp = keras.Input((3,)); bn = keras.layers.BatchNormalization(); m = keras.Model(inp, bn(inp))\n"
        "    m.compile(loss='mse', optimizer='sgd'); m.fit(x, np.zeros((4, 3)), batch_size=4, verbose=0)\n"
        "    return np.asarray(bn.moving_mean.value)\n"
        "one = step()\n"
        "keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices()))\n"
        "assert len(jax.devices()) == 4\n"
        "print(float(np.abs(step() - one).max()), float(np.abs(one).max()))\n")
    env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
           "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    diff, size = map(float, proc.stdout.split())
    assert size > 1e-3 and diff < 1e-6  # the moving mean moved, by the global batch's mean
