"""`specc diff`: a semantic diff of two specs — of the networks and settings they describe, not of their text.

Both specs are compared as build plans (`specc.api.loads(...).plan`), which are already resolved and
expanded, so layout, comments, aliases (`batchnorm`, `batch_normalization`), blocks and `repeat` do not
matter. Layers are aligned by `match_layers` (generated names shift when a layer is inserted, so names
are not used to match), arguments equal to the Keras default count as not given, and each side's
parameter counts come from `specc.compile.build.summarize`.

With the 7 (or 9, for a rename) arguments git passes an external diff driver, `specc diff` works as one:

    .gitattributes:   *.model diff=specc
    git config:       git config diff.specc.command "specc diff"

`git diff` then uses it by default; `git log -p` and `git show` only with `--ext-diff`.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from specc.core.errors import printable
from specc.core.plan import InputNode, LayerNode, Obj, Plan
from specc.lang.sections import DISTRIBUTION_SETTINGS, SECTIONS
from specc.compile.catalog import catalog

NULL = "/dev/null"
_UNSET = object()  # an argument neither given nor with a Keras default


@dataclass
class ItemChange:
    """One input or layer added, removed or changed. `name` is the new name (the old one when removed)."""

    status: str  # added, removed, changed
    name: str
    cls: str  # Keras class; "Input" for a model input
    old_name: str | None = None
    args: dict[str, Any] = field(default_factory=dict)  # the arguments of an added or removed item
    changes: list[tuple[str, Any, Any]] = field(default_factory=list)  # (argument, old, new)
    inputs: list[str] = field(default_factory=list)  # what an added or removed layer reads
    wiring: tuple[list[str], list[str]] | None = None  # (old inputs, new inputs) when they changed
    params: tuple[int | None, int | None] = (None, None)  # (old, new)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"status": self.status, "name": self.name, "type": self.cls}
        if self.old_name and self.old_name != self.name:
            out["old_name"] = self.old_name
        if self.status != "changed":
            out["args"] = {k: _jsonable(v) for k, v in self.args.items()}
            if self.cls != "Input":
                out["inputs"] = self.inputs
        else:
            out["changes"] = [{"arg": k, "old": _jsonable(o), "new": _jsonable(n)} for k, o, n in self.changes]
            if self.wiring:
                out["inputs"] = {"old": self.wiring[0], "new": self.wiring[1]}
        if self.cls != "Input":
            out["params"] = {"old": self.params[0], "new": self.params[1]}
        return out


@dataclass
class SettingChange:
    """One `train`, `data`, `init`, `device` or `expect` setting whose value differs."""

    key: str  # e.g. "train.epochs"
    status: str  # added, removed, changed
    old: Any = None
    new: Any = None

    def to_dict(self) -> dict:
        return {"key": self.key, "status": self.status, "old": _jsonable(self.old), "new": _jsonable(self.new)}


@dataclass
class SpaceChange:
    """A search space on one side and a value (or another space) on the other: `width: choice(64, 128) -> 128`."""

    name: str
    old: str  # as written: a space, or the value chosen
    new: str

    def to_dict(self) -> dict:
        return {"space": self.name, "old": self.old, "new": self.new}


@dataclass
class SpecDiff:
    """What differs between spec A (old) and spec B (new); a side is None for a file that does not exist."""

    old_label: str
    new_label: str
    models: tuple[str | None, str | None]
    inputs: list[ItemChange]
    layers: list[ItemChange]
    outputs: tuple[list[str], list[str]] | None  # (old, new) when the model's outputs changed
    params: tuple[int | None, int | None]  # total (old, new)
    settings: list[SettingChange]
    space: list[SpaceChange] = field(default_factory=list)

    @property
    def same_architecture(self) -> bool:
        return (not self.inputs and not self.layers and self.outputs is None
                and self.params[0] == self.params[1] and self.models[0] == self.models[1])

    def to_dict(self) -> dict:
        old, new = self.params
        return {
            "old": self.old_label, "new": self.new_label,
            "model": {"old": self.models[0], "new": self.models[1]},
            "same_architecture": self.same_architecture,
            "inputs": [c.to_dict() for c in self.inputs],
            "layers": [c.to_dict() for c in self.layers],
            "outputs": {"old": self.outputs[0], "new": self.outputs[1]} if self.outputs else None,
            "params": {"old": old, "new": new, "delta": (new or 0) - (old or 0)},
            "settings": [s.to_dict() for s in self.settings],
            "space": [s.to_dict() for s in self.space],
        }


# ---------------------------------------------------------------------------------------------- values


def _snake(cls: str) -> str:
    """A Keras class as a spec spells it: `PiecewiseConstantDecay` -> `piecewise_constant_decay`, `AdamW` -> `adamw`."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", cls).lower()
    odd = "_" in snake and any(len(p) <= 2 and not p[-1:].isdigit() for p in snake.split("_"))
    return cls.lower() if odd else snake


