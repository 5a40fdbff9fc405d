"""Tuning (issue 16): what search spaces and `specc tune` cost, and what a study finds, side by side in one run.

    SPECC_DATA_DIR=../shared/datasets python benchmarks/tune.py [--rounds 5] [--parts a b c d] [--json FILE]
    SPECC_DATA_DIR=../shared/datasets python benchmarks/tune.py --quick     # a tiny setting (the test suite's)

Every command runs as a subprocess, `python -m specc ...` of this tree (its folder first on PYTHONPATH), the way a
user runs it; every study goes into its own folder under a temporary one.

(a) Checking: `specc check SPEC` (default `specs/mnist_tune.model`) against `specc check` of the same spec with every
space replaced by its default (`specc.compile.space.substitute`), alternating in `--rounds` rounds after one
round that is not counted (it writes Python's bytecode, the parser's tables and the data facts into this run's
cache folder). A spec with spaces is checked at 1 + probes + 2 corners points (`specc.compile.space.probes`);
the figures are the medians, their ratio, and the seconds each extra point costs. The same two checks are
also timed in this process (`specc.compile.check.compile_text`, 5 x `--rounds` times each, Keras already
imported): the spaces' own cost, which a command's start-up (about 6 s, most of it importing Keras) buries.

(b) The shipped example: `specc tune SPEC` as the spec says (12 trials of `specs/mnist_tune.model`, all its
data; `--tune-trials`, `--tune-limit` shorten it), and `specc run` of the untuned spec (every space at its
default, the same epochs, the same `--tune-limit`): the best trial's validation objective and test accuracy
(its run directory's metrics.json) against the untuned run's, the trial that reached the best and the seconds
from the study's start until it finished, and the study's seconds.

(c) Pruning: the same spec, sampler and sampler seed, `--prune-trials` trials of `--prune-limit` examples
each (the spec's epochs), once with the median pruner and once with none: epochs trained in all (`epochs` of
trials.csv), the best objective, seconds.

(d) Workers: `--worker-trials` trials of `--worker-limit` examples, the random sampler with a seed and no
pruner (every trial the same work), run by one process, by two sharing the study's SQLite (`workers: 2`), and
by two `specc tune --storage postgresql://...` processes started at once against a throw-away PostgreSQL server
(`tests/pgserver.py`; skipped, and said, without PostgreSQL or psycopg2): finished trials per minute and the
ratio to one process, and whether any trial number repeats or any trial ran in both processes.

Parts (c) and (d) change only the spec's `tune` section (written into a copy), so that a worker started by
`workers: 2` reads the same settings. Each study (and the untuned run) gets a fresh folder for JAX's persistent
compilation cache (`JAX_COMPILATION_CACHE_DIR`, every program kept as specc keeps them): it starts cold, as a
first study does, and reuses only its own programs, never another side's. The data are read once into this
run's cache folder (`SPECC_CACHE_DIR`) before anything is timed.

It prints each part's figures; `--json FILE` also writes them. `--quick` (for the test suite): 2 rounds; (b)
2 trials of 1,000 examples; (c) 4 trials and (d) 3 trials of 1,000 examples. Absolute times on a shared
machine are noise: the ratios, epochs and accuracies are the claim.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from startup import bytecode_env  # noqa: E402 - benchmarks/startup.py, beside this script

import specc  # noqa: E402
from specc.compile.check import compile_text  # noqa: E402
from specc.compile.space import default_point, probes, substitute  # noqa: E402
from specc.tools.tune import settings_of  # noqa: E402

PARTS = ("a", "b", "c", "d")


def specc_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "specc", *args]


def child_env(base: dict[str, str], cache: Path, jax_cache: Path | None = None) -> dict[str, str]:
    """The environment of a command: this tree's specc first, this run's cache folder, and JAX's persistent
    compilation cache in `jax_cache` (a fresh folder per study: each starts cold, as a first study does, and reuses
    only its own programs, with specc's settings) or, without it, off."""
    env = {**base, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [base.get("PYTHONPATH")])]),
           "SPECC_CACHE_DIR": str(cache), "PYTHONUNBUFFERED": "1"}
    for name in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "SPECC_JAX_CACHE"):
        env.pop(name, None)
    if jax_cache is None:
        env["SPECC_JAX_CACHE"] = "0"
    else:
        env.update(JAX_COMPILATION_CACHE_DIR=str(jax_cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return env


def run(argv: list[str], env: dict[str, str], what: str) -> float:
    """Run a command to its end; its wall seconds. A failure stops the benchmark with the command's output."""
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{what} failed (exit {done.returncode}): {' '.join(argv)}\n{done.stdout[-2000:]}"
                         f"\n{done.stderr[-4000:]}")
    return seconds


def with_tune(source: str, settings: dict[str, Any]) -> str:
    """The spec's text with its `tune` section replaced by one with these settings (appended when it has none)."""
    lines = "".join(f"  {k}: {v}\n" for k, v in settings.items() if v is not None)
    section = f"tune {{\n{lines}}}"
    found = re.search(r"(?ms)^tune\s*\{.*?^\}", source)
    if found is None:
        if re.search(r"(?m)^tune\s*\{", source):
            raise SystemExit("cannot find where the spec's `tune` section ends (a `}` at the start of a line)")
        return source.rstrip("\n") + "\n\n" + section + "\n"
    return source[:found.start()] + section + source[found.end():]


def trials_table(study_dir: Path) -> list[dict[str, str]]:
    with open(study_dir / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def states(rows: list[dict[str, str]]) -> dict[str, int]:
    return {s: sum(r["state"] == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING")}


def best_row(rows: list[dict[str, str]], direction: str) -> dict[str, str] | None:
    complete = [r for r in rows if r["state"] == "COMPLETE" and r["objective"]]
    if not complete:
        return None
    pick = max if direction == "maximize" else min
    return pick(complete, key=lambda r: float(r["objective"]))


def load_study(name: str, storage: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.load_study(study_name=name, storage=storage)


def sqlite_url(study_dir: Path) -> str:
    return f"sqlite:///{(study_dir / 'study.db').resolve()}"


def median_of(values: list[float]) -> dict[str, Any]:
    return {"median": statistics.median(values), "min": min(values), "seconds": values}


# --- (a) checking ------------------------------------------------------------------------------------------------


@dataclass
class Bench:
    """What every part shares: the spec's plan and study settings, this run's folder and cache folder."""

    plan: Any
    s: Any
    work: Path
    cache: Path

    def env(self, name: str) -> dict[str, str]:
        """The environment of one training command (or study, its workers included): its own JAX cache folder."""
        return child_env(dict(os.environ), self.cache, self.work / "jax" / name)

    def tuned_copy(self, name: str, **settings: Any) -> str:
        """A copy of the spec whose `tune` section says `settings` (the spec's objective and direction kept)."""
        copy = self.work / f"{name}.model"
        copy.write_text(with_tune(self.plan.source, {"objective": self.s.objective, "direction": self.s.direction,
                                                     **settings}))
        return str(copy)


def part_check(b: Bench, spec: str, plain: Path, n_points: int, rounds: int) -> dict[str, Any]:
    env = child_env(bytecode_env(str(b.work / "pycache")), b.cache)
    sides = {"with spaces": specc_argv("check", spec), "without": specc_argv("check", str(plain))}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for counted in [False] + [True] * rounds:
        for name, argv in sides.items():
            seconds = run(argv, env, f"(a) specc check {name}")
            if counted:
                times[name].append(seconds)
    # The same two checks in this process (Keras imported): what the spaces cost without the start-up around it.
    texts = {"with spaces": b.plan.source, "without": plain.read_text()}
    inside: dict[str, list[float]] = {name: [] for name in texts}
    for counted in [False] + [True] * (5 * rounds):
        for name, text in texts.items():
            t0 = time.perf_counter()
            compile_text(text, b.plan.file)
            if counted:
                inside[name].append(time.perf_counter() - t0)
    result: dict[str, Any] = {"rounds": rounds, "points": n_points}
    for key, figures in (("command", times), ("in_process", inside)):
        spaces, without = (statistics.median(figures[k]) for k in ("with spaces", "without"))
        result[key] = {"with_spaces": median_of(figures["with spaces"]), "without": median_of(figures["without"]),
                       "ratio": spaces / without, "seconds_per_extra_point": (spaces - without) / (n_points - 1)}
    return result


# --- (b) the shipped example ---------------------------------------------------------------------------------------


def part_example(b: Bench, spec: str, plain: Path, trials: int | None, limit: int | None) -> dict[str, Any]:
    extra = [*(["--limit", str(limit)] if limit else [])]
    untuned_dir = b.work / "untuned"
    seconds = run(specc_argv("run", str(plain), "--out", str(untuned_dir), "--quiet", *extra), b.env("untuned"),
                     "(b) specc run of the untuned spec")
    untuned = json.loads((untuned_dir / "metrics.json").read_text())
    study_dir = b.work / "example-study"
    study_seconds = run(specc_argv("tune", spec, "--out", str(study_dir), "--study", "example", "--quiet", *extra,
                                      *(["--trials", str(trials)] if trials else [])), b.env("example"),
                           "(b) specc tune")
    rows = trials_table(study_dir)
    best = best_row(rows, b.s.direction)
    result: dict[str, Any] = {
        "trials": len(rows), "limit": limit, "states": states(rows), "study_seconds": study_seconds,
        "untuned": {"validation_accuracy": untuned["validation"].get("accuracy"),
                    "test_accuracy": untuned["test"]["accuracy"], "epochs": untuned["epochs"], "seconds": seconds}}
    if best is None:
        return {**result, "best": None}
    metrics = json.loads((study_dir / best["run_dir"] / "metrics.json").read_text())
    study = load_study("example", sqlite_url(study_dir))
    began = min(t.datetime_start for t in study.trials if t.datetime_start)
    trial = next(t for t in study.trials if t.number == int(best["number"]))
    result["best"] = {"trial": trial.number, "objective": float(best["objective"]),
                      "test_accuracy": metrics["test"]["accuracy"], "epochs": metrics["epochs"],
                      "finished_after_seconds": (trial.datetime_complete - began).total_seconds(),
                      "values": {k: best[k] for k in best if k not in _NOT_VALUES}}
    result["test_accuracy_gain"] = result["best"]["test_accuracy"] - result["untuned"]["test_accuracy"]
    return result


_NOT_VALUES = {"number", "state", "objective", "seconds", "epochs", "pruned_at", "run_dir", "host", "error"}


# --- (c) pruning ----------------------------------------------------------------------------------------------------


def part_pruning(b: Bench, trials: int, limit: int) -> dict[str, Any]:
    s = b.s
    result: dict[str, Any] = {"trials": trials, "limit": limit, "sampler": s.sampler, "seed": s.seed,
                              "epochs_per_trial": b.plan.train.epochs}
    for pruner in ("median", "none"):
        copy = b.tuned_copy(f"pruner_{pruner}", trials=trials, sampler=s.sampler, pruner=pruner, seed=s.seed)
        out = b.work / f"pruner-{pruner}-study"
        seconds = run(specc_argv("tune", copy, "--out", str(out), "--limit", str(limit), "--quiet"),
                         b.env(f"pruner-{pruner}"), f"(c) specc tune with pruner {pruner}")
        rows = trials_table(out)
        best = best_row(rows, s.direction)
        result[pruner] = {"seconds": seconds, "trials": len(rows), "states": states(rows),
                          "epochs": sum(int(r["epochs"]) for r in rows if r["epochs"]),
                          "best": float(best["objective"]) if best else None}
    median, none = result["median"], result["none"]
    result["epochs_saved"] = 1 - median["epochs"] / none["epochs"] if none["epochs"] else None
    result["seconds_ratio"] = median["seconds"] / none["seconds"]
    return result


# --- (d) workers ----------------------------------------------------------------------------------------------------


def rate(figures: dict[str, Any]) -> float:
    """Finished trials per minute of wall time."""
    return figures["finished"] / (figures["seconds"] / 60)


def worker_figures(study, seconds: float) -> dict[str, Any]:
    """A study's figures read from its storage: finished trials, their states, whether a trial number repeats."""
    numbers = [t.number for t in study.trials]
    counts = Counter(t.state.name for t in study.trials)
    return {"seconds": seconds, "finished": sum(counts[s] for s in ("COMPLETE", "PRUNED", "FAIL")),
            "states": dict(counts), "numbers": sorted(numbers), "numbers_unique": len(set(numbers)) == len(numbers)}


def part_workers(b: Bench, trials: int, limit: int, seed: int, postgres: bool) -> dict[str, Any]:
    settings = {"trials": trials, "sampler": "random", "pruner": "none", "seed": seed}
    result: dict[str, Any] = {"limit": limit, **settings}
    for key, workers in (("one", 1), ("sqlite_2", 2)):
        out = b.work / f"workers-{key}"
        copy = b.tuned_copy(f"workers_{workers}", workers=workers, **settings)
        seconds = run(specc_argv("tune", copy, "--out", str(out), "--study", key, "--limit", str(limit),
                                    "--quiet"), b.env(key), f"(d) specc tune, {key}")
        figures = worker_figures(load_study(key, sqlite_url(out)), seconds)
        rows = trials_table(out)
        figures["run_dirs_unique"] = len({r["run_dir"] for r in rows}) == len(rows)
        result[key] = figures
    result["postgresql_2"] = part_postgres(b, b.tuned_copy("workers_1", workers=1, **settings), limit) \
        if postgres else {"skipped": "--no-postgres"}
    one = rate(result["one"])
    for key in ("one", "sqlite_2", "postgresql_2"):
        if "seconds" in result[key]:
            result[key]["per_minute"] = rate(result[key])
            result[key]["ratio"] = result[key]["per_minute"] / one
    return result


def part_postgres(b: Bench, spec: str, limit: int) -> dict[str, Any]:
    """Two `specc tune --storage URL` processes started at once on a private PostgreSQL server."""
    try:
        import pytest

        sys.path.insert(0, str(ROOT / "tests"))
        from pgserver import postgres_server
    except ImportError as err:
        return {"skipped": f"tests/pgserver.py needs pytest ({err})"}
    try:
        with postgres_server(b.work) as url:
            import optuna

            optuna.storages.RDBStorage(url)  # the tables, once: two processes making them at once race
            outs = [b.work / f"pg-machine{i}" for i in range(2)]
            env = b.env("postgresql")  # one machine: the two processes share its JAX cache, as on one machine
            argv = [specc_argv("tune", spec, "--storage", url, "--study", "pg", "--out", str(out), "--limit",
                               str(limit), "--quiet") for out in outs]
            t0 = time.perf_counter()
            procs = [subprocess.Popen(a, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for a in argv]
            done = [p.communicate() for p in procs]
            seconds = time.perf_counter() - t0
            for p, (_, err) in zip(procs, done):
                if p.returncode != 0:
                    raise SystemExit(f"(d) specc tune on PostgreSQL failed (exit {p.returncode}):\n{err[-4000:]}")
            figures = worker_figures(load_study("pg", url), seconds)
    except pytest.skip.Exception as why:
        return {"skipped": str(why.msg)}
    except pytest.fail.Exception as why:
        return {"error": str(why.msg)}
    mine = [{r["number"] for r in trials_table(out) if r["run_dir"].startswith("trials/")} for out in outs]
    ran = {str(n) for n in figures["numbers"]}
    figures["per_process"] = [len(m) for m in mine]
    figures["run_in_both"] = sorted(int(n) for n in mine[0] & mine[1])
    figures["every_trial_run_once"] = not (mine[0] & mine[1]) and (mine[0] | mine[1]) == ran
    return figures


# --- the report -----------------------------------------------------------------------------------------------------


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def report_check(r: dict[str, Any], spec: str) -> None:
    print(f"\n(a) checking {spec} ({r['points']} points: the default, {r['points'] - 3} probes, 2 corners) against "
          "the same spec at its default point (no spaces): seconds, median (fastest)")
    print(f"  {'':<36} {'with spaces':>16} {'without':>16} {'ratio':>6} {'per extra point':>16}")
    for key, name in (("command", f"`specc check`, {r['rounds']} rounds"),
                      ("in_process", f"in this process, {5 * r['rounds']} rounds")):
        f = r[key]
        cells = [f"{f[k]['median']:7.3f} ({f[k]['min']:.3f})" for k in ("with_spaces", "without")]
        print(f"  {name:<36} {cells[0]:>16} {cells[1]:>16} {f['ratio']:6.2f} "
              f"{f['seconds_per_extra_point'] * 1000:13.1f} ms")


def report_example(r: dict[str, Any], spec: str) -> None:
    data = f"the first {r['limit']:,} examples" if r["limit"] else "all its data"
    print(f"\n(b) specc tune {spec}: {r['trials']} trials on {data} ({_states(r['states'])}) in "
          f"{r['study_seconds']:.0f} s")
    u = r["untuned"]
    print(f"  untuned (every space at its default), {u['epochs']} epochs: validation accuracy {_acc(u['validation_accuracy'])}, "
          f"test accuracy {_acc(u['test_accuracy'])} ({u['seconds']:.0f} s)")
    b = r["best"]
    if b is None:
        print("  no trial finished: no best")
        return
    print(f"  best: trial {b['trial']} ({', '.join(f'{k}={v}' for k, v in b['values'].items())}): objective "
          f"{b['objective']:.4f}, test accuracy {b['test_accuracy']:.4f} ({r['test_accuracy_gain']:+.4f} on the "
          f"untuned); finished {b['finished_after_seconds']:.0f} s after the study began")


def report_pruning(r: dict[str, Any]) -> None:
    print(f"\n(c) pruning: {r['trials']} trials of {r['limit']:,} examples, {r['epochs_per_trial']} epochs each, "
          f"sampler {r['sampler']} (seed {r['seed']})")
    for pruner in ("median", "none"):
        f = r[pruner]
        print(f"  pruner {pruner:<7} {f['epochs']:4d} epochs trained, best {_acc(f['best'])}, {f['seconds']:6.0f} s "
              f"({_states(f['states'])})")
    saved = r["epochs_saved"]
    print(f"  the median pruner trained {saved:.0%} fewer epochs" if saved is not None else "  no epochs trained",
          f"in {r['seconds_ratio']:.2f} of the time")


def report_workers(r: dict[str, Any]) -> None:
    print(f"\n(d) workers: {r['trials']} trials of {r['limit']:,} examples, sampler random (seed {r['seed']}), "
          "no pruner")
    names = {"one": "one process", "sqlite_2": "two processes, SQLite", "postgresql_2": "two processes, PostgreSQL"}
    for key, name in names.items():
        f = r[key]
        if "seconds" not in f:
            print(f"  {name:<28} skipped: {f.get('skipped') or f.get('error')}")
            continue
        unique = "trial numbers unique" if f["numbers_unique"] else "A TRIAL NUMBER REPEATS"
        if "every_trial_run_once" in f:
            unique += (f"; each trial ran in one process ({f['per_process'][0]} + {f['per_process'][1]})"
                       if f["every_trial_run_once"] else f"; TRIALS RUN IN BOTH: {f['run_in_both']}")
        print(f"  {name:<28} {f['finished']} finished in {f['seconds']:5.0f} s: {f['per_minute']:5.2f} trials/min, "
              f"x{f['ratio']:.2f}; {unique}")


def _states(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n)


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default="specs/mnist_tune.model", help="the spec with spaces (relative to the "
                    "repository root; default specs/mnist_tune.model)")
    ap.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="the parts to run (default all)")
    ap.add_argument("--rounds", type=int, default=5, help="(a) rounds of the two checks (default 5)")
    ap.add_argument("--tune-trials", type=int, help="(b) trials of the study (default: the spec's)")
    ap.add_argument("--tune-limit", type=int, help="(b) examples per trial and for the untuned run (default: all)")
    ap.add_argument("--prune-trials", type=int, default=10, help="(c) trials of each study (default 10)")
    ap.add_argument("--prune-limit", type=int, default=6000, help="(c) examples per trial (default 6000)")
    ap.add_argument("--worker-trials", type=int, default=6, help="(d) trials of each study (default 6)")
    ap.add_argument("--worker-limit", type=int, default=3000, help="(d) examples per trial (default 3000)")
    ap.add_argument("--worker-seed", type=int, default=7, help="(d) the random sampler's seed (default 7)")
    ap.add_argument("--no-postgres", action="store_true", help="(d) leave out the PostgreSQL workers")
    ap.add_argument("--quick", action="store_true", help="a tiny setting: 2 rounds; (b) 2 trials, (c) 4 trials, "
                    "(d) 3 trials, all of 1,000 examples")
    ap.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.tune_trials, args.tune_limit = 2, 2, 1000
        args.prune_trials, args.prune_limit, args.worker_trials, args.worker_limit = 4, 1000, 3, 1000

    plan = specc.load(ROOT / args.spec).plan
    s = settings_of(plan)
    n_points = 1 + len(list(probes(plan.space))) + 2
    print(f"specc {_version('specc')} ({ROOT}), Python {platform.python_version()}, Keras {_version('keras')}, "
          f"JAX {_version('jax')}, Optuna {_version('optuna')}, {platform.machine()} with {os.cpu_count()} CPUs; "
          f"{time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    result: dict[str, Any] = {"spec": args.spec, "quick": args.quick, "spaces": [d.name for d in plan.space],
                              "objective": s.objective, "direction": s.direction}
    with tempfile.TemporaryDirectory(prefix="specc-tune-bench-") as tmp:
        b = Bench(plan, s, Path(tmp), Path(tmp) / "cache")
        plain = b.work / "untuned.model"
        plain.write_text(substitute(plan.source, plan.space, default_point(plan.space)))
        if {"b", "c", "d"} & set(args.parts):  # the data read into this run's cache, before anything is timed
            run(specc_argv("run", str(plain), "--out", str(b.work / "warm-up"), "--limit", "256", "--epochs", "1",
                           "--quiet"), child_env(dict(os.environ), b.cache), "the warm-up run")
        if "a" in args.parts:
            result["check"] = part_check(b, args.spec, plain, n_points, args.rounds)
            report_check(result["check"], args.spec)
        if "b" in args.parts:
            result["example"] = part_example(b, args.spec, plain, args.tune_trials, args.tune_limit)
            report_example(result["example"], args.spec)
        if "c" in args.parts:
            result["pruning"] = part_pruning(b, args.prune_trials, args.prune_limit)
            report_pruning(result["pruning"])
        if "d" in args.parts:
            result["workers"] = part_workers(b, args.worker_trials, args.worker_limit, args.worker_seed,
                                             postgres=not args.no_postgres)
            report_workers(result["workers"])
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    failed = result.get("workers", {}).get("postgresql_2", {}).get("error")
    bad = [k for k, f in result.get("workers", {}).items() if isinstance(f, dict) and (
        f.get("numbers_unique") is False or f.get("every_trial_run_once") is False)]
    if failed or bad:
        print(f"\ntune: {'PostgreSQL did not start: ' + failed if failed else ''}"
              f"{'a trial repeated in: ' + ', '.join(bad) if bad else ''}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
