"""Stage 3: build the plan into a `keras.Model` on symbolic tensors.

Building is shape inference: every layer is called on symbolic Keras tensors,
so a shape error surfaces before any training and is blamed on the spec line
of the layer that raised it. Keras computes every shape; specc has no shape rules.

`check` and `summary` need shapes and parameter counts only: they build once, without weights
(`build_shapes`). `run` builds with weights (`build`), after a weight-free build that bounds the sizes.
"""

from __future__ import annotations

import contextlib
import gc
import math
import re
import sys
from dataclasses import dataclass
from typing import Any

from specc.compile.catalog import catalog
from specc.core.limits import MAX_EXAMPLE_VALUES
from specc.core.errors import SpecError, brief, printable, suggest
from specc.runtime.keras_env import import_keras, keras_module
from specc.core.plan import LayerNode, Obj, Plan


# Layers whose call takes several tensors as separate arguments rather than as one list.
SEPARATE_INPUTS = {"MultiHeadAttention", "GroupQueryAttention"}

#: The most parameters one layer may have: 2**31 (8 GiB of float32 weights). Counted on a build that
#: allocates nothing, so that `dense(10**12)` is a located error rather than an out-of-memory crash.
#: A layer's output is bounded like an input (`MAX_EXAMPLE_VALUES` per example): some layers (`normalization`)
#: allocate state the size of their input even when building shapes only.
MAX_LAYER_PARAMS = 2**31


def make_object(value: Any) -> Any:
    """Turn plan values into Keras objects: `Obj` -> `keras.<module>.<cls>(**kwargs)`, recursively."""
    if isinstance(value, Obj):
        return getattr(_module(value.module), value.cls)(**{k: make_object(v) for k, v in value.kwargs.items()})
    if isinstance(value, list):
        return [make_object(v) for v in value]
    if isinstance(value, tuple):
        return tuple(make_object(v) for v in value)
    return value


def _module(path: str):
    """The module an `Obj` names: a Keras module, or `specc.runtime.custom_objects` (specc's own classes, which import Keras)."""
    if path == "specc.runtime.custom_objects":
        from specc.runtime import custom_objects
        return custom_objects
    return keras_module(path)


def make_layer(node: LayerNode):
    cls = catalog("layer").get_class(node.cls)
    return cls(name=node.name, **{k: make_object(v) for k, v in node.kwargs.items()})


_NOISE = [
    re.compile(r"\s*Arguments received by \S+\.call\(\).*", re.S),
    re.compile(r"^Exception encountered when calling \S+\.call\(\)\.\s*", re.S),
]


@contextlib.contextmanager
def gc_paused():
    """Python's cycle collector paused while a model is checked or built, as it was before afterwards.

    A full collection walks every object in the process, and Keras and JAX leave hundreds of thousands after
    their import; the objects a large model makes set off several, each costing as much as the whole heap
    (measured: a third of building a ResNet of 200 blocks, `benchmarks/scaling.py`). What a build leaves
    behind is collected as usual afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def argument_named(message: str, names) -> str | None:
    """Which of these argument names a Keras error message is about, if it names one."""
    for arg in names:
        if re.search(rf"`{arg}`|\b{arg}=|argument {arg}\b|'{arg}'", message):
            return arg
    return None


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def keras_message(err: BaseException) -> str:
    text = _ANSI.sub("", str(err)).strip()
    for pat in _NOISE:
        text = pat.sub("", text).strip()
    text = re.sub(r"\s*\n\s*", " ", text)
    return text[:600] if text else type(err).__name__


def _named_argument(node: LayerNode, message: str) -> str | None:
    """The argument of this layer call that a Keras message is about, if it names one."""
    return argument_named(message, node.origin.args)


def _blame(node: LayerNode, message: str):
    """The span of the argument the Keras message names, else the layer call's."""
    arg = _named_argument(node, message)
    return node.origin.args[arg] if arg else node.origin.span


def _shape(t) -> str:
    return str(tuple(t.shape))


@dataclass
class Built:
    model: Any  # keras.Model
    layers: dict[str, Any]  # plan node name -> keras layer
    tensors: dict[str, Any]  # plan node name -> symbolic output


def build_model(plan: Plan) -> Any:
    """The `keras.Model` the plan describes (fresh weights). Raises `SpecError` blamed on spec lines."""
    return build(plan).model


def _allocating() -> bool:
    """Whether building here creates weights (false inside `shapes_only()`)."""
    from keras.src.backend.common.stateless_scope import get_stateless_scope

    scope = get_stateless_scope()
    return scope is None or scope.initialize_variables


