import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgserver import postgres_server

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("SPECC_DATA_DIR", str(ROOT.parent / "shared" / "datasets"))
# Made absolute once: CI sets it relative (`../shared/datasets`, as the README writes it), and tests that start
# specc in another folder (the workers of a shared study, `cwd=tmp_path`) would otherwise look beside that folder.
os.environ["SPECC_DATA_DIR"] = os.path.abspath(os.environ["SPECC_DATA_DIR"])
# JAX's persistent compilation cache pays off across runs of one model; the suite compiles hundreds of
# different programs once each, and writing them (with the cache's size bookkeeping on every write) made it
# minutes slower. The tests of the cache itself (tests/test_startup.py) set it up in their own processes.
os.environ.setdefault("SPECC_JAX_CACHE", "0")


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", help="rewrite golden files from the current output")


@pytest.fixture
def update_golden(request) -> bool:
    return request.config.getoption("--update-golden")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ["SPECC_DATA_DIR"])
    if not (path / "mnist").is_dir():
        pytest.skip(f"datasets not found in SPECC_DATA_DIR={path}")
    return path


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory) -> Iterator[str]:
    """The SQLAlchemy URL of one real PostgreSQL server for the whole session (tests/pgserver.py; skipped without
    PostgreSQL or psycopg2). Tests share its database `specc`: each uses names of its own (tables, studies)."""
    with postgres_server(tmp_path_factory.mktemp("postgres")) as url:
        yield url
