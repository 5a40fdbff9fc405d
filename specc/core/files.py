"""Reading data files that may be hostile: every command reads images, archives, arrays, tables and the run
directory's JSON files through here, so a bad file gives one error everywhere.

Each reader checks what a file declares (a zip's directory, an `.npy` header, a tar member's size, an image's
width and height) against the bounds below before anything is decompressed, decoded or allocated, and turns
whatever a damaged file makes the underlying library raise into a `DataError` naming the file (and the member)
and what is wrong. The bounds are generous: CIFAR-10 (60,000 JPEGs, 180 MB decoded), MNIST, SST-2 and
ImageNet-sized images load far inside them; only files that are not data (or are bombs) reach them.
"""

from __future__ import annotations

import io
import json
import math
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import RootModel, ValidationError

from specc.core.units import size_text
from specc.core.errors import DataError, Diagnostic, printable

# --- bounds (named once; each error that enforces one names it and its value in the hint) ---------------------

MAX_DATA_BYTES = 8 * 2**30  # arrays read from one data file, or decoded from one image folder or tar, in all
MAX_IMAGE_PIXELS = 2**26  # one image's width x height (8,192 x 8,192), read from its header before decoding
MAX_IMAGE_FILE_BYTES = 256 * 2**20  # one image file (a JPEG of a 100-megapixel photo is about 30 MB)
MAX_ARCHIVE_MEMBERS = 2_000_000  # members of an image tar (ImageNet's training set has 1.28 million)
MAX_NPZ_MEMBERS = 10_000  # arrays in one .npz file
# A compressed member declaring more than this many times the bytes it is stored in, past the floor, is a bomb (zlib
# reaches ~1,000x on zeros; real arrays, MNIST's included, compress 2-10x; numpy.savez stores without compressing).
MAX_EXPANSION = 200
BOMB_FLOOR_BYTES = 256 * 2**20
MAX_JSON_BYTES = 512 * 2**20  # a run directory's tokenizer.json or classes.json
MAX_JSON_DEPTH = 100  # lists and objects inside one another in such a file (specc writes at most about 10)
MAX_CLASS_NAMES = 2**20  # names in classes.json
NUMBER_KINDS = "biuf"  # NumPy dtype kinds of data arrays: booleans, integers, floats
_KIND_NAMES = {"c": "complex numbers", "m": "time spans", "M": "dates", "O": "Python objects", "S": "byte strings",
               "U": "strings", "V": "records (a structured array)"}


def is_bomb(declared: int, stored: int, floor: int = BOMB_FLOOR_BYTES, ratio: int = MAX_EXPANSION) -> bool:
    """Whether an archive member declaring `declared` bytes, stored in `stored`, expands like a decompression bomb."""
    return declared > floor and declared > ratio * max(stored, 1)


def bad(file: Path | str, message: str, hint: str | None = None) -> DataError:
    """A DataError about `file` (shown escaped: names come from the file system or an archive)."""
    return DataError(Diagnostic(message, file=printable(str(file), lines=False), hint=hint))


def _why(err: BaseException) -> str:
    """The first line of an exception's message, escaped and shortened, for a message about a bad file."""
    return printable((str(err).strip().splitlines() or [type(err).__name__])[0][:200], lines=False)


def member_name(name: str) -> str:
    return f"`{printable(name, lines=False)}`"


# --- arrays ------------------------------------------------------------------------------------------------------


def check_array(file: Path | str, name: str, dtype: np.dtype, shape: tuple[int, ...], what: str = "array") -> None:
    """An array's dtype and shape (from its header) as data: numbers, at least one axis."""
    kind = dtype.kind
    if dtype.hasobject:
        raise bad(file, f"cannot read {what} {member_name(name)}: it holds Python objects, which only unpickling could "
                        "read; specc loads data with allow_pickle=False and never unpickles a data file",
                  "save the examples and labels as numeric arrays")
    if dtype.names is not None or kind not in NUMBER_KINDS:
        found = _KIND_NAMES.get("V" if dtype.names is not None else kind, str(dtype))
        raise bad(file, f"{what} {member_name(name)} holds {found} ({dtype}); data arrays hold numbers "
                        "(integers, floats or booleans)", "save the examples and labels as numeric arrays")
    if len(shape) == 0:
        raise bad(file, f"{what} {member_name(name)} is a single value (0-d), not examples",
                  "save one array of examples (the first axis counting them) and one of labels")


