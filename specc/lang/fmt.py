"""`specc fmt`: print a spec in one canonical layout, keeping its comments.

The layout is a function of the AST alone, plus three things the author chose and
the formatter keeps: comments, single blank lines between statements, and which
statements share a line (`conv_bn(16); relu`, a one-line `branch { ... }` or `repeat`).
Everything else is fixed: two-space indentation, one space around `->`, `=` in
chains and `:` in settings, none inside brackets, `"` for strings, numbers as
written, lines wrapped at arguments past `WIDTH` columns, and trailing comments
lined up within a paragraph. Formatting never changes meaning: the output is
parsed again and must give an equal AST (`format_text` checks it), and it is
idempotent (`format_text(format_text(x)) == format_text(x)`, tested over every spec).
Nothing here imports Keras.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from specc.core import nodes as n
from specc.core.errors import InternalError
from specc.lang.render import render_shape, spec_sequence, spec_string

WIDTH = 100
INDENT = "  "

# Strings first, so a `#` inside one is not a comment.
_LEXEMES = re.compile(r"""(?P<str>"([^"\\\n]|\\.)*"|'([^'\\\n]|\\.)*')|(?P<comment>#[^\n]*)""")


@dataclass
class _Line:
    depth: int
    code: str  # "" for a blank line
    comment: str | None = None  # trailing `# ...`


@dataclass
class _Comments:
    """The source's comments by line: own-line ones, and trailing ones after code."""

    own: dict[int, str] = field(default_factory=dict)
    trailing: dict[int, str] = field(default_factory=dict)
    blank: set[int] = field(default_factory=set)  # empty source lines

    @classmethod
    def scan(cls, text: str) -> "_Comments":
        found = cls()
        lines = text.split("\n")
        found.blank = {i + 1 for i, line in enumerate(lines) if not line.strip()}
        starts = [0]
        for line in lines:
            starts.append(starts[-1] + len(line) + 1)
        for m in _LEXEMES.finditer(text):
            if m.lastgroup != "comment":
                continue
            row = _line_of(starts, m.start())
            before = text[starts[row - 1]:m.start()]
            (found.trailing if before.strip() else found.own)[row] = m.group().rstrip()
        return found


def _line_of(starts: list[int], offset: int) -> int:
    lo, hi = 0, len(starts) - 1
    while lo < hi - 1:  # starts[lo] <= offset < starts[hi]
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if starts[mid] <= offset else (lo, mid)
    return lo + 1


# --- expressions -----------------------------------------------------------

_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2, "//": 2, "%": 2}


def format_expr(e: n.Node) -> str:
    """One expression on one line, in canonical spelling."""
    if isinstance(e, n.Number):
        return e.text.replace(" ", "") if e.text else repr(e.value)
    if isinstance(e, n.Str):
        return spec_string(e.value)
    if isinstance(e, n.Name):
        return e.id
    if isinstance(e, n.Call):
        return f"{e.func}({', '.join(_format_args(e))})" if e.args or e.kwargs else f"{e.func}()"
    if isinstance(e, (n.Tuple, n.List)):
        return spec_sequence([format_expr(i) for i in e.items], isinstance(e, n.Tuple))
    if isinstance(e, n.BinOp):
        prec = _PRECEDENCE[e.op]
        return f"{_operand(e.left, prec, False)} {e.op} {_operand(e.right, prec, True)}"
    if isinstance(e, n.Neg):
        operand = _operand(e.operand, 3, False)
        return f"- {operand}" if operand.startswith("-") else f"-{operand}"
    raise InternalError(f"fmt: unknown expression node {type(e).__name__}")


def _operand(e: n.Node, prec: int, right: bool) -> str:
    inner = _PRECEDENCE.get(e.op, 0) if isinstance(e, n.BinOp) else 3 if isinstance(e, n.Neg) else 4
    text = format_expr(e)
    # Parentheses exactly where the tree needs them: operators are left-associative, so a right
    # operand of equal precedence keeps its parentheses (`a - (b - c)`), and a negative literal
    # is a unary minus (`-(1) ...`) only in spelling.
    if inner < prec or (right and inner == prec) or (isinstance(e, n.Number) and text.startswith("-") and prec == 3):
        return f"({text})"
    return text


