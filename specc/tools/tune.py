"""`specc tune`: search a spec's spaces on Optuna, every trial a real run, from one process to many machines.

The spec says what to search (`choice`, `uniform`, `loguniform`, `intrange` where values stand:
`specc.compile.space`) and how (`tune { trials, timeout, objective, direction, sampler, pruner, workers, storage,
study, seed }`: `specc.compile.section_tune`). Optuna does the searching: its samplers (TPE, random, grid, CMA-ES),
its pruners (median, Hyperband) fed the objective after every epoch, and its storage (RDB: SQLite in the study
directory by default, any database SQLAlchemy reaches, PostgreSQL for many machines) that hands each worker
trial numbers no other worker gets.

A study directory holds:

    study.json       what is searched, how, and where the study is stored (a password never written)
    study.db         the SQLite storage, unless `storage` names another
    trials/NNNN/     each trial's run directory: spec.model with its values, metrics.json, history.csv, curves.png,
                     model.keras (`specc.train.runner`)
    trials.csv, best.model, best.keras, *.png         written at the end (`specc.tools.study_report`)

Faults: a worker killed in a trial stops beating its heartbeat; another worker (or the next `specc tune`) marks
that trial failed and runs its values once more (`RetryHeartbeatStaleTrialCallback`). A trial whose values break the spec,
whose loss becomes NaN or which runs out of memory is failed with specc's reason (`trials.csv`, `error`), and the
study goes on. Ctrl-C fails the trial in progress, writes the report of the finished ones and says how to continue:
running `specc tune` again continues the same study.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specc.compile.check import compile_text
from specc.compile.section_tune import default_objective, direction_of, storage_mistake, study_name_ok
from specc.compile.space import grid, substitute, template
from specc.core.artifacts import write_atomic
from specc.core.errors import DataError, Diagnostic, SpecError, TrainingError, UsageError, UserError, printable
from specc.core.plan import PRUNERS, SAMPLERS, Dimension, Plan, TunePlan
from specc.runtime.keras_env import import_keras
from specc.train.rundir import safe_name
from specc.tools.study_report import TuneResult, write_report
from specc.train.runner import run_plan

HEARTBEAT = 10.0  # seconds between a running trial's heartbeats; it is failed after twice that without one
STORAGE_ENV = "SPECC_TUNE_STORAGE"  # how a worker started by `workers: N` gets the storage URL (never on argv)


@dataclass
class Settings:
    """The study's settings: the spec's `tune` section (or its defaults), then the command line's overrides."""

    trials: int
    timeout: float | None
    objective: str
    direction: str
    sampler: str
    pruner: str
    workers: int
    storage: str | None
    study: str
    seed: int | None


def settings_of(plan: Plan, **overrides: Any) -> Settings:
    """The study's settings, checked against the spec: spaces to search, validation data for the objective, a
    sampler that can search every space; `overrides` (the command line's, the Python API's) checked as the section's
    settings are."""
    if not plan.space:
        raise SpecError(plan.diag(
            "nothing to tune: the spec holds no search space", None,
            "write a space where a value stands: `dense(choice(64, 128, 256))`, `dropout(uniform(0.0, 0.5))`, "
            "`adam(loguniform(1e-4, 1e-2))`, `intrange(32, 256, step=32)` (docs/tuning.md)"))
    if plan.train is None:
        raise SpecError(plan.diag("the spec has no `train` section; `specc tune` trains a model per trial", None,
                                  "add `train { loss: ...; validation_split: 0.1 }`"))
    objective = default_objective(plan.train, plan.outputs)
    tune = plan.tune or TunePlan(objective=objective, direction=direction_of(objective, plan.train, plan.outputs))
    train = plan.train
    if plan.tune is None and not (train.validation_split or train.validation):
        raise SpecError(plan.diag(
            f"`specc tune` needs validation data to compare trials by (`{tune.objective}`), and the spec has none",
            train.span("loss"), "add `validation_split: 0.1` (or `validation: kfold(5)`) to `train`"))
    stem = Path(plan.file).stem if not plan.file.startswith("<") else "spec"
    s = Settings(trials=tune.trials, timeout=tune.timeout, objective=tune.objective, direction=tune.direction,
                 sampler=tune.sampler, pruner=tune.pruner, workers=tune.workers, storage=tune.storage,
                 study=tune.study or (stem if study_name_ok(stem) else "spec"), seed=tune.seed)
    for key, value in overrides.items():
        if value is not None:
            _check_override(key, value)
            setattr(s, key, value)
    if s.sampler == "grid":
        ranges = [d for d in plan.space if d.kind != "choice" and not grid(d)]
        if ranges:
            raise SpecError(plan.diag(
                f"the grid sampler tries every value, and `{ranges[0].name}` is a range of numbers "
                f"(`{ranges[0].kind}`)", tune.span("sampler") or ranges[0].span,
                "write it as a `choice(...)` of the values to try, or use `sampler: tpe`"))
    if s.workers > 1 and plan.file.startswith("<"):
        raise UsageError(Diagnostic("several workers run the spec from its file, and this spec has none",
                                    file=plan.file, hint="save it and load it with `specc.load(path)`"))
    return s


