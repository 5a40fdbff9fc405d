"""The model families of specs/, trained briefly on real data, each against a trusted reference:
a bigram model for the GPT, the majority class for SST-2, least squares for tabular regression,
the generating matrix and its noise for the recommender, training from scratch for fine-tuning."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import specc

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"


def make_data():
    """specs/data/make_data.py, the generator of the synthetic datasets."""
    spec = importlib.util.spec_from_file_location("make_data", SPECS / "data" / "make_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_spec(name: str, folder: Path) -> Path:
    """The spec copied into `folder`, so that its relative data paths point into `folder/data`."""
    (folder / "data").mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(SPECS / f"{name}.model", folder / f"{name}.model"))


def specc_cli(*args):
    return subprocess.run([sys.executable, "-m", "specc", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ})


def bigram_loss(train: str, valid: str) -> float:
    """Validation cross-entropy (nats per character) of an add-one-smoothed character bigram model."""
    chars = sorted(set(train) | set(valid))
    index = {c: i for i, c in enumerate(chars)}
    a = np.array([index[c] for c in train])
    b = np.array([index[c] for c in valid])
    counts = np.ones((len(chars), len(chars)))
    np.add.at(counts, (a[:-1], a[1:]), 1)
    p = counts / counts.sum(axis=1, keepdims=True)
    return float(-np.mean(np.log(p[b[:-1], b[1:]])))


@pytest.mark.slow  # slow: 100-170 s on 2 cores
def test_gpt_beats_a_bigram_model_and_generates_text(tmp_path, data_dir):
    out = tmp_path / "gpt"
    result = specc.load(SPECS / "shakespeare_gpt.model").run(out=out, epochs=3, limit=6000)
    text = (data_dir / "tinyshakespeare" / "input.txt").read_text()
    cut = int(len(text) * 0.9)
    bigram = bigram_loss(text[:cut], text[cut:])
    assert 2.3 < bigram < 2.7, bigram  # the reference itself: 2.48 nats per character
    assert result.metrics["test"]["loss"] < bigram - 0.15, (result.metrics["test"], bigram)
    assert result.metrics["vocabulary"] == {"kind": "chars", "size": 68}

    sample = specc_cli("generate", out, "--prompt", "ROMEO:", "--tokens", 80, "--seed", 3, "--temperature", 0.8)
    assert sample.returncode == 0, sample.stderr[-2000:]
    generated = sample.stdout.rstrip("\n")
    assert generated.startswith("ROMEO:") and len(generated) == len("ROMEO:") + 80
    assert set(generated) <= set(text)
    again = specc_cli("generate", out, "--prompt", "ROMEO:", "--tokens", 80, "--seed", 3, "--temperature", 0.8)
    assert again.stdout == sample.stdout  # the seed makes sampling repeatable
    greedy = [specc_cli("generate", out, "--prompt", "ROMEO:", "--tokens", 20, "--temperature", 0, "--seed", s).stdout
              for s in (1, 2)]
    assert greedy[0] == greedy[1]  # temperature 0 ignores the sampler


def test_generate_refuses_what_is_not_a_language_model(tmp_path):
    proc = specc_cli("generate", tmp_path, "--prompt", "x")
    assert proc.returncode == 2 and "is not a finished run of a text model" in proc.stderr


def test_lstm_classifies_sst2_sentiment(tmp_path, data_dir):
    result = specc.load(SPECS / "sst2_lstm.model").run(out=tmp_path / "lstm", epochs=1, limit=10_000)
    test = result.metrics["test"]
    assert set(test) == {"loss", "accuracy", "precision", "recall"}
    majority = 444 / 872  # dev.tsv: 444 positive, 428 negative sentences
    assert test["accuracy"] > majority + 0.15, test
    assert test["precision"] > 0.6 and test["recall"] > 0.6, test
    saved = json.loads((tmp_path / "lstm" / "tokenizer.json").read_text())
    assert saved["specc_vocabulary"] == "words"


@pytest.mark.slow  # 50-87 s: the suite's budget (12 epochs of the seq2seq spec)
def test_seq2seq_reverses_digit_strings(tmp_path):
    md = make_data()
    arrays = md.reverse_digits(20_000)
    with np.load(SPECS / "data" / "reverse_digits.npz") as shipped:  # the file in specs/ is this very data
        assert all(np.array_equal(shipped[k], v) for k, v in arrays.items())
    spec = copy_spec("reverse_digits", tmp_path)
    np.savez(tmp_path / "data" / "reverse_digits.npz", **arrays)
    result = specc.load(spec).run(out=tmp_path / "run")  # the whole recipe: 12 epochs
    # Exact match computed here, independently of the metric: every digit of the string right.
    predicted = result.model.predict(arrays["x_test"], verbose=0).argmax(-1)  # (2000, 8)
    exact = float(np.mean(np.all(predicted == arrays["y_test"], axis=1)))
    assert abs(exact - result.metrics["test"]["exact_match"]) < 1e-6
    assert exact > 0.9, result.metrics["test"]  # chance: 1e-8


def test_recommender_recovers_a_low_rank_matrix(tmp_path):
    md = make_data()
    rows, clean = md.low_rank_ratings(noise=0.25)
    spec = copy_spec("recommender", tmp_path)
    md.write_ratings_csv(tmp_path / "data" / "ratings.csv", rows)
    result = specc.load(spec).run(out=tmp_path / "run")
    rmse = result.metrics["test"]["root_mean_squared_error"]
    spread = float(np.std(rows[:, 2]))
    assert rmse < 0.25 * 1.25, (rmse, spread)  # the noise is 0.25; predicting the mean would give ~1
    # Against the noise-free matrix, on the held-out pairs: close to zero error.
    test_rows = rows[len(rows) - max(1, round(len(rows) * 0.1)):]
    users, items = test_rows[:, :1].astype("int32"), test_rows[:, 1:2].astype("int32")
    predicted = result.model.predict({"user": users, "item": items}, verbose=0).ravel()
    truth = clean[users.ravel() - 1, items.ravel() - 1]
    assert float(np.sqrt(np.mean((predicted - truth) ** 2))) < 0.2


def test_movielens_format_loads_and_trains(tmp_path):
    """MovieLens 100k's u.data: tab-separated user, item, rating, timestamp, no header."""
    md = make_data()
    rows, _ = md.low_rank_ratings(users=100, items=120)
    (tmp_path / "ml-100k").mkdir()
    with open(tmp_path / "ml-100k" / "u.data", "w") as f:
        for k, (user, item, rating) in enumerate(rows):
            f.write(f"{int(user)}\t{int(item)}\t{int(np.clip(round(rating), 1, 5))}\t{881250949 + k}\n")
    folder = tmp_path / "specs"
    spec = copy_spec("movielens", folder)
    result = specc.load(spec).run(out=tmp_path / "run", epochs=30)
    assert result.metrics["examples"] == len(rows) - round(len(rows) * 0.2)
    spread = float(np.std(np.clip(np.round(rows[:, 2]), 1, 5)))  # the error of always predicting the mean
    assert result.metrics["test"]["root_mean_squared_error"] < 0.8 * spread, (result.metrics["test"], spread)


