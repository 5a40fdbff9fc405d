"""Runtime failures traced to spec lines: the layer that first produced a NaN, the activations that filled memory.

Every Keras layer is named after its plan node (`LayerNode.name`; inputs after their `InputNode.name`), so a
layer found at run time has a spec position (`origin.span`) and the block calls it came through (`origin.notes`).

NaN/inf: the runner's guard stops training a step or two after the loss stops being finite, by when the updates
have usually spread NaN through every weight. So `EpochStart` keeps, at the start of each epoch, what replaying it
needs: a host copy of the training state (when under `MAX_SNAPSHOT_BYTES`) and NumPy's random state, which the
epoch's shuffle draws from. On failure `trace_nonfinite` replays the epoch with Keras's own `train_step` on the
same batches up to the first step whose loss is not finite, then looks at real values with the weights before it:
a layer whose weights are not finite (the previous update made them so: the gradients are checked), else the first
layer, in the spec's order, whose output is not finite while its inputs are, else the loss. Only the failure path
pays for the replay; a run pays one copy of its state per epoch.

Out of memory: `describe_oom` turns XLA's RESOURCE_EXHAUSTED error into the largest activations (from the built
model's shapes and dtypes) and a batch size that would fit, scaled by what XLA says it tried to allocate.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from specc.data.prepare import count_examples, take
from specc.core.errors import Diagnostic, OutOfMemoryError
from specc.core.files import size_text
from specc.runtime.keras_env import import_keras
from specc.core.nodes import Span
from specc.core.plan import InputNode, LayerNode, Obj, Plan
from specc.train.distribute import local_batch_size

# Typed Any: mypy accepts `keras.callbacks.Callback` as a base class only from a value it knows nothing about.
keras: Any = import_keras()

#: The largest training state (weights, optimizer and metric variables) copied at each epoch's start.
MAX_SNAPSHOT_BYTES = 512 * 2**20


def _nbytes(variables) -> int:
    return sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in variables)


class EpochStart(keras.callbacks.Callback):
    """Keeps, at the start of each epoch, the training state and NumPy's random state (the epoch's shuffle is
    drawn from it when its first batch is taken, after this runs), so that a failing epoch can be replayed."""

    def __init__(self):
        super().__init__()
        self.epoch = 0
        self.rng: Any = None
        self.state: list[list[np.ndarray]] | None = None

    def on_epoch_begin(self, epoch, logs=None):
        model = self.model  # synced: Keras reattaches the state at each epoch's end
        self.epoch, self.rng = epoch, np.random.get_state()
        groups = [model.trainable_variables, model.non_trainable_variables, model.optimizer.variables,
                  model.metrics_variables]
        if sum(_nbytes(g) for g in groups) > MAX_SNAPSHOT_BYTES:
            self.state = None
            return
        self.state = [[np.array(v.value, copy=True) for v in g] for g in groups]


@dataclass
class Verdict:
    """What produced the first non-finite value: `what` in words, where (`span`, `notes`), and a hint."""

    what: str
    span: Span | None
    notes: list[str]
    hint: str
    step: int  # the failing step in its epoch (0-based)
    located: bool = True  # a layer, its weights or the loss produced it (else `what` says why none did)


def _bad(a) -> str | None:
    """"NaN" or "inf" when the array holds one (NaN first), else None."""
    a = np.asarray(a)
    if a.dtype.kind not in "fc":
        return None
    if np.isnan(a).any():
        return "NaN"
    return "inf" if np.isinf(a).any() else None


def _largest(a) -> float:
    a = np.asarray(a)
    return float(np.max(np.abs(a))) if a.size and a.dtype.kind in "fc" else 0.0


def epoch_batches(plan: Plan, x, y, w, rng) -> list[tuple[Any, Any, Any]]:
    """The epoch's training batches in the order Keras draws them: the first `1 - validation_split` of the
    examples, permuted by `np.random.permutation` from the epoch's random state when shuffling."""
    train = plan.train
    assert train is not None

    n = count_examples(x)
    if train.validation_split:
        n = int(math.floor(n * (1.0 - train.validation_split)))
    order = np.arange(n)
    if train.shuffle:
        saved = np.random.get_state()
        try:
            np.random.set_state(rng)
            order = np.random.permutation(n)
        finally:
            np.random.set_state(saved)
    size = local_batch_size(train.batch_size)
    return [tuple(take(a, order[i:i + size]) for a in (x, y, w)) for i in range(0, n, size)]


