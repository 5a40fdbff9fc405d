"""Checkpoints: the whole training state after every epoch, for `specc run --resume`.

`checkpoint.npz` in the run directory is rewritten atomically at the end of each complete epoch, then
`history.csv`. It holds what decides the rest of the run, so that a run killed at any moment and resumed
ends bit for bit as the uninterrupted run would (on CPU, with a seed):

- every model variable (`model.variables`): weights, batch-norm statistics, and the states of the layers'
  own random seed generators (dropout, random_flip, random_crop), which `model.keras` does not save;
- every optimizer variable: its step count (which learning-rate schedules read) and moments;
- NumPy's global random state (Keras shuffles arrays with it at the start of each epoch), Python's
  `random`, and the state of Keras's global seed generator;
- early stopping's counters and best weights;
- `meta` (JSON): the epochs done, whether training had stopped, the history and epoch times so far, the
  spec's hash, k-fold results, and which variables are each layer's weights (`init` can start from them).

Arrays are stored by position in `model.variables` and `optimizer.variables`: the same spec builds the
same variables in the same order, and their shapes are checked when they are put back.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import re
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from specc.core.artifacts import CHECKPOINT, write_atomic
from specc.core.errors import DataError, Diagnostic, describe_schema_error, printable
from specc.runtime.keras_env import import_keras

# Typed Any: mypy accepts `keras.callbacks.Callback` as a base class only from a value it knows nothing about.
keras: Any = import_keras()


def _global_seed_generator(create: bool = False):
    """Keras's global `SeedGenerator` (what `keras.random` uses without a seed), if there is one."""
    from keras.src.backend.common import global_state
    from keras.src.random import seed_generator

    gen = global_state.get_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR)
    return seed_generator.global_seed_generator() if gen is None and create else gen


def save_checkpoint(path: Path, model, meta: dict[str, Any], early_stopping=None) -> None:
    """Write the training state (variables, random states, `meta`) to `path`, atomically."""
    arrays = {f"model/{i}": keras.ops.convert_to_numpy(v.value) for i, v in enumerate(model.variables)}
    arrays.update({f"optimizer/{i}": keras.ops.convert_to_numpy(v.value)
                   for i, v in enumerate(model.optimizer.variables)})
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    arrays["rng/numpy"] = keys
    version, state, gauss_next = random.getstate()
    gen = _global_seed_generator()
    if gen is not None:
        arrays["rng/keras"] = keras.ops.convert_to_numpy(gen.state.value)
    index = {id(v): i for i, v in enumerate(model.variables)}
    meta = {**meta, "paths": [v.path for v in model.variables],
            "layers": {layer.name: [index[id(w)] for w in layer.weights] for layer in model.layers if layer.weights},
            "numpy_rng": [int(pos), int(has_gauss), float(gauss)], "python_rng": [version, list(state), gauss_next]}
    if early_stopping is not None:
        es = early_stopping
        meta["early_stopping"] = {"wait": es.wait, "stopped_epoch": es.stopped_epoch, "best_epoch": es.best_epoch,
                                  "best": None if es.best is None else float(es.best),
                                  "best_weights": es.best_weights is not None}
        for i, w in enumerate(es.best_weights or []):
            arrays[f"early_stopping/{i}"] = np.asarray(w)
    arrays["meta"] = np.array(json.dumps(meta))
    write_atomic(path, lambda f: np.savez(f, **arrays))


class _EarlyStoppingMeta(BaseModel):
    wait: StrictInt
    stopped_epoch: StrictInt
    best_epoch: StrictInt
    best: Optional[float]
    best_weights: StrictBool


