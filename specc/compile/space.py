"""Search spaces: the values a spec leaves to `specc tune`, found, named, checked and substituted.

Wherever a value can stand (a layer's or block's argument, a `let`, a setting, an optimizer's learning rate), a
space may stand instead:

    choice(64, 128, 256)           one of the values written: numbers, names, strings, whole calls
    uniform(0.0, 0.5)              a number between the two ends, both included
    loguniform(1e-4, 1e-2)         the same, drawn evenly on a log scale (learning rates, weight decays)
    intrange(32, 256, step=32)     a whole number between the ends, both included, on a grid of `step` (default 1)

Each takes `default=VALUE`: the value `specc run`, `specc check` and `specc summary` use. Without it: a choice's
first value, a range's middle (for `loguniform`, the middle of the log scale: 1e-3 for 1e-4..1e-2; for `intrange`,
the grid value at or below the middle).

A space in a `let` takes the let's name (and every use of the constant shares its one value); any other gets a
name from where it stands: `dense.units` (the layer or block and its parameter), `adam.learning_rate`,
`batch_size` (a setting), `repeat` (a count); a name used twice gets `_2`, `_3` in the order written.

`check_spaces` checks the spec at its default point (that is the plan), then at every other value of a choice
and at both ends of every range, the other spaces at their defaults, and at the two corners where every number
is at its smallest and at its largest: an error found only at a value is located on that value, naming it and
where it breaks the spec. A trial's spec is the text with each space replaced by its value (`substitute`):
everything else, comments included, is kept as written, so `best.model` differs from the spec by exactly the
chosen values.
"""

from __future__ import annotations

import functools
import math
import re
from typing import Any, Callable, Iterator

from specc.core import nodes as n
from specc.core.errors import Diagnostic, Source, SpecError, did_you_mean
from specc.core.plan import Dimension, Plan
from specc.lang.edits import apply_edits, bounds, line_starts

#: The spaces, by the name a spec calls them with, and what each is, for messages and `docs/language.md`.
SPACE_KINDS: dict[str, str] = {
    "choice": "one of the values written",
    "uniform": "a number between two ends",
    "loguniform": "a number between two ends, on a log scale",
    "intrange": "a whole number between two ends, on a grid of `step`",
}

MAX_CHOICES = 64  # options of one choice
MAX_SPACES = 32  # spaces in one spec
MAX_POINTS = 128  # points `check_spaces` checks besides the default and the corners, before it checks ends only

Point = dict[str, Any]  # a value for each space, by name


def is_space(e: object) -> bool:
    return isinstance(e, n.Call) and e.func in SPACE_KINDS


def has_spaces(spec: n.Spec) -> bool:
    """Whether the spec holds a space anywhere (cheap: no Keras)."""
    return next(_space_calls(spec), None) is not None


# --- finding and naming -------------------------------------------------------------------------------------


class _Found:
    """A space call as written, with the name its place gives it (before names used twice are numbered)."""

    def __init__(self, call: n.Call, name: str, from_let: bool):
        self.call, self.name, self.from_let = call, name, from_let


