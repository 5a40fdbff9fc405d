"""Training over several devices and processes: the `device` section, on Keras 3's `keras.distribution`.

- `parallel: data` is `keras.distribution.DataParallel` over every device of the platform: the model is
  replicated, each batch is split among the devices, and JAX's SPMD partitioner adds the all-reduce of
  the gradients.
- `parallel: model` is `keras.distribution.ModelParallel`: the devices form a `DeviceMesh` of shape
  `mesh` with named `axes`, the weights that `layout` names (a `LayoutMap`) are split along those axes,
  and each batch along the mesh's batch axis.
- Several processes (`specc run --coordinator HOST:PORT --num-processes N --process-id I`, or the same
  from the environment) join through `keras.distribution.initialize`, which calls
  `jax.distributed.initialize`; CPU processes exchange gradients with gloo. Each process feeds its own
  shard of every global batch (`shard_data`): with numpy inputs, Keras 3's JAX trainer turns each
  process's batch into a global array with `jax.make_array_from_process_local_data`, which needs the
  distribution's `auto_shard_dataset` off. Process 0 alone writes the run directory (`process_out_dir`).

Nothing here distributes anything by hand: specc only chooses the Keras distribution, checks the spec
against the devices JAX really has (errors blamed on the spec's lines), and hands each process its data.

In one process with several CPU devices (`XLA_FLAGS=--xla_force_host_platform_device_count=4`), XLA's
CPU client runs each device's part of a step on a pool of `max(cores, devices)` threads; on a machine
with few cores the pool can fill with parts waiting for each other and a step deadlocks (aborting after
`xla_cpu_collective_call_terminate_timeout_seconds` with "Termination timeout for `all reduce`").
`prepare_environment` gives the pool more threads (`PJRT_NPROC`) before JAX starts; docs/language.md
has the measurements.
"""

from __future__ import annotations

import atexit
import math
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from specc.core.errors import DataError, DeviceError, Diagnostic, did_you_mean, InternalError, SpecError, UsageError
from specc.runtime.keras_env import THREADS_PER_DEVICE, backends_started, prepare_environment, requested_cpu_devices  # noqa: F401
from specc.runtime.keras_env import import_keras


def _env_int(name: str) -> int | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(Diagnostic(f"{name}={text!r} is not a whole number", file="specc run")) from None


def initialize_processes(coordinator: str | None = None, num_processes: int | None = None,
                         process_id: int | None = None) -> bool:
    """Join the other processes of a multi-process run, before anything starts JAX. Each argument left out is
    read from the environment: `JAX_COORDINATOR_ADDRESS` (as JAX reads it), `JAX_NUM_PROCESSES` and
    `JAX_PROCESS_ID`. Returns whether this process is now one of several; with nothing configured (or one
    process) it does nothing.

    It calls `keras.distribution.initialize`, that is `jax.distributed.initialize` and then a seed agreed by all
    processes (so that unseeded runs start from the same weights everywhere), with gloo for the CPU
    collectives between processes (`jax_cpu_collectives_implementation`)."""
    coordinator = coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    num_processes = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    process_id = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    if coordinator is None and num_processes is None and process_id is None:
        return False
    where = "specc run"
    if num_processes is None or num_processes < 1:
        raise UsageError(Diagnostic("several processes need `--num-processes N` (or JAX_NUM_PROCESSES)", file=where,
                                    hint="give every process the same --coordinator and --num-processes, and its "
                                    "own --process-id 0..N-1"))
    if num_processes == 1 and process_id in (None, 0):
        return False
    if process_id is None or not 0 <= process_id < num_processes:
        got = "none" if process_id is None else str(process_id)
        raise UsageError(Diagnostic(f"--process-id must be 0..{num_processes - 1} with --num-processes {num_processes}"
                                    f"; got {got}", file=where, hint="process 0 is the coordinator"))
    if coordinator is None or not re.fullmatch(r"\S+:\d+", coordinator):
        raise UsageError(Diagnostic(f"--coordinator must be HOST:PORT, the address of process 0; got "
                                    f"{coordinator or 'none'}", file=where, hint="e.g. --coordinator 127.0.0.1:4321"))
    prepare_environment()
    import jax

    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    if backends_started():

        raise InternalError("initialize_processes() called after JAX started its backends")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")

    try:
        import_keras().distribution.initialize(coordinator, num_processes, process_id)
    except Exception as err:  # noqa: BLE001 - JAX says why it could not reach the others
        why = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise DeviceError(Diagnostic(f"process {process_id} of {num_processes} could not join the run at "
                                   f"{coordinator}: {why}", file=where,
                                   hint="start every process with the same --coordinator and --num-processes "
                                   "within a few minutes of each other")) from None
    return True


