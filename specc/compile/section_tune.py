"""The `tune` section's validator: how `specc tune` searches hyperparameters, checked into a `TunePlan`.

The objective is a value a run logs on its validation data, by the name Keras gives it in history.csv (and, with
`validation: kfold(k)`, in metrics.json's `cross_validation`, without `val_`): `val_loss`, or `val_` and a metric's
name. Keras names a metric written as a string by that string (`acc`, `mae`); a configured one by its `name=`, else
by its class's default (`rmse` is a `RootMeanSquaredError`: `root_mean_squared_error`); a second metric of the same
name with `_1`, `_2`, ...; and, with several outputs, each loss and metric after its output (`a_loss`,
`a_accuracy`). A configured metric whose class has no default name (`precision(thresholds=0.3)`, `auc(...)`) gets a
number from how many of its class the process made before it (`precision_1`), which no study can predict: `name=`
fixes it. `logged_values`, `default_objective` and `direction_of` are public: `specc tune` uses them for a spec
without a `tune` section.
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from specc.compile.catalog import catalog
from specc.compile.shared import Core, one_of
from specc.core import nodes as n
from specc.core.errors import did_you_mean, show_value, suggest
from specc.core.plan import DIRECTIONS, PRUNERS, SAMPLERS, Obj, Origin, TrainPlan, TunePlan
from specc.lang.sections import TUNE

# The databases SQLAlchemy itself speaks to; Optuna keeps a study given by a URL in one of them (`RDBStorage`).
DIALECTS = ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql")
MAX_STUDY_NAME = 128
_URL = re.compile(r"([A-Za-z][A-Za-z0-9]*)(\+[A-Za-z0-9_]+)?://(.*)", re.S)
_STUDY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([smh])")
_SECONDS = {"s": 1, "m": 60, "h": 3600}
# Words of a value's name (or a metric's class) that say lower is better, as Keras's own `_direction = "down"` does.
_LOWER_IS_BETTER = {"loss", "error", "crossentropy", "hinge", "divergence", "poisson", "logcosh", "mse", "mae",
                    "mape", "msle", "rmse", "kld"}


# -- the values a run logs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Logged:
    """A value a run logs after each epoch: its name in history.csv without `val_` (None: Keras numbers it, see the
    module's docstring), the metric of `train` it comes from (None: a loss), and its output (several outputs)."""

    name: str | None
    metric: str | Obj | None = None
    output: str | None = None


def logged_values(train: TrainPlan, outputs: Sequence[str] = ()) -> list[Logged] | None:
    """What a run of `train` logs, in Keras's order: the loss (and each output's, with several outputs), then the
    metrics. `outputs`: the model's output names (`Plan.outputs`), needed only when there are several. None when
    Keras's names cannot be known: several outputs and a list of metrics that is not one entry per output."""
    several = len(outputs) > 1
    values = [Logged("loss")] + [Logged(f"{o}_loss", output=o) for o in outputs if several]
    if not several:
        groups: list[tuple[str | None, list[Any]]] = [(None, _flat(train.metrics))]
    elif not train.metrics:
        groups = []
    elif len(train.metrics) == len(outputs):
        groups = [(o, _flat([m])) for o, m in zip(outputs, train.metrics)]
    else:
        return None
    seen: dict[str, int] = {}
    for output, metrics in groups:
        for metric in metrics:
            name = _metric_name(metric)
            if name is not None:
                name = f"{output}_{name}" if output else name
                if name in seen:  # Keras's `CompileMetrics.result`: a repeated name gets `_1`, `_2`, ...
                    seen[name] += 1
                    name = f"{name}_{seen[name] - 1}"
                else:
                    seen[name] = 1
            values.append(Logged(name, metric, output))
    return values


def default_objective(train: TrainPlan | None, outputs: Sequence[str] = ()) -> str:
    """The objective of a study that names none: `val_` and the first metric of `train` that Keras logs by a known
    name (`val_accuracy`; several outputs: `val_a_accuracy`), else `val_loss`."""
    values = logged_values(train, outputs) if train is not None else None
    first = next((v.name for v in values or [] if v.metric is not None and v.name is not None), None)
    return f"val_{first or 'loss'}"


def direction_of(objective: str, train: TrainPlan | None = None, outputs: Sequence[str] = ()) -> str:
    """`minimize` for a loss or an error-like value (`val_loss`, `val_mse`, `val_mae`, `val_root_mean_squared_error`,
    cross-entropies, hinges, divergences, false positives or negatives), else `maximize`. Given `train` (and its
    model's `outputs`), a metric named with `name=` is judged by its class (`mae(name="err_abs")`: minimize)."""
    name = objective.removeprefix("val_")
    found = next((v for v in (logged_values(train, outputs) or []) if v.name == name), None) if train else None
    if found is not None and isinstance(found.metric, Obj):
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", found.metric.cls)  # MeanAbsoluteError -> Mean_Absolute_Error
    words = set(name.lower().split("_"))
    return "minimize" if words & _LOWER_IS_BETTER or "false" in words else "maximize"


def _flat(metrics: list[Any]) -> list[Any]:
    """The metrics of one output, nested lists flattened (as Keras flattens them for a model of one output)."""
    return [m for item in metrics for m in (_flat(item) if isinstance(item, list) else [item])]


def _metric_name(metric: str | Obj) -> str | None:
    """The name Keras gives one metric (`get_metric` in its compile_utils), None where it numbers it."""
    if isinstance(metric, str):
        return metric
    if isinstance(metric.kwargs.get("name"), str):
        return metric.kwargs["name"]
    param = inspect.signature(catalog("metric").get_class(metric.cls).__init__).parameters.get("name")
    return param.default if param is not None and isinstance(param.default, str) else None


# -- checking the section ----------------------------------------------------------------------------------------


def check_tune(ck: Core, sec: n.Section | None) -> TunePlan | None:
    """The `tune` section as a `TunePlan` (None without one); every mistake is a located error."""
    if sec is None:
        return None
    given = ck.settings("tune", sec.settings)
    if not any(s.name == "train" for s in ck.spec.sections):
        ck.fail("`tune` scores trainings of the model, but the spec has no `train` section", sec.span,
                "add `train { loss: ...; validation_split: 0.1 }`")
    train: TrainPlan | None = ck.result("train")
    outputs = _outputs(ck)
    plan: dict[str, Any] = {}
    for key, s in given.items():
        if key != "objective":
            v = ck.guarded(_HANDLERS[key], ck, s.value)
            if v is not None:  # None: failed, or `none`, the default
                plan[key] = v
    written = given.get("objective")
    if written is not None:
        objective = ck.guarded(_check_objective, ck, written.value, train, outputs)
    else:
        objective = default_objective(train, outputs)
    if objective is not None and train is not None:
        ck.guarded(_check_validation_data, ck, objective, train, written.value.span if written else sec.span,
                   written is not None)
    objective = objective or default_objective(train, outputs)
    direction = plan.pop("direction", None) or direction_of(objective, train, outputs)
    origins = {k: Origin(span=s.span) for k, s in given.items()}
    return TunePlan(**plan, objective=objective, direction=direction, origins=origins)


def _outputs(ck: Core) -> list[str]:
    """The model's output names: its checked plan's, else as the `output` statement writes them."""
    model = ck.result("model")
    if model is not None:
        return list(model[3])
    return [o for m in ck.spec.models[:1] for st in m.body if isinstance(st, n.Output) for o in st.names]


def _known_names(train: TrainPlan | None, outputs: Sequence[str]) -> list[str] | None:
    """The names a run logs without `val_`, or None where they cannot be known (no `train`, or its metrics failed)."""
    if train is None or ("metrics" in train.origins and "metrics" not in train.model_fields_set):
        return None
    values = logged_values(train, outputs)
    return None if values is None else [v.name for v in values if v.name is not None]


def _check_objective(ck: Core, e: n.Expr, train: TrainPlan | None, outputs: Sequence[str]) -> str:
    v = ck.value(e, {})
    if not isinstance(v, str) or not v:
        raise ck.fail(TUNE["objective"].mistake(v), e.span)
    if v.startswith("test_"):
        raise ck.fail(f"`objective` cannot be `{v}`: choosing hyperparameters by the test split's score leaks the "
                      "test split into the choice, and its score no longer says how the model does on new data",
                      e.span, f"score trials on the validation data: `objective: val_{v[5:]}`")
    names = _known_names(train, outputs)
    if not v.startswith("val_"):
        if v == "loss" or v in (names or []):
            raise ck.fail(f"`{v}` is measured on the training data, where a model that memorizes it scores best; "
                          "the objective is a value of the validation data", e.span, f"`objective: val_{v}`")
        raise ck.fail(f"unknown objective {show_value(v)}: it is `val_loss` or `val_` and the name of a metric of "
                      "`train`", e.span, _listing(v, names))
    if train is not None and names is not None and v[4:] not in names:
        message, hint = _renamed(v[4:], train, outputs) or (
            f"a run of this spec logs no `{v}`; it logs {', '.join(f'`val_{x}`' for x in names[:12])}",
            did_you_mean(v, [f"val_{x}" for x in names]) or "add the metric to `train`'s `metrics`")
        raise ck.fail(message, e.span, hint)
    return v


def _renamed(name: str, train: TrainPlan, outputs: Sequence[str]) -> tuple[str, str] | None:
    """For a metric written one way and logged another (`rmse`), or numbered by Keras: the message and hint."""
    for value in logged_values(train, outputs) or []:
        prefix = f"{value.output}_" if value.output else ""
        if not (isinstance(value.metric, Obj) and name.startswith(prefix)):
            continue
        written = name[len(prefix):]
        if catalog("metric").class_name(written) != value.metric.cls:
            continue
        if value.name is not None:
            return (f"Keras logs the metric `{written}` as `{value.name}`: a run of this spec logs no `val_{name}`",
                    f"`objective: val_{value.name}`")
        return (f"Keras numbers a `{written}` metric made without a `name` (`{written}_1`, `{written}_2`, ...) by "
                f"how many the process made before it, so no trial can find `val_{name}`",
                f'name it in `train`\'s `metrics`: `{written}(..., name="{written}")`')
    return None


def _listing(v: str, names: list[str] | None) -> str:
    """The hint for an objective that is no value's name: the closest validation value, else an example."""
    close = suggest(v.removeprefix("val_"), names or ["loss"])
    return f"did you mean `val_{close[0]}`?" if close else f"e.g. `objective: val_{(names or ['loss'])[-1]}`"


def _check_validation_data(ck: Core, objective: str, train: TrainPlan, span: n.Span | None, written: bool) -> None:
    """A `val_` objective needs data held out from training: `validation_split` or `validation: kfold(k)`."""
    failed = [k for k in ("validation_split", "validation") if k in train.origins and k not in train.model_fields_set]
    if failed or train.validation_split > 0 or train.validation is not None:
        return
    which = f"`{objective}`" if written else f"`{objective}` (the default)"
    raise ck.fail(f"the objective {which} is measured on validation data, and `train` holds none out", span,
                  "set `validation_split: 0.1` in `train` (or cross-validate: `validation: kfold(5)`)")


# -- one handler per setting: (checker, expression) -> the plan's value (None: `none`, the default) -------------------


def _whole(ck: Core, v: Any, e: n.Expr, key: str, minimum: int) -> int:
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise ck.fail(f"`{key}` must be a whole number >= {minimum}, got {show_value(v)}", e.span,
                      f"e.g. `{TUNE[key].example}`")
    return v


def _trials(ck: Core, e: n.Expr) -> int:
    return _whole(ck, ck.value(e, {}), e, "trials", 1)


def _workers(ck: Core, e: n.Expr) -> int:
    return _whole(ck, ck.value(e, {}), e, "workers", 1)


def _seed(ck: Core, e: n.Expr) -> int | None:
    v = ck.value(e, {})
    return None if v is None else _whole(ck, v, e, "seed", 0)


def _timeout(ck: Core, e: n.Expr) -> float | None:
    v = ck.value(e, {})
    if v is None:
        return None
    hint = 'e.g. `timeout: "30m"`, `timeout: "2h"`, or seconds: `timeout: 600`'
    if isinstance(v, str):
        found = _DURATION.fullmatch(v.strip())
        if not found:
            raise ck.fail(f"`timeout` is a number of seconds or a duration in quotes such as \"90s\", \"30m\" or "
                          f"\"2h\", got {show_value(v)}", e.span, hint)
        seconds = float(found[1]) * _SECONDS[found[2]]
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        seconds = float(v)
    else:
        raise ck.fail(TUNE["timeout"].mistake(v), e.span, hint)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ck.fail(f"`timeout` must be more than 0 seconds, got {show_value(v)}", e.span,
                      "leave `timeout` out for a study without a time limit")
    return seconds


def _choice(key: str, what: str, choices: tuple[str, ...]) -> Callable[[Core, n.Expr], str]:
    def check(ck: Core, e: n.Expr) -> str:
        v = ck.value(e, {})
        return one_of(ck, "none" if v is None else v, choices, what, e.span,
                      f"`{key}` is one of: {', '.join(choices)}")
    return check


def _storage(ck: Core, e: n.Expr) -> str | None:
    v = ck.value(e, {})
    if v is None:
        return None
    if not isinstance(v, str):
        raise ck.fail(TUNE["storage"].mistake(v), e.span)
    mistake = storage_mistake(v)
    if mistake is not None:
        raise ck.fail(mistake[0], e.span, mistake[1])
    return v


def storage_mistake(v: str) -> tuple[str, str | None] | None:
    """What is wrong with a storage URL (a message and a hint), or None: the `storage` setting's rule, and
    `specc tune --storage`'s."""
    url = _URL.fullmatch(v)
    if url is None:
        return (f"`storage` is a database URL, `DATABASE://...`, got {show_value(v)}",
                'for a SQLite file: `storage: "sqlite:///study.db"`; for PostgreSQL: '
                '`storage: "postgresql://user@host/db"`')
    dialect = url[1].lower()
    if v.partition("://")[2].split("/")[0].count("@") > 1:
        return ("the URL holds `@` more than once before its host: a `@` in a password is written `%40`",
                "write the password with `%40` for each `@` in it")
    if dialect == "postgres":
        return ("SQLAlchemy, which Optuna keeps a study with, spells PostgreSQL `postgresql://`, not `postgres://`",
                f'`storage: "postgresql{v[len(url[1]):]}"`')
    if dialect not in DIALECTS:
        return (f"Optuna cannot keep a study in `{url[1]}://`", did_you_mean(dialect, DIALECTS)
                or f"it takes the databases of SQLAlchemy: {', '.join(f'`{d}://`' for d in DIALECTS)}")
    if dialect == "sqlite" and url[3] in ("", "/"):
        return (f"`{v}` is a SQLite database in memory, gone when its process ends: no other worker sees it, and no "
                "study is left to resume", 'a file: `storage: "sqlite:///study.db"`, or leave `storage` out for one '
                "in the study's directory")
    return None


def study_name_ok(v: object) -> bool:
    """Whether `v` may name a study: letters, digits, `_`, `-` and `.`, at most `MAX_STUDY_NAME` (it names a folder)."""
    return isinstance(v, str) and bool(_STUDY_NAME.fullmatch(v)) and len(v) <= MAX_STUDY_NAME


def _study(ck: Core, e: n.Expr) -> str | None:
    v = ck.value(e, {})
    if v is None:
        return None
    if not study_name_ok(v):
        raise ck.fail(f"`study` is a name of letters, digits, `_`, `-` and `.` (at most {MAX_STUDY_NAME}), got "
                      f"{show_value(v)}", e.span, f"e.g. `{TUNE['study'].example}`")
    return v


_HANDLERS: dict[str, Callable[[Core, n.Expr], Any]] = {
    "trials": _trials, "timeout": _timeout, "workers": _workers, "seed": _seed, "storage": _storage, "study": _study,
    "direction": _choice("direction", "direction", DIRECTIONS), "sampler": _choice("sampler", "sampler", SAMPLERS),
    "pruner": _choice("pruner", "pruner", PRUNERS),
}
