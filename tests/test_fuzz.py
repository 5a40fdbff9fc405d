"""Fuzzing the front end with Hypothesis: whatever text or bytes a spec holds, specc answers with a
model or a located user error: never a traceback, never a hang.

Inputs: (a) random bytes, decoded in several ways; (b) token soup drawn from the grammar's keywords,
punctuation and literals and from the names of Keras layers, losses and settings; (c) mutations of
every spec in `specs/`, the `model` examples of the docs and the broken specs of `tests/errors/`:
characters and tokens inserted, deleted, replaced and swapped, lines duplicated, deep nesting,
huge numbers.

Properties: `parse_text` and `specc.loads` (parse and check) succeed or raise a `SpecError` whose every
diagnostic names the file and, unless it is about the whole file, a line and column inside the text;
a spec that checks builds (`shapes_only`: no weights) or raises such an error; `specc check` never
prints a traceback and exits 0, 1, 2 or 3. Each case runs under a deadline and a watchdog alarm.

Profiles (HYPOTHESIS_PROFILE): `ci`, the default, derandomized (the same 9,000 cases on every run,
plus `specc check` in a process of its own on 60 files; 50-75 s on 2 cores); `long`, random, 40 times
as many cases (360,000; about 40 minutes), failures kept in ~/.cache/specc/hypothesis to replay:

    HYPOTHESIS_PROFILE=long python -m pytest tests/test_fuzz.py -p no:cacheprovider
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import resource
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase
from alarm import alarm_after

import specc
from specc.core.errors import SpecError, UserError
from specc.lang.syntax import MAX_DEPTH, decode_spec, parse_text

ROOT = Path(__file__).resolve().parent.parent

# --- profiles ---------------------------------------------------------------------------------------

settings.register_profile(
    "ci", derandomize=True, database=None, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
settings.register_profile(
    "long", derandomize=False, print_blob=True,
    database=DirectoryBasedExampleDatabase(os.path.expanduser("~/.cache/specc/hypothesis")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)
SCALE = {"ci": 1, "long": 40}.get(PROFILE, 1)


def cases(n: int, deadline_s: float):
    """`n` examples (times the profile's scale), each under a deadline: seconds, where one takes milliseconds."""
    return settings(max_examples=n * SCALE, deadline=timedelta(seconds=deadline_s))


class Hang(Exception):
    pass


def watchdog(seconds: float):
    """Fail a case that runs for `seconds`, instead of hanging the suite (the deadline only judges a
    case once it has returned)."""
    return alarm_after(seconds, Hang)


# --- the corpus ---------------------------------------------------------------------------------------


def _docs_examples() -> list[str]:
    out = []
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        out += re.findall(r"```model\n(.*?)```", md.read_text(encoding="utf-8"), re.S)
    return out


SPECS = [p.read_text(encoding="utf-8") for p in sorted((ROOT / "specs").glob("*.model"))]
CORPUS = (SPECS + _docs_examples()
          + [p.read_text(encoding="utf-8") for p in sorted((ROOT / "tests" / "errors").glob("*.model"))]
          + [p.read_text(encoding="utf-8") for p in sorted((ROOT / "tests" / "fixtures").rglob("*.model"))])

KEYWORDS = ["model", "block", "input", "output", "repeat", "parallel", "branch", "data", "train", "init",
            "device", "none", "true", "false", "int32", "float16", "auto", "cpu", "gpu"]
PUNCTUATION = ["(", ")", "[", "]", "{", "}", ",", ":", ";", "=", "->", "+", "-", "*", "/", "//", "%", "#",
               "\n", "\n", " ", "  ", "\t", "\\\n", "\r\n", ".", "!", "@", "'", '"', "\\"]
LITERALS = ["0", "1", "3", "32", "-1", "0.5", "1e-4", "1_000", "1.", ".5", "1e999", "9" * 30, "2" * 400,
            '"x"', "'data.csv'", '"../ml-100k/u.data"', '"/etc/passwd"', '"\\n"', '"\\d"', '"unclosed',
            "'__import__(\"os\").system(\"true\")'", '"eval(1)"', "\ufeff", "\x00", "\r", "\u2028", "é", "\x1b[31m"]
SETTINGS = ["loss", "optimizer", "metrics", "epochs", "batch_size", "validation_split", "seed", "shuffle",
            "early_stopping", "validation", "dataset", "file", "test_file", "x", "y", "features", "target",
            "tokenizer", "sequence_length", "scale", "from", "layers", "freeze", "columns", "images", "task"]
CODE_WRAPPERS = ["lambda", "Lambda", "jax_layer", "flax_layer", "torch_module_wrapper", "tfsm_layer", "layer",
                 "input_layer", "wrapper"]


def _keras_names() -> list[str]:
    from specc.compile.catalog import catalog

    names = []
    for kind in ("layer", "activation", "loss", "optimizer", "metric", "initializer", "regularizer", "schedule"):
        names += catalog(kind).choices()
    return sorted(set(names))


NAMES = _keras_names() + SETTINGS + CODE_WRAPPERS + ["x", "y", "a", "b", "mnist", "sst2", "chars", "kfold"]
TOKENS = KEYWORDS + PUNCTUATION + LITERALS + NAMES
# Lexemes of a spec, to mutate it token by token: strings, comments, names, numbers, operators, spaces.
LEXEME = re.compile(r"""\s+|#[^\n]*|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|[A-Za-z_]\w*|\d[\d_.eE]*|->|//|.""", re.S)

# --- mutations ----------------------------------------------------------------------------------------


class _Draws:
    """Random choices made by Hypothesis (so failures shrink) or by a seeded `random.Random`."""

    def __init__(self, draw=None, seed: int | None = None):
        self.draw, self.rng = draw, random.Random(seed)

    def int(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi)) if self.draw else self.rng.randint(lo, hi)

    def choice(self, seq):
        return self.draw(st.sampled_from(seq)) if self.draw else self.rng.choice(seq)


