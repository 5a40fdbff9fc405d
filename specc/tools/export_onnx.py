"""`specc export RUN_DIR --format onnx`: the run's model as an ONNX graph, checked in onnxruntime before it is kept.

The graph is what JAX computes, converted, never written by hand: the model's inference is a pure JAX function
of its inputs (`model.stateless_call` with the trained weights closed over, so they become constants of the
graph, and `training=False`), and jax2onnx turns its jaxpr into ONNX operators, the batch axis symbolic (`N`),
so one file takes any batch.

One rewrite comes first: max pooling. JAX computes it as `reduce_window`, which jax2onnx 0.17 writes as an ONNX
MaxPool over the channels-last layout with a window `[1, 2, 2, 1]`, and onnxruntime refuses that
(`Unsupported pooling size`). `specc.train.lowering.lower_max_pooling` computes the same maxima as a reshape and
a max (windows that tile the input, as specc's CPU lowering trains them) or as the maximum of strided slices
(any other window); a maximum rounds nothing, so the values are Keras's bit for bit.

The check, always: the exported graph runs in onnxruntime (CPUExecutionProvider) on the run's test split (its
first `MAX_EXAMPLES` examples, for time), beside the Keras model as `model.keras` holds it (Keras's own pooling).
Each output's largest absolute difference must stay within `TOLERANCE` times its scale (the largest absolute
Keras output, at least 1), and a classifier's predicted classes (argmax; a yes/no output: over one half) must
agree except where Keras's own scores are tied within that tolerance. The report goes to `model.onnx.json` beside
the file and to standard output. When conversion, onnxruntime or the check fails, nothing is written, and the
message names the first layer of the spec that fails alone (converted and run by itself on a small batch), with
its class and line; a layer jax2onnx cannot take (jax2onnx 0.17: an LSTM or GRU going backwards, as in
`bidirectional(lstm(...))`, whose reverse `scan` it does not convert) is refused that way.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from specc.core.errors import DataError, Diagnostic, UsageError, printable
from specc.core.plan import LayerNode
from specc.runtime.model_files import open_model
from specc.tools.export import format_size, write_file
from specc.tools.predict import Run, load_test_split, output_kind, probabilities
from specc.train.lowering import lower_max_pooling

#: The packages `--format onnx` needs (the `onnx` extra of pyproject.toml), by the name they are imported as.
PACKAGES = ("jax2onnx", "onnx", "onnxruntime")
#: Test examples the exported model is checked on (a CPU runs 2,000 MNIST digits through both in a few seconds).
MAX_EXAMPLES = 2_000
#: Largest difference allowed between onnxruntime's and Keras's outputs, relative to the output's scale.
TOLERANCE = 1e-3
BATCH = 256  # examples per onnxruntime call
BATCH_AXIS = "N"


def require_onnx() -> None:
    """UsageError naming the packages `--format onnx` needs, when any is missing (nothing is imported here)."""
    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(Diagnostic(f"--format onnx needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                                    "not installed", hint="pip install 'specc[onnx]' (jax2onnx, onnx and onnxruntime)"))


def onnx_session(path: str | Path | bytes):
    """(onnxruntime InferenceSession on the CPU, its input names, its output names) for an ONNX file or its bytes."""
    import onnxruntime as ort

    source = path if isinstance(path, bytes) else str(path)
    options = ort.SessionOptions()
    # Its threads wait for work by spinning: between the small batches of `specc serve` they burnt the cores the
    # HTTP side needs (benchmarks/serve.py: 3.0-3.7 ms of server CPU per request against 1.3-1.6 without).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    session = ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])
    return session, [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]


# --- the model as a JAX function, and its conversion -------------------------------------------------------


def _output_names(model, plan_outputs: list[str]) -> list[str]:
    count = len(model.outputs)
    return list(plan_outputs) if len(plan_outputs) == count else [f"output_{i}" for i in range(count)]


def _as_list(raw: Any, names: list[str]) -> list[Any]:
    """A model's outputs (one tensor, a list, or a dict by name) as a list in `names` order."""
    if isinstance(raw, dict):
        return [raw[k] for k in names] if names else list(raw.values())
    return list(raw) if isinstance(raw, (list, tuple)) else [raw]


def _symbolic(tensors) -> list[Any]:
    import jax

    return [jax.ShapeDtypeStruct((BATCH_AXIS, *t.shape[1:]), t.dtype) for t in tensors]


