"""How the compiler scales: time and memory of `specc check` and `specc summary` against model size.

    python benchmarks/scaling.py [--plot FILE] [--repeat N] [--json FILE]
    python benchmarks/scaling.py --quick            # tiny sizes, in this process: a smoke test

Two families of generated specs:

  chain N    N layers written out one per line, alternating `conv2d(16, 3, padding=same)` and
             `dense(16, activation=relu)` (N = 125 ... 2,000; 2,000 is specc's bound on layers)
  resnet N   a ResNet of N residual blocks: `block residual` with `parallel add { branch {...} branch {} }`
             under `repeat N`, 7 layers a block, 7N + 5 layers in all (N = 25 ... 200)

Each size is measured in a fresh Python process that imports Keras and warms specc up on a one-layer spec
(the catalogues, JAX's start), then times each phase, best of `--repeat` rounds: parse, check (resolve the
spec into a plan), build (one weight-free build on symbolic tensors: what `specc check` does after checking)
and summary (what `specc summary` does after checking: its build and the table). Memory is the peak of
Python's allocations while checking and while summarising (tracemalloc, in a round of its own) and the growth
of the process's peak resident size (ru_maxrss). Unless `--no-cli`, `specc check FILE` and `specc summary FILE`
are also run as fresh processes and timed (best of `--repeat`), minus the best of processes that only import
Keras on JAX, run between them: the time a user waits beyond importing Keras. Linearity is shown by the time and memory per layer at each size and by a
straight-line fit (its R**2, and the log-log slope between the two largest sizes: 1 is linear, 2 quadratic).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIZES = {"chain": (125, 250, 500, 1000, 2000), "resnet": (25, 50, 100, 200)}
QUICK = {"chain": (8, 16, 32), "resnet": (1, 2, 4)}
PHASES = ("parse", "check", "build", "summary")
GOAL_S = 2.0  # issue 6: `check` and `summary` of 1,000 layers or 200 residual blocks, beyond importing Keras
IMPORT_KERAS = "import os; os.environ.setdefault('KERAS_BACKEND', 'jax'); import keras"


# -- the specs -----------------------------------------------------------------------------------------------

def chain_spec(n: int) -> str:
    """N layers, one per line, alternating a convolution and a dense layer on 16 x 16 x 16 feature maps."""
    lines = [f"# {n} layers written out: the parser and checker see every line.", f"model chain_{n} {{",
             "  input image: (16, 16, 16)"]
    lines += ["  conv2d(16, 3, padding=same)" if i % 2 == 0 else "  dense(16, activation=relu)" for i in range(n)]
    return "\n".join(lines + ["}", ""])


def resnet_spec(blocks: int) -> str:
    """A CIFAR-style ResNet of `blocks` basic blocks with identity shortcuts: 7 * blocks + 5 layers."""
    return f"""# A ResNet of {blocks} residual blocks (7 layers each), expanded by `repeat`.
block conv_bn(filters, size=3, stride=1) {{
  conv2d(filters, size, strides=stride, padding=same, use_bias=false, kernel_initializer=he_normal)
  batchnorm(momentum=0.9)
}}

block residual(filters) {{
  parallel add {{
    branch {{ conv_bn(filters); relu; conv_bn(filters) }}
    branch {{}}
  }}
  relu
}}

model resnet_{blocks} {{
  input image: (32, 32, 3)
  conv_bn(16); relu
  repeat {blocks} {{ residual(16) }}
  global_average_pooling2d
  dense(10, activation=softmax)
}}
"""


SPECS = {"chain": chain_spec, "resnet": resnet_spec}


def layer_count(family: str, size: int) -> int:
    return size if family == "chain" else 7 * size + 5


# -- measuring one size ----------------------------------------------------------------------------------------

def _warm_up() -> None:
    """What every process pays once, whatever the size: Keras's catalogues indexed, JAX started."""
    import specc
    from specc.compile.build import summarize

    summarize(specc.loads("model warm { input x: (4,); dense(2) }").plan)


