"""Editor support: the Pygments lexer (specc/lang/highlight.py) and the TextMate grammar (editors/).

Both highlight every spec of the repository (specs/, the ```model blocks of the docs, the fixtures
and the syntactically valid files of tests/errors/): the lexer without `Error` tokens and losing no
character; the grammar, run by the small TextMate engine below (Python `re` stands in for
Oniguruma), closes every region it opens and gives each token the scope matching the lexer's class.
(On this corpus the engine's tokens and scopes equal those of vscode-textmate, VS Code's own engine,
which `editors/check_grammar.cjs` runs by hand; it needs npm.)
"""

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.token import Comment, Error, Keyword, Name, Number, Operator, Punctuation, String

from specc.core.errors import SpecError
from specc.lang.highlight import SpeccLexer
from specc.lang.syntax import parse_text

ROOT = Path(__file__).resolve().parent.parent
GRAMMAR = json.loads((ROOT / "editors" / "specc.tmLanguage.json").read_text())

EDGE = r"""# every corner of the grammar
device: cpu; seed: 3
block b(n, act=relu, shape=(3, 3), k = 2 * 3,) {
  dense(n, activation=act)
}
model {
  input x: (none, 4) float32; input y: (4,)
  a = x -> b(4, \
    act=tanh)
  c = [a, y,] -> concatenate(axis=-1,  # a comment inside parentheses
     ); dense(units=-1 + 2 // 1 % 3,
              name='it\'s')
  repeat 2 { dense(.5e1 * 2 - 5. + 1E+2) }
  parallel concatenate(axis=1) { branch { dense(4) } branch {} }
  output c
}
data { x: [[1.0, 2., 3_000], [1e3, .5, 1_0.0_1]]; y: "a \"q\"\n"}
train {
  loss: mse
  optimizer: sgd(
    learning_rate=piecewise(boundaries=[1, 2], values=[0.1, 0.01, 0.001]),
  )
}
"""


RESNET = """\
block conv_bn(filters, size=3, stride=1) {
  conv2d(filters, size, strides=stride, padding=same, use_bias=false,
         kernel_initializer=he_normal, kernel_regularizer=l2(1e-4))
  batchnorm(momentum=0.9)
}
block residual(filters) {
  parallel add {
    branch { conv_bn(filters); relu; conv_bn(filters) }
    branch {}                        # identity shortcut
  }
}
model cifar10_resnet20 {
  input image: (32, 32, 3)
  repeat 3 { residual(16) }
}
train {
  optimizer: sgd(learning_rate=piecewise(boundaries=[32_000, 48_000], values=[0.1, 0.01, 0.001]), momentum=0.9)
}
"""


def _parses(text: str) -> bool:
    try:
        parse_text(text)
    except SpecError:
        return False
    return True


def _corpus() -> dict[str, str]:
    texts = {"edge": EDGE, "resnet": RESNET}
    for path in sorted((ROOT / "specs").glob("*.model")):
        texts[str(path.relative_to(ROOT))] = path.read_text()
    for path in [*sorted((ROOT / "tests" / "errors").glob("*.model")),
                 *sorted((ROOT / "tests" / "fixtures").rglob("*.model"))]:
        if _parses(path.read_text()):  # most broken specs are wrong only past the syntax
            texts[str(path.relative_to(ROOT))] = path.read_text()
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "editors" / "README.md"]:
        for i, block in enumerate(re.findall(r"^```(?:model|specc)\n(.*?)^```", md.read_text(), re.S | re.M)):
            texts[f"{md.relative_to(ROOT)}#{i + 1}"] = block
    return texts


CORPUS = _corpus()
LEXER = SpeccLexer(stripnl=False, ensurenl=False)


def test_corpus_covers_the_repository():
    assert all(map(_parses, CORPUS.values()))  # the edge cases too
    assert sum(k.startswith("specs/") for k in CORPUS) == len(list((ROOT / "specs").glob("*.model"))) >= 14
    assert sum(k.startswith("docs/") for k in CORPUS) >= 20
    broken = len(list((ROOT / "tests" / "errors").glob("*.model")))
    assert broken / 2 < sum(k.startswith("tests/errors/") for k in CORPUS) < broken  # broken syntax left out


