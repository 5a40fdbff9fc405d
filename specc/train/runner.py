"""Stage 4: run a plan: device, data, compile, fit, evaluate, and the run directory.

A run directory holds `spec.model` (the spec as run) and `run.json` (its hash, the run's settings, versions,
devices, seed) from the start; `checkpoint.npz` and `history.csv` after every epoch (every few, for epochs
much shorter than writing a checkpoint: `specc.train.checkpoint`); then `model.keras`, `curves.png` and
`metrics.json`. Each is written atomically and `metrics.json` last, so a directory with `metrics.json` is a
finished run (its checkpoint is then removed), and one with a checkpoint but no `metrics.json` can be
resumed (`run_plan(..., resume=DIR)`).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from specc.core.version import __version__
from specc.core.artifacts import remove_partial_files, write_atomic, write_atomic_with
from specc.train.rundir import (CHECKPOINT, RUN_FILES, RunDir, claim_out, claim_resume, diverged as _diverged, read_run_info,  # noqa: F401 - RUN_FILES re-exported
                     special_run_file)
from specc.compile.build import build_model, make_object
from specc.data.prepare import Dataset, count_examples, load_dataset, prepare, take
from specc.core.errors import DataError, Diagnostic, SpecError, UsageError, UserError, did_you_mean, printable
from specc.runtime.keras_env import import_keras
from specc.compile.catalog import catalog
from specc.core.plan import Plan

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


def spec_hash(plan: Plan) -> str:
    """The SHA-256 of the spec's text: a resumed run must train the very spec its run started with."""
    return hashlib.sha256(plan.source.encode("utf-8")).hexdigest()


def _checkpoint_meta(path: Path) -> dict[str, Any]:
    from specc.train.checkpoint import read_checkpoint

    return read_checkpoint(path, meta_only=True)[0]


def claim_run_dir(out: str | Path | None, spec_file: str, force: bool = False,
                  resume: str | Path | None = None) -> RunDir | None:
    """Claim (lock) the directory a run writes, before anything is loaded or trained: `resume`'s, `out`, or a
    new `runs/NAME-TIME`. Process 0 alone writes a run (`specc.train.distribute`); the others claim nothing (None)."""
    from specc.train.distribute import is_primary

    if not is_primary():
        return None
    if resume is not None:
        if out is not None and Path(out).resolve() != Path(resume).resolve():
            raise UsageError(Diagnostic("`--resume` continues the run in its own directory; `--out` names another",
                                        file=str(resume), hint="leave out `--out`"))
        return claim_resume(resume)
    return claim_out(out, spec_file, force)


def resumable(run_dir: Path, out=None) -> dict[str, Any]:
    """Check that `run_dir` holds an unfinished run that resuming can finish (before its spec is even read);
    returns its `run.json`. `out`: the `--out` given with `--resume`, if any."""
    def refuse(message: str, hint: str | None = None):
        return UsageError(Diagnostic(message, file=str(run_dir), hint=hint))

    if out is not None and Path(out).resolve() != run_dir.resolve():
        raise refuse("`--resume` continues the run in its own directory; `--out` names another",
                     "leave out `--out`")
    if not run_dir.is_dir():
        raise refuse("no run directory here", "name the directory of a run that was interrupted")
    if (run_dir / "metrics.json").exists():
        raise refuse("this run is finished (it has metrics.json); there is nothing to resume",
                     "start a new run with `specc run SPEC --out NEW_DIR`")
    if not (run_dir / CHECKPOINT).exists():
        raise refuse(f"no {CHECKPOINT} here: the run stopped before its first epoch ended",
                     f"start it again: `specc run SPEC --out {run_dir}`")
    if not (run_dir / "run.json").exists():
        raise refuse("no run.json here: this is not the directory of a specc run",
                     "name the directory of a run that was interrupted")
    info = read_run_info(run_dir)
    special = special_run_file(run_dir, [f for f in RUN_FILES if f not in ("run.json", CHECKPOINT)])  # those two: read
    if special:
        raise refuse(f"this run cannot be resumed: {special}", "remove or rename it, then resume")
    if info.get("diverged"):
        raise refuse(f"this run diverged ({_diverged(info)}); resuming it would diverge again",
                     f"start a new run from its last good weights with a lower learning rate: "
                     f"`specc run SPEC --init {run_dir} --out NEW_DIR`")
    return info


