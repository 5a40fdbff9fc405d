"""Export a trained run: `specc export RUN_DIR --format keras|weights|int8|onnx [-o PATH]`.

- `keras`: a copy of `model.keras` (architecture, weights, compile settings and optimizer state).
- `weights`: the weights alone (`model.save_weights`, a `.weights.h5` file); they load into the model the
  spec builds: `specc.load(SPEC).build_model().load_weights(PATH)`.
- `int8`: Keras's own post-training quantization, `model.quantize("int8")`: the kernels of `Dense`,
  `EinsumDense` and `Embedding` layers become int8 with a float scale per output channel (other layers,
  convolutions included, stay float32). The model is saved as a `.keras` file without optimizer state,
  loaded back, and evaluated on the run's test split beside the float model; size and test metrics before and
  after go to a report (`*.json` beside the file) and to standard output.
- `onnx`: an ONNX graph converted by jax2onnx from the JAX computation of the model, checked in onnxruntime
  on the run's test split beside the Keras model before it is kept (`specc.tools.export_onnx`, which says how,
  and which layers it refuses, by name and spec line).

Other formats of `keras.Model.export` do not work on the JAX backend without TensorFlow (see the README):
SavedModel, OpenVINO and LiteRT need TensorFlow (LiteRT is refused on JAX outright), and `torch` needs the
PyTorch backend. (Keras's own `format="onnx"` goes through jax2onnx too, but writes max pooling that
onnxruntime rejects: `--format onnx` rewrites the pooling first, and checks the result.)

Every file is written atomically (temporary file, then rename); by default into `RUN_DIR/export/`.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from specc.core.artifacts import write_atomic, write_atomic_with
from specc.core.errors import DataError, Diagnostic, UsageError, printable
from specc.core.files import size_text
from specc.runtime.model_files import open_model
from specc.tools.predict import Run, evaluate, load_test_split

DEFAULT_NAMES = {"keras": "model.keras", "weights": "model.weights.h5", "int8": "model.int8.keras", "onnx": "model.onnx"}
SUFFIXES = {"keras": ".keras", "weights": ".weights.h5", "int8": ".keras", "onnx": ".onnx"}


def out_path(run: Run, given: str | None, fmt: str) -> Path:
    """Where to write: -o (a file, or an existing folder for the default name), else RUN_DIR/export/."""
    out = Path(given) if given else run.path / "export" / DEFAULT_NAMES[fmt]
    if out.is_dir():
        out = out / DEFAULT_NAMES[fmt]
    if not out.name.endswith(SUFFIXES[fmt]):
        raise UsageError(Diagnostic(f"--format {fmt} writes a `{SUFFIXES[fmt]}` file", file=str(out),
                                    hint=f"name it like `{DEFAULT_NAMES[fmt]}`"))
    if out.exists() and out.resolve() == run.model_file.resolve():
        raise UsageError(Diagnostic("this is the run's own model; export it somewhere else", file=str(out)))
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(Diagnostic(f"cannot make the folder: {err.strerror or err}", file=str(out.parent))) from None
    return out


def export_weights(run: Run, out: Path) -> int:
    model = open_model(run.model_file, compile=False)
    write_file(out, model.save_weights, ".weights.h5")
    return out.stat().st_size


def write_file(out: Path, save, suffix: str) -> None:
    """`save(tmp)` writes a temporary file that then replaces `out`; a file system error is a UsageError naming `out`."""
    try:
        write_atomic_with(out, save, suffix=suffix)
    except OSError as err:
        raise UsageError(Diagnostic(f"cannot write it: {err.strerror or err}", file=str(out))) from None


def _saved_size(model, folder: Path) -> int:
    """Bytes of `model` saved as a .keras file (measured in a temporary file, then removed)."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".size.", suffix=".keras")
    os.close(fd)
    try:
        model.save(tmp)
        return os.path.getsize(tmp)
    finally:
        os.unlink(tmp)


def quantized_layers(model) -> tuple[list[str], list[str]]:
    """(layers holding int8 weights, layers with weights left as they were)."""
    done, left = [], []
    for layer in model.layers:
        if getattr(layer.dtype_policy, "quantization_mode", None) == "int8":
            done.append(layer.name)
        elif layer.weights:
            left.append(layer.name)
    return done, left


