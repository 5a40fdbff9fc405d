"""`specc run --resume`: a run killed with SIGKILL at random moments, and resumed each time, ends with the same
weights, optimizer state, history and test metrics, bit for bit, as the same run left alone (on CPU). Real
processes, real data (MNIST from SPECC_DATA_DIR), real kills."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import specc

ROOT = Path(__file__).resolve().parent.parent

# Dropout draws from its layer's seed generator; a cosine schedule reads the optimizer's step count;
# validation_split and shuffling use NumPy's global random state: all of it must survive a kill.
MLP = """model mlp {
  input pixels: (784,)
  dense(128, activation=relu)
  dropout(0.2)
  dense(10, activation=softmax)
}
data { dataset: mnist; flatten: true; scale: 1/255 }
train {
  loss: sparse_categorical_crossentropy
  optimizer: adam(learning_rate=cosine_decay(0.002, decay_steps=1000))
  metrics: [accuracy]
  epochs: 10
  batch_size: 32
  validation_split: 0.1
  seed: 3
}
"""
MLP_ARGS = ("--limit", "3000")

# Random flips and dropout (layers' own seed generators), batch norm statistics, AdamW, early stopping.
CNN = """model cnn {
  input image: (28, 28, 1)
  random_flip(horizontal)
  conv2d(16, 3, activation=relu)
  batch_normalization
  maxpool2d(2)
  conv2d(16, 3, activation=relu)
  maxpool2d(2)
  flatten
  dropout(0.3)
  dense(10, activation=softmax)
}
data { dataset: mnist; scale: 1/255 }
train {
  loss: sparse_categorical_crossentropy
  optimizer: adamw(learning_rate=cosine_decay(0.003, decay_steps=2000))
  metrics: [accuracy]
  epochs: 14
  batch_size: 64
  validation_split: 0.1
  seed: 11
  early_stopping: early_stopping(monitor=val_loss, patience=3, restore_best_weights=true)
}
"""
CNN_ARGS = ("--limit", "6000")


def start(tmp_path: Path, *args: str, script: str | None = None, every_epoch: bool = False) -> subprocess.Popen:
    """`specc run ARGS --quiet` in a new process (or `script` taking the same arguments); `every_epoch`: a
    checkpoint after every epoch (short epochs are otherwise saved every few)."""
    head = ["-c", script] if script else ["-m", "specc", "run"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), **({"SPECC_CHECKPOINT_SPACING": "0"} if every_epoch else {})}
    with open(tmp_path / "stderr.log", "a") as log:
        return subprocess.Popen([sys.executable, *head, *args, "--quiet"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=log, env=env)


def finish(tmp_path: Path, proc: subprocess.Popen) -> None:
    assert proc.wait(timeout=600) == 0, (tmp_path / "stderr.log").read_text()[-3000:]


def epochs_done(run: Path) -> int:
    """The epochs in the run's checkpoint (0 before the first one, and after the run removed it)."""
    try:
        with np.load(run / "checkpoint.npz") as z:
            return json.loads(str(z["meta"]))["epoch"]
    except (FileNotFoundError, KeyError, ValueError, EOFError):
        return 0


def kill_at_random(tmp_path: Path, run: Path, first: list[str], kills: int, rng: random.Random,
                   every_epoch: bool = False) -> list[int]:
    """Start `specc run FIRST...`; then `kills` times: wait for two new checkpoints, SIGKILL the process at a
    random moment within the time between them (mid-epoch, mid-write, ...), and but after the last kill start
    `specc run --resume RUN`. Returns the epochs done at each kill; stops early if the run finishes first."""

    def next_checkpoint(proc, after: int) -> tuple[int, float]:
        while proc.poll() is None and epochs_done(run) <= after:
            time.sleep(0.01)
        return epochs_done(run), time.perf_counter()

    proc = start(tmp_path, *first, every_epoch=every_epoch)
    killed_at: list[int] = []
    for i in range(kills):
        if i:
            proc = start(tmp_path, "--resume", str(run), every_epoch=every_epoch)
        seen, t1 = next_checkpoint(proc, epochs_done(run))
        _, t2 = next_checkpoint(proc, seen)
        time.sleep(rng.uniform(0, t2 - t1))
        if proc.poll() is not None:  # it finished first
            finish(tmp_path, proc)
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_at.append(epochs_done(run))
    return killed_at


