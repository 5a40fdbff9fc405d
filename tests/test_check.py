"""Resolution into the build plan: names, aliases, blocks, repeat, branches, tensor names."""

import pytest

import specc


def plan_of(body: str, extra: str = ""):
    return specc.loads(extra + "model m {\n" + body + "\n}\n").plan


@pytest.mark.parametrize("name, cls", [
    ("conv2d(4, 3)", "Conv2D"), ("max_pooling2d", "MaxPooling2D"), ("maxpool2d", "MaxPool2D"),
    ("batch_normalization", "BatchNormalization"), ("batchnorm", "BatchNormalization"),
    ("layernorm", "LayerNormalization"), ("relu", "ReLU"), ("leaky_relu", "LeakyReLU"),
    ("global_average_pooling2d", "GlobalAveragePooling2D"), ("gelu", "Activation"),
    ("multiheadattention(2, 4)", "MultiHeadAttention"),
])
def test_layer_names_and_aliases_resolve_to_keras_classes(name, cls):
    inputs = "input x: (8, 8, 3)\n" if cls != "MultiHeadAttention" else "input x: (8, 3)\n"
    chain = name if cls != "MultiHeadAttention" else f"[x, x] -> {name}"
    plan = plan_of(inputs + chain)
    assert plan.layers[0].cls == cls
    if cls == "Activation":
        assert plan.layers[0].kwargs == {"activation": "gelu"}


def test_every_keras_layer_is_reachable_by_its_snake_case_name():
    import keras

    from specc.compile.catalog import DENIED_LAYERS, catalog, snake_case

    cat = catalog("layer")
    for attr in dir(keras.layers):
        obj = getattr(keras.layers, attr)
        if isinstance(obj, type) and issubclass(obj, keras.layers.Layer) and attr not in DENIED_LAYERS:
            assert cat.class_name(snake_case(attr)) is not None, attr
            assert getattr(keras.layers, cat.class_name(snake_case(attr))) is obj, attr


def test_positional_arguments_become_keras_keywords():
    plan = plan_of("input x: (8, 8, 3)\nconv2d(16, (3, 3), activation=relu, kernel_regularizer=l2(1e-4))")
    kw = plan.layers[0].kwargs
    assert kw["filters"] == 16 and kw["kernel_size"] == (3, 3) and kw["activation"] == "relu"
    assert kw["kernel_regularizer"].cls == "L2" and kw["kernel_regularizer"].kwargs == {"l2": 1e-4}


def test_blocks_expand_with_arguments_and_defaults():
    plan = plan_of("input x: (4,)\nwide(8)\nwide(8, factor=3)",
                   extra="block wide(units, factor=2) {\n  dense(units * factor)\n  h = relu\n}\n")
    dense = [l for l in plan.layers if l.cls == "Dense"]
    assert [d.kwargs["units"] for d in dense] == [16, 24]
    # A tensor named inside a block names its layer, numbered on each use.
    assert [l.name for l in plan.layers if l.cls == "ReLU"] == ["h", "h_1"]
    assert plan.layers[0].origin.notes == ["in block `wide`, used at line 7"]


def test_repeat_and_parallel_wiring():
    plan = plan_of("input x: (4,)\nrepeat 3 { dense(4) }\nparallel concatenate { branch { dense(2) } branch {} }")
    names = [l.name for l in plan.layers]
    assert names == ["dense", "dense_1", "dense_2", "dense_3", "concatenate"]
    assert plan.layers[-1].inputs == ["dense_3", "dense_2"]  # the empty branch is the identity


def test_named_tensors_and_outputs():
    plan = plan_of("input a: (3,)\ninput b: (3,)\nj = [a, b] -> concatenate\nout = j -> dense(1)\noutput out, j")
    assert [i.name for i in plan.inputs] == ["a", "b"]
    assert plan.layers[0].name == "j" and plan.layers[0].inputs == ["a", "b"]
    assert plan.outputs == ["out", "j"]


def test_spans_stay_out_of_plan_equality():
    a = plan_of("input x: (3,)\ndense(2)")
    b = plan_of("\n\ninput x: (3,)   # moved\n\n  dense( 2 )")
    assert a.model_dump() == b.model_dump()
    assert a.layers[0].origin.span.line != b.layers[0].origin.span.line


@pytest.mark.parametrize("typo, choices, expected", [
    ("adma", ["adam", "adamax", "adamw", "sgd"], "adam"),          # a transposition beats a longer match
    ("Conv2D", ["conv2d", "conv1d", "conv3d"], "conv2d"),          # case does not count
    ("softmx", ["softmax", "softplus", "softsign"], "softmax"),
    ("maxpooling2d", ["max_pooling2d", "max_pooling1d"], "max_pooling2d"),
    ("xyz", ["adam", "sgd"], None),
])
def test_suggestions(typo, choices, expected):
    from specc.core.errors import suggest

    assert (suggest(typo, choices) or [None])[0] == expected


def test_calls_passed_to_blocks_resolve_where_they_are_used():
    plan = plan_of("input x: (4,)\nreg_dense(8, l2(1e-3), he_normal)",
                   extra="block reg_dense(units, reg, init) {\n  dense(units, kernel_regularizer=reg, kernel_initializer=init)\n}\n")
    kw = plan.layers[0].kwargs
    assert kw["kernel_regularizer"].cls == "L2" and kw["kernel_regularizer"].kwargs == {"l2": 1e-3}
    assert kw["kernel_initializer"] == "he_normal"


def test_tensor_names_never_clash_with_layer_names():
    plan = plan_of("input x: (4,)\nb()\nh = dense(2)\ndense(3)\ndense_2 = dense(5)",
                   extra="block b() {\n  h = dense(4)\n}\n")
    names = [layer.name for layer in plan.layers]
    assert names == ["h", "h_1", "dense", "dense_2"]  # the block's `h` stays inside it
    assert len(set(names)) == len(names)


def test_spellings_keras_does_not_take_become_classes():
    spec = specc.loads("model m {\n  input x: (4,)\n  dense(1)\n}\n"
                       "train {\n  loss: mse\n  optimizer: adam_w\n  metrics: [mae, rmse]\n}\n")
    train = spec.plan.train
    assert train.optimizer.cls == "AdamW"
    assert train.metrics[0] == "mae" and train.metrics[1].cls == "RootMeanSquaredError"


def test_early_stopping_without_validation_watches_the_training_loss():
    base = "model m {\n  input x: (4,)\n  dense(1)\n}\ntrain {\n  loss: mse\n  early_stopping: 2\n"
    assert specc.loads(base + "}\n").plan.train.early_stopping.kwargs == {"patience": 2, "monitor": "loss"}
    with_val = specc.loads(base + "  validation_split: 0.2\n}\n").plan.train.early_stopping
    assert with_val.kwargs == {"patience": 2}  # Keras's default, val_loss


def test_attention_takes_query_and_value():
    plan = plan_of("input q: (6, 8)\ninput v: (9, 8)\n[q, v] -> mha(2, 4)")
    from specc.compile.build import infer_shapes

    assert infer_shapes(plan)[plan.layers[0].name] == (None, 6, 8)
