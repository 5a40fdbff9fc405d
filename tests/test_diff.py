"""`specc diff`: a semantic diff of two specs, on its own and as a git external diff driver."""

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import specc
from specc import cli
from specc.tools.diff import diff_plans, render_diff

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT / "specs" / "mnist.model"

# specs/mnist.model's network and training, written here so that edits to it find their text.
MNIST_TEXT = """# MNIST digits with a small convolutional network
model mnist_cnn {
  input image: (28, 28, 1)
  conv2d(32, 3, activation=relu)
  maxpool2d(2)  # (13, 13, 32)
  conv2d(64, 3, activation=relu)
  maxpool2d(2)  # (5, 5, 64)
  flatten
  dense(10, activation=softmax)
}
data { dataset: mnist; scale: 1/255 }
train {
  loss: sparse_categorical_crossentropy
  optimizer: adam(learning_rate=1e-3)
  metrics: [accuracy]
  epochs: 5
  batch_size: 32
  seed: 1
}
expect { params: 34_826; output_shape: (10,); initial_loss: chance; overfit: 100; gradients: healthy }
"""

MLP = """
model mlp {
  input x: (20,)
  dense(64, activation=relu)
  dense(32, activation=relu)
  dense(10, activation=softmax)
}
train { loss: sparse_categorical_crossentropy; optimizer: adam(learning_rate=1e-3); epochs: 5 }
"""

TINY_RESNET = """
block residual(filters) {
  parallel add {
    branch {
      conv2d(filters, 3, padding=same)
      batchnorm
      relu
      conv2d(filters, 3, padding=same)
      batchnorm
    }
    branch {}
  }
  relu
}

model resnet_tiny {
  input image: (16, 16, 3)
  conv2d(8, 3, padding=same)
  repeat 2 { residual(8) }
  maxpool2d(2)
  global_average_pooling2d
  dense(10, activation=softmax)
}
"""

# The same network and training: other layout, comments, aliases, defaults spelled out, keywords
# for positional arguments, blocks and sections in another order, the same number written otherwise.
TINY_RESNET_RESTYLED = """
# the same network, written differently
model resnet_tiny {
  input image: (16, 16, 3)
  conv2d(filters=8, kernel_size=(3, 3), strides=1, padding=same)   # stem
  repeat 2 {
    residual(4 * 2)
  }
  max_pooling2d(pool_size=2, padding=valid)
  gap2d
  dense(10, activation=softmax, use_bias=true)
}

block residual(filters) {
  parallel add {
    branch { conv2d(filters, 3, padding=same); batch_normalization(); relu
             conv2d(filters, 3, padding=same); batch_normalization }
    branch {}
  }
  relu
}
"""


def edit(text: str, old: str, new: str) -> str:
    """`text` with `old` replaced, which must be there."""
    assert old in text, old
    return text.replace(old, new)


def plan(text: str):
    return specc.loads(text).plan


def diff_texts(a: str, b: str):
    return diff_plans(plan(a), plan(b), "a.model", "b.model")


def layer_params(text: str) -> dict[str, int]:
    """Each layer's parameter count, from the Keras model itself (independent of `summarize`)."""
    model = specc.loads(text).build_model()
    return {layer.name: layer.count_params() for layer in model.layers}


def by_name(d) -> dict[str, object]:
    return {c.name: c for c in d.layers}


def test_formatting_comments_aliases_and_defaults_are_no_change():
    d = diff_texts(TINY_RESNET, TINY_RESNET_RESTYLED)
    assert d.same_architecture and d.layers == [] and d.inputs == [] and d.settings == []
    assert d.params == (2_778, 2_778)  # stem 3*3*3*8+8, 4 convs of 3*3*8*8+8, 4 BN of 4*8, dense 8*10+10
    text = render_diff(d)
    assert "no architecture changes (total params 2,778)" in text and "no setting changes" in text
    assert not any(line[:2] in ("+ ", "- ", "~ ") for line in text.splitlines())
    d = diff_plans(specc.load(MNIST).plan, plan(MNIST_TEXT))  # the real spec, laid out and commented otherwise
    assert d.same_architecture and d.settings == [] and d.params == (34_826, 34_826)


