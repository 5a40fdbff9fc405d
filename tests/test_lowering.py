"""CPU lowering (specc/train/lowering.py): the same layers computed in another form must give the same model.

Max pooling over tiling windows must match Keras bit for bit, forward and backward (ties aside); the
convolution as patches and a matrix product must match to float rounding; what cannot be lowered is
left alone; the model's config and saved file do not change."""

from __future__ import annotations

import numpy as np
import pytest

from specc.runtime.keras_env import import_keras
from specc.train.lowering import lower_max_pooling, lower_model, lowering_choice

keras = import_keras()
L = keras.layers


def _pair(make):
    """Two copies of one model with the same weights; the second lowered."""
    keras.utils.set_random_seed(0)
    a = make()
    b = make()
    b.set_weights(a.get_weights())
    return a, b, lower_model(b, "cpu")


def _grads(model, x):
    import jax

    def loss(values):
        out, _ = model.stateless_call(values, [v.value for v in model.non_trainable_variables], x)
        return (out ** 2).sum()

    return jax.grad(loss)([v.value for v in model.trainable_variables])


POOLS = [
    (L.MaxPooling2D, (27, 27, 4), dict(pool_size=2)),                  # valid: the last row and column dropped
    (L.MaxPooling2D, (28, 28, 4), dict(pool_size=2, padding="same")),  # same on sizes the window divides
    (L.MaxPooling2D, (27, 27, 4), dict(pool_size=3)),
    (L.MaxPooling2D, (9, 8, 4), dict(pool_size=(3, 2))),
    (L.MaxPooling1D, (10, 4), dict(pool_size=3)),
    (L.MaxPooling3D, (9, 9, 9, 2), dict(pool_size=2)),
]


@pytest.mark.parametrize("cls,shape,kw", POOLS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_max_pool_equals_keras_forward_and_backward(cls, shape, kw):
    conv = {1: L.Conv1D, 2: L.Conv2D, 3: L.Conv3D}[len(shape) - 1]

    def make():  # a ReLU before the pool, as in every CNN: ties are zeros, whose gradient ReLU drops
        return keras.Sequential([keras.Input(shape), conv(4, 3, padding="same", activation="relu"), cls(**kw),
                                 L.Flatten(), L.Dense(3)])

    a, b, lowered = _pair(make)
    assert lowered == [b.layers[1].name]
    x = np.random.default_rng(1).random((8, *shape), dtype=np.float32)
    assert np.array_equal(a(x), b(x))
    for ga, gb in zip(_grads(a, x), _grads(b, x)):
        assert np.array_equal(ga, gb)


def test_max_pool_left_to_keras_where_windows_overlap_or_pad():
    def make():
        return keras.Sequential([keras.Input((27, 27, 3)), L.MaxPooling2D(3, strides=2),  # overlapping windows
                                 L.MaxPooling2D(2, padding="same"),                        # 13 x 13: pads
                                 L.AveragePooling2D(2), L.Flatten()])

    a, b, lowered = _pair(make)
    assert lowered == [b.layers[1].name]  # only the second may be lowered, and its call falls back to Keras's
    x = np.random.default_rng(2).random((4, 27, 27, 3), dtype=np.float32)
    assert np.array_equal(a(x), b(x))


@pytest.mark.parametrize("shape,pools", [
    ((27, 27, 3), [L.MaxPooling2D(3, strides=2), L.MaxPooling2D(2, padding="same"), L.MaxPooling2D(2)]),
    ((11, 3), [L.MaxPooling1D(3, strides=2, padding="same"), L.MaxPooling1D(2, strides=1)]),
], ids=["2d", "1d"])
def test_max_pool_for_export_equals_keras_with_any_window(shape, pools):
    """`lower_max_pooling` (for ONNX export) takes every channels-last max pooling, overlapping windows and `same`
    padding on sizes the window does not divide too, and leaves no `reduce_window` (which jax2onnx writes as a
    MaxPool onnxruntime refuses). Negative inputs: `same` padding must never win a maximum."""
    import jax

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input(shape), *pools, L.AveragePooling1D(1) if len(shape) == 2 else
                              L.AveragePooling2D(1), L.Flatten()])
    x = np.random.default_rng(5).standard_normal((4, *shape)).astype("float32") - 3
    before = np.asarray(model(x))
    assert "reduce_window_max" in str(jax.make_jaxpr(lambda v: model(v))(x))
    assert lower_max_pooling(model) == [p.name for p in pools]  # average pooling is left alone
    assert np.array_equal(np.asarray(model(x)), before)
    assert "reduce_window_max" not in str(jax.make_jaxpr(lambda v: model(v))(x))


CONVS = [
    (L.Conv2D, (13, 13, 32), dict(filters=64, kernel_size=3)),  # the seed CNN's second convolution
    (L.Conv2D, (14, 13, 16), dict(filters=8, kernel_size=3, padding="same", strides=2)),
    (L.Conv2D, (15, 15, 16), dict(filters=8, kernel_size=(3, 5), padding="same")),
    (L.Conv2D, (15, 15, 16), dict(filters=8, kernel_size=3, dilation_rate=2, padding="same")),
    (L.Conv1D, (20, 32), dict(filters=8, kernel_size=5, padding="same", strides=3)),
    (L.Conv3D, (6, 6, 6, 8), dict(filters=4, kernel_size=3)),
]


@pytest.mark.parametrize("cls,shape,kw", CONVS, ids=lambda v: getattr(v, "__name__", str(v)))
def test_convolution_as_patches_matches_keras_to_rounding(cls, shape, kw):
    a, b, lowered = _pair(lambda: keras.Sequential([keras.Input(shape), cls(**kw), L.Flatten(), L.Dense(3)]))
    assert lowered == [b.layers[0].name]
    x = np.random.default_rng(3).random((4, *shape), dtype=np.float32)
    np.testing.assert_allclose(b(x), a(x), rtol=1e-5, atol=1e-5)
    for ga, gb in zip(_grads(a, x), _grads(b, x)):
        np.testing.assert_allclose(gb, ga, rtol=1e-4, atol=1e-4 * float(np.abs(ga).max()))


