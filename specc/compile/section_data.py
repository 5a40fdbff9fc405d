"""The `data` section's validator: its settings (`specc.lang.sections.DATA`) checked into a `DataPlan`.

One handler per setting (`_HANDLERS`), then the rules between settings: one source, pairs that go together, what a
table and text need. `check_data_fits` compares the sizes the section sets with the model's input once both are
checked. What kind of file a path names comes from the data-source registry (`specc.data.sources`).
"""

from __future__ import annotations

import math
from typing import Any, Callable

from specc.compile.shared import Core, fraction, one_of, options, per_example, whole
from specc.core import nodes as n
from specc.core.errors import did_you_mean, show_value
from specc.core.limits import MAX_VOCABULARY
from specc.core.plan import DataPlan, InputNode, MaskedTokens, Origin, SavedTokenizer, TokenizerPlan
from specc.data.sources import layout_of, reads_hint
from specc.data.tokenizers import SPECIALS
from specc.lang.sections import DATA, DATASETS, TASKS, TOKENIZERS

def file_kind(path: str) -> str | None:
    """What the data file `path` holds, by its suffix as written (`arrays`, `table`, `text`, or another layout of a
    registered source); None for a kind specc does not read. The data-source registry decides."""
    return layout_of(path, fold_case=False)


def check_data(ck: Core, sec: n.Section | None) -> DataPlan | None:
    """The `data` section as a `DataPlan` (None without one); every mistake is a located error."""
    if sec is None:
        return None
    given = ck.settings("data", sec.settings)
    plan: dict[str, Any] = {}
    with ck.checking("data"):
        for key, s in given.items():
            v = ck.guarded(_value, ck, key, s.value)
            if v is not None:
                plan[key] = v
    _check_sources(ck, sec, given, plan)
    _check_table(ck, given, plan)
    data = DataPlan(**plan, origins={k: Origin(span=s.span) for k, s in given.items()})
    _check_text(ck, sec, given, data)
    return data


def _check_sources(ck: Core, sec: n.Section, given: dict[str, n.Setting], plan: dict[str, Any]) -> None:
    """One source of examples; arrays named without a file to take them from; `x` without `y`."""
    inline = "x" in given and isinstance(plan.get("x"), list)
    sources = [k for k in ("dataset", "file", "images") if k in given] + (["x"] if inline else [])
    if not sources and "x" not in given:
        ck.fail("`data` needs a source: `dataset: mnist`, `file: \"data.csv\"`, `images: \"folder\"`, or inline "
                "`x: [...]` and `y: [...]`", sec.span)
    elif len(sources) > 1:
        ck.fail(f"`data` has more than one source ({', '.join(sources)}); keep one", given[sources[1]].key_span)
    if "file" not in given:
        for key in ("x", "y", "x_test", "y_test"):
            if key in given and not isinstance(given[key].value, n.List):
                ck.fail(f"`{key}` names an array, but there is no `file` to take it from", given[key].span,
                        f"give the values inline, `{key}: [...]`, or add `file: \"data.npz\"`")
    for pair in (("x", "y"), ("x_test", "y_test")):
        if (pair[0] in given) != (pair[1] in given):
            have, missing = (pair[0], pair[1]) if pair[0] in given else (pair[1], pair[0])
            ck.fail(f"`{have}` needs `{missing}`: they go together", given[have].key_span)


def _check_table(ck: Core, given: dict[str, n.Setting], plan: dict[str, Any]) -> None:
    """A table of examples names its target and its features (or text), unless the model's inputs name columns."""
    if "file" not in given or file_kind(str(plan.get("file", ""))) != "table":
        return
    if "target" not in given and plan.get("task", "classify") == "classify":
        ck.fail("a table of examples needs a `target` column", given["file"].span,
                "name the columns: `features: [a, b]` and `target: c`")
    inputs = sum(isinstance(st, n.Input) for m in ck.spec.models[:1] for st in m.body)
    if not any(k in given for k in ("features", "text")) and inputs <= 1:
        ck.fail("a table of examples needs `features` (number columns) or `text` (a text column)",
                given["file"].span, "e.g. `features: [area, rooms]`; a model with several inputs reads "
                "the columns named after its inputs")


def _check_text(ck: Core, sec: n.Section, given: dict[str, n.Setting], data: DataPlan) -> None:
    """Text needs a length and a tokenizer; the settings of text are for text only."""
    if data.is_text:
        if "sequence_length" not in given:
            ck.fail("text data needs `sequence_length`: the number of tokens per example", sec.span,
                    "e.g. `sequence_length: 64`, the length of the model's input")
        if "tokenizer" not in given and "init" not in {s.name for s in ck.spec.sections}:
            ck.fail("text data needs a `tokenizer`", sec.span,
                    "`tokenizer: chars`, `tokenizer: wordpiece(vocab_size=8000)`, or the path of a saved one")
    elif "sequence_length" in given or "task" in given:
        key = "sequence_length" if "sequence_length" in given else "task"
        ck.fail(f"`{key}` is for text data", given[key].key_span,
                "add `tokenizer: ...` and a text source (`dataset: sst2`, a `.txt` file, or `text: COLUMN`)")


