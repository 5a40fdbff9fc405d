"""Stage 4: run a plan: device, data, compile, fit, evaluate, and the run directory.

A run directory holds `spec.model` (the spec as run), `model.keras`,
`metrics.json` and `history.csv`; each is written atomically, the model and
metrics last, so a directory with `metrics.json` is a finished run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .artifacts import write_atomic, write_atomic_with
from .build import build_model, make_object
from .data import Dataset, count_examples, load_dataset, prepare, take
from .errors import DataError, Diagnostic, SpecError, UsageError, did_you_mean
from .keras_env import import_keras
from .catalog import catalog
from .plan import Obj, Plan

def select_device(device: str) -> str:
    """Make the requested platform JAX's default device; returns the platform it runs on."""
    import jax

    if device != "auto":
        try:
            found = jax.devices(device)
        except Exception as err:  # noqa: BLE001 - JAX says why the platform is unavailable
            why = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise DataError(Diagnostic(
                f"device `{device}` requested, but JAX cannot use it: {why}",
                hint="use `device: auto`, or install a JAX build for it (e.g. `pip install -U \"jax[cuda12]\"`)")) from None
        jax.config.update("jax_default_device", found[0])
        return found[0].platform
    return jax.devices()[0].platform


@dataclass
class RunResult:
    out: Path
    metrics: dict[str, Any]
    history: dict[str, list[float]]
    model: Any = field(repr=False, default=None)


def default_out(spec_file: str) -> Path:
    stem = Path(spec_file).stem if spec_file and not spec_file.startswith("<") else "spec"
    return Path("runs") / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def _prepare_out(out: Path, force: bool) -> None:
    """Make the run directory. With `force`, an old run's results go first, metrics.json before
    model.keras, so that a failing new run never sits beside the old run's metrics."""
    finished = [f for f in ("metrics.json", "model.keras") if (out / f).exists()]
    if finished and not force:
        raise UsageError(Diagnostic(f"{out} already holds a run; refusing to overwrite it",
                                    hint="choose another `--out`, or pass `--force` to replace it"))
    try:
        for f in finished:
            (out / f).unlink()
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(Diagnostic(f"cannot use {out} as the run directory: {err.strerror or err}",
                                    hint="choose another `--out`")) from None


