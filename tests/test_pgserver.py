"""The PostgreSQL server that tests start themselves (tests/pgserver.py, for issue 16's `specc tune --storage`): it
stores and reads rows through SQLAlchemy + psycopg2, listens on 127.0.0.1 only, is stopped when the test ends, passed
or failed, and carries one Optuna study that two worker processes fill together. No mocks: a real server, real
processes. Skipped, naming the package, without PostgreSQL (Debian `postgresql`) or psycopg2 (`psycopg2-binary`).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from alarm import alarm_after
from pgserver import port_open, postgres_server


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the sockets listening on `port`, read from /proc/net/tcp and tcp6 (Linux)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                if len(raw) == 4:
                    found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:  # four little-endian 32-bit words
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                    found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def test_server_stores_rows_listens_on_loopback_and_stops(tmp_path):
    sqlalchemy = pytest.importorskip("sqlalchemy")
    with alarm_after(180):
        with postgres_server(tmp_path) as url:
            port = port_of(url)
            assert url == f"postgresql+psycopg2://specc@127.0.0.1:{port}/specc"
            engine = sqlalchemy.create_engine(url)
            try:
                assert engine.dialect.driver == "psycopg2"
                with engine.begin() as db:
                    db.execute(sqlalchemy.text("CREATE TABLE trials (number integer PRIMARY KEY, value real)"))
                    db.execute(sqlalchemy.text("INSERT INTO trials VALUES (7, 0.25)"))
                with engine.connect() as db:
                    assert db.execute(sqlalchemy.text("SELECT number, value FROM trials")).all() == [(7, 0.25)]
                    assert db.execute(sqlalchemy.text("SHOW listen_addresses")).scalar() == "127.0.0.1"
            finally:
                engine.dispose()
            if Path("/proc/net/tcp").exists():
                assert listening_addresses(port) == {"127.0.0.1"}
            assert port_open(port)
            assert not port_open(port, "127.0.0.2")  # another loopback address of this machine: nobody listens
            assert not list(tmp_path.iterdir())  # the server's folder is a private one, not in tmp_path
    assert not port_open(port)
    assert "database system is shut down" in (tmp_path / "postgres.log").read_text()


def test_server_is_stopped_when_the_test_fails(tmp_path):
    with pytest.raises(RuntimeError, match="the test failed"):
        with postgres_server(tmp_path) as url:
            port = port_of(url)
            assert port_open(port)
            raise RuntimeError("the test failed")
    assert not port_open(port)
    assert "database system is shut down" in (tmp_path / "postgres.log").read_text()


WORKER = """
import sys
import optuna

optuna.logging.set_verbosity(optuna.logging.WARNING)
url, name, worker = sys.argv[1:]
study = optuna.create_study(study_name=name, storage=url, load_if_exists=True)


def objective(trial):
    trial.set_user_attr("worker", worker)
    return trial.suggest_float("x", -1, 1) ** 2


study.optimize(objective, n_trials=5)
"""


def test_two_processes_share_one_optuna_study(postgres_url, tmp_path):
    optuna = pytest.importorskip("optuna")
    name = f"two-workers-{time.time_ns()}"
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    # Optuna's tables are made once, before the workers: two processes making them at the same time on an empty
    # database collide in PostgreSQL's catalog (UniqueViolation on pg_type "studydirection", seen here 2 runs of 2).
    # The study itself the workers both create, `load_if_exists=True`: the one that comes second loads it.
    optuna.storages.RDBStorage(postgres_url).engine.dispose()
    workers = [subprocess.Popen([sys.executable, str(script), postgres_url, name, w], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for w in ("a", "b")]
    try:
        outputs = [w.communicate(timeout=180)[0] for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    for w, out in zip(workers, outputs):
        assert w.returncode == 0, out
    storage = optuna.storages.RDBStorage(postgres_url)
    try:
        trials = optuna.load_study(study_name=name, storage=storage).get_trials()
    finally:
        storage.engine.dispose()
    assert len(trials) == 10
    assert sorted(t.number for t in trials) == list(range(10))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert Counter(t.user_attrs["worker"] for t in trials) == {"a": 5, "b": 5}
