"""`specc export RUN_DIR --format onnx`: jax2onnx's graph of the run's model, checked in onnxruntime.

The MNIST CNN (max pooling rewritten without `reduce_window`) and the MLP export, and their files compute what
Keras computes, at any batch size; overlapping max pooling exports too; a layer jax2onnx cannot take is named
with its spec line and nothing is written; without the packages the command says what to install."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import specc
from test_predict import SPECS, load_model, specc_main, trained

MISSING = [name for name in ("jax2onnx", "onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
needs_onnx = pytest.mark.skipif(bool(MISSING), reason=f"needs {', '.join(MISSING)} (pip install 'specc[onnx]')")


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, data_dir) -> Path:
    """specs/mnist.model, one epoch on 500 digits: enough for confident, distinct classes."""
    out = tmp_path_factory.mktemp("onnx-cnn") / "run"
    specc.load(SPECS / "mnist.model").run(out=out, epochs=1, limit=500)
    return out


@pytest.fixture
def mlp_run(tmp_path_factory, data_dir) -> Path:
    return trained("mlp", tmp_path_factory)  # test_predict.py's run, shared with test_export.py


def _mnist_test(n: int) -> np.ndarray:
    from specc.data.prepare import load_builtin

    return load_builtin("mnist").x_test[:n].astype("float32") / np.float32(255)


@needs_onnx
def test_mnist_cnn_exports_and_computes_what_keras_computes(cnn_run, capsys):
    from specc.tools.export_onnx import onnx_session

    code, out, err = specc_main(capsys, "export", cnn_run, "--format", "onnx")
    assert code == 0, err
    exported = cnn_run / "export" / "model.onnx"  # the default place
    report = json.loads((cnn_run / "export" / "model.onnx.json").read_text())
    assert report["rewritten_layers"] == ["maxpool2d", "maxpool2d_1"]
    assert report["examples"] == 2000 and report["examples_in_split"] == 10_000 and report["test_on"] == "test"
    check = report["check"]["dense"]
    assert check["max_abs_difference"] < 1e-4 and check["tolerance"] == pytest.approx(1e-3)
    assert check["classes_equal"] == 1.0 and check["class_changes_beyond_ties"] == 0
    assert report["inputs"] == [{"name": "image", "shape": ["N", 28, 28, 1], "dtype": "tensor(float)"}]
    assert report["bytes"] == exported.stat().st_size
    assert "max pooling without reduce_window: maxpool2d, maxpool2d_1" in out
    assert "on the first 2,000 of 10,000 examples of the test split" in out and "predicted classes equal: 100.00%" in out
    assert sorted(p.name for p in exported.parent.iterdir()) == ["model.onnx", "model.onnx.json"]  # no temporary file
    # The file alone, at batch sizes the check did not use: the batch axis is symbolic.
    session, inputs, outputs = onnx_session(exported)
    assert inputs == ["image"] and outputs == ["dense"]
    keras_model = load_model(cnn_run)
    for n in (1, 3):
        x = _mnist_test(n)[..., None]
        got = session.run(None, {"image": x})[0]
        np.testing.assert_allclose(got, keras_model.predict(x, verbose=0), atol=1e-5)


@needs_onnx
def test_mlp_exports_to_a_given_file(mlp_run, tmp_path, capsys):
    code, out, err = specc_main(capsys, "export", mlp_run, "--format", "onnx", "-o", tmp_path / "digits.onnx")
    assert code == 0, err
    report = json.loads((tmp_path / "digits.onnx.json").read_text())
    assert report["file"] == str(tmp_path / "digits.onnx") and report["rewritten_layers"] == []
    assert report["check"]["dense_1"]["max_abs_difference"] < 1e-4 and report["check"]["dense_1"]["classes_equal"] == 1.0
    assert "max pooling" not in out and f"wrote {tmp_path / 'digits.onnx'}" in out
    code, _, err = specc_main(capsys, "export", mlp_run, "--format", "onnx", "-o", tmp_path / "digits.keras")
    assert code == 2 and "--format onnx writes a `.onnx` file" in err


# Untrained models, saved where a run keeps its model: the export reads spec.model, model.keras and the data.
SPEC = """language: 2

model {name} {{
  input x: {shape}
{layers}
  dense(2, activation=softmax)
}}

data {{
  file: "data.npz"
}}

train {{
  loss: sparse_categorical_crossentropy
}}
"""


def _untrained_run(folder: Path, name: str, shape: tuple[int, ...], layers: list[str], x: np.ndarray) -> Path:
    folder.mkdir()
    y = np.arange(len(x)) % 2
    np.savez(folder / "data.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    text = SPEC.format(name=name, shape=shape, layers="\n".join(f"  {layer}" for layer in layers))
    (folder / "spec.model").write_text(text)
    specc.load(folder / "spec.model").build_model().save(folder / "model.keras")
    return folder


@needs_onnx
def test_overlapping_max_pooling_exports(tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((40, 9, 9, 2)).astype("float32")
    run = _untrained_run(tmp_path / "run", "pools", (9, 9, 2),
                         ["maxpool2d(3, strides=2, padding=\"same\")", "maxpool2d(2, strides=1)", "flatten"], x)
    code, out, err = specc_main(capsys, "export", run, "--format", "onnx")
    assert code == 0, err
    report = json.loads((run / "export" / "model.onnx.json").read_text())
    assert report["rewritten_layers"] == ["maxpool2d", "maxpool2d_1"] and report["examples"] == 40
    assert report["check"]["dense"]["max_abs_difference"] < 1e-5


@needs_onnx
def test_a_layer_the_converter_cannot_take_is_named_with_its_line(tmp_path, capsys):
    x = np.random.default_rng(0).integers(0, 10, (16, 6)).astype("int32")
    run = _untrained_run(tmp_path / "run", "backwards", (6,) , ["embedding(10, 4)", "bidirectional(lstm(4))"], x)
    code, out, err = specc_main(capsys, "export", run, "--format", "onnx")
    assert code == 3 and out == ""
    assert f"{run / 'spec.model'}:6:" in err  # the layer's line in the run's spec
    assert "layer `bidirectional` (Bidirectional, line 6): jax2onnx cannot convert it:" in err
    assert "`--format keras` and `--format weights` take every layer" in err
    assert "Traceback" not in err
    assert not (run / "export").exists() or not any((run / "export").iterdir())  # nothing written


def test_without_the_packages_it_says_what_to_install(monkeypatch, tmp_path, capsys):
    from specc.tools import export_onnx

    monkeypatch.setattr(export_onnx, "PACKAGES", ("onnx", "specc_no_such_package"))
    code, _, err = specc_main(capsys, "export", tmp_path / "nowhere", "--format", "onnx")
    assert code == 2 and "--format onnx needs specc_no_such_package, which is not installed" in err
    assert "pip install 'specc[onnx]'" in err and "Traceback" not in err
