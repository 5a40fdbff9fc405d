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
