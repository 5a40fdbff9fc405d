"""Atomic writes: a crash never leaves a half-written file that looks complete.

Each file is written under a hidden temporary name beside it (`.NAME.partial-XXXXXXXX`), synced to disk, and
renamed over `NAME` only when whole. A process killed mid-write leaves at most such a partial file, which
`remove_partial_files` clears (a resumed run does).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, IO


PARTIAL = ".partial-"  # in the names of files still being written
CHECKPOINT = "checkpoint.npz"  # a run's checkpoint (`specc.train.checkpoint`), among its files (`specc.train.rundir.RUN_FILES`)


def _umask_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _naming(err: OSError, path: Path) -> OSError:
    """`err` naming the file that could not be written (not its temporary name, or none: `np.savez` to an open
    file says nothing), of the same class (`OSError(ENOSPC, ...)`, `PermissionError`, ...)."""
    if err.errno is None:
        return err
    return OSError(err.errno, err.strerror or os.strerror(err.errno), str(path))


def write_atomic_with(path: str | Path, save: Callable[[str], None], suffix: str = ".tmp") -> Path:
    """Have `save(tmp_name)` write a temporary file beside `path`, fsync it, then rename it over `path`.

    `suffix` keeps an extension some writers insist on (Keras's `model.save` wants `.keras`).
    On any failure the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{PARTIAL}", suffix=suffix)
    except OSError as err:
        raise _naming(err, path) from err
    os.close(fd)
    try:
        save(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _umask_mode())  # mkstemp makes 0600; finished files get the usual mode
        os.replace(tmp, path)
    except BaseException as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(err, OSError):
            raise _naming(err, path) from err
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def write_atomic(path: str | Path, content: str | bytes | Callable[[IO[bytes]], None]) -> Path:
    """Write text, bytes, or whatever `content(file)` writes to an open binary file, atomically."""

    def save(name: str) -> None:
        with open(name, "wb") as f:
            if isinstance(content, str):
                f.write(content.encode("utf-8"))
            elif isinstance(content, bytes):
                f.write(content)
            else:
                content(f)

    return write_atomic_with(path, save)


def remove_partial_files(folder: str | Path, names) -> list[str]:
    """Delete what killed writes of the files `names` left in `folder` (hidden `.NAME.partial-*` regular files,
    never a link or a folder, nor a partial file of any other name: call it only on a folder proven to be the
    writer's own); returns their names."""
    import stat

    gone = []
    prefixes = tuple(f".{name}{PARTIAL}" for name in names)
    for f in Path(folder).glob(f".*{PARTIAL}*"):
        try:
            if f.name.startswith(prefixes) and stat.S_ISREG(os.lstat(f).st_mode):
                f.unlink()
                gone.append(f.name)
        except OSError:
            pass
    return gone
