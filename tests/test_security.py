"""A spec cannot run code, and reads only the files it names.

- No `eval`, `exec`, `__import__`, `importlib`, pickle or subprocess on anything a spec says (a review
  of specc's source, below, with each remaining use explained), and no custom Python layers: layers
  that wrap code are refused where they are named. There is no opt-in for custom layers.
- Strings are only strings, whatever they look like.
- `.npz` files are read without unpickling; `.keras` files (`init`, `specc import`,
  `specc.runtime.model_files.load_model`) are loaded in Keras's safe mode: a Lambda layer in one is refused and
  never runs.
- Paths in a spec are relative to the spec's folder; absolute paths and `..` are allowed (a spec in
  `specs/` reads `../ml-100k/u.data`), so a spec from elsewhere deserves a look at its paths. A file
  that is not data ends in a data error that quotes at most a short excerpt of it.
"""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import numpy as np
import pytest

import specc
from specc.core.errors import DataError, SpecError, UsageError

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted((ROOT / "specc").rglob("*.py"))
HEAD = "model m {\n  input x: (4,)\n"

# --- a review of the source -----------------------------------------------------------------------------

# Names that run, import or unpickle code. Every use in specc is listed here with why it is safe; a new
# one fails the test until someone has looked at it and added it.
DANGEROUS = {"eval", "exec", "compile", "__import__", "importlib", "import_module", "pickle", "cPickle", "dill",
             "cloudpickle", "marshal", "shelve", "subprocess", "system", "popen", "Popen", "literal_eval", "runpy",
             "execfile", "enable_unsafe_deserialization", "load_source", "exec_module"}
ALLOWED = {
    ("syntax.py", "importlib"): "`importlib.resources` reads the grammar file shipped with specc",
    ("syntax.py", "literal_eval"): "decodes the escapes of a STRING token; the grammar lets only a quoted string "
                                   "through, and literal_eval evaluates literals, never code",
    ("emit.py", "compile"): "compiles the generated Python to check its syntax; never executes it",
    ("graph.py", "subprocess"): "runs Graphviz `dot` with a fixed argument list (no shell); the graph goes to its stdin",
    ("tune.py", "subprocess"): "`workers: N` starts N - 1 copies of `python -m specc tune` on the spec's own path with "
                               "a fixed argument list (no shell); the storage URL goes through the environment",
    ("tune.py", "Popen"): "the same worker processes (`subprocess.Popen`, a list of arguments, no shell)",
    ("tune.py", "importlib"): "`importlib.util.find_spec` asks which PostgreSQL driver is installed; it imports nothing",
    ("export_onnx.py", "importlib"): "`importlib.util.find_spec` asks whether jax2onnx, onnx and onnxruntime are "
                                     "installed (it imports nothing) and `importlib.metadata` reads their versions",
}


BUILTINS = {"eval", "exec", "compile"}  # as methods (`model.compile`, `layer.eval`) they are something else


def _names(path: Path) -> set[str]:
    """The identifiers of a Python file, comments and strings left out; `eval`, `exec` and `compile` only
    where the builtins are called (not `model.compile(...)`, nor an argument named `compile`)."""
    toks = [t for t in tokenize.generate_tokens(io.StringIO(path.read_text(encoding="utf-8")).readline)
            if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT, tokenize.INDENT, tokenize.DEDENT)]
    names = set()
    for i, tok in enumerate(toks):
        if tok.type != tokenize.NAME:
            continue
        if tok.string in BUILTINS:
            before = toks[i - 1].string if i else ""
            after = toks[i + 1].string if i + 1 < len(toks) else ""
            if before in (".", "def") or after != "(":
                continue
        names.add(tok.string)
    return names


def test_specc_source_runs_no_code_from_specs():
    found = {(p.name, name) for p in SOURCES for name in _names(p) & DANGEROUS}
    unexplained = sorted(found - set(ALLOWED))
    assert not unexplained, ("code that runs, imports or unpickles: review it, and add it to ALLOWED with the "
                             f"reason it cannot run what a spec says: {unexplained}")


def test_data_and_models_are_loaded_safely():
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"allow_pickle\s*=\s*True", text), path
        assert not re.search(r"safe_mode\s*=\s*False", text), path
        for call in re.finditer(r"\bnp\.load\(", text):  # every np.load refuses pickles
            args = text[call.end(): text.find("\n", call.end())]
            assert "allow_pickle=False" in args, f"{path.name}: {args}"


# --- layers that wrap code -------------------------------------------------------------------------------

CODE_LAYERS = ["lambda(x)", "Lambda(x)", "lambda", "jax_layer(x)", "flax_layer(x)", "torch_module_wrapper(x)",
               "tfsm_layer(\"saved_model\")", "layer"]


