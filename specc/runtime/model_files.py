"""Model files, checked before Keras reads them, and the one loader of `.keras`/`.h5` files (`load_model`;
`open_model` for the commands that use a trained model, `specc.train.rundir.saved_model` finds a run's).

A model file is untrusted input: its zip directory and HDF5 dataset shapes are checked against the bounds below
before anything is decompressed, and Keras then loads it in safe mode with specc's registered objects known
(`specc.runtime.custom_objects`).
"""

from __future__ import annotations

from specc.core.files import is_bomb, json_depth, size_text
from specc.runtime import custom_objects  # noqa: F401 - registers PositionEmbedding and ExactMatch with Keras
from specc.runtime.keras_env import import_keras
from specc.core.errors import DataError, Diagnostic, printable

keras = import_keras()


#: Bounds on a model file, checked from what it declares (a zip's directory, an HDF5 file's dataset shapes)
#: before anything is decompressed: a 2 MB `.keras` can declare a 2 GB `config.json`.
MAX_MEMBERS = 1_000  # members of a `.keras` archive (Keras writes 3, plus its assets)
MAX_CONFIG_BYTES = 16 * 2**20  # config.json (measured: 2,000 Dense layers make 2.0 MB; 600 attention/conv/norm 1.3 MB)
MAX_CONFIG_VALUES = 1_000_000  # JSON values in config.json (2,000 Dense layers: 114,000), counted before parsing
MAX_CONFIG_LAYERS = 4_000  # entries of `layers` lists, nested models' included (a spec has at most 2,000 layers)
#: Keras rebuilds a Sequential model's graph at each layer it adds while loading: 250 layers take 10 s, 500
#: take 42 s, 4,000 (a 300 KB file) take over 10 minutes (measured, Keras 3 on JAX).
MAX_SEQUENTIAL_LAYERS = 300
MAX_METADATA_BYTES = 2**20  # metadata.json (a few hundred bytes)
#: JSON members expand like a bomb past a much lower floor: Keras stores them uncompressed, and deflated a
#: 2,000-layer config shrinks 60-80x (measured), while `[{},{},...]` shrinks ~1,000x.
JSON_MAX_EXPANSION = 200
JSON_BOMB_FLOOR_BYTES = 64 * 2**10
MAX_WEIGHTS_BYTES = 16 * 2**30  # the weights file, or all the datasets of an `.h5`
MAX_ARCHIVE_BYTES = 17 * 2**30  # every member together
MAX_EXPANSION = 100  # a member stored this many times smaller than it declares, past BOMB_FLOOR_BYTES, is a bomb
BOMB_FLOOR_BYTES = 64 * 2**20
MAX_CONFIG_DEPTH = 100  # brackets inside one another in config.json (a model nested in models reaches ~20)

_GET_ONE = "save the model again (`model.save(\"model.keras\")`), or copy the whole file again"


def _bad(path, message: str, hint: str = _GET_ONE):

    return DataError(Diagnostic(message, file=str(path), hint=hint))


def _member(path, archive, name: str, limit: int):
    """The ZipInfo of `name`, refused if it declares more than `limit` bytes or expands like a bomb, or if it is
    encrypted or compressed in a way Python cannot read."""
    import zipfile


    info = archive.getinfo(name)
    shown = printable(name, lines=False)
    if info.flag_bits & 0x1:
        return None, _bad(path, f"member `{shown}` of the archive is encrypted (it needs a password); Keras writes "
                                "no encrypted members", "save the model again without encryption")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA):
        return None, _bad(path, f"member `{shown}` of the archive uses compression method {info.compress_type}, "
                                "which cannot be read (stored, deflate, bzip2 and lzma can)",
                          "save the model again with `model.save(\"model.keras\")`")
    floor, ratio = ((JSON_BOMB_FLOOR_BYTES, JSON_MAX_EXPANSION) if name.endswith(".json")
                    else (BOMB_FLOOR_BYTES, MAX_EXPANSION))
    if info.file_size > limit:
        return None, _bad(path, f"member `{shown}` of the archive declares {size_text(info.file_size)}, more than the "
                                f"{size_text(limit)} specc reads from a model file", "this is not a model specc wrote; "
                                "a file this large is refused before it is decompressed")
    if is_bomb(info.file_size, info.compress_size, floor, ratio):
        return None, _bad(path, f"member `{shown}` of the archive declares {size_text(info.file_size)} but is stored in "
                                f"{size_text(info.compress_size)}: a decompression bomb, refused", "this is not a model "
                                "specc or Keras wrote")
    return info, None


