"""`specc eval` and `specc predict` on real runs: an MLP on MNIST, a CNN on an image folder of MNIST PNGs,
the tabular diabetes regression and a tiny text classifier, each trained once (briefly) for the session.

eval must reproduce the test metrics `specc run` recorded (same data, same model); predict must give what
`model.predict` gives on the arrays the run's own preprocessing makes.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import specc
from specc import cli
ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

IMAGE_SPEC = """model digits {
  input image: (20, 20, 3)
  conv2d(8, 3, activation=relu)
  maxpool2d(2)
  flatten
  dense(16, activation=relu)
  dense(10, activation=softmax)
}

data {
  images: "digits"  # train/<class>/*.png and test/<class>/*.png, 28 x 28
  image_size: (20, 20)
  scale: 1 / 255
}

train {
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
  epochs: 10
  batch_size: 16
  seed: 1
}
"""

TEXT_SPEC = """model reviews {
  input tokens: (6,) int32
  embedding(40, 4)
  gap1d
  dense(2, activation=softmax)
}

data {
  file: "reviews.tsv"
  text: review
  target: positive
  tokenizer: words(vocab_size=40)
  sequence_length: 6
  test_split: 0.25
}

train {
  loss: sparse_categorical_crossentropy
  metrics: [accuracy]
  epochs: 2
  seed: 1
}
"""

REVIEWS = ["great fun film", "dull , dull film", "great great cast", "a dull plot", "fun cast , great plot",
           "dull and slow", "a great film", "slow dull cast"]

# --- runs, trained once for the session (test_export.py uses them too) --------------------------

_RUNS: dict[str, Path] = {}


def _train_mlp(folder: Path) -> Path:
    specc.load(SPECS / "mnist_mlp.model").run(out=folder / "run", epochs=1, limit=2000)
    return folder / "run"


def _train_cnn(folder: Path) -> Path:
    """specs/mnist.model, the README's model, briefly: 1 epoch on 3,000 examples, about 90% test accuracy, enough
    for the page's test to see a digit drawn with the mouse classified (`specc serve` and its page use it)."""
    specc.load(SPECS / "mnist.model").run(out=folder / "run", epochs=1, limit=3000)
    return folder / "run"


def write_digit_pngs(folder: Path, x: np.ndarray, y: np.ndarray) -> list[Path]:
    from PIL import Image

    files = []
    for k, (pixels, label) in enumerate(zip(x, y)):
        f = folder / DIGITS[int(label)] / f"{k:04d}.png"
        f.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(f)  # 28 x 28 grayscale; the run reads it as RGB, resized to 20 x 20
        files.append(f)
    return files


def _train_images(folder: Path) -> Path:
    from specc.data.prepare import load_builtin

    mnist = load_builtin("mnist")
    write_digit_pngs(folder / "spec" / "digits" / "train", mnist.x_train[:400], mnist.y_train[:400])
    write_digit_pngs(folder / "spec" / "digits" / "test", mnist.x_test[:100], mnist.y_test[:100])
    (folder / "spec" / "digits.model").write_text(IMAGE_SPEC)
    specc.load(folder / "spec" / "digits.model").run(out=folder / "run")
    return folder / "run"


def _train_diabetes(folder: Path) -> Path:
    """specs/diabetes_regression.model without its 5-fold cross-validation (five more models to compile)."""
    (folder / "spec" / "data").mkdir(parents=True)
    shutil.copy(SPECS / "data" / "diabetes.csv", folder / "spec" / "data")
    text = (SPECS / "diabetes_regression.model").read_text()
    assert "  validation: kfold(5)\n" in text
    (folder / "spec" / "diabetes.model").write_text(text.replace("  validation: kfold(5)\n", ""))
    specc.load(folder / "spec" / "diabetes.model").run(out=folder / "run", epochs=3)
    return folder / "run"