def build(plan: Plan) -> Built:
    """The model with its weights (inside `shapes_only()`, without)."""
    if _allocating():
        # Count parameters first, on a build that allocates nothing. Layers built without a seed draw one
        # from Python's `random` (as do initializers): that draw is put back, so the model built next is the
        # one a single build would give (same spec and seed, same weights as `specc emit --train`'s).
        import random

        state = random.getstate()
        try:
            with shapes_only():
                _build(plan)
        finally:
            random.setstate(state)
    return _build(plan)


def _build(plan: Plan, initializers: bool = False) -> Built:
    """One build on symbolic tensors. `initializers` (inside `shapes_only()`): run each weight's initializer on
    abstract values too, so that an initializer the weight's shape does not suit is the error a real build gives."""
    with gc_paused():
        return _build_graph(plan, initializers)


def _build_graph(plan: Plan, initializers: bool) -> Built:
    keras = import_keras()
    tensors: dict[str, Any] = {}
    layers: dict[str, Any] = {}
    pending = _pending_variables() if initializers else []
    made: list[tuple[LayerNode, list, int, int, int]] = []  # each layer's variables: pending[a:b] made, [b:c] called
    for inp in plan.inputs:
        try:
            tensors[inp.name] = keras.Input(shape=inp.shape, dtype=inp.dtype, name=inp.name)
        except Exception as err:  # noqa: BLE001 - Keras says what is wrong with the shape
            raise SpecError(plan.diag(f"bad input `{inp.name}`: {keras_message(err)}", inp.origin.span)) from None
    for node in plan.layers:
        start = len(pending)
        try:
            layer = make_layer(node)
        except Exception as err:  # noqa: BLE001 - constructor validation is Keras's own
            raise _arguments_error(plan, node, err) from None
        made_at = len(pending)
        args = [tensors[i] for i in node.inputs]
        try:
            if node.cls in SEPARATE_INPUTS:  # call(query, value, key): one tensor attends to itself
                out = layer(*(args if len(args) > 1 else args * 2), **node.call_kwargs)
            else:  # merge layers and `Attention` take a list
                out = layer(args if len(args) > 1 else args[0], **node.call_kwargs)
        except Exception as err:  # noqa: BLE001 - the shape rules are Keras's own
            raise _call_error(plan, node, args, err) from None
        _check_output(plan, node, layer, args, out)
        layers[node.name] = layer
        tensors[node.name] = out
        if initializers:
            made.append((node, args, start, made_at, len(pending)))
    ins = [tensors[i.name] for i in plan.inputs]
    outs = [tensors[o] for o in plan.outputs]
    # Keras maps a functional graph recursively, a few frames per layer along the longest path.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 3 * len(plan.layers) + 1000))
    try:
        model = keras.Model(inputs=ins[0] if len(ins) == 1 else ins, outputs=outs[0] if len(outs) == 1 else outs,
                            name=plan.name)
    finally:
        sys.setrecursionlimit(limit)
    _check_loss_axes(plan, [tensors[o] for o in plan.outputs])
    # After the whole graph, as a real build after a weight-free one reports them: first shapes, then initializers.
    tried: dict[Any, BaseException | None] = {}
    for node, args, start, made_at, end in made:
        for k in range(start, end):
            failure = _initializer_error(pending[k], tried)
            if failure is not None:
                raise (_arguments_error(plan, node, failure) if k < made_at
                       else _call_error(plan, node, args, failure)) from None
    return Built(model=model, layers=layers, tensors=tensors)


def _check_output(plan: Plan, node: LayerNode, layer: Any, args: list, out: Any) -> None:
    """A layer just called: one output tensor, within the bounds on parameters per layer and values per example."""
    if isinstance(out, (list, tuple)):
        raise SpecError(plan.diag(f"layer `{node.name}` returns several tensors; specc chains single tensors",
                                 node.origin.span, notes=node.origin.notes))
    params = layer.count_params() if layer.weights else 0
    if params > MAX_LAYER_PARAMS:
        raise SpecError(plan.diag(
            f"layer `{node.name}` ({node.cls}) would have {params:,} parameters; specc builds at most "
            f"{MAX_LAYER_PARAMS:,} per layer", node.origin.span, notes=node.origin.notes,
            hint=f"its input has shape {', '.join(_shape(a) for a in args)}; make it or the layer smaller"))
    values = math.prod(d for d in out.shape[1:] if d is not None)
    if values > MAX_EXAMPLE_VALUES:
        raise SpecError(plan.diag(
            f"layer `{node.name}` ({node.cls}) outputs {values:,} values per example {_shape(out)}; specc builds "
            f"at most {MAX_EXAMPLE_VALUES:,} (2**28)", node.origin.span, notes=node.origin.notes))


