"""Facts of a spec's data (`specc.data.facts`): equal to what the data stage produces, cached, invalidated."""

import math
import os
from pathlib import Path

import numpy as np
import pytest

import specc
from specc.data import facts as facts_mod
from specc.core.cache import cache_dir
from specc.data.prepare import count_examples, load_dataset, prepare
from specc.core.errors import DataError
from specc.data.facts import FACT_NAMES, infer_facts

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted(p.name for p in (ROOT / "specs").glob("*.model"))
REGRESSION_LOSSES = ("mse", "mae", "mean_squared_error", "mean_absolute_error", "huber")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One cache folder for the specs' tests, so that CIFAR-10 is decoded at most once; a decoded copy in the
    user's cache is linked in (read, never written)."""
    folder = tmp_path_factory.getbasetemp() / "specc-cache"  # shared with the other tests that decode CIFAR-10
    folder.mkdir(exist_ok=True)
    for decoded in cache_dir().glob("cifar10-*.npz"):
        if not (folder / decoded.name).exists():
            (folder / decoded.name).symlink_to(decoded)
    return folder


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("SPECC_CACHE_DIR", str(folder))
    facts_mod.clear_memo()
    return folder


def squeezed(shape) -> list[int]:
    return [s for s in shape if s != 1]


@pytest.mark.parametrize("name", SPECS)
def test_facts_equal_what_the_data_stage_produces(name, shared_cache, monkeypatch, data_dir):
    monkeypatch.setenv("SPECC_CACHE_DIR", str(shared_cache))
    plan = specc.load(ROOT / "specs" / name).plan
    try:
        raw = load_dataset(plan)
        text = plan.data.is_text
        ready = prepare(plan, raw, None if text else 2000)  # the shapes and labels; every text example counts
    except DataError as err:  # data that is not shipped (MovieLens) or a run not made (the fine-tuning's vocabulary)
        with pytest.raises(DataError) as found:
            infer_facts(plan.data, plan.file, plan.init)
        assert found.value.first.message == err.first.message and found.value.first.span == err.first.span
        pytest.skip(f"data not present: {err.first.message}")
    f = infer_facts(plan.data, plan.file, plan.init)
    assert f.examples == count_examples(ready.x_train if text else raw.x_train)
    assert f.test_examples == (None if ready.test_is_train else count_examples(ready.x_test))
    if len(plan.inputs) == 1:
        have = ready.x_train.shape[1:]
        assert squeezed(f.example_shape) == squeezed(have), (f.example_shape, have)
        assert f.features == math.prod(have)
    else:  # the model's inputs choose the columns or arrays: not known from the data section
        assert f.example_shape is None and f.features is None
    if text:
        assert f.vocab_size == ready.vocab.size and f.sequence_length == ready.x_train.shape[1]
    else:
        assert f.vocab_size is None and f.sequence_length is None
        with pytest.raises(ValueError, match="for text data"):
            f.value("vocab_size")
    if f.label_kind == "tokens":
        assert f.classes == ready.vocab.size and plan.data.task != "classify"
    elif f.label_kind == "classes":
        labels = [ready.y_train, ready.y_test]
        assert f.classes == max(int(np.max(y)) for y in labels) + 1
        assert plan.outputs and "crossentropy" in str(plan.train.loss).lower()
    else:
        assert f.label_kind == "real" and f.classes is None
        assert any(loss in str(plan.train.loss).lower() for loss in REGRESSION_LOSSES)
    for fact in FACT_NAMES:  # every fact is there, or says why not
        if getattr(f, fact) is None:
            with pytest.raises(ValueError, match=f"`data.{fact}` is unknown: .+"):
                f.value(fact)
        else:
            assert f.value(fact) == getattr(f, fact)


def write_spec(folder: Path, data: str, inputs: str = "input x: (4,)") -> specc.CompiledSpec:
    path = folder / "t.model"
    path.write_text(f"model t {{\n  {inputs}\n  dense(3, activation=softmax)\n}}\n"
                    f"data {{\n  {data}\n}}\ntrain {{ loss: sparse_categorical_crossentropy; optimizer: adam }}\n")
    return specc.load(path)


def write_npz(path: Path, n: int, classes: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    np.savez(path, x_train=rng.normal(size=(n, 4)).astype(np.float32),
             y_train=(np.arange(n) % classes).astype(np.int64))


def test_cache_memo_json_file_and_corrupt_entry(tmp_path, cache):
    write_npz(tmp_path / "d.npz", 60, 3)
    plan = write_spec(tmp_path, 'file: "d.npz"\n  test_split: 0.25').plan
    before = facts_mod.computed
    first = infer_facts(plan.data, plan.file)
    assert facts_mod.computed == before + 1
    assert (first.examples, first.test_examples, first.classes, first.example_shape) == (45, 15, 3, (4,))
    assert infer_facts(plan.data, plan.file) == first and facts_mod.computed == before + 1  # in memory
    (entry,) = (cache / "facts").glob("*.json")
    facts_mod.clear_memo()
    assert infer_facts(plan.data, plan.file) == first and facts_mod.computed == before + 1  # from the JSON file
    wrong_type = entry.read_text().replace('"classes": 3', '"classes": "3"')
    assert wrong_type != entry.read_text()
    for corrupt in ("{not json", '{"source": 1}', wrong_type):
        entry.write_text(corrupt)
        facts_mod.clear_memo()
        assert infer_facts(plan.data, plan.file) == first
    assert facts_mod.computed == before + 4  # each corrupt entry was recomputed and written again
    assert not [p for p in (cache / "facts").iterdir() if p.suffix != ".json"]  # no temporary file left


def test_a_changed_or_touched_file_is_read_again(tmp_path, cache):
    data = tmp_path / "d.npz"
    write_npz(data, 40, 3)
    plan = write_spec(tmp_path, 'file: "d.npz"').plan
    assert infer_facts(plan.data, plan.file).classes == 3
    write_npz(data, 40, 5)  # the same path and size, new labels
    st = data.stat()
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert infer_facts(plan.data, plan.file).classes == 5
    before = facts_mod.computed
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000))  # touched only
    infer_facts(plan.data, plan.file)
    assert facts_mod.computed == before + 1


