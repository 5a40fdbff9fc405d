"""Data: offline datasets, npz/csv/inline sources, preprocessing, and data errors that name the culprit."""

import numpy as np
import pytest

import specc
from specc.data.prepare import load_builtin, load_dataset, prepare

MODEL = "model m {\n  input x: (2,)\n  dense(1)\n}\n"
TRAIN = "train {\n  loss: mse\n  optimizer: sgd(learning_rate=0.05)\n  epochs: 3\n  batch_size: 4\n}\n"


def test_mnist_from_the_idx_files(data_dir):
    ds = load_builtin("mnist")
    assert ds.x_train.shape == (60000, 28, 28) and ds.x_test.shape == (10000, 28, 28)
    assert ds.x_train.dtype == np.uint8
    # Label counts stated in the datasets' README.
    assert np.bincount(ds.y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert str(data_dir) in ds.origin


def test_preprocessing_scales_and_fits_the_input_shape(data_dir):
    spec = specc.loads(MODEL.replace("(2,)", "(28, 28, 1)").replace("dense(1)", "flatten") +
                       "data {\n  dataset: mnist\n  scale: 1/255\n}\n")
    ds = prepare(spec.plan, load_dataset(spec.plan), limit=100)
    assert ds.x_train.shape == (100, 28, 28, 1) and ds.x_train.dtype == np.float32
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert ds.x_test.shape == (10000, 28, 28, 1)


def test_shape_mismatch_is_a_located_data_error(data_dir):
    spec = specc.loads(MODEL.replace("(2,)", "(784,)") + "data {\n  dataset: mnist\n}\n", "m.model")
    with pytest.raises(specc.DataError) as info:
        prepare(spec.plan, load_dataset(spec.plan), limit=10)
    err = info.value
    assert (err.line, err.col) == (6, 3)
    assert err.message == "data examples have shape (28, 28) but input `x` expects (784,)"
    assert err.hint == "add `flatten: true` to `data`"


def test_npz_file(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2)).astype("float32")
    np.savez(tmp_path / "d.npz", x_train=x, y_train=x @ [1.0, -2.0], x_test=x[:8], y_test=(x @ [1.0, -2.0])[:8])
    (tmp_path / "s.model").write_text(MODEL + 'data {\n  file: "d.npz"\n}\n' + TRAIN)
    result = specc.load(tmp_path / "s.model").run(out=tmp_path / "run")
    assert result.metrics["examples"] == 64 and result.metrics["test_on"] == "test"
    assert result.history["loss"][-1] < result.history["loss"][0]


def test_npz_never_unpickles(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "d.npz", x=np.array([{"a": 1}], dtype=object), y=np.zeros(1))
    (tmp_path / "s.model").write_text(MODEL + 'data {\n  file: "d.npz"\n}\n' + TRAIN)
    spec = specc.load(tmp_path / "s.model")
    with pytest.raises(specc.DataError) as info:
        load_dataset(spec.plan)
    assert "cannot read" in info.value.message and info.value.line == 6


def test_csv_file_with_named_columns(tmp_path):
    rows = ["area,rooms,price"] + [f"{a},{r},{2 * a + r}" for a, r in zip(range(20), range(20, 0, -1))]
    (tmp_path / "h.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "s.model").write_text(
        MODEL + 'data {\n  file: "h.csv"\n  features: [area, rooms]\n  target: price\n  test_split: 0.25\n}\n')
    ds = load_dataset(specc.load(tmp_path / "s.model").plan)
    assert ds.x_train.shape == (15, 2) and ds.x_test.shape == (5, 2)
    assert ds.y_train[3] == 2 * 3 + 17


def test_csv_missing_column_names_the_file_and_columns(tmp_path):
    (tmp_path / "h.csv").write_text("area,rooms,price\n1,2,3\n")
    (tmp_path / "s.model").write_text(
        MODEL + 'data {\n  file: "h.csv"\n  features: [area, rooms]\n  target: prise\n}\n')
    with pytest.raises(specc.DataError) as info:
        load_dataset(specc.load(tmp_path / "s.model").plan)
    err = info.value
    assert (err.line, err.col) == (8, 3)
    assert err.message == "column `prise` is not in h.csv; its columns are: area, rooms, price"
    assert err.hint == "did you mean `price`?"


