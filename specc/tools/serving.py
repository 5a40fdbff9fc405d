"""A trained run as a service, the model side of `specc serve` (the HTTP side is `specc.tools.serve_app`).

A `Servable` is one run directory made ready to answer requests:

- **Inputs by name, prepared as `specc predict` prepares them.** A request gives one example (or several) by
  the spec's input names: raw numbers like the training data, a string for a text model, an image as base64 or
  a data URL, a table row by its feature columns. `parse` turns it into model-ready arrays with the very
  functions of `specc.tools.predict` (the spec's flatten, reshape and scale; the saved vocabulary; images read
  and resized as training read them). Every mistake is an `InputError` naming the field and what was
  expected: it fails that request alone, before it is batched with others.
- **One compiled function, a few batch sizes.** The model runs through one `jax.jit` of Keras's
  `stateless_call` (weights passed in, so nothing is captured twice). XLA compiles one program per input
  shape, so a batch is padded up to the next of a few *buckets* (1, 4, 16 and the maximum batch by default),
  each compiled once while the service warms up: under load no request waits for a compilation.
  `compiles` counts traces of the function (one per compilation); it stays flat after warm-up.
- **Dynamic batching.** `Batcher` runs one batch at a time on a single thread (JAX releases the GIL while XLA
  computes); the requests that arrive while a batch runs form the next one (up to `max_batch` examples), and
  each request gets its own rows back. So a lone request never waits, and under load batches grow by
  themselves. `max_wait_ms` (0 by default) makes a batch also wait that long for more requests: on these CPUs
  it only cost throughput (benchmarks/serve.py: against one call per request, 0.30x the requests/s for one
  client at 5 ms and 0.72x for eight, where not waiting gave 1.06x and 1.04x, and 1.13-1.14x at 32-128 clients),
  since the model is a fifth of a request's server time; it may pay where the model dominates, as on a GPU. A request larger than `max_batch` runs in chunks.

Why not `model.predict`: it builds a new data adapter and Python loop per call (milliseconds) and compiles a
new program for every new batch size it meets, which is exactly the wait under load this module avoids.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import math
import platform
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from specc.core.errors import DataError, Diagnostic, UsageError
from specc.core.version import __version__
from specc.tools.predict import Run, image_format, output_kind, preprocess, probabilities, refuse_generators

FLOAT32_MAX = float(np.finfo(np.float32).max)
MAX_INSTANCES = 1024  # examples in one request
CHARS_PER_TOKEN = 64  # of a text, only the first CHARS_PER_TOKEN x sequence_length characters are tokenized
MAX_REQUEST_PIXELS = 2**26  # decoded pixels of all the images of one request (one 8,192 x 8,192 image)
_DECODING = threading.BoundedSemaphore(2)  # images decoded at once: each may take hundreds of MB while it decodes
TOP_CLASSES = 5  # classes listed by probability in an answer


class InputError(Exception):
    """A client's mistake in one request: answered with `status` (4xx) and a message naming `field`."""

    def __init__(self, message: str, field: str | None = None, status: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status

    def body(self) -> dict[str, Any]:
        return {"error": self.message, **({"field": self.field} if self.field else {})}


@dataclass(frozen=True)
class BatchOptions:
    """How requests are batched: at most `max_batch` examples, gathered for at most `max_wait_ms`; batch sizes
    are padded up to `buckets` (ascending, the last one `max_batch`)."""

    max_batch: int = 32
    max_wait_ms: float = 0.0
    buckets: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.buckets:
            object.__setattr__(self, "buckets", default_buckets(self.max_batch))

    def bucket(self, rows: int) -> int:
        return next(b for b in self.buckets if b >= rows)


def default_buckets(max_batch: int) -> tuple[int, ...]:
    """1, 4, 16, ... below `max_batch`, then `max_batch`: at most 4x padding, few compilations."""
    out, b = [], 1
    while b < max_batch:
        out.append(b)
        b *= 4
    return tuple(out + [max_batch])


def parse_buckets(text: str, max_batch: int) -> tuple[int, ...]:
    """`--buckets 1,8,32`: ascending positive sizes; `max_batch` is added when they stop below it."""
    try:
        sizes = sorted({int(p) for p in text.split(",") if p.strip()})
    except ValueError:
        raise UsageError(Diagnostic(f"--buckets takes whole numbers separated by commas, not {text!r}",
                                    file="specc serve", hint="for example --buckets 1,8,32")) from None
    if not sizes or sizes[0] < 1:
        raise UsageError(Diagnostic("--buckets takes positive batch sizes", file="specc serve"))
    if sizes[-1] > max_batch:
        raise UsageError(Diagnostic(f"--buckets has {sizes[-1]}, more than --max-batch {max_batch}",
                                    file="specc serve", hint="raise --max-batch or leave the larger sizes out"))
    return tuple(sizes if sizes[-1] == max_batch else sizes + [max_batch])


@dataclass
class InputInfo:
    """One model input as a client gives it."""

    name: str
    shape: tuple[int | None, ...]  # the model's, without the batch axis
    dtype: str
    kind: str  # image | text | table | array
    image: tuple[str, int, int] | None = None  # (PIL mode, height, width)
    features: list[str] = field(default_factory=list)
    sequence_length: int | None = None
    below: int | None = None  # integer ids must be in 0..below-1: the smallest `input_dim` of the embeddings reading them

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "kind": self.kind}
        if self.image:
            mode, h, w = self.image
            out["image"] = {"mode": mode, "height": h, "width": w}
            out["draw"] = mode == "L" and (h, w) == (28, 28)
        if self.features:
            out["features"] = list(self.features)
        if self.sequence_length:
            out["sequence_length"] = self.sequence_length
            out["long_text"] = "truncated"
        return out

    def expected(self) -> str:
        """What a value of this input looks like, for error messages."""
        if self.kind == "text":
            return "a string (the text to classify)"
        if self.kind == "table":
            return "numbers by feature name: " + ", ".join(self.features[:12]) + (", ..." if len(self.features) > 12 else "")
        if self.kind == "image" and self.image:
            mode, h, w = self.image
            raw = f"{h}x{w}" + ("" if mode == "L" else "x3")
            return f"an image ({{\"base64\": ...}} or a data: URL of a PNG/JPEG), or raw pixels: a {raw} nested list of 0..255"
        return f"numbers: a nested list of shape {list(self.shape)} (raw, like the training data)"


