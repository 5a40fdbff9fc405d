"""Data sources: every kind of data file specc reads, in one registry.

A source is one kind of file (or folder): its name, the suffixes it reads, a line saying what it holds (the
checker's hint lists them), the `data` settings that may name it, how its columns become examples (its
layout), and a reader that returns named columns through the bounded readers of `specc.core.files`.
`specc.data.prepare` (run, eval), `specc.data.facts` (check), `specc.tools.predict` and the checker ask
`source_for` instead of testing suffixes themselves, so adding a kind of file is one `@source` function
here, its tests and a line in docs/language.md.

Layouts, that is, what `prepare` does with a source's columns (LAYOUTS):

- `arrays`: named arrays of examples (`x`/`y`, `x_train`/`y_train`/`x_test`/`y_test`, the names `x:` and `y:`
  give, or arrays named after the model's inputs and outputs); `.npz`
- `table`: one value per example and column: `features` are number columns, `text` a text column, `target` y,
  or, for a model with several inputs, the columns named after them; `.csv`, `.tsv`, `.data`
- `text`: one stream of text, the column `text` holding one string; `.txt`
- `images`: a folder, or a tar of one, of `<class>/<image>` files (`x_train`, `y_train`, maybe `x_test`,
  `y_test`, and `classes`); the `images` setting
- `array` and `image`: one array of examples, one image: inputs of `specc predict` only (no setting names them)

Suffixes are matched case-insensitively, as a shell user gives files, except where the spec's `file:` setting
is validated: the checker passes `fold_case=False`, so that a spec names its files exactly.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specc.core.cache import cache_dir
from specc.core.errors import DataError, Diagnostic, InternalError, printable
from specc.core.files import (
    DecodedBudget,
    bad,
    check_npz,
    decode_image,
    read_image_file,
    read_npy,
    read_npz,
    tar_image_members,
)
from specc.core.artifacts import write_atomic

LAYOUTS = ("arrays", "table", "text", "images", "array", "image")
SETTINGS = ("file", "images")  # the `data` settings that name a source (`file` stands for `test_file` too)


# --- named columns ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnInfo:
    """What one column is, known without reading its values where the format declares it (an .npy header)."""

    shape: tuple[int, ...]  # rows first
    dtype: np.dtype


class Columns(Mapping[str, np.ndarray]):
    """Named columns read from one source: arrays whose first axis counts examples (an .npz's arrays may differ in
    length: `x_train` and `x_test`). `names` are in the file's order, as the file writes them (a table's header may
    repeat a name; `columns[name]` is its first column of that name, `at(i)` any one). Values are made on first use
    and kept: a table of 1,000 columns builds only the columns a spec names."""

    def __init__(self, names: list[str], info: list[ColumnInfo], load: Callable[[int], np.ndarray]):
        self.names, self.info, self._load = tuple(names), tuple(info), load
        self._made: dict[int, np.ndarray] = {}
        self._first: dict[str, int] = {}  # name -> its first column, in the file's order
        for i, n in enumerate(self.names):
            self._first.setdefault(n, i)

    @classmethod
    def of(cls, arrays: Mapping[str, np.ndarray]) -> Columns:
        """Columns of arrays already in memory."""
        values = [np.asarray(a) for a in arrays.values()]
        return cls(list(arrays), [ColumnInfo(a.shape, a.dtype) for a in values], values.__getitem__)

    def at(self, i: int) -> np.ndarray:
        if i not in self._made:
            self._made[i] = self._load(i)
        return self._made[i]

    def __getitem__(self, name: str) -> np.ndarray:
        return self.at(self._first[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._first)

    def __len__(self) -> int:
        return len(self._first)

    @property
    def rows(self) -> int | None:
        """Examples, when every column has as many (None when they differ, or there is no column)."""
        counts = {i.shape[0] if i.shape else 1 for i in self.info}
        return counts.pop() if len(counts) == 1 else None

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: self.info[i].shape for n, i in self._first.items()}

    @property
    def dtypes(self) -> dict[str, np.dtype]:
        return {n: self.info[i].dtype for n, i in self._first.items()}


@dataclass(frozen=True)
class ReadOptions:
    """What a reader needs from the spec (or from the command reading a file)."""

    delimiter: str | None = None  # tables: None is the file's default (tab for .tsv and .data, comma otherwise)
    columns: tuple[str, ...] | None = None  # tables without a header row: their column names
    image_size: tuple[int, int] | None = None  # images: (height, width) to resize to; None keeps their size
    image_mode: str = "RGB"  # images: the PIL mode to convert to
    cache_name: str = "images"  # image folders: the name their decoded arrays are cached under


# --- the registry ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """One kind of data file. `read(path, options)` returns its columns, raising DataErrors that name the file
    (`specc.core.files.bad`); `schema(path)`, where the format declares its columns, returns them without reading
    any value (what facts need cheaply)."""

    name: str
    suffixes: tuple[str, ...]  # lower case, with the dot; a folder source: those of the files inside it
    description: str  # "`.npz` arrays": the checker's hint lists them
    layout: str  # one of LAYOUTS
    read: Callable[[Path, ReadOptions], Columns]
    settings: tuple[str, ...] = ("file",)  # of SETTINGS; () for a `specc predict` input only
    folder: bool = False  # a folder (or a tar of one) of files with these suffixes, not one file
    schema: Callable[[Path], dict[str, ColumnInfo]] | None = None


SOURCES: dict[str, Source] = {}


def register(src: Source) -> Source:
    """Add a source; a suffix that another file source reads already is a bug (each suffix has one reader)."""
    if src.layout not in LAYOUTS or not set(src.settings) <= set(SETTINGS) or src.name in SOURCES:
        raise InternalError(f"data source {src.name!r}: a new name, a layout of {LAYOUTS}, settings of {SETTINGS}")
    if any(s != s.lower() or not s.startswith(".") for s in src.suffixes):
        raise InternalError(f"data source {src.name!r}: suffixes are lower case and start with a dot")
    taken = {s: o.name for o in SOURCES.values() if not o.folder for s in o.suffixes}
    clash = [s for s in src.suffixes if s in taken] if not src.folder else []
    if clash:
        raise InternalError(f"data source {src.name!r}: {clash[0]} is read by source {taken[clash[0]]!r} already")
    SOURCES[src.name] = src
    return src


def source(name: str, suffixes: tuple[str, ...], description: str, layout: str, *, settings: tuple[str, ...] = ("file",),
           folder: bool = False, schema: Callable[[Path], dict[str, ColumnInfo]] | None = None):
    """Register the decorated reader as source `name` (see `Source`)."""

    def add(read: Callable[[Path, ReadOptions], Columns]) -> Callable[[Path, ReadOptions], Columns]:
        register(Source(name, suffixes, description, layout, read, settings, folder, schema))
        return read

    return add


def source_for(name: str | Path, setting: str | None = "file", *, fold_case: bool = True) -> Source | None:
    """The file source that reads `name` (by its suffix), among those `setting` may name (None: any, as `specc
    predict` takes them); None if there is none. `fold_case=False` matches the suffix as written."""
    text = str(name).lower() if fold_case else str(name)
    return next((s for s in SOURCES.values() if not s.folder and (setting is None or setting in s.settings)
                 and text.endswith(s.suffixes)), None)


def layout_of(name: str | Path | None, *, fold_case: bool = True) -> str | None:
    """The layout of the file source `file:` names (None: no file, or no source reads it)."""
    found = source_for(name, fold_case=fold_case) if name else None
    return found.layout if found else None


def accepted_suffixes(setting: str = "file") -> tuple[str, ...]:
    """Every suffix the file sources that `setting` may name read, in registration order."""
    return tuple(s for src in SOURCES.values() if not src.folder and setting in src.settings for s in src.suffixes)


def reads_hint(setting: str = "file") -> str:
    """What `setting` may name, in words: "specc reads `.npz` arrays, `.csv`/`.tsv`/`.data` tables and `.txt` text"."""
    words = [s.description for s in SOURCES.values() if not s.folder and setting in s.settings]
    return "specc reads " + (", ".join(words[:-1]) + " and " if len(words) > 1 else "") + words[-1]


def is_image_file(path: Path) -> bool:
    found = source_for(path.suffix, None)
    return found is not None and found.layout == "image"


def image_files(folder: Path) -> list[Path]:
    """Every image file under `folder`, at any depth, in sorted order."""
    return [f for f in sorted(folder.rglob("*")) if f.is_file() and is_image_file(f)]


# --- the sources ------------------------------------------------------------------------------------------------------


def _npz_schema(path: Path) -> dict[str, ColumnInfo]:
    return {k: ColumnInfo(shape, dtype) for k, (shape, dtype) in check_npz(path).items()}


@source("npz", (".npz",), "`.npz` arrays", "arrays", schema=_npz_schema)
def read_npz_columns(path: Path, options: ReadOptions) -> Columns:
    return Columns.of(read_npz(path))  # checked from its directory and headers first; never unpickled


TABLE_SUFFIXES = (".csv", ".tsv", ".data")


@source("table", TABLE_SUFFIXES, "`.csv`/`.tsv`/`.data` tables", "table")
def read_table_columns(path: Path, options: ReadOptions) -> Columns:
    """Every field as text (an object array of str per column): which columns are numbers is the spec's to say."""
    delimiter = options.delimiter or ("\t" if path.suffix in (".tsv", ".data") else ",")
    header, rows = read_table(path, delimiter, list(options.columns) if options.columns else None)
    info = [ColumnInfo((len(rows),), np.dtype(object))] * len(header)
    return Columns(header, info, lambda i: text_column([r[i] for r in rows]))


