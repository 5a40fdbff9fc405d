"""`specc run`: train a spec, evaluate it on its test split, and write the run directory."""

from __future__ import annotations

import sys
from pathlib import Path

from specc.cli.registry import arg, command, group, positive
from specc.core.errors import EXIT_OK, Diagnostic, UsageError, UserError, printable
from specc.train.distribute import initialize_processes, is_primary


@command("run", "train, evaluate on the test split, save the run",
         "Train the model, evaluate it on the test split, and write model.keras, metrics.json, history.csv and "
         "curves.png into the run directory, with a checkpoint after every epoch for --resume.",
         arg("file", metavar="FILE", nargs="?", help="the spec (with --resume: default RUN_DIR/spec.model)"),
         arg("--out", metavar="DIR", help="run directory (default: runs/NAME-TIMESTAMP)"),
         arg("--epochs", type=positive, metavar="N", help="override the spec's epochs"),
         arg("--limit", type=positive, metavar="N", help="train on the first N examples only"),
         arg("--force", action="store_true", help="replace a finished run in --out"),
         arg("--quiet", action="store_true", help="no progress output while training"),
         arg("--init", metavar="PATH", help="take initial weights from this run directory or .keras file "
             "(replaces `from` in the spec's `init` section)"),
         arg("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last complete epoch "
             "(after a crash or a kill); ends as the uninterrupted run would"),
         group("several processes (multi-host, as jax.distributed.initialize; default: JAX's own environment variables)",
               arg("--coordinator", metavar="HOST:PORT", help="address of process 0"),
               arg("--num-processes", type=positive, metavar="N", help="how many processes train together"),
               arg("--process-id", type=int, metavar="I", help="this process's index, 0..N-1")))
def cmd_run(args) -> int:
    from specc.train.runner import claim_run_dir, run_plan

    # Several processes: from the options, else from JAX's own environment variables; nothing otherwise.
    initialize_processes(args.coordinator, args.num_processes, args.process_id)
    _check_options(args)
    # The run directory is claimed (locked, and refused when it is not free) before data is read, even for lint.
    claimed = claim_run_dir(args.out, args.file or "", args.force, args.resume) if args.resume else None
    try:
        plan = _plan(args)
        if claimed is None and not args.resume:
            claimed = claim_run_dir(args.out, plan.file, args.force)
        _print_lint(plan, args.epochs, args.limit)
    except BaseException:
        if claimed is not None:
            claimed.release()
        raise
    if plan.space and not args.quiet and is_primary():
        print(printable("search spaces at their defaults (`specc tune` searches them): "
                        + ", ".join(f"{d.name}={d.text_of(d.default)}" for d in plan.space), lines=False), flush=True)
    result = run_plan(plan, out=args.out, epochs=args.epochs, limit=args.limit, verbose=0 if args.quiet else None,
                      force=args.force, resume=args.resume, claimed=claimed)
    _print_result(result)
    return EXIT_OK


def _check_options(args) -> None:
    if args.file is None and args.resume is None:
        raise UsageError(Diagnostic("`specc run` needs a spec FILE (or `--resume RUN_DIR`)", file="specc run"))
    for option, value in (("--out", args.out), ("--resume", args.resume), ("--init", args.init)):
        if value == "":
            raise UsageError(Diagnostic(f"`{option}` is empty", file="specc run",
                                        hint=f"name a folder for `{option}` (`.` for this one), or leave it out"))


def _plan(args):
    """The checked plan to train: FILE's, or with --resume the run's own spec; --init replacing `init`'s `from`."""
    from specc.api import load
    from specc.train.runner import resumable

    if args.resume:
        resumable(Path(args.resume), args.out)  # a run that resuming can finish, before its spec is read
    plan = load(args.file or Path(args.resume) / "spec.model").plan
    if not args.init:
        return plan
    from specc.core.plan import InitPlan

    # A path given on the command line is relative to the working directory, not to the spec.
    source = str(Path(args.init).resolve())
    init = plan.init.model_copy(update={"source": source}) if plan.init else InitPlan(**{"from": source})
    return plan.model_copy(update={"init": init})


def _print_lint(plan, epochs: int | None, limit: int | None) -> None:
    """The lint warnings first: they are not fatal, and training may take hours."""
    from specc.tools.lint import lint_report

    try:
        found = lint_report(plan, epochs=epochs, limit=limit).diagnostics if is_primary() else []
    except UserError:
        found = []  # an error of the spec or its data: the run reports it where it arises
    for d in found:
        print(d.render(), file=sys.stderr)


