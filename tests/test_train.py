"""Training features end to end on real (small) data: schedules, early stopping, validation,
binary metrics, several inputs and outputs, residual blocks."""

import numpy as np

import specc


def test_schedule_early_stopping_validation_and_binary_metrics(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 4)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("float32")
    np.savez(tmp_path / "d.npz", x=x, y=y)
    (tmp_path / "s.model").write_text("""
model clf {
  input x: (4,)
  dense(16, activation=relu)
  dense(1, activation=sigmoid)
}
data { file: "d.npz"; test_split: 0.25 }
train {
  loss: binary_crossentropy
  optimizer: sgd(learning_rate=cosine_decay(0.5, decay_steps=200), momentum=0.9)
  metrics: [accuracy, precision, recall, auc]
  epochs: 40
  batch_size: 32
  validation_split: 0.2
  seed: 3
  early_stopping: early_stopping(monitor=val_loss, patience=2, min_delta=0.01)
}
""")
    result = specc.load(tmp_path / "s.model").run(out=tmp_path / "run")
    m = result.metrics
    assert m["examples"] == 384 and m["test_on"] == "test"
    assert set(m["test"]) == {"loss", "accuracy", "precision", "recall", "auc"}
    assert m["test"]["accuracy"] > 0.9 and m["test"]["auc"] > 0.95
    assert "loss" in m["validation"]
    assert 2 < m["epochs"] < 40  # early stopping ended it
    lr = result.model.optimizer.learning_rate
    assert float(lr) < 0.5  # the cosine schedule decayed the rate


def test_several_inputs_and_outputs_from_named_arrays(tmp_path):
    rng = np.random.default_rng(1)
    user, item = rng.normal(size=(256, 3)).astype("float32"), rng.normal(size=(256, 5)).astype("float32")
    score = (user.sum(1) - item.sum(1)).astype("float32")
    kind = (score > 0).astype("int64")
    np.savez(tmp_path / "d.npz", user=user, item=item, score=score, kind=kind)
    (tmp_path / "s.model").write_text("""
model towers {
  input user: (3,)
  input item: (5,)
  u = user -> dense(8, activation=relu)
  v = item -> dense(8, activation=relu)
  joint = [u, v] -> concatenate
  score = joint -> dense(1)
  kind = joint -> dense(2, activation=softmax)
  output score, kind
}
data { file: "d.npz" }
train { loss: [mse, sparse_categorical_crossentropy]; optimizer: adam(learning_rate=0.01); epochs: 30; seed: 0 }
""")
    spec = specc.load(tmp_path / "s.model")
    model = spec.build_model()
    assert [t.name for t in model.inputs] == ["user", "item"]
    assert [l.name for l in model.layers if l.name in ("score", "kind")] == ["score", "kind"]
    result = spec.run(out=tmp_path / "run")
    assert result.history["loss"][-1] < 0.5 * result.history["loss"][0]
    assert {"score_loss", "kind_loss"} <= set(result.metrics["test"])


def test_residual_blocks_train_on_mnist(tmp_path, data_dir):
    (tmp_path / "s.model").write_text("""
block residual(filters) {
  parallel add {
    branch {
      conv2d(filters, 3, padding=same, activation=relu)
      conv2d(filters, 3, padding=same)
    }
    branch {}
  }
  relu
}
model res {
  input image: (28, 28, 1)
  conv2d(8, 3, strides=2, padding=same)     # (14, 14, 8)
  repeat 2 { residual(8) }
  global_average_pooling2d
  dense(10, activation=softmax)
}
data { dataset: mnist; scale: 1/255 }
train { loss: sparse_categorical_crossentropy; optimizer: adam(learning_rate=3e-3); metrics: [accuracy]; epochs: 2; seed: 0 }
""")
    spec = specc.load(tmp_path / "s.model")
    adds = [n for n in spec.plan.layers if n.cls == "Add"]
    assert len(adds) == 2 and all(len(a.inputs) == 2 for a in adds)
    # The identity branch feeds the block's input straight into the merge.
    first_add = adds[0]
    assert spec.plan.layers[0].name in first_add.inputs
    result = spec.run(out=tmp_path / "run", limit=3000)
    assert result.metrics["params"] == spec.build_model().count_params()
    assert result.metrics["test"]["accuracy"] > 0.3  # chance is 0.1


def test_targets_that_do_not_fit_the_loss_are_a_data_error(tmp_path):
    spec = specc.loads("model m {\n  input x: (2,)\n  dense(3, activation=softmax)\n}\n"
                       "data {\n  x: [[0, 1], [1, 0]]\n  y: [1, 2]\n}\n"
                       "train {\n  loss: mse\n}\n", "m.model")
    try:
        spec.run(out=tmp_path / "run")
    except specc.DataError as err:
        assert err.message.startswith("training failed in its first steps: ")
        assert err.line == 10  # the loss line
        assert not (tmp_path / "run" / "metrics.json").exists()
    else:
        raise AssertionError("expected a DataError")


def test_a_diverging_run_stops_and_says_what_was_kept(tmp_path):
    spec = specc.loads("model m {\n  input x: (1,)\n  dense(1)\n}\n"
                       "data {\n  x: [1, 2, 3, 4, 5]\n  y: [2, 4, 5, 4, 5]\n}\n"
                       "train {\n  loss: mse\n  optimizer: sgd(learning_rate=1e6)\n  epochs: 50\n  batch_size: 5\n}\n",
                       "m.model")
    out = tmp_path / "run"
    try:
        spec.run(out=out)
    except specc.DivergedError as err:
        assert err.message.startswith("training stopped: the loss became ")
        assert "kept in" in err.message and err.line == 11
        assert sorted(p.name for p in out.iterdir()) == ["checkpoint.npz", "history.csv", "run.json", "spec.model"]
        epochs = len(out.joinpath("history.csv").read_text().splitlines()) - 1
        assert epochs < 50  # it stopped at the first non-finite epoch
    else:
        raise AssertionError("expected a DivergedError")


def test_same_seed_same_run_on_cpu(tmp_path, data_dir):
    from pathlib import Path

    spec = specc.load(Path(__file__).resolve().parent.parent / "specs" / "mnist_mlp.model")
    a = spec.run(out=tmp_path / "a", epochs=2, limit=2000)
    b = spec.run(out=tmp_path / "b", epochs=2, limit=2000)
    assert a.history == b.history and a.metrics["test"] == b.metrics["test"]
    for wa, wb in zip(a.model.get_weights(), b.model.get_weights()):
        assert np.array_equal(wa, wb)