def _train_text(folder: Path) -> Path:
    (folder / "spec").mkdir()
    (folder / "spec" / "reviews.tsv").write_text(
        "review\tpositive\n" + "".join(f"{t}\t{int('great' in t or 'fun' in t)}\n" for t in REVIEWS))
    (folder / "spec" / "reviews.model").write_text(TEXT_SPEC)
    specc.load(folder / "spec" / "reviews.model").run(out=folder / "run")
    return folder / "run"


TRAIN = {"mlp": _train_mlp, "cnn": _train_cnn, "images": _train_images, "diabetes": _train_diabetes, "text": _train_text}


def trained(name: str, factory) -> Path:
    """The run `name`, trained on first use."""
    if name not in _RUNS:
        _RUNS[name] = TRAIN[name](factory.mktemp(name))
    return _RUNS[name]


@pytest.fixture(autouse=True)
def _image_cache(tmp_path_factory, monkeypatch):
    """Decoded image folders are cached in a temporary folder, not in ~/.cache/specc."""
    monkeypatch.setenv("SPECC_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "specc-cache"))


@pytest.fixture
def mlp_run(tmp_path_factory, data_dir) -> Path:
    return trained("mlp", tmp_path_factory)


@pytest.fixture
def image_run(tmp_path_factory, data_dir) -> Path:
    return trained("images", tmp_path_factory)


@pytest.fixture
def diabetes_run(tmp_path_factory) -> Path:
    return trained("diabetes", tmp_path_factory)


@pytest.fixture
def text_run(tmp_path_factory) -> Path:
    return trained("text", tmp_path_factory)


def specc_main(capsys, *args) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def load_model(run: Path):
    from specc.runtime.model_files import load_model as load

    return load(run / "model.keras")


# --- eval ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mlp", "images", "diabetes", "text"])
def test_eval_reproduces_the_recorded_test_metrics(name, tmp_path_factory, data_dir, capsys):
    run = trained(name, tmp_path_factory)
    code, out, err = specc_main(capsys, "eval", run, "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    recorded = json.loads((run / "metrics.json").read_text())["test"]
    assert report["metrics"] == recorded  # exactly: same examples, same model, same batches
    assert report["recorded"] == recorded and report["data"] == "test"


def test_eval_prints_text_with_the_recorded_metrics(mlp_run, capsys):
    code, out, _ = specc_main(capsys, "eval", mlp_run)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("the test split, 10,000 examples: accuracy 0.")
    assert lines[1].startswith("recorded in metrics.json: accuracy") and lines[1].endswith("(the same)")


def test_eval_on_another_file_in_the_data_format(mlp_run, tmp_path, capsys):
    from specc.data.prepare import load_builtin

    mnist = load_builtin("mnist")
    # The whole test split, raw, as a file: the same metrics as recorded.
    np.savez(tmp_path / "test.npz", x_test=mnist.x_test, y_test=mnist.y_test)
    code, out, err = specc_main(capsys, "eval", mlp_run, "--data", tmp_path / "test.npz", "--format", "json")
    assert code == 0, err
    report = json.loads(out)
    assert report["metrics"] == json.loads((mlp_run / "metrics.json").read_text())["test"]
    assert report["examples"] == 10_000 and report["recorded"] is None
    # A part of it, as `x`/`y`: what the model scores on those examples.
    np.savez(tmp_path / "part.npz", x=mnist.x_test[:300], y=mnist.y_test[:300])
    code, out, err = specc_main(capsys, "eval", mlp_run, "--data", tmp_path / "part.npz", "--format", "json")
    model = load_model(mlp_run)
    x = mnist.x_test[:300].reshape(300, -1).astype("float32") * np.float32(1 / 255)
    hits = np.mean(model.predict(x, verbose=0).argmax(axis=1) == mnist.y_test[:300])
    assert json.loads(out)["metrics"]["accuracy"] == pytest.approx(hits, abs=1e-6)


def test_eval_on_an_image_folder(image_run, capsys):
    test_folder = image_run.parent / "spec" / "digits" / "test"
    code, out, err = specc_main(capsys, "eval", image_run, "--data", test_folder, "--format", "json")
    assert code == 0, err
    recorded = json.loads((image_run / "metrics.json").read_text())["test"]
    got = json.loads(out)["metrics"]
    assert got["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-6)  # the same 100 images, another order
    assert got["loss"] == pytest.approx(recorded["loss"], rel=1e-5)


def test_eval_on_a_table_with_the_spec_columns(diabetes_run, tmp_path, capsys):
    rows = (SPECS / "data" / "diabetes.csv").read_text().splitlines()
    (tmp_path / "head.csv").write_text("\n".join(rows[:51]) + "\n")
    code, out, err = specc_main(capsys, "eval", diabetes_run, "--data", tmp_path / "head.csv", "--format", "json")
    assert code == 0, err
    table = np.loadtxt(tmp_path / "head.csv", delimiter=",", skiprows=1, dtype=np.float32)
    pred = load_model(diabetes_run).predict(table[:, :10], verbose=0)[:, 0]
    assert json.loads(out)["metrics"]["mae"] == pytest.approx(np.mean(np.abs(pred - table[:, 10])), rel=1e-5)


def test_data_paths_are_found_from_the_original_spec_or_beside_the_run(diabetes_run, tmp_path, monkeypatch, capsys):
    run = Path(shutil.copytree(diabetes_run, tmp_path / "runs" / "diabetes"))
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["spec"] = "specs/diabetes_regression.model"  # as `specc run specs/...` from the repository records it
    (run / "metrics.json").write_text(json.dumps(metrics))
    monkeypatch.chdir(ROOT)
    code, out, err = specc_main(capsys, "eval", run, "--format", "json")
    assert code == 0, err
    assert json.loads(out)["metrics"] == metrics["test"]
    monkeypatch.chdir(tmp_path)  # the relative path leads nowhere now
    code, out, err = specc_main(capsys, "eval", run)
    assert code == 3 and "data file not found" in err and "diabetes.csv" in err and "Traceback" not in err
    (run / "data").mkdir()
    shutil.copy(SPECS / "data" / "diabetes.csv", run / "data")  # beside the run's spec.model
    code, out, err = specc_main(capsys, "eval", run, "--format", "json")
    assert code == 0, err
    assert json.loads(out)["metrics"] == metrics["test"]


# --- predict -----------------------------------------------------------------------------------------


def test_predict_npy_takes_raw_examples_like_the_training_data(mlp_run, tmp_path, capsys):
    from specc.data.prepare import load_builtin

    x = load_builtin("mnist").x_test[:50]  # (50, 28, 28) uint8, as MNIST comes
    np.save(tmp_path / "digits.npy", x)
    code, out, err = specc_main(capsys, "predict", mlp_run, tmp_path / "digits.npy", "-o", tmp_path / "p.npy")
    assert code == 0, err
    assert out.strip() == f"wrote 50 predictions to {tmp_path / 'p.npy'}"
    got = np.load(tmp_path / "p.npy")
    want = load_model(mlp_run).predict(x.reshape(50, -1).astype("float32") * np.float32(1 / 255), verbose=0)
    assert got.shape == (50, 10)
    np.testing.assert_allclose(got, want, atol=1e-6)
    # Printed: one row per example, the likeliest class and its probability.
    code, out, _ = specc_main(capsys, "predict", mlp_run, tmp_path / "digits.npy")
    lines = out.splitlines()
    assert lines[0].split() == ["input", "class", "probability"] and len(lines) == 51
    first = lines[1].split()
    assert first[0] == "0" and int(first[1]) == want[0].argmax() and float(first[2]) == pytest.approx(want[0].max(), abs=1e-4)
    # One example without the batch axis.
    np.save(tmp_path / "one.npy", x[3])
    code, out, _ = specc_main(capsys, "predict", mlp_run, tmp_path / "one.npy")
    assert code == 0 and len(out.splitlines()) == 2 and int(out.splitlines()[1].split()[1]) == want[3].argmax()


def test_predict_names_the_file_and_both_shapes_when_they_do_not_fit(mlp_run, tmp_path, capsys):
    np.save(tmp_path / "bad.npy", np.zeros((5, 20, 28), dtype=np.uint8))
    code, _, err = specc_main(capsys, "predict", mlp_run, tmp_path / "bad.npy")
    assert code == 3 and "Traceback" not in err
    assert err.startswith(f"{tmp_path / 'bad.npy'}: error: found shape (5, 20, 28); the model expects `pixels`: (N, 784)")
    assert "flatten" in err and "scale by 1/255" in err


def test_predict_csv_reads_the_feature_columns_by_name(diabetes_run, tmp_path, capsys):
    table = np.loadtxt(SPECS / "data" / "diabetes.csv", delimiter=",", skiprows=1, dtype=np.float32)
    # Columns in another order and no target: read by name.
    rows = ["s6,s5,s4,s3,s2,s1,bp,bmi,sex,age"] + [",".join(map(str, r[9::-1])) for r in table[:20]]
    (tmp_path / "patients.csv").write_text("\n".join(rows) + "\n")
    code, out, err = specc_main(capsys, "predict", diabetes_run, tmp_path / "patients.csv", "-o", tmp_path / "p.csv")
    assert code == 0, err
    with open(tmp_path / "p.csv") as f:
        got = list(csv.DictReader(f))
    want = load_model(diabetes_run).predict(table[:20, :10], verbose=0)[:, 0]
    assert [r["input"] for r in got] == [str(i) for i in range(20)]
    np.testing.assert_allclose([float(r["progression"]) for r in got], want, rtol=1e-6)
    code, out, _ = specc_main(capsys, "predict", diabetes_run, SPECS / "data" / "diabetes.csv")  # a target column is ignored
    assert code == 0 and out.splitlines()[0].split() == ["input", "progression"] and len(out.splitlines()) == 443


def _expected_image_probabilities(run: Path, files: list[Path]) -> np.ndarray:
    from PIL import Image

    x = np.stack([np.asarray(Image.open(f).convert("RGB").resize((20, 20)), dtype=np.uint8) for f in files])
    return load_model(run).predict(x.astype("float32") * np.float32(1 / 255), verbose=0)


def test_predict_an_image_folder_and_one_image(image_run, tmp_path, capsys):
    folder = image_run.parent / "spec" / "digits" / "test"
    files = sorted(folder.rglob("*.png"))
    code, out, err = specc_main(capsys, "predict", image_run, folder, "-o", tmp_path / "p.csv")
    assert code == 0, err
    with open(tmp_path / "p.csv") as f:
        got = list(csv.DictReader(f))
    want = _expected_image_probabilities(image_run, files)
    classes = json.loads((image_run / "classes.json").read_text())
    assert [r["input"] for r in got] == [str(f.relative_to(folder)) for f in files]
    assert [r["name"] for r in got] == [classes[i] for i in want.argmax(axis=1)]
    np.testing.assert_allclose([[float(r[f"p_{c}"]) for c in classes] for r in got], want, atol=1e-6)
    # Mostly right after 10 short epochs on 400 digits: the files are read as the run read its training images.
    assert np.mean([r["name"] == Path(r["input"]).parent.name for r in got]) > 0.6
    code, out, err = specc_main(capsys, "predict", image_run, files[0])
    assert code == 0, err
    header, row = out.splitlines()
    assert header.split() == ["input", "class", "name", "probability"]
    assert row.split()[:3] == [files[0].name, str(want[0].argmax()), classes[want[0].argmax()]]


def test_predict_an_mnist_png_with_the_mnist_mlp(mlp_run, tmp_path, capsys):
    from specc.data.prepare import load_builtin

    mnist = load_builtin("mnist")
    files = write_digit_pngs(tmp_path / "pngs", mnist.x_test[:20], mnist.y_test[:20])
    code, out, err = specc_main(capsys, "predict", mlp_run, tmp_path / "pngs", "-o", tmp_path / "p.npy")
    assert code == 0, err
    order = np.argsort([str(f.relative_to(tmp_path / "pngs")) for f in files])
    want = load_model(mlp_run).predict(mnist.x_test[:20].reshape(20, -1).astype("float32") / np.float32(255), verbose=0)
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), want[order], atol=1e-5)


def test_predict_text_lines_with_the_saved_tokenizer(text_run, tmp_path, capsys):
    from specc.data.tokenizers import encode_texts, vocabulary_from_json

    (tmp_path / "new.txt").write_text("a great cast\n\nslow , dull film\n")
    code, out, err = specc_main(capsys, "predict", text_run, tmp_path / "new.txt", "-o", tmp_path / "p.npy")
    assert code == 0, err
    vocab = vocabulary_from_json((text_run / "tokenizer.json").read_text())
    ids = encode_texts(vocab, ["a great cast", "slow , dull film"], 6)
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), load_model(text_run).predict(ids, verbose=0), atol=1e-6)
    code, out, _ = specc_main(capsys, "predict", text_run, tmp_path / "new.txt")
    assert [line.split()[:3] for line in out.splitlines()[1:]] == [["a", "great", "cast"], ["slow", ",", "dull"]]