class CheckpointMeta(BaseModel):
    """The schema of a checkpoint's `meta` (JSON): what `EpochCheckpoint` and `restore_checkpoint` read."""

    model_config = ConfigDict(extra="allow")

    epoch: StrictInt = Field(ge=0)
    stopped: StrictBool = False
    history: dict[StrictStr, list[float]] = Field(default_factory=dict)
    epoch_seconds: list[float] = Field(default_factory=list)
    seconds: float = 0.0
    spec_sha256: StrictStr = Field(pattern=r"^[0-9a-f]{64}$")
    cross_validation: Optional[dict[StrictStr, Any]] = None
    resumed_at: list[StrictInt] = Field(default_factory=list)
    paths: list[StrictStr]
    layers: dict[StrictStr, list[Annotated[int, Field(ge=0, strict=True)]]]
    numpy_rng: tuple[Annotated[int, Field(ge=0, le=624, strict=True)], Annotated[int, Field(ge=0, le=1, strict=True)], float]
    python_rng: tuple[StrictInt, list[Annotated[int, Field(ge=0, lt=2**32, strict=True)]], Optional[float]]
    early_stopping: Optional[_EarlyStoppingMeta] = None


#: The largest checkpoint meta read (it holds the history: a few kB per hundred epochs).
MAX_META = 64 << 20
#: specc writes checkpoints uncompressed (`numpy.savez`): arrays declaring more than twice the file's size, past this
#: much, are not a checkpoint specc wrote (a small file could otherwise decompress to gigabytes).
CHECKPOINT_SLACK_BYTES = 1 << 20
#: The global random states a checkpoint holds: (shape, dtype) of each array.
RNG_ARRAYS = {"rng/numpy": ((624,), np.dtype(np.uint32)), "rng/keras": ((2,), np.dtype(np.uint32))}
_LOG_NAME = re.compile(r"^[A-Za-z0-9_.\-/]{1,100}$")