def read_table(path: Path, delimiter: str, columns: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """(column names, rows) of a delimited text file; `columns` names them when there is no header row.
    Tab-separated files are read without quoting (as GLUE and MovieLens write them). Every row has as many
    fields as there are columns: a row with more or fewer is a DataError naming the file and its line (a
    `specc.core.files` error: `prepare.file_message` leads with the file). Blank lines are left out."""
    quoted = delimiter != "\t"
    rows, lines = [], []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, delimiter=delimiter, quoting=csv.QUOTE_MINIMAL if quoted else csv.QUOTE_NONE)
            for r in reader:
                if r:
                    rows.append(r)
                    lines.append(reader.line_num)
    except (UnicodeDecodeError, csv.Error) as err:
        raise bad(path, f"cannot read {path} as delimited text: {printable(str(err), lines=False)[:200]}",
                  "save it as UTF-8 text, one example per line") from None
    except OSError as err:
        raise bad(path, f"cannot read it: {err.strerror or err}") from None
    header = list(columns) if columns else (rows.pop(0) if rows else [])
    if not columns and lines:
        lines.pop(0)
    for r, line in zip(rows, lines):
        if len(r) != len(header):
            shown = ", ".join(printable(c, lines=False)[:40] for c in header[:20]) + (", ..." if len(header) > 20 else "")
            raise bad(path, f"line {line}: {len(r)} fields, expected {len(header)} ({shown})",
                      f"is the delimiter {delimiter!r} right? set `delimiter:` in `data`" if len(r) == 1 or len(header) == 1
                      else "every row needs one value per column; quote values that hold the delimiter"
                      if quoted else "every row needs one value per column")
    return header, rows