def test_csv_empty_and_non_numeric(tmp_path):
    (tmp_path / "s.model").write_text(
        MODEL + 'data {\n  file: "h.csv"\n  features: [a, b]\n  target: c\n}\n')
    (tmp_path / "h.csv").write_text("")
    with pytest.raises(specc.DataError, match="h.csv is empty"):
        load_dataset(specc.load(tmp_path / "s.model").plan)
    (tmp_path / "h.csv").write_text("a,b,c\n1,2,3\n4,x,6\n")
    with pytest.raises(specc.DataError, match=r"h.csv, line 3, column `b`: 'x' is not a number"):
        load_dataset(specc.load(tmp_path / "s.model").plan)


def test_missing_file_is_located(tmp_path):
    (tmp_path / "s.model").write_text(MODEL + 'data {\n  file: "nope.npz"\n}\n')
    with pytest.raises(specc.DataError) as info:
        load_dataset(specc.load(tmp_path / "s.model").plan)
    assert info.value.message == f"data file not found: {tmp_path / 'nope.npz'}" and info.value.line == 6


def test_inline_arrays_and_one_hot():
    spec = specc.loads(MODEL.replace("dense(1)", "dense(3)") +
                       "data {\n  x: [[0, 0], [0, 1], [1, 0], [1, 1]]\n  y: [0, 1, 2, 1]\n  one_hot: true\n}\n")
    ds = prepare(spec.plan, load_dataset(spec.plan))
    assert ds.x_train.shape == (4, 2) and ds.y_train.tolist()[2] == [0, 0, 1]
    assert ds.test_is_train


def test_labels_outside_the_classes_are_caught_before_training(tmp_path):
    spec = specc.loads("model m {\n  input x: (1,)\n  dense(2, activation=softmax)\n}\n"
                       "data {\n  x: [1, 2, 3]\n  y: [0, 1, 2]\n}\n"
                       "train {\n  loss: sparse_categorical_crossentropy\n}\n", "m.model")
    with pytest.raises(specc.DataError) as info:
        spec.run(out=tmp_path / "run")
    assert info.value.message == "training labels run from 0 to 2, but the model has 2 outputs (classes 0..1)"
    assert info.value.line == 10


def test_cifar10_from_the_jpeg_archive(data_dir, tmp_path, monkeypatch):
    ds = load_builtin("cifar10")  # decoded once, then cached under SPECC_CACHE_DIR
    assert ds.x_train.shape == (50000, 32, 32, 3) and ds.x_test.shape == (10000, 32, 32, 3)
    assert np.bincount(ds.y_train).tolist() == [5000] * 10 and np.bincount(ds.y_test).tolist() == [1000] * 10
    # Stored in a mixed order (the archive is sorted by class): the first 1,000 hold every class.
    assert np.bincount(ds.y_train[:1000], minlength=10).min() > 50
    assert np.bincount(ds.y_test[:1000], minlength=10).min() > 50
    # Channel means of CIFAR-10 (the JPEG copy matches them, per the datasets' README).
    means = ds.x_train.reshape(-1, 3).mean(0) / 255
    assert np.allclose(means, [0.4914, 0.4822, 0.4465], atol=0.01)


def test_fashion_mnist_is_looked_up_in_the_data_dir_first(tmp_path, data_dir, monkeypatch):
    # A data folder laid out like the shared one: fashion_mnist/ holds the four IDX files.
    import shutil

    (tmp_path / "fashion_mnist").mkdir()
    for f in (data_dir / "mnist").glob("*-ubyte.gz"):
        shutil.copy(f, tmp_path / "fashion_mnist" / f.name)
    monkeypatch.setenv("SPECC_DATA_DIR", str(tmp_path))
    ds = load_builtin("fashion_mnist")
    assert ds.origin == str(tmp_path / "fashion_mnist")
    assert ds.x_train.shape == (60000, 28, 28) and len(ds.y_test) == 10000


