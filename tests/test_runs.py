"""Run directories and faults: what a run writes, a loss that becomes NaN, and data problems found before
training (each named with its file and what was found)."""

import hashlib
import json

import numpy as np
import pytest

import specc

LINEAR = """model m {{
  input x: (2,)
  dense(1)
}}
data {{ file: "lin.npz" }}
train {{
  loss: mse
  optimizer: sgd(learning_rate={lr})
  metrics: [mae]
  epochs: 8
  batch_size: 8
  seed: 0
}}
"""


@pytest.fixture
def linear(tmp_path):
    """A spec file factory: linear regression on 64 examples with SGD at a given learning rate."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2)).astype("float32")
    np.savez(tmp_path / "lin.npz", x=x, y=(x @ [1.5, -2.0] + 0.5).astype("float32"))

    def make(lr: float, name: str = "lin.model"):
        path = tmp_path / name
        path.write_text(LINEAR.format(lr=lr))
        return path

    return make


def test_a_run_directory_holds_the_spec_its_hash_versions_history_model_and_curves(tmp_path, linear):
    spec = linear(0.1)
    result = specc.load(spec).run(out=tmp_path / "run")
    out = result.out
    assert sorted(p.name for p in out.iterdir()) == ["curves.png", "history.csv", "metrics.json", "model.keras",
                                                     "run.json", "spec.model"]  # the checkpoint went at the end
    info = json.loads((out / "run.json").read_text())
    digest = hashlib.sha256(spec.read_bytes()).hexdigest()
    assert (out / "spec.model").read_text() == spec.read_text() and info["spec_sha256"] == digest
    assert info["seed"] == 0 and info["epochs"] == 8 and info["limit"] is None
    assert set(info["versions"]) >= {"specc", "keras", "jax"} and info["devices"][0].startswith("cpu:0")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["spec_sha256"] == digest and metrics["devices"] == info["devices"]
    assert metrics["epochs"] == 8 and len(metrics["epoch_seconds"]) == 8
    rows = (out / "history.csv").read_text().splitlines()
    assert rows[0] == "epoch,loss,mae" and len(rows) == 9
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_curves_plot_training_and_validation(tmp_path):
    from specc.train.curves import plot_curves

    history = {"loss": [2.0, 1.0, 0.01], "accuracy": [0.5, 0.7, 0.9], "val_loss": [2.1, 1.2, 0.3],
               "val_accuracy": [0.4, 0.6, 0.8], "auc": [0.5, 0.6, 0.7]}
    path = plot_curves(history, tmp_path / "curves.png", "m")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert [p.name for p in tmp_path.iterdir()] == ["curves.png"]


@pytest.fixture
def every_epoch(monkeypatch):
    """A checkpoint after every epoch, however short (tiny epochs are otherwise saved every few)."""
    from specc.train.checkpoint import EpochCheckpoint

    monkeypatch.setattr(EpochCheckpoint, "SPACING", 0)


def test_a_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(tmp_path, linear, every_epoch):
    spec = linear(3.0)
    out = tmp_path / "run"
    with pytest.raises(specc.DivergedError) as info:
        specc.load(spec).run(out=out)
    err = info.value
    # SGD at 3.0 diverges: the loss overflows in the 4th epoch, at its 4th step of 8 (with this seed).
    assert err.message.startswith("training stopped: the loss became inf in epoch 4, step 4 of 8; kept in ")
    assert "checkpoint.npz (after epoch 3)" in err.message and "no model was saved" in err.message
    assert err.line == 8 and "lower the learning rate" in err.hint
    assert f"`specc run SPEC --init {out}` starts a new run from the weights after epoch 3" in err.hint
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz", "history.csv", "run.json", "spec.model"]
    assert len((out / "history.csv").read_text().splitlines()) == 1 + 3  # the good epochs only

    # A new run with a lower learning rate starts from the last good weights, as the hint says.
    from specc.core.plan import InitPlan
    from specc.train.runner import run_plan

    plan = specc.load(linear(0.05, "slower.model")).plan
    init = InitPlan(**{"from": str(out)})
    result = run_plan(plan.model_copy(update={"init": init}), out=tmp_path / "again", verbose=0)
    assert result.metrics["init"]["layers"] == ["dense"]
    losses = result.history["loss"]
    assert losses[0] > 1e20 and losses[-1] < losses[0] / 1e4  # from the diverged weights, now converging


def test_a_new_run_refuses_an_unfinished_run_directory(tmp_path, linear, every_epoch):
    out = tmp_path / "run"
    with pytest.raises(specc.DivergedError):
        specc.load(linear(3.0)).run(out=out)
    with pytest.raises(specc.UsageError) as info:
        specc.load(linear(0.1)).run(out=out)
    # It diverged: resuming would diverge again, so the refusal points to `--init`, not to `--resume` (issue 14).
    assert "holds a run that diverged (its loss became inf in epoch 4, step 4)" in info.value.message
    assert f"specc run SPEC --init {out}" in info.value.hint and "--resume" not in info.value.hint
    with pytest.raises(specc.UsageError, match="resuming it would diverge again"):
        specc.load(linear(3.0)).run(resume=out)
    specc.load(linear(0.1)).run(out=out, force=True)  # --force starts over
    assert not (out / "checkpoint.npz").exists() and (out / "metrics.json").exists()


# --- data problems, found before training ------------------------------------------------------------

def _spec(tmp_path, data: str, model: str = "input x: (2,)\n  dense(3, activation=softmax)",
          loss: str = "sparse_categorical_crossentropy"):
    path = tmp_path / "s.model"
    path.write_text(f"model m {{\n  {model}\n}}\ndata {{ {data} }}\ntrain {{ loss: {loss}; epochs: 1 }}\n")
    return specc.load(path)


def _data_error(tmp_path, spec) -> specc.DataError:
    with pytest.raises(specc.DataError) as info:
        spec.run(out=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # found before anything was written
    return info.value


def _npz(tmp_path, name="d.npz", **arrays):
    np.savez(tmp_path / name, **arrays)
    return name


X = np.arange(12, dtype="float32").reshape(6, 2)


@pytest.mark.parametrize("labels, found", [
    ([0, 1, 2, 1, 0, 3], "training labels run from 0 to 3, but the model has 3 outputs (classes 0..2)"),
    ([0, 1, -1, 1, 0, 2], "training labels run from -1 to 2, but the model has 3 outputs (classes 0..2)"),
    ([0, 1, 0.5, 1, 0, 2], ("training labels from d.npz include 0.5, which is not a class number: "
                            "SparseCategoricalCrossentropy needs whole numbers 0..2")),
    ([0, 1, np.nan, 1, 0, 2], "the training targets from d.npz hold nan (at index 2; 1 value in all)"),
])
def test_labels_that_do_not_fit_a_sparse_classification_loss(tmp_path, labels, found):
    err = _data_error(tmp_path, _spec(tmp_path, f'file: "{_npz(tmp_path, x=X, y=np.array(labels, "float32"))}"'))
    assert err.message == found
    assert "d.npz" in err.render()


def test_binary_labels_outside_0_1(tmp_path):
    spec = _spec(tmp_path, f'file: "{_npz(tmp_path, x=X, y=np.array([1, 2, 1, 2, 2, 1], "float32"))}"',
                 model="input x: (2,)\n  dense(1, activation=sigmoid)", loss="binary_crossentropy")
    err = _data_error(tmp_path, spec)
    assert err.message == "training labels from d.npz run from 1 to 2, but BinaryCrossentropy needs labels in 0..1"


def test_labels_of_a_test_file_are_blamed_on_it(tmp_path):
    train = _npz(tmp_path, x=X, y=np.array([0, 1, 2, 0, 1, 2]))
    test = _npz(tmp_path, "t.npz", x_test=X, y_test=np.array([0, 1, 2, 0, 1, 7]))
    err = _data_error(tmp_path, _spec(tmp_path, f'file: "{train}"; test_file: "{test}"'))
    assert err.message.startswith("test labels run from 0 to 7") and "t.npz" in err.hint


def test_examples_that_do_not_fit_the_input(tmp_path):
    err = _data_error(tmp_path, _spec(tmp_path, f'file: "{_npz(tmp_path, x=np.zeros((6, 5), "float32"), y=np.zeros(6))}"'))
    assert err.message == "data examples have shape (5,) but input `x` expects (2,)"
    assert 'data { file: "d.npz" }' in err.render()  # the error points at the file's line in the spec


def test_nan_in_a_csv_feature(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,label\n1,2,0\n3,nan,1\n5,6,2\n")
    err = _data_error(tmp_path, _spec(tmp_path, 'file: "d.csv"; features: [a, b]; target: label'))
    assert err.message == "the training examples from d.csv hold nan (at index (1, 1); 1 value in all)"
    assert err.hint == "remove those examples or fill in the missing values"


@pytest.mark.parametrize("content, found", [
    ("", "d.csv is empty"),
    ("a,b,label\n", "d.csv has a header but no rows"),
    ("a,b,label\n1,2,0\n", "column `c` is not in d.csv; its columns are: a, b, label"),
])
def test_empty_and_incomplete_csv_files(tmp_path, content, found):
    (tmp_path / "d.csv").write_text(content)
    err = _data_error(tmp_path, _spec(tmp_path, 'file: "d.csv"; features: [a, c]; target: label'))
    assert err.message.endswith(found), err.message


def test_empty_npz_files(tmp_path):
    (tmp_path / "zero.npz").write_bytes(b"")
    err = _data_error(tmp_path, _spec(tmp_path, 'file: "zero.npz"'))
    assert err.message.endswith("zero.npz: the file is empty (0 bytes)")
    name = _npz(tmp_path, x=np.zeros((0, 2), "float32"), y=np.zeros(0))
    err = _data_error(tmp_path, _spec(tmp_path, f'file: "{name}"'))
    assert err.message == "the training data from d.npz is empty (0 examples)"
    name = _npz(tmp_path, "arrays.npz", inputs=X)
    err = _data_error(tmp_path, _spec(tmp_path, f'file: "{name}"'))
    assert err.message == "arrays.npz has arrays inputs; expected x_train/y_train or x/y"