def test_changed_argument_reports_it_and_the_params_it_moves():
    new = edit(MNIST_TEXT, "conv2d(64, 3, activation=relu)", "conv2d(128, 3, activation=relu)")
    d = diff_texts(MNIST_TEXT, new)
    assert [(c.status, c.name) for c in d.layers] == [("changed", "conv2d_1"), ("changed", "dense")]
    conv, dense = d.layers
    assert conv.changes == [("filters", 64, 128)]
    assert conv.params == (3 * 3 * 32 * 64 + 64, 3 * 3 * 32 * 128 + 128) == (18_496, 36_992)
    assert dense.changes == [] and dense.params == (5 * 5 * 64 * 10 + 10, 5 * 5 * 128 * 10 + 10) == (16_010, 32_010)
    assert d.params == (34_826, 320 + 36_992 + 32_010)
    assert d.settings == []
    text = render_diff(d)
    assert "~ conv2d_1 (Conv2D): filters 64 -> 128; params 18,496 -> 36,992" in text
    assert "~ dense (Dense): params 16,010 -> 32,010" in text
    assert f"total params 34,826 -> {d.params[1]:,} (+{d.params[1] - 34_826:,})" in text


def test_inserted_layer_does_not_shift_the_rest():
    # Dropout after the first pooling: every later layer gets a new automatic name... but is not changed.
    new = edit(MNIST_TEXT, "maxpool2d(2)  # (13, 13, 32)",
                             "maxpool2d(2)\n  dropout(0.25)\n  conv2d(32, 3, padding=same)")
    d = diff_texts(MNIST_TEXT, new)
    added = [c for c in d.layers if c.status == "added"]
    assert [(c.name, c.cls, c.args, c.inputs) for c in added] == [
        ("dropout", "Dropout", {"rate": 0.25}, ["maxpool2d"]),
        ("conv2d_1", "Conv2D", {"filters": 32, "kernel_size": 3, "padding": "same"}, ["dropout"]),
    ]
    assert added[1].params == (None, 3 * 3 * 32 * 32 + 32)
    # The next conv had its input from the inserted layers only: same arguments, same params, not reported.
    assert [c for c in d.layers if c.status != "added"] == []
    assert d.params == (34_826, 34_826 + 9_248)
    text = render_diff(d)
    assert "+ dropout (Dropout) rate=0.25 after maxpool2d" in text
    assert "+ conv2d_1 (Conv2D) filters=32, kernel_size=3, padding=same after dropout; params 9,248" in text
    assert "conv2d_2" not in text and "dense" not in text


def test_inserted_dense_changes_only_the_next_layer_params():
    new = edit(MLP, "dense(32, activation=relu)", "dense(48, activation=relu)\n  dense(32, activation=relu)")
    d = diff_texts(MLP, new)
    old_params, new_params = layer_params(MLP), layer_params(new)  # from the Keras models themselves
    assert new_params["dense_1"] == 64 * 48 + 48 and new_params["dense_2"] == 48 * 32 + 32
    assert [(c.status, c.name, c.old_name) for c in d.layers] == [
        ("added", "dense_1", None), ("changed", "dense_2", "dense_1")]
    assert d.layers[0].params == (None, new_params["dense_1"])
    assert d.layers[1].changes == [] and d.layers[1].params == (old_params["dense_1"], new_params["dense_2"])
    assert d.params == (sum(old_params.values()), sum(new_params.values()))
    assert "~ dense_2 (Dense, was dense_1): params 2,080 -> 1,568" in render_diff(d)


def test_inserted_layer_inside_a_repeated_block():
    new = edit(TINY_RESNET, "      relu\n      conv2d", "      relu\n      dropout(0.1)\n      conv2d")
    d = diff_texts(TINY_RESNET, new)
    assert [(c.status, c.name, c.inputs) for c in d.layers] == [
        ("added", "dropout", ["relu"]), ("added", "dropout_1", ["relu_2"])]
    assert d.params == (2_778, 2_778) and "total params 2,778 -> 2,778 (unchanged)" in render_diff(d)


def test_removed_layer():
    new = edit(MNIST_TEXT, "  maxpool2d(2)  # (5, 5, 64)\n", "")
    d = diff_texts(MNIST_TEXT, new)
    assert [(c.status, c.name, c.cls) for c in d.layers] == [
        ("removed", "maxpool2d_1", "MaxPooling2D"), ("changed", "dense", "Dense")]
    assert d.layers[0].args == {"pool_size": 2} and d.layers[0].inputs == ["conv2d_1"]
    assert d.layers[1].params == (16_010, 11 * 11 * 64 * 10 + 10)
    text = render_diff(d)
    assert "- maxpool2d_1 (MaxPooling2D) pool_size=2 after conv2d_1" in text
    assert "total params 34,826 -> 96,266 (+61,440)" in text