def _print_result(result) -> None:
    m = result.metrics
    test = ", ".join(f"{k} {v:.4f}" for k, v in m["test"].items())
    where = "training data (no test split)" if m["test_on"] == "train" else "test"
    print(f"{where}: {test}")
    print(f"params {m['params']:,}; {m['epochs']} epoch{'' if m['epochs'] == 1 else 's'} in {m['seconds']:.1f} s "
          f"on {m['device']}; saved to {printable(str(result.out), lines=False)}")


def _seconds(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text}")
    return value


@command("tune", "search the spec's spaces for the best values, on Optuna",
         "Run (or continue) a hyperparameter study of the spec's search spaces (`choice`, `uniform`, "
         "`loguniform`, `intrange`) as its `tune` section says: every trial a run directory under the study "
         "directory, bad trials pruned after an epoch, and at the end trials.csv, best.model (the spec with the "
         "best values), best.keras and plots. Running it again continues the study.",
         arg("file", metavar="FILE", help="the spec, with search spaces"),
         arg("--out", metavar="DIR", help="study directory (default: runs/STUDY-study)"),
         arg("--trials", type=positive, metavar="N", help="trials of the whole study (replaces `trials`)"),
         arg("--timeout", type=_seconds, metavar="SECONDS", help="time budget of this process (replaces `timeout`)"),
         arg("--workers", type=positive, metavar="N", help="processes running trials on this machine"),
         arg("--storage", metavar="URL", help="an Optuna storage URL shared by workers on many machines, e.g. "
             "postgresql://user:password@host/db (default: SQLite in the study directory)"),
         arg("--study", metavar="NAME", help="the study's name in the storage (default: the spec file's stem)"),
         arg("--limit", type=positive, metavar="N", help="every trial trains on the first N examples only"),
         arg("--sampler", metavar="NAME", help="tpe, random, grid or cmaes (replaces `sampler`)"),
         arg("--pruner", metavar="NAME", help="median, hyperband or none (replaces `pruner`)"),
         arg("--seed", type=int, metavar="N", help="the sampler's seed (replaces `seed`)"),
         arg("--heartbeat", type=_seconds, default=10.0, metavar="SECONDS",
             help="a running trial's heartbeat; one silent for twice this is failed and retried (default 10)"),
         arg("--quiet", action="store_true", help="no line per trial"),
         arg("--worker", action="store_true", help="(started by --workers) run trials only; leave the report"))
def cmd_tune(args) -> int:
    """`specc tune FILE`: exit 0 when the study has run (its report written), 1 for a mistake in the spec, 2 for
    one on the command line or a storage that cannot be opened, 3 for data that cannot be read, 130 on Ctrl-C."""
    from specc.api import load
    from specc.tools.tune import tune

    plan = load(args.file).plan
    result = tune(plan, out=args.out, verbose=0 if args.quiet else 1, heartbeat=args.heartbeat, worker=args.worker,
                  limit=args.limit,
                  trials=args.trials, timeout=args.timeout, workers=args.workers, storage=args.storage,
                  study=args.study, sampler=args.sampler, pruner=args.pruner, seed=args.seed)
    if args.worker:
        return EXIT_OK
    rows = result.trials
    counts = {state: sum(r["state"] == state for r in rows) for state in ("COMPLETE", "PRUNED", "FAIL")}
    print(f"study `{printable(result.study, lines=False)}`: {len(rows)} trials ({counts['COMPLETE']} complete, "
          f"{counts['PRUNED']} pruned, {counts['FAIL']} failed) in {printable(str(result.study_dir), lines=False)}")
    if result.best_value is None:
        print("no trial finished: no best values yet")
        return EXIT_OK
    print(f"best: trial {result.best_trial}, {result.objective} {result.best_value:.4g}: "
          + printable(", ".join(f"{k}={v}" for k, v in result.best_values.items()), lines=False))
    print(f"wrote {printable(str(result.study_dir / 'best.model'), lines=False)}; "
          f"`specc diff {printable(args.file, lines=False)} {printable(str(result.study_dir / 'best.model'), lines=False)}` "
          "shows the chosen values")
    return EXIT_OK