# -- one handler per setting: (checker, key, expression, its value) -> the plan's value ------------------------------


def _value(ck: Core, key: str, e: n.Expr) -> Any:
    # `tokenizer` and `task` are calls of specc's own (`wordpiece(vocab_size=8000)`), read by their handler.
    v = None if isinstance(e, n.Call) and key in ("tokenizer", "task") else ck.value(e, {})
    return _HANDLERS[key](ck, key, e, v)


def _wrong(ck: Core, key: str, e: n.Expr, *got: Any):
    return ck.fail(DATA[key].mistake(*got), e.span)


def _dataset(ck: Core, key: str, e: n.Expr, v: Any) -> str:
    return one_of(ck, v, DATASETS, "dataset", e.span, f"built-in datasets: {', '.join(DATASETS)}; or use `file:`")


def _file(ck: Core, key: str, e: n.Expr, v: Any) -> str:
    if not isinstance(e, n.Str):
        raise _wrong(ck, key, e)
    if file_kind(v) is None:
        raise ck.fail(f"unsupported data file {v!r}", e.span, reads_hint("file"))
    return v


def _path(ck: Core, key: str, e: n.Expr, v: Any) -> str:
    if not isinstance(e, n.Str):
        raise _wrong(ck, key, e)
    return v


def _image_size(ck: Core, key: str, e: n.Expr, v: Any) -> tuple[int, int]:
    if not (isinstance(v, tuple) and len(v) == 2 and all(_positive(d) for d in v)):
        raise _wrong(ck, key, e)
    per_example(ck, v[0] * v[1] * 3, f"images of {v[0]:,} x {v[1]:,} pixels in 3 colours", e.span)
    return v


def _names(ck: Core, key: str, e: n.Expr, v: Any) -> list[str]:
    if not isinstance(v, list) or not v or not all(isinstance(i, str) for i in v):
        raise _wrong(ck, key, e)
    return v


def _name(ck: Core, key: str, e: n.Expr, v: Any) -> str:
    if not isinstance(v, str):
        raise _wrong(ck, key, e)
    return v


def _delimiter(ck: Core, key: str, e: n.Expr, v: Any) -> str:
    if not isinstance(e, n.Str) or len(v.encode().decode("unicode_escape")) != 1:
        raise _wrong(ck, key, e)
    return v.encode().decode("unicode_escape")


def _sequence_length(ck: Core, key: str, e: n.Expr, v: Any) -> int:
    v = whole(ck, v, e, key, minimum=1)
    per_example(ck, v, f"examples of {v:,} tokens", e.span)
    return v


def _tokenizer(ck: Core, key: str, e: n.Expr, v: Any) -> TokenizerPlan | SavedTokenizer:
    if isinstance(e, n.Str):
        return SavedTokenizer(path=v)
    call = e if isinstance(e, n.Call) else n.Call(func=str(v), span=e.span, name_span=e.span) \
        if isinstance(e, n.Name) else None
    if call is None or call.func not in TOKENIZERS:
        got = call.func if call else v
        raise ck.fail(f"unknown tokenizer {show_value(got)}", e.span, did_you_mean(str(got), TOKENIZERS) or
                      f"tokenizers: {', '.join(TOKENIZERS)}, or the path of a saved one in quotes")
    size = options(ck, call, {"vocab_size": None} if call.func != "chars" else {}).get("vocab_size")
    if size is not None:  # at least the special ids and one token
        size = whole(ck, size, e, "vocab_size", minimum=len(SPECIALS) + 1)
        if size > MAX_VOCABULARY:
            raise ck.fail(f"`vocab_size` is {size:,}; specc trains vocabularies of at most {MAX_VOCABULARY:,} "
                          "tokens", e.span)
    return TokenizerPlan(kind=call.func, vocab_size=size)


def _task(ck: Core, key: str, e: n.Expr, v: Any) -> str | MaskedTokens:  # a name: classify or next_token
    call = e if isinstance(e, n.Call) else n.Call(func=str(v), span=e.span, name_span=e.span)
    one_of(ck, call.func, TASKS, "task", e.span, f"tasks: {', '.join(TASKS)}")
    if call.func != "masked_tokens":
        options(ck, call, {})
        return call.func
    rate = options(ck, call, {"rate": 0.15})["rate"]
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 < rate < 1:
        raise ck.fail(f"`rate` is a fraction in (0, 1), got {show_value(rate)}", call.span)
    return MaskedTokens(rate=float(rate))