@pytest.mark.parametrize("layer", CODE_LAYERS)
def test_layers_that_wrap_code_are_refused_where_named(layer):
    text = HEAD + f"  dense(4)\n  {layer}\n}}\n"
    with pytest.raises(SpecError) as info:
        specc.loads(text, "code.model")
    d = info.value.diagnostics[0]
    assert "cannot be used in a spec" in d.message and (d.span.line, d.span.col) == (4, 3), d.render()


@pytest.mark.parametrize("wrapper", ["bidirectional(lambda(x))", "time_distributed(layer=jax_layer(x))",
                                     "bidirectional(lstm(4), backward_layer=lambda)"])
def test_code_layers_inside_wrappers_are_refused(wrapper):
    text = "model m {\n  input x: (5, 4)\n  " + wrapper + "\n}\n"
    with pytest.raises(SpecError) as info:
        specc.loads(text, "code.model")
    d = info.value.diagnostics[0]
    assert "cannot be used in a spec" in d.message and d.span.line == 3, d.render()


def test_strings_that_look_like_code_are_only_strings(tmp_path):
    from specc.compile.build import build_model

    marker = tmp_path / "ran"
    code = f"__import__('os').system('touch {marker}')"
    plan = specc.loads(HEAD + f'  dense(1, name="{code}")\n}}\n', "strings.model").plan
    assert plan.layers[0].name == code
    for text in (HEAD + "  dense(1)\n}\n" + f'data {{\n  dataset: "{code}"\n}}\n',
                 HEAD + f'  dense(1, activation="{code}")\n}}\n',
                 HEAD + "  dense(1)\n}\n" + 'train {\n  loss: "eval(\'1\')"\n}\n'):
        with pytest.raises(SpecError):
            build_model(specc.loads(text, "strings.model").plan)
    assert not marker.exists()
    escaped = specc.loads(HEAD + '  dense(1, name="\\x41\\u00e9\\N{GREEK SMALL LETTER ALPHA}")\n}\n').plan
    assert escaped.layers[0].name == "A\u00e9\u03b1"  # escapes decode; nothing else happens


def test_layers_cannot_read_files_outside_data(tmp_path):
    """Keras's lookup layers take a vocabulary file; a spec may not read files that way (here they need
    TensorFlow, absent, and are refused; if TensorFlow is ever installed, this test says to refuse paths)."""
    from specc.compile.build import build_model

    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-TOKEN\n")
    for layer in ("string_lookup", "integer_lookup", "text_vectorization"):
        text = HEAD + f'  {layer}(vocabulary="{secret}")\n}}\n'
        with pytest.raises(SpecError) as info:
            build_model(specc.loads(text, "vocab.model").plan)
        assert "TOP-SECRET" not in info.value.render()


# --- files that hold code ----------------------------------------------------------------------------


