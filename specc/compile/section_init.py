"""The `init` section's validator: where training takes its first weights from, as an `InitPlan`.

`from` is a run directory or a `.keras` file; `layers` and `freeze` name layers or glob patterns. Whether those
layers exist, and with weights of matching shapes, is checked when the run starts (`specc.train`), against the
file; each named layer keeps its own span here for that error.
"""

from __future__ import annotations

from typing import Any

from specc.compile.shared import Core
from specc.core import nodes as n
from specc.core.plan import InitPlan, Origin
from specc.lang.sections import INIT

LAYER_LISTS = ("layers", "freeze")  # the settings that name layers


def check_init(ck: Core, sec: n.Section | None) -> InitPlan | None:
    """The `init` section as an `InitPlan` (None without one); every mistake is a located error."""
    if sec is None:
        return None
    given = ck.settings("init", sec.settings)
    if "from" not in given:
        raise ck.fail("`init` needs `from`: the run directory or .keras file whose weights to take", sec.span,
                      'e.g. `from: "../runs/pretrain"`')
    e = given["from"].value
    if not isinstance(e, n.Str):
        raise ck.fail(INIT["from"].mistake(), e.span)
    plan: dict[str, Any] = {"from": e.value}
    for key in LAYER_LISTS:
        if key in given:
            v = ck.value(given[key].value, {})
            v = [v] if isinstance(v, str) else v
            if not isinstance(v, list) or not all(isinstance(i, str) for i in v):
                ck.fail(INIT[key].mistake(), given[key].value.span)
            else:
                plan[key] = v
    origins = {k: Origin(span=s.span) for k, s in given.items()}
    for key in LAYER_LISTS:  # each named layer's own span, for errors about it
        value = given[key].value if key in given else None
        for item in value.items if isinstance(value, n.List) else []:
            if isinstance(item, (n.Name, n.Str)):
                origins[f"{key}:{item.id if isinstance(item, n.Name) else item.value}"] = Origin(span=item.span)
    return InitPlan(**plan, origins=origins)
