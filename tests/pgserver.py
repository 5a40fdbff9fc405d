"""A real, throw-away PostgreSQL server that a test starts itself (issue 16: `specc tune --storage postgresql://...`).

`postgres_server(tmp_path)` runs `initdb` into a fresh folder, starts the server with `pg_ctl start -w` on a free
port of 127.0.0.1 only (its unix socket in that folder too), creates the database `specc` and yields the SQLAlchemy
URL `postgresql+psycopg2://specc@127.0.0.1:PORT/specc` (trust authentication, so no password). The URL names its
driver: SQLAlchemy 2.1 reads a bare `postgresql://` as psycopg 3 (`postgresql+psycopg`), 2.0 as psycopg2. On the way
out, test passed or failed, it stops the server (`pg_ctl stop -m fast`), copies the server's log to
`tmp_path/postgres.log` and removes the folder.

initdb and the server refuse to run as root, and CI runs as root: then every server command runs as the system user
`postgres` (Debian's package makes it), or else `nobody`, through `runuser -u USER --`, and the folder is that
user's. The folder is made with `tempfile.mkdtemp` rather than inside `tmp_path`, because pytest's temporary folders
are root's own (mode 0700: another user cannot enter them) and deep enough to pass the 107-byte limit of a unix
socket's path.

Without the server's programs (Debian package `postgresql`) or psycopg2 (PyPI `psycopg2-binary`) the test is
skipped with a reason naming what to install. A server that is there but does not start within `start_timeout`
seconds (`START_TIMEOUT`) fails the test, with the end of its log in the message.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

START_TIMEOUT = 60  # seconds pg_ctl waits for the server to accept connections
STOP_TIMEOUT = 30
COMMAND_TIMEOUT = 120  # initdb, createdb: a few seconds here, on two shared cores
USER = "specc"  # the database's superuser, and the database's name
PROGRAMS = ("initdb", "pg_ctl", "postgres", "createdb")
# Settings for a test server: no fsync, nothing a crash must survive; listen on 127.0.0.1 only.
SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def find_bindir() -> Path | None:
    """The folder holding initdb, pg_ctl, postgres and createdb: the one of `initdb` on PATH (its link resolved:
    Debian puts only links and wrappers on PATH), else the newest /usr/lib/postgresql/VERSION/bin."""
    candidates = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)], reverse=True)
    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in PROGRAMS):
            return folder
    return None


def server_user() -> pwd.struct_passwd | None:
    """The unprivileged user the server runs as when we are root (None when we are not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    pytest.skip("running as root, and neither a `postgres` nor a `nobody` user exists to run PostgreSQL as "
                "(initdb refuses root)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, port)) == 0


def _env() -> dict[str, str]:
    """The environment of the server's commands: English messages, and no PG* variable of the caller's steering
    them to another server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _run(user: pwd.struct_passwd | None, cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    """Run `cmd` (as `user` when given), its output captured; raises subprocess.TimeoutExpired past `timeout`."""
    if user is not None:
        if shutil.which("runuser"):
            cmd = ["runuser", "-u", user.pw_name, "--", *cmd]
        else:
            cmd = ["su", "-s", "/bin/sh", user.pw_name, "-c", shlex.join(cmd)]
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log written)"


def _stop(user: pwd.struct_passwd | None, bindir: Path, data: Path, folder: Path) -> None:
    """Stop the server if it runs: a fast shutdown, then an immediate one, then SIGKILL to its postmaster."""
    pidfile = data / "postmaster.pid"
    for mode in ("fast", "immediate"):
        if not pidfile.exists():
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            _run(user, [str(bindir / "pg_ctl"), "stop", "-D", str(data), "-m", mode, "-w", "-t", str(STOP_TIMEOUT)],
                 folder, STOP_TIMEOUT + 10)
    with contextlib.suppress(OSError, ValueError, IndexError):
        os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)


@contextlib.contextmanager
def postgres_server(tmp_path: Path, start_timeout: float = START_TIMEOUT) -> Iterator[str]:
    """Start a private PostgreSQL server and yield its SQLAlchemy URL; always stop it and remove it afterwards."""
    if importlib.util.find_spec("psycopg2") is None:
        pytest.skip("psycopg2 is not installed (PyPI package `psycopg2-binary`, in the `test` and `postgres` extras)")
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL's server programs (initdb, pg_ctl, postgres, createdb) are not on PATH nor in "
                    "/usr/lib/postgresql/*/bin: install the Debian package `postgresql`")
    user = server_user()
    folder = Path(tempfile.mkdtemp(prefix="specc-pg-"))
    data, log = folder / "data", folder / "postgres.log"
    try:
        if user is not None:
            os.chown(folder, user.pw_uid, user.pw_gid)
        initdb = [str(bindir / "initdb"), "-D", str(data), "--auth=trust", "-U", USER, "--no-locale", "-E", "UTF8",
                  "--no-sync"]
        done = _run(user, initdb, folder, COMMAND_TIMEOUT)
        if done.returncode != 0:
            pytest.fail(f"initdb failed (exit {done.returncode}):\n{done.stdout}{done.stderr}", pytrace=False)
        for _attempt in range(3):  # a free port can be taken by another process between the probe and the start
            port = free_port()
            options = shlex.join(["-c", "listen_addresses=127.0.0.1", "-p", str(port), "-k", str(folder),
                                  *[a for s in SETTINGS for a in ("-c", s)]])
            start = [str(bindir / "pg_ctl"), "start", "-w", "-t", str(int(start_timeout)), "-D", str(data),
                     "-l", str(log), "-o", options]
            try:
                done = _run(user, start, folder, start_timeout + 15)
                why = f"pg_ctl start exited {done.returncode}:\n{done.stdout}{done.stderr}"
            except subprocess.TimeoutExpired:
                done, why = None, f"pg_ctl start still running after {start_timeout + 15} s"
            if done is not None and done.returncode == 0:
                break
            _stop(user, bindir, data, folder)
            if "Address already in use" not in _tail(log):
                pytest.fail(f"PostgreSQL did not start: {why}\n--- end of its log (kept in {tmp_path / 'postgres.log'}) "
                            f"---\n{_tail(log)}", pytrace=False)
        else:
            pytest.fail(f"PostgreSQL found no free port in 3 tries:\n{_tail(log)}", pytrace=False)
        created = subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", USER, USER],
                                 env=_env(), capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        if created.returncode != 0:
            pytest.fail(f"createdb failed:\n{created.stdout}{created.stderr}\n--- server log ---\n{_tail(log)}",
                        pytrace=False)
        yield f"postgresql+psycopg2://{USER}@127.0.0.1:{port}/{USER}"
    finally:
        _stop(user, bindir, data, folder)
        with contextlib.suppress(OSError):
            shutil.copyfile(log, tmp_path / "postgres.log")
        shutil.rmtree(folder, ignore_errors=True)
