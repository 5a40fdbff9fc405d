"""Stage 1: parse `.model` text with the Lark grammar and lower the tree to the AST.

`parse_text` / `parse_file` are the entry points. Lark's errors are turned into
plain-language `SpecError`s here: terminal names such as `RPAR` never reach the user.
"""

from __future__ import annotations

import functools
import hashlib
import sys
import unicodedata
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import NamedTuple

from lark import Lark, Token, Transformer, Tree, v_args
from lark import __version__ as lark_version
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from specc.core import nodes as n
from specc.core.cache import cache_dir
from specc.core.errors import Diagnostic, Source, SpecError, UsageError, printable

_OPEN = {"LPAR", "LSQB"}
_CLOSE = {"RPAR", "RSQB"}

# Bounds on what a spec may be, so that hostile or broken input fails fast with a located error
# instead of exhausting time, memory or Python's recursion limit (README: "Hostile input").
# Parsing is linear but slow in pure Python (about 20,000 tokens a second on one busy core), and
# every later stage recurses over the tree, so both the size and the depth are bounded.
MAX_CHARS = 1_000_000  # characters in a spec
MAX_TOKENS = 100_000  # tokens in a spec (an inline list of numbers counts two per number)
MAX_DEPTH = 100  # nesting: brackets, braces, and levels of the syntax tree (real specs reach 11)
MAX_INT = 2**63 - 1  # the largest whole number a spec may write (a signed 64-bit integer)


class _Limit(Exception):
    """Raised by the post-lexer when the input crosses a bound; turned into a located `SpecError`."""

    def __init__(self, tok: Token, message: str, hint: str | None = None):
        super().__init__(message)
        self.tok, self.message, self.hint = tok, message, hint


def grammar_text() -> str:
    """The grammar: inside the wheel as `specc/specc.lark`, in a checkout as `grammar/specc.lark`."""
    packaged = resources.files("specc").joinpath("specc.lark")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parents[2] / "grammar" / "specc.lark").read_text(encoding="utf-8")


class _BracketNewlines:
    """Post-lexer: newlines inside ( ) and [ ] do not end a statement. It also stops the parse early
    when the input nests brackets or braces more than `MAX_DEPTH` deep or has more than `MAX_TOKENS` tokens."""

    always_accept = ("_NL",)

    def process(self, stream):
        depth = 0  # ( and [
        nesting = 0  # ( [ and {
        count = 0
        for tok in stream:
            count += 1
            if count > MAX_TOKENS:
                raise _Limit(tok, f"the spec is too long: more than {MAX_TOKENS:,} tokens",
                             "a spec describes a network; put data in a file named in `data` (`file: \"data.npz\"`)")
            if tok.type in _OPEN or tok.type == "LBRACE":
                nesting += 1
                if nesting > MAX_DEPTH:
                    raise _Limit(tok, f"nested too deeply: more than {MAX_DEPTH} levels of brackets and braces")
                if tok.type in _OPEN:
                    depth += 1
            elif tok.type in _CLOSE or tok.type == "RBRACE":
                nesting = max(0, nesting - 1)
                if tok.type in _CLOSE:
                    depth = max(0, depth - 1)
            elif tok.type == "_NL" and depth:
                continue
            yield tok


_LARK_OPTIONS = {"parser": "lalr", "propagate_positions": True, "maybe_placeholders": True}


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    """The LALR parser. Analysing the grammar takes longer than parsing a spec, so the analysed parser is kept
    in the user's cache folder (`specc.core.cache`) with `Lark.save` and read back with `Lark.load` by later
    processes. The file's name holds a hash of the grammar, the options and the Lark and Python versions; it
    is written whole or not at all. Without a cache, or with a damaged one, the parser is built as usual."""
    grammar = grammar_text()
    key = f"{grammar}\0{sorted(_LARK_OPTIONS.items())}\0{lark_version}\0{sys.version_info[:2]}"
    path = cache_dir() / "lark" / f"specc-{hashlib.sha256(key.encode()).hexdigest()[:24]}.lalr"
    try:
        with open(path, "rb") as f:
            parser = Lark.load(f)
        if isinstance(parser.options.postlex, _BracketNewlines):
            return parser
    except Exception:  # noqa: BLE001 - missing, unreadable or damaged: build it again
        pass
    parser = Lark(grammar, postlex=_BracketNewlines(), **_LARK_OPTIONS)
    try:
        from specc.core.artifacts import write_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, parser.save)
    except OSError:  # a cache that cannot be written: the next process builds it too
        pass
    return parser


