"""`specc import`: a Keras model (a `.keras` file, or a model in memory) written back as a spec.

The functional graph is walked node by node: each layer becomes a statement named by its class's
catalogue name, with the arguments whose values differ from the class's defaults (read from
`get_config()` against a default instance built the same way), call options from the node, and
named tensors where a tensor is used more than once. What the language cannot say (code, custom
classes, shared layers, several outputs from one layer, explicit masks) is a `NotExpressible`
error naming the layer and the reason; nested Functional or Sequential models are flattened.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specc.compile.build import SEPARATE_INPUTS  # attention layers called as (query, value[, key])
from specc.compile.build import shapes_only as no_weights
from specc.compile.catalog import DENIED_LAYERS, METRIC_STRINGS, call_options_of, catalog, kind_of_argument, signature_of, snake_case
from specc.core.errors import DataError, Diagnostic, UsageError, printable
from specc.lang.render import is_name, render_shape, render_value
from specc.runtime.keras_env import import_keras

_CODE = {c for c in DENIED_LAYERS if c not in ("Layer", "Wrapper", "InputLayer", "Input", "InputSpec")}


class NotExpressible(UsageError):
    """A Keras model the language cannot express: says which layer, and why."""


@dataclass(eq=False)
class _Node:
    layer: Any
    sources: list  # of _Node or _Input
    options: dict = field(default_factory=dict)
    reason: str | None = None  # why it cannot be written, if it cannot (an error only if something uses it)
    name: str = ""  # the layer's name in the spec (`_Graph.rename`): its own where a spec can write it


@dataclass(eq=False)
class _Input:
    name: str
    shape: tuple
    dtype: str


# -- names ---------------------------------------------------------------------------------------

@functools.cache
def _names(kind: str) -> tuple[dict, dict]:
    """Class -> its spec name (the one built from the class's own name first), and class -> every
    spelling the spec accepts for it (what automatic layer names are made of)."""
    cat = catalog(kind)
    names: dict[type, str] = {}
    for name, attr in cat.classes.items():  # `he_normal` where Keras's own `get()` takes it, not `henormal`
        cls = cat.get_class(attr)
        if attr == cls.__name__ and name == snake_case(attr) and cat.keras_accepts(name):
            names.setdefault(cls, name)
    for own in (True, False):
        for name in cat.canonical:
            canonical = cat.classes.get(name)
            if canonical and (not own or canonical == cat.get_class(canonical).__name__):
                names.setdefault(cat.get_class(canonical), name)
    spellings: dict[type, set] = {}
    for name, attr in cat.classes.items():
        spellings.setdefault(cat.get_class(attr), set()).add(name)
    return names, spellings


def _automatic(value: Any, cls: type, kind: str, default: Any) -> bool:
    """Whether a `name` is one Keras or specc makes up (`dense_3`, `batchnorm_1`), not one a person chose."""
    if not isinstance(value, str):
        return False
    base = re.sub(r"_\d+$", "", value)
    known = _names(kind)[1].get(cls, set()) | {re.sub(r"_\d+$", "", str(default))}
    return base in known


class _Namer:
    """Tensor names: a layer's own name where the language allows it, else a variant that no layer has."""

    def __init__(self, layer_names: set[str]):
        self.layers, self.given = set(layer_names), set[str]()

    def __call__(self, own: str) -> str:
        base = re.sub(r"\W", "_", own, flags=re.ASCII) or "t"
        base = base if re.match(r"[A-Za-z_]", base) else f"t_{base}"
        for k in range(1000):
            cand = base if k == 0 else f"{base}_out" if k == 1 else f"{base}_out{k}"
            if self.fits(cand, own):
                self.given.add(cand)
                return cand
        raise AssertionError("no free name")  # pragma: no cover

    def fits(self, name: str, own: str) -> bool:
        return (is_name(name) and not catalog("layer").class_name(name) and not catalog("activation").knows(name)
                and name not in self.given and (name == own or name not in self.layers))


def _q(text: Any) -> str:
    """A name or value from the file, quoted in a message or a comment: one line, nothing a terminal obeys."""
    return printable(str(text), lines=False)


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


# -- values --------------------------------------------------------------------------------------

class _Fail(Exception):
    """A value the language cannot write; the caller names the layer."""


def _number(v: float) -> str:
    if not math.isfinite(v):
        raise _Fail(f"the number {v} cannot be written in a spec")
    import numpy as np

    text = repr(float(v))
    if float(np.float32(v)) == v and len(str(np.float32(v))) < len(text):
        text = str(np.float32(v))  # a float32 value (an optimizer's variable): 0.01, not 0.009999999776482582
    return text


def _value(v: Any, kind: str | None = None) -> str:
    """A config value in spec syntax (`specc.lang.render`); `kind` is the catalogue objects of this argument come
    from."""
    return render_value(v, functools.partial(_config_value, kind=kind))


def _config_value(v: Any, kind: str | None) -> str | None:
    """What only a Keras config holds, in spec syntax (objects, NumPy values, float32 numbers), or a name checked
    against `kind`'s catalogue; None: `render_value` writes `v` as it is."""
    keras = import_keras()
    if hasattr(v, "tolist") and hasattr(v, "dtype"):  # NumPy scalars and arrays
        return _value(v.tolist(), kind)
    if isinstance(v, dict) and v.get("class_name") == "function" and isinstance(v.get("config"), str):
        return _value(v["config"], kind)  # a serialized function (an activation, a loss): its registered name
    if isinstance(v, dict) and "class_name" in v:
        return _object(v, kind)
    if kind == "layer" and isinstance(v, keras.layers.Layer):
        return _call(v, kind)
    if isinstance(v, float):
        return _number(v)
    if isinstance(v, str):
        if kind and kind != "activation" and v and not is_name(v):
            raise _Fail(f"`{_q(v)}` is not a name the language can write")
        if kind == "activation" and not catalog("activation").knows(v):
            raise _Fail(f"activation `{_q(v)}` is not a Keras activation")
        return None
    if v is None or isinstance(v, (bool, int, tuple, list)):
        return None
    raise _Fail(f"its value {_q(repr(v))[:200]} ({type(v).__name__}) cannot be written in a spec")


def _object(config: dict, kind: str | None) -> str:
    """A serialized Keras object (`{"class_name": ..., "config": ...}`) as the call that makes it."""
    if config["class_name"].endswith("DTypePolicy"):
        return _value(config["config"]["name"])
    if kind is None:
        raise _Fail(f"it holds a `{_q(config['class_name'])}` object, which the language cannot write")
    try:
        obj = import_keras().saving.deserialize_keras_object(config, safe_mode=True)
    except Exception as err:  # noqa: BLE001 - an unknown or unsafe object: say so
        raise _Fail(f"its `{_q(config['class_name'])}` object cannot be read ({_q(_first_line(err))[:200]})") from None
    return _call(obj, kind)


def _norm(v: Any) -> Any:
    """Values compared for equality: tuples as lists, names inside nested layer configs ignored."""
    if isinstance(v, dict):
        out = {k: _norm(x) for k, x in v.items()}
        if "class_name" in v and isinstance(out.get("config"), dict) and not v["class_name"].endswith("DTypePolicy"):
            out["config"].pop("name", None)
        return out
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    return v


def _call(obj: Any, kind: str) -> str:
    """`name(arg, key=value)` for a Keras object: the arguments that differ from the class's defaults."""
    cls: type = type(obj)  # not `type[Any]`, which mypy does not take for Hashable (the cached `signature_of`)
    spec = _names(kind)[0].get(cls)
    if spec is None:
        what = f"{cls.__module__}.{cls.__name__}"
        raise _Fail(f"`{what}` is not in the {kind} catalogue a spec uses (Keras's own, and specc's)")
    config = obj.get_config()
    sig = signature_of(cls)
    default, drawn = _defaults(obj, kind, {k: config[k] for k in sig.required if k in config})
    args = _arguments(cls, kind, config, sig, default, drawn)
    for k in config:
        if k not in sig.names and k in default and _norm(config[k]) != _norm(default[k]):
            raise _Fail(f"its setting `{_q(k)}`={_q(repr(config[k]))[:200]} is not a constructor argument, so a spec "
                        "cannot give it")
    return f"{spec}({', '.join(args)})" if args else spec


def _defaults(obj: Any, kind: str, required: dict) -> tuple[dict, set]:
    """The config of a default instance of `obj`'s class (made from its `required` arguments), and the arguments
    whose defaults Keras draws at random; ({}, set()) when there is no default instance."""
    cls = type(obj)
    try:
        fresh = cls.from_config(required)
        # Keras draws some defaults at random (the seed of `random_crop`): such a value is not a choice.
        again = cls.from_config(required).get_config()
        drawn = {k for k, v in fresh.get_config().items() if k in again and _norm(v) != _norm(again[k])}
        if kind == "layer" and getattr(obj, "built", False):
            # A built layer normalizes some arguments (axis=-1 -> [-1]): compare like with like.
            with contextlib.suppress(Exception), no_weights():
                fresh.build_from_config(obj.get_build_config())
        return fresh.get_config(), drawn
    except Exception:  # noqa: BLE001 - no default instance: write every argument
        return {}, set()


def _arguments(cls: type, kind: str, config: dict, sig, default: dict, drawn: set) -> list[str]:
    """The written arguments: those that differ from the defaults, required ones by position while they can be."""
    args, positional = [], True
    for k in sig.names:
        if k not in config:
            positional = False
            continue
        v = config[k]
        if k == "name" and (kind == "layer" or _automatic(v, cls, kind, default.get(k))):
            continue  # a layer's name is the statement's business
        if k not in sig.required and (k in drawn or k in default and _norm(v) == _norm(default[k])):
            positional = False
            continue
        try:
            text = _value(v, kind_of_argument(k))
        except _Fail as err:
            raise _Fail(f"argument `{k}`: {err}") from None
        # Required arguments by position; so is the first of a regularizer or constraint (`l2(1e-4)`).
        first = kind in ("regularizer", "constraint") and sig.positional[:1] == (k,)
        if positional and (k in sig.required or first) and k in sig.positional:
            args.append(text)
        else:
            positional = False
            args.append(f"{k}={text}")
    return args


# -- the graph -----------------------------------------------------------------------------------

_ATTENTION_INPUTS = ("query", "value", "key")  # the tensors an attention layer is called with, in order


def _first_inputs(keras, name: str, first: Any) -> list:
    """The tensors of a call's first argument: one tensor, or a list of several (a merge)."""
    if isinstance(first, keras.KerasTensor):
        return [first]
    if isinstance(first, (list, tuple)) and len(first) > 1 and all(isinstance(x, keras.KerasTensor) for x in first):
        return list(first)
    raise _Fail(f"its input `{name}` is not a tensor or a list of several tensors")


def _is_mask(k: str) -> bool:
    """A call argument that carries a mask (`attention_mask` is an input of its own)."""
    return k == "mask" or k.endswith("_mask") and k != "attention_mask"


def _call_arguments(layer, kn) -> tuple[inspect.Signature, list[tuple[str, Any]]]:
    """The signature of `layer.call` and the arguments of its call at node `kn`, `*args` and `**kwargs` spread out."""
    sig = inspect.signature(layer.call)
    try:
        bound = sig.bind(*kn.arguments.args, **kn.arguments.kwargs).arguments
    except TypeError as err:
        raise _Fail(f"its call cannot be read ({_q(_first_line(err))[:200]})") from None
    items: list[tuple[str, Any]] = []
    for k, v in bound.items():
        kind = sig.parameters[k].kind
        items += (list(v.items()) if kind == inspect.Parameter.VAR_KEYWORD else
                  [(f"{k}[{i}]", x) for i, x in enumerate(v)] if kind == inspect.Parameter.VAR_POSITIONAL
                  else [(k, v)])
    return sig, items


def _call_option(cls: type, sig: inspect.Signature, k: str, v: Any) -> bool:
    """Whether the call's argument `k=v` (not a tensor) is a call option the statement writes; False for a value
    that need not be written; a `_Fail` for one a spec cannot pass."""
    param = sig.parameters.get(k)
    default = param.default if param is not None else inspect.Parameter.empty
    if v is default or isinstance(v, (bool, int, float, str)) and type(v) is type(default) and v == default:
        return False
    if k == "training":  # Keras records the mode it was built in; True would force training mode
        if v:
            raise _Fail("it is called with `training=True`, which a spec cannot pass")
        return False
    if k in call_options_of(cls) and k not in signature_of(cls).names:
        return True
    raise _Fail(f"it is called with `{_q(k)}={_q(repr(v))[:200]}`, which a spec cannot pass")


def _fail(where: str, message: str) -> NotExpressible:
    return NotExpressible(Diagnostic(message, file=where))


def _what(layer) -> str:
    kind = "layer" if isinstance(layer, import_keras().layers.Layer) else "operation"
    return f"{kind} `{_q(layer.name)}` ({_q(type(layer).__name__)})"


def _functional(model, where: str):
    keras = import_keras()
    fn = getattr(model, "_functional", None) if isinstance(model, keras.Sequential) else model
    if isinstance(model, keras.Sequential) and fn is None:
        raise _fail(where, f"the Sequential model `{_q(model.name)}` has no input shape yet: start it with "
                    "`keras.Input(shape)` or build it, then import it")
    if not hasattr(fn, "_nodes_by_depth"):
        raise _fail(where, f"model `{_q(model.name)}` ({_q(type(model).__name__)}) is a subclassed keras.Model: its `call` "
                    "is Python code, so there is no graph of layers to read")
    return fn


class _Graph:
    def __init__(self, model, where: str):
        keras = import_keras()
        self.keras, self.where, self.notes = keras, where, list[str]()
        from specc.compile.check import DTYPES

        fn = _functional(model, where)
        self.inputs: list[_Input] = []
        env: dict[int, Any] = {}
        for t in fn.inputs:
            layer = t._keras_history.operation
            what = f"input `{_q(layer.name)}`"
            if t.shape and t.shape[0] is not None:
                raise _fail(where, f"{what} has a fixed batch size ({t.shape[0]}); a spec's inputs leave it free")
            if getattr(t, "sparse", False) or getattr(t, "ragged", False):
                raise _fail(where, f"{what} is sparse or ragged; a spec's inputs are dense tensors")
            if t.dtype not in DTYPES:
                raise _fail(where, f"{what} has dtype `{t.dtype}`; a spec's inputs take {', '.join(DTYPES)}")
            entry = _Input(layer.name, tuple(t.shape[1:]), t.dtype)
            self.inputs.append(entry)
            env[id(t)] = entry
        self.nodes: list[_Node] = []
        self.walk(fn, env)
        self.outputs = [env[id(t)] for t in fn.outputs]
        seen: set[int] = set()
        for node in self.nodes:  # shared between a nested model and the rest
            if id(node.layer) in seen:
                raise _fail(where, f"{_what(node.layer)} is called more than once (a shared layer: one set of "
                            "weights for several inputs); a spec makes a new layer at every call")
            seen.add(id(node.layer))
        needed, todo = set(), list(self.outputs)  # what the outputs need; Keras's mask operations drop out
        while todo:
            node = todo.pop()
            if id(node) not in needed:
                needed.add(id(node))
                todo += getattr(node, "sources", [])
        used = [n for n in self.nodes if id(n) in needed]
        for node in used:
            if node.reason:
                raise _fail(where, f"{_what(node.layer)} cannot be imported: {node.reason}")
        self.nodes = used

    def consumers(self, node) -> list[_Node]:
        return [n for n in self.nodes if node in n.sources]

    def walk(self, fn, env: dict[int, Any]) -> None:
        """Each layer call of a functional model, in Keras's own (topological) order of its layers."""
        from keras.src.ops.function import make_node_key

        keras = self.keras
        for op in fn.operations:
            calls = [kn for i, kn in enumerate(op._inbound_nodes) if make_node_key(op, i) in fn._nodes]
            if len(calls) > 1:
                raise _fail(self.where, f"{_what(op)} is called {len(calls)} times (a shared layer: one set of "
                            "weights for several inputs); a spec makes a new layer at every call")
            for kn in calls:
                if kn.is_input:
                    continue
                if len(kn.outputs) != 1:
                    raise _fail(self.where, f"{_what(op)} returns {len(kn.outputs)} tensors; a spec's layers return "
                                "one (drop `return_state`, `return_attention_scores` and the like)")
                if isinstance(op, keras.Model):
                    self.flatten(op, kn, env)
                    continue
                if isinstance(op, keras.layers.Layer):
                    try:
                        self.nodes.append(self.node(op, kn, env))
                    except _Fail as err:
                        raise _fail(self.where, f"{_what(op)} cannot be imported: {err}") from None
                else:  # an error only if a layer uses it: Keras makes some for masks (`not_equal`)
                    reason = (f"it is a `keras.ops` operation ({type(op).__name__}), not a layer; use a layer "
                              "(`add`, `multiply`, `concatenate`, `reshape`, ...) instead")
                    sources = [env[id(t)] for t in kn.arguments.keras_tensors if id(t) in env]
                    self.nodes.append(_Node(op, sources, reason=reason))
                env[id(kn.outputs[0])] = self.nodes[-1]

    def flatten(self, sub, kn, env) -> None:
        """A nested Functional or Sequential model called once: its layers, wired to the outer tensors."""
        inner = _functional(sub, self.where)
        args = [t for t in self.keras.tree.flatten(kn.arguments.args) if isinstance(t, self.keras.KerasTensor)]
        masked = any(getattr(t, "_keras_mask", None) is not None for t in args)
        extra = [k for k, v in kn.arguments.kwargs.items() if v and not (k == "mask" and masked)]
        if extra or len(args) != len(inner.inputs):
            raise _fail(self.where, f"nested model `{_q(sub.name)}` is called with arguments a spec cannot pass "
                        f"({', '.join(extra) or 'its inputs in a structure'})")
        if len(inner.outputs) != 1:
            raise _fail(self.where, f"nested model `{_q(sub.name)}` has {len(inner.outputs)} outputs; a spec's layers "
                        "return one")
        sub_env = {id(t): env[id(a)] for t, a in zip(inner.inputs, args)}
        self.walk(inner, sub_env)
        env[id(kn.outputs[0])] = sub_env[id(inner.outputs[0])]
        # A note becomes a comment of the spec: a name holding a new line would start a section of its own.
        self.notes.append(f"nested model `{_q(sub.name)}` ({_q(type(sub).__name__)}) was flattened into its layers")

    def node(self, layer, kn, env) -> _Node:
        """The sources and call options of one layer call, from the node's arguments."""
        keras = self.keras
        cls = type(layer)
        if cls not in _names("layer")[0]:
            why = DENIED_LAYERS.get(cls.__name__)
            raise _Fail(why and f"a spec cannot use `{_q(cls.__name__)}`: {why}" or
                        f"its class `{_q(cls.__module__)}.{_q(cls.__name__)}` is not a Keras layer or one of specc's "
                        "(a custom class: its code cannot be written in a spec)")
        sig, items = _call_arguments(layer, kn)
        first = items[0][1]
        inputs = _first_inputs(keras, *items[0])
        masked = any(getattr(t, "_keras_mask", None) is not None for t in inputs)
        options: dict[str, Any] = {}
        separate = cls.__name__ in SEPARATE_INPUTS and isinstance(first, keras.KerasTensor)
        for k, v in items[1:]:
            if not [x for x in keras.tree.flatten(v) if isinstance(x, keras.KerasTensor)]:
                if _call_option(cls, sig, k, v):
                    options[k] = v
            elif separate and isinstance(v, keras.KerasTensor) and _ATTENTION_INPUTS[len(inputs):][:1] == (k,):
                inputs.append(v)  # attention's value and key, in order: `[q, v] -> multi_head_attention`
            elif not (masked and _is_mask(k)):
                # (a mask Keras passes along from `mask_zero=true` is left out: the spec makes it the same way)
                raise _Fail(f"it is called with a tensor for `{k}` (an explicit mask or extra input), which a "
                            "spec cannot pass")
        if separate and len(inputs) == 2 and inputs[0] is inputs[1]:
            inputs = inputs[:1]  # self-attention: one tensor flowing in attends to itself
        missing = [t for t in inputs if id(t) not in env]
        if missing:
            raise _Fail("one of its inputs does not come from the model's inputs")
        return _Node(layer, [env[id(t)] for t in inputs], options)

    # -- writing ---------------------------------------------------------------------------------

    def order(self) -> list[_Node]:
        """A topological order that keeps chains together: after a layer, the layer that takes its output
        next when it can; otherwise the earliest ready one in Keras's own order."""
        index = {id(n): i for i, n in enumerate(self.nodes)}
        done: set[int] = {id(i) for i in self.inputs}
        out: list[_Node] = []
        current = None
        pending = list(self.nodes)
        while pending:
            ready = [n for n in pending if all(id(s) in done for s in n.sources)]
            follow = [n for n in ready if current in n.sources]
            nxt = min(follow or ready, key=lambda n: index[id(n)])
            pending.remove(nxt)
            out.append(nxt)
            done.add(id(nxt))
            current = nxt
        return out

    def rename(self) -> dict[int, str]:
        """Layer names a spec can write, by layer id: a name holding a control or unprintable character (which
        `specc check` refuses) keeps its printable characters, made unique, else takes an automatic one."""
        taken = {i.name for i in self.inputs} | {n.layer.name for n in self.nodes}
        out: dict[int, str] = {}
        for node in self.nodes:
            old = node.layer.name
            if old and printable(old, lines=False) == old:
                out[id(node.layer)] = old
                continue
            kept = "".join(c for c in old if printable(c, lines=False) == c).strip()
            base = kept or _names("layer")[0].get(type(node.layer)) or snake_case(type(node.layer).__name__)
            new = kept if kept and kept not in taken else next(
                f"{base}_{k}" for k in range(1, len(taken) + 2) if f"{base}_{k}" not in taken)
            taken.add(new)
            out[id(node.layer)] = new
            if _automatic(new, type(node.layer), "layer", None):
                new_text = "given an automatic name"
            else:
                new_text = f"renamed `{_q(new)}`"
            self.notes.append(f"{_what(node.layer)} was {new_text}: its name held a control or unprintable character, "
                              "which a spec refuses; loading weights by layer name (`init`) from this file will not "
                              "match it")
        return out

    def lines(self) -> list[str]:
        order = self.order()
        own = self.rename()
        for node in self.nodes:
            node.name = own[id(node.layer)]
        namer = _Namer({i.name for i in self.inputs} | {n.name for n in self.nodes})
        names: dict[int, str] = {}
        lines = []
        for inp in self.inputs:
            names[id(inp)] = name = namer(inp.name)
            lines.append(f"input {name}: {render_shape(inp.shape)}" + ("" if inp.dtype == "float32" else f" {inp.dtype}"))
        single = len(self.outputs) == 1 and bool(order) and self.outputs[0] is order[-1]
        self.name_tensors(order, namer, single, names)
        for k, node in enumerate(order):
            # The first layer names its input when there are several: `user -> embedding(...)`.
            previous = order[k - 1] if k else (self.inputs[0] if len(self.inputs) == 1 else None)
            try:
                text = self.statement(node, names.get(id(node)))
            except _Fail as err:
                raise _fail(self.where, f"{_what(node.layer)} cannot be imported: {err}") from None
            if len(node.sources) > 1:
                text = f"[{', '.join(names[id(s)] for s in node.sources)}] -> {text}"
            elif node.sources[0] is not previous:
                text = f"{names[id(node.sources[0])]} -> {text}"
            lines.append(f"{names[id(node)]} = {text}" if id(node) in names else text)
        if not single:
            lines.append("output " + ", ".join(names[id(o)] for o in self.outputs))
        return lines

    def name_tensors(self, order: list[_Node], namer: _Namer, single: bool, names: dict[int, str]) -> None:
        """Name the layers' tensors that the statements refer to: one a person named, one used other than by the
        next statement, or one of several outputs."""
        for k, node in enumerate(order):
            nxt = order[k + 1] if k + 1 < len(order) else None
            chosen = not _automatic(node.name, type(node.layer), "layer", None) and namer.fits(
                node.name, node.name)  # `rating = dense(1)` rather than `dense(1, name=rating)`
            if chosen or any(c is not nxt or len(c.sources) > 1 for c in self.consumers(node)) or (
                    node in self.outputs and not single):
                names[id(node)] = namer(node.name)

    @staticmethod
    def statement(node: _Node, tensor: str | None) -> str:
        """The layer call; a name a person chose is kept (a named tensor gives its name to its layer)."""
        layer = node.layer
        text = _call(layer, "layer")
        extra = []
        if tensor != node.name and not _automatic(node.name, type(layer), "layer", None):
            extra.append(f"name={_value(node.name)}")
        extra += [f"{k}={_value(v)}" for k, v in node.options.items()]
        if extra:
            text = f"{text[:-1]}, {', '.join(extra)})" if text.endswith(")") else f"{text}({', '.join(extra)})"
        return text


def _train(model, where: str) -> list[str]:
    """The `train` section of a compiled model: loss, optimizer and metrics in spec syntax."""
    try:
        config = model.get_compile_config() if getattr(model, "compiled", False) else None
    except Exception as err:  # noqa: BLE001 - Keras cannot serialize it: a lambda or a custom function
        message = _q(_first_line(err))[:300]
        raise _fail(where, f"the training configuration cannot be imported: Keras cannot describe it ({message})") from None
    if not config or config.get("loss") is None:
        return []
    notes = []

    def one(value, kind: str) -> str:
        if isinstance(value, dict) and value.get("class_name") == "function":
            value = value.get("config")
        if isinstance(value, str):
            if kind == "metric" and value in METRIC_STRINGS or catalog(kind).knows(value):
                return value
            raise _Fail(f"the {kind} `{_q(value)}` is not in Keras's catalogue")
        if isinstance(value, dict) and "class_name" in value:
            return _value(value, kind)
        if isinstance(value, (list, tuple)):
            return f"[{', '.join(one(v, kind) for v in value)}]"
        if isinstance(value, dict):
            raise _Fail(f"a {kind} per output name cannot be written; the language takes one, or a list in output order")
        raise _Fail(f"the {kind} {_q(repr(value))[:200]} cannot be written in a spec")

    try:
        if config.get("loss_weights") is not None:
            raise _Fail("`loss_weights` cannot be written in a spec")
        metrics = config.get("metrics") or config.get("weighted_metrics")
        if config.get("weighted_metrics") and not config.get("metrics"):
            notes.append("# the model's weighted_metrics: specc weights metrics itself when the data has sample weights")
        lines = [f"loss: {one(config['loss'], 'loss')}", f"optimizer: {one(config['optimizer'], 'optimizer')}"]
        if metrics:
            items = one(list(metrics), "metric")
            lines.append(f"metrics: {items}")
    except _Fail as err:
        raise _fail(where, f"the training configuration cannot be imported: {err}") from None
    return ["train {"] + [f"  {line}" for line in notes + lines] + ["}"]


def import_model(model, name: str | None = None, where: str | None = None) -> str:
    """Spec text for a `keras.Model` in memory (Functional or Sequential; a compiled one gets a `train` section).

    Raises `NotExpressible` naming the layer, and why, when the language cannot say what the model does."""
    keras = import_keras()
    from specc.runtime import custom_objects  # noqa: F401 - specc's own layers (PositionEmbedding) in the catalogue

    if not isinstance(model, keras.Model):
        raise UsageError(Diagnostic(f"expected a keras.Model, got {type(model).__name__}", file=where or "<model>"))
    where = where or f"the Keras model `{_q(model.name)}`"
    graph = _Graph(model, where)
    body = graph.lines()
    model_name = re.sub(r"\W", "_", name or model.name, flags=re.ASCII)
    model_name = model_name if is_name(model_name) else f"m_{model_name}"
    # Comments of the spec: one line each, whatever the file's name holds (notes quote names already escaped).
    head = [f"# Imported from {_q(where)} by `specc import`."] + [f"# {_q(note)}." for note in graph.notes]
    text = head + [f"model {model_name} {{"] + [f"  {line}" for line in body] + ["}"]
    train = _train(model, where)
    from specc.lang.fmt import format_text

    return format_text("\n".join(text + ([""] + train if train else [])) + "\n")  # the canonical layout


def _refuse_code(config: Any, where: str) -> None:
    """Name a layer that wraps code (`Lambda`) before Keras's safe mode refuses the file less specifically.
    Iterative: the config's depth is bounded (`specc.runtime.model_files.MAX_CONFIG_DEPTH`), but not by recursion."""
    todo = [config]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            if item.get("class_name") in _CODE:
                inner = item.get("config")
                name = inner.get("name", "?") if isinstance(inner, dict) else "?"
                cls = item["class_name"]
                raise _fail(where, f"layer `{_q(name)}` ({cls}) cannot be imported: {DENIED_LAYERS[cls]}")
            todo += reversed(list(item.values()))
        elif isinstance(item, list):
            todo += reversed(item)


def import_file(path: str | Path) -> str:
    """Spec text for a saved `.keras` file, loaded in Keras's safe mode (never unsafe); a file saved from a
    compiled model gets a `train` section. A file that is not a sound `.keras` archive (truncated, not a zip,
    a decompression bomb, a config nested past the bound) is a `DataError` naming it (`specc.runtime.model_files`)."""
    import_keras()
    from specc.runtime.model_files import load_model, model_config

    path = Path(path)
    if not path.is_file():
        raise UsageError(Diagnostic("no such file" if not path.exists() else "this is not a file", file=str(path)))
    if path.suffix != ".keras":
        raise UsageError(Diagnostic("expected a Keras 3 `.keras` file (save one with `model.save(\"model.keras\")`)",
                                    file=str(path)))
    config = model_config(path)
    _refuse_code(config, str(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "optimizer variables not loaded": irrelevant to a spec
            model = load_model(path, compile=config.get("compile_config") is not None, checked=True)
    except Exception as err:  # noqa: BLE001 - Keras says why it cannot read the file
        message = re.sub(r"\s+", " ", str(err)).strip()[:600] or type(err).__name__
        raise DataError(Diagnostic(f"Keras cannot load it (in safe mode): {_q(message)}", file=str(path))) from None
    return import_model(model, where=str(path))
