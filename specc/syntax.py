"""Stage 1: parse `.model` text with the Lark grammar and lower the tree to the AST.

`parse_text` / `parse_file` are the entry points. Lark's errors are turned into
plain-language `SpecError`s here: terminal names such as `RPAR` never reach the user.
"""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from . import nodes as n
from .errors import Source, SpecError

_OPEN = {"LPAR", "LSQB"}
_CLOSE = {"RPAR", "RSQB"}


def grammar_text() -> str:
    """The grammar: inside the wheel as `specc/specc.lark`, in a checkout as `grammar/specc.lark`."""
    packaged = resources.files("specc").joinpath("specc.lark")
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parent.parent / "grammar" / "specc.lark").read_text(encoding="utf-8")


class _BracketNewlines:
    """Post-lexer: newlines inside ( ) and [ ] do not end a statement."""

    always_accept = ("_NL",)

    def process(self, stream):
        depth = 0
        for tok in stream:
            if tok.type in _OPEN:
                depth += 1
            elif tok.type in _CLOSE:
                depth = max(0, depth - 1)
            elif tok.type == "_NL" and depth:
                continue
            yield tok


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(
        grammar_text(),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=True,
        postlex=_BracketNewlines(),
    )


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


def _describe_token(tok: Token) -> str:
    if tok.type == "$END":
        return "end of file"
    if tok.type == "_NL":
        return "end of line" if "\n" in tok.value or not tok.value.strip() else f"`{tok.value.strip()}`"
    if tok.type == "NAME":
        return f"name `{tok.value}`"
    if tok.type in ("INT", "FLOAT"):
        return f"number `{tok.value}`"
    if tok.type == "STRING":
        return f"string {tok.value}"
    return f"`{tok.value}`"


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


def _token_span(tok: Token) -> n.Span:
    line, col = tok.line or 1, tok.column or 1
    if tok.type == "_NL":  # point just past the end of the line, where the missing thing goes
        return n.Span(line=line, col=col, end_line=line, end_col=col + 1)
    end_line = tok.end_line or line
    end_col = tok.end_column or col + max(1, len(tok.value))
    return n.Span(line=line, col=col, end_line=end_line, end_col=end_col)


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


def _syntax_error(src: Source, err: UnexpectedInput) -> SpecError:
    if isinstance(err, UnexpectedCharacters):
        ch = src.text[err.pos_in_stream] if err.pos_in_stream < len(src.text) else "?"
        span = n.Span(line=err.line, col=err.column, end_line=err.line, end_col=err.column + 1)
        hint = None
        if ch in "\"'":
            hint = "strings must be closed on the same line they start"
        elif ch == "!":
            hint = "specc has no `!` operator"
        return src.error(f"unexpected character `{ch}`", span, hint)
    if isinstance(err, UnexpectedEOF):
        tok = Token("$END", "", 0, 1, 1)
        expected = set(err.expected)
    else:
        assert isinstance(err, UnexpectedToken)
        tok, expected = err.token, set(err.expected)
    opened = _unclosed(src.text)
    if opened and (tok.type == "$END" or (tok.line or 0, tok.column or 0) > opened[1:]):
        char, line, col = opened
        span = n.Span(line=line, col=col, end_line=line, end_col=col + 1)
        if char == "{":
            return src.error("unexpected end of file: a `{` is never closed", span, hint="add the missing `}`")
        closer = ")" if char == "(" else "]"
        return src.error(f"`{char}` is never closed", span, hint=f"add `{closer}` where the {'call' if char == '(' else 'list'} ends")
    if tok.type == "$END":
        lines = src.text.rstrip("\n").split("\n") or [""]
        last = len(lines)
        span = n.Span(line=last, col=len(lines[-1]) + 1, end_line=last, end_col=len(lines[-1]) + 2)
        return src.error(f"unexpected end of file; expected {_expected_list(expected)}", span)
    if tok.line and any(c in "([" for c, _, _ in _brackets(src.text, (tok.line, tok.column or 1))[0]):
        expected = expected - {"_NL"}  # inside brackets, lines do not end statements
    span = _token_span(tok)
    if tok.type == "_NL":  # point just after the last thing on the line, where the missing part goes
        lines = src.text.split("\n")
        before = lines[tok.line - 1][: tok.column - 1] if tok.line <= len(lines) else ""
        col = len(before.rstrip()) + 1
        span = n.Span(line=tok.line, col=col, end_line=tok.line, end_col=col + 1)
    message = f"unexpected {_describe_token(tok)}; expected {_expected_list(expected)}"
    hint = None
    if tok.type == "EQUAL" and "COLON" in expected:
        message = "settings are written `key: value`, not `key = value`"
        hint = "replace `=` with `:`"
    elif tok.type == "COLON" and "EQUAL" in expected:
        message = "arguments are written `name=value`, not `name: value`"
        hint = "replace `:` with `=`"
    elif tok.type == "_NL" and ("RPAR" in expected or "RSQB" in expected):
        message = "unexpected end of line: a bracket is never closed"
        hint = "add the missing `)` or `]`"
    elif tok.type == "_NL" and expected <= {"COLON", "LBRACE"}:
        hint = "a setting needs a value (`key: value`); a section needs braces (`name { ... }`)"
    elif tok.type == "RBRACE" and "_NL" in expected:
        message = "`}` must start its own line"
        hint = "put a line break before `}`"
    elif tok.type == "LBRACE" and "LPAR" in expected:
        hint = "a block's parameters go in parentheses: `block NAME(param, ...) { ... }`"
    elif tok.type in ("NAME", "INT", "FLOAT", "STRING") and "COMMA" in expected and "_NL" not in expected:
        message = f"unexpected {_describe_token(tok)}: is a `,` missing before it?"
        hint = "separate arguments and items with `,`; a keyword argument is written `name=value`"
    elif tok.type == "NAME" and "_NL" in expected:
        message = f"unexpected {_describe_token(tok)}: one statement per line"
        hint = "start a new line, or separate statements with `;`"
    return src.error(message, span, hint)


