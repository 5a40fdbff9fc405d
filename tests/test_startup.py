"""Start-up: the commands that need no model stay light (no Keras, JAX or NumPy; no Pydantic validators built),
the parser's tables and JAX's compiled programs are cached under the user's cache folder (and specc works
without either), and `benchmarks/startup.py` runs. Timings here are lenient on purpose: the figures come
from the benchmark, not from tests."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from specc.core.nodes import Call, Name, Number, Span
from specc.lang.syntax import parse_text

ROOT = Path(__file__).resolve().parent.parent
MNIST = str(ROOT / "specs" / "mnist.model")
HEAVY = ("keras", "jax", "jaxlib", "numpy", "tensorflow", "torch")

FAST = {
    "help": ["--help"],
    "version": ["--version"],
    "fmt": ["fmt", "--check", MNIST],
    "syntax-only": ["check", "--syntax-only", MNIST],
    "parse": ["parse", MNIST],
    "schema": ["schema"],
}


def python(code: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stderr
    return done


def report(argv: list[str], cache: Path) -> dict:
    """Run `specc ARGV` in a fresh interpreter; what it imported, and how long its own import and work took."""
    code = f"""
import json, sys, time
start = time.perf_counter()
from specc.cli import main
try:
    rc = main({argv!r})
except SystemExit as stop:
    rc = stop.code
seconds = time.perf_counter() - start
import specc.core.nodes
print(json.dumps({{"rc": rc, "seconds": seconds, "heavy": [m for m in {HEAVY!r} if m in sys.modules],
                  "validators_built": specc.core.nodes.Spec.__pydantic_complete__}}), file=sys.stderr)
"""
    done = python(code, {"SPECC_CACHE_DIR": str(cache)})
    return json.loads(done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("name", FAST)
def test_fast_commands_import_neither_keras_nor_jax(name, tmp_path):
    got = report(FAST[name], tmp_path)
    assert got["rc"] == 0
    assert got["heavy"] == [], f"`specc {' '.join(FAST[name])}` imported {got['heavy']}"
    if name != "schema":  # the schema is made by Pydantic from the validators' schema
        assert not got["validators_built"], "Pydantic built the AST's validators: the parser should not need them"


def test_syntax_check_is_quick_even_here(tmp_path):
    report(FAST["syntax-only"], tmp_path)  # the first run writes the parser's tables
    got = report(FAST["syntax-only"], tmp_path)
    # Lenient: a small fraction of a second on this project's 2-core machine; 1 s allows for a busy one.
    assert got["seconds"] < 1.0, f"importing specc and checking a spec's syntax took {got['seconds']:.2f} s"


def test_parser_tables_are_cached_and_read_back(tmp_path):
    report(FAST["syntax-only"], tmp_path)
    tables = list((tmp_path / "lark").glob("specc-*.lalr"))
    assert len(tables) == 1 and tables[0].stat().st_size > 1000
    assert not list((tmp_path / "lark").glob(".*partial*")), "a temporary file was left behind"
    before = tables[0].stat().st_mtime_ns
    assert report(FAST["parse"], tmp_path)["rc"] == 0
    assert tables[0].stat().st_mtime_ns == before, "the second process should read the tables, not write them"


def test_broken_or_missing_cache_never_stops_a_command(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    assert report(FAST["fmt"], not_a_folder)["rc"] == 0  # the cache folder cannot be made: no cache
    report(FAST["fmt"], tmp_path)
    (table,) = (tmp_path / "lark").glob("specc-*.lalr")
    table.write_bytes(b"garbage\n" + b"\x80" * 100)  # damaged: Lark rebuilds the tables
    assert report(FAST["fmt"], tmp_path)["rc"] == 0


def test_ast_equality_ignores_spans_and_spellings():
    a = parse_text("model m {\n  input x: (2,)\n  dense(10, activation=relu)\n}\n")
    b = parse_text("model m {\n\n  input x: (2,)   # a comment\n  dense(1_0, activation = relu)\n}\n")
    c = parse_text("model m {\n  input x: (2,)\n  dense(11, activation=relu)\n}\n")
    assert a == b and hash(a) == hash(b)
    assert a != c
    assert Number(value=1, text="1", span=Span(line=1, col=1, end_line=1, end_col=2)) == Number(value=1)
    assert Call(func="f", args=[Name(id="x")]) != Call(func="f", args=[Number(value=1)])
    assert Name(id="x") != Call(func="x")  # different kinds of node never compare equal


# --- JAX's persistent compilation cache -----------------------------------------------------------

JAX_CACHE = """
import json
import jax
if {keras}:  # as `specc run` does
    from specc.runtime.keras_env import import_keras
    import_keras()
    path = jax.config.jax_compilation_cache_dir