def find_spaces(spec: n.Spec, src: Source, param_name: Callable[[str, int], str | None]) -> list[Dimension]:
    """Every space in the spec, checked as written (its kind, options, ends, step, default) and named.

    `param_name(func, i)` names the i-th positional argument of a layer, block or Keras object (None: unknown),
    for a space given by position. Raises `SpecError` listing every malformed space."""
    found: list[_Found] = []
    errors: list[Diagnostic] = []

    def visit(e: Any, name: str | Callable[[], str], from_let: bool = False) -> None:
        """`e` stands where a value named `name` stands (a function giving it: a parameter's name is looked up only
        for a space)."""
        if isinstance(e, n.Call):
            if e.func in SPACE_KINDS:
                found.append(_Found(e, name if isinstance(name, str) else name(), from_let))
                for inner in _subexprs(e):
                    for nested in _walk_calls(inner):
                        if nested.func in SPACE_KINDS:
                            errors.append(src.diag(
                                f"a space inside a space: `{nested.func}(...)` within `{e.func}(...)`",
                                nested.name_span or nested.span,
                                "write each space on its own (a choice among whole calls takes fixed values)"))
                return
            for i, a in enumerate(e.args):
                visit(a, functools.partial(_positional, param_name, e.func, i))
            for kw in e.kwargs:
                visit(kw.value, f"{e.func}.{kw.name}")
        elif isinstance(e, (n.Tuple, n.List)):
            for item in e.items:
                visit(item, name)
        elif isinstance(e, n.BinOp):
            visit(e.left, name)
            visit(e.right, name)
        elif isinstance(e, n.Neg):
            visit(e.operand, name)

    for let in spec.lets:
        visit(let.value, let.name, from_let=True)
    for block in spec.blocks:
        if block.name in SPACE_KINDS:
            errors.append(src.diag(f"a block cannot be named `{block.name}`: `{block.name}(...)` is a search space",
                                   block.span, "give the block another name"))
    for s in spec.settings:
        _untuned(s, "the file's settings", errors, src)
    for sec in spec.sections:
        for s in sec.settings:
            if sec.name in UNTUNED_SECTIONS:
                _untuned(s, f"`{sec.name}`'s settings", errors, src)
                continue
            visit(s.value, s.key if sec.name == "train" else f"{sec.name}.{s.key}")
    for block in spec.blocks:
        for p in block.params:
            if p.default is not None:
                visit(p.default, f"{block.name}.{p.name}")
        _visit_body(block.body, visit, errors, src)
    for model in spec.models:
        _visit_body(model.body, visit, errors, src)

    found.sort(key=lambda f: _key(f.call.span) or (0, 0))  # in the order written
    if len(found) > MAX_SPACES:
        errors.append(src.diag(f"{len(found)} spaces: a spec may hold at most {MAX_SPACES}", found[MAX_SPACES].call.span,
                               "tune fewer values at once; fix the others at their best values"))
    dims: list[Dimension] = []
    for f in found[:MAX_SPACES]:
        try:
            dims.append(_dimension(f.call, f.name, src))
        except SpecError as err:
            errors.extend(err.diagnostics)
    if errors:
        raise SpecError(sorted(errors, key=_where))
    return _numbered(dims, [f.from_let for f in found])


#: Sections whose settings say how the spec is run, tested or tuned, not what is trained: never searched.
UNTUNED_SECTIONS = ("tune", "expect", "device")


def _untuned(s: n.Setting, where: str, errors: list[Diagnostic], src: Source) -> None:
    errors.extend(src.diag(f"{where} are not tuned: `{c.func}(...)` in `{s.key}`", c.name_span or c.span,
                           "write one value") for c in _walk_calls(s.value) if c.func in SPACE_KINDS)


def _positional(param_name: Callable[[str, int], str | None], func: str, i: int) -> str:
    return f"{func}.{param_name(func, i) or i}"


def _visit_body(body: list, visit, errors: list[Diagnostic], src: Source) -> None:
    for stmt in body:
        if isinstance(stmt, n.Chain):
            for step in stmt.steps:
                if isinstance(step, n.Call) and step.func in SPACE_KINDS:
                    errors.append(src.diag(
                        f"`{step.func}(...)` stands for a value, not a layer", step.name_span or step.span,
                        "put the space in a layer's argument, `dense(choice(64, 128))`, or choose between layers "
                        "with a block argument: `block head(act) { ... }`"))
                elif isinstance(step, n.Call):
                    visit(step, step.func)
        elif isinstance(stmt, n.Repeat):
            visit(stmt.count, "repeat")
            _visit_body(stmt.body, visit, errors, src)
        elif isinstance(stmt, n.Parallel):
            visit(stmt.merge, stmt.merge.func)
            for branch in stmt.branches:
                _visit_body(branch.body, visit, errors, src)


def _subexprs(call: n.Call) -> list[n.Expr]:
    return [*call.args, *(kw.value for kw in call.kwargs)]


def _walk_calls(e: Any) -> Iterator[n.Call]:
    if isinstance(e, n.Call):
        yield e
        for a in _subexprs(e):
            yield from _walk_calls(a)
    elif isinstance(e, (n.Tuple, n.List)):
        for item in e.items:
            yield from _walk_calls(item)
    elif isinstance(e, n.BinOp):
        yield from _walk_calls(e.left)
        yield from _walk_calls(e.right)
    elif isinstance(e, n.Neg):
        yield from _walk_calls(e.operand)


def _numbered(dims: list[Dimension], from_let: list[bool]) -> list[Dimension]:
    """Names used twice, numbered `_2`, `_3` in the order written (a `let` keeps its own name: it is unique)."""
    taken = {d.name for d, own in zip(dims, from_let) if own}
    seen: dict[str, int] = {}
    out = []
    for d, own in zip(dims, from_let):
        if not own:
            count = seen[d.name] = seen.get(d.name, 0) + 1
            name = d.name if count == 1 and d.name not in taken else f"{d.name}_{count}"
            while name in taken:
                count += 1
                name = f"{d.name}_{count}"
            taken.add(name)
            d = d.model_copy(update={"name": name})
        out.append(d)
    return out


