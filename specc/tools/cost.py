"""What a training step costs, from XLA's own analysis of the lowered step (no per-layer formulas).

`step_flops` and `choose_steps_per_execution` (which `specc run` uses to pick Keras's `steps_per_execution`)
live in `specc.train.lowering`, below the runner, and are re-exported here.

`estimate_cost` is the pre-flight cost `specc summary` prints: the model compiled with the spec's
optimizer, loss and metrics exactly as `specc run` compiles it, and Keras's own JAX training step
(`model.train_step`: forward, gradients, optimizer update and metrics) lowered on
`jax.ShapeDtypeStruct`s and compiled by XLA, with the state donated as Keras donates it. Nothing
runs and no weight is allocated (the model is built in `shapes_only()`). FLOPs come from XLA's cost
analysis of the lowered programs, memory from the compiled step's memory analysis
(docs/performance.md, "Pre-flight cost").
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from specc.compile.losses import SPARSE, loss_class, loss_kind, output_losses
from specc.core.units import format_bytes, parse_bytes  # noqa: F401 (parse_bytes re-exported)
from specc.tools.lint import lint_cost
from specc.train.lowering import (EXECUTION_FLOPS, MAX_STEPS_PER_EXECUTION, MIN_EXECUTIONS_PER_EPOCH,  # noqa: F401
                    choose_steps_per_execution, flops_of, step_flops)  # (re-exported)
from specc.core.errors import Diagnostic, UsageError
from specc.train.lowering import enable_jit, lowering_choice

# ------------------------------------------------------------------------------------------ pre-flight cost

#: A step fits when its peak is at most this share of the device's memory: the rest is left to what the
#: executable's analysis does not count (the input pipeline's next batch, the runtime, allocator fragmentation).
MEMORY_MARGIN = 0.9
#: `SPECC_DEVICE_MEMORY=64MiB` replaces the device's memory (tests, or planning for another machine).
MEMORY_ENV = "SPECC_DEVICE_MEMORY"
#: Compilations `fit_batch` may spend verifying its answer before settling on the last batch that fit.
MAX_VERIFY = 5


@dataclass
class CostReport:
    """What one training step costs, per device, and whether the spec's batch fits."""

    flops_per_example: float | None  # forward pass (inference) of one example
    flops_per_step: float | None  # one training step at the spec's batch size, over all devices
    peak_bytes_per_device: int | None  # the compiled step at the per-device batch
    device_memory_bytes: int
    memory_source: str  # where device_memory_bytes comes from, for people
    batch_size: int | None  # the spec's (global) batch
    devices: int  # devices each batch is split over
    fits: bool | None  # None: no training step to measure
    largest_batch: int | None = None  # global batch that fits, when the spec's does not (verified by compiling)
    notes: list[str] = field(default_factory=list)
    diagnostics: list[Any] = field(default_factory=list)  # lint's cost rules: `W201` when the batch does not fit
    margin: float = MEMORY_MARGIN  # the share of the device's memory a step may take and still fit

    def as_json(self) -> dict[str, Any]:
        return {"flops_per_example": self.flops_per_example, "flops_per_step": self.flops_per_step,
                "peak_bytes_per_device": self.peak_bytes_per_device, "device_memory_bytes": self.device_memory_bytes,
                "batch_size": self.batch_size, "devices": self.devices, "fits": self.fits,
                "largest_batch": self.largest_batch, "notes": list(self.notes)}


def format_flops(n: float) -> str:
    for unit, size in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if n >= size:
            return f"{n / size:,.2f} {unit}"
    return f"{n:,.0f} FLOP"


def device_memory(device) -> tuple[int, str]:
    """The memory one device can give a step, and where that figure comes from: `$SPECC_DEVICE_MEMORY`;
    a GPU's or TPU's allocator limit (`memory_stats()["bytes_limit"]`); else (a CPU) the machine's
    physical memory, which every process on it shares."""
    text = os.environ.get(MEMORY_ENV, "").strip()
    if text:
        try:
            return parse_bytes(text), f"${MEMORY_ENV}"
        except ValueError as err:
            raise UsageError(Diagnostic(f"{MEMORY_ENV}={text!r}: {err}", file="specc summary",
                                        hint=f"e.g. {MEMORY_ENV}=16GiB, or unset it to use the device's own")) from None
    try:
        limit = (device.memory_stats() or {}).get("bytes_limit")
    except Exception:  # noqa: BLE001 - a backend without memory statistics (the CPU)
        limit = None
    if limit:
        return int(limit), f"{device.platform}:{device.id} allocator limit"
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "physical memory"