def _open_resume(plan: Plan, run_dir: Path, out, epochs: int | None, limit: int | None) -> tuple[Plan, dict, dict, dict]:
    """Check that `run_dir` holds an unfinished run of this very spec; returns the plan as the run started
    it (its folder for relative paths, its `init`), its `run.json`, and its checkpoint's meta and arrays."""
    from specc.train.checkpoint import read_checkpoint

    def refuse(message: str, hint: str | None = None):
        return UsageError(Diagnostic(message, file=str(run_dir), hint=hint))

    info = resumable(run_dir, out)
    meta, arrays = read_checkpoint(run_dir / CHECKPOINT,
                                   hint=f"the run cannot be resumed; start it again with `specc run SPEC --out {run_dir} --force`")
    if meta["epoch"] > info["epochs"]:
        raise DataError(Diagnostic(f"not a readable specc checkpoint: it claims {meta['epoch']} epochs done, but the run "
                                   f"trains {info['epochs']} (run.json)", file=str(run_dir / CHECKPOINT),
                                   hint=f"the run cannot be resumed; start it again with `specc run SPEC --out {run_dir} --force`"))
    here = spec_hash(plan)
    if here != info["spec_sha256"] or here != meta["spec_sha256"]:
        raise refuse(f"{printable(plan.file, lines=False)} differs from the spec this run started with (sha256 {here[:12]} here, "
                     f"{info['spec_sha256'][:12]} in run.json)",
                     f"`specc run --resume {run_dir}` resumes with the run's own spec.model; to train a changed spec, "
                     f"start a new run (`--init {run_dir}` starts it from the checkpoint's weights)")
    for option, given in (("epochs", epochs), ("limit", limit)):
        if given is not None and given != info[option]:
            raise refuse(f"`--{option} {given}` differs from this run's ({info[option]})",
                         f"leave out `--{option}`: a resumed run keeps the settings it started with")
    # Relative paths in the spec (data files, `init`) resolve from where the spec was, not from run_dir.
    update: dict[str, Any] = {}
    if info.get("spec_path") and Path(plan.file).resolve() == (run_dir / "spec.model").resolve():
        update["file"] = info["spec_path"]
    if info.get("init"):
        from specc.core.plan import InitPlan

        update["init"] = (plan.init.model_copy(update={"source": info["init"]}) if plan.init
                          else InitPlan(**{"from": info["init"]}))
    return plan.model_copy(update=update), info, meta, arrays


def _check_labels(plan: Plan, model, data: Dataset) -> None:
    """Class labels must fit the loss (`specc.train.labels`, which `specc eval` uses too)."""
    from specc.train.labels import check_labels

    check_labels(plan, model, data)


