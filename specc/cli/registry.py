"""The registry of specc's commands: each declared once, beside the function that runs it.

    @command("fmt", "rewrite specs in the canonical layout",
             "Rewrite .model files in one canonical layout; ...",
             FILES, arg("--check", action="store_true", help="..."))
    def cmd_fmt(args) -> int: ...

A declaration is plain data: the name, the one-line help `specc --help` lists, the description `specc NAME --help`
prints, the arguments (argparse's own keywords, kept as they are), and the function, which takes the parsed
arguments and returns the exit code. `make_parser` builds the whole command line from `COMMANDS`, in the order
the commands were registered; the README's command tables are checked against it (tests/test_cli_registry.py).

This module imports neither Keras nor the compiler: `specc --help` reads every declaration, so a command module
imports its tools inside the command function, where they are needed.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import Any

from specc.core.errors import EXIT_CODES, EXIT_USAGE, InternalError
from specc.core.version import __version__

DESCRIPTION = "Compile and run .model files: neural networks as text, on Keras 3 + JAX."
EPILOG = "exit codes:\n" + "\n".join(f"  {code:<4} {why}" for code, why in EXIT_CODES.items())


# Plain classes, not dataclasses or named tuples: `specc --help` reads this module, and making those classes
# would cost it more than the rest of this package together.


class Arg:
    """One argument as `ArgumentParser.add_argument` takes it: its names (`"file"`, or `"-o", "--out"`) and keywords."""

    __slots__ = ("names", "options")

    def __init__(self, names: tuple[str, ...], options: dict[str, Any]) -> None:
        self.names = names
        self.options = options

    @property
    def flags(self) -> tuple[str, ...]:
        """Its option strings (`--out`, `-o`); none for a positional argument."""
        return tuple(name for name in self.names if name.startswith("-"))


class Group:
    """Arguments shown together under a title in `specc NAME --help`."""

    __slots__ = ("title", "args")

    def __init__(self, title: str, args: tuple[Arg, ...]) -> None:
        self.title = title
        self.args = args


class Command:
    """A command: its name, the one line `specc --help` lists, the description `specc NAME --help` prints, its
    arguments, and the function that runs it (the parsed arguments -> the exit code)."""

    __slots__ = ("name", "help", "description", "arguments", "run")

    def __init__(self, name: str, help: str, description: str, arguments: tuple[Arg | Group, ...],
                 run: Callable[[argparse.Namespace], int]) -> None:
        self.name = name
        self.help = help
        self.description = description
        self.arguments = arguments
        self.run = run

    def args(self) -> list[Arg]:
        """Every argument, those of groups included."""
        return [a for item in self.arguments for a in (item.args if isinstance(item, Group) else (item,))]

    def flags(self) -> set[str]:
        """Every option string the command takes (`--format`, `-o`, ...), besides `-h/--help`."""
        return {flag for a in self.args() for flag in a.flags}


#: Every command by name, in the order `specc --help` lists them (the order they were registered).
COMMANDS: dict[str, Command] = {}


def arg(*names: str, **options: Any) -> Arg:
    return Arg(names, options)


def group(title: str, *args: Arg) -> Group:
    return Group(title, args)


def command(name: str, help: str, description: str, *arguments: Arg | Group):
    """Register the decorated function as the command `name`; the function itself is returned unchanged."""

    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        if name in COMMANDS:
            raise InternalError(f"the command `{name}` is registered twice")  # found as specc starts
        COMMANDS[name] = Command(name, help, description, arguments, run)
        return run

    return register


# -- arguments several commands share -----------------------------------------------------------------

FILE = arg("file", metavar="FILE")
FILES = arg("files", nargs="+", metavar="FILE")
RUN_DIR = arg("run", metavar="RUN_DIR")


def text_or_json(help: str | None = None) -> Arg:
    """`--format text|json`: for people (the default), or JSON for tools."""
    return arg("--format", choices=("text", "json"), default="text", **({"help": help} if help else {}))


# -- values of arguments: a bad one is a usage error (exit 2) in argparse's own words -----------------


def whole(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"expected a number >= {least}, got {value}")
    return value


def positive(text: str) -> int:
    return whole(text, 1)


def seed(text: str) -> int:
    return whole(text, 0)


def temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


# -- the parser -------------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors: same exit code, our wording
        self.print_usage(sys.stderr)
        print(f"specc: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def make_parser(commands: dict[str, Command] = COMMANDS) -> argparse.ArgumentParser:
    """`specc`'s parser: `--version`, and a subcommand for each registered command."""
    p = Parser(prog="specc", description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"specc {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for c in commands.values():
        parser = sub.add_parser(c.name, help=c.help, description=c.description)
        for item in c.arguments:
            if isinstance(item, Group):
                target = parser.add_argument_group(item.title)
                for a in item.args:
                    target.add_argument(*a.names, **a.options)
            else:
                parser.add_argument(*item.names, **item.options)
    return p
