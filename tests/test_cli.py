"""The command line: exit codes, usage errors, and commands that must not import Keras."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from specc import cli
from specc.core.errors import EXIT_CODES

ROOT = Path(__file__).resolve().parent.parent
MNIST = str(ROOT / "specs" / "mnist.model")


def specc_cmd(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "specc", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kw)


def test_help_lists_commands_and_exit_codes():
    proc = specc_cmd("--help")
    assert proc.returncode == 0
    for word in ("check", "summary", "run"):
        assert word in proc.stdout
    for code in EXIT_CODES:
        assert f"  {code:<4} " in proc.stdout


def test_check_ok(capsys):
    assert cli.main(["check", MNIST, str(ROOT / "specs" / "mnist_sgd.model")]) == 0
    assert capsys.readouterr().out.count(": ok") == 2


def test_summary_prints_shapes_and_total(capsys):
    assert cli.main(["summary", MNIST]) == 0
    out = capsys.readouterr().out
    assert "(None, 26, 26, 32)" in out and "total params: 34,826" in out


def test_commands_that_need_no_model_do_not_import_keras():
    code = ("import sys; from specc.cli import main; "
            f"rc = main(['check', '--syntax-only', {MNIST!r}]); "
            "assert rc == 0, rc; bad = [m for m in ('keras', 'jax') if m in sys.modules]; "
            "assert not bad, bad; print('clean')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and "clean" in proc.stdout, proc.stderr


@pytest.mark.parametrize("args, needle", [
    (["run"], "`specc run` needs a spec FILE (or `--resume RUN_DIR`)"),
    (["run", MNIST, "--epochs", "zero"], "expected a whole number"),
    (["run", MNIST, "--limit", "0"], "expected a number >= 1"),
    (["bogus"], "invalid choice"),
    (["check", "no/such/file.model"], "no/such/file.model: error: no such file"),
])
def test_usage_errors_exit_2(args, needle):
    proc = specc_cmd(*args)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_spec_error_exits_1():
    proc = specc_cmd("check", str(ROOT / "tests" / "errors" / "unknown_layer.model"))
    assert proc.returncode == 1 and "unknown layer `conv2dd`" in proc.stderr


def test_missing_dataset_exits_3_naming_where_it_looked(tmp_path):
    spec = tmp_path / "fashion.model"
    spec.write_text("model m {\n  input x: (28, 28)\n  flatten\n  dense(10)\n}\n"
                    "data {\n  dataset: fashion_mnist\n}\ntrain {\n  loss: mse\n}\n")
    proc = specc_cmd("run", str(spec), "--out", str(tmp_path / "run"),
                     env={"SPECC_DATA_DIR": str(tmp_path / "nodata"), "KERAS_HOME": str(tmp_path / "keras")})
    assert proc.returncode == 3, proc.stderr
    first = proc.stderr.strip().splitlines()
    line = next(l for l in first if "error:" in l)
    assert line.startswith(f"{spec}:7:3: error: dataset `fashion_mnist` not found (looked in: {tmp_path / 'nodata'}/fashion_mnist")
    assert "hint: set SPECC_DATA_DIR" in proc.stderr
    assert not (tmp_path / "run").exists()  # nothing half-made is left behind


def test_internal_errors_are_reported_as_bugs(monkeypatch, capsys):
    def broken(args):
        raise RuntimeError("boom")

    monkeypatch.setattr(cli.COMMANDS["check"], "run", broken)
    assert cli.main(["check", MNIST]) == 70
    err = capsys.readouterr().err
    assert "internal error: this is a bug in specc" in err and "RuntimeError: boom" in err


def test_run_refuses_to_overwrite_a_finished_run(tmp_path, data_dir):
    out = tmp_path / "run"
    spec = str(ROOT / "specs" / "linear_regression.model")
    assert specc_cmd("run", spec, "--out", str(out), "--epochs", "2", "--quiet").returncode == 0
    before = (out / "metrics.json").read_bytes()
    proc = specc_cmd("run", spec, "--out", str(out), "--epochs", "2")
    assert proc.returncode == 2 and "already holds a run" in proc.stderr
    assert (out / "metrics.json").read_bytes() == before
    assert specc_cmd("run", spec, "--out", str(out), "--epochs", "3", "--force", "--quiet").returncode == 0
    assert (out / "metrics.json").read_bytes() != before


def test_unavailable_device_exits_3(tmp_path):
    spec = tmp_path / "gpu.model"
    spec.write_text("model m {\n  input x: (1,)\n  dense(1)\n}\ndata {\n  x: [1, 2]\n  y: [1, 2]\n}\n"
                    "train {\n  loss: mse\n}\ndevice: gpu\n")
    proc = specc_cmd("run", str(spec), "--out", str(tmp_path / "run"), env={"JAX_PLATFORMS": ""})
    import jax

    if any(d.platform == "gpu" for d in jax.devices()):
        pytest.skip("this machine has a GPU")
    assert proc.returncode == 3, proc.stderr
    assert f"{spec}:12:1: error: device `gpu` requested, but JAX cannot use it" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_console_script_is_installed():
    import shutil

    exe = shutil.which("specc")
    if exe is None:
        pytest.skip("specc is not installed on PATH (run `pip install -e .`)")
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.startswith("specc ")


def test_help_imports_neither_keras_nor_the_compiler():
    code = ("import sys\nfrom specc.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "bad = [m for m in ('keras', 'jax', 'pydantic', 'lark') if m in sys.modules]\nassert not bad, bad\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_summary_as_json(capsys):
    import json

    assert cli.main(["summary", "--format", "json", MNIST]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model"] == "mnist_cnn" and data["total_params"] == 34_826
    line = next(i for i, text in enumerate(Path(MNIST).read_text().splitlines(), 1) if "conv2d(32" in text)
    assert data["layers"][1] == {"name": "conv2d", "type": "Conv2D", "output_shape": [None, 26, 26, 32],
                                 "params": 320, "line": line}
    assert sum(layer["params"] for layer in data["layers"]) == 34_826


def test_force_removes_the_old_results_first(tmp_path):
    out = tmp_path / "run"
    good = tmp_path / "good.model"
    good.write_text("model m {\n  input x: (1,)\n  dense(1)\n}\ndata {\n  x: [1, 2]\n  y: [1, 2]\n}\n"
                    "train {\n  loss: mse\n}\n")
    assert specc_cmd("run", str(good), "--out", str(out), "--quiet").returncode == 0
    bad = tmp_path / "bad.model"
    bad.write_text(good.read_text().replace("loss: mse", "loss: mse\n  optimizer: sgd(learning_rate=1e9)\n  epochs: 30"))
    proc = specc_cmd("run", str(bad), "--out", str(out), "--force", "--quiet")
    assert proc.returncode == 3, proc.stderr
    # The failed run left no finished-looking directory behind.
    assert not (out / "metrics.json").exists() and not (out / "model.keras").exists()
    assert (out / "spec.model").read_text() == bad.read_text()


def test_run_directory_that_cannot_be_made(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    proc = specc_cmd("run", str(ROOT / "specs" / "linear_regression.model"), "--out", str(tmp_path / "file" / "run"))
    assert proc.returncode == 2, proc.stderr
    assert "error: cannot use" in proc.stderr and "Traceback" not in proc.stderr