def test_tabular_regression_with_kfold_matches_least_squares(tmp_path):
    result = specc.load(SPECS / "diabetes_regression.model").run(out=tmp_path / "run")
    cv = result.metrics["cross_validation"]
    assert cv["k"] == 5 and len(cv["mae"]["folds"]) == 5
    assert abs(cv["mae"]["mean"] - np.mean(cv["mae"]["folds"])) < 1e-9
    assert abs(cv["mae"]["std"] - np.std(cv["mae"]["folds"], ddof=1)) < 1e-9 and cv["mae"]["std"] > 0
    # The reference: ordinary least squares on the same 80/20 split (the last 20% of the rows test).
    table = np.loadtxt(SPECS / "data" / "diabetes.csv", delimiter=",", skiprows=1)
    cut = len(table) - round(len(table) * 0.2)
    design = np.column_stack([np.ones(len(table)), table[:, :10]])
    coef, *_ = np.linalg.lstsq(design[:cut], table[:cut, 10], rcond=None)
    ls_mae = float(np.mean(np.abs(design[cut:] @ coef - table[cut:, 10])))
    assert 35 < ls_mae < 50, ls_mae  # the reference itself
    assert result.metrics["test"]["mae"] < 1.1 * ls_mae, (result.metrics["test"], ls_mae)


SMALL = """model m {{
  input x: (4,)
  dense({width}, activation=relu)
  dense(2, activation=softmax, name=head)
}}
data {{
  x: [[0, 0, 1, 1], [1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 1, 0]]
  y: [0, 1, 0, 1]
}}
train {{
  loss: sparse_categorical_crossentropy
  epochs: 2
  batch_size: 2
}}
"""


@pytest.fixture
def small_run(tmp_path):
    (tmp_path / "pre.model").write_text(SMALL.format(width=8))
    specc.load(tmp_path / "pre.model").run(out=tmp_path / "pre", verbose=0)
    return tmp_path


def _init_spec(folder: Path, width: int, init: str) -> Path:
    path = folder / "ft.model"
    path.write_text(SMALL.format(width=width) + "init {\n" + init + "}\n")
    return path