class _EpochTimes:
    """Epoch wall times, and a stop when the loss stops being finite.

    Only epoch-level hooks: a per-batch hook (Keras's TerminateOnNaN) would force a host
    sync on every step, which costs speed on JAX.
    """

    def __init__(self):
        self.times: list[float] = []

    def callback(self):
        keras = import_keras()
        outer = self

        class EpochTimes(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t0 = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                outer.times.append(time.perf_counter() - self.t0)
                loss = (logs or {}).get("loss")
                if loss is not None and not math.isfinite(float(loss)):
                    self.model.stop_training = True

        return EpochTimes()


def _check_labels(plan: Plan, model, data: Dataset) -> None:
    """Sparse class labels must index the model's outputs."""
    loss = plan.train.loss if plan.train else None
    if isinstance(loss, list) or isinstance(data.y_train, dict) or len(model.outputs) != 1:
        return
    cls = loss.cls if isinstance(loss, Obj) else catalog("loss").class_name(str(loss))
    if cls != "SparseCategoricalCrossentropy":
        return
    classes = model.outputs[0].shape[-1]
    for split, y in (("training", data.y_train), ("test", data.y_test)):
        if y is None or not len(y):
            continue
        lo, hi = float(np.min(y)), float(np.max(y))
        if lo < 0 or hi >= classes:
            raise DataError(plan.diag(
                f"{split} labels run from {lo:g} to {hi:g}, but the model has {classes} outputs (classes 0..{classes - 1})",
                plan.train.span("loss"),
                hint="make the last layer as wide as the number of classes"))


def compile_model(plan: Plan, model, weighted: bool = False) -> None:
    """Compile with the spec's optimizer, loss and metrics (the `train` section). With per-token loss
    weights (masked-token pre-training), the metrics are weighted the same way."""
    train = plan.train
    assert train is not None
    metrics = [make_object(m) for m in train.metrics]
    loss = make_object(train.loss)
    if weighted:  # the loss is the mean over the weighted positions, whatever the padding mask
        cls = catalog("loss").class_name(loss) if isinstance(loss, str) else None
        if cls:
            loss = catalog("loss").get_class(cls)()
        if isinstance(loss, import_keras().losses.Loss):
            loss.reduction = "mean_with_sample_weight"
    model.compile(optimizer=make_object(train.optimizer), loss=loss,
                  metrics=None if weighted else metrics, weighted_metrics=metrics if weighted else None)


def apply_init(plan: Plan, model) -> list[str]:
    """Copy weights from the run or `.keras` file `init` names into the layers it names (glob patterns;
    all layers both models have by default), then freeze the `freeze` layers. Returns the layers taken."""
    from fnmatch import fnmatchcase

    from .extras import load_model

    init = plan.init
    assert init is not None
    path = plan.path(init.source)
    file = path / "model.keras" if path.is_dir() else path
    if not file.is_file():
        raise DataError(plan.diag(f"`init` found no saved model at {file}", init.span("from"),
                                  "name a finished run directory (it holds model.keras) or a .keras file"))
    try:
        source = load_model(file)
    except Exception as err:  # noqa: BLE001 - a corrupt or foreign file
        raise DataError(plan.diag(f"`init` cannot load {file}: {str(err).splitlines()[0][:300]}",
                                  init.span("from"))) from None
    theirs = {layer.name: layer for layer in source.layers if layer.weights}
    ours = {layer.name: layer for layer in model.layers if layer.weights}
    taken: list[str] = []
    for pattern in init.layers or ["*"]:
        names = [name for name in ours if fnmatchcase(name, pattern)]
        if init.layers and not [name for name in names if name in theirs]:
            where = "this model" if not names else str(file)
            close = did_you_mean(pattern, list(ours if not names else theirs))
            raise SpecError(plan.diag(f"`init` names layer `{pattern}`, but {where} has no layer with weights by that name",
                                      init.span(f"layers:{pattern}") or init.span("layers"), close or f"layers both have: {', '.join(n for n in ours if n in theirs) or 'none'}"))
        for name in names:
            if name not in theirs:
                continue
            want = [tuple(w.shape) for w in ours[name].weights]
            have = [tuple(w.shape) for w in theirs[name].weights]
            if want != have:
                raise SpecError(plan.diag(
                    f"`init` cannot copy layer `{name}`: its weights have shapes {have} in {file} but {want} here",
                    init.span(f"layers:{name}") or init.span("layers") or init.span("from"),
                    "give the layer the same arguments as in the run it comes from, or leave it out of `layers`"))
            ours[name].set_weights(theirs[name].get_weights())
            taken.append(name)
    every = {layer.name: layer for layer in model.layers}
    for pattern in init.freeze:
        names = [name for name in every if fnmatchcase(name, pattern)]
        if not names:
            raise SpecError(plan.diag(f"`freeze` names layer `{pattern}`, but the model has no such layer",
                                      init.span(f"freeze:{pattern}") or init.span("freeze"),
                                      did_you_mean(pattern, list(every))))
        for name in names:
            every[name].trainable = False
    return list(dict.fromkeys(taken))


def adapt_layers(plan: Plan, model, x) -> None:
    """Keras preprocessing layers that learn from data (`normalization`) and read a model input directly
    are adapted to the training examples, Keras's own `adapt()`; their statistics are saved in the model."""
    inputs = {i.name for i in plan.inputs}
    for node in plan.layers:
        if node.cls == "Normalization" and "mean" not in node.kwargs and len(node.inputs) == 1 and node.inputs[0] in inputs:
            model.get_layer(node.name).adapt(x[node.inputs[0]] if isinstance(x, dict) else x)


def _check_ids(plan: Plan, data: Dataset) -> None:
    """Integer inputs that feed an `embedding` must be ids below its `input_dim`: JAX does not check."""
    for inp in plan.inputs:
        if not inp.dtype.startswith(("int", "uint")):
            continue
        for node in plan.layers:
            if node.cls != "Embedding" or inp.name not in node.inputs:
                continue
            size = node.kwargs.get("input_dim")
            for split, x in (("training", data.x_train), ("test", data.x_test)):
                x = x.get(inp.name) if isinstance(x, dict) else x
                if x is None or not len(x) or not isinstance(size, int):
                    continue
                lo, hi = int(np.min(x)), int(np.max(x))
                if hi >= size or lo < 0:
                    vocab = f" (the vocabulary has {data.vocab.size} tokens)" if data.vocab is not None else ""
                    raise DataError(plan.diag(
                        f"{split} ids of input `{inp.name}` run from {lo} to {hi}{vocab}, but `{node.name}` has "
                        f"input_dim {size} (ids 0..{size - 1})", node.origin.span,
                        f"make input_dim at least {hi + 1}", node.origin.notes))


def fit_options(plan: Plan) -> dict[str, Any]:
    """The `model.fit` arguments the spec's `train` section sets (besides data, epochs and callbacks)."""
    train = plan.train
    assert train is not None
    return {"batch_size": train.batch_size, "validation_split": train.validation_split, "shuffle": train.shuffle}


def run_plan(plan: Plan, out: str | Path | None = None, epochs: int | None = None, limit: int | None = None,
             verbose: int | str | None = None, force: bool = False, resume: str | Path | None = None) -> RunResult:
    """Train, evaluate and save. Raises `SpecError`/`DataError`/`UsageError` for user mistakes."""
    if resume is not None:
        raise UsageError(Diagnostic("`--resume` is not available yet", file=str(resume)))
    if plan.train is None:
        raise SpecError(plan.diag(
            "the spec has no `train` section; `specc run` needs one", None,
            hint="add `train { loss: sparse_categorical_crossentropy; optimizer: adam; epochs: 5 }`"))
    try:
        platform = select_device(plan.device)
    except DataError as err:  # blame the `device:` line
        raise DataError(plan.diag(err.message, plan.device_origin.span, err.hint)) from None
    keras = import_keras()
    train = plan.train
    if train.seed is not None:
        keras.utils.set_random_seed(train.seed)
    data = prepare(plan, load_dataset(plan), limit)
    model = build_model(plan)
    _check_labels(plan, model, data)
    _check_ids(plan, data)
    adapt_layers(plan, model, data.x_train)
    taken = apply_init(plan, model) if plan.init else []  # after adapt: weights taken from a run win
    if verbose is None:
        verbose = 1 if sys.stdout.isatty() else 2
    folds = _cross_validate(plan, data, epochs, verbose) if train.validation else None
    out_dir = Path(out) if out else default_out(plan.file)
    _prepare_out(out_dir, force)
    if plan.source:
        write_atomic(out_dir / "spec.model", plan.source)
    if data.vocab is not None:
        write_atomic(out_dir / "tokenizer.json", data.vocab.to_json())
    if data.classes is not None:
        write_atomic(out_dir / "classes.json", json.dumps(data.classes) + "\n")

    try:
        compile_model(plan, model, weighted=data.w_train is not None)
    except (ValueError, TypeError) as err:
        raise SpecError(plan.diag(
            f"Keras cannot compile the model with these training settings: {str(err).splitlines()[0][:400]}",
            train.span("loss"))) from None
    timer = _EpochTimes()
    callbacks = [timer.callback()]
    if train.early_stopping is not None:
        callbacks.append(make_object(train.early_stopping))
    n_epochs = epochs if epochs is not None else train.epochs
    if verbose and taken:
        print(f"init: {len(taken)} layers from {plan.init.source}: {', '.join(taken)}"  # type: ignore[union-attr]
              + (f"; frozen: {', '.join(plan.init.freeze)}" if plan.init.freeze else ""), flush=True)  # type: ignore[union-attr]
    if verbose:
        test = "the training data" if data.test_is_train else f"{count_examples(data.x_test):,} test examples"
        print(f"training `{plan.name}` ({model.count_params():,} params) on {count_examples(data.x_train):,} examples "
              f"for {n_epochs} epoch{'s' if n_epochs != 1 else ''} of batch {train.batch_size} on {platform}; "
              f"evaluating on {test}; writing {out_dir}", flush=True)
    start = time.perf_counter()
    try:
        fit = model.fit(data.x_train, data.y_train, sample_weight=data.w_train, epochs=n_epochs, callbacks=callbacks,
                        verbose=verbose, **fit_options(plan))
    except KeyboardInterrupt:
        print(f"specc: interrupted during training; {out_dir} holds spec.model only (no model was saved)",
              file=sys.stderr)
        raise
    except (ValueError, TypeError) as err:
        if timer.times:  # it ran whole epochs before failing: not a mismatch of shapes
            raise
        raise DataError(plan.diag(
            f"training failed in its first steps: {str(err).splitlines()[0][:400]}",
            train.span("loss"),
            hint=f"check that the loss fits the model's outputs {[tuple(o.shape) for o in model.outputs]} and the "
            f"targets {_shapes(data.y_train)}; kept in {out_dir}: spec.model only")) from None
    seconds = time.perf_counter() - start
    history = {k: [float(v) for v in vs] for k, vs in fit.history.items()}
    losses = history.get("loss", [])
    _write_history(out_dir / "history.csv", history)
    if any(not math.isfinite(v) for v in losses):
        bad = next(i for i, v in enumerate(losses) if not math.isfinite(v))
        raise DataError(plan.diag(
            f"training stopped: the loss became {losses[bad]} in epoch {bad + 1}; "
            f"kept in {out_dir}: spec.model and history.csv (no model was saved)",
            train.span("optimizer"),
            hint="lower the learning rate, or check the data for NaN or huge values"))
    try:
        test = model.evaluate(data.x_test, data.y_test, sample_weight=data.w_test, batch_size=max(train.batch_size, 256),
                              verbose=0, return_dict=True)
    except (ValueError, TypeError) as err:
        raise DataError(plan.diag(
            f"evaluation on the test split failed: {str(err).splitlines()[0][:400]}; "
            f"kept in {out_dir}: spec.model and history.csv (no model was saved)", None,
            hint=f"check that the test targets {_shapes(data.y_test)} fit the model's outputs")) from None
    write_atomic_with(out_dir / "model.keras", model.save, suffix=".keras")
    metrics = {
        "spec": plan.file,
        "model": plan.name,
        "test": {k: float(v) for k, v in test.items()},
        "test_on": "train" if data.test_is_train else "test",
        "train": {k: v[-1] for k, v in history.items() if not k.startswith("val_")},
        "validation": {k[4:]: v[-1] for k, v in history.items() if k.startswith("val_")},
        "params": int(model.count_params()),
        "epochs": len(losses),
        "seconds": round(seconds, 3),
        "epoch_seconds": [round(t, 3) for t in timer.times],
        "examples": count_examples(data.x_train),
        "batch_size": train.batch_size,
        "seed": train.seed,
        "device": platform,
        "versions": _versions(),
    }
    if folds is not None:
        metrics["cross_validation"] = folds
    if taken:
        metrics["init"] = {"from": plan.init.source, "layers": taken, "frozen": plan.init.freeze}  # type: ignore[union-attr]
    if data.vocab is not None:
        metrics["vocabulary"] = {"kind": data.vocab.kind, "size": data.vocab.size}
    write_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return RunResult(out=out_dir, metrics=metrics, history=history, model=model)


def _cross_validate(plan: Plan, data: Dataset, epochs: int | None, verbose) -> dict[str, Any]:
    """k-fold cross-validation on the training data: a fresh model per fold, trained on the other k-1
    folds and evaluated on its own. Returns each metric's mean, standard deviation and fold values."""
    train = plan.train
    assert train is not None and train.validation is not None
    k = train.validation
    n = count_examples(data.x_train)
    if n < k:
        raise DataError(plan.diag(f"{k}-fold cross-validation needs at least {k} training examples, got {n}",
                                  train.span("validation")))
    order = np.random.default_rng(train.seed or 0).permutation(n)
    parts = np.array_split(order, k)
    scores: dict[str, list[float]] = {}
    keras = import_keras()
    for i, held in enumerate(parts):
        rest = np.concatenate([p for j, p in enumerate(parts) if j != i])
        if train.seed is not None:
            keras.utils.set_random_seed(train.seed + i)
        model = build_model(plan)
        adapt_layers(plan, model, take(data.x_train, rest))
        if plan.init:
            apply_init(plan, model)
        compile_model(plan, model, weighted=data.w_train is not None)
        model.fit(take(data.x_train, rest), take(data.y_train, rest), sample_weight=take(data.w_train, rest),
                  epochs=epochs if epochs is not None else train.epochs, verbose=0, **fit_options(plan))
        result = model.evaluate(take(data.x_train, held), take(data.y_train, held),
                                sample_weight=take(data.w_train, held), verbose=0, return_dict=True)
        for name, value in result.items():
            scores.setdefault(name, []).append(float(value))
        if verbose:
            shown = ", ".join(f"{name} {float(v):.4g}" for name, v in result.items())
            print(f"fold {i + 1}/{k}: {shown}", flush=True)
    if train.seed is not None:
        keras.utils.set_random_seed(train.seed)  # the final model trains as it would without folds
    summary = {name: {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)), "folds": v} for name, v in scores.items()}
    if verbose:
        print(f"{k}-fold cross-validation: " + ", ".join(
            f"{name} {s['mean']:.4g} ± {s['std']:.3g}" for name, s in summary.items()), flush=True)
    return {"k": k, **summary}


def _shapes(a) -> str:
    if isinstance(a, dict):
        return "{" + ", ".join(f"{k}: {tuple(v.shape)}" for k, v in a.items()) + "}"
    return str(tuple(a.shape))


def _write_history(path: Path, history: dict[str, list[float]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    keys = list(history)
    writer.writerow(["epoch"] + keys)
    for i in range(len(history.get("loss", []))):
        writer.writerow([i + 1] + [repr(history[k][i]) for k in keys])
    write_atomic(path, buf.getvalue())


def _versions() -> dict[str, str]:
    import jax

    keras = import_keras()
    return {"specc": __version__, "keras": keras.__version__, "jax": jax.__version__,
            "python": sys.version.split()[0], "numpy": np.__version__}