def _format_args(call: n.Call) -> list[str]:
    return [format_expr(a) for a in call.args] + [f"{k.name}={format_expr(k.value)}" for k in call.kwargs]


def _wrap(prefix: str, call: n.Call, suffix: str, depth: int) -> list[str]:
    """`prefix func(a, b,\n          c)suffix`: the call's arguments filled greedily."""
    return _fill(f"{prefix}{call.func}(", _format_args(call), f"){suffix}", depth)


def _fill(head: str, pieces: list[str], tail: str, depth: int) -> list[str]:
    """`head` + `pieces` separated by `, ` + `tail`, broken after commas past `WIDTH`, continuation
    lines lined up under the first piece."""
    room = WIDTH - len(INDENT * depth)
    lines, current = [], head
    for i, piece in enumerate(pieces):
        piece += tail if i == len(pieces) - 1 else ","
        if current.strip() and current != head and len(current) + 1 + len(piece) > room:
            lines.append(current)
            current = " " * len(head) + piece
        else:
            current += piece if current == head else " " + piece
    lines.append(current)
    return lines


# --- statements ------------------------------------------------------------


def _format_step(step: n.Node) -> str:
    if isinstance(step, n.Ref):
        return step.name
    if isinstance(step, n.Refs):
        return f"[{', '.join(step.names)}]"
    return format_expr(step)


def format_simple(stmt: n.Node) -> str:
    """A statement or setting without a body, on one line."""
    if isinstance(stmt, n.Input):
        return f"input {stmt.name}: {render_shape(stmt.shape)}" + (f" {stmt.dtype}" if stmt.dtype else "")
    if isinstance(stmt, n.Output):
        return f"output {', '.join(stmt.names)}"
    if isinstance(stmt, n.Setting):
        return f"{stmt.key}: {format_expr(stmt.value)}"
    if isinstance(stmt, n.Let):
        return f"let {stmt.name} = {format_expr(stmt.value)}"
    if isinstance(stmt, n.Chain):
        return (f"{stmt.target} = " if stmt.target else "") + " -> ".join(_format_step(s) for s in stmt.steps)
    raise InternalError(f"fmt: unknown statement {type(stmt).__name__}")


def _simple(stmt: n.Node, depth: int) -> list[str]:
    """A statement without a body: one line, or (when too long) wrapped at the arguments of its widest call."""
    flat = format_simple(stmt)
    if len(INDENT * depth) + len(flat) <= WIDTH:
        return [flat]
    if isinstance(stmt, n.Setting) and isinstance(stmt.value, n.Call) and (stmt.value.args or stmt.value.kwargs):
        return _wrap(f"{stmt.key}: ", stmt.value, "", depth)
    if isinstance(stmt, n.Chain):
        target = f"{stmt.target} = " if stmt.target else ""
        steps = [_format_step(s) for s in stmt.steps]
        calls = {i: s for i, s in enumerate(stmt.steps) if isinstance(s, n.Call) and (s.args or s.kwargs)}
        if calls:
            widest = max(calls, key=lambda i: len(steps[i]))
            prefix = target + "".join(s + " -> " for s in steps[:widest])
            return _wrap(prefix, calls[widest], "".join(" -> " + s for s in steps[widest + 1:]), depth)
    return [flat]


