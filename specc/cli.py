"""The `specc` command line: check, summary, run, generate, emit, fmt, diff, graph, import, parse, schema.

Exit codes (also in the README and `specc --help`):
  0 success; 1 error in a spec; 2 usage error; 3 data or runtime error;
  70 internal error (a bug in specc); 130 interrupted.
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import sys
import traceback
from pathlib import Path

from specc.core.version import __version__
from specc.core.errors import Diagnostic, EXIT_CODES, EXIT_DATA, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UsageError, UserError, printable

EPILOG = "exit codes:\n" + "\n".join(f"  {code:<4} {why}" for code, why in EXIT_CODES.items())


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own usage errors: same exit code, our wording
        self.print_usage(sys.stderr)
        print(f"specc: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _temperature(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def _whole(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"expected a number >= {least}, got {value}")
    return value


def _positive(text: str) -> int:
    return _whole(text, 1)


def _seed(text: str) -> int:
    return _whole(text, 0)


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="specc", description="Compile and run .model files: neural networks as text, on Keras 3 + JAX.",
                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"specc {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    c = sub.add_parser("check", help="parse, resolve and infer shapes; no training",
                       description="Check specs: syntax, names against Keras, arguments, and shapes.")
    c.add_argument("files", nargs="+", metavar="FILE")
    c.add_argument("--syntax-only", action="store_true", help="only parse (fast: does not import Keras)")
    c.add_argument("--format", choices=("text", "json"), default="text", help="how to print errors")
    c.add_argument("--strict", action="store_true", help="lint warnings (docs/lint.md) are errors: exit 1")

    s = sub.add_parser("summary", help="each layer's output shape and parameters",
                       description="Print each layer with its output shape and parameter count, and the total.")
    s.add_argument("file", metavar="FILE")
    s.add_argument("--format", choices=("text", "json"), default="text", help="a table, or JSON for tools")
    s.add_argument("--no-cost", action="store_true", help="skip the pre-flight cost (FLOPs and peak memory of the "
                   "compiled training step; compiling it takes seconds)")

    r = sub.add_parser("run", help="train, evaluate on the test split, save the run",
                       description="Train the model, evaluate it on the test split, and write model.keras, "
                       "metrics.json, history.csv and curves.png into the run directory, with a checkpoint after "
                       "every epoch for --resume.")
    r.add_argument("file", metavar="FILE", nargs="?", help="the spec (with --resume: default RUN_DIR/spec.model)")
    r.add_argument("--out", metavar="DIR", help="run directory (default: runs/NAME-TIMESTAMP)")
    r.add_argument("--epochs", type=_positive, metavar="N", help="override the spec's epochs")
    r.add_argument("--limit", type=_positive, metavar="N", help="train on the first N examples only")
    r.add_argument("--force", action="store_true", help="replace a finished run in --out")
    r.add_argument("--quiet", action="store_true", help="no progress output while training")
    r.add_argument("--init", metavar="PATH", help="take initial weights from this run directory or .keras file "
                   "(replaces `from` in the spec's `init` section)")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last complete epoch "
                   "(after a crash or a kill); ends as the uninterrupted run would")
    multi = r.add_argument_group("several processes (multi-host, as jax.distributed.initialize; "
                                 "default: JAX's own environment variables)")
    multi.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0")
    multi.add_argument("--num-processes", type=_positive, metavar="N", help="how many processes train together")
    multi.add_argument("--process-id", type=int, metavar="I", help="this process's index, 0..N-1")

    g = sub.add_parser("generate", help="sample text from a trained next-token model",
                       description="Print the prompt followed by text sampled from the language model in RUN_DIR.")
    g.add_argument("run", metavar="RUN_DIR")
    g.add_argument("--prompt", required=True, metavar="TEXT", help="the text to continue")
    g.add_argument("--tokens", type=_positive, default=200, metavar="N", help="how many tokens to sample (200)")
    g.add_argument("--temperature", type=_temperature, default=1.0, metavar="T",
                   help="sampling temperature: lower is more conservative, 0 always takes the likeliest (1.0)")
    g.add_argument("--seed", type=_seed, metavar="N", help="seed of the sampler (>= 0), for repeatable output")

    ev = sub.add_parser("eval", help="evaluate a trained run on its test split or on other data",
                        description="Evaluate the model of RUN_DIR with the spec's loss and metrics.")
    ev.add_argument("run", metavar="RUN_DIR")
    ev.add_argument("--data", metavar="FILE", help="a data file in the spec's format instead of the run's test split")
    ev.add_argument("--format", choices=("text", "json"), default="text")

    pr = sub.add_parser("predict", help="predictions of a trained run for new inputs",
                        description="Predict with the model of RUN_DIR: INPUT is a .npy or .csv file, an image file, "
                        "or a folder of images.")
    pr.add_argument("run", metavar="RUN_DIR")
    pr.add_argument("input", metavar="INPUT")
    pr.add_argument("-o", "--out", metavar="FILE", help="write predictions here (.npy or .csv) instead of printing them")

    ex = sub.add_parser("export", help="export a trained run: .keras, weights, or int8-quantized",
                        description="Export the model of RUN_DIR. int8 uses Keras's own quantization and reports size "
                        "and test metrics before and after.")
    ex.add_argument("run", metavar="RUN_DIR")
    ex.add_argument("--format", choices=("keras", "weights", "int8"), default="keras")
    ex.add_argument("-o", "--out", metavar="PATH", help="where to write (default: inside RUN_DIR/export/)")

    e = sub.add_parser("emit", help="write standalone Keras 3 Python code for the model",
                       description="Write a standalone Python file with Keras 3 code that builds the same model "
                       "(and, with --train, the training script).")
    e.add_argument("file", metavar="FILE")
    e.add_argument("-o", "--out", metavar="PY", help="write to this file (default: standard output)")
    e.add_argument("--train", action="store_true", help="also emit data loading, compile, fit and evaluate")

    f = sub.add_parser("fmt", help="rewrite specs in the canonical layout",
                       description="Rewrite .model files in one canonical layout; comments are kept and meaning never changes.")
    f.add_argument("files", nargs="+", metavar="FILE")
    f.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file would change")
    f.add_argument("--diff", action="store_true", help="change nothing; print what would change as a unified diff")

    u = sub.add_parser("upgrade", help="rewrite specs for the newest language version, keeping comments",
                       description="Rewrite .model files written for an older version of the language (the "
                       "`language:` they declare; 1 when they declare none) for the newest, changing only what the "
                       "language changed and declaring the new version.")
    u.add_argument("files", nargs="+", metavar="FILE")
    u.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file would change")
    u.add_argument("--diff", action="store_true", help="change nothing; print what would change as a unified diff")

    d = sub.add_parser("diff", help="semantic diff of two architectures (also a git diff driver)",
                       description="Compare two specs as networks and training settings, not as text: layers added, "
                       "removed or changed, parameter counts, settings. With the 7 arguments git passes to an "
                       "external diff driver, it works as one (see the README).")
    d.add_argument("files", nargs="+", metavar="FILE", help="A.model B.model (or git's 7 arguments)")
    d.add_argument("--format", choices=("text", "json"), default="text", help="for people, or JSON for tools")

    gr = sub.add_parser("graph", help="draw the network: Mermaid, Graphviz DOT, SVG or PNG",
                        description="Draw the network with each layer's output shape and parameter count. "
                        "Mermaid and DOT need nothing installed; SVG and PNG need Graphviz's `dot`.")
    gr.add_argument("file", metavar="FILE")
    gr.add_argument("-o", "--out", metavar="PATH", help=".mmd, .dot, .svg or .png (default: Mermaid on standard output)")
    gr.add_argument("--format", choices=("mmd", "dot", "svg", "png"), help="override the format the suffix implies")

    im = sub.add_parser("import", help="turn a Keras model (.keras file) into a spec",
                        description="Write a .model spec for a saved Keras model; says which layer cannot be "
                        "expressed, and why, when one cannot.")
    im.add_argument("model", metavar="MODEL.keras")
    im.add_argument("-o", "--out", metavar="FILE", help="write to this file (default: standard output)")

    t = sub.add_parser("test", help="check the contracts of specs' `expect` sections (quick, on the CPU)",
                       description="Check what each spec's `expect` section says must hold (parameter budget, output "
                       "shapes, initial loss, overfitting one batch, healthy gradients) on the CPU with synthetic "
                       "data. Exits 1 when a contract fails.")
    t.add_argument("files", nargs="+", metavar="FILE")
    t.add_argument("--format", choices=("text", "json"), default="text", help="for people, or JSON for tools")

    pa = sub.add_parser("parse", help="print a spec's syntax tree as JSON (for editors and tools)",
                        description="Print the AST of a spec as JSON, with source spans; `specc schema` describes it.")
    pa.add_argument("file", metavar="FILE")

    sub.add_parser("schema", help="print the JSON Schema of the AST that `specc parse` prints",
                   description="Print the JSON Schema (draft 2020-12) of the AST that `specc parse` prints.")
    return p


def cmd_check(args) -> int:
    from specc.lang.syntax import read_spec

    failures: list[UserError] = []
    warnings: list[Diagnostic] = []
    skipped: list[dict] = []
    for file in args.files:
        found: list[Diagnostic] = []
        try:
            text = read_spec(file)
            if args.syntax_only:
                from specc.lang.syntax import parse_text

                parse_text(text, file)
            else:
                from specc.api import loads
                from specc.compile.build import build_shapes
                from specc.core.errors import SpecError
                from specc.tools.lint import lint_report

                plan = loads(text, file).plan
                report = lint_report(plan, build_shapes(plan))
                found = report.diagnostics
                skipped += [{"file": file, "reason": why} for why in report.skipped]
                if args.strict and found:
                    for d in found:
                        d.severity = "error"
                    raise SpecError(found)
        except UserError as err:
            failures.append(err)
            if args.format == "text":
                print(err.render(), file=sys.stderr)
        else:
            warnings += found
            if args.format == "text":
                print(f"{printable(file, lines=False)}: ok")
                for d in found:  # warnings do not fail the check (`--strict`: they do)
                    print(d.render(), file=sys.stderr)
    if args.format == "json":
        print(json.dumps({"errors": [d for e in failures for d in e.to_dicts()],
                          "warnings": [d.to_dict() for d in warnings], "lint_skipped": skipped}, indent=2))
    return max((e.exit_code for e in failures), default=EXIT_OK)


def cmd_summary(args) -> int:
    from specc.api import load
    from specc.compile.build import format_summary, summarize

    plan = load(args.file).plan
    rows, total = summarize(plan)
    from specc.tools.cost import estimate_cost, format_cost

    cost = None if args.no_cost else estimate_cost(plan)
    if args.format == "json":
        layers = [{"name": r.name, "type": r.cls, "output_shape": r.shape, "params": r.params, "line": r.line}
                  for r in rows]
        print(json.dumps({"model": plan.name, "constants": plan.constants, "layers": layers, "total_params": total,
                          **({"cost": cost.as_json(), "warnings": [d.to_dict() for d in cost.diagnostics]} if cost else {})},
                         indent=2))
    else:
        print(format_summary(plan, rows, total))
        if cost:  # the cost after the table; a batch that does not fit warns on stderr (W201)
            print(format_cost(cost))
            for d in cost.diagnostics:
                print(d.render(), file=sys.stderr)
    return EXIT_OK


def cmd_run(args) -> int:
    from specc.api import load
    from specc.train.runner import run_plan

    from specc.train.distribute import initialize_processes

    # Several processes: from the options, else from JAX's own environment variables; nothing otherwise.
    initialize_processes(args.coordinator, args.num_processes, args.process_id)
    if args.file is None and args.resume is None:
        raise UsageError(Diagnostic("`specc run` needs a spec FILE (or `--resume RUN_DIR`)", file="specc run"))
    for option, value in (("--out", args.out), ("--resume", args.resume), ("--init", args.init)):
        if value == "":
            raise UsageError(Diagnostic(f"`{option}` is empty", file="specc run",
                                        hint=f"name a folder for `{option}` (`.` for this one), or leave it out"))
    from specc.train.runner import claim_run_dir, resumable

    # The run directory is claimed (locked, and refused when it is not free) before data is read, even for lint.
    claimed = claim_run_dir(args.out, args.file or "", args.force, args.resume) if args.resume else None
    try:
        if args.resume:
            resumable(Path(args.resume), args.out)  # a run that resuming can finish, before its spec is read
        spec = load(args.file or Path(args.resume) / "spec.model")
        plan = spec.plan
        if args.init:
            from specc.core.plan import InitPlan

            # A path given on the command line is relative to the working directory, not to the spec.
            source = str(Path(args.init).resolve())
            init = plan.init.model_copy(update={"source": source}) if plan.init else InitPlan(**{"from": source})
            plan = plan.model_copy(update={"init": init})
        if claimed is None and not args.resume:
            claimed = claim_run_dir(args.out, plan.file, args.force)
        from specc.train.distribute import is_primary
        from specc.tools.lint import lint_report

        try:  # the lint warnings first: they are not fatal, and training may take hours
            found = lint_report(plan, epochs=args.epochs, limit=args.limit).diagnostics if is_primary() else []
        except UserError:
            found = []  # an error of the spec or its data: the run reports it where it arises
        for d in found:
            print(d.render(), file=sys.stderr)
    except BaseException:
        if claimed is not None:
            claimed.release()
        raise
    result = run_plan(plan, out=args.out, epochs=args.epochs, limit=args.limit, verbose=0 if args.quiet else None,
                      force=args.force, resume=args.resume, claimed=claimed)
    m = result.metrics
    test = ", ".join(f"{k} {v:.4f}" for k, v in m["test"].items())
    where = "training data (no test split)" if m["test_on"] == "train" else "test"
    print(f"{where}: {test}")
    print(f"params {m['params']:,}; {m['epochs']} epoch{'' if m['epochs'] == 1 else 's'} in {m['seconds']:.1f} s on {m['device']}; saved to {printable(str(result.out), lines=False)}")
    return EXIT_OK


def cmd_generate(args) -> int:
    from specc.tools.generate import generate_text

    print(generate_text(args.run, args.prompt, args.tokens, args.temperature, args.seed))
    return EXIT_OK


def cmd_schema(args) -> int:
    from specc.core.nodes import ast_schema

    print(json.dumps(ast_schema(), indent=2))
    return EXIT_OK


def cmd_parse(args) -> int:
    from specc.lang.syntax import read_spec
    from specc.core.nodes import dump_ast
    from specc.lang.syntax import parse_text

    print(json.dumps(dump_ast(parse_text(read_spec(args.file), args.file)), indent=2))
    return EXIT_OK


def _command(name: str):
    """The function running a subcommand; the heavier ones live beside their stage and load only when asked."""
    local = {"check": cmd_check, "summary": cmd_summary, "run": cmd_run, "generate": cmd_generate,
             "schema": cmd_schema, "parse": cmd_parse}
    if name in local:
        return local[name]
    import importlib

    module = {"emit": "tools.emit", "fmt": "lang.fmt", "upgrade": "lang.upgrade", "diff": "tools.diff",
              "graph": "tools.graph", "import": "tools.importer", "eval": "tools.predict", "predict": "tools.predict",
              "export": "tools.export", "test": "tools.testing"}[name]
    return getattr(importlib.import_module(f"specc.{module}"), f"cmd_{name}")


#: OS errors that say what the machine refused (space, permissions, limits), not what specc got wrong; any
#: other exception, a `FileNotFoundError` included, is reported as the bug it is.
_ENVIRONMENT_ERRNOS = frozenset(getattr(errno, name) for name in (
    "ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EIO", "EFBIG", "EMFILE", "ENFILE", "ENAMETOOLONG", "ENOMEM")
    if hasattr(errno, name))


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    try:
        return _command(args.command)(args)
    except UserError as err:
        print(err.render(), file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("specc: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - anything else is our bug, never the user's
        if isinstance(err, OSError) and err.errno in _ENVIRONMENT_ERRNOS:  # a full disk, no permission: not a bug
            where = printable(str(err.filename), lines=False) if err.filename else "specc"
            print(f"{where}: error: {printable(err.strerror or str(err), lines=False)}", file=sys.stderr)
            return EXIT_DATA
        print("specc: internal error: this is a bug in specc, not in your spec. Please report it with this traceback:",
              file=sys.stderr)
        traceback.print_exc()
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
