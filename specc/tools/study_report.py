"""What a finished (or interrupted) study leaves for a person: the table of trials, the winner as a spec and as a
model, and Optuna's own plots.

    trials.csv          one row per trial: number, state, objective, each space's value, seconds, epochs, where it
                        was pruned, its run directory (relative to the study directory when inside it) and the
                        machine that ran it, why it failed
    best.model          the spec with every space replaced by the best trial's values; everything else as written
    best.keras          the best trial's trained model (when that trial ran on this machine)
    history.png         the objective of every trial and the best so far (`plot_optimization_history`)
    importances.png     how much each space mattered (`plot_param_importances`, fANOVA)
    slice.png           the objective against each space's values (`plot_slice`)
    parallel.png        every trial across every space (`plot_parallel_coordinate`)

Every file is written atomically; a plot Optuna cannot draw yet (importances need two finished trials) is skipped
and said in `study.json`.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specc.compile.space import substitute
from specc.core.artifacts import write_atomic, write_atomic_with

if TYPE_CHECKING:
    from specc.core.plan import Plan
    from specc.tools.tune import Settings

@dataclass
class TuneResult:
    """What a study found: its folder, the best trial's values (as spec text) and objective, `best.model`'s text."""

    study_dir: Path
    study: str
    objective: str
    direction: str
    best_values: dict[str, str] = field(default_factory=dict)
    best_value: float | None = None
    best_trial: int | None = None
    best_spec: str | None = None
    trials: list[dict[str, Any]] = field(default_factory=list)  # the rows of trials.csv


PLOTS = {
    "history.png": "plot_optimization_history",
    "importances.png": "plot_param_importances",
    "slice.png": "plot_slice",
    "parallel.png": "plot_parallel_coordinate",
}


def write_report(study, study_dir: Path, plan: Plan, s: Settings) -> TuneResult:
    """trials.csv, best.model, best.keras and the plots of `study`, into `study_dir`; what it found."""
    trials = study.get_trials(deepcopy=False)
    rows = [_row(t, plan, study_dir.resolve()) for t in trials]
    write_atomic(study_dir / "trials.csv", _csv(rows, plan))
    result = TuneResult(study_dir, s.study, s.objective, s.direction, trials=rows)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    if complete:
        best = study.best_trial
        point = {d.name: best.params[d.name] for d in plan.space}
        result.best_values = {d.name: d.text_of(point[d.name]) for d in plan.space}
        result.best_value, result.best_trial = best.value, best.number
        result.best_spec = substitute(plan.source, plan.space, point)
        write_atomic(study_dir / "best.model", result.best_spec)
        model = Path(best.user_attrs.get("run_dir", "")) / "model.keras"
        if model.is_file():
            write_atomic_with(study_dir / "best.keras", lambda tmp: _copy(model, tmp), suffix=".keras")
    skipped = _plots(study, study_dir, len(complete))
    info_file = study_dir / "study.json"
    info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.exists() else {}
    info.update({"finished_trials": sum(r["state"] != "RUNNING" for r in rows), "best_trial": result.best_trial,
                 "best_value": result.best_value, "best_values": result.best_values, "plots_skipped": skipped})
    write_atomic(info_file, json.dumps(info, indent=2) + "\n")
    return result


def _copy(source: Path, to: str) -> None:
    shutil.copyfile(source, to)


def _save(figure, path: Path) -> None:
    write_atomic(path, lambda f: figure.savefig(f, format="png", dpi=100))


def _row(t, plan: Plan, home: Path) -> dict[str, Any]:
    seconds = (t.datetime_complete - t.datetime_start).total_seconds() if t.datetime_complete and t.datetime_start \
        else None
    values = t.user_attrs.get("values") or {d.name: d.text_of(t.params[d.name]) for d in plan.space
                                            if d.name in t.params}
    return {"number": t.number, "state": t.state.name, "objective": t.value,
            **{column(k): v for k, v in values.items()},
            "seconds": round(seconds, 1) if seconds is not None else None, "epochs": t.user_attrs.get("epochs"),
            "pruned_at": t.user_attrs.get("pruned_at"), "run_dir": _where(t.user_attrs.get("run_dir"), home),
            "host": t.user_attrs.get("host"),
            "error": (t.user_attrs.get("error") or "").splitlines()[0] if t.user_attrs.get("error") else None}


def _where(run_dir: str | None, home: Path) -> str | None:
    """A trial's run directory: relative to the study directory when it is inside it (the folder can move), else
    as the worker that ran it wrote it (another study directory, another machine: `host` says which)."""
    if not run_dir:
        return None
    path = Path(run_dir)
    return path.relative_to(home).as_posix() if path.is_relative_to(home) else run_dir


FIXED_COLUMNS = ["number", "state", "objective", "seconds", "epochs", "pruned_at", "run_dir", "host", "error"]


def column(name: str) -> str:
    """A space's column in trials.csv: its name, or `space NAME` where that is one of the table's own columns
    (`let number = choice(...)`, `epochs: choice(...)`)."""
    return f"space {name}" if name in FIXED_COLUMNS else name


def _csv(rows: list[dict[str, Any]], plan: Plan) -> str:
    spaces = [column(d.name) for d in plan.space]
    columns = [*FIXED_COLUMNS[:3], *spaces, *FIXED_COLUMNS[3:]]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(row.get(k)) for k in columns})
    return out.getvalue()


def _cell(v: Any) -> Any:
    """A value as a spreadsheet shows it safely: text a spreadsheet would run as a formula is quoted."""
    if isinstance(v, str) and v[:1] in ("=", "+", "-", "@") and not _is_number(v):
        return "'" + v
    return "" if v is None else v


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _plots(study, study_dir: Path, complete: int) -> dict[str, str]:
    """Optuna's matplotlib plots of the study; those it cannot draw, with why."""
    if complete == 0:
        return {name: "no trial finished" for name in PLOTS}
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # a notebook's backend is left alone
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    skipped: dict[str, str] = {}
    for name, function in PLOTS.items():
        if name == "importances.png" and complete < 2:
            skipped[name] = "parameter importances need two finished trials"
            continue
        with warnings.catch_warnings():  # matplotlib's notes on a space with one value tried: not the user's
            warnings.simplefilter("ignore")
            try:
                drawn = getattr(plots, function)(study)
            except (ValueError, RuntimeError, ZeroDivisionError) as err:
                skipped[name] = str(err).splitlines()[0][:200]
                continue
            figure = drawn.ravel()[0].figure if hasattr(drawn, "ravel") else drawn.figure
            figure.set_size_inches(max(6.4, figure.get_size_inches()[0]), 4.8)
            figure.tight_layout()
        _save(figure, study_dir / name)
        plt.close(figure)
    return skipped
