"""Using a trained run: `specc eval RUN_DIR [--data FILE]` and `specc predict RUN_DIR INPUT [-o FILE]`.

A run directory (see `specc.train.runner`) holds `spec.model`, `model.keras`, `metrics.json` and, where the
data needed them, `tokenizer.json` and `classes.json`. Both commands load the model in Keras's safe mode
and prepare data exactly as the run did: the spec's `data` section (scale, flatten, reshape, one_hot), the
saved vocabulary, the saved class names.

Paths inside `spec.model` (`file:`, `images:`, a saved `tokenizer`) are relative to the spec as it was run,
which `metrics.json` names (`"spec"`). They are looked up there (as given, from the working directory, and
from the folder above `runs/`), and otherwise beside the run's own `spec.model`.

Inputs of `predict` are raw, like the training data: a `.npy` of MNIST digits holds 0..255 pixels of shape
(N, 28, 28), and the spec's own `flatten`/`reshape`/`scale` are applied to it (a single example without the
batch axis is taken too). `.csv` files have the spec's feature columns by name (a target column is ignored);
images are read as the run read its training images (RGB, or grayscale for MNIST-like inputs) and resized to
the size it trained on; `.txt` files give one text per line to a text classifier.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from specc.compile.losses import BINARY, loss_class, loss_kind
from specc.core.artifacts import write_atomic
from specc.core.files import read_classes
from specc.core.errors import DataError, Diagnostic, UsageError, printable
from specc.core.plan import Plan, SavedTokenizer
from specc.data.sources import SOURCES, ReadOptions, Source, image_files, source_for
from specc.train.distribute import eval_batch_size


# --- the run directory --------------------------------------------------------------------


@dataclass
class Run:
    """A finished run directory: its spec (data paths resolved), metrics, class names and vocabulary."""

    path: Path
    plan: Plan
    metrics: dict[str, Any]
    classes: list[str] | None = None
    base: Path | None = None  # the folder the spec's relative data paths were resolved from
    _model: Any = field(default=None, repr=False)

    @property
    def model_file(self) -> Path:
        from specc.train.rundir import saved_model

        return saved_model(self.path)

    @property
    def tokenizer_file(self) -> Path | None:
        f = self.path / "tokenizer.json"
        return f if f.is_file() else None

    @property
    def batch_size(self) -> int:
        """The batch of `eval` and `predict`: the one `specc run` evaluated its test split with."""
        return eval_batch_size(self.plan.train.batch_size if self.plan.train else 32)

    def model(self):
        """The run's model, loaded once (safe mode, as trained and compiled)."""
        if self._model is None:
            from specc.runtime.model_files import open_model

            self._model = open_model(self.model_file)
        return self._model

    def class_names(self) -> list[str] | None:
        """Names of the classes: classes.json, CIFAR-10's, else None."""
        if self.classes is not None:
            return self.classes
        d = self.plan.data
        if d is not None and d.dataset == "cifar10":
            from specc.data.prepare import CIFAR10_CLASSES

            return list(CIFAR10_CLASSES)
        return None


def open_run(run_dir: str | Path) -> Run:
    """Read a run directory; UsageError when it is not one."""
    from specc.compile.check import compile_text
    from specc.lang.syntax import read_spec

    path = Path(run_dir)
    if not path.is_dir():
        raise UsageError(Diagnostic("no such run directory" if not path.exists() else "not a directory: give a run directory",
                                    file=str(path), hint="train one with `specc run SPEC --out DIR`"))
    for name in ("spec.model", "model.keras"):
        if not (path / name).is_file():
            raise UsageError(Diagnostic(f"not a finished run: it has no {name}", file=str(path),
                                        hint="give the directory `specc run` wrote (it holds spec.model, "
                                        "model.keras and metrics.json)"))
    metrics: dict[str, Any] = {}
    if (path / "metrics.json").is_file():
        try:
            metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise UsageError(Diagnostic(f"cannot read metrics.json: {err}", file=str(path))) from None
        if not isinstance(metrics, dict):
            metrics = {}
    spec_file = path / "spec.model"
    plan = compile_text(read_spec(spec_file), str(spec_file))
    classes = read_classes(path / "classes.json") if (path / "classes.json").is_file() else None
    plan, base = _resolve_data_paths(plan, path, metrics.get("spec"))
    return Run(path=path, plan=plan, metrics=metrics, classes=classes, base=base)


