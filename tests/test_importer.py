"""`specc import`: Keras models written back as specs, and built again into the same architecture.

Architectures are compared layer by layer in Keras's order: class, `get_config()` (names aside), parameters, and
the wiring (which layer positions feed each call, with which call options). Models are built without drawing
weights (`no_weights`) where no file is saved: shapes, configs and parameter counts are all there, in seconds.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from specc.api import load, loads
from specc.cli import main
from specc.core.errors import DataError
from specc.compile.build import shapes_only as no_weights
from specc.lang.fmt import format_text
from specc.tools.importer import NotExpressible, import_file, import_model
from specc.runtime.keras_env import import_keras  # KERAS_BACKEND=jax first

keras = import_keras()
layers = keras.layers
ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.model"))


def _unnamed(value):
    """A config without the names of layers (the layer's own, and a wrapped layer's): naming only."""
    if isinstance(value, dict):
        out = {k: _unnamed(v) for k, v in value.items()}
        if value.get("module", "").startswith(("keras.layers", "specc")) and isinstance(out.get("config"), dict):
            out["config"].pop("name", None)
        return out
    if isinstance(value, (list, tuple)):
        return [_unnamed(v) for v in value]
    return value


def _wiring(value, index):
    """A node's arguments with each tensor replaced by (position of the layer that made it, node, tensor)."""
    if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
        name, node, tensor = value["config"]["keras_history"]
        return ("tensor", index[name], node, tensor)
    if isinstance(value, dict):
        return {k: _wiring(v, index) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_wiring(v, index) for v in value]
    return value


def _renamed(text: str) -> str:
    """Spec text without its first (comment) line, named tensors renumbered in order of definition
    (and laid out again, since shorter names wrap differently)."""
    body = text.split("\n", 1)[1]
    names = list(dict.fromkeys(re.findall(r"^\s*(\w+) = ", body, flags=re.MULTILINE)))
    return format_text(re.sub(r"\b\w+\b", lambda m: f"t{names.index(m[0])}" if m[0] in names else m[0], body))


def architecture(model, ignore=frozenset()) -> dict:
    """Everything about a model but its names and weights, layer by layer in Keras's order; `ignore` holds
    (layer position, config key) pairs left out."""
    config = model.get_config()
    index = {entry["name"]: i for i, entry in enumerate(config["layers"])}
    rows = []
    for k, (op, entry) in enumerate(zip(model.operations, config["layers"], strict=True)):
        assert op.name == entry["name"]
        own = _unnamed(op.get_config()) if hasattr(op, "get_config") else {}
        own = {key: v for key, v in own.items() if key != "name" and (k, key) not in ignore}
        rows.append({"class": entry["class_name"], "module": entry["module"], "config": own,
                     "params": op.count_params() if isinstance(op, layers.Layer) else 0,
                     "calls": _wiring(entry["inbound_nodes"], index)})
    ends = [[index[e[0]] for e in (config[k] if isinstance(config[k][0], list) else [config[k]])]
            for k in ("input_layers", "output_layers")]
    return {"layers": rows, "ends": ends, "params": model.count_params()}


def assert_same(original, imported, ignore=frozenset()) -> None:
    a, b = architecture(original, ignore), architecture(imported, ignore)
    assert [r["class"] for r in a["layers"]] == [r["class"] for r in b["layers"]]
    for k, (x, y) in enumerate(zip(a["layers"], b["layers"])):
        assert x == y, f"layer {k} ({x['class']}) differs"
    assert a["ends"] == b["ends"]
    assert a["params"] == b["params"] == original.count_params() == imported.count_params()


def _drawn(first, second) -> set[tuple[int, str]]:
    """(layer position, config key) that differ between two builds of one spec: Keras draws them itself
    (the seed of `random_translation` when none is given), so no import can reproduce them."""
    configs = [[_unnamed(op.get_config()) if hasattr(op, "get_config") else {} for op in m.operations]
               for m in (first, second)]
    return {(k, key) for k, (x, y) in enumerate(zip(*configs)) for key in x if key != "name" and x[key] != y.get(key)}


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_every_spec_round_trips(path):
    with no_weights():
        spec = load(path)
        original, again = spec.build_model(), spec.build_model()
        text = import_model(original)
        imported = loads(text, f"<import of {path.name}>").build_model()
        drawn = _drawn(original, again)  # the only difference allowed: what Keras drew, as between two builds
        assert {key for _, key in drawn} <= {"seed"}
        assert_same(original, imported, ignore=drawn)
        assert len(original.layers) == len(imported.layers)
        # Importing the imported model gives the same spec, tensor names aside: nothing lost or added on the way.
        assert _renamed(import_model(imported, name=spec.plan.name)) == _renamed(text)
    assert "lambda" not in text.lower()