@pytest.mark.parametrize("args, needle", [
    (["eval", "{tmp}/nowhere"], "no such run directory"),
    (["eval", "{tmp}"], "not a finished run: it has no spec.model"),
    (["predict", "{mlp}", "{tmp}/x.npy"], "no such file or folder"),
    (["predict", "{mlp}", "{mlp}/spec.model"], "cannot predict from `.model` files"),
    (["predict", "{mlp}", "{mlp}/metrics.json", "-o", "{tmp}/p.txt"], "-o writes .npy, .npz or .csv files"),
    (["eval", "{mlp}", "--data", "{tmp}/none.npz"], "no such file or folder"),
])
def test_usage_errors_exit_2(args, needle, mlp_run, tmp_path, capsys):
    code, _, err = specc_main(capsys, *[a.format(tmp=tmp_path, mlp=mlp_run) for a in args])
    assert code == 2, err
    assert needle in err and "Traceback" not in err


def test_bad_data_exits_3(image_run, tmp_path, capsys):
    (tmp_path / "cats").mkdir()
    shutil.copy(next((image_run.parent / "spec" / "digits" / "test" / "one").glob("*.png")), tmp_path / "cats" / "a.png")
    code, _, err = specc_main(capsys, "eval", image_run, "--data", tmp_path)
    assert code == 3 and "class folders cats are not classes of the run" in err
    (tmp_path / "broken.png").write_bytes(b"not a png")
    code, _, err = specc_main(capsys, "predict", image_run, tmp_path / "broken.png")
    assert code == 3 and f"{tmp_path / 'broken.png'}: error: cannot read this image" in err
    x = np.zeros((2, 20, 20, 3), dtype=np.float32)
    x[1, 4, 5, 0] = np.nan
    np.save(tmp_path / "nan.npy", x)
    code, _, err = specc_main(capsys, "predict", image_run, tmp_path / "nan.npy")
    assert code == 3 and "holds 1 NaN or infinite values (the first at index (1, 4, 5, 0))" in err
    (tmp_path / "run").mkdir()
    shutil.copy(image_run / "spec.model", tmp_path / "run")
    (tmp_path / "run" / "model.keras").write_bytes(b"PK\x03\x04 truncated")
    np.save(tmp_path / "x.npy", np.zeros((1, 20, 20, 3), dtype=np.uint8))
    code, _, err = specc_main(capsys, "predict", tmp_path / "run", tmp_path / "x.npy")
    assert code == 3 and err.startswith(f"{tmp_path / 'run' / 'model.keras'}: error: not a valid .keras file: it is truncated or not a zip archive")