def process_index() -> int:
    """This process's index among the processes of the run (0 when there is one)."""
    if "jax" not in sys.modules:
        return 0
    import jax

    return jax.process_index() if jax.distributed.is_initialized() else 0


def is_primary() -> bool:
    """Whether this process writes the run directory: process 0."""
    return process_index() == 0


def process_out_dir(out_dir: Path) -> Path:
    """The run directory this process writes into: `out_dir` for process 0; for the others a scratch folder,
    removed when the process ends, so that process 0 alone writes the run's artifacts."""
    index = process_index()
    if index == 0:
        return Path(out_dir)
    scratch = Path(tempfile.mkdtemp(prefix=f"specc-process{index}-"))
    atexit.register(shutil.rmtree, scratch, True)
    return scratch


# --------------------------------------------------------------------------------------------- the distribution


@dataclass
class Active:
    """The distribution of the current run, and how each global batch is split."""

    distribution: Any  # the keras.distribution.Distribution that is set
    parallel: str  # "data" or "model"
    platform: str  # cpu, gpu, tpu
    devices: int  # devices in the mesh, over all processes
    mesh: tuple[int, ...]
    axes: tuple[str, ...]
    processes: int  # processes of the run
    shards: int  # pieces each global batch is split into: the size of the mesh's batch axis
    data_shards: int  # processes that feed different data (each feeds batch_size / data_shards examples)
    shard: int  # this process's data shard, 0..data_shards-1
    local_shards: int  # pieces this process's part of a batch is split into, over its own devices

    def describe(self) -> str:
        where = f"{self.devices} {self.platform} device{'s' if self.devices != 1 else ''}"
        if self.processes > 1:
            where += f" in {self.processes} processes"
        if self.parallel == "data":
            return f"data-parallel over {where}"
        return f"model-parallel on a {self.mesh} mesh ({', '.join(self.axes)}) of {where}"

    def as_json(self) -> dict[str, Any]:
        return {"parallel": self.parallel, "devices": self.devices, "mesh": list(self.mesh), "axes": list(self.axes),
                "processes": self.processes, "batch_shards": self.shards}


_ACTIVE: Active | None = None


def active() -> Active | None:
    """The distribution `configure_distribution` set for the current run, if any."""
    return _ACTIVE


def describe(platform: str) -> str:
    """Where the current run trains, for people: the platform, or how the distribution spreads it."""
    return _ACTIVE.describe() if _ACTIVE is not None else platform


def configure_distribution(plan) -> Active | None:
    """Set the Keras distribution the plan's `device` section asks for (after `select_device`, before the model
    is built), checked against the devices JAX has. A distribution set by an earlier run is removed first, so
    that a run never inherits another's. Raises `SpecError`/`DeviceError` blamed on the spec's lines."""
    global _ACTIVE

    keras = import_keras()
    import jax

    kd = keras.distribution
    if _ACTIVE is not None and kd.distribution() is _ACTIVE.distribution:
        kd.set_distribution(None)
    _ACTIVE = None
    spec = plan.distribution
    processes = jax.process_count()
    if spec is None:
        if processes > 1:
            raise DeviceError(plan.diag(
                f"this run has {processes} processes, but the spec does not say how they share the training",
                plan.device_origin.span,
                "add `device { parallel: data }`: each process then trains on its share of every batch"))
        return None
    devices = jax.devices(plan.device) if plan.device != "auto" else jax.devices()
    platform = devices[0].platform
    n = len(devices)
    if spec.parallel == "data":
        mesh, axes = (n,), ("batch",)
        distribution = kd.DataParallel(devices=devices, auto_shard_dataset=False)
    else:
        mesh, axes = tuple(spec.mesh or ()), tuple(spec.axes or ())
        if math.prod(mesh) != n:
            sizes = ", ".join(f"`{a}` {d}" for a, d in zip(axes, mesh))
            raise DeviceError(plan.diag(
                f"the mesh {mesh} ({sizes}) needs {math.prod(mesh)} devices, but JAX has {n} {platform} "
                f"device{'s' if n != 1 else ''}{f' in {processes} processes' if processes > 1 else ''}",
                spec.span("mesh"), _mesh_hint(mesh, n, platform)))
        if processes > 1:
            raise DeviceError(plan.diag(
                "`parallel: model` over several processes is not supported: its split weights would have to be "
                "gathered to be saved", spec.span("parallel"), "use `parallel: data` across processes"))
        _check_layout(plan, mesh, axes)
        device_mesh = kd.DeviceMesh(shape=mesh, axis_names=list(axes), devices=devices)
        layout_map = kd.LayoutMap(device_mesh)
        for pattern, dims in spec.layout:
            layout_map[pattern] = tuple(dims)
        distribution = kd.ModelParallel(layout_map=layout_map, batch_dim_name=spec.batch_axis, auto_shard_dataset=False)
    shards = mesh[axes.index(spec.batch_axis or "batch")]
    data_shards = min(shards, processes)
    local_shards = shards // data_shards
    shard = _data_shard(distribution, spec.batch_axis or "batch", local_shards)
    train = plan.train
    if train is not None and train.batch_size % shards:
        better = max(shards, round(train.batch_size / shards) * shards)
        raise DeviceError(plan.diag(
            f"batch_size {train.batch_size} does not split evenly over the {shards} devices that share each batch",
            train.span("batch_size") or spec.span("parallel"), f"use a multiple of {shards}, e.g. `batch_size: {better}`"))
    # The distribution places every weight and batch on its mesh. A default device (`select_device` sets one for
    # `kind: cpu`) would commit new arrays to one device first, which across processes JAX cannot reshard
    # ("cross-host reshard ... should have the same set of devices").
    jax.config.update("jax_default_device", None)
    kd.set_distribution(distribution)
    _ACTIVE = Active(distribution=distribution, parallel=spec.parallel, platform=platform, devices=n, mesh=mesh,
                     axes=axes, processes=processes, shards=shards, data_shards=data_shards, shard=shard,
                     local_shards=local_shards)
    return _ACTIVE