def _check_override(key: str, value: Any) -> None:
    """A setting given on the command line or to `CompiledSpec.tune`, checked as the `tune` section's."""
    problem, hint = None, None
    if key not in Settings.__dataclass_fields__:
        problem = f"`{key}` is not a setting of a study: " + ", ".join(Settings.__dataclass_fields__)
    elif key in ("trials", "workers") and (not isinstance(value, int) or value < 1):
        problem = f"`{key}` is a whole number >= 1, got {value!r}"
    elif key == "timeout" and (not isinstance(value, (int, float)) or not value > 0):
        problem = f"`timeout` is a number of seconds > 0, got {value!r}"
    elif key in ("sampler", "pruner", "direction"):
        allowed = {"sampler": SAMPLERS, "pruner": PRUNERS, "direction": ("maximize", "minimize")}[key]
        if value not in allowed:
            problem = f"`{key}` is one of {', '.join(allowed)}, got {value!r}"
    elif key == "study" and not study_name_ok(value):
        problem = f"a study's name is letters, digits, `_`, `-` and `.`, got {value!r}"
    elif key == "storage":
        mistake = storage_mistake(value) if isinstance(value, str) else ("the storage is a URL", None)
        problem, hint = mistake if mistake else (None, None)
    if problem:
        raise UsageError(Diagnostic(printable(problem, lines=False), file="specc tune", hint=hint))


def tune(plan: Plan, out: str | Path | None = None, verbose: int = 1, heartbeat: float = HEARTBEAT,
         worker: bool = False, limit: int | None = None, **overrides: Any) -> TuneResult:
    """Run (or continue) the study of `plan`'s spaces; return what it found. `overrides`: `trials`, `timeout`,
    `workers`, `storage`, `study`, `sampler`, `pruner`, `seed` replacing the `tune` section's. `worker`: one of
    the processes `workers: N` starts (it runs trials and leaves the report to the process that started it).
    `limit`: every trial trains on the first `limit` examples only (a quick study, as `specc run --limit`)."""
    s = settings_of(plan, **overrides)
    study_dir = Path(out) if out is not None else Path("runs") / f"{safe_name(s.study)}-study"
    identity = _identity(plan, s)
    made = _check_study_dir(study_dir, identity, worker)
    url = (os.environ.get(STORAGE_ENV) if worker else None) or s.storage or \
        f"sqlite:///{(study_dir / 'study.db').resolve()}"
    try:
        _check_storage_is_the_study_dir_s(study_dir, url, s.storage is None)
        study = _load_study(plan, s, url, heartbeat, seed_offset=os.getpid() % 1000 if worker else 0)
        _claim(study, identity, url)
    except UserError:
        if made:  # nothing of ours is left behind: the folder, and the empty SQLite file a failed open makes
            (study_dir / "study.db").unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                study_dir.rmdir()
        raise
    if not worker and not (study_dir / "study.json").exists():
        _write_study_info(study_dir, plan, s, url, identity)
    helpers = [] if worker else _start_workers(plan, s, study_dir, url, heartbeat, verbose, limit, overrides)
    try:
        _optimize(study, plan, s, study_dir, _Progress(s, study, time.monotonic(), verbose), limit, worker)
    except KeyboardInterrupt:
        _stop(helpers)
        if not worker:
            write_report(study, study_dir, plan, s)
            again = f"specc tune {plan.file}" + ("" if out is None else f" --out {study_dir}")
            print(printable(f"specc: the study's {_finished(study, kept=True)} finished trials are kept in "
                            f"{study_dir}; continue with `{again}`", lines=False), file=sys.stderr, flush=True)
        raise
    except UserError:
        _stop(helpers)
        if not worker:
            write_report(study, study_dir, plan, s)
        raise
    _wait(helpers)
    if worker:
        return TuneResult(study_dir, s.study, s.objective, s.direction)
    return write_report(study, study_dir, plan, s)