class _Trap:
    """Unpickling it would create a file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_npz_with_pickled_objects_is_a_data_error_not_code(tmp_path):
    from specc.data.prepare import load_dataset

    marker = tmp_path / "unpickled"
    np.savez(tmp_path / "evil.npz", x=np.array([_Trap(marker)] * 4, dtype=object), y=np.arange(4.0))
    (tmp_path / "evil.model").write_text(HEAD + "  dense(1)\n}\ndata {\n  file: \"evil.npz\"\n}\n")
    plan = specc.load(tmp_path / "evil.model").plan
    with pytest.raises(DataError) as info:
        load_dataset(plan)
    d = info.value.diagnostics[0]
    assert "cannot read" in d.message and "allow_pickle=False" in d.message and d.span.line == 6, d.render()
    assert not marker.exists()


@pytest.fixture(scope="module")
def lambda_model(tmp_path_factory):
    """A `.keras` file with a Lambda layer that would leave a file behind if it ever ran."""
    import keras

    folder = tmp_path_factory.mktemp("keras")
    marker = str(folder / "lambda_ran")
    inputs = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(4, name="dense")(inputs)
    outputs = keras.layers.Lambda(lambda t: (open(marker, "w").close(), t * 2)[1], name="code")(hidden)
    path = folder / "evil.keras"
    keras.Model(inputs, outputs).save(path)
    Path(marker).unlink()  # building it above ran the lambda once
    return path, Path(marker)


def test_keras_file_with_code_is_refused_by_load_model(lambda_model):
    from specc.runtime.model_files import load_model

    path, marker = lambda_model
    with pytest.raises(ValueError, match="safe_mode"):
        load_model(path)
    assert not marker.exists()


def test_keras_file_with_code_is_refused_by_init(lambda_model, tmp_path):
    from specc.compile.build import build_model
    from specc.train.runner import apply_init

    path, marker = lambda_model
    spec = tmp_path / "init.model"
    spec.write_text(HEAD + f"  dense(4)\n}}\ninit {{\n  from: \"{path}\"\n}}\n")
    plan = specc.load(spec).plan
    with pytest.raises(DataError) as info:
        apply_init(plan, build_model(plan))
    d = info.value.diagnostics[0]
    assert "`init` cannot load" in d.message and "Lambda" in d.message and d.span.line == 6, d.render()
    assert not marker.exists()


def test_keras_file_with_code_is_refused_by_import(lambda_model):
    from specc.tools.importer import import_file

    path, marker = lambda_model
    with pytest.raises(UsageError) as info:
        import_file(path)
    assert "Lambda" in info.value.render()
    assert not marker.exists()


def test_keras_file_naming_other_modules_is_refused(tmp_path):
    """A config that names `os.system` as a layer class does not import or call it."""
    import json
    import zipfile

    import keras

    from specc.runtime.model_files import load_model

    inputs = keras.Input((4,))
    keras.Model(inputs, keras.layers.Dense(2, name="d")(inputs)).save(tmp_path / "ok.keras")
    marker = tmp_path / "ran"
    with zipfile.ZipFile(tmp_path / "ok.keras") as z:
        files = {n: z.read(n) for n in z.namelist()}
    config = json.loads(files["config.json"])

    def poison(o):
        if isinstance(o, dict):
            if o.get("class_name") == "Dense":
                o.update(module="os", class_name="system", registered_name=None, config={"command": f"touch {marker}"})
            for v in o.values():
                poison(v)
        elif isinstance(o, list):
            for v in o:
                poison(v)

    poison(config)
    files["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "poisoned.keras", "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    with pytest.raises(Exception):  # noqa: B017 - whatever Keras says, it must not load
        load_model(tmp_path / "poisoned.keras")
    assert not marker.exists()


# --- paths ----------------------------------------------------------------------------------------------


def test_relative_paths_start_at_the_spec_folder_and_may_climb(tmp_path, monkeypatch):
    (tmp_path / "specs").mkdir()
    (tmp_path / "shared").mkdir()
    monkeypatch.chdir(tmp_path / "shared")  # the working directory plays no part
    spec = tmp_path / "specs" / "a.model"
    spec.write_text(HEAD + "  dense(1)\n}\ndata {\n  file: \"data.csv\"\n  features: [a]\n  target: b\n}\n")
    plan = specc.load(spec).plan
    assert plan.path("data.csv") == tmp_path / "specs" / "data.csv"
    assert plan.path("../shared/u.data").resolve() == (tmp_path / "shared" / "u.data")
    assert plan.path("/srv/data/u.data") == Path("/srv/data/u.data")  # absolute: as written
    inline = specc.loads(HEAD + "  dense(1)\n}\n").plan  # text without a file: the working directory
    assert inline.path("data.csv") == tmp_path / "shared" / "data.csv"
    movielens = specc.load(ROOT / "specs" / "movielens.model").plan
    assert movielens.path(movielens.data.file).resolve() == (ROOT / "ml-100k" / "u.data").resolve()


def test_a_file_that_is_not_data_is_refused_before_reading():
    with pytest.raises(SpecError) as info:
        specc.loads(HEAD + "  dense(1)\n}\ndata {\n  file: \"/etc/passwd\"\n}\n", "passwd.model")
    d = info.value.diagnostics[0]
    assert d.message == "unsupported data file '/etc/passwd'" and (d.span.line, d.span.col) == (6, 9)


@pytest.mark.parametrize("setting", ['file: "SECRET"\n  features: [a]\n  target: b',
                                     'file: "SECRET"\n  columns: [a, b]\n  features: [a]\n  target: b',
                                     'file: "SECRET"\n  features: [user]\n  target: b\n  delimiter: ":"'])
def test_reading_a_secret_as_data_quotes_at_most_an_excerpt(tmp_path, setting):
    from specc.data.prepare import load_dataset

    secret = tmp_path / "elsewhere" / "passwd.csv"  # an absolute path outside the spec's folder
    secret.parent.mkdir()
    lines = [f"user{i}:x:{i}:{i}:SECRET-{i:04d}-{'k' * 60}:/home/user{i}:/bin/sh" for i in range(2000)]
    secret.write_text("\n".join(lines) + "\n")
    (tmp_path / "s.model").write_text(HEAD + "  dense(1)\n}\ndata {\n  " + setting.replace("SECRET", str(secret)) + "\n}\n")
    plan = specc.load(tmp_path / "s.model").plan
    with pytest.raises(DataError) as info:
        load_dataset(plan)
    rendered = info.value.render()
    assert len(rendered) < 1500, rendered
    assert len(set(re.findall(r"SECRET-\d{4}", rendered))) <= 1, rendered


def test_a_spec_cannot_name_where_runs_are_written():
    """A run directory is `runs/NAME-TIMESTAMP` or `--out`: a model's name is a plain identifier."""
    for name in ("../../etc", "a/b", "'x'"):
        with pytest.raises(SpecError):
            specc.loads(f"model {name} {{\n  input x: (4,)\n  dense(1)\n}}\n")