def _pipeline(text: str, file: str, timings: dict[str, float] | None = None):
    """`specc check` then `specc summary`'s work on one spec text, each phase timed into `timings`."""
    from specc.compile.build import format_summary, infer_shapes, summarize
    from specc.compile.check import check_spec
    from specc.core.errors import Source
    from specc.lang.syntax import parse_text

    clock = time.perf_counter
    t0 = clock()
    ast = parse_text(text, file)
    t1 = clock()
    plan = check_spec(ast, Source(text, file))
    t2 = clock()
    infer_shapes(plan)  # what `specc check` does after checking
    t3 = clock()
    rows, total = summarize(plan)
    table = format_summary(plan, rows, total)
    t4 = clock()
    if timings is not None:
        for phase, took in zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            timings[phase] = min(timings.get(phase, math.inf), took)
    return plan, table


def _traced_peak(fn) -> float:
    """The peak of Python's allocations while `fn` runs, in MiB."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def measure(family: str, size: int, repeat: int) -> dict:
    """One size of one family, in this process (which must have warmed up: `_warm_up`)."""
    import gc

    from specc.compile.build import format_summary, infer_shapes, summarize
    from specc.compile.check import check_spec
    from specc.core.errors import Source
    from specc.lang.syntax import parse_text

    text, file = SPECS[family](size), f"<{family} {size}>"
    gc.collect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    timings: dict[str, float] = {}
    for _ in range(repeat):
        plan, table = _pipeline(text, file, timings)
        del plan, table
        gc.collect()
    rss_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024  # KiB on Linux
    plan = check_spec(parse_text(text, file), Source(text, file))
    layers = len(plan.layers)
    assert layers == layer_count(family, size), (layers, layer_count(family, size))
    check_peak = _traced_peak(lambda: infer_shapes(check_spec(parse_text(text, file), Source(text, file))))
    summary_peak = _traced_peak(lambda: format_summary(plan, *summarize(plan)))
    return {"family": family, "size": size, "layers": layers, **timings,
            "check_total": timings["parse"] + timings["check"] + timings["build"],
            "summary_total": timings["parse"] + timings["check"] + timings["summary"],
            "check_peak_mib": check_peak, "summary_peak_mib": summary_peak, "rss_growth_mib": rss_growth}


def measure_isolated(family: str, size: int, repeat: int) -> dict:
    """One size in a fresh process: no memory or caches left over from other sizes."""
    out = subprocess.run([sys.executable, __file__, "--worker", family, str(size), "--repeat", str(repeat)],
                         capture_output=True, text=True, cwd=ROOT, check=False)
    if out.returncode != 0:
        raise SystemExit(f"measuring {family} {size} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _wall(argv: list[str]) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    took = time.perf_counter() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return took


def cli_times(family: str, size: int, repeat: int, folder: Path, imports: list[float]) -> dict:
    """`specc check` and `specc summary` as a user runs them, each in a fresh process: the best of `repeat` runs.
    Each round also runs a process that only imports Keras, into `imports`: the best of all of those is
    subtracted at the end (`subtract_import`), so that a burst of load on a shared machine spoils neither side."""
    path = folder / f"{family}_{size}.model"
    path.write_text(SPECS[family](size))
    walls: dict[str, list[float]] = {"check": [], "summary": []}
    for _ in range(repeat):
        imports.append(_wall([sys.executable, "-c", IMPORT_KERAS]))
        for command, runs in walls.items():
            runs.append(_wall([sys.executable, "-m", "specc", command, str(path)]))
    return {f"cli_{command}_wall": min(runs) for command, runs in walls.items()}


def subtract_import(rows: list[dict], imports: list[float]) -> float:
    """The CLI times beyond importing Keras: each command's best wall time minus the best import-only one."""
    baseline = min(imports)
    for row in rows:
        for command in ("check", "summary"):
            if f"cli_{command}_wall" in row:
                row[f"cli_{command}"] = row[f"cli_{command}_wall"] - baseline
    return baseline


# -- reporting ---------------------------------------------------------------------------------------------------

