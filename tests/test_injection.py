"""Names from files land escaped; model files are checked before Keras reads them (issue 14, items 4, 7, 10).

A spec's file name, a layer's `name=` string, a Keras model's or layer's name and a `.keras` file's own name
are the files' content: in the Python `specc emit` writes, the spec `specc import` and `specc fmt` write,
the Mermaid and DOT `specc graph` draws and the text `specc diff` prints, each stays one inert piece of text
(no new line, no statement, no section, nothing a terminal obeys). A `.keras` (a zip) or `.h5` file is
checked from what it declares (member sizes and count, compression ratio, config nesting) before anything
is decompressed or parsed: a truncated, foreign or bomb file is a `DataError` naming the file and the member,
through every loader (`specc.runtime.model_files.load_model`, `specc.runtime.model_files.open_model`, `specc.tools.importer.import_file`,
`init { from: ... }`).
"""

from __future__ import annotations

import ast
import json
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

import specc
from specc.cli import main
from specc.core.errors import DataError
from specc.runtime.keras_env import import_keras
from specc.lang.syntax import parse_text

keras = import_keras()

#: Every character Python's tokenizer or `str.splitlines` takes for a line break, and the ones that break out
#: of a string or a comment some other way.
BREAKS = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
#: What follows a break: Python code, and a spec section, that must never run or be read as such.
PAYLOAD = "import os; open(os.environ['SPECC_INJECTED'], 'w')#"
SPEC = "model m {\n  input x: (4,)\n  dense(3, activation=relu)\n  dense(2)\n}\ntrain {\n  loss: mse\n  optimizer: sgd\n}\n"


def _printable(text: str) -> bool:
    """One line per `\\n`, and nothing a terminal obeys or a parser takes for a line break."""
    return all(c.isprintable() or c == "\n" for c in text)


# --- specc emit -------------------------------------------------------------------------------------


def _hostile_file_names() -> list[str]:
    names = [f"a{b}{PAYLOAD}" for b in BREAKS]
    names += ['q"""+open(__import__("os").environ["SPECC_INJECTED"],"w").name+"""',  # closes the docstring
              'back\\', 'x"', "esc\x1b[2J\x1b]0;title\x07", "nul\x01\x7f"]
    return names


def test_emit_file_name_is_never_code(tmp_path, monkeypatch):
    """The spec's file name (any bytes but `/`) lands in a comment and the docstring: the file compiles to the
    expected statements only, and running it as a module runs nothing else."""
    marker = tmp_path / "injected"
    monkeypatch.setenv("SPECC_INJECTED", str(marker))
    from specc.tools.emit import emit_python

    tried = 0
    for k, name in enumerate(_hostile_file_names()):
        folder = tmp_path / f"d{k}"
        folder.mkdir()
        path = folder / f"{name}.model"
        path.write_text(SPEC, encoding="utf-8")
        plan = specc.load(path).plan
        for train in (False, True):
            text = emit_python(plan, train=train)
            assert all(c.isprintable() or c == "\n" for c in text.split('"""', 2)[0] + text.split('"""', 2)[1]), name
            tree = ast.parse(text)
            kinds = [type(s).__name__ for s in tree.body]
            want = ["Expr", "Import", "Expr", "Import", "FunctionDef"] + (["FunctionDef"] * 3 if train else []) + ["If"]
            assert kinds == want, (name, kinds)
            assert ast.get_docstring(tree).endswith(f"from {name}.model."), name  # the name, as it is
            module = types.ModuleType("emitted")
            exec(compile(tree, "emitted.py", "exec"), module.__dict__)  # noqa: S102 - the test's own output
            assert not marker.exists(), name
            tried += 1
    assert tried == 2 * len(_hostile_file_names())


