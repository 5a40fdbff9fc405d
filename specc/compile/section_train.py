"""The `train` section's validator: its settings (`specc.lang.sections.TRAIN`) checked into a `TrainPlan`.

The loss, optimizer and metrics are Keras objects, made here as `specc run` will make them so that what their
constructors refuse is a located error (`Core.construct`); `early_stopping` is checked against what Keras would
otherwise fail on after the first epoch. The settings `train.steps` is computed from come first, so that the
others may name it (`decay_steps=train.steps`).
"""

from __future__ import annotations

import math
from typing import Any, Callable

from specc.compile.shared import Core, fraction, whole
from specc.core import nodes as n
from specc.core.errors import show_value
from specc.core.plan import Obj, Origin, TrainPlan
from specc.lang.sections import TRAIN
from specc.runtime.keras_env import import_keras

# The settings the facts of training (`train.steps`) are computed from: checked first, wherever they are written.
FACT_SETTINGS = ("epochs", "batch_size", "validation_split")


def check_train(ck: Core, sec: n.Section | None) -> TrainPlan | None:
    """The `train` section as a `TrainPlan` (None without one); every mistake is a located error."""
    if sec is None:
        return None
    given = ck.settings("train", sec.settings)
    plan: dict[str, Any] = {}
    origins = {k: Origin(span=s.span) for k, s in given.items()}
    # The others (`optimizer: sgd(cosine_decay(0.1, decay_steps=train.steps))`) may name the facts of these.
    for key, s in sorted(given.items(), key=lambda item: item[0] not in FACT_SETTINGS):
        if key not in FACT_SETTINGS:
            ck.facts_ready("train")
        with ck.checking("train" if key in FACT_SETTINGS else None):
            v = ck.guarded(_HANDLERS[key], ck, key, s.value)
        if v is not None and not TrainPlan.fits(key, v):  # `loss: 3`: found here, not by Keras at run time
            ck.fail(TRAIN[key].mistake(v), s.value.span)
            v = None
        if v is not None or key == "seed":
            plan[key] = v
        if key in FACT_SETTINGS and v is not None:
            ck.given("train", key, v)
    _check_early_stopping(ck, given, plan)
    if "loss" not in given:
        ck.fail("`train` needs a `loss`", sec.span,
                "for integer class labels: `loss: sparse_categorical_crossentropy`; for regression: `loss: mse`")
    return TrainPlan(**plan, origins=origins)


def _check_early_stopping(ck: Core, given: dict[str, n.Setting], plan: dict[str, Any]) -> None:
    """The value `early_stopping` watches must be one Keras knows the direction of, and without a validation split
    it watches the training loss (Keras's default `val_loss` never comes, and it would silently never stop)."""
    stop = plan.get("early_stopping")
    if stop is None:
        return
    if "metrics" in plan or "metrics" not in given:  # else the metrics' error says enough
        e = given["early_stopping"].value
        at = next((k.span for k in e.kwargs if k.name == "monitor"), e.span) if isinstance(e, n.Call) else e.span
        ck.guarded(_check_monitor, ck, stop, plan.get("metrics") or [], at)
    if "monitor" not in stop.kwargs and not plan.get("validation_split"):
        plan["early_stopping"] = stop.model_copy(update={"kwargs": {**stop.kwargs, "monitor": "loss"}})


# -- one handler per setting: (checker, key, expression) -> the plan's value ---------------------------------------
# The loss and the metrics are looked up in Keras's catalogues of losses and metrics (`specc.compile.catalog`); what
# kind of labels a loss wants is not known here but when the data is read (`specc.train.labels`) and in `specc.compile.
# build` (its axes).


def _loss(ck: Core, key: str, e: n.Expr) -> Any:
    return ck.value(e, {}, "loss", "the loss")


def _optimizer(ck: Core, key: str, e: n.Expr) -> Any:
    return ck.value(e, {}, "optimizer", "the optimizer")


def _metrics(ck: Core, key: str, e: n.Expr) -> list[Any]:
    items = e.items if isinstance(e, n.List) else [e]
    return [ck.value(i, {}, "metric", "a metric") for i in items]


