"""`specc serve`, the HTTP side: a FastAPI application around `specc.tools.serving`'s servables.

Routes (each run under `/runs/NAME/`; when one run is served, also at the root):

    GET  /health              200 {"status": "ready"} once every model is loaded and warmed; 503 before
                              ("loading") and while draining after SIGTERM ("draining")
    GET  /stats               requests, batches, batch sizes and XLA compilations per run
    GET  {run}/metadata       spec, inputs (shapes, dtypes, kinds), outputs and classes, test metrics, versions
    POST {run}/predict        JSON `{"inputs": {...}}` or `{"instances": [...]}`, or multipart form fields
    GET  {run}/graph.svg      the model's graph, drawn by `specc graph` (needs Graphviz)
    GET  {run}/               the page to try the model (specc/tools/web/), and its files under {run}/static/
    GET  /docs, /openapi.json FastAPI's OpenAPI page, with each run's inputs in the request schema

A client's mistake is a 4xx with `{"error": ..., "field": ...}` (`InputError`), never a 500: broken JSON and a
wrong structure 400, a body over the limit 413, an unknown content type 415, a wrong input name, shape, dtype
or image 422, a request before the models are ready 503. A 500 is a bug in specc: its traceback is logged.

The body is read through a size limit before anything is parsed; preprocessing runs in a worker thread, so a
large image never stalls the event loop that gathers batches.
"""

from __future__ import annotations

import contextlib
import html
import json
import math
import logging
import os
import signal
import sys
import threading
import time
import traceback
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from specc.core.errors import UserError, printable
from specc.core.version import __version__
from specc.tools.serving import Batcher, InputError, Servable

WEB = Path(__file__).with_name("web")
log = logging.getLogger("specc.serve")


@dataclass
class ServiceState:
    """What the routes share: the runs, their batchers, whether the service is ready or draining."""

    servables: list[Servable]
    max_body: int
    announce: str = ""
    batchers: dict[str, Batcher] = field(default_factory=dict)
    ready: bool = False
    draining: bool = False
    failed: str | None = None
    graphs: dict[str, dict[str, Any]] = field(default_factory=dict)
    svgs: dict[str, bytes | None] = field(default_factory=dict)
    on_failure: Any = None  # called when loading fails (the CLI stops the server)


def make_app(servables: list[Servable], max_body: int = 16 * 1024 * 1024, announce: str = "",
             on_failure: Any = None) -> FastAPI:
    """The application serving `servables` (not yet loaded: the lifespan loads and warms them in a thread, so
    `/health` answers "loading" meanwhile)."""
    state = ServiceState(servables, max_body, announce, on_failure=on_failure)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        for s in servables:
            state.batchers[s.name] = Batcher(s)
            state.batchers[s.name].start()
        threading.Thread(target=_load_all, args=(state,), name="specc-load", daemon=True).start()
        yield
        state.draining = True
        for b in state.batchers.values():
            await b.stop()

    app = FastAPI(title="specc serve", version=__version__, lifespan=lifespan,
                  description="Trained specc runs as a service: " + ", ".join(s.name for s in servables))
    app.state.specc = state
    _errors(app, state)
    app.add_api_route("/health", lambda: _health(state), methods=["GET", "HEAD"], summary="ready once every model is warmed")
    app.add_api_route("/stats", lambda: _stats(state), methods=["GET"], summary="requests, batches and compilations")
    for s in servables:
        _routes(app, state, s, f"/runs/{s.name}")
        if len(servables) == 1:
            _routes(app, state, s, "")
    if len(servables) > 1:
        app.add_api_route("/", lambda: _index(state), methods=["GET"], response_class=HTMLResponse, include_in_schema=False)
    return app


