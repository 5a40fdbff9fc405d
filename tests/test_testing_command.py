"""Contracts (`expect` sections) and `specc test`: each contract holds on a model that meets it and fails, located
at its line, on a variant that breaks it; bad `expect` syntax is a located error; the shipped specs pass."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import specc
from specc import cli
from specc.tools.testing import run_contracts
from specc.core.errors import SpecError

ROOT = Path(__file__).resolve().parent.parent

# A small classifier: 16 features -> 4 classes. `{layers}` goes between the input and the output layer.
SPEC = """model small {{
  input x: (16,)
  dense(32, activation=relu)
  {layers}
  {output}
}}

train {{
  loss: {loss}
  optimizer: adam(learning_rate=1e-2)
  batch_size: 16
  seed: 3
}}

expect {{
  {expect}
}}
"""
EXPECT_LINE = 16  # the first line of the `expect` section's body


# Outputs start near chance (small output weights): standard-normal inputs through Keras's default initializers
# give logits whose spread puts the loss some 20% above ln(4).
OUTPUT = "dense(4, activation=softmax, kernel_initializer=random_normal(stddev=0.01))"


def spec_text(expect: str, layers: str = "", output: str = OUTPUT,
              loss: str = "sparse_categorical_crossentropy") -> str:
    return SPEC.format(expect=expect, layers=layers, output=output, loss=loss)


def contracts(expect: str, **kw) -> dict:
    plan = specc.loads(spec_text(expect, **kw), "small.model").plan
    return {r.key: r for r in run_contracts(plan)}


def test_spec_template_lines_up():
    assert spec_text("params: 1").splitlines()[EXPECT_LINE - 1] == "  params: 1"


# -- each contract: holds, and fails where the model breaks it --------------------------------------------


def test_params_exact_and_bounds_hold():
    # 16*32+32 + 32*4+4 = 676 parameters
    got = contracts("params: 676")["params"]
    assert got.ok and got.message == "676 == 676"
    assert contracts("params: at_most(700)")["params"].ok
    assert contracts("params: at_least(600)")["params"].ok
    assert contracts("params: between(600, 700)")["params"].message == "600 <= 676 <= 700"


def test_params_fails_on_an_extra_layer_with_the_largest_layer_named():
    got = contracts("params: at_most(700)", layers="dense(64, activation=relu)")["params"]
    assert not got.ok
    assert got.message == "the model has 2,916 parameters, more than at_most(700)"
    assert got.span.line == EXPECT_LINE and got.span.col == 3
    assert "the largest layer is `dense_1` (Dense, line 4) with 2,112" in got.hint
    assert contracts("params: 600")["params"].message == "the model has 676 parameters, 76 more than the 600 expected"
    assert "fewer than at_least(1,000)" in contracts("params: at_least(1_000)")["params"].message


def test_output_shape():
    assert contracts("output_shape: (4,)")["output_shape"].ok
    got = contracts("output_shape: (4,)", output="dense(5, activation=softmax)", loss="mse")["output_shape"]
    assert not got.ok and got.message == "output `dense_1` (line 5) has shape (5,) per example, expected (4,)"
    got = contracts("output_shape: [(4,), (1,)]")["output_shape"]
    assert not got.ok and got.message.startswith("the model has 1 output ((4,)), but 2 shapes are expected")


def test_initial_loss_chance_holds_and_a_huge_initializer_breaks_it():
    got = contracts("initial_loss: chance")["initial_loss"]
    assert got.ok and got.message.endswith(", expected ln(4) = 1.386 ± 10% (chance: 4 classes, the units of output "
                                           "`dense_1`)")
    got = contracts("initial_loss: chance",
                    output="dense(4, activation=softmax, kernel_initializer=random_normal(stddev=30))")["initial_loss"]
    assert not got.ok and got.message.startswith("the loss at initialisation is ")
    assert float(got.message.split()[5].rstrip(",")) > 3 * 1.386
    assert "far above chance" in got.hint and got.span.line == EXPECT_LINE


def test_initial_loss_near_and_binary_chance():
    start = float(contracts("initial_loss: chance")["initial_loss"].message.split(",")[0])
    assert contracts(f"initial_loss: near({start:.2f}, 0.02)")["initial_loss"].ok
    assert not contracts(f"initial_loss: near({start + 0.5:.2f}, 0.1)")["initial_loss"].ok
    got = contracts("initial_loss: chance", loss="binary_crossentropy",
                    output="dense(1, activation=sigmoid, kernel_initializer=random_normal(stddev=0.01))")
    assert got["initial_loss"].ok and "ln(2) = 0.693" in got["initial_loss"].message


def test_chance_on_a_regression_is_a_located_spec_error():
    with pytest.raises(SpecError) as err:
        contracts("initial_loss: chance", output="dense(1)", loss="mse")
    assert "`initial_loss: chance` is for classifiers" in err.value.message and err.value.line == EXPECT_LINE


def test_overfit_holds_and_softmax_twice_or_dropout_breaks_it():
    got = contracts("overfit: 60")["overfit"]
    assert got.ok and "(below 5%) in" in got.message
    # Softmax of probabilities: every output stays within [0.17, 0.48], so the loss cannot fall below 0.73.
    twice = contracts("overfit: 60", output=f"{OUTPUT} -> activation(softmax)")["overfit"]
    assert not twice.ok and twice.message.startswith("after 60 steps on one batch of 16 examples the loss is")
    assert twice.span.line == EXPECT_LINE and "cannot memorize one batch" in twice.hint
    assert not contracts("overfit: 60", layers="dropout(0.99)")["overfit"].ok


def test_gradients_healthy_and_a_zero_layer_starves_the_layers_before_it():
    got = contracts("gradients: healthy")["gradients"]
    assert got.ok and got.message == "4 trainable weights, all finite and not all zero"
    got = contracts("gradients: healthy", layers="dense(8, kernel_initializer=zeros, use_bias=false)")["gradients"]
    assert not got.ok
    # Before the zero layer nothing flows back; after it, the output layer's kernel sees only zeros.
    assert got.message == ("3 of 5 trainable weights get all-zero gradients: `dense/kernel` (layer `dense`, line 3), "
                           "`dense/bias` (layer `dense`, line 3), `dense_2/kernel` (layer `dense_2`, line 5)")
    assert "kernel_initializer=zeros" in got.hint


def test_a_saturated_softmax_fails_initial_loss_and_passes_no_gradient():
    got = contracts("gradients: healthy\n  initial_loss: chance", layers="dense(32, kernel_initializer=constant(1e30))")
    assert not got["gradients"].ok and got["gradients"].message.startswith("6 of 6 trainable weights get all-zero")
    assert not got["initial_loss"].ok and "the loss at initialisation is 14.1" in got["initial_loss"].message


def test_a_nan_loss_fails_every_loss_contract():
    huge = "dense(32, kernel_initializer=constant(1e30))"
    got = contracts("gradients: healthy\n  initial_loss: chance", layers=f"{huge} -> {huge}", output="dense(4)",
                    loss="sparse_categorical_crossentropy(from_logits=true)")
    assert [(r.ok, r.span.line) for r in got.values()] == [(False, EXPECT_LINE), (False, EXPECT_LINE + 1)]
    assert all(r.message == "the loss of the first batch is nan: nothing can be measured from it" for r in got.values())


# -- the section's syntax ----------------------------------------------------------------------------------


@pytest.mark.parametrize("expect, col, message, hint", [
    ("parmas: 10", 3, "unknown setting `parmas` in `expect`", "did you mean `params`?"),
    ("epochs: 3", 3, "unknown setting `epochs` in `expect`", "`epochs` belongs in `train`"),
    ("params: at_mots(10)", 11, "unknown parameter bound `at_mots(...)`", "did you mean `at_most`?"),
    ("params: between(10, 5)", 11, "`between` takes the lower bound first", "write `between(5, 10)`"),
    ("params: 1.5", 11, "expect `params` takes whole numbers of parameters, got `1.5`", "`params: at_most(40_000)`"),
    ("params: at_most(1, 2)", 11, "`at_most` takes 1 whole number", "`params: at_most(40_000)`"),
    ("output_shape: ten", 17, "expect `output_shape` takes a shape per example", "`output_shape: (10,)`"),
    ("initial_loss: chanse", 17, "expect `initial_loss` takes `chance` or `near(value, tolerance)`",
     "did you mean `chance`?"),
    ("initial_loss: near(2.3, 0)", 27, "the tolerance of `near` must be above 0", "between 2.2 and 2.4"),
    ("initial_loss: close(2.3)", 17, "unknown loss target `close(...)`", "`initial_loss: near(2.30, 0.1)`"),
    ("overfit: 0", 12, "expect `overfit` takes a number of training steps from 1 to 10,000", "`overfit: 100`"),
    ("gradients: fine", 14, "expect `gradients` takes `healthy`", "`gradients: healthy`"),
])
def test_bad_expect_settings_are_located(expect, col, message, hint):
    with pytest.raises(SpecError) as err:
        specc.loads(spec_text(expect), "small.model")
    d = err.value.first
    assert (d.span.line, d.span.col) == (EXPECT_LINE, col)
    assert d.message.startswith(message), d.message
    assert hint in d.hint, d.hint


def test_loss_contracts_need_a_train_section():
    text = "model m {\n  input x: (4,)\n  dense(2)\n}\n\nexpect {\n  params: 10\n  overfit: 10\n}\n"
    with pytest.raises(SpecError) as err:
        specc.loads(text, "m.model")
    assert err.value.message.startswith("expect `overfit` measures the loss, but the spec has no `train` section")
    assert (err.value.line, err.value.col) == (8, 3)
    # `params` and `output_shape` need no training: 4 * 2 + 2 parameters
    [got] = run_contracts(specc.loads(text.replace("  overfit: 10\n", ""), "m.model").plan)
    assert got.ok and got.message == "10 == 10"


# -- `specc test` ----------------------------------------------------------------------------------------


def test_cli_reports_a_failing_contract_as_a_located_error(tmp_path, capsys):
    good, bad = tmp_path / "good.model", tmp_path / "bad.model"
    good.write_text(spec_text("params: 676\n  output_shape: (4,)"))
    bad.write_text(spec_text("params: at_most(700)", layers="dense(64, activation=relu)"))
    assert cli.main(["test", str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert "  PASS params: 676 == 676\n  PASS output_shape: (4,)\n" in out
    assert (f"{bad}:{EXPECT_LINE}:3: error: expect `params`: the model has 2,916 parameters, more than at_most(700)\n"
            f" {EXPECT_LINE} |   params: at_most(700)\n    |   ^~~~~~~~~~~~~~~~~~~~\nhint: the largest layer") in out
    assert out.rstrip().splitlines()[-1].startswith("2 passed, 1 failed in ")


def test_cli_without_contracts_says_so_and_exits_2(tmp_path, capsys):
    plain = tmp_path / "plain.model"
    plain.write_text("model m {\n  input x: (4,)\n  dense(2)\n}\n")
    assert cli.main(["test", str(plain)]) == 2
    captured = capsys.readouterr()
    assert f"{plain}: no contracts (`expect` section): nothing to test" in captured.out
    assert "none of the files has an `expect` section" in captured.err
    good = tmp_path / "good.model"
    good.write_text(spec_text("params: 676"))
    assert cli.main(["test", str(plain), str(good)]) == 0  # the others were tested


def test_cli_spec_error_exits_1(tmp_path, capsys):
    broken = tmp_path / "broken.model"
    broken.write_text(spec_text("gradients: fine"))
    assert cli.main(["test", str(broken)]) == 1
    assert f"{broken}:{EXPECT_LINE}:14: error: expect `gradients` takes `healthy`" in capsys.readouterr().err


def test_shipped_specs_pass_through_the_command_line():
    specs = [str(ROOT / "specs" / f"{name}.model") for name in ("mnist", "mnist_mlp")]
    proc = subprocess.run([sys.executable, "-m", "specc", "test", *specs, "--format", "json"], capture_output=True,
                          text=True, env={**os.environ, "KERAS_BACKEND": "jax"}, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert [f["file"] for f in report["files"]] == specs
    for found in report["files"]:
        assert [c["key"] for c in found["contracts"]] == ["params", "output_shape", "initial_loss", "overfit",
                                                         "gradients"]
        assert all(c["ok"] for c in found["contracts"])
    assert (report["passed"], report["failed"]) == (10, 0)


SHIPPED = [p for p in sorted((ROOT / "specs").glob("*.model")) if "\nexpect {" in p.read_text()]


@pytest.mark.slow
def test_every_shipped_spec_with_contracts_passes():
    assert len(SHIPPED) >= 5
    proc = subprocess.run([sys.executable, "-m", "specc", "test", *map(str, SHIPPED)], capture_output=True,
                          text=True, env={**os.environ, "KERAS_BACKEND": "jax"}, cwd=ROOT, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " 0 failed in " in proc.stdout
