"""The `device` section's validator: the platform (`kind`), and how training is spread over its devices.

`parallel: data` needs nothing more; `parallel: model` needs a `mesh` of devices, names for its `axes` and a
`layout` of the weights over them (a `DistributionPlan`). In language 1 the platform may instead be the file's
top-level `device:` (`section_file`); the two together are an error. What depends on the machine (the number of
devices, the weights a pattern matches) is checked when the run starts (`specc.train.distribute`).
"""

from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple

from specc.compile.shared import Core, one_of
from specc.core import nodes as n
from specc.core.errors import did_you_mean, show_value
from specc.core.plan import DistributionPlan, Origin, TrainPlan
from specc.lang.sections import DEVICE, DEVICES, DISTRIBUTION_SETTINGS
_LAYOUT_EXAMPLE = '`layout: [("dense.*kernel", (none, model)), ("dense.*bias", model)]`'


class Device(NamedTuple):
    """What the `device` validator returns: the platform (None if its setting was wrong), where it was set, and the
    distribution (None: one device)."""

    kind: str | None
    origin: Origin
    distribution: DistributionPlan | None


def device_kind(ck: Core, s: n.Setting) -> str:
    """The platform a setting names: `auto`, `cpu`, `gpu` or `tpu`."""
    return one_of(ck, ck.value(s.value, {}), DEVICES, "device", s.value.span, f"devices: {', '.join(DEVICES)}")


def check_device(ck: Core, sec: n.Section | None) -> Device:
    """The `device` section, or the file's top-level `device:` (language 1) without one."""
    top = ck.result("file")
    if sec is None:
        return Device(top.device, Origin(span=top.setting.span) if top.setting else Origin(), None)
    if top.setting is not None:
        ck.fail("the device is given twice: by `device:` and by a `device { ... }` section", top.setting.span,
                "keep the section, with `kind: ...` in it")
    found = ck.guarded(_check_section, ck, sec)
    kind, distribution = found if found else (None, None)
    setting = next((s for s in sec.settings if s.key == "kind"), None)
    return Device(kind, Origin(span=setting.span if setting else sec.span), distribution)


def _check_section(ck: Core, sec: n.Section) -> tuple[str | None, DistributionPlan | None]:
    given = ck.settings("device", sec.settings)
    kind = ck.guarded(device_kind, ck, given["kind"]) if "kind" in given else "auto"
    origins = {k: Origin(span=s.span) for k, s in given.items()}
    plan: dict[str, Any] = {}
    for key in DISTRIBUTION_SETTINGS:
        if key in given:
            v = ck.guarded(_HANDLERS[key], ck, given[key].value, plan, origins)
            if v is not None:
                plan[key] = v
    if "parallel" in given and "parallel" not in plan:  # its error says enough
        return kind, None
    parallel = plan.pop("parallel", None)
    if parallel == "none":
        parallel = None
    _check_together(ck, sec, given, plan, parallel)
    if parallel is None:
        return kind, None
    return kind, DistributionPlan(parallel=parallel, **plan, origins=origins)


def _check_together(ck: Core, sec: n.Section, given: dict[str, n.Setting], plan: dict[str, Any],
                    parallel: str | None) -> None:
    """`mesh`, `axes` and `layout` are for `parallel: model`, which needs a mesh (with axes) and a layout."""
    for key in ("mesh", "axes", "layout"):
        if key in given and parallel != "model":
            why = "`parallel: data` uses every device as it is" if parallel == "data" else "there is no `parallel`"
            ck.fail(f"`{key}` is for `parallel: model`, and {why}", given[key].key_span,
                    "write `parallel: model` to split weights over a mesh of devices, or remove "
                    f"`{key}`")
    if parallel != "model":
        return
    if "mesh" not in given:
        ck.fail("`parallel: model` needs a `mesh`: the shape of the grid of devices", sec.span,
                "e.g. `mesh: (2, 2)` with `axes: (batch, model)` for 4 devices")
    elif "mesh" in plan and "axes" not in given:
        if len(plan["mesh"]) != 2:
            ck.fail(f"a mesh of {len(plan['mesh'])} dimension{'s' if len(plan['mesh']) != 1 else ''} "
                    "needs `axes`: a name for each", given["mesh"].span,
                    f"e.g. `axes: ({', '.join(('batch', 'model', 'x', 'y')[:len(plan['mesh'])])})`")
        else:
            plan["axes"] = ("batch", "model")
    if "layout" not in given:
        ck.fail("`parallel: model` needs a `layout`: which weights to split along which mesh axes", sec.span,
                'e.g. `layout: [("dense.*kernel", (none, model))]`: the kernels of layers named dense... '
                "split by columns along the `model` axis")


# -- one handler per setting: (checker, expression, the settings before it, origins) -> the plan's value -----------


