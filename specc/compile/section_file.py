"""The validator of the file's own top-level settings: `language: N`, and (language 1) `device: KIND`.

The language version is read first: since language 2 the platform is set in the `device` section only
(`specc.lang.upgrade` rewrites older files), and the `device` validator (`section_device`) takes the top-level
setting's value when there is no section.
"""

from __future__ import annotations

from typing import NamedTuple

from specc.compile.section_device import device_kind
from specc.compile.shared import Core
from specc.core import nodes as n
from specc.core.errors import show_value
from specc.lang import fmt
from specc.lang.upgrade import DEFAULT_LANGUAGE, LANGUAGE


class FileSettings(NamedTuple):
    """What the file's validator returns: the language version, and the top-level `device:` (its platform, None
    if it is wrong; the setting, None if there is none that counts)."""

    language: int
    device: str | None
    setting: n.Setting | None


def check_file(ck: Core, sec: n.Section | None = None) -> FileSettings:
    """The file's top-level settings (`sec` is always None: they are `spec.settings`)."""
    top = ck.settings("file", ck.spec.settings)
    language = (ck.guarded(check_language, ck, top["language"]) if "language" in top else None) or DEFAULT_LANGUAGE
    setting = top.get("device")
    if setting is not None and language >= 2:
        ck.fail("since language 2 the device is set in a section: `device { kind: ... }`", setting.span,
                f"write `device {{ kind: {fmt.format_expr(setting.value)} }}`; `specc upgrade FILE` rewrites a "
                "file for the newest language")
        setting = None
    device = ck.guarded(device_kind, ck, setting) if setting is not None else "auto"
    return FileSettings(language, device, setting)


def check_language(ck: Core, s: n.Setting) -> int:
    v = ck.value(s.value, {})
    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v:
        raise ck.fail(f"`language` is the version of the language the file is written in, a whole number from 1 "
                      f"to {LANGUAGE}; got {show_value(v)}", s.value.span, f"e.g. `language: {LANGUAGE}`")
    if v > LANGUAGE:
        raise ck.fail(f"the file is written in language {v}, but this specc knows versions 1 to {LANGUAGE}",
                      s.value.span, "upgrade specc (`pip install -U specc`)")
    return v