def test_init_takes_the_named_layers_and_freezes(small_run):
    path = _init_spec(small_run, 8, '  from: "pre"\n  layers: ["dense*"]\n  freeze: [dense]\n')
    from specc.runtime.model_files import load_model

    pre = load_model(small_run / "pre" / "model.keras")
    result = specc.load(path).run(out=small_run / "ft", verbose=0)
    assert result.metrics["init"] == {"from": "pre", "layers": ["dense"], "frozen": ["dense"]}
    # The frozen layer still holds the pre-trained weights after training; the head was trained afresh.
    for a, b in zip(result.model.get_layer("dense").get_weights(), pre.get_layer("dense").get_weights()):
        assert np.array_equal(a, b)
    assert not np.array_equal(result.model.get_layer("head").get_weights()[0], pre.get_layer("head").get_weights()[0])


@pytest.mark.parametrize("init, line, message", [
    ('  from: "pre"\n  layers: [dense, encoder]\n', (17, 19), "`init` names layer `encoder`, but this model has no layer"),
    ('  from: "nowhere"\n', (16, 3), "`init` found no saved model at"),
    ('  from: "pre"\n  freeze: [dense_9]\n', (17, 12), "`freeze` names layer `dense_9`, but the model has no such layer"),
])
def test_init_mistakes_point_at_their_line(small_run, init, line, message):
    path = _init_spec(small_run, 8, init)
    with pytest.raises(specc.UserError) as info:
        specc.load(path).run(out=small_run / "ft", verbose=0)
    assert info.value.message.startswith(message), info.value.render()
    assert (info.value.line, info.value.first.span.col) == line, info.value.render()


def test_init_of_a_layer_with_other_shapes_is_refused(small_run):
    path = _init_spec(small_run, 16, '  from: "pre"\n  layers: [dense]\n')
    with pytest.raises(specc.SpecError) as info:
        specc.load(path).run(out=small_run / "ft", verbose=0)
    assert info.value.line == 17
    assert info.value.message == ("`init` cannot copy layer `dense`: its weights have shapes [(4, 8), (8,)] in "
                                  f"{small_run / 'pre' / 'model.keras'} but [(4, 16), (16,)] here")


@pytest.mark.slow  # slow: 60-80 s on 2 cores
def test_bert_pretrain_then_finetune_through_the_cli(tmp_path, data_dir):
    """Both BERT specs train (briefly); the fine-tuning run takes the encoder and the vocabulary
    of the pre-training run given with --init."""
    pre, ft = tmp_path / "pre", tmp_path / "ft"
    proc = specc_cli("run", SPECS / "sst2_bert_pretrain.model", "--out", pre, "--epochs", 1, "--limit", 3000, "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((pre / "metrics.json").read_text())
    assert metrics["vocabulary"] == {"kind": "wordpiece", "size": 2000}
    assert 0 < metrics["test"]["accuracy"] < 1 and metrics["test"]["loss"] < np.log(2000)  # better than uniform

    proc = specc_cli("run", SPECS / "sst2_bert_finetune.model", "--init", pre, "--out", ft, "--epochs", 1,
                     "--limit", 1000, "--quiet")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((ft / "metrics.json").read_text())
    assert metrics["init"]["from"] == str(pre.resolve()) and metrics["init"]["frozen"] == []
    assert {"embedding", "position_embedding", "multi_head_attention", "multi_head_attention_1", "dense_3"} \
        <= set(metrics["init"]["layers"])
    assert "classifier" not in metrics["init"]["layers"] and "mlm_head" not in metrics["init"]["layers"]
    assert (ft / "tokenizer.json").read_text() == (pre / "tokenizer.json").read_text()
    from specc.runtime.model_files import load_model

    before, after = load_model(pre / "model.keras"), load_model(ft / "model.keras")
    # Fine-tuning started from the pre-trained encoder and moved it a little.
    moved = after.get_layer("dense").get_weights()[0] - before.get_layer("dense").get_weights()[0]
    assert 0 < np.abs(moved).max() < 0.1 * np.abs(before.get_layer("dense").get_weights()[0]).max()


@pytest.mark.slow
def test_bert_pretraining_beats_training_from_scratch(data_dir):
    """The whole BERT recipe: pre-train 8 epochs, then fine-tune from it and from scratch with three seeds
    each; same vocabulary, labels, steps. 24 minutes on 2 cores; measured 0.791/0.779/0.795 fine-tuned
    against 0.773/0.780/0.772 from scratch."""
    spec = importlib.util.spec_from_file_location("bert_pretraining", ROOT / "benchmarks" / "bert_pretraining.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    report = bench.compare(seeds=[1, 2, 3])
    wins = sum(a > b for a, b in zip(report["fine_tuned"], report["from_scratch"]))
    assert report["fine_tuned_mean"] > report["from_scratch_mean"] and wins >= 2, report