def test_an_unwritable_cache_folder_only_costs_time(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("SPECC_CACHE_DIR", str(blocker))
    write_npz(tmp_path / "d.npz", 20, 2)
    plan = write_spec(tmp_path, 'file: "d.npz"').plan
    facts_mod.clear_memo()
    before = facts_mod.computed
    assert infer_facts(plan.data, plan.file).classes == 2
    facts_mod.clear_memo()
    assert infer_facts(plan.data, plan.file).classes == 2 and facts_mod.computed == before + 2


def test_regression_targets_have_no_classes(tmp_path, cache):
    plan = specc.load(ROOT / "specs" / "diabetes_regression.model").plan
    f = infer_facts(plan.data, plan.file)
    assert f.label_kind == "real" and f.classes is None and f.features == len(plan.data.features)
    with pytest.raises(ValueError, match=r"`data.classes` is unknown: .*real numbers \(regression\)"):
        f.value("classes")
    with pytest.raises(KeyError, match="the facts are: data.classes"):
        f.value("labels")


def test_class_labels_in_a_csv(tmp_path, cache):
    """A table's columns are read as numbers: whole numbers 0..N-1 are labels, others are real values."""
    rows = "\n".join(f"{i * 0.5},{i % 3}" for i in range(30))
    (tmp_path / "c.csv").write_text("a,label\n" + rows + "\n")
    plan = write_spec(tmp_path, 'file: "c.csv"\n  features: [a]\n  target: label', "input x: (1,)").plan
    f = infer_facts(plan.data, plan.file)
    assert (f.label_kind, f.classes, f.features) == ("classes", 3, 1)
    for name, targets in (("halves", [i * 0.5 for i in range(30)]), ("counts", list(range(30)))):
        # not labels: fractions, and whole numbers with as many values as examples
        (tmp_path / f"{name}.csv").write_text("a,label\n" + "\n".join(f"{i},{t}" for i, t in enumerate(targets)) + "\n")
        plan = write_spec(tmp_path, f'file: "{name}.csv"\n  features: [a]\n  target: label', "input x: (1,)").plan
        assert infer_facts(plan.data, plan.file).label_kind == "real"


def test_one_hot_labels_and_several_inputs(tmp_path, cache):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "h.npz", x=rng.normal(size=(30, 4)), y=np.eye(4)[np.arange(30) % 4])
    plan = write_spec(tmp_path, 'file: "h.npz"').plan
    assert infer_facts(plan.data, plan.file).classes == 4
    np.savez(tmp_path / "m.npz", a_train=np.zeros((12, 2)), b_train=np.zeros((12, 5)), out_train=np.arange(12) % 3,
             a_test=np.zeros((4, 2)), b_test=np.zeros((4, 5)), out_test=np.arange(4) % 3)
    spec = tmp_path / "m.model"
    spec.write_text("model m {\n  input a: (2,)\n  input b: (5,)\n  out = [a, b] -> concatenate -> dense(3)\n}\n"
                    'data { file: "m.npz" }\ntrain { loss: mse; optimizer: adam }\n')
    plan = specc.load(spec).plan
    f = infer_facts(plan.data, plan.file)
    assert (f.examples, f.test_examples, f.example_shape, f.features) == (12, 4, None, None)
    with pytest.raises(ValueError, match="several inputs"):
        f.value("features")


def test_missing_or_unreadable_data_is_a_located_data_error(tmp_path, cache):
    plan = write_spec(tmp_path, 'file: "absent.npz"').plan
    with pytest.raises(DataError) as err:
        infer_facts(plan.data, plan.file)
    assert "data file not found" in err.value.first.message and err.value.first.span.line == 6
    assert 'file: "absent.npz"' in err.value.render()  # the spec's line, under its location
    (tmp_path / "absent.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="cannot read .* as .npz"):
        infer_facts(plan.data, plan.file)
    assert not (cache / "facts").exists() or not list((cache / "facts").iterdir())  # errors are never cached


def test_offline_facts_never_download(tmp_path, cache, monkeypatch, data_dir):
    """Lint asks for facts offline: a built-in dataset neither in SPECC_DATA_DIR nor in Keras's cache is
    missing (no download is tried); where it is local, offline facts are the same as online ones."""
    plan = specc.loads("model m { input x: (28, 28); flatten; dense(10) }\ndata { dataset: mnist }\n",
                       str(tmp_path / "m.model")).plan
    monkeypatch.setenv("SPECC_DATA_DIR", str(data_dir))
    assert infer_facts(plan.data, plan.file, offline=True) == infer_facts(plan.data, plan.file)
    facts_mod.clear_memo()
    monkeypatch.setenv("SPECC_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(DataError, match="not on this machine") as err:
        infer_facts(plan.data, plan.file, offline=True)
    assert err.value.first.span.line == 2 and not (tmp_path / "keras").exists()