def text_column(items: list[str]) -> np.ndarray:
    """Texts as a column: a 1-d object array of str (NumPy's fixed-width strings would pad every text)."""
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


@source("text", (".txt",), "`.txt` text", "text")
def read_text_columns(path: Path, options: ReadOptions) -> Columns:
    """The whole file as one text: column `text`, one row."""
    try:
        return Columns.of({"text": text_column([path.read_text(encoding="utf-8")])})
    except UnicodeDecodeError as err:
        raise bad(path, f"{path} is not UTF-8 text: {err}") from None


@source("npy", (".npy",), "`.npy` arrays", "array", settings=())
def read_npy_columns(path: Path, options: ReadOptions) -> Columns:
    """One array of examples: column `x`."""
    return Columns.of({"x": read_npy(path)})  # its header checked first (numbers, a size within bounds)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


@source("image", IMAGE_SUFFIXES, "image files", "image", settings=())
def read_image_columns(path: Path, options: ReadOptions) -> Columns:
    """One image (checked by `specc.core.files`: bounded, a damaged file a DataError naming it): column `x`,
    one row of (height, width[, channels]) uint8."""
    return Columns.of({"x": read_image_file(path, options.image_mode, options.image_size)[None]})


@source("images", IMAGE_SUFFIXES, "folders of `<class>/<image>` files, or tars of them", "images",
        settings=("images",), folder=True)