def fit(xs: list[float], ys: list[float]) -> tuple[float, float, float]:
    """Least squares y = a + b x: (a, b, R**2)."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    a = my - b * mx
    ss = sum((y - my) ** 2 for y in ys)
    r2 = 1 - sum((y - a - b * x) ** 2 for x, y in zip(xs, ys)) / ss if ss else 1.0
    return a, b, r2


def loglog_slope(xs: list[float], ys: list[float]) -> float:
    """Growth exponent between the two largest sizes: 1 when doubling the size doubles y, 2 when it quadruples."""
    (x1, y1), (x2, y2) = sorted(zip(xs, ys))[-2:]
    return math.log(y2 / y1) / math.log(x2 / x1) if min(x1, x2, y1, y2) > 0 and x1 != x2 else float("nan")


def table(rows: list[dict]) -> str:
    cli = any("cli_check" in r for r in rows)
    head = ["family", "size", "layers", "parse s", "check s", "build s", "summary s", "`check` s", "ms/layer",
            "`summary` s", "ms/layer", "peak MiB", "KiB/layer", "RSS +MiB"]
    if cli:
        head += ["CLI check s", "CLI summary s"]
    body = []
    for r in rows:
        n = r["layers"]
        cells = [r["family"], str(r["size"]), f"{n:,}", *(f"{r[p]:.3f}" for p in PHASES),
                 f"{r['check_total']:.3f}", f"{1000 * r['check_total'] / n:.3f}",
                 f"{r['summary_total']:.3f}", f"{1000 * r['summary_total'] / n:.3f}",
                 f"{max(r['check_peak_mib'], r['summary_peak_mib']):.1f}",
                 f"{1024 * max(r['check_peak_mib'], r['summary_peak_mib']) / n:.1f}", f"{r['rss_growth_mib']:.0f}"]
        if cli:
            cells += [f"{r['cli_check']:.2f}" if "cli_check" in r else "", f"{r['cli_summary']:.2f}" if "cli_summary" in r else ""]
        body.append(cells)
    widths = [max(len(c[i]) for c in [head] + body) for i in range(len(head))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |",
             "| " + " | ".join("-" * w for w in widths) + " |"]
    lines += ["| " + " | ".join(c.rjust(w) if i > 0 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))) + " |"
              for cells in body]
    return "\n".join(lines)


def linearity(rows: list[dict]) -> str:
    lines = []
    for family in dict.fromkeys(r["family"] for r in rows):
        mine = [r for r in rows if r["family"] == family]
        if len(mine) < 2:
            continue
        xs = [r["layers"] for r in mine]
        for key, unit, scale in (("check_total", "ms", 1000), ("summary_total", "ms", 1000),
                                 ("cli_check", "ms", 1000), ("cli_summary", "ms", 1000),
                                 ("summary_peak_mib", "KiB", 1024)):
            if not all(key in r for r in mine):
                continue
            ys = [r[key] for r in mine]
            a, b, r2 = fit(xs, ys)
            base = f"{a:+.3f} s" if unit == "ms" else f"{a:+.1f} MiB"
            lines.append(f"{family:6} {key:16} {scale * b:8.3f} {unit}/layer {base:>11}  R**2 {r2:.4f}  "
                         f"log-log slope {loglog_slope(xs, ys):.2f}")
    return "\n".join(lines)


def plot(rows: list[dict], path: str, before: list[dict] | None = None) -> None:
    """Time and memory against layers, a colour per family; `before`: an earlier run's rows, drawn faint."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=80)
    colours = {"chain": "tab:blue", "resnet": "tab:orange"}
    times = (("check_total", "check", "-"), ("summary_total", "summary", "--"), ("cli_check", "CLI check", ":"))
    peaks = (("check_peak_mib", "check", "-"), ("summary_peak_mib", "summary", "--"))
    for runs, faint in ((before or [], True), (rows, False)):
        for family in dict.fromkeys(r["family"] for r in runs):
            mine = [r for r in runs if r["family"] == family]
            xs = [r["layers"] for r in mine]
            style = {"color": "grey" if faint else colours.get(family), "alpha": 0.6 if faint else 1.0,
                     "marker": "o" if family == "chain" else "s", "markersize": 4}
            for ax, keys in ((left, times), (right, peaks)):
                for key, label, line in keys:
                    if all(key in r for r in mine):
                        ax.plot(xs, [r[key] for r in mine], linestyle=line, **style,
                                label=f"{family}: {label}" + (" (before)" if faint else ""))
    left.axhline(GOAL_S, color="red", linewidth=0.8)
    left.set(xlabel="layers (after expansion)", ylabel="seconds", title=f"time beyond importing Keras (goal {GOAL_S:g} s)")
    right.set(xlabel="layers (after expansion)", ylabel="MiB", title="peak of Python allocations (tracemalloc)")
    for ax in (left, right):
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2 if before else 1)
    fig.tight_layout()
    canvas = io.BytesIO()
    fig.savefig(canvas, format="png")
    plt.close(fig)
    # Pillow is matplotlib's own dependency: a 64-colour palette keeps the committed plot small.
    Image.open(canvas).convert("RGB").quantize(colors=64).save(path, format="PNG", optimize=True)