@pytest.mark.parametrize("name", CORPUS)
def test_lexer_round_trips_without_errors(name):
    text = CORPUS[name]
    tokens = list(LEXER.get_tokens(text))
    assert "".join(value for _, value in tokens) == text
    assert [(t, v) for t, v in tokens if t in Error] == []


def _tokens(text):
    return [(t, v) for t, v in LEXER.get_tokens(text) if v.strip()]


def test_lexer_token_classes():
    got = _tokens(EDGE)
    expected = [
        (Comment.Single, "# every corner of the grammar"), (Name.Namespace, "device"), (Name.Namespace, "seed"),
        (Keyword, "block"), (Name.Function, "b"), (Name.Variable, "n"), (Name.Variable, "act"),
        (Name.Variable, "k"), (Keyword, "model"), (Keyword, "input"), (Name.Variable, "x"),
        (Keyword.Constant, "none"), (Keyword.Type, "float32"), (Name.Variable, "a"), (Operator, "->"),
        (Name.Attribute, "act"), (Name.Function, "concatenate"), (Name.Attribute, "axis"),
        (Comment.Single, "# a comment inside parentheses"), (Name.Attribute, "name"), (String.Escape, r"\'"),
        (Keyword, "repeat"), (Number.Float, ".5e1"), (Number.Float, "5."), (Number.Float, "1E+2"),
        (Keyword, "parallel"), (Keyword, "branch"), (Keyword, "output"), (Name.Namespace, "data"),
        (Name.Attribute, "x"), (Number.Integer, "3_000"), (Number.Float, "1_0.0_1"), (String.Escape, r"\""),
        (Name.Namespace, "train"), (Name.Attribute, "loss"), (Name.Function, "piecewise"),
    ]
    for want in expected:
        assert want in got, want
    assert (Name.Function, "b") in got and (Name, "relu") in got  # a default value is not a parameter


def test_lexer_on_a_residual_network():
    tokens = _tokens(RESNET)
    kinds = {v: t for t, v in tokens}
    assert kinds["model"] is Keyword and kinds["block"] is Keyword and kinds["repeat"] is Keyword
    assert kinds["1e-4"] is Number.Float and kinds["32_000"] is Number.Integer
    assert kinds["conv2d"] is Name.Function and kinds["residual"] is Name.Function
    assert kinds["optimizer"] is Name.Attribute and kinds["train"] is Name.Namespace
    assert kinds["# identity shortcut"] is Comment.Single and kinds["he_normal"] is Name
    assert (Name.Variable, "filters") in tokens and (Name.Class, "cifar10_resnet20") in tokens
    string = _tokens('data { file: "a\\"b.csv" }')
    assert string == [(Name.Namespace, "data"), (Punctuation, "{"), (Name.Attribute, "file"), (Punctuation, ":"),
                      (String.Double, '"'), (String.Double, "a"), (String.Escape, '\\"'), (String.Double, "b.csv"),
                      (String.Double, '"'), (Punctuation, "}")]


def test_lexer_marks_what_is_not_specc():
    assert any(t in Error for t, _ in LEXER.get_tokens("model m {\n  dense($)\n}\n"))


def test_html_output():
    html = highlight((ROOT / "specs" / "mnist.model").read_text(), SpeccLexer(), HtmlFormatter())
    assert '<span class="k">model</span>' in html
    assert '<span class="nf">conv2d</span>' in html
    assert '<span class="na">loss</span>' in html
    assert '<span class="c1">' in html and '<span class="err">' not in html


def test_pygments_is_imported_by_the_lexer_only():
    users = [p.name for p in (ROOT / "specc").rglob("*.py")
             if re.search(r"^\s*(import|from)\s+pygments\b", p.read_text(), re.M)]
    assert users == ["highlight.py"]


def test_entry_point_in_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pygments.lexers"]["specc"] == "specc.lang.highlight:SpeccLexer"


