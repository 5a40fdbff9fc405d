"""`specc serve` for real: a uvicorn process on 127.0.0.1 serving three trained runs (the README's MNIST CNN, a
tiny text classifier, the diabetes regression), asked over HTTP as clients would.

What must hold (issue 17): answers equal `specc predict`'s (same preprocessing, same model); every client mistake
is a 4xx naming the field, never a 500, and the service keeps serving; concurrent requests are batched through
batch sizes compiled at start-up, so the compile count stays flat under load; SIGTERM answers the requests in
flight before exiting; two worker processes share one port.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from service import ROOT, service
from test_predict import REVIEWS, trained

httpx = pytest.importorskip("httpx", reason="the serving tests' HTTP client: pip install httpx (in the `test` extra)")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir):
    import specc

    recommender = tmp_path_factory.mktemp("recommender") / "run"  # two integer inputs, each read by embeddings
    specc.load(ROOT / "specs" / "recommender.model").run(out=recommender, epochs=2)
    return {**{k: trained(k, tmp_path_factory) for k in ("cnn", "text", "diabetes")}, "recommender": recommender}


@pytest.fixture(scope="module")
def server(runs):
    with service(runs["cnn"], runs["text"], runs["diabetes"], runs["recommender"], "--max-body-mb", "1") as s:
        yield s


# Four run directories all named `run`: the service numbers them in the order given.
CNN, TEXT, DIABETES, RECOMMENDER = "/runs/run", "/runs/run-2", "/runs/run-3", "/runs/run-4"
FEATURES = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6"]


def post(server, path: str, body=None, **kw) -> httpx.Response:
    if body is not None:
        kw["json"] = body
    return httpx.post(server.url + path, timeout=60, **kw)


def mnist_test(n: int):
    from specc.data.prepare import load_builtin

    m = load_builtin("mnist")
    return m.x_test[:n], m.y_test[:n]


def png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_answers_are_specc_predicts_for_lists_base64_files_text_and_tables(server, runs):
    from specc.tools.predict import open_run, preprocess

    x, _ = mnist_test(8)
    run = open_run(runs["cnn"])
    expected = run.model().predict(preprocess(run, x, "x"), verbose=0)  # what `specc predict` computes
    r = post(server, f"{CNN}/predict", {"instances": [{"image": a.tolist()} for a in x]})
    assert r.status_code == 200, r.text
    got = np.array([p["dense"]["probabilities"] for p in r.json()["predictions"]])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    classes = [int(c) for c in expected.argmax(-1)]
    assert [p["dense"]["class"] for p in r.json()["predictions"]] == classes
    # The same images as PNG bytes: base64 in JSON, a data: URL, a multipart file upload.
    b64 = base64.b64encode(png(x[0])).decode()
    for value in ({"base64": b64}, f"data:image/png;base64,{b64}"):
        one = post(server, f"{CNN}/predict", {"inputs": {"image": value}}).json()["outputs"]["dense"]
        assert one["class"] == classes[0] and len(one["top"]) == 5 and one["name"] == str(classes[0])
    form = post(server, f"{CNN}/predict", files={"image": ("digit.png", png(x[1]), "image/png")})
    assert form.status_code == 200 and form.json()["outputs"]["dense"]["class"] == classes[1]
    # Text: the saved vocabulary; a table: its feature columns by name (also as a form).
    text = open_run(runs["text"])
    from specc.data.tokenizers import encode_texts, read_vocabulary

    ids = encode_texts(read_vocabulary(text.tokenizer_file), REVIEWS[:2], 6)
    want = text.model().predict(ids, verbose=0)
    got = [post(server, f"{TEXT}/predict", {"inputs": {"tokens": t}}).json()["outputs"]["dense"]["probabilities"]
           for t in REVIEWS[:2]]
    np.testing.assert_allclose(got, want, atol=1e-5)
    diabetes = open_run(runs["diabetes"])
    row = np.linspace(-0.05, 0.05, 10).astype(np.float32)
    want = diabetes.model().predict(row[None], verbose=0)[0]
    for r in (post(server, f"{DIABETES}/predict", {"inputs": dict(zip(FEATURES, row.tolist()))}),
              post(server, f"{DIABETES}/predict", data={f: str(v) for f, v in zip(FEATURES, row.tolist())})):
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["outputs"]["dense_1"]["values"], want, rtol=1e-5)
        assert r.json()["outputs"]["dense_1"]["kind"] == "values"
    # Several inputs by name, a scalar where the input is (1,).
    pairs = [(5, 7), (149, 0), (0, 200)]
    rec = open_run(runs["recommender"]).model()
    want = rec.predict({"user": np.array([[u] for u, _ in pairs]), "item": np.array([[i] for _, i in pairs])}, verbose=0)
    r = post(server, f"{RECOMMENDER}/predict", {"instances": [{"user": u, "item": [i]} for u, i in pairs]})
    assert r.status_code == 200, r.text
    np.testing.assert_allclose([p["rating"]["values"] for p in r.json()["predictions"]], want, rtol=1e-5)


def test_a_text_longer_than_the_sequence_is_truncated_and_the_answer_says_so(server):
    r = post(server, f"{TEXT}/predict", {"inputs": {"tokens": "great fun film " * 5}})
    assert r.status_code == 200
    assert r.json()["warnings"] == ["inputs.tokens: the text has 15 tokens; the model reads the first 6 (the rest is "
                                    "cut off, as in training)"]
    meta = httpx.get(server.url + f"{TEXT}/metadata").json()
    assert meta["inputs"][0]["long_text"] == "truncated" and meta["inputs"][0]["sequence_length"] == 6


DIGIT = np.zeros((28, 28), dtype=int).tolist()
BAD = [  # (path, how to send it, status, field, words of the message)
    (CNN, {"json": {"inputs": {"img": DIGIT}}}, 422, "inputs.img", "is `img` meant to be `image`?"),
    (CNN, {"json": {"inputs": {"image": DIGIT[:20]}}}, 422, "inputs.image", "found shape (20, 28)"),
    (CNN, {"json": {"inputs": {"image": "hello"}}}, 422, "inputs.image", "data: URL"),
    (CNN, {"json": {"inputs": {"image": [["a"] * 28] * 28}}}, 422, "inputs.image", "only numbers"),
    (CNN, {"json": {"inputs": {"image": [[1, 2], [3]]}}}, 422, "inputs.image", "rows of different lengths"),
    (CNN, {"json": {"inputs": {"image": {"base64": "not base64!"}}}}, 422, "inputs.image", "not valid base64"),
    (CNN, {"json": {"inputs": {"image": {"base64": base64.b64encode(b"\x89PNG\r\n\x1a\nbroken").decode()}}}},
     422, "inputs.image", "damaged or not an image"),
    (CNN, {"content": b'{"inputs": {"image": [[NaN]]}}', "headers": {"content-type": "application/json"}},
     422, "inputs.image", "NaN"),
    (CNN, {"content": b'{"inputs": ', "headers": {"content-type": "application/json"}}, 400, "body", "not valid JSON"),
    (CNN, {"content": b"[" * 100_000, "headers": {"content-type": "application/json"}}, 400, "body", "JSON"),
    (CNN, {"content": b"", "headers": {"content-type": "application/json"}}, 400, "body", "empty"),
    (CNN, {"json": [DIGIT]}, 400, "body", "JSON object"),
    (CNN, {"json": {"inputs": {"image": DIGIT}, "extra": 1}}, 400, "body", "unknown key 'extra'"),
    (CNN, {"json": {"instances": []}}, 422, "instances", "non-empty list"),
    (CNN, {"json": {"instances": [{"image": 0}] * 1025}}, 413, "instances", "at most 1,024"),
    (CNN, {"content": b"x" * 1_200_000, "headers": {"content-type": "application/json"}}, 413, "body", "at most"),
    (CNN, {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "content-type", "application/json"),
    (CNN, {"files": {"image": ("x.png", b"not an image", "image/png")}}, 422, "inputs.image", "not an image"),
    (CNN, {"json": {"inputs": {"image": [[-5000] * 28] * 28}}}, 422, "inputs.image", "raw pixels are 0..255"),
    (CNN, {"json": {"inputs": {"image": {"base64": 5}}}}, 422, "inputs.image.base64", "must be a string"),
    (CNN, {"content": b'{"inputs": {"image": ' + b"9" * 5000 + b"}}", "headers": {"content-type": "application/json"}},
     400, "body", "Python refuses"),
    (CNN, {"files": {"img": ("x.png", b"x", "image/png")}}, 422, "inputs.img", "is `img` meant to be `image`?"),
    (TEXT, {"json": {"inputs": {"tokens": 5}}}, 422, "inputs.tokens", "must be a string"),
    (TEXT, {"json": {"inputs": {"tokens": "   "}}}, 422, "inputs.tokens", "is empty"),
    (DIABETES, {"json": {"inputs": {f: 0.0 for f in FEATURES[:-1]}}}, 422, "inputs.s6", "missing feature `s6`"),
    (DIABETES, {"json": {"inputs": {**{f: 0.0 for f in FEATURES}, "bmi": "high"}}}, 422, "inputs.bmi", "must be a number"),
    (DIABETES, {"content": b'{"inputs": {"age": 1' + b"0" * 400 + b', "sex": 1, "bmi": 1, "bp": 1, "s1": 1, "s2": 1, '
                b'"s3": 1, "s4": 1, "s5": 1, "s6": 1}}', "headers": {"content-type": "application/json"}},
     422, "inputs.age", "not a finite 32-bit number"),
    (RECOMMENDER, {"json": {"inputs": {"user": 5.5, "item": 7}}}, 422, "inputs.user", "whole numbers"),
    (RECOMMENDER, {"json": {"inputs": {"user": 5, "item": 201}}}, 422, "inputs.item", "ids of this input are 0..200"),
    (RECOMMENDER, {"json": {"inputs": {"user": -1, "item": 7}}}, 422, "inputs.user", "holds -1"),
    (RECOMMENDER, {"json": {"inputs": {"user": [1, 2], "item": 7}}}, 422, "inputs.user", "found shape `user`: (2,)"),
    (RECOMMENDER, {"json": {"inputs": {"user": 1}}}, 422, "inputs.item", "missing input `item`"),
]


def test_every_client_mistake_is_a_4xx_naming_the_field_and_the_service_keeps_serving(server):
    for path, send, status, field, words in BAD:
        r = httpx.post(server.url + path + "/predict", timeout=60, **send)
        assert r.status_code == status, (path, send.get("json", send.get("content", b""))[:80], r.text)
        body = r.json()
        assert body.get("field") == field and words in body["error"], (field, body)
    assert httpx.get(server.url + "/nope").status_code == 404
    assert httpx.get(server.url + f"{CNN}/predict").status_code == 405
    assert httpx.get(server.url + "/health").json()["status"] == "ready"
    assert post(server, f"{CNN}/predict", {"inputs": {"image": DIGIT}}).status_code == 200
    assert "Traceback" not in server.output() and "internal error" not in server.output()


def test_concurrent_requests_share_batches_and_nothing_compiles_under_load(server):
    stats = httpx.get(server.url + "/stats").json()["runs"]["run"]
    x, _ = mnist_test(40)
    rng = np.random.default_rng(0)
    sizes = [int(s) for s in rng.integers(1, 41, size=24)] + [1] * 100  # some larger than --max-batch (32)
    bad = {7, 50, 90}  # requests that are wrong: they fail alone, not the ones batched with them

    async def main():
        async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=httpx.Limits(max_connections=128)) as c:
            return await asyncio.gather(*[
                c.post(f"{CNN}/predict", json={"instances": [{"image": x[j % 40].tolist() if k not in bad else "?"}
                                                             for j in range(n)]})
                for k, n in enumerate(sizes)])

    answers = asyncio.run(main())
    assert [r.status_code for r in answers] == [422 if k in bad else 200 for k in range(len(sizes))]
    for k, (r, n) in enumerate(zip(answers, sizes)):
        if k not in bad:
            assert len(r.json()["predictions"]) == n
    after = httpx.get(server.url + "/stats").json()["runs"]["run"]
    assert after["compiles"] == stats["compiles"] == 4  # buckets 1, 4, 16, 32, compiled while warming up
    served = after["requests"] - stats["requests"]
    assert served == len(sizes) - len(bad)
    assert after["batches"] - stats["batches"] < served  # gathered: fewer batches than requests
    assert max(int(b) for b in after["batch_sizes"]) <= 32


def test_concurrent_text_requests_are_tokenized_apart(server):
    """The tokenizer is one object switched between settings: threads preparing requests at once once saw each
    other's truncation and padding (wrong shapes reached the batcher, which then hung)."""
    texts = [" ".join(REVIEWS[k % len(REVIEWS)] for _ in range(1 + k % 5)) for k in range(96)]

    async def main():
        async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=httpx.Limits(max_connections=96)) as c:
            return await asyncio.gather(*[c.post(f"{TEXT}/predict", json={"inputs": {"tokens": t}}) for t in texts])

    answers = asyncio.run(main())
    assert [r.status_code for r in answers] == [200] * len(texts)
    alone = {t: post(server, f"{TEXT}/predict", {"inputs": {"tokens": t}}).json() for t in set(texts)}
    for t, r in zip(texts, answers):
        np.testing.assert_allclose(r.json()["outputs"]["dense"]["probabilities"],
                                   alone[t]["outputs"]["dense"]["probabilities"], atol=1e-6)
        assert r.json()["warnings"] == alone[t]["warnings"]