def replay_epoch(model, start: EpochStart, batches: list, upto: int):
    """Keras's train step from the epoch's start state over `batches[:upto + 1]`: (the first step whose loss is not
    finite or None, the state before it, the step before's (state, batch) or None, each step's loss)."""
    import jax

    step = jax.jit(model.train_step)
    kept = start.state
    assert kept is not None  # trace_nonfinite replays only an epoch whose start state was kept
    state = kept
    before, losses = None, []
    for k, batch in enumerate(batches[:upto + 1]):
        # The metrics as reset at the epoch's start: the logged loss is this step's alone, not the running mean.
        logs, after = step([*state[:3], kept[3]], batch)
        losses.append(float(logs["loss"]))
        if not math.isfinite(losses[-1]):
            return k, state, before, losses
        before, state = (state, batch), after
    return None, state, before, losses


def _set_weights(model, state) -> None:
    for group, values in zip((model.trainable_variables, model.non_trainable_variables), state):
        for v, value in zip(group, values):
            v.assign(value)


def _at(plan: Plan, span: Span | None) -> str:
    return f"{plan.file}:{span.line}:{span.col}" if span else plan.file


def trace_nonfinite(plan: Plan, model, start: EpochStart, x, y, w, upto: int) -> Verdict | None:
    """The cause of the first non-finite loss in `start`'s epoch (at or before step `upto`), found on real values;
    None when it cannot be replayed (no state kept) or does not recur. Looked for in order: weights the previous
    update made non-finite, the first layer whose finite inputs give non-finite outputs, then the loss."""
    if start.state is None:
        return None
    batches = epoch_batches(plan, x, y, w, start.rng)
    k, state, before, losses = replay_epoch(model, start, batches, upto)
    if k is None:
        return _diverged(plan, losses) if losses and max(losses) > 1e30 else None
    found = _bad_weights(plan, model, state, k, before)
    if found is not None:
        return found
    _set_weights(model, state)
    bx, by, bw = batches[k]
    names = [i.name for i in plan.inputs] + [node.name for node in plan.layers]
    probe = keras.Model(model.input, {name: model.get_layer(name).output for name in names})
    values = {name: keras.ops.convert_to_numpy(v) for name, v in probe(bx, training=True).items()}
    return _bad_layer(plan, values, k) or _bad_loss(plan, model, start, state, values, (bx, by, bw), k)


def _bad_weights(plan: Plan, model, state, k: int, before) -> Verdict | None:
    """Weights that are already non-finite at step `k`: the previous update made them so."""
    for node in plan.layers:
        layer = model.get_layer(node.name)
        ids = {id(v) for v in layer.weights}
        values = [s for group, vals in zip((model.trainable_variables, model.non_trainable_variables), state)
                  for v, s in zip(group, vals) if id(v) in ids]
        kind = next((b for b in map(_bad, values) if b), None)
        if kind:
            return _weights_verdict(plan, model, node, kind, k, before)
    return None


def _bad_layer(plan: Plan, values: dict[str, Any], k: int) -> Verdict | None:
    """The first layer whose inputs are finite and whose outputs are not, in the step's `values` (by name)."""
    for node in plan.layers:
        kind = _bad(values[node.name])
        if kind and not any(_bad(values[i]) for i in node.inputs):
            largest = max(_largest(values[i]) for i in node.inputs)
            bad = int(np.size(values[node.name]) - np.isfinite(values[node.name]).sum())
            return Verdict(
                f"{kind} first produced by `{node.name}` ({node.cls}) at {_at(plan, node.origin.span)}: its inputs are "
                f"finite (largest magnitude {largest:.3g}), {bad:,} of its {np.size(values[node.name]):,} outputs are not",
                node.origin.span, node.origin.notes,
                f"lower the learning rate, or keep `{node.name}`'s values in range (smaller initial weights, "
                "normalized inputs, `layer_normalization` or `batch_normalization` before it)", k)
    return None