def _check_member(path: Path, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> None:
    """One array of a checkpoint, from its .npy header: `meta` one JSON string of at most MAX_META bytes, the
    random states their own shapes, every other array numbers."""
    shown = f"`{printable(name[:100], lines=False)}`"
    if name == "meta":
        if shape != () or dtype.kind != "U":
            raise DataError(Diagnostic(f"its `meta` is {dtype}{list(shape)}, not one JSON string"))
        if dtype.itemsize > MAX_META:
            raise DataError(Diagnostic(f"its `meta` declares {dtype.itemsize:,} bytes, more than the {MAX_META:,} "
                                       "specc reads (MAX_META)"))
        return
    if name in RNG_ARRAYS:
        want, kind = RNG_ARRAYS[name]
        if shape != want or dtype != kind:
            raise DataError(Diagnostic(f"{shown} (a random state) is {dtype}{list(shape)}, not {kind}{list(want)}"))
        return
    if dtype.hasobject or dtype.names is not None or dtype.kind not in "biuf":
        raise DataError(Diagnostic(f"array {shown} holds {dtype} values, not numbers"))


def _check_checkpoint(meta: CheckpointMeta, declared: dict[str, tuple[tuple[int, ...], np.dtype]]) -> str | None:
    """What is wrong with a checkpoint whose meta passed its schema and whose arrays passed `_check_member`, or None:
    its arrays, its history, its early stopping's best weights, its Python random state, checked in that order."""
    names = [n for n in declared if n != "meta"]
    counts: dict[str, int] = {}
    for name in names:
        kind, _, index = name.partition("/")
        if name in RNG_ARRAYS:
            continue
        if kind not in ("model", "optimizer", "early_stopping") or not index.isdigit():
            return f"unexpected array `{printable(name[:100], lines=False)}`"
        counts[kind] = counts.get(kind, 0) + 1
    return (_check_arrays(meta, names, counts) or _check_history(meta) or _check_best_weights(meta, counts)
            or _check_python_rng(meta))


def _check_arrays(meta: CheckpointMeta, names: list[str], counts: dict[str, int]) -> str | None:
    """The arrays numbered 0..n-1 per kind, NumPy's random state among them, one model array per variable path."""
    for kind, n in counts.items():
        if any(f"{kind}/{i}" not in names for i in range(n)):
            return f"its {kind} arrays are not numbered 0..{n - 1}"
    if "rng/numpy" not in names:
        return "no `rng/numpy` array (NumPy's random state)"
    if counts.get("model", 0) != len(meta.paths):
        return f"{counts.get('model', 0)} model arrays but {len(meta.paths)} variable paths in its meta"
    bad = [f"{layer}: {i}" for layer, idx in meta.layers.items() for i in idx if i >= len(meta.paths)]
    if bad:
        return f"its meta's `layers` names variable {printable(bad[0][:200], lines=False)}, but it holds {len(meta.paths)}"
    return None


def _check_history(meta: CheckpointMeta) -> str | None:
    """One value per epoch of each logged name, `loss` among them, every name a loss's or metric's."""
    if any(len(v) != meta.epoch for v in meta.history.values()) or len(meta.epoch_seconds) != meta.epoch:
        return f"its history does not have one value per epoch for its {meta.epoch} epochs"
    if meta.epoch and "loss" not in meta.history:
        return "its history has no `loss` (every run logs its loss)"
    odd = next((k for k in meta.history if not _LOG_NAME.match(k)), None)
    if odd is not None:
        return f"its history logs `{printable(odd[:100], lines=False)}`, not the name of a loss or metric"
    return None


def _check_best_weights(meta: CheckpointMeta, counts: dict[str, int]) -> str | None:
    """Early stopping's best weights present exactly when its meta says so, and no more of them than model arrays."""
    want_best = bool(meta.early_stopping and meta.early_stopping.best_weights)
    if want_best != bool(counts.get("early_stopping")):
        return "its early stopping's best weights are missing" if want_best else \
            "it holds early stopping's best weights, but its meta says it has none"
    if counts.get("early_stopping", 0) > counts.get("model", 0):
        return "it holds more of early stopping's best weights than model variables"
    return None


def _check_python_rng(meta: CheckpointMeta) -> str | None:
    """A Mersenne Twister state that Python itself accepts."""
    version, state, gauss = meta.python_rng
    if len(state) != 625:
        return "its Python random state does not have 625 numbers"
    try:
        random.Random().setstate((version, tuple(state), gauss))
    except (ValueError, TypeError, OverflowError) as err:
        return f"its Python random state is not one Python made ({printable(str(err)[:100], lines=False)})"
    if not any(state[:624]):
        return "its Python random state is all zeros (not a Mersenne Twister state)"
    return None


def read_checkpoint(path: Path, meta_only: bool = False, hint: str | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(meta, arrays) of a checkpoint file, checked against `CheckpointMeta` and the arrays its meta implies;
    with `meta_only`, the arrays are not read. A `DataError` naming the file and what is wrong otherwise.

    The zip's directory and every array's .npy header are checked before anything is decompressed
    (`datafiles.check_npz`): `meta` at most MAX_META bytes, the arrays at most about the file's own size
    (specc writes checkpoints uncompressed), the random states their own shapes."""
    from specc.core.files import check_npz, size_text

    path = Path(path)

    def wrong(what: str) -> DataError:
        return DataError(Diagnostic(f"not a readable specc checkpoint: {what}", file=str(path), hint=hint))

    if not path.is_file():
        raise wrong("not a regular file" if path.exists() else "no such file")
    try:
        size = path.stat().st_size
        declared = check_npz(path, check=_check_member, max_bytes=2 * size + CHECKPOINT_SLACK_BYTES,
                             what=f"checkpoint of {size_text(size)} (specc writes checkpoints uncompressed)",
                             floor=CHECKPOINT_SLACK_BYTES, ratio=2, hint=hint or "")
        if "meta" not in declared:
            raise wrong("it has no `meta` entry")
        with np.load(path, allow_pickle=False) as z:
            meta = CheckpointMeta.model_validate(json.loads(str(z["meta"])))
            problem = _check_checkpoint(meta, declared)
            if problem:
                raise wrong(problem)
            arrays = {} if meta_only else {k: z[k] for k in declared if k != "meta"}
    except DataError as err:
        if err.message.startswith("not a readable specc checkpoint"):
            raise
        raise wrong(err.message) from None
    except ValidationError as err:
        raise wrong(f"its meta does not fit: {describe_schema_error(err)}") from None
    except Exception as err:  # noqa: BLE001 - truncated, foreign, not a zip, bad JSON, a damaged member
        why = printable((str(err).strip().splitlines() or [type(err).__name__])[0][:300], lines=False)
        raise wrong(f"{why} ({type(err).__name__})") from None
    if not meta_only:
        keys = arrays["rng/numpy"]
        try:
            np.random.RandomState().set_state(("MT19937", keys, *meta.numpy_rng))
        except (ValueError, TypeError, OverflowError) as err:
            raise wrong(f"its NumPy random state is not one NumPy made ({printable(str(err)[:100], lines=False)})") from None
        if not keys.any():
            raise wrong("its NumPy random state is all zeros (not a Mersenne Twister state)")
    return meta.model_dump(), arrays


def checkpoint_weights(path: Path, hint: str | None = None) -> dict[str, list[np.ndarray]]:
    """Each layer's weights in a checkpoint (`layer.get_weights()` order), by layer name."""
    meta, arrays = read_checkpoint(path, hint=hint)
    return {name: [arrays[f"model/{i}"] for i in idx] for name, idx in meta["layers"].items()}


def restore_checkpoint(model, meta: dict[str, Any], arrays: dict[str, np.ndarray], early_stopping=None,
                       file: str = CHECKPOINT) -> None:
    """Put a checkpoint's variables and random states back (the optimizer must be built); `file` names it in errors."""
    for kind, variables in (("model", model.variables), ("optimizer", model.optimizer.variables)):
        saved = sorted((k for k in arrays if k.startswith(kind + "/")), key=lambda k: int(k.split("/")[1]))
        if len(saved) != len(variables):
            raise DataError(Diagnostic(f"the checkpoint holds {len(saved)} {kind} variables, this model has "
                                       f"{len(variables)}", file=file,
                                       hint="was the run started by another version of specc?"))
        for i, (key, v) in enumerate(zip(saved, variables)):
            value = arrays[key]
            if tuple(value.shape) != tuple(v.shape):  # paths may differ: seed generators are numbered per process
                raise DataError(Diagnostic(f"the checkpoint's {kind} variable {i} ({meta['paths'][i] if kind == 'model' else key}, "
                                           f"{tuple(value.shape)}) does not fit this model's ({v.path}, {tuple(v.shape)})",
                                           file=file))
            v.assign(value)
    pos, has_gauss, gauss = meta["numpy_rng"]
    np.random.set_state(("MT19937", arrays["rng/numpy"], pos, has_gauss, gauss))
    if "rng/keras" in arrays:
        _global_seed_generator(create=True).state.assign(arrays["rng/keras"])
    version, state, gauss_next = meta["python_rng"]
    random.setstate((version, tuple(state), gauss_next))
    saved_es = meta.get("early_stopping")
    if early_stopping is not None and saved_es:
        for name in ("wait", "stopped_epoch", "best_epoch", "best"):
            setattr(early_stopping, name, saved_es[name])
        n = sum(1 for k in arrays if k.startswith("early_stopping/"))
        best = [arrays[f"early_stopping/{i}"] for i in range(n)] if saved_es["best_weights"] else None
        want = [tuple(w.shape) for w in model.weights]
        if best is not None and [tuple(b.shape) for b in best] != want:
            raise DataError(Diagnostic(f"the checkpoint's early-stopping best weights ({len(best)} arrays) do not fit "
                                       f"this model's {len(want)} weights", file=file,
                                       hint="start the run again with `--force`"))
        early_stopping.best_weights = best


def write_history(path: Path, history: dict[str, list[float]]) -> None:
    """`history.csv`: a row per epoch, a column per logged quantity, written atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    keys = list(history)
    writer.writerow(["epoch"] + keys)
    for i in range(len(history.get("loss", []))):
        writer.writerow([i + 1] + [repr(history[k][i]) for k in keys])
    write_atomic(path, buf.getvalue())


def _names(keys) -> str:
    return ", ".join(f"`{printable(str(k)[:100], lines=False)}`" for k in sorted(keys)[:10])


class FiniteLoss(keras.callbacks.Callback):
    """Stops training at the first step whose loss is NaN or infinite; `bad` is (epoch, step, loss), the step None
    when only the epoch's loss was seen (`EpochCheckpoint`).

    Keras dispatches it off the training loop, on a thread pool (`async_safe`), so the check never makes JAX
    wait on a step: the stop lands a step or two later (that epoch is never checkpointed), and calls may run
    out of order, so the earliest bad step is kept."""

    async_safe = True

    def __init__(self):
        super().__init__()
        self.bad: tuple[int, int | None, float] | None = None
        self.epoch = 0
        self.lock = threading.Lock()

    def set_model(self, model):
        super().set_model(model)
        # Not `self.model`: on JAX that property copies the training state into the model, which from this
        # thread would race the training step and hand it deleted (donated) buffers.
        self.trainer = model

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch  # batch-end calls of the previous epoch are all done: Keras waits at epoch end

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            with self.lock:
                if self.bad is None or (self.epoch, batch) < self.bad[:2]:
                    self.bad = (self.epoch, batch, float(loss))
            self.trainer.stop_training = True


class EpochCheckpoint(keras.callbacks.Callback):
    """At the end of each complete, finite epoch: record its logs and time, then write the checkpoint to `path`
    and the history to `history_path`. On resume (`state` = a checkpoint's meta and arrays) it puts the state back
    when training begins: after Keras has built the optimizer and the data iterator (building draws a batch,
    and with it a shuffle from NumPy's random state), before the first batch of the next epoch.

    Writing a checkpoint takes time (gathering the state, writing it, syncing it to disk). Epochs shorter than
    `SPACING` times what the last checkpoint took are not each saved: the next checkpoint waits until that
    much training has passed, so checkpoints cost at most about 1/SPACING of the time (`$SPECC_CHECKPOINT_SPACING`,
    default 10; 0 saves every epoch). The last epoch, and one after which training stops, are always saved.

    Place it after early stopping in the callbacks, so that it saves early stopping's verdict."""

    SPACING = float(os.environ.get("SPECC_CHECKPOINT_SPACING") or 10)

    def __init__(self, path: Path, history_path: Path, meta: dict[str, Any], guard: FiniteLoss,
                 state: tuple[dict, dict] | None = None, early_stopping=None):
        super().__init__()
        self.path, self.history_path, self.meta, self.state = path, history_path, dict(meta), state
        self.early_stopping, self.guard = early_stopping, guard
        saved = state[0] if state else {}
        self.history: dict[str, list[float]] = {k: list(v) for k, v in saved.get("history", {}).items()}
        self.times: list[float] = list(saved.get("epoch_seconds", []))
        self.seconds_before = float(saved.get("seconds", 0.0))
        self.done = self.saved = int(saved.get("epoch", 0))  # epochs finished; epochs in the checkpoint on disk
        self.new_epochs = 0  # finished by this process
        self.saved_at, self.cost = 0.0, 0.0

    def on_train_begin(self, logs=None):
        if self.state is not None:
            restore_checkpoint(self.model, *self.state, early_stopping=self.early_stopping, file=str(self.path))
            self.state = None  # the arrays are in the model now
        self.start = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        loss = logs.get("loss")
        if self.guard.bad is None and loss is not None and not math.isfinite(float(loss)):
            self.guard.bad = (epoch, None, float(loss))
        if self.guard.bad is not None:  # a diverged epoch is never saved: the last good checkpoint stays
            self.model.stop_training = True
            return
        if self.history and set(logs) != set(self.history):  # a resumed history: this run must log what it logged
            raise DataError(Diagnostic(
                f"not a readable specc checkpoint: its history logs {_names(self.history)}, but this run logs "
                f"{_names(logs)}; nothing was saved from this epoch", file=str(self.path),
                hint=f"the run cannot be resumed; start it again with `specc run SPEC --out {self.path.parent} --force`"))
        self.times.append(time.perf_counter() - self.t0)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))
        self.done = epoch + 1
        self.new_epochs += 1
        stopping = self.model.stop_training or self.done >= self.params.get("epochs", 0)
        if not stopping and time.perf_counter() - self.saved_at < self.SPACING * self.cost:
            return
        began = time.perf_counter()
        self.meta.update(epoch=self.done, stopped=bool(self.model.stop_training), history=self.history,
                         epoch_seconds=self.times, seconds=self.seconds())
        save_checkpoint(self.path, self.model, self.meta, self.early_stopping)
        write_history(self.history_path, self.history)
        self.saved = self.done
        self.saved_at = time.perf_counter()
        self.cost = self.saved_at - began

    def seconds(self) -> float:
        """Training time so far, over every process that worked on the run."""
        return self.seconds_before + time.perf_counter() - self.start