def compile_model(plan: Plan, model, weighted: bool = False, examples: int | None = None) -> dict[str, Any]:
    """Compile with the spec's optimizer, loss and metrics (the `train` section). With per-token loss
    weights (masked-token pre-training), the metrics are weighted the same way.

    Before compiling, the model's layers are lowered for the platform (`specc/train/lowering.py`); with
    `examples` (the training set's size), enough steps run per execution to hide Keras's per-call
    overhead (`specc/tools/cost.py`); layers Keras keeps from XLA needlessly on JAX are let in (`enable_jit`). Returns what
    was chosen: {"lowered": [...], "steps_per_execution": n, "jit_allowed": [...]}."""
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
    from specc.train.distribute import local_batch_size
    from specc.train.lowering import choose_steps_per_execution, enable_jit, lower_model, lowering_choice, step_flops

    batch = local_batch_size(train.batch_size)
    lowered = lower_model(model, choice=lowering_choice(None), batch_size=batch)  # the step is traced after this
    jitted = enable_jit(model, lowering_choice(None))
    steps = 1
    if examples:
        per_epoch = math.ceil(examples * (1 - (train.validation_split or 0)) / batch)
        steps = choose_steps_per_execution(step_flops(model, batch), per_epoch)
    model.compile(optimizer=make_object(train.optimizer), loss=loss,
                  metrics=None if weighted else metrics, weighted_metrics=metrics if weighted else None,
                  steps_per_execution=steps)
    return {"lowered": lowered, "steps_per_execution": steps, "jit_allowed": jitted}


def describe_compiled(compiled: dict[str, Any]) -> str:
    """`compile_model`'s choices in words, for the line a run prints before training."""
    from specc.train.lowering import describe_lowering

    parts = [describe_lowering(compiled["lowered"])] if compiled["lowered"] else []
    if compiled.get("jit_allowed"):
        parts.append(f"compiled by XLA although Keras would run {', '.join(compiled['jit_allowed'])} op by op")
    if compiled["steps_per_execution"] > 1:
        parts.append(f"{compiled['steps_per_execution']} steps per execution")
    return "; ".join(parts) + " (see docs/performance.md)"


def apply_init(plan: Plan, model) -> list[str]:
    """Copy weights from the run or `.keras` file `init` names into the layers it names (glob patterns;
    all layers both models have by default), then freeze the `freeze` layers. Returns the layers taken.
    A run without `model.keras` (stopped, or killed) gives the weights of its checkpoint."""
    from fnmatch import fnmatchcase

    init = plan.init
    assert init is not None
    path = plan.path(init.source)
    file = path / "model.keras" if path.is_dir() else path
    if path.is_dir() and not file.is_file() and (path / CHECKPOINT).is_file():
        file = path / CHECKPOINT
    if not file.is_file():
        raise DataError(plan.diag(f"`init` found no saved model at {file}", init.span("from"),
                                  "name a run directory (it holds model.keras or a checkpoint) or a .keras file"))
    try:
        if file.name == CHECKPOINT:
            from specc.train.checkpoint import checkpoint_weights

            theirs = checkpoint_weights(file, hint="name a run whose checkpoint.npz is whole, or its model.keras")
        else:
            from specc.runtime.model_files import load_model

            theirs = {layer.name: layer.get_weights() for layer in load_model(file).layers if layer.weights}
    except Exception as err:  # noqa: BLE001 - a corrupt or foreign file
        why = err.message if isinstance(err, UserError) else str(err).splitlines()[0][:300]  # not a nested diagnostic
        raise DataError(plan.diag(f"`init` cannot load {file}: {why}", init.span("from"),
                                  err.hint if isinstance(err, UserError) else None)) from None
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
            have = [tuple(w.shape) for w in theirs[name]]
            if want != have:
                raise SpecError(plan.diag(
                    f"`init` cannot copy layer `{name}`: its weights have shapes {have} in {file} but {want} here",
                    init.span(f"layers:{name}") or init.span("layers") or init.span("from"),
                    "give the layer the same arguments as in the run it comes from, or leave it out of `layers`"))
            ours[name].set_weights(theirs[name])
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
    from specc.train.distribute import local_batch_size

    return {"batch_size": local_batch_size(train.batch_size),  # each process feeds its share of every batch
            "validation_split": train.validation_split, "shuffle": train.shuffle}