else:
    from specc.core.cache import enable_jax_cache
    path = enable_jax_cache()
f = jax.jit(lambda x: x * 2 + 1)
assert float(f(jax.numpy.float32(1.0))) == 3.0  # compiles whether or not there is a cache
print(json.dumps({{"path": str(path) if path else None, "dir": jax.config.jax_compilation_cache_dir,
                  "min_secs": jax.config.jax_persistent_cache_min_compile_time_secs}}))
"""


def jax_cache(env: dict, keras: bool = False) -> dict:
    """In a fresh interpreter (JAX's configuration is global): where the compilation cache went."""
    clean = {k: v for k, v in os.environ.items() if k not in ("JAX_COMPILATION_CACHE_DIR", "SPECC_JAX_CACHE")}
    done = subprocess.run([sys.executable, "-c", JAX_CACHE.format(keras=keras)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env={**clean, "JAX_PLATFORMS": "cpu", **env})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_keras_runs_with_the_jax_cache_in_the_user_cache_folder(tmp_path):
    got = jax_cache({"SPECC_CACHE_DIR": str(tmp_path)}, keras=True)
    assert got["dir"] == str(tmp_path / "jax") and got["min_secs"] == 0
    assert list((tmp_path / "jax").glob("*-cache")), "the compiled program was not written to the cache"


def test_jax_cache_can_be_turned_off(tmp_path):
    got = jax_cache({"SPECC_CACHE_DIR": str(tmp_path), "SPECC_JAX_CACHE": "0"})
    assert got["path"] is None and got["dir"] is None
    assert not (tmp_path / "jax").exists()


def test_jax_cache_of_the_users_own_is_respected(tmp_path):
    theirs = tmp_path / "theirs"
    got = jax_cache({"SPECC_CACHE_DIR": str(tmp_path / "ours"), "JAX_COMPILATION_CACHE_DIR": str(theirs)})
    assert got["path"] is None and got["dir"] == str(theirs)
    assert not (tmp_path / "ours" / "jax").exists()


def test_unwritable_cache_folder_runs_without_the_jax_cache(tmp_path):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    got = jax_cache({"SPECC_CACHE_DIR": str(not_a_folder)})
    assert got["path"] is None and got["dir"] is None


# --- the benchmark ----------------------------------------------------------------------------------


@pytest.mark.slow  # a benchmark's smoke test, like benchmarks/speed.py's: the suite's 20-minute budget
def test_startup_benchmark_runs_quick(tmp_path, data_dir):
    out = tmp_path / "startup.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "startup.py"), "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "first step begins" in done.stdout and "python -c pass" in done.stdout
    result = json.loads(out.read_text())
    assert set(result["commands"]) >= {"python -c pass", "specc --help", "specc schema"}
    assert set(result["runs"]) == {"cold", "warm"}
    assert result["jax_cache_entries"] > 0, "the cold run left nothing in JAX's persistent cache"
    for scenario in result["runs"].values():
        assert 0 < scenario["first_step_begins"]["median"] <= scenario["first_step_done"]["median"] \
            <= scenario["exit"]["median"]
