"""Pre-flight cost (`specc summary`): FLOPs and peak memory from XLA's analysis of the compiled training step.

The numbers are XLA's; these tests check that they behave as costs must (linear in the batch, the known
count of a Dense model, memory growing with the batch) and that a small device memory, given through
`SPECC_DEVICE_MEMORY` (real compilations, only the limit lowered), gives the W201 warning with a batch
that, compiled, fits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from specc import cli
from specc.api import loads
from specc.tools.cost import MEMORY_MARGIN, estimate_cost, parse_bytes, prepare_step
from specc.core.errors import UsageError

WIDTHS = (64, 256, 128, 10)


def dense_spec(batch: int = 32, optimizer: str = "adam(learning_rate=1e-3)", device: str = "device: cpu") -> str:
    """A Dense-only classifier on inline data (one example: the cost needs no data)."""
    layers = "\n".join(f"  dense({w}, activation=relu)" for w in WIDTHS[1:-1])
    row = ", ".join(["0.5"] * WIDTHS[0])
    return (f"model mlp {{\n  input x: ({WIDTHS[0]},)\n{layers}\n  dense({WIDTHS[-1]})\n}}\n\n"
            f"data {{\n  x: [[{row}], [{row}]]\n  y: [1, 2]\n}}\n\n"
            f"train {{\n  loss: sparse_categorical_crossentropy(from_logits=true)\n  optimizer: {optimizer}\n"
            f"  metrics: [accuracy]\n  batch_size: {batch}\n}}\n\n{device}\n")


@pytest.fixture(scope="module")
def step():
    return prepare_step(loads(dense_spec()).plan)[0]


def flops(lowered) -> float:
    from specc.train.lowering import flops_of

    return flops_of(lowered)


def test_dense_forward_flops_per_example_are_two_per_weight(step):
    # A check on XLA's count, not a formula of ours: a Dense layer is one multiply and one add per weight.
    macs = sum(a * b for a, b in zip(WIDTHS, WIDTHS[1:]))
    assert flops(step.forward(1)) == pytest.approx(2 * macs, rel=0.05)


def test_step_flops_grow_linearly_with_the_batch(step):
    f8, f16, f32 = (flops(step.lower(b)) for b in (8, 16, 32))
    assert f8 < f16 < f32
    assert (f32 - f16) == pytest.approx(2 * (f16 - f8), rel=0.02)
    # A training step is forward and backward: about three forward passes per example.
    assert 2.5 < (f32 - f16) / 16 / flops(step.forward(1)) < 4


def test_peak_memory_grows_with_the_batch_and_holds_the_optimizer_state(step):
    small, large = step.peak(8), step.peak(512)
    assert large > small
    # Adam keeps two slots per weight beside the weights themselves: the state alone is 3 x 4 bytes per weight.
    params = sum(a * b + b for a, b in zip(WIDTHS, WIDTHS[1:]))
    assert small > 3 * 4 * params


def test_gradient_accumulation_is_accepted_and_costs_its_accumulators():
    plain = estimate_cost(loads(dense_spec()).plan)
    spec = loads(dense_spec(optimizer="adam(learning_rate=1e-3, gradient_accumulation_steps=4)"))
    assert spec.plan.train.optimizer.kwargs["gradient_accumulation_steps"] == 4
    accumulated = estimate_cost(spec.plan)
    params = sum(a * b + b for a, b in zip(WIDTHS, WIDTHS[1:]))
    assert accumulated.peak_bytes_per_device >= plain.peak_bytes_per_device + 4 * params * 0.9


def test_a_batch_that_does_not_fit_warns_with_one_that_does(step, monkeypatch):
    plan = loads(dense_spec(batch=4096)).plan  # the same model as `step`'s, at another batch
    full = step.peak(4096)
    limit = full // 3
    monkeypatch.setenv("SPECC_DEVICE_MEMORY", str(limit))
    report = estimate_cost(plan)
    assert report.device_memory_bytes == limit and report.peak_bytes_per_device == full
    assert not report.fits and 1 < report.largest_batch < 4096
    assert step.peak(report.largest_batch) <= MEMORY_MARGIN * limit  # the suggestion, compiled, fits
    assert step.peak(int(report.largest_batch * 1.5)) > MEMORY_MARGIN * limit  # and is not far from the largest
    [diag] = report.diagnostics
    assert (diag.severity, diag.code) == ("warning", "W201")
    assert diag.span.line == plan.source.split("\n").index("  batch_size: 4096") + 1
    assert f"batch_size: {report.largest_batch}" in diag.hint and "gradient_accumulation_steps=" in diag.hint
    quiet = loads(plan.source.replace("batch_size: 4096", "batch_size: 4096  # specc: ignore[W201]")).plan
    assert not estimate_cost(quiet).diagnostics


def test_summary_prints_the_cost_and_the_warning(tmp_path, capsys, monkeypatch):
    path = tmp_path / "mlp.model"
    path.write_text(dense_spec(batch=4096))
    monkeypatch.setenv("SPECC_DEVICE_MEMORY", "1MiB")
    assert cli.main(["summary", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "forward FLOPs per example" in out and "peak memory per device" in out and "fits: no" in out
    assert f"{path}:" in err and "warning: batch_size 4096 needs" in err and "[W201]" in err

    assert cli.main(["summary", "--format", "json", str(path)]) == 0
    data = json.loads(capsys.readouterr().out)
    cost = data["cost"]
    assert set(cost) >= {"flops_per_example", "flops_per_step", "peak_bytes_per_device", "device_memory_bytes",
                         "batch_size", "devices", "fits", "largest_batch"}
    assert cost["device_memory_bytes"] == 2**20 and cost["fits"] is False and cost["batch_size"] == 4096
    assert cost["flops_per_step"] > 4096 * cost["flops_per_example"]
    assert [w["code"] for w in data["warnings"]] == ["W201"]

    monkeypatch.delenv("SPECC_DEVICE_MEMORY")
    assert cli.main(["summary", "--no-cost", str(path)]) == 0
    assert "FLOPs" not in capsys.readouterr().out


def test_device_memory_sizes_and_a_bad_one():
    assert parse_bytes("64MiB") == 64 * 2**20 and parse_bytes("1.5 GB") == 1_500_000_000 and parse_bytes("4096") == 4096
    with pytest.raises(ValueError):
        parse_bytes("lots")


def test_a_bad_device_memory_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("SPECC_DEVICE_MEMORY", "64 parsecs")
    with pytest.raises(UsageError) as err:
        estimate_cost(loads(dense_spec()).plan)
    assert "SPECC_DEVICE_MEMORY" in err.value.render()


def test_data_parallel_cost_is_per_device():
    # Four virtual CPU devices: each runs the step on a quarter of the batch.
    code = (f"from specc.api import loads; from specc.tools.cost import estimate_cost, prepare_step\n"
            f"plan = loads({dense_spec(batch=256, device='device { parallel: data }')!r}).plan\n"
            f"r = estimate_cost(plan)\n"
            f"print(r.devices, r.peak_bytes_per_device == prepare_step(plan)[0].peak(64))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["4", "True"]
