"""Errors: what the user got wrong, told plainly, and what specc got wrong, kept apart.

User mistakes are `SpecError` (in the spec), `DataError` (in the data it names),
`UsageError` (on the command line) and `TrainingError` (a run that failed: `DeviceError`,
`DivergedError`, `OutOfMemoryError`). Each renders as

    FILE:LINE:COL: error: MESSAGE
        LINE | source line
             | ^~~~~
    hint: ...

and never as a traceback. Anything else that escapes is a bug in specc and is
reported as `InternalError` with its traceback. Exit codes are in `EXIT_CODES`.
"""

from __future__ import annotations

import difflib
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from specc.core.limits import MAX_VALUE_DEPTH

if TYPE_CHECKING:  # spans come from the AST; importing it here would slow `specc --help`
    from pydantic import ValidationError

    from specc.core.nodes import Span

#: Process exit codes, documented in the README.
EXIT_OK = 0
EXIT_SPEC = 1  # a mistake in the .model file
EXIT_USAGE = 2  # a mistake on the command line
EXIT_DATA = 3  # data missing or malformed, device unavailable, training failed
EXIT_INTERNAL = 70  # a bug in specc (EX_SOFTWARE)
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_SPEC: "the spec has an error (syntax, names, arguments, shapes), or `fmt --check` would change it",
    EXIT_USAGE: "the command line is wrong (unknown option, missing file, run directory already used)",
    EXIT_DATA: "data or runtime error (dataset missing, bad data, device unavailable, loss became NaN)",
    EXIT_INTERNAL: "internal error: a bug in specc, please report it with the traceback",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}


