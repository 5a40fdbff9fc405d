"""Whatever text a user writes, specc answers with a located user error or a model: never a crash,
never a hang. Hostile inputs (deep nesting, huge numbers and files, odd characters, runaway `repeat`)
each end in an error at the place where a bound is crossed; the bounds are in the README.

`tests/test_fuzz.py` searches for such inputs with Hypothesis; this file pins the ones found, and
the bounds themselves.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

import pytest
from alarm import alarm_after

import specc
from specc.compile import build as build_module
from specc.compile.build import build, build_model, shapes_only
from specc.compile.check import MAX_LAYERS, MAX_NESTING, MAX_REPEAT
from specc.core.errors import MAX_SHOWN, SpecError
from specc.lang.syntax import MAX_CHARS, MAX_DEPTH, MAX_TOKENS, decode_spec, parse_file, parse_text

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [p.read_text() for p in sorted((ROOT / "specs").glob("*.model"))]
INSERTS = list("(){}[],:;=-+*/#\"'\n ") + ["->", "repeat ", "parallel ", "branch ", "block ", "model ", "input ",
                                              "none", "dense", "1e", "0", "1/0", "relu", "[a, b] -> "]
HEAD = "model m {\n  input x: (4,)\n"


within = alarm_after  # fail instead of hanging: an AssertionError after `seconds`


def mutate(text: str, rng: random.Random) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(chars))
        op = rng.random()
        if op < 0.3:
            del chars[i]
        elif op < 0.6:
            chars.insert(i, rng.choice(INSERTS))
        elif op < 0.8:
            j = rng.randrange(len(chars))
            chars[i], chars[j] = chars[j], chars[i]
        else:
            chars[i] = rng.choice(INSERTS)
    return "".join(chars)


def test_mutated_specs_never_crash():
    rng = random.Random(20261123)
    outcomes = {"built": 0, "error": 0}
    for k in range(400):
        text = mutate(SOURCES[k % len(SOURCES)], rng)
        try:
            plan = specc.loads(text, "mutant.model").plan
            with shapes_only():
                build(plan)
            outcomes["built"] += 1
        except specc.UserError as err:
            lines = text.count("\n") + 1
            for d in err.diagnostics:
                assert d.message
                if d.span:
                    assert 1 <= d.span.line <= lines + 1, (text, err.render())
                    assert d.span.col >= 1
            outcomes["error"] += 1
    assert outcomes["error"] > 100 and outcomes["built"] > 10, outcomes


# --- hostile input: each case ends in this error, at this place, quickly ------------------------------

def _blocks_doubling(n: int, body: str) -> str:
    return f"block b0 {{ {body} }}\n" + "".join(f"block b{i} {{ b{i - 1} -> b{i - 1} }}\n" for i in range(1, n + 1)) + \
        HEAD + f"  b{n}\n  dense(1)\n}}\n"


HOSTILE = {
    # nesting: stopped by the post-lexer at the bracket that crosses the bound
    "100,000 (": (HEAD + "  dense(" + "(" * 100_000 + "1" + ")" * 100_000 + ")\n}\n",
                  "nested too deeply: more than 100 levels of brackets and braces", (3, 8 + MAX_DEPTH - 1)),
    "100,000 [": ("data {\n  x: " + "[" * 100_000 + "1" + "]" * 100_000 + "\n}\n",
                  "nested too deeply: more than 100 levels of brackets and braces", (2, 6 + MAX_DEPTH - 1)),
    "unclosed [": (HEAD + "  dense(" + "[" * 100_000 + "\n}\n", "nested too deeply", (3, 8 + MAX_DEPTH - 1)),
    "5,000 nested repeat": (HEAD + "repeat 1 {\n" * 5000 + "dense(1)\n" + "}\n" * 5000 + "}\n",
                            "nested too deeply: more than 100 levels of brackets and braces", (3 + MAX_DEPTH - 1, 10)),
    "3,000 nested parallel": (HEAD + "parallel add {\nbranch {\n" * 3000 + "dense(1)\n" + "}\nbranch {}\n}\n" * 3000 + "}\n",
                              "nested too deeply", None),
    # nesting the tree grows without brackets: found on the tree, before lowering recurses
    "50,000 -": (HEAD + "  dense(" + "-" * 50_000 + "1)\n}\n",
                 "nested too deeply: more than 100 levels of expressions, brackets and blocks", (3, 9 + MAX_DEPTH - 5)),
    "30,000 +": (HEAD + "  dense(1" + "+1" * 30_000 + ")\n}\n",
                 "nested too deeply: more than 100 levels of expressions, brackets and blocks", (3, 9)),
    "2,000 *": (HEAD + "  dense(" + "*".join(["99999999"] * 2000) + ")\n}\n", "nested too deeply", (3, 9)),
    # nesting through block calls: counted while checking
    "3,000 blocks in blocks": ("".join(f"block b{i} {{ b{i + 1} }}\n" for i in range(3000)) + "block b3000 { dense(1) }\n"
                               + HEAD + "  b0\n}\n",
                               (f"nested too deeply: blocks, `repeat` and `parallel` inside one another more than "
                                f"{MAX_NESTING} levels deep"), (MAX_NESTING, 13)),
    # expansion
    "repeat 10**9": (HEAD + "  repeat 1000000000 { dense(1) }\n}\n",
                     f"`repeat` 1,000,000,000 times is more than specc expands (at most {MAX_REPEAT:,})", (3, 10)),
    "repeat 10*...*10": (HEAD + "  repeat " + "*".join(["10"] * 9) + " {\n dense(1)\n }\n}\n",
                         "`repeat` 1,000,000,000 times", (3, 10)),
    "nested empty repeats": (HEAD + "  repeat 10000 {\n repeat 10000 {\n repeat 10000 {\n }\n }\n }\n  dense(1)\n}\n",
                             "the model expands too far: more than 100,000 block calls and `repeat` rounds", (5, 9)),
    "blocks doubling, empty": (_blocks_doubling(40, ""), "the model expands too far", None),
    "blocks doubling, layers": (_blocks_doubling(40, "dense(1)"),
                                f"the model has more than {MAX_LAYERS:,} layers once blocks and `repeat` are expanded",
                                (1, 12)),
    # numbers
    "1e999999": (HEAD + "  dense(1e999999)\n}\n", "number `1e999999` is too large for a 64-bit float", (3, 9)),
    "10,000 digits": (HEAD + "  dense(" + "9" * 10_000 + ")\n}\n",
                      "number `999999999999999999999999999999999999999…` is too large for a 64-bit whole number", (3, 9)),
    "10,000 digits in a shape": ("model m {\n  input x: (" + "9" * 10_000 + ",)\n  dense(1)\n}\n",
                                 "number `9999", (2, 13)),
    "an input of 2**63 - 1 values": ("model m {\n  input x: (9223372036854775807,)\n  normalization\n}\n",
                                     "input `x` has 9,223,372,036,854,775,807 values per example; specc builds at most "
                                     "268,435,456 (2**28)", (2, 3)),
    "an input of 10**15 values": ("model m {\n  input x: (100000, 100000, 100000, none)\n  dense(1)\n}\n",
                                  "input `x` has 1,000,000,000,000,000 values per example", (2, 3)),
    "2**96 by arithmetic": (HEAD + "  dense(4294967296 * 4294967296 * 4294967296)\n}\n",
                            "`*` makes a number too large for a 64-bit whole number", (3, 9)),
    "1e308 * 10": (HEAD + "  dropout(1e308 * 10)\n}\n", "`*` makes a number too large for a 64-bit float", (3, 11)),
    "1e308 // 1e-308": (HEAD + "  dropout(1e308 // 1e-308)\n}\n", "`//` makes a number too large", (3, 11)),
    # characters
    "NUL": (HEAD + "  dense(1)\0\n}\n", "unexpected character U+0000 (NUL)", (3, 11)),
    "CR line ends": (HEAD.replace("\n", "\r") + "  dense(1)\r}\r", "unexpected character U+000D (carriage return)", (1, 10)),
    "U+2028": (HEAD + "  dense(1)\u2028\n}\n", "unexpected character U+2028 (line separator)", (3, 11)),
    "BOM inside": (HEAD + "  \ufeffdense(1)\n}\n", "unexpected character U+FEFF (byte-order mark)", (3, 3)),
    "escape sequence": (HEAD + "  \x1b[2J\n}\n", "unexpected character U+001B (escape)", (3, 3)),
    "lone surrogate in a string": (HEAD + "  dense(1, name='\ud800')\n}\n",
                                   "the string holds U+D800 (a lone surrogate), which is not a character", (3, 17)),
    "lone surrogate": (HEAD + "  dense(1)\udcff\n}\n", "unexpected character U+DCFF (a lone surrogate)", (3, 11)),
    # size
    "1 MB + 1": ("#" * (MAX_CHARS + 1), f"the spec is too large: {MAX_CHARS + 1:,} characters", (1, MAX_CHARS + 1)),
    "100,001 tokens": (HEAD + "  dense(" + "1," * 60_000 + ")\n}\n", f"the spec is too long: more than {MAX_TOKENS:,} tokens",
                       None),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_input_is_a_located_error(name):
    text, message, where = HOSTILE[name]
    start = time.perf_counter()
    with within(60), pytest.raises(SpecError) as info:
        plan = specc.loads(text, "hostile.model").plan
        with shapes_only():
            build(plan)
    seconds = time.perf_counter() - start
    first = info.value.diagnostics[0]
    assert first.message.startswith(message), first.message
    assert first.span is not None and first.file == "hostile.model"
    if where:
        assert (first.span.line, first.span.col) == where, (first.span, first.message)
    rendered = info.value.render()
    assert len(rendered) < 20_000 and "\x1b" not in rendered and "\0" not in rendered
    rendered.encode("utf-8")
    assert seconds < 30, f"{seconds:.1f} s"


ACCEPTED = {
    "BOM at the start": "\ufeff" + HEAD + "  dense(1)\n}\n",
    "CRLF": (HEAD + "  dense(1)\n}\n").replace("\n", "\r\n"),
    "form feed and tabs": HEAD + "\f\tdense(1)\t# tab\n}\n",
    "lone surrogate in a comment": HEAD + "  dense(1)  # \ud800\n}\n",
    "1e-999 is zero": HEAD + "  dropout(1e-999)\n}\n",
    "leading zeros": "model m {\n  input x: (" + "0" * 5000 + "4,)\n  dense(" + "0" * 5000 + "1_0)\n}\n",
    "largest whole number": HEAD + "  dense(4, kernel_initializer=glorot_uniform(seed=9223372036854775807))\n}\n",
    "code-looking strings are strings": HEAD + "  dense(1, name=\"__import__('os').system('false')\")\n}\n",
}


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_odd_but_valid_input_checks(name):
    plan = specc.loads(ACCEPTED[name], "odd.model").plan
    assert plan.layers


def test_nesting_at_the_bound_works_in_every_stage():
    """The deepest specs the parser takes go through every later stage, which recurse, even with
    Python's default recursion limit and 150 frames already used."""
    from specc.tools.emit import emit_python
    from specc.lang.fmt import format_text
    from specc.core.nodes import dump_ast

    deepest = {
        "list": lambda d: f"data {{\n  x: [{'[' * d}1{']' * d}]\n  y: [1]\n}}\n" + HEAD + "  dense(1)\n}\ntrain { loss: mse }\n",
        "sum": lambda d: HEAD + "  dense(1" + "+1" * d + ")\n}\n",
        "repeat": lambda d: HEAD + "repeat 1 {\n" * d + "dense(1)\n" + "}\n" * d + "}\n",
        "parallel": lambda d: HEAD + "parallel add {\nbranch {\n" * d + "dense(1)\n" + "}\nbranch {}\n}\n" * d + "}\n",
        "blocks": lambda d: "".join(f"block b{i} {{ b{i + 1} }}\n" for i in range(MAX_NESTING - 4)) +
        f"block b{MAX_NESTING - 4} {{\n" + "repeat 1 {\n" * 3 + "dense(1" + "+1" * (d - 10) + ")\n" + "}\n" * 3 + "}\n" +
        HEAD + "  b0\n}\n",
    }

    def deep(k, fn):
        return deep(k - 1, fn) if k else fn()

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        for kind, make in deepest.items():
            d = next(d for d in range(MAX_DEPTH, 0, -1) if _parses(make(d)))
            text = make(d)
            with pytest.raises(SpecError, match="nested too deeply"):
                parse_text(make(d + 1) if kind != "blocks" else make(MAX_DEPTH + 1))
            deep(150, lambda t=text: format_text(t))
            deep(150, lambda t=text: json.dumps(dump_ast(parse_text(t))))
            plan = deep(150, lambda t=text: specc.loads(t).plan)
            deep(150, lambda p=plan: emit_python(p))
            with shapes_only():
                deep(150, lambda p=plan: build(p))
    finally:
        sys.setrecursionlimit(limit)