def test_entry_point_installed():
    """Passes once pyproject.toml has the entry point and specc is installed (`pip install -e .`) again."""
    from pygments.lexers import get_lexer_by_name, get_lexer_for_filename

    assert type(get_lexer_by_name("specc")) is SpeccLexer
    assert type(get_lexer_by_name("model")) is SpeccLexer
    assert type(get_lexer_for_filename("x.model")) is SpeccLexer


def test_plugin_found_by_pygmentize(tmp_path):
    """`pygmentize -l specc` with the entry point declared in a stand-in distribution."""
    dist = tmp_path / "specc_probe-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: specc-probe\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("[pygments.lexers]\nspecc = specc.lang.highlight:SpeccLexer\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    run = subprocess.run([sys.executable, "-m", "pygments", "-l", "specc", "-f", "html", "specs/mnist.model"],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert '<span class="k">model</span>' in run.stdout and 'class="err"' not in run.stdout
    code = "from pygments.lexers import get_lexer_for_filename as g; print(type(g('x.model')).__name__)"
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "SpeccLexer"


# --- the TextMate grammar and the VS Code extension ----------------------------------------------

def _rules(node):
    """Every rule object in the grammar, nested ones included."""
    if isinstance(node, dict):
        if "match" in node or "begin" in node or "include" in node:
            yield node
        for value in node.values():
            yield from _rules(value)
    elif isinstance(node, list):
        for item in node:
            yield from _rules(item)


def test_grammar_keys_and_scopes():
    assert GRAMMAR["scopeName"] == "source.specc" and GRAMMAR["fileTypes"] == ["model"]
    assert GRAMMAR["name"] and GRAMMAR["patterns"] and GRAMMAR["repository"]
    scopes = set(re.findall(r'"name": "([^"]+)"', json.dumps(GRAMMAR)))
    assert all(s.endswith(".specc") for s in scopes - {"specc"})
    for prefix in ("comment.line.number-sign", "keyword.control", "entity.name.function", "support.function",
                   "constant.numeric", "string.quoted.double", "string.quoted.single", "constant.language",
                   "constant.character.escape", "variable.other", "keyword.operator", "entity.name.section",
                   "meta.block", "support.type.property-name", "variable.parameter"):
        assert any(s.startswith(prefix + ".") for s in scopes), prefix


def test_vscode_extension():
    folder = ROOT / "editors" / "vscode"
    package = json.loads((folder / "package.json").read_text())
    (language,), (grammar,) = package["contributes"]["languages"], package["contributes"]["grammars"]
    assert language["extensions"] == [".model"] and grammar["language"] == language["id"] == "specc"
    assert grammar["scopeName"] == GRAMMAR["scopeName"] and grammar["path"].endswith("/specc.tmLanguage.json")
    config = json.loads((folder / language["configuration"]).read_text())
    assert config["comments"] == {"lineComment": "#"}
    assert config["brackets"] == [["{", "}"], ["(", ")"], ["[", "]"]]
    assert {(p["open"], p["close"]) for p in config["autoClosingPairs"]} >= {("{", "}"), ("(", ")"), ('"', '"')}
    for key in ("increaseIndentPattern", "decreaseIndentPattern"):
        re.compile(config["indentationRules"][key])


def test_grammar_regexes_compile_and_includes_resolve():
    rules = list(_rules(GRAMMAR))
    for rule in rules:
        for key in ("match", "begin", "end"):
            if key in rule:
                re.compile(rule[key])
        if "begin" in rule:
            assert "end" in rule
    included = {r["include"] for r in rules if "include" in r}
    assert included == {f"#{name}" for name in GRAMMAR["repository"]}  # each resolves, none unused


class TextMate:
    """A small TextMate engine: at each point the earliest match among the current region's end and
    its patterns wins (the end on a tie); `begin` opens a region, `end` closes it; includes expand."""

    def __init__(self, grammar):
        self.grammar, self.cache = grammar, {}

    def _flat(self, patterns):
        for p in patterns:
            p = self.grammar["repository"][p["include"][1:]] if "include" in p else p
            yield from ([p] if "match" in p or "begin" in p else self._flat(p["patterns"]))

    def _compiled(self, rule):
        key = id(rule)
        if key not in self.cache:
            self.cache[key] = [(re.compile(p.get("match") or p["begin"]), p) for p in self._flat(rule["patterns"])]
        return self.cache[key]

    def tokenize(self, text):
        """[(line number, text, scopes)] and whether every region opened was closed."""
        stack, out = [(self.grammar, None, ("source.specc",))], []
        for number, line in enumerate(text.split("\n"), 1):
            pos = 0
            while True:
                rule, end, scopes = stack[-1]
                best = None
                for rx, p in ([(end, None)] if end else []) + self._compiled(rule):
                    m = rx.search(line, pos)
                    if m and (best is None or m.start() < best[0].start()):
                        best = (m, p)
                if best is None:
                    break
                m, p = best
                assert p is None or m.end() > m.start(), f"empty match of {p.get('match') or p['begin']!r}"
                if m.start() > pos:
                    out.append((number, line[pos:m.start()], scopes))
                if p is None:
                    self._emit(out, number, m, scopes, rule.get("endCaptures"))
                    stack.pop()
                elif "match" in p:
                    self._emit(out, number, m, scopes + tuple(filter(None, [p.get("name")])), p.get("captures"))
                else:
                    inner = scopes + tuple(filter(None, [p.get("name")]))
                    self._emit(out, number, m, inner, p.get("beginCaptures"))
                    stack.append((p, re.compile(p["end"]), inner))
                pos = m.end()
            if pos < len(line):
                out.append((number, line[pos:], stack[-1][2]))
        return out, len(stack) == 1

    @staticmethod
    def _emit(out, number, m, scopes, captures):
        captures = captures or {}
        if "0" in captures:
            scopes = scopes + (captures["0"]["name"],)
        pos = m.start()
        for group in sorted((int(k) for k in captures if k != "0" and m.group(int(k))), key=m.start):
            if m.start(group) > pos:
                out.append((number, m.string[pos:m.start(group)], scopes))
            out.append((number, m.group(group), scopes + (captures[str(group)]["name"],)))
            pos = m.end(group)
        if m.end() > pos:
            out.append((number, m.string[pos:m.end()], scopes))


ENGINE = TextMate(GRAMMAR)
# the scope a TextMate token must have where the lexer gives a token of this class
SCOPES = [(Comment, "comment.line.number-sign"), (String, "string.quoted"), (Number, "constant.numeric"),
          (Keyword.Constant, "constant.language"), (Keyword.Type, "storage.type"), (Keyword, "keyword.control"),
          (Name.Function, "entity.name.function|support.function"), (Name.Class, "entity.name.type"),
          (Name.Namespace, "entity.name.section"), (Name.Attribute, "support.type.property-name|variable.parameter"),
          (Name.Variable, "variable.other|variable.parameter"), (Operator, "keyword.operator")]


@pytest.mark.parametrize("name", CORPUS)
def test_grammar_agrees_with_the_lexer(name):
    text = CORPUS[name]
    tokens, closed = ENGINE.tokenize(text)
    assert closed, "a region is still open at the end of the file"
    lines = text.split("\n")
    assert ["".join(t for n, t, _ in tokens if n == i) for i in range(1, len(lines) + 1)] == lines
    chars, line = [], 1  # the scopes of each character of the text
    for number, t, scopes in tokens:
        chars += [""] * (number - line)  # the newlines
        chars += [" ".join(scopes)] * len(t)
        line = number
    pos = 0
    for kind, value in LEXER.get_tokens(text):
        if value.strip():
            scope = chars[pos]
            want = next((s for k, s in SCOPES if kind in k), None)
            if want:
                assert re.search(rf"\b({want})\.", scope), (value, kind, scope)
            elif kind is Name:
                assert not re.search(r"\b(keyword|entity|support|constant|variable|storage)\.", scope), (value, scope)
        pos += len(value)