def assert_same_run(a: Path, b: Path) -> None:
    """Same test, training and validation metrics, same history, same weights and optimizer state, bit for bit."""
    from specc.runtime.model_files import load_model

    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    for key in ("test", "train", "validation", "epochs", "spec_sha256"):
        assert ma[key] == mb[key], key
    assert (a / "history.csv").read_text() == (b / "history.csv").read_text()
    models = [load_model(d / "model.keras") for d in (a, b)]
    for kind in ("weights", "optimizer"):  # (seed generators' states are not saved in .keras files)
        va, vb = ([np.asarray(v) for v in (m.weights if kind == "weights" else m.optimizer.variables)]
                  for m in models)
        assert len(va) == len(vb) > 0
        assert all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(va, vb)), kind
    assert not (b / "checkpoint.npz").exists() and not list(b.glob(".*partial-*"))


@pytest.fixture(scope="module")
def mlp(tmp_path_factory, data_dir):
    """The MLP spec and its uninterrupted run."""
    tmp = tmp_path_factory.mktemp("mlp")
    spec = tmp / "mlp.model"
    spec.write_text(MLP)
    finish(tmp, start(tmp, str(spec), "--out", str(tmp / "reference"), *MLP_ARGS))
    return spec, tmp / "reference"


def partial_files(run: Path) -> list[str]:
    return sorted(p.name.split(".partial-")[0] for p in run.glob(".*.partial-*"))


# `specc run ARGS...` that SIGKILLs itself halfway through writing the Nth version of file NAME.
KILL_WHILE_WRITING = """
import os, signal, sys
from specc import cli
from specc.core import artifacts
from specc.train import runner
name, nth = sys.argv[1], int(sys.argv[2])
write, calls = artifacts.write_atomic_with, []
def write_then_die(path, save, suffix=".tmp"):
    calls.append(path.name)
    if path.name != name or calls.count(name) < nth:
        return write(path, save, suffix)
    def half(tmp):
        save(tmp)
        with open(tmp, "r+b") as f:
            f.truncate(os.path.getsize(tmp) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
    return write(path, half, suffix)
artifacts.write_atomic_with = runner.write_atomic_with = write_then_die
sys.exit(cli.main(["run", *sys.argv[3:]]))
"""


@pytest.mark.slow  # 45-60 s; test_resume's other kill-and-resume tests stay in the default set
def test_killed_four_times_then_resumed_ends_bit_for_bit_as_the_uninterrupted_run(tmp_path, mlp):
    spec, reference = mlp
    run = tmp_path / "run"
    # Killed while writing the checkpoint of epoch 2: the checkpoint of epoch 1 stays, whole.
    proc = start(tmp_path, "checkpoint.npz", "2", str(spec), "--out", str(run), *MLP_ARGS, script=KILL_WHILE_WRITING,
                 every_epoch=True)
    assert proc.wait() == -signal.SIGKILL
    assert epochs_done(run) == 1 and len((run / "history.csv").read_text().splitlines()) == 1 + 1
    assert partial_files(run) == [".checkpoint.npz"]
    # Resumed, and killed twice more at random moments (mid-epoch, mid-write...).
    killed_at = kill_at_random(tmp_path, run, ["--resume", str(run)], kills=2, rng=random.Random(1), every_epoch=True)
    print(f"killed after epochs {killed_at}")
    assert len(killed_at) == 2 and not (run / "metrics.json").exists(), killed_at
    assert partial_files(run) in ([], [".checkpoint.npz"], [".history.csv"])
    # Resumed, and killed while writing model.keras: neither model.keras nor metrics.json is there.
    proc = start(tmp_path, "model.keras", "1", "--resume", str(run), script=KILL_WHILE_WRITING, every_epoch=True)
    assert proc.wait() == -signal.SIGKILL
    assert epochs_done(run) == 10 and not (run / "model.keras").exists() and not (run / "metrics.json").exists()
    assert partial_files(run) == [".model.keras"]
    # Resumed: nothing is left to train; it evaluates and saves, exactly as the uninterrupted run did.
    finish(tmp_path, start(tmp_path, "--resume", str(run)))
    assert json.loads((run / "metrics.json").read_text())["resumed_after_epochs"] == [1, *killed_at, 10]
    assert_same_run(reference, run)


