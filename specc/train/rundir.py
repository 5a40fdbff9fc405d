"""Run directories: claimed by one process for the whole run, recognised by their `run.json`, never mixed with
what the user keeps there.

- A run claims its directory with an exclusive `flock` on the directory itself (no lock file: the kernel drops
  the lock when the process ends, even by `kill -9`, so a dead run never blocks the next). A second run or
  resume of the same directory is refused (`UsageError`, exit 2) naming the holder's pid (from /proc/locks).
- A directory is a specc run when its `run.json` has specc's schema (`RunInfo`). A non-empty folder that is
  not a run is refused, with or without `--force`; `--force` removes only the files the old run's `run.json`
  lists among those a run writes (`RUN_FILES`), and says which.
- Default names `runs/NAME-YYYYmmdd-HHMMSS` are made with `mkdir` (never reusing a folder): runs started in the
  same second get `-2`, `-3`, ...
"""

from __future__ import annotations

import errno
import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from specc.core.artifacts import CHECKPOINT, PARTIAL
from specc.core.errors import DataError, Diagnostic, UsageError, describe_schema_error, printable

# Everything a run writes; `--force` removes them in this order (results first), partial files after.
RUN_FILES = ("metrics.json", "model.keras", "curves.png", CHECKPOINT, "history.csv", "tokenizer.json",
             "classes.json", "spec.model", "run.json")


def _is_partial(name: str) -> bool:
    """A file a killed atomic write of a run file left (`.NAME.partial-*`)."""
    return any(name.startswith(f".{f}{PARTIAL}") for f in RUN_FILES)


class RunInfo(BaseModel):
    """The schema of `run.json`: what a run started with. Extra keys are kept (newer versions may add some)."""

    model_config = ConfigDict(extra="allow")

    spec: StrictStr
    spec_path: Optional[StrictStr]
    spec_sha256: StrictStr = Field(pattern=r"^[0-9a-f]{64}$")
    model: StrictStr
    seed: Optional[StrictInt]
    epochs: StrictInt = Field(ge=0)
    limit: Optional[StrictInt] = Field(ge=1)
    init: Optional[StrictStr]
    device: StrictStr
    devices: list[StrictStr]
    versions: dict[StrictStr, StrictStr]
    started: StrictStr
    files: list[StrictStr] = Field(default_factory=lambda: list(RUN_FILES))  # runs of older versions list none


MAX_RUN_JSON = 1 << 20


def read_run_info(run_dir: Path) -> dict[str, Any]:
    """A run's `run.json`, checked against `RunInfo`; a `DataError` naming the file and what is wrong."""
    path = Path(run_dir) / "run.json"
    try:
        if not path.is_file():
            raise DataError(Diagnostic("not a specc run.json: not a regular file", file=str(path)))
        if path.stat().st_size > MAX_RUN_JSON:
            raise DataError(Diagnostic(f"not a specc run.json: {path.stat().st_size:,} bytes (a run's is a few kB)",
                                       file=str(path)))
        data = json.loads(path.read_bytes())
    except OSError as err:
        raise DataError(Diagnostic(f"cannot read the run's settings: {err.strerror or err}", file=str(path))) from None
    except ValueError as err:
        raise DataError(Diagnostic(f"not a specc run.json: it is not JSON ({printable(str(err), lines=False)[:200]})",
                                   file=str(path))) from None
    if not isinstance(data, dict):
        raise DataError(Diagnostic(f"not a specc run.json: expected a JSON object, got {type(data).__name__}",
                                   file=str(path)))
    try:
        return RunInfo.model_validate(data).model_dump()
    except ValidationError as err:
        raise DataError(Diagnostic(f"not a specc run.json: {describe_schema_error(err)}", file=str(path))) from None


