"""Serving under load (issue 17): `specc serve` with dynamic batching against one model call per request, side by
side in one run.

    SPECC_DATA_DIR=../shared/datasets python benchmarks/serve.py [--seconds 10] [--concurrency 1 8 32 128] [--json FILE]
    SPECC_DATA_DIR=../shared/datasets python benchmarks/serve.py --run RUN_DIR   # a trained run of specs/mnist.model
    SPECC_DATA_DIR=../shared/datasets python benchmarks/serve.py --quick         # a tiny setting (the test suite's)

The model is `specs/mnist.model`, trained briefly by `python -m specc run specs/mnist.model --epochs 1 --limit 3000
--quiet --out ...` of this tree (or the run given by `--run`). Then `python -m specc serve RUN --port 0` of this tree
is started on 127.0.0.1 as separate processes, the way a user starts it (tests/service.py: ready once it prints its
URL, stopped with SIGTERM at the end), all alive at once:

    A  dynamic batching, the defaults: --max-batch 32, --max-wait-ms 0, buckets 1, 4, 16, 32 (a batch is whatever
       queued while the last one ran)
    B  one model call per request: --max-batch 1 (its only bucket is 1, and no request waits for another)
    C  A's batching in two processes sharing the port: --workers 2 (only at `--workers-at` clients, default 32, 128)
    D  batching that also waits for company: --max-wait-ms 5 (the default before these figures)
    E  A's batching with the model in onnxruntime: --runtime onnx, on a copy of the run exported first with
       `specc export RUN --format onnx` (left out, and said, without jax2onnx and onnxruntime)

For each number of clients (`--concurrency`), every server gets `--seconds` of load in `--slices` slices (default
4), the servers taking turns slice by slice in the order A B C D E, then E D C B A, and so on, so that the machine's
drift hits all sides alike. A client is a loop in an asyncio task (all in one event
loop) that sends one request, waits for its answer and sends the next, over a keep-alive connection of its own. A
request is `POST /predict` with `{"inputs": {"image": 28x28 list of 0..255}}`, a real MNIST test image (256 of
them, in turn), its JSON encoded once up front and sent as bytes (encoding is not measured, sending and reading the
answer are). Each slice begins with a warm-up (`--warm-s`: connections opened, loops under way) that is not counted.

Each loop has an `httpx.AsyncClient` of its own. One AsyncClient shared by all loops (`--one-client`) measures
httpx more than the server: httpcore's pool looks at every connection it holds whenever a request starts or ends
(encode/httpx#3215), so the client's CPU per request grows with the number of connections: on this project's
2-core machine, server B answered 55 requests/s to 128 loops on one shared client (11.6 ms of client CPU per
request) and 654/s to 128 loops with a client each (2.1 ms); 207/s against 756/s with 32 loops.

Measured per (clients, server): answered requests per second (answers that arrived inside the timed window,
divided by it), the median and 99th percentile of their latency (ms, from sending to the whole answer read), errors
(any answer that is not 200, or a request that failed: there must be none), the mean batch size (examples over
batches, from the differences of the server's `GET /stats` around each slice, warm-up included), the time the model
calls took per request (wall time: `busy_s` of /stats, a batch's call shared by its requests), and CPU per
request of the servers (their processes' user + system time from /proc) and of this process (the clients). Per
server: its processes' resident memory (VmRSS from /proc, every process of the server together) before any load
and after all of it, and its XLA compilations (`compiles` of /stats) before and after: they must not grow, every
batch size having been compiled while the server warmed up. The ratios to B of requests per second per
number of clients are the claim, with the range of the ratios of the slices taken in the same turn (how much
the machine's load moved them); absolute rates depend on the machine and what else runs on it.

After the load, with the servers stopped, the steps of a request other than HTTP are timed in this process (CPU
milliseconds: reading the JSON, the spec's preprocessing, the model for one example and per example of a batch of
32, the answer and its JSON response), to tell how much of the servers' CPU per request the model is.

The clients run in this benchmark's own process, on the same machine as the servers: on a machine with few cores
they compete with the server for the CPU, and the rates are those of this pair, not of the server alone.

It prints a table; `--json FILE` also writes every figure. `--quick` (for the test suite): 2 s per cell, 1 and 8
clients, C at 8 clients, D left out, the run trained on 500 examples. It exits 1 when a request failed or a compilation
happened under load.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack, ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from service import Service, service  # noqa: E402 - tests/service.py: how the tests start `specc serve`
from startup import _version  # noqa: E402 - benchmarks/startup.py, beside this script

SERVERS = {  # name -> (extra arguments of `specc serve`, processes, what it is)
    "A": ((), 1, "dynamic batching (defaults: --max-batch 32, --max-wait-ms 0, buckets 1,4,16,32)"),
    "B": (("--max-batch", "1"), 1, "one model call per request (--max-batch 1)"),
    "C": (("--workers", "2"), 2, "dynamic batching in two processes (--workers 2)"),
    "D": (("--max-wait-ms", "5"), 1, "batching that waits up to 5 ms for more requests (--max-wait-ms 5)"),
    "E": (("--runtime", "onnx"), 1, "A's batching on onnxruntime, the run's checked ONNX export (--runtime onnx)"),
}
IMAGES = 256  # distinct request bodies, sent in turn
REQUEST_TIMEOUT_S = 30.0
CELL_SLACK_S = 60.0  # a slice may run this much past its time (answers in flight) before it is cut off
NOTE = ("The clients run in this benchmark's own process on the same machine: with few cores they compete with the "
        "servers for the CPU (their CPU per request is shown), so these are the rates of this client and server "
        "together.")


# --- the servers' processes -------------------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """`pid` and every process below it (uvicorn's `--workers` processes are its children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` and its children together, in MiB (VmRSS of /proc/PID/status)."""
    total = 0
    for p in process_tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of `pid` and its children (/proc/PID/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / tick


def stats_by_pid(url: str, processes: int, timeout: float = 30) -> dict[int, dict[str, Any]]:
    """`GET /stats` of every process of a server (the run's counters by pid): with `--workers`, each answer is one
    process's, so new connections are opened until each process has answered."""
    seen: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < processes:
        with httpx.Client(base_url=url, timeout=REQUEST_TIMEOUT_S) as c:  # a new connection each time
            body = c.get("/stats").json()
        (run,) = body["runs"].values()
        seen[body["pid"]] = run
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(seen)} of {processes} processes of {url} answered GET /stats in "
                             f"{timeout:.0f} s")
    return seen