def _mesh_hint(mesh: tuple[int, ...], n: int, platform: str) -> str:
    hint = ""
    if len(mesh) == 2 and n > 1:
        split = next((d for d in range(min(mesh[-1], n), 0, -1) if n % d == 0), 1)
        hint = f"for {n} devices, e.g. `mesh: ({n // split}, {split})`"
    if platform == "cpu":
        want = math.prod(mesh)
        hint += ("; or " if hint else "") + (f"run with XLA_FLAGS=--xla_force_host_platform_device_count={want} "
                                             f"for {want} virtual CPU devices")
    return hint


def _data_shard(distribution, batch_axis: str, local_shards: int) -> int:
    """Which shard of each batch this process feeds: where its devices sit along the mesh's batch axis."""
    import jax
    import numpy as np

    mesh = distribution.device_mesh
    devices = np.asarray(mesh.devices)
    axis = list(mesh.axis_names).index(batch_axis)
    here = jax.process_index()
    positions = [int(i) for i in range(devices.shape[axis])
                 if any(_process_of(d) == here for d in np.asarray(np.take(devices, i, axis=axis), dtype=object).reshape(-1))]
    return (min(positions) // local_shards) if positions else 0


def _process_of(device) -> int:
    index = getattr(device, "process_index", None)
    if index is not None:
        return int(index)
    import jax

    platform, _, number = str(device).partition(":")  # Keras may keep devices as "cpu:3"
    return next((d.process_index for d in jax.devices(platform or None) if str(d.id) == number), 0)


def _check_layout(plan, mesh: tuple[int, ...], axes: tuple[str, ...]) -> None:
    """Match the `layout` patterns against the model's weights before any is created with a layout: every
    pattern names a weight, no weight matches two, and each split dimension divides by its mesh axis."""
    from specc.compile.build import build_model

    spec = plan.distribution
    model = build_model(plan)  # without a distribution: only the weights' paths and shapes are looked at
    weights = [(w.path, tuple(w.shape)) for w in model.weights]
    del model
    paths = [p for p, _ in weights]
    matched: dict[str, int] = {}
    for i, (pattern, dims) in enumerate(spec.layout):
        span = spec.span(f"layout:{i}") or spec.span("layout")
        hits = [(p, s) for p, s in weights if p == pattern or re.fullmatch(pattern, p)]
        if not hits:
            raise SpecError(plan.diag(
                f"layout pattern `{pattern}` matches no weight of the model", span,
                (did_you_mean(pattern, paths) or "") + (" " if did_you_mean(pattern, paths) else "")
                + f"the weights are: {', '.join(paths[:12])}{', ...' if len(paths) > 12 else ''} "
                "(the pattern is a regular expression matched against the whole path)"))
        for path, shape in hits:
            if path in matched:
                first = spec.layout[matched[path]][0]
                raise SpecError(plan.diag(f"weight `{path}` matches two layout patterns: `{first}` and `{pattern}`",
                                          span, "make the patterns exclusive; each weight takes one layout"))
            matched[path] = i
            if len(dims) != len(shape):
                raise SpecError(plan.diag(
                    f"layout `{pattern}` gives {len(dims)} axes, but weight `{path}` has {len(shape)} "
                    f"dimension{'s' if len(shape) != 1 else ''} {shape}", span,
                    f"give one mesh axis or `none` per dimension, e.g. `({', '.join(['none'] * len(shape))})`"))
            for d, (size, axis) in enumerate(zip(shape, dims)):
                if axis is None:
                    continue
                parts = mesh[axes.index(axis)]
                if size % parts:
                    raise SpecError(plan.diag(
                        f"weight `{path}` {shape} cannot be split along mesh axis `{axis}`: its dimension {d} "
                        f"({size}) does not divide into {parts} parts", span,
                        f"leave that dimension `none`, or make the mesh axis `{axis}` a divisor of {size}"))


# --------------------------------------------------------------------------------------------- the data


def local_batch_size(batch_size: int) -> int:
    """The batch each process feeds `model.fit`: its share of the global `batch_size`."""
    return batch_size // _ACTIVE.data_shards if _ACTIVE is not None else batch_size


def eval_batch_size(batch_size: int) -> int:
    """The batch for evaluating the test split: at least 256, and one that splits over this process's devices."""
    size = max(batch_size, 256)
    if _ACTIVE is not None:
        size = math.ceil(size / _ACTIVE.local_shards) * _ACTIVE.local_shards
    return size


def shard_data(plan, data, verbose: bool = True):
    """This process's part of the data, cut so that every batch splits evenly over the devices.

    Training examples: with P processes feeding data, each global batch of `batch_size` is the concatenation of
    the processes' batches, process i contributing rows [i*b, (i+1)*b) of it (b = batch_size / P), so that with
    `shuffle: false` the run goes through the same batches as one process does. The training set is cut to the
    largest size for which every batch (the last one and, with `validation_split`, the validation batches too)
    splits evenly over each process's devices: at most a few examples. The test split is cut into P equal blocks
    the same way (the metrics are means over all of them)."""
    from specc.data.prepare import count_examples, take

    a = _ACTIVE
    if a is None:
        return data
    import numpy as np

    q, lshards = a.data_shards, a.local_shards
    batch = plan.train.batch_size
    local = batch // q
    n = count_examples(data.x_train)
    split = plan.train.validation_split
    keep_local = _even_count(n // q, lshards, split)
    if keep_local < 1:
        raise DataError(plan.diag(
            f"{n} training examples are too few to give each of {a.shards} devices a share", plan.device_origin.span))
    rows = _rows(keep_local, local, q, a.shard) if q > 1 else np.arange(keep_local)
    changes: dict[str, Any] = {}
    if keep_local * q < n or q > 1:
        changes.update(x_train=take(data.x_train, rows), y_train=take(data.y_train, rows), w_train=take(data.w_train, rows))
    notes = []
    if keep_local * q < n:
        notes.append(f"the first {keep_local * q:,} of {n:,} training examples")
    if data.x_test is not None and not data.test_is_train:
        nt = count_examples(data.x_test)
        block = (nt // q) // lshards * lshards
        if block < 1:
            raise DataError(plan.diag(f"{nt} test examples are too few to give each of {a.shards} devices a share",
                                      plan.device_origin.span))
        trows = np.arange(a.shard * block, (a.shard + 1) * block)
        if block * q < nt or q > 1:
            changes.update(x_test=take(data.x_test, trows), y_test=take(data.y_test, trows), w_test=take(data.w_test, trows))
        if block * q < nt:
            notes.append(f"the first {block * q:,} of {nt:,} test examples")
    elif data.test_is_train and "x_train" in changes:
        changes.update(x_test=changes["x_train"], y_test=changes["y_train"], w_test=changes["w_train"])
    if verbose and notes and is_primary():
        print(f"{a.describe()}: using {' and '.join(notes)}, so that every batch splits evenly", flush=True)
    return replace(data, **changes) if changes else data


def _even_count(n: int, parts: int, validation_split: float) -> int:
    """The largest count <= n of examples (per process) whose batches all split into `parts`: the count, and
    with a validation split, the training part Keras takes (floor(count * (1 - split))), divide by `parts`."""
    count = n - n % parts
    while count > 0:
        if not validation_split or math.floor(count * (1.0 - validation_split)) % parts == 0:
            return count
        count -= parts
    return 0


def _rows(count: int, local: int, processes: int, shard: int):
    """Rows of the (cut) training set that process `shard` feeds: its `local` rows of each global batch of
    `local * processes` rows, and its share of the last, shorter one."""
    import numpy as np

    full, rest = divmod(count, local)
    big = local * processes
    starts = np.arange(full) * big + shard * local
    rows = (starts[:, None] + np.arange(local)[None, :]).reshape(-1)
    if rest:
        tail = full * big + shard * rest + np.arange(rest)
        rows = np.concatenate([rows, tail])
    return rows