def _load_all(state: ServiceState) -> None:
    """Load, compile and warm every run; then the service is ready (or, on failure, says why and stops)."""
    try:
        for s in state.servables:
            started = time.perf_counter()
            s.load()
            state.graphs[s.name], state.svgs[s.name] = _graph(s)
            print(printable(f"specc serve: {s.name} ready in {time.perf_counter() - started:.1f} s "
                            f"({s.compiles} compiled batch sizes: {', '.join(map(str, s.options.buckets))})", lines=False),
                  file=sys.stderr, flush=True)
        state.ready = True
        if state.announce:
            print(state.announce, file=sys.stderr, flush=True)
    except Exception as err:  # noqa: BLE001 - reported, and the server stops
        state.failed = err.render() if isinstance(err, UserError) else "".join(traceback.format_exception(err))
        print(f"specc serve: error: loading failed:\n{state.failed}", file=sys.stderr, flush=True)
        if state.on_failure is not None:
            state.on_failure()


def _graph(s: Servable) -> tuple[dict[str, Any], bytes | None]:
    """The model's graph as nodes and edges for the page, and as SVG when Graphviz is installed."""
    from specc.tools.graph import emit_dot, graph_plan, render_graphviz

    g = graph_plan(s.run.plan)
    svg = None
    try:
        svg = render_graphviz(emit_dot(g), "svg")
    except Exception:  # noqa: BLE001 - no Graphviz (or it failed): the page draws the nodes itself
        svg = None
    nodes = [{"name": n.name, "cls": n.cls, "shape": n.shape, "params": n.params, "output": n.output} for n in g.nodes]
    return {"nodes": nodes, "edges": [list(e) for e in g.edges], "svg": svg is not None}, svg


# --- routes ------------------------------------------------------------------------------------------


def _health(state: ServiceState) -> JSONResponse:
    runs = [s.name for s in state.servables]
    if state.failed:
        return JSONResponse({"status": "failed", "runs": runs, "error": state.failed.splitlines()[0]}, status_code=503)
    if state.draining:
        return JSONResponse({"status": "draining", "runs": runs}, status_code=503)
    if not state.ready:
        return JSONResponse({"status": "loading", "runs": runs}, status_code=503, headers={"Retry-After": "1"})
    return JSONResponse({"status": "ready", "runs": runs})


def _stats(state: ServiceState) -> dict[str, Any]:
    return {"ready": state.ready, "pid": os.getpid(),
            "runs": {s.name: state.batchers[s.name].stats.as_json(s.compiles) for s in state.servables if s.name in state.batchers}}


def _routes(app: FastAPI, state: ServiceState, s: Servable, base: str) -> None:
    tag: list[Any] = [s.name]
    shown = base != ""  # the root aliases stay out of the OpenAPI page: one entry per run

    async def predict(request: Request) -> JSONResponse:
        return await _predict(state, s, request)

    app.add_api_route(f"{base}/predict", predict, methods=["POST"], tags=tag, include_in_schema=shown,
                      summary=f"predict with `{s.name}`", openapi_extra=_openapi_body(s),
                      responses={200: {"description": "outputs by name"}, 400: {"description": "broken JSON or structure"},
                                 413: {"description": "body too large"}, 422: {"description": "a wrong input"}})

    def metadata() -> JSONResponse:
        if not state.ready:
            return _not_ready(state)
        return JSONResponse(s.metadata(state.graphs.get(s.name)))

    app.add_api_route(f"{base}/metadata", metadata, methods=["GET"], tags=tag, include_in_schema=shown,
                      summary="spec, inputs, outputs, classes, test metrics, versions")

    def graph_svg() -> Response:
        if not state.ready:
            return _not_ready(state)
        svg = state.svgs.get(s.name)
        if svg is None:
            return JSONResponse({"error": "the graph is drawn by Graphviz, which is not installed here (no `dot`)"},
                                status_code=404)
        return Response(svg, media_type="image/svg+xml", headers={"Content-Security-Policy": "script-src 'none'"})

    app.add_api_route(f"{base}/graph.svg", graph_svg, methods=["GET"], tags=tag, include_in_schema=False)

    def page() -> HTMLResponse:
        return HTMLResponse(_page(s, base))

    app.add_api_route(f"{base}/", page, methods=["GET", "HEAD"], include_in_schema=False)
    if base:  # the page's links are relative to its folder: /runs/NAME -> /runs/NAME/
        app.add_api_route(base, lambda: RedirectResponse(f"{base}/", status_code=308), methods=["GET"],
                          include_in_schema=False)
    if WEB.is_dir():
        app.mount(f"{base}/static", StaticFiles(directory=WEB), name=f"static-{s.name}{'-root' if not base else ''}")