def show(value: Any) -> str:
    """A plan value written as in a spec: `adam(learning_rate=0.001)`, `(3, 3)`, `true`, `same`."""
    if value is _UNSET:
        return "(unset)"
    if isinstance(value, Obj):
        return f"{_snake(value.cls)}({', '.join(f'{k}={show(v)}' for k, v in value.kwargs.items())})"
    if value is None or isinstance(value, bool):
        return {None: "none", True: "true", False: "false"}[value]
    if isinstance(value, float):
        text = repr(value)
        return text if len(text) <= 10 else format(value, ".6g")
    if isinstance(value, str):
        return value if re.fullmatch(r"[A-Za-z_][\w.]*", value) else json.dumps(value)
    if isinstance(value, tuple):
        return "(" + ", ".join(map(show, value)) + ("," if len(value) == 1 else "") + ")"
    if isinstance(value, list):
        return "[" + ", ".join(map(show, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {show(v)}" for k, v in value.items()) + "}"
    return str(value)


def _jsonable(value: Any) -> Any:
    """A value for `--format json`: Keras objects as their spec text, tuples as lists."""
    if value is _UNSET or isinstance(value, Obj):
        return show(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, BaseModel):  # a contract of `expect`: as the spec writes it
        return str(value)
    return value


def _same(a: Any, b: Any) -> bool:
    """Equal plan values, where `3` and `(3, 3)` are the same kernel size or stride, and `true` is not `1`."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if a == b:
        return True
    if isinstance(a, tuple) and not isinstance(b, tuple):
        a, b = b, a
    return (isinstance(a, int) and isinstance(b, tuple) and len(b) > 0
            and all(x == a and not isinstance(x, bool) for x in b))


# ---------------------------------------------------------------------------------------------- layers


def _layer_class(node: LayerNode):

    return catalog("layer").get_class(node.cls)


@functools.lru_cache(maxsize=None)
def _defaults_of(cls) -> dict[str, Any]:
    params = inspect.signature(cls.__init__).parameters.values()
    return {p.name: p.default for p in params if p.default is not p.empty}


def _defaults(node: LayerNode) -> dict[str, Any]:
    """The Keras defaults of a layer's constructor arguments."""
    return _defaults_of(_layer_class(node))


def layer_args(node: LayerNode) -> dict[str, Any]:
    """A layer's arguments, constructor and call options, leaving out those equal to the Keras default."""
    defaults = _defaults(node)
    args = {**node.kwargs, **node.call_kwargs}
    return {k: v for k, v in args.items() if not (k in defaults and _same(v, defaults[k]))}


def _signatures(plan: Plan | None) -> list[str]:
    """What identifies each layer regardless of its name: class, arguments, and where its inputs are
    (a model input by position, a layer by its distance back)."""
    if plan is None:
        return []
    position = {layer.name: j for j, layer in enumerate(plan.layers)}
    inputs = {inp.name: k for k, inp in enumerate(plan.inputs)}
    out = []
    for i, node in enumerate(plan.layers):
        wiring = tuple(("input", inputs[s]) if s in inputs else i - position[s] for s in node.inputs)
        args = sorted((k, show(v)) for k, v in layer_args(node).items())
        out.append(repr((_layer_class(node).__name__, args, wiring)))
    return out


def match_layers(a: Plan | None, b: Plan | None) -> list[tuple[int | None, int | None]]:
    """Align the layers of A with those of B, in order: (i, j) pairs a layer of A with one of B;
    (i, None) is a layer removed, (None, j) one added. Identical layers are aligned first (a diff of
    their signatures); within what differs, layers of the same class are paired, the rest added or removed."""
    la = a.layers if a else []
    lb = b.layers if b else []
    sa, sb = _signatures(a), _signatures(b)
    pairs: list[tuple[int | None, int | None]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, sa, sb, autojunk=False).get_opcodes():
        if op == "equal":
            pairs += [(i1 + k, j1 + k) for k in range(i2 - i1)]
            continue
        ca = [_layer_class(n).__name__ for n in la[i1:i2]]
        cb = [_layer_class(n).__name__ for n in lb[j1:j2]]
        for op2, p1, p2, q1, q2 in difflib.SequenceMatcher(None, ca, cb, autojunk=False).get_opcodes():
            if op2 == "equal":
                pairs += [(i1 + p1 + k, j1 + q1 + k) for k in range(p2 - p1)]
            else:
                pairs += [(i1 + k, None) for k in range(p1, p2)] + [(None, j1 + k) for k in range(q1, q2)]
    return pairs


def _is_automatic(name: str) -> bool:
    """Whether a layer name is one specc generated (`dense_2`, `batchnorm`), not one the spec chose."""
    layers = catalog("layer")
    base = re.sub(r"_\d+$", "", name)
    return base == "activation" or layers.class_name(base) is not None or layers.class_name(name) is not None


def _params(plan: Plan | None) -> tuple[dict[str, int], int | None]:
    """Each layer's parameter count, and the total, from `summarize` (shapes only, no weights)."""
    if plan is None:
        return {}, None
    from specc.compile.build import shapes_only, summarize

    with shapes_only():
        rows, total = summarize(plan)
    return {r.name: r.params for r in rows}, total


def _pair_inputs(a: Plan | None, b: Plan | None) -> list[tuple[int | None, int | None]]:
    """Inputs of A and B paired by name, then the rest by position."""
    ia, ib = (a.inputs if a else []), (b.inputs if b else [])
    names_b = {x.name: j for j, x in enumerate(ib)}
    pairs = [(i, names_b[x.name]) for i, x in enumerate(ia) if x.name in names_b]
    rest_a = [i for i in range(len(ia)) if i not in {p for p, _ in pairs}]
    rest_b = [j for j in range(len(ib)) if j not in {q for _, q in pairs}]
    n = min(len(rest_a), len(rest_b))
    pairs += list(zip(rest_a[:n], rest_b[:n]))
    return sorted(pairs) + [(i, None) for i in rest_a[n:]] + [(None, j) for j in rest_b[n:]]


def _diff_inputs(a: Plan | None, b: Plan | None, pairs: list[tuple[int | None, int | None]]) -> list[ItemChange]:
    ia, ib = (a.inputs if a else []), (b.inputs if b else [])
    out = []
    for i, j in pairs:
        x = ia[i] if i is not None else None
        y = ib[j] if j is not None else None
        if x is None or y is None:
            node = y if x is None else x
            assert node is not None  # `_pair_inputs` never pairs nothing with nothing
            out.append(ItemChange("added" if x is None else "removed", node.name, "Input",
                                  args={"shape": node.shape, "dtype": node.dtype}))
            continue
        changes = [(k, getattr(x, k), getattr(y, k)) for k in ("name", "shape", "dtype")
                   if getattr(x, k) != getattr(y, k)]
        if changes:
            out.append(ItemChange("changed", y.name, "Input", old_name=x.name, changes=changes))
    return out


# ---------------------------------------------------------------------------------------------- settings


def _settings(plan: Plan | None) -> dict[str, Any]:
    """Every setting the spec gives a value other than the default, as `section.key` -> value."""
    if plan is None:
        return {}
    out: dict[str, Any] = {}
    for section in (s.plan for s in SECTIONS.values() if s.plan):  # the sections whose settings the plan keeps
        values = getattr(plan, section)
        if values is None:
            continue
        for name, f in type(values).model_fields.items():
            value = getattr(values, name)
            if not f.exclude and value != f.get_default(call_default_factory=True):
                out[f"{section}.{f.alias or name}"] = value
    if plan.device != "auto":
        out["device"] = plan.device
    if plan.distribution is not None:  # the `device` section's parallel, mesh, axes and layout
        for name in DISTRIBUTION_SETTINGS:
            value = getattr(plan.distribution, name)
            if value:
                out[f"device.{name}"] = value
    return out


def _default_setting(plan: Plan | None, key: str) -> Any:
    """The default of a setting, if the plan has its section (else `_UNSET`: the section is absent)."""
    if plan is None:
        return _UNSET
    if key == "device":
        return "auto"
    if key.startswith("device."):  # the `device` section's distribution settings: absent means none
        return _UNSET if plan.distribution is None else None
    section, name = key.split(".", 1)
    values = getattr(plan, section)
    if values is None:
        return _UNSET
    f = next((f for n, f in type(values).model_fields.items() if (f.alias or n) == name), None)
    return f.get_default(call_default_factory=True) if f and not f.is_required() else _UNSET


def diff_settings(a: Plan | None, b: Plan | None) -> list[SettingChange]:
    """The settings whose values differ. A setting left out is compared as its default when the
    section is there; a setting of a section one side lacks is added or removed."""
    sa, sb = _settings(a), _settings(b)
    out = []
    for key in list(sa) + [k for k in sb if k not in sa]:
        old = sa.get(key, _default_setting(a, key))
        new = sb.get(key, _default_setting(b, key))
        if old is _UNSET:
            out.append(SettingChange(key, "added", None, new))
        elif new is _UNSET:
            out.append(SettingChange(key, "removed", old, None))
        elif not _same(old, new):
            out.append(SettingChange(key, "changed", old, new))
    return out


# ---------------------------------------------------------------------------------------------- the diff


def _paired_names(xs: Sequence[InputNode | LayerNode], ys: Sequence[InputNode | LayerNode],
                  pairs: list[tuple[int | None, int | None]]) -> dict[str, str]:
    """The name in B of each node of A that is paired with one."""
    return {xs[i].name: ys[j].name for i, j in pairs if i is not None and j is not None}


def _added_or_removed(x: LayerNode | None, y: LayerNode | None, params_a: dict[str, int],
                      params_b: dict[str, int]) -> ItemChange:
    """A layer that only B has (x is None: added) or only A has (removed)."""
    node = y if x is None else x
    assert node is not None  # `match_layers` never pairs nothing with nothing
    params = (None, params_b.get(node.name)) if x is None else (params_a.get(node.name), None)
    return ItemChange("added" if x is None else "removed", node.name, _layer_class(node).__name__,
                      args={**node.kwargs, **node.call_kwargs}, inputs=list(node.inputs), params=params)


def _through(name: str, skipped: dict[str, LayerNode]) -> str:
    """Follow a single-input layer that was added (or removed) back to what it reads."""
    while name in skipped and len(skipped[name].inputs) == 1:
        name = skipped[name].inputs[0]
    return name


def _changed_layer(x: LayerNode, y: LayerNode, rewired: bool, params: tuple[int | None, int | None]) -> ItemChange | None:
    """Layer x of A matched with layer y of B: what changed (name, arguments against Keras's defaults, wiring,
    parameters), or None if nothing did."""
    old_args, new_args = layer_args(x), layer_args(y)
    defaults = _defaults(x)
    changes = []
    if x.name != y.name and not (_is_automatic(x.name) and _is_automatic(y.name)):
        changes.append(("name", x.name, y.name))
    for k in list(old_args) + [k for k in new_args if k not in old_args]:
        old, new = old_args.get(k, defaults.get(k, _UNSET)), new_args.get(k, defaults.get(k, _UNSET))
        if not _same(old, new):
            changes.append((k, old, new))
    wiring = (list(x.inputs), list(y.inputs)) if rewired else None
    if not (changes or wiring or params[0] != params[1]):
        return None
    return ItemChange("changed", y.name, _layer_class(y).__name__, old_name=x.name, changes=changes, wiring=wiring,
                      params=params)


def diff_plans(a: Plan | None, b: Plan | None, old_label: str = "A", new_label: str = "B") -> SpecDiff:
    """The semantic difference between plan A (old) and plan B (new); None stands for no file (`/dev/null`).
    Builds both models (Keras) for their parameter counts; raises `SpecError` if one does not build."""
    params_a, total_a = _params(a)
    params_b, total_b = _params(b)
    input_pairs = _pair_inputs(a, b)
    inputs = _diff_inputs(a, b, input_pairs)
    pairs = match_layers(a, b)
    la, lb = (a.layers if a else []), (b.layers if b else [])
    # The name each node of A has in B (inputs and matched layers), to compare wiring across renames.
    to_b = _paired_names(a.inputs if a else [], b.inputs if b else [], input_pairs)
    to_b |= _paired_names(la, lb, pairs)
    removed = {la[i].name: la[i] for i, j in pairs if i is not None and j is None}
    added = {lb[j].name: lb[j] for i, j in pairs if i is None and j is not None}

    layers: list[ItemChange] = []
    for i, j in pairs:
        x = la[i] if i is not None else None
        y = lb[j] if j is not None else None
        if x is None or y is None:
            layers.append(_added_or_removed(x, y, params_a, params_b))
            continue
        old_wiring = [to_b.get(_through(s, removed), "?" + s) for s in x.inputs]
        change = _changed_layer(x, y, old_wiring != [_through(s, added) for s in y.inputs],
                                (params_a.get(x.name), params_b.get(y.name)))
        if change is not None:
            layers.append(change)
    outputs = None
    if a is not None and b is not None and [to_b.get(o, "?" + o) for o in a.outputs] != list(b.outputs):
        outputs = (list(a.outputs), list(b.outputs))
    return SpecDiff(old_label, new_label, (a.name if a else None, b.name if b else None), inputs, layers,
                    outputs, (total_a, total_b), diff_settings(a, b), diff_space(a, b))


def diff_space(a: Plan | None, b: Plan | None) -> list[SpaceChange]:
    """The values chosen for A's search spaces in B (`best.model` against its spec), or the spaces B opens where A
    has values; spaces on both sides compared as written. B edited besides its values: each space as gone."""
    from specc.compile.space import values_in

    if a is None or b is None or not (a.space or b.space):
        return []
    if a.space and b.space:
        old, new = {d.name: d.written for d in a.space}, {d.name: d.written for d in b.space}
        return [SpaceChange(k, old.get(k, "-"), new.get(k, "-")) for k in {**old, **new} if old.get(k) != new.get(k)]
    spaced, other = (a, b) if a.space else (b, a)
    values = values_in(spaced.source, spaced.space, other.source) or {}
    pairs = [(d.written, values.get(d.name, "-")) for d in spaced.space]
    return [SpaceChange(d.name, *(pair if spaced is a else pair[::-1])) for d, pair in zip(spaced.space, pairs)]


# ---------------------------------------------------------------------------------------------- text


def _count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _render_item(c: ItemChange) -> str:
    if c.cls == "Input":
        if c.status == "changed":
            what = ", ".join(f"{k} {show(o)} -> {show(n)}" for k, o, n in c.changes)
            return f"~ input {c.name}: {what}"
        dtype = "" if c.args["dtype"] == "float32" else f" {c.args['dtype']}"
        return f"{'+' if c.status == 'added' else '-'} input {c.name}: {show(c.args['shape'])}{dtype}"
    if c.status == "changed":
        parts = [f"{k} {show(o)} -> {show(n)}" for k, o, n in c.changes]
        if c.wiring:
            parts.append(f"inputs {', '.join(c.wiring[0])} -> {', '.join(c.wiring[1])}")
        what = ", ".join(parts)
        old, new = c.params
        if old != new:
            what += ("; " if what else "") + f"params {_count(old)} -> {_count(new)}"
        renamed = c.old_name != c.name and not any(k == "name" for k, _, _ in c.changes)
        return f"~ {c.name} ({c.cls}{f', was {c.old_name}' if renamed else ''}): {what}"
    args = ", ".join(f"{k}={show(v)}" for k, v in c.args.items())
    line = f"{'+' if c.status == 'added' else '-'} {c.name} ({c.cls})" + (f" {args}" if args else "")
    line += f" after {', '.join(c.inputs)}"
    count = c.params[1] if c.status == "added" else c.params[0]
    return line + (f"; params {_count(count)}" if count else "")


def render_diff(d: SpecDiff) -> str:
    """The diff as compact text for a terminal and `git log -p`: `~` changed, `+` added, `-` removed."""
    lines = [f"diff {d.old_label} -> {d.new_label}"]
    old_model, new_model = d.models
    if old_model and new_model and old_model != new_model:
        lines.append(f"model {old_model} -> {new_model}")
    lines += [_render_item(c) for c in d.inputs + d.layers]
    if d.outputs:
        lines.append(f"~ outputs {', '.join(d.outputs[0])} -> {', '.join(d.outputs[1])}")
    old, new = d.params
    if old is None and new is None:
        lines.append("no model")
    elif old is None or new is None:
        lines.append(f"total params {_count(old if new is None else new)} ({'new' if old is None else 'deleted'} spec)")
    elif d.same_architecture:
        lines.append(f"no architecture changes (total params {new:,})")
    else:
        delta = f"{new - old:+,}" if new != old else "unchanged"
        lines.append(f"total params {old:,} -> {new:,} ({delta})")
    for s in d.settings:
        if s.status == "changed":
            lines.append(f"{s.key}: {show(s.old)} -> {show(s.new)}")
        elif s.status == "added":
            lines.append(f"+ {s.key}: {show(s.new)}")
        else:
            lines.append(f"- {s.key}: {show(s.old)}")
    lines += [f"search space {c.name}: {c.old} -> {c.new}" for c in d.space]
    if not d.settings and not d.space and d.same_architecture:
        lines.append("no setting changes")
    # File names and layer names are the files' own: one line each, nothing a terminal obeys.
    return "\n".join(printable(line, lines=False) for line in lines)


# ------------------------------------------------------------------------------------ the two sides


def compile_or_none(text: str | None, label: str) -> Plan | None:
    """The plan of a spec's text; None for a side that has no spec (`/dev/null`)."""
    from specc.compile.check import compile_text

    return None if text is None else compile_text(text, label)


def read_or_null(path: str) -> str | None:
    """A spec's text, read as every spec is (a regular file, within the size limit, UTF-8); None for `/dev/null`."""
    from specc.lang.syntax import read_spec

    return None if path == NULL else read_spec(path)


def text_diff(a: str | None, b: str | None, la: str, lb: str) -> str:
    """A unified diff of two texts (what a git driver shows when a spec does not compile)."""
    from specc.lang.fmt import text_lines

    lines = difflib.unified_diff(text_lines(a or ""), text_lines(b or ""), la, lb)
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
