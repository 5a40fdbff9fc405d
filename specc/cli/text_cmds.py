"""Commands for architectures kept as text: `emit`, `fmt`, `upgrade`, `diff`, `graph`, `import`, `parse`, `schema`.

`fmt`, `upgrade`, `parse` and `schema` import neither Keras nor JAX (tests/test_startup.py): each command
imports its tools inside its function.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from specc.cli.registry import FILE, FILES, arg, command, text_or_json
from specc.core.artifacts import write_atomic
from specc.core.errors import Diagnostic, EXIT_OK, EXIT_SPEC, printable, SpecError, UsageError, UserError


@command("emit", "write standalone Keras 3 Python code for the model",
         "Write a standalone Python file with Keras 3 code that builds the same model (and, with --train, the "
         "training script).",
         FILE,
         arg("-o", "--out", metavar="PY", help="write to this file (default: standard output)"),
         arg("--train", action="store_true", help="also emit data loading, compile, fit and evaluate"))
def cmd_emit(args) -> int:
    from specc.compile.check import load_plan
    from specc.tools.emit import emit_python

    plan = load_plan(args.file)
    if args.train and plan.train is None:
        raise SpecError(plan.diag("`--train` needs a `train` section in the spec", None,
                                  hint="add `train { loss: ...; optimizer: adam; epochs: 5 }`, or emit the model only"))
    spec_path = os.path.relpath(os.path.abspath(args.file), os.path.dirname(os.path.abspath(args.out or "x")))
    text = emit_python(plan, train=args.train, spec_path=Path(spec_path).as_posix())
    if args.out:
        write_atomic(args.out, text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


# -- fmt and upgrade: a rewrite of each file ----------------------------------------------------------

CHECK = arg("--check", action="store_true", help="change nothing; exit 1 if a file would change")
DIFF = arg("--diff", action="store_true", help="change nothing; print what would change as a unified diff")


@command("fmt", "rewrite specs in the canonical layout",
         "Rewrite .model files in one canonical layout; comments are kept and meaning never changes.",
         FILES, CHECK, DIFF)
def cmd_fmt(args) -> int:
    from specc.lang.fmt import format_text

    return _rewrite_files(args, format_text, "reformat", "reformatted")


@command("upgrade", "rewrite specs for the newest language version, keeping comments",
         "Rewrite .model files written for an older version of the language (the `language:` they declare; 1 when "
         "they declare none) for the newest, changing only what the language changed and declaring the new version.",
         FILES, CHECK, DIFF)
def cmd_upgrade(args) -> int:
    from specc.lang.upgrade import upgrade_text

    return _rewrite_files(args, upgrade_text, "upgrade", "upgraded")


def _rewrite_files(args, transform: Callable[[str, str], str], verb: str, done: str) -> int:
    """Apply `transform(text, file) -> text` to each of `args.files` (`-`: standard input to standard output),
    writing changed files atomically; with `args.check` or `args.diff` nothing is written and a file that would
    change makes the exit code 1. `verb` and `done` say what is done (`reformat`, `reformatted`)."""
    from specc.lang.syntax import read_spec

    code = EXIT_OK
    for file in args.files:
        try:
            text = sys.stdin.read() if file == "-" else read_spec(file)
            out = transform(text, "<stdin>" if file == "-" else file)
        except UserError as err:
            print(err.render(), file=sys.stderr)
            code = max(code, err.exit_code)
            continue
        if file == "-":
            sys.stdout.write(out)
        elif out != text:
            code = max(code, _rewrite(file, text, out, args.check, args.diff, verb, done))
    return code


def _rewrite(file: str, text: str, out: str, check: bool, show_diff: bool, verb: str, done: str) -> int:
    """Write `out` over `file`, or with `check`/`show_diff` only say so (and show how): exit code 1."""
    from specc.lang.fmt import text_lines

    shown = printable(file, lines=False)  # a file name may hold a new line or an escape sequence
    if show_diff:  # lines as the parser counts them; what a terminal would obey, escaped
        diff = difflib.unified_diff(text_lines(text), text_lines(out), shown, shown)
        sys.stdout.writelines(printable(line.rstrip("\n")) + "\n" for line in diff)
    if check or show_diff:
        print(f"would {verb} {shown}", file=sys.stderr)
        return EXIT_SPEC
    write_atomic(file, out)
    print(f"{done} {shown}", file=sys.stderr)
    return EXIT_OK


# -- diff -------------------------------------------------------------------------------------------


@command("diff", "semantic diff of two architectures (also a git diff driver)",
         "Compare two specs as networks and training settings, not as text: layers added, removed or changed, "
         "parameter counts, settings. With the 7 arguments git passes to an external diff driver, it works as one "
         "(see the README).",
         arg("files", nargs="+", metavar="FILE", help="A.model B.model (or git's 7 arguments)"),
         text_or_json("for people, or JSON for tools"))
def cmd_diff(args) -> int:
    """`specc diff A.model B.model [--format json]`, or as git's external diff driver (7 or 9 arguments).
    Exit 0 once a diff is printed, differences or not. As a git driver it never fails: a spec that does
    not compile is reported, followed by a plain unified diff of the two texts."""
    from specc.tools.diff import compile_or_none, diff_plans, render_diff

    git = len(args.files) in (7, 9)
    paths, labels = _sides(args.files)
    texts = _read_sides(paths, labels, git)
    if texts is None:
        return EXIT_OK
    try:
        d = diff_plans(compile_or_none(texts[0], labels[0]), compile_or_none(texts[1], labels[1]), labels[0], labels[1])
    except Exception as err:  # noqa: BLE001 - as a git driver, any failure falls back to a text diff
        if not git:
            raise
        _print_text_diff(err, texts, labels)
        return EXIT_OK
    if args.format == "json":
        print(json.dumps(d.to_dict(), indent=2))
    else:
        text = render_diff(d)
        print(_colored(text) if sys.stdout.isatty() and not os.environ.get("NO_COLOR") else text)
    return EXIT_OK


def _sides(files: list[str]) -> tuple[list[str], list[str]]:
    """(the two paths to read, the labels to show): A.model B.model, or git's 7 (9 for a rename) arguments."""
    if len(files) in (7, 9):
        return _git_labels(files)
    if len(files) == 2:
        return files, files
    raise UsageError(Diagnostic(f"expected two files (A.model B.model) or the 7 arguments of a git diff driver, "
                                f"got {len(files)}", file="specc diff"))