def _not_ready(state: ServiceState) -> JSONResponse:
    why = "draining (shutting down)" if state.draining else "failed to load" if state.failed else "loading"
    return JSONResponse({"error": f"the service is {why}; GET /health says when it is ready"}, status_code=503,
                        headers={"Retry-After": "1"})


async def _predict(state: ServiceState, s: Servable, request: Request) -> JSONResponse:
    started = time.perf_counter()
    if not state.ready or state.failed:
        return _not_ready(state)
    batcher = state.batchers[s.name]
    try:
        body = await _read_request(request, state.max_body, s)
        x, warnings = await run_in_threadpool(s.parse, body)
    except ClientDisconnect:  # the client went away while sending: nobody to answer
        return JSONResponse({"error": "the client closed the connection before the body was read"}, status_code=400)
    except InputError as err:
        batcher.stats.rejected += 1
        return JSONResponse(err.body(), status_code=err.status)
    y = await batcher.predict(x)
    answers = s.answers(y)
    out: dict[str, Any] = {"outputs": answers[0]} if "inputs" in body else {"predictions": answers}
    out["warnings"] = warnings
    out["ms"] = round((time.perf_counter() - started) * 1000, 3)
    return JSONResponse(out)


async def _read_request(request: Request, limit: int, s: Servable) -> Any:
    """The request as JSON-like data: a JSON body, or multipart/form fields by input name; read through the
    size limit first."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise InputError(f"the body has {int(length):,} bytes; this service takes at most {limit:,} (--max-body-mb)",
                         "body", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InputError(f"the body is larger than the {limit:,} bytes this service takes (--max-body-mb)", "body", 413)
        chunks.append(chunk)
    raw = b"".join(chunks)
    request._body = raw  # the form parser reads the body from here, not from the consumed stream
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if kind in ("application/json", "text/json", "") or kind.endswith("+json"):
        return await run_in_threadpool(_json, raw)  # a large body is parsed off the event loop
    if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return await _form(request, s)
    raise InputError(f"cannot read a `{kind}` body: send application/json, or multipart/form-data with one field per "
                     "input", "content-type", 415)


def _json(raw: bytes) -> Any:
    if not raw.strip():
        raise InputError("the body is empty: send JSON like {\"inputs\": {...}}", "body", 400)
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise InputError("the body is not UTF-8 text", "body", 400) from None
    except json.JSONDecodeError as err:
        raise InputError(f"the body is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}", "body", 400) from None
    except RecursionError:
        raise InputError("the body's JSON is nested too deeply", "body", 400) from None
    except ValueError as err:  # Python's own bounds, such as the digits of one integer
        raise InputError(f"the body's JSON holds a value Python refuses: {str(err)[:160]}", "body", 400) from None


async def _form(request: Request, s: Servable) -> dict[str, Any]:
    """Form fields by input name (or feature name): a file part gives its bytes (an image) or its text, a
    text part is a string, or JSON numbers where the input takes numbers."""
    try:
        form = await request.form(max_files=16, max_fields=1024)
    except Exception as err:  # noqa: BLE001 - python-multipart's errors are all the body's fault
        raise InputError(f"cannot read the form: {str(err)[:200]}", "body", 400) from None
    try:
        return await _fields_of(form, s)
    finally:
        await form.close()  # its uploaded files' temporary files


async def _fields_of(form: Any, s: Servable) -> dict[str, Any]:
    from starlette.datastructures import UploadFile

    text_input = len(s.inputs) == 1 and s.inputs[0].kind == "text"
    names = {i.name for i in s.inputs} | {f for i in s.inputs for f in i.features}
    inputs: dict[str, Any] = {}
    for key, value in form.multi_items():
        if key not in names:
            inputs[key] = value if isinstance(value, str) else ""  # named as unknown by `parse`
            continue
        if key in inputs:
            raise InputError(f"the form gives `{key}` more than once; give one example per request", f"inputs.{key}", 422)
        if isinstance(value, UploadFile):
            data = await value.read()
            kind = next((i.kind for i in s.inputs if i.name == key), None)
            if kind == "image":
                inputs[key] = data
                continue
            try:
                value = data.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError("the file is not UTF-8 text (and this input is not an image)", f"inputs.{key}") from None
        if text_input:
            inputs[key] = value
            continue
        try:
            inputs[key] = json.loads(value)
        except (ValueError, RecursionError):
            inputs[key] = value  # a string where numbers belong: `parse` names it
    return {"inputs": inputs}


def _page(s: Servable, base: str) -> str:
    index = WEB / "index.html"
    if not index.is_file():
        return f"<!doctype html><title>{html.escape(s.name)}</title><p>specc serve: POST {html.escape(base)}/predict"
    text = index.read_text(encoding="utf-8")
    return text.replace("{{SPECC_BASE}}", html.escape(base, quote=True)).replace("{{SPECC_TITLE}}", html.escape(s.name))


def _index(state: ServiceState) -> HTMLResponse:
    items = "".join(f'<li><a href="runs/{html.escape(s.name, quote=True)}/">{html.escape(s.name)}</a></li>'
                    for s in state.servables)
    return HTMLResponse(f"<!doctype html><meta charset=utf-8><title>specc serve</title><h1>specc serve</h1><ul>{items}</ul>")


# --- errors as JSON -------------------------------------------------------------------------------------


def _errors(app: FastAPI, state: ServiceState) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        why = {404: f"no such path: {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
        return JSONResponse({"error": why.get(err.status_code, str(err.detail))}, status_code=err.status_code,
                            headers=getattr(err, "headers", None))

    @app.exception_handler(InputError)
    async def input_error(request: Request, err: InputError) -> JSONResponse:
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(Exception)
    async def internal(request: Request, err: Exception) -> JSONResponse:
        log.error("internal error in specc serve on %s %s:\n%s", request.method, request.url.path,
                  "".join(traceback.format_exception(err)))
        return JSONResponse({"error": f"internal error in specc (a bug, please report it): {type(err).__name__}"},
                            status_code=500)


def _openapi_body(s: Servable) -> dict[str, Any]:
    """The request schema of a run's /predict: its inputs by name, as the OpenAPI page shows them."""
    props: dict[str, Any] = {}
    for i in s.inputs:
        if i.kind == "text":
            props[i.name] = {"type": "string", "description": i.expected()}
        elif i.kind == "table":
            props.update({f: {"type": "number"} for f in i.features})
        elif i.kind == "image":
            props[i.name] = {"description": i.expected(), "oneOf": [
                {"type": "object", "properties": {"base64": {"type": "string"}}, "required": ["base64"]},
                {"type": "string", "description": "data:image/png;base64,..."}, {"type": "array"}]}
        else:
            props[i.name] = {"description": i.expected(), "oneOf": [{"type": "array"}, {"type": "number"}]}
    example = {"type": "object", "properties": props, "required": list(props)}
    schema = {"type": "object", "properties": {"inputs": example, "instances": {"type": "array", "items": example}}}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