class _Printer:
    def __init__(self, text: str):
        self.comments = _Comments.scan(text)
        self.lines: list[_Line] = []
        self.last = 0  # the last source line printed (or skipped) so far

    # comments and blank lines
    def _blank(self, until: int) -> None:
        """One blank line if the source had one between what was printed last and line `until`."""
        if self.lines and self.lines[-1].code and not self.lines[-1].code.endswith("{") and any(self.last < b < until for b in self.comments.blank):
            self.lines.append(_Line(0, ""))

    def comments_before(self, line: int, depth: int, closing: bool = False) -> None:
        """Own-line comments above source line `line`, each where it was relative to blank lines
        (`closing`: line `line` is a `}` or the end, which no blank line precedes)."""
        for at in sorted(k for k in self.comments.own if k < line):
            self._blank(at)
            self.lines.append(_Line(depth, self.comments.own.pop(at)))
            self.last = at
        if not closing:
            self._blank(line)

    def trailing(self, first: int, last: int, depth: int) -> str | None:
        """The trailing comment for a construct printed on lines `first..last`; comments inside a
        construct that is now printed on fewer lines move above it, in order."""
        own = [(k, self.comments.own.pop(k), False) for k in sorted(self.comments.own) if first < k <= last]
        trail = [(k, self.comments.trailing.pop(k), True) for k in sorted(self.comments.trailing) if first <= k <= last]
        inside = sorted(own + trail)
        keep = inside.pop()[1] if inside and inside[-1][2] else None
        for _, text, _ in inside:
            self.lines.append(_Line(depth, text))
        return keep

    def emit(self, depth: int, codes: list[str], comment: str | None = None) -> None:
        for i, code in enumerate(codes):
            self.lines.append(_Line(depth, code, comment if i == len(codes) - 1 else None))

    # constructs
    def items(self, items: list[n.Node], depth: int, start: int, end: int) -> None:
        """Statements or settings of a body opening on line `start`, one per line; those the source put
        on one line of their own stay together (`conv_bn(16); relu`)."""
        groups: list[list[n.Node]] = []
        for item in items:
            if groups and item.span and groups[-1][-1].span and start < item.span.line == groups[-1][-1].span.end_line \
                    and not _has_body(item) and not _has_body(groups[-1][-1]):
                groups[-1].append(item)
            else:
                groups.append([item])
        for group in groups:
            self.group(group, depth)
        self.comments_before(end, depth, closing=True)

    def group(self, group: list[n.Node], depth: int) -> None:
        first, last = _lines(group[0])[0], _lines(group[-1])[1]
        self.comments_before(first, depth)
        if len(group) == 1 and _has_body(group[0]):
            self.braced(group[0], depth)
            return
        joined = "; ".join(format_simple(s) for s in group)
        comment = self.trailing(first, last, depth)
        if len(group) == 1 or len(INDENT * depth) + len(joined) > WIDTH:
            for i, stmt in enumerate(group):
                self.emit(depth, _simple(stmt, depth), comment if i == len(group) - 1 else None)
        else:
            self.emit(depth, [joined], comment)
        self.last = last

    def braced(self, node: n.Node, depth: int) -> None:
        """A construct with a `{ ... }` body: one line if written on one and it fits, else expanded."""
        first, last = _lines(node)
        header, body = _header(node)
        nested = isinstance(node, (n.Repeat, n.Parallel, n.Branch))  # a model, block or section always opens up
        if nested and first == last and not any(first <= k <= last for k in self.comments.own):
            one = f"{header} {{ {_inline(node)} }}" if body else f"{header} {{}}"
            if len(INDENT * depth) + len(one) <= WIDTH:
                self.emit(depth, [one], self.trailing(first, last, depth))
                self.last = last
                return
        if not body and not any(first < k < last for k in self.comments.own):
            self.emit(depth, [f"{header} {{}}"], self.trailing(first, last, depth))
            self.last = last
            return
        opening = [f"{header} {{"]
        if isinstance(node, n.Block) and len(INDENT * depth + opening[0]) > WIDTH:
            opening = _fill(f"block {node.name}(", _params(node), ") {", depth)
        self.emit(depth, opening, self.comments.trailing.pop(first, None))
        self.last = first
        if isinstance(node, n.Parallel):
            for branch in node.branches:
                self.group([branch], depth + 1)
            self.comments_before(last, depth + 1, closing=True)
        else:
            self.items(body, depth + 1, first, last)
        self.emit(depth, ["}"], self.comments.trailing.pop(last, None) if last != first else None)
        self.last = last

    def spec(self, spec: n.Spec) -> str:
        top = sorted([*spec.models, *spec.blocks, *spec.sections, *spec.settings, *spec.lets], key=_lines)
        previous = None
        for item in top:  # a braced item is set off by a blank line, its comments above it included
            if previous is not None and (_has_body(item) or _has_body(previous)) and self.lines[-1].code:
                self.lines.append(_Line(0, ""))
            self.group([item], 0)
            previous = item
        self.comments_before(10**9, 0, closing=True)
        return _render(self.lines)


