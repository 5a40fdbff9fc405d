"""The web page of `specc serve` in a real browser (headless Chromium through Selenium, tests/browser.py), against
the real server: `python -m specc serve RUN_DIR` started as a subprocess on a free port of 127.0.0.1, serving a run of
specs/mnist.model trained briefly for this module (1 epoch on 3,000 examples: about 90% test accuracy).

What the page shows is checked against what the server answers to the same request made by the test itself
(`POST /predict` with urllib): the class of a digit drawn with the mouse on the canvas and of a real MNIST test image
chosen in the file field, the bars' widths against the probabilities, the server's error message for a file that is
not an image; and a screenshot is read back with Pillow to see that the answer is on the screen, not only in the DOM.
Skipped without Chromium (Debian packages `chromium` and `chromium-driver`) or Selenium.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import os
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from browser import HEIGHT, WIDTH, chromium, console_errors, missing
from service import service
from test_predict import trained

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
LIMIT = 3000  # training examples: 1 epoch takes about 20 s on 2 cores and reaches about 90% test accuracy
READY_TIMEOUT = 120  # seconds for `GET /health` to answer 200 (the model loaded and warmed)
STOP_TIMEOUT = 30
WAIT = 30  # seconds the page gets to show an answer

pytestmark = pytest.mark.skipif(missing() is not None, reason=missing() or "")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""), KERAS_BACKEND="jax")
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, body: Any = None, timeout: float = 60) -> tuple[int, Any]:
    """GET (or POST `body` as JSON) and the answer's status and JSON, 4xx and 5xx included."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


# --------------------------------------------------------------------------------------------- the run and the server


@pytest.fixture(scope="module")
def server(tmp_path_factory, data_dir) -> Iterator[str]:
    """The URL of `specc serve` on the session's brief run of specs/mnist.model (shared with tests/test_serve.py),
    started on a free port of 127.0.0.1 and stopped with SIGTERM at the end (tests/service.py)."""
    with service(trained("cnn", tmp_path_factory)) as s:
        yield s.url


@pytest.fixture(scope="module")
def meta(server) -> dict:
    status, body = http(server + "/metadata")
    assert status == 200, body
    return body


@pytest.fixture(scope="module")
def driver() -> Iterator[Any]:
    with chromium() as d:
        yield d