def _spec_folders(run: Path, original: Any) -> list[Path]:
    """Where the spec was when it ran, most likely first, then the run directory itself."""
    found: list[Path] = []
    if isinstance(original, str) and original and not original.startswith("<"):
        spec = Path(original)
        if spec.is_absolute():
            found.append(spec.parent)
        else:
            found += [Path.cwd() / spec.parent, run.resolve().parent.parent / spec.parent]
    found.append(run.resolve())
    return list(dict.fromkeys(found))


def _resolve_data_paths(plan: Plan, run: Path, original: Any) -> tuple[Plan, Path | None]:
    """The plan with its relative data paths made absolute: from the first candidate folder where they all
    exist; if none has them all, from the original spec's folder (errors then name those paths)."""
    d = plan.data
    if d is None:
        return plan, None
    keys = [k for k in ("file", "test_file", "images") if getattr(d, k)]
    tok = d.tokenizer.path if isinstance(d.tokenizer, SavedTokenizer) else None
    names = [getattr(d, k) for k in keys] + ([tok] if tok else [])
    if not any(not Path(n).is_absolute() for n in names):
        return plan, None
    folders = _spec_folders(run, original)
    base = next((f for f in folders if all((f / n).exists() for n in names)), folders[0])
    update: dict[str, Any] = {k: str(base / getattr(d, k)) for k in keys}
    if tok:
        update["tokenizer"] = SavedTokenizer(path=str(base / tok))
    return plan.model_copy(update={"data": d.model_copy(update=update)}), base


# --- the data the run was tested on, or other data in its format ---------------------------


def _data_plan(run: Run, **update) -> Plan:
    """The run's plan with changed `data` settings, reading the run's saved vocabulary."""
    d = run.plan.data
    assert d is not None
    if d.is_text and run.tokenizer_file is not None:
        update.setdefault("tokenizer", SavedTokenizer(path=str(run.tokenizer_file.resolve())))
    return run.plan.model_copy(update={"data": d.model_copy(update=update)})


def load_test_split(run: Run):
    """The run's test split, prepared as the run prepared it (a `specc.data.prepare.Dataset`)."""
    from specc.data.prepare import load_dataset, prepare

    d = run.plan.data
    if d is None:
        raise DataError(Diagnostic("the spec has no `data` section: there is no test split to use",
                                   file=str(run.path / "spec.model"), hint="give data with --data FILE"))
    plan = _data_plan(run)
    # With no held-out data the run tested on its training examples: the first `examples` of them.
    limit = run.metrics.get("examples") if run.metrics.get("test_on") == "train" else None
    ds = prepare(plan, load_dataset(plan), limit if isinstance(limit, int) else None)
    if run.classes is not None and ds.classes is not None and list(ds.classes) != run.classes:
        raise DataError(Diagnostic(
            f"the image folder now has classes {ds.classes}, but the run trained on {run.classes} (classes.json)",
            file=str(d.images), hint="evaluate on a folder with the run's classes: --data FOLDER"))
    return ds


