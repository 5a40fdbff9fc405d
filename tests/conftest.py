import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("SPECC_DATA_DIR", str(ROOT.parent / "shared" / "datasets"))


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