# --- running it -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServeConfig:
    """Everything `specc serve` was asked for, as plain data (it crosses into `--workers` processes as JSON)."""

    runs: tuple[str, ...]
    host: str = "127.0.0.1"
    port: int = 8000
    max_batch: int = 32
    max_wait_ms: float = 0.0
    buckets: tuple[int, ...] = ()
    max_body: int = 16 * 1024 * 1024
    workers: int = 1
    drain_s: float = 30.0
    log_level: str = "warning"
    max_connections: int = 1024
    runtime: str = "jax"

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> ServeConfig:
        raw = json.loads(text)
        return cls(**{**raw, "runs": tuple(raw["runs"]), "buckets": tuple(raw["buckets"])})


ENV = "SPECC_SERVE_CONFIG"


def servables(config: ServeConfig) -> list[Servable]:
    """The runs opened and checked (user errors here, before the port is taken): not yet loaded."""
    from specc.tools.predict import open_run
    from specc.tools.serving import BatchOptions, unique_names

    options = BatchOptions(config.max_batch, config.max_wait_ms, config.buckets)
    return [Servable(open_run(path), name, options, config.runtime)
            for path, name in zip(config.runs, unique_names(list(config.runs)))]


def app_from_environment() -> FastAPI:
    """The application of one `--workers` process (uvicorn imports it by name in each process). A model that fails
    to load here stops the whole service (its process manager), rather than being started again and again."""
    config = ServeConfig.from_json(os.environ[ENV])
    items = servables(config)

    def stop_all() -> None:
        os.kill(os.getppid(), signal.SIGTERM)

    return make_app(items, config.max_body, announce=urls(config, [s.name for s in items], f"worker {os.getpid()} "),
                    on_failure=stop_all)


