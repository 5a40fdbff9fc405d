"""The specs in specs/: they check, match hand-written Keras, and train on real data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import specc

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.model"))


def keras():
    import keras as k

    return k


def hand_written(name):
    """The same networks written by hand in Keras, as a user would without specc."""
    k = keras()
    L = k.layers
    if name == "mnist":
        return k.Sequential([
            k.Input((28, 28, 1)), L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2),
            L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2), L.Flatten(), L.Dense(10, activation="softmax")])
    if name == "mnist_mlp":
        return k.Sequential([k.Input((784,)), L.Dense(128, activation="relu"), L.Dense(10, activation="softmax")])
    if name == "mnist_sgd":
        return k.Sequential([k.Input((28, 28, 1)), L.Conv2D(16, 3, activation="relu"), L.MaxPooling2D(2),
                             L.Flatten(), L.Dense(10)])
    if name == "cifar10_cnn":
        def conv_bn(f):
            return [L.Conv2D(f, 3, padding="same", use_bias=False), L.BatchNormalization(momentum=0.9), L.ReLU()]

        stages = []
        for f in (32, 64, 128):
            stages += conv_bn(f) + conv_bn(f) + [L.MaxPooling2D(2), L.Dropout(0.2)]
        return k.Sequential([k.Input((32, 32, 3)), L.RandomFlip("horizontal"), *stages,
                             L.GlobalAveragePooling2D(), L.Dense(10, activation="softmax")])
    if name == "linear_regression":
        return k.Sequential([k.Input((1,)), L.Dense(1)])
    if name == "cifar10_resnet20":
        return resnet20_by_hand()
    raise KeyError(name)


def resnet20_by_hand():
    """ResNet-20 (He et al. 2015, CIFAR-10 variant, projection shortcuts) as Keras code."""
    k = keras()
    L = k.layers

    def conv_bn(x, filters, size=3, stride=1):
        x = L.Conv2D(filters, size, strides=stride, padding="same", use_bias=False,
                     kernel_initializer="he_normal", kernel_regularizer=k.regularizers.L2(1e-4))(x)
        return L.BatchNormalization(momentum=0.9)(x)

    def block(x, filters, down=False):
        y = conv_bn(x, filters, stride=2 if down else 1)
        y = conv_bn(L.ReLU()(y), filters)
        shortcut = conv_bn(x, filters, size=1, stride=2) if down else x
        return L.ReLU()(L.Add()([y, shortcut]))

    inputs = k.Input((32, 32, 3))
    x = L.RandomFlip("horizontal")(L.RandomCrop(32, 32)(L.ZeroPadding2D(4)(inputs)))
    x = L.ReLU()(conv_bn(x, 16))
    for stage, filters in enumerate((16, 32, 64)):
        for i in range(3):
            x = block(x, filters, down=stage > 0 and i == 0)
    outputs = L.Dense(10, activation="softmax")(L.GlobalAveragePooling2D()(x))
    return k.Model(inputs, outputs)


EXPECTED_PARAMS = {"mnist": 34_826, "mnist_mlp": 101_770, "mnist_sgd": 27_210, "linear_regression": 2,
                   "cifar10_cnn": 289_642, "cifar10_resnet20": 274_042}


def test_every_spec_is_covered():
    assert {p.stem for p in SPECS} == set(EXPECTED_PARAMS)


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_spec_matches_hand_written_keras(path):
    model = specc.load(path).build_model()
    reference = hand_written(path.stem)
    assert model.count_params() == reference.count_params() == EXPECTED_PARAMS[path.stem]
    ours = [(type(l).__name__, tuple(l.output.shape)) for l in model.layers if type(l).__name__ != "InputLayer"]
    theirs = [(type(l).__name__, tuple(l.output.shape)) for l in reference.layers if type(l).__name__ != "InputLayer"]
    # MaxPool2D is Keras's own alias of MaxPooling2D: the same class.
    assert ours == theirs


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_summary_total_equals_count_params(path):
    spec = specc.load(path)
    text = spec.summary()
    total = int(text.splitlines()[-1].split(":")[1].replace(",", ""))
    assert total == spec.build_model().count_params()


def test_linear_regression_matches_least_squares(tmp_path):
    result = specc.load(ROOT / "specs" / "linear_regression.model").run(out=tmp_path / "run")
    kernel, bias = [np.asarray(w).ravel()[0] for w in result.model.get_layer("dense").get_weights()]
    x = np.array([1, 2, 3, 4, 5], dtype=float)
    y = np.array([2, 4, 5, 4, 5], dtype=float)
    (t0, t1), *_ = np.linalg.lstsq(np.stack([np.ones_like(x), x], 1), y, rcond=None)
    assert abs(t0 - 2.2) < 1e-9 and abs(t1 - 0.6) < 1e-9  # the reference itself
    assert abs(bias - t0) < 0.05 and abs(kernel - t1) < 0.05, (bias, kernel)
    assert result.metrics["test_on"] == "train"


@pytest.mark.parametrize("name, limit, floor", [("mnist_mlp", 6000, 0.85), ("mnist_sgd", 6000, 0.85),
                                                ("cifar10_cnn", 5000, 0.25), ("cifar10_resnet20", 5000, 0.25)])
def test_short_run_learns(tmp_path, data_dir, name, limit, floor):
    result = specc.load(ROOT / "specs" / f"{name}.model").run(out=tmp_path / "run", epochs=1, limit=limit)
    assert result.metrics["examples"] == limit
    assert result.metrics["params"] == EXPECTED_PARAMS[name]
    assert result.metrics["test"]["accuracy"] >= floor  # chance is 0.10; full test split of 10,000


@pytest.mark.parametrize("name, floor", [("mnist_mlp", 0.97), ("mnist_sgd", 0.955)])
def test_full_training_reaches_target(tmp_path, data_dir, name, floor):
    result = specc.load(ROOT / "specs" / f"{name}.model").run(out=tmp_path / "run")
    assert result.metrics["epochs"] == {"mnist_mlp": 5, "mnist_sgd": 2}[name]
    assert result.metrics["test"]["accuracy"] >= floor, result.metrics["test"]


def test_mnist_full_run_through_cli(tmp_path, data_dir):
    """The README's command: a real, full training of specs/mnist.model on MNIST."""
    out = tmp_path / "mnist"
    proc = subprocess.run([sys.executable, "-m", "specc", "run", str(ROOT / "specs" / "mnist.model"), "--out", str(out)],
                          capture_output=True, text=True, env={**os.environ})
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["params"] == 34_826 and metrics["epochs"] == 5
    assert metrics["test"]["accuracy"] >= 0.985, metrics["test"]
    assert (out / "history.csv").read_text().splitlines()[0].split(",")[0] == "epoch"
    assert len((out / "history.csv").read_text().splitlines()) == 6
    assert (out / "spec.model").read_text() == (ROOT / "specs" / "mnist.model").read_text()
    # The saved model is the trained one: it scores the same on the test split.
    k = keras()
    from specc.data import load_builtin

    model = k.saving.load_model(out / "model.keras")
    test = load_builtin("mnist")
    acc = model.evaluate(test.x_test[..., None].astype("float32") / 255, test.y_test, verbose=0, return_dict=True)
    assert abs(acc["accuracy"] - metrics["test"]["accuracy"]) < 1e-6


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_built_model_round_trips_through_keras_config(path):
    k = keras()
    model = specc.load(path).build_model()
    clone = k.Model.from_config(model.get_config())
    assert [l.get_config() for l in clone.layers] == [l.get_config() for l in model.layers]
    assert clone.count_params() == model.count_params()


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_shapes_written_in_comments_are_the_inferred_shapes(path):
    """A comment such as `# (13, 13, 32)` after a layer states its output shape; Keras must agree."""
    import ast
    import re

    from specc.build import infer_shapes

    spec = specc.load(path)
    shapes = infer_shapes(spec.plan)
    by_line = {node.origin.span.line: node.name for node in spec.plan.layers}
    stated = 0
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        m = re.search(r"#\s*(\([\d, ]*\))", line)
        if m and lineno in by_line:
            assert shapes[by_line[lineno]][1:] == ast.literal_eval(m.group(1)), (lineno, line)
            stated += 1
    if path.stem != "linear_regression":
        assert stated >= 2