def diverged(info: dict[str, Any]) -> str:
    """Where a run's loss became non-finite, from its run.json."""
    bad = info["diverged"] if isinstance(info.get("diverged"), dict) else {}
    step = f", step {bad['step']}" if bad.get("step") else ""
    return f"its loss became {bad.get('loss', 'NaN')} in epoch {bad.get('epoch', '?')}{step}"


MODEL = "model.keras"  # the trained model a finished run saves


def saved_model(path: Path, checkpoint: bool = False) -> Path:
    """The model file `path` names: a run directory's `model.keras`, or `path` itself when it is not a directory.
    With `checkpoint`, a run that stopped before saving one gives its checkpoint instead (`init` reads either).
    Every reader of a run's model finds it here; `specc.runtime.model_files.load_model` then loads it."""
    if not path.is_dir():
        return path
    if checkpoint and not (path / MODEL).is_file() and (path / CHECKPOINT).is_file():
        return path / CHECKPOINT
    return path / MODEL


def safe_name(stem: str, limit: int = 100) -> str:
    """A spec's file name made fit for a folder name shown on a terminal: characters that are not printable
    (control characters, escape sequences, lone surrogates) and path separators become `_`, at most `limit` long."""
    safe = "".join(c if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF and c not in "/\\" else "_"
                   for c in stem)[:limit].strip()
    return safe if safe and safe not in (".", "..") else "spec"


def new_run_dir(spec_file: str, root: str | Path = "runs") -> Path:
    """Create and return `root/NAME-YYYYmmdd-HHMMSS` (the spec's name and the time), or `...-2`, `-3`, ... when
    another run took that name: `mkdir` without `exist_ok`, so two runs never share a default directory."""
    stem = safe_name(Path(spec_file).stem) if spec_file and not spec_file.startswith("<") else "spec"
    base = Path(root) / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(Diagnostic(f"cannot make the folder for runs: {err.strerror or err}", file=str(base.parent),
                                    hint="pass `--out DIR`")) from None
    for n in range(1, 10_000):
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as err:
            raise UsageError(Diagnostic(f"cannot use this as the run directory: {err.strerror or err}", file=str(path),
                                        hint="pass `--out DIR`")) from None
    raise UsageError(Diagnostic("too many runs of this spec started this second", file=str(base),
                                hint="pass `--out DIR`"))


def _holder(st: os.stat_result) -> int | None:
    """The pid holding a `flock` on the file of `st`, from /proc/locks (Linux), if it says."""
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    for line in lines:
        parts = line.split()
        if "->" in parts or len(parts) < 6 or parts[1] != "FLOCK":
            continue
        if parts[5] == dev:
            return int(parts[4])
        if parts[5].rsplit(":", 1)[-1] == str(st.st_ino):
            pids.append(int(parts[4]))
    return pids[0] if len(pids) == 1 else None