def _check_keras(path) -> dict:
    """A `.keras` archive's config, after its directory was checked against the bounds above."""
    raw = _read_config(path)
    _check_config_values(path, raw)
    config = _parse_config(path, raw)
    _check_config_layers(path, config)
    return config


def _read_config(path) -> bytes:
    """The bytes of the archive's config.json, read only after every member's declared size was checked."""
    import zipfile


    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as err:
        raise _bad(path, f"not a valid .keras file: it is truncated or not a zip archive ({printable(str(err), lines=False)[:200]})") from None
    with archive:
        _check_directory(path, archive)
        try:
            return archive.read("config.json")
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError, NotImplementedError) as err:
            raise _bad(path, f"member `config.json` cannot be read: the archive is damaged ({printable(str(err), lines=False)[:200]})") from None


def _check_directory(path, archive) -> None:
    """The zip's directory: how many members, their declared sizes in all and one by one, a config.json."""
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise _bad(path, f"the archive holds {len(infos):,} members; a .keras file holds a few (at most "
                         f"{MAX_MEMBERS:,} are read)")
    total = sum(i.file_size for i in infos)
    if total > MAX_ARCHIVE_BYTES:
        raise _bad(path, f"the archive's members declare {size_text(total)} in all, more than the "
                         f"{size_text(MAX_ARCHIVE_BYTES)} specc reads from a model file")
    names = {i.filename for i in infos}
    if "config.json" not in names:
        raise _bad(path, "not a Keras model archive: it has no config.json")
    limits = {"config.json": MAX_CONFIG_BYTES, "metadata.json": MAX_METADATA_BYTES}
    for info in infos:
        _, problem = _member(path, archive, info.filename, limits.get(info.filename, MAX_WEIGHTS_BYTES))
        if problem is not None:
            raise problem


def _check_config_values(path, raw: bytes) -> None:
    """An upper bound on the JSON values, from the bytes that start one (`[`, `{`, `,`), before anything is
    parsed: 16 MiB of `{},` would make 5.6 million dicts (gigabytes) for Keras to walk."""
    values = 1 + raw.count(b",") + raw.count(b"[") + raw.count(b"{")
    if values > MAX_CONFIG_VALUES:
        raise _bad(path, f"member `config.json` holds up to {values:,} JSON values; a Keras model's config holds "
                         f"about 60 per layer (at most {MAX_CONFIG_VALUES:,} are read)",
                   "this is not a model specc or Keras wrote")


def _parse_config(path, raw: bytes) -> dict:
    """config.json parsed: JSON, nested at most `MAX_CONFIG_DEPTH` deep, an object."""
    import json

    try:
        config = json.loads(raw)  # the C scanner stops at the interpreter's recursion limit: RecursionError
    except RecursionError:
        config, depth = None, None
    except (ValueError, UnicodeDecodeError) as err:
        raise _bad(path, f"member `config.json` is not JSON ({printable(str(err), lines=False)[:200]})") from None
    else:
        depth = json_depth(config, MAX_CONFIG_DEPTH)
    if depth is None or depth > MAX_CONFIG_DEPTH:
        raise _bad(path, f"member `config.json` nests {'a thousand or more' if depth is None else f'more than {MAX_CONFIG_DEPTH}'} "
                         f"levels deep; a Keras model's config nests about 10 (at most {MAX_CONFIG_DEPTH} are read)",
                   "this is not a model specc or Keras wrote")
    if not isinstance(config, dict):
        raise _bad(path, f"member `config.json` holds a JSON {type(config).__name__}, not a model's config (an object)")
    return config


def _check_config_layers(path, config: dict) -> None:
    """The layers Keras would build: at most `MAX_CONFIG_LAYERS` in all (2,000 Dense layers load in ~10 s),
    and no Sequential model of more than `MAX_SEQUENTIAL_LAYERS`."""
    layers, todo = 0, [config]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            found = item.get("layers")
            layers += len(found) if isinstance(found, list) else 0
            _check_sequential(path, item)
            todo += item.values()
        elif isinstance(item, list):
            todo += item
    if layers > MAX_CONFIG_LAYERS:
        raise _bad(path, f"member `config.json` lists {layers:,} layers; specc reads models of at most "
                         f"{MAX_CONFIG_LAYERS:,} (a spec holds at most 2,000)", "this is not a model specc wrote")


