"""Start-up of specc: wall time of the commands that need no Keras, and of `specc run` up to its first training step.

    SPECC_DATA_DIR=../shared/datasets python benchmarks/startup.py [--repeats 15] [--run-repeats 3] [--limit 512]
    SPECC_DATA_DIR=../shared/datasets python benchmarks/startup.py --quick     # a tiny setting (the test suite's)

(a) `specc --help`, `specc fmt --check`, `specc check --syntax-only` and `specc parse` of a spec, and `specc
schema`, each run as a subprocess the way a user runs them, in rounds (one of each per round) so that the
machine's drift hits all alike, beside a `python -c pass` baseline: the interpreter's own start-up, which no
command can beat. A first round is not counted: it writes the parser's tables to a new cache folder and, as in
any normal install, Python's bytecode (kept in a temporary folder: this also holds where the environment sets
PYTHONDONTWRITEBYTECODE; `--as-is` keeps the environment's setting instead).

(b) `specc run SPEC --limit N --epochs 1`, timed from the moment the process is started to the moment its
first training step begins (imports, data, building and compiling the model in Keras) and ends (XLA
compilation of the training step, then the step itself), and to its exit. `SPECC_STARTUP_PROBE` makes
specc note those two moments (`specc.runtime.keras_env.startup_probe`); nothing else changes. Each repeat uses a
new, empty cache folder (`SPECC_CACHE_DIR`): "cold" is the first run in it, "warm" the second (JAX's
persistent compilation cache filled by the first), and "no JAX cache" a third with `SPECC_JAX_CACHE=0`,
what every run cost before specc kept that cache.

It prints medians (and the fastest) of wall seconds, and for the commands of CPU seconds (user + system)
too; `--json FILE` also writes them. `--quick` (for the test suite) runs 2 rounds, and one cold and one
warm run of the tiny `specs/linear_regression.model`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def specc_command() -> list[str]:
    """The `specc` entry point of this interpreter's environment (what users type), else `python -m specc`."""
    script = Path(sys.executable).with_name("specc")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "specc"]


def fast_commands(spec: str) -> dict[str, list[str]]:
    specc = specc_command()
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "specc --help": [*specc, "--help"],
        f"specc fmt --check {spec}": [*specc, "fmt", "--check", spec],
        f"specc check --syntax-only {spec}": [*specc, "check", "--syntax-only", spec],
        f"specc parse {spec}": [*specc, "parse", spec],
        "specc schema": [*specc, "schema"],
    }


def time_commands(commands: dict[str, list[str]], repeats: int, env: dict[str, str]) -> dict[str, dict[str, list]]:
    """Wall seconds and CPU seconds (user + system) of each command, `repeats` rounds after one round that is
    not counted (it writes bytecode and the parser's tables)."""
    times: dict[str, dict[str, list]] = {name: {"wall": [], "cpu": []} for name in commands}
    for counted in [False] + [True] * repeats:
        for name, argv in commands.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            done = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            wall = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if counted:
                times[name]["wall"].append(wall)
                times[name]["cpu"].append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            if done.returncode != 0:
                raise SystemExit(f"`{name}` failed (exit {done.returncode}):\n{done.stderr}")
    return times


def bytecode_env(pycache: str) -> dict[str, str]:
    """The environment with Python's bytecode cache on, as in a normal install, kept in `pycache` (so that
    the source tree stays clean) even where the environment says PYTHONDONTWRITEBYTECODE."""
    env = {**os.environ, "PYTHONPYCACHEPREFIX": pycache}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def timed_run(spec: str, limit: int, cache: Path, work: Path, jax_cache: bool) -> dict[str, float]:
    """One `specc run`: seconds from its start to its first step's beginning and end, and to its exit."""
    probe = work / f"probe-{time.monotonic_ns()}.jsonl"
    env = {**os.environ, "SPECC_CACHE_DIR": str(cache), "SPECC_STARTUP_PROBE": str(probe)}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # specc would leave a cache of the user's in place
    env.pop("SPECC_JAX_CACHE", None)
    if not jax_cache:
        env["SPECC_JAX_CACHE"] = "0"
    argv = [*specc_command(), "run", spec, "--limit", str(limit), "--epochs", "1", "--quiet", "--force",
            "--out", str(work / "run")]
    start = time.time()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    end = time.time()
    if done.returncode != 0:
        raise SystemExit(f"`{' '.join(argv)}` failed (exit {done.returncode}):\n{done.stderr}")
    events = {e["event"]: e["time"] for e in map(json.loads, probe.read_text().splitlines())}
    return {"first_step_begins": events["first_step_begin"] - start,
            "first_step_done": events["first_step_end"] - start, "exit": end - start}