# -- the command ---------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one round, in this process, no CLI timings")
    ap.add_argument("--family", choices=tuple(SPECS), action="append", help="only this family (may be repeated)")
    ap.add_argument("--sizes", type=int, nargs="+", metavar="N", help="sizes of the chain family (layers)")
    ap.add_argument("--blocks", type=int, nargs="+", metavar="N", help="sizes of the resnet family (blocks)")
    ap.add_argument("--repeat", type=int, metavar="N", help="rounds per size; the best is kept (default 3, quick 1)")
    ap.add_argument("--in-process", action="store_true", default=None, help="measure every size in this process")
    ap.add_argument("--isolate", dest="in_process", action="store_false", help="a fresh process per size (default)")
    ap.add_argument("--cli", action="store_true", default=None, help="also time `specc check`/`summary` processes")
    ap.add_argument("--no-cli", dest="cli", action="store_false", help="skip the fresh-process CLI timings")
    ap.add_argument("--plot", metavar="FILE", help="write a PNG of time and memory against size")
    ap.add_argument("--json", metavar="FILE", help="write the measurements as JSON")
    ap.add_argument("--before", metavar="JSON", help="draw an earlier run's measurements (its --json) faint in the plot")
    ap.add_argument("--worker", nargs=2, metavar=("FAMILY", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    repeat = args.repeat or (1 if args.quick else 3)
    if args.worker:
        _warm_up()
        print(json.dumps(measure(args.worker[0], int(args.worker[1]), repeat)))
        return 0
    in_process = args.quick if args.in_process is None else args.in_process
    cli = not args.quick if args.cli is None else args.cli
    sizes = dict(QUICK if args.quick else SIZES)
    if args.sizes:
        sizes["chain"] = tuple(args.sizes)
    if args.blocks:
        sizes["resnet"] = tuple(args.blocks)
    families = args.family or list(SPECS)

    import jax
    import keras

    print(f"specc compiler scaling: Keras {keras.__version__}, JAX {jax.__version__}, Python "
          f"{sys.version.split()[0]}, {os.cpu_count()} CPUs; best of {repeat} round{'s' * (repeat > 1)}, "
          f"{'in this process' if in_process else 'a fresh process per size'}", flush=True)
    if in_process:
        _warm_up()
    imports: list[float] = []
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for family in families:
            for size in sizes[family]:
                row = measure(family, size, repeat) if in_process else measure_isolated(family, size, repeat)
                if cli:
                    row |= cli_times(family, size, repeat, Path(folder), imports)
                rows.append(row)
                print(f"  {family} {size}: {row['layers']:,} layers, check {row['check_total']:.2f} s, "
                      f"summary {row['summary_total']:.2f} s", flush=True)
    baseline = None
    if imports:
        baseline = subtract_import(rows, imports)
        print(f"a process that only imports Keras on JAX: best {baseline:.2f} s of {len(imports)} "
              "(subtracted from the CLI times)")
    print()
    print(table(rows))
    print()
    print("linear fit, time (or memory) = base + slope * layers:")
    print(linearity(rows))
    if args.plot:
        before = json.loads(Path(args.before).read_text())["rows"] if args.before else None
        plot(rows, args.plot, before)
        print(f"plot: {args.plot}")
    if args.json:
        Path(args.json).write_text(json.dumps({"baseline_import_keras_s": baseline, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
