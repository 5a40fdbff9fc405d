"""Lowering for the CPU: the same Keras layers, computed in a form XLA's CPU backend runs fast.

specc knows the whole model before the first step, so it can pick, per layer, how XLA computes
it. One choice pays on the CPU (measured in `benchmarks/`):

- **max pooling with windows that tile the input** (pool size equal to the strides, `valid`
  padding, or `same` padding on sizes the window divides): XLA differentiates `reduce_window`
  max through `select-and-scatter`, which its CPU backend runs about 30 times slower than the
  forward pass (8.6 ms of a 12 ms training step of the seed CNN at batch 32). Reshaping the
  input into its windows and taking `max` over the window axes gives the same forward values
  bit for bit, and its gradient is a cheap elementwise mask. Gradients differ only where a
  window holds several equal maxima: `select-and-scatter` gives the whole gradient to one of
  them, `max` shares it equally (both are valid subgradients). After a ReLU such ties are
  zeros, whose gradient the ReLU then drops, so training is unchanged; the tests check it.

The layers stay plain Keras layers: only the instance's `call` is replaced, so `get_config`,
saved `.keras` files, `specc emit` and every other tool see the model the spec describes.
`SPECC_LOWERING=keras` in the environment turns the lowering off (docs/performance.md).

`lower_max_pooling` serves ONNX export, not speed: it takes every max pooling layer off `reduce_window`, which
jax2onnx writes in a form onnxruntime rejects (the tiling windows as above, any other as strided slices).

How many steps one execution runs is chosen here too: `step_flops` lowers one forward and backward pass
of the model on a batch (tracing only: nothing is compiled or run) and reads XLA's cost analysis.
`choose_steps_per_execution` uses it to pick Keras's `steps_per_execution`: between executions Keras runs
its Python loop, callbacks and bookkeeping (about 0.1-0.3 ms per call on a CPU), which a step of a small
model does not hide.
"""

from __future__ import annotations

import itertools
import math
import os
import types
from typing import Any

LOWERINGS = ("specc", "keras")


# An execution should hold at least this much work (about 10 ms on a 2-core CPU) ...
EXECUTION_FLOPS = 1e9
# ... and at most this many steps, with at least this many executions per epoch so that progress
# bars, the NaN guard and early stopping still hear from training often.
MAX_STEPS_PER_EXECUTION = 64
MIN_EXECUTIONS_PER_EPOCH = 8


def step_flops(model, batch_size: int) -> float | None:
    """FLOPs of one training step (forward and gradients) on a batch, as XLA counts them; None when
    the model cannot be lowered here (XLA's analysis is missing or the inputs are not plain tensors)."""
    import jax

    try:
        specs = [jax.ShapeDtypeStruct((batch_size, *t.shape[1:]), t.dtype) for t in model.inputs]
        trainable = [v.value for v in model.trainable_variables]
        others = [v.value for v in model.non_trainable_variables]

        def loss(values, *inputs):
            outputs, _ = model.stateless_call(values, others, list(inputs) if len(inputs) > 1 else inputs[0],
                                              training=True)
            return sum(o.astype("float32").sum() for o in jax.tree_util.tree_leaves(outputs))

        return flops_of(jax.jit(jax.grad(loss)).lower(trainable, *specs))
    except Exception:  # noqa: BLE001 - an estimate only: without one, Keras's default stands
        return None