def _read_sides(paths: list[str], labels: list[str], git: bool) -> list[str | None] | None:
    """The two texts (None for `/dev/null`). As a git driver, a file that cannot be read as a spec is named on one
    line, never shown as a text diff (too large, or not text), and the answer is None: nothing more to print."""
    from specc.tools.diff import read_or_null

    texts = []
    for path, label in zip(paths, labels):
        try:
            texts.append(read_or_null(path))
        except UserError as err:
            if not git:
                raise
            why = err.diagnostics[0].message.splitlines()[0] if err.diagnostics else type(err).__name__
            print(printable(f"specc diff: {label}: not shown: {why}", lines=False)[:400])
            return None
    return texts


def _print_text_diff(err: Exception, texts: list[str | None], labels: list[str]) -> None:
    """As a git driver: why the specs could not be compared, then a plain diff of their texts."""
    from specc.tools.diff import text_diff

    why = err.render() if isinstance(err, UserError) else printable(f"specc diff: internal error: {type(err).__name__}: {err}")
    print(f"{why}\nspecc diff: showing a text diff instead")
    shown = [printable(label, lines=False) for label in labels]
    sys.stdout.write(printable(text_diff(texts[0], texts[1], shown[0], shown[1])))


def _git_labels(files: list[str]) -> tuple[list[str], list[str]]:
    """Paths to read and labels to show from git's `path old-file old-hex old-mode new-file new-hex new-mode
    [new-path rename-info]`."""
    from specc.tools.diff import NULL

    old_path = new_path = files[0]
    if len(files) == 9:
        new_path = files[7]
    paths = [files[1], files[4]]
    labels = [NULL if paths[0] == NULL else f"a/{old_path}", NULL if paths[1] == NULL else f"b/{new_path}"]
    return paths, labels


