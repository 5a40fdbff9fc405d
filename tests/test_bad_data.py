"""Every bad data file is a located DataError (exit 3) naming the file, the member or line, and what is wrong:
never a traceback, never gigabytes allocated from a small file (issue 14, items 7, 9, 10 and 4).

Corrupt files are made here, in tmp_path; the loaders are called through the public paths (`specc.load` of a
spec, then `load_dataset`/`prepare`; `open_run`, `read_vocabulary`; `eval`/`predict` of a tiny real run).
"""

from __future__ import annotations

import gzip
import io
import json
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from alarm import alarm_after

import specc
from specc import cli
from specc.data.prepare import load_dataset, prepare
from specc.core.files import MAX_IMAGE_PIXELS, read_classes
from specc.core.errors import DataError
from specc.data.tokenizers import CharVocabulary, read_vocabulary

HEAD = "model m {\n  input x: (4, 4, 3)\n  flatten\n  dense(2, activation=softmax)\n}\n"
TRAIN = "train {\n  loss: sparse_categorical_crossentropy\n  epochs: 1\n  batch_size: 4\n}\n"


def png(w: int = 4, h: int = 4) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), (10, 200, 30)).save(buf, "PNG")
    return buf.getvalue()


def noisy(fmt: str) -> bytes:
    """A 16 x 16 image of noise (so that cutting it short cuts its pixel data)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def png_declaring(w: int, h: int) -> bytes:
    """A valid small PNG whose IHDR (CRC fixed) declares w x h pixels: a decompression bomb's header."""
    raw = bytearray(png())
    ihdr = raw[12:29]  # b"IHDR" + 13 bytes of data
    ihdr[4:12] = struct.pack(">II", w, h)
    raw[12:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
    return bytes(raw)


def spec(tmp_path: Path, data: str, head: str = HEAD) -> specc.Spec:
    (tmp_path / "s.model").write_text(head + "data {\n" + data + "}\n" + TRAIN)
    return specc.load(tmp_path / "s.model")


def load_error(s) -> DataError:
    with alarm_after(20):
        with pytest.raises(DataError) as info:
            prepare(s.plan, load_dataset(s.plan))
    return info.value


def image_folder(root: Path, bad_name: str, bad: bytes) -> Path:
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(2):
            (root / cls / f"{i}.png").write_bytes(png())
    (root / "dog" / bad_name).write_bytes(bad)
    return root


IMAGE_VARIANTS = {
    "truncated PNG": ("t.png", noisy("PNG")[:200]),
    "truncated JPEG": ("t.jpg", noisy("JPEG")[:400]),
    "text with an image suffix": ("notes.png", b"these are my notes\n"),
    "empty file": ("e.jpg", b""),
    "PNG with damaged pixel data": ("c.png", noisy("PNG")[:120] + b"\x00" * 200 + noisy("PNG")[320:]),
    "PNG bomb (100,000 x 100,000)": ("bomb.png", png_declaring(100_000, 100_000)),
    "PNG over the bound, under PIL's": ("big.png", png_declaring(9_000, 9_000)),
    "GIF header only": ("g.gif", b"GIF89a\x10\x00\x10\x00"),
}


@pytest.mark.parametrize("variant", list(IMAGE_VARIANTS))
def test_bad_image_in_a_folder_is_a_located_error(tmp_path, variant):
    name, raw = IMAGE_VARIANTS[variant]
    image_folder(tmp_path / "pics", name, raw)
    err = load_error(spec(tmp_path, '  images: "pics"\n'))
    assert err.line == 7 and str(tmp_path / "pics" / "dog" / name) in err.message, err.render()
    if "bomb" in variant or "bound" in variant:
        assert f"{MAX_IMAGE_PIXELS:,}" in err.message and "before decoding" in err.message


def _tar(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, raw in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return path


def test_bad_tars_are_located_errors(tmp_path):
    good = {f"train/{c}/{i}.png": png() for c in ("cat", "dog") for i in range(2)}
    whole = _tar(tmp_path / "whole.tar.gz", good).read_bytes()
    cases = {
        "not a tar.tar": (b"just some text, not an archive\n" * 40, "not a tar archive"),
        "empty.tar.gz": (gzip.compress(b""), "an empty or damaged one"),
        "zero.tar": (b"", "not a tar archive"),
        "cut.tar.gz": (whole[: len(whole) // 2], "truncated"),
        "bad member.tar": (_tar(tmp_path / "m.tar", {**good, "train/dog/x.png": b"\x89PNG\r\n\x1a\n broken"}, "w")
                           .read_bytes(), "cannot read image `train/dog/x.png`"),
        "bomb member.tar": (_tar(tmp_path / "b.tar", {**good, "train/dog/b.png": png_declaring(60_000, 60_000)}, "w")
                            .read_bytes(), "before decoding"),
    }
    for name, (raw, expected) in cases.items():
        (tmp_path / name).write_bytes(raw)
        err = load_error(spec(tmp_path, f'  images: "{name}"\n'))
        assert err.line == 7 and expected in err.message and name in err.message, (name, err.render())


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def _forged_npz(path: Path) -> Path:
    """x's .npy header declares 10**12 floats; its member holds 16 bytes."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**6, 10**6)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", buf.getvalue() + b"\x00" * 16)
        z.writestr("y.npy", _npy_bytes(np.zeros(4)))
    return path


def _bomb_npz(path: Path) -> Path:
    """x holds 300 MiB of zeros deflated to about 0.3 MiB (written in chunks: the test never holds it)."""
    header = {"descr": "<f4", "fortran_order": False, "shape": (300 * 2**18,)}
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w", force_zip64=True) as member:
            member.write(buf.getvalue())
            chunk = bytes(2**20)
            for _ in range(300):
                member.write(chunk)
        z.writestr("y.npy", _npy_bytes(np.zeros(4)))
    return path


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


NPZ_VARIANTS = {
    "0-d x": (lambda p: _npz(p, x=np.float32(3), y=np.zeros(4)), "single value (0-d)"),
    "strings": (lambda p: _npz(p, x=np.array(["a", "b", "c", "d"]), y=np.zeros(4)), "holds strings"),
    "bytes": (lambda p: _npz(p, x=np.array([b"a", b"b"]), y=np.zeros(2)), "holds byte strings"),
    "complex": (lambda p: _npz(p, x=np.ones((4, 4, 4, 3), np.complex64), y=np.zeros(4)), "holds complex numbers"),
    "datetime": (lambda p: _npz(p, x=np.array(["2020-01-01"] * 4, "datetime64[D]"), y=np.zeros(4)), "holds dates"),
    "timedelta": (lambda p: _npz(p, x=np.zeros(4, "timedelta64[s]"), y=np.zeros(4)), "holds time spans"),
    "structured": (lambda p: _npz(p, x=np.zeros(4, [("a", "f4"), ("b", "i4")]), y=np.zeros(4)), "records"),
    "x and y disagree": (lambda p: _npz(p, x=np.zeros((5, 4, 4, 3)), y=np.zeros(3)),
                         "the training arrays disagree on the number of examples: [3, 5]"),
    "forged header": (_forged_npz, "declares shape (1000000, 1000000)"),
    "decompression bomb": (_bomb_npz, "a decompression bomb, refused before decompressing"),
    "truncated": (lambda p: p.write_bytes(_npz(p, x=np.zeros((4, 4, 4, 3)), y=np.zeros(4)).read_bytes()[:300]),
                  "cannot read it as .npz"),
    "not a zip": (lambda p: p.write_bytes(b"x,y\n1,2\n"), "not a zip of .npy arrays"),
    "a member that is not .npy": (lambda p: zipfile.ZipFile(p, "w").writestr("x.txt", "hello"), "not an .npy array"),
    "empty": (lambda p: p.write_bytes(b""), "empty (0 bytes)"),
}


@pytest.mark.parametrize("variant", list(NPZ_VARIANTS))
def test_bad_npz_is_a_located_error_here_and_in_check(tmp_path, variant):
    make, expected = NPZ_VARIANTS[variant]
    make(tmp_path / "d.npz")
    s = spec(tmp_path, '  file: "d.npz"\n')
    err = load_error(s)
    assert err.line == 7 and expected in err.message, err.render()
    from specc.data.facts import clear_memo, infer_facts

    clear_memo()
    with pytest.raises(DataError) as info:  # `specc check` reads the data for its facts through the same code
        infer_facts(s.plan.data, str(tmp_path / "s.model"))
    assert expected in info.value.message or "disagree" in expected, info.value.render()


def test_csv_rows_with_more_or_fewer_fields_name_the_line(tmp_path):
    from specc.data.prepare import data_dirs, load_builtin

    if any((d / "sst2").is_dir() for d in data_dirs()):
        assert load_builtin("sst2").x_train.shape[0] > 60_000  # the real TSVs pass the field counts
    for rows, line, found in (("1,2,3\n4,5,6,7\n", 3, 4), ("1,2,3\n\n4,5\n", 4, 2)):
        (tmp_path / "t.csv").write_text("a,b,c\n" + rows)
        err = load_error(spec(tmp_path, '  file: "t.csv"\n  features: [a, b]\n  target: c\n',
                              head="model m {\n  input x: (2,)\n  dense(2)\n}\n"))
        assert f"t.csv: line {line}: {found} fields, expected 3 (a, b, c)" in err.message and err.line == 6, err.render()


def test_one_hot_label_of_a_billion_is_refused_before_allocating(tmp_path):
    _npz(tmp_path / "d.npz", x=np.zeros((4, 4, 4, 3)), y=np.array([0, 1, 2, 10**9]))
    err = load_error(spec(tmp_path, '  file: "d.npz"\n  one_hot: true\n'))
    assert "1,000,000,000" in err.message and "268,435,456" in err.message and err.line == 8, err.render()
    _npz(tmp_path / "d.npz", x=np.zeros((4, 4, 4, 3)), y=np.array([0, 1, np.nan, 1]))
    err = load_error(spec(tmp_path, '  file: "d.npz"\n  one_hot: true\n'))
    assert "nan" in err.message and "not a class number" in err.message, err.render()


TOKENIZERS = {
    "a list": ("[1, 2, 3]", "no `specc_vocabulary` key"),
    "unknown kind": ('{"specc_vocabulary": "bytes"}', "does not match any of the expected tags"),
    "chars missing": ('{"specc_vocabulary": "chars"}', "`chars`: Field required"),
    "chars of numbers": ('{"specc_vocabulary": "chars", "chars": [1, 2]}', "`chars.0`"),
    "chars of words": ('{"specc_vocabulary": "chars", "chars": ["ab"]}', "at most 1 character"),
    "repeated chars": ('{"specc_vocabulary": "chars", "chars": ["a", "a"]}', "twice"),
    "words without a model": ('{"specc_vocabulary": "words", "tokenizer": {}}', "not a Hugging Face tokenizer"),
    "tokenizer a string": ('{"specc_vocabulary": "wordpiece", "tokenizer": "x"}', "valid dictionary"),
    "deeply nested": ("[" * 100_000 + "]" * 100_000, "more than 100 deep"),
    "nested under the limit of json": ('{"a": ' * 150 + "1" + "}" * 150, "more than 100 deep"),
    "not JSON": ("{specc_vocabulary: chars}", "not valid JSON"),
    "not UTF-8": (b"\xff\xfe{}", "not valid JSON"),
}


def test_tokenizer_json_that_is_not_a_tokenizer(tmp_path):
    path = tmp_path / "tokenizer.json"
    path.write_text(CharVocabulary("abc").to_json())
    assert read_vocabulary(path).size == 6
    for name, (text, expected) in TOKENIZERS.items():
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(DataError) as info:
            read_vocabulary(path)
        assert expected in info.value.message and info.value.first.file == str(path), (name, info.value.render())
    # through a spec that names it, located at `tokenizer`
    (tmp_path / "t.txt").write_text("hello there\n" * 20)
    path.write_text('{"specc_vocabulary": "words", "tokenizer": {"model": 5}}')
    err = load_error(spec(tmp_path, '  file: "t.txt"\n  tokenizer: "tokenizer.json"\n  sequence_length: 4\n'
                          '  task: next_token\n', head="model m {\n  input x: (4,) int32\n  embedding(10, 2)\n  dense(10)\n}\n"))
    assert err.line == 8 and "not a Hugging Face tokenizer" in err.message and str(path) in err.message, err.render()


def test_classes_json_that_is_not_a_list_of_names(tmp_path):
    path = tmp_path / "classes.json"
    for text, expected in (('{"a": 1}', "not a list of class names"), ('["a", 2]', "item [1]"),
                           ('["a", "a"]', "named twice"), ("[" * 5000 + "]" * 5000, "more than 100 deep"),
                           ('"cat"', "not a list")):
        path.write_text(text)
        with pytest.raises(DataError) as info:
            read_classes(path)
        assert expected in info.value.message and info.value.first.file == str(path), info.value.render()
    path.write_text('["cat", "dog"]')
    assert read_classes(path) == ["cat", "dog"]


# --- eval and predict on a tiny real run ------------------------------------------------------------------------------


TINY = """model tiny {
  input x: (4,)
  dense(3, activation=softmax)
}
data {
  file: "d.npz"
}
train {
  loss: sparse_categorical_crossentropy
  epochs: 1
  batch_size: 8
  seed: 1
}
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    rng = np.random.default_rng(0)
    np.savez(folder / "d.npz", x=rng.normal(size=(16, 4)).astype(np.float32), y=rng.integers(0, 3, 16))
    (folder / "tiny.model").write_text(TINY)
    specc.load(folder / "tiny.model").run(out=folder / "run", verbose=0)
    return folder / "run"


def main(capsys, *args) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_eval_data_applies_the_label_checks_of_run(tiny_run, tmp_path, capsys):
    for y, expected in ((np.array([0, 1, 2, 7]), "run from 0 to 7, but the model has 3 outputs"),
                        (np.array([0, 1, 0.5, 2]), "include 0.5, which is not a class number"),
                        (np.array([0, 1, np.nan, 2]), "hold nan (at index 2")):
        np.savez(tmp_path / "e.npz", x=np.zeros((4, 4), np.float32), y=y)
        code, out, err = main(capsys, "eval", tiny_run, "--data", tmp_path / "e.npz")
        assert code == 3 and expected in err and err.startswith(f"{tmp_path / 'e.npz'}: error:"), err
    np.savez(tmp_path / "e.npz", x=np.zeros((4, 4), np.float32), y=np.zeros(5))
    code, out, err = main(capsys, "eval", tiny_run, "--data", tmp_path / "e.npz")
    assert code == 3 and "disagree on the number of examples" in err, err


def test_predict_escapes_class_names_in_the_table_and_keeps_them_whole_in_csv(tiny_run, tmp_path, capsys):
    import csv
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    hostile = ["\x1b[2J\x1b[31mred", "two\nlines,\"quoted\"", "\x07bell\u202e"]
    (run / "classes.json").write_text(json.dumps(hostile))
    np.save(tmp_path / "x.npy", np.eye(4, dtype=np.float32)[:3])
    code, out, err = main(capsys, "predict", run, tmp_path / "x.npy")
    assert code == 0, err
    assert not any(c in out for c in "\x1b\x07\u202e") and len(out.splitlines()) == 4, out
    assert "\\x07bell\\u202e" in out or "\\x1b[2J" in out or "two\\x0alines" in out, out
    code, out, err = main(capsys, "predict", run, tmp_path / "x.npy", "-o", tmp_path / "p.csv")
    assert code == 0, err
    with open(tmp_path / "p.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 4 and all(len(r) == len(rows[0]) for r in rows) and {r[2] for r in rows[1:]} <= set(hostile)
    assert [f"p_{h}" for h in hostile] == rows[0][-3:]
    for text, expected in (("[1, 2]", "not a list of class names"), ("{" * 3000, "not valid JSON")):
        (run / "classes.json").write_text(text)
        code, out, err = main(capsys, "predict", run, tmp_path / "x.npy")
        assert code == 3 and expected in err and "classes.json: error:" in err, err
    (run / "classes.json").unlink()
    (tmp_path / "x.npy").write_bytes(_npy_bytes(np.array(["a", "b"])))
    code, out, err = main(capsys, "predict", run, tmp_path / "x.npy")
    assert code == 3 and "holds strings" in err, err


def test_cli_exit_codes_for_bad_data_in_check_and_run(tmp_path):
    """In a process of its own: `specc run` exits 3 and `specc check` 1 (a fact of the data the model names cannot be
    read: an error in the spec, as check reports it), each with the loader's message and no traceback."""
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "junk.tar").write_bytes(b"not a tar at all\n" * 100)
    (tmp_path / "t" / "s.model").write_text(HEAD + 'data {\n  images: "junk.tar"\n}\n' + TRAIN)
    _npz(tmp_path / "d.npz", x=np.array("zero-d"), y=np.zeros(4))
    (tmp_path / "c.model").write_text("model m {\n  input x: (data.features,)\n  dense(2)\n}\n"
                                      'data {\n  file: "d.npz"\n}\n' + TRAIN)
    script = ("import sys; from specc import cli\n"
              f"codes = [cli.main(['run', {str(tmp_path / 't' / 's.model')!r}, '--out', {str(tmp_path / 'out')!r}]),"
              f" cli.main(['check', {str(tmp_path / 'c.model')!r}])]\nprint('CODES', codes)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "CODES [3, 1]" in proc.stdout and "Traceback" not in proc.stderr, proc.stderr
    assert "junk.tar: not a tar archive" in proc.stderr and "holds strings" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()