def peak_bytes(compiled) -> int:
    """What the compiled step needs at once: its arguments, its outputs and its scratch space, less the
    outputs written into donated arguments (the state Keras donates: the new weights take the old ones'
    place). `generated_code_size_in_bytes` is left out: the program's code is loaded once, not per batch."""
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes)


@dataclass
class _Step:
    """Keras's training step of one model, ready to lower at any batch size."""

    model: Any
    targets: list[tuple[tuple, str]]  # each output's label shape (no batch axis) and dtype, as the loss reads them

    def batch(self, size: int):
        import jax

        x = [jax.ShapeDtypeStruct((size, *t.shape[1:]), t.dtype) for t in self.model.inputs]
        y = [jax.ShapeDtypeStruct((size, *shape), dtype) for shape, dtype in self.targets]
        return (x if len(x) > 1 else x[0], y if len(y) > 1 else y[0])

    def lower(self, size: int):
        """The training step at batch `size`, lowered as Keras's JAX trainer jits it (state donated)."""
        import jax

        m = self.model

        def specs(variables):
            return [jax.ShapeDtypeStruct(tuple(v.shape), v.dtype) for v in variables]

        state = (specs(m.trainable_variables), specs(m.non_trainable_variables), specs(m.optimizer.variables),
                 specs(m.metrics_variables))
        return jax.jit(m.train_step, donate_argnums=0).lower(state, self.batch(size))

    def peak(self, size: int) -> int:
        return peak_bytes(self.lower(size).compile())

    def forward(self, size: int):
        """The inference forward pass at batch `size`, lowered."""
        import jax

        m = self.model
        x = self.batch(size)[0]
        values = [jax.ShapeDtypeStruct(tuple(v.shape), v.dtype) for v in m.trainable_variables]
        others = [jax.ShapeDtypeStruct(tuple(v.shape), v.dtype) for v in m.non_trainable_variables]
        return jax.jit(lambda a, b, x: m.stateless_call(a, b, x, training=False)[0]).lower(values, others, x)


def prepare_step(plan) -> tuple[_Step, list[str]]:
    """The spec's model, compiled as `specc run` compiles it (layers lowered for the platform, the spec's
    optimizer, loss and metrics), and its optimizer and metric state built, all without weights.

    Layers that Keras cannot compile with XLA (`supports_jit` false: `random_crop`, whose random offsets
    slice the batch) make Keras train the whole model op by op; in the costed step such a layer takes the
    centre of its input at the output shape Keras infers for it (`_centre_slice`), the same tensors
    downstream without the dynamic offsets, and a note says so."""
    from specc.compile.build import build, shapes_only
    from specc.train.runner import compile_model

    with shapes_only():
        model = build(plan).model

    notes = []
    enable_jit(model, lowering_choice(None))  # as `compile_model` will: those layers compile as they are
    eager = [layer for layer in model._flatten_layers() if not layer.supports_jit]
    for layer in eager:
        _centre_slice(layer)
    if eager:
        names = ", ".join(f"`{layer.name}`" for layer in eager)
        notes.append(f"{names} cannot be compiled by XLA, so Keras runs this model's training step op by op; "
                     "the figures are those of the step compiled with a fixed crop in its place")
    compile_model(plan, model)
    targets = []
    for out, loss in zip(model.outputs, output_losses(plan.train.loss, len(model.outputs))):
        sparse = loss_kind(loss_class(loss)).labels == SPARSE  # integer classes: no class axis
        targets.append((tuple(out.shape[1:-1] if sparse else out.shape[1:]), "int32" if sparse else out.dtype))
    step = _Step(model, targets)
    with shapes_only():
        model._symbolic_build(data_batch=step.batch(1))
    return step, notes