def export_int8(run: Run, out: Path) -> dict[str, Any]:
    """Quantize to int8, save to `out` (and the report beside it), and measure both models."""
    from specc.data.prepare import count_examples

    if run.plan.train is None:
        raise UsageError(Diagnostic("the spec has no `train` section: no loss or metrics to measure the int8 model "
                                    "with", file=str(run.path / "spec.model")))
    data = load_test_split(run)
    original = open_model(run.model_file, compile=False)  # no optimizer state: the model as used for inference
    float_bytes = _saved_size(original, out.parent)
    before = evaluate(run, data, original)
    model = open_model(run.model_file, compile=False)
    # Only the model's own layers: Keras 3.15 quantizes the layers inside a composite layer too (the
    # EinsumDense projections of MultiHeadAttention), but the composite's config does not record it, so
    # the saved file cannot be loaded back ("Layer 'key' expected 2 variables, but received 0").
    top = {id(layer) for layer in model.layers}
    with warnings.catch_warnings():  # Keras warns once for every layer it does not quantize
        warnings.simplefilter("ignore")
        try:
            model.quantize("int8", filters=lambda layer: id(layer) in top)
        except Exception as err:  # noqa: BLE001 - Keras refuses some layers or dtypes
            raise DataError(Diagnostic(f"Keras cannot quantize this model to int8: "
                                       f"{(str(err).strip().splitlines() or [type(err).__name__])[0][:300]}",
                                       file=str(run.model_file))) from None
    done, left = quantized_layers(model)
    if not done:
        raise DataError(Diagnostic("no layer of this model can be quantized to int8: Keras quantizes Dense, "
                                   "EinsumDense and Embedding layers", file=str(run.model_file),
                                   hint=f"its layers with weights: {', '.join(left) or 'none'}"))
    loaded: dict[str, Any] = {}

    def save_checked(tmp: str) -> None:  # the file replaces `out` only once it loads back
        model.save(tmp)
        try:
            loaded["model"] = open_model(Path(tmp), compile=False)
        except DataError as err:
            raise DataError(Diagnostic(f"Keras wrote the int8 model but cannot load it back ({err.message}); "
                                       "nothing was written", file=str(out))) from None

    write_file(out, save_checked, ".keras")
    after = evaluate(run, data, loaded["model"])  # the model as a user gets it back from the file
    int8_bytes = out.stat().st_size
    report = {
        "run": str(run.path),
        "format": "int8",
        "file": str(out),
        "method": 'keras.Model.quantize("int8"): int8 kernels with a float scale per output unit; each quantized '
                  "layer's inputs are quantized to int8 per example at run time (abs-max)",
        "quantized_layers": done,
        "float_layers": left,
        "bytes": {"model.keras": run.model_file.stat().st_size, "float32": float_bytes, "int8": int8_bytes},
        "smaller_by": round(float_bytes / int8_bytes, 3),
        "test_on": "train" if data.test_is_train else "test",
        "examples": count_examples(data.x_test),
        "test": {"float32": before, "int8": after},
        "change": {k: after[k] - before[k] for k in before if k in after},
    }
    report_file = out.with_name(out.name[: -len(".keras")] + ".json")
    try:
        write_atomic(report_file, json.dumps(report, indent=2) + "\n")
    except OSError as err:
        raise UsageError(Diagnostic(f"cannot write it: {err.strerror or err}", file=str(report_file))) from None
    report["report"] = str(report_file)
    return report


def format_int8_report(r: dict[str, Any]) -> str:
    b = r["bytes"]
    where = "test split" if r["test_on"] == "test" else "training data (no test split)"
    lines = [f"int8 layers: {', '.join(r['quantized_layers'])}"
             + (f"; float32 layers: {', '.join(r['float_layers'])}" if r["float_layers"] else ""),
             f"size: {format_size(b['float32'])} float32 -> {format_size(b['int8'])} int8 ({r['smaller_by']:.2f}x smaller; "
             f"model.keras with optimizer state: {format_size(b['model.keras'])})",
             f"{where}, {r['examples']:,} examples:"]
    for k, v in r["test"]["float32"].items():
        after = r["test"]["int8"].get(k)
        lines.append(f"  {k}: {v:.4f} -> {after:.4f} ({after - v:+.4f})" if after is not None else f"  {k}: {v:.4f}")
    lines.append(f"wrote {r['file']} and {r['report']}")
    return "\n".join(printable(line, lines=False) for line in lines)  # layer names and paths come from files


def format_size(n: int) -> str:
    """A file's size as `ls --si` shows it (`0.42 MB`, `121.3 kB`)."""
    return size_text(n, measured=True, decimal=True)