def _bad_loss(plan: Plan, model, start: EpochStart, state, values: dict[str, Any], batch, k: int) -> Verdict | None:
    """Every layer's outputs are finite: the loss made the non-finite value, or predictions too large to square."""
    bx, by, bw = batch
    loss, _ = model.compute_loss_and_updates(state[0], state[1], state[3], bx, by, bw, training=True,
                                              optimizer_variables=state[2])
    kind = _bad(loss)
    if kind is None:
        return None
    outs = [values[o] for o in plan.outputs]
    lo, hi = min(float(np.min(o)) for o in outs), max(float(np.max(o)) for o in outs)
    train = plan.train
    assert train is not None
    if (start.epoch, k) != (0, 0) and max(-lo, hi) > math.sqrt(float(np.finfo(outs[0].dtype).max)):
        # Predictions whose square overflows, after updates: the updates made them so, not the loss.
        return Verdict(f"no layer produced it: the predictions grew to {max(-lo, hi):.3g}, too large for the loss to "
                       "square: training diverged", train.span("optimizer"), [], "lower the learning rate", k,
                       located=False)
    loss_name = train.loss.cls if isinstance(train.loss, Obj) else train.loss
    return Verdict(f"{kind} first produced by the loss `{loss_name}`, from finite predictions (from {lo:.3g} to {hi:.3g})",
                   train.span("loss"), [],
                   "check that the last layer's activation suits the loss (probabilities that reach 0 or 1, negative "
                   "values for a log), or lower the learning rate if the predictions grew huge", k)


def _diverged(plan: Plan, losses: list[float]) -> Verdict:
    """Every step's loss was finite, but so large that Keras's running mean of the epoch's losses overflowed."""
    assert plan.train is not None
    return Verdict(f"no layer produced it: each step's loss was finite, but it grew to {max(losses):.3g} (from "
                   f"{losses[0]:.3g} at the epoch's first step), so large that the epoch's mean loss overflowed: "
                   "training diverged", plan.train.span("optimizer"), [], "lower the learning rate", len(losses) - 1,
                   located=False)


def _weights_verdict(plan: Plan, model, node, kind: str, k: int, before) -> Verdict:
    """`node`'s weights became non-finite in the update before step `k`: blame the last layer, in the spec's order,
    whose gradient there was not finite (the backward pass runs from the output), else the optimizer's update."""
    import jax

    where = f"the update of step {k}" if k else "an update before this epoch"
    span, notes, cause = node.origin.span, node.origin.notes, ""
    if before is not None:
        state, (bx, by, bw) = before

        def loss(trainable):
            return model.compute_loss_and_updates(trainable, state[1], state[3], bx, by, bw, training=True,
                                                  optimizer_variables=state[2])[0]

        grads = [np.asarray(g) for g in jax.jit(jax.grad(loss))(state[0])]
        by_var = {id(v): g for v, g in zip(model.trainable_variables, grads)}
        blamed = [n for n in plan.layers
                  if any(_bad(by_var[id(v)]) for v in model.get_layer(n.name).trainable_weights if id(v) in by_var)]
        if blamed:
            last = blamed[-1]
            span, notes = last.origin.span, last.origin.notes
            cause = (f"; the gradients were not finite from `{last.name}` ({last.cls}) at {_at(plan, span)} back to the "
                     "input")
        else:
            cause = "; the gradients were finite: the optimizer's step itself overflowed"
    return Verdict(f"the weights of `{node.name}` ({node.cls}) at {_at(plan, node.origin.span)} became {kind} in "
                   f"{where}{cause}", span, notes,
                   "lower the learning rate or clip gradients (`clipnorm=1.0` on the optimizer)", k)


def describe_verdict(verdict: Verdict | None, start: EpochStart | None) -> str:
    """The sentence the NaN message adds: the cause, or why none was found."""
    if verdict is not None:
        return verdict.what
    if start is not None and start.state is None:
        return f"not traced to a layer: the training state is over {MAX_SNAPSHOT_BYTES // 2**20} MiB, too large to keep"
    return "not traced to a layer: replaying the epoch did not reproduce it"


# --- out of memory ----------------------------------------------------------------------------------------