def read_image_tree(path: Path, options: ReadOptions) -> Columns:
    """Images in `<class>/<file>` folders, or `train/<class>/<file>` and `test/<class>/<file>`, from a folder or
    a tar of one: columns `x_train`, `y_train` (and `x_test`, `y_test` if there is a test folder) and `classes`.
    Labels number the class folders in sorted order. Decoded once; the arrays are cached under
    `$SPECC_CACHE_DIR`, so a second run does not decode again."""
    size = options.image_size
    key = file_key(path) if path.is_file() else hashlib.sha256(
        "".join(f"{f}:{f.stat().st_mtime_ns}" for f in sorted(path.rglob("*")) if f.is_file()).encode()).hexdigest()[:16]
    cached = cache_dir() / f"{options.cache_name}-{key}{f'-{size[0]}x{size[1]}' if size else ''}.npz"
    if cached.is_file():
        with np.load(cached, allow_pickle=False) as z:
            return Columns.of({k: z[k] for k in z.files})
    found: dict[str, list[tuple[str, str, np.ndarray]]] = {}
    for parts, image in _image_members(path, size):  # images outside any class folder are left out
        split_at = next((i for i, p in enumerate(parts[:-2]) if p in ("train", "test")), None)
        split = parts[split_at] if split_at is not None else "train"
        found.setdefault(split, []).append((parts[-2], "/".join(parts), image))
    if not found.get("train"):
        raise DataError(Diagnostic(f"{path} holds no images in `<class>/<file>` or `train/<class>/<file>` folders"))
    classes = sorted({c for items in found.values() for c, _, _ in items})
    label = {c: i for i, c in enumerate(classes)}
    arrays: dict[str, np.ndarray] = {"classes": np.array(classes)}
    for split, items in found.items():
        shapes = {a.shape for _, _, a in items}
        if len(shapes) > 1:
            raise DataError(Diagnostic(f"{path}: the {split} images differ in size ({', '.join(map(str, sorted(shapes)[:3]))})",
                                       hint="add `image_size: (height, width)` to `data` to resize them"))
        # Folders list examples class by class; like the official CIFAR batches, examples are kept in one
        # fixed mixed order, so that `--limit N` and `validation_split` see every class.
        order = np.argsort(np.array([name for _, name, _ in items]), kind="stable")
        order = order[np.random.default_rng(0).permutation(len(order))]
        arrays[f"x_{split}"] = np.stack([a for _, _, a in items])[order]
        arrays[f"y_{split}"] = np.array([label[c] for c, _, _ in items], dtype=np.int32)[order]
    _save_npz_atomic(cached, arrays)
    return Columns.of(arrays)


def _image_members(path: Path, size: tuple[int, int] | None):
    """(relative path parts, decoded RGB image) for every image file in a folder or a tar of one, each checked
    by `specc.core.files` (bounded, a damaged file a DataError naming it), the decoded total bounded too."""
    budget = DecodedBudget(path)
    if path.is_dir():
        for f in image_files(path):
            parts = f.relative_to(path).parts
            if len(parts) >= 2:
                image = read_image_file(f, "RGB", size)
                budget.add(image)
                yield parts, image
        return
    for name, raw in tar_image_members(path, SOURCES["images"].suffixes):
        parts = Path(name).parts
        if len(parts) >= 2:
            image = decode_image(raw, path, name, "RGB", size)
            budget.add(image)
            yield parts, image


def file_key(path: Path) -> str:
    """A file's identity for a cache: its path, size and modification time."""
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]


def _save_npz_atomic(path: Path, arrays: dict) -> None:

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, lambda f: np.savez(f, **arrays))
    except OSError:
        pass  # a cache that cannot be written only costs time
