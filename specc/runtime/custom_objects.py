"""The two pieces Keras 3 lacks that the model families need, as registered Keras objects.

- `PositionEmbedding`: learned position vectors added to a sequence (GPT, BERT). Keras keeps its
  position embeddings in KerasHub, which requires TensorFlow (tensorflow-text); this is the same
  20 lines without that dependency.
- `ExactMatch`: the fraction of sequences predicted right at every position (seq2seq).

Both are registered with `keras.saving`, so `model.keras` files that use them load again once
this module is imported (`specc.runtime.model_files.load_model`).
"""

from __future__ import annotations

from typing import Any

from specc.runtime.keras_env import import_keras

# Typed Any: mypy accepts `keras.layers.Layer` as a base class only from a value it knows nothing about.
keras: Any = import_keras()
ops = keras.ops


@keras.saving.register_keras_serializable(package="specc")
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned vector per position: (batch, steps, dim) -> (batch, steps, dim).

    `sequence_length` is the longest sequence it takes; shorter ones use the first positions."""

    def __init__(self, sequence_length, initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True  # a padding mask from `embedding(..., mask_zero=true)` passes through
        if int(sequence_length) < 1:
            raise ValueError(f"`sequence_length` must be at least 1, got {sequence_length}")
        self.sequence_length = int(sequence_length)
        # BERT's and GPT-2's initialization: N(0, 0.02) truncated, small beside the token embeddings.
        self.initializer = keras.initializers.get(initializer or keras.initializers.TruncatedNormal(stddev=0.02))

    def build(self, input_shape):
        steps = input_shape[-2]
        if steps is not None and steps > self.sequence_length:
            raise ValueError(f"input has {steps} steps but `sequence_length` is {self.sequence_length}")
        self.embeddings = self.add_weight(shape=(self.sequence_length, input_shape[-1]),
                                          initializer=self.initializer, name="embeddings")

    def call(self, inputs):
        steps = ops.shape(inputs)[-2]
        return inputs + ops.cast(self.embeddings[:steps], inputs.dtype)  # (steps, dim) broadcast over batch

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "sequence_length": self.sequence_length,
                "initializer": keras.initializers.serialize(self.initializer)}


def exact_match(y_true, y_pred):
    """1.0 for each example whose every position's arg-max equals its label, else 0.0."""
    pred = ops.argmax(y_pred, axis=-1)  # (batch, steps)
    true = ops.cast(ops.reshape(y_true, ops.shape(pred)), pred.dtype)
    hits = ops.equal(pred, true)
    if len(hits.shape) > 1:
        hits = ops.all(hits, axis=tuple(range(1, len(hits.shape))))
    return ops.cast(hits, "float32")


@keras.saving.register_keras_serializable(package="specc")
class ExactMatch(keras.metrics.MeanMetricWrapper):
    """Exact-match accuracy of sequences with integer labels: every position must be right."""

    def __init__(self, name="exact_match", dtype=None):
        super().__init__(fn=exact_match, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


LAYERS = {"PositionEmbedding": PositionEmbedding}
METRICS = {"ExactMatch": ExactMatch}
