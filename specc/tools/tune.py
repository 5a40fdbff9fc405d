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

import json
import math
import os
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specc.compile.check import compile_text
from specc.compile.section_tune import default_objective, direction_of
from specc.compile.space import grid, substitute
from specc.core.artifacts import write_atomic
from specc.core.errors import (DataError, Diagnostic, SpecError, TrainingError, UsageError, printable)
from specc.core.plan import Dimension, Plan, TunePlan
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
    sampler that can search every space."""
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
    given = {k: v for k, v in overrides.items() if v is not None}
    stem = Path(plan.file).stem if not plan.file.startswith("<") else "spec"
    s = Settings(trials=tune.trials, timeout=tune.timeout, objective=tune.objective, direction=tune.direction,
                 sampler=tune.sampler, pruner=tune.pruner, workers=tune.workers, storage=tune.storage,
                 study=tune.study or stem, seed=tune.seed)
    for key, value in given.items():
        setattr(s, key, value)
    if s.sampler == "grid":
        ranges = [d for d in plan.space if d.kind != "choice" and not grid(d)]
        if ranges:
            raise SpecError(plan.diag(
                f"the grid sampler tries every value, and `{ranges[0].name}` is a range of numbers "
                f"(`{ranges[0].kind}`)", tune.span("sampler") or ranges[0].span,
                "write it as a `choice(...)` of the values to try, or use `sampler: tpe`"))
    return s


def tune(plan: Plan, out: str | Path | None = None, verbose: int = 1, heartbeat: float = HEARTBEAT,
         worker: bool = False, limit: int | None = None, **overrides: Any) -> TuneResult:
    """Run (or continue) the study of `plan`'s spaces; return what it found. `overrides`: `trials`, `timeout`,
    `workers`, `storage`, `study`, `sampler`, `pruner`, `seed` replacing the `tune` section's. `worker`: one of
    the processes `workers: N` starts (it runs trials and leaves the report to the process that started it).
    `limit`: every trial trains on the first `limit` examples only (a quick study, as `specc run --limit`)."""
    import optuna

    s = settings_of(plan, **overrides)
    study_dir = Path(out) if out is not None else Path("runs") / f"{safe_name(s.study)}-study"
    url = _open_study_dir(study_dir, plan, s, worker)
    study = _load_study(plan, s, url, heartbeat, seed_offset=os.getpid() % 1000 if worker else 0)
    started = time.monotonic()
    helpers = [] if worker else _start_workers(plan, s, study_dir, url, heartbeat, verbose, limit)
    progress = _Progress(s, study, started, verbose)
    try:
        remaining = s.trials - _finished(study)
        if remaining > 0:
            study.optimize(_objective(plan, s, study_dir, progress, limit), timeout=s.timeout,
                           n_trials=None if helpers or worker else remaining,
                           callbacks=[optuna.study.MaxTrialsCallback(s.trials, states=_FINISHED)],
                           catch=(_TrialFailed,), gc_after_trial=True)
        elif verbose and not worker:
            print(f"the study `{printable(s.study, lines=False)}` already has {s.trials} finished trials; "
                  "raise `trials` (or pass --trials) to run more", flush=True)
    except KeyboardInterrupt:
        _stop(helpers)
        if not worker:
            write_report(study, study_dir, plan, s)
            print(printable(f"specc: tuning interrupted; {_finished(study)} finished trials are kept in "
                            f"{study_dir}; continue with `specc tune {plan.file}`"
                            + (f" --out {study_dir}" if out is not None else ""), lines=False),
                  file=sys.stderr, flush=True)
        raise
    _wait(helpers)
    if worker:
        return TuneResult(study_dir, s.study, s.objective, s.direction)
    return write_report(study, study_dir, plan, s)


_FINISHED: tuple = ()  # set on first use: Optuna's finished trial states (importing Optuna is deferred)


class _TrialFailed(Exception):
    """A trial failed for a reason specc can tell (its values break the spec, NaN, out of memory): recorded on the
    trial (`error`), and the study goes on."""


def _finished(study) -> int:
    return len(study.get_trials(deepcopy=False, states=_FINISHED))


# --- the study directory and the storage ----------------------------------------------------------------------


def _open_study_dir(study_dir: Path, plan: Plan, s: Settings, worker: bool) -> str:
    """The study directory, made or reopened (a folder that holds something else is refused: nothing the user
    wrote is touched), and the storage URL: `storage`, else SQLite inside it."""
    info_file = study_dir / "study.json"
    if study_dir.exists() and not worker:
        if not study_dir.is_dir():
            raise UsageError(Diagnostic(f"{study_dir} is a file, not a study directory", file=str(study_dir),
                                        hint="choose another --out"))
        if not info_file.exists() and any(study_dir.iterdir()):
            raise UsageError(Diagnostic(
                f"{study_dir} holds files that are not a study's; nothing was written", file=str(study_dir),
                hint="choose an empty or new folder with --out"))
    url = os.environ.get(STORAGE_ENV) if worker else None
    url = url or s.storage or f"sqlite:///{(study_dir / 'study.db').resolve()}"
    if info_file.exists():
        known = json.loads(info_file.read_text(encoding="utf-8"))
        if known.get("study") != s.study or known.get("space") != _space_json(plan.space):
            raise UsageError(Diagnostic(
                f"{study_dir} holds the study `{known.get('study')}` of other spaces "
                f"({', '.join(d['name'] for d in known.get('space', []))}); nothing was written",
                file=str(info_file), hint="tune this spec into another folder with --out, or name another study"))
    elif not worker:
        study_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(info_file, json.dumps({
            "spec": plan.file, "study": s.study, "storage": redact(url), "objective": s.objective,
            "direction": s.direction, "sampler": s.sampler, "pruner": s.pruner, "trials": s.trials,
            "space": _space_json(plan.space)}, indent=2) + "\n")
        write_atomic(study_dir / "spec.model", plan.source)
    return url


def _space_json(dims: list[Dimension]) -> list[dict[str, Any]]:
    return [{"name": d.name, "kind": d.kind, **({"choices": d.texts} if d.kind == "choice" else
                                                 {"low": d.low, "high": d.high, "step": d.step})} for d in dims]


def redact(url: str) -> str:
    """A storage URL as it may be written or shown: without its password."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: said when the storage is opened
        return url.split("@")[-1] if "@" in url else url


