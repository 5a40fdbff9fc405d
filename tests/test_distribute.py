"""The `device` section: data and model parallelism on `keras.distribution`, and runs over several processes.

The runs that need several devices or processes run in subprocesses: XLA_FLAGS (virtual CPU devices) must be
set before JAX starts, and each process of a multi-process run is its own Python. A small driver (DRIVER
below) trains a spec through `specc.train.distribute` and `run_plan`, records how Keras distributed the first input
batches (by watching `jax.make_array_from_process_local_data`, which Keras's JAX trainer calls for every
batch), and saves the final weights.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import specc
from specc.train import distribute
from specc.runtime import keras_env
from specc.core.errors import DeviceError, SpecError

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 2048  # MNIST training examples: 64 batches of 32, so no batch is cut short

SPEC = """\
model mlp {
  input pixels: (784,)
  dense(32, activation=relu)
  dense(10, activation=softmax)
}

data {
  dataset: mnist
  flatten: true
  scale: 1 / 255
}

train {
  loss: sparse_categorical_crossentropy
  optimizer: adam
  metrics: [accuracy]
  epochs: 3
  batch_size: 32
  seed: 1
  shuffle: false
}

device {
  kind: cpu
  parallel: data
}
"""

DRIVER = r'''
import json, os, sys
import numpy as np
import jax

seen = []
_make = jax.make_array_from_process_local_data


def spy(sharding, local_data, *args, **kwargs):  # Keras's JAX trainer builds every input batch with this
    array = _make(sharding, local_data, *args, **kwargs)
    if len(seen) < 2 and array.ndim == 2:  # the pixels of the first batches
        seen.append({"global_shape": list(array.shape), "local_shape": list(np.shape(local_data)),
                     "sharding": str(array.sharding),
                     "shards": [[str(s.device), list(s.data.shape)] for s in array.addressable_shards]})
    return array


jax.make_array_from_process_local_data = spy

from specc import load

from specc.train import distribute
from specc.train.runner import run_plan

args = json.loads(sys.argv[1])
distribute.initialize_processes(args.get("coordinator"), args.get("num_processes"), args.get("process_id"))
result = run_plan(load(args["spec"]).plan, out=args["out"], limit=args["limit"], verbose=0, force=True)
model = result.model
np.savez(args["weights"], **{w.path.replace("/", "__"): np.asarray(w.value) for w in model.weights})
print("RESULT " + json.dumps({
    "loss": result.history["loss"], "test": result.metrics["test"], "batches": seen,
    "weight_sharding": str(model.weights[0].value.sharding), "devices": jax.device_count(),
    "local_devices": jax.local_device_count(), "process": jax.process_index(), "out": str(result.out),
    "pjrt_nproc": os.environ.get("PJRT_NPROC"), "distribution": result.metrics.get("distribution")}))
'''


def _env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PJRT_NPROC", "NPROC", "JAX_NUM_CPU_DEVICES")}
    env.update(PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""), KERAS_BACKEND="jax", **extra)
    return env


def _start(args: dict, tmp: Path, **env) -> subprocess.Popen:
    driver = tmp / "driver.py"
    driver.write_text(DRIVER)
    return subprocess.Popen([sys.executable, str(driver), json.dumps(args)], cwd=ROOT, env=_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> dict:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"timed out:\n{err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def _weights(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k.replace("__", "/"): f[k] for k in f.files}


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory, data_dir) -> Path:
    path = tmp_path_factory.mktemp("spec") / "mlp.model"
    path.write_text(SPEC)
    return path


@pytest.fixture(scope="module")
def one_device(spec_file, tmp_path_factory) -> dict:
    """The spec trained in one process on one CPU device: the reference."""
    tmp = tmp_path_factory.mktemp("one")
    args = {"spec": str(spec_file), "out": str(tmp / "run"), "limit": LIMIT, "weights": str(tmp / "w.npz")}
    result = _finish(_start(args, tmp))
    result["weights"] = _weights(tmp / "w.npz")
    return result


def _largest(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)) / np.abs(np.asarray(b))))


def _show(result: dict, label: str) -> None:
    batch = result["batches"][0]
    shards = ", ".join(f"{dev} {tuple(shape)}" for dev, shape in batch["shards"])
    print(f"\n{label}: global batch {tuple(batch['global_shape'])} from local {tuple(batch['local_shape'])}, "
          f"{batch['sharding']}; this process's shards: {shards}; weights: {result['weight_sharding']}; "
          f"loss per epoch {result['loss']}")


# --------------------------------------------------------------------------- 1 device vs 4 virtual devices


def test_four_virtual_devices_give_the_one_device_loss_curve(one_device, spec_file, tmp_path):
    args = {"spec": str(spec_file), "out": str(tmp_path / "run"), "limit": LIMIT, "weights": str(tmp_path / "w.npz")}
    four = _finish(_start(args, tmp_path, XLA_FLAGS="--xla_force_host_platform_device_count=4"))
    _show(one_device, "1 device")
    _show(four, "4 devices")
    # the batch is split: 32 examples, 8 on each of the 4 devices; the weights are replicated on all 4
    assert one_device["devices"] == 1 and four["devices"] == 4
    batch = four["batches"][0]
    assert batch["global_shape"] == [32, 784] and "'batch'" in batch["sharding"]
    assert batch["shards"] == [[f"cpu:{i}", [8, 784]] for i in range(4)]
    assert one_device["batches"][0]["shards"] == [["cpu:0", [32, 784]]]
    assert "spec=P(None, None)" in four["weight_sharding"]  # replicated
    assert four["distribution"]["devices"] == 4 and four["distribution"]["batch_shards"] == 4
    assert four["pjrt_nproc"] == str(max(os.cpu_count() or 1, distribute.THREADS_PER_DEVICE * 4))
    # the same training, up to the order of float additions
    np.testing.assert_allclose(four["loss"], one_device["loss"], rtol=1e-5)
    for name in ("loss", "accuracy"):
        np.testing.assert_allclose(four["test"][name], one_device["test"][name], rtol=1e-5)
    w4 = _weights(tmp_path / "w.npz")
    print(f"1 vs 4 devices: largest loss difference {_largest(four['loss'], one_device['loss']):.2g} (relative), "
          f"largest weight difference {max(np.max(np.abs(w4[k] - w)) for k, w in one_device['weights'].items()):.2g}")
    for path, w in one_device["weights"].items():
        np.testing.assert_allclose(w4[path], w, rtol=1e-4, atol=1e-6, err_msg=path)


def test_model_parallel_on_a_mesh_of_four_virtual_devices(one_device, spec_file, tmp_path):
    """`mesh: (2, 2)`: 2 copies of the model, each with its kernels split by columns over 2 devices."""
    layout = '  parallel: model\n  mesh: (2, 2)\n  layout: [("dense.*kernel", (none, model)), ("dense.*bias", model)]\n'
    spec = tmp_path / "mp.model"
    spec.write_text(spec_file.read_text().replace("  parallel: data\n", layout))
    args = {"spec": str(spec), "out": str(tmp_path / "run"), "limit": LIMIT, "weights": str(tmp_path / "w.npz")}
    mp = _finish(_start(args, tmp_path, XLA_FLAGS="--xla_force_host_platform_device_count=4"))
    _show(mp, "mesh (2, 2)")
    batch = mp["batches"][0]
    assert "spec=P('batch', None)" in batch["sharding"] and "'model': 2" in batch["sharding"]
    assert [shape for _, shape in batch["shards"]] == [[16, 784]] * 4  # split in 2, each half on 2 devices
    assert "spec=P(None, 'model')" in mp["weight_sharding"]  # dense/kernel: 32 columns, 16 on each device
    assert mp["distribution"] == {"parallel": "model", "devices": 4, "mesh": [2, 2], "axes": ["batch", "model"],
                                  "processes": 1, "batch_shards": 2}
    print(f"1 device vs mesh (2, 2): largest loss difference {_largest(mp['loss'], one_device['loss']):.2g} (relative)")
    np.testing.assert_allclose(mp["loss"], one_device["loss"], rtol=1e-5)
    w = _weights(tmp_path / "w.npz")
    for path, w1 in one_device["weights"].items():
        np.testing.assert_allclose(w[path], w1, rtol=1e-4, atol=1e-6, err_msg=path)


# --------------------------------------------------------------------------- 2 processes vs 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_together_like_one(one_device, spec_file, tmp_path):
    """Process 0 is `specc run --coordinator ... --process-id 0`; process 1 the driver, with the same run directory.
    Each feeds its 16 examples of every batch of 32; both end with the same weights, which are those of one
    process training on whole batches, and only process 0 writes the run directory."""
    port = _free_port()
    out = tmp_path / "run"
    p0 = subprocess.Popen([sys.executable, "-m", "specc", "run", str(spec_file), "--limit", str(LIMIT), "--out", str(out),
                           "--quiet", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", "0"],
                          cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    args = {"spec": str(spec_file), "out": str(out), "limit": LIMIT, "weights": str(tmp_path / "w1.npz"),
            "coordinator": f"127.0.0.1:{port}", "num_processes": 2, "process_id": 1}
    p1 = _start(args, tmp_path)
    try:
        second = _finish(p1)
        _, stderr = p0.communicate(timeout=120)
    finally:
        for p in (p0, p1):
            if p.poll() is None:
                p.kill()
    assert p0.returncode == 0, stderr[-3000:]
    _show(second, "process 1 of 2")
    batch = second["batches"][0]
    assert second["process"] == 1 and second["devices"] == 2 and second["local_devices"] == 1
    assert batch["global_shape"] == [32, 784] and batch["local_shape"] == [16, 784]
    assert [shape for _, shape in batch["shards"]] == [[16, 784]]
    # process 1 wrote nothing into the run directory: its scratch folder is gone
    assert second["out"] != str(out) and not Path(second["out"]).exists()
    assert {p.name for p in out.iterdir()} >= {"history.csv", "metrics.json", "model.keras", "spec.model"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["distribution"]["processes"] == 2 and metrics["batch_size"] == 32 and metrics["examples"] == LIMIT
    # the same weights in both processes
    import keras

    model = keras.saving.load_model(out / "model.keras")
    w0 = {w.path: np.asarray(w.numpy()) for w in model.weights}
    w1 = _weights(tmp_path / "w1.npz")
    assert w0.keys() == w1.keys()
    for path, w in w0.items():
        np.testing.assert_array_equal(w, w1[path], err_msg=path)
    # and those of one process with the whole batch, the same loss curve and test metrics
    losses = [float(line.split(",")[2]) for line in (out / "history.csv").read_text().splitlines()[1:]]
    header = (out / "history.csv").read_text().splitlines()[0].split(",")
    assert header == ["epoch", "accuracy", "loss"]
    np.testing.assert_allclose(losses, one_device["loss"], rtol=1e-5)
    np.testing.assert_allclose(second["loss"], one_device["loss"], rtol=1e-5)
    for name in ("loss", "accuracy"):
        np.testing.assert_allclose(metrics["test"][name], one_device["test"][name], rtol=1e-5)
    print(f"1 vs 2 processes: largest loss difference {_largest(losses, one_device['loss']):.2g} (relative), "
          f"largest weight difference {max(np.max(np.abs(w0[k] - w)) for k, w in one_device['weights'].items()):.2g}")
    for path, w in one_device["weights"].items():
        np.testing.assert_allclose(w0[path], w, rtol=1e-4, atol=1e-6, err_msg=path)


# --------------------------------------------------------------------------- the language


def _spec(device: str, train: str = "") -> str:
    return ("model m {\n  input x: (4,)\n  dense(8, activation=relu)\n  dense(2)\n}\n"
            f"train {{\n  loss: mse\n{train}}}\n" + device)


@pytest.mark.parametrize("device, train, line, col, message, hint", [  # `line` counts from the device text
    ("device {\n  kind: cpuu\n}\n", "", 2, 9, "unknown device `cpuu`", "did you mean `cpu`?"),
    ("device {\n  parallel: dta\n}\n", "", 2, 13, "unknown parallelism `dta`", "did you mean `data`?"),
    ("device {\n  parallel: data\n  mesh: (2, 2)\n}\n", "", 3, 3,
     "`mesh` is for `parallel: model`, and `parallel: data` uses every device as it is", "write `parallel: model`"),
    ("device {\n  mesh: (2,)\n}\n", "", 2, 3, "`mesh` is for `parallel: model`, and there is no `parallel`", None),
    ('device {\n  parallel: model\n  layout: [("dense.*kernel", (none, model))]\n}\n', "", 1, 1,
     "`parallel: model` needs a `mesh`", "mesh: (2, 2)"),
    ("device {\n  parallel: model\n  mesh: (2, 2)\n}\n", "", 1, 1, "`parallel: model` needs a `layout`",
     'layout: [("dense.*kernel", (none, model))]'),
    ('device {\n  parallel: model\n  mesh: (2, 2)\n  layout: [("dense.*kernel", (none, modle))]\n}\n', "", 4, 30,
     "`modle` is not an axis of the mesh", "did you mean `model`?"),
    ('device {\n  parallel: model\n  mesh: (2, 0)\n  layout: [("d", (none, model))]\n}\n', "", 3, 9,
     "`mesh` is the shape of the grid of devices", None),
    ('device {\n  parallel: model\n  mesh: (2, 2)\n  axes: (batch,)\n  layout: [("d", (batch, none))]\n}\n', "",
     4, 9, "`axes` names 1 axes, but the mesh `(2, 2)` has 2", None),
    ('device {\n  parallel: model\n  mesh: (2, 2, 2)\n  layout: [("d", (none, x))]\n}\n', "", 3, 3,
     "a mesh of 3 dimensions needs `axes`", "axes: (batch, model, x)"),
    ('device {\n  parallel: model\n  mesh: (2, 2)\n  layout: [("dense[", (none, model))]\n}\n', "", 4, 13,
     "`dense[` is not a regular expression", None),
    ('device {\n  parallel: model\n  mesh: (4,)\n  axes: model\n  layout: [("d.*", (model, model))]\n}\n', "", 5, 20,
     "mesh axis `model` splits two dimensions of the same weight", None),
    ("device: cpu\ndevice {\n  parallel: data\n}\n", "", 1, 1,
     "the device is given twice", "keep the section, with `kind: ...` in it"),
    ("parallel: data\n", "", 1, 1, "unknown setting `parallel` in the file", "`parallel` belongs in `device`"),
    ("device {\n  parallel: data\n}\n", "  validation: kfold(3)\n", 2, 3,
     "k-fold cross-validation (`validation: kfold(...)`) runs on one device", "remove `parallel`"),
])
def test_device_section_errors_are_located(device, train, line, col, message, hint):
    line += 8 + train.count("\n")  # the model and the train section come first
    with pytest.raises(SpecError) as info:
        specc.loads(_spec(device, train), "d.model")
    err = info.value
    assert (err.line, err.col) == (line, col), err.render()
    assert err.message.startswith(message), err.render()
    if hint:
        assert hint in (err.first.hint or ""), err.render()
    assert err.render().startswith(f"d.model:{line}:{col}: error: ")


def test_device_section_plan():
    plan = specc.loads(_spec('device {\n  kind: cpu\n  parallel: model\n  mesh: (1, 2)\n'
                             '  layout: [("dense.*kernel", (none, model)), ("dense.*bias", model)]\n}\n')).plan
    assert plan.device == "cpu" and plan.device_origin.span.line == 10  # the `kind` line
    d = plan.distribution
    assert (d.parallel, d.mesh, d.axes, d.batch_axis) == ("model", (1, 2), ("batch", "model"), "batch")
    assert d.layout == [("dense.*kernel", (None, "model")), ("dense.*bias", ("model",))]
    assert specc.loads(_spec("device {\n  parallel: data\n}\n")).plan.distribution.parallel == "data"
    assert specc.loads(_spec("device {\n  parallel: none\n}\n")).plan.distribution is None
    old = specc.loads(_spec("device: cpu\n")).plan  # the setting of before still works
    assert old.device == "cpu" and old.distribution is None
    assert specc.loads(_spec("device {\n  kind: cpu\n}\n")).plan.device == "cpu"


def test_device_section_is_formatted_like_the_others():
    from specc.lang.fmt import format_text

    text = _spec("device {kind: cpu\n  parallel:   data}\n")
    assert "device {\n  kind: cpu\n  parallel: data\n}\n" in format_text(text)


# --------------------------------------------------------------------------- errors found when the run starts


def _only_one_device():
    import jax

    if jax.device_count() != 1:
        pytest.skip("this process has several devices")


def test_mesh_that_does_not_fit_the_devices_is_blamed_on_its_line(tmp_path):
    _only_one_device()
    text = _spec('device {\n  parallel: model\n  mesh: (2, 2)\n  layout: [("dense.*kernel", (none, model))]\n}\n')
    with pytest.raises(DeviceError) as info:
        specc.loads(text, "d.model").run(out=tmp_path / "run")
    err = info.value
    assert (err.line, err.col) == (11, 3), err.render()
    assert err.message.startswith("the mesh (2, 2) (`batch` 2, `model` 2) needs 4 devices, but JAX has 1 cpu device")
    assert "XLA_FLAGS=--xla_force_host_platform_device_count=4" in err.first.hint
    assert not (tmp_path / "run").exists()


def test_layout_is_checked_against_the_model_weights(tmp_path):
    _only_one_device()
    text = _spec('device {\n  parallel: model\n  mesh: (1, 1)\n  layout: [("dense.*kernal", (none, model))]\n}\n')
    with pytest.raises(SpecError) as info:
        specc.loads(text, "d.model").run(out=tmp_path / "run")
    assert (info.value.line, info.value.col) == (12, 12)
    assert info.value.message == "layout pattern `dense.*kernal` matches no weight of the model"
    assert "dense/kernel, dense/bias, dense_1/kernel, dense_1/bias" in info.value.first.hint
    # split sizes and ranks, with a mesh this process does not have
    plan = specc.loads(_spec('device {\n  parallel: model\n  mesh: (1, 3)\n'
                             '  layout: [("dense/kernel", (none, model))]\n}\n'), "d.model").plan
    with pytest.raises(SpecError, match=r"weight `dense/kernel` \(4, 8\) cannot be split along mesh axis `model`: "
                                        r"its dimension 1 \(8\) does not divide into 3 parts"):
        distribute._check_layout(plan, (1, 3), ("batch", "model"))
    plan = specc.loads(_spec('device {\n  parallel: model\n  mesh: (1, 2)\n'
                             '  layout: [("dense.*", (none, model))]\n}\n'), "d.model").plan
    with pytest.raises(SpecError, match=r"layout `dense\.\*` gives 2 axes, but weight `dense/bias` has 1 dimension"):
        distribute._check_layout(plan, (1, 2), ("batch", "model"))


def test_model_parallel_on_one_device_trains_and_leaves_no_distribution_behind(tmp_path):
    """`parallel: model` on a 1 x 1 mesh runs through ModelParallel and the layout map (the mesh of 4 virtual
    devices is the same code with other sizes); the next run without `parallel` clears the distribution."""
    _only_one_device()
    import keras

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.normal(size=(64, 4)).astype("float32"), y=rng.normal(size=(64, 2)).astype("float32"))
    data = 'data {\n  file: "d.npz"\n  x: x\n  y: y\n}\n'
    text = _spec(data + 'device {\n  parallel: model\n  mesh: (1, 1)\n  layout: [("dense/kernel", (none, model))]\n}\n',
                 "  epochs: 2\n  batch_size: 16\n")
    (tmp_path / "m.model").write_text(text)
    result = specc.load(tmp_path / "m.model").run(out=tmp_path / "run")
    try:
        assert result.metrics["distribution"] == {"parallel": "model", "devices": 1, "mesh": [1, 1],
                                                  "axes": ["batch", "model"], "processes": 1, "batch_shards": 1}
        assert isinstance(keras.distribution.distribution(), keras.distribution.ModelParallel)
        kernel = next(w for w in result.model.weights if w.path == "dense/kernel")
        assert keras.distribution.distribution().get_variable_layout(kernel).axes == (None, "model")
    finally:
        (tmp_path / "n.model").write_text(_spec(data, "  epochs: 1\n"))
        specc.load(tmp_path / "n.model").run(out=tmp_path / "run2")
    assert keras.distribution.distribution() is None and distribute.active() is None


# --------------------------------------------------------------------------- pieces


def test_each_process_feeds_its_part_of_every_batch():
    # 2 processes, batches of 8 (4 per process), 22 examples: 2 full batches and one of 6 (3 per process)
    rows = [distribute._rows(11, 4, 2, shard) for shard in (0, 1)]
    assert rows[0].tolist() == [0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18]
    assert rows[1].tolist() == [4, 5, 6, 7, 12, 13, 14, 15, 19, 20, 21]
    # batch k of each process, side by side, is batch k of the whole
    for k in range(3):
        together = np.concatenate([r[k * 4:(k + 1) * 4] for r in rows])
        assert together.tolist() == list(range(k * 8, min(k * 8 + 8, 22)))


def test_example_counts_that_split_evenly():
    assert distribute._even_count(10, 4, 0.0) == 8  # 8 % 4 == 0
    assert distribute._even_count(10, 1, 0.25) == 10
    # Keras trains on floor(count * 0.9) and validates on the rest: both must split into 4
    assert distribute._even_count(103, 4, 0.1) == 80  # 100 -> 90, 96 -> 86, ... 80 -> 72
    assert distribute._even_count(60_000, 4, 0.1) == 60_000


def test_environment_is_prepared_for_virtual_cpu_devices(monkeypatch):
    monkeypatch.delenv("PJRT_NPROC", raising=False)
    monkeypatch.delenv("NPROC", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_enable_fast_math=false --xla_force_host_platform_device_count=3")
    assert distribute.requested_cpu_devices() == 3
    monkeypatch.setattr(keras_env, "backends_started", lambda: False)
    distribute.prepare_environment()
    assert os.environ["PJRT_NPROC"] == str(max(os.cpu_count() or 1, 3 * distribute.THREADS_PER_DEVICE))
    monkeypatch.setenv("PJRT_NPROC", "5")  # a value the user set is kept
    distribute.prepare_environment()
    assert os.environ["PJRT_NPROC"] == "5"


@pytest.mark.parametrize("args, message", [
    ((None, 2, None), "--process-id must be 0..1 with --num-processes 2; got none"),
    (("127.0.0.1:1", 2, 2), "--process-id must be 0..1 with --num-processes 2; got 2"),
    ((None, 2, 1), "--coordinator must be HOST:PORT, the address of process 0; got none"),
    (("127.0.0.1", 2, 1), "--coordinator must be HOST:PORT"),
    (("127.0.0.1:1", None, 0), "several processes need `--num-processes N`"),
])
def test_process_options_are_checked(args, message, monkeypatch):
    from specc.core.errors import UsageError

    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(UsageError) as info:
        distribute.initialize_processes(*args)
    assert info.value.message.startswith(message)
    assert distribute.initialize_processes() is False  # nothing asked for: nothing to do