def model_function(model, output_names: list[str]):
    """Inference as a pure function of the inputs: the weights (trainable and not) are closed over."""
    trainable = [v.value for v in model.trainable_variables]
    others = [v.value for v in model.non_trainable_variables]

    def infer(*inputs):
        outputs, _ = model.stateless_call(trainable, others, list(inputs) if len(inputs) > 1 else inputs[0],
                                          training=False)
        return tuple(_as_list(outputs, output_names))

    return infer


def convert(fn, inputs, input_names: list[str], output_names: list[str]) -> bytes:
    """jax2onnx's ONNX graph of `fn` on `inputs` (shape structures), serialized. Its exceptions pass through."""
    from jax2onnx import to_onnx

    # onnx_ir warns on standard error about intermediate values whose type it does not record in the graph
    # ("The value type for shape [N,32] is not known"); onnxruntime infers them, and the check below runs it.
    quiet = logging.getLogger("onnx_ir")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        proto = to_onnx(fn, inputs=inputs, model_name="specc", input_names=input_names, output_names=output_names)
    finally:
        quiet.setLevel(level)
    return proto.SerializeToString()


def run_session(session, names: list[str], x: list[np.ndarray]) -> list[np.ndarray]:
    """onnxruntime's outputs for inputs `x` (one array per input, in `names` order), BATCH examples at a time."""
    n = len(x[0])
    parts = [session.run(None, {k: a[i:i + BATCH] for k, a in zip(names, x)}) for i in range(0, max(n, 1), BATCH)]
    return [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))]


# --- comparing with Keras ---------------------------------------------------------------------------------


def difference(got: np.ndarray, want: np.ndarray) -> float:
    """Largest absolute difference; NaN in both at one place counts as equal, in one only as infinitely far."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    if got.shape != want.shape:
        return float("inf")
    with np.errstate(invalid="ignore"):  # inf - inf
        d = np.abs(got - want)
    d = np.where((got == want) | (np.isnan(got) & np.isnan(want)), 0.0, d)
    return float(np.nan_to_num(d, nan=np.inf).max()) if d.size else 0.0


def tolerance(want: np.ndarray) -> float:
    finite = np.abs(np.asarray(want, np.float64))
    finite = finite[np.isfinite(finite)]
    return TOLERANCE * max(1.0, float(finite.max()) if finite.size else 1.0)


def class_agreement(run: Run, got: np.ndarray, want: np.ndarray, tol: float) -> tuple[float, int] | None:
    """(share of equal predicted classes, changes beyond ties) of a classifier's output; None for values.

    A change is a tie when Keras's own scores of the two classes lie within 2 x `tol` (a yes/no output: its
    probability within `tol` of one half): rounding alone may then pick either."""
    kind = output_kind(run, want)
    if kind == "values":
        return None
    if kind == "binary":
        p, q = probabilities(run, want, kind), probabilities(run, got, kind)
        changed = (p > 0.5) != (q > 0.5)
        beyond = changed & (np.abs(p - 0.5) > tol)
    else:
        mine, theirs = want.argmax(-1), got.argmax(-1)
        changed = mine != theirs
        gap = np.take_along_axis(want, mine[..., None], -1) - np.take_along_axis(want, theirs[..., None], -1)
        beyond = changed & (gap[..., 0] > 2 * tol)
    return float(1 - changed.mean()) if changed.size else 1.0, int(beyond.sum())


# --- finding the layer that fails ---------------------------------------------------------------------------


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def reason(err: BaseException) -> str:
    """The telling line of a converter's, onnxruntime's or Keras's exception (Keras's first line only names the
    layer's call, which the message names already)."""
    lines = [line.strip() for line in _ANSI.sub("", str(err)).splitlines()]
    lines = [line for line in lines if line and not line.startswith("Exception encountered when calling")]
    return (lines[0] if lines else type(err).__name__)[:300]


def _sample(tensors, rng) -> list[np.ndarray]:
    """A batch of 2 for each symbolic input: zeros for integers (a valid token or index), else normal values."""
    out = []
    for t in tensors:
        shape = (2, *(d or 1 for d in t.shape[1:]))
        dtype = np.dtype(t.dtype)
        out.append(np.zeros(shape, dtype) if dtype.kind in "iub" else rng.standard_normal(shape).astype(dtype))
    return out


