"""`specc upgrade`: rewrite a spec written for an older version of the language for the newest one.

A file declares the version it is written in with a top-level `language: N`; a file that declares none
is in version 1 (the language before versions were declared), so that every spec ever written keeps
its meaning. Each incompatible change of the language is one step here, from version N to N + 1, that
rewrites exactly the constructs that changed, as edits of the source text: comments, blank lines and
layout elsewhere stay as the author wrote them. The result declares the newest version, parses, and is
checked to mean the same as the original (the same syntax tree once the rewritten constructs are read
the old way). Nothing here imports Keras.

Versions:
  1  (no declaration)  the top-level setting `device: KIND` chooses the platform.
  2  the platform is set in the `device` section only, `device { kind: KIND }`, beside `parallel`, `mesh`
     and the rest (one way to say it); `let` constants and the facts `data.*` and `train.*` exist in both.
"""

from __future__ import annotations

from specc.core import nodes as n
from specc.core.errors import InternalError, Source
from specc.lang.edits import Edit, apply_edits, line_starts, offset

#: The newest version of the language, and the one a file without `language:` is read in.
LANGUAGE = 2
DEFAULT_LANGUAGE = 1



def declared_language(spec: n.Spec) -> int:
    """The version a parsed file declares (`language: N`), else `DEFAULT_LANGUAGE`."""
    for s in spec.settings:
        if s.key == "language" and isinstance(s.value, n.Number) and isinstance(s.value.value, int):
            return s.value.value
    return DEFAULT_LANGUAGE


def _device_section(text: str, spec: n.Spec, starts: list[int]) -> list[Edit]:
    """1 -> 2: `device: KIND` at the top level becomes `device { kind: KIND }`, laid out as `specc fmt` does."""
    edits = []
    for s in spec.settings:
        if s.key == "device" and s.span and s.value.span:
            value = text[offset(starts, s.value.span.line, s.value.span.col):offset(starts, s.value.span.end_line, s.value.span.end_col)]
            edits.append((offset(starts, s.span.line, s.span.col), offset(starts, s.span.end_line, s.span.end_col),
                          f"device {{\n  kind: {value}\n}}"))
    return edits


#: STEPS[v] rewrites a file of version v for version v + 1.
STEPS = {1: _device_section}


def _declare(text: str, spec: n.Spec, starts: list[int], version: int) -> list[Edit]:
    """Declare `version`: the existing `language:` setting's value, else a new line above the first item
    (below the file's opening comments), set off by a blank line from a braced item after it."""
    for s in spec.settings:
        if s.key == "language" and s.value.span:
            v = s.value.span
            return [(offset(starts, v.line, v.col), offset(starts, v.end_line, v.end_col), str(version))]
    items = [(i.span, i) for i in (*spec.models, *spec.blocks, *spec.sections, *spec.settings, *spec.lets) if i.span]
    if not items:
        return [(len(text), len(text), f"{'' if not text or text.endswith(chr(10)) else chr(10)}language: {version}\n")]
    span, first = min(items, key=lambda item: (item[0].line, item[0].col))
    lines = text.split("\n")
    line = span.line
    # Own-line comments right above the first item belong to it (fmt keeps them together): go above them,
    # but stay below the file's header, the comments that a blank line separates from the first item.
    while line > 1 and lines[line - 2].lstrip().startswith("#"):
        line -= 1
    header_ends = line > 1 and not lines[line - 2].strip()
    gap = "\n" if isinstance(first, (n.Model, n.Block, n.Section)) or header_ends else ""
    return [(starts[line - 1], starts[line - 1], f"language: {version}\n{gap}")]


def upgrade_text(text: str, file: str = "<string>") -> str:
    """`text` rewritten for the newest language version (unchanged if it is already written for it).
    Raises `SpecError` if it does not parse."""
    from specc.lang.syntax import parse_text

    text = text.replace("\r\n", "\n").replace("\r", "\n")
    spec = parse_text(text, file)
    version = declared_language(spec)
    declared = next((st for st in spec.settings if st.key == "language"), None)
    if declared is not None and not (isinstance(declared.value, n.Number) and version in (*STEPS, LANGUAGE)):
        raise Source(text, file).error(f"`language` must be a version from 1 to {LANGUAGE} to upgrade from",
                                       declared.value.span, "e.g. `language: 1` for a file written before versions")
    if version >= LANGUAGE:
        return text
    original = spec
    while version < LANGUAGE:
        text = apply_edits(text, STEPS[version](text, spec, line_starts(text)))
        spec = parse_text(text, file)
        version += 1
    text = apply_edits(text, _declare(text, spec, line_starts(text), LANGUAGE))
    if _read_old_way(parse_text(text, file)) != _read_old_way(original):
        raise InternalError(f"upgrade would change the meaning of {file}; nothing was written")
    return text


def _read_old_way(spec: n.Spec) -> n.Spec:
    """A spec in the terms of version 1, to compare an upgraded file with its original: `device { kind: K }`
    read as `device: K`, and no `language` declaration."""
    settings = [s for s in spec.settings if s.key != "language"]
    sections = []
    for sec in spec.sections:
        if sec.name == "device" and [s.key for s in sec.settings] == ["kind"]:
            settings.append(n.Setting(key="device", value=sec.settings[0].value))
        else:
            sections.append(sec)
    settings.sort(key=lambda s: s.key)
    return spec.model_copy(update={"settings": settings, "sections": sections})