def _npy_header(stream) -> tuple[tuple[int, ...], np.dtype]:
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
    else:  # (3, 0): the header is utf-8; same layout as 2.0
        # numpy reads 3.0 headers only through a private function (the public readers stop at 2.0).
        shape, _, dtype = np.lib.format._read_array_header(stream, version)  # type: ignore[attr-defined]  # noqa: SLF001
    return tuple(int(s) for s in shape), dtype


def npz_names(path: Path) -> list[str]:
    """The array names of an .npz file, after its directory and every array's header were checked."""
    return list(check_npz(path))


def check_npz(path: Path, check=check_array, max_bytes: int = MAX_DATA_BYTES, what: str = "data file",
              floor: int = BOMB_FLOOR_BYTES, ratio: int = MAX_EXPANSION,
              hint: str = "save the arrays with numpy.savez or numpy.savez_compressed") -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{array name: (shape, dtype)} of an .npz file, read from its zip directory and the .npy headers: no array
    is decompressed. Refuses a file that is not a zip of .npy arrays, arrays that `check(path, name, dtype, shape)`
    refuses (by default: non-numeric or 0-d ones, as data), an array whose header declares more than its member
    holds, a member expanding more than `ratio` times past `floor` bytes (a bomb), and more than `max_bytes` in all.
    `what` names the kind of file in messages (the bound is MAX_DATA_BYTES for data)."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise bad(path, "the file is empty (0 bytes)")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as err:
        raise bad(path, f"cannot read it as .npz: it is truncated or not a zip of .npy arrays ({_why(err)})",
                  hint) from None
    found: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    with archive:
        infos = archive.infolist()
        if len(infos) > MAX_NPZ_MEMBERS:
            raise bad(path, f"the archive holds {len(infos):,} members; specc reads at most {MAX_NPZ_MEMBERS:,} arrays "
                            "from one .npz (MAX_NPZ_MEMBERS)")
        total = sum(i.file_size for i in infos)
        if total > max_bytes:
            bound = " (MAX_DATA_BYTES)" if max_bytes == MAX_DATA_BYTES else ""
            raise bad(path, f"its arrays declare {size_text(total)} in all, more than the {size_text(max_bytes)} "
                            f"specc reads from one {what}{bound}",
                      "refused before decompressing; split the data into smaller files" if what == "data file" else
                      "refused before decompressing")
        for info in infos:
            name = info.filename
            if not name.endswith(".npy"):
                raise bad(path, f"member {member_name(name)} is not an .npy array; an .npz holds only .npy arrays")
            key = name[: -len(".npy")]
            try:
                with archive.open(info) as stream:
                    shape, dtype = _npy_header(stream)
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, NotImplementedError, RuntimeError,
                    SyntaxError, TypeError, KeyError, zipfile.LargeZipFile) as err:
                raise bad(path, f"array {member_name(key)} is damaged or not an .npy array ({_why(err)})") from None
            check(path, key, dtype, shape)
            nbytes = math.prod(shape) * dtype.itemsize
            if is_bomb(info.file_size, info.compress_size, floor, ratio):
                bound = "MAX_EXPANSION: " if (floor, ratio) == (BOMB_FLOOR_BYTES, MAX_EXPANSION) else ""
                raise bad(path, f"array {member_name(key)} declares {size_text(info.file_size)} but is stored in "
                                f"{size_text(info.compress_size)}: a decompression bomb, refused before decompressing "
                                f"({bound}{ratio}x past {size_text(floor)})",
                          "if the data really compresses this well, save it uncompressed with numpy.savez")
            if nbytes > info.file_size:
                raise bad(path, f"array {member_name(key)} declares shape {shape} of {dtype} ({size_text(nbytes)}) "
                                f"but its member holds {size_text(info.file_size)}: the file is damaged or forged")
            found[key] = (shape, dtype)
    return found