def other_data(run: Run, name: str):
    """A file (npz, csv/tsv, txt) or an image folder in the spec's data format, prepared like the run's
    data; every example of it is evaluated (its `x_test`/`y_test` arrays, if an npz has both splits)."""
    from specc.data.prepare import Dataset, load_dataset, prepare

    path = Path(name)
    if not path.exists():
        raise UsageError(Diagnostic("no such file or folder", file=name))
    d = run.plan.data
    if d is None:
        raise UsageError(Diagnostic("the spec has no `data` section, so specc cannot tell how to read --data",
                                    file=str(run.path / "spec.model")))
    classes = _output_width(run)
    one_hot = classes if d.one_hot is True and classes else d.one_hot
    if path.is_dir():
        x, y, _ = _read_image_folder(run, path)
        plan = _data_plan(run, one_hot=one_hot)
        return _wrapped(name, lambda: prepare(plan, Dataset(x, y, x, y, test_is_train=True)))
    found = source_for(path.suffix)  # the sources a spec's `file:` may name
    if found is None:
        suffix = path.suffix.lower()
        raise UsageError(Diagnostic(f"cannot read `{suffix or path.name}` files as data: give an .npz, .csv/.tsv or "
                                    ".txt file in the spec's format, or a folder of images in class folders", file=name))
    update: dict[str, Any] = {"dataset": None, "images": None, "file": str(path.resolve()), "test_file": None,
                              "test_split": 0.0, "one_hot": one_hot}
    if d.dataset == "sst2":
        update.update(text="sentence", target="label")
    if found.layout == "table" and not (d.features or d.text or update.get("text") or len(run.plan.inputs) > 1):
        raise UsageError(Diagnostic("the spec names no table columns (no `features:` or `text:` in `data`), so a "
                                    "table cannot be read as its data", file=name,
                                    hint="give an .npz file with `x` and `y` arrays (raw, like the training data)"))
    if found.layout == "arrays" and found.schema is not None and len(run.plan.inputs) == 1 and len(run.plan.outputs) == 1:
        keys = set(found.schema(path))  # declared columns (an .npz's directory and headers): nothing decompressed
        xs = d.x if isinstance(d.x, str) else None
        if not ({xs, "x_train", "x"} & keys) and {"x_test", "y_test"} <= keys:
            update.update(x="x_test", y="y_test")
    plan = _data_plan(run, **update)
    return _wrapped(name, lambda: prepare(plan, load_dataset(plan)))


def _wrapped(name: str, load):
    """Run `load()`; its DataErrors name the file given on the command line, not the spec."""
    try:
        return load()
    except DataError as err:
        raise DataError(Diagnostic(err.message, file=name, hint=err.hint)) from None


def _output_width(run: Run) -> int | None:
    outs = run.model().outputs
    return int(outs[0].shape[-1]) if len(outs) == 1 and outs[0].shape[-1] else None


# --- images ------------------------------------------------------------------------------------


def image_format(run: Run) -> tuple[str, tuple[int, int]]:
    """(PIL mode, (height, width)) of the raw images the run trained on."""
    d = run.plan.data
    model_in = run.plan.inputs[0].shape if len(run.plan.inputs) == 1 else ()
    if d is not None and d.dataset in ("mnist", "fashion_mnist"):
        return "L", (28, 28)
    if d is not None and d.dataset == "cifar10":
        return "RGB", (32, 32)
    if d is not None and d.images and d.image_size:
        height, width = d.image_size
        return "RGB", (height, width)
    known = [size for size in model_in if size is not None]  # all of them: an input with no free dimension
    if len(model_in) == 3 and len(known) == 3 and known[-1] in (1, 3):
        return ("L" if known[-1] == 1 and not (d and d.images) else "RGB"), (int(known[0]), int(known[1]))
    if len(model_in) == 2 and len(known) == 2:
        return "L", (int(known[0]), int(known[1]))
    raise UsageError(Diagnostic(
        f"cannot tell which images this model takes: its input is {tuple(model_in)} and the spec names no image "
        "size", file=str(run.path / "spec.model"),
        hint="give the images as a .npy array, or add `image_size: (height, width)` to the spec's `data`"))