def test_emit_layer_names_become_distinct_python_names(tmp_path):
    """`name=` strings that are not Python identifiers, or collide once made into one, keep the wiring."""
    spec = tmp_path / "names.model"
    spec.write_text('model m {\n  input x: (4,)\n  p = x -> dense(4, name="a-b")\n  q = x -> dense(4, name="a_b")\n'
                    '  r = x -> dense(4, name="²")\n  s = x -> dense(4, name="class")\n'
                    '  [p, q, r, s] -> add(name="build_model")\n}\n', encoding="utf-8")
    from specc.tools.emit import emit_python

    plan = specc.load(spec).plan
    text = emit_python(plan)
    namespace: dict = {}
    exec(compile(text, "emitted.py", "exec"), namespace)  # noqa: S102
    ours, theirs = specc.load(spec).build_model(), namespace["build_model"]()
    for layer in theirs.layers:
        if layer.weights:
            layer.set_weights([np.full(w.shape, 1 + len(layer.name) + ord(layer.name[-1]) % 7, "float32")
                               for w in layer.weights])
            ours.get_layer(layer.name).set_weights(layer.get_weights())
    x = np.arange(8, dtype="float32").reshape(2, 4)
    np.testing.assert_allclose(theirs.predict(x, verbose=0), ours.predict(x, verbose=0), rtol=1e-6)


# --- specc import -------------------------------------------------------------------------------------


HOSTILE_NAMES = [f"n{b}}}\ninit {{\n  from: \"x.keras\"\n}}\ndata {{\n  source: \"x.csv\"\n}}\n#" for b in BREAKS] + [
    'q"uote', "back\\slash", "hash # not a comment", "brace } model evil {", "esc\x1b[31mred\x1b[0m",
    "bell\x07", "tab\there", "<b>&amp;<\\b>", "[br]{ce}|pipe`tick", "del\x7f", "sep\u2028\u2029", "nel\x85",
]


def _two_layers(name: str, nested: str):
    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(3, name=name)(inputs)
    inner_in = keras.Input((3,))
    inner = keras.Model(inner_in, keras.layers.Dense(2, name=f"{name}2")(inner_in), name=nested)
    return keras.Model(inputs, inner(hidden), name="top")


def test_import_writes_names_from_the_model_as_strings_never_as_spec(tmp_path):
    """Layer and (nested) model names end as spec strings and one-line comments: the imported spec parses
    to one model and nothing else and checks, each layer keeping its name, or its printable characters where
    the name holds others (the checker refuses those)."""
    from specc.core.errors import printable
    from specc.tools.importer import import_model

    for k, name in enumerate(HOSTILE_NAMES):
        text = import_model(_two_layers(name, f"sub{name}"), name=None)
        assert _printable(text), repr(name)
        spec = parse_text(text)
        assert len(spec.models) == 1 and not spec.sections and not spec.blocks and not spec.lets, repr(name)
        plan = specc.loads(text).plan
        kept = "".join(c for c in name if printable(c, lines=False) == c).strip()
        assert [n.name for n in plan.layers] == [kept, f"{kept}2"], repr(name)
        assert (kept == name) == ("renamed" not in text), repr(name)


def test_import_file_name_lands_as_a_comment(tmp_path):
    """The `.keras` file's own name is quoted in the spec's first comment: one line whatever it holds."""
    from specc.tools.importer import import_file

    model = _two_layers("dense_a", "plain")
    for k, b in enumerate(BREAKS):
        folder = tmp_path / f"d{k}"
        folder.mkdir()
        path = folder / f"m{b}init {{ from: \"x.keras\" }}{b}.keras"
        model.save(path)
        text = import_file(path)
        assert _printable(text), repr(b)
        spec = parse_text(text)
        assert not spec.sections and len(spec.models) == 1, repr(b)


# --- specc fmt, graph, diff -------------------------------------------------------------------------------

#: Names a spec may give (no control characters: the checker refuses those) with every markup character.
MARKUP = '<&>[]{}|`#;%"\\ é'
ESCAPED = (f'model m {{\n  input x: (4,)\n  dense(3, name="{MARKUP[:12]}\\"")\n  dense(2, name="{MARKUP[:12]}\\\\ é")\n}}\n')
LAYER_NAMES = [MARKUP[:12] + '"', MARKUP[:12] + "\\ é"]
#: Strings a spec may hold elsewhere, written with escapes.
STRINGS = 'let s = ["a\\nb\\x1b[31m", "\\u2028\\u2029\\x85\\x7f", "\\ud800\\x00", "\\"\\\\\\t\\r\\x0b\\x0c"]\n'


