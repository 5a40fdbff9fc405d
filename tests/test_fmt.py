"""`specc fmt`: canonical, idempotent, keeps every comment, never changes meaning.

Fixture pairs in tests/fixtures/fmt/ (`NAME.model` -> `NAME.formatted`) pin the layout;
rewrite them on purpose with `pytest tests/test_fmt.py --update-golden`.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import specc
from specc.cli import main
from specc.core.errors import SpecError
from specc.lang.fmt import format_text
from specc.lang.syntax import parse_text

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "fmt"
SPECS = sorted((ROOT / "specs").glob("*.model"))


def _doc_examples() -> list[tuple[str, str]]:
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for i, text in enumerate(re.findall(r"```model\n(.*?)```", doc.read_text(), re.S)):
            found.append((f"{doc.name}#{i + 1}", text))
    return found


def _parses(path: Path) -> bool:
    try:
        parse_text(path.read_text(), str(path))
        return True
    except SpecError:
        return False


# Everything that parses: shipped specs, docs examples, fixtures, and the broken specs whose errors are semantic.
CORPUS = ([(p.name, p.read_text()) for p in SPECS] + _doc_examples()
          + [(p.name, p.read_text()) for p in sorted(FIXTURES.glob("*.model"))]
          + [(f"errors/{p.name}", p.read_text()) for p in sorted((ROOT / "tests" / "errors").glob("*.model")) if _parses(p)])


def _comments(text: str) -> list[str]:
    """The comments of a spec in order (strings skipped, trailing spaces ignored)."""
    lexemes = re.finditer(r"""("([^"\\\n]|\\.)*"|'([^'\\\n]|\\.)*')|(#[^\n]*)""", text)
    return [m.group(4).rstrip() for m in lexemes if m.group(4)]


def test_corpus_is_large():
    assert len(CORPUS) >= 60


@pytest.mark.parametrize("name,text", CORPUS, ids=[c[0] for c in CORPUS])
def test_fmt_is_idempotent_keeps_comments_and_meaning(name, text):
    out = format_text(text, name)
    assert format_text(out, name) == out
    assert parse_text(out, name) == parse_text(text, name)  # spans and spelling aside, the same tree
    assert _comments(out) == _comments(text)


MEANINGFUL = [(p.name, p.read_text()) for p in SPECS] + _doc_examples()  # specs that check, not only parse


@pytest.mark.parametrize("name,text", MEANINGFUL, ids=[c[0] for c in MEANINGFUL])
def test_formatted_spec_has_the_same_plan(name, text):
    plan = specc.loads(text, name).plan
    again = specc.loads(format_text(text, name), name).plan
    assert again.model_dump() == plan.model_dump()


BUILT = [p for p in SPECS if p.stem in ("mnist", "cifar10_resnet20", "sst2_lstm")]


@pytest.mark.parametrize("path", BUILT, ids=[p.stem for p in BUILT])
def test_formatted_spec_builds_the_identical_model(path):
    """Equal plans (above, for every spec and example) build equal models; shown here end to end."""
    text = path.read_text()
    a = specc.loads(text, str(path)).build_model()
    b = specc.loads(format_text(text.replace("\n", "\n\n"), str(path)), str(path)).build_model()
    assert b.count_params() == a.count_params()
    assert [_config(layer) for layer in b.layers] == [_config(layer) for layer in a.layers]


def _config(layer) -> dict:
    """A layer's config but for what Keras draws anew per build: seeds of random layers built
    without one, and the automatic names of the layers a wrapper makes (`forward_lstm_3`)."""
    def strip(value, top=False):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k != "seed" and (top or k != "name")}
        return [strip(v) for v in value] if isinstance(value, list) else value

    return strip(layer.get_config(), top=True)


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_shipped_specs_are_formatted(path):
    assert format_text(path.read_text(), str(path)) == path.read_text(), f"run `specc fmt {path}`"


FIXTURE_FILES = sorted(FIXTURES.glob("*.model"))


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=[p.stem for p in FIXTURE_FILES])
def test_fixture_layout(path, update_golden):
    expected = path.with_suffix(".formatted")
    out = format_text(path.read_text(), str(path))
    if update_golden:
        expected.write_text(out)
    assert out == expected.read_text()


def test_fmt_normalizes_line_endings_and_separators():
    messy = "model m {\r\n\tinput x: (2,)\r\n\tdense(1)  ;  relu\r\n}\r\n"
    assert format_text(messy) == "model m {\n  input x: (2,)\n  dense(1); relu\n}\n"


def test_fmt_keeps_numbers_and_strings_as_meant():
    out = format_text("model m { input x: (2,); dense(1_000, name='a\"b'); dropout(1e-1) }")
    assert "dense(1_000, name=\"a\\\"b\")" in out and "dropout(1e-1)" in out


def test_fmt_check_exits_1_and_changes_nothing(tmp_path, capsys):
    spec = tmp_path / "m.model"
    spec.write_text("model m{input x:(2,);dense(1)}")
    before = spec.read_text()
    assert main(["fmt", "--check", str(spec)]) == 1
    assert spec.read_text() == before
    assert "would reformat" in capsys.readouterr().err
    assert main(["fmt", str(spec)]) == 0
    assert spec.read_text() == "model m {\n  input x: (2,)\n  dense(1)\n}\n"
    assert main(["fmt", "--check", str(spec)]) == 0


def test_fmt_diff_prints_a_unified_diff(tmp_path, capsys):
    spec = tmp_path / "m.model"
    spec.write_text("model m { input x: (2,); dense( 1 ) }\n")
    assert main(["fmt", "--diff", str(spec)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"--- {spec}") and "+  dense(1)" in out


def test_fmt_of_a_syntax_error_is_located(tmp_path, capsys):
    spec = tmp_path / "bad.model"
    spec.write_text("model m {\n  dense(1\n}\n")
    assert main(["fmt", str(spec)]) == 1
    assert f"{spec}:2:8: error:" in capsys.readouterr().err
    assert spec.read_text() == "model m {\n  dense(1\n}\n"


def test_fmt_reads_stdin_and_does_not_import_keras():
    code = "import sys; from specc.cli import main; rc = main(['fmt', '-']); assert 'keras' not in sys.modules; sys.exit(rc)"
    done = subprocess.run([sys.executable, "-c", code], input="model m{input x:(2,)}", capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "model m {\n  input x: (2,)\n}\n"