def read_images(run: Run, files: list[Path]) -> np.ndarray:
    """(N, H, W[, 3]) uint8: each file read as the run read its training images (converted to RGB, or to
    grayscale for MNIST-like inputs, resized with Pillow's default filter to the training size)."""
    from specc.core.files import DecodedBudget

    mode, size = image_format(run)
    budget = DecodedBudget(files[0].parent if len(files) > 1 else files[0])
    options, out = ReadOptions(image_size=size, image_mode=mode), []
    for f in files:  # as `specc run` reads an image folder: bounded, a damaged file a DataError naming it
        out.append(SOURCES["image"].read(f, options)["x"][0])
        budget.add(out[-1])
    return np.stack(out)


def _read_image_folder(run: Run, folder: Path) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Images in class folders (`<class>/<file>`, at any depth): (x, labels, files). Class names are the
    run's (classes.json, CIFAR-10's names, else the label numbers `0`, `1`, ...)."""
    files = [f for f in image_files(folder) if f.parent != folder]
    if not files:
        raise DataError(Diagnostic("holds no images in class folders (`<class>/<file>`)", file=str(folder)))
    names = run.class_names() or [str(i) for i in range(_output_width(run) or 0)]
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted({f.parent.name for f in files if f.parent.name not in index})
    if unknown:
        raise DataError(Diagnostic(f"class folders {printable(', '.join(unknown[:5]), lines=False)} are not classes of "
                                   "the run", file=str(folder),
                                   hint=f"the run's classes: {printable(', '.join(names[:20]), lines=False)}"
                                   if names else None))
    return read_images(run, files), np.array([index[f.parent.name] for f in files], dtype=np.int32), files


# --- eval ----------------------------------------------------------------------------------------


def evaluate(run: Run, ds, model=None) -> dict[str, float]:
    """The spec's loss and metrics of `model` (default: the run's) on a prepared dataset, computed as
    `specc run` computed its test metrics (same compile, batch size and weights)."""
    from specc.train.runner import compile_model

    model = model if model is not None else run.model()
    compile_model(run.plan, model, weighted=ds.w_train is not None)
    try:
        result = model.evaluate(ds.x_test, ds.y_test, sample_weight=ds.w_test, batch_size=run.batch_size,
                                verbose=0, return_dict=True)
    except (ValueError, TypeError) as err:
        raise DataError(Diagnostic(f"evaluation failed: {str(err).strip().splitlines()[0][:400]}",
                                   file=str(run.path))) from None
    return {k: float(v) for k, v in result.items()}


# --- predict -------------------------------------------------------------------------------------


def predict_outputs(run: Run, x: Any, name: str) -> dict[str, np.ndarray]:
    """The model's outputs for model-ready inputs `x` (read from the file `name`), by output name."""
    model = run.model()
    try:
        raw = model.predict(x, batch_size=run.batch_size, verbose=0)
    except (ValueError, TypeError) as err:
        raise DataError(Diagnostic(f"the model cannot take these inputs: {str(err).strip().splitlines()[0][:300]}",
                                   file=name)) from None
    names = list(run.plan.outputs)
    if isinstance(raw, dict):
        return {k: np.asarray(v) for k, v in raw.items()}
    if isinstance(raw, (list, tuple)):
        return {k: np.asarray(v) for k, v in zip(names, raw)}
    return {names[0]: np.asarray(raw)}


