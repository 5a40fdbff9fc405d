"""Commands that compile a spec and report on it, without training: `check`, `summary`, `test`.

Each command reads its arguments, calls its tools (imported where they are needed: `check --syntax-only` must
not import Keras) and prints; the tools do the work.
"""

from __future__ import annotations

import json
import sys
import time

from specc.cli.registry import FILE, FILES, arg, command, text_or_json
from specc.core.errors import EXIT_OK, EXIT_SPEC, EXIT_USAGE, Diagnostic, SpecError, UserError, printable


@command("check", "parse, resolve and infer shapes; no training",
         "Check specs: syntax, names against Keras, arguments, and shapes.",
         FILES,
         arg("--syntax-only", action="store_true", help="only parse (fast: does not import Keras)"),
         text_or_json("how to print errors"),
         arg("--strict", action="store_true", help="lint warnings (docs/lint.md) are errors: exit 1"))
def cmd_check(args) -> int:
    text = args.format == "text"
    failures: list[UserError] = []
    warnings: list[Diagnostic] = []
    skipped: list[dict] = []  # {file, reason}: lints that could not run (no data to read facts from, ...)
    for file in args.files:
        try:
            found = _check_file(file, args.syntax_only, args.strict, skipped)
        except UserError as err:
            failures.append(err)
            if text:
                print(err.render(), file=sys.stderr)
            continue
        warnings += found
        if text:
            print(f"{printable(file, lines=False)}: ok")
            for d in found:  # warnings do not fail the check (`--strict`: they do)
                print(d.render(), file=sys.stderr)
    if not text:
        print(json.dumps({"errors": [d for e in failures for d in e.to_dicts()],
                          "warnings": [d.to_dict() for d in warnings], "lint_skipped": skipped}, indent=2))
    return max((e.exit_code for e in failures), default=EXIT_OK)


def _check_file(file: str, syntax_only: bool, strict: bool, skipped: list[dict]) -> list[Diagnostic]:
    """The lint warnings of one spec; its errors raised (`strict`: its warnings too, as errors). Lints that could
    not run are added to `skipped`."""
    from specc.lang.syntax import parse_text, read_spec

    text = read_spec(file)
    if syntax_only:
        parse_text(text, file)
        return []
    from specc.api import loads
    from specc.compile.build import build_shapes
    from specc.tools.lint import lint_report

    plan = loads(text, file).plan
    report = lint_report(plan, build_shapes(plan))
    skipped += [{"file": file, "reason": why} for why in report.skipped]
    if strict and report.diagnostics:
        for d in report.diagnostics:
            d.severity = "error"
        raise SpecError(report.diagnostics)
    return report.diagnostics


@command("summary", "each layer's output shape and parameters",
         "Print each layer with its output shape and parameter count, and the total.",
         FILE,
         text_or_json("a table, or JSON for tools"),
         arg("--no-cost", action="store_true", help="skip the pre-flight cost (FLOPs and peak memory of the "
             "compiled training step; compiling it takes seconds)"))
def cmd_summary(args) -> int:
    from specc.api import load
    from specc.compile.build import format_summary, summarize
    from specc.tools.cost import estimate_cost, format_cost
    from specc.tools.tune import describe_space, format_space

    plan = load(args.file).plan
    rows, total = summarize(plan)
    cost = None if args.no_cost else estimate_cost(plan)
    space = describe_space(plan, total) if plan.space else None
    if args.format == "json":
        layers = [{"name": r.name, "type": r.cls, "output_shape": r.shape, "params": r.params, "line": r.line}
                  for r in rows]
        print(json.dumps({"model": plan.name, "constants": plan.constants, "layers": layers, "total_params": total,
                          **({"search_space": space} if space else {}),
                          **({"cost": cost.as_json(), "warnings": [d.to_dict() for d in cost.diagnostics]} if cost else {})},
                         indent=2))
    else:
        print(format_summary(plan, rows, total))
        if space:
            print(format_space(space))
        if cost:  # the cost after the table; a batch that does not fit warns on stderr (W201)
            print(format_cost(cost))
            for d in cost.diagnostics:
                print(d.render(), file=sys.stderr)
    return EXIT_OK


@command("test", "check the contracts of specs' `expect` sections (quick, on the CPU)",
         "Check what each spec's `expect` section says must hold (parameter budget, output shapes, initial loss, "
         "overfitting one batch, healthy gradients) on the CPU with synthetic data. Exits 1 when a contract fails.",
         FILES,
         text_or_json("for people, or JSON for tools"))
def cmd_test(args) -> int:
    """`specc test FILE...`: check each spec's contracts. Exit 0 when all hold, 1 when one fails or a spec has an
    error (3 for a data or runtime error), 2 when no file given has an `expect` section (nothing was tested)."""
    text = args.format == "text"
    tally = _Tally()
    began = time.perf_counter()
    for file in args.files:
        _test_file(file, tally, text)
    seconds = time.perf_counter() - began
    passed, failed = tally.count(ok=True), tally.count(ok=False)
    if text:
        print(f"{passed} passed, {failed} failed in {seconds:.1f} s")
    else:
        print(json.dumps({"files": [_contracts_json(*t) for t in tally.tested], "untested": tally.untested,
                          "errors": [d for e in tally.errors for d in e.to_dicts()], "passed": passed, "failed": failed,
                          "seconds": round(seconds, 2)}, indent=2))
    if tally.errors:
        return max(e.exit_code for e in tally.errors)
    if failed:
        return EXIT_SPEC
    if not tally.tested:
        if text:
            print("specc: error: no contracts to test: none of the files has an `expect` section", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


class _Tally:
    """What `specc test` found, file by file."""

    def __init__(self) -> None:
        self.tested: list[tuple] = []  # (file, plan, results) of each file with contracts
        self.untested: list[str] = []  # files without an `expect` section
        self.errors: list[UserError] = []  # files that do not compile, or whose data is bad

    def count(self, ok: bool) -> int:
        return sum(r.ok == ok for _, _, results in self.tested for r in results)


def _test_file(file: str, tally: _Tally, text: bool) -> None:
    """Run one file's contracts into `tally`, printing them as it goes when the output is `text`."""
    try:
        plan, results = _contracts_of(file)
    except UserError as err:
        tally.errors.append(err)
        if text:
            print(err.render(), file=sys.stderr)
        return
    if not results:
        tally.untested.append(file)
        if text:
            print(f"{printable(file, lines=False)}: no contracts (`expect` section): nothing to test")
        return
    tally.tested.append((file, plan, results))
    if text:
        print(printable(file, lines=False))
        for r in results:
            print(printable(f"  PASS {r.key}: {r.message}", lines=False) if r.ok else r.diagnostic(plan).render())


def _contracts_of(file: str):
    """(plan, the results of its contracts: none when it has no `expect` section)."""
    from specc.compile.check import load_plan
    from specc.tools.testing import run_contracts

    plan = load_plan(file)
    return plan, run_contracts(plan)


def _contracts_json(file: str, plan, results) -> dict:
    return {"file": file, "model": plan.name,
            "contracts": [{"key": r.key, "ok": r.ok, "message": r.message, "line": r.span.line if r.span else None,
                           "col": r.span.col if r.span else None, "hint": r.hint} for r in results]}
