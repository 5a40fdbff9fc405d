"""`specc export`: a copy of model.keras, the weights alone, and Keras's int8 quantization measured on the
run's test split. Uses the runs test_predict.py trains (once per session)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import specc
from test_predict import load_model, specc_main, trained


@pytest.fixture(autouse=True)
def _image_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SPECC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "specc-cache"))


@pytest.fixture
def mlp_run(tmp_path_factory, data_dir):
    return trained("mlp", tmp_path_factory)


@pytest.fixture
def image_run(tmp_path_factory, data_dir):
    return trained("images", tmp_path_factory)


def test_keras_export_is_a_copy_of_the_model(mlp_run, tmp_path, capsys):
    code, out, err = specc_main(capsys, "export", mlp_run, "-o", tmp_path / "copy.keras")
    assert code == 0, err
    assert (tmp_path / "copy.keras").read_bytes() == (mlp_run / "model.keras").read_bytes()
    assert out.startswith(f"wrote {tmp_path / 'copy.keras'} (1.2")
    assert not list(tmp_path.glob(".*"))  # no temporary file left beside it


def test_weights_load_into_a_fresh_build_of_the_spec(mlp_run, tmp_path, capsys):
    code, out, err = specc_main(capsys, "export", mlp_run, "--format", "weights", "-o", tmp_path)
    assert code == 0, err
    weights = tmp_path / "model.weights.h5"  # a folder gets the default name
    assert weights.is_file() and "load_weights" in out
    fresh = specc.load(mlp_run / "spec.model").build_model()
    fresh.load_weights(weights)
    x = np.random.default_rng(0).random((16, 784), dtype=np.float32)
    np.testing.assert_array_equal(fresh.predict(x, verbose=0), load_model(mlp_run).predict(x, verbose=0))


def test_int8_quantizes_the_dense_layers_and_reports_size_and_accuracy(mlp_run, capsys):
    code, out, err = specc_main(capsys, "export", mlp_run, "--format", "int8")
    assert code == 0, err
    exported = mlp_run / "export" / "model.int8.keras"  # the default place
    report = json.loads((mlp_run / "export" / "model.int8.json").read_text())
    assert report["quantized_layers"] == ["dense", "dense_1"] and report["float_layers"] == []
    sizes = report["bytes"]
    assert sizes["int8"] == exported.stat().st_size
    assert sizes["float32"] / sizes["int8"] > 3  # 101,770 weights: 4 bytes each -> 1, plus scales and metadata
    assert sizes["model.keras"] > sizes["float32"]  # the run's file also holds Adam's two moments
    before, after = report["test"]["float32"], report["test"]["int8"]
    assert before == json.loads((mlp_run / "metrics.json").read_text())["test"]  # the float model, as recorded
    assert report["examples"] == 10_000 and abs(after["accuracy"] - before["accuracy"]) < 0.01
    assert "int8 layers: dense, dense_1" in out and "accuracy:" in out and "x smaller" in out
    # The quantized .keras file loads back (safe mode) and predicts what the float model predicts, nearly.
    model = _load(exported)
    assert [layer.dtype_policy.name for layer in model.layers[1:]] == ["int8_from_float32"] * 2
    from specc.data.prepare import load_builtin

    x = load_builtin("mnist").x_test[:500].reshape(500, -1).astype("float32") / np.float32(255)
    q, f = model.predict(x, verbose=0), load_model(mlp_run).predict(x, verbose=0)
    assert np.abs(q - f).max() < 0.05 and np.mean(q.argmax(1) == f.argmax(1)) > 0.98


def _load(path):
    from specc.runtime.model_files import load_model as load

    return load(path)


def test_int8_keeps_convolutions_in_float(image_run, tmp_path, capsys):
    code, out, err = specc_main(capsys, "export", image_run, "--format", "int8", "-o", tmp_path / "q.keras")
    assert code == 0, err
    report = json.loads((tmp_path / "q.json").read_text())
    assert report["quantized_layers"] == ["dense", "dense_1"] and report["float_layers"] == ["conv2d"]
    assert report["bytes"]["int8"] < report["bytes"]["float32"]
    assert abs(report["change"]["accuracy"]) <= 0.03  # 100 test images: one or two may change
    assert "float32 layers: conv2d" in out
    assert _load(tmp_path / "q.keras").predict(np.zeros((2, 20, 20, 3), "float32"), verbose=0).shape == (2, 10)


def test_export_usage_errors_exit_2(mlp_run, tmp_path, capsys):
    code, _, err = specc_main(capsys, "export", tmp_path / "nowhere")
    assert code == 2 and "no such run directory" in err
    code, _, err = specc_main(capsys, "export", mlp_run, "--format", "weights", "-o", tmp_path / "w.h5")
    assert code == 2 and "--format weights writes a `.weights.h5` file" in err
    code, _, err = specc_main(capsys, "export", mlp_run, "-o", mlp_run / "model.keras")
    assert code == 2 and "the run's own model" in err
    assert "Traceback" not in err
    with pytest.raises(SystemExit) as info:  # argparse's own check: LiteRT is not offered (see the README)
        specc_main(capsys, "export", mlp_run, "--format", "litert")
    assert info.value.code == 2 and "invalid choice: 'litert'" in capsys.readouterr().err