def run_plan(plan: Plan, out: str | Path | None = None, epochs: int | None = None, limit: int | None = None,
             verbose: int | str | None = None, force: bool = False, resume: str | Path | None = None,
             callbacks: list | None = None, claimed: RunDir | None = None) -> RunResult:
    """Train, evaluate and save; with `resume` (a run directory), continue that run from its last checkpoint
    with the settings it started with. `callbacks` (Keras callbacks) run before specc's own.

    The run directory is claimed (locked, and refused if it is not a run's or holds one, `specc.train.rundir`) before
    anything is loaded or trained, and held until the run ends; `claimed`: a claim already made
    (`claim_run_dir`). A full disk or another failed write, and Ctrl-C, say what was kept and how to go on.
    Raises `SpecError`/`DataError`/`UsageError` for user mistakes."""
    if plan.train is None:
        raise SpecError(plan.diag(
            "the spec has no `train` section; `specc run` needs one", None,
            hint="add `train { loss: sparse_categorical_crossentropy; optimizer: adam; epochs: 5 }`"))
    from specc.train.distribute import process_out_dir

    run = claimed if claimed is not None else claim_run_dir(out, plan.file, force, resume)
    try:
        out_dir = run.path if run is not None else process_out_dir(Path(resume or out or "runs"))
        try:
            return _run_plan(plan, run, out_dir, epochs, limit, verbose, resume, callbacks)
        except KeyboardInterrupt:
            kept, action = _how_to_go_on(out_dir, plan, run)
            print(printable(f"specc: interrupted; {kept}" + (f"; {action}" if action else ""), lines=False),
                  file=sys.stderr, flush=True)
            raise
        except OSError as err:  # a full disk, a quota, a read-only or vanished folder
            raise _failed_write(err, out_dir, plan, run) from None
    finally:
        if run is not None:
            run.release()


def _how_to_go_on(out_dir: Path, plan: Plan, run: RunDir | None) -> tuple[str, str]:
    """What a run that stopped left, and what goes on from there (a command, or "" when nothing is left to do)."""
    if (out_dir / "metrics.json").exists():
        return f"the run in {out_dir} is finished", ""
    spec = "SPEC" if plan.file.startswith("<") else plan.file
    if (out_dir / CHECKPOINT).exists():
        return _kept(out_dir), f"continue with `specc run --resume {out_dir}`"
    if run is not None and run.created and out_dir.is_dir() and not any(out_dir.iterdir()):
        return f"nothing was written (the new folder {out_dir} is removed)", f"start again with `specc run {spec}`"
    return _kept(out_dir), f"start again with `specc run {spec} --out {out_dir}` (no epoch was saved)"


def _failed_write(err: OSError, out_dir: Path, plan: Plan, run: RunDir | None) -> DataError:
    """A `DataError` for an `OSError` of a run: the file, why, what was kept, and how to go on once fixed."""
    import errno

    name = err.filename if isinstance(err.filename, str) else None
    why = err.strerror or str(err)
    fix = ("once there is space" if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else
           "once the folder is writable again" if err.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else
           "once that is fixed")
    try:
        inside = name is not None and Path(name).resolve().parent == out_dir.resolve()
    except OSError:
        inside = False
    message = f"could not write {Path(name).name}: {why}" if inside else f"{why}" + (f" ({name})" if name else "")
    kept, action = _how_to_go_on(out_dir, plan, run)
    return DataError(Diagnostic(f"{message}; {kept}", file=name or str(out_dir),
                                hint=f"{fix}, {action}" if action else None))


