"""`specc schema` describes what `specc parse` prints, for every spec; the JSON reads back to the same AST."""

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from specc.cli import main
from specc.core.nodes import Spec, ast_schema, dump_ast
from specc.lang.syntax import parse_text

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.model"))


@pytest.fixture(scope="module")
def validator():
    schema = ast_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_parse_output_follows_the_schema_and_reads_back(path, validator, capsys):
    assert main(["parse", str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    validator.validate(data)
    ast = parse_text(path.read_text(), str(path))
    assert Spec.model_validate(data) == ast
    assert data["models"][0]["span"]["line"] == ast.models[0].span.line  # spans are part of the JSON


def test_schema_rejects_what_is_not_a_spec(validator):
    data = dump_ast(parse_text("model m {\n  input x: (2,)\n  dense(1)\n}\n"))
    data["models"][0]["body"][1]["steps"][0]["tag"] = "lambda"
    assert list(validator.iter_errors(data)), "an unknown node tag must not validate"
    del data["models"][0]["body"][0]["shape"]
    assert list(validator.iter_errors(data))


def test_schema_command_prints_the_schema_without_keras():
    code = "import sys; from specc.cli import main; rc = main(['schema']); assert 'keras' not in sys.modules; sys.exit(rc)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == ast_schema()