def read_inputs(run: Run, name: str) -> tuple[Any, list[str]]:
    """(model-ready x, a label per example) from INPUT: .npy/.npz arrays, a table, text lines, an image or a
    folder of images. Raw inputs get the spec's preprocessing; shapes are checked against the model."""
    path = Path(name)
    if not path.exists():
        raise UsageError(Diagnostic("no such file or folder", file=name))
    d = run.plan.data
    if d is not None and d.is_text:
        texts = _read_texts(run, path, name)
        return _encode(run, texts), [_short(t) for t in texts]
    if path.is_dir():
        files = image_files(path)
        if not files:
            raise DataError(Diagnostic(f"holds no image files ({', '.join(SOURCES['image'].suffixes)})", file=name))
        return preprocess(run, read_images(run, files), name, images=True), [str(f.relative_to(path)) for f in files]
    found = source_for(path.suffix, None)  # any source, predict inputs included
    layout = found.layout if found else None
    if layout == "image":
        return preprocess(run, read_images(run, [path]), name, images=True), [path.name]
    if layout == "array" and len(run.plan.inputs) > 1:
        raise UsageError(Diagnostic(f"the model has {len(run.plan.inputs)} inputs; a {path.suffix.lower()} file holds "
                                    "one array", file=name, hint="give an .npz with arrays named "
                                    + ", ".join(f"`{i.name}`" for i in run.plan.inputs) + ", or a .csv"))
    read = {"array": _one_array, "arrays": _npz_inputs, "table": _table_inputs}.get(layout or "")
    if found is not None and read is not None:
        x = preprocess(run, read(run, found, path, name), name)
        return x, [str(i) for i in range(_count(x))]
    suffix = path.suffix.lower()
    raise UsageError(Diagnostic(f"cannot predict from `{suffix or path.name}` files", file=name,
                                hint="give a .npy or .npz array, a .csv table, an image file or a folder of images"))


