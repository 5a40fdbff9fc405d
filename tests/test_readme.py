"""The README's commands are the ones CI runs, and the files they name exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def block_after(heading: str) -> str:
    section = README.split(heading, 1)[1]
    return re.search(r"```bash\n(.*?)\n```", section, re.S).group(1).strip()


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()
    assert ci[-1].strip() == block_after("## Test")


def test_install_and_run_command_names_the_mnist_spec():
    cmd = block_after("## Install and run")
    assert cmd.startswith("pip install -e .") and cmd.endswith("specc run specs/mnist.model")
    assert (ROOT / "specs" / "mnist.model").is_file()


def test_readme_exit_codes_match_the_code():
    from specc.core.errors import EXIT_CODES

    rows = dict(re.findall(r"^\| (\d+) \| (.+?) \|$", README, re.M))
    assert sorted(int(k) for k in rows) == sorted(EXIT_CODES)


def test_readme_counts_the_broken_specs():
    stated = int(re.search(r"`tests/errors/` holds (\d+) broken specs", README).group(1))
    assert stated == len(list((ROOT / "tests" / "errors").glob("*.model")))


def test_python_examples_call_the_documented_api():
    """Every `specc.NAME(...)` a Python example of the README calls is a function of the package facade (a module of
    the same name, such as `specc.tools.emit`, is not what a user calls)."""
    import specc

    called = set()
    for block in re.findall(r"```python\n(.*?)\n```", README, re.S):
        called |= set(re.findall(r"\bspecc\.([A-Za-z_][\w.]*)\(", block))
    assert called, "the README shows the Python API"
    for name in sorted(called):
        assert "." not in name and callable(getattr(specc, name, None)), f"specc.{name} is not the facade's"