def choose_steps_per_execution(flops: float | None, steps_per_epoch: int) -> int:
    """Enough steps per execution to hold EXECUTION_FLOPS of work, within the bounds above."""
    if not flops:
        return 1
    wanted = math.floor(EXECUTION_FLOPS / flops)
    return max(1, min(wanted, MAX_STEPS_PER_EXECUTION, steps_per_epoch // MIN_EXECUTIONS_PER_EPOCH))


def flops_of(lowered) -> float | None:
    """FLOPs of a lowered program, as XLA's cost analysis counts them; None when it has no count."""
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def lowering_choice(requested: str | None) -> str:
    """`requested` (a caller's choice), overridden by `$SPECC_LOWERING`; `specc` unless one says `keras`."""
    env = os.environ.get("SPECC_LOWERING", "").strip().lower()
    return env if env in LOWERINGS else (requested or "specc")


def lower_model(model, platform: str | None = None, choice: str = "specc", batch_size: int | None = None) -> list[str]:
    """Lower `model`'s layers for `platform` (default: JAX's default device) in place; returns the
    names of the layers lowered.

    Call it once the model is built and before it is compiled (the training step is traced
    after this). Applies only on the CPU, where it is measured; elsewhere it changes nothing."""
    platform = platform or default_platform()
    if platform != "cpu" or choice != "specc":
        return []
    lowered = []
    for layer in _all_layers(model):
        if _tiling_max_pool(layer):
            layer.call = types.MethodType(_block_max_pool_call, layer)
            lowered.append(layer.name)
        elif _dense_conv(layer) and _patch_bytes(layer, batch_size) <= PATCH_BYTES:
            layer.convolution_op = types.MethodType(_patches_convolution_op, layer)
            lowered.append(layer.name)
    return lowered


# Keras classes that set `supports_jit = False` (for its TensorFlow backend's image ops), which makes Keras run
# a whole model containing one op by op, but whose JAX computation compiles with XLA and stays random from
# step to step (its seed generator's state is threaded through the compiled step like dropout's):
# tests/test_lowering.py checks both for each. ResNet-20's training step: 0.84 s compiled vs 1.25 s op by op
# at batch 128 on 2 cores; evaluation 0.23 vs 0.51 s per batch.
JIT_SAFE_ON_JAX = ("RandomTranslation",)


def enable_jit(model, choice: str = "specc") -> list[str]:
    """Let Keras compile `model`'s steps with XLA when the only layers opting out are in `JIT_SAFE_ON_JAX`;
    returns the names of the layers it was allowed for (none if another layer still opts out)."""
    if choice != "specc":
        return []
    layers = list(_all_layers(model))
    opted_out = [layer for layer in layers if not getattr(layer, "supports_jit", True)]
    if not opted_out or any(type(layer).__name__ not in JIT_SAFE_ON_JAX for layer in opted_out):
        return []
    for layer in opted_out:
        layer.supports_jit = True
    return [layer.name for layer in opted_out]


def default_platform() -> str:
    """The platform JAX computes on by default (`jax_default_device` when set, as `specc run` does)."""
    import jax

    device = jax.config.jax_default_device  # type: ignore[attr-defined]  # JAX adds its options at run time
    return getattr(device, "platform", None) or jax.devices()[0].platform


def _all_layers(model):
    for layer in model._flatten_layers(include_self=False, recursive=True):
        yield layer


def _tiling_max_pool(layer: Any) -> bool:
    """A max pooling layer whose windows do not overlap (pool size equal to the strides)."""
    from keras.src.layers.pooling.base_pooling import BasePooling

    return (isinstance(layer, BasePooling) and layer.pool_mode == "max" and layer.data_format == "channels_last"
            and tuple(layer.pool_size) == tuple(layer.strides) and layer.padding in ("valid", "same"))


def _block_max_pool_call(self, inputs):
    """`MaxPoolingND.call` when the windows tile the input: (b, *spatial, c) -> windows -> max.

    (b, h, w, c) with pool (ph, pw): crop to (b, h // ph * ph, w // pw * pw, c), reshape to
    (b, h // ph, ph, w // pw, pw, c), max over the window axes -> (b, h // ph, w // pw, c).
    `same` padding on a size the window does not divide pads: Keras's own call does that."""
    from keras import ops

    pool = tuple(self.pool_size)
    spatial = tuple(inputs.shape[1:-1])
    if self.padding == "same" and any(d % p for d, p in zip(spatial, pool)):
        return type(self).call(self, inputs)
    kept = tuple(d // p * p for d, p in zip(spatial, pool))
    if kept != spatial:  # `valid` drops the rows and columns that do not fill a window
        inputs = inputs[(slice(None), *(slice(0, k) for k in kept), slice(None))]
    windows = [n for d, p in zip(kept, pool) for n in (d // p, p)]
    x = ops.reshape(inputs, (-1, *windows, inputs.shape[-1]))
    return ops.max(x, axis=tuple(2 + 2 * i for i in range(len(pool))))


def lower_max_pooling(model) -> list[str]:
    """Compute every channels-last max pooling layer of `model` without `reduce_window`, on any platform;
    returns the names of the layers changed.

    For ONNX export (`specc.tools.export_onnx`), not training: jax2onnx writes `reduce_window` max as an
    ONNX MaxPool over the channels-last layout, with a window `[1, ph, pw, 1]` that onnxruntime rejects
    (`Unsupported pooling size`; its MaxPool pools the axes after the first two). Windows that tile the
    input are computed as `lower_model` computes them (reshape + max: ONNX Reshape and ReduceMax); any
    other window (overlapping, or `same` padding on a size it does not divide) as the maximum of its
    strided slices (ONNX Slice and Max). Both give Keras's values bit for bit: a maximum rounds nothing."""
    lowered = []
    for layer in _all_layers(model):
        if _max_pool(layer):
            layer.call = types.MethodType(_block_or_window_max_pool_call if _tiling_max_pool(layer) else _window_max_pool_call,
                                          layer)
            lowered.append(layer.name)
    return lowered


def _max_pool(layer: Any) -> bool:
    from keras.src.layers.pooling.base_pooling import BasePooling

    return (isinstance(layer, BasePooling) and layer.pool_mode == "max" and layer.data_format == "channels_last"
            and layer.padding in ("valid", "same"))


def _block_or_window_max_pool_call(self, inputs):
    """`_block_max_pool_call` where it applies; the window slices where it would fall back to Keras's call."""
    spatial = tuple(inputs.shape[1:-1])
    if self.padding == "same" and any(d % p for d, p in zip(spatial, tuple(self.pool_size))):
        return _window_max_pool_call(self, inputs)
    return _block_max_pool_call(self, inputs)


def _window_max_pool_call(self, inputs):
    """`MaxPoolingND.call` as the maximum of strided slices, one per window offset (rank 2 shown):

    (b, h, w, c) with pool (ph, pw) and strides (sh, sw); `same` pads with -inf as Keras does (more on the
    right), so padding never wins a maximum; for each offset (i, j) the slice [i :: sh, j :: sw] cut to the
    output size (b, oh, ow, c); their elementwise maximum is the pooled output."""
    from keras import ops

    pool, strides = tuple(self.pool_size), tuple(self.strides)
    spatial = tuple(inputs.shape[1:-1])
    if self.padding == "same":
        pads = _same_padding(spatial, pool, strides, (1,) * len(pool))
        inputs = ops.pad(inputs, [(0, 0), *pads, (0, 0)], constant_values=-math.inf)
        spatial = tuple(inputs.shape[1:-1])
    out = [(n - k) // s + 1 for n, k, s in zip(spatial, pool, strides)]
    result = None
    for offset in itertools.product(*(range(k) for k in pool)):
        index = tuple(slice(o, o + (m - 1) * s + 1, s) for o, m, s in zip(offset, out, strides))
        piece = inputs[(slice(None), *index, slice(None))]
        result = piece if result is None else ops.maximum(result, piece)
    return result


# A convolution is lowered to patches and one matrix product when each output position reads at
# least this many values (kernel positions x input channels): below it (a first layer on one
# channel) XLA's own convolution is faster. Patches cost kernel-size times the input's memory, and
# large ones lose: the seed CNN's 4.5 MB patches (batch 32) cut its step from 13.7 to 11.4 ms, but
# ResNet-20's 19-75 MB patches (CIFAR-10, batch 128) doubled its step (0.83 -> 1.8 s). A layer whose
# patches for the batch would pass PATCH_BYTES keeps XLA's convolution.
MIN_PATCH = 64
PATCH_BYTES = 8 * 2**20


def _dense_conv(layer: Any) -> bool:
    """A plain (not grouped, depthwise or transposed) channels-last convolution reading >= MIN_PATCH values."""
    from keras.src.layers.convolutional.base_conv import BaseConv

    if not isinstance(layer, BaseConv) or type(layer).convolution_op is not BaseConv.convolution_op:
        return False  # subclasses with their own convolution (transposed, separable, ...) keep it
    kernel = getattr(layer, "kernel", None)
    return (layer.groups == 1 and layer.data_format == "channels_last" and layer.padding in ("valid", "same")
            and kernel is not None and math.prod(kernel.shape[:-1]) >= MIN_PATCH)


def _patch_bytes(layer: Any, batch_size: int | None) -> int:
    """The size of the layer's patches for a batch (0 when its input shape or the batch is unknown: the
    convolution then decides when it is traced)."""
    try:
        shape = tuple(layer.input.shape)
    except (AttributeError, ValueError):  # a layer called more than once, or not in a functional graph
        return 0
    if not batch_size or any(d is None for d in shape[1:]):
        return 0
    return batch_size * math.prod(shape[1:]) * math.prod(layer.kernel.shape[:-2]) * 4


def _patches_convolution_op(self, inputs, kernel):
    """`BaseConv.convolution_op` as patches and a matrix product (rank 2 shown):

    inputs (b, h, w, cin), kernel (kh, kw, cin, cout); `same` pads as Keras does (more on the right);
    for each kernel offset (i, j) the strided slice of the input it meets, (b, oh, ow, cin),
    concatenated on channels -> patches (b, oh, ow, kh * kw * cin) @ kernel (kh * kw * cin, cout)
    -> (b, oh, ow, cout). The kernel's row-major reshape orders rows as the concatenation does."""
    from keras import ops

    window = tuple(kernel.shape[:-2])
    strides, dilation = tuple(self.strides), tuple(self.dilation_rate)
    spatial = tuple(inputs.shape[1:-1])
    size = inputs.shape[0] * math.prod(spatial) * math.prod(window) * inputs.shape[-1] * 4
    if size > PATCH_BYTES:
        return type(self).convolution_op(self, inputs, kernel)
    if self.padding == "same":
        inputs = ops.pad(inputs, [(0, 0), *_same_padding(spatial, window, strides, dilation), (0, 0)])
        spatial = tuple(inputs.shape[1:-1])
    out = [(n - (k - 1) * d - 1) // s + 1 for n, k, s, d in zip(spatial, window, strides, dilation)]
    pieces = []
    for offset in itertools.product(*(range(k) for k in window)):
        index = tuple(slice(o * d, o * d + (m - 1) * s + 1, s) for o, d, m, s in zip(offset, dilation, out, strides))
        pieces.append(inputs[(slice(None), *index, slice(None))])
    patches = ops.concatenate(pieces, axis=-1) if len(pieces) > 1 else pieces[0]
    return ops.matmul(patches, ops.reshape(kernel, (-1, kernel.shape[-1])))


def _same_padding(spatial, window, strides, dilation) -> list[tuple[int, int]]:
    """(before, after) per spatial axis for `same` padding, as Keras (and TensorFlow) pad: the output has
    ceil(n / stride) positions, and an odd total puts the extra value after."""
    pads = []
    for n, k, s, d in zip(spatial, window, strides, dilation):
        total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
        pads.append((total // 2, total - total // 2))
    return pads


def describe_lowering(lowered: list[str]) -> str:
    """`["conv2d_1", "max_pooling2d"]` -> "2 layers computed in CPU form (conv2d_1, max_pooling2d)"."""
    n = len(lowered)
    return f"{n} layer{'s' if n != 1 else ''} computed in CPU form ({', '.join(lowered)})" if n else ""


__all__ = ["JIT_SAFE_ON_JAX", "LOWERINGS", "describe_lowering", "enable_jit", "lower_max_pooling", "lower_model",
           "lowering_choice"]