def test_convolutions_keras_computes_better_are_left_alone():
    def make():
        return keras.Sequential([keras.Input((12, 12, 1)), L.Conv2D(8, 3),  # 9 values per output: XLA's is faster
                                 L.DepthwiseConv2D(3), L.Conv2DTranspose(4, 3), L.Conv2D(8, 3, groups=2),
                                 L.Flatten()])

    assert _pair(make)[2] == []


def _unnamed(config):
    """A layer's config without its automatic name."""
    return {k: v for k, v in config.items() if k != "name"}


def test_lowering_changes_nothing_saved(tmp_path):
    def make():
        return keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(8, 3), L.Conv2D(16, 3), L.MaxPooling2D(2),
                                 L.Flatten(), L.Dense(10)], name="net")

    a, b, lowered = _pair(make)
    assert len(lowered) == 2
    assert [_unnamed(x.get_config()) for x in b.layers] == [_unnamed(x.get_config()) for x in a.layers]
    b.save(tmp_path / "b.keras")
    again = keras.saving.load_model(tmp_path / "b.keras")
    assert [type(x) for x in again.layers] == [type(x) for x in a.layers]
    x = np.random.default_rng(4).random((2, 28, 28, 1), dtype=np.float32)
    np.testing.assert_allclose(again(x), b(x), rtol=1e-5, atol=1e-5)


def test_only_the_cpu_and_only_when_asked(monkeypatch):
    make = lambda: keras.Sequential([keras.Input((8, 8, 16)), L.Conv2D(8, 3), L.MaxPooling2D(2)])  # noqa: E731
    keras.utils.set_random_seed(0)
    assert lower_model(make(), "gpu") == []
    assert lower_model(make(), "cpu", choice="keras") == []
    assert len(lower_model(make(), "cpu")) == 2
    monkeypatch.setenv("SPECC_LOWERING", "keras")
    assert lowering_choice("specc") == "keras"
    monkeypatch.delenv("SPECC_LOWERING")
    assert lowering_choice(None) == "specc" and lowering_choice("keras") == "keras"


def test_large_patches_keep_xla_convolution():
    """ResNet-20's first stage at batch 128 (75 MB of patches) ran twice as slowly lowered: left to XLA."""
    def make():
        return keras.Sequential([keras.Input((32, 32, 16)), L.Conv2D(16, 3, padding="same")])

    keras.utils.set_random_seed(0)
    assert lower_model(make(), "cpu", batch_size=128) == []
    assert len(lower_model(make(), "cpu", batch_size=8)) == 1  # 4.7 MB


def test_random_translation_compiles_and_stays_random_per_step():
    """Keras sets `supports_jit = False` on RandomTranslation; on JAX its step compiles, draws new shifts at
    every step (the seed state threads through like dropout's), shifts by whole pixels with `nearest`, and is
    the identity at inference, so specc lets XLA compile models that use it."""
    import jax

    keras = import_keras()
    inp = keras.Input((6, 6, 1))
    model = keras.Model(inp, keras.layers.RandomTranslation(0.34, 0.34, fill_mode="constant", interpolation="nearest",
                                                            seed=3)(inp))
    from specc.train.lowering import JIT_SAFE_ON_JAX, enable_jit

    assert type(model.layers[1]).__name__ in JIT_SAFE_ON_JAX and not model.layers[1].supports_jit
    assert enable_jit(model, "keras") == [] and enable_jit(model) == [model.layers[1].name]
    x = np.arange(36, dtype="float32").reshape(1, 6, 6, 1).repeat(4, 0)
    trainable = [v.value for v in model.trainable_variables]
    state = [v.value for v in model.non_trainable_variables]
    step = jax.jit(lambda s: model.stateless_call(trainable, s, x, training=True))
    outputs = []
    for _ in range(4):
        out, state = step(state)
        outputs.append(np.asarray(out))
    assert len({o.tobytes() for o in outputs}) == 4  # another shift each step
    assert all(set(np.unique(o)) <= set(range(36)) for o in outputs)  # whole pixels or the zero fill
    assert np.array_equal(np.asarray(model(x, training=False)), x)


def test_resnet_spec_trains_compiled(monkeypatch):
    """ResNet-20's augmentation no longer keeps Keras from compiling its steps; another layer that opts
    out (`random_crop`, whose JAX code slices at traced offsets) still does, and SPECC_LOWERING=keras leaves
    Keras's choice alone."""
    from pathlib import Path

    import specc
    from specc.train.runner import compile_model

    spec = Path(__file__).resolve().parent.parent / "specs" / "cifar10_resnet20.model"
    model = specc.load(spec).build_model()
    assert compile_model(specc.load(spec).plan, model)["jit_allowed"] == ["random_translation"]
    assert model.jit_compile
    crop = specc.loads("model m {\n  input x: (8, 8, 1)\n  random_translation(0.1, 0.1)\n  random_crop(4, 4)\n"
                       "  flatten\n  dense(2)\n}\ntrain { loss: mse }\n").plan
    cropped = specc.compile.build.build_model(crop)
    assert compile_model(crop, cropped)["jit_allowed"] == [] and not cropped.jit_compile
    monkeypatch.setenv("SPECC_LOWERING", "keras")
    again = specc.load(spec).build_model()
    assert compile_model(specc.load(spec).plan, again)["jit_allowed"] == [] and not again.jit_compile