# --- one space as written -----------------------------------------------------------------------------------


def _dimension(call: n.Call, name: str, src: Source) -> Dimension:
    kwargs = {kw.name: kw for kw in call.kwargs}
    allowed = {"default"} | ({"step"} if call.func == "intrange" else set())
    for i, kw in enumerate(call.kwargs):
        if any(other.name == kw.name for other in call.kwargs[:i]):
            raise src.error(f"`{kw.name}` is given twice", kw.name_span or kw.span, "give it once")
        if kw.name not in allowed:
            hint = did_you_mean(kw.name, sorted(allowed)) or f"`{call.func}` takes " + " and ".join(
                f"`{a}=`" for a in sorted(allowed))
            raise src.error(f"`{call.func}` has no option `{kw.name}`", kw.name_span or kw.span, hint)
    text = _slicer(src.text)
    if call.func == "choice":
        return _choice(call, name, src, text, kwargs.get("default"))
    return _range(call, name, src, kwargs).model_copy(update={"written": text(call.span)})


def _choice(call: n.Call, name: str, src: Source, text: Callable[[n.Span | None], str],
            default: n.Kwarg | None) -> Dimension:
    if len(call.args) < 2:
        raise src.error(f"`choice` needs at least two values to choose among, got {len(call.args)}",
                        call.name_span or call.span, "write `choice(64, 128, 256)`, or the value itself")
    if len(call.args) > MAX_CHOICES:
        raise src.error(f"`choice` of {len(call.args)} values: at most {MAX_CHOICES}", call.args[MAX_CHOICES].span,
                        "use `intrange(low, high, step=...)` for a grid of numbers")
    # An option that is an operation is written in parentheses where it stands: `2 * choice(1 + 1, 3)` -> `2 * (1 + 1)`.
    texts = [f"({text(a.span)})" if isinstance(a, n.BinOp) else text(a.span) for a in call.args]
    numbers = [_number(a) for a in call.args]
    choices: list[Any] = numbers if all(v is not None for v in numbers) else texts
    for i, v in enumerate(choices):
        if v in choices[:i]:
            raise src.error(f"`choice` lists {texts[i]} twice", call.args[i].span, "write each value once")
    if default is None:
        first = choices[0]
    else:
        want = _number(default.value) if choices is numbers else (
            f"({text(default.value.span)})" if isinstance(default.value, n.BinOp) else text(default.value.span))
        if want not in choices:
            raise src.error(f"the default {text(default.value.span)} is not one of the choices",
                            default.value.span, f"choose one of: {', '.join(texts)}")
        first = want
    return Dimension(name=name, kind="choice", choices=choices, texts=texts, default=first, span=call.span,
                     written=text(call.span),
                     value_spans=[a.span for a in call.args if a.span is not None])


_EXAMPLES = {"uniform": "uniform(0.0, 0.5)", "loguniform": "loguniform(1e-4, 1e-2)",
             "intrange": "intrange(32, 256, step=32)"}


def _range(call: n.Call, name: str, src: Source, kwargs: dict[str, n.Kwarg]) -> Dimension:
    """`uniform`, `loguniform` or `intrange` as written: its ends, its step, its default."""
    kind = call.func
    low, high = _ends(call, src)
    step = _step(call, src, low, high, kwargs.get("step")) if kind == "intrange" else None
    if not low < high:
        raise src.error(f"the low end {text_of_number(low)} is not below the high end {text_of_number(high)}",
                        call.args[0].span, f"write the ends in order: `{kind}(low, high)`")
    if kind == "loguniform" and low <= 0:
        raise src.error(f"a log scale needs ends above 0, got {text_of_number(low)}", call.args[0].span,
                        "use `uniform` for a range that starts at 0 or below")
    default_kw = kwargs.get("default")
    default = _middle(kind, low, high, step) if default_kw is None else _range_default(default_kw, src, low, high, step)
    return Dimension(name=name, kind=kind, low=low, high=high, step=step, default=default, span=call.span,
                     value_spans=[a.span for a in call.args if a.span is not None])