def totals(stats: dict[int, dict[str, Any]]) -> dict[str, float]:
    """The counters of a server's processes added up (`busy_s`: seconds spent in model calls)."""
    return {k: sum(s[k] for s in stats.values()) for k in ("requests", "examples", "batches", "compiles", "busy_s")}


# --- the load ---------------------------------------------------------------------------------------------------


@dataclass
class Slice:
    """What one slice of a cell measured."""

    window_s: float
    latencies_ms: list[float] = field(default_factory=list)  # of the requests answered inside the window
    sent: int = 0
    errors: list[str] = field(default_factory=list)


async def load(url: str, bodies: list[bytes], clients: int, warm_s: float, seconds: float, shared: bool = False
               ) -> Slice:
    """`clients` loops, each sending a request as soon as its last is answered, for `warm_s` + `seconds`; the
    answers that arrive in the last `seconds` are counted. Each loop has an `httpx.AsyncClient` of its own (one
    connection), or with `shared` all use one with a connection each (see the module docstring)."""
    headers = {"content-type": "application/json"}
    pools = [httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=clients if shared else 1),
                               timeout=REQUEST_TIMEOUT_S) for _ in range(1 if shared else clients)]
    async with AsyncExitStack() as stack:
        for p in pools:
            await stack.enter_async_context(p)
        t0 = time.perf_counter()
        begin, end = t0 + warm_s, t0 + warm_s + seconds
        got = Slice(seconds)

        async def client(k: int) -> None:
            n = k
            c = pools[k % len(pools)]
            while time.perf_counter() < end:
                body = bodies[n % len(bodies)]
                n += clients
                sent = time.perf_counter()
                got.sent += 1
                try:
                    r = await c.post("/predict", content=body, headers=headers)
                    await r.aread()
                except Exception as err:  # noqa: BLE001 - every failure is counted and reported
                    got.errors.append(f"{type(err).__name__}: {err}"[:200])
                    continue
                done = time.perf_counter()
                if r.status_code != 200:
                    got.errors.append(f"HTTP {r.status_code}: {r.text[:160]}")
                elif begin <= done <= end:
                    got.latencies_ms.append((done - sent) * 1000)

        tasks = [asyncio.ensure_future(client(k)) for k in range(clients)]
        try:
            await asyncio.wait_for(asyncio.gather(*tasks), warm_s + seconds + CELL_SLACK_S)
        except asyncio.TimeoutError:
            got.errors.append(f"the slice did not finish within {CELL_SLACK_S:.0f} s of its end")
    return got