def edit_distance(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions, transpositions."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def suggest(word: str, choices: Iterable[str], n: int = 1) -> list[str]:
    """Close matches for a misspelled `word`, best first: typos by edit distance, then by similarity."""
    choices = list(dict.fromkeys(choices))
    limit = max(1, min(3, len(word) // 3))
    scored = sorted((edit_distance(word.lower(), c.lower()), -difflib.SequenceMatcher(None, word, c).ratio(), c)
                    for c in choices if abs(len(c) - len(word)) <= limit)
    found = [c for d, _, c in scored if d <= limit][:n]
    if not found:
        found = difflib.get_close_matches(word, choices, n=n, cutoff=0.6)
    if not found:
        lowered = {c.lower().replace("_", ""): c for c in choices}
        key = word.lower().replace("_", "")
        found = [lowered[m] for m in difflib.get_close_matches(key, list(lowered), n=n, cutoff=0.75)]
    return found


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    found = suggest(word, choices)
    return f"did you mean `{found[0]}`?" if found else None


@dataclass
class Diagnostic:
    """One located message. `to_dict()` is the structured form (`--format json`)."""

    message: str
    file: str = "<string>"
    span: Span | None = None
    hint: str | None = None
    notes: list[str] = field(default_factory=list)
    source: str | None = field(default=None, repr=False)
    severity: str = "error"  # or "warning" (a lint finding: `specc.tools.lint`)
    code: str | None = None  # a lint finding's code, `W101`: silenced on its line by `# specc: ignore[W101]`

    def to_dict(self) -> dict:
        return {
            "file": self.file,
            "line": self.span.line if self.span else None,
            "col": self.span.col if self.span else None,
            "end_line": self.span.end_line if self.span else None,
            "end_col": self.span.end_col if self.span else None,
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "notes": list(self.notes),
        }

    def __post_init__(self):
        # Messages may quote what a hostile file holds (a string, a column name, a line of data):
        # quote at most a short excerpt of it.
        self.message = _shorten(self.message)
        self.hint = _shorten(self.hint) if self.hint else self.hint
        self.notes = [_shorten(n) for n in self.notes]

    def render(self) -> str:
        code = f" [{self.code}]" if self.code else ""
        file = printable(self.file, lines=False)  # a file name with a new line must not start a fake line
        if self.span is None:
            out = [f"{file}: {self.severity}: {self.message}{code}"]
        else:
            out = [f"{file}:{self.span.line}:{self.span.col}: {self.severity}: {self.message}{code}"]
            out += _excerpt(self.source, self.span)
        out += [f"note: {n}" for n in self.notes]
        if self.hint:
            out.append(f"hint: {self.hint}")
        return printable("\n".join(out))


#: The longest message, hint or note a diagnostic keeps; the widest source excerpt it shows.
MAX_MESSAGE = 1000
EXCERPT_WIDTH = 120


def _shorten(text: str, limit: int = MAX_MESSAGE) -> str:
    if len(text) <= limit:
        return text
    return f"{text[: limit - 40]}… ({len(text) - limit + 40:,} more characters)"


def printable(text: str, lines: bool = True) -> str:
    """Text safe to print on a terminal: control characters (an escape sequence in a hostile spec
    could drive the terminal) and lone surrogates become `\\xNN` / `\\uNNNN`; new lines and tabs stay
    unless `lines` is false (a value quoted within one line: a class name, a layer name, a file name).
    Everything specc prints that quotes a file's content goes through it, as diagnostics do."""
    keep = "\n\t" if lines else ""
    if all((c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF) or c in keep for c in text):
        return text
    return "".join(c if (c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF) or c in keep
                   else f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}" for c in text)


@functools.lru_cache(maxsize=8)
def _source_lines(source: str) -> list[str]:
    return source.split("\n")  # as the parser counts lines: `\f` or U+2028 do not start one


def _excerpt(source: str | None, span: Span) -> list[str]:
    if not source:
        return []
    lines = _source_lines(source)
    if not 1 <= span.line <= len(lines):
        return []
    text = lines[span.line - 1].rstrip("\r")
    col = max(1, span.col)
    if len(text) > EXCERPT_WIDTH:  # a window of the line around the caret, `…` where it is cut
        start = max(0, min(col - 1 - EXCERPT_WIDTH // 3, len(text) - EXCERPT_WIDTH))
        shown = text[start: start + EXCERPT_WIDTH]
        text = ("…" if start else "") + shown + ("…" if start + EXCERPT_WIDTH < len(text) else "")
        col = col - start + (1 if start else 0)
        end_col = min(span.end_col - start + (1 if start else 0), len(text) + 1) if span.end_line == span.line else None
    else:
        end_col = span.end_col if span.end_line == span.line else None
    # One column per character: tabs become spaces, invisible characters `?`, so that the caret lines up.
    text = "".join(" " if c == "\t" else c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF else "?" for c in text)
    width = (end_col - col) if end_col is not None else len(text) - col + 1
    width = max(1, min(width, len(text) - col + 1))
    gutter = str(span.line)
    pad = " " * len(gutter)
    return [
        f" {gutter} | {text}",
        f" {pad} | {' ' * (col - 1)}^{'~' * (width - 1)}",
    ]


#: The most diagnostics one error renders as text (`to_dicts` has them all).
MAX_SHOWN = 50


class UserError(Exception):
    """A mistake the user can fix. Subclasses choose the exit code."""

    exit_code = EXIT_SPEC

    def __init__(self, diagnostics: Diagnostic | list[Diagnostic]):
        self.diagnostics = diagnostics if isinstance(diagnostics, list) else [diagnostics]
        super().__init__(self.render())

    @property
    def first(self) -> Diagnostic:
        return self.diagnostics[0]

    @property
    def message(self) -> str:
        return self.first.message

    @property
    def line(self) -> int | None:
        return self.first.span.line if self.first.span else None

    @property
    def col(self) -> int | None:
        return self.first.span.col if self.first.span else None

    @property
    def hint(self) -> str | None:
        return self.first.hint

    def render(self) -> str:
        shown = [d.render() for d in self.diagnostics[:MAX_SHOWN]]
        if len(self.diagnostics) > MAX_SHOWN:
            shown.append(f"... and {len(self.diagnostics) - MAX_SHOWN:,} more errors (`--format json` lists them all)")
        return "\n".join(shown)

    def to_dicts(self) -> list[dict]:
        return [d.to_dict() for d in self.diagnostics]


class SpecError(UserError):
    """A mistake in a .model file: syntax, unknown names, bad arguments, shapes."""

    exit_code = EXIT_SPEC


class DataError(UserError):
    """Data that is missing, malformed, or does not fit the model; a file specc reads that is not what it claims."""

    exit_code = EXIT_DATA


class TrainingError(UserError):
    """The spec and its data were accepted, but running them failed. Exit code 3, as for a `DataError`
    ("data or runtime error"); the subclasses say what failed."""

    exit_code = EXIT_DATA


class DeviceError(TrainingError):
    """The devices the spec asks for are not there: a platform JAX cannot use, a mesh larger than the devices,
    processes that could not join a run."""


class DivergedError(TrainingError):
    """The loss became NaN or infinite: training stopped, located where the first non-finite value came from."""


class OutOfMemoryError(TrainingError):
    """XLA ran out of device memory training or evaluating."""


class UsageError(UserError):
    """A mistake on the command line."""

    exit_code = EXIT_USAGE


class InternalError(Exception):
    """A broken invariant inside specc: a bug, never the user's mistake. The CLI reports it, and any
    other unexpected exception, with its traceback and exit code 70."""

    exit_code = EXIT_INTERNAL


class Source:
    """One spec file's text and name, to locate diagnostics in."""

    def __init__(self, text: str, file: str = "<string>"):
        self.text = text
        self.file = file

    def diag(self, message: str, span: Span | None, hint: str | None = None, notes: list[str] | None = None) -> Diagnostic:
        return Diagnostic(message=message, file=self.file, span=span, hint=hint, notes=list(notes or []), source=self.text)

    def error(self, message: str, span: Span | None, hint: str | None = None, notes: list[str] | None = None) -> SpecError:
        return SpecError(self.diag(message, span, hint, notes))


def show_value(v: Any, width: int = 80) -> str:
    """A value quoted in a message: at most about `width` characters of it (a prefix and `...`), however large."""
    if isinstance(v, str):
        return f"`{v if len(v) <= width else v[:width] + '...'}`"
    if isinstance(v, bool):
        return "`true`" if v else "`false`"
    if v is None:
        return "`none`"
    return f"`{brief(v, width)}`"


def brief(v: Any, width: int = 80) -> str:
    """`repr(v)` cut after about `width` characters, without making the whole of it (a value may be large)."""
    out: list[str] = []
    used = 0

    def put(text: str) -> bool:
        nonlocal used
        out.append(text)
        used += len(text)
        return used <= width

    def walk(x: Any, depth: int) -> bool:
        if isinstance(x, (list, tuple)):
            if depth > MAX_VALUE_DEPTH:
                return put("...") and False
            if not put("[" if isinstance(x, list) else "("):
                return False
            for i, item in enumerate(x):
                if (i and not put(", ")) or not walk(item, depth + 1):
                    return False
            return put(("," if isinstance(x, tuple) and len(x) == 1 else "") + ("]" if isinstance(x, list) else ")"))
        return put(repr(x)[:width + 1])

    whole = walk(v, 0)
    text = "".join(out)
    return text if whole else text[:width] + " ..."


def describe_schema_error(err: ValidationError) -> str:
    """The first problem pydantic found, as `key.sub: what` (with how many more)."""
    problems = err.errors()
    first = problems[0]
    where = ".".join(str(p) for p in first["loc"]) or "the top level"
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    return printable(f"`{where}`: {first['msg']}"[:300], lines=False) + more