def _ends(call: n.Call, src: Source) -> tuple[int | float, int | float]:
    if len(call.args) != 2:
        raise src.error(f"`{call.func}` takes its two ends, low and high, got {len(call.args)} values",
                        call.name_span or call.span, f"write `{_EXAMPLES[call.func]}`")
    ends = [_number(a) for a in call.args]
    for a, v in zip(call.args, ends):
        if v is None:
            raise src.error(f"the ends of `{call.func}` are numbers written in it", a.span,
                            f"write `{_EXAMPLES[call.func]}`")
    low, high = ends
    assert low is not None and high is not None
    return low, high


def _step(call: n.Call, src: Source, low: int | float, high: int | float, step_kw: n.Kwarg | None) -> int:
    """`intrange`'s grid: whole ends, a whole step >= 1 that divides the range."""
    given = _number(step_kw.value) if step_kw else 1
    for a, v in [*zip(call.args, (low, high)), *([(step_kw.value, given)] if step_kw else [])]:
        if not isinstance(v, int):
            raise src.error(f"`intrange` takes whole numbers, got `{_slicer(src.text)(a.span)}`", a.span,
                            "use `uniform` for a range of fractions")
    step = int(given) if given is not None else 0
    if step < 1:
        raise src.error("`step` is a whole number >= 1", step_kw.value.span if step_kw else call.span)
    if (high - low) % step:
        raise src.error(f"the range {low}..{high} is not a whole number of steps of {step}", call.args[1].span,
                        f"end it at {low + (high - low) // step * step} or {low + ((high - low) // step + 1) * step}")
    return step


def _range_default(default_kw: n.Kwarg, src: Source, low: int | float, high: int | float,
                   step: int | None) -> int | float:
    default = _number(default_kw.value)
    if default is None or not low <= default <= high or (step and (default - low) % step):
        raise src.error(f"the default {text_of_number(default) if default is not None else 'value'} is not in "
                        f"the range", default_kw.value.span,
                        f"choose a number from {text_of_number(low)} to {text_of_number(high)}"
                        + (f" on the grid of {step}" if step and step > 1 else ""))
    return default