_ALLOCATE = re.compile(r"(?:allocate|allocating)\s+(\d[\d,]*)\s*bytes", re.I)
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B)\b", re.I)
_UNITS = {"k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def is_out_of_memory(err: BaseException) -> bool:
    """Whether an exception is XLA (or the host) running out of memory."""
    text = str(err)
    return isinstance(err, MemoryError) or "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower()


def wanted_bytes(message: str) -> int | None:
    """How much XLA says it tried to allocate, when its message says."""
    m = _ALLOCATE.search(message)
    if m:
        return int(m.group(1).replace(",", ""))
    m = _SIZE.search(message)
    return int(float(m.group(1)) * _UNITS[m.group(2)[0].lower()]) if m else None


def available_bytes() -> int | None:
    """The memory this process may still use: the device's free memory on an accelerator, else the host's
    available memory bounded by the address-space limit."""
    import jax

    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))
    try:
        import resource

        free = _proc_kib("/proc/meminfo", "MemAvailable:")
        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft == resource.RLIM_INFINITY:
            return free
        return min(free, soft - _proc_kib("/proc/self/status", "VmSize:"))  # what the limit leaves this process
    except (ImportError, OSError, ValueError):
        return None


def _proc_kib(path: str, key: str) -> int:
    """A `KEY: N kB` line of a /proc file, in bytes."""
    with open(path, encoding="ascii") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) * 1024
    raise OSError(f"no {key} in {path}")


def activation_sizes(plan: Plan, model, batch_size: int) -> list[tuple[Any, tuple, int]]:
    """Each layer's (plan node, output shape, bytes of its output for a batch), largest first."""
    rows = []
    nodes: list[InputNode | LayerNode] = [*plan.inputs, *plan.layers]
    for node in nodes:
        out = model.get_layer(node.name).output
        shape = (batch_size, *out.shape[1:])
        rows.append((node, shape, math.prod(d or 1 for d in shape) * np.dtype(out.dtype).itemsize))
    return sorted(rows, key=lambda r: -r[2])


def describe_oom(plan: Plan, model, err: BaseException, batch_size: int, during: str, kept: str = "") -> OutOfMemoryError:
    """A located `OutOfMemoryError` for running out of memory `during` fit or evaluate: the largest activations, and a
    batch size scaled by what was available over what XLA wanted (halved when its message does not say)."""
    message = str(err)
    wanted, free = wanted_bytes(message), available_bytes()
    rows = activation_sizes(plan, model, batch_size)
    top = rows[:3]
    listing = "; ".join(f"`{node.name}` at {_at(plan, node.origin.span)} {tuple(shape)} {size_text(size, measured=True)}"
                        for node, shape, size in top)
    if wanted and free and wanted > free:
        smaller = max(1, int(batch_size * free / wanted))
        why = f"XLA tried to allocate {size_text(wanted, measured=True)} with {size_text(free, measured=True)} available"
    else:
        smaller = max(1, batch_size // 2)
        why = f"XLA tried to allocate {size_text(wanted, measured=True)}" if wanted else "XLA's message does not say how much it wanted"
    first = (message.strip().splitlines() or [type(err).__name__])[0][:300]
    at = plan.train.span("batch_size") if plan.train else None
    node = top[0][0] if top else None
    return OutOfMemoryError(Diagnostic(
        f"out of memory during {during} with batch {batch_size} ({why}); the largest activations per batch: {listing}"
        + (f"; {kept}" if kept else ""),
        file=plan.file, span=node.origin.span if node else None, source=plan.source,
        notes=[*(node.origin.notes if node else []), f"XLA: {first}"],
        hint=f"try `batch_size: {smaller}` in `train`" + (f" (line {at.line})" if at else "")
        + ", or make the largest layers smaller"))


def trace_failure(plan: Plan, model, start: EpochStart, data, epoch: int, upto: int) -> tuple[Verdict | None, str]:
    """`trace_nonfinite` for the runner's failing epoch, and the sentence its message adds. Tracing is a diagnosis
    on the failure path: if it fails, the run's own error is still reported, saying why it has no cause."""
    if start.epoch != epoch:
        return None, "not traced to a layer: the failing epoch's start state was not kept"
    try:
        verdict = trace_nonfinite(plan, model, start, data.x_train, data.y_train, data.w_train, upto)
    except Exception as err:  # noqa: BLE001 - never hide the run's failure behind the diagnosis's
        return None, f"not traced to a layer ({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''})"
    return verdict, describe_verdict(verdict, start)