def _array(ck: Core, key: str, e: n.Expr, v: Any) -> list | str:
    if isinstance(v, list):
        if not _numeric(v):
            raise ck.fail(f"inline `{key}` must contain only numbers", e.span)
        if _shape_of(v) is None:
            raise ck.fail(f"inline `{key}` is ragged: every row needs the same length", e.span)
        return v
    if isinstance(v, str):
        return v  # the name of an array inside an .npz file
    raise _wrong(ck, key, e)


def _fraction(ck: Core, key: str, e: n.Expr, v: Any) -> float:
    return fraction(ck, v, e, key)


def _scale(ck: Core, key: str, e: n.Expr, v: Any) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise _wrong(ck, key, e, v)
    return float(v)


def _flag(ck: Core, key: str, e: n.Expr, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _wrong(ck, key, e, v)
    return v


def _reshape(ck: Core, key: str, e: n.Expr, v: Any) -> tuple[int, ...]:
    if isinstance(v, int) and not isinstance(v, bool):
        v = (v,)
    if not isinstance(v, tuple) or not all(_positive(d) for d in v):
        raise _wrong(ck, key, e)
    per_example(ck, math.prod(v), f"examples of shape {v}", e.span)
    return v


def _one_hot(ck: Core, key: str, e: n.Expr, v: Any) -> bool | int:
    if isinstance(v, bool) or (isinstance(v, int) and v > 1):
        if not isinstance(v, bool):  # the labels become `v` values each
            per_example(ck, v, f"one-hot labels of {v:,} classes", e.span)
        return v
    raise _wrong(ck, key, e)


_HANDLERS: dict[str, Callable[[Core, str, n.Expr, Any], Any]] = {
    "dataset": _dataset, "file": _file, "test_file": _file, "features": _names, "target": _name,
    "x": _array, "y": _array, "x_test": _array, "y_test": _array, "test_split": _fraction, "scale": _scale,
    "flatten": _flag, "reshape": _reshape, "one_hot": _one_hot, "columns": _names, "delimiter": _delimiter,
    "text": _name, "tokenizer": _tokenizer, "sequence_length": _sequence_length, "task": _task, "images": _path,
    "image_size": _image_size,
}


def _positive(d: Any) -> bool:
    return isinstance(d, int) and not isinstance(d, bool) and d > 0


def _numeric(v: Any) -> bool:
    if isinstance(v, list):
        return all(_numeric(i) for i in v)
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _shape_of(v: Any) -> tuple[int, ...] | None:
    """The shape of a nested list of numbers, or None if it is ragged."""
    if not isinstance(v, list):
        return ()
    shapes = {_shape_of(i) for i in v}
    if len(shapes) > 1:
        return None
    inner = shapes.pop() if shapes else ()
    return None if inner is None else (len(v),) + inner


# -- the data against the model ------------------------------------------------------------------------------------


def check_data_fits(ck: Core, data: DataPlan, inputs: list[InputNode]) -> None:
    """The sizes the `data` section sets (`image_size`, `sequence_length`) against the one input they feed, where
    both are known: found here rather than after the data was read (or the images resized) at run time."""
    if len(inputs) != 1 or data.reshape is not None or data.flatten:
        return
    inp = inputs[0]
    want = [d for d in inp.shape if d != 1]
    if data.image_size is not None and len(inp.shape) == 3 and None not in inp.shape[:2] \
            and tuple(inp.shape[:2]) != tuple(data.image_size):
        h, w = data.image_size
        ck.fail(f"`image_size: ({h}, {w})` makes images of {h} x {w} pixels, but input `{inp.name}` takes "
                f"{inp.shape[0]} x {inp.shape[1]}: its shape is {_shape_text(inp.shape)}", data.span("image_size"),
                f"make them agree: `image_size: ({inp.shape[0]}, {inp.shape[1]})`, or "
                f"`input {inp.name}: ({h}, {w}, {inp.shape[2]})`")
    length = data.sequence_length
    sizes = [d for d in want if d is not None]  # all of `want` when the input's shape is fully known
    if length is not None and data.is_text and sizes == want and sizes != [d for d in (length,) if d != 1]:
        ck.fail(f"`sequence_length: {length}` makes examples of {length} tokens, but input `{inp.name}` takes "
                f"{_shape_text(inp.shape)}", data.span("sequence_length"),
                f"make them agree: `sequence_length: {math.prod(sizes)}`, or `input {inp.name}: ({length},) int32`"
                if len(want) == 1 else f"declare the input as `input {inp.name}: ({length},) int32`")


def _shape_text(shape: tuple) -> str:
    return "(" + ", ".join("none" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
