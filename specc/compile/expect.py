"""The `expect` section checked into an `ExpectPlan` at compile time (`check_expect`); `specc.tools.testing` runs it.

`check_expect(ck, section)` is the section's validator, registered in `specc.compile.check.VALIDATORS`; it sees the
checker through `specc.compile.shared.Core` (its `settings`, `value`, `fail` and `guarded`). What each contract means is in `specc.tools.testing`.
"""

from __future__ import annotations

import math
from typing import Any

from specc.compile.shared import Core
from specc.core import nodes as n
from specc.core.errors import did_you_mean, show_value as _show
# The plan's types for the section live with the plan; imported from here too.
from specc.core.plan import CHANCE_TOLERANCE, Bound, ExpectPlan, LossTarget, Origin
from specc.lang.sections import EXPECT

ALLOWED = EXPECT.names  # the contracts, declared in `specc.lang.sections`
TRAINED = ("initial_loss", "overfit", "gradients")  # need the `train` section's loss (and, `overfit`, optimizer)
BOUNDS = ("at_most", "at_least", "between")
MAX_OVERFIT_STEPS = 10_000  # `specc test` is a quick check, never a training run

_EXAMPLES = {
    "params": "`params: at_most(40_000)`, an exact count `params: 34_826`, `at_least(1_000)` or "
              "`between(30_000, 40_000)`",
    "output_shape": "`output_shape: (10,)` (per example, without the batch), or one shape per output: "
                    "`output_shape: [(10,), (1,)]`",
    "initial_loss": "`initial_loss: chance` (ln of the number of classes, within 10%) or "
                    "`initial_loss: near(2.30, 0.1)` (a value and a tolerance)",
    "overfit": "`overfit: 100`: the loss on one batch falls below 5% of its initial value within 100 steps",
    "gradients": "`gradients: healthy`: every trainable weight gets finite gradients, not all zero",
}


# -- checking the section ----------------------------------------------------------------------------------


def check_expect(ck: Core, sec: n.Section | None) -> ExpectPlan | None:
    """The `expect` section as an `ExpectPlan` (None without one); every mistake is a located error (`ck.fail`)."""
    if sec is None:
        return None
    given = ck.settings("expect", sec.settings)
    has_train = any(s.name == "train" for s in ck.spec.sections)
    plan: dict[str, Any] = {}
    origins: dict[str, Origin] = {}
    for key, s in given.items():
        if key in TRAINED and not has_train:
            ck.fail(f"expect `{key}` measures the loss, but the spec has no `train` section to take it from",
                    s.key_span, "add `train { loss: ...; optimizer: ... }`, or test only `params` and `output_shape`")
            continue
        v = ck.guarded(_CHECKS[key], ck, s.value)
        if v is not None:
            plan[key] = v
            origins[key] = Origin(span=s.span)
    return ExpectPlan(**plan, origins=origins)


def _wrong(ck, key: str, e: n.Expr, what: str):
    return ck.fail(f"{what}", e.span, f"write {_EXAMPLES[key]}")


def _count(ck, e: n.Expr, key: str) -> int:
    v = ck.value(e, {})
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise _wrong(ck, key, e, f"expect `{key}` takes whole numbers of parameters, got {_show(v)}")
    return v


def _check_params(ck, e: n.Expr) -> Bound:
    if not isinstance(e, n.Call):
        count = _count(ck, e, "params")
        return Bound(low=count, high=count, written=f"{count:,}")
    if e.func not in BOUNDS:
        raise ck.fail(f"unknown parameter bound `{e.func}(...)`", e.name_span,
                      did_you_mean(e.func, BOUNDS) or f"write {_EXAMPLES['params']}")
    wanted = 2 if e.func == "between" else 1
    if e.kwargs or len(e.args) != wanted:
        raise _wrong(ck, "params", e, f"`{e.func}` takes {wanted} whole number{'s' if wanted > 1 else ''}")
    counts = [_count(ck, a, "params") for a in e.args]
    written = f"{e.func}({', '.join(f'{c:,}' for c in counts)})"
    if e.func == "at_most":
        return Bound(high=counts[0], written=written)
    if e.func == "at_least":
        return Bound(low=counts[0], written=written)
    if counts[0] > counts[1]:
        raise ck.fail(f"`between` takes the lower bound first, got {written}", e.span,
                      f"write `between({counts[1]:_}, {counts[0]:_})`")
    return Bound(low=counts[0], high=counts[1], written=written)


def _check_output_shape(ck, e: n.Expr) -> list[tuple[int | None, ...]]:
    v = ck.value(e, {})
    shapes = v if isinstance(v, list) else [v]
    out = []
    for shape in shapes:
        shape = (shape,) if isinstance(shape, int) and not isinstance(shape, bool) else shape
        if not (isinstance(shape, tuple) and shape and all(
                d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0) for d in shape)):
            raise _wrong(ck, "output_shape", e, f"expect `output_shape` takes a shape per example such as `(10,)`, "
                         f"got {_show(shape)}")
        out.append(shape)
    if not out:
        raise _wrong(ck, "output_shape", e, "expect `output_shape` is an empty list")
    return out


def _number(ck, e: n.Expr, what: str) -> float:
    v = ck.value(e, {})
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        raise _wrong(ck, "initial_loss", e, f"{what} is a number, got {_show(v)}")
    return float(v)


def _check_initial_loss(ck, e: n.Expr) -> LossTarget:
    if isinstance(e, n.Call):
        if e.func != "near":
            raise ck.fail(f"unknown loss target `{e.func}(...)`", e.name_span,
                          did_you_mean(e.func, ["near"]) or f"write {_EXAMPLES['initial_loss']}")
        if e.kwargs or not 1 <= len(e.args) <= 2:
            raise _wrong(ck, "initial_loss", e, "`near` takes the expected loss and a tolerance: `near(2.30, 0.1)`")
        value = _number(ck, e.args[0], "the expected loss")
        tolerance = _number(ck, e.args[1], "the tolerance") if len(e.args) > 1 else CHANCE_TOLERANCE * abs(value)
        if tolerance <= 0:
            raise ck.fail(f"the tolerance of `near` must be above 0, got {tolerance:g}", e.args[1].span,
                          "e.g. `near(2.30, 0.1)`: between 2.2 and 2.4")
        return LossTarget(value=value, tolerance=tolerance)
    v = ck.value(e, {})
    if v != "chance":
        raise ck.fail(f"expect `initial_loss` takes `chance` or `near(value, tolerance)`, got {_show(v)}", e.span,
                      did_you_mean(str(v), ["chance"]) if isinstance(v, str) else f"write {_EXAMPLES['initial_loss']}")
    return LossTarget()


def _check_overfit(ck, e: n.Expr) -> int:
    v = ck.value(e, {})
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_OVERFIT_STEPS:
        raise _wrong(ck, "overfit", e, f"expect `overfit` takes a number of training steps from 1 to "
                     f"{MAX_OVERFIT_STEPS:,}, got {_show(v)}")
    return v


def _check_gradients(ck, e: n.Expr) -> bool:
    v = ck.value(e, {})
    if v != "healthy":
        close = did_you_mean(v, ["healthy"]) if isinstance(v, str) else None
        raise ck.fail(f"expect `gradients` takes `healthy`, got {_show(v)}", e.span,
                      close or f"write {_EXAMPLES['gradients']}")
    return True


_CHECKS = {"params": _check_params, "output_shape": _check_output_shape, "initial_loss": _check_initial_loss,
           "overfit": _check_overfit, "gradients": _check_gradients}
