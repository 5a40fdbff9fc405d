"""Data: built-in datasets found offline first, npz/csv files, inline arrays, preprocessing.

Built-in datasets are looked up in `$SPECC_DATA_DIR` (the layout of the shared
datasets folder), then through `keras.datasets` (its cache, then a download).
`$SPECC_DATA_DIR` is read-only to specc: decoded arrays are cached under
`$SPECC_CACHE_DIR` (default `~/.cache/specc`).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError, Diagnostic, did_you_mean
from .plan import Plan

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


def cache_dir() -> Path:
    base = os.environ.get("SPECC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "specc")
    return Path(base)


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


def _file_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]


def _load_cifar_tar(path: Path) -> Dataset:
    """Decode the image-folder tar (`train/<class>/N.jpg`, `test/<class>/N.jpg`) once; cache as npz."""
    cached = cache_dir() / f"cifar10-mixed-{_file_key(path)}.npz"
    if cached.is_file():
        with np.load(cached, allow_pickle=False) as z:
            return Dataset(z["x_train"], z["y_train"], z["x_test"], z["y_test"], origin=str(path))
    from PIL import Image

    images: dict[str, list] = {"train": [], "test": []}
    labels: dict[str, list] = {"train": [], "test": []}
    names: dict[str, list] = {"train": [], "test": []}
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            parts = Path(member.name).parts
            if not member.isfile() or len(parts) < 3 or parts[-3] not in images or parts[-2] not in CIFAR10_CLASSES:
                continue
            split, cls = parts[-3], parts[-2]
            with Image.open(io.BytesIO(tar.extractfile(member).read())) as im:  # type: ignore[union-attr]
                images[split].append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            labels[split].append(CIFAR10_CLASSES.index(cls))
            names[split].append(member.name)
    arrays = {}
    for split in ("train", "test"):
        if not images[split]:
            raise DataError(Diagnostic(f"{path} holds no `{split}/<class>/*.jpg` images"))
        # The archive is sorted by class; like the official batches, examples are stored in one fixed
        # mixed order, so that `--limit N` and `validation_split` see every class.
        order = np.argsort(np.array(names[split]), kind="stable")  # independent of the tar's member order
        order = order[np.random.default_rng(0).permutation(len(order))]
        arrays[f"x_{split}"] = np.stack(images[split])[order]
        arrays[f"y_{split}"] = np.array(labels[split], dtype=np.uint8)[order]
    _save_npz_atomic(cached, arrays)
    return Dataset(arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], origin=str(path))


def _save_npz_atomic(path: Path, arrays: dict) -> None:
    from .artifacts import write_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda f: np.savez(f, **arrays))
    except OSError:
        pass  # a cache that cannot be written only costs time


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
                return _load_cifar_tar(tar)
    keras_home = os.path.join(os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras")), "datasets")
    looked.append(f"{keras_home} (Keras's cache, then a download)")
    from .keras_env import import_keras

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


class _Located:
    """Raises `DataError`s that point at the `data` setting responsible."""

    def __init__(self, plan: Plan):
        self.plan = plan
        self.origins = plan.data.origins if plan.data else {}

    def error(self, key: str, message: str, hint: str | None = None) -> DataError:
        origin = self.origins.get(key)
        return DataError(self.plan.diag(message, origin.span if origin else None, hint))


def _resolve_path(plan: Plan, name: str) -> Path:
    path = Path(name)
    if not path.is_absolute():
        base = Path(plan.file).parent if plan.file and not plan.file.startswith("<") else Path.cwd()
        path = base / path
    return path


def _load_npz(plan: Plan, key: str, where: _Located) -> dict[str, np.ndarray]:
    path = _resolve_path(plan, getattr(plan.data, key))
    if not path.is_file():
        raise where.error(key, f"data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:  # never unpickle: a data file cannot run code
            return {k: z[k] for k in z.files}
    except Exception as err:  # noqa: BLE001
        raise where.error(key, f"cannot read {path} as .npz: {err}") from None


def _load_csv(plan: Plan, key: str, where: _Located) -> tuple[np.ndarray, np.ndarray]:
    d = plan.data
    assert d is not None
    path = _resolve_path(plan, getattr(d, key))
    if not path.is_file():
        raise where.error(key, f"data file not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = reader.fieldnames or []
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as err:
        raise where.error(key, f"cannot read {path} as csv text: {err}") from None
    if not columns or not rows:
        raise where.error(key, f"{path} is empty" if not columns else f"{path} has a header but no rows")
    for col in list(d.features or []) + [d.target]:
        if col not in columns:
            setting = "target" if col == d.target else "features"
            raise where.error(setting, f"column `{col}` is not in {path.name}; its columns are: {', '.join(columns)}",
                              did_you_mean(col, columns))

    def column(name: str) -> np.ndarray:
        try:
            return np.array([float(r[name]) for r in rows], dtype=np.float32)
        except (TypeError, ValueError):
            bad = next(i for i, r in enumerate(rows) if not _is_float(r[name]))
            raise where.error(key, f"{path.name}, row {bad + 2}, column `{name}`: {rows[bad][name]!r} is not a number") from None

    x = np.stack([column(c) for c in d.features or []], axis=1)
    return x, column(d.target)  # type: ignore[arg-type]


def _load_file(plan: Plan, key: str, where: _Located):
    """(x, y, x_test, y_test) from the csv or npz file in setting `key` (`file` or `test_file`).

    The loader follows each file's own extension. For `test_file` the first pair is the test split."""
    d = plan.data
    name = getattr(d, key)
    if name.endswith(".csv"):
        return (*_load_csv(plan, key, where), None, None)
    arrays = _load_npz(plan, key, where)
    if len(plan.inputs) > 1 or len(plan.outputs) > 1:
        return _named_arrays(plan, arrays, where, key)
    test = key == "test_file"
    xs, ys = (d.x_test, d.y_test) if test else (d.x, d.y)
    x = _pick(arrays, [xs] if isinstance(xs, str) else (["x_test", "x"] if test else ["x_train", "x"]))
    y = _pick(arrays, [ys] if isinstance(ys, str) else (["y_test", "y"] if test else ["y_train", "y"]))
    if x is None or y is None:
        raise where.error(key, f"{name} has arrays {', '.join(arrays) or 'none'}; expected "
                          + ("x_test/y_test or x/y" if test else "x_train/y_train or x/y"),
                          "name them: `x: images` and `y: labels`")
    if test:
        return x, y, None, None
    xt = _pick(arrays, [d.x_test] if isinstance(d.x_test, str) else ["x_test"])
    yt = _pick(arrays, [d.y_test] if isinstance(d.y_test, str) else ["y_test"])
    return x, y, xt, yt