def _parallel(ck: Core, e: n.Expr, plan: dict[str, Any], origins: dict[str, Origin]) -> str:
    v = ck.value(e, {})
    if v is None:
        return "none"
    return one_of(ck, v, DEVICE["parallel"].choices, "parallelism", e.span,
                  "`parallel: data` (copies of the model, each batch split over the devices) or "
                  "`parallel: model` (weights split over a mesh of devices)")


def _mesh(ck: Core, e: n.Expr, plan: dict[str, Any], origins: dict[str, Origin]) -> tuple[int, ...]:
    v = ck.value(e, {})
    if isinstance(v, int) and not isinstance(v, bool):
        v = (v,)
    if not (isinstance(v, tuple) and v and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in v)):
        raise ck.fail(f"`mesh` is the shape of the grid of devices, e.g. `mesh: (2, 2)`; got {show_value(v)}", e.span)
    return v


def _axes(ck: Core, e: n.Expr, plan: dict[str, Any], origins: dict[str, Origin]) -> tuple[str, ...]:
    v = ck.value(e, {})
    v = (v,) if isinstance(v, str) else tuple(v) if isinstance(v, (tuple, list)) else v
    if not (isinstance(v, tuple) and v and all(isinstance(a, str) for a in v)):
        raise ck.fail(f"`axes` names the mesh's axes, e.g. `axes: (batch, model)`; got {show_value(v)}", e.span)
    twice = next((a for i, a in enumerate(v) if a in v[:i]), None)
    if twice is not None:
        raise ck.fail(f"mesh axis `{twice}` is named twice", e.span)
    mesh = plan.get("mesh")
    if mesh is not None and len(mesh) != len(v):
        raise ck.fail(f"`axes` names {len(v)} axes, but the mesh {show_value(mesh)} has {len(mesh)}", e.span)
    return v


def _layout(ck: Core, e: n.Expr, plan: dict[str, Any], origins: dict[str, Origin]) -> list:
    """`layout: [("dense.*kernel", (none, model)), ...]`: per weight-path pattern, a mesh axis (or `none`)
    for each dimension of the weights it matches."""
    items = e.items if isinstance(e, n.List) else None
    if not items:
        raise ck.fail("`layout` is a list of (weight pattern, mesh axes) pairs", e.span, f"e.g. {_LAYOUT_EXAMPLE}")
    axes = plan.get("axes") or (("batch", "model") if len(plan.get("mesh") or ()) == 2 else None)
    out = []
    for i, item in enumerate(items):
        out.append(_layout_entry(ck, item, axes))
        origins[f"layout:{i}"] = Origin(span=item.span)
    return out


def _layout_entry(ck: Core, item: n.Expr, axes: tuple[str, ...] | None) -> tuple[str, tuple[str | None, ...]]:
    """One `(weight pattern, mesh axes)` pair of a layout."""
    if not (isinstance(item, n.Tuple) and len(item.items) == 2):
        raise ck.fail("each `layout` entry is a pair: (weight pattern, mesh axes)", item.span, f"e.g. {_LAYOUT_EXAMPLE}")
    pattern, dims = ck.value(item.items[0], {}), ck.value(item.items[1], {})
    if not isinstance(pattern, str):
        raise ck.fail(f"a weight pattern is a regular expression in quotes, got {show_value(pattern)}",
                      item.items[0].span, 'e.g. `"dense.*kernel"`, matched against paths such as `dense/kernel`')
    try:
        re.compile(pattern)
    except re.error as err:
        raise ck.fail(f"`{pattern}` is not a regular expression: {err}", item.items[0].span) from None
    dims = (dims,) if dims is None or isinstance(dims, str) else dims
    if not (isinstance(dims, tuple) and all(d is None or isinstance(d, str) for d in dims)):
        raise ck.fail("the axes of a layout entry are a mesh axis or `none` per dimension of the weight",
                      item.items[1].span, "e.g. `(none, model)` for a kernel split by columns")
    for d in dims:
        if d is not None and axes is not None and d not in axes:
            raise ck.fail(f"`{d}` is not an axis of the mesh", item.items[1].span,
                          did_you_mean(d, axes) or f"its axes: {', '.join(axes)}")
    twice = next((d for j, d in enumerate(dims) if d is not None and d in dims[:j]), None)
    if twice is not None:
        raise ck.fail(f"mesh axis `{twice}` splits two dimensions of the same weight", item.items[1].span)
    return pattern, tuple(dims)


_HANDLERS: dict[str, Callable[[Core, n.Expr, dict[str, Any], dict[str, Origin]], Any]] = {
    "parallel": _parallel, "mesh": _mesh, "axes": _axes, "layout": _layout,
}


def check_one_device_for_kfold(ck: Core, distribution: DistributionPlan | None, train: TrainPlan | None) -> None:
    """k-fold cross-validation trains its folds on one device: not with a distribution."""
    if distribution is not None and train is not None and train.validation:
        ck.fail("k-fold cross-validation (`validation: kfold(...)`) runs on one device; it cannot be combined with "
                "`parallel`", distribution.span("parallel"), "remove `parallel` from the `device` section, or "
                "`validation` from `train`")