def test_changed_train_settings_only():
    new = edit(edit(MNIST_TEXT, "epochs: 5", "epochs: 10"), "learning_rate=1e-3", "learning_rate=5e-4")
    new = edit(new, "  seed: 1\n", "")  # and a setting removed: compared with its default (none)
    d = diff_texts(MNIST_TEXT, new)
    assert d.same_architecture and d.layers == []
    assert [(s.key, s.status) for s in d.settings] == [
        ("train.optimizer", "changed"), ("train.epochs", "changed"), ("train.seed", "changed")]
    text = render_diff(d)
    assert "no architecture changes (total params 34,826)" in text
    assert "train.optimizer: adam(learning_rate=0.001) -> adam(learning_rate=0.0005)" in text
    assert "train.epochs: 5 -> 10" in text and "train.seed: 1 -> none" in text
    # Spelling out a default is no change.
    assert diff_texts(MNIST_TEXT, edit(MNIST_TEXT, "seed: 1", "seed: 1\n  shuffle: true")).settings == []


TWO_TOWERS = """
model two_towers {
  input user: (16,)
  input item: (32,)
  u = user -> dense(32, activation=relu)
  v = item -> dense(32, activation=relu)
  score = [u, v] -> concatenate -> dense(1, activation=sigmoid)
  kind = [u, v] -> concatenate -> dense(4, activation=softmax)
  output score, kind
}
"""


def test_inputs_named_layers_and_outputs():
    new = edit(TWO_TOWERS, "input item: (32,)", "input item: (16,)").replace("kind", "category")
    d = diff_texts(TWO_TOWERS, edit(new, "output score, category", "output category, score"))
    assert [(c.name, c.changes) for c in d.inputs] == [("item", [("shape", (32,), (16,))])]
    # A name the spec chose is part of the network (losses and metrics key on it); generated ones are not.
    assert [(c.name, c.changes, c.params) for c in d.layers] == [
        ("v", [], (32 * 32 + 32, 16 * 32 + 32)), ("category", [("name", "kind", "category")], (260, 260))]
    assert d.outputs == (["score", "kind"], ["category", "score"])
    assert render_diff(d).splitlines()[1:5] == [
        "~ input item: shape (32,) -> (16,)", "~ v (Dense): params 1,056 -> 544",
        "~ category (Dense): name kind -> category", "~ outputs score, kind -> category, score"]


