"""Data: built-in datasets found offline first, data files, inline arrays, preprocessing.

Files are read by the source their suffix registers (`specc.data.sources`: npz, tables, text, image folders);
this module lays their columns out as examples and labels, by the source's layout, and locates every error
at the `data` setting that names the file.

Built-in datasets are looked up in `$SPECC_DATA_DIR` (the layout of the shared
datasets folder), then through `keras.datasets` (its cache, then a download).
`$SPECC_DATA_DIR` is read-only to specc: decoded arrays are cached under
`$SPECC_CACHE_DIR` (default `~/.cache/specc`).
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from specc.core.errors import (
    DataError,
    Diagnostic,
    InternalError,
    did_you_mean,
    printable,
)
from specc.core.files import MAX_DATA_BYTES, NUMBER_KINDS, bad, size_text
from specc.core.plan import DataPlan, MaskedTokens, Plan, TokenizerPlan
from specc.data.sources import (
    SOURCES,
    Columns,
    ReadOptions,
    Source,
    layout_of,
    read_table,
    reads_hint,
    source_for,
    text_column,
)
from specc.core.limits import MAX_EXAMPLE_VALUES
from specc.runtime.keras_env import import_keras

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_IDX = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


@dataclass
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    test_is_train: bool = False  # no held-out data: metrics are on the training data
    origin: str = ""
    w_train: np.ndarray | None = None  # per-example (or per-token) loss weights
    w_test: np.ndarray | None = None
    vocab: Any = None  # the text vocabulary (`specc.data.tokenizers`), saved with the run
    classes: list[str] | None = None  # class names of an image folder, by label


def data_dirs() -> list[Path]:
    env = os.environ.get("SPECC_DATA_DIR")
    return [Path(p) for p in env.split(os.pathsep) if p] if env else []


# --- built-in datasets ------------------------------------------------------


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic = int.from_bytes(raw[0:4], "big")
    ndim = magic & 0xFF
    if magic >> 8 != 0x08 or ndim not in (1, 3):
        raise DataError(Diagnostic(f"{path} is not an IDX file of unsigned bytes (magic {magic:#x})"))
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(Diagnostic(f"{path} is truncated: expected {int(np.prod(dims))} values, found {data.size}"))
    return data.reshape(dims)


def _load_idx_folder(folder: Path) -> Dataset | None:
    files = [folder / f for pair in _IDX.values() for f in pair]
    if not all(f.is_file() for f in files):
        return None
    (xtr, ytr), (xte, yte) = [(_read_idx(folder / a), _read_idx(folder / b)) for a, b in _IDX.values()]
    return Dataset(xtr, ytr, xte, yte, origin=str(folder))


def image_dataset(path: Path, size: tuple[int, int] | None = None, cache_name: str = "images") -> Dataset:
    """Images in class folders, from a folder or a tar of one (`specc.data.sources`' `images` source)."""
    arrays = SOURCES["images"].read(path, ReadOptions(image_size=size, cache_name=cache_name))
    return Dataset(arrays["x_train"], arrays["y_train"], arrays.get("x_test"), arrays.get("y_test"), origin=str(path),
                   classes=[str(c) for c in arrays["classes"]])


# name -> (folder in $SPECC_DATA_DIR, what it holds)
TEXT_DATASETS = {"sst2": ("sst2", "`train.tsv` and `dev.tsv` (columns `sentence`, `label`)"),
                 "tiny_shakespeare": ("tinyshakespeare", "`input.txt`")}


def _load_text_dataset(name: str, folder: Path) -> Dataset | None:
    if name == "tiny_shakespeare":
        path = folder / "input.txt"
        if not path.is_file():
            return None
        text = path.read_text(encoding="utf-8")
        cut = int(len(text) * 0.9)  # nanoGPT's split: the first 90% trains, the last 10% validates
        return Dataset(text_column([text[:cut]]), None, text_column([text[cut:]]), None, origin=str(path))  # type: ignore[arg-type]
    train, dev = folder / "train.tsv", folder / "dev.tsv"
    if not (train.is_file() and dev.is_file()):
        return None
    splits: list[tuple[np.ndarray, np.ndarray]] = []  # (sentences, labels) of train, then dev
    for path in (train, dev):
        header, rows = read_table(path, "\t")
        if "sentence" not in header or "label" not in header:
            raise bad(path, f"expected the columns `sentence` and `label`, found: "
                            f"{printable(', '.join(header)[:200], lines=False)}")
        sentence, label = header.index("sentence"), header.index("label")
        labels = np.zeros(len(rows), dtype=np.int32)
        for k, r in enumerate(rows):
            try:
                labels[k] = int(r[label])
            except (ValueError, OverflowError):
                raise bad(path, f"row {k + 1}: the label {printable(repr(r[label])[:80], lines=False)} is not a class "
                                "number") from None
        splits.append((text_column([r[sentence].strip() for r in rows]), labels))
    (x_train, y_train), (x_dev, y_dev) = splits
    return Dataset(x_train, y_train, x_dev, y_dev, origin=str(folder))


def _keras_cache() -> Path:
    return Path(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras"))) / "datasets"


# What `keras.datasets.NAME.load_data()` keeps in Keras's cache: with it there, loading downloads nothing.
_KERAS_CACHED = {"mnist": "mnist.npz", "fashion_mnist": "fashion-mnist", "cifar10": "cifar-10-batches-py"}


def builtin_is_local(name: str) -> bool:
    """Whether built-in dataset `name` can be loaded without a download: in `$SPECC_DATA_DIR`, or in Keras's cache."""
    for root in data_dirs():
        folder = root / name
        if name in TEXT_DATASETS and (root / TEXT_DATASETS[name][0]).is_dir():
            return True
        if (name == "cifar10" and (folder / "cifar10-jpeg.tar.gz").is_file()) or (
                name != "cifar10" and all((folder / f).is_file() for pair in _IDX.values() for f in pair)):
            return True
    return name in _KERAS_CACHED and (_keras_cache() / _KERAS_CACHED[name]).exists()


def load_builtin(name: str) -> Dataset:
    looked: list[str] = []
    for root in data_dirs():
        folder = root / name
        looked.append(str(folder))
        if name in ("mnist", "fashion_mnist"):
            ds = _load_idx_folder(folder)
            if ds:
                return ds
        elif name == "cifar10":
            tar = folder / "cifar10-jpeg.tar.gz"
            if tar.is_file():
                ds = image_dataset(tar, cache_name="cifar10")
                if ds.classes != list(CIFAR10_CLASSES):
                    raise DataError(Diagnostic(f"{tar} has classes {ds.classes}, not CIFAR-10's"))
                return ds
        elif name in TEXT_DATASETS:
            ds = _load_text_dataset(name, root / TEXT_DATASETS[name][0])
            if ds:
                return ds
    if name in TEXT_DATASETS:
        raise DataError(Diagnostic(f"dataset `{name}` not found (looked in: {'; '.join(looked) or 'nowhere: SPECC_DATA_DIR is not set'})",
                                   hint=f"set SPECC_DATA_DIR to a folder holding `{TEXT_DATASETS[name][0]}/` with "
                                   f"{TEXT_DATASETS[name][1]}"))
    keras_home = str(_keras_cache())
    looked.append(f"{keras_home} (Keras's cache, then a download)")

    keras = import_keras()
    try:
        (xtr, ytr), (xte, yte) = getattr(keras.datasets, name).load_data()
    except Exception as err:  # noqa: BLE001 - offline, blocked, or a broken cache: all mean "not found"
        raise DataError(Diagnostic(
            f"dataset `{name}` not found (looked in: {'; '.join(looked)}); download failed: {str(err)[:200]}",
            hint="set SPECC_DATA_DIR to a folder holding "
            + ("`cifar10/cifar10-jpeg.tar.gz`" if name == "cifar10" else f"`{name}/` with the four IDX .gz files")
            + ", or connect to the internet once so Keras can cache it")) from None
    return Dataset(xtr, np.asarray(ytr).reshape(-1), xte, np.asarray(yte).reshape(-1), origin=keras_home)


# --- files and inline arrays -----------------------------------------------


class Located:
    """Raises `DataError`s that point at the `data` setting responsible."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.origins = plan.data.origins if plan.data else {}

    def error(self, key: str, message: str, hint: str | None = None) -> DataError:
        origin = self.origins.get(key)
        return DataError(self.plan.diag(message, origin.span if origin else None, hint))

    def located(self, key: str, err: DataError) -> DataError:
        """A `specc.core.files` error about a file (it names the file) pointed at setting `key` of the spec."""
        return self.error(key, file_message(err), err.hint)


def file_message(err: DataError) -> str:
    """The message of a DataError about a file, led by the file's name (when it names one)."""
    file = err.first.file
    return err.message if not file or file.startswith("<") or file in err.message else f"{file}: {err.message}"


def _data_file(plan: Plan, key: str, where: Located) -> Path:
    """The existing file that setting `key` (`file` or `test_file`) names."""
    path = plan.path(getattr(plan.data, key))
    if not path.is_file():
        raise where.error(key, f"data file not found: {path}" if not path.exists() else
                          f"{printable(str(path), lines=False)} is not a regular file (a folder, a pipe or a device)")
    if path.stat().st_size > MAX_DATA_BYTES:
        raise where.error(key, f"{path} holds {size_text(path.stat().st_size)}, more than the {size_text(MAX_DATA_BYTES)} "
                          "specc reads from one data file (MAX_DATA_BYTES)", "split the data into smaller files")
    return path


def read_options(d: DataPlan) -> ReadOptions:
    """What the `data` section tells a file source's reader."""
    return ReadOptions(delimiter=d.delimiter, columns=tuple(d.columns) if d.columns else None)


def _read_file(plan: Plan, key: str, where: Located) -> tuple[Source, Path, Columns]:
    """The source, path and columns of the file that setting `key` (`file` or `test_file`) names: the source its
    suffix registers (`specc.data.sources`), the file's errors located at the setting."""
    d = plan.data
    assert d is not None
    found = source_for(getattr(d, key))
    if found is None:  # the checker accepts only registered suffixes: a plan made without it
        raise where.error(key, f"unsupported data file {getattr(d, key)!r}", reads_hint())
    path = _data_file(plan, key, where)
    try:
        return found, path, found.read(path, read_options(d))
    except DataError as err:
        raise where.located(key, err) from None


def _table_xy(plan: Plan, key: str, where: Located, path: Path, columns: Columns):
    """(x, y) from a table: number columns (`features`), a text column (`text`), or, for a model with several
    inputs, the columns named after the inputs; `target` is y."""
    d = plan.data
    assert d is not None
    names = list(columns.names)
    if not names or not columns.rows:
        raise where.error(key, f"{path} has a header but no rows" if names and not d.columns else f"{path} is empty")
    several = len(plan.inputs) > 1 and not d.features and not d.text
    _check_columns(plan, key, where, path, names, several)

    def numbers(name: str) -> np.ndarray:
        column = columns[name]
        if column.dtype.kind in NUMBER_KINDS:  # a typed table's number column
            return column.astype(np.float32)
        try:
            return np.array([float(v) for v in column], dtype=np.float32)
        except (TypeError, ValueError):
            k = next(k for k, v in enumerate(column) if not _is_float(v))
            line = k + (1 if d.columns else 2)
            raise where.error(key, f"{path.name}, line {line}, column `{name}`: {printable(repr(column[k])[:80], lines=False)} "
                              "is not a number") from None

    if d.text:
        x: Any = text_column(list(columns[d.text]))
    elif several:
        x = {i.name: numbers(i.name) for i in plan.inputs}
    elif d.features:
        x = np.stack([numbers(c) for c in d.features], axis=1)
    else:  # the data section alone (`specc.data.facts`): which columns the model's inputs read is not known yet
        x = np.empty((columns.rows, 0), dtype=np.float32)
    return x, numbers(d.target) if d.target else None


def _check_columns(plan: Plan, key: str, where: Located, path: Path, names: list[str], several: bool) -> None:
    """Every column the `data` section reads is in the table (the inputs' names, for a model with several)."""
    d = plan.data
    assert d is not None
    wanted = ([(i.name, "columns" if d.columns else key) for i in plan.inputs] if several
              else [(c, "features") for c in d.features or []]) + [(c, k) for c, k in ((d.text, "text"), (d.target, "target")) if c]
    for col, setting in wanted:
        if col not in names:
            why = " (a model with several inputs reads the columns named after its inputs)" if several else ""
            raise where.error(setting if where.origins.get(setting) else key,
                              f"column `{col}` is not in {path.name}{why}; its columns are: {', '.join(names)}",
                              did_you_mean(col, names))


def _load_file(plan: Plan, key: str, where: Located):
    """(x, y, x_test, y_test) from the file in setting `key` (`file` or `test_file`), read by the source its
    suffix registers and laid out by that source's layout. For `test_file` the first pair is the test split."""
    found, path, columns = _read_file(plan, key, where)
    if found.layout not in _FILE_LAYOUTS:
        raise InternalError(f"data source {found.name!r} of layout {found.layout!r} is named by `{key}`")
    return _FILE_LAYOUTS[found.layout](plan, key, where, path, columns)


def _table_file(plan: Plan, key: str, where: Located, path: Path, columns: Columns):
    return (*_table_xy(plan, key, where, path, columns), None, None)


def _text_file(plan: Plan, key: str, where: Located, path: Path, columns: Columns):
    """A plain text corpus: the whole file is one stream of text."""
    return columns["text"], None, None, None


def _arrays_file(plan: Plan, key: str, where: Located, path: Path, arrays: Columns):
    """Named arrays: `x`/`y` (or the names `x:` and `y:` give) and `x_test`/`y_test`, or, for a model with several
    inputs or outputs, arrays named after them."""
    d = plan.data
    assert d is not None
    if len(plan.inputs) > 1 or len(plan.outputs) > 1:
        return _named_arrays(plan, arrays, where, key)
    test = key == "test_file"
    xs, ys = (d.x_test, d.y_test) if test else (d.x, d.y)
    x = _pick(arrays, [xs] if isinstance(xs, str) else (["x_test", "x"] if test else ["x_train", "x"]))
    y = _pick(arrays, [ys] if isinstance(ys, str) else (["y_test", "y"] if test else ["y_train", "y"]))
    if x is None or y is None:
        raise where.error(key, f"{getattr(d, key)} has arrays {', '.join(arrays) or 'none'}; expected "
                          + ("x_test/y_test or x/y" if test else "x_train/y_train or x/y"),
                          "name them: `x: images` and `y: labels`")
    if test:
        return x, y, None, None
    xt = _pick(arrays, [d.x_test] if isinstance(d.x_test, str) else ["x_test"])
    yt = _pick(arrays, [d.y_test] if isinstance(d.y_test, str) else ["y_test"])
    return x, y, xt, yt


#: What the `file:` and `test_file:` settings do with a source's columns, by its layout (`specc.data.sources`).
_FILE_LAYOUTS = {"arrays": _arrays_file, "table": _table_file, "text": _text_file}


def _is_float(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def _pick(arrays: Mapping[str, np.ndarray], names: list[str]) -> np.ndarray | None:
    for name in names:
        if name in arrays:
            return arrays[name]
    return None


def load_dataset(plan: Plan) -> Dataset:
    """The raw arrays the `data` section names (before preprocessing)."""
    d = plan.data
    where = Located(plan)
    if d is None:
        raise DataError(Diagnostic("the spec has no `data` section; `specc run` needs one", file=plan.file,
                                   hint="add `data { dataset: mnist }` or `data { file: \"train.npz\" }`"))
    if d.dataset:
        try:
            return load_builtin(d.dataset)
        except DataError as err:  # blame the `dataset:` line of the spec
            raise where.located("dataset", err) from None
    if d.images:
        path = plan.path(d.images)
        if not path.exists():
            raise where.error("images", f"image folder not found: {path}")
        if not (path.is_dir() or path.is_file()):
            raise where.error("images", f"{printable(str(path), lines=False)} is neither a folder nor a file (a pipe or "
                              "a device)", "give a folder of `<class>/<image>` files, or a tar of one")
        try:
            return _split(image_dataset(path, d.image_size), d.test_split)
        except DataError as err:
            raise where.located("images", err) from None
    if d.file:
        x, y, xt, yt = _load_file(plan, "file", where)
        if d.test_file:
            xt, yt, _, _ = _load_file(plan, "test_file", where)
        if layout_of(d.file) == "text" and xt is None and d.test_split > 0:  # a corpus splits at a character
            text = x[0]
            cut = len(text) - max(1, int(round(len(text) * d.test_split)))
            return Dataset(text_column([text[:cut]]), None, text_column([text[cut:]]), None, origin=d.file)  # type: ignore[arg-type]
        return _split(Dataset(x, y, xt, yt, origin=d.file), d.test_split)
    x, y = np.asarray(d.x, dtype=np.float32), np.asarray(d.y, dtype=np.float32)
    xt = np.asarray(d.x_test, dtype=np.float32) if isinstance(d.x_test, list) else None
    yt = np.asarray(d.y_test, dtype=np.float32) if isinstance(d.y_test, list) else None
    return _split(Dataset(x, y, xt, yt, origin="inline"), d.test_split)


def _named_arrays(plan: Plan, arrays: Mapping[str, np.ndarray], where: Located, key: str):
    """Several inputs or outputs: arrays named after them (`NAME_train`/`NAME_test`, or `NAME`)."""

    def side(names: list[str]):
        train, test = {}, {}
        for name in names:
            a = _pick(arrays, [f"{name}_train", name])
            if a is None:
                raise where.error(key, f"{getattr(plan.data, key)} has no array `{name}_train` or `{name}` for `{name}`; "
                                  f"it has: {', '.join(arrays)}",
                                  "a model with several inputs or outputs reads arrays named after them")
            train[name] = a
            t = _pick(arrays, [f"{name}_test"])
            if t is not None:
                test[name] = t
        one = len(names) == 1
        return (train[names[0]] if one else train), ((test[names[0]] if one else test) if len(test) == len(names) else None)

    x, xt = side([i.name for i in plan.inputs])
    y, yt = side(list(plan.outputs))
    return x, y, xt, yt


def count_examples(a) -> int:
    return len(next(iter(a.values()))) if isinstance(a, dict) else len(a)


def take(a, sl):
    if a is None:
        return None
    return {k: v[sl] for k, v in a.items()} if isinstance(a, dict) else a[sl]


def _split(ds: Dataset, test_split: float) -> Dataset:
    if ds.x_test is not None and ds.y_test is not None:
        return ds
    if test_split > 0:
        k = count_examples(ds.x_train) - max(1, int(round(count_examples(ds.x_train) * test_split)))
        head, tail = slice(None, k), slice(k, None)
        return replace(ds, x_train=take(ds.x_train, head), y_train=take(ds.y_train, head),
                       x_test=take(ds.x_train, tail), y_test=take(ds.y_train, tail))
    return replace(ds, x_test=ds.x_train, y_test=ds.y_train, test_is_train=True)


# --- preprocessing -----------------------------------------------------------


def prepare(plan: Plan, ds: Dataset, limit: int | None = None) -> Dataset:
    """Apply the `data` section's preprocessing and fit the arrays to the model's input."""
    d = plan.data
    assert d is not None
    where = Located(plan)
    culprit = data_setting(d)
    if d.is_text:
        ds = prepare_text(plan, ds, where, culprit)
    check_example_counts(plan, ds, where, culprit)
    classes = count_classes(d.one_hot, ds, where) if d.one_hot else None  # from all labels, before any limit
    if limit is not None:
        ds = replace(ds, x_train=take(ds.x_train, slice(limit)), y_train=take(ds.y_train, slice(limit)),
                     w_train=take(ds.w_train, slice(limit)))
        if ds.test_is_train:
            ds.x_test, ds.y_test, ds.w_test = ds.x_train, ds.y_train, ds.w_train

    def fit_x(x):
        if isinstance(x, dict):
            return {i.name: fit_one(x[i.name], i) for i in plan.inputs}
        return fit_one(x, plan.inputs[0])

    def fit_one(x: np.ndarray, inp) -> np.ndarray:
        x = reshape_examples(plan, x, where)
        dtype = "float32" if inp.dtype == "bfloat16" else inp.dtype  # NumPy has no bfloat16: Keras casts
        if d.scale is not None:
            x = x.astype(dtype if dtype.startswith("float") else "float32") * np.float32(d.scale)
        return fit_shape(x.astype(dtype, copy=False), inp.shape, inp.name, where, culprit)

    def fit_y(y):
        if isinstance(y, dict):
            return {k: fit_y(v) for k, v in y.items()}
        if classes is not None:
            return one_hot_labels(y, classes, where)
        return y

    x_train, y_train = fit_x(ds.x_train), fit_y(ds.y_train)
    _check_finite(plan, ds, "training", x_train, y_train, where, culprit)
    if ds.test_is_train:
        return replace(ds, x_train=x_train, y_train=y_train, x_test=x_train, y_test=y_train, w_test=ds.w_train)
    x_test = fit_x(ds.x_test) if ds.x_test is not None else None
    y_test = fit_y(ds.y_test) if ds.y_test is not None else None
    _check_finite(plan, ds, "test", x_test, y_test, where, "test_file" if d.test_file else culprit)
    return replace(ds, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def check_example_counts(plan: Plan, ds: Dataset, where: Located, culprit: str) -> None:
    """Each split has examples, and its arrays (examples, labels, every named input) agree on how many."""
    d = plan.data
    assert d is not None
    for split, xs, ys in (("training", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        if xs is None:
            continue
        arrays = [a for side in (xs, ys) if side is not None for a in (side.values() if isinstance(side, dict) else [side])]
        key = "test_file" if split == "test" and d.test_file else culprit
        if count_examples(xs) == 0:
            raise where.error(key, f"the {split} data from {data_source(plan, ds, split)} is empty (0 examples)")
        if len({len(a) for a in arrays}) > 1:
            raise where.error(key, f"the {split} arrays disagree on the number of examples: "
                              f"{sorted({len(a) for a in arrays})} (in {data_source(plan, ds, split)})")


def data_setting(d: DataPlan) -> str:
    """The setting that names where the examples come from: errors about them point there."""
    return "dataset" if d.dataset else "file" if d.file else "images" if d.images else "x"


def reshape_examples(plan: Plan, x: np.ndarray, where: Located) -> np.ndarray:
    """The `data` section's own reshaping (`flatten`, `reshape`), before the examples are fitted to an input."""
    d = plan.data
    assert d is not None
    if d.flatten:
        x = x.reshape(len(x), -1)
    if d.reshape:
        if int(np.prod(x.shape[1:])) != int(np.prod(d.reshape)):
            raise where.error("reshape", f"cannot reshape examples of shape {x.shape[1:]} to {d.reshape}")
        x = x.reshape((len(x),) + tuple(d.reshape))
    return x


def data_source(plan: Plan, ds: Dataset, split: str = "training") -> str:
    """Where a split's examples come from, for messages: a file as the spec names it, a dataset's folder."""
    d = plan.data
    if split == "test" and d is not None and d.test_file:
        return d.test_file
    return "the inline arrays" if ds.origin == "inline" else ds.origin or "the data"


def _check_finite(plan: Plan, ds: Dataset, split: str, x, y, where: Located, key: str) -> None:
    """NaN or infinite values in examples or targets would only show as a NaN loss: find them before training."""
    for side, value in (("examples", x), ("targets", y)):
        for name, a in (value.items() if isinstance(value, dict) else [("", value)]):
            if not isinstance(a, np.ndarray) or a.dtype.kind != "f" or np.isfinite(np.sum(a, dtype=np.float64)):
                continue  # one pass and no copy; a sum that overflows is looked at closely
            bad = np.argwhere(~np.isfinite(a))
            if len(bad):
                at = tuple(int(i) for i in bad[0])
                raise where.error(key, f"the {split} {side}{f' `{name}`' if name else ''} from {data_source(plan, ds, split)} "
                                  f"hold {a[at]} (at index {at[0] if len(at) == 1 else at}; {len(bad)} value"
                                  f"{'s' if len(bad) > 1 else ''} in all)",
                                  "remove those examples or fill in the missing values")


# --- text ----------------------------------------------------------------------


def prepare_text(plan: Plan, ds: Dataset, where: Located, culprit: str, vocab=None) -> Dataset:
    """Texts -> token ids: train (or load) the vocabulary unless given, then shape the examples for the task."""
    from specc.data.tokenizers import encode_texts, mask_tokens, next_token_windows

    d = plan.data
    assert d is not None and d.sequence_length is not None
    vocab = vocab if vocab is not None else text_vocabulary(plan, ds, where, culprit)
    task = d.task_kind
    length = d.sequence_length
    rng = np.random.default_rng(plan.train.seed if plan.train and plan.train.seed is not None else 0)
    corpus = len(ds.x_train) == 1 and ds.y_train is None  # one stream of text, not examples

    def sequences(texts) -> np.ndarray:  # (examples, length) ids
        if len(texts) * length * 4 > MAX_DATA_BYTES:
            raise where.error("sequence_length", f"{len(texts):,} texts of {length:,} tokens would take "
                              f"{size_text(len(texts) * length * 4)}, more than the {size_text(MAX_DATA_BYTES)} specc "
                              "makes from one data source (MAX_DATA_BYTES)", "make `sequence_length` shorter")
        if corpus:
            return next_token_windows(vocab.ids("".join(texts)), length)[0]
        return encode_texts(vocab, [str(t) for t in texts], length)

    def shaped(texts, labels):
        if task == "next_token":  # y is x shifted by one token
            return (*next_token_windows(vocab.ids(("" if corpus else "\n").join(texts)), length), None)
        x = sequences(texts)
        if isinstance(d.task, MaskedTokens):
            return mask_tokens(x, d.task.rate, vocab.size, rng)
        if labels is None:
            raise where.error("task" if where.origins.get("task") else culprit,
                              "this text has no labels to classify",
                              "name the label column (`target: label`), or pre-train with `task: next_token` or "
                              "`task: masked_tokens`")
        return x, labels, None

    x, y, w = shaped(ds.x_train, ds.y_train)
    out = replace(ds, x_train=x, y_train=y, w_train=w, vocab=vocab)
    if ds.test_is_train:
        return replace(out, x_test=x, y_test=y, w_test=w)
    if ds.x_test is not None:
        xt, yt, wt = shaped(ds.x_test, ds.y_test)
        out = replace(out, x_test=xt, y_test=yt, w_test=wt)
    return out


def text_vocabulary(plan: Plan, ds: Dataset, where: Located, culprit: str):
    """The vocabulary of the training text, once it is known to be text."""
    if not _holds_text(ds.x_train):
        raise where.error(culprit, "the data holds no text for the tokenizer",
                          "name the text column (`text: sentence`) or use a `.txt` file")
    return _vocabulary(plan, ds, where)


def _holds_text(x) -> bool:
    return isinstance(x, np.ndarray) and x.dtype == object and len(x) > 0 and isinstance(x[0], str)


def _vocabulary(plan: Plan, ds: Dataset, where: Located):
    """The `tokenizer` trained on the training text, or a saved one: the path given, else the vocabulary
    of the run that `init` starts from (its embeddings only make sense with it)."""
    from specc.data.tokenizers import read_vocabulary, train_vocabulary

    d = plan.data
    assert d is not None
    tok = d.tokenizer
    if isinstance(tok, TokenizerPlan):
        return train_vocabulary(tok.kind, [str(t) for t in ds.x_train], tok.vocab_size)
    name, span = (tok.path, d.span("tokenizer")) if tok else (plan.init.source, plan.init.span("from"))  # type: ignore[union-attr]
    path = plan.path(name)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise DataError(plan.diag(f"no saved vocabulary at {path}", span,
                                  "name a run directory of a text model, or its `tokenizer.json`"))
    try:
        return read_vocabulary(path)
    except DataError as err:
        raise DataError(plan.diag(f"cannot read the vocabulary in {file_message(err)}", span, err.hint)) from None


def _class_labels(y: np.ndarray, where: Located) -> np.ndarray:
    """Labels as class numbers (int64, flat): whole numbers >= 0, else a DataError at `one_hot`."""
    y = np.asarray(y).reshape(-1)
    if y.dtype.kind not in "biuf":
        raise where.error("one_hot", f"the labels are {y.dtype} values, not class numbers")
    if y.dtype.kind == "f":
        odd = y[~np.isfinite(y) | (y != np.round(y))] if y.size else y
        if odd.size:
            raise where.error("one_hot", f"the labels include {odd[0]:g}, which is not a class number",
                              "one-hot labels are made from whole numbers 0, 1, 2, ...")
    if y.size and (float(y.min()) < 0 or float(y.max()) > MAX_EXAMPLE_VALUES):
        lo, hi = float(y.min()), float(y.max())
        raise where.error("one_hot", f"the labels run from {lo:,.0f} to {hi:,.0f}: one-hot labels need class numbers "
                          f"0..N-1, and at most {MAX_EXAMPLE_VALUES:,} classes (values per example, 2**28)",
                          "are these class numbers? leave out `one_hot` for real-valued targets")
    return y.astype(np.int64)


def one_hot_labels(y: np.ndarray, classes: int, where: Located) -> np.ndarray:
    """(examples, classes) float32 rows of 0 and 1, after the labels and the array's size were checked (no identity
    matrix of `classes` x `classes` is made)."""
    y = _class_labels(y, where)
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise where.error("one_hot", f"labels run from {y.min()} to {y.max()}, outside 0..{classes - 1}")
    if y.size * classes * 4 > MAX_DATA_BYTES:
        raise where.error("one_hot", f"{y.size:,} one-hot labels of {classes:,} classes would take "
                          f"{size_text(y.size * classes * 4)}, more than the {size_text(MAX_DATA_BYTES)} specc makes "
                          "from one data source (MAX_DATA_BYTES)", "use `sparse_categorical_crossentropy` on the "
                          "class numbers instead of `one_hot`")
    out = np.zeros((y.size, classes), dtype=np.float32)
    out[np.arange(y.size), y] = 1.0
    return out


def count_classes(one_hot: bool | int, ds: Dataset, where: Located) -> int:
    if not isinstance(one_hot, bool):
        return one_hot
    labels = [_class_labels(a, where) for side in (ds.y_train, ds.y_test) if side is not None
              for a in (side.values() if isinstance(side, dict) else [side])]
    if not any(a.size for a in labels):
        raise where.error("one_hot", "there are no labels to count the classes of", "give the number: `one_hot: 10`")
    return int(max(a.max() for a in labels if a.size)) + 1


def fit_shape(x: np.ndarray, want: tuple, name: str, where: Located, culprit: str) -> np.ndarray:
    have = x.shape[1:]
    if len(have) == len(want) and all(w is None or w == h for w, h in zip(want, have)):
        return x
    # Shapes that differ only by axes of size 1 are the same data: (28, 28) -> (28, 28, 1), (5,) -> (5, 1).
    if None not in want and [s for s in have if s != 1] == [s for s in want if s != 1]:
        return x.reshape((len(x),) + tuple(want))
    key = "reshape" if where.origins.get("reshape") else culprit
    size = int(np.prod(have))
    hint = ("add `flatten: true` to `data`" if len(want) == 1 and want[0] == size
            else f"add `reshape: {tuple(want)}` to `data`" if None not in want and int(np.prod(want)) == size
            else f"declare the input as `input {name}: {tuple(have)}`")
    raise where.error(key, f"data examples have shape {tuple(have)} but input `{name}` expects {tuple(want)}", hint)