def _layer_alone(layer, node):
    """(function of the layer's input tensors calling it as the model calls it, those tensors)."""
    tensors = list({id(t): t for t in node.arguments.keras_tensors}.values())

    def call(*inputs):
        args, kwargs = node.arguments.fill_in({id(t): x for t, x in zip(tensors, inputs)})
        return tuple(_as_list(layer(*args, **{**kwargs, "training": False}), []))

    return call, tensors


def layer_failure(model, layers: dict[str, LayerNode]) -> tuple[LayerNode, str] | None:
    """The first layer of the spec that fails by itself, and how: jax2onnx cannot convert it, onnxruntime cannot
    run what it wrote, or the values differ from Keras's on a random batch of 2. None when each passes alone."""
    import keras

    for layer in model.layers:
        plan_node = layers.get(layer.name)
        nodes = getattr(layer, "_inbound_nodes", [])
        if plan_node is None or len(nodes) != 1:
            continue
        call, tensors = _layer_alone(layer, nodes[0])
        names = [f"input_{i}" for i in range(len(tensors))]
        try:
            want = [keras.ops.convert_to_numpy(y) for y in call(*_sample(tensors, np.random.default_rng(0)))]
        except Exception:  # noqa: BLE001 - this layer cannot be called alone: it is not the one to blame
            continue
        try:
            data = convert(call, _symbolic(tensors), names, [f"output_{i}" for i in range(len(want))])
        except Exception as err:  # noqa: BLE001 - whatever jax2onnx raises, it is this layer's
            return plan_node, f"jax2onnx cannot convert it: {reason(err)}"
        try:
            session, feed, _ = onnx_session(data)
            got = run_session(session, feed, _sample(tensors, np.random.default_rng(0)))
        except Exception as err:  # noqa: BLE001 - onnxruntime's errors have no common base class
            return plan_node, f"onnxruntime cannot run what jax2onnx wrote for it: {reason(err)}"
        worst = max((difference(g, w) / tolerance(w) for g, w in zip(got, want)), default=0.0)
        if worst > 1:
            return plan_node, f"onnxruntime computes other values than Keras for it ({worst:.3g} x the tolerance)"
    return None


def _refuse(run: Run, model, what: str, err: BaseException | str) -> DataError:
    """The DataError for a model that did not export: located at the failing layer's line when one fails alone."""
    found = layer_failure(model, {n.name: n for n in run.plan.layers})
    hint = (f"ONNX export takes the layers jax2onnx {converter_versions()['jax2onnx']} converts; "
            "`--format keras` and `--format weights` take every layer")
    if found is None:
        detail = err if isinstance(err, str) else reason(err)
        return DataError(run.plan.diag(f"{what}: {detail}; no layer fails alone", hint=hint))
    node, how = found
    line = f", line {node.origin.span.line}" if node.origin.span else ""
    return DataError(run.plan.diag(f"the model does not export to ONNX: layer `{node.name}` ({node.cls}{line}): {how}",
                                   node.origin.span, hint=hint))


# --- export ------------------------------------------------------------------------------------------------


def _inputs(x: Any, model) -> list[np.ndarray]:
    """The test split's inputs as one array per model input, in the model's order and dtypes."""
    if isinstance(x, dict):
        arrays = [x[t.name] for t in model.inputs]
    elif isinstance(x, (list, tuple)):
        arrays = list(x)
    else:
        arrays = [x]
    return [np.ascontiguousarray(np.asarray(a)[:MAX_EXAMPLES], dtype=np.dtype(t.dtype)) for a, t in zip(arrays, model.inputs)]