# --- plain-language parse errors -------------------------------------------

_TERMINAL_WORDS = {
    "NAME": "a name",
    "INT": "a whole number",
    "FLOAT": "a number",
    "STRING": "a string",
    "_NL": "a new line",
    "$END": "the end of the file",
}


def _describe_terminal(name: str) -> str:
    if name in _TERMINAL_WORDS:
        return _TERMINAL_WORDS[name]
    for term in _parser().terminals:
        if term.name == name and term.pattern.type == "str":
            return f"`{term.pattern.value}`"
    return name.lower()


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe_token(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    if tok.type == "_NL":
        return "end of line" if "\n" in tok.value or not tok.value.strip() else f"`{_clip(tok.value.strip())}`"
    if tok.type == "NAME":
        return f"name `{_clip(tok.value)}`"
    if tok.type in ("INT", "FLOAT"):
        return f"number `{_clip(tok.value)}`"
    if tok.type == "STRING":
        return f"string {_clip(tok.value)}"
    return f"`{_clip(tok.value)}`"


_VALUE_START = {"NAME", "INT", "FLOAT", "STRING", "LPAR", "LSQB", "MINUS"}


def _expected_list(expected: set[str]) -> str:
    if _VALUE_START <= expected:  # everything that can start an expression: say so plainly
        rest = sorted(_describe_terminal(e) for e in expected - _VALUE_START)
        return "a value" + (f" or {', '.join(rest)}" if rest else "")
    words = sorted({_describe_terminal(e) for e in expected})
    if len(words) > 6:
        words = words[:6] + ["..."]
    if len(words) == 1:
        return words[0]
    return "one of " + ", ".join(words)


def _point(line: int, col: int) -> n.Span:
    """The span of the one character at `line`:`col`."""
    return n.Span.model_construct(line=line, col=col, end_line=line, end_col=col + 1)


def _token_span(tok: Token) -> n.Span:
    line, col = tok.line or 1, tok.column or 1
    if tok.type == "_NL":  # point just past the end of the line, where the missing thing goes
        return _point(line, col)
    end_line = tok.end_line or line
    end_col = tok.end_column or col + max(1, len(tok.value))
    return n.Span.model_construct(line=line, col=col, end_line=end_line, end_col=end_col)


_PAIRS = {")": "(", "]": "[", "}": "{"}


def _brackets(text: str, until: tuple[int, int] | None = None):
    """Scan `(`, `[`, `{` and their closers, ignoring strings and comments, up to `until` (line, col).

    Returns (still open, skipped over): each a list of (char, line, col)."""
    stack: list[tuple[str, int, int]] = []
    unclosed: list[tuple[str, int, int]] = []
    quote = None
    for line_no, line in enumerate(text.split("\n"), 1):
        col, quote = 0, None
        while col < len(line):
            if until and (line_no, col + 1) >= until:
                return stack, unclosed
            ch = line[col]
            col += 1
            if quote:
                if ch == "\\":
                    col += 1
                elif ch == quote:
                    quote = None
            elif ch in "\"'":
                quote = ch
            elif ch == "#":
                break
            elif ch in "([{":
                stack.append((ch, line_no, col))
            elif ch in _PAIRS and any(o == _PAIRS[ch] for o, _, _ in stack):
                while stack[-1][0] != _PAIRS[ch]:  # openers skipped over were never closed
                    unclosed.append(stack.pop())
                stack.pop()
    return stack, unclosed


def _unclosed(text: str) -> tuple[str, int, int] | None:
    """The `(`, `[` or `{` that is never closed."""
    stack, unclosed = _brackets(text)
    if unclosed:  # skipped over by a later closer: the first of those
        return min(unclosed, key=lambda u: (u[1], u[2]))
    return stack[-1] if stack else None  # still open at the end: the innermost


_CHAR_NAMES = {"\0": "NUL", "\r": "carriage return", "\x1b": "escape", "\x7f": "delete", "\x0b": "vertical tab",
               "\x85": "next line", "\ufeff": "byte-order mark"}


def describe_char(ch: str) -> str:
    """A character as an error message shows it: itself in backticks, or its code point if it is invisible."""
    if ch.isprintable() and not ch.isspace():
        return f"`{ch}`"
    name = _CHAR_NAMES.get(ch) or unicodedata.name(ch, "")
    if 0xD800 <= ord(ch) <= 0xDFFF:
        name = "a lone surrogate"
    return f"U+{ord(ch):04X}" + (f" ({name.lower() if ch not in _CHAR_NAMES else name})" if name else "")


def _char_hint(ch: str, text: str) -> str | None:
    if ch in "\"'":
        return "strings must be closed on the same line they start"
    if ch == "!":
        return "specc has no `!` operator"
    if ch == "\r":
        return "a line ends with a carriage return alone: save the file with `\\n` (or `\\r\\n`) line endings"
    if ch == "\0" or "\0" in text:
        return "the text holds NUL characters: is this a binary file rather than a spec?"
    if ch in "\u2028\u2029\x85\x0b":
        return "only `\\n` (or `\\r\\n`) ends a line in a spec"
    if ch == "\ufeff":
        return "a byte-order mark belongs only at the very start of a file; remove this one"
    if not ch.isprintable() or ch.isspace():
        return "an invisible character: delete it (a space, tab or new line is probably meant)"
    return None


class _Mistake(NamedTuple):
    """A common mistake recognised from the unexpected token and what the parser expected instead."""

    applies: Callable[[Token, set[str]], bool]
    message: Callable[[Token], str] | None  # None: the plain "unexpected X; expected Y"
    hint: str


_LITERALS = ("NAME", "INT", "FLOAT", "STRING")

#: The mistakes `_token_error` names, checked in order; the first that applies gives the message and hint.
_MISTAKES = (
    _Mistake(lambda tok, expected: tok.type == "EQUAL" and "COLON" in expected,
             lambda tok: "settings are written `key: value`, not `key = value`", "replace `=` with `:`"),
    _Mistake(lambda tok, expected: tok.type == "COLON" and "EQUAL" in expected,
             lambda tok: "arguments are written `name=value`, not `name: value`", "replace `:` with `=`"),
    _Mistake(lambda tok, expected: tok.type == "_NL" and ("RPAR" in expected or "RSQB" in expected),
             lambda tok: "unexpected end of line: a bracket is never closed", "add the missing `)` or `]`"),
    _Mistake(lambda tok, expected: tok.type == "_NL" and expected <= {"COLON", "LBRACE"},
             None, "a setting needs a value (`key: value`); a section needs braces (`name { ... }`)"),
    _Mistake(lambda tok, expected: tok.type == "RBRACE" and "_NL" in expected,
             lambda tok: "`}` must start its own line", "put a line break before `}`"),
    _Mistake(lambda tok, expected: tok.type == "LBRACE" and "LPAR" in expected,
             None, "a block's parameters go in parentheses: `block NAME(param, ...) { ... }`"),
    _Mistake(lambda tok, expected: tok.type in _LITERALS and "COMMA" in expected and "_NL" not in expected,
             lambda tok: f"unexpected {_describe_token(tok)}: is a `,` missing before it?",
             "separate arguments and items with `,`; a keyword argument is written `name=value`"),
    _Mistake(lambda tok, expected: tok.type == "NAME" and "_NL" in expected,
             lambda tok: f"unexpected {_describe_token(tok)}: one statement per line",
             "start a new line, or separate statements with `;`"),
)


def _syntax_error(src: Source, err: UnexpectedInput) -> SpecError:
    """Lark's error as a located, plain-language `SpecError`: a stray character, a bracket never closed, an
    early end of file, or an unexpected token (with a hint where the mistake is a common one)."""
    if isinstance(err, UnexpectedCharacters):
        return _character_error(src, err)
    if isinstance(err, UnexpectedEOF):
        tok = Token("$END", "", 0, 1, 1)
        expected: set[str] = set(err.expected)  # terminal names (lark types them as Tokens, a str subclass)
    else:
        assert isinstance(err, UnexpectedToken)
        tok, expected = err.token, set(err.expected)
    opened = _unclosed(src.text)
    if opened and (tok.type == "$END" or (tok.line or 0, tok.column or 0) > opened[1:]):
        return _never_closed_error(src, *opened)
    if tok.type == "$END":
        return _end_of_file_error(src, expected)
    return _token_error(src, tok, expected)


def _character_error(src: Source, err: UnexpectedCharacters) -> SpecError:
    """A character that starts no token, shown by name if it is invisible."""
    pos = err.pos_in_stream
    ch = src.text[pos] if pos is not None and pos < len(src.text) else "?"
    return src.error(f"unexpected character {describe_char(ch)}", _point(err.line, err.column), _char_hint(ch, src.text))


def _never_closed_error(src: Source, char: str, line: int, col: int) -> SpecError:
    """A `(`, `[` or `{` that is never closed, located at the opener."""
    span = _point(line, col)
    if char == "{":
        return src.error("unexpected end of file: a `{` is never closed", span, hint="add the missing `}`")
    closer = ")" if char == "(" else "]"
    return src.error(f"`{char}` is never closed", span, hint=f"add `{closer}` where the {'call' if char == '(' else 'list'} ends")


def _end_of_file_error(src: Source, expected: set[str]) -> SpecError:
    """The file ends where more was expected: located just past its last character."""
    lines = src.text.rstrip("\n").split("\n") or [""]
    return src.error(f"unexpected end of file; expected {_expected_list(expected)}", _point(len(lines), len(lines[-1]) + 1))


def _token_error(src: Source, tok: Token, expected: set[str]) -> SpecError:
    """An unexpected token: "unexpected X; expected Y", or the first of `_MISTAKES` that applies."""
    if tok.line and any(c in "([" for c, _, _ in _brackets(src.text, (tok.line, tok.column or 1))[0]):
        expected = expected - {"_NL"}  # inside brackets, lines do not end statements
    span = _token_span(tok)
    if tok.type == "_NL":  # point just after the last thing on the line, where the missing part goes
        line, column = span.line, span.col  # the token's position (`_token_span`: lark types it Optional)
        lines = src.text.split("\n")
        before = lines[line - 1][: column - 1] if line <= len(lines) else ""
        span = _point(line, len(before.rstrip()) + 1)
    mistake = next((m for m in _MISTAKES if m.applies(tok, expected)), None)
    message = f"unexpected {_describe_token(tok)}; expected {_expected_list(expected)}"
    if mistake is None:
        return src.error(message, span, None)
    return src.error(mistake.message(tok) if mistake.message else message, span, mistake.hint)


# --- lowering: parse tree -> AST -------------------------------------------


def _span(meta) -> n.Span | None:
    if getattr(meta, "empty", True):
        return None
    return n.Span.model_construct(line=meta.line, col=meta.column, end_line=meta.end_line, end_col=meta.end_column)


def _tspan(tok: Token) -> n.Span:
    # The parser's tokens always carry their position; lark types it Optional for tokens made by hand.
    return n.Span.model_construct(line=tok.line, col=tok.column, end_line=tok.end_line, end_col=tok.end_column)  # type: ignore[arg-type]


def _bounded_number(src: Source, tok: Token) -> int | float:
    """A number literal, or a located error if it is too large to mean anything (`1e999`, 10,000 digits)."""
    digits = str(tok).replace("_", "")
    is_float = any(c in digits for c in ".eE")
    value: int | float | None
    if is_float:
        value = float(digits)
    else:  # counted before int(), which refuses more than 4,300 digits (leading zeros included)
        significant = digits.lstrip("0") or "0"
        value = int(significant) if len(significant) <= 19 else None
    if value is None or (not is_float and value > MAX_INT) or (is_float and value == float("inf")):
        what = "a 64-bit whole number (at most 9223372036854775807)" if not is_float else \
            "a 64-bit float (at most about 1.8e308)"
        raise src.error(f"number `{_clip(str(tok))}` is too large for {what}", _tspan(tok))
    return value


class _Lower(Transformer):
    """Lowers the Lark tree to `specc.core.nodes`. It only lowers: no checking beyond shape syntax."""

    def __init__(self, src: Source):
        super().__init__()
        self.src = src

    # expressions
    @v_args(meta=True)
    def int(self, meta, items):
        return n.Number.model_construct(value=_bounded_number(self.src, items[0]), text=str(items[0]), span=_span(meta))

    float = int

    @v_args(meta=True)
    def string(self, meta, items):
        import ast as _pyast  # only for string-literal escapes; never evaluates code
        import warnings

        odd = next((c for c in items[0] if 0xD800 <= ord(c) <= 0xDFFF), None)
        if odd is not None:  # text given through the API (files are UTF-8): literal_eval cannot encode it
            raise self.src.error(f"the string holds {describe_char(odd)}, which is not a character", _tspan(items[0]))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # `"\d"` is an invalid escape, not a backslash and a `d`
                value = _pyast.literal_eval(items[0])
        except (SyntaxError, ValueError, SyntaxWarning, DeprecationWarning):
            raise self.src.error("invalid escape sequence in string", _tspan(items[0]),
                                 hint="write a backslash as `\\\\`, or use `/` in paths") from None
        return n.Str.model_construct(value=value, span=_span(meta))

    @v_args(meta=True)
    def name(self, meta, items):
        return n.Name.model_construct(id=str(items[0]), span=_span(meta))

    @v_args(meta=True)
    def fact(self, meta, items):
        return n.Name.model_construct(id=f"{items[0]}.{items[1]}", span=_span(meta))

    @v_args(meta=True)
    def kwarg(self, meta, items):
        return n.Kwarg.model_construct(name=str(items[0]), value=items[1], span=_span(meta), name_span=_tspan(items[0]))

    @v_args(meta=True)
    def call(self, meta, items):
        func, *rest = items
        rest = [a for a in rest if a is not None]
        for before, after in zip(rest, rest[1:]):
            if isinstance(before, n.Kwarg) and not isinstance(after, n.Kwarg):
                raise self.src.error("a positional argument cannot follow a keyword argument", after.span,
                                     hint="put positional arguments first, or name this one too")
        args = [a for a in rest if a is not None and not isinstance(a, n.Kwarg)]
        kwargs = [a for a in rest if isinstance(a, n.Kwarg)]
        return n.Call.model_construct(func=str(func), args=args, kwargs=kwargs, span=_span(meta),
                                      name_span=_tspan(func))

    @v_args(meta=True)
    def tuple(self, meta, items):
        return n.Tuple.model_construct(items=[i for i in items if i is not None], span=_span(meta))

    @v_args(meta=True)
    def list(self, meta, items):
        return n.List.model_construct(items=[i for i in items if i is not None], span=_span(meta))

    @staticmethod  # a factory used in the class body
    def _binop(op: n.Operator):
        @v_args(meta=True)
        def method(self, meta, items):
            return n.BinOp.model_construct(op=op, left=items[0], right=items[1], span=_span(meta))

        return method

    add, sub, mul = _binop("+"), _binop("-"), _binop("*")
    div, floordiv, mod = _binop("/"), _binop("//"), _binop("%")
    del _binop

    @v_args(meta=True)
    def neg(self, meta, items):
        operand = items[0]
        if isinstance(operand, n.Number):  # fold `-1` into a literal
            text = f"-{operand.text}" if operand.text and operand.text[0] != "-" else None
            return n.Number.model_construct(value=-operand.value, text=text, span=_span(meta))
        return n.Neg.model_construct(operand=operand, span=_span(meta))

    # model statements
    # A dimension lowers to (value, span): a whole number, None for `none`, or the name of a constant or fact.
    def int_dim(self, items):
        return _bounded_number(self.src, items[0]), _tspan(items[0])

    def name_dim(self, items):
        return (None if str(items[0]).lower() == "none" else str(items[0])), _tspan(items[0])

    def fact_dim(self, items):
        first, last = _tspan(items[0]), _tspan(items[1])
        return f"{items[0]}.{items[1]}", first.model_copy(update={"end_line": last.end_line, "end_col": last.end_col})

    def shape(self, items):
        return list(items)

    @v_args(meta=True)
    def input(self, meta, items):
        name, shape, dtype = items
        return n.Input.model_construct(name=str(name), shape=[d for d, _ in shape], dim_spans=[s for _, s in shape],
                                       dtype=str(dtype) if dtype else None, span=_span(meta))

    @v_args(meta=True)
    def output(self, meta, items):
        return n.Output.model_construct(names=[str(t) for t in items], span=_span(meta))

    @v_args(meta=True)
    def ref(self, meta, items):
        return n.Ref.model_construct(name=str(items[0]), span=_span(meta))

    @v_args(meta=True)
    def refs(self, meta, items):
        return n.Refs.model_construct(names=[str(t) for t in items if t is not None], span=_span(meta))

    @v_args(meta=True)
    def chain(self, meta, items):
        return n.Chain.model_construct(steps=items, span=_span(meta))

    @v_args(meta=True)
    def assign(self, meta, items):
        name, chain = items
        return n.Chain.model_construct(target=str(name), steps=chain.steps, span=_span(meta))

    @v_args(meta=True)
    def body(self, meta, items):
        return [i for i in items if i is not None]

    @v_args(meta=True)
    def repeat(self, meta, items):
        return n.Repeat.model_construct(count=items[0], body=items[1], span=_span(meta))

    @v_args(meta=True)
    def branch(self, meta, items):
        return n.Branch.model_construct(body=items[0], span=_span(meta))

    @v_args(meta=True)
    def parallel(self, meta, items):
        merge, *branches = items
        if isinstance(merge, n.Ref):
            merge = n.Call.model_construct(func=merge.name, span=merge.span, name_span=merge.span)
        return n.Parallel.model_construct(merge=merge, branches=branches, span=_span(meta))

    # top level
    @v_args(meta=True)
    def param(self, meta, items):
        return n.Param.model_construct(name=str(items[0]), default=items[1], span=_span(meta))

    def params(self, items):
        return [p for p in items if p is not None]

    @v_args(meta=True)
    def block(self, meta, items):
        name, params, body = items
        return n.Block.model_construct(name=str(name), params=params or [], body=body, span=_span(meta))

    @v_args(meta=True)
    def model(self, meta, items):
        name, body = items
        return n.Model.model_construct(name=str(name) if name else None, body=body, span=_span(meta))

    @v_args(meta=True)
    def setting(self, meta, items):
        key, value = items
        return n.Setting.model_construct(key=str(key), value=value, span=_span(meta), key_span=_tspan(key))

    @v_args(meta=True)
    def let(self, meta, items):
        name, value = items
        return n.Let.model_construct(name=str(name), value=value, span=_span(meta), name_span=_tspan(name))

    @v_args(meta=True)
    def section(self, meta, items):
        name, *settings = items
        return n.Section.model_construct(name=str(name), settings=settings, span=_span(meta))

    @v_args(meta=True)
    def start(self, meta, items):
        spec: dict[str, list] = {"models": [], "blocks": [], "sections": [], "settings": [], "lets": []}
        for item in items:
            spec[{"model": "models", "block": "blocks", "section": "sections", "setting": "settings",
                  "let": "lets"}[item.tag]].append(item)
        return n.Spec.model_construct(None, **spec, span=_span(meta))  # None: the fields given are the ones set


def _position(text: str, offset: int) -> tuple[int, int]:
    """(line, col), from 1, of a character offset, as the parser counts them (only `\\n` ends a line)."""
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


def _too_deep(src: Source, tree: Tree) -> SpecError | None:
    """The first place where the syntax tree is deeper than `MAX_DEPTH` (checked without recursion:
    lowering and every later stage recurse over the tree)."""
    stack = [(tree, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            meta = node.meta
            span = _span(meta) if not getattr(meta, "empty", True) else None
            if span is not None:
                span = _point(span.line, span.col)
            return src.error(f"nested too deeply: more than {MAX_DEPTH} levels of expressions, brackets and blocks",
                             span, "split the expression, or use a `block` or `repeat`")
        stack.extend((c, depth + 1) for c in reversed(node.children) if isinstance(c, Tree))
    return None


def parse_text(text: str, file: str = "<string>") -> n.Spec:
    """Parse spec text into the AST. Raises `SpecError` with a located, plain message."""
    src = Source(text, file)
    if len(text) > MAX_CHARS:
        line, col = _position(text, MAX_CHARS)
        raise src.error(f"the spec is too large: {len(text):,} characters; specc reads at most {MAX_CHARS:,}",
                        _point(line, col),
                        "a spec describes a network; put data in a file named in `data` (`file: \"data.npz\"`)")
    if text.startswith("\ufeff"):  # a byte-order mark: read as a space, so that columns stay as they are
        text = " " + text[1:]
    if not text.endswith("\n"):
        text += "\n"
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as err:
        raise _syntax_error(src, err) from None
    except _Limit as err:
        span = _token_span(err.tok)
        raise src.error(err.message, _point(span.line, span.col), err.hint) from None
    deep = _too_deep(src, tree)
    if deep is not None:
        raise deep
    try:
        return _Lower(src).transform(tree)
    except VisitError as err:
        if isinstance(err.orig_exc, SpecError):
            raise err.orig_exc from None
        raise


def decode_spec(data: bytes, file: str = "<string>") -> str:
    """The text of a spec file's bytes: UTF-8, a leading byte-order mark dropped. Bytes that are not
    UTF-8 are a `SpecError` located at the first of them."""
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    body = data[bom:]
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as err:
        start = err.start
        head = body[:start].decode("utf-8", errors="replace")
        line, col = _position(head + "\ufffd", len(head))
        raise Source(body.decode("utf-8", errors="replace"), file).error(
            f"the file is not UTF-8 text: byte {body[start]:#04x} at offset {bom + start} ({err.reason})",
            _point(line, col),
            "save the spec as UTF-8" + (" (it holds NUL bytes: is it a binary file?)" if b"\0" in data else "")) from None


def parse_file(path: str | Path) -> n.Spec:
    """The AST of a spec file, read as every spec file is (`read_spec`: a regular file, bounded, UTF-8)."""
    return parse_text(read_spec(path), str(path))


def read_spec(path: str | Path) -> str:
    """The text of a spec file. Only a regular file is read (after symlinks are followed): a folder, a named pipe
    (which would block), a device (`/dev/zero` never ends) or a socket is refused by name before it is opened, and
    whatever is read stops at the size limit."""
    import os
    import stat

    path = Path(path)
    limit = 4 * MAX_CHARS  # bytes: a spec is at most 1,000,000 characters of UTF-8
    try:
        kind = _file_kind(path.stat().st_mode)
        if kind is None:  # checked again on the open file: it may have been replaced in between
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
            with os.fdopen(fd, "rb") as f:
                info = os.fstat(f.fileno())
                kind = _file_kind(info.st_mode)
                if kind is None:
                    if info.st_size > limit:  # not even read
                        raise _too_large(path, info.st_size, MAX_CHARS)
                    data = f.read(limit + 1)  # a cap whatever the size said (a file that grows, /proc)
                    if len(data) > limit:
                        raise _too_large(path, None, MAX_CHARS)
                    return decode_spec(data, str(path))  # UTF-8, a byte-order mark dropped; else a located error
        if stat.S_ISDIR(path.stat().st_mode):
            raise UsageError(Diagnostic("this is a folder, not a .model file", file=str(path)))
        if path.is_symlink():
            kind = f"a link to {printable(str(path.resolve()), lines=False)}, {kind}"
        raise UsageError(Diagnostic(f"this is {kind}, not a regular file: specc reads a spec only from a file",
                                    file=str(path), hint="copy the spec into a file and give that file's path"))
    except FileNotFoundError:
        raise UsageError(Diagnostic("no such file", file=str(path))) from None
    except IsADirectoryError:
        raise UsageError(Diagnostic("this is a folder, not a .model file", file=str(path))) from None
    except OSError as err:
        raise UsageError(Diagnostic(f"cannot read it: {err.strerror or err}", file=str(path))) from None


def _file_kind(mode: int) -> str | None:
    """What a file that is not a regular file is, in words; None for a regular file."""
    import stat

    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((words for test, words in kinds if test(mode)), "not a regular file")


def _too_large(path: Path, size: int | None, max_chars: int) -> UsageError:
    said = f"{size:,} bytes" if size is not None else f"more than {4 * max_chars:,} bytes"
    return UsageError(Diagnostic(f"too large for a spec ({said}; at most {max_chars:,} characters)", file=str(path)))