def _optimize(study, plan: Plan, s: Settings, study_dir: Path, progress: _Progress, limit: int | None,
              worker: bool) -> None:
    """Trials until the study has `trials` finished ones (every worker's), or the time budget is spent."""
    if _finished(study) >= s.trials:
        if not worker:
            progress.say(f"the study `{s.study}` already has {s.trials} finished trials; raise `trials` (or pass "
                         "--trials) to run more")
        return

    def enough(study, _trial) -> None:
        if _finished(study) >= s.trials:
            study.stop()

    study.optimize(_objective(plan, s, study_dir, progress, limit), timeout=s.timeout, callbacks=[enough],
                   catch=(_TrialFailed,), gc_after_trial=True)


class _TrialFailed(Exception):
    """A trial failed for a reason specc can tell (its values break the spec, NaN, out of memory): recorded on the
    trial (`error`), and the study goes on."""


def _finished(study, kept: bool = False) -> int:
    """The trials that count towards `trials`: complete, pruned, and failed for a reason specc told (`error`); not
    one interrupted or killed (its values run again, or the next trial takes its place). `kept`: complete and
    pruned only."""
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return sum(1 for t in study.get_trials(deepcopy=False, states=states)
               if t.state != TrialState.FAIL or (not kept and "error" in t.user_attrs))


# --- the study directory and the storage ----------------------------------------------------------------------


def _identity(plan: Plan, s: Settings) -> dict[str, Any]:
    """What makes trials of one study comparable: its name, its spaces, and the spec around them (its text with
    every space blanked: another `epochs` is another study)."""
    blanked = template(plan.source, plan.space)
    return {"study": s.study, "space": _space_json(plan.space), "objective": s.objective,
            "spec_sha256": hashlib.sha256(blanked.encode("utf-8")).hexdigest()}


def _check_study_dir(study_dir: Path, identity: dict[str, Any], worker: bool) -> bool:
    """Refuse a folder that is not this study's (a file, another's files, another study, a changed spec): nothing
    the user wrote is touched. Returns whether the folder was made now."""
    info_file = study_dir / "study.json"
    if study_dir.exists() and not study_dir.is_dir():
        raise UsageError(Diagnostic(f"{study_dir} is a file, not a study directory", file=str(study_dir),
                                    hint="choose another --out"))
    if info_file.exists() or info_file.is_symlink():
        known = _read_info(info_file)
        for key, what in (("study", "the study"), ("space", "spaces"), ("objective", "objective"),
                          ("spec_sha256", "spec")):
            if known.get(key) != identity[key]:
                raise UsageError(Diagnostic(
                    f"{study_dir} holds the study `{known.get('study')}` of another {what}"
                    + (" (the spec changed besides its spaces)" if key == "spec_sha256" else "")
                    + "; nothing was written", file=str(info_file),
                    hint="tune this spec into another folder with --out, or name another study"))
        return False
    if study_dir.is_dir() and any(study_dir.iterdir()) and not worker:
        raise UsageError(Diagnostic(f"{study_dir} holds files that are not a study's; nothing was written",
                                    file=str(study_dir), hint="choose an empty or new folder with --out"))
    made = not study_dir.exists()
    study_dir.mkdir(parents=True, exist_ok=True)
    return made


def _read_info(info_file: Path) -> dict[str, Any]:
    """study.json, read as every file specc reads (bounded, checked); a `DataError` naming it when it is not one."""
    from specc.core.files import read_json

    known = read_json(info_file, "study description (study.json)")
    if not isinstance(known, dict):
        raise DataError(Diagnostic("study.json does not hold a study's description", file=str(info_file),
                                   hint="tune into another folder with --out"))
    return known


def _check_storage_is_the_study_dir_s(study_dir: Path, url: str, default: bool) -> None:
    """A study directory keeps the storage its study began in: another one would start another study in it."""
    info_file = study_dir / "study.json"
    if not info_file.exists():
        return
    known = _read_info(info_file).get("storage")
    if known is not None and known != redact(url) and not (default and known.startswith("sqlite:///")
                                                           and known.endswith("/study.db")):
        raise UsageError(Diagnostic(
            f"{study_dir}'s study is kept in {known}, and this run names {redact(url)}", file=str(info_file),
            hint="pass `--storage` with the study's own URL, or tune into another folder with --out"))