def _check_loss_axes(plan: Plan, outputs: list) -> None:
    """A loss's `axis` names an axis of the output it is computed on: Keras takes any number when the loss is made and
    fails in the first training step (`IndexError`, `axis 5 is out of bounds`), after the run directory was made."""
    train = plan.train
    if train is None:
        return
    losses = train.loss if isinstance(train.loss, list) else [train.loss] * len(outputs)
    for loss, out in zip(losses, outputs):
        axis = loss.kwargs.get("axis") if isinstance(loss, Obj) else None
        axes = axis if isinstance(axis, (list, tuple)) else [axis]
        rank = len(out.shape)
        wrong = [a for a in axes if isinstance(a, int) and not isinstance(a, bool) and not -rank <= a < rank]
        if wrong:
            raise SpecError(plan.diag(
                f"the loss `{loss.cls}` reduces over axis {wrong[0]}, but the output it is computed on has "
                f"{rank} axes {tuple(out.shape)} (batch axis included): axes run from {-rank} to {rank - 1}",
                train.span("loss"), hint="leave `axis` out for the last axis (-1)"))


def _arguments_error(plan: Plan, node: LayerNode, err: BaseException) -> SpecError:
    """A layer's constructor refused its arguments."""
    message = keras_message(err)
    return SpecError(plan.diag(f"invalid arguments for `{node.cls}`: {message}", _blame(node, message),
                               hint=_hint_for(node, message), notes=node.origin.notes))


def _call_error(plan: Plan, node: LayerNode, args: list, err: BaseException) -> SpecError:
    """A layer could not be called on its inputs."""
    shapes = ", ".join(_shape(a) for a in args)
    message = keras_message(err)
    ndim = re.search(r"expected (min_|max_)?ndim=(\d+), found ndim=(\d+)", message)
    if ndim:
        bound = {"min_": "at least ", "max_": "at most "}.get(ndim.group(1) or "", "")
        text = f"expects {bound}{ndim.group(2)}-D input (batch axis included), got shape {shapes}"
    else:
        text = f"cannot take input of shape {shapes}: {message}"
    return SpecError(plan.diag(f"layer `{node.name}` ({node.cls}) {text}", node.origin.span,
                               hint=_hint_for(node, message, args), notes=node.origin.notes))


def _pending_variables() -> list:
    """The variables made inside `shapes_only()` so far, in order (Keras's list of uninitialized ones)."""
    from keras.src.backend.common import global_state

    return global_state.get_global_attribute("uninitialized_variables", [], set_to_default=True)


def _initializer_error(variable, tried: dict) -> BaseException | None:
    """What the variable's initializer raises for its shape and dtype, run on abstract values (nothing is
    allocated or compiled); `tried` keeps the answers, since a deep model asks the same few questions."""
    from keras.src import backend
    from keras.src.initializers import Initializer

    init = getattr(variable, "_initializer", None)
    if not isinstance(init, Initializer):  # Keras's own state (seed generators): not a spec's initializer
        return None
    shape, dtype = tuple(variable.shape), variable.dtype
    try:  # a whole-number seed cannot decide whether it raises: without it, the clones of one initializer (attention
        # layers clone theirs with fresh seeds, 4 per layer) share one answer; 2,000 attention layers: 17 s -> 5 s
        config = init.get_config()
        if isinstance(config, dict) and isinstance(config.get("seed"), int) and not isinstance(config["seed"], bool):
            config = {**config, "seed": "int"}
        key: tuple[Any, ...] = (type(init), repr(config), shape, dtype)
    except Exception:  # noqa: BLE001 - a configuration that cannot be shown: ask for this one alone
        key = (id(init), shape, dtype)
    if key not in tried:
        try:
            backend.compute_output_spec(lambda: init(shape, dtype=dtype))
            tried[key] = None
        except Exception as err:  # noqa: BLE001 - the initializer's own checks, as a real build runs them
            tried[key] = None if _needs_values(err) else err
    return tried[key]


def _needs_values(err: BaseException) -> bool:
    """An error from running on abstract values rather than from the initializer's checks: not reported."""
    import jax

    return isinstance(err, (jax.errors.JAXTypeError, jax.errors.JAXIndexError))


