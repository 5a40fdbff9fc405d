"""The compiler-scaling benchmark runs on a tiny setting, and `check`/`summary` build once, without weights.

Timings are the benchmark's business (benchmarks/README.md); nothing here asserts how fast anything is.
"""

import gc
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import specc
from specc.compile import build as build_module
from specc.compile.build import build_model, build_shapes, infer_shapes, summarize
from specc.core.errors import SpecError

ROOT = Path(__file__).resolve().parent.parent


def _scaling():
    spec = importlib.util.spec_from_file_location("scaling", ROOT / "benchmarks" / "scaling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # a benchmark's smoke test, like benchmarks/speed.py's: the suite's 20-minute budget
def test_quick_run_prints_the_table_the_fit_and_the_plot(tmp_path, capsys):
    scaling = _scaling()
    plot, data = tmp_path / "scaling.png", tmp_path / "scaling.json"
    assert scaling.main(["--quick", "--plot", str(plot), "--json", str(data)]) == 0
    out = capsys.readouterr().out
    assert "| family | size | layers | parse s | check s | build s | summary s |" in out
    for family, size in (("chain", 8), ("chain", 32), ("resnet", 1), ("resnet", 4)):
        assert f"| {family:6} | {size:4} |" in out
    assert "linear fit" in out and "ms/layer" in out and "log-log slope" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = json.loads(data.read_text())["rows"]
    assert [(r["family"], r["layers"]) for r in rows] == [("chain", 8), ("chain", 16), ("chain", 32),
                                                         ("resnet", 12), ("resnet", 19), ("resnet", 33)]
    # Python memory is near deterministic: four times the layers, far less than eight times the memory.
    peak = {r["layers"]: r["check_peak_mib"] for r in rows}
    assert peak[32] < 8 * peak[8]


@pytest.mark.slow  # a benchmark's smoke test, like benchmarks/speed.py's: the suite's 20-minute budget
def test_each_size_in_its_own_process_with_cli_timings():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "scaling.py"), "--quick", "--isolate", "--cli",
                          "--family", "chain", "--sizes", "6"], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "a process that only imports Keras on JAX" in out.stdout
    assert "| CLI check s | CLI summary s |" in out.stdout
    assert "| chain  |    6 |      6 |" in out.stdout


def test_generated_specs_are_valid_and_as_large_as_announced():
    scaling = _scaling()
    for family, size in (("chain", 5), ("resnet", 3)):
        plan = specc.loads(scaling.SPECS[family](size)).plan
        assert len(plan.layers) == scaling.layer_count(family, size)
    _, total = summarize(specc.loads(scaling.resnet_spec(2)).plan)
    assert total == build_model(specc.loads(scaling.resnet_spec(2)).plan).count_params()


def test_check_and_summary_build_once_without_weights(monkeypatch):
    calls = []
    real = build_module._build_graph
    monkeypatch.setattr(build_module, "_build_graph", lambda plan, initializers: calls.append(initializers)
                        or real(plan, initializers))
    plan = specc.loads("model m {\n  input x: (4,)\n  dense(3)\n  batchnorm\n}\n").plan
    assert infer_shapes(plan)["dense"] == (None, 3)
    _, total = summarize(plan)
    assert calls == [True, True]  # one build each, with initializers run on abstract values
    assert total == 4 * 3 + 3 + 4 * 3
    built = build_shapes(plan)
    assert all(v._value is None for v in built.model.variables)  # nothing was allocated
    calls.clear()
    build_model(plan)  # `run`: a weight-free build to bound the sizes, then the real one
    assert calls == [False, False]


@pytest.mark.parametrize("text, where, message", [
    ("  conv2d(4, 3, kernel_initializer=identity)\n", (3, 3),
     ("layer `conv2d` (Conv2D) cannot take input of shape (None, 8, 8, 3): Identity matrix initializer can only be "
      "used for 2D matrices")),
    ("  flatten\n  dense(2, kernel_initializer=constant(value=[1, 2, 3]))\n", (4, 3),
     "layer `dense` (Dense) cannot take input of shape (None, 192): Incompatible shapes for broadcasting"),
], ids=["identity on a conv kernel", "a constant of the wrong length"])
def test_an_initializer_the_shape_does_not_suit_is_still_a_located_error(text, where, message):
    """`check` no longer makes weights, but runs each initializer on abstract values: the same error as before."""
    plan = specc.loads("model m {\n  input x: (8, 8, 3)\n" + text + "}\n").plan
    for step in (infer_shapes, summarize):
        with pytest.raises(SpecError) as info:
            step(plan)
        d = info.value.diagnostics[0]
        assert d.message.startswith(message) and (d.span.line, d.span.col) == where


def test_the_collector_is_paused_only_while_checking_and_building():
    assert gc.isenabled()
    specc.loads("model m {\n  input x: (4,)\n  dense(3)\n}\n").build_model()
    assert gc.isenabled()
    with pytest.raises(SpecError):
        infer_shapes(specc.loads("model m {\n  input x: (4,)\n  conv2d(3, 3)\n}\n").plan)
    assert gc.isenabled()
    with pytest.raises(SpecError):
        specc.loads("model m {\n  input x: (4,)\n  dense(nope=1)\n}\n")
    assert gc.isenabled()
    gc.disable()
    try:
        infer_shapes(specc.loads("model m {\n  input x: (4,)\n  dense(3)\n}\n").plan)
        assert not gc.isenabled()  # a caller's choice is left as it was
    finally:
        gc.enable()
