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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from specc.core.version import __version__
from specc.core.artifacts import remove_partial_files, write_atomic, write_atomic_with
from specc.train.rundir import (CHECKPOINT, RUN_FILES, RunDir, claim_out, claim_resume, diverged as _diverged, read_run_info,  # noqa: F401 - RUN_FILES re-exported
                     saved_model, special_run_file)
from specc.compile.build import build_model, make_object
from specc.data.prepare import Dataset, count_examples, load_dataset, prepare, take
from specc.core.errors import (DataError, DeviceError, Diagnostic, DivergedError, SpecError, UsageError, UserError,
                               did_you_mean, printable)
from specc.runtime.keras_env import import_keras, startup_probe
from specc.compile.catalog import catalog
from specc.core.plan import Plan
from specc.train.distribute import (configure_distribution, describe, eval_batch_size, is_primary, local_batch_size,
    process_out_dir, shard_data)
from specc.train.lowering import (choose_steps_per_execution, describe_lowering, enable_jit, lower_model,
    lowering_choice, step_flops)

def select_device(device: str) -> str:
    """Make the requested platform JAX's default device; returns the platform it runs on."""
    import jax

    if device != "auto":
        try:
            found = jax.devices(device)
        except Exception as err:  # noqa: BLE001 - JAX says why the platform is unavailable
            why = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise DeviceError(Diagnostic(
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
    taken = copy_init_weights(plan, model)
    for name in frozen_layers(plan, [layer.name for layer in model.layers]):
        model.get_layer(name).trainable = False
    return taken


def copy_init_weights(plan: Plan, model) -> list[str]:
    """`init`'s copy of weights alone (`apply_init` without freezing; the script `emit --train` writes freezes
    in plain Keras). Returns the layers taken."""
    init = plan.init
    assert init is not None
    file = _init_file(plan, init)
    return _copy_layers(plan, init, model, file, _init_weights(plan, init, file))


def _init_file(plan: Plan, init) -> Path:
    """The file `init.from` names: a `.keras` file, or a run directory's `model.keras` (its checkpoint when the
    run stopped before saving one)."""
    file = saved_model(plan.path(init.source), checkpoint=True)
    if not file.is_file():
        raise DataError(plan.diag(f"`init` found no saved model at {file}", init.span("from"),
                                  "name a run directory (it holds model.keras or a checkpoint) or a .keras file"))
    return file


def _init_weights(plan: Plan, init, file: Path) -> dict[str, list]:
    """{layer name: its weights} of the model in `file`, for the layers that have weights."""
    try:
        if file.name == CHECKPOINT:
            from specc.train.checkpoint import checkpoint_weights

            return checkpoint_weights(file, hint="name a run whose checkpoint.npz is whole, or its model.keras")
        from specc.runtime.model_files import load_model

        return {layer.name: layer.get_weights() for layer in load_model(file).layers if layer.weights}
    except Exception as err:  # noqa: BLE001 - a corrupt or foreign file
        why = err.message if isinstance(err, UserError) else str(err).splitlines()[0][:300]  # not a nested diagnostic
        raise DataError(plan.diag(f"`init` cannot load {file}: {why}", init.span("from"),
                                  err.hint if isinstance(err, UserError) else None)) from None


def _copy_layers(plan: Plan, init, model, file: Path, theirs: dict[str, list]) -> list[str]:
    """Set the weights of the layers `init.layers` names (every layer both have by default) from `theirs`;
    returns their names. A pattern that matches no layer with weights, or weights of other shapes: SpecError."""
    from fnmatch import fnmatchcase

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
            if name in theirs:
                _check_init_shapes(plan, init, file, name, ours[name], theirs[name])
                ours[name].set_weights(theirs[name])
                taken.append(name)
    return list(dict.fromkeys(taken))


def _check_init_shapes(plan: Plan, init, file: Path, name: str, layer, weights: list) -> None:
    want = [tuple(w.shape) for w in layer.weights]
    have = [tuple(w.shape) for w in weights]
    if want != have:
        raise SpecError(plan.diag(
            f"`init` cannot copy layer `{name}`: its weights have shapes {have} in {file} but {want} here",
            init.span(f"layers:{name}") or init.span("layers") or init.span("from"),
            "give the layer the same arguments as in the run it comes from, or leave it out of `layers`"))


def frozen_layers(plan: Plan, names: list[str]) -> list[str]:
    """The layers among `names` (the model's, in order) that `init.freeze` names by glob patterns; a pattern that
    matches none is a SpecError at its line. Known from the plan alone: `emit --train` writes them out."""
    from fnmatch import fnmatchcase

    init = plan.init
    if init is None:
        return []
    frozen: list[str] = []
    for pattern in init.freeze:
        found = [name for name in names if fnmatchcase(name, pattern)]
        if not found:
            raise SpecError(plan.diag(f"`freeze` names layer `{pattern}`, but the model has no such layer",
                                      init.span(f"freeze:{pattern}") or init.span("freeze"),
                                      did_you_mean(pattern, names)))
        frozen += found
    return list(dict.fromkeys(frozen))


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

    return {"batch_size": local_batch_size(train.batch_size),  # each process feeds its share of every batch
            "validation_split": train.validation_split, "shuffle": train.shuffle}


def run_plan(plan: Plan, out: str | Path | None = None, epochs: int | None = None, limit: int | None = None,
             verbose: int | str | None = None, force: bool = False, resume: str | Path | None = None,
             callbacks: list | None = None, claimed: RunDir | None = None, say_kept: bool = True) -> RunResult:
    """Train, evaluate and save; with `resume` (a run directory), continue that run from its last checkpoint
    with the settings it started with. `callbacks` (Keras callbacks) run before specc's own.

    The run directory is claimed (locked, and refused if it is not a run's or holds one, `specc.train.rundir`) before
    anything is loaded or trained, and held until the run ends; `claimed`: a claim already made
    (`claim_run_dir`). A full disk or another failed write, and Ctrl-C, say what was kept and how to go on (Ctrl-C:
    unless `say_kept` is false, for a caller that says it in its own terms: `specc tune`'s trials).
    Raises `SpecError`/`DataError`/`UsageError` for user mistakes, a `TrainingError` (`DeviceError`,
    `DivergedError`, `OutOfMemoryError`) for a run that failed."""
    if plan.train is None:
        raise SpecError(plan.diag(
            "the spec has no `train` section; `specc run` needs one", None,
            hint="add `train { loss: sparse_categorical_crossentropy; optimizer: adam; epochs: 5 }`"))

    run = claimed if claimed is not None else claim_run_dir(out, plan.file, force, resume)
    try:
        out_dir = run.path if run is not None else process_out_dir(Path(resume or out or "runs"))
        with _saying_what_was_kept(out_dir, plan, run, say_kept):
            return _run_plan(plan, run, out_dir, epochs, limit, verbose, resume, callbacks)
    finally:
        if run is not None:
            run.release()


@contextmanager
def _saying_what_was_kept(out_dir: Path, plan: Plan, run: RunDir | None, say: bool = True):
    """Ctrl-C and failed writes (a full disk, a quota, a read-only or vanished folder) end a run with what it
    kept and how to go on: a line on stderr before the KeyboardInterrupt goes on, a `DataError` for an OSError."""
    try:
        yield
    except KeyboardInterrupt:
        if say:
            kept, action = _how_to_go_on(out_dir, plan, run)
            print(printable(f"specc: interrupted; {kept}" + (f"; {action}" if action else ""), lines=False),
                  file=sys.stderr, flush=True)
        raise
    except OSError as err:
        raise _failed_write(err, out_dir, plan, run) from None


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
    try:  # the file, when it is one of the run's own
        own = Path(name) if name is not None and Path(name).resolve().parent == out_dir.resolve() else None
    except OSError:
        own = None
    message = f"could not write {own.name}: {why}" if own is not None else f"{why}" + (f" ({name})" if name else "")
    kept, action = _how_to_go_on(out_dir, plan, run)
    return DataError(Diagnostic(f"{message}; {kept}", file=name or str(out_dir),
                                hint=f"{fix}, {action}" if action else None))


# --- the phases of a run ------------------------------------------------------------------------------------
#
# `_run_plan` calls them in order; each reads what the phases before it set on the `_Run` and sets its own part.


@dataclass
class _Run:
    """One run as its phases build it up: what it was given, then what each phase found or made."""

    plan: Plan
    claim: RunDir | None
    out_dir: Path
    epochs: int | None  # `--epochs` (a resumed run's own)
    limit: int | None  # `--limit` (a resumed run's own)
    verbose: int | str  # Keras's: 1 (a progress bar) on a terminal, 2 (a line per epoch) otherwise
    user_callbacks: list
    ckpt: dict[str, Any] | None = None  # resume: the checkpoint's meta
    arrays: dict[str, Any] = field(default_factory=dict)  # resume: the checkpoint's arrays
    info: dict[str, Any] = field(default_factory=dict)  # run.json
    platform: str = ""  # device: JAX's platform
    distribution: Any = None  # device: the `parallel` layout (`specc.train.distribute.Active`), or None
    # data: the prepared splits; typed as set, since only the phases before `data` see the None.
    data: Dataset = field(default=None, repr=False)  # type: ignore[assignment]
    model: Any = field(default=None, repr=False)  # build
    taken: list[str] = field(default_factory=list)  # init: the layers whose weights were copied
    folds: dict[str, Any] | None = None  # k-fold cross-validation's scores
    examples: int = 0  # compile: the training examples of every process together
    compiled: dict[str, Any] = field(default_factory=dict)  # compile: `compile_model`'s choices
    guard: Any = None  # fit: `FiniteLoss`, which stops at the first non-finite loss
    start: Any = None  # fit: `EpochStart`, what replaying a failing epoch needs (specc/train/diagnose.py)
    saver: Any = None  # fit: `EpochCheckpoint`, the checkpoint and history.csv after every epoch
    callbacks: list = field(default_factory=list)  # fit: every Keras callback, the user's first
    seconds: float = 0.0  # fit: the time it took
    resumed_at: list[int] = field(default_factory=list)  # the epochs after which this run was resumed
    test: dict[str, Any] = field(default_factory=dict)  # evaluate: the test metrics

    @property
    def train(self):
        assert self.plan.train is not None
        return self.plan.train

    @property
    def n_epochs(self) -> int:
        return self.epochs if self.epochs is not None else self.train.epochs


def _run_plan(plan: Plan, run: RunDir | None, out_dir: Path, epochs: int | None, limit: int | None, verbose,
              resume: str | Path | None, callbacks: list | None) -> RunResult:
    """The phases of a run, in order; their failures are told in the user's terms by the context managers."""
    s = _Run(plan, run, out_dir, epochs, limit, verbose if verbose is not None else 1 if sys.stdout.isatty() else 2,
             callbacks or [])
    if resume is not None:
        _reopen_checkpoint(s, Path(resume))
    _select_devices(s)
    _load_data(s)
    _build_model(s)
    if s.plan.init:
        s.taken = apply_init(s.plan, s.model)  # after adapt: weights taken from a run win
    _cross_validate_folds(s)
    if s.ckpt is None:
        _start_run_files(s)
    _shard_and_compile(s)
    _make_callbacks(s)
    _announce(s)
    with _fit_failures(s):
        _fit(s)
    _stop_if_diverged(s)
    with _evaluation_failures(s):
        _evaluate(s)
    return _write_results(s)


def _reopen_checkpoint(s: _Run, run_dir: Path) -> None:
    """resume: the plan, settings and checkpoint of the interrupted run in `run_dir`."""
    s.plan, s.info, s.ckpt, s.arrays = _open_resume(s.plan, run_dir, None, s.epochs, s.limit)
    s.epochs, s.limit = s.info["epochs"], s.info["limit"]


def _select_devices(s: _Run) -> None:
    """device: the platform the spec's `device` asks for (a failure blamed on the `device:` line), and the
    `device` section's `parallel`, before the model is built."""
    try:
        s.platform = select_device(s.plan.device)
    except DeviceError as err:  # blame the `device:` line
        raise DeviceError(s.plan.diag(err.message, s.plan.device_origin.span, err.hint)) from None
    s.distribution = configure_distribution(s.plan)


def _load_data(s: _Run) -> None:
    """data: the seed set, then the spec's data read and prepared (`--limit` examples at most)."""
    if s.train.seed is not None:
        import_keras().utils.set_random_seed(s.train.seed)
    s.data = prepare(s.plan, load_dataset(s.plan), s.limit)


def _build_model(s: _Run) -> None:
    """build: the model, checked against the data's labels and ids, its preprocessing layers adapted."""
    s.model = build_model(s.plan)
    _check_labels(s.plan, s.model, s.data)
    _check_ids(s.plan, s.data)
    adapt_layers(s.plan, s.model, s.data.x_train)


def _cross_validate_folds(s: _Run) -> None:
    """k-fold cross-validation (`validation: K`) before the final model trains; a resumed run's were saved."""
    if s.ckpt is not None:
        s.folds = s.ckpt.get("cross_validation")
    elif s.train.validation:
        s.folds = _cross_validate(s.plan, s.data, s.n_epochs, s.verbose)


def _start_run_files(s: _Run) -> None:
    """write: a new run's first files; run.json first, so that the folder is a run's from now on."""
    if s.claim is not None:
        s.claim.clear()  # the old run's files (`--force`), only now that the new run is about to write
    data = s.data
    files = ["run.json", "spec.model", CHECKPOINT, "history.csv", "model.keras", "curves.png", "metrics.json",
             *(["tokenizer.json"] if data.vocab is not None else []),
             *(["classes.json"] if data.classes is not None else [])]
    s.info = _write_run_info(s.plan, s.out_dir, s.n_epochs, s.limit, s.platform, files)
    if s.plan.source:
        write_atomic(s.out_dir / "spec.model", s.plan.source)
    if data.vocab is not None:
        write_atomic(s.out_dir / "tokenizer.json", data.vocab.to_json())
    if data.classes is not None:
        write_atomic(s.out_dir / "classes.json", json.dumps(data.classes) + "\n")


def _shard_and_compile(s: _Run) -> None:
    """compile: this process's share of the data (with `parallel`), then the model compiled for it; settings
    Keras refuses are blamed on the `loss:` line."""
    s.data = shard_data(s.plan, s.data, bool(s.verbose))  # with `parallel`: batches split evenly
    local = count_examples(s.data.x_train)
    s.examples = local * (s.distribution.data_shards if s.distribution else 1)  # all processes'
    try:
        s.compiled = compile_model(s.plan, s.model, weighted=s.data.w_train is not None, examples=local)
    except (ValueError, TypeError) as err:
        raise SpecError(s.plan.diag(
            f"Keras cannot compile the model with these training settings: {str(err).splitlines()[0][:400]}",
            s.train.span("loss"))) from None


def _make_callbacks(s: _Run) -> None:
    """fit: the callbacks, the user's first and the saver last (it records early stopping's verdict); a resumed
    run's history.csv caught up with its checkpoint and the partial files of its killed writes removed."""
    from specc.train.checkpoint import EpochCheckpoint, FiniteLoss, write_history
    from specc.train.diagnose import EpochStart

    ckpt, train = s.ckpt, s.train
    s.guard, s.start = FiniteLoss(), EpochStart()
    stopper = make_object(train.early_stopping) if train.early_stopping is not None else None
    s.resumed_at = (ckpt.get("resumed_at", []) + [ckpt["epoch"]]) if ckpt else []
    s.saver = EpochCheckpoint(s.out_dir / CHECKPOINT, s.out_dir / "history.csv",
                              {"spec_sha256": s.info["spec_sha256"], "cross_validation": s.folds,
                               "resumed_at": s.resumed_at},
                              s.guard, state=(ckpt, s.arrays) if ckpt else None, early_stopping=stopper)
    s.callbacks = [*startup_probe(), *s.user_callbacks, s.start, s.guard, *([stopper] if stopper else []), s.saver]
    if ckpt is not None:
        remove_partial_files(s.out_dir, RUN_FILES)  # a proven run's (`_open_resume` read its run.json)
        write_history(s.out_dir / "history.csv", s.saver.history)  # history.csv may lag the checkpoint by one epoch


def _announce(s: _Run) -> None:
    """The lines a run prints before its first epoch: the layers `init` took, what trains on what, how it compiled."""
    if not s.verbose:
        return
    plan, data, init = s.plan, s.data, s.plan.init
    if s.taken and init is not None:
        print(printable(f"init: {len(s.taken)} layers from {init.source}: {', '.join(s.taken)}"
                        + (f"; frozen: {', '.join(init.freeze)}" if init.freeze else ""), lines=False), flush=True)
    test = "the training data" if data.test_is_train else f"{count_examples(data.x_test):,} test examples"
    what = (f"resuming `{plan.name}` after epoch {s.saver.done} of {s.n_epochs}" if s.ckpt
            else f"training `{plan.name}`")
    print(f"{what} ({s.model.count_params():,} params) on {s.examples:,} examples "
          f"for {s.n_epochs} epoch{'s' if s.n_epochs != 1 else ''} of batch {s.train.batch_size} on "
          f"{describe(s.platform)}; evaluating on {test}; writing {printable(str(s.out_dir), lines=False)}", flush=True)
    if s.compiled["lowered"] or s.compiled["steps_per_execution"] > 1:
        print(f"compiled for {s.platform}: {describe_compiled(s.compiled)}", flush=True)


def _fit(s: _Run) -> None:
    """fit: the epochs left (none past a resumed run's early stop), from the epoch the checkpoint reached."""
    done = s.saver.done
    s.model.fit(s.data.x_train, s.data.y_train, sample_weight=s.data.w_train, callbacks=s.callbacks,
                verbose=s.verbose, epochs=done if s.ckpt and s.ckpt.get("stopped") else s.n_epochs,
                initial_epoch=done, **fit_options(s.plan))
    s.seconds = s.saver.seconds()  # training time: not evaluating or saving


@contextmanager
def _fit_failures(s: _Run):
    """Training's failures in the user's terms: Keras refusing the targets in the first steps, XLA out of memory."""
    try:
        yield
    except (ValueError, TypeError) as err:
        if s.saver.new_epochs:  # it ran whole epochs before failing: not a mismatch of shapes
            raise
        raise DataError(s.plan.diag(
            f"training failed in its first steps: {str(err).splitlines()[0][:400]}",
            s.train.span("loss"),
            hint=f"check that the loss fits the model's outputs {[tuple(o.shape) for o in s.model.outputs]} and the "
            f"targets {_shapes(s.data.y_train)}; {_kept(s.out_dir)}")) from None
    except Exception as err:  # noqa: BLE001 - XLA running out of memory is the user's to fix (specc/train/diagnose.py)
        _raise_if_out_of_memory(s, err, fit_options(s.plan)["batch_size"], "training")
        raise


def _raise_if_out_of_memory(s: _Run, err: Exception, batch_size: int, during: str) -> None:
    from specc.train.diagnose import describe_oom, is_out_of_memory

    if is_out_of_memory(err):
        raise describe_oom(s.plan, s.model, err, batch_size, during, _kept(s.out_dir)) from None


def _stop_if_diverged(s: _Run) -> None:
    """fit: a loss that became NaN or infinite ends the run, located where the first non-finite value came from
    (`specc.train.diagnose`); run.json records it, so that `--resume` refuses to diverge again."""
    if s.guard.bad is None:
        return
    from specc.train.diagnose import trace_failure

    plan, train, saver, out_dir = s.plan, s.train, s.saver, s.out_dir
    epoch, step, loss = s.guard.bad
    steps = math.ceil(int(s.examples * (1 - train.validation_split)) / train.batch_size)
    spe = s.compiled["steps_per_execution"]  # Keras reports the last step of each execution
    where = f"epoch {epoch + 1}" + ("" if step is None else f", step {step + 1} of {steps}" if spe == 1 else
                                    f", steps {max(step + 2 - spe, 1)}-{step + 1} of {steps}")
    restart = (f"; `specc run SPEC --init {out_dir}` starts a new run from the weights after epoch {saver.saved}"
               if saver.saved else "")
    s.info = {**s.info, "diverged": {"epoch": epoch + 1, "step": None if step is None else step + 1, "loss": str(loss)}}
    write_atomic(out_dir / "run.json", json.dumps(s.info, indent=2) + "\n")
    verdict, cause = trace_failure(plan, s.model, s.start, s.data, epoch, steps if step is None else step)
    found = verdict if verdict is not None and verdict.located else None  # where the first non-finite value came from
    raise DivergedError(plan.diag(
        f"training stopped: the loss became {loss} in {where}{f': {cause}' if found else ''}; {_kept(out_dir)}",
        found.span if found else train.span("optimizer"), notes=[*(found.notes if found else []), *(
            [] if found else [cause])],
        hint=f"{verdict.hint if verdict else 'lower the learning rate, or check the data for NaN or huge values'}{restart}"))


def _evaluate(s: _Run) -> None:
    """evaluate: the spec's loss and metrics on the test split (the training data when it has none)."""
    s.test = s.model.evaluate(s.data.x_test, s.data.y_test, sample_weight=s.data.w_test,
                              batch_size=eval_batch_size(s.train.batch_size), verbose=0, return_dict=True)


@contextmanager
def _evaluation_failures(s: _Run):
    """Evaluation's failures in the user's terms: test targets that do not fit, XLA out of memory."""
    try:
        yield
    except (ValueError, TypeError) as err:
        raise DataError(s.plan.diag(
            f"evaluation on the test split failed: {str(err).splitlines()[0][:400]}; {_kept(s.out_dir)}", None,
            hint=f"check that the test targets {_shapes(s.data.y_test)} fit the model's outputs")) from None
    except Exception as err:  # noqa: BLE001 - as in training
        _raise_if_out_of_memory(s, err, eval_batch_size(s.train.batch_size), "evaluation")
        raise


def _write_results(s: _Run) -> RunResult:
    """write: model.keras, curves.png, then metrics.json last (a directory with it is a finished run), and the
    checkpoint removed."""
    write_atomic_with(s.out_dir / "model.keras", s.model.save, suffix=".keras")
    history = s.saver.history
    _plot_curves(s.out_dir / "curves.png", history, s.plan.name)
    metrics = _metrics(s, history)
    write_atomic(s.out_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    (s.out_dir / CHECKPOINT).unlink(missing_ok=True)  # a finished run needs no checkpoint
    return RunResult(out=s.out_dir, metrics=metrics, history=history, model=s.model)


def _metrics(s: _Run, history: dict[str, list[float]]) -> dict[str, Any]:
    """metrics.json: the test, last training and validation metrics, and what the run ran with."""
    plan, data, train = s.plan, s.data, s.train
    metrics = {
        "spec": plan.file,
        "spec_sha256": s.info["spec_sha256"],
        "model": plan.name,
        "test": {k: float(v) for k, v in s.test.items()},
        "test_on": "train" if data.test_is_train else "test",
        "train": {k: v[-1] for k, v in history.items() if not k.startswith("val_")},
        "validation": {k[4:]: v[-1] for k, v in history.items() if k.startswith("val_")},
        "params": int(s.model.count_params()),
        "epochs": len(history.get("loss", [])),
        "seconds": round(s.seconds, 3),
        "epoch_seconds": [round(t, 3) for t in s.saver.times],
        "examples": s.examples,
        "batch_size": train.batch_size,
        "seed": train.seed,
        "device": s.platform,
        "devices": s.info["devices"],
        "compiled": s.compiled,
        "versions": _versions(),
    }
    if s.resumed_at:
        metrics["resumed_after_epochs"] = s.resumed_at
    if s.folds is not None:
        metrics["cross_validation"] = s.folds
    if s.distribution is not None:
        metrics["distribution"] = s.distribution.as_json()
    if s.taken and plan.init is not None:
        metrics["init"] = {"from": plan.init.source, "layers": s.taken, "frozen": plan.init.freeze}
    if data.vocab is not None:
        metrics["vocabulary"] = {"kind": data.vocab.kind, "size": data.vocab.size}
    return metrics


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
