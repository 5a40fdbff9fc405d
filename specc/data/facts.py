"""Facts of a spec's data: number of classes, features, vocabulary size, sequence length, examples.

A spec names them (`dense(data.classes)`, `input x: (data.features,)`) so that nobody copies them from the
data by hand, and the linter compares the model with them. They are needed before the model is known (the
checker resolves `data.classes` while it builds the model), so they come from the `data` section alone,
through the same loaders as training (`specc.data.prepare`), never a second reading of the formats.

Loading MNIST or training a vocabulary takes a second or more, and `specc check` should not, so facts are
kept in memory and in a small JSON file per data section under `$SPECC_CACHE_DIR/facts/`. Its key is a
hash of the data section's settings, specc's version, and the path, size and modification time of every
file the data comes from, so that a changed file is read again. A cache that cannot be read is recomputed;
one that cannot be written only costs time.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from specc.core.cache import writable_subdir
from specc.core.errors import DataError
from specc.core.plan import DataPlan, Facts, InitPlan, InputNode, Plan, SavedTokenizer
from specc.core.plan import FACT_NAMES as FACT_NAMES  # the facts' names, kept importable from here
from specc.core.version import __version__
from specc.data import prepare as loading
from specc.data.sources import layout_of, source_for
from specc.core.artifacts import write_atomic

LABEL_KINDS = ("classes", "real", "tokens", "none")


# --- the cache ------------------------------------------------------------------

_MEMO: dict[str, Facts] = {}
computed = 0  # how many times the data was actually read (a cache miss), for tests and benchmarks


def trained_examples(examples: int, validation_split: float = 0.0, limit: int | None = None) -> int:
    """Examples one epoch trains on: the first `limit`, less the validation split, cut as Keras's
    `fit(validation_split=...)` cuts it (the first floor(n * (1 - split)) train). With k-fold validation the
    saved model trains on them all (each fold's model on k-1 parts of them)."""
    n = examples if limit is None else min(examples, limit)
    return math.floor(n * (1.0 - validation_split))


def steps_per_epoch(examples: int, batch_size: int, validation_split: float = 0.0, limit: int | None = None) -> int:
    """Optimizer steps in one epoch: batches of `batch_size`, the last one possibly smaller."""
    return math.ceil(trained_examples(examples, validation_split, limit) / batch_size)


def infer_facts(data: DataPlan, file: str, init: InitPlan | None = None, source: str | None = None,
                offline: bool = False) -> Facts:
    """The facts of the data that `data` (of the spec `file`) names, from the cache when the data is unchanged.

    Raises the `DataError` of `specc.data.prepare` (located at the data setting) when the data is missing or
    unreadable. `source` is the spec's text, for the excerpt in such errors (read from `file` if omitted).
    `offline`: a built-in dataset that only a download would bring is missing too (lint never downloads; a
    spec that names `data.classes` loads its data as a run would)."""
    global computed
    if source is None:
        try:
            source = Path(file).read_text(encoding="utf-8") if not file.startswith("<") else ""
        except (OSError, UnicodeDecodeError):
            source = ""
    plan = Plan(name="facts", inputs=[], layers=[], outputs=[], data=data, init=init, file=file, source=source)
    key = _cache_key(plan)
    if key in _MEMO:
        return _MEMO[key]
    if offline and data.dataset and not loading.builtin_is_local(data.dataset):
        raise loading.Located(plan).error("dataset", f"dataset `{data.dataset}` is not on this machine (SPECC_DATA_DIR "
                                           "or Keras's cache) and is not downloaded for its facts")
    folder = writable_subdir("facts")
    path = folder / f"{key}.json" if folder else None
    facts = _read_cached(path) if path else None
    if facts is None:
        facts = _compute_facts(plan)
        computed += 1
        if path:
            _write_cached(path, facts)
    _MEMO[key] = facts
    return facts


def clear_memo() -> None:
    """Forget the facts kept in this process (the JSON cache stays)."""
    _MEMO.clear()


def _cache_key(plan: Plan) -> str:
    d = plan.data
    assert d is not None
    parts = {
        "specc": __version__,
        "data": d.model_dump(mode="json"),
        "init": plan.init.source if plan.init else None,
        "base": str(plan.path(".").resolve()),  # relative paths in the spec start here
        "env": [os.environ.get("SPECC_DATA_DIR"), os.environ.get("KERAS_HOME")],
        "files": [_stat(p) for p in _files_read(plan)],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _files_read(plan: Plan) -> list[Path]:
    """Every file the data may come from: the paths the section names (a folder: its files), the dataset's
    folders in `$SPECC_DATA_DIR` and Keras's cache, and a saved vocabulary."""
    d = plan.data
    assert d is not None
    named = [plan.path(p) for p in (d.file, d.test_file, d.images) if p]
    if d.dataset:
        folder = loading.TEXT_DATASETS[d.dataset][0] if d.dataset in loading.TEXT_DATASETS else d.dataset
        named += [root / folder for root in loading.data_dirs()]
        keras_home = Path(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras"))) / "datasets"
        named += sorted(keras_home.glob(f"{d.dataset.split('_')[0][:5]}*")) if keras_home.is_dir() else []
    if d.is_text and (d.tokenizer is None or isinstance(d.tokenizer, SavedTokenizer)):
        name = d.tokenizer.path if d.tokenizer else plan.init.source if plan.init else None
        if name:
            vocab = plan.path(name)
            named.append(vocab / "tokenizer.json" if vocab.is_dir() else vocab)
    files: list[Path] = []
    for p in named:
        files += sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    return files


def _stat(path: Path) -> tuple[str, int, int] | tuple[str, str]:
    try:
        st = path.stat()
    except OSError:
        return str(path), "missing"
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def _read_cached(path: Path) -> Facts | None:
    """The facts in a cache file, or None if it is absent, unreadable or not facts (then they are recomputed)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        raw["example_shape"] = tuple(raw["example_shape"]) if raw["example_shape"] is not None else None
        raw["why_unknown"] = tuple((str(k), str(v)) for k, v in raw["why_unknown"])
        facts = Facts(**raw)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    ints = [facts.examples, facts.test_examples, facts.features, facts.classes, facts.vocab_size,
            facts.sequence_length, *(facts.example_shape or ())]
    if (not isinstance(facts.source, str) or facts.label_kind not in LABEL_KINDS
            or not all(v is None or type(v) is int for v in ints)):
        return None
    return facts


def _write_cached(path: Path, facts: Facts) -> None:

    try:
        write_atomic(path, json.dumps(asdict(facts)))
    except OSError:
        pass  # a cache that cannot be written only costs time


# --- computing the facts -----------------------------------------------------------


def _compute_facts(plan: Plan) -> Facts:
    d = plan.data
    assert d is not None
    where = loading.Located(plan)
    named = _named_arrays(plan)
    if named:  # the model's inputs and outputs name the arrays: read them all as inputs
        plan = plan.model_copy(update={"inputs": [InputNode(name=n, shape=()) for n in named]})
    ds = loading.load_dataset(plan)
    if not d.is_text:  # as `prepare` finds them before a run: the facts of inconsistent arrays mean nothing
        loading.check_example_counts(plan, ds, where, loading.data_setting(d))
    source = (f"dataset {d.dataset}" if d.dataset else f"file {d.file}" if d.file else f"images {d.images}"
              if d.images else "the inline arrays")
    unknown: dict[str, str] = {}
    if not d.is_text:
        for fact in ("vocab_size", "sequence_length"):
            unknown[fact] = f"it is for text data (a `tokenizer` and `sequence_length`); this is {source}"
    vocab_size = None
    task = d.task_kind
    if d.is_text:
        vocab = loading.text_vocabulary(plan, ds, where, loading.data_setting(d))
        vocab_size = vocab.size
        if task == "next_token":  # the examples are windows of the token stream: count them
            ds = loading.prepare_text(plan, ds, where, loading.data_setting(d), vocab)
        shape: tuple[int, ...] | None = (int(d.sequence_length),)  # type: ignore[arg-type]
    elif isinstance(ds.x_train, dict) or layout_of(d.file) == "table" and not d.features:
        shape = None
        unknown["features"] = (f"{source} feeds several inputs (the arrays or columns named after them); "
                               "name the input's size instead")
    else:
        shape = tuple(int(s) for s in loading.reshape_examples(plan, np.asarray(ds.x_train[:1]), where).shape[1:])
    classes, kind = _infer_classes(d, ds, task, vocab_size, where)
    if classes is None:
        unknown["classes"] = {
            "real": f"the targets of {source} are real numbers (regression), not class labels",
            "none": f"{source} has no targets" + (" known before the model names its outputs" if named else ""),
        }[kind] + "; write the number of classes instead"
    test = None if ds.test_is_train or ds.x_test is None else loading.count_examples(ds.x_test)
    return Facts(source=source, examples=loading.count_examples(ds.x_train), test_examples=test, example_shape=shape,
                 features=math.prod(shape) if shape is not None else None, classes=classes, vocab_size=vocab_size,
                 sequence_length=d.sequence_length if d.is_text else None, label_kind=kind,
                 why_unknown=tuple(unknown.items()))


def _named_arrays(plan: Plan) -> list[str]:
    """The names of a file's arrays when they are named after the model's inputs and outputs (no x/y): a source
    of named arrays that declares its columns (an .npz's directory and headers) is asked, no array is read."""
    d = plan.data
    assert d is not None
    if not d.file:
        return []
    found = source_for(d.file)
    if found is None or found.layout != "arrays" or found.schema is None:
        return []
    path = plan.path(d.file)
    if not path.is_file():
        return []  # `load_dataset` says why, at the `file` setting
    try:
        names = list(found.schema(path))
    except DataError as err:
        raise loading.Located(plan).located("file", err) from None
    wanted = [[d.x] if isinstance(d.x, str) else ["x_train", "x"], [d.y] if isinstance(d.y, str) else ["y_train", "y"]]
    if all(any(n in names for n in side) for side in wanted):
        return []
    return list(dict.fromkeys(n.removesuffix("_train").removesuffix("_test") for n in names))


def _infer_classes(d: DataPlan, ds: loading.Dataset, task: str, vocab_size: int | None,
                   where: loading.Located) -> tuple[int | None, str]:
    """(number of classes, what y holds). Integer labels count max + 1; float targets count as labels only
    when they are one-hot rows, or whole numbers that use every value 0..N-1 (N at most half the examples):
    otherwise they are real-valued targets of a regression."""
    if task in ("next_token", "masked_tokens") and vocab_size is not None:
        return vocab_size, "tokens"
    if d.one_hot:
        return loading.count_classes(d.one_hot, ds, where), "classes"
    if ds.classes:
        return len(ds.classes), "classes"
    y = ds.y_train
    if y is None or isinstance(y, dict):
        return None, "none"
    y = np.asarray(y)
    if y.size == 0 or y.dtype.kind not in "iuf" or not np.all(np.isfinite(y)):
        return None, "real"
    if y.dtype.kind in "iu":
        sides = [np.asarray(a) for a in (ds.y_train, ds.y_test) if isinstance(a, np.ndarray) and a.size]
        return (int(max(a.max() for a in sides)) + 1, "classes") if y.min() >= 0 else (None, "real")
    if y.ndim == 2 and y.shape[1] > 1 and np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1):
        return int(y.shape[1]), "classes"
    if y.min() == 0 and np.all(y == np.round(y)):
        n = int(y.max()) + 1
        if 2 * n <= len(y) and len(np.unique(y)) == n:
            return n, "classes"
    return None, "real"