def _colored(text: str) -> str:
    """ANSI colors for a terminal: header bold, added green, removed red, changed yellow."""
    colors = {"diff": "1", "+": "32", "-": "31", "~": "33"}
    out = []
    for line in text.split("\n"):
        color = colors.get(line.split(" ", 1)[0])
        out.append(f"\x1b[{color}m{line}\x1b[0m" if color else line)
    return "\n".join(out)


# -- graph, import, parse, schema ---------------------------------------------------------------------


@command("graph", "draw the network: Mermaid, Graphviz DOT, SVG or PNG",
         "Draw the network with each layer's output shape and parameter count. Mermaid and DOT need nothing "
         "installed; SVG and PNG need Graphviz's `dot`.",
         FILE,
         arg("-o", "--out", metavar="PATH", help=".mmd, .dot, .svg or .png (default: Mermaid on standard output)"),
         arg("--format", choices=("mmd", "dot", "svg", "png"), help="override the format the suffix implies"))
def cmd_graph(args) -> int:
    """`specc graph FILE [-o PATH] [--format F]`: Mermaid on standard output, or the file `-o` names."""
    from specc.compile.check import load_plan
    from specc.tools.graph import emit_dot, emit_mermaid, graph_plan, render_graphviz

    fmt = _graph_format(args.format, args.out)
    if fmt in ("svg", "png") and shutil.which("dot") is None:  # say so before building the model
        render_graphviz("", fmt)
    if fmt == "png" and not args.out and sys.stdout.isatty():
        raise UsageError(Diagnostic("will not write PNG bytes to a terminal", file="specc graph",
                                    hint="give `-o FILE.png`"))
    graph = graph_plan(load_plan(args.file))
    text = emit_mermaid(graph) if fmt == "mmd" else emit_dot(graph)
    content = text.encode("utf-8") if fmt in ("mmd", "dot") else render_graphviz(text, fmt)
    if not args.out:
        _write_stdout(content, binary=fmt == "png")
        return EXIT_OK
    try:
        write_atomic(args.out, content)
    except OSError as err:
        raise UsageError(Diagnostic(f"cannot write it: {err.strerror or err}", file=args.out)) from None
    print(f"wrote {args.out} ({fmt}, {len(graph.nodes)} nodes, {len(graph.edges)} edges)", file=sys.stderr)
    return EXIT_OK


def _write_stdout(content: bytes, binary: bool) -> None:
    if not binary:
        sys.stdout.write(content.decode("utf-8"))
        return
    sys.stdout.flush()
    sys.stdout.buffer.write(content)
    sys.stdout.buffer.flush()


def _graph_format(given: str | None, out: str | None) -> str:
    """`--format`, else the suffix of `-o`, else Mermaid."""
    from specc.tools.graph import FORMATS

    if given:
        return given
    if not out:
        return "mmd"
    suffix = Path(out).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        allowed = ", ".join(f".{f}" for f in FORMATS)
        raise UsageError(Diagnostic(f"cannot tell the format from `{Path(out).name}`: expected {allowed}",
                                    file=out, hint="or give `--format mmd|dot|svg|png`"))
    return suffix


@command("import", "turn a Keras model (.keras file) into a spec",
         "Write a .model spec for a saved Keras model; says which layer cannot be expressed, and why, when one "
         "cannot.",
         arg("model", metavar="MODEL.keras"),
         arg("-o", "--out", metavar="FILE", help="write to this file (default: standard output)"))
def cmd_import(args) -> int:
    from specc.tools.importer import import_file

    text = import_file(args.model)
    if args.out:
        write_atomic(args.out, text)
    else:
        print(text, end="")
    return EXIT_OK


@command("parse", "print a spec's syntax tree as JSON (for editors and tools)",
         "Print the AST of a spec as JSON, with source spans; `specc schema` describes it.",
         FILE)
def cmd_parse(args) -> int:
    from specc.core.nodes import dump_ast
    from specc.lang.syntax import parse_text, read_spec

    print(json.dumps(dump_ast(parse_text(read_spec(args.file), args.file)), indent=2))
    return EXIT_OK


@command("schema", "print the JSON Schema of the AST that `specc parse` prints",
         "Print the JSON Schema (draft 2020-12) of the AST that `specc parse` prints.")
def cmd_schema(args) -> int:
    from specc.core.nodes import ast_schema

    print(json.dumps(ast_schema(), indent=2))
    return EXIT_OK