def test_imported_spec_reads_like_a_spec():
    with no_weights():
        resnet = import_model(load(ROOT / "specs/cifar10_resnet20.model").build_model())
        gpt = import_model(load(ROOT / "specs/shakespeare_gpt.model").build_model())
        rec = import_model(load(ROOT / "specs/recommender.model").build_model())
    assert ("  input image: (32, 32, 3)\n  random_translation(0.140625, 0.140625, fill_mode=constant, "
            "interpolation=nearest)\n  random_flip(mode=horizontal)\n") in resnet
    assert "kernel_initializer=he_normal, kernel_regularizer=l2(0.0001)" in resnet
    assert "batch_normalization(momentum=0.9)" in resnet and "-> add\n" in resnet
    assert "multi_head_attention(4, 16, dropout=0.1, use_causal_mask=true)" in gpt
    assert "position_embedding(64)" in gpt and "input tokens: (64,) int32" in gpt
    # Named tensors keep the spec's names, and a merge takes a list of them.
    assert "match = [u, v] -> dot(1)" in rec and "rating = dense(1)" in rec and "user -> embedding(151, 8" in rec
    assert "output" not in rec.split("model", 1)[1]  # one output, the last tensor


@pytest.mark.parametrize("stem", ["mnist_sgd", "shakespeare_gpt", "sst2_lstm"])
def test_saved_keras_file_through_the_cli(stem, tmp_path, capsys):
    from specc.train.runner import compile_model

    spec = load(ROOT / f"specs/{stem}.model")
    model = spec.build_model()
    compile_model(spec.plan, model)
    saved = tmp_path / "model.keras"
    model.save(saved)
    out = tmp_path / "imported.model"
    assert main(["import", str(saved), "-o", str(out)]) == 0
    assert main(["check", str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"{out}: ok"
    text = out.read_text()
    with no_weights():
        assert_same(model, load(out).build_model())
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically: no temporary file left
    # The training configuration comes along: the spec's loss, optimizer and metrics.
    train = {"mnist_sgd": ["loss: sparse_categorical_crossentropy(from_logits=true)", "optimizer: sgd(momentum=0.9)",
                           "metrics: [accuracy]"],
             "shakespeare_gpt": ["optimizer: adamw(learning_rate=0.003, weight_decay=0.01)"],
             "sst2_lstm": ["loss: binary_crossentropy", "metrics: [accuracy, precision, recall]"]}[stem]
    assert all(f"  {line}\n" in text for line in train), text
    plan = load(out).plan
    assert plan.train is not None and plan.train.loss is not None
    # Without -o the spec goes to standard output.
    assert main(["import", str(saved)]) == 0
    assert capsys.readouterr().out == text


def _residual_cnn():
    inp = keras.Input((32, 32, 3), name="image")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False)(inp)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    for filters, stride in ((16, 1), (32, 2)):
        y = layers.Conv2D(filters, 3, strides=stride, padding="same", kernel_initializer="he_normal")(x)
        y = layers.BatchNormalization(momentum=0.9)(y)
        y = layers.ReLU()(y)
        y = layers.Conv2D(filters, 3, padding="same", kernel_regularizer=keras.regularizers.L2(1e-4))(y)
        short = x if stride == 1 else layers.Conv2D(filters, 1, strides=stride)(x)
        x = layers.LeakyReLU(0.1)(layers.Add()([y, short]))
    x = layers.GlobalAveragePooling2D()(x)
    out = layers.Dense(10, activation="softmax", name="probs")(layers.Dropout(0.25)(x))
    return keras.Model(inp, out, name="small-resnet")


def test_handwritten_residual_cnn(tmp_path):
    model = _residual_cnn()
    model.compile(optimizer=keras.optimizers.Adam(3e-4), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    text = import_model(model)
    assert "model small_resnet {" in text and "input image: (32, 32, 3)" in text
    assert "activation(relu)" in text and "leakyrelu(negative_slope=0.1)" in text
    assert "probs = dense(10, activation=softmax)" in text
    assert "train {\n  loss: sparse_categorical_crossentropy\n  optimizer: adam(learning_rate=0.0003)\n" in text
    assert text.count("-> add") == 2
    with no_weights():
        assert_same(model, loads(text).build_model())
    spec = tmp_path / "resnet.model"
    spec.write_text(text)
    assert main(["check", str(spec)]) == 0


def test_handwritten_two_inputs_two_outputs():
    with no_weights():
        user = keras.Input((16,), name="user")
        item = keras.Input((8,), dtype="int32", name="item")
        e = layers.Flatten()(layers.Embedding(100, 4)(item))
        h = layers.Concatenate()([layers.Dense(8, activation="relu")(user), e])
        model = keras.Model([user, item], [layers.Dense(1, activation="sigmoid", name="score")(h),
                                           layers.Dense(3, name="kind")(h)])
        text = import_model(model, name="two_towers")
        imported = loads(text).build_model()
        assert_same(model, imported)
    assert "input user: (16,)\n  input item: (8,) int32\n  item -> embedding(100, 4)\n" in text
    assert "output score, kind" in text
    assert [t.name for t in imported.outputs] != [] and imported.output_names == ["score", "kind"]
    assert [tuple(t.shape) for t in imported.inputs] == [(None, 16), (None, 8)]


def test_nested_models_are_flattened():
    with no_weights():
        encoder = keras.Sequential([keras.Input((20,)), layers.Dense(8, activation="tanh"), layers.Dropout(0.5)],
                                   name="encoder")
        inp = keras.Input((20,))
        model = keras.Model(inp, layers.Dense(2)(encoder(inp)))
        text = import_model(model)
        imported = loads(text).build_model()
    assert "# nested model `encoder` (Sequential) was flattened into its layers." in text
    assert [type(layer).__name__ for layer in imported.layers] == ["InputLayer", "Dense", "Dropout", "Dense"]
    assert imported.count_params() == model.count_params() == 20 * 8 + 8 + 8 * 2 + 2


def _error(model) -> str:
    with pytest.raises(NotExpressible) as caught:
        import_model(model)
    return caught.value.message


def test_lambda_is_refused_naming_the_layer(tmp_path, capsys):
    with no_weights():
        inp = keras.Input((4,))
        model = keras.Model(inp, layers.Dense(2)(layers.Lambda(lambda t: t * 2, name="doubler")(inp)))
        message = _error(model)
    assert "`doubler` (Lambda)" in message and "arbitrary Python code" in message
    # From a file: refused by name before Keras is asked to load it (its safe mode would refuse it too).
    inp = keras.Input((4,))
    saved = tmp_path / "lambda.keras"
    keras.Model(inp, layers.Lambda(lambda t: t * 2, name="doubler")(inp)).save(saved)
    assert main(["import", str(saved), "-o", str(tmp_path / "out.model")]) == 2
    assert "layer `doubler` (Lambda) cannot be imported" in capsys.readouterr().err
    assert not (tmp_path / "out.model").exists()


def test_shared_layer_is_refused_naming_the_layer():
    with no_weights():
        a, b = keras.Input((4,)), keras.Input((4,))
        shared = layers.Dense(3, name="tied")
        message = _error(keras.Model([a, b], layers.Add()([shared(a), shared(b)])))
    assert "`tied` (Dense) is called 2 times" in message and "shared layer" in message


@pytest.mark.parametrize("build, expected", [
    (lambda i: layers.Dense(4)(i) + 1, "operation `add"),  # keras.ops, not a layer
    (lambda i: layers.LSTM(3, return_state=True)(layers.Reshape((2, 2))(i))[0], "returns 3 tensors"),
    (lambda i: type("Scaled", (layers.Dense,), {})(3, name="custom")(i), "`custom` (Scaled)"),
    (lambda i: layers.Dropout(0.5, name="mc")(i, training=True), "`training=True`"),
])
def test_what_a_spec_cannot_say_is_named(build, expected):
    with no_weights():
        inp = keras.Input((4,))
        message = _error(keras.Model(inp, build(inp)))
    assert expected in message


def test_missing_or_wrong_file(tmp_path, capsys):
    assert main(["import", str(tmp_path / "nope.keras")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DataError) as caught:  # a bad file: exit 3, saying what it is
        import_file(bad)
    assert "not a valid .keras file" in caught.value.message and caught.value.exit_code == 3
    assert main(["import", str(ROOT / "specs/mnist.model")]) == 2  # a spec, not a Keras file
    assert "expected a Keras 3 `.keras` file" in capsys.readouterr().err


def test_python_api_imports_a_model_built_in_python():
    import keras

    import specc

    inputs = keras.Input((8,), name="features")
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
    text = specc.import_model(model)
    rebuilt = specc.loads(text).build_model()
    assert rebuilt.count_params() == model.count_params() == 8 * 16 + 16 + 16 * 3 + 3
    assert "dense(16, activation=relu)" in text