def _nest(d: _Draws, text: str) -> str:
    """Deep nesting at a random place: brackets, signs, `repeat`, `parallel` and block calls, around or
    past `MAX_DEPTH`."""
    k = d.choice([2, 10, MAX_DEPTH // 2, MAX_DEPTH - 5, MAX_DEPTH + 1, 3 * MAX_DEPTH, 5000])
    i = d.int(0, len(text))
    kind = d.choice(["paren", "list", "minus", "plus", "call", "repeat", "parallel", "blocks", "brace"])
    if kind == "paren":
        piece = "(" * k + "1" + ")" * k
    elif kind == "list":
        piece = "[" * k + "1" + "]" * k
    elif kind == "minus":
        piece = "-" * k + "1"
    elif kind == "plus":
        piece = "1" + "+1" * k
    elif kind == "call":
        piece = "l2(" * k + "1" + ")" * k
    elif kind == "brace":
        piece = "{" * k + "}" * k
    elif kind == "repeat":
        piece = "\n" + "repeat 2 {\n" * k + "dense(1)\n" + "}\n" * k
    elif kind == "parallel":
        piece = "\n" + "parallel add {\nbranch {\n" * k + "dense(1)\n" + "}\nbranch {}\n}\n" * k
    else:
        blocks = "".join(f"block b{j} {{ b{j + 1} -> b{j + 1} }}\n" for j in range(min(k, 200))) + \
            f"block b{min(k, 200)} {{ dense(1) }}\n"
        return blocks + text[:i] + "b0" + text[i:]
    return text[:i] + piece + text[i:]


def mutate(d: _Draws, text: str) -> str:
    for _ in range(d.int(1, 4)):
        op = d.choice(["del_char", "ins_char", "rep_char", "swap_char", "del_tok", "ins_tok", "rep_tok", "swap_tok",
                       "dup_tok", "dup_line", "del_line", "swap_line", "truncate", "nest", "number"])
        if op.endswith("_char"):
            if not text:
                text = d.choice(TOKENS)
                continue
            i = d.int(0, len(text) - 1)
            c = d.choice(PUNCTUATION + LITERALS + list("aZ_09é\x00\x7f\u00a0\u2028\ud800\U0001f600"))
            if op == "del_char":
                text = text[:i] + text[i + 1:]
            elif op == "ins_char":
                text = text[:i] + c + text[i:]
            elif op == "rep_char":
                text = text[:i] + c + text[i + 1:]
            else:
                j = d.int(0, len(text) - 1)
                chars = list(text)
                chars[i], chars[j] = chars[j], chars[i]
                text = "".join(chars)
        elif op.endswith("_tok"):
            toks = LEXEME.findall(text) or [""]
            i = d.int(0, len(toks) - 1)
            if op == "del_tok":
                del toks[i]
            elif op == "ins_tok":
                toks.insert(i, d.choice(TOKENS))
            elif op == "rep_tok":
                toks[i] = d.choice(TOKENS)
            elif op == "dup_tok":
                toks.insert(i, toks[i] * d.choice([2, 3, 50]))
            else:
                j = d.int(0, len(toks) - 1)
                toks[i], toks[j] = toks[j], toks[i]
            text = "".join(toks)
        elif op.endswith("_line"):
            lines = text.split("\n")
            i = d.int(0, len(lines) - 1)
            if op == "dup_line":
                lines[i:i] = [lines[i]] * d.choice([1, 2, 20])
            elif op == "del_line":
                del lines[i]
            else:
                j = d.int(0, len(lines) - 1)
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        elif op == "truncate":
            text = text[: d.int(0, len(text))]
        elif op == "nest":
            text = _nest(d, text)
        else:  # a number replaced by a huge, tiny or odd one
            nums = [m.span() for m in re.finditer(r"(?<![\w.])\d[\d_]*(?:\.\d*)?(?:[eE][-+]?\d+)?", text)]
            if nums:
                a, b = d.choice(nums)
                new = d.choice(["0", "-1", "10" + "0" * 12, "1e999", "1e-999", "9" * 25, "9" * 5000, "0" * 5000 + "7", "2_147_483_648",
                                "4294967296 * 4294967296", "1000000000", "0.0", "1/0", "1e308 * 10"])
                text = text[:a] + new + text[b:]
    return text


@st.composite
def mutants(draw):
    return mutate(_Draws(draw), draw(st.sampled_from(CORPUS)))


NUMBERS = ["0", "1", "2", "3", "7", "16", "64", "100", "1000", "-1", "-3", "0.0", "0.5", "1.5", "1e-3", "2e9", "1e30",
           "2_147_483_648", "10000000000000", "9223372036854775807", "0" * 4400 + "8", "(2, 2)", "(3,)", "()", "[]", "[1, 2]", "none",
           "true", '"same"', "relu", "x"]


# Building allocates some state even for shapes only (`normalization` over a huge axis): no extreme
# sizes there. The whole range is fuzzed up to checking, and `tests/test_robustness.py` pins the bounds.
BUILD_NUMBERS = [v for v in NUMBERS if v not in ("9223372036854775807", "1e30")]


def tweak(d: _Draws, text: str, numbers: list[str] = NUMBERS) -> str:
    """Mutations that keep the syntax more often than not, to reach checking and building: a name for
    another name, a number for another value, a line deleted, duplicated or moved."""
    for _ in range(d.int(1, 3)):
        op = d.choice(["name", "name", "number", "number", "del_line", "dup_line", "swap_line"])
        if op in ("name", "number"):
            pattern = r"(?<![\w.\"'#])[A-Za-z_]\w*" if op == "name" else r"(?<![\w.])\d[\d_]*(?:\.\d*)?(?:[eE][-+]?\d+)?"
            found = [m.span() for m in re.finditer(pattern, text)]
            if found:
                a, b = d.choice(found)
                text = text[:a] + d.choice(NAMES if op == "name" else numbers) + text[b:]
        else:
            lines = text.split("\n")
            i, j = d.int(0, len(lines) - 1), d.int(0, len(lines) - 1)
            if op == "del_line":
                del lines[i]
            elif op == "dup_line":
                lines.insert(i, lines[i])
            else:
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
    return text


@st.composite
def tweaked_specs(draw, numbers: list[str] = NUMBERS):
    return tweak(_Draws(draw), draw(st.sampled_from(SPECS + _docs_examples())), numbers)


def _decode(data: bytes, how: str) -> str:
    if how == "strict-or-replace":
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return data.decode("utf-8", errors="replace")
    if how == "surrogateescape":  # lone surrogates, as Python gives undecodable file names
        return data.decode("utf-8", errors="surrogateescape")
    if how == "utf-16":
        return data.decode("utf-16-le", errors="surrogatepass" if len(data) % 2 == 0 else "replace")
    return data.decode(how)


random_bytes = st.binary(max_size=400) | st.builds(
    lambda a, b: a + b, st.sampled_from([b"", b"\xef\xbb\xbf", b"model m {\n", b"\xff\xfe", b"\x00\x00"]),
    st.binary(max_size=200))
random_texts = st.builds(_decode, random_bytes, st.sampled_from(["latin-1", "strict-or-replace", "surrogateescape",
                                                                 "utf-16"])) | st.text(max_size=300)

token = st.sampled_from(TOKENS) | st.integers(-10**30, 10**30).map(str) | \
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=6).map(repr)
soup = st.lists(token, max_size=80).flatmap(
    lambda toks: st.sampled_from([" ", "", "\n"]).map(lambda sep: sep.join(toks)))
# Soup in the places it can reach furthest: a model body, a block's body, a settings section.
soup_in_context = st.tuples(st.sampled_from([
    "model m {{\n  input x: (28, 28, 1)\n  {}\n}}\n",
    "block b(n=2) {{\n  {}\n}}\nmodel m {{\n  input x: (4,)\n  b\n}}\n",
    "model m {{\n  input x: (8,)\n  dense(4)\n}}\ntrain {{\n  {}\n}}\ndata {{ dataset: mnist }}\n",
    "model m {{\n  input x: (8,)\n  dense({})\n}}\n",
]), soup).map(lambda t: t[0].format(t[1]))

# --- properties ---------------------------------------------------------------------------------------

FILE = "fuzz.model"
# Errors about a file as a whole carry no line.
WHOLE_FILE = ("no `model` section",)


def assert_located(err: UserError, text: str, file: str = FILE) -> None:
    """Every diagnostic names the file; a spec error's span lies inside the text; it renders and it
    serializes."""
    assert err.diagnostics
    lines = text.split("\n")
    for d in err.diagnostics:
        assert d.message, err
        assert d.file == file, d
        if isinstance(err, SpecError) and d.span is None:
            assert d.message.startswith(WHOLE_FILE), f"a spec error without a position: {d.message}"
        if d.span is not None:
            s = d.span
            assert 1 <= s.line <= len(lines), (s, len(lines), d.message)
            assert 1 <= s.col <= len(lines[s.line - 1]) + 1, (s, len(lines[s.line - 1]), d.message)
            assert (s.end_line, s.end_col) >= (s.line, s.col), (s, d.message)
    rendered = err.render()
    assert "Traceback" not in rendered
    rendered.encode("utf-8")  # printable: no lone surrogates reach the terminal
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", rendered), repr(rendered)
    json.dumps(err.to_dicts())


def parses(text: str) -> bool:
    try:
        with watchdog(20):
            parse_text(text, FILE)
        event("parsed")
        return True
    except SpecError as err:
        event("syntax error")
        assert_located(err, text)
        return False


def checks(text: str):
    """The plan, or None after a located error."""
    try:
        with watchdog(30):
            plan = specc.loads(text, FILE).plan
        event("checked")
        return plan
    except SpecError as err:
        event("spec error")
        assert_located(err, text)
        return None


def builds(plan, text: str) -> None:
    from specc.compile.build import build, shapes_only

    try:
        with watchdog(60), shapes_only():
            build(plan)
        event("built")
    except SpecError as err:
        event("build error")
        assert_located(err, text)


@pytest.fixture(scope="module", autouse=True)
def warm():
    """Keras imported and the catalogues indexed once, outside any deadline."""
    specc.loads(SPECS[0], FILE)


@pytest.fixture(scope="module", autouse=True)
def memory_cap(warm):
    """At most 8 GiB more address space while fuzzing: a case that would exhaust the (shared) machine's
    memory fails here instead, as an allocation error."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * resource.getpagesize()
    cap = used + (8 << 30)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@cases(1500, 2)
@given(random_texts)
def test_random_text_parses_or_fails_located(text):
    parses(text)


@cases(1500, 2)
@given(soup)
def test_token_soup_parses_or_fails_located(text):
    parses(text)


@cases(2500, 2)
@given(mutants())
def test_mutated_specs_parse_or_fail_located(text):
    parses(text)


@cases(1200, 20)
@given(mutants())
def test_mutated_specs_check_or_fail_located(text):
    checks(text)


@cases(800, 20)
@given(soup_in_context)
def test_token_soup_in_a_model_checks_or_fails_located(text):
    checks(text)


@cases(800, 20)
@given(tweaked_specs())
def test_tweaked_specs_check_or_fail_located(text):
    checks(text)


@cases(500, 60)
@given(tweaked_specs(BUILD_NUMBERS) | mutants())
def test_mutated_specs_that_check_build_or_fail_located(text):
    plan = checks(text)
    if plan is not None:
        builds(plan, text)


@cases(200, 10)
@given(random_bytes | mutants().map(lambda t: t.encode("utf-8", errors="surrogatepass")))
def test_spec_files_of_any_bytes(data):
    """What `specc` reads from a file: bytes. Decoding is located too, and `specc check` in the same
    process answers 0, 1, 2 or 3, without a traceback."""
    try:
        text = decode_spec(data, FILE)
    except SpecError as err:
        assert_located(err, data.decode("utf-8-sig", errors="replace"))
        text = None
    if text is not None:
        parses(text)
    from specc.cli import main

    path = _scratch() / FILE
    path.write_bytes(data)
    out, errs = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(errs), watchdog(30):
        code = main(["check", str(path)])
    assert code in (0, 1, 2, 3), errs.getvalue()
    assert "Traceback" not in errs.getvalue() and "internal error" not in errs.getvalue(), errs.getvalue()


_SCRATCH: list[Path] = []


def _scratch() -> Path:
    if not _SCRATCH:
        import tempfile

        _SCRATCH.append(Path(tempfile.mkdtemp(prefix="specc-fuzz-")))
    return _SCRATCH[0]


def test_specc_check_command_on_fuzzed_files(tmp_path):
    """The real command line, in a process of its own, on a batch of mutants, soup and odd bytes: no
    traceback, exit code 0 to 3, every error located (`--format json`)."""
    d = _Draws(seed=20261123)
    files = []
    for k in range(60):
        if k % 3 == 0:
            data = mutate(d, d.choice(CORPUS)).encode("utf-8", errors="surrogatepass")
        elif k % 3 == 1:
            data = " ".join(d.choice(TOKENS) for _ in range(d.int(0, 40))).encode("utf-8", errors="surrogatepass")
        else:
            data = bytes(d.int(0, 255) for _ in range(d.int(0, 200)))
        path = tmp_path / f"case{k:02d}.model"
        path.write_bytes(data)
        files.append(path)
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for extra in ([], ["--syntax-only"]):
        proc = subprocess.run([sys.executable, "-m", "specc", "check", "--format", "json", *extra, *map(str, files)],
                              capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
        assert proc.returncode in (0, 1, 2, 3), proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        for e in json.loads(proc.stdout)["errors"]:
            assert e["file"] in map(str, files) and e["message"], e
            if e["line"] is None:
                assert e["message"].startswith(WHOLE_FILE + ("the file is not UTF-8", "not UTF-8 text")), e
    proc = subprocess.run([sys.executable, "-m", "specc", "check", *map(str, files)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode in (0, 1, 2, 3) and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f]", proc.stderr), "control characters reach the terminal"