class RunDir:
    """A run directory claimed by this process: `path`, locked until `release()`; `created` when this claim
    made it; `remove`: the old run's files that `clear()` deletes before the new run writes its own."""

    def __init__(self, path: Path, fd: int | None, created: bool, remove: list[str] | None = None,
                 is_run: bool = False):
        self.path, self.fd, self.created, self.remove = path, fd, created, remove or []
        self.is_run = is_run  # the folder held a specc run (a valid run.json) when claimed: its partial files are its

    def clear(self) -> list[str]:
        """Delete the old run's files (`remove`) and, in a folder that held a specc run, its partial run files
        (regular files only, never a link or a folder); say which on stderr."""
        gone = []
        for name in self.remove:
            if _regular(self.path / name):
                (self.path / name).unlink()
                gone.append(name)
        for entry in sorted(os.listdir(self.path)) if self.is_run else []:
            if _is_partial(entry) and _regular(self.path / entry):
                (self.path / entry).unlink(missing_ok=True)
                gone.append(entry)
        if gone:
            print(f"specc: removed the old run's files from {printable(str(self.path), lines=False)}: "
                  f"{', '.join(printable(g, lines=False) for g in gone)}", file=sys.stderr, flush=True)
        self.remove = []
        return gone

    def release(self) -> None:
        """Unlock; a directory this claim made and nothing was written to is removed again."""
        if self.created:
            try:
                self.path.rmdir()  # only when empty
            except OSError:
                pass
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def _lock(path: Path) -> int | None:
    """An fd of the directory `path` holding an exclusive flock; a `UsageError` naming the holder if another
    process has it. None where the filesystem has no flock (then the run goes on unlocked, with a note)."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        return None
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        st = os.fstat(fd)
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            pid = _holder(st)
            who = f"process {pid}" if pid is not None else "another process"
            mine = " (this process)" if pid == os.getpid() else ""
            raise UsageError(Diagnostic(
                f"this run directory is in use: {who}{mine} is running or resuming a run in it",
                file=str(path), hint="wait for it to end, or choose another `--out`")) from None
        print(f"specc: note: cannot lock {printable(str(path), lines=False)} ({err.strerror}); "
              "make sure no other run uses it", file=sys.stderr)
        return None
    return fd


def _state(path: Path) -> tuple[list[str], dict[str, Any] | None, str | None]:
    """(the folder's entries, run.json's content if it is specc's, why not if it is not). Partial run files count
    like any other file: they are a run's leftovers only beside a valid run.json (a user may name a file so)."""
    entries = sorted(os.listdir(path))
    if not entries:
        return [], None, None
    if "run.json" not in entries or not (path / "run.json").is_file():
        return entries, None, "it has no run.json"
    try:
        return entries, read_run_info(path), None
    except DataError as err:
        return entries, None, err.message


def _regular(path: Path) -> bool:
    """Whether `path` is a regular file itself (not a link to one, a folder, a FIFO or a device)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _kind(path: Path) -> str:
    """What `path` is, in words (it is not followed if it is a link)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError as err:
        return f"unreadable ({err.strerror or err})"
    if stat.S_ISLNK(mode):
        try:
            os.stat(path)
        except OSError as err:
            if err.errno == errno.ELOOP:
                return "a symbolic link loop"
            return f"a symbolic link to nothing (`{printable(os.readlink(path)[:200], lines=False)}` does not exist)"
        return f"a symbolic link (to `{printable(os.readlink(path)[:200], lines=False)}`)"
    return ("a folder" if stat.S_ISDIR(mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
            "a file")


def special_run_file(path: Path, names=RUN_FILES) -> str | None:
    """The first of a run's file `names` present in `path` as something other than a regular file (a folder, a
    link, a FIFO: writing it would fail after training, or write through the link), said as `NAME is WHAT`."""
    for name in names:
        if os.path.lexists(path / name) and not _regular(path / name):
            return f"`{name}` is {_kind(path / name)}, not a file specc wrote"
    return None


def _listing(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(printable(n, lines=False) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def claim_out(out: str | Path | None, spec_file: str, force: bool) -> RunDir:
    """Claim the directory of a new run (`out`, or a new default one): refuse a folder that is not a specc run,
    and a run there unless `force` (a run stopped before its first checkpoint is replaced without it)."""
    if out is None:
        path = new_run_dir(spec_file)
        return RunDir(path, _lock(path), created=True)
    if str(out) == "":
        raise UsageError(Diagnostic("`--out` is empty", file="specc run",
                                    hint="name a new folder for the run, or leave out `--out` for runs/NAME-TIME"))
    path = Path(out)

    def refuse(message: str, hint: str) -> UsageError:
        return UsageError(Diagnostic(message, file=str(path), hint=hint))

    created = _make_out(path, refuse)  # before locking, so that a user's folder gets nothing written into it
    try:
        fd = _lock(path)
    except OSError as err:
        raise refuse(f"cannot use this as the run directory: {err.strerror or err}", "choose another `--out`") from None
    run = RunDir(path, fd, created)
    try:
        info = _run_info_or_refuse(path, refuse)  # again, under the lock: another run may have started meanwhile
        if info is not None:
            run.remove = _replaceable(path, info, force, refuse)
            run.is_run = True
    except BaseException:
        run.release()
        raise
    return run


def _make_out(path: Path, refuse) -> bool:
    """`--out` made if it is not there (True when this process made it); a file, an unwritable folder, or a
    non-empty folder that is not a specc run refused."""
    created = False
    try:
        if os.path.lexists(path):
            if not path.is_dir():
                raise refuse(f"`--out` names {_kind(path)}, not a folder", "choose a new folder for the run")
            if not os.access(path, os.W_OK | os.X_OK):
                raise refuse("cannot write into this folder (permission denied)", "choose another `--out`")
        else:
            try:
                path.mkdir(parents=True)
                created = True
            except FileExistsError:
                pass  # made meanwhile by another process: the lock decides
        _run_info_or_refuse(path, refuse)
    except OSError as err:  # a name too long, a loop of links above it, no permission
        raise refuse(f"cannot use this as the run directory: {err.strerror or err}", "choose another `--out`") from None
    return created


def _run_info_or_refuse(path: Path, refuse) -> dict[str, Any] | None:
    """The `run.json` of the run in `path`, None for an empty folder; a non-empty folder that is no run refused."""
    entries, info, why = _state(path)
    if entries and info is None:
        raise refuse(f"this folder is not empty and is not a specc run ({why}): it holds {_listing(entries)}",
                     "choose a new or empty folder for `--out`; specc never deletes files it did not write, "
                     "even with `--force`")
    return info


def _replaceable(path: Path, info: dict[str, Any], force: bool, refuse) -> list[str]:
    """The files of the old run in `path` a new run replaces (those its run.json lists); without `force`, a
    finished, diverged or resumable run is refused, and so is a run file that is not a regular file."""
    if not force and (path / "metrics.json").exists():
        raise refuse("this folder already holds a run, finished (it has metrics.json); refusing to overwrite it",
                     "choose another `--out`, or pass `--force` to replace it")
    if not force and info.get("diverged"):
        raise refuse(f"this folder holds a run that diverged ({diverged(info)}); refusing to overwrite it",
                     f"resuming it would diverge again: start a new run from its last good weights with "
                     f"`specc run SPEC --init {path} --out NEW_DIR`, or pass `--force` to replace it")
    if not force and (path / CHECKPOINT).exists():
        from specc.train.checkpoint import read_checkpoint

        try:
            done = f" (checkpoint after epoch {read_checkpoint(path / CHECKPOINT, meta_only=True)[0]['epoch']})"
        except DataError:
            done = " (its checkpoint is unreadable)"
        raise refuse(f"this folder holds an unfinished run{done}; refusing to overwrite it",
                     f"continue it with `specc run --resume {path}`, or pass `--force` to start over")
    special = special_run_file(path)
    if special:
        raise refuse(f"this run directory cannot be written: {special}",
                     "remove or rename it, or choose another `--out`")
    listed = set(info["files"])
    return [f for f in RUN_FILES if f in listed and _regular(path / f)]


def claim_resume(run_dir: str | Path) -> RunDir:
    """Claim the directory of a run to resume (it must exist; `_open_resume` checks what it holds)."""
    if str(run_dir) == "":
        raise UsageError(Diagnostic("`--resume` is empty", file="specc run",
                                    hint="name the directory of a run that was interrupted"))
    path = Path(run_dir)
    try:
        if not path.is_dir():
            raise UsageError(Diagnostic("no run directory here" + (f" (it is {_kind(path)})" if os.path.lexists(path) else ""),
                                        file=str(path), hint="name the directory of a run that was interrupted"))
        return RunDir(path, _lock(path), created=False, is_run=True)
    except OSError as err:
        raise UsageError(Diagnostic(f"cannot use this as the run directory: {err.strerror or err}", file=str(path))) from None