@pytest.mark.slow
def test_a_cnn_with_random_layers_killed_many_times(tmp_path, data_dir):
    spec, run = tmp_path / "cnn.model", tmp_path / "run"
    spec.write_text(CNN)
    finish(tmp_path, start(tmp_path, str(spec), "--out", str(tmp_path / "reference"), *CNN_ARGS))
    killed_at = kill_at_random(tmp_path, run, [str(spec), "--out", str(run), *CNN_ARGS], kills=6, rng=random.Random(7))
    print(f"killed after epochs {killed_at}")
    assert len(killed_at) >= 3, killed_at
    if not (run / "metrics.json").exists():
        finish(tmp_path, start(tmp_path, "--resume", str(run)))
    assert_same_run(tmp_path / "reference", run)


# --- in one process: early stopping, relative data paths, and what resume refuses -----------------------

SMALL = """model clf {
  input x: (4,)
  dense(16, activation=relu)
  dropout(0.1)
  dense(1, activation=sigmoid)
}
data { file: "d.npz"; test_split: 0.25 }
train {
  loss: binary_crossentropy
  optimizer: sgd(learning_rate=cosine_decay(0.5, decay_steps=200), momentum=0.9)
  metrics: [accuracy]
  epochs: 40
  batch_size: 32
  validation_split: 0.2
  seed: 3
  early_stopping: early_stopping(monitor=val_loss, patience=2, min_delta=0.01, restore_best_weights=true)
}
"""


@pytest.fixture
def small(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 4)).astype("float32")
    (tmp_path / "spec").mkdir()
    np.savez(tmp_path / "spec" / "d.npz", x=x, y=(x[:, 0] + x[:, 1] > 0).astype("float32"))
    (tmp_path / "spec" / "s.model").write_text(SMALL)
    return tmp_path / "spec" / "s.model"


def interrupt_after(monkeypatch, epochs: int) -> None:
    """Make the next run stop (KeyboardInterrupt) right after writing the checkpoint of `epochs`."""
    from specc.train.checkpoint import EpochCheckpoint

    end = EpochCheckpoint.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        end(self, epoch, logs)
        if self.done == epochs:
            raise KeyboardInterrupt

    monkeypatch.setattr(EpochCheckpoint, "on_epoch_end", on_epoch_end)


def test_early_stopping_resumes_with_its_counters_and_best_weights(tmp_path, small, monkeypatch):
    from specc.train.runner import run_plan

    plan = specc.load(small).plan
    whole = run_plan(plan, out=tmp_path / "whole", verbose=0)
    stopped = whole.metrics["epochs"]
    assert 3 < stopped < 40  # early stopping ended it
    for k in (stopped - 1, stopped):  # with patience running, and after the stop was decided
        run = tmp_path / f"run{k}"
        with monkeypatch.context() as m:
            interrupt_after(m, k)
            with pytest.raises(KeyboardInterrupt):
                run_plan(plan, out=run, verbose=0)
        # Resumed from the run's own copy of the spec: d.npz is still found beside the original.
        resumed = run_plan(specc.load(run / "spec.model").plan, resume=run, verbose=0)
        assert resumed.history == whole.history and resumed.metrics["test"] == whole.metrics["test"]
        assert all(np.array_equal(a, b) for a, b in zip(whole.model.get_weights(), resumed.model.get_weights()))


def test_resume_refuses_what_it_cannot_continue(tmp_path, small, monkeypatch):
    from specc.train.runner import run_plan

    plan = specc.load(small).plan
    run = tmp_path / "run"
    (run).mkdir()
    with pytest.raises(specc.UsageError, match="no checkpoint.npz here: the run stopped before its first epoch"):
        run_plan(plan, resume=run, verbose=0)
    with monkeypatch.context() as m:
        interrupt_after(m, 2)
        with pytest.raises(KeyboardInterrupt):
            run_plan(plan, out=run, verbose=0, force=True)
    changed = specc.loads(SMALL.replace("dense(16", "dense(32"), str(small))
    with pytest.raises(specc.UsageError, match="differs from the spec this run started with") as info:
        run_plan(changed.plan, resume=run, verbose=0)
    assert f"--init {run}" in info.value.hint
    with pytest.raises(specc.UsageError, match=r"`--limit 100` differs from this run's \(None\)"):
        run_plan(plan, resume=run, limit=100, verbose=0)
    with pytest.raises(specc.UsageError, match="`--out` names another"):
        run_plan(plan, resume=run, out=tmp_path / "elsewhere", verbose=0)
    run_plan(plan, resume=run, verbose=0)
    with pytest.raises(specc.UsageError, match="this run is finished"):
        run_plan(plan, resume=run, verbose=0)