def test_fmt_writes_strings_with_escapes(tmp_path, capsys):
    from specc.lang.fmt import format_text

    out = format_text(STRINGS + ESCAPED)
    assert _printable(out) and parse_text(out) == parse_text(STRINGS + ESCAPED), out
    assert parse_text(out).lets[0].value.items[2].value == "\ud800\x00"
    assert [n.name for n in specc.loads(format_text(ESCAPED)).plan.layers] == LAYER_NAMES
    # A file name in what `specc fmt --check/--diff` prints: one line, no escape sequence.
    path = tmp_path / "bad\x1b[2J\nname.model"
    path.write_text(ESCAPED.replace("(4,)", "( 4, )"), encoding="utf-8")
    assert main(["fmt", "--diff", str(path)]) == 1
    captured = capsys.readouterr()
    assert _printable(captured.out) and _printable(captured.err), captured
    assert captured.err.count("\n") == 1 and "\\x1b[2J\\x0aname.model" in captured.err


def _check_drawings(graph) -> tuple[str, str]:
    from specc.tools.graph import emit_dot, emit_mermaid

    mermaid, dot = emit_mermaid(graph), emit_dot(graph)
    for text in (mermaid, dot):
        assert _printable(text), text
    nodes = [line for line in mermaid.splitlines() if line.startswith("  n") and "-->" not in line]
    assert len(nodes) == len(graph.nodes) and all(line.count('"') == 2 for line in nodes), mermaid
    for name in (n.name for n in graph.nodes if not n.is_input):
        assert f"<B>{name}</B>" not in dot  # markup in a name is text, not markup
    import shutil
    import subprocess

    if shutil.which("dot"):
        done = subprocess.run(["dot", "-Tsvg"], input=dot.encode(), capture_output=True, check=False)
        assert done.returncode == 0, done.stderr
        import xml.dom.minidom

        xml.dom.minidom.parseString(done.stdout)
    return mermaid, dot


def test_graph_labels_are_escaped_for_mermaid_and_dot():
    """Names of a spec with every markup character; and, drawn from a graph made by hand, names holding line
    breaks and escape sequences (the checker refuses those in specs, the drawing does not rely on it)."""
    from specc.tools.graph import Graph, GraphNode, graph_plan

    _check_drawings(graph_plan(specc.loads(ESCAPED).plan))
    nodes = [GraphNode("n_x", "x", "Input", [None, 4], 0, 2)]
    names = [f"n{b}\x1b[31m{MARKUP}\ud800" for b in BREAKS]
    nodes += [GraphNode(f"n{k}", name, "Dense\n<i>", [None, 2], 10, 3, notes=[f"in block `{name}`"], output=k == 0)
              for k, name in enumerate(names)]
    edges = [("x", name) for name in names]
    mermaid, dot = _check_drawings(Graph("g\n}\ndigraph", nodes, edges, 10 * len(names)))
    assert mermaid.count("\n") == 2 + len(nodes) + len(edges) + 3 + 2  # header, nodes, edges, classDef, class
    assert "<i>" not in dot and "&lt;i&gt;" in dot