def test_truncated_idx_file_is_a_data_error(tmp_path, monkeypatch):
    import gzip

    folder = tmp_path / "mnist"
    folder.mkdir()
    header = (2051).to_bytes(4, "big") + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2
    for name in ("train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        with gzip.open(folder / name, "wb") as f:
            f.write(header + bytes(100))
    for name in ("train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        with gzip.open(folder / name, "wb") as f:
            f.write((2049).to_bytes(4, "big") + (10).to_bytes(4, "big") + bytes(10))
    monkeypatch.setenv("SPECC_DATA_DIR", str(tmp_path))
    with pytest.raises(specc.DataError, match="is truncated: expected 7840 values, found 100"):
        load_builtin("mnist")


def test_names_of_npz_arrays(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", images=rng.normal(size=(8, 2)), labels=rng.normal(size=8))
    (tmp_path / "s.model").write_text(MODEL + 'data {\n  file: "d.npz"\n  x: images\n  y: labels\n}\n')
    ds = load_dataset(specc.load(tmp_path / "s.model").plan)
    assert ds.x_train.shape == (8, 2) and ds.test_is_train


def test_test_file_of_another_kind(tmp_path):
    (tmp_path / "train.csv").write_text("a,b,c\n1,2,3\n4,5,6\n")
    np.savez(tmp_path / "test.npz", x_test=np.ones((3, 2)), y_test=np.zeros(3))
    (tmp_path / "s.model").write_text(
        MODEL + 'data {\n  file: "train.csv"\n  test_file: "test.npz"\n  features: [a, b]\n  target: c\n}\n')
    ds = load_dataset(specc.load(tmp_path / "s.model").plan)
    assert ds.x_train.shape == (2, 2) and ds.x_test.shape == (3, 2)


def test_csv_that_is_not_text(tmp_path):
    (tmp_path / "h.csv").write_bytes(b"a,b,c\n\xff\xfe\x00,2,3\n")
    (tmp_path / "s.model").write_text(MODEL + 'data {\n  file: "h.csv"\n  features: [a, b]\n  target: c\n}\n')
    with pytest.raises(specc.DataError, match="cannot read .*h.csv as delimited text") as info:
        load_dataset(specc.load(tmp_path / "s.model").plan)
    assert info.value.line == 6


def test_test_arrays_of_different_lengths(tmp_path):
    np.savez(tmp_path / "d.npz", x_train=np.ones((4, 2)), y_train=np.ones(4), x_test=np.ones((5, 2)), y_test=np.ones(4))
    (tmp_path / "s.model").write_text(MODEL + 'data {\n  file: "d.npz"\n}\n')
    spec = specc.load(tmp_path / "s.model")
    with pytest.raises(specc.DataError, match=r"the test arrays disagree on the number of examples: \[4, 5\]"):
        prepare(spec.plan, load_dataset(spec.plan))


def test_one_hot_counts_classes_before_the_limit():
    spec = specc.loads(MODEL.replace("dense(1)", "dense(3)") +
                       "data {\n  x: [[0, 0], [0, 1], [1, 0], [1, 1]]\n  y: [0, 0, 1, 2]\n  one_hot: true\n}\n")
    ds = prepare(spec.plan, load_dataset(spec.plan), limit=2)
    assert ds.y_train.shape == (2, 3)


def test_inline_shape_errors_blame_the_data_not_another_setting():
    spec = specc.loads("model m {\n  input x: (3,)\n  dense(1)\n}\n"
                       "data {\n  scale: 2\n  x: [[1, 2], [3, 4]]\n  y: [1, 2]\n}\n", "m.model")
    with pytest.raises(specc.DataError) as info:
        prepare(spec.plan, load_dataset(spec.plan))
    assert info.value.line == 7 and info.value.message.startswith("data examples have shape (2,)")


# --- the data of the model families ---------------------------------------------------


def _write_images(folder, sizes=((8, 8),) * 3):
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, base in (("cats", 40), ("dogs", 200)):
        (folder / cls).mkdir(parents=True)
        for k, size in enumerate(sizes):
            pixels = np.clip(base + rng.normal(0, 10, size + (3,)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(folder / cls / f"{k}.png")


IMAGE_MODEL = """model m {
  input image: (8, 8, 3)
  flatten
  dense(2, activation=softmax)
}
"""


def test_image_folder_is_decoded_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECC_CACHE_DIR", str(tmp_path / "cache"))
    _write_images(tmp_path / "pets")
    (tmp_path / "s.model").write_text(IMAGE_MODEL + 'data {\n  images: "pets"\n  test_split: 0.34\n  scale: 1/255\n}\n')
    plan = specc.load(tmp_path / "s.model").plan
    first = load_dataset(plan)
    assert first.classes == ["cats", "dogs"]
    assert first.x_train.shape == (4, 8, 8, 3) and first.x_test.shape == (2, 8, 8, 3)
    # Labels follow the folders: the cats are dark, the dogs bright.
    everything = np.concatenate([first.x_train, first.x_test]).mean(axis=(1, 2, 3))
    labels = np.concatenate([first.y_train, first.y_test])
    assert np.all((everything > 120) == (labels == 1))
    assert len(list((tmp_path / "cache").glob("images-*.npz"))) == 1
    second = load_dataset(plan)
    assert np.array_equal(first.x_train, second.x_train) and second.classes == first.classes
    assert len(list((tmp_path / "cache").glob("images-*.npz"))) == 1


def test_image_folder_tar_and_training_save_class_names(tmp_path, monkeypatch):
    import json
    import tarfile

    monkeypatch.setenv("SPECC_CACHE_DIR", str(tmp_path / "cache"))
    _write_images(tmp_path / "src" / "train")
    _write_images(tmp_path / "src" / "test", sizes=((8, 8),))
    with tarfile.open(tmp_path / "pets.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "train", arcname="train")
        tar.add(tmp_path / "src" / "test", arcname="test")
    (tmp_path / "s.model").write_text(IMAGE_MODEL + 'data {\n  images: "pets.tar.gz"\n  scale: 1/255\n}\n'
                                      "train {\n  loss: sparse_categorical_crossentropy\n  epochs: 1\n}\n")
    result = specc.load(tmp_path / "s.model").run(out=tmp_path / "run", verbose=0)
    assert result.metrics["examples"] == 6 and result.metrics["test_on"] == "test"
    assert json.loads((tmp_path / "run" / "classes.json").read_text()) == ["cats", "dogs"]


def test_images_of_different_sizes_need_image_size(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECC_CACHE_DIR", str(tmp_path / "cache"))
    _write_images(tmp_path / "pets", sizes=((8, 8), (9, 8)))
    (tmp_path / "s.model").write_text(IMAGE_MODEL + 'data {\n  images: "pets"\n}\n')
    with pytest.raises(specc.DataError, match="differ in size") as info:
        load_dataset(specc.load(tmp_path / "s.model").plan)
    assert info.value.line == 7 and "image_size" in info.value.hint
    (tmp_path / "s.model").write_text(IMAGE_MODEL + 'data {\n  images: "pets"\n  image_size: (8, 8)\n}\n')
    assert load_dataset(specc.load(tmp_path / "s.model").plan).x_train.shape == (4, 8, 8, 3)


TEXT_MODEL = "model m {\n  input t: (6,) int32\n  embedding(50, 4)\n  gap1d\n  dense(2, activation=softmax)\n}\n"


def test_tsv_text_column_is_tokenized_with_a_trained_vocabulary(tmp_path):
    (tmp_path / "r.tsv").write_text("review\tpositive\ngreat fun film\t1\ndull , dull film\t0\n"
                                    "great great cast\t1\na dull plot\t0\n")
    (tmp_path / "s.model").write_text(TEXT_MODEL + 'data {\n  file: "r.tsv"\n  text: review\n  target: positive\n'
                                      "  tokenizer: words(vocab_size=50)\n  sequence_length: 6\n}\n")
    plan = specc.load(tmp_path / "s.model").plan
    ds = prepare(plan, load_dataset(plan))
    assert ds.x_train.shape == (4, 6) and ds.x_train.dtype == np.int32
    assert ds.y_train.tolist() == [1, 0, 1, 0]
    dull = ds.vocab.ids("dull")[0]
    assert ds.x_train[1].tolist()[:4] == [dull, ds.vocab.ids(",")[0], dull, ds.vocab.ids("film")[0]]
    assert ds.x_train[1, 4:].tolist() == [0, 0]  # padding
    assert ds.vocab.decode(ds.x_train[0]) == "great fun film"


def test_text_without_labels_cannot_be_classified(tmp_path):
    (tmp_path / "t.txt").write_text("to be or not to be\n" * 20)
    (tmp_path / "s.model").write_text(TEXT_MODEL + 'data {\n  file: "t.txt"\n  tokenizer: chars\n  sequence_length: 6\n}\n')
    plan = specc.load(tmp_path / "s.model").plan
    with pytest.raises(specc.DataError, match="this text has no labels") as info:
        prepare(plan, load_dataset(plan))
    assert "task: next_token" in info.value.hint


def test_next_token_windows_of_a_text_file(tmp_path):
    text = "abcdefghij" * 10
    (tmp_path / "t.txt").write_text(text)
    (tmp_path / "s.model").write_text(
        'model m {\n  input t: (6,) int32\n  embedding(20, 4)\n  dense(20)\n}\n'
        'data {\n  file: "t.txt"\n  tokenizer: chars\n  sequence_length: 6\n  task: next_token\n  test_split: 0.2\n}\n')
    plan = specc.load(tmp_path / "s.model").plan
    ds = prepare(plan, load_dataset(plan))
    vocab = ds.vocab
    assert vocab.decode(ds.x_train[0]) == "abcdef" and vocab.decode(ds.y_train[0]) == "bcdefg"
    assert len(ds.x_train) == (80 - 1) // 6 and len(ds.x_test) == (20 - 1) // 6  # first 80% trains


def test_masked_tokens_choose_a_fraction_of_the_real_tokens():
    from specc.data.tokenizers import MASK, SPECIALS, mask_tokens

    rng = np.random.default_rng(0)
    ids = rng.integers(len(SPECIALS), 100, size=(2000, 20)).astype("int32")
    ids[:, 15:] = 0  # padding is never chosen
    x, y, w = mask_tokens(ids, 0.15, 100, rng)
    assert np.array_equal(y, ids) and set(np.unique(w)) == {0.0, 1.0}
    assert w[:, 15:].sum() == 0
    chosen = w == 1
    assert abs(chosen[:, :15].mean() - 0.15) < 0.01
    assert abs((x[chosen] == MASK).mean() - 0.8) < 0.02  # 80% masked, 10% random, 10% kept
    assert abs((x[chosen] == ids[chosen]).mean() - 0.1) < 0.02 + 0.01  # kept, plus random hits
    assert np.array_equal(x[~chosen], ids[~chosen])


def test_movielens_style_table_without_header(tmp_path):
    (tmp_path / "u.data").write_text("1\t10\t4\t881250949\n2\t11\t3\t881250950\n")
    (tmp_path / "s.model").write_text(
        "model m {\n  input user: (1,) int32\n  input item: (1,) int32\n  u = user -> embedding(5, 2) -> flatten\n"
        "  v = item -> embedding(20, 2) -> flatten\n  [u, v] -> dot(axes=1)\n}\n"
        'data {\n  file: "u.data"\n  columns: [user, item, rating, timestamp]\n  target: rating\n}\n')
    ds = load_dataset(specc.load(tmp_path / "s.model").plan)
    assert ds.x_train["user"].tolist() == [1, 2] and ds.x_train["item"].tolist() == [10, 11]
    assert ds.y_train.tolist() == [4, 3]


def test_wrong_delimiter_is_named(tmp_path):
    (tmp_path / "h.csv").write_text("a;b;c\n1;2;3\n")
    (tmp_path / "s.model").write_text(MODEL + 'data {\n  file: "h.csv"\n  columns: [a, b, c]\n  features: [a, b]\n'
                                      "  target: c\n}\n")
    with pytest.raises(specc.DataError, match="1 fields, expected 3") as info:
        load_dataset(specc.load(tmp_path / "s.model").plan)
    assert "delimiter" in info.value.hint


def test_ids_beyond_the_embedding_are_refused_at_its_line(tmp_path):
    (tmp_path / "s.model").write_text(
        "model m {\n  input t: (2,) int32\n  embedding(10, 4)\n  flatten\n  dense(1)\n}\n"
        "data {\n  x: [[1, 2], [3, 12]]\n  y: [0, 1]\n}\ntrain {\n  loss: mse\n}\n")
    with pytest.raises(specc.DataError, match=r"ids of input `t` run from 1 to 12, but `embedding` has input_dim 10") as info:
        specc.load(tmp_path / "s.model").run(out=tmp_path / "run", verbose=0)
    assert info.value.line == 3 and info.value.hint == "make input_dim at least 13"