def measure(s: Service, processes: int, bodies: list[bytes], clients: int, warm_s: float, seconds: float,
            shared: bool) -> tuple[Slice, dict[str, float], float, float]:
    """One slice on one server: what the clients saw, the server's counters' differences, and the CPU seconds of the
    server's processes and of this process."""
    before = totals(stats_by_pid(s.url, processes))
    server_cpu, client_cpu = cpu_s(s.proc.pid), time.process_time()
    got = asyncio.run(load(s.url, bodies, clients, warm_s, seconds, shared))
    server_cpu, client_cpu = cpu_s(s.proc.pid) - server_cpu, time.process_time() - client_cpu
    after = totals(stats_by_pid(s.url, processes))
    return got, {k: after[k] - before[k] for k in after}, server_cpu, client_cpu


def cell(slices: list[tuple[Slice, dict[str, float], float, float]]) -> dict[str, Any]:
    """The figures of one (clients, server) from its slices."""
    latencies = [v for h, *_ in slices for v in h.latencies_ms]
    window = sum(h.window_s for h, *_ in slices)
    sent = sum(h.sent for h, *_ in slices)
    errors = [e for h, *_ in slices for e in h.errors]
    batches = sum(d["batches"] for _, d, *_ in slices)
    examples = sum(d["examples"] for _, d, *_ in slices)
    server_cpu = sum(c for *_, c, _ in slices)
    client_cpu = sum(c for *_, c in slices)
    answered = sum(d["requests"] for _, d, *_ in slices)
    return {
        "seconds": window, "requests": len(latencies), "sent": sent,
        "requests_per_s": len(latencies) / window,
        "slices_requests_per_s": [len(h.latencies_ms) / h.window_s for h, *_ in slices],
        "p50_ms": float(np.percentile(latencies, 50)) if latencies else None,
        "p99_ms": float(np.percentile(latencies, 99)) if latencies else None,
        "mean_ms": statistics.fmean(latencies) if latencies else None,
        "errors": len(errors), "error_samples": errors[:5],
        "batches": batches, "examples": examples, "mean_batch": examples / batches if batches else None,
        "compiles_during": sum(d["compiles"] for _, d, *_ in slices),
        "model_ms_per_request": 1000 * sum(d["busy_s"] for _, d, *_ in slices) / answered if answered else None,
        "server_cpu_ms_per_request": 1000 * server_cpu / sent if sent else None,
        "client_cpu_ms_per_request": 1000 * client_cpu / sent if sent else None,
    }


# --- the run ----------------------------------------------------------------------------------------------------


