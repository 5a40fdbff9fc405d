"""Runtime failures traced to spec lines (specc/train/diagnose.py): the layer that first produced a NaN or infinity, found by
replaying the failing epoch on its real batches, and the message an out-of-memory failure gets."""

import os
import subprocess
import sys

import numpy as np
import pytest

import specc
from specc.core.errors import EXIT_DATA

DATA = "data {\n  x: [[1, 2, 3, 4], [0, 1, 0, 1], [2, 0, 1, 1], [1, 1, 1, 1], [3, 1, 0, 2], [0, 2, 2, 0]]\n" \
       "  y: [0, 1, 2, 0, 1, 2]\n}\n"
TRAIN = "train {\n  loss: sparse_categorical_crossentropy\n  optimizer: adam\n  epochs: 2\n  batch_size: 2\n  seed: 0\n}\n"

# The first dense layer's outputs are about 1e20, finite; the second multiplies them by 1e20 again: infinity.
OVERFLOW = """model m {
  input x: (4,)
  dense(8, kernel_initializer=constant(1e20))
  dense(8, kernel_initializer=constant(1e20))
  dense(3)
}
""" + DATA + TRAIN


def _write(tmp_path, text, name="m.model"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _fail(tmp_path, text) -> specc.DivergedError:
    with pytest.raises(specc.DivergedError) as info:
        specc.load(_write(tmp_path, text)).run(out=tmp_path / "run")
    return info.value


def test_layer_names_are_spec_node_names_with_their_lines():
    """Every layer a spec builds (inputs and wrappers included) is named after its plan node, which has a line."""
    from specc.compile.build import build_shapes

    root = os.path.join(os.path.dirname(__file__), "..", "specs")
    for name in ("mnist.model", "sst2_lstm.model"):
        plan = specc.load(os.path.join(root, name)).plan
        model = build_shapes(plan).model
        nodes = {n.name: n for n in [*plan.inputs, *plan.layers]}
        assert sorted(layer.name for layer in model.layers) == sorted(nodes), name
        assert all(nodes[layer.name].origin.span is not None for layer in model.layers), name
        wrapped = [layer for layer in model.layers if hasattr(layer, "forward_layer")]
        assert not wrapped or name == "sst2_lstm.model"  # a wrapper's inner layers are reported as the wrapper


def test_the_layer_that_overflows_is_named_with_its_line_not_the_one_before(tmp_path):
    err = _fail(tmp_path, OVERFLOW)
    assert err.message.startswith("training stopped: the loss became nan in epoch 1, step 1 of 3: inf first produced "
                                  f"by `dense_1` (Dense) at {tmp_path / 'm.model'}:4:3: its inputs are finite ")
    assert "`dense`" not in err.message  # the first layer, finite, is not blamed
    assert (err.line, err.col) == (4, 3)
    assert "no model was saved" in err.message and "`dense_1`" in err.hint
    assert "4 |   dense(8, kernel_initializer=constant(1e20))\n" in err.render()


def test_a_nan_from_the_loss_is_blamed_on_the_loss_setting(tmp_path):
    # Poisson's log of negative predictions: the network's values are finite, the loss is not.
    spec = "model m {\n  input x: (4,)\n  dense(1)\n}\n" + DATA + TRAIN.replace("sparse_categorical_crossentropy", "poisson")
    err = _fail(tmp_path, spec)
    assert "NaN first produced by the loss `poisson`, from finite predictions (from -" in err.message
    assert err.line == 10  # `loss: poisson`
    assert "activation suits the loss" in err.hint


def test_a_layer_inside_a_block_is_located_with_the_block_call(tmp_path):
    spec = OVERFLOW.replace("model m {", "block huge(units) {\n  dense(units, kernel_initializer=constant(1e20))\n}\n\n"
                            "model m {").replace("  dense(8, kernel_initializer=constant(1e20))\n  dense(8, kernel_initial"
                                                 "izer=constant(1e20))\n", "  huge(8)\n  huge(8)\n")
    err = _fail(tmp_path, spec)
    plan = specc.load(tmp_path / "m.model").plan
    second = [node for node in plan.layers if node.cls == "Dense"][1]  # the second call's dense layer
    assert f"inf first produced by `{second.name}` (Dense) at {tmp_path / 'm.model'}:2:3: " in err.message
    assert (err.line, err.col) == (2, 3)  # the dense call inside the block ...
    assert err.first.notes == ["in block `huge`, used at line 8"]  # ... through its second use


def test_the_cli_exits_3_with_the_layer_position(tmp_path):
    path = _write(tmp_path, OVERFLOW)
    proc = subprocess.run([sys.executable, "-m", "specc", "run", str(path), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_DATA, proc.stderr
    assert f"{path}:4:3: error: training stopped: the loss became nan in epoch 1, step 1 of 3: inf first produced by " \
           "`dense_1`" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- out of memory -----------------------------------------------------------------------------------------

BIG = """model big {
  input x: (8,)
  dense(1048576)
  dense(1)
}
data { file: "big.npz" }
train {
  loss: mse
  epochs: 1
  batch_size: 1024
}
"""


def test_running_out_of_memory_names_the_largest_activation_and_a_batch_that_fits(tmp_path):
    """The real path: `specc run` in a child whose address space is limited to 3 GiB, so that XLA:CPU's 8 GiB
    allocation for `dense`'s (1024, 1048576) output fails (nothing is allocated on this shared machine)."""
    import re
    import resource

    x = np.random.default_rng(0).normal(size=(1024, 8)).astype("float32")
    np.savez(tmp_path / "big.npz", x=x, y=x.sum(axis=1))
    path = _write(tmp_path, BIG, "big.model")

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (3 * 2**30, 3 * 2**30))

    proc = subprocess.run([sys.executable, "-m", "specc", "run", str(path), "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert proc.returncode == EXIT_DATA, proc.stderr[-2000:]
    err = proc.stderr
    assert f"{path}:3:3: error: out of memory during training with batch 1024 (XLA tried to allocate " in err
    assert f"the largest activations per batch: `dense` at {path}:3:3 (1024, 1048576) 4.00 GiB; " in err
    assert "note: XLA: RESOURCE_EXHAUSTED: Out of memory allocating " in err and "Traceback" not in err
    wanted, free = re.search(r"allocate ([\d.]+) GiB with ([\d.]+) (GiB|MiB) available", err).group(1, 2)
    unit = 1 if "GiB available" in err else 1 / 1024
    batch = int(re.search(r"try `batch_size: (\d+)` in `train` \(line 10\)", err).group(1))
    assert abs(batch - 1024 * float(free) * unit / float(wanted)) <= 2  # scaled by available over wanted


def test_the_allocation_xla_reports_is_read_from_its_message():
    from specc.train.diagnose import is_out_of_memory, wanted_bytes

    assert wanted_bytes("RESOURCE_EXHAUSTED: Out of memory allocating 8598331588 bytes.") == 8598331588
    assert wanted_bytes("Out of memory while trying to allocate 1.50GiB.") == int(1.5 * 2**30)
    assert is_out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 8 bytes."))
    assert not is_out_of_memory(RuntimeError("INVALID_ARGUMENT: shapes differ"))