class Servable:
    """One run directory, loaded, compiled for every bucket and ready to answer (see the module docstring)."""

    def __init__(self, run: Run, name: str, options: BatchOptions, runtime: str = "jax") -> None:
        refuse_generators(run)
        self.run = run
        self.runtime = runtime  # jax: the Keras model jitted; onnx: the run's checked ONNX export in onnxruntime
        self._onnx: Any = None
        self._onnx_file = self._checked_onnx_file() if runtime == "onnx" else None
        self.name = name
        self.options = options
        self.compiles = 0
        self.ready = False
        self._lock = threading.Lock()
        self._vocab: Any = None
        self.inputs = self._describe_inputs()
        self.output_names = list(run.plan.outputs)
        if any(i.kind == "text" for i in self.inputs) and run.tokenizer_file is None:
            raise UsageError(Diagnostic("the run has no tokenizer.json, so text cannot be turned into its model's input",
                                        file=str(run.path), hint="serve the whole run directory `specc run` wrote"))
        free = [i.name for i in self.inputs if any(d is None for d in i.shape)]
        if free:
            raise UsageError(Diagnostic(
                f"input{'s' if len(free) > 1 else ''} {', '.join(f'`{n}`' for n in free)} "
                f"{'have' if len(free) > 1 else 'has'} a dimension of any size (`none`): each new size would compile "
                "the model again while serving, so `specc serve` takes fixed shapes only", file=str(run.path / "spec.model"),
                hint="give the input a fixed size in the spec (pad or crop the data to it) and train again"))

    def check_spec_unchanged(self) -> None:
        """Refuse a run whose spec.model was edited after it trained: the service prepares inputs by the spec, so
        an edited `scale`, `features` or shape would feed the model what it never saw, with no error."""
        import hashlib

        recorded = self.run.metrics.get("spec_sha256")
        here = hashlib.sha256((self.run.path / "spec.model").read_bytes()).hexdigest()
        if isinstance(recorded, str) and recorded != here:
            raise UsageError(Diagnostic(
                f"spec.model was changed after this run trained (sha256 {here[:12]}; the run recorded {recorded[:12]} in "
                "metrics.json): inputs would be prepared by a spec the model was not trained with",
                file=str(self.run.path / "spec.model"), hint="restore the run's spec.model, or train the edited spec"))

    # --- loading ---------------------------------------------------------------------------------

    def _describe_inputs(self) -> list[InputInfo]:
        plan, d = self.run.plan, self.run.plan.data
        out = []
        for i in plan.inputs:
            info = InputInfo(i.name, tuple(i.shape), str(i.dtype), "array")
            if d is not None and d.is_text and len(plan.inputs) == 1:
                info.kind = "text"
                info.sequence_length = d.sequence_length or (int(i.shape[0]) if i.shape and i.shape[0] else None)
            elif d is not None and d.features and len(plan.inputs) == 1:
                info.kind, info.features = "table", [str(f) for f in d.features]
            elif len(plan.inputs) == 1 and _looks_like_images(self.run):
                mode, (h, w) = image_format(self.run)
                info.kind, info.image = "image", (mode, h, w)
            out.append(info)
        return out

    def load(self) -> None:
        """Load the model and the vocabulary, compile every bucket (the warm-up), then mark it ready."""
        import jax

        model = self.run.model()
        if self.run.tokenizer_file is not None and any(i.kind == "text" for i in self.inputs):
            from specc.data.tokenizers import read_vocabulary

            self._vocab = read_vocabulary(self.run.tokenizer_file)
        for info in self.inputs:
            info.below = _id_bound(model, info.name)
        if self.runtime == "onnx":
            from specc.tools.export_onnx import onnx_session

            assert self._onnx_file is not None
            self._onnx = onnx_session(self._onnx_file)
            for b in self.options.buckets:  # onnxruntime sizes its buffers on the first runs
                self._run_batch({i.name: np.zeros((b, *[s or 1 for s in i.shape]), dtype=i.dtype) for i in self.inputs}, b)
            self.ready = True
            return
        self._weights = ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables])
        names = [t.name for t in model.inputs]

        def forward(trainable, non_trainable, x):
            self.compiles += 1  # runs once per trace, and each trace is one XLA compilation
            y, _ = model.stateless_call(trainable, non_trainable, x if len(names) > 1 else x[names[0]], training=False)
            return y

        self._forward = jax.jit(forward)
        for b in self.options.buckets:
            zeros = {i.name: np.zeros((b, *[s or 1 for s in i.shape]), dtype=i.dtype) for i in self.inputs}
            self._run_batch(zeros, b)
        self.ready = True

    # --- a batch ------------------------------------------------------------------------------------

    def predict_rows(self, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name for model-ready rows (at most `max_batch`), padded to their bucket."""
        rows = len(next(iter(x.values())))
        bucket = self.options.bucket(rows)
        if bucket > rows:
            x = {k: np.concatenate([v, np.zeros((bucket - rows, *v.shape[1:]), dtype=v.dtype)]) for k, v in x.items()}
        return {k: v[:rows] for k, v in self._run_batch(x, bucket).items()}

    def _checked_onnx_file(self) -> Path:
        """`export/model.onnx`, which `specc export --format onnx` wrote after checking it against this very
        model.keras (its report's `model_sha256`); a UsageError before anything is loaded otherwise."""
        import json

        from specc.tools.export_onnx import file_sha256, require_onnx

        require_onnx()
        path = self.run.path / "export" / "model.onnx"
        report = path.with_name("model.onnx.json")
        hint = f"export it first: specc export {self.run.path} --format onnx"
        if not path.is_file() or not report.is_file():
            raise UsageError(Diagnostic("--runtime onnx serves the run's checked ONNX export, export/model.onnx with "
                                        "its report, and the run has none", file=str(self.run.path), hint=hint))
        try:
            recorded = json.loads(report.read_text(encoding="utf-8")).get("model_sha256")
        except (ValueError, UnicodeDecodeError, AttributeError):
            recorded = None
        if recorded != file_sha256(self.run.model_file):
            raise UsageError(Diagnostic("export/model.onnx was not checked against this run's model.keras (its report "
                                        "names another model, or none)", file=str(path), hint=hint))
        return path

    def _run_batch(self, x: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        if self._onnx is not None:
            session, feed, names = self._onnx
            with self._lock:
                outs = session.run(names, {n: x[n] for n in feed})
            return dict(zip(self.output_names, outs))
        with self._lock:  # one batch at a time through the compiled function
            y = self._forward(*self._weights, x)
        if isinstance(y, dict):
            return {k: np.asarray(v) for k, v in y.items()}
        if isinstance(y, (list, tuple)):
            return {k: np.asarray(v) for k, v in zip(self.output_names, y)}
        return {self.output_names[0]: np.asarray(y)}

    # --- a request ---------------------------------------------------------------------------------

    def parse(self, body: Any) -> tuple[dict[str, np.ndarray], list[str]]:
        """A request's JSON (`{"inputs": {...}}` or `{"instances": [{...}, ...]}`) -> (model-ready arrays by
        input name, warnings). InputError for any mistake, naming the field."""
        if not isinstance(body, dict):
            raise InputError(f"the body must be a JSON object with `inputs` (one example) or `instances` (a list of "
                             f"them), not {_json_kind(body)}", "body", 400)
        unknown = sorted(set(body) - {"inputs", "instances"})
        if unknown or ("inputs" in body) == ("instances" in body):
            raise InputError("give exactly one of `inputs` (one example) or `instances` (a list of examples)"
                             + (f"; unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown[:5]))}" if unknown else ""),
                             "body", 400)
        if "inputs" in body:
            examples, where = [body["inputs"]], ["inputs"]
        else:
            examples = body["instances"]
            if not isinstance(examples, list) or not examples:
                raise InputError(f"`instances` must be a non-empty list of examples, not {_json_kind(examples)}", "instances")
            if len(examples) > MAX_INSTANCES:
                raise InputError(f"`instances` holds {len(examples):,} examples; at most {MAX_INSTANCES:,} per request",
                                 "instances", 413)
            where = [f"instances[{k}]" for k in range(len(examples))]
        warnings: list[str] = []
        fields = [self._fields(example, at) for example, at in zip(examples, where)]
        if len(self.inputs) > 1:  # several inputs go through the spec's preprocessing together, example by example
            return self._together(fields, where, warnings), warnings
        info = self.inputs[0]
        return {info.name: self._prepare(info, [f[info.name] for f in fields], where, warnings)}, warnings

    def _fields(self, example: Any, at: str) -> dict[str, Any]:
        """One example's values by input name (a table model's row gathered from its feature names)."""
        if not isinstance(example, dict):
            listed = ", ".join(f"`{i.name}`" for i in self.inputs)
            raise InputError(f"`{at}` must be an object of inputs by name ({listed}), not {_json_kind(example)}", at, 400)
        if len(self.inputs) == 1 and self.inputs[0].kind == "table":
            info = self.inputs[0]
            if set(example) == {info.name}:  # the whole row as one list, by the input's name
                return {info.name: example[info.name]}
            lacking = [f for f in info.features if f not in example]
            unknown = [k for k in example if k not in info.features]
            if lacking or unknown:
                raise InputError("; ".join(p for p in (
                    f"missing feature{'s' if len(lacking) > 1 else ''} {', '.join(f'`{m}`' for m in lacking[:8])}" if lacking else "",
                    f"unknown feature{'s' if len(unknown) > 1 else ''} {', '.join(f'`{e}`' for e in unknown[:8])}" if unknown else "") if p)
                    + f"; expected {info.expected()}", f"{at}.{(lacking or unknown)[0]}")
            row = []
            for f in info.features:
                v = example[f]
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise InputError(f"feature `{f}` must be a number, not {_json_kind(v)}", f"{at}.{f}")
                try:
                    number = float(v)
                except OverflowError:
                    number = math.inf
                if not math.isfinite(number) or abs(number) > FLOAT32_MAX:
                    raise InputError(f"feature `{f}` is {str(v)[:40]}: not a finite 32-bit number", f"{at}.{f}")
                row.append(number)
            return {info.name: row}
        names = [i.name for i in self.inputs]
        missing = [n for n in names if n not in example]
        extra = [k for k in example if k not in names]
        if len(names) == 1 and not missing and not extra:
            return {names[0]: example[names[0]]}
        if missing or extra:
            close = ""
            if len(missing) == 1 and len(extra) == 1:
                close = f" (is `{extra[0]}` meant to be `{missing[0]}`?)"
            parts = ([f"unknown input{'s' if len(extra) > 1 else ''} {', '.join(f'`{e}`' for e in extra[:8])}"] if extra else []) + \
                    ([f"missing input{'s' if len(missing) > 1 else ''} {', '.join(f'`{m}`' for m in missing[:8])}"] if missing else [])
            raise InputError("; ".join(parts) + close + f"; the model's inputs: {', '.join(f'`{n}`' for n in names)}",
                             f"{at}.{(extra or missing)[0]}")
        return {n: example[n] for n in names}

    def _prepare(self, info: InputInfo, values: list[Any], where: list[str], warnings: list[str]) -> np.ndarray:
        """Raw values of one input (one per example) -> the model-ready array of that input."""
        field_of = [f"{w}.{info.name}" if info.kind != "table" else w for w in where]
        if info.kind == "text":
            return self._texts(info, values, field_of, warnings)
        if info.kind == "image":
            assert info.image is not None
            mode, h, w = info.image
            files = [_image_bytes(info, v, f) for v, f in zip(values, field_of)]  # None: raw pixels
            _pixel_budget(files, field_of)
            arrays = [self._decode(raw, f, mode, (h, w)) if raw is not None else _pixels(info, v, f)
                      for raw, v, f in zip(files, values, field_of)]
            return self._through_spec(info, arrays, field_of, images=True, warnings=warnings)
        arrays = [_numbers(v, f, info) for v, f in zip(values, field_of)]
        return self._through_spec(info, arrays, field_of, images=False, warnings=warnings)

    def _through_spec(self, info: InputInfo, arrays: list[np.ndarray], fields: list[str], images: bool,
                      warnings: list[str]) -> np.ndarray:
        """The spec's own preprocessing (`specc predict`'s), one example at a time so that an error names its
        example, then stacked."""
        out = []
        for a, f in zip(arrays, fields):
            try:
                out.append(preprocess(self.run, a[None], f, images=images, note=warnings.append))
            except DataError as err:
                raise InputError(f"{_one_example(err.message, f)}; expected {info.expected()}", f) from None
        return np.concatenate(out).astype(info.dtype, copy=False)

    def _together(self, fields: list[dict[str, Any]], where: list[str], warnings: list[str]) -> dict[str, np.ndarray]:
        """The examples of a model with several inputs: each example's arrays prepared together, then stacked."""
        out: dict[str, list[np.ndarray]] = {i.name: [] for i in self.inputs}
        for values, at in zip(fields, where):
            raw = {i.name: _numbers(values[i.name], f"{at}.{i.name}", i)[None] for i in self.inputs}
            try:
                x = preprocess(self.run, raw, at, note=warnings.append)
            except DataError as err:
                named = next((i for i in self.inputs if f"`{i.name}`" in err.message), None)
                at_field = f"{at}.{named.name}" if named else at
                raise InputError(_one_example(err.message, at) + (f"; expected {named.expected()}" if named else ""),
                                 at_field) from None
            for i in self.inputs:
                out[i.name].append(x[i.name])
        return {i.name: np.concatenate(out[i.name]).astype(i.dtype, copy=False) for i in self.inputs}

    @staticmethod
    def _decode(raw: bytes, at: str, mode: str, size: tuple[int, int]) -> np.ndarray:
        """The image decoded as training decoded it, two at a time in the process (each may take hundreds of MB
        while it decodes, however small the answer)."""
        from specc.core.files import decode_image

        try:
            with _DECODING:
                return decode_image(raw, at, None, mode, size)
        except DataError as err:
            raise InputError(_without_file(err.message, at), at) from None

    def _texts(self, info: InputInfo, values: list[Any], fields: list[str], warnings: list[str]) -> np.ndarray:
        from specc.data.tokenizers import encode_texts

        for v, f in zip(values, fields):
            if not isinstance(v, str):
                raise InputError(f"must be a string (the text to classify), not {_json_kind(v)}", f)
            if not v.strip():
                raise InputError("is empty: give the text to classify", f)
        length = info.sequence_length or 1
        # A token takes at least one character, so the first CHARS_PER_TOKEN x length characters hold every token
        # the model reads; the rest is never tokenized (a 15 MB text held the GIL for a minute).
        keep = max(1_000, CHARS_PER_TOKEN * length)
        cut = [v[:keep] for v in values]
        for v, c, f in zip(values, cut, fields):
            n = len(self._vocab.ids(c))
            if n > length or len(c) < len(v):
                more = "more than " if len(c) < len(v) else ""
                warnings.append(f"{f}: the text has {more}{n} tokens; the model reads the first {length} (the rest is "
                                f"cut off, as in training)")
        return encode_texts(self._vocab, cut, length).astype(info.dtype, copy=False)

    # --- an answer ---------------------------------------------------------------------------------

    def answers(self, y: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        """Per example, each output by name: classes with probabilities, or values."""
        rows = len(next(iter(y.values())))
        out: list[dict[str, Any]] = [{} for _ in range(rows)]
        names = self.run.class_names()
        for name, values in y.items():
            kind = output_kind(self.run, values)
            if kind == "values" or values.ndim > 2:
                for k in range(rows):
                    out[k][name] = {"kind": "values", "values": _finite(values[k])}
                continue
            p = probabilities(self.run, values, kind)
            if kind == "binary":
                p = np.concatenate([1 - p, p], axis=-1)
            named = names if names is not None and len(names) == p.shape[-1] else None
            for k in range(rows):
                if not np.isfinite(p[k]).all():  # JSON has no NaN; the model's fault, said as such
                    out[k][name] = {"kind": kind, "error": "the model's output is not a number (NaN or infinite) for "
                                    "this input", "probabilities": _finite(p[k])}
                    continue
                order = np.argsort(-p[k], kind="stable")
                top = [{"class": int(c), "name": named[c] if named else str(int(c)), "probability": float(p[k][c])}
                       for c in order[:TOP_CLASSES]]
                out[k][name] = {"kind": kind, **top[0], "top": top, "probabilities": [float(v) for v in p[k]]}
        return out

    # --- what the service says about it ---------------------------------------------------------------

    def metadata(self, graph: dict[str, Any] | None = None) -> dict[str, Any]:
        """The run as `GET /metadata` shows it: spec, inputs, outputs, classes, test metrics, versions."""
        import jax
        import keras

        model = self.run.model()
        names = self.run.class_names()
        outputs = []
        for name, tensor in zip(self.output_names, model.outputs):
            shape = [None if s is None else int(s) for s in tensor.shape[1:]]
            probe = np.zeros((1, *[s or 1 for s in shape]), dtype=np.float32)
            kind = output_kind(self.run, probe)
            classes = None
            if kind == "classes":
                classes = names if names is not None and len(names) == shape[-1] else [str(c) for c in range(shape[-1] or 0)]
            elif kind == "binary":
                classes = names if names is not None and len(names) == 2 else ["0", "1"]
            outputs.append({"name": name, "shape": shape, "kind": kind, "classes": classes})
        metrics = {k: v for k, v in (self.run.metrics.get("test") or {}).items()
                   if isinstance(v, (int, float)) and math.isfinite(v)} if isinstance(self.run.metrics.get("test"), dict) else {}
        return {
            "name": self.name,
            "spec": (self.run.path / "spec.model").read_text(encoding="utf-8", errors="replace"),
            "spec_file": "spec.model",
            "inputs": [i.describe() for i in self.inputs],
            "outputs": outputs,
            "metrics": metrics,
            "versions": {"specc": __version__, "keras": keras.__version__, "jax": jax.__version__,
                         "python": platform.python_version()},
            "runtime": self.runtime,
            "batching": {"max_batch": self.options.max_batch, "max_wait_ms": self.options.max_wait_ms,
                         "buckets": list(self.options.buckets)},
            **({"graph": graph} if graph is not None else {}),
        }


def _looks_like_images(run: Run) -> bool:
    d = run.plan.data
    if d is not None and (d.dataset in ("mnist", "fashion_mnist", "cifar10") or d.images):
        return True
    shape = run.plan.inputs[0].shape
    return len(shape) == 3 and shape[-1] in (1, 3) and all(s is not None for s in shape)


def _id_bound(model: Any, name: str) -> int | None:
    """The smallest `input_dim` of the Embedding layers that read model input `name` directly (ids at or above it
    would read outside the table: JAX gives NaN rather than an error), or None."""
    bounds = []
    for layer in model.layers:
        if type(layer).__name__ == "Embedding":
            try:
                names = {t.name for t in layer._inbound_nodes[0].input_tensors}
            except (AttributeError, IndexError):
                continue
            if name in names:
                bounds.append(int(layer.input_dim))
    return min(bounds) if bounds else None


def _image_bytes(info: InputInfo, value: Any, at: str) -> bytes | None:
    """The file bytes of an image given as {"base64": ...}, a data URL or a form's file; None for raw pixels (a
    nested list). InputError for anything else."""
    data = None
    if isinstance(value, dict) and set(value) == {"base64"}:
        if not isinstance(value["base64"], str):
            raise InputError(f"`base64` must be a string (the file's bytes in base64), not {_json_kind(value['base64'])}",
                             f"{at}.base64")
        data = value["base64"]
    elif isinstance(value, str):
        if not value.startswith("data:") or "," not in value:
            raise InputError(f"a string here must be a data: URL of an image (data:image/png;base64,...); "
                             f"expected {info.expected()}", at)
        header, data = value.split(",", 1)
        if not header.endswith(";base64"):
            raise InputError("the data: URL must be base64-encoded (data:image/png;base64,...)", at)
    elif isinstance(value, bytes):
        return value
    elif isinstance(value, dict):
        raise InputError(f"an image object takes one key, `base64`; found {', '.join(map(repr, list(value)[:5]))}", at)
    if data is None:
        return None
    data = "".join(data.split())  # MIME base64 is wrapped in lines (what the `base64` tool writes)
    try:  # standard or URL-safe alphabet
        return base64.b64decode(data, altchars=b"-_" if ("-" in data or "_" in data) else None, validate=True)
    except (binascii.Error, ValueError):
        raise InputError("is not valid base64", at) from None


def _pixels(info: InputInfo, value: Any, at: str) -> np.ndarray:
    """Raw pixels given as numbers: 0..255, like the training images."""
    pixels = _numbers(value, at, info)
    if pixels.size and (pixels.min() < 0 or pixels.max() > 255):
        raise InputError(f"raw pixels are 0..255, like the training images; found {float(pixels.min()):g}.."
                         f"{float(pixels.max()):g}", at)
    return pixels


def _pixel_budget(files: list[bytes | None], fields: list[str]) -> None:
    """Refuse a request whose images declare more than MAX_REQUEST_PIXELS together, from their headers alone."""
    from PIL import Image

    total = 0
    for raw, at in zip(files, fields):
        if raw is None:
            continue
        try:
            with Image.open(io.BytesIO(raw)) as im:  # the header only: nothing is decoded here
                total += im.size[0] * im.size[1]
        except Exception:  # noqa: BLE001 - a damaged image is refused, naming it, when it is decoded
            continue
        if total > MAX_REQUEST_PIXELS:
            raise InputError(f"the images of this request declare {total:,} pixels together; at most "
                             f"{MAX_REQUEST_PIXELS:,} per request (resize them, or send fewer per request)", at, 413)


def _numbers(value: Any, at: str, info: InputInfo) -> np.ndarray:
    """A JSON number or nested list of numbers as an array; InputError naming the field otherwise."""
    if isinstance(value, (str, dict)) or value is None or isinstance(value, bool):
        raise InputError(f"must be numbers, not {_json_kind(value)}; expected {info.expected()}", at)
    try:
        a = np.asarray(value)
    except (ValueError, RecursionError):
        raise InputError(f"rows of different lengths, or nested too deeply; expected {info.expected()}", at) from None
    except OverflowError:
        raise InputError("holds a number too large for the model", at) from None
    if a.dtype.kind == "O" and a.size and all(isinstance(v, int) and not isinstance(v, bool) for v in a.ravel()[:64]):
        raise InputError("holds a whole number too large for the model", at)
    if a.dtype.kind not in "iuf":
        raise InputError(f"must hold only numbers; expected {info.expected()}", at)
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise InputError("holds NaN or infinite values", at)
    if a.size and np.abs(a).max() > FLOAT32_MAX:
        raise InputError(f"holds {float(np.abs(a).max()):g}, beyond the largest 32-bit float", at)
    if a.ndim == 0:
        a = a.reshape(1)
    if info.dtype.startswith(("int", "uint")):
        if a.dtype.kind == "f" and (a != np.round(a)).any():
            raise InputError(f"must hold whole numbers (the input is {info.dtype}), found {float(a[a != np.round(a)][0])}", at)
        top = info.below
        if a.size and (a.min() < 0 or (top is not None and a.max() >= top)):
            raise InputError(f"holds {int(a.min()) if a.min() < 0 else int(a.max())}; ids of this input are 0.."
                             f"{(top - 1) if top is not None else 'up'} (the size of the embedding that reads them)", at)
        return a.astype(info.dtype, copy=False)
    return a.astype(np.float32 if a.dtype.kind == "f" or info.dtype.startswith("float") else a.dtype, copy=False)


def _finite(a: np.ndarray) -> Any:
    """Values for JSON: NaN and infinities (which JSON cannot write) become null."""
    flat = [float(v) if math.isfinite(float(v)) else None for v in np.asarray(a, dtype=np.float64).ravel()]
    return flat if a.ndim <= 1 else np.array(flat, dtype=object).reshape(a.shape).tolist()


def _json_kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _without_file(message: str, at: str) -> str:
    """A DataError's message, which names the file it read, said of the request's field."""
    return message.replace(f"{at}: ", "").replace(f"{at} ", "")


def _one_example(message: str, at: str) -> str:
    """A preprocessing error said of one example: the batch axis is ours, not the client's, so "found shape
    (1, 20, 28)" is said "(20, 28)"."""
    text = _without_file(message, at)
    return re.sub(r"\(1, ", "(", re.sub(r"\(1, (\d+)\)", r"(\1,)", text)) if "found shape" in text else text


# --- dynamic batching ---------------------------------------------------------------------------------


@dataclass
class _Job:
    x: dict[str, np.ndarray]
    rows: int
    future: asyncio.Future


@dataclass
class Stats:
    """Counters for `GET /stats`: requests and examples answered, batches run and their sizes."""

    requests: int = 0
    examples: int = 0
    batches: int = 0
    rejected: int = 0
    in_flight: int = 0  # requests waiting for their batch or in it
    batch_sizes: dict[int, int] = field(default_factory=dict)
    busy_s: float = 0.0

    def as_json(self, compiles: int) -> dict[str, Any]:
        return {"requests": self.requests, "examples": self.examples, "batches": self.batches,
                "rejected": self.rejected, "in_flight": self.in_flight, "compiles": compiles, "busy_s": round(self.busy_s, 3),
                "batch_sizes": {str(k): v for k, v in sorted(self.batch_sizes.items())},
                "mean_batch": round(self.examples / self.batches, 2) if self.batches else 0.0}


class Batcher:
    """Gathers concurrent requests of one servable into batches (see the module docstring). Started and
    stopped on the event loop of the service (`start`, `stop`)."""

    def __init__(self, servable: Servable, run_in: ThreadPoolExecutor | None = None) -> None:
        self.servable = servable
        self.stats = Stats()
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None
        self._pool = run_in or ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"specc-{servable.name}")

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def predict(self, x: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The outputs for model-ready rows, computed in batches with other requests."""
        assert self._queue is not None
        rows = len(next(iter(x.values())))
        step = self.servable.options.max_batch
        loop = asyncio.get_running_loop()
        futures = []
        for start in range(0, rows, step):
            chunk = {k: v[start:start + step] for k, v in x.items()}
            fut = loop.create_future()
            self._queue.put_nowait(_Job(chunk, min(step, rows - start), fut))
            futures.append(fut)
        self.stats.in_flight += 1
        try:
            parts = await asyncio.gather(*futures)
        finally:
            self.stats.in_flight -= 1
        self.stats.requests += 1
        self.stats.examples += rows
        return parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    async def _loop(self) -> None:
        assert self._queue is not None
        options = self.servable.options
        loop = asyncio.get_running_loop()
        held: _Job | None = None
        while True:
            first = held or await self._queue.get()
            held = None
            jobs, rows = [first], first.rows
            deadline = loop.time() + options.max_wait_ms / 1000
            while rows < options.max_batch:
                try:
                    remaining = deadline - loop.time()
                    job = self._queue.get_nowait() if remaining <= 0 else await asyncio.wait_for(self._queue.get(), remaining)
                except (asyncio.QueueEmpty, asyncio.TimeoutError):
                    break
                if rows + job.rows > options.max_batch:
                    held = job  # it starts the next batch
                    break
                jobs.append(job)
                rows += job.rows
            jobs = [j for j in jobs if not j.future.cancelled()]  # clients that went away
            if not jobs:
                continue
            started = time.perf_counter()
            try:
                x = {k: np.concatenate([j.x[k] for j in jobs]) for k in jobs[0].x} if len(jobs) > 1 else jobs[0].x
                y = await loop.run_in_executor(self._pool, self.servable.predict_rows, x)
            except Exception as err:  # noqa: BLE001 - a failed batch fails its requests (a 500: a bug), never the loop
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(err)
                continue
            self.stats.busy_s += time.perf_counter() - started
            self.stats.batches += 1
            total = sum(j.rows for j in jobs)
            self.stats.batch_sizes[total] = self.stats.batch_sizes.get(total, 0) + 1
            at = 0
            for j in jobs:
                if not j.future.done():
                    j.future.set_result({k: v[at:at + j.rows] for k, v in y.items()})
                at += j.rows


def unique_names(paths: list[str]) -> list[str]:
    """A URL-safe name per run directory: its folder name, numbered when two are alike."""
    out: list[str] = []
    for p in paths:
        base = re.sub(r"[^\w.-]+", "-", Path(p).resolve().name).strip("-.") or "run"
        name, k = base, 1
        while name in out:  # `a`, `a`, `a-2` -> a, a-2, a-2-2: never two runs under one path
            k += 1
            name = f"{base}-{k}"
        out.append(name)
    return out


__all__ = ["BatchOptions", "Batcher", "InputError", "Servable", "default_buckets", "parse_buckets", "unique_names"]