def export_onnx(run: Run, out: Path) -> dict[str, Any]:
    """Convert the run's model, check it in onnxruntime on the test split, and write it (with its report)."""
    import keras

    from specc.data.prepare import count_examples
    require_onnx()
    data = load_test_split(run)
    model = open_model(run.model_file, compile=False)
    names = _output_names(model, run.plan.outputs)
    x = _inputs(data.x_test, model)
    want = [np.asarray(keras.ops.convert_to_numpy(y)) for y in
            _as_list(model.predict(x if len(x) > 1 else x[0], batch_size=run.batch_size, verbose=0), names)]
    rewritten = lower_max_pooling(model)  # after Keras's outputs: the check covers the rewrite too
    input_names = [t.name for t in model.inputs]
    try:
        onnx_bytes = convert(model_function(model, names), _symbolic(model.inputs), input_names, names)
    except Exception as err:  # noqa: BLE001 - jax2onnx and JAX's tracing raise many kinds
        raise _refuse(run, model, "jax2onnx cannot convert the model", err) from None
    try:
        session, feed, _ = onnx_session(onnx_bytes)
        got = run_session(session, feed, x)
    except Exception as err:  # noqa: BLE001 - onnxruntime's errors have no common base class
        raise _refuse(run, model, "onnxruntime cannot run the converted model", err) from None
    check: dict[str, Any] = {}
    failed = []
    for name, g, w in zip(names, got, want):
        tol = tolerance(w)
        entry: dict[str, Any] = {"max_abs_difference": difference(g, w), "tolerance": tol}
        classes = class_agreement(run, g, w, tol) if g.shape == w.shape else None
        if classes is not None:
            entry["classes_equal"], entry["class_changes_beyond_ties"] = classes
        check[name] = entry
        if not entry["max_abs_difference"] <= tol or entry.get("class_changes_beyond_ties"):
            failed.append(f"`{name}` differs by {entry['max_abs_difference']:.3g} (tolerance {tol:.3g})"
                          + (f", {entry['class_changes_beyond_ties']} predicted classes changed"
                             if entry.get("class_changes_beyond_ties") else ""))
    if failed:
        raise _refuse(run, model, "onnxruntime's outputs are not Keras's", "; ".join(failed))

    write_file(out, lambda tmp: Path(tmp).write_bytes(onnx_bytes), ".onnx")
    report = {
        "run": str(run.path),
        "format": "onnx",
        "file": str(out),
        "bytes": out.stat().st_size,
        "method": "jax2onnx's conversion of model.stateless_call (training=False) with the weights as constants; "
                  "max pooling computed without reduce_window (reshape + max, or the maximum of strided slices)",
        "converter": {**converter_versions(), "opset": _opset(onnx_bytes)},
        "inputs": [{"name": i.name, "shape": list(i.shape), "dtype": i.type} for i in session.get_inputs()],
        "outputs": [{"name": o.name, "shape": list(o.shape), "dtype": o.type} for o in session.get_outputs()],
        "rewritten_layers": rewritten,
        # `specc serve --runtime onnx` serves this file only beside the very model.keras it was checked against.
        "model_sha256": file_sha256(run.model_file),
        "test_on": "train" if data.test_is_train else "test",
        "examples": len(x[0]),
        "examples_in_split": count_examples(data.x_test),
        "check": check,
    }
    report_file = out.with_name(out.name + ".json")
    write_file(report_file, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8"), ".json")
    report["report"] = str(report_file)
    return report


def file_sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _opset(onnx_bytes: bytes) -> int | None:
    import onnx

    proto = onnx.load_from_string(onnx_bytes)
    return next((int(o.version) for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)


def converter_versions() -> dict[str, str]:
    return {name: metadata.version(name) for name in PACKAGES}


def format_onnx_report(r: dict[str, Any]) -> str:
    def shape(s: list[Any]) -> str:
        return "(" + ", ".join(str(d) for d in s) + ("," if len(s) == 1 else "") + ")"

    c = r["converter"]
    where = "test split" if r["test_on"] == "test" else "training data (no test split)"
    first = (f"the first {r['examples']:,} of {r['examples_in_split']:,}" if r["examples"] < r["examples_in_split"]
             else f"all {r['examples']:,}")
    lines = [f"ONNX opset {c['opset']} (jax2onnx {c['jax2onnx']}): "
             + ", ".join(f"{i['name']} {shape(i['shape'])}" for i in r["inputs"]) + " -> "
             + ", ".join(f"{o['name']} {shape(o['shape'])}" for o in r["outputs"])]
    if r["rewritten_layers"]:
        lines.append(f"max pooling without reduce_window: {', '.join(r['rewritten_layers'])}")
    lines.append(f"onnxruntime {c['onnxruntime']} (CPU) beside Keras on {first} examples of the {where}:")
    for name, e in r["check"].items():
        text = f"  {name}: max |difference| {e['max_abs_difference']:.2g} (tolerance {e['tolerance']:.2g})"
        if "classes_equal" in e:
            text += f"; predicted classes equal: {100 * e['classes_equal']:.2f}%"
        lines.append(text)
    lines.append(f"wrote {r['file']} ({format_size(r['bytes'])}) and {r['report']}")
    return "\n".join(printable(line, lines=False) for line in lines)  # names and paths come from files