def _count(x) -> int:
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def _short(text: str, width: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _one_array(run: Run, found: Source, path: Path, name: str) -> np.ndarray:
    """The one array of examples of a file that holds one (.npy: its header checked first; never unpickled)."""
    return found.read(path, ReadOptions()).at(0)


def _npz_inputs(run: Run, found: Source, path: Path, name: str):
    """The arrays for the model's inputs from a file of named arrays (an .npz, checked from its directory and
    headers first; never unpickled): named after the inputs, or `x:`'s name, `x`, `x_test`, or its only array."""
    arrays = found.read(path, ReadOptions())
    inputs = [i.name for i in run.plan.inputs]
    if len(inputs) > 1:
        missing = [i for i in inputs if i not in arrays and f"{i}_test" not in arrays]
        if missing:
            raise DataError(Diagnostic(f"has no array for input{'s' if len(missing) > 1 else ''} "
                                       f"{', '.join(f'`{m}`' for m in missing)}; it has: {', '.join(arrays) or 'none'}",
                                       file=name, hint="name the arrays after the model's inputs"))
        return {i: arrays[i] if i in arrays else arrays[f"{i}_test"] for i in inputs}
    d = run.plan.data
    wanted = [inputs[0]] + ([d.x] if d is not None and isinstance(d.x, str) else []) + ["x", "x_test"]
    picked = next((arrays[k] for k in wanted if k in arrays), None)
    if picked is None and len(arrays) == 1:
        picked = next(iter(arrays.values()))
    if picked is None:
        raise DataError(Diagnostic(f"has arrays {', '.join(arrays) or 'none'}; expected one named "
                                   + " or ".join(f"`{w}`" for w in dict.fromkeys(wanted)), file=name))
    return picked


def _table_inputs(run: Run, found: Source, path: Path, name: str):
    """Feature columns by name as the spec reads them (a target column may be there or not); for a spec that
    names no columns (a built-in dataset), rows of numbers, one example per row (a header row is skipped)."""
    from specc.data.prepare import load_dataset

    d = run.plan.data
    if d is None or (not d.features and len(run.plan.inputs) == 1):
        columns = found.read(path, ReadOptions())  # DataErrors name the file
        first = list(columns.names) if _all_numbers(list(columns.names)) else []  # numbers: the file has no header
        try:  # (columns, rows) -> (rows, columns)
            values = [[float(v) for v in first[i:i + 1] + list(columns.at(i))] for i in range(len(columns.names))]
            table = np.array(values, dtype=np.float32).T.copy()
            return table if table.size else np.array([], dtype=np.float32)
        except ValueError:
            raise DataError(Diagnostic("holds values that are not numbers, or rows of different lengths",
                                       file=name)) from None
    plan = _data_plan(run, dataset=None, images=None, file=str(path.resolve()), test_file=None, test_split=0.0,
                      target=None, one_hot=False)
    return _wrapped(name, lambda: load_dataset(plan)).x_train


def _all_numbers(row: list[str]) -> bool:
    try:
        [float(v) for v in row]
        return bool(row)
    except ValueError:
        return False


def _read_texts(run: Run, path: Path, name: str) -> list[str]:
    """Texts for a text classifier: lines of a .txt file, or the spec's text column of a table."""
    if run.tokenizer_file is None:
        raise UsageError(Diagnostic("the run has no tokenizer.json to read text with", file=str(run.path)))
    d = run.plan.data
    assert d is not None
    found = source_for(path.suffix, None)
    layout = found.layout if found else "text"  # any other file: lines of text
    if layout == "table":
        from specc.data.prepare import load_dataset

        update: dict[str, Any] = {"text": d.text or "sentence"} if d.dataset == "sst2" or not d.text else {}
        plan = _data_plan(run, dataset=None, images=None, file=str(path.resolve()), test_file=None, test_split=0.0,
                          target=None, one_hot=False, **update)
        return [str(t) for t in _wrapped(name, lambda: load_dataset(plan)).x_train]
    if path.is_dir() or layout != "text":
        raise UsageError(Diagnostic("this is a text model: give a .txt file with one text per line, or a table with "
                                    f"the text column `{d.text or 'sentence'}`", file=name))
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as err:
        raise DataError(Diagnostic(f"is not UTF-8 text: {err}", file=name)) from None
    if not lines:
        raise DataError(Diagnostic("holds no text (one example per line)", file=name))
    return lines


def _encode(run: Run, texts: list[str]) -> np.ndarray:
    from specc.data.tokenizers import encode_texts, read_vocabulary

    assert run.tokenizer_file is not None and run.plan.data is not None
    vocab = read_vocabulary(run.tokenizer_file)  # a DataError naming the file if it is not one specc wrote
    length = run.plan.data.sequence_length or int(run.plan.inputs[0].shape[0] or 0)
    return encode_texts(vocab, texts, length).astype(run.plan.inputs[0].dtype, copy=False)


def preprocess(run: Run, x, name: str, images: bool = False, note=None):
    """Raw examples -> model inputs through the spec's own preprocessing (`specc.data.prepare`: flatten,
    reshape, scale, dtype, axes of size 1). A lone example (no batch axis) is taken as a batch of one.
    `note(text)` receives remarks about the inputs (default: printed to standard error)."""
    from specc.data.prepare import Dataset, prepare

    if _count(x) == 0:
        raise DataError(Diagnostic("holds no examples", file=name))
    run.model()  # loaded first: a model that does not load is not a shape mismatch
    for key, a in (x.items() if isinstance(x, dict) else [("", x)]):
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            at = tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])
            raise DataError(Diagnostic(f"{f'array `{key}` ' if key else ''}holds {int((~np.isfinite(a)).sum())} NaN or "
                                       f"infinite values (the first at index {at})", file=name,
                                       hint="fill in the missing values or leave those examples out"))
    plan = run.plan if run.plan.data is None else _data_plan(run, one_hot=False)
    if plan.data is None:
        return _check_shapes(run, x, name)

    def prepared(a):
        # Inputs with no labels, which Dataset's type does not allow for: only x_train is read back.
        return prepare(plan, Dataset(a, None, None, None)).x_train  # type: ignore[arg-type]

    d = plan.data
    if not images and not isinstance(x, dict) and d.scale is not None and d.scale < 1 and x.dtype.kind == "f" \
            and x.size and 0 <= float(x.min()) and 0 < float(x.max()) <= 1:
        text = (f"{name} holds values within 0..1; inputs are taken raw, like the training data, and scaled by "
                f"{_number(d.scale)} (`scale` in the spec)")
        if note is None:
            print(f"specc: note: {text}", file=sys.stderr)
        else:
            note(text)
    try:
        return _check_shapes(run, prepared(x), name)
    except DataError as first:
        if "shape" not in first.message:  # bad values (NaN, ...): the file's fault, named as such
            raise DataError(Diagnostic(first.message, file=name, hint=first.hint)) from None
        if isinstance(x, dict):
            raise _shape_error(run, x, name, first) from None
        try:  # one example without its batch axis
            return _check_shapes(run, prepared(x[None]), name)
        except DataError:
            raise _shape_error(run, x, name, first) from None