def _hint_for(node: LayerNode, message: str, args=None) -> str | None:
    m = re.search(r"expected (?:min_|max_)?ndim=(\d+), found ndim=(\d+)", message)
    if m and args:
        want, got = int(m.group(1)), int(m.group(2))
        if want > got:
            return (f"`{node.cls}` expects {want - 1}-D examples but gets {got - 1}-D ones; "
                    "reshape first (e.g. `reshape((28, 28, 1))`) or fix the input shape")
        return f"`{node.cls}` expects {want - 1}-D examples but gets {got - 1}-D ones; add `flatten` or a pooling layer before it"
    if "incompatible shapes" in message.lower() or "must have the same shape" in message.lower():
        shapes = [tuple(a.shape) for a in args or []]
        if len(shapes) == 2 and len(shapes[0]) == len(shapes[1]) == 4 and shapes[0][1:3] != shapes[1][1:3]:
            small = min(shapes, key=lambda t: t[1] or 0)
            return ("the merged tensors must have matching shapes, but one branch changes height and width; "
                    "give the other the same strides, e.g. a projection shortcut "
                    f"`branch {{ conv2d({small[-1]}, 1, strides=2) }}`")
        return "the merged tensors must have matching shapes; adjust the filters/units of one branch"
    m = re.search(r"one of \{([^}]*)\}", message)
    if m:
        allowed = sorted(re.findall(r"'([^']*)'", m.group(1)))
        named = _named_argument(node, message)
        bad = node.kwargs.get(named) if named else None
        close = suggest(bad, allowed) if isinstance(bad, str) else []
        listing = ", ".join(f"`{a}`" for a in allowed)
        return f"did you mean `{close[0]}`? allowed values: {listing}" if close else f"allowed values: {listing}"
    return None


def build_shapes(plan: Plan) -> Built:
    """The model built once without weights: shapes and parameter counts, and every error a build with weights
    reports (`check` and `summary` need no more). Inside `shapes_only()` (`diff`, `graph`), the plain build."""
    if not _allocating():
        return _build(plan)
    with shapes_only():
        return _build(plan, initializers=True)


def infer_shapes(plan: Plan) -> dict[str, tuple]:
    """Every tensor's shape (batch axis first, `None`), computed by Keras on symbolic tensors (no weights made)."""
    return {name: tuple(t.shape) for name, t in build_shapes(plan).tensors.items()}


@dataclass
class LayerRow:
    name: str
    cls: str
    shape: list[int | None]
    params: int
    line: int | None


def summarize(plan: Plan) -> tuple[list[LayerRow], int]:
    """Each layer with its output shape and parameter count, and the model's total (no weights are made)."""
    built = build_shapes(plan)
    rows = [LayerRow(i.name, "Input", list(built.tensors[i.name].shape), 0, i.origin.span.line if i.origin.span else None)
            for i in plan.inputs]
    for node in plan.layers:
        rows.append(LayerRow(node.name, node.cls, list(built.tensors[node.name].shape), built.layers[node.name].count_params(),
                             node.origin.span.line if node.origin.span else None))
    return rows, built.model.count_params()


def format_summary(plan: Plan, rows: list[LayerRow], total: int) -> str:
    head = ("layer", "type", "output shape", "params", "line")
    # Names come from the spec (`name="..."`): escaped, as a diagnostic escapes the source it quotes.
    table = [head] + [(printable(r.name, lines=False), r.cls, str(tuple(r.shape)), f"{r.params:,}", str(r.line or ""))
                      for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = [f"model {printable(plan.name, lines=False)}", *format_constants(plan)]
    for k, row in enumerate(table):
        cells = [row[i].ljust(widths[i]) if i != 3 else row[i].rjust(widths[i]) for i in range(len(head))]
        lines.append("  " + "  ".join(cells).rstrip())
        if k == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    lines.append(f"total params: {total:,}")
    return "\n".join(lines)


def format_constants(plan: Plan) -> list[str]:
    """The spec's `let` constants and the facts it names, resolved, for the top of the summary."""
    if not plan.constants:
        return []
    order = sorted(plan.constants, key=lambda name: ("." in name, name.startswith("train.")))  # lets, data, train
    names = {name: name if "." in name else f"let {name}" for name in order}
    width = max(len(v) for v in names.values())
    out = []
    for name in order:
        value = plan.constants[name]
        shown = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else printable(
            (value if len(value) <= 100 else value[:100] + "...") if isinstance(value, str) else brief(value, 100),
            lines=False)
        where = f"  ({printable(str(plan.facts.source), lines=False)})" if name.startswith("data.") and plan.facts is not None else ""
        out.append(f"  {names[name].ljust(width)} = {shown}{where}")
    return out + [""]


@contextlib.contextmanager
def shapes_only():
    """Build models whose variables are never initialized: shapes and parameter counts are right,
    weights are absent. Initializing would compile every initializer with XLA (seconds per model),
    which `diff` and `graph` never need. Uses Keras's stateless scope and its list of pending variables."""
    from keras.src.backend.common import global_state

    keras = import_keras()
    pending = global_state.get_global_attribute("uninitialized_variables", [], set_to_default=True)
    before = len(pending)
    try:
        with keras.StatelessScope(initialize_variables=False):
            yield
    finally:
        del pending[before:]  # ours: nothing is to initialize them later