def _load_study(plan: Plan, s: Settings, url: str, heartbeat: float, seed_offset: int):
    """The study in its storage, made on first use; a storage that cannot be opened is a `UsageError`."""
    import optuna
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    global _FINISHED
    _FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
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
                   limit: int | None) -> list[subprocess.Popen]:
    """`workers: N`: N - 1 more processes running trials of the same study (this one is the N-th)."""
    if s.workers <= 1:
        return []
    command = [sys.executable, "-m", "specc", "tune", plan.file, "--worker", "--out", str(study_dir),
               "--study", s.study, "--trials", str(s.trials), "--heartbeat", str(heartbeat),
               *(["--timeout", str(s.timeout)] if s.timeout is not None else []), *([] if verbose else ["--quiet"]),
               *(["--limit", str(limit)] if limit else [])]
    env = {**os.environ, STORAGE_ENV: url}
    return [subprocess.Popen(command, env=env) for _ in range(s.workers - 1)]


def _wait(helpers: list[subprocess.Popen]) -> None:
    for p in helpers:
        p.wait()


def _stop(helpers: list[subprocess.Popen]) -> None:
    for p in helpers:
        if p.poll() is None:
            p.terminate()
    for p in helpers:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()


# --- the space, for `specc summary` ---------------------------------------------------------------------------


def describe_space(plan: Plan) -> dict[str, Any]:
    """The spec's spaces (name, kind, as written, default) and its parameter count at the default point and with
    every number at its smallest and at its largest (`specc summary`)."""
    from specc.compile.build import summarize
    from specc.compile.check import plan_at
    from specc.compile.space import corner, text_of_number

    params = {label: summarize(plan_at(plan, corner(plan.space, largest)))[1]
              for label, largest in (("smallest", False), ("largest", True))}
    return {"space": [{"name": d.name, "kind": d.kind, "written": d.written,
                       "default": d.text_of(d.default) if d.kind == "choice" else text_of_number(d.default)}
                      for d in plan.space],
            "params": {"default": summarize(plan)[1], **params}}


def format_space(described: dict[str, Any]) -> str:
    rows = [("space", "values", "default")] + [(d["name"], d["written"], d["default"]) for d in described["space"]]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"search space: {len(described['space'])} values for `specc tune` (the table above is at the defaults)"]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    p = described["params"]
    lines.append(f"params: {p['default']:,} at the defaults; {p['smallest']:,} with every number at its smallest, "
                 f"{p['largest']:,} at its largest")
    return printable("\n".join(lines))
