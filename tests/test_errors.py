"""Broken specs in tests/errors/: each states its expected errors as comments on the offending line.

    conv2dd(32, 3)  # error@3: unknown layer `conv2dd` | hint: did you mean `conv2d`?

`error@COL` gives the column (0: an error with no location); the message, hint and
note are prefixes of what specc reports for that line. Every expected error must be
reported, and nothing else.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import specc
from specc.compile.build import build

CASES = sorted((Path(__file__).parent / "errors").glob("*.model"))
ANNOTATION = re.compile(r"#\s*error@(\d+):\s*(.*)$")


def expectations(path: Path):
    out = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        m = ANNOTATION.search(line)
        if not m:
            continue
        col = int(m.group(1))
        parts = [p.strip() for p in m.group(2).split(" | ")]
        exp = {"line": lineno if col else None, "col": col or None, "message": parts[0]}
        for extra in parts[1:]:
            key, _, value = extra.partition(": ")
            exp[key] = value
        out.append(exp)
    return out


def diagnostics(path: Path):
    with pytest.raises(specc.UserError) as info:
        build(specc.load(path).plan)
    return info.value.diagnostics


def test_enough_cases():
    assert len(CASES) >= 25


@pytest.mark.parametrize("path", CASES, ids=lambda p: p.stem)
def test_broken_spec(path):
    expected = expectations(path)
    assert expected, f"{path.name} states no expected error"
    found = diagnostics(path)
    assert len(found) == len(expected), "\n".join(d.render() for d in found)
    for exp, diag in zip(expected, found):
        where = (diag.span.line, diag.span.col) if diag.span else (None, None)
        assert where == (exp["line"], exp["col"]), diag.render()
        assert diag.message.startswith(exp["message"]), diag.render()
        if "hint" in exp:
            assert diag.hint and diag.hint.startswith(exp["hint"]), diag.render()
        if "note" in exp:
            assert any(n.startswith(exp["note"]) for n in diag.notes), diag.render()


def test_rendering_has_location_source_caret_and_hint():
    path = Path(__file__).parent / "errors" / "unknown_layer.model"
    proc = subprocess.run([sys.executable, "-m", "specc", "check", str(path)], capture_output=True, text=True)
    assert proc.returncode == 1
    lines = proc.stderr.splitlines()
    assert lines[0] == f"{path}:3:3: error: unknown layer `conv2dd`"
    assert lines[1].endswith("|   conv2dd(32, 3)  # error@3: unknown layer `conv2dd` | hint: did you mean `conv2d`?")
    assert lines[2].endswith("|   ^~~~~~~")
    assert lines[3] == "hint: did you mean `conv2d`?"
    assert "Traceback" not in proc.stderr


def test_syntax_errors_never_show_terminal_names():
    for path in CASES:
        try:
            specc.load(path)
        except specc.UserError as err:
            assert not re.search(r"\b(RPAR|LPAR|RSQB|LSQB|LBRACE|RBRACE|COLON|EQUAL|COMMA|_NL|\$END|NAME|INT)\b",
                                 err.render().split("|")[0]), err.render()


def test_json_format_is_structured(tmp_path):
    path = Path(__file__).parent / "errors" / "several_errors.model"
    proc = subprocess.run([sys.executable, "-m", "specc", "check", "--format", "json", str(path)],
                          capture_output=True, text=True)
    import json

    errors = json.loads(proc.stdout)["errors"]
    assert proc.returncode == 1
    assert [(e["line"], e["col"]) for e in errors] == [(3, 23), (7, 14), (8, 15)]
    assert errors[1]["message"] == "unknown optimizer `sgdd`" and errors[1]["hint"] == "did you mean `sgd`?"