def _claim(study, identity: dict[str, Any], url: str) -> None:
    """Mark the study in its storage as this spec's, or refuse one another spec made (workers on other machines
    share only the storage)."""
    theirs = study.user_attrs.get("specc")
    if theirs is None:
        study.set_user_attr("specc", identity)
    elif theirs != identity:
        differs = [k for k in identity if theirs.get(k) != identity[k]]
        raise UsageError(Diagnostic(
            f"the study `{identity['study']}` in {redact(url)} was made by another spec (its {', '.join(differs)} "
            "differ); nothing was run", file="specc tune", hint="name another study (`study:` or --study)"))


def _write_study_info(study_dir: Path, plan: Plan, s: Settings, url: str, identity: dict[str, Any]) -> None:
    write_atomic(study_dir / "study.json", json.dumps({
        **identity, "spec": plan.file, "storage": redact(url), "direction": s.direction, "sampler": s.sampler,
        "pruner": s.pruner, "trials": s.trials}, indent=2) + "\n")
    write_atomic(study_dir / "spec.model", plan.source)


def _space_json(dims: list[Dimension]) -> list[dict[str, Any]]:
    return [{"name": d.name, "kind": d.kind, **({"choices": d.texts} if d.kind == "choice" else
                                                 {"low": d.low, "high": d.high, "step": d.step})} for d in dims]


def redact(url: str) -> str:
    """A storage URL as it may be written or shown: its password (everything between the user's `:` and the last
    `@` before the host, however many `@` it holds) replaced by `***`."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@]*):[^/]*@", r"\1:***@", url)


def _load_study(plan: Plan, s: Settings, url: str, heartbeat: float, seed_offset: int):
    """The study in its storage, made on first use; a storage that cannot be opened is a `UsageError`."""
    import optuna
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # specc prints its own line per trial
    warnings.filterwarnings("ignore", category=ExperimentalWarning)
    url = _with_driver(url)
    try:
        storage = RDBStorage(url, heartbeat_interval=max(1, int(round(heartbeat))),
                             grace_period=max(2, int(round(2 * heartbeat))),
                             heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=1),
                             engine_kwargs={"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None)
        return optuna.create_study(study_name=s.study, storage=storage, load_if_exists=True,
                                   direction="maximize" if s.direction == "maximize" else "minimize", sampler=_sampler(plan, s, seed_offset),
                                   pruner=_pruner(plan, s))
    except ValueError as err:  # a study of that name going the other way
        raise UsageError(Diagnostic(f"the study `{s.study}` in {redact(url)}: {err}", file=plan.file,
                                    hint="name another study (`study:` in `tune`, or --study)")) from None
    except Exception as err:  # noqa: BLE001 - SQLAlchemy's many errors for a URL, a driver or a server
        raise UsageError(Diagnostic(
            f"cannot open the study's storage {redact(url)}: {str(err).splitlines()[0][:300]}", file=plan.file,
            hint="check the URL, that the database server is running, and its driver (PostgreSQL: "
                 "`pip install \"specc[postgres]\"`)")) from None


def _with_driver(url: str) -> str:
    """`postgresql://...` with the PostgreSQL driver that is installed: SQLAlchemy 2.1 reads a bare
    `postgresql://` as psycopg 3, and `specc[postgres]` installs psycopg2."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return url


def _sampler(plan: Plan, s: Settings, offset: int):
    import optuna

    seed = None if s.seed is None else s.seed + offset
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if s.sampler == "grid":
        space = {d.name: d.choices if d.kind == "choice" else grid(d) for d in plan.space}
        return optuna.samplers.GridSampler(space, seed=seed)
    if s.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(plan: Plan, s: Settings):
    import optuna

    if s.pruner == "none":
        return optuna.pruners.NopPruner()
    if s.pruner == "hyperband":
        assert plan.train is not None
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, plan.train.epochs),
                                              reduction_factor=3)
    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)


# --- one trial ------------------------------------------------------------------------------------------------


def suggest(trial, d: Dimension) -> Any:
    """The trial's value of one space, from Optuna's sampler."""
    if d.kind == "choice":
        return trial.suggest_categorical(d.name, d.choices)
    assert d.low is not None and d.high is not None
    if d.kind == "intrange":
        return trial.suggest_int(d.name, int(d.low), int(d.high), step=d.step or 1)
    return trial.suggest_float(d.name, float(d.low), float(d.high), log=d.kind == "loguniform")


