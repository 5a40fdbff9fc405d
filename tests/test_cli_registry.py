"""The command registry (`specc.cli.registry`): every command declared once in `specc/cli/`, the parser and
`specc --help` built from it, and the README's command tables listing exactly the registered commands."""

import ast
import re
from pathlib import Path

import pytest

from specc import cli
from specc.cli.registry import COMMANDS, command, make_parser
from specc.core.errors import InternalError

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def readme_rows() -> dict[str, list[str]]:
    """The first cell of each README table row that shows a command (`| \\`specc check FILE...\\` | ...`), by the
    commands it names."""
    rows: dict[str, list[str]] = {}
    for line in README.splitlines():
        if line.startswith("| `specc "):
            cell = line.split(" | ")[0]
            for name in re.findall(r"`specc ([a-z]+)", cell) + re.findall(r", `([a-z]+)`", cell):
                rows.setdefault(name, []).append(cell)
    return rows


def test_the_readme_lists_every_registered_command_and_no_other():
    listed = set(readme_rows())
    assert listed - set(COMMANDS) == set(), "the README shows commands that do not exist"
    assert set(COMMANDS) - listed == set(), "registered commands missing from the README's command tables"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_options_the_readme_shows_exist(name):
    for cell in readme_rows().get(name, []):
        if not cell.startswith(f"| `specc {name} "):
            continue  # a row naming several commands shows no options
        shown = set(re.findall(r"(?<![\w-])(--?[a-z][a-z-]*)", cell))
        assert shown <= COMMANDS[name].flags(), f"{cell}: {sorted(shown - COMMANDS[name].flags())} not options of {name}"


def test_help_lists_every_command_with_its_one_line_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    for c in COMMANDS.values():
        assert re.search(rf"^    {c.name} +{re.escape(c.help.split()[0])}", out, re.M), c.name


def test_each_command_parses_its_own_arguments():
    parser = make_parser()
    args = parser.parse_args(["diff", "a.model", "b.model", "--format", "json"])
    assert args.command == "diff" and args.files == ["a.model", "b.model"] and args.format == "json"
    args = parser.parse_args(["run", "s.model", "--num-processes", "2"])
    assert args.num_processes == 2 and args.epochs is None and not args.force


def test_every_command_function_lives_in_the_cli_package():
    """No tool module runs a command: a `cmd_*` function outside specc/cli/ is one declared in the wrong place."""
    stray = []
    for path in sorted((ROOT / "specc").rglob("*.py")):
        if "cli" in path.relative_to(ROOT / "specc").parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("cmd_"):
                stray.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert stray == []
    assert all(c.run.__module__.startswith("specc.cli.") for c in COMMANDS.values())


def test_a_command_is_registered_once():
    with pytest.raises(InternalError, match="`check` is registered twice"):
        command("check", "again", "again")(lambda args: 0)
    assert COMMANDS["check"].run.__name__ == "cmd_check"