# --- lowering: parse tree -> AST -------------------------------------------


def _span(meta) -> n.Span | None:
    if getattr(meta, "empty", True):
        return None
    return n.Span(line=meta.line, col=meta.column, end_line=meta.end_line, end_col=meta.end_column)


def _tspan(tok: Token) -> n.Span:
    return n.Span(line=tok.line, col=tok.column, end_line=tok.end_line, end_col=tok.end_column)


def _number(text: str) -> int | float:
    text = text.replace("_", "")
    return float(text) if any(c in text for c in ".eE") else int(text)


class _Lower(Transformer):
    """Lowers the Lark tree to `specc.nodes`. It only lowers: no checking beyond shape syntax."""

    def __init__(self, src: Source):
        super().__init__()
        self.src = src

    # expressions
    @v_args(meta=True)
    def int(self, meta, items):
        return n.Number(value=_number(items[0]), text=str(items[0]), span=_span(meta))

    float = int

    @v_args(meta=True)
    def string(self, meta, items):
        import ast as _pyast  # only for string-literal escapes; never evaluates code
        import warnings

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # `"\d"` is an invalid escape, not a backslash and a `d`
                value = _pyast.literal_eval(items[0])
        except (SyntaxError, ValueError, SyntaxWarning, DeprecationWarning):
            raise self.src.error("invalid escape sequence in string", _tspan(items[0]),
                                 hint="write a backslash as `\\\\`, or use `/` in paths") from None
        return n.Str(value=value, span=_span(meta))

    @v_args(meta=True)
    def name(self, meta, items):
        return n.Name(id=str(items[0]), span=_span(meta))

    @v_args(meta=True)
    def kwarg(self, meta, items):
        return n.Kwarg(name=str(items[0]), value=items[1], span=_span(meta), name_span=_tspan(items[0]))

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
        return n.Call(func=str(func), args=args, kwargs=kwargs, span=_span(meta), name_span=_tspan(func))

    @v_args(meta=True)
    def tuple(self, meta, items):
        return n.Tuple(items=[i for i in items if i is not None], span=_span(meta))

    @v_args(meta=True)
    def list(self, meta, items):
        return n.List(items=[i for i in items if i is not None], span=_span(meta))

    def _binop(op):  # noqa: N805 - a factory used in the class body
        @v_args(meta=True)
        def method(self, meta, items):
            return n.BinOp(op=op, left=items[0], right=items[1], span=_span(meta))

        return method

    add, sub, mul = _binop("+"), _binop("-"), _binop("*")
    div, floordiv, mod = _binop("/"), _binop("//"), _binop("%")
    del _binop

    @v_args(meta=True)
    def neg(self, meta, items):
        operand = items[0]
        if isinstance(operand, n.Number):  # fold `-1` into a literal
            text = f"-{operand.text}" if operand.text and operand.text[0] != "-" else None
            return n.Number(value=-operand.value, text=text, span=_span(meta))
        return n.Neg(operand=operand, span=_span(meta))

    # model statements
    def int_dim(self, items):
        return int(str(items[0]).replace("_", ""))

    def name_dim(self, items):
        tok = items[0]
        if str(tok).lower() == "none":
            return None
        raise self.src.error(
            f"a shape dimension must be a whole number or `none`, not `{tok}`",
            _tspan(tok),
            hint="write `none` for a dimension that varies (such as sequence length)",
        )

    def shape(self, items):
        return list(items)

    @v_args(meta=True)
    def input(self, meta, items):
        name, shape, dtype = items
        return n.Input(name=str(name), shape=shape, dtype=str(dtype) if dtype else None, span=_span(meta))

    @v_args(meta=True)
    def output(self, meta, items):
        return n.Output(names=[str(t) for t in items], span=_span(meta))

    @v_args(meta=True)
    def ref(self, meta, items):
        return n.Ref(name=str(items[0]), span=_span(meta))

    @v_args(meta=True)
    def refs(self, meta, items):
        return n.Refs(names=[str(t) for t in items if t is not None], span=_span(meta))

    @v_args(meta=True)
    def chain(self, meta, items):
        return n.Chain(steps=items, span=_span(meta))

    @v_args(meta=True)
    def assign(self, meta, items):
        name, chain = items
        return n.Chain(target=str(name), steps=chain.steps, span=_span(meta))

    @v_args(meta=True)
    def body(self, meta, items):
        return [i for i in items if i is not None]

    @v_args(meta=True)
    def repeat(self, meta, items):
        return n.Repeat(count=items[0], body=items[1], span=_span(meta))

    @v_args(meta=True)
    def branch(self, meta, items):
        return n.Branch(body=items[0], span=_span(meta))

    @v_args(meta=True)
    def parallel(self, meta, items):
        merge, *branches = items
        if isinstance(merge, n.Ref):
            merge = n.Call(func=merge.name, span=merge.span, name_span=merge.span)
        return n.Parallel(merge=merge, branches=branches, span=_span(meta))

    # top level
    @v_args(meta=True)
    def param(self, meta, items):
        return n.Param(name=str(items[0]), default=items[1], span=_span(meta))

    def params(self, items):
        return [p for p in items if p is not None]

    @v_args(meta=True)
    def block(self, meta, items):
        name, params, body = items
        return n.Block(name=str(name), params=params or [], body=body, span=_span(meta))

    @v_args(meta=True)
    def model(self, meta, items):
        name, body = items
        return n.Model(name=str(name) if name else None, body=body, span=_span(meta))

    @v_args(meta=True)
    def setting(self, meta, items):
        key, value = items
        return n.Setting(key=str(key), value=value, span=_span(meta), key_span=_tspan(key))

    @v_args(meta=True)
    def section(self, meta, items):
        name, *settings = items
        return n.Section(name=str(name), settings=settings, span=_span(meta))

    @v_args(meta=True)
    def start(self, meta, items):
        spec = {"models": [], "blocks": [], "sections": [], "settings": []}
        for item in items:
            spec[{"model": "models", "block": "blocks", "section": "sections", "setting": "settings"}[item.tag]].append(item)
        return n.Spec(**spec, span=_span(meta))


def parse_text(text: str, file: str = "<string>") -> n.Spec:
    """Parse spec text into the AST. Raises `SpecError` with a located, plain message."""
    src = Source(text, file)
    if not text.endswith("\n"):
        text += "\n"
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as err:
        raise _syntax_error(src, err) from None
    try:
        return _Lower(src).transform(tree)
    except VisitError as err:
        if isinstance(err.orig_exc, SpecError):
            raise err.orig_exc from None
        raise


def parse_file(path: str | Path) -> n.Spec:
    path = Path(path)
    return parse_text(path.read_text(encoding="utf-8-sig"), str(path))