def _parses(text: str) -> bool:
    try:
        parse_text(text)
        return True
    except SpecError:
        return False


def test_parse_time_grows_linearly():
    """Parsing is linear in the size of the spec, so the bound on its size bounds the time."""
    unit = ("block b{k}(n=64) {{\n  conv2d(n, 3, padding=same, activation=relu)\n"
            "  dense(n * 2, kernel_regularizer=l2(1e-4)) -> dropout(0.1)\n}}\n")

    def seconds(copies: int) -> float:
        text = "".join(unit.format(k=k) for k in range(copies)) + HEAD + "  dense(1)\n}\n"
        start = time.perf_counter()
        parse_text(text)
        return time.perf_counter() - start

    seconds(10)
    small, large = min(seconds(100) for _ in range(2)), min(seconds(800) for _ in range(2))
    assert large < 8 * small * 2.5, (small, large)  # 8 times the text: well under 20 times the time


def test_many_errors_stop_and_render_briefly():
    text = HEAD + "  foo\n" * 20_000 + "}\n"
    start = time.perf_counter()
    with within(60), pytest.raises(SpecError) as info:
        specc.loads(text, "many.model")
    assert time.perf_counter() - start < 30
    diags = info.value.diagnostics
    assert len(diags) == 101 and diags[-1].message == "too many errors: specc stops checking after 100"
    rendered = info.value.render()
    assert rendered.count("error: unknown layer `foo`") == MAX_SHOWN
    assert rendered.endswith("... and 51 more errors (`--format json` lists them all)")


