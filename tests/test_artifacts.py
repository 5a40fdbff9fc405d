"""Atomic writes keep the old file whole when writing fails, and leave no temporary files."""

import pytest

from specc.core.artifacts import write_atomic, write_atomic_with


def test_replaces_content(tmp_path):
    path = tmp_path / "metrics.json"
    write_atomic(path, "old")
    write_atomic(path, b"new")
    assert path.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_failure_keeps_the_old_file_and_cleans_up(tmp_path):
    path = tmp_path / "model.keras"
    write_atomic(path, "complete model")

    def crash(f):
        f.write(b"half a mod")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, crash)
    assert path.read_text() == "complete model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_writers_that_take_a_file_name_keep_their_suffix(tmp_path):
    seen = []

    def save(name):
        seen.append(name)
        with open(name, "w") as f:
            f.write("x")

    write_atomic_with(tmp_path / "model.keras", save, suffix=".keras")
    assert seen[0].endswith(".keras") and (tmp_path / "model.keras").read_text() == "x"