def _run_plan(plan: Plan, run: RunDir | None, out_dir: Path, epochs: int | None, limit: int | None, verbose,
              resume: str | Path | None, callbacks: list | None) -> RunResult:
    ckpt: dict[str, Any] | None = None
    arrays: dict[str, Any] = {}
    if resume is not None:
        plan, info, ckpt, arrays = _open_resume(plan, Path(resume), None, epochs, limit)
        epochs, limit = info["epochs"], info["limit"]
    try:
        platform = select_device(plan.device)
    except DataError as err:  # blame the `device:` line
        raise DataError(plan.diag(err.message, plan.device_origin.span, err.hint)) from None
    from specc.train.distribute import configure_distribution, describe, eval_batch_size, shard_data

    distribution = configure_distribution(plan)  # the `device` section's `parallel`, before the model is built
    keras = import_keras()
    train = plan.train
    assert train is not None
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
    n_epochs = epochs if epochs is not None else train.epochs
    if ckpt is not None:
        folds = ckpt.get("cross_validation")
    else:
        folds = _cross_validate(plan, data, n_epochs, verbose) if train.validation else None
    if ckpt is None:
        if run is not None:
            run.clear()  # the old run's files (`--force`), only now that the new run is about to write
        files = ["run.json", "spec.model", CHECKPOINT, "history.csv", "model.keras", "curves.png", "metrics.json",
                 *(["tokenizer.json"] if data.vocab is not None else []),
                 *(["classes.json"] if data.classes is not None else [])]
        info = _write_run_info(plan, out_dir, n_epochs, limit, platform, files)  # first: the folder is a run's now
        if plan.source:
            write_atomic(out_dir / "spec.model", plan.source)
        if data.vocab is not None:
            write_atomic(out_dir / "tokenizer.json", data.vocab.to_json())
        if data.classes is not None:
            write_atomic(out_dir / "classes.json", json.dumps(data.classes) + "\n")

    data = shard_data(plan, data, bool(verbose))  # with `parallel`: this process's share, batches split evenly
    examples = count_examples(data.x_train) * (distribution.data_shards if distribution else 1)  # all processes'
    try:
        compiled = compile_model(plan, model, weighted=data.w_train is not None,
                                 examples=count_examples(data.x_train))
    except (ValueError, TypeError) as err:
        raise SpecError(plan.diag(
            f"Keras cannot compile the model with these training settings: {str(err).splitlines()[0][:400]}",
            train.span("loss"))) from None
    from specc.train.checkpoint import EpochCheckpoint, FiniteLoss, write_history

    from specc.train.diagnose import EpochStart

    guard, start = FiniteLoss(), EpochStart()  # `start`: what replaying a failing epoch needs (specc/train/diagnose.py)
    stopper = make_object(train.early_stopping) if train.early_stopping is not None else None
    resumed_at = (ckpt.get("resumed_at", []) + [ckpt["epoch"]]) if ckpt else []
    saver = EpochCheckpoint(out_dir / CHECKPOINT, out_dir / "history.csv",
                            {"spec_sha256": info["spec_sha256"], "cross_validation": folds, "resumed_at": resumed_at},
                            guard, state=(ckpt, arrays) if ckpt else None, early_stopping=stopper)
    from specc.runtime.keras_env import startup_probe  # benchmarks/startup.py: when the first step runs; none otherwise

    # the saver last: it records early stopping's verdict
    callbacks = [*startup_probe(), *(callbacks or []), start, guard, *([stopper] if stopper else []), saver]
    done = saver.done
    if ckpt is not None:
        remove_partial_files(out_dir, RUN_FILES)  # a proven run's (`_open_resume` read its run.json)
        write_history(out_dir / "history.csv", saver.history)  # history.csv may lag the checkpoint by one epoch
    if verbose and taken:
        print(printable(f"init: {len(taken)} layers from {plan.init.source}: {', '.join(taken)}"  # type: ignore[union-attr]
                        + (f"; frozen: {', '.join(plan.init.freeze)}" if plan.init.freeze else ""), lines=False),  # type: ignore[union-attr]
              flush=True)
    if verbose:
        test = "the training data" if data.test_is_train else f"{count_examples(data.x_test):,} test examples"
        what = f"resuming `{plan.name}` after epoch {done} of {n_epochs}" if ckpt else f"training `{plan.name}`"
        print(f"{what} ({model.count_params():,} params) on {examples:,} examples "
              f"for {n_epochs} epoch{'s' if n_epochs != 1 else ''} of batch {train.batch_size} on {describe(platform)}; "
              f"evaluating on {test}; writing {printable(str(out_dir), lines=False)}", flush=True)
        if compiled["lowered"] or compiled["steps_per_execution"] > 1:
            print(f"compiled for {platform}: {describe_compiled(compiled)}", flush=True)
    try:
        model.fit(data.x_train, data.y_train, sample_weight=data.w_train, callbacks=callbacks, verbose=verbose,
                  epochs=done if ckpt and ckpt.get("stopped") else n_epochs, initial_epoch=done, **fit_options(plan))
    except (ValueError, TypeError) as err:
        if saver.new_epochs:  # it ran whole epochs before failing: not a mismatch of shapes
            raise
        raise DataError(plan.diag(
            f"training failed in its first steps: {str(err).splitlines()[0][:400]}",
            train.span("loss"),
            hint=f"check that the loss fits the model's outputs {[tuple(o.shape) for o in model.outputs]} and the "
            f"targets {_shapes(data.y_train)}; {_kept(out_dir)}")) from None
    except Exception as err:  # noqa: BLE001 - XLA running out of memory is the user's to fix (specc/train/diagnose.py)
        from specc.train.diagnose import describe_oom, is_out_of_memory

        if not is_out_of_memory(err):
            raise
        raise describe_oom(plan, model, err, fit_options(plan)["batch_size"], "training", _kept(out_dir)) from None
    seconds = saver.seconds()
    history = saver.history
    if guard.bad is not None:
        epoch, step, loss = guard.bad
        steps = math.ceil(int(examples * (1 - train.validation_split)) / train.batch_size)
        spe = compiled["steps_per_execution"]  # Keras reports the last step of each execution
        where = f"epoch {epoch + 1}" + ("" if step is None else f", step {step + 1} of {steps}" if spe == 1 else
                                        f", steps {max(step + 2 - spe, 1)}-{step + 1} of {steps}")
        restart = (f"; `specc run SPEC --init {out_dir}` starts a new run from the weights after epoch {saver.saved}"
                   if saver.saved else "")
        # Resuming would diverge again (the same run): run.json says so, for `--resume` and `--out` to refuse it.
        info = {**info, "diverged": {"epoch": epoch + 1, "step": None if step is None else step + 1, "loss": str(loss)}}
        write_atomic(out_dir / "run.json", json.dumps(info, indent=2) + "\n")
        from specc.train.diagnose import trace_failure

        verdict, cause = trace_failure(plan, model, start, data, epoch, steps if step is None else step)
        found = verdict is not None and verdict.located  # where the first non-finite value came from
        raise DataError(plan.diag(
            f"training stopped: the loss became {loss} in {where}{f': {cause}' if found else ''}; {_kept(out_dir)}",
            verdict.span if found else train.span("optimizer"), notes=[*(verdict.notes if found else []), *(
                [] if found else [cause])],
            hint=f"{verdict.hint if verdict else 'lower the learning rate, or check the data for NaN or huge values'}{restart}"))
    try:
        test = model.evaluate(data.x_test, data.y_test, sample_weight=data.w_test, batch_size=eval_batch_size(train.batch_size),
                              verbose=0, return_dict=True)
    except (ValueError, TypeError) as err:
        raise DataError(plan.diag(
            f"evaluation on the test split failed: {str(err).splitlines()[0][:400]}; {_kept(out_dir)}", None,
            hint=f"check that the test targets {_shapes(data.y_test)} fit the model's outputs")) from None
    except Exception as err:  # noqa: BLE001 - as in training
        from specc.train.diagnose import describe_oom, is_out_of_memory

        if not is_out_of_memory(err):
            raise
        raise describe_oom(plan, model, err, eval_batch_size(train.batch_size), "evaluation", _kept(out_dir)) from None
    write_atomic_with(out_dir / "model.keras", model.save, suffix=".keras")
    _plot_curves(out_dir / "curves.png", history, plan.name)
    metrics = {
        "spec": plan.file,
        "spec_sha256": info["spec_sha256"],
        "model": plan.name,
        "test": {k: float(v) for k, v in test.items()},
        "test_on": "train" if data.test_is_train else "test",
        "train": {k: v[-1] for k, v in history.items() if not k.startswith("val_")},
        "validation": {k[4:]: v[-1] for k, v in history.items() if k.startswith("val_")},
        "params": int(model.count_params()),
        "epochs": len(history.get("loss", [])),
        "seconds": round(seconds, 3),
        "epoch_seconds": [round(t, 3) for t in saver.times],
        "examples": examples,
        "batch_size": train.batch_size,
        "seed": train.seed,
        "device": platform,
        "devices": info["devices"],
        "compiled": compiled,
        "versions": _versions(),
    }
    if resumed_at:
        metrics["resumed_after_epochs"] = resumed_at
    if folds is not None:
        metrics["cross_validation"] = folds
    if distribution is not None:
        metrics["distribution"] = distribution.as_json()
    if taken:
        metrics["init"] = {"from": plan.init.source, "layers": taken, "frozen": plan.init.freeze}  # type: ignore[union-attr]
    if data.vocab is not None:
        metrics["vocabulary"] = {"kind": data.vocab.kind, "size": data.vocab.size}
    write_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    (out_dir / CHECKPOINT).unlink(missing_ok=True)  # a finished run needs no checkpoint
    return RunResult(out=out_dir, metrics=metrics, history=history, model=model)


