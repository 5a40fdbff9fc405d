"""Findings of the review of issue 14's run-directory work, each as a hostile user meets it: files named like a
run's partial files in a folder that is no run, checkpoint files that decompress to gigabytes or hold forged random
states and histories, run files that are folders or links, odd `--out` values, and names with escape sequences
printed by run, check, test and export. Real files, real Keras, in-process (one small training run per test)."""

import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

import specc
from specc import cli
from specc.train.checkpoint import read_checkpoint
from specc.train.rundir import new_run_dir
from specc.train.runner import run_plan

from test_rundir_safety import interrupted_run, rewrite_npz, spec

EVIL = "e\x1b[31mX\nfake"  # an escape sequence and a new line that would start a fake line of output


def test_files_named_like_partial_run_files_are_never_deleted(tmp_path):
    """A folder holding only `.spec.model.partial-*` is not empty and not a run: refused, with or without --force.
    In a real run, --force and --resume remove only partial files of run file names, never a link or another name."""
    plan = specc.load(spec(tmp_path)).plan
    mine = tmp_path / "u"
    mine.mkdir()
    (mine / ".spec.model.partial-mythesis").write_text("precious")
    for force in (False, True):
        with pytest.raises(specc.UsageError, match="not empty and is not a specc run"):
            run_plan(plan, out=mine, force=force, verbose=0)
    assert (mine / ".spec.model.partial-mythesis").read_text() == "precious"

    out = interrupted_run(tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (out / ".notes.partial-draft").write_text("mine")  # not a run file's partial name
    (out / ".history.csv.partial-link").symlink_to(victim)  # a run file's partial name, but a link
    (out / ".model.keras.partial-old").write_text("left by a killed write")
    run_plan(specc.load(out / "spec.model").plan, resume=out, verbose=0)
    assert sorted(p.name for p in out.glob(".*")) == [".history.csv.partial-link", ".notes.partial-draft"]
    assert victim.read_text() == "keep me" and (out / ".notes.partial-draft").read_text() == "mine"


def _bomb(path: Path, base: Path, member: str, nbytes: int) -> None:
    """`base`'s checkpoint with `member` replaced by `nbytes` of zeros, compressed (a few hundred kB on disk)."""
    from numpy.lib import format as npf

    with zipfile.ZipFile(base) as src, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name in src.namelist():
            if name != member:
                z.writestr(name, src.read(name))
                continue
            header = ({"descr": f"<U{nbytes // 4}", "fortran_order": False, "shape": ()} if member == "meta.npy"
                      else {"descr": "<f4", "fortran_order": False, "shape": (nbytes // 4,)})
            with z.open(name, "w", force_zip64=True) as f:
                npf.write_array_header_1_0(f, header)
                chunk = b"\0" * (1 << 24)
                for _ in range(nbytes // len(chunk)):
                    f.write(chunk)


def test_checkpoint_bombs_are_refused_before_decompressing(tmp_path, capsys):
    out = interrupted_run(tmp_path)
    ckpt = out / "checkpoint.npz"
    good = tmp_path / "good.npz"
    shutil.copy(ckpt, good)
    for member in ("meta.npy", "model/0.npy"):
        _bomb(ckpt, good, member, 256 << 20)
        assert ckpt.stat().st_size < 2 << 20
        for meta_only in (True, False):
            with pytest.raises(specc.DataError, match=r"not a readable specc checkpoint: its arrays declare 256 MiB in "
                                                      r"all, .* \(specc writes checkpoints uncompressed\)"):
                read_checkpoint(ckpt, meta_only=meta_only)
        assert cli.main(["run", str(spec(tmp_path, "o.model")), "--out", str(out)]) == 2  # the refusal reads the meta
        assert "its checkpoint is unreadable" in capsys.readouterr().err


def _spoil(ckpt: Path, good: bytes, change) -> None:
    ckpt.write_bytes(good)
    rewrite_npz(ckpt, change)


def _set_python_position(a, m):
    m["python_rng"][1][624] = 5000


BAD_STATES = {  # name: (change, what the message says)
    "keras rng of another shape": (lambda a, m: a.update({"rng/keras": np.zeros(3, np.float64)}), "`rng/keras`"),
    "keras rng of floats": (lambda a, m: a.update({"rng/keras": np.zeros(2, np.float32)}), "float32[2], not uint32[2]"),
    "python rng position 5000": (_set_python_position, "Python random state"),
    "python rng all zeros": (lambda a, m: m["python_rng"].__setitem__(1, [0] * 625), "Python random state"),
    "numpy rng all zeros": (lambda a, m: a.update({"rng/numpy": np.zeros(624, np.uint32)}), "NumPy random state"),
    "history of another length": (lambda a, m: m.update(history={"x": [1.0, 2.0], "loss": [1.0]}), "one value per epoch"),
    "history without loss": (lambda a, m: m.update(history={"mae": [1.0]}), "no `loss`"),
    "history key an escape": (lambda a, m: m.update(history={"\x1b[2J": [1.0], "loss": [1.0]}), "\\x1b[2J"),
    "history at epoch 0": (lambda a, m: m.update(epoch=0, history={"loss": [1.0]}, epoch_seconds=[]), "one value"),
    "best weights without meta": (lambda a, m: a.update({"early_stopping/0": np.zeros((7, 7), np.float32)}),
                                  "early stopping"),
}


def test_forged_random_states_histories_and_epochs_are_bad_checkpoints_before_training(tmp_path, capsys):
    out = interrupted_run(tmp_path)
    ckpt = out / "checkpoint.npz"
    good = ckpt.read_bytes()
    for name, (change, said) in BAD_STATES.items():
        _spoil(ckpt, good, change)
        with pytest.raises(specc.DataError) as info:
            read_checkpoint(ckpt)
        assert info.value.first.file == str(ckpt), name
        assert info.value.message.startswith("not a readable specc checkpoint") and said in info.value.message, \
            (name, info.value.message)
        assert "\x1b" not in info.value.render()
    history = (out / "history.csv").read_bytes()
    capsys.readouterr()
    # More epochs than the run trains (run.json says 3): refused before training, nothing written.
    _spoil(ckpt, good, lambda a, m: m.update(epoch=5, history={"loss": [1.0] * 5}, epoch_seconds=[0.1] * 5))
    assert cli.main(["run", "--resume", str(out)]) == 3
    err = capsys.readouterr().err
    assert err.startswith(f"{ckpt}: error: not a readable specc checkpoint: it claims 5 epochs done, but the run "
                          "trains 3"), err
    assert (out / "history.csv").read_bytes() == history and not (out / "metrics.json").exists()
    # A history logging a key this run does not log: refused before the epoch is saved (no IndexError, exit 70).
    _spoil(ckpt, good, lambda a, m: m.update(history={"x": [1.0], "loss": m["history"]["loss"]}))
    spoiled = ckpt.read_bytes()
    assert cli.main(["run", "--resume", str(out)]) == 3
    err = capsys.readouterr().err
    assert err.startswith(f"{ckpt}: error: not a readable specc checkpoint: its history logs `loss`, `x`, but this "
                          "run logs `loss`"), err
    assert "Traceback" not in err and ckpt.read_bytes() == spoiled and not (out / "metrics.json").exists()


def test_run_files_that_are_folders_links_or_fifos_are_refused_before_training(tmp_path, capsys):
    s = spec(tmp_path)
    plan = specc.load(s).plan
    out = interrupted_run(tmp_path)
    info = (out / "run.json").read_bytes()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    cases = {"model.keras": lambda p: p.mkdir(), "history.csv": lambda p: p.symlink_to(victim),
             "curves.png": lambda p: os.mkfifo(p), "metrics.json": lambda p: p.mkdir()}
    for name, make in cases.items():
        d = tmp_path / f"d-{name}"
        d.mkdir()
        (d / "run.json").write_bytes(info)  # a run stopped before its first checkpoint
        make(d / name)
        with pytest.raises(specc.UsageError) as err:
            run_plan(plan, out=d, force=True, verbose=0)
        assert f"`{name}` is a" in err.value.message and err.value.first.file == str(d), err.value.message
        assert sorted(p.name for p in d.iterdir()) == sorted([name, "run.json"]), name  # nothing trained or written
    assert victim.read_text() == "keep me"
    (out / "model.keras").mkdir()  # and a resume
    assert cli.main(["run", "--resume", str(out)]) == 2
    assert "this run cannot be resumed: `model.keras` is a folder" in capsys.readouterr().err


def test_out_values_that_are_no_folder_say_what_they_are(tmp_path, capsys):
    s = spec(tmp_path)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    os.mkfifo(tmp_path / "fifo")
    long = tmp_path / ("x" * 300)
    cases = [(["--out", str(tmp_path / "dangling")], "`--out` names a symbolic link to nothing"),
             (["--out", str(tmp_path / "loop1")], "`--out` names a symbolic link loop"),
             (["--out", str(tmp_path / "fifo")], "`--out` names a FIFO"),
             (["--out", str(long)], "cannot use this as the run directory: File name too long"),
             (["--out", ""], "`--out` is empty"), (["--resume", ""], "`--resume` is empty"),
             (["--resume", str(long)], "cannot use this as the run directory: File name too long")]
    for args, said in cases:
        assert cli.main(["run", str(s), *args]) == 2, args
        err = capsys.readouterr().err
        assert said in err and "Traceback" not in err, (args, err)
    assert not (tmp_path / "nowhere").exists() and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["dangling", "loop1", "loop2", "fifo", "s.model"])


def test_names_from_files_are_escaped_where_they_are_printed(tmp_path, capsys, monkeypatch):
    evil_spec = tmp_path / f"{EVIL}.model"
    shutil.copy(spec(tmp_path, epochs=1), evil_spec)
    assert "\x1b" not in new_run_dir(str(evil_spec), root=tmp_path / "runs").name  # the default run directory
    monkeypatch.chdir(tmp_path)
    for args in (["check", str(evil_spec)], ["test", str(evil_spec)]):
        cli.main(args)
        printed = capsys.readouterr()
        assert "\x1b" not in printed.out + printed.err and "\nfake.model" not in printed.out + printed.err, args
        assert "e\\x1b[31mX\\x0afake.model" in printed.out + printed.err, (args, printed)
    first = tmp_path / f"first{EVIL}"
    (first).mkdir()
    shutil.copytree(interrupted_run(tmp_path), first, dirs_exist_ok=True)  # a run to take weights from
    out = tmp_path / f"out{EVIL}"
    assert cli.main(["run", str(evil_spec), "--init", str(first), "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "\x1b" not in printed.out + printed.err and "\nfake" not in printed.out, printed.out
    assert "init: 1 layers from " in printed.out and "writing " in printed.out and "saved to " in printed.out
    assert cli.main(["export", str(out), "--format", "keras", "-o", str(tmp_path / f"x{EVIL}.keras")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("wrote ") and "\x1b" not in printed and "\nfake" not in printed, printed