def test_json_format(tmp_path, capsys):
    a, b = tmp_path / "a.model", tmp_path / "b.model"
    a.write_text(MLP)
    b.write_text(edit(edit(MLP, "dense(32, activation=relu)", "dense(32, activation=tanh)"), "epochs: 5", "epochs: 8"))
    assert cli.main(["diff", str(a), str(b), "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["old"] == str(a) and out["new"] == str(b) and out["model"] == {"old": "mlp", "new": "mlp"}
    assert out["same_architecture"] is False and out["inputs"] == [] and out["outputs"] is None
    assert out["layers"] == [{"status": "changed", "name": "dense_1", "type": "Dense",
                              "changes": [{"arg": "activation", "old": "relu", "new": "tanh"}],
                              "params": {"old": 2_080, "new": 2_080}}]
    total = 20 * 64 + 64 + 2_080 + 330
    assert out["params"] == {"old": total, "new": total, "delta": 0}
    assert out["settings"] == [{"key": "train.epochs", "status": "changed", "old": 5, "new": 8}]


def test_git_driver_arguments_with_dev_null(tmp_path, capsys):
    spec = tmp_path / "tmp_new.model"
    spec.write_text(MLP)
    # git: path old-file old-hex old-mode new-file new-hex new-mode
    assert cli.main(["diff", "models/mlp.model", "/dev/null", ".", ".", str(spec), "abc123", "100644"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "diff /dev/null -> b/models/mlp.model"
    assert out[1:5] == ["+ input x: (20,)",
                        "+ dense (Dense) units=64, activation=relu after x; params 1,344",
                        "+ dense_1 (Dense) units=32, activation=relu after dense; params 2,080",
                        "+ dense_2 (Dense) units=10, activation=softmax after dense_1; params 330"]
    assert "total params 3,754 (new spec)" in out and "+ train.epochs: 5" in out
    assert cli.main(["diff", "models/mlp.model", str(spec), "abc123", "100644", "/dev/null", ".", "."]) == 0
    out = capsys.readouterr().out
    assert out.startswith("diff a/models/mlp.model -> /dev/null\n- input x: (20,)\n")
    assert "- dense_2 (Dense) units=10" in out and "total params 3,754 (deleted spec)" in out


def test_git_driver_falls_back_to_a_text_diff(tmp_path, capsys):
    old, new = tmp_path / "old.model", tmp_path / "new.model"
    old.write_text(MLP)
    new.write_text(edit(MLP, "dense(10,", "dense(1O,"))
    assert cli.main(["diff", "net.model", str(old), "1", "100644", str(new), "2", "100644"]) == 0
    out = capsys.readouterr().out
    assert "b/net.model:6:10: error: unexpected name `O`" in out
    assert "--- a/net.model\n+++ b/net.model\n" in out
    assert "-  dense(10, activation=softmax)\n+  dense(1O, activation=softmax)\n" in out
    # Outside git, the same error is the usual SpecError (exit 1), and a wrong argument count is a usage error.
    assert cli.main(["diff", str(old), str(new)]) == 1
    assert f"{new}:6:10: error: unexpected name `O`" in capsys.readouterr().err
    assert cli.main(["diff", str(old)]) == 2


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_diff_and_log_use_the_driver(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "KERAS_BACKEND": "jax", "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_PAGER": "cat",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], check=False, cwd=tmp_path, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    git("init", "-q")
    git("config", "diff.specc.command", f"{shlex.quote(sys.executable)} -m specc diff")  # this repo only
    (tmp_path / ".gitattributes").write_text("*.model diff=specc\n")
    spec = tmp_path / "specs" / "mnist.model"
    spec.parent.mkdir()
    spec.write_text(MNIST_TEXT)
    git("add", ".")
    git("commit", "-qm", "mnist")
    wider = edit(MNIST_TEXT, "conv2d(64, 3, activation=relu)", "conv2d(128, 3, activation=relu)")
    spec.write_text(edit(edit(wider, "epochs: 5", "epochs: 10"), "# MNIST digits", "# Wider MNIST digits"))
    git("commit", "-qam", "wider")

    semantic = ["diff a/specs/mnist.model -> b/specs/mnist.model",
                "~ conv2d_1 (Conv2D): filters 64 -> 128; params 18,496 -> 36,992",
                "~ dense (Dense): params 16,010 -> 32,010",
                "total params 34,826 -> 69,322 (+34,496)",
                "train.epochs: 5 -> 10"]
    assert git("diff", "HEAD~1").splitlines() == semantic
    assert "-# MNIST digits" in git("diff", "--no-ext-diff", "HEAD~1")
    # `git log -p` (and `git show`) use an external diff driver only when given --ext-diff.
    plain = git("log", "-p")
    assert "diff --git a/specs/mnist.model" in plain and "~ conv2d_1" not in plain
    log = git("log", "-p", "--ext-diff")
    assert "\n".join(semantic) in log and "diff --git a/specs/mnist.model" not in log
    assert "diff /dev/null -> b/specs/mnist.model\n+ input image: (28, 28, 1)\n" in log  # the first commit
    assert "total params 34,826 (new spec)" in log


def test_device_section_changes_are_settings():
    base = "model m {\n  input x: (4,)\n  dense(2)\n}\n"
    one = specc.loads(base, "a.model").plan
    spread = specc.loads(base + "device {\n  kind: cpu\n  parallel: data\n}\n", "b.model").plan
    text = render_diff(diff_plans(one, spread, "a.model", "b.model"))
    assert "no architecture changes" in text
    assert "device: auto -> cpu" in text and "device.parallel: data" in text
    assert "no setting changes" in render_diff(diff_plans(spread, spread))


def test_contracts_and_constants_in_a_diff():
    """A changed contract is a setting change, written as the spec writes it; a constant is its value."""
    base = "let w = 2\nmodel m {\n  input x: (4,)\n  dense(w)\n}\ntrain { loss: mse }\n"
    one = specc.loads(base + "expect {\n  params: 10\n  initial_loss: chance\n}\n", "a.model").plan
    two = specc.loads(base.replace("w = 2", "w = 1 + 1") + "expect {\n  params: at_most(12)\n  initial_loss: near(2.3, 0.2)\n}\n",
                      "b.model").plan
    text = render_diff(diff_plans(one, two, "a.model", "b.model"))
    assert "no architecture changes" in text  # `w` is 2 either way
    assert "expect.params: 10 -> at_most(12)" in text and "expect.initial_loss: chance -> near(2.3, 0.2)" in text
    settings = {s["key"]: s for s in diff_plans(one, two).to_dict()["settings"]}
    assert settings["expect.params"]["new"] == "at_most(12)"
    json.dumps(diff_plans(one, two).to_dict())  # all of it is JSON