def test_diff_prints_names_one_line_each(tmp_path, capsys):
    a = tmp_path / "a\x1b[2J\n+ forged.model"
    b = tmp_path / "b.model"
    a.write_text(ESCAPED, encoding="utf-8")
    b.write_text(ESCAPED.replace("dense(2,", "dense(5,"), encoding="utf-8")
    assert main(["diff", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert _printable(out) and "\n+ forged" not in out and "\\x1b[2J\\x0a+ forged" in out, out


# --- model files ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("models")
    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(keras.layers.Dense(3, name="hid")(inputs)))
    model.save(folder / "good.keras")
    return folder / "good.keras"


def _zip(path: Path, members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", method) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _bad_files(saved: Path, folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what its error must say)."""
    good = saved.read_bytes()
    with zipfile.ZipFile(saved) as z:
        members = {n: z.read(n) for n in z.namelist()}
    config = json.loads(members["config.json"])
    out: dict[str, tuple[Path, str]] = {}
    for cut in (0, 10, 100, len(good) // 2, len(good) - 1, len(good) - 22):
        out[f"truncated at {cut}"] = ((folder / f"cut{cut}.keras"), "not a valid .keras file")
        out[f"truncated at {cut}"][0].write_bytes(good[:cut])
    out["text"] = (folder / "text.keras", "not a valid .keras file")
    out["text"][0].write_text("model m { }\n")
    out["png"] = (folder / "png.keras", "not a valid .keras file")
    out["png"][0].write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    out["no config"] = (_zip(folder / "noconfig.keras", {"metadata.json": b"{}"}), "has no config.json")
    out["config bomb"] = (_zip(folder / "bomb.keras", {**members, "config.json": bytes(65 * 2**20)}), "`config.json`")
    out["metadata bomb"] = (_zip(folder / "meta.keras", {**members, "metadata.json": bytes(2 * 2**20)}), "`metadata.json`")
    out["weights bomb"] = (_zip(folder / "weights.keras", {**members, "model.weights.h5": bytes(70 * 2**20)}),
                           "`model.weights.h5`")
    out["members"] = (_zip(folder / "many.keras", {**members, **{f"assets/{i}": b"" for i in range(1_001)}},
                           zipfile.ZIP_STORED), "1,004 members")
    out["deep list"] = (_zip(folder / "deep.keras", {**members, "config.json": b"[" * 200_000 + b"]" * 200_000},
                             zipfile.ZIP_STORED),  # stored: deflated, it is refused as a bomb first
                        "`config.json` nests")
    nested: dict = {"class_name": "Dense", "config": {}}
    for _ in range(150):
        nested = {"class_name": "Dense", "config": {"kernel_initializer": nested}}
    out["deep config"] = (_zip(folder / "deep2.keras", {**members, "config.json": json.dumps(
        {**config, "deep": nested}).encode()}), "`config.json` nests more than 100")
    out["list config"] = (_zip(folder / "list.keras", {**members, "config.json": b"[1, 2]"}), "JSON list")
    out["not json"] = (_zip(folder / "notjson.keras", {**members, "config.json": b"{\"a\": "}), "is not JSON")
    out["not utf-8"] = (_zip(folder / "latin.keras", {**members, "config.json": b"{\"\xff\": 1}"}), "is not JSON")
    return out


def test_bad_model_files_are_data_errors_in_every_loader(saved, tmp_path):
    """Truncated, foreign, bomb and deeply nested `.keras` files: a `DataError` naming the file (and the
    member) from each loader, before Keras or `json` reads the content; the good file still loads."""
    from specc.runtime.model_files import load_model, open_model
    from specc.tools.importer import import_file

    assert load_model(saved).count_params() == 4 * 3 + 3 + 3 * 2 + 2
    bad = _bad_files(saved, tmp_path)
    for what, (path, says) in bad.items():
        for loader in (load_model, open_model, import_file):
            with pytest.raises(DataError) as caught:
                loader(path)
            rendered = caught.value.render()
            assert rendered.startswith(f"{path}: error: ") and says in rendered, (what, loader.__name__, rendered)
            assert rendered.count(": error: ") == 1, rendered  # one diagnostic, not one nested in another
    assert len(bad) == 18
    (tmp_path / "dir.keras").mkdir()
    for loader in (load_model, open_model):
        with pytest.raises(DataError, match="not a regular file"):
            loader(tmp_path / "dir.keras")


def test_bad_model_file_in_init_is_located_at_the_spec(saved, tmp_path):
    from specc.compile.build import build_model
    from specc.train.runner import apply_init

    cut = tmp_path / "cut.keras"
    cut.write_bytes(saved.read_bytes()[:300])
    spec = tmp_path / "init.model"
    spec.write_text("model m {\n  input x: (4,)\n  dense(3, name=\"hid\")\n}\ninit {\n  from: \"cut.keras\"\n}\n")
    plan = specc.load(spec).plan
    with pytest.raises(DataError) as caught:
        apply_init(plan, build_model(plan))
    d = caught.value.diagnostics[0]
    assert d.span.line == 6 and "not a valid .keras file" in d.message and ": error:" not in d.message, d.render()


def test_truncated_h5_and_cli_exit_codes(saved, tmp_path, capsys):
    from specc.runtime.model_files import load_model

    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(tmp_path / "m.h5")
    assert load_model(tmp_path / "m.h5").count_params() == 10
    data = (tmp_path / "m.h5").read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) // 3])
    with pytest.raises(DataError, match="not a valid HDF5 file"):
        load_model(tmp_path / "cut.h5")
    cut = tmp_path / "cut.keras"
    cut.write_bytes(saved.read_bytes()[:-30])
    deep = _zip(tmp_path / "deep.keras", {"config.json": b"{\"a\":" * 50_000 + b"1" + b"}" * 50_000},
                zipfile.ZIP_STORED)
    for path, says in ((cut, "not a valid .keras file"), (deep, "nests a thousand or more levels")):
        assert main(["import", str(path)]) == 3
        err = capsys.readouterr().err
        assert says in err and str(path) in err and "Traceback" not in err, err


# --- review of issue 14: JSON bombs, encrypted members, names a spec refuses, git diff of huge files ------------


def _patch_member(path: Path, name: str, flags: int = 0, method: int | None = None) -> Path:
    """Set flag bits (1: encrypted) or the compression method of one member, in its local and central headers."""
    import struct

    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        local = z.getinfo(name).header_offset
    central = data.index(b"PK\x01\x02")  # the first central header; then the one naming `name`
    while data[central + 46:central + 46 + len(name)] != name.encode():
        central = data.index(b"PK\x01\x02", central + 4)
    for at in (local + 6, central + 8):  # flags, then method: 2 bytes each
        old_flags, old_method = struct.unpack_from("<HH", data, at)
        struct.pack_into("<HH", data, at, old_flags | flags, old_method if method is None else method)
    path.write_bytes(bytes(data))
    return path


def test_small_keras_files_with_large_json_are_refused_quickly(saved, tmp_path):
    """config.json that expands past 200x over 64 KiB (`{},` shrinks ~1,000x; real configs deflate 60-80x), that
    declares more than 16 MiB, that holds over a million JSON values, or a Sequential model Keras would rebuild
    at each of its layers: refused from the directory or the bytes, in well under a second each."""
    import time

    from specc.runtime.model_files import MAX_CONFIG_VALUES, MAX_SEQUENTIAL_LAYERS, check_model_file

    with zipfile.ZipFile(saved) as z:
        members = {n: z.read(n) for n in z.namelist()}
    dense = {"module": "keras.layers", "class_name": "Dense", "config": {"units": 1}}
    seq = {"module": "keras", "class_name": "Sequential", "config": {"layers": [dense] * (MAX_SEQUENTIAL_LAYERS + 1)}}
    cases = {
        "dicts": (b'{"a":[' + b"{}," * 1_000_000 + b'{}]}', zipfile.ZIP_DEFLATED, "decompression bomb"),
        "nested": (b'{"a":[' + b'{"b":[{},{}]},' * 200_000 + b'{}]}', zipfile.ZIP_DEFLATED, "decompression bomb"),
        "large": (b'{"a":"' + b" " * (17 * 2**20) + b'"}', zipfile.ZIP_DEFLATED, "more than the 16 MiB"),
        "values": (b'{"a":[' + b"1," * MAX_CONFIG_VALUES + b'1]}', zipfile.ZIP_STORED, "JSON values"),
        "sequential": (json.dumps(seq).encode(), zipfile.ZIP_STORED, "Sequential model of 301 layers"),
        "metadata": (members["config.json"], zipfile.ZIP_DEFLATED, "`metadata.json`"),
    }
    for what, (config, method, says) in cases.items():
        extra = {"metadata.json": b"[" + b"{}," * 300_000 + b"{}]"} if what == "metadata" else {}
        path = _zip(tmp_path / f"{what}.keras", {**members, "config.json": config, **extra}, method)
        assert path.stat().st_size < 3 * 2**20, (what, path.stat().st_size)
        start = time.perf_counter()
        with pytest.raises(DataError) as caught:
            check_model_file(path)
        assert time.perf_counter() - start < 1.0, what
        rendered = caught.value.render()
        assert rendered.startswith(f"{path}: error: ") and says in rendered, (what, rendered)
    assert check_model_file(saved)["class_name"] == "Functional"  # a real file passes


def test_encrypted_or_unreadable_zip_members_are_data_errors(saved, tmp_path, capsys):
    """A member flagged encrypted (zipfile: RuntimeError, password required) or compressed by a method Python
    cannot read (NotImplementedError): a DataError naming the member in every loader, exit 3 in import."""
    from specc.runtime.model_files import load_model, open_model
    from specc.tools.importer import import_file

    cases = {}
    for member in ("config.json", "model.weights.h5"):
        stored = _zip(tmp_path / f"enc_{member}.keras", {n: zipfile.ZipFile(saved).read(n)
                                                          for n in zipfile.ZipFile(saved).namelist()}, zipfile.ZIP_STORED)
        cases[stored] = (_patch_member(stored, member, flags=1), f"`{member}` of the archive is encrypted")
    odd = _zip(tmp_path / "m99.keras", {n: zipfile.ZipFile(saved).read(n) for n in zipfile.ZipFile(saved).namelist()},
               zipfile.ZIP_STORED)
    cases[odd] = (_patch_member(odd, "config.json", method=99), "compression method 99")
    for path, (_, says) in cases.items():
        for loader in (load_model, open_model, import_file):
            with pytest.raises(DataError) as caught:
                loader(path)
            rendered = caught.value.render()
            assert rendered.startswith(f"{path}: error: ") and says in rendered, (loader.__name__, rendered)
    assert main(["import", str(odd)]) == 3
    assert "compression method 99" in capsys.readouterr().err


def test_import_renames_layers_whose_names_a_spec_refuses():
    """Layer names with control characters (a spec's checker refuses them) are renamed to their printable
    characters, made unique, or to an automatic name when none is left; a comment says so and that `init` by
    name will not match; the imported spec checks."""
    from specc.tools.importer import import_model

    inputs = keras.Input((4,), name="x")
    h = keras.layers.Dense(3, name="d\n}\ndata { x: [1] }\x1b]0;pwn\x07")(inputs)
    h = keras.layers.Dense(3, name="\x07\x1b")(h)
    h = keras.layers.Dense(3, name="keep")(h)
    h = keras.layers.Dense(2, name="ke\x00ep")(h)  # its printable characters are another layer's name
    text = import_model(keras.Model(inputs, h, name="top"))
    assert _printable(text), text
    plan = specc.loads(text).plan  # checks: no SpecError
    names = [n.name for n in plan.layers]
    assert names[0] == "d}data { x: [1] }]0;pwn" and names[2] == "keep" and names[3] == "keep_1", names
    assert names[1] not in ("", "\x07\x1b") and printable_name(names[1]), names
    comments = [line for line in text.splitlines() if line.startswith("#") and ("renamed" in line or "automatic" in line)]
    assert len(comments) == 3 and all("`init`" in c for c in comments), text
    assert "\\x1b]0;pwn\\x07" in comments[0], comments


def printable_name(name: str) -> bool:
    from specc.core.errors import printable

    return bool(name) and printable(name, lines=False) == name


def test_git_diff_driver_reads_specs_within_the_limit(tmp_path, capsys):
    """As git's external diff driver, a file past the spec size limit or not UTF-8 text gets one line naming it,
    not a text diff of all of it; two specs still diff."""
    small = tmp_path / "small.model"
    small.write_text(SPEC)
    big = tmp_path / "big.model"
    big.write_bytes(b"# " + b"x" * (5 * 2**20) + b"\n")
    binary = tmp_path / "bin.model"
    binary.write_bytes(bytes(range(256)) * 100)
    for other, says in ((big, "too large"), (binary, "not UTF-8")):
        assert main(["diff", "m.model", str(small), "a" * 40, "100644", str(other), "b" * 40, "100644"]) == 0
        out = capsys.readouterr().out
        assert out.count("\n") == 1 and len(out) < 500 and "b/m.model" in out and _printable(out), out[:600]
        assert says in out, out
    assert main(["diff", "m.model", str(small), "a" * 40, "100644", str(small), "b" * 40, "100644"]) == 0
    assert capsys.readouterr().out
