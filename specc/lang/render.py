"""Python values written as spec text: the one spelling of a value that the parser reads back as that value.

`true`/`false`/`none`, whole numbers, floats by `repr`, a string bare when it is a name and quoted (with escapes)
otherwise, tuples with their trailing comma (`(4,)`), lists, and input shapes (`(none, 28, 28)`). `specc fmt`
prints the AST's strings, tuples, lists and shapes with it, and `specc import` writes a Keras config's values
with it, handing it the spelling of what only the importer knows (Keras objects, float32 numbers, NumPy values)
through `leaf`. Python code is another target: `specc.tools.emit.emit_value` writes that.
Nothing here imports Keras.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

#: Words a bare name in a spec is not written as: the language's keywords and its constants in any spelling.
RESERVED = frozenset({"model", "block", "input", "output", "repeat", "parallel", "branch",
                      "true", "false", "none", "True", "False", "None"})

_SHORT_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}


def spec_string(value: str) -> str:
    """`value` as a spec string literal (`grammar/specc.lark`'s STRING, read back by the parser's
    escapes): double-quoted, `\\` and `"` escaped, and every character that is not printable (control
    characters, an escape sequence, line and paragraph separators, lone surrogates) written as an
    escape, so that the literal stays on one line of the file and on a terminal whatever `value` holds."""
    out = []
    for c in value:
        if c in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[c])
        elif c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF:
            out.append(c)
        else:
            code = ord(c)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def is_name(text: str) -> bool:
    """Whether `text` can be written bare, as a name (`relu`, `same`), and is read back as that string."""
    return bool(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", text)) and text not in RESERVED


def spec_sequence(items: list[str], is_tuple: bool) -> str:
    """Written items as a tuple, `(a, b)` or `(a,)`, or a list, `[a, b]`."""
    if not is_tuple:
        return f"[{', '.join(items)}]"
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def render_shape(shape: list | tuple) -> str:
    """An input's shape as a spec writes it: `(28, 28, 1)`, `(4,)`, `(none, features)`."""
    return spec_sequence(["none" if d is None else str(d) for d in shape], True)


def render_value(v: Any, leaf: Callable[[Any], str | None] | None = None) -> str:
    """`v` (a bool, None, an int, a float, a str, or a tuple or list of them) as spec text.

    `leaf(v)`, tried first on `v` and on every item inside it, gives a caller's own spelling (or refuses a value,
    by raising); None leaves `v` to the rules here. A float that is not finite, or a value of another type, has
    no spelling: ValueError or TypeError."""
    if leaf is not None:
        text = leaf(v)
        if text is not None:
            return text
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"the number {v} cannot be written in a spec")
        return repr(v)
    if isinstance(v, str):
        return v if is_name(v) else spec_string(v)
    if isinstance(v, (tuple, list)):
        return spec_sequence([render_value(i, leaf) for i in v], isinstance(v, tuple))
    raise TypeError(f"a {type(v).__name__} cannot be written in a spec")
