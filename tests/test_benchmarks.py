"""The speed benchmark runs, on a tiny setting: every side trains, reports epoch times, ratios and accuracies.

Speed is claimed from `benchmarks/speed.py` run by hand (figures in benchmarks/README.md), never from here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow  # 47-63 s: the suite's budget; the benchmark itself is run by hand (benchmarks/README.md)
def test_speed_benchmark_runs_every_side(tmp_path):
    pytest.importorskip("optax", reason="the hand-written JAX side needs optax (`pip install optax`)")
    pytest.importorskip("torch", reason="the PyTorch side needs `pip install torch==2.13.0`")
    out = tmp_path / "speed.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "SPECC_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "specc / torch = " in proc.stdout and "specc / jax = " in proc.stdout
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"mnist_mlp", "mnist_sgd"}
    for model, r in results.items():
        assert set(r["seconds"]) == {"specc", "keras", "jax", "torch"}
        assert all(len(t) == 2 and all(s > 0 for s in t) for t in r["seconds"].values())
        assert set(r["ratios"]) == {"keras", "jax", "torch"}
        # 2 epochs of 640 examples learn something on every side (chance is 0.1)
        assert all(a > 0.3 for a in r["accuracy"].values()), (model, r["accuracy"])
        # specc and the hand-written Keras model train the same network from the same seed
        assert abs(r["accuracy"]["specc"] - r["accuracy"]["keras"]) < 0.05, (model, r["accuracy"])


@pytest.mark.slow  # about 10 minutes on two shared cores: 4 checks, one run and 13 short trials in 7 studies
def test_tune_benchmark_measures_every_figure(data_dir, tmp_path):
    out = tmp_path / "tune.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "tune.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    # (a) the spec is checked at the default, 9 probes (4 other widths, gelu, 2 ends of each range) and 2 corners
    check = r["check"]
    assert check["points"] == 12 and check["rounds"] == 2
    for way in ("command", "in_process"):
        f = check[way]
        assert all(len(f[side]["seconds"]) == (2 if way == "command" else 10) and f[side]["median"] > 0
                   for side in ("with_spaces", "without"))
        assert f["ratio"] == pytest.approx(f["with_spaces"]["median"] / f["without"]["median"])
    assert check["in_process"]["ratio"] > 1  # 12 checks with shapes against one without
    # (b) two trials of the shipped example against the untuned spec, on 1,000 examples
    ex = r["example"]
    assert ex["trials"] == 2 and ex["limit"] == 1000 and ex["study_seconds"] > 0
    assert 0.3 < ex["untuned"]["test_accuracy"] <= 1 and ex["untuned"]["epochs"] == 3
    best = ex["best"]
    assert best["trial"] in (0, 1) and 0.3 < best["objective"] <= 1 and 0.3 < best["test_accuracy"] <= 1
    assert 0 < best["finished_after_seconds"] <= ex["study_seconds"]
    assert set(best["values"]) == set(r["spaces"]) == {"width", "dense.activation", "dropout.rate",
                                                        "adam.learning_rate"}
    assert ex["test_accuracy_gain"] == pytest.approx(best["test_accuracy"] - ex["untuned"]["test_accuracy"])
    # (c) the same four trials' worth with and without the median pruner: never more epochs with it
    pr = r["pruning"]
    assert pr["trials"] == 4 and pr["epochs_per_trial"] == 3
    assert pr["none"]["epochs"] == 12 and pr["none"]["states"]["PRUNED"] == 0
    assert 9 <= pr["median"]["epochs"] <= 12 and pr["median"]["trials"] == 4  # the first 3 trials are never pruned
    assert 0 <= pr["epochs_saved"] < 1 and pr["seconds_ratio"] > 0
    assert all(0.3 < pr[p]["best"] <= 1 for p in ("median", "none"))
    # (d) one process, two on SQLite, two on PostgreSQL (when installed): trials per minute, no trial twice
    w = r["workers"]
    assert w["trials"] == 3 and w["one"]["ratio"] == 1
    for key in ("one", "sqlite_2", "postgresql_2"):
        f = w[key]
        if key == "postgresql_2" and "skipped" in f:
            assert "PostgreSQL" in f["skipped"] or "psycopg2" in f["skipped"], f
            continue
        assert f["finished"] >= 3 and f["numbers_unique"] and f["per_minute"] > 0 and f["ratio"] > 0, (key, f)
    assert w["sqlite_2"]["run_dirs_unique"]
    if "seconds" in w["postgresql_2"]:
        assert w["postgresql_2"]["every_trial_run_once"] and all(n > 0 for n in w["postgresql_2"]["per_process"])


@pytest.mark.slow  # 65-120 s on two shared cores: a short training, three servers, 10 slices of 1 s
def test_serve_benchmark_measures_every_cell_without_errors_or_compilations(data_dir, tmp_path):
    out = tmp_path / "serve.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serve.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT,
                          env={**os.environ, "SPECC_CACHE_DIR": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "req/s" in proc.stdout and "in this benchmark's own process" in proc.stdout
    r = json.loads(out.read_text())
    assert r["quick"] and r["concurrency"] == [1, 8] and r["workers_at"] == [8]
    assert (r["seconds"], r["slices"]) == (2, 2)
    assert r["run"]["limit"] == 500 and 0.3 < r["run"]["test_accuracy"] <= 1
    servers = r["servers"]
    assert set(servers) == {"A", "B", "C"} and servers["B"]["args"] == ["--max-batch", "1"]
    # every batch size was compiled while warming up (A: 1, 4, 16, 32; B: 1; C: A's in each of two processes)
    assert {n: (s["compiles"]["before"], s["compiles"]["after"]) for n, s in servers.items()} == \
        {"A": (4, 4), "B": (1, 1), "C": (8, 8)}
    for name, s in servers.items():
        assert s["rss_mib"]["before"] > 50 and s["rss_mib"]["after"] > 50, (name, s["rss_mib"])  # a loaded model
    assert len(servers["C"]["pids"]) >= 3  # uvicorn's supervisor and its two workers
    assert set(r["cells"]["1"]) == {"A", "B"} and set(r["cells"]["8"]) == {"A", "B", "C"}
    for c, cells in r["cells"].items():
        for name, f in cells.items():
            assert f["errors"] == 0 and f["compiles_during"] == 0, (c, name, f["error_samples"])
            assert f["requests"] > 0 and f["requests_per_s"] == pytest.approx(f["requests"] / f["seconds"])
            assert len(f["slices_requests_per_s"]) == 2 and min(f["slices_requests_per_s"]) > 0
            assert 0 < f["p50_ms"] <= f["p99_ms"] and f["model_ms_per_request"] > 0
            assert f["server_cpu_ms_per_request"] > 0 and f["client_cpu_ms_per_request"] > 0
        assert r["ratios"][c]["B"] == 1
        assert r["ratios"][c]["A"] == pytest.approx(cells["A"]["requests_per_s"] / cells["B"]["requests_per_s"])
        low, high = r["ratio_ranges"][c]["A"]
        assert 0 < low <= high and r["ratio_ranges"][c]["B"] == [1, 1]
        assert cells["B"]["mean_batch"] == 1  # one model call per request
    assert r["cells"]["1"]["A"]["mean_batch"] == 1  # one client: nothing to gather
    assert r["cells"]["8"]["A"]["mean_batch"] > 1  # eight: requests share batches
    costs = r["in_process_ms"]
    assert set(costs) == {"json_loads", "parse", "model_batch_1", "model_batch_32_per_example", "answers",
                          "json_response"} and all(v > 0 for v in costs.values())