def _middle(kind: str, low: float, high: float, step: int | None) -> float | int:
    if kind == "intrange":
        assert step is not None
        return int(low + (int(high - low) // step // 2) * step)
    if kind == "loguniform":
        return float(format(10 ** ((math.log10(low) + math.log10(high)) / 2), ".6g"))
    return float(format((low + high) / 2, ".6g"))


def _number(e: n.Expr | None) -> int | float | None:
    """The number a literal is (`3`, `-0.5`, `1e-4`), else None."""
    if isinstance(e, n.Number) and not isinstance(e.value, bool):
        return e.value
    if isinstance(e, n.Neg):
        v = _number(e.operand)
        return -v if v is not None else None
    return None


def text_of_number(v: Any) -> str:
    return str(v) if isinstance(v, int) else repr(v) if isinstance(v, float) else str(v)


def _slicer(text: str) -> Callable[[n.Span | None], str]:
    """The source text a span covers."""
    starts = line_starts(text)

    def cut(span: n.Span | None) -> str:
        if span is None:
            return ""
        start, end = bounds(starts, span)
        return text[start:end]

    return cut


# --- points ---------------------------------------------------------------------------------------------------


def default_point(dims: list[Dimension]) -> Point:
    return {d.name: d.default for d in dims}


def corner(dims: list[Dimension], largest: bool) -> Point:
    """Every number at its smallest (or largest); a choice of names at its default."""
    point = default_point(dims)
    for d in dims:
        if d.kind != "choice":
            point[d.name] = d.high if largest else d.low
        elif all(isinstance(v, (int, float)) for v in d.choices):
            point[d.name] = max(d.choices) if largest else min(d.choices)
    return point


def grid(d: Dimension) -> list[int]:
    """Every value of an `intrange` of at most `MAX_CHOICES` values (checked one by one, like a choice's), else []."""
    if d.kind != "intrange" or d.low is None or d.high is None or not d.step:
        return []
    if (int(d.high) - int(d.low)) // d.step + 1 > MAX_CHOICES:  # counted first: a range may be astronomically long
        return []
    return list(range(int(d.low), int(d.high) + 1, d.step))


def _values(d: Dimension) -> list[Any]:
    values: list[Any] = list(d.choices) if d.kind == "choice" else grid(d) or [d.low, d.high]
    if d.kind in ("uniform", "loguniform"):
        values.append(_inside(d))  # a value that is not whole: where a whole number is needed, a draw breaks
    return values


def _inside(d: Dimension) -> float:
    """A number a third of the way into a float range: not whole, unlike the ends and the middle of `uniform(1, 3)`."""
    assert d.low is not None and d.high is not None
    if d.kind == "loguniform":
        return 10 ** (math.log10(d.low) + (math.log10(d.high) - math.log10(d.low)) / 3)
    return d.low + (d.high - d.low) / 3


def probes(dims: list[Dimension]) -> Iterator[tuple[Point, Dimension, Any]]:
    """The points checked besides the default: each other value of a choice and each end of a range (the other
    spaces at their defaults; every value of a short `intrange`), with the space and value that make each differ.
    More than `MAX_POINTS` in all: a choice's or grid's first and last values only, so that a check stays quick."""
    base = default_point(dims)
    every = {d.name: _values(d) for d in dims}
    if sum(len(v) for v in every.values()) > MAX_POINTS:
        every = {name: values if len(values) <= 3 else [values[0], values[-1]] for name, values in every.items()}
    for d in dims:
        for v in every[d.name]:
            if v != d.default:
                yield {**base, d.name: v}, d, v


def substitute(text: str, dims: list[Dimension], point: Point) -> str:
    """The spec text with each space replaced by its value in `point` as spec text; nothing else changes. A space
    written over several lines leaves as many line breaks after its value, so that every later line keeps its number
    (an error in a trial's spec points at the user's line)."""
    starts = line_starts(text)
    newline = "\r\n" if "\r\n" in text else "\n"
    return apply_edits(text, [(*bounds(starts, d.span), d.text_of(point[d.name]) + newline * (d.span.end_line - d.span.line))
                              for d in dims if d.span is not None])


def template(text: str, dims: list[Dimension]) -> str:
    """The spec text with each space replaced by its name in braces, `{width}`: what stays the same for every
    point of the space (`specc tune` tells a changed spec from a study's by it)."""
    starts = line_starts(text)
    return apply_edits(text, [(*bounds(starts, d.span), "{" + d.name + "}") for d in dims if d.span is not None])


_NUMBER = re.compile(r"-?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?")


def values_in(text: str, dims: list[Dimension], other: str) -> dict[str, str] | None:
    """Each space's value as written in `other`, when `other` is `text` with each space replaced by one of its values
    (`substitute`: `best.model` and its spec) and nothing else changed; else None. Each space is matched against its
    own values only (a choice's options, a number for a range), so the time is linear in the text, whatever it holds."""
    starts = line_starts(text)
    cuts = sorted((*bounds(starts, d.span), i) for i, d in enumerate(dims) if d.span is not None)
    between = [text[end:cuts[k + 1][0] if k + 1 < len(cuts) else len(text)] for k, (_, end, _) in enumerate(cuts)]
    head = text[:cuts[0][0]] if cuts else text
    if not other.startswith(head):
        return None
    failed: set[tuple[int, int]] = set()

    def match(k: int, pos: int) -> list[str] | None:
        """The values of spaces k.. as `other` writes them from `pos`, or None."""
        if k == len(cuts):
            return [] if pos == len(other) else None
        if (k, pos) in failed:
            return None
        d = dims[cuts[k][2]]
        for value in _candidates(d, other, pos):
            after = pos + len(value)
            for pad in _paddings(d, other, after):
                if other.startswith(between[k], after + pad):
                    rest = match(k + 1, after + pad + len(between[k]))
                    if rest is not None:
                        return [value, *rest]
        failed.add((k, pos))
        return None

    found = match(0, len(head))
    return None if found is None else {dims[i].name: v for (_, _, i), v in zip(cuts, found)}


def _candidates(d: Dimension, text: str, pos: int) -> list[str]:
    if d.kind == "choice":
        return sorted((t for t in d.texts if text.startswith(t, pos)), key=len, reverse=True)
    number = _NUMBER.match(text, pos)
    return [number.group()] if number else []


def _paddings(d: Dimension, text: str, pos: int) -> list[int]:
    """The line breaks `substitute` leaves after a space written over several lines (none in older files)."""
    lines = d.span.end_line - d.span.line if d.span else 0
    for newline in ("\r\n", "\n"):
        if lines and text.startswith(newline * lines, pos):
            return [len(newline) * lines, 0]
    return [0]


def resolve(spec: n.Spec, dims: list[Dimension], point: Point) -> n.Spec:
    """The spec with each space replaced by its value's node, located where the value is written (an option, or an
    end of a range; else the whole space), so that an error the value causes points at it."""
    by_span = {}
    for d in dims:
        v = point[d.name]
        if d.kind == "choice":
            node: n.Expr = _option_nodes(spec, d)[d.choices.index(v)]
        else:
            at = d.span_of(v)
            node = n.Number(value=int(v) if d.kind == "intrange" else float(v), text=d.text_of(v), span=at)
            if v < 0:
                node = n.Neg(operand=n.Number(value=-node.value, text=d.text_of(-v), span=at), span=at)
        by_span[_key(d.span)] = node
    return _replace(spec, by_span)


def _option_nodes(spec: n.Spec, d: Dimension) -> list[n.Expr]:
    for call in _space_calls(spec):
        if _key(call.span) == _key(d.span):
            return list(call.args)
    raise AssertionError(f"space {d.name} not found")


def _space_calls(node: Any) -> Iterator[n.Call]:
    if isinstance(node, n.Call) and node.func in SPACE_KINDS:
        yield node
        return
    if isinstance(node, n.Node):
        for k in type(node).model_fields:
            yield from _space_calls(getattr(node, k))
    elif isinstance(node, list):
        for item in node:
            yield from _space_calls(item)


def _key(span: n.Span | None) -> tuple[int, int] | None:
    return (span.line, span.col) if span is not None else None


def _replace(node: Any, by_span: dict) -> Any:
    if isinstance(node, n.Call) and node.func in SPACE_KINDS and _key(node.span) in by_span:
        return by_span[_key(node.span)]
    if isinstance(node, n.Node):
        update = {}
        for k in type(node).model_fields:
            old = getattr(node, k)
            new = _replace(old, by_span)
            if new is not old:
                update[k] = new
        return node.model_copy(update=update) if update else node
    if isinstance(node, list):
        items = [_replace(i, by_span) for i in node]
        return items if any(a is not b for a, b in zip(items, node)) else node
    return node


# --- checking every value ----------------------------------------------------------------------------------


def check_spaces(spec: n.Spec, src: Source, dims: list[Dimension], check: Callable[[n.Spec], Plan]) -> Plan:
    """The plan at the default point, after checking the spec at every probe and both corners (`check`: the
    checker on a spec without spaces). Raises one `SpecError` with every error, those found only at a value
    located on that value."""
    errors: list[Diagnostic] = []
    plan = None
    try:
        plan = check(resolve(spec, dims, default_point(dims)))
    except SpecError as err:
        errors.extend(err.diagnostics)
    seen = {_said(d) for d in errors}
    points = [*probes(dims), *((corner(dims, big), None, None) for big in (False, True))]
    for point, dim, value in points:
        try:
            check(resolve(spec, dims, point))
        except SpecError as err:
            for d in err.diagnostics:
                if _said(d) not in seen:
                    seen.add(_said(d))
                    errors.append(_at_value(d, dims, point, dim, value, src))
    if errors:
        raise SpecError(sorted(errors, key=_where))
    assert plan is not None
    return plan.model_copy(update={"space": dims})


def _where(d: Diagnostic) -> tuple[int, int]:
    return (d.span.line, d.span.col) if d.span else (0, 0)


def _said(d: Diagnostic) -> tuple:
    return (d.span.line, d.span.col, d.message) if d.span else (0, 0, d.message)


def _at_value(d: Diagnostic, dims: list[Dimension], point: Point, dim: Dimension | None, value: Any,
              src: Source) -> Diagnostic:
    """An error found only at a value of a space, located on that value (for a corner: on the first space not at
    its default), with where the spec broke as a note."""
    if dim is None:
        moved = [x for x in dims if point[x.name] != x.default] or dims
        dim, value = moved[0], point[moved[0].name]
        what = ("with every number at its " + ("largest" if point == corner(dims, True) else "smallest") + " ("
                + ", ".join(f"`{x.name}` = {x.text_of(point[x.name])}" for x in moved) + ")")
    else:
        what = f"with `{dim.name}` = {dim.text_of(value)}"
    at = dim.span_of(value)
    notes = list(d.notes)
    if d.span is not None and (at is None or (d.span.line, d.span.col) != (at.line, at.col)):
        notes.insert(0, f"it fails at line {d.span.line}:{d.span.col}: `{_slicer(src.text)(d.span)[:120]}`")
    hint = d.hint or f"remove this value from `{dim.name}`, or change the spec so that it works with it"
    if dim.kind in ("uniform", "loguniform") and "whole number" in d.message:
        hint = f"`intrange({text_of_number(dim.low)}, {text_of_number(dim.high)})` draws whole numbers"
    return src.diag(f"{what}: {d.message}", at, hint, notes)
