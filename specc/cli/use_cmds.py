"""Commands on a trained run directory: `generate`, `eval`, `predict`, `export`.

The run is read by `specc.tools.predict.open_run`; the tools (`predict`, `export`, `generate`) do the work, and
these functions check the arguments and print.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path
from typing import Any

from specc.cli.registry import RUN_DIR, arg, command, group, positive, seed, temperature, text_or_json, whole
from specc.core.artifacts import write_atomic_with
from specc.core.errors import EXIT_DATA, EXIT_INTERRUPTED, EXIT_OK, Diagnostic, UsageError, printable


@command("generate", "sample text from a trained next-token model",
         "Print the prompt followed by text sampled from the language model in RUN_DIR.",
         RUN_DIR,
         arg("--prompt", required=True, metavar="TEXT", help="the text to continue"),
         arg("--tokens", type=positive, default=200, metavar="N", help="how many tokens to sample (200)"),
         arg("--temperature", type=temperature, default=1.0, metavar="T",
             help="sampling temperature: lower is more conservative, 0 always takes the likeliest (1.0)"),
         arg("--seed", type=seed, metavar="N", help="seed of the sampler (>= 0), for repeatable output"))
def cmd_generate(args) -> int:
    from specc.tools.generate import generate_text

    print(generate_text(args.run, args.prompt, args.tokens, args.temperature, args.seed))
    return EXIT_OK


@command("eval", "evaluate a trained run on its test split or on other data",
         "Evaluate the model of RUN_DIR with the spec's loss and metrics.",
         RUN_DIR,
         arg("--data", metavar="FILE", help="a data file in the spec's format instead of the run's test split"),
         text_or_json())
def cmd_eval(args) -> int:
    from specc.data.prepare import count_examples
    from specc.tools.predict import evaluate, load_test_split, open_run, other_data
    from specc.train.labels import check_labels

    run = open_run(args.run)
    if run.plan.train is None:
        raise UsageError(Diagnostic("the spec has no `train` section: no loss or metrics to evaluate",
                                    file=str(run.path / "spec.model")))
    ds = other_data(run, args.data) if args.data else load_test_split(run)
    check_labels(run.plan, run.model(), ds, file=args.data)  # as `specc run` checks them before training
    result = evaluate(run, ds)
    _print_evaluation(run, args.data, ds.test_is_train, count_examples(ds.x_test), result, args.format)
    return EXIT_OK


def _print_evaluation(run, data: str | None, test_is_train: bool, n: int, result: dict[str, float], fmt: str) -> None:
    """The metrics on `data` (None: the run's own test split) of `n` examples, beside those the run recorded."""
    recorded = run.metrics.get("test") if not data else None
    if fmt == "json":
        print(json.dumps({"run": str(run.path), "data": data or ("train" if test_is_train else "test"),
                          "examples": n, "metrics": result, "recorded": recorded}, indent=2))
        return
    where = data or ("the training data (the spec holds out none)" if test_is_train else "the test split")
    print(f"{where}, {n:,} examples: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()))
    if isinstance(recorded, dict) and recorded:
        print(_against_recorded(result, recorded))


def _against_recorded(result: dict[str, float], recorded: dict[str, Any]) -> str:
    """The metrics `specc run` recorded, and whether these are the same."""
    same = all(k in recorded and _close(v, recorded[k]) for k, v in result.items())
    return ("recorded in metrics.json: " + ", ".join(f"{k} {float(v):.4f}" for k, v in recorded.items())
            + (" (the same)" if same else " (different: has the data changed since the run?)"))


def _close(a: float, b: Any) -> bool:
    try:
        return math.isclose(a, float(b), rel_tol=1e-6, abs_tol=1e-7)
    except (TypeError, ValueError):
        return False


@command("predict", "predictions of a trained run for new inputs",
         "Predict with the model of RUN_DIR: INPUT is a .npy or .csv file, an image file, or a folder of images.",
         RUN_DIR,
         arg("input", metavar="INPUT"),
         arg("-o", "--out", metavar="FILE", help="write predictions here (.npy or .csv) instead of printing them"))
def cmd_predict(args) -> int:
    from specc.tools.predict import format_table, open_run, predict_outputs, read_inputs, refuse_generators, write_predictions

    run = open_run(args.run)
    refuse_generators(run)
    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() not in (".npy", ".npz", ".csv"):
        raise UsageError(Diagnostic("-o writes .npy, .npz or .csv files", file=str(out)))
    x, labels = read_inputs(run, args.input)
    outputs = predict_outputs(run, x, args.input)
    if out is not None:
        write_predictions(run, out, outputs, labels)
        print(f"wrote {len(labels):,} predictions to {out}")
        return EXIT_OK
    for i, (name, y) in enumerate(outputs.items()):
        if len(outputs) > 1:
            print(("\n" if i else "") + f"output `{name}`:")
        print(format_table(run, name, y, labels))
    return EXIT_OK


@command("export", "export a trained run: .keras, weights, int8-quantized, or ONNX",
         "Export the model of RUN_DIR. int8 uses Keras's own quantization and reports size and test metrics before "
         "and after. onnx converts the model with jax2onnx and keeps it only once onnxruntime computes what Keras "
         "computes on the run's test split (the first 2,000 examples); a layer the converter cannot take is named "
         "with its spec line.",
         RUN_DIR,
         arg("--format", choices=("keras", "weights", "int8", "onnx"), default="keras"),
         arg("-o", "--out", metavar="PATH", help="where to write (default: inside RUN_DIR/export/)"))
def cmd_export(args) -> int:
    from specc.tools.export import export_int8, export_weights, format_int8_report, format_size, out_path
    from specc.tools.predict import open_run

    if args.format == "onnx":
        from specc.tools.export_onnx import require_onnx

        require_onnx()  # before anything is read or made: the packages are an optional extra
    run = open_run(args.run)
    out = out_path(run, args.out, args.format)
    if args.format == "keras":
        def copy(tmp: str) -> None:
            shutil.copyfile(run.model_file, tmp)

        write_atomic_with(out, copy, suffix=".keras")
        print(printable(f"wrote {out} ({format_size(out.stat().st_size)}): a copy of {run.model_file}", lines=False))
    elif args.format == "weights":
        size = export_weights(run, out)
        spec = run.path / "spec.model"
        print(printable(f"wrote {out} ({format_size(size)}); load it into the model the spec builds: "
                        f"model = specc.load({str(spec)!r}).build_model(); model.load_weights({str(out)!r})", lines=False))
    elif args.format == "onnx":
        from specc.tools.export_onnx import export_onnx, format_onnx_report

        print(format_onnx_report(export_onnx(run, out)))
    else:
        print(format_int8_report(export_int8(run, out)))
    return EXIT_OK



def port(text: str) -> int:
    value = whole(text, 0)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0..65535, got {value}")
    return value


def size_mb(text: str) -> float:
    value = temperature(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a size above 0, got {text!r}")
    return value


def wait_ms(text: str) -> float:
    value = temperature(text)
    if value > 10_000:
        raise argparse.ArgumentTypeError(f"expected at most 10000 ms, got {text!r}")
    return value


@command("serve", "serve trained runs over HTTP: predictions, a page to try them, OpenAPI",
         "Serve the models of RUN_DIR (several: each under /runs/NAME/) on a FastAPI + uvicorn service: POST /predict "
         "takes inputs by the spec's input names in JSON (or multipart files) and prepares them as `specc predict` "
         "does; GET /health, /metadata, /stats, /docs; GET / is a page to try the model. Concurrent requests are "
         "batched (--max-batch, --max-wait-ms) through batch sizes compiled at start-up (--buckets). SIGTERM or "
         "Ctrl-C stops taking connections and answers the requests in flight first. Exit code 3 when a model fails "
         "to load. See docs/serving.md.",
         arg("runs", nargs="+", metavar="RUN_DIR"),
         arg("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only; "
             "0.0.0.0 for every interface)"),
         arg("--port", type=port, default=8000, help="port (default 8000; 0 picks a free one)"),
         group("batching",
               arg("--max-batch", type=positive, default=32, metavar="N", help="most examples in one batch (default 32)"),
               arg("--max-wait-ms", type=wait_ms, default=0.0, metavar="MS",
                   help="how long a batch waits for more requests before it runs (default 0: a batch is what queued "
                   "while the previous one ran; a few ms pays where the model dominates a request, as on a GPU)"),
               arg("--buckets", metavar="N,N,...", help="batch sizes compiled at start-up; a batch is padded to the next "
                   "(default 1, 4, 16, ... up to --max-batch)"),
               arg("--runtime", choices=("jax", "onnx"), default="jax", help="jax: the Keras model, compiled by XLA "
                   "(default); onnx: the run's export/model.onnx in onnxruntime (`specc export RUN --format onnx` "
                   "first)")),
         group("service",
               arg("--workers", type=positive, default=1, metavar="N", help="processes sharing the port, each with its "
                   "own copy of the models (default 1)"),
               arg("--max-body-mb", type=size_mb, default=16.0, metavar="MB", help="largest request body (default 16)"),
               arg("--max-connections", type=positive, default=1024, metavar="N",
                   help="connections and requests at once; beyond them the service answers 503 (default 1024)"),
               arg("--drain-s", type=temperature, default=30.0, metavar="S",
                   help="on SIGTERM, how long requests in flight may take to finish (default 30)"),
               arg("--log-level", choices=("critical", "error", "warning", "info", "debug"), default="warning",
                   help="uvicorn's log level (info logs each request)")))
def cmd_serve(args) -> int:
    import socket

    from specc.tools.serve_app import ServeConfig, serve
    from specc.tools.serving import parse_buckets

    buckets = parse_buckets(args.buckets, args.max_batch) if args.buckets else ()
    sock: socket.socket | None = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    assert sock is not None
    try:  # the port taken before any model is loaded; one process keeps it, so --port 0's choice stays ours
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
        chosen = sock.getsockname()[1]
        if args.workers > 1:  # uvicorn's process manager binds the port itself, for every worker
            sock.close()
            sock = None
    except OSError as err:
        if sock is not None:
            sock.close()
        raise UsageError(Diagnostic(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}", file="specc serve",
                                    hint="choose another --port (0 picks a free one), or stop what uses it")) from None
    config = ServeConfig(runs=tuple(args.runs), host=args.host, port=chosen, max_batch=args.max_batch,
                         max_wait_ms=args.max_wait_ms, buckets=buckets, max_body=int(args.max_body_mb * 1024 * 1024),
                         workers=args.workers, drain_s=args.drain_s, log_level=args.log_level,
                         max_connections=args.max_connections, runtime=args.runtime)
    return {0: EXIT_OK, 130: EXIT_INTERRUPTED}.get(serve(config, sock), EXIT_DATA)