def train(out: Path, limit: int) -> float:
    argv = [sys.executable, "-m", "specc", "run", "specs/mnist.model", "--epochs", "1", "--limit", str(limit),
            "--quiet", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"training failed (exit {done.returncode}): {' '.join(argv)}\n{done.stdout[-2000:]}"
                         f"\n{done.stderr[-4000:]}")
    return time.perf_counter() - t0


def request_bodies(n: int) -> list[bytes]:
    """`n` MNIST test images as the JSON bodies of /predict, encoded once."""
    from specc.data.prepare import load_builtin

    x = load_builtin("mnist").x_test
    if x is None:
        raise SystemExit("MNIST's test images were not found (SPECC_DATA_DIR)")
    x = x[:n]
    return [json.dumps({"inputs": {"image": a.tolist()}}, separators=(",", ":")).encode() for a in x]


def in_process_costs(run_dir: Path, bodies: list[bytes], repeats: int) -> dict[str, float]:
    """CPU milliseconds (this process's, all its threads) of each step a request takes inside `specc serve` besides
    HTTP: its JSON read, `Servable.parse` (the spec's preprocessing), the model call for one example and for a batch
    of 32 (per example), `Servable.answers` and the JSON response; the median of 5 runs of `repeats` calls each.
    What remains of the servers' CPU per request is uvicorn, Starlette and FastAPI, and the hops between the event
    loop and the threads that parse and run the model."""
    from fastapi.responses import JSONResponse

    from specc.tools.predict import open_run
    from specc.tools.serving import BatchOptions, Servable

    s = Servable(open_run(run_dir), "run", BatchOptions())
    s.load()
    parsed = [json.loads(b) for b in bodies]
    one, _ = s.parse(parsed[0])
    batch, _ = s.parse({"instances": [p["inputs"] for p in parsed[:32]]})
    y = s.predict_rows(one)
    answer = s.answers(y)[0]

    def ms(step, n: int = repeats) -> float:
        runs = []
        for _ in range(5):
            t0 = time.process_time()
            for i in range(n):
                step(i)
            runs.append((time.process_time() - t0) / n * 1000)
        return statistics.median(runs)

    return {"json_loads": ms(lambda i: json.loads(bodies[i % len(bodies)])),
            "parse": ms(lambda i: s.parse(parsed[i % len(parsed)])),
            "model_batch_1": ms(lambda i: s.predict_rows(one)),
            "model_batch_32_per_example": ms(lambda i: s.predict_rows(batch), max(1, repeats // 10)) / 32,
            "answers": ms(lambda i: s.answers(y)),
            "json_response": ms(lambda i: JSONResponse({"outputs": answer, "warnings": [], "ms": 1.0}))}


def report(result: dict[str, Any]) -> None:
    print(f"\n{'clients':>7}  {'server':<6} {'req/s':>7} {'x B':>5} {'(slices)':>11} {'p50 ms':>7} {'p99 ms':>7} "
          f"{'batch':>6} {'errors':>6} {'model wall ms/req':>17} {'server CPU ms/req':>17} {'client CPU ms/req':>17}")
    for c in result["concurrency"]:
        for name, f in result["cells"][str(c)].items():
            ratio, spread = result["ratios"][str(c)].get(name), result["ratio_ranges"][str(c)].get(name)
            between = f"{spread[0]:.2f}-{spread[1]:.2f}" if spread else "-"
            print(f"{c:7d}  {name:<6} {f['requests_per_s']:7.1f} {_num(ratio, 5, 2)} {between:>11} "
                  f"{_num(f['p50_ms'], 7)} {_num(f['p99_ms'], 7)} {_num(f['mean_batch'], 6, 2)} {f['errors']:6d} "
                  f"{_num(f['model_ms_per_request'], 17, 2)} {_num(f['server_cpu_ms_per_request'], 17, 2)} "
                  f"{_num(f['client_cpu_ms_per_request'], 17, 2)}")
    print()
    for name, s in result["servers"].items():
        print(f"{name}: {s['description']}; memory {s['rss_mib']['before']:.0f} MiB before the load, "
              f"{s['rss_mib']['after']:.0f} MiB after it ({len(s['pids'])} process{'es' * (len(s['pids']) > 1)}); "
              f"compiles {s['compiles']['before']} -> {s['compiles']['after']}")
    costs = result["in_process_ms"]
    print("\nCPU ms per request of the steps besides HTTP, measured in this process after the load: " + ", ".join(
        f"{k} {v:.3f}" for k, v in costs.items()))
    print(f"\nNote: {NOTE}")
    for c, cells in result["cells"].items():
        for name, f in cells.items():
            for e in f["error_samples"]:
                print(f"error ({c} clients, {name}): {e}", file=sys.stderr)


def _num(v: float | None, width: int = 8, digits: int = 1) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:{width}.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", metavar="DIR", help="a trained run of specs/mnist.model (default: train one)")
    ap.add_argument("--limit", type=int, default=3000, help="training examples of the run trained here (default 3000)")
    ap.add_argument("--seconds", type=float, default=10, help="timed load per server and number of clients "
                    "(default 10)")
    ap.add_argument("--slices", type=int, default=4, help="turns each server takes per number of clients "
                    "(default 4)")
    ap.add_argument("--warm-s", type=float, default=0.5, help="warm-up before each slice, not counted (default 0.5)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128], help="numbers of clients "
                    "(default 1 8 32 128)")
    ap.add_argument("--workers-at", type=int, nargs="*", default=[32, 128], help="numbers of clients at which server "
                    "C (--workers 2) is measured too (default 32 128; none: leave C out)")
    ap.add_argument("--servers", nargs="+", choices=list(SERVERS), default=list(SERVERS), help="the servers to "
                    "measure (default A B C D E; B, the baseline of the ratios, always)")
    ap.add_argument("--one-client", action="store_true", help="all clients share one httpx.AsyncClient (a "
                    "connection each) instead of one AsyncClient each: httpx's pool then costs the client more per "
                    "request the more connections it holds")
    ap.add_argument("--quick", action="store_true", help="a tiny setting: 2 s per cell in 2 slices, 1 and 8 "
                    "clients, C at 8, no D, training on 500 examples")
    ap.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = ap.parse_args(argv)
    if args.quick:
        args.seconds, args.slices, args.concurrency, args.workers_at, args.limit = 2, 2, [1, 8], [8], 500
        args.servers = [n for n in args.servers if n not in ("D", "E")]
    if "E" in args.servers and not all(importlib.util.find_spec(m) for m in ("jax2onnx", "onnxruntime")):
        print("server E left out: it needs jax2onnx and onnxruntime (pip install -e '.[onnx]')", flush=True)
        args.servers = [n for n in args.servers if n != "E"]
    args.servers = sorted({*args.servers, "B"})
    if not os.environ.get("SPECC_DATA_DIR"):
        raise SystemExit("set SPECC_DATA_DIR to the folder holding mnist/ (the training data and the requests' images)")
    with_c = [c for c in args.concurrency if c in set(args.workers_at)]
    names = [n for n in SERVERS if n in args.servers and (n != "C" or with_c)]

    print(f"specc {_version('specc')} ({ROOT}), Python {platform.python_version()}, uvicorn {_version('uvicorn')}, "
          f"httpx {_version('httpx')}, {platform.machine()} with {os.cpu_count()} CPUs; "
          f"{time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    result: dict[str, Any] = {"quick": args.quick, "seconds": args.seconds, "slices": args.slices,
                              "warm_s": args.warm_s,
                              "client": "one AsyncClient shared" if args.one_client else "one AsyncClient per client",
                              "concurrency": args.concurrency, "workers_at": with_c, "images": IMAGES, "note": NOTE,
                              "machine": {"cpus": os.cpu_count(), "machine": platform.machine(),
                                          "python": platform.python_version()}}
    with tempfile.TemporaryDirectory(prefix="specc-serve-bench-") as tmp, ExitStack() as stack:
        if args.run:
            run_dir = Path(args.run).resolve()
            result["run"] = {"dir": str(run_dir)}
        else:
            run_dir = Path(tmp) / "run"
            print(f"training specs/mnist.model, 1 epoch on {args.limit:,} examples ...", flush=True)
            result["run"] = {"trained": True, "limit": args.limit, "seconds": train(run_dir, args.limit)}
        metrics = json.loads((run_dir / "metrics.json").read_text())
        result["run"]["test_accuracy"] = (metrics.get("test") or {}).get("accuracy")
        bodies = request_bodies(IMAGES)
        servers: dict[str, Service] = {}
        onnx_run = Path(tmp) / "onnx-run"  # E's copy: the export is written into it, never into --run's folder
        if "E" in names:
            shutil.copytree(run_dir, onnx_run)
            print("exporting the run to ONNX for server E ...", flush=True)
            subprocess.run([sys.executable, "-m", "specc", "export", str(onnx_run), "--format", "onnx"], check=True,
                           cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)
        for name in names:
            extra, processes, _ = SERVERS[name]
            ready = r"ready on (http://\S+)" + r"[\s\S]*ready on http://" * (processes - 1)
            print(f"starting server {name} ...", flush=True)
            servers[name] = stack.enter_context(service(onnx_run if name == "E" else run_dir, *extra, ready=ready))
        result["servers"] = {}
        for name, s in servers.items():
            processes = SERVERS[name][1]
            result["servers"][name] = {"args": list(SERVERS[name][0]), "description": SERVERS[name][2],
                                       "processes": processes, "url": s.url, "pids": process_tree(s.proc.pid),
                                       "rss_mib": {"before": rss_mib(s.proc.pid)},
                                       "compiles": {"before": totals(stats_by_pid(s.url, processes))["compiles"]}}
        result["cells"], result["ratios"], result["ratio_ranges"] = {}, {}, {}
        for c in args.concurrency:
            sides = [n for n in names if n != "C" or c in with_c]
            slices: dict[str, list] = {n: [] for n in sides}
            for k in range(args.slices):
                for name in sides if k % 2 == 0 else sides[::-1]:
                    print(f"  {c} clients, server {name}, slice {k + 1} of {args.slices} ...", flush=True)
                    slices[name].append(measure(servers[name], SERVERS[name][1], bodies, c, args.warm_s,
                                                args.seconds / args.slices, args.one_client))
            cells = {n: cell(slices[n]) for n in sides}
            result["cells"][str(c)] = cells
            base = cells["B"]["requests_per_s"]
            result["ratios"][str(c)] = {n: cells[n]["requests_per_s"] / base if base else None for n in sides}
            turns = {n: [x / b for x, b in zip(cells[n]["slices_requests_per_s"], cells["B"]["slices_requests_per_s"])
                         if b] for n in sides}
            result["ratio_ranges"][str(c)] = {n: [min(r), max(r)] if r else None for n, r in turns.items()}
        for name, s in servers.items():
            f = result["servers"][name]
            f["rss_mib"]["after"] = rss_mib(s.proc.pid)
            f["compiles"]["after"] = totals(stats_by_pid(s.url, SERVERS[name][1]))["compiles"]
        for name, s in servers.items():
            result["servers"][name]["exit"] = s.stop()  # SIGTERM; also done by `service` when anything failed
        print("the steps of a request, in this process ...", flush=True)
        result["in_process_ms"] = in_process_costs(run_dir, bodies, 100 if args.quick else 1000)
    report(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    errors = sum(f["errors"] for cells in result["cells"].values() for f in cells.values())
    grew = [n for n, s in result["servers"].items() if s["compiles"]["after"] != s["compiles"]["before"]]
    if errors or grew:
        print(f"\nserve: {errors} failed requests; compilations under load in: {', '.join(grew) or 'none'}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