def test_images_past_the_pixel_budget_are_refused_before_decoding_and_wrapped_base64_is_read(server):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (6000, 6000)).save(buf, format="PNG")  # 36 million pixels in a small file
    big = base64.b64encode(buf.getvalue()).decode()
    r = post(server, f"{CNN}/predict", {"instances": [{"image": {"base64": big}}] * 2})
    assert r.status_code == 413 and "72,000,000 pixels" in r.json()["error"], r.text
    x, _ = mnist_test(1)
    wrapped = base64.encodebytes(png(x[0])).decode()  # lines of 76 characters, as the `base64` tool writes
    assert "\n" in wrapped
    assert post(server, f"{CNN}/predict", {"inputs": {"image": {"base64": wrapped}}}).status_code == 200


def test_metadata_openapi_health_and_graph(server, runs):
    meta = httpx.get(server.url + f"{CNN}/metadata").json()
    assert meta["inputs"] == [{"name": "image", "shape": [28, 28, 1], "dtype": "float32", "kind": "image",
                               "image": {"mode": "L", "height": 28, "width": 28}, "draw": True}]
    assert meta["outputs"] == [{"name": "dense", "shape": [10], "kind": "classes", "classes": [str(c) for c in range(10)]}]
    assert meta["metrics"] == json.loads((runs["cnn"] / "metrics.json").read_text())["test"]
    assert meta["spec"] == (runs["cnn"] / "spec.model").read_text()
    assert set(meta["versions"]) == {"specc", "keras", "jax", "python"} and meta["batching"]["buckets"] == [1, 4, 16, 32]
    assert [n["cls"] for n in meta["graph"]["nodes"]][:2] == ["Input", "Conv2D"]
    assert httpx.get(server.url + f"{DIABETES}/metadata").json()["inputs"][0]["features"] == FEATURES
    api = httpx.get(server.url + "/openapi.json").json()
    schema = api["paths"][f"{CNN}/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]["inputs"]["properties"]) == {"image"}
    assert set(api["paths"][f"{DIABETES}/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
               ["properties"]["inputs"]["properties"]) == set(FEATURES)
    assert "swagger" in httpx.get(server.url + "/docs").text.lower()
    svg = httpx.get(server.url + f"{CNN}/graph.svg")
    assert (svg.status_code, svg.headers["content-type"]) == ((200, "image/svg+xml") if meta["graph"]["svg"]
                                                              else (404, "application/json"))
    assert httpx.get(server.url + "/").status_code == 200  # the list of runs


def test_sigterm_answers_the_requests_in_flight_before_exiting(runs):
    with service(runs["diabetes"], "--max-wait-ms", "2000", "--max-batch", "64") as s:
        row = {"inputs": dict.fromkeys(FEATURES, 0.01)}
        answers: list = []

        def ask():
            answers.append(httpx.post(s.url + "/predict", json=row, timeout=60).status_code)

        clients = [threading.Thread(target=ask) for _ in range(6)]
        for c in clients:
            c.start()
        deadline = time.monotonic() + 60
        while httpx.get(s.url + "/stats").json()["runs"]["run"]["in_flight"] < 6:  # all six wait for their batch
            assert time.monotonic() < deadline
            time.sleep(0.02)
        started = time.monotonic()
        assert s.stop() == 0, s.output()
        for c in clients:
            c.join()
        assert answers == [200] * 6
        assert time.monotonic() - started < 30


def test_two_worker_processes_share_one_port(runs):
    with service(runs["diabetes"], "--workers", "2", ready=r"ready on (http://\S+)[\s\S]*ready on http://") as s:
        pids: set[int] = set()
        deadline = time.monotonic() + 60
        while len(pids) < 2 and time.monotonic() < deadline:
            with httpx.Client(base_url=s.url, timeout=30) as c:  # a new connection each time
                assert c.post("/predict", json={"inputs": dict.fromkeys(FEATURES, 0.0)}).status_code == 200
                pids.add(c.get("/stats").json()["pid"])
        assert len(pids) == 2, s.output()
        assert s.stop() == 0


def test_command_line_mistakes_are_usage_errors(runs, tmp_path):
    def serve(*args):
        return subprocess.run([sys.executable, "-m", "specc", "serve", *map(str, args)], capture_output=True, text=True,
                              cwd=ROOT, timeout=120)

    done = serve(tmp_path / "missing")
    assert done.returncode == 2 and "no such run directory" in done.stderr and "Traceback" not in done.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        done = serve(runs["diabetes"], "--port", taken.getsockname()[1])
    assert done.returncode == 2 and "cannot listen on 127.0.0.1" in done.stderr and "--port" in done.stderr
    done = serve(runs["diabetes"], "--buckets", "1,64", "--max-batch", "32")
    assert done.returncode == 2 and "more than --max-batch 32" in done.stderr


def test_runs_the_service_cannot_serve_faithfully_are_refused(runs, tmp_path):
    import shutil

    def serve(*args):
        return subprocess.run([sys.executable, "-m", "specc", "serve", *map(str, args), "--port", "0"],
                              capture_output=True, text=True, cwd=ROOT, timeout=120)

    edited = tmp_path / "edited"
    shutil.copytree(runs["diabetes"], edited)
    spec = edited / "spec.model"
    spec.write_text(spec.read_text().replace("age, sex", "sex, age"))
    done = serve(edited)
    assert done.returncode == 2 and "spec.model was changed after this run trained" in done.stderr, done.stderr
    untokenized = tmp_path / "untokenized"
    shutil.copytree(runs["text"], untokenized)
    (untokenized / "tokenizer.json").unlink()
    done = serve(untokenized)
    assert done.returncode == 2 and "no tokenizer.json" in done.stderr, done.stderr


def test_run_names_never_collide():
    from specc.tools.serving import unique_names

    assert unique_names(["/x/a", "/y/a", "/z/a-2"]) == ["a", "a-2", "a-2-2"]
    assert unique_names(["/x/ünï", "/y/my run"]) == ["ünï", "my-run"]


def test_buckets():
    from specc.tools.serving import BatchOptions, default_buckets

    assert default_buckets(32) == (1, 4, 16, 32) and default_buckets(1) == (1,) and default_buckets(64) == (1, 4, 16, 64)
    options = BatchOptions(max_batch=32)
    assert [options.bucket(n) for n in (1, 2, 4, 5, 17, 32)] == [1, 4, 4, 16, 32, 32]


def test_the_runtime_onnx_serves_the_checked_export_with_the_same_answers(server, runs, tmp_path):
    pytest.importorskip("onnxruntime", reason="--runtime onnx needs onnxruntime (pip install -e '.[onnx]')")
    pytest.importorskip("jax2onnx", reason="the export needs jax2onnx (pip install -e '.[onnx]')")
    import shutil

    run = tmp_path / "cnn"
    shutil.copytree(runs["cnn"], run)
    refused = subprocess.run([sys.executable, "-m", "specc", "serve", str(run), "--runtime", "onnx", "--port", "0"],
                             capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert refused.returncode == 2 and f"specc export {run} --format onnx" in refused.stderr, refused.stderr
    exported = subprocess.run([sys.executable, "-m", "specc", "export", str(run), "--format", "onnx"],
                              capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert exported.returncode == 0, exported.stderr
    x, _ = mnist_test(8)
    body = {"instances": [{"image": a.tolist()} for a in x]}
    want = [p["dense"]["probabilities"] for p in post(server, f"{CNN}/predict", body).json()["predictions"]]
    with service(run, "--runtime", "onnx") as onnx:
        r = httpx.post(onnx.url + "/predict", json=body, timeout=60)
        assert r.status_code == 200, r.text
        np.testing.assert_allclose([p["dense"]["probabilities"] for p in r.json()["predictions"]], want, atol=1e-5)
        assert httpx.get(onnx.url + "/metadata").json()["runtime"] == "onnx"
        assert httpx.get(onnx.url + "/stats").json()["runs"]["cnn"]["compiles"] == 0  # no XLA: onnxruntime runs it