def time_runs(spec: str, limit: int, repeats: int, with_off: bool) -> tuple[dict[str, list[dict[str, float]]], int]:
    """Per scenario, the timings of each repeat; and how many programs the first cold run left in JAX's cache."""
    runs: dict[str, list[dict[str, float]]] = {"cold": [], "warm": [], **({"no JAX cache": []} if with_off else {})}
    entries = -1
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="specc-startup-") as tmp:
            cache, work = Path(tmp) / "cache", Path(tmp)
            runs["cold"].append(timed_run(spec, limit, cache, work, jax_cache=True))
            if entries < 0:
                entries = len(list((cache / "jax").glob("*-cache")))
            runs["warm"].append(timed_run(spec, limit, cache, work, jax_cache=True))
            if with_off:
                runs["no JAX cache"].append(timed_run(spec, limit, cache, work, jax_cache=False))
    return runs, entries


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--spec", default="specs/mnist.model", help="the spec (relative to the repository root)")
    ap.add_argument("--run-spec", help="the spec that `specc run` trains (default: --spec)")
    ap.add_argument("--repeats", type=int, default=15, help="rounds of the fast commands (default 15)")
    ap.add_argument("--run-repeats", type=int, default=3, help="cold/warm pairs of `specc run` (default 3)")
    ap.add_argument("--limit", type=int, default=512, help="`specc run --limit N` (default 512)")
    ap.add_argument("--no-runs", action="store_true", help="only the fast commands")
    ap.add_argument("--quick", action="store_true",
                    help="a tiny setting: 2 rounds; one cold and one warm run of specs/linear_regression.model "
                    "(unless --run-spec), none without the cache")
    ap.add_argument("--as-is", action="store_true", help="time the commands in this environment as it is, "
                    "bytecode settings included (default: with Python's bytecode cache on, as in a normal install)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.run_repeats, args.limit = 2, 1, 64
        args.run_spec = args.run_spec or "specs/linear_regression.model"
    args.run_spec = args.run_spec or args.spec

    print(f"specc {_version('specc')}, Python {platform.python_version()}, Keras {_version('keras')}, "
          f"JAX {_version('jax')}, {platform.machine()} with {os.cpu_count()} CPUs; entry point "
          f"{' '.join(specc_command())}")
    result: dict = {"spec": args.spec, "repeats": args.repeats, "commands": {}}
    with tempfile.TemporaryDirectory(prefix="specc-startup-") as tmp:
        env = dict(os.environ) if args.as_is else bytecode_env(os.path.join(tmp, "pycache"))
        env["SPECC_CACHE_DIR"] = os.path.join(tmp, "cache")  # the parser's tables: written by the uncounted round
        times = time_commands(fast_commands(args.spec), args.repeats, env)
    bytecode = "as the environment has it" if args.as_is else "with Python's bytecode cache"
    print(f"\ncommands ({bytecode}): seconds, median of {args.repeats} (fastest)")
    print(f"  {'':<46} {'wall':>14} {'CPU':>14}")
    for name, ts in times.items():
        wall, cpu = ts["wall"], ts["cpu"]
        result["commands"][name] = {"median": statistics.median(wall), "min": min(wall),
                                    "cpu_median": statistics.median(cpu)}
        print(f"  {name:<46} {statistics.median(wall):6.3f} ({min(wall):.3f}) {statistics.median(cpu):6.3f} "
              f"({min(cpu):.3f})")
    if not args.no_runs:
        runs, entries = time_runs(args.run_spec, args.limit, args.run_repeats, with_off=not args.quick)
        result.update(run_spec=args.run_spec, run_repeats=args.run_repeats, limit=args.limit,
                      jax_cache_entries=entries, runs={})
        print(f"\nspecc run {args.run_spec} --limit {args.limit} --epochs 1: wall seconds from its start, "
              f"median of {args.run_repeats} (fastest)")
        print(f"  {'':<14} {'first step begins':>20} {'first step done':>20} {'exit':>20}")
        for scenario, rows in runs.items():
            cells, figures = [], {}
            for key in ("first_step_begins", "first_step_done", "exit"):
                values = [r[key] for r in rows]
                figures[key] = {"median": statistics.median(values), "min": min(values)}
                cells.append(f"{statistics.median(values):7.2f} ({min(values):6.2f})")
            result["runs"][scenario] = figures
            print(f"  {scenario:<14} " + " ".join(f"{c:>20}" for c in cells))
        print(f"  (the cold run left {entries} compiled programs in JAX's cache)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
