"""The data-source registry (`specc.data.sources`): one source per suffix, and a source registered here, in a test,
is read by `prepare` and `facts` with no other change (adding a kind of data file touches one module)."""

import json

import numpy as np
import pytest

import specc
from specc.core.errors import InternalError
from specc.core.files import read_json
from specc.data import facts, sources
from specc.data.prepare import load_dataset, prepare
from specc.data.sources import (
    SOURCES,
    ColumnInfo,
    Columns,
    ReadOptions,
    Source,
    register,
    source_for,
)

MODEL = "model m {\n  input x: (2,)\n  dense(1)\n}\n"


def test_every_suffix_maps_to_one_file_source():
    owners: dict[str, list[str]] = {}
    for src in SOURCES.values():
        if not src.folder:
            for suffix in src.suffixes:
                owners.setdefault(suffix, []).append(src.name)
    assert all(len(names) == 1 for names in owners.values()), owners
    for suffix, (name,) in owners.items():
        assert source_for(f"data/train{suffix}", None) is SOURCES[name]
        assert source_for(f"TRAIN{suffix.upper()}", None) is SOURCES[name]  # shell paths: case folded
    # a folder source reads files that a file source reads one by one
    assert all(set(s.suffixes) <= set(owners) for s in SOURCES.values() if s.folder)


def test_what_the_file_setting_accepts_is_what_the_checker_accepted():
    assert sources.accepted_suffixes("file") == (".npz", ".csv", ".tsv", ".data", ".txt")
    assert sources.reads_hint("file") == "specc reads `.npz` arrays, `.csv`/`.tsv`/`.data` tables and `.txt` text"
    assert source_for("x.npy") is None and source_for("x.png") is None  # `specc predict` inputs, not `file:`
    assert source_for("x.npy", None).layout == "array" and source_for("x.png", None).layout == "image"
    assert source_for("DATA.CSV", fold_case=False) is None  # a spec names its files exactly
    assert sources.layout_of("a.tsv") == "table" and sources.layout_of(None) is None


def test_a_suffix_has_one_reader():
    with pytest.raises(InternalError, match="read by source 'table'"):
        register(Source("csv2", (".csv",), "`.csv` again", "table", sources.read_table_columns))
    with pytest.raises(InternalError, match="lower case"):
        register(Source("upper", (".CSV2",), "tables", "table", sources.read_table_columns))
    assert "csv2" not in SOURCES and "upper" not in SOURCES


def test_columns_of_a_table_are_named_and_built_on_use(tmp_path):
    (tmp_path / "t.tsv").write_text("a\tb\ta\n1\tx\t3\n4\ty\t6\n")
    cols = SOURCES["table"].read(tmp_path / "t.tsv", ReadOptions())
    assert cols.names == ("a", "b", "a") and list(cols) == ["a", "b"] and cols.rows == 2  # a repeated header name
    assert cols.shapes == {"a": (2,), "b": (2,)} and cols.dtypes["a"] == np.dtype(object)
    assert list(cols["a"]) == ["1", "4"] and list(cols.at(2)) == ["3", "6"]
    arrays = Columns.of({"x_train": np.zeros((5, 2)), "x_test": np.zeros((3, 2))})
    assert arrays.rows is None and arrays.shapes == {"x_train": (5, 2), "x_test": (3, 2)}


# --- a source registered in a test: JSON files of columns ---------------------------------------------------------------


def _read_json_columns(path, options: ReadOptions) -> Columns:
    raw = read_json(path, "JSON columns")  # bounded, and a DataError naming the file if it is not JSON
    return Columns.of({name: np.asarray(values) for name, values in raw.items()})


def _json_schema(path) -> dict[str, ColumnInfo]:
    return {name: ColumnInfo(np.shape(v), np.asarray(v).dtype) for name, v in read_json(path, "JSON columns").items()}


@pytest.fixture
def json_sources():
    added = [register(Source("jsontable", (".jtable",), "`.jtable` JSON tables", "table", _read_json_columns)),
             register(Source("jsonarrays", (".jarrays",), "`.jarrays` JSON arrays", "arrays", _read_json_columns,
                             schema=_json_schema))]
    yield added
    for src in added:
        del SOURCES[src.name]


def _plan_reading(tmp_path, name: str, model: str = MODEL, **data):
    """A checked plan whose `file:` is then pointed at `name` (the checker, owned elsewhere, still lists its own
    suffixes): what `prepare` and `facts` receive."""
    np.savez(tmp_path / "placeholder.npz", x=np.zeros((2, 2)), y=np.zeros(2))
    plan = specc.loads(model + 'data {\n  file: "placeholder.npz"\n}\n', str(tmp_path / "s.model")).plan
    return plan.model_copy(update={"data": plan.data.model_copy(update={"file": name, **data})})


def test_a_registered_table_source_is_read_by_prepare_and_facts(json_sources, tmp_path):
    (tmp_path / "h.jtable").write_text(json.dumps({"area": list(range(8)), "rooms": list(range(10, 18)),
                                                   "kind": [0, 1, 0, 1, 0, 1, 1, 0]}))
    plan = _plan_reading(tmp_path, "h.jtable", features=["area", "rooms"], target="kind", test_split=0.25)
    assert sources.reads_hint().endswith(", `.txt` text, `.jtable` JSON tables and `.jarrays` JSON arrays")
    ds = prepare(plan, load_dataset(plan))
    assert ds.x_train.tolist() == [[i, 10 + i] for i in range(6)] and ds.x_train.dtype == np.float32
    assert ds.y_test.tolist() == [1.0, 0.0]
    found = facts.infer_facts(plan.data, plan.file, source="")
    assert (found.examples, found.test_examples, found.features, found.classes) == (6, 2, 2, 2)
    assert found.source == "file h.jtable"
    bad = _plan_reading(tmp_path, "h.jtable", features=["area", "rooms"], target="kinds")
    with pytest.raises(specc.DataError, match=r"column `kinds` is not in h.jtable; its columns are: area, rooms, kind"):
        load_dataset(bad)


def test_a_registered_arrays_source_is_read_by_prepare_and_facts(json_sources, tmp_path):
    x = [[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
    (tmp_path / "d.jarrays").write_text(json.dumps({"x_train": x, "y_train": [1, 1, 0, 0], "x_test": x[:2],
                                                    "y_test": [1, 1]}))
    plan = _plan_reading(tmp_path, "d.jarrays")
    ds = prepare(plan, load_dataset(plan))
    assert ds.x_train.shape == (4, 2) and ds.x_test.shape == (2, 2) and not ds.test_is_train
    found = facts.infer_facts(plan.data, plan.file, source="")
    assert (found.examples, found.test_examples, found.classes, found.label_kind) == (4, 2, 2, "classes")
    # arrays named after the model's inputs and outputs: facts asks the source's schema for their names
    (tmp_path / "n.jarrays").write_text(json.dumps({"a": x, "b": [1, 1, 0, 0]}))
    named = _plan_reading(tmp_path, "n.jarrays", model="model m {\n  input a: (2,)\n  b = a -> dense(1)\n  output b\n}\n")
    assert facts.infer_facts(named.data, named.file, source="").label_kind == "none"


def test_a_file_no_source_reads_is_a_located_error(tmp_path):
    plan = _plan_reading(tmp_path, "d.parquet")
    with pytest.raises(specc.DataError) as info:
        load_dataset(plan)
    assert info.value.message == "unsupported data file 'd.parquet'"
    assert info.value.hint == sources.reads_hint() and info.value.line == 6
