"""What a spec declares is bounded where it is written: constants and inline data as they are built, files read as
specs only when they are regular files, sizes per example, training objects Keras would refuse, names that reach a
terminal, and how long checking the largest allowed model takes (issue 14, items 3-8).

The broken specs of these checks are in tests/errors/ (let_*, vocabulary_*, train_*, data_*, layer_name_*, layers_*)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from alarm import alarm_after

import specc
from specc.api import read_spec
from specc.compile.build import LayerRow, build_shapes, format_summary
from specc.compile.check import MAX_LAYERS, MAX_VALUE_ELEMENTS
from specc.core.errors import SpecError, UsageError

HEAD = "model m {\n  input x: (4,)\n  dense(1)\n}\n"


def doubling(count: int) -> str:
    """`count` constants, each a list of two of the one before: the last stands for 2**(count + 1) numbers."""
    return "let a0 = [1, 2]\n" + "".join(f"let a{i} = [a{i - 1}, a{i - 1}]\n" for i in range(1, count + 1))


# -- read_spec: regular files only, read with a cap ---------------------------------------------------------------


def test_read_spec_refuses_what_is_not_a_regular_file(tmp_path):
    """A folder, a named pipe, a device and a socket, and links to them, are refused by name before they are opened
    (a FIFO used to block forever, `/dev/null` read as an empty spec)."""
    fifo = tmp_path / "pipe.model"
    os.mkfifo(fifo)
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock.model"))
    link = tmp_path / "link.model"
    link.symlink_to("/dev/null")
    expected = {str(tmp_path): "this is a folder", str(fifo): "this is a named pipe (FIFO)",
                "/dev/null": "this is a character device", str(tmp_path / "sock.model"): "this is a socket",
                str(link): "this is a link to /dev/null, a character device"}
    found: dict[str, str] = {}

    def read_all():
        for path in expected:
            try:
                read_spec(path)
                found[path] = "read"
            except UsageError as err:
                found[path] = err.first.message
                assert err.first.file == path

    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():  # blocked opening the FIFO: let it go, then fail
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        reader.join(5)
    sock.close()
    assert not reader.is_alive() and set(found) == set(expected), found
    for path, start in expected.items():
        assert found[path].startswith(start), (path, found[path])
    spec = tmp_path / "m.model"  # regular files, and links to them, are read as before
    spec.write_text(HEAD)
    (tmp_path / "spec-link.model").symlink_to(spec)
    assert read_spec(spec) == read_spec(tmp_path / "spec-link.model") == HEAD
    assert read_spec("/proc/self/status").startswith("Name:")  # size 0 in stat, read with the cap


def test_check_of_an_endless_device_is_refused_without_reading_it():
    """`specc check /dev/zero` read until memory ran out; now exit 2 at once, under a 1 GiB address-space limit."""
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)); "
            "from specc.cli import main; sys.exit(main(['check', '--syntax-only', '/dev/zero', '/dev/urandom']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "/dev/zero: error: this is a character device, not a regular file" in proc.stderr
    assert "/dev/urandom: error: this is a character device" in proc.stderr


# -- values bounded as they are built ------------------------------------------------------------------------------


def test_doubling_constants_stop_at_the_bound_in_a_second():
    """28 lines of doubling constants stood for 2**28 numbers (MemoryError after minutes); the first constant past
    the bound is the error, and the later ones, which name it, add none."""
    with alarm_after(20), pytest.raises(SpecError) as info:  # a failure, not minutes of swapping, if it regresses
        specc.loads(doubling(27) + HEAD)
    (diag,) = info.value.diagnostics
    assert (diag.span.line, diag.span.col) == (20, 11)
    assert diag.message.startswith("this value is too large: 1,048,576 elements")
    assert f"at most {MAX_VALUE_ELEMENTS:,}" in diag.message


def test_messages_quote_a_bounded_prefix_of_a_large_value():
    """An error about a large (but allowed) value quotes its first characters, not all of them."""
    with pytest.raises(SpecError) as info:
        specc.loads(doubling(18) + "model m {\n  input x: (4,)\n  dense(-a18)\n}\n")
    message = info.value.first.message
    assert message.startswith("cannot negate `[[[[") and message.endswith("...`"), message[:200]
    assert len(message) < 200


def test_arguments_of_all_layers_are_bounded_together():
    """A large allowed constant given to every layer of a `repeat` is copied into each: bounded in all."""
    text = doubling(18) + "model m {\n  input x: (4,)\n  repeat 10 { normalization(mean=a18, variance=a18) }\n}\n"
    with pytest.raises(SpecError) as info:
        specc.loads(text)
    assert info.value.first.message.startswith("the model's layer arguments hold more than 4,000,000 values")
    assert info.value.first.span.line == 22  # the `repeat` body's layer


# -- names and constants in the summary ------------------------------------------------------------------------------


def test_summary_escapes_names_and_constants():
    """Layer names (from a spec, or a plan made otherwise) and string constants reach the terminal escaped."""
    spec = specc.loads('let colour = "\\x1b[31mred"\nmodel m {\n  input x: (4,)\n  dense(1, name=colour)\n}\n'
                       .replace("name=colour", 'name="out"'))
    text = spec.summary()
    assert "\x1b" not in text and "let colour = \\x1b[31mred" in text
    rows = [LayerRow("a\x1b]0;owned\x07b\nc", "Dense", [None, 1], 5, 4)]
    table = format_summary(spec.plan, rows, 5)
    assert "\x1b" not in table and "\x07" not in table and "a\\x1b]0;owned\\x07b\\x0ac" in table


# -- what checking the largest allowed model costs -------------------------------------------------------------------


def test_layers_that_build_several_count_more():
    """334 attention layers (6 each) are past the bound of 2,000; 333 and 2,000 dense layers are within it."""
    attention = "multi_head_attention(num_heads=2, key_dim=16)"
    body = "model m {{\n  input x: (16, 32)\n  repeat {} {{ {} }}\n}}\n"
    specc.loads(body.format(333, attention))
    specc.loads(body.format(MAX_LAYERS, "dense(2)"))
    with pytest.raises(SpecError, match="`MultiHeadAttention` counts as 6"):
        specc.loads(body.format(334, attention))
    with pytest.raises(SpecError, match=r"\(`Bidirectional` counts as 4; `LSTM` counts as 2"):
        specc.loads(body.format(334, "bidirectional(lstm(4, return_sequences=true))"))


LARGEST = {  # the slowest kinds measured, each at the most the bound allows
    "attention": ("(16, 32)", "multi_head_attention(num_heads=2, key_dim=16)", 333),
    "bidirectional": ("(16, 32)", "bidirectional(lstm(16, return_sequences=true))", 333),
    "lstm": ("(16, 32)", "lstm(32, return_sequences=true)", 1000),
    "conv3d": ("(8, 8, 8, 4)", "conv3d(4, 3, padding=same)", 666),
    "conv2d": ("(16, 16, 8)", "conv2d(8, 3, padding=same)", 2000),
}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(LARGEST))
def test_largest_allowed_models_check_within_the_budget(kind):
    """The budget (README): a spec within the bounds checks (parse, check, shapes) in under 10 s on 2 cores; this
    measures the in-process part, which leaves 3-4 s for starting Python, Keras and JAX."""
    head, layer, count = LARGEST[kind]
    text = f"model m {{\n  input x: {head}\n  repeat {count} {{ {layer} }}\n}}\n"
    start = time.perf_counter()
    build_shapes(specc.loads(text).plan)
    assert time.perf_counter() - start < 7