def _centre_slice(layer) -> None:
    """Make `layer` return the centre of its input at the shape Keras infers for its output (a slice of the
    input on every axis that shrinks), for a layer whose own computation XLA cannot compile."""
    import types

    def call(self, x, *args, **kwargs):
        want = self.compute_output_shape(tuple(x.shape))
        if len(want) != len(x.shape) or any(w is not None and w > d for w, d in zip(want, x.shape)):
            raise ValueError(f"{self.name}: output {want} is not a slice of its input {tuple(x.shape)}")
        return x[tuple(slice((d - w) // 2, (d - w) // 2 + w) if w is not None else slice(None)
                       for w, d in zip(want, x.shape))]

    layer.call = types.MethodType(call, layer)


def fit_batch(step: _Step, measured: dict[int, int], budget: int) -> int | None:
    """The largest per-device batch whose step needs at most `budget` bytes, or None if batch 1 does not fit.

    Memory grows about linearly with the batch (activations, gradients of activations; the state is fixed),
    so a line through two compiled sizes gives the answer, which is then compiled to check it; when XLA
    chose differently at that size, the line is drawn again through the nearest sizes measured."""
    if 1 not in measured:
        measured[1] = step.peak(1)
    if measured[1] > budget:
        return None
    for _ in range(MAX_VERIFY):
        fits = max(b for b, p in measured.items() if p <= budget)
        over = [b for b, p in measured.items() if p > budget and b > fits]
        if not over or min(over) == fits + 1:
            return fits
        above = min(over)
        slope = (measured[above] - measured[fits]) / (above - fits)
        guess = fits + int((budget - measured[fits]) / slope) if slope > 0 else above - 1
        guess = min(max(guess, fits + 1), above - 1)
        measured[guess] = step.peak(guess)
        if measured[guess] <= budget:
            return guess
    return max(b for b, p in measured.items() if p <= budget)


def data_parallel_devices(plan) -> tuple[int, Any]:
    """How many devices share each batch (the mesh's batch axis), and the device the step runs on."""
    import jax

    devices = jax.devices(plan.device) if plan.device != "auto" else jax.devices()
    spec = plan.distribution
    if spec is None:
        return 1, devices[0]
    if spec.parallel == "data":
        return len(devices), devices[0]
    axes = list(spec.axes or ())
    return (spec.mesh[axes.index(spec.batch_axis)] if spec.mesh and spec.batch_axis in axes else 1), devices[0]


def estimate_cost(plan) -> CostReport:
    """FLOPs per example and per step, and the peak memory per device of the spec's training step, from XLA.

    With `device { parallel: data }` each device runs the step on its share of the batch with a whole copy
    of the weights and optimizer state: the step is compiled at that per-device batch (the gradients'
    all-reduce, which XLA adds between devices, is not in it). Under `parallel: model` the batch is split
    over the mesh's batch axis the same way but the weights are counted whole (an upper bound)."""
    devices, device = data_parallel_devices(plan)
    memory, source = device_memory(device)
    if plan.train is None:
        return CostReport(None, None, None, memory, source, None, devices, None,
                          notes=["no `train` section: no training step to cost"])
    batch = plan.train.batch_size
    local = max(1, math.ceil(batch / devices))
    try:
        step, notes = prepare_step(plan)
        lowered = step.lower(local)
        peak = peak_bytes(lowered.compile())
        flops_step = flops_of(lowered if local == batch else step.lower(batch))
        flops_example = flops_of(step.forward(1))
    except Exception as err:  # noqa: BLE001 - the summary stands without its cost; say why it is missing
        why = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        return CostReport(None, None, None, memory, source, batch, devices, None,
                          notes=[f"XLA could not lower this model's training step here ({why})"])
    if plan.distribution is not None and plan.distribution.parallel == "model":
        notes.append("`parallel: model`: the weights are counted whole on each device (an upper bound)")
    report = CostReport(flops_example, flops_step, peak, memory, source, batch, devices,
                        fits=peak <= MEMORY_MARGIN * memory, notes=notes)
    if not report.fits:
        largest = fit_batch(step, {local: peak}, int(MEMORY_MARGIN * memory))
        report.largest_batch = largest * devices if largest else None
    report.diagnostics = lint_cost(plan, report)  # W201 from these figures, silenced as every lint code is
    return report


def format_cost(report: CostReport) -> str:
    """The cost lines `specc summary` prints after the table."""
    lines = ["cost (XLA's analysis of the compiled training step):"]
    if report.flops_per_example is not None:
        lines.append(f"  forward FLOPs per example: {format_flops(report.flops_per_example)}")
    if report.flops_per_step is not None:
        lines.append(f"  training FLOPs per step:   {format_flops(report.flops_per_step)} (batch {report.batch_size})")
    if report.peak_bytes_per_device is not None:
        batch = report.batch_size  # the spec's, whenever a step was measured
        split = f", batch {math.ceil(batch / report.devices)} on each of {report.devices}" \
            if report.devices > 1 and batch is not None else ""
        lines.append(f"  peak memory per device:    {format_bytes(report.peak_bytes_per_device)} of "
                     f"{format_bytes(report.device_memory_bytes)} ({report.memory_source}{split})")
        if report.fits:
            lines.append("  fits: yes")
        else:
            lines.append(f"  fits: no; largest batch that fits: {report.largest_batch or 'none'}")
    lines += [f"  note: {n}" for n in report.notes]
    return "\n".join(lines)