def test_long_lines_and_messages_are_clipped():
    text = HEAD + "  dense(1, name=\"" + "x" * 100_000 + "\") zzz\n}\n"
    with pytest.raises(SpecError) as info:
        specc.loads(text, "long.model")
    rendered = info.value.render()
    assert max(len(line) for line in rendered.splitlines()) < 200
    assert "zzz" in rendered.splitlines()[1] and rendered.splitlines()[2].endswith("^~~")


def test_control_characters_in_messages_are_escaped():
    with pytest.raises(SpecError) as info:
        specc.loads(HEAD + "  dense(1)\n}\ndata { dataset: \"\\x1b[2Jmnist\" }\n", "esc.model")
    rendered = info.value.render()
    assert "\x1b" not in rendered and "\\x1b[2Jmnist" in rendered


def test_files_that_are_not_utf8_are_located_errors(tmp_path):
    path = tmp_path / "latin1.model"
    path.write_bytes((HEAD + "  dense(1)  # caf\xe9\n}\n").encode("latin-1"))
    with pytest.raises(SpecError) as info:
        parse_file(path)
    d = info.value.diagnostics[0]
    assert d.message.startswith("the file is not UTF-8 text: byte 0xe9 at offset 43")
    assert (d.span.line, d.span.col) == (3, 18) and d.file == str(path)
    assert decode_spec(b"\xef\xbb\xbf" + HEAD.encode()) == HEAD  # a byte-order mark is dropped
    with pytest.raises(SpecError) as info:
        decode_spec(b"\xef\xbb\xbfmodel m {\n  \xff\n}\n", "bom.model")
    d = info.value.diagnostics[0]
    assert d.message.startswith("the file is not UTF-8 text: byte 0xff at offset 15") and (d.span.line, d.span.col) == (2, 3)
    with pytest.raises(SpecError, match="NUL bytes"):
        decode_spec(b"\x00\x00\xff\xfe", "bin.model")