def _early_stopping(ck: Core, key: str, e: n.Expr) -> Obj:
    if isinstance(e, n.Call) and e.func == "early_stopping":
        cls = import_keras().callbacks.EarlyStopping
        spans: dict[str, n.Span] = {}
        kwargs = ck.arguments(e, cls, {}, "`early_stopping`", spans)
        for name, v in kwargs.items():  # Keras takes these at construction and fails on them in `fit`
            _early_stopping_argument(ck, name, v, spans.get(name, e.span))
        made = Obj(kind="callback", module="keras.callbacks", cls="EarlyStopping", kwargs=kwargs)
        ck.construct(made, e, spans, "`early_stopping`")
        return made
    v = ck.value(e, {})
    if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
        return Obj(kind="callback", module="keras.callbacks", cls="EarlyStopping", kwargs={"patience": v})
    raise ck.fail("`early_stopping` takes a patience in epochs or `early_stopping(monitor=val_loss, patience=3)`", e.span)


def _validation(ck: Core, key: str, e: n.Expr) -> int:
    if not (isinstance(e, n.Call) and e.func == "kfold" and len(e.args) == 1 and not e.kwargs):
        raise ck.fail("`validation` is k-fold cross-validation: `validation: kfold(5)`", e.span,
                      "for a held-out fraction of the training data use `validation_split: 0.1`")
    return whole(ck, ck.value(e.args[0], {}), e.args[0], "kfold", minimum=2)


def _count(ck: Core, key: str, e: n.Expr) -> int:
    return whole(ck, ck.value(e, {}), e, key, minimum=1)


def _seed(ck: Core, key: str, e: n.Expr) -> int | None:
    v = ck.value(e, {})
    return None if v is None else whole(ck, v, e, key, minimum=0)


def _fraction(ck: Core, key: str, e: n.Expr) -> float:
    return fraction(ck, ck.value(e, {}), e, key)


def _shuffle(ck: Core, key: str, e: n.Expr) -> bool:
    v = ck.value(e, {})
    if not isinstance(v, bool):
        raise ck.fail(f"`shuffle` is `true` or `false`, got {show_value(v)}", e.span)
    return v


_HANDLERS: dict[str, Callable[[Core, str, n.Expr], Any]] = {
    "loss": _loss, "optimizer": _optimizer, "metrics": _metrics, "epochs": _count, "batch_size": _count,
    "validation_split": _fraction, "seed": _seed, "shuffle": _shuffle, "early_stopping": _early_stopping,
    "validation": _validation,
}


def _early_stopping_argument(ck: Core, key: str, v: Any, span: n.Span | None) -> None:
    """An argument of `early_stopping(...)` of the type Keras needs: it takes any value when made, and fails on a
    wrong one at the end of the first epoch (`min_delta="x"`) or silently changes it (`mode=maximum`)."""
    number = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    whole_number = isinstance(v, int) and not isinstance(v, bool) and v >= 0
    wanted = {"monitor": ("the name of a logged value, e.g. `val_loss`", isinstance(v, str)),
              "min_delta": ("a number", number),
              "patience": ("a whole number of epochs >= 0", whole_number),
              "start_from_epoch": ("a whole number of epochs >= 0", whole_number),
              "verbose": ("`0` or `1`", v in (0, 1) and not isinstance(v, bool)),
              "mode": ("`auto`, `min` or `max`", v in ("auto", "min", "max")),
              "baseline": ("a number or `none`", v is None or number),
              "restore_best_weights": ("`true` or `false`", isinstance(v, bool))}
    if key in wanted and not wanted[key][1]:
        raise ck.fail(f"`{key}` of `early_stopping` is {wanted[key][0]}, got {show_value(v)}", span)


def _check_monitor(ck: Core, stop: Obj, metrics: list, span: n.Span | None) -> None:
    """In `mode: auto` Keras infers whether the monitored value should go up or down from the loss or a compiled
    metric of that name, and fails at the end of the first epoch when there is none: found here instead."""
    outputs = [o for m in ck.spec.models[:1] for st in m.body if isinstance(st, n.Output) for o in st.names]
    if stop.kwargs.get("mode", "auto") != "auto" or len(outputs) > 1:  # several outputs: metrics per output
        return
    monitor = stop.kwargs.get("monitor", "val_loss")
    name = monitor.removeprefix("val_")
    if name == "loss":
        return
    names: list[str] = []
    for m in metrics:
        if isinstance(m, str):
            names.append(m)
        elif isinstance(m, Obj):
            from specc.compile.build import make_object, shapes_only

            with shapes_only():
                made = make_object(m)
            if hasattr(made, "_direction"):
                names.append(made.name)
    if name not in names:
        raise ck.fail(f"`early_stopping` watches `{monitor}`, but Keras can tell whether it should go up or "
                      "down only for the loss and the metrics of `train.metrics` "
                      f"({', '.join(f'`{m}`' for m in ['loss', *names])})", span,
                      "watch one of them (`val_` + its name for the validation value), or give the direction: "
                      "`mode=max` or `mode=min`")