def read_npz(path: Path, names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Arrays of an .npz file (those in `names`, default all), checked by `check_npz` first; never unpickled."""
    declared = check_npz(path)
    try:
        with np.load(path, allow_pickle=False) as z:  # never unpickle: a data file cannot run code
            return {k: z[k] for k in declared if names is None or k in names}
    except Exception as err:  # noqa: BLE001 - a damaged member (CRC, truncated stream): the file's fault
        raise bad(path, f"cannot read it as .npz: {_why(err)}") from None


def read_npy(path: Path) -> np.ndarray:
    """The array of an .npy file, its header checked before the data is read; never unpickled."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(0)
            if head == b"PK\x03\x04":
                raise bad(path, "holds several arrays (an .npz file): name it .npz")
            shape, dtype = _npy_header(f)
    except DataError:
        raise
    except Exception as err:  # noqa: BLE001 - not an .npy file
        raise bad(path, f"cannot read it as .npy: {_why(err)}") from None
    check_array(path, "", dtype, shape, "the array")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > MAX_DATA_BYTES:
        raise bad(path, f"the array declares shape {shape} ({size_text(nbytes)}), more than the "
                        f"{size_text(MAX_DATA_BYTES)} specc reads from one data file (MAX_DATA_BYTES)")
    if nbytes > path.stat().st_size:
        raise bad(path, f"the array declares shape {shape} of {dtype} ({size_text(nbytes)}) but the file holds "
                        f"{size_text(path.stat().st_size)}: it is truncated")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001
        raise bad(path, f"cannot read it as .npy: {_why(err)}") from None


# --- images ------------------------------------------------------------------------------------------------------


def decode_image(raw: bytes, file: Path | str, member: str | None, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """One image file's bytes as a uint8 array in PIL `mode` (resized to `size` = (height, width) if given).
    Its width and height are read from the header and bounded (MAX_IMAGE_PIXELS) before anything is decoded."""
    from PIL import Image

    where = f"image {member_name(member)}" if member else "this image"
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(raw)) as im:
                w, h = im.size
                if w * h > MAX_IMAGE_PIXELS:
                    raise bad(file, f"{where} declares {w:,} x {h:,} pixels, more than the {MAX_IMAGE_PIXELS:,} specc "
                                    "decodes (MAX_IMAGE_PIXELS); refused before decoding",
                              "resize it, or leave it out: a file this small claiming so many pixels is a "
                              "decompression bomb")
                if w == 0 or h == 0:
                    raise bad(file, f"{where} has no pixels ({w} x {h})")
                pixels = im.convert(mode)
                if size and pixels.size != (size[1], size[0]):
                    pixels = pixels.resize((size[1], size[0]))
                return np.asarray(pixels, dtype=np.uint8)
        except DataError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:  # PIL's bound, before ours
            raise bad(file, f"{where} declares more than the {MAX_IMAGE_PIXELS:,} pixels specc decodes (MAX_IMAGE_PIXELS; "
                            f"{_why(err)}); refused before decoding", "leave it out: a small file claiming so many "
                      "pixels is a decompression bomb") from None
        except Exception as err:  # noqa: BLE001 - PIL raises many kinds on damaged files; all are the file's fault
            why = _why(err).replace(" <_io.BytesIO object at", "").split(" 0x")[0]  # PIL names the buffer we gave it
            raise bad(file, f"cannot read {where}: it is truncated, damaged or not an image ({why})",
                      "replace or remove the file") from None


def read_image_file(path: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """An image file from disk, through `decode_image`."""
    n = path.stat().st_size
    if n > MAX_IMAGE_FILE_BYTES:
        raise bad(path, f"the image file holds {size_text(n)}, more than the {size_text(MAX_IMAGE_FILE_BYTES)} specc "
                        "reads for one image (MAX_IMAGE_FILE_BYTES)")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise bad(path, f"cannot read the image: {err.strerror or err}") from None
    return decode_image(raw, path, None, mode, size)


class DecodedBudget:
    """Bytes of decoded images from one folder or tar, against MAX_DATA_BYTES (checked per image)."""

    def __init__(self, path: Path):
        self.path, self.total = path, 0

    def add(self, a: np.ndarray) -> None:
        self.total += a.nbytes
        if self.total > MAX_DATA_BYTES:
            raise bad(self.path, f"the decoded images take more than {size_text(MAX_DATA_BYTES)} (MAX_DATA_BYTES)",
                      "set a smaller `image_size`, or split the images into several folders")


def tar_image_members(path: Path, suffixes: tuple[str, ...]):
    """(member name, bytes) of each image file in a tar (plain or compressed), with member count and sizes bounded
    from the headers before any member is read. A file that is not a tar, or is cut short, is a located error."""
    import tarfile
    import zlib

    try:
        tar = tarfile.open(path, "r:*")
    except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as err:
        raise bad(path, f"not a tar archive (plain, .gz, .bz2 or .xz), or an empty or damaged one ({_why(err)})",
                  "give a folder of `<class>/<image>` files, or a tar of one") from None
    count, total = 0, 0
    with tar:
        while True:
            try:
                member = tar.next()
            except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as err:
                raise bad(path, f"the archive is truncated or damaged after {count:,} members ({_why(err)})",
                          "copy the whole file again") from None
            if member is None:
                return
            count += 1
            total += max(member.size, 0)
            if count > MAX_ARCHIVE_MEMBERS:
                raise bad(path, f"the archive holds more than {MAX_ARCHIVE_MEMBERS:,} members (MAX_ARCHIVE_MEMBERS)")
            if total > MAX_DATA_BYTES:
                raise bad(path, f"the archive's members declare more than {size_text(MAX_DATA_BYTES)} in all "
                                f"(MAX_DATA_BYTES), at member {member_name(member.name)}")
            if not (member.isfile() and Path(member.name).suffix.lower() in suffixes):
                continue
            if member.size > MAX_IMAGE_FILE_BYTES:
                raise bad(path, f"image {member_name(member.name)} holds {size_text(member.size)}, more than the "
                                f"{size_text(MAX_IMAGE_FILE_BYTES)} specc reads for one image (MAX_IMAGE_FILE_BYTES)")
            try:
                f = tar.extractfile(member)
                raw = f.read() if f is not None else b""
            except (tarfile.TarError, EOFError, OSError, zlib.error, ValueError) as err:
                raise bad(path, f"image {member_name(member.name)} cannot be read: the archive is truncated or "
                                f"damaged ({_why(err)})", "copy the whole file again") from None
            if len(raw) != member.size:
                raise bad(path, f"image {member_name(member.name)} is cut short: {len(raw):,} of {member.size:,} bytes",
                          "copy the whole file again")
            yield member.name, raw


# --- JSON files of a run directory ---------------------------------------------------------------------------------


def read_json(path: Path, what: str) -> Any:
    """A JSON file of at most MAX_JSON_BYTES, nested at most MAX_JSON_DEPTH deep, parsed."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)
    except OSError as err:
        raise bad(path, f"cannot read the {what}: {err.strerror or err}") from None
    if len(raw) > MAX_JSON_BYTES:
        raise bad(path, f"the {what} is larger than {size_text(MAX_JSON_BYTES)} (MAX_JSON_BYTES): not one specc wrote")
    try:
        value = json.loads(raw.decode("utf-8"))
    except RecursionError:
        value = None
        depth = None
    except (ValueError, UnicodeDecodeError) as err:
        raise bad(path, f"the {what} is not valid JSON ({_why(err)})", "it must be the file `specc run` wrote") from None
    else:
        depth = json_depth(value)
    if depth is None or depth > MAX_JSON_DEPTH:
        raise bad(path, f"the {what} nests lists and objects more than {MAX_JSON_DEPTH} deep (MAX_JSON_DEPTH): not one "
                        "specc wrote")
    return value


def json_depth(value: Any, stop: int = MAX_JSON_DEPTH) -> int:
    """How deep lists and dicts nest in a parsed JSON value, counted without recursion, stopping past `stop`."""
    deepest, todo = 0, [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > stop:
                break
            todo += [(v, depth + 1) for v in (item.values() if isinstance(item, dict) else item)]
    return deepest


def read_classes(path: Path) -> list[str]:
    """The class names of a run's classes.json: a JSON list of distinct strings."""
    value = read_json(path, "class names")
    try:
        names = _Classes.model_validate(value).root
    except ValidationError as err:
        first = err.errors()[0]
        at = "".join(f"[{p}]" for p in first["loc"])
        raise bad(path, f"not a list of class names: {'item ' + at + ' ' if at else ''}{printable(first['msg'], lines=False)}",
                  'classes.json holds a JSON list of strings, e.g. ["cat", "dog"]') from None
    if len(names) > MAX_CLASS_NAMES:
        raise bad(path, f"it names {len(names):,} classes; specc reads at most {MAX_CLASS_NAMES:,} (MAX_CLASS_NAMES)")
    twice = next((c for c, k in zip(sorted(names), sorted(names)[1:]) if c == k), None)
    if twice is not None:
        raise bad(path, f"class `{printable(twice, lines=False)}` is named twice; each class has one name")
    return names


class _Classes(RootModel[list[str]]):
    model_config = {"strict": True}