def _has_body(node: n.Node) -> bool:
    return isinstance(node, (n.Model, n.Block, n.Section, n.Repeat, n.Parallel, n.Branch))


def _lines(node: n.Node) -> tuple[int, int]:
    return (node.span.line, node.span.end_line) if node.span else (0, 0)


def _header(node: n.Node) -> tuple[str, list]:
    if isinstance(node, n.Model):
        return ("model" + (f" {node.name}" if node.name else "")), node.body
    if isinstance(node, n.Block):
        return f"block {node.name}({', '.join(_params(node))})", node.body
    if isinstance(node, n.Section):
        return node.name, node.settings
    if isinstance(node, n.Repeat):
        return f"repeat {format_expr(node.count)}", node.body
    if isinstance(node, n.Parallel):
        merge = node.merge.func if not (node.merge.args or node.merge.kwargs) else format_expr(node.merge)
        return f"parallel {merge}", node.branches
    if isinstance(node, n.Branch):
        return "branch", node.body
    raise InternalError(f"fmt: unknown construct {type(node).__name__}")


def _params(block: n.Block) -> list[str]:
    return [p.name + (f"={format_expr(p.default)}" if p.default is not None else "") for p in block.params]


def _inline(node: n.Node) -> str:
    """A body on one line: `a; b` (a parallel's branches are separated by spaces)."""
    _, body = _header(node)
    if isinstance(node, n.Parallel):
        return " ".join(f"branch {{ {_inline(b)} }}" if b.body else "branch {}" for b in body)
    return "; ".join(f"{_header(s)[0]} {{ {_inline(s)} }}" if _has_body(s) else format_simple(s) for s in body)


def _render(lines: list[_Line]) -> str:
    """The text, trailing comments lined up per paragraph (lines at one depth with no blank between);
    a line too long to take its comment within `WIDTH` keeps it two spaces after its code."""
    while lines and not lines[-1].code:
        lines.pop()
    out: list[str] = []
    i = 0
    while i < len(lines):
        j = i
        while j + 1 < len(lines) and lines[i].code and lines[j + 1].code and lines[j + 1].depth == lines[i].depth:
            j += 1
        run = lines[i:j + 1]
        fits = [ln for ln in run if ln.comment and len(INDENT * ln.depth + ln.code) + 2 + len(ln.comment) <= WIDTH]
        width = max((len(INDENT * ln.depth + ln.code) for ln in fits), default=0)
        for ln in run:
            text = INDENT * ln.depth + ln.code if ln.code else ""
            if ln.comment:
                text = (text.ljust(width) if ln in fits else text) + "  " + ln.comment
            out.append(text.rstrip())
        i = j + 1
    return "\n".join(out) + "\n"


# --- entry points ----------------------------------------------------------


def format_text(text: str, file: str = "<string>") -> str:
    """The canonical layout of spec `text`. Raises `SpecError` if it does not parse."""
    from specc.lang.syntax import parse_text

    text = text.replace("\r\n", "\n").replace("\r", "\n")
    spec = parse_text(text, file)
    out = _Printer(text).spec(spec)
    if parse_text(out, file) != spec:  # like black's AST check: never write a change of meaning
        raise InternalError(f"fmt would change the meaning of {file}; nothing was written")
    return out


def text_lines(text: str) -> list[str]:
    """`text` split after each `\\n` only (`str.splitlines` would also split at `\\f`, `\\x1c` or U+2028)."""
    return [line + "\n" for line in text.split("\n")[:-1]] + ([text.rsplit("\n", 1)[-1]] if text and not text.endswith("\n") else [])