def _is_float(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def _pick(arrays: dict[str, np.ndarray], names: list[str]) -> np.ndarray | None:
    for name in names:
        if name in arrays:
            return arrays[name]
    return None


def load_dataset(plan: Plan) -> Dataset:
    """The raw arrays the `data` section names (before preprocessing)."""
    d = plan.data
    where = _Located(plan)
    if d is None:
        raise DataError(Diagnostic("the spec has no `data` section; `specc run` needs one", file=plan.file,
                                   hint="add `data { dataset: mnist }` or `data { file: \"train.npz\" }`"))
    if d.dataset:
        try:
            return load_builtin(d.dataset)
        except DataError as err:  # blame the `dataset:` line of the spec
            raise where.error("dataset", err.first.message, err.first.hint) from None
    if d.file:
        x, y, xt, yt = _load_file(plan, "file", where)
        if d.test_file:
            xt, yt, _, _ = _load_file(plan, "test_file", where)
        return _split(Dataset(x, y, xt, yt, origin=d.file), d.test_split)
    x, y = np.asarray(d.x, dtype=np.float32), np.asarray(d.y, dtype=np.float32)
    xt = np.asarray(d.x_test, dtype=np.float32) if isinstance(d.x_test, list) else None
    yt = np.asarray(d.y_test, dtype=np.float32) if isinstance(d.y_test, list) else None
    return _split(Dataset(x, y, xt, yt, origin="inline"), d.test_split)


def _named_arrays(plan: Plan, arrays: dict[str, np.ndarray], where: _Located, key: str):
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


def _take(a, sl: slice):
    return {k: v[sl] for k, v in a.items()} if isinstance(a, dict) else a[sl]


def _split(ds: Dataset, test_split: float) -> Dataset:
    if ds.x_test is not None and ds.y_test is not None:
        return ds
    if test_split > 0:
        k = count_examples(ds.x_train) - max(1, int(round(count_examples(ds.x_train) * test_split)))
        head, tail = slice(None, k), slice(k, None)
        return Dataset(_take(ds.x_train, head), _take(ds.y_train, head), _take(ds.x_train, tail),
                       _take(ds.y_train, tail), origin=ds.origin)
    return Dataset(ds.x_train, ds.y_train, ds.x_train, ds.y_train, test_is_train=True, origin=ds.origin)


# --- preprocessing -----------------------------------------------------------


def prepare(plan: Plan, ds: Dataset, limit: int | None = None) -> Dataset:
    """Apply the `data` section's preprocessing and fit the arrays to the model's input."""
    d = plan.data
    assert d is not None
    where = _Located(plan)
    culprit = "dataset" if d.dataset else "file" if d.file else "x"
    for split, xs, ys in (("training", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        if xs is None or ys is None:
            continue
        arrays = [a for side in (xs, ys) for a in (side.values() if isinstance(side, dict) else [side])]
        if split == "training" and count_examples(xs) == 0:
            raise where.error(culprit, "the training data is empty")
        if len({len(a) for a in arrays}) > 1:
            key = "test_file" if split == "test" and d.test_file else culprit
            raise where.error(key, f"the {split} arrays disagree on the number of examples: "
                              f"{sorted({len(a) for a in arrays})}")
    classes = _count_classes(d.one_hot, ds) if d.one_hot else None  # from all labels, before any limit
    if limit is not None:
        ds = Dataset(_take(ds.x_train, slice(limit)), _take(ds.y_train, slice(limit)), ds.x_test, ds.y_test,
                     ds.test_is_train, ds.origin)
        if ds.test_is_train:
            ds.x_test, ds.y_test = ds.x_train, ds.y_train

    def fit_x(x):
        if isinstance(x, dict):
            return {i.name: fit_one(x[i.name], i) for i in plan.inputs}
        return fit_one(x, plan.inputs[0])

    def fit_one(x: np.ndarray, inp) -> np.ndarray:
        if d.flatten:
            x = x.reshape(len(x), -1)
        if d.reshape:
            if int(np.prod(x.shape[1:])) != int(np.prod(d.reshape)):
                raise where.error("reshape", f"cannot reshape examples of shape {x.shape[1:]} to {d.reshape}")
            x = x.reshape((len(x),) + tuple(d.reshape))
        dtype = "float32" if inp.dtype == "bfloat16" else inp.dtype  # NumPy has no bfloat16: Keras casts
        if d.scale is not None:
            x = x.astype(dtype if dtype.startswith("float") else "float32") * np.float32(d.scale)
        return _fit_shape(x.astype(dtype, copy=False), inp.shape, inp.name, where, culprit)

    def fit_y(y):
        if isinstance(y, dict):
            return {k: fit_y(v) for k, v in y.items()}
        if classes is not None:
            y = y.astype(np.int64).reshape(-1)
            if y.min() < 0 or y.max() >= classes:
                raise where.error("one_hot", f"labels run from {y.min()} to {y.max()}, outside 0..{classes - 1}")
            return np.eye(classes, dtype=np.float32)[y]
        return y

    x_train, y_train = fit_x(ds.x_train), fit_y(ds.y_train)
    if ds.test_is_train:
        return Dataset(x_train, y_train, x_train, y_train, True, ds.origin)
    x_test = fit_x(ds.x_test) if ds.x_test is not None else None
    y_test = fit_y(ds.y_test) if ds.y_test is not None else None
    return Dataset(x_train, y_train, x_test, y_test, False, ds.origin)


def _count_classes(one_hot: bool | int, ds: Dataset) -> int:
    if not isinstance(one_hot, bool):
        return one_hot
    labels = [a for side in (ds.y_train, ds.y_test) if side is not None
              for a in (side.values() if isinstance(side, dict) else [side])]
    return int(max(np.max(a) for a in labels)) + 1


def _fit_shape(x: np.ndarray, want: tuple, name: str, where: _Located, culprit: str) -> np.ndarray:
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