needs_param_cap = pytest.mark.skipif(not hasattr(build_module, "MAX_LAYER_PARAMS"),
                                     reason="the parameter cap and recursion room in specc/compile/build.py are not applied")


@needs_param_cap
@pytest.mark.parametrize("layer", ["dense(1000000000000)", "embedding(100000000, 100000)"])
def test_enormous_layers_are_refused_before_any_weight_exists(layer):
    """`dense(10**12)` would allocate 4 TB: a located error, not an out-of-memory crash."""
    dtype = " int32" if layer.startswith("embedding") else ""
    text = f"model m {{\n  input x: (4,){dtype}\n  {layer}\n}}\n"
    with within(60), pytest.raises(SpecError) as info:
        build_model(specc.loads(text, "huge.model").plan)
    d = info.value.diagnostics[0]
    assert "parameters; specc builds at most 2,147,483,648 per layer" in d.message and (d.span.line, d.span.col) == (3, 3)


@needs_param_cap
def test_enormous_outputs_are_refused_before_the_next_layer_allocates():
    """`normalization` allocates state the size of its input even without weights; a huge output before it
    would abort XLA (sizes past 2**63) or exhaust memory."""
    text = "model m {\n  input x: (4,)\n  repeat_vector(100000000000)\n  normalization(axis=1)\n}\n"
    with within(60), pytest.raises(SpecError) as info, shapes_only():
        build(specc.loads(text, "huge.model").plan)
    d = info.value.diagnostics[0]
    assert "outputs 400,000,000,000 values per example" in d.message and (d.span.line, d.span.col) == (3, 3)


@needs_param_cap
def test_the_longest_chain_builds_with_the_default_recursion_limit():
    """Keras maps a functional graph recursively; a chain of `MAX_LAYERS` layers still builds."""
    text = HEAD + f"  repeat {MAX_LAYERS} {{ dense(1) }}\n}}\n"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        with shapes_only():
            model = build(specc.loads(text).plan).model
    finally:
        sys.setrecursionlimit(limit)
    assert len(model.layers) == MAX_LAYERS + 1
