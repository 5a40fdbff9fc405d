"""Source text edited by span: the offsets of lines, the text a span covers, and replacements applied from the
end backwards (so that earlier offsets stay valid). `specc upgrade` rewrites what changed between language
versions with it; `specc.compile.space` writes a trial's values where its spaces stand."""

from __future__ import annotations

from specc.core.nodes import Span

Edit = tuple[int, int, str]  # (start offset, end offset, replacement)


def line_starts(text: str) -> list[int]:
    """The offset each line of `text` starts at (line 1 first)."""
    return [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]


def offset(starts: list[int], line: int, col: int) -> int:
    """The offset of a 1-based line and column."""
    return starts[line - 1] + col - 1


def bounds(starts: list[int], span: Span) -> tuple[int, int]:
    """The start and end offsets of a span."""
    return offset(starts, span.line, span.col), offset(starts, span.end_line, span.end_col)


def apply_edits(text: str, edits: list[Edit]) -> str:
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text