def _objective(plan: Plan, s: Settings, study_dir: Path, progress: _Progress, limit: int | None):
    """Optuna's objective: the spec at the trial's values, trained into trials/NNNN, its objective returned."""
    import optuna

    def objective(trial) -> float:
        began = time.monotonic()
        point = {d.name: suggest(trial, d) for d in plan.space}
        shown = {d.name: d.text_of(point[d.name]) for d in plan.space}
        trial.set_user_attr("values", shown)
        run_dir = study_dir / "trials" / f"{trial.number:04d}"
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        trial.set_user_attr("host", socket.gethostname())
        progress.start(trial.number, shown)
        try:
            value, epochs, pruned_at = _train_trial(plan, s, point, run_dir, trial, limit)
        except (SpecError, TrainingError) as err:
            reason = err.render()
            trial.set_user_attr("error", reason)
            progress.failed(trial.number, reason, time.monotonic() - began)
            raise _TrialFailed(reason) from None
        except DataError as err:  # the data fails every trial alike: the study stops, with the reason kept
            trial.set_user_attr("error", err.render())
            raise
        trial.set_user_attr("epochs", epochs)
        if pruned_at is not None:
            trial.set_user_attr("pruned_at", pruned_at)
            progress.pruned(trial.number, pruned_at, time.monotonic() - began)
            raise optuna.TrialPruned(f"pruned after epoch {pruned_at}")
        progress.done(trial.number, value, time.monotonic() - began)
        return value

    return objective


def _train_trial(plan: Plan, s: Settings, point: dict[str, Any], run_dir: Path, trial,
                 limit: int | None) -> tuple[float, int, int | None]:
    """The trial's run: its spec text (the values substituted), checked, trained with the pruning callback."""
    keras = import_keras()
    keras.backend.clear_session()  # the previous trial's graphs and names
    text = substitute(plan.source, plan.space, point)
    trial_plan = compile_text(text, plan.file)  # the spec's own path: data paths are relative to its folder
    pruning = _pruning_callback(trial, s.objective)
    result = run_plan(trial_plan, out=run_dir, limit=limit, verbose=0, callbacks=[pruning])
    value = objective_value(result.metrics, s.objective)
    if value is None:
        logged = sorted(["val_" + k for k in result.metrics.get("validation", {})])
        raise DataError(plan.diag(f"the runs log no `{s.objective}`; they log: {', '.join(logged) or 'nothing'}",
                                  plan.tune.span("objective") if plan.tune else None,
                                  "name one of those as `objective` in `tune`"))
    if not math.isfinite(value):
        raise TrainingError(plan.diag(f"the objective `{s.objective}` is {value}", None))
    return value, int(result.metrics.get("epochs", 0)), pruning.pruned_at


def objective_value(metrics: dict[str, Any], objective: str) -> float | None:
    """A finished run's objective: the k-fold mean when it cross-validated, else the last epoch's validation value."""
    name = objective[4:] if objective.startswith("val_") else objective
    folds = metrics.get("cross_validation")
    if folds and name in folds:
        return float(folds[name]["mean"])
    value = metrics.get("validation", {}).get(name)
    return None if value is None else float(value)


def _pruning_callback(trial, monitor: str):
    """A Keras callback reporting the objective after every epoch to Optuna, stopping the fit when it says prune
    (the run still ends as a run: evaluated and saved, so a pruned trial's folder is whole)."""
    keras: Any = import_keras()  # Any: mypy takes a base class only from a value it knows nothing about

    class Pruning(keras.callbacks.Callback):
        pruned_at: int | None = None

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(monitor)
            if value is None or not math.isfinite(float(value)):
                return
            trial.report(float(value), epoch)
            if trial.should_prune():
                self.pruned_at = epoch + 1
                self.model.stop_training = True

    return Pruning()


# --- progress -------------------------------------------------------------------------------------------------