def _write_run_info(plan: Plan, out_dir: Path, epochs: int, limit: int | None, platform: str,
                    files: list[str]) -> dict[str, Any]:
    """`run.json`, written when a run starts: the spec (path and hash), the settings a resume must keep
    (epochs, limit, init), the seed, what it runs on (versions, devices), and the files the run writes
    (`--force` removes those, and only those; `specc.train.rundir`)."""
    import jax

    info = {"spec": plan.file, "spec_path": None if plan.file.startswith("<") else str(Path(plan.file).resolve()),
            "spec_sha256": spec_hash(plan), "model": plan.name, "seed": plan.train.seed if plan.train else None,
            "epochs": epochs, "limit": limit, "init": str(plan.path(plan.init.source).resolve()) if plan.init else None,
            "device": platform, "devices": [f"{d.platform}:{d.id} {d.device_kind}" for d in jax.devices()],
            "versions": _versions(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": files}
    write_atomic(out_dir / "run.json", json.dumps(info, indent=2) + "\n")
    return info


def _kept(out_dir: Path) -> str:
    """What a stopped run left, for its error message: `kept in DIR: spec.model, ...`."""
    files = [f for f in ("spec.model", "run.json", CHECKPOINT, "history.csv", "model.keras", "curves.png")
             if (out_dir / f).exists()]
    if CHECKPOINT in files:
        try:
            done = f"after epoch {_checkpoint_meta(out_dir / CHECKPOINT)['epoch']}"
        except UserError:
            done = "unreadable"
        files[files.index(CHECKPOINT)] = f"{CHECKPOINT} ({done})"
    saved = "" if "model.keras" in files else " (no model was saved)"
    return f"kept in {out_dir}: {', '.join(files) or 'nothing'}{saved}"


def _plot_curves(path: Path, history: dict[str, list[float]], title: str) -> None:
    try:
        from specc.train.curves import plot_curves
    except ImportError as err:  # matplotlib is a dependency, but a missing plot must not lose a trained run
        print(f"specc: no training curves ({err})", file=sys.stderr)
        return
    plot_curves(history, path, title)


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


def _versions() -> dict[str, str]:
    import jax

    keras = import_keras()
    return {"specc": __version__, "keras": keras.__version__, "jax": jax.__version__,
            "python": sys.version.split()[0], "numpy": np.__version__}