def urls(config: ServeConfig, names: list[str], who: str = "") -> str:
    """The lines `specc serve` prints once it is ready."""
    host = f"[{config.host}]" if ":" in config.host else config.host
    root = f"http://{host}:{config.port}"
    lines = [f"specc serve: {who}ready on {root} (POST /predict; page at /; OpenAPI at /docs; Ctrl-C or SIGTERM stops, "
             "finishing requests in flight)"]
    if len(names) > 1:
        lines += [f"  {n}: {root}/runs/{n}/" for n in names]
    return printable("\n".join(lines), lines=True)


def serve(config: ServeConfig, sock: Any = None) -> int:
    """Run the service until SIGINT/SIGTERM, then drain: requests in flight are answered before it exits.
    Returns 0 (stopped by SIGTERM), 130 (Ctrl-C) or 3 (a model failed to load). `sock`: the listening socket the
    command line bound already (so that `--port 0`'s port stays this service's)."""
    import uvicorn

    items = servables(config)  # the runs checked here, in this process, before any worker starts
    for s in items:
        s.check_spec_unchanged()
    limits: dict[str, Any] = {"log_level": config.log_level, "access_log": False, "limit_concurrency": config.max_connections,
              "timeout_graceful_shutdown": math.ceil(config.drain_s)}
    if config.workers > 1:
        for s in items:  # a model that does not load stops the service here, not in N workers started again and again
            try:
                s.run.model()
            except Exception as err:  # noqa: BLE001 - reported as the single process reports it
                print(f"specc serve: error: loading failed:\n{err.render() if isinstance(err, UserError) else err}",
                      file=sys.stderr)
                return 3
            s.run._model = None  # each worker loads its own
        os.environ[ENV] = config.to_json()
        uvicorn.run("specc.tools.serve_app:app_from_environment", factory=True, host=config.host, port=config.port,
                    workers=config.workers, **limits)
        return 0
    server: Any = None

    def stop() -> None:
        if server is not None:
            server.should_exit = True

    app = make_app(items, config.max_body, announce=urls(config, [s.name for s in items]), on_failure=stop)
    state: ServiceState = app.state.specc

    stopped_by: list[int] = []

    class Draining(uvicorn.Server):
        """uvicorn's server, telling /health it drains as soon as a signal asks it to stop, and exiting with
        specc's exit code after the drain (uvicorn raises the signal again, which would end the process by it)."""

        def handle_exit(self, sig, frame):
            state.draining = True
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                yield
                stopped_by.extend(self._captured_signals)
                self._captured_signals.clear()

    server = Draining(uvicorn.Config(app, host=config.host, port=config.port, **limits))
    server.run(sockets=[sock] if sock is not None else None)
    return 3 if state.failed else 130 if signal.SIGINT in stopped_by else 0