def _shape_error(run: Run, x, name: str, err: DataError) -> DataError:
    d = run.plan.data
    steps = [s for s, on in (("flatten", d and d.flatten), (f"reshape to {d.reshape}" if d else "", d and d.reshape),
                             (f"scale by {_number(d.scale)}" if d and d.scale is not None else "", d and d.scale is not None)) if on]
    have = ", ".join(f"`{k}`: {tuple(v.shape)}" for k, v in x.items()) if isinstance(x, dict) else str(tuple(x.shape))
    want = ", ".join(f"`{i.name}`: (N, {', '.join('?' if s is None else str(s) for s in i.shape)})"
                     for i in run.plan.inputs)
    return DataError(Diagnostic(
        f"found shape {have}; the model expects {want}" + (f" after the spec's preprocessing ({', '.join(steps)})" if steps else ""),
        file=name, hint="give raw examples like the training data, the first axis counting them (a single example "
        "may leave it out)"))


def _number(v: float) -> str:
    """1/255 rather than 0.00392157."""
    if 0 < abs(v) < 1 and abs(1 / v - round(1 / v)) < 1e-6:
        return f"1/{round(1 / v)}"
    return f"{v:g}"


def _check_shapes(run: Run, x, name: str):
    """Each prepared array against the loaded model's input (the spec and the model could disagree only
    if the run directory was edited)."""
    model = run.model()
    if not isinstance(x, dict) and len(model.inputs) > 1:
        raise DataError(Diagnostic(f"the model has {len(model.inputs)} inputs, the file gives one array", file=name))
    arrays = [x.get(i.name) for i in run.plan.inputs] if isinstance(x, dict) else [x]
    for tensor, a in zip(model.inputs, arrays):
        want = tuple(tensor.shape[1:])
        if a is None or len(a.shape) - 1 != len(want) or any(w is not None and w != h for w, h in zip(want, a.shape[1:])):
            raise DataError(Diagnostic(f"found examples of shape {None if a is None else tuple(a.shape[1:])}; "
                                       f"the model's input `{tensor.name}` expects {want}", file=name))
    return x


# --- tables of predictions ------------------------------------------------------------------------


def refuse_generators(run: Run) -> None:
    """A text model that is not a classifier predicts tokens: `specc generate` samples from it."""
    d = run.plan.data
    if d is None or not d.is_text:
        return
    task = d.task_kind
    if task != "classify":
        raise UsageError(Diagnostic(f"`predict` and `serve` take classifiers; this is a `{task}` model",
                                    file=str(run.path), hint="sample from a next-token model with `specc generate`"))


def output_kind(run: Run, y: np.ndarray) -> str:
    """`classes`, `binary` or `values`, from the spec's loss and the output's width."""
    loss = loss_kind(loss_class(run.plan.train.loss if run.plan.train else None))
    kind = "classes" if loss.classifier else "binary" if loss.labels == BINARY else "values"
    if kind == "classes" and y.shape[-1] < 2:
        return "values"
    if kind == "binary" and y.shape[-1] != 1:
        return "values"
    return kind