@pytest.fixture(scope="module")
def mnist_png(tmp_path_factory, data_dir) -> tuple[Path, int]:
    """The first MNIST test image (a 7) written as a 28 x 28 grayscale PNG, and its label."""
    from PIL import Image

    with gzip.open(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz") as f:
        image = np.frombuffer(f.read(16 + 28 * 28), np.uint8, offset=16).reshape(28, 28)
    with gzip.open(data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz") as f:
        label = int(np.frombuffer(f.read(9), np.uint8, offset=8)[0])
    path = tmp_path_factory.mktemp("digit") / "digit.png"
    Image.fromarray(image).save(path)
    return path, label


# --------------------------------------------------------------------------------------------- the page


def open_page(driver, server: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    console_errors(driver)  # those of an earlier test are not this one's
    driver.get(server + "/")
    WebDriverWait(driver, WAIT).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready") == "true"
        or d.find_element(By.ID, "error").text)
    error = driver.find_element(By.ID, "error").text
    assert not error, f"the page did not load: {error}"


def predict_and_wait(driver) -> str:
    """Clicks #predict and waits for the shown class (or an error, which fails the test)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.ID, "predict").click()
    WebDriverWait(driver, WAIT).until(
        lambda d: d.find_element(By.ID, "result-class").text or d.find_element(By.ID, "error").text)
    assert not driver.find_element(By.ID, "error").text, driver.find_element(By.ID, "error").text
    return driver.find_element(By.ID, "result-class").text


def draw_a_one(driver) -> None:
    """A "1" drawn with the mouse: a slightly slanted stroke down the middle of the canvas."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.ID, "canvas")
    actions = ActionChains(driver).move_to_element_with_offset(canvas, 10, -90).click_and_hold()
    for _ in range(9):
        actions.move_by_offset(-2, 20)
    actions.release().perform()


def bars(driver) -> list[dict]:
    """Each bar of #bars: its name, percentage text, whether it is marked as the prediction, and the widths of its
    fill and of its track in CSS pixels (unrounded)."""
    return driver.execute_script("""
        return Array.from(document.querySelectorAll('#bars .bar')).map((bar) => ({
          name: bar.querySelector('.bar-name').textContent,
          value: bar.querySelector('.bar-value').textContent,
          top: bar.classList.contains('top'),
          fill: bar.querySelector('.bar-fill').getBoundingClientRect().width,
          track: bar.querySelector('.bar-track').getBoundingClientRect().width,
        }));""")


def sent_pixels(driver) -> list[list[int]]:
    """The small canvas of what the model sees: the 28 x 28 pixels the page sent for the drawing."""
    return driver.execute_script("""
        const c = document.getElementById('preview');
        const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const rows = [];
        for (let y = 0; y < c.height; y++) {
          const row = [];
          for (let x = 0; x < c.width; x++) row.push(data[4 * (y * c.width + x)]);
          rows.push(row);
        }
        return rows;""")


def test_a_drawn_digit_and_an_uploaded_image_are_classified_as_the_server_says(driver, server, meta, mnist_png):
    from selenium.webdriver.common.by import By

    image_input, output = meta["inputs"][0], meta["outputs"][0]
    assert image_input["kind"] == "image" and image_input["draw"] is True and output["kind"] == "classes"
    open_page(driver, server)
    draw_a_one(driver)
    shown = predict_and_wait(driver)
    assert shown in output["classes"]

    # The page sent the drawing as MNIST's digits look: 28 x 28, 0..255, the stroke's mass in the middle.
    pixels = np.array(sent_pixels(driver), dtype=float)
    assert pixels.shape == (28, 28) and pixels.max() >= 200
    ys, xs = np.indices(pixels.shape)
    centre = (float((ys * pixels).sum() / pixels.sum()), float((xs * pixels).sum() / pixels.sum()))
    assert abs(centre[0] - 13.5) < 1.5 and abs(centre[1] - 13.5) < 1.5, centre
    status, answer = http(server + "/predict", {"inputs": {image_input["name"]: pixels.astype(int).tolist()}})
    assert status == 200, answer
    want = answer["outputs"][output["name"]]
    assert shown == want["name"]
    assert shown == "1"  # a vertical stroke, drawn as MNIST's digits are written, is a 1 even to a 90% model

    # One bar per class, in class order, each as wide as its probability, the predicted one marked.
    shown_bars = bars(driver)
    assert [b["name"] for b in shown_bars] == output["classes"]
    for bar, p in zip(shown_bars, want["probabilities"]):
        assert abs(bar["fill"] - p * bar["track"]) <= 1.5, (bar, p)
        assert abs(float(bar["value"].rstrip("%")) - 100 * p) <= 0.05 + 1e-9, (bar, p)
    assert [b["name"] for b in shown_bars if b["top"]] == [want["name"]]

    # A real MNIST test image chosen in the file field: the class the server gives that very file.
    path, label = mnist_png
    open_page(driver, server)
    driver.find_element(By.ID, "file").send_keys(str(path))
    shown = predict_and_wait(driver)
    status, answer = http(server + "/predict",
                          {"inputs": {image_input["name"]: {"base64": base64.b64encode(path.read_bytes()).decode()}}})
    assert status == 200, answer
    assert shown == answer["outputs"][output["name"]]["name"] == output["classes"][label]
    assert console_errors(driver) == []


def test_a_screenshot_shows_the_answer_beside_the_input(driver, server, meta, mnist_png, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By

    open_page(driver, server)
    driver.find_element(By.ID, "file").send_keys(str(mnist_png[0]))
    predict_and_wait(driver)
    shot = tmp_path / "page.png"
    assert driver.save_screenshot(str(shot))
    image = Image.open(shot)
    assert image.format == "PNG" and image.size == (WIDTH, HEIGHT)
    rgb = np.asarray(image.convert("RGB"))
    colours = np.unique(rgb.reshape(-1, 3), axis=0)
    assert len(colours) > 100, f"a nearly blank page: {len(colours)} colours"

    # The bars are on the screen without scrolling, and the predicted one's fill is painted as wide as it is.
    box = driver.execute_script("""
        const r = document.getElementById('bars').getBoundingClientRect();
        const fill = document.querySelector('#bars .bar.top .bar-fill');
        const f = fill.getBoundingClientRect();
        const colour = getComputedStyle(fill).backgroundColor.match(/\\d+/g).slice(0, 3).map(Number);
        return {x: r.left, y: r.top, w: r.width, h: r.height, fw: f.width, fh: f.height, colour};""")
    assert box["w"] > 100 and box["h"] > 100
    assert 0 <= box["x"] and box["x"] + box["w"] <= WIDTH and 0 <= box["y"] and box["y"] + box["h"] <= HEIGHT, box
    area = rgb[int(box["y"]):int(box["y"] + box["h"]), int(box["x"]):int(box["x"] + box["w"])]
    painted = int(np.all(area == np.array(box["colour"], dtype=np.uint8), axis=-1).sum())
    assert painted >= 0.8 * box["fw"] * box["fh"] > 0, (painted, box)
    assert (area.reshape(-1, 3) != area[0, 0]).any(axis=-1).mean() > 0.05  # not one flat colour

    # Beside it: the graph, the test metrics and the spec, as the metadata gives them.
    graph = driver.find_element(By.ID, "graph")
    if meta["graph"]["svg"]:
        assert driver.execute_script("return document.querySelector('#graph img').naturalWidth") > 0
    else:
        assert len(graph.find_elements(By.CSS_SELECTOR, ".box")) >= len(meta["graph"]["nodes"])
    rows = {r.find_element(By.TAG_NAME, "th").text: r.find_element(By.TAG_NAME, "td").text
            for r in driver.find_elements(By.CSS_SELECTOR, "#metrics tr")}
    assert rows.keys() == meta["metrics"].keys() and meta["metrics"]
    for name, value in meta["metrics"].items():
        assert math.isclose(float(rows[name].replace(",", "")), value, rel_tol=1e-3, abs_tol=1e-4), (name, rows[name])
    assert driver.execute_script("return document.getElementById('spec-text').textContent") == meta["spec"]
    assert console_errors(driver) == []


def test_errors_are_shown_on_the_page(driver, server, meta, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    open_page(driver, server)
    error = driver.find_element(By.ID, "error")
    assert not error.is_displayed()
    # Nothing drawn nor chosen: the page says so itself.
    driver.find_element(By.ID, "predict").click()
    WebDriverWait(driver, WAIT).until(lambda d: error.text)
    assert error.is_displayed() and "error" in error.get_attribute("class").split()
    assert "Draw a digit" in error.text and driver.find_element(By.ID, "result-class").text == ""

    # A file that is not an image: the server's own message, word for word.
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"this is not a PNG")
    status, answer = http(server + "/predict",
                          {"inputs": {meta["inputs"][0]["name"]: {"base64": base64.b64encode(broken.read_bytes()).decode()}}})
    assert 400 <= status < 500 and answer["error"], answer
    driver.find_element(By.ID, "file").send_keys(str(broken))
    driver.find_element(By.ID, "predict").click()
    WebDriverWait(driver, WAIT).until(lambda d: error.get_attribute("textContent") == answer["error"])
    assert error.is_displayed() and driver.find_element(By.ID, "result-class").text == ""
    console_errors(driver)  # the 4xx answer is logged as a failed request; that is expected here
