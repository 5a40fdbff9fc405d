"""Run directories as a hostile or unlucky user meets them (issue 14: items 1-3, 10-13): two runs into one folder
at once, `--out` at a folder of the user's own files, `--force`, run.json and checkpoint.npz that are not what a
run wrote, a full disk (a real small tmpfs), Ctrl-C at every stage, and `specc generate`'s arguments. Real files,
real processes and real Keras; the interrupts are raised where a Ctrl-C would land."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import specc
from specc import cli
from specc.train.checkpoint import read_checkpoint
from specc.train.rundir import claim_resume, new_run_dir
from specc.train.runner import run_plan

SPEC = ("model m {{\n  input x: (1,)\n  dense(1)\n}}\ndata {{\n  x: [1, 2, 3, 4, 5, 6, 7, 8]\n"
        "  y: [2, 4, 6, 8, 10, 12, 14, 16]\n}}\ntrain {{\n  loss: mse\n  epochs: {epochs}\n  batch_size: 4\n"
        "  seed: {seed}\n{extra}}}\n")


def spec(tmp_path: Path, name: str = "s.model", epochs: int = 3, seed: int = 1, extra: str = "") -> Path:
    path = tmp_path / name
    path.write_text(SPEC.format(epochs=epochs, seed=seed, extra=extra))
    return path


def specc_proc(*args, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "specc", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **env})


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>" for p in sorted(folder.rglob("*"))}


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 60) -> None:
    end = time.time() + seconds
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < end, f"{path} never appeared"
        time.sleep(0.05)


# --- 1. one run per directory -----------------------------------------------------------------------------

def test_concurrent_runs_into_one_folder_never_mix(tmp_path, capsys):
    """Two `specc run`s started together into one --out: one runs, the other is refused (exit 2); a run in
    progress refuses a second run and a resume naming its pid; Ctrl-C says how to resume; kill -9 leaves no lock."""
    a, b = spec(tmp_path, "a.model", seed=1), spec(tmp_path, "b.model", seed=2)
    together = tmp_path / "together"
    procs = [specc_proc("run", s, "--out", together, "--quiet") for s in (a, b)]
    long = spec(tmp_path, "long.model", epochs=100_000)
    slow = {"SPECC_CHECKPOINT_SPACING": "0"}
    interrupted, killed = tmp_path / "interrupted", tmp_path / "killed"
    holders = [specc_proc("run", long, "--out", out, "--quiet", **slow) for out in (interrupted, killed)]
    results = [(p.wait(timeout=120), p.communicate()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 2], results
    refused = next(err for rc, (_, err) in results if rc == 2)
    assert "in use: process " in refused or "already holds a run" in refused, refused
    assert "Traceback" not in refused and not refused.startswith("<string>")
    info = json.loads((together / "run.json").read_text())
    metrics = json.loads((together / "metrics.json").read_text())
    winner = a if info["spec"] == str(a) else b
    assert metrics["spec_sha256"] == info["spec_sha256"] == hashlib.sha256(winner.read_bytes()).hexdigest()
    assert (together / "spec.model").read_bytes() == winner.read_bytes()

    for out, holder in zip((interrupted, killed), holders):
        wait_for(out / "checkpoint.npz", holder)
    for args in (["run", str(a), "--out", str(killed)], ["run", "--resume", str(killed)]):
        assert cli.main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"{killed}: error: this run directory is in use: process {holders[1].pid} "), err
    with pytest.raises(specc.UsageError, match=f"in use: process {holders[0].pid}"):
        run_plan(specc.load(a).plan, out=interrupted, force=True, verbose=0)

    holders[0].send_signal(signal.SIGINT)
    rc, (_, err) = holders[0].wait(timeout=60), holders[0].communicate()
    assert rc == 130 and "Traceback" not in err, err
    assert f"specc: interrupted; kept in {interrupted}: spec.model, run.json, checkpoint.npz (after epoch" in err
    assert f"continue with `specc run --resume {interrupted}`" in err

    holders[1].kill()  # SIGKILL: the kernel drops the lock with the process
    holders[1].wait(timeout=60)
    claim_resume(killed).release()
    claim_resume(interrupted).release()


def test_default_run_directories_of_runs_started_together_differ(tmp_path):
    made = [new_run_dir(str(tmp_path / "s.model"), root=tmp_path / "runs") for _ in range(3)]
    assert len(set(made)) == 3 and all(p.is_dir() for p in made)
    assert made[1].name == made[0].name + "-2" or made[1].name[:-2] != made[0].name[:-2]  # -2 within one second


# --- 2. a folder that is not a run ---------------------------------------------------------------------------

def user_folder(folder: Path) -> Path:
    folder.mkdir()
    (folder / "history.csv").write_text("epoch,my own data\n1,2\n")
    (folder / "run.json").write_text(json.dumps({"name": "my marathon", "time": "3:59:00"}))
    (folder / "tokenizer.json").write_text('{"specc_vocabulary": "chars", "chars": "abc"}')
    (folder / "classes.json").write_text('["cat", "dog"]')
    (folder / "spec.model").write_text("my notes, not a spec")
    (folder / ".history.csv.partial-xyz").write_text("a file of mine")
    (folder / "project").mkdir()
    (folder / "project" / "main.py").write_text("print('hi')\n")
    return folder


def test_out_never_touches_a_folder_that_is_not_a_run(tmp_path, capsys, monkeypatch):
    s = spec(tmp_path)
    plan = specc.load(s).plan
    folder = user_folder(tmp_path / "mine")
    before = snapshot(folder)
    for force in (False, True):
        with pytest.raises(specc.UsageError) as info:
            run_plan(plan, out=folder, force=force, verbose=0)
        assert "not empty and is not a specc run" in info.value.message and info.value.first.file == str(folder)
        assert "run.json" in info.value.message  # what is wrong with the run.json there
    monkeypatch.chdir(folder)
    for args in (["run", str(s), "--out", "."], ["run", str(s), "--out", ".", "--force"],
                 ["run", str(s), "--out", "project", "--force"], ["run", "--resume", "."]):
        code = cli.main(args)
        err = capsys.readouterr().err
        assert code in (2, 3) and "Traceback" not in err and not err.startswith("<string>"), (args, err)
    assert snapshot(folder) == before


def test_force_removes_only_what_the_old_run_wrote_and_says_so(tmp_path, capsys):
    s = spec(tmp_path)
    plan = specc.load(s).plan
    out = tmp_path / "run"
    run_plan(plan, out=out, verbose=0)
    (out / "notes.txt").write_text("mine")
    (out / "export").mkdir()
    info = json.loads((out / "run.json").read_text())
    info["files"] += ["notes.txt", "../victim.txt", "/etc/hostname"]  # a run.json that lists what it did not write
    (out / "run.json").write_text(json.dumps(info))
    (tmp_path / "victim.txt").write_text("keep me")
    capsys.readouterr()
    run_plan(plan, out=out, force=True, verbose=0)
    err = capsys.readouterr().err
    assert f"removed the old run's files from {out}: metrics.json, model.keras, curves.png, history.csv, spec.model, run.json" in err
    assert (out / "notes.txt").read_text() == "mine" and (out / "export").is_dir()
    assert (tmp_path / "victim.txt").read_text() == "keep me"


# --- 3. refused before anything is loaded or trained ---------------------------------------------------------------

def test_run_directory_refusals_come_before_data_and_folds(tmp_path, capsys):
    missing = tmp_path / "m.model"
    missing.write_text('model m {\n  input x: (1,)\n  dense(1)\n}\ndata { file: "nowhere.npz" }\ntrain { loss: mse }\n')
    folds = spec(tmp_path, "k.model", extra="  validation: kfold(2)\n")
    folder = user_folder(tmp_path / "mine")
    for s in (missing, folds):
        with pytest.raises(specc.UsageError, match="not a specc run"):
            run_plan(specc.load(s).plan, out=folder, verbose=1)
    assert "fold 1/2" not in capsys.readouterr().out


# --- 10. run.json and checkpoint.npz that a run did not write ------------------------------------------------------

def interrupted_run(tmp_path: Path, after: int = 1) -> Path:
    """A run stopped by Ctrl-C as epoch `after + 1` began: its checkpoint holds `after` epochs."""
    import keras

    class Stop(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == after:
                raise KeyboardInterrupt

    out = tmp_path / "stopped"
    with pytest.raises(KeyboardInterrupt):
        run_plan(specc.load(spec(tmp_path, epochs=3)).plan, out=out, verbose=0, callbacks=[Stop()])
    assert read_checkpoint(out / "checkpoint.npz", meta_only=True)[0]["epoch"] == after
    return out


def npy_bytes(a) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def rewrite_npz(path: Path, change) -> None:
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    original = arrays["meta"]
    meta = json.loads(str(original))
    change(arrays, meta)
    if arrays.get("meta") is original:  # the meta was changed, not replaced or removed
        arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)


BAD_CHECKPOINTS = {
    "truncated": lambda p, good: p.write_bytes(good[: len(good) // 2]),
    "garbage": lambda p, good: p.write_bytes(os.urandom(4096)),
    "empty": lambda p, good: p.write_bytes(b""),
    "a .npy": lambda p, good: p.write_bytes(npy_bytes(np.zeros(3))),
    "a folder": lambda p, good: (p.unlink(), p.mkdir()),
    "no meta": lambda p, good: rewrite_npz(p, lambda a, m: a.pop("meta")),
    "meta not JSON": lambda p, good: rewrite_npz(p, lambda a, m: a.update(meta=np.array("{not json"))),
    "meta a number": lambda p, good: rewrite_npz(p, lambda a, m: a.update(meta=np.array(3.0))),
    "meta a list": lambda p, good: rewrite_npz(p, lambda a, m: a.update(meta=np.array("[1, 2]"))),
    "no epoch": lambda p, good: rewrite_npz(p, lambda a, m: m.pop("epoch")),
    "epoch a string": lambda p, good: rewrite_npz(p, lambda a, m: m.update(epoch="3")),
    "negative epoch": lambda p, good: rewrite_npz(p, lambda a, m: m.update(epoch=-1)),
    "layers out of range": lambda p, good: rewrite_npz(p, lambda a, m: m.update(layers={"dense": [0, 99]})),
    "short python rng": lambda p, good: rewrite_npz(p, lambda a, m: m.update(python_rng=[3, [1, 2], None])),
    "numpy rng a string": lambda p, good: rewrite_npz(p, lambda a, m: m.update(numpy_rng="x")),
    "history too short": lambda p, good: rewrite_npz(p, lambda a, m: m.update(history={"loss": []})),
    "missing model array": lambda p, good: rewrite_npz(p, lambda a, m: a.pop("model/0")),
    "rng/numpy reshaped": lambda p, good: rewrite_npz(p, lambda a, m: a.update({"rng/numpy": np.zeros(5, "uint32")})),
    "no rng/numpy": lambda p, good: rewrite_npz(p, lambda a, m: a.pop("rng/numpy")),
    "strings array": lambda p, good: rewrite_npz(p, lambda a, m: a.update({"model/0": np.array(["a", "b"])})),
    "foreign array": lambda p, good: rewrite_npz(p, lambda a, m: a.update({"../../x": np.zeros(2)})),
    "pickled array": lambda p, good: rewrite_npz(p, lambda a, m: a.update({"model/0": np.array([{}], dtype=object)})),
}


def test_bad_checkpoints_are_located_errors_in_resume_init_and_run(tmp_path, capsys):
    out = interrupted_run(tmp_path)
    ckpt = out / "checkpoint.npz"
    good = ckpt.read_bytes()
    other = spec(tmp_path, "other.model", epochs=1)
    for name, spoil in BAD_CHECKPOINTS.items():
        ckpt.write_bytes(good)
        spoil(ckpt, good)
        with pytest.raises(specc.DataError) as info:
            read_checkpoint(ckpt)
        assert info.value.first.file == str(ckpt) and info.value.message.startswith("not a readable specc checkpoint"), name
        for args in (["run", "--resume", str(out)], ["run", str(other), "--init", str(out), "--out", str(tmp_path / "i")]):
            code = cli.main(args)
            err = capsys.readouterr().err
            assert code == 3, (name, args, err)
            assert "Traceback" not in err and err.count("error:") == 1, (name, err)  # one diagnostic, not nested
            assert "not a readable specc checkpoint" in err or name == "a folder" and "found no saved model" in err, \
                (name, err)
        code = cli.main(["run", str(other), "--out", str(out)])  # an unfinished run with an unreadable checkpoint
        err = capsys.readouterr().err
        assert code == 2 and "holds an unfinished run" in err and "Traceback" not in err, (name, err)
        if ckpt.is_dir():
            ckpt.rmdir()
    ckpt.write_bytes(good)  # the run itself resumes from its whole checkpoint
    assert run_plan(specc.load(out / "spec.model").plan, resume=out, verbose=0).metrics["epochs"] == 3


BAD_RUN_JSON = {
    "not JSON": "{",
    "a list": "[1, 2]",
    "empty": "",
    "no spec_sha256": lambda i: i.pop("spec_sha256"),
    "sha256 not hex": lambda i: i.update(spec_sha256="x" * 64),
    "epochs a string": lambda i: i.update(epochs="3"),
    "epochs a float": lambda i: i.update(epochs=3.0),
    "limit zero": lambda i: i.update(limit=0),
    "files a string": lambda i: i.update(files="metrics.json"),
    "devices a dict": lambda i: i.update(devices={}),
    "init a number": lambda i: i.update(init=3),
}


def test_bad_run_json_is_a_located_error_naming_what_is_wrong(tmp_path, capsys):
    out = interrupted_run(tmp_path)
    capsys.readouterr()
    path = out / "run.json"
    good = json.loads(path.read_text())
    other = spec(tmp_path, "other.model", epochs=1)
    for name, spoil in BAD_RUN_JSON.items():
        if isinstance(spoil, str):
            path.write_text(spoil)
        else:
            info = dict(good)
            spoil(info)
            path.write_text(json.dumps(info))
        assert cli.main(["run", "--resume", str(out)]) == 3, name
        err = capsys.readouterr().err
        assert err.startswith(f"{path}: error: not a specc run.json: "), (name, err)
        assert "Traceback" not in err
        assert cli.main(["run", str(other), "--out", str(out), "--force"]) == 2, name  # not a run: not replaced
        assert "not a specc run" in capsys.readouterr().err
    path.write_text(json.dumps(good))


# --- 11. a full disk, and Ctrl-C at every stage ---------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MB filesystem (tmpfs, else ext2 on a loop device) mounted at tmp_path / "disk"."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root (a tmpfs or a loop device)")
    tried = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True, text=True)
    if tried.returncode != 0:
        image = tmp_path / "disk.img"
        image.write_bytes(b"\0" * (1 << 20))
        made = subprocess.run(["mkfs.ext2", "-q", "-F", str(image)], capture_output=True, text=True)
        loop = subprocess.run(["mount", "-o", "loop", str(image), str(disk)], capture_output=True, text=True)
        if made.returncode != 0 or loop.returncode != 0:
            pytest.skip(f"cannot mount a small filesystem: tmpfs: {tried.stderr.strip()}; "
                        f"loop device: {(made.stderr or loop.stderr).strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def fill(disk: Path, leave: int) -> Path:
    st = os.statvfs(disk)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * max(0, st.f_bavail * st.f_frsize - leave))
    return filler


def test_a_full_disk_is_a_located_error_saying_what_was_kept_and_how_to_go_on(tmp_path, small_disk, capsys):
    s = spec(tmp_path)
    for leave in (12 << 10, 64 << 10, 88 << 10):  # fails at the first checkpoint, at a later one, at the results
        filler = fill(small_disk, leave)
        out = small_disk / f"run{leave}"
        assert cli.main(["run", str(s), "--out", str(out), "--quiet"]) == 3
        err = capsys.readouterr().err
        assert "Traceback" not in err and ": error: could not write " in err and "No space left on device" in err, err
        file = err.split(": error:")[0]
        assert Path(file).parent == out and Path(file).name in ("run.json", "spec.model", "checkpoint.npz",
                                                                "history.csv", "model.keras", "curves.png", "metrics.json")
        assert f"kept in {out}" in err and "hint: once there is space, " in err
        filler.unlink()
        if (out / "checkpoint.npz").exists():  # as the hint says
            assert f"continue with `specc run --resume {out}`" in err
            assert cli.main(["run", "--resume", str(out), "--quiet"]) == 0
        else:
            assert f"start again with `specc run {s} --out {out}`" in err
            assert cli.main(["run", str(s), "--out", str(out), "--quiet"]) == 0
        assert json.loads((out / "metrics.json").read_text())["epochs"] == 3
        assert not [p for p in out.iterdir() if ".partial-" in p.name]
        capsys.readouterr()


def test_ctrl_c_at_each_stage_says_what_was_kept_and_resume_finishes_a_run_stopped_after_its_model(
        tmp_path, capsys, monkeypatch):
    import specc.train.runner as runner

    plan = specc.load(spec(tmp_path)).plan

    def interrupt(*args, **kw):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:  # while loading the data: nothing was written, the new folder goes
        m.setattr(runner, "load_dataset", interrupt)
        with pytest.raises(KeyboardInterrupt):
            run_plan(plan, out=tmp_path / "loading", verbose=0)
    assert "specc: interrupted; nothing was written" in capsys.readouterr().err
    assert not (tmp_path / "loading").exists()

    out = tmp_path / "late"
    with monkeypatch.context() as m:  # after model.keras, while drawing the curves
        m.setattr(runner, "_plot_curves", interrupt)
        with pytest.raises(KeyboardInterrupt):
            run_plan(plan, out=out, verbose=0)
    err = capsys.readouterr().err
    assert "model.keras" in err and f"continue with `specc run --resume {out}`" in err
    with pytest.raises(specc.UsageError) as info:
        run_plan(plan, out=out, verbose=0)
    assert "unfinished run (checkpoint after epoch 3)" in info.value.message
    assert f"specc run --resume {out}" in info.value.hint and info.value.first.file == str(out)
    done = run_plan(specc.load(out / "spec.model").plan, resume=out, verbose=0)
    assert done.metrics["epochs"] == 3 and (out / "metrics.json").exists() and not (out / "checkpoint.npz").exists()


# --- 12. specc generate ---------------------------------------------------------------------------------------------

def test_generate_arguments_and_a_model_wider_than_its_tokenizer(tmp_path, capsys):
    (tmp_path / "t.txt").write_text("abcdefghij" * 10)
    (tmp_path / "g.model").write_text(  # 13 tokens (10 letters and 3 specials), 40 outputs
        'model m {\n  input t: (6,) int32\n  embedding(40, 4)\n  dense(40)\n}\n'
        'data {\n  file: "t.txt"\n  tokenizer: chars\n  sequence_length: 6\n  task: next_token\n}\n'
        'train {\n  loss: sparse_categorical_crossentropy\n  epochs: 1\n  seed: 0\n}\n')
    out = tmp_path / "run"
    run_plan(specc.load(tmp_path / "g.model").plan, out=out, verbose=0)
    from specc.tools.generate import generate_text

    text = generate_text(out, "abc", 60, temperature=2.0, seed=0)
    assert len(text) == 63 and set(text) <= set("abcdefghij")
    for args in (["--temperature", "nan"], ["--temperature", "inf"], ["--temperature", "-1"], ["--temperature", "x"],
                 ["--seed", "-1"], ["--seed", "1.5"]):
        with pytest.raises(SystemExit) as stop:
            cli.main(["generate", str(out), "--prompt", "ab", *args])
        assert stop.value.code == 2, args
        assert "Traceback" not in capsys.readouterr().err
    assert cli.main(["generate", str(out), "--prompt", "ab", "--tokens", "3", "--seed", str(2 ** 200)]) == 0
    assert capsys.readouterr().out.startswith("ab")
    for bad in ('{"specc_vocabulary": "chars"}', "[1, 2]", '{"specc_vocabulary": "chars", "chars": 3}', "{"):
        (out / "tokenizer.json").write_text(bad)
        code = cli.main(["generate", str(out), "--prompt", "ab"])
        err = capsys.readouterr().err
        assert code == 3 and err.startswith(f"{out / 'tokenizer.json'}: error: "), (bad, err)
    from specc.data.tokenizers import CharVocabulary

    wide = [chr(c) for c in range(0x100, 0x100 + 60)]  # 63 ids: a prompt of the last scores past the model's 40
    (out / "tokenizer.json").write_text(CharVocabulary(wide).to_json())
    code = cli.main(["generate", str(out), "--prompt", wide[-1]])
    err = capsys.readouterr().err
    assert code == 3 and "the model scores only 40 tokens" in err and err.startswith(f"{out / 'tokenizer.json'}: error: "), err