def _check_sequential(path, item: dict) -> None:
    """One entry of the config: if it is a Sequential model, at most `MAX_SEQUENTIAL_LAYERS` layers."""
    inner = item.get("config")
    found = inner.get("layers") if item.get("class_name") == "Sequential" and isinstance(inner, dict) else None
    if isinstance(found, list) and len(found) > MAX_SEQUENTIAL_LAYERS:
        raise _bad(path, f"member `config.json` holds a Sequential model of {len(found):,} layers; Keras "
                         f"rebuilds it at every layer it loads (minutes past {MAX_SEQUENTIAL_LAYERS:,} layers, "
                         "which is the most specc reads)", "save it as a functional model "
                         "(`keras.Model(inputs, outputs)`), which loads in one pass")


def _check_h5(path) -> None:
    """An HDF5 model file: its datasets' declared sizes, summed, within bounds; none stored outside it."""
    import h5py


    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as err:
        raise _bad(path, f"not a valid HDF5 file: it is truncated or of another kind ({printable(str(err), lines=False)[:200]})") from None
    total, found = 0, []
    with f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                found.append((name, obj.external, int(obj.size) * obj.dtype.itemsize))
        try:
            f.visititems(visit)
        except (OSError, ValueError, RuntimeError) as err:
            raise _bad(path, f"the HDF5 file cannot be read: it is damaged ({printable(str(err), lines=False)[:200]})") from None
    for name, external, nbytes in found:
        if external:
            raise _bad(path, f"dataset `{printable(name, lines=False)}` is stored outside the file; specc reads "
                             "only what the file itself holds", "this is not a model specc or Keras wrote")
        total += nbytes
        if total > MAX_WEIGHTS_BYTES:
            raise _bad(path, f"its datasets declare more than the {size_text(MAX_WEIGHTS_BYTES)} specc reads from a "
                             f"model file (at `{printable(name, lines=False)}`)", "this is not a model specc wrote")


def check_model_file(path) -> dict | None:
    """Refuse a model file that is not what it claims before Keras reads it: a truncated or foreign file, a
    zip or HDF5 bomb, too many members, a config nested past `MAX_CONFIG_DEPTH`. A `DataError` naming the
    file (and the member). Returns a `.keras` file's config (parsed JSON: nothing built), else None."""
    import os
    import stat
    from pathlib import Path

    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        raise _bad(path, f"cannot read the model file: {err.strerror or err}", "give a .keras file") from None
    if not stat.S_ISREG(mode):
        raise _bad(path, "not a regular file (a folder, a pipe or a device): a model is a .keras file",
                   "give a .keras file")
    if path.suffix.lower() in (".h5", ".hdf5"):
        _check_h5(path)
        return None
    return _check_keras(path)


def model_config(path) -> dict:
    """The config of a `.keras` file (a dict), checked as `check_model_file` does."""
    config = check_model_file(path)
    if config is None:
        raise _bad(path, "expected a Keras 3 `.keras` file", "save one with `model.save(\"model.keras\")`")
    return config


def load_model(path, compile: bool = True, checked: bool = False):
    """`keras.saving.load_model` with specc's registered objects known (safe mode stays on), after
    `check_model_file` (unless the caller has just run it: `checked`). Every model file specc reads comes here."""
    if not checked:
        check_model_file(path)
    return keras.saving.load_model(path, compile=compile, safe_mode=True)


def open_model(path, compile: bool = True):
    """`load_model` for the commands that use a trained model (`eval`, `predict`, `export`, `generate`): a file
    that passes the checks but that Keras cannot read (corrupt, foreign, code in safe mode) is a `DataError`
    naming it, never a traceback. (`init` and `import` say it in their own words: they call `load_model`.)"""
    check_model_file(path)  # truncated, not a zip, a bomb: a DataError naming the file and the member
    try:
        return load_model(path, compile=compile, checked=True)
    except Exception as err:  # noqa: BLE001 - a corrupt, truncated or foreign file
        raise DataError(Diagnostic(f"cannot load the model: {(str(err).strip().splitlines() or [type(err).__name__])[0][:300]}",
                                   file=str(path))) from None
