"""The `model` section's validator: statements expanded into the plan's inputs, layers and outputs.

Blocks and `repeat` are expanded, named tensors wired, layer names looked up in `keras.layers` and their
arguments matched to the Keras constructors (through the checker's core, `specc.compile.shared.Core`). Shapes are
inferred later, by building on symbolic tensors (`specc.compile.build.infer_shapes`).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator

from specc.compile.catalog import call_options_of, catalog, signature_of
from specc.compile.shared import UNKNOWN, Abort, Core
from specc.core import nodes as n
from specc.core.errors import InternalError, did_you_mean, show_value
from specc.core.limits import (LAYER_WEIGHTS, MAX_ARGUMENT_ELEMENTS, MAX_EXAMPLE_VALUES, MAX_EXPANSION, MAX_LAYERS,
                               MAX_NESTING, MAX_REPEAT)
from specc.core.plan import InputNode, LayerNode, Obj

DTYPES = ("float32", "float16", "bfloat16", "float64", "int32", "int64", "uint8", "bool")

#: What the model's validator returns: its name, inputs, layers and the names of its outputs.
ModelParts = tuple[str, list[InputNode], list[LayerNode], list[str]]


def check_model(ck: Core, sec: n.Section | None = None) -> ModelParts:
    """The model of the spec (`model NAME { ... }`), then every `let` constant, those nothing used too."""
    try:
        return _Model(ck).check()
    finally:
        ck.check_constants()


class _Model:
    """The state of one model's expansion: its tensors by name, the layers made so far, the names taken."""

    def __init__(self, ck: Core):
        self.ck = ck
        self.inputs: list[InputNode] = []
        self.layers: list[LayerNode] = []
        self.tensors: dict[str, str] = {}  # spec name -> plan node name
        self.used_names: dict[str, int] = {}
        self.explicit_names: set[str] = set()  # layer names the spec gave with `name=`
        self.reserved: set[str] = set()  # tensor names being defined, kept from automatic layer names
        self.outputs: list[str] = []
        self.stack: list[str] = []  # block names being expanded
        self.expanded = 0  # block calls and `repeat` rounds so far (MAX_EXPANSION)
        self.depth = 0  # blocks, `repeat` and `parallel` being expanded (MAX_NESTING)
        self.argument_elements = 0  # of every layer's arguments so far (MAX_ARGUMENT_ELEMENTS)
        self.layer_units = 0  # layers so far, each counted by its LAYER_WEIGHTS (MAX_LAYERS)
        self.statements: dict[type, Callable[..., str | None]] = {n.Input: self.input, n.Output: self.output, n.Chain: self.chain_statement,
                           n.Repeat: self.repeat, n.Parallel: self.parallel}

    def check(self) -> ModelParts:
        ck = self.ck
        models = ck.spec.models
        if not models:
            raise ck.fail("no `model` section: a spec needs one", None,
                          "add `model my_net { input x: (28, 28, 1); dense(10) }`")
        for extra in models[1:]:
            ck.fail("only one `model` per file", extra.span)
        model = models[0]
        reported = ck.errors_so_far()
        current = self.body(model.body, None, {}, in_block=False)
        if ck.errors_so_far() > reported:  # the model's own errors say enough; no summary complaints
            raise Abort()
        if not self.inputs:
            raise ck.fail("the model has no `input`", model.span, "declare one first: `input x: (28, 28, 1)`")
        if not self.outputs:
            if current is None:
                raise ck.fail("the model has no layers", model.span)
            self.outputs = [current]
        return model.name or "model", self.inputs, self.layers, self.outputs

    # -- bounds on the expansion -------------------------------------------------

    def spend(self, span: n.Span | None) -> None:
        self.expanded += 1
        if self.expanded > MAX_EXPANSION:
            raise self.ck.limit(f"the model expands too far: more than {MAX_EXPANSION:,} block calls and `repeat` "
                                "rounds", span, "lower a `repeat` count, or use fewer levels of blocks calling blocks")

    @contextlib.contextmanager
    def nested(self, span: n.Span | None) -> Iterator[None]:
        if self.depth >= MAX_NESTING:
            raise self.ck.limit(f"nested too deeply: blocks, `repeat` and `parallel` inside one another more than "
                                f"{MAX_NESTING} levels deep", span)
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    # -- statements ----------------------------------------------------------------

    def body(self, stmts: list[n.Stmt], current: str | None, env: dict[str, Any], in_block: bool) -> str | None:
        for stmt in stmts:
            if in_block:
                current = self.stmt(stmt, current, env, in_block)
                continue
            try:  # in the model, go on after an error to report the independent ones too
                current = self.stmt(stmt, current, env, in_block)
            except Abort:
                if self.ck.halted:
                    raise
                current = UNKNOWN
                if isinstance(stmt, n.Chain) and stmt.target and stmt.target not in self.tensors:
                    self.tensors[stmt.target] = UNKNOWN
        return current

    def stmt(self, s: n.Stmt, current: str | None, env: dict[str, Any], in_block: bool) -> str | None:
        check = self.statements.get(type(s))
        if check is None:
            raise InternalError(f"unknown statement {s!r}")
        return check(s, current, env, in_block)

    def input(self, s: n.Input, current: str | None, env: dict[str, Any], in_block: bool) -> str:
        ck = self.ck
        if in_block:
            raise ck.fail("inputs are declared in the model, not inside a block or branch", s.span)
        self.declare(s.name, s.span)
        dim_spans: list[n.Span | None] = list(s.dim_spans) or [None] * len(s.shape)  # none in a tree built in code
        shape = [self.dimension(d, span, s.name) for d, span in zip(s.shape, dim_spans)]
        dtype = s.dtype or "float32"
        if dtype not in DTYPES:
            raise ck.fail(f"unknown dtype `{dtype}`", s.span, did_you_mean(dtype, DTYPES) or f"dtypes: {', '.join(DTYPES)}")
        size = math.prod(d for d in shape if d is not None)
        if size > MAX_EXAMPLE_VALUES:
            raise ck.fail(f"input `{s.name}` has {size:,} values per example; specc builds at most "
                          f"{MAX_EXAMPLE_VALUES:,} (2**28)", s.span)
        node = InputNode(name=s.name, shape=tuple(shape), dtype=dtype, origin=ck.origin(s.span))
        self.inputs.append(node)
        self.tensors[s.name] = s.name
        return s.name

    def output(self, s: n.Output, current: str | None, env: dict[str, Any], in_block: bool) -> str | None:
        if in_block:
            raise self.ck.fail("`output` belongs to the model, not to a block or branch", s.span)
        for name in s.names:
            if name not in self.tensors:
                raise self.ck.fail(f"unknown tensor `{name}` in `output`", s.span,
                                   did_you_mean(name, self.tensors) or "name a tensor first: `x = dense(10)`")
            self.outputs.append(self.tensors[name])
        return current

    def chain_statement(self, s: n.Chain, current: str | None, env: dict[str, Any], in_block: bool) -> str:
        if s.target:
            self.declare(s.target, s.span)
            self.reserved.add(s.target)  # so that the chain's own layers do not take the name
        count = len(self.layers)
        try:
            result = self.chain(s, current, env)
        finally:
            self.reserved.discard(s.target)
        if s.target:
            last = self.layers[-1] if len(self.layers) > count else None
            if last is not None and last.name == result and last.name not in self.explicit_names:
                # The layer that makes a named tensor takes its name (multi-output losses key on it);
                # a numbered variant if a layer has it already (a block used twice, say).
                self.used_names.pop(last.name, None)  # give back the automatic name
                name = self.fresh(s.target)
                self.layers[-1] = last.model_copy(update={"name": name})
                result = name
            self.tensors[s.target] = result
        return result

    def repeat(self, s: n.Repeat, current: str | None, env: dict[str, Any], in_block: bool) -> str | None:
        count = self.ck.value(s.count, env)
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise self.ck.fail(f"`repeat` needs a whole number of times, got {show_value(count)}", s.count.span)
        if count > MAX_REPEAT:
            raise self.ck.limit(f"`repeat` {count:,} times is more than specc expands (at most {MAX_REPEAT:,})",
                                s.count.span)
        with self.nested(s.span):
            for _ in range(count):
                self.spend(s.count.span)
                current = self.body(s.body, current, env, in_block)
        return current

    def parallel(self, s: n.Parallel, current: str | None, env: dict[str, Any], in_block: bool) -> str:
        if current is None:
            raise self.no_input(s.span)
        if len(s.branches) < 2:
            raise self.ck.fail("`parallel` needs at least two branches", s.span,
                               "an empty `branch {}` passes its input through unchanged (a residual connection)")
        with self.nested(s.span):
            outs = [self.body(b.body, current, env, in_block=True) or current for b in s.branches]
        return self.layer(s.merge, outs, env)

    def dimension(self, dim: int | str | None, span: n.Span | None, input_name: str) -> int | None:
        """One dimension of an input's shape: a number, `none`, or a constant or fact that is a whole number."""
        if not isinstance(dim, str):
            return dim
        if not self.ck.is_constant(dim) and "." not in dim:
            raise self.ck.fail(f"a shape dimension must be a whole number or `none`, not `{dim}`", span,
                               "write `none` for a dimension that varies (such as sequence length); a name must be a "
                               "`let` constant or a fact such as `data.features`")
        v = self.ck.value(n.Name(id=dim, span=span), {})
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise self.ck.fail(f"`{dim}` is {show_value(v)}, but a dimension of input `{input_name}` must be a whole "
                               "number >= 1 (or `none`)", span)
        return v

    def declare(self, name: str, span: n.Span | None) -> None:
        if name in self.tensors:
            raise self.ck.fail(f"tensor `{name}` is already defined", span, "choose another name")
        if self.ck.block(name) is not None or catalog("layer").class_name(name):
            raise self.ck.fail(f"tensor name `{name}` is also the name of a layer or block", span, "choose another name")

    def no_input(self, span: n.Span | None) -> Abort:
        return self.ck.fail("this layer has no input", span, "declare an input first: `input x: (shape)`")

    def chain(self, c: n.Chain, current: str | None, env: dict[str, Any]) -> str:
        steps = list(c.steps)
        first = steps[0]
        sources: list[str] | None = None
        if isinstance(first, n.Refs):
            sources = []
            for name in first.names:
                if name not in self.tensors:
                    raise self.ck.fail(f"unknown tensor `{name}`", first.span, did_you_mean(name, self.tensors))
                sources.append(self.tensors[name])
            steps.pop(0)
            if not steps:
                raise self.ck.fail("a list of tensors must flow into a layer: `[a, b] -> concatenate`", first.span)
        elif isinstance(first, n.Ref) and first.name in self.tensors:
            sources = [self.tensors[first.name]]
            steps.pop(0)
            if not steps:  # `y = x` just names x again
                return sources[0]
        if sources is None:
            if current is None:
                raise self.no_input(first.span)
            sources = [current]
        for step in steps:
            if isinstance(step, n.Refs):
                raise self.ck.fail("a list of tensors can only start a chain", step.span)
            call = step if isinstance(step, n.Call) else n.Call(func=step.name, span=step.span, name_span=step.span)
            if isinstance(step, n.Ref) and step.name in self.tensors:
                raise self.ck.fail(f"tensor `{step.name}` can only start a chain", step.span,
                                   f"write `{step.name} -> layer(...)`")
            current = self.layer(call, sources, env)
            sources = [current]
        return sources[0]

    # -- layers ----------------------------------------------------------------------

    def layer(self, call: n.Call, sources: list[str], env: dict[str, Any]) -> str:
        block = self.ck.block(call.func)
        if block is not None:
            return self.expand(block, call, sources, env)
        spans: dict[str, n.Span] = {}
        cls_name, kwargs, call_kwargs = self.resolve(call, env, spans)
        name = self.layer_name(call, kwargs)
        if UNKNOWN in sources:
            return UNKNOWN
        if len(sources) > 1 and not _is_merge(cls_name):
            raise self.ck.fail(f"layer `{call.func}` takes one input, but {len(sources)} tensors flow into it",
                               call.name_span, "merge them first: `[a, b] -> concatenate` (or add, multiply, average, ...)")
        self.count(call, cls_name, kwargs, call_kwargs)
        origin = self.ck.origin(call.span).model_copy(update={"args": spans})
        self.layers.append(LayerNode(name=name, cls=cls_name, kwargs=kwargs, inputs=sources, call_kwargs=call_kwargs,
                                     origin=origin))
        return name

    def resolve(self, call: n.Call, env: dict[str, Any],
                spans: dict[str, n.Span]) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """A layer's Keras class, constructor arguments and call options (`use_causal_mask`); an activation's name
        alone is an `Activation` layer."""
        cat = catalog("layer")
        cls_name = cat.class_name(call.func)
        if cls_name is None and catalog("activation").knows(call.func) and not call.args and not call.kwargs:
            return "Activation", {"activation": call.func}, {}
        if cls_name is None:
            raise self.unknown_layer(call)
        cls = cat.get_class(cls_name)
        call_kwargs: dict[str, Any] = {}
        at_call = [k for k in call.kwargs if k.name in call_options_of(cls) and k.name not in signature_of(cls).names]
        for k in at_call:
            call_kwargs[k.name] = self.ck.value(k.value, env)
            if k.span is not None:  # as `Checker.arguments` does: a tree built in code has no spans
                spans[k.name] = k.span
        own = call.model_copy(update={"kwargs": [k for k in call.kwargs if k not in at_call]})
        return cls_name, self.ck.arguments(own, cls, env, f"layer `{call.func}`", spans), call_kwargs

    def unknown_layer(self, call: n.Call) -> Abort:
        if catalog("activation").knows(call.func):
            return self.ck.fail(f"activation `{call.func}` takes no arguments when used as a layer", call.span,
                                f"write `{call.func}` alone, or pass it to a layer: `dense(64, activation={call.func})`")
        self.ck.refuse_denied(call)
        blocks = [b.name for b in self.ck.spec.blocks if self.ck.block(b.name) is b]
        names = catalog("layer").choices() + blocks + list(self.tensors)
        hint = did_you_mean(call.func, names) or "see the Keras layer list: any `keras.layers` class by its snake_case name"
        return self.ck.fail(f"unknown layer `{call.func}`", call.name_span, hint)

    def layer_name(self, call: n.Call, kwargs: dict[str, Any]) -> str:
        """The name the spec gives the layer (`name=...`, taken out of its arguments), else a fresh automatic one."""
        name = kwargs.pop("name", None)
        if name is None:
            return self.fresh(call.func if catalog("layer").class_name(call.func) else "activation")
        if not isinstance(name, str) or name in self.used_names or name in self.tensors:
            raise self.ck.fail(f"layer name {show_value(name)} is not a new name", call.span)
        self.used_names[name] = 1
        self.explicit_names.add(name)
        return name

    def count(self, call: n.Call, cls_name: str, kwargs: dict[str, Any], call_kwargs: dict[str, Any]) -> None:
        """A layer counted towards the bounds on layers and on the values of their arguments."""
        self.layer_units += _weight(cls_name, kwargs)
        if self.layer_units > MAX_LAYERS:
            used = {c for node in self.layers for c in _classes(node.cls, node.kwargs)} | set(_classes(cls_name, kwargs))
            heavy = {c: w for c, w in LAYER_WEIGHTS.items() if c in used}
            counted = "; ".join(f"`{c}` counts as {w}" for c, w in heavy.items())
            raise self.ck.limit(f"the model has more than {MAX_LAYERS:,} layers once blocks and `repeat` are expanded"
                                + (f" ({counted}: it builds several Keras layers)" if heavy else ""),
                                call.span, "specc builds models of at most this many layers, so that checking one "
                                "takes seconds")
        self.argument_elements += sum(self.ck.measure(v)[0] for v in (*kwargs.values(), *call_kwargs.values()))
        if self.argument_elements > MAX_ARGUMENT_ELEMENTS:
            raise self.ck.limit(f"the model's layer arguments hold more than {MAX_ARGUMENT_ELEMENTS:,} values in all "
                                "once blocks and `repeat` are expanded", call.span,
                                "a large list given to many layers is copied into each; give it to fewer layers")

    def fresh(self, base: str) -> str:
        k = self.used_names.get(base, 0)
        while True:
            name = base if k == 0 else f"{base}_{k}"
            k += 1
            if name not in self.used_names and name not in self.tensors and name not in self.reserved:
                self.used_names[base] = k
                self.used_names[name] = max(self.used_names.get(name, 0), 1)
                return name

    # -- blocks ------------------------------------------------------------------------

    def expand(self, block: n.Block, call: n.Call, sources: list[str], env: dict[str, Any]) -> str:
        if block.name in self.stack:
            raise self.ck.fail(f"block `{block.name}` uses itself", call.name_span,
                               "blocks cannot be recursive; use `repeat`")
        if len(sources) != 1:
            raise self.ck.fail(f"block `{block.name}` takes one input, but {len(sources)} tensors flow into it",
                               call.name_span)
        local = self.block_arguments(block, call, env)
        self.spend(call.name_span)
        self.stack.append(block.name)
        known = len(self.tensors)
        try:
            with self.ck.noting(f"in block `{block.name}`, used at line {call.span.line if call.span else '?'}"), \
                    self.nested(call.name_span):
                out = self.body(block.body, sources[0], local, in_block=True)
        finally:
            self.stack.pop()
            # Names given inside a block stay inside it. A block only adds names (`declare` refuses a known one), so
            # they are the last ones in the dict: dropped one by one, not by copying every name at each block call.
            for _ in range(len(self.tensors) - known):
                self.tensors.popitem()
        return out or sources[0]

    def block_arguments(self, block: n.Block, call: n.Call, env: dict[str, Any]) -> dict[str, Any]:
        """A block call's arguments by parameter, defaults filled in; calls stay unresolved (`CallArg`)."""
        params = [p.name for p in block.params]
        if len(call.args) > len(params):
            raise self.ck.fail(f"too many arguments for block `{block.name}`: it takes {len(params)} "
                               f"({', '.join(params) or 'none'})", call.args[len(params)].span)
        local: dict[str, Any] = {}
        for p, arg in zip(block.params, call.args):
            local[p.name] = self.ck.bind(arg, env)
        for kw in call.kwargs:
            if kw.name not in params:
                raise self.ck.fail(f"unknown argument `{kw.name}` for block `{block.name}`", kw.name_span,
                                   did_you_mean(kw.name, params) or f"it takes: {', '.join(params) or 'no arguments'}")
            if kw.name in local:
                raise self.ck.fail(f"argument `{kw.name}` given twice to block `{block.name}`", kw.name_span)
            local[kw.name] = self.ck.bind(kw.value, env)
        for p in block.params:
            if p.name not in local:
                if p.default is None:
                    raise self.ck.fail(f"block `{block.name}` needs argument `{p.name}`", call.span,
                                       f"write `{block.name}({', '.join(params)})`")
                local[p.name] = self.ck.bind(p.default, dict(local))
        return local


def _weight(cls_name: str, kwargs: dict[str, Any]) -> int:
    """What a layer counts towards MAX_LAYERS: its LAYER_WEIGHTS, with the layers it wraps."""
    return sum(LAYER_WEIGHTS.get(c, 1) for c in _classes(cls_name, kwargs))


def _classes(cls_name: str, kwargs: dict[str, Any]):
    """A layer's class and those of the layers it wraps."""
    yield cls_name
    for v in kwargs.values():
        if isinstance(v, Obj) and v.kind == "layer":
            yield from _classes(v.cls, v.kwargs)


def _is_merge(cls_name: str) -> bool:
    """Layers that take a list of tensors: Keras's merge layers, and attention (query, value[, key])."""
    from keras.src.layers.merging.base_merge import Merge

    return issubclass(catalog("layer").get_class(cls_name), Merge) or cls_name in (
        "MultiHeadAttention", "GroupQueryAttention", "Attention", "AdditiveAttention")