class _Progress:
    """One line per trial: its number, values, objective, the best so far, and the time left."""

    def __init__(self, s: Settings, study, started: float, verbose: int):
        self.s, self.study, self.started, self.verbose = s, study, started, verbose
        self.seconds: list[float] = []

    def say(self, text: str) -> None:
        if self.verbose:
            print(printable(text, lines=False), flush=True)

    def start(self, number: int, shown: dict[str, str]) -> None:
        self.say(f"trial {number}: " + ", ".join(f"{k}={v}" for k, v in shown.items()))

    def done(self, number: int, value: float, seconds: float) -> None:
        self.seconds.append(seconds)
        best = self._best(number, value)
        self.say(f"trial {number}: {self.s.objective} {value:.4g} in {seconds:.0f} s; {best}; {self._left()}")

    def pruned(self, number: int, epoch: int, seconds: float) -> None:
        self.seconds.append(seconds)
        self.say(f"trial {number}: pruned after epoch {epoch} in {seconds:.0f} s; {self._left()}")

    def failed(self, number: int, reason: str, seconds: float) -> None:
        self.seconds.append(seconds)
        first = reason.splitlines()[0] if reason else "failed"
        self.say(f"trial {number}: failed in {seconds:.0f} s: {first}; the study goes on")

    def _best(self, number: int, value: float) -> str:
        try:
            best = self.study.best_trial
        except ValueError:  # none complete before this one
            return "best so far"
        better = value > best.value if self.s.direction == "maximize" else value < best.value
        return "best so far" if better or best.number == number else f"best {best.value:.4g} (trial {best.number})"

    def _left(self) -> str:
        done = _finished(self.study) + 1
        left = max(0, self.s.trials - done)
        elapsed = time.monotonic() - self.started
        estimate = (sum(self.seconds) / len(self.seconds)) * left / max(1, self.s.workers) if self.seconds else 0
        if self.s.timeout is not None:
            estimate = min(estimate, max(0.0, self.s.timeout - elapsed))
        return f"{left} trial{'' if left == 1 else 's'} left, about {_duration(estimate)}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# --- workers --------------------------------------------------------------------------------------------------


def _start_workers(plan: Plan, s: Settings, study_dir: Path, url: str, heartbeat: float, verbose: int,
                   limit: int | None, overrides: dict[str, Any]) -> list[subprocess.Popen]:
    """`workers: N`: N - 1 more processes running trials of the same study (this one is the N-th), with this one's
    settings. They run in a session of their own: Ctrl-C reaches this process, which passes it on (`_stop`)."""
    if s.workers <= 1:
        return []
    given = {k: v for k, v in overrides.items() if v is not None and k in ("sampler", "pruner", "seed")}
    command = [sys.executable, "-m", "specc", "tune", plan.file, "--worker", "--out", str(study_dir),
               "--study", s.study, "--trials", str(s.trials), "--heartbeat", str(heartbeat),
               *(["--timeout", str(s.timeout)] if s.timeout is not None else []), *([] if verbose else ["--quiet"]),
               *(["--limit", str(limit)] if limit else []),
               *(a for k, v in given.items() for a in (f"--{k}", str(v)))]
    env = {**os.environ, STORAGE_ENV: url}
    return [subprocess.Popen(command, env=env, start_new_session=True) for _ in range(s.workers - 1)]


def _wait(helpers: list[subprocess.Popen]) -> None:
    for p in helpers:
        p.wait()


def _stop(helpers: list[subprocess.Popen]) -> None:
    """Ctrl-C passed on to the workers: each fails its trial in progress and ends; one that does not within 30 s is
    killed (its trial is then failed by its heartbeat)."""
    for p in helpers:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p in helpers:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# --- the space, for `specc summary` ---------------------------------------------------------------------------


def describe_space(plan: Plan, params: int | None = None) -> dict[str, Any]:
    """The spec's spaces (name, kind, as written, default) and its parameter count at the default point and with
    every number at its smallest and at its largest (`specc summary`; `params`: the default point's count, when the
    caller has it already)."""
    from specc.compile.build import summarize
    from specc.compile.check import plan_at
    from specc.compile.space import corner, text_of_number

    corners = {label: summarize(plan_at(plan, corner(plan.space, largest)))[1]
              for label, largest in (("smallest", False), ("largest", True))}
    return {"space": [{"name": d.name, "kind": d.kind, "written": " ".join(d.written.split()),
                       "default": d.text_of(d.default) if d.kind == "choice" else text_of_number(d.default)}
                      for d in plan.space],
            "params": {"default": summarize(plan)[1] if params is None else params, **corners}}


def format_space(described: dict[str, Any]) -> str:
    rows = [("space", "values", "default")] + [(d["name"], d["written"], d["default"]) for d in described["space"]]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    count = len(described["space"])
    lines = [f"search space: {count} value{'' if count == 1 else 's'} for `specc tune` (the table above is at the "
             "defaults)"]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    p = described["params"]
    lines.append(f"params: {p['default']:,} at the defaults; {p['smallest']:,} with every number at its smallest, "
                 f"{p['largest']:,} at its largest")
    return printable("\n".join(lines))
