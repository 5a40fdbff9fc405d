"""Fuzzing the data loaders with Hypothesis: real small data files (PNG, JPEG, a tar.gz of an image folder, .npz,
.npy, CSV, tokenizer.json of both kinds, classes.json), mutated (bytes flipped, cut, inserted, slices repeated or
moved), are read through the public paths (`specc.load` of a spec, then `load_dataset` and `prepare`;
`read_vocabulary`, `read_classes`, `read_npy`). Property: success or a `UserError` whose diagnostic names the file
or the spec; never another exception, never a hang (a watchdog alarm per case).

Profiles as in tests/test_fuzz.py: `ci` (default) is derandomized, the same 600 cases every run (a few seconds);
`long` is random and 40 times as many:

    HYPOTHESIS_PROFILE=long python -m pytest tests/test_data_fuzz.py -p no:cacheprovider
"""

from __future__ import annotations

import io
import itertools
import os
import tarfile
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from alarm import alarm_after
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import specc
from specc.data.prepare import load_dataset, prepare
from specc.core.files import read_classes, read_npy
from specc.core.errors import UserError
from specc.data.tokenizers import CharVocabulary, read_vocabulary, train_vocabulary

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
SCALE = {"ci": 1, "long": 40}.get(PROFILE, 1)
FUZZ = settings(derandomize=PROFILE != "long", database=None, deadline=timedelta(seconds=10), print_blob=True,
                suppress_health_check=list(HealthCheck), max_examples=600 * SCALE)

HEAD = "model m {\n  input x: (8, 8, 3)\n  flatten\n  dense(3, activation=softmax)\n}\n"
TABLE_HEAD = "model m {\n  input x: (2,)\n  dense(3, activation=softmax)\n}\n"
TRAIN = "train {\n  loss: sparse_categorical_crossentropy\n  epochs: 1\n}\n"


def _image(fmt: str, seed: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for i, cls in itertools.product(range(2), ("a", "b", "c")):
            raw = _image("PNG", i)
            info = tarfile.TarInfo(f"train/{cls}/{i}.png")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


def _npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=np.random.default_rng(0).integers(0, 255, (6, 8, 8, 3)).astype(np.uint8), y=np.arange(6) % 3)
    return buf.getvalue()


def _npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros((2, 8, 8, 3), np.float32))
    return buf.getvalue()


SEEDS = {
    "png": _image("PNG", 0), "jpg": _image("JPEG", 0), "gif": _image("GIF", 0), "bmp": _image("BMP", 0),
    "tar.gz": _tar(), "npz": _npz(), "npy": _npy(),
    "csv": b"a,b,c\n1,2,0\n3,4,1\n5,6,2\n\"7\",8,1\n",
    "chars.json": CharVocabulary("abcdef").to_json().encode(),
    "words.json": train_vocabulary("words", ["the cat sat", "a dog ran"], 20).to_json().encode(),
    "classes.json": b'["a", "b", "c"]',
}


@st.composite
def mutated(draw, kind: str) -> bytes:
    data = bytearray(SEEDS[kind])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "repeat", "delete", "zero"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "repeat":
            data[at:at] = data[at: at + draw(st.integers(1, 64))] * draw(st.integers(1, 8))
        elif op == "delete":
            del data[at: at + draw(st.integers(1, 64))]
        elif op == "zero":
            n = draw(st.integers(1, 64))
            data[at: at + n] = b"\x00" * len(data[at: at + n])
    return bytes(data)


_count = itertools.count()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder for the cases, with specc's cache (decoded images) inside it."""
    path = tmp_path_factory.mktemp("datafuzz")
    old = os.environ.get("SPECC_CACHE_DIR")
    os.environ["SPECC_CACHE_DIR"] = str(path / "cache")
    yield path
    if old is None:
        os.environ.pop("SPECC_CACHE_DIR", None)
    else:
        os.environ["SPECC_CACHE_DIR"] = old


def _loads(folder: Path, data: str, head: str = HEAD) -> None:
    spec_file = folder / f"s{next(_count)}.model"
    spec_file.write_text(head + "data {\n" + data + "}\n" + TRAIN)
    plan = specc.load(spec_file).plan
    prepare(plan, load_dataset(plan))


def _outcome(run) -> str:
    """Run one case under a watchdog: 'ok' or the UserError's kind; anything else fails the test."""
    with alarm_after(20):
        try:
            run()
        except UserError as err:
            d = err.first
            assert d.file and d.file != "<string>" and d.message, err.render()
            return type(err).__name__
    return "ok"


def _case(folder: Path, kind: str, raw: bytes) -> str:
    n = next(_count)
    if kind in ("png", "jpg", "gif", "bmp"):
        root = folder / f"img{n}"
        for cls in ("a", "b", "c"):
            (root / cls).mkdir(parents=True)
            (root / cls / f"0.{kind}").write_bytes(SEEDS[kind])
        (root / "b" / f"1.{kind}").write_bytes(raw)
        return _outcome(lambda: _loads(folder, f'  images: "img{n}"\n  image_size: (8, 8)\n'))
    path = folder / f"f{n}.{kind}"
    path.write_bytes(raw)
    if kind == "tar.gz":
        return _outcome(lambda: _loads(folder, f'  images: "{path.name}"\n  image_size: (8, 8)\n'))
    if kind == "npz":
        return _outcome(lambda: _loads(folder, f'  file: "{path.name}"\n'))
    if kind == "csv":
        return _outcome(lambda: _loads(folder, f'  file: "{path.name}"\n  features: [a, b]\n  target: c\n', TABLE_HEAD))
    if kind == "npy":
        return _outcome(lambda: read_npy(path))
    if kind == "classes.json":
        return _outcome(lambda: read_classes(path))
    return _outcome(lambda: read_vocabulary(path))


KINDS = list(SEEDS)
TALLY: dict[str, dict[str, int]] = {}


@FUZZ
@given(st.sampled_from(KINDS).flatmap(lambda k: st.tuples(st.just(k), mutated(k))))
def test_mutated_data_files_give_a_result_or_a_user_error(folder, case):
    kind, raw = case
    outcome = _case(folder, kind, raw)
    event(f"{kind}: {outcome}")
    TALLY.setdefault(kind, {}).setdefault(outcome, 0)
    TALLY[kind][outcome] += 1


def test_the_unmutated_seeds_load(folder):
    """The fuzz starts from files that load: each seed gives 'ok' (so mutations are what fails)."""
    assert {kind: _case(folder, kind, raw) for kind, raw in SEEDS.items()} == {kind: "ok" for kind in SEEDS}