def probabilities(run: Run, y: np.ndarray, kind: str) -> np.ndarray:
    """Outputs as probabilities: softmax/sigmoid of logits when the loss says `from_logits`."""
    from specc.core.plan import Obj

    loss = run.plan.train.loss if run.plan.train else None
    logits = isinstance(loss, Obj) and bool(loss.kwargs.get("from_logits"))
    y = y.astype(np.float64)
    if not logits:
        return y
    if kind == "binary":
        return 1 / (1 + np.exp(-y))
    z = np.exp(y - y.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def prediction_rows(run: Run, output: str, y: np.ndarray, labels: list[str]) -> tuple[list[str], list[list[Any]]]:
    """(header, rows): per example, the class (index and name) and its probability, or the values."""
    kind = output_kind(run, y)
    names = run.class_names()
    if kind == "values":
        target = run.plan.data.target if run.plan.data and run.plan.data.target else output
        flat = y.reshape(len(y), -1)
        cols = [target] if flat.shape[1] == 1 else [f"{target}_{i}" for i in range(flat.shape[1])]
        return ["input", *cols], [[lab, *(float(v) for v in row)] for lab, row in zip(labels, flat)]
    p = probabilities(run, y, kind)
    if kind == "binary":
        p = np.concatenate([1 - p, p], axis=-1)
    best = p.argmax(axis=-1)
    if y.ndim > 2:  # a class per position (sequence outputs)
        steps = best.reshape(len(best), -1)
        return ["input", *(f"class_{t}" for t in range(steps.shape[1]))], [[lab, *map(int, row)] for lab, row in zip(labels, steps)]
    named = names if names is not None and len(names) == p.shape[-1] else None  # a name per class, or None
    header = ["input", "class"] + (["name"] if named is not None else []) + ["probability"] \
        + [f"p_{named[c] if named is not None else c}" for c in range(p.shape[-1])]
    rows = [[lab, int(b)] + ([named[int(b)]] if named is not None else []) + [float(pr[b])]
            + [float(v) for v in pr] for lab, b, pr in zip(labels, best, p)]
    return header, rows


def format_table(run: Run, output: str, y: np.ndarray, labels: list[str]) -> str:
    """The printed table: at most the class columns and the probability (not one column per class)."""
    header, rows = prediction_rows(run, output, y, labels)
    if "probability" in header:
        keep = header.index("probability") + 1
        header, rows = header[:keep], [r[:keep] for r in rows]
    cells = [[_cell(v) for v in r] for r in rows]
    header = [printable(h, lines=False) for h in header]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(header)]
    right = [i > 0 and bool(rows) and not isinstance(rows[0][i], str) for i in range(len(header))]

    def line(values):
        return "  ".join(v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)).rstrip()

    return "\n".join([line(header)] + [line(r) for r in cells])


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e5 else f"{v:.6g}"
    return printable(str(v), lines=False)  # class names and file names come from files: no escape sequences


def write_predictions(run: Run, out: Path, outputs: dict[str, np.ndarray], labels: list[str]) -> None:
    """`.npy`: the model's output as it is (one output); `.npz`: every output by name; `.csv`: the table
    with one probability column per class. Written atomically."""
    suffix = out.suffix.lower()
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".npy":
            if len(outputs) > 1:
                raise UsageError(Diagnostic(f"the model has {len(outputs)} outputs; write them to an .npz file",
                                            file=str(out)))
            write_atomic(out, lambda f: np.save(f, next(iter(outputs.values())), allow_pickle=False))
        elif suffix == ".npz":
            # The stubs check `**outputs` against savez's `allow_pickle: bool` too; the arrays are the outputs by name.
            write_atomic(out, lambda f: np.savez(f, **outputs))  # type: ignore[arg-type]
        else:
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            for i, (name, y) in enumerate(outputs.items()):
                header, rows = prediction_rows(run, name, y, labels)
                w.writerow(([] if len(outputs) == 1 else ["output"]) + header)
                for r in rows:
                    w.writerow(([] if len(outputs) == 1 else [name]) + [repr(v) if isinstance(v, float) else v for v in r])
            write_atomic(out, buf.getvalue())
    except OSError as err:
        raise UsageError(Diagnostic(f"cannot write it: {err.strerror or err}", file=str(out))) from None

