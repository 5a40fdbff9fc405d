"""Stage 2: check a parsed spec and resolve it against Keras's catalogues into a `Plan`.

Blocks and `repeat` are expanded, named tensors wired, layer names looked up in
`keras.layers`, arguments matched to the Keras constructor signatures, and the
`train`, `data` and `device` settings validated. Shapes are inferred later, by
building on symbolic tensors (`specc.compile.build.infer_shapes`).
"""

from __future__ import annotations

import contextlib
import math
import operator
from typing import Any

from specc.lang import fmt
from specc.core import nodes as n
from specc.compile.catalog import DENIED_LAYERS, METRIC_STRINGS, call_options_of, catalog, kind_of_argument, signature_of
from specc.core.errors import (Diagnostic, InternalError, Source, SpecError, brief, did_you_mean, printable,  # noqa: F401
                     show_value)  # (brief re-exported)
from specc.runtime.keras_env import import_keras, prepare_environment
from specc.core.limits import (LAYER_WEIGHTS, MAX_ARGUMENT_ELEMENTS, MAX_ERRORS, MAX_EXAMPLE_VALUES, MAX_EXPANSION, MAX_LAYERS,  # noqa: F401
                     MAX_NESTING, MAX_NUMBER, MAX_REPEAT, MAX_VALUE_DEPTH, MAX_VALUE_ELEMENTS, MAX_VOCABULARY)  # (re-exported)
from specc.data.tokenizers import SPECIALS
from specc.core.plan import (PARALLEL, TEXT_DATASETS, DataPlan, DistributionPlan, InitPlan, InputNode, LayerNode, Obj, Origin, Plan,
                   TrainPlan)

SECTIONS = ("data", "train", "init", "device", "expect")
TOP_SETTINGS = ("device", "language")
# Facts of the training a spec can name (`decay_steps=train.steps`), beside those of its data (`specc.data.facts`).
TRAIN_FACTS = ("epochs", "batch_size", "steps_per_epoch", "steps")
# Names a `let` cannot take: they already mean something in every expression.
RESERVED_NAMES = ("data", "train", "let")
# Nor words that name Keras objects or settings' values, which a constant of that name would silently replace.
_SHADOWED_KINDS = ("activation", "loss", "optimizer", "metric", "initializer", "regularizer", "constraint")
_SHADOWED_WORDS = ("auto", "cpu", "gpu", "tpu", "same", "valid", "causal", "chance", "healthy", "horizontal",
                   "vertical", "horizontal_and_vertical", "constant", "nearest", "reflect", "wrap", "bilinear")
DEVICES = ("auto", "cpu", "gpu", "tpu")
DEVICE_SETTINGS = ("kind", "parallel", "mesh", "axes", "layout")  # the `device { ... }` section
DATASETS = ("mnist", "fashion_mnist", "cifar10") + TEXT_DATASETS
TOKENIZERS = ("chars", "words", "wordpiece")
TASKS = ("classify", "next_token", "masked_tokens")
DATA_FILES = (".npz", ".csv", ".tsv", ".data", ".txt")
DTYPES = ("float32", "float16", "bfloat16", "float64", "int32", "int64", "uint8", "bool")
_CONSTANTS = {"true": True, "false": False, "none": None, "True": True, "False": False, "None": None}
# Keras objects of the training settings, made at check time so that what their constructors refuse is a located
# error before `specc run` creates anything (layers and their arguments are made when the model is built).
TRAINING_KINDS = ("optimizer", "loss", "metric", "schedule")
# Arguments of metrics that size their state, bounded before the metric is made: `AUC` builds a Python list of
# `num_thresholds` floats in its constructor; `MeanIoU` keeps a `num_classes` x `num_classes` confusion matrix.
STATE_ARGUMENTS = {"num_thresholds": 2**20, "num_classes": 2**14, "num_labels": 2**14}
# Layer arguments that Keras reads as a file's path when given a string (`string_lookup`, `integer_lookup`,
# `text_vectorization`: "an array ... or a string path to a text file"); no other `keras.layers` argument opens a file.
FILE_ARGUMENTS = ("vocabulary",)
_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
        "//": operator.floordiv, "%": operator.mod}


class _Abort(Exception):
    """Stops checking the current unit after its error was recorded."""


class _Call:
    """A call passed as a block argument (`stage(l2(1e-4))`): resolved where the parameter is used,
    against the catalogue of the argument it lands in."""

    def __init__(self, expr: n.Call, env: dict[str, Any]):
        self.expr, self.env = expr, env


# Stands for the output of a statement that failed: later statements are still checked for
# their own mistakes (names, arguments), but nothing that depends on that output is reported.
_UNKNOWN = "\0unknown"


class Checker:
    def __init__(self, spec: n.Spec, src: Source):
        self.spec = spec
        self.src = src
        self.errors: list[Diagnostic] = []
        self.blocks: dict[str, n.Block] = {}
        self.notes: list[str] = []  # "in block `x` used at line N", innermost last
        self.stack: list[str] = []  # block names being expanded
        self.expanded = 0  # block calls and `repeat` rounds so far (MAX_EXPANSION)
        self.depth = 0  # blocks, `repeat` and `parallel` being expanded (MAX_NESTING)
        self.halted = False  # a bound was crossed: stop checking the model
        self.language = 1  # the version the file is written in (`language: N`)
        # `let` constants, evaluated when first used (in any order; a cycle is an error), and the facts
        # (`data.classes`, `train.steps`) that the spec names, resolved: both go into `Plan.constants`.
        self.lets: dict[str, n.Let] = {}
        self.consts: dict[str, Any] = {}
        self.evaluating: list[str] = []
        self.failed_lets: set[str] = set()
        self.used_facts: dict[str, Any] = {}
        self.facts: Any = None  # `specc.data.facts.Facts` of the data, once a fact of it is named
        self.data_plan: DataPlan | None = None  # the checked `data` and `init` sections, for the data's facts
        self.init_plan: InitPlan | None = None
        self.data_failed = False  # the `data` section has errors
        self.train_given: dict[str, Any] = {}  # `train`'s epochs and batch size, for its facts
        self.in_section: str | None = None  # the section being checked, whose own facts cannot be named there
        self.ready: set[str] = set()  # `data`, `train`: checked, so that their facts can be named
        self.facts_error: bool = False  # reading the data for its facts failed (reported once)
        self.sizes: dict[int, tuple[Any, int, int]] = {}  # id -> (list or tuple, elements, depth): `sized`
        self.argument_elements = 0  # of every layer's arguments so far (MAX_ARGUMENT_ELEMENTS)
        self.layer_units = 0  # layers so far, each counted by its LAYER_WEIGHTS (MAX_LAYERS)

    # -- reporting ---------------------------------------------------------

    def fail(self, message: str, span: n.Span | None, hint: str | None = None) -> _Abort:
        if len(self.errors) >= MAX_ERRORS:  # a file of garbage: say so once, and stop checking the model
            if not self.halted:
                self.errors.append(self.src.diag(f"too many errors: specc stops checking after {MAX_ERRORS}", span))
            self.halted = True
            return _Abort()
        self.errors.append(self.src.diag(message, span, hint, list(reversed(self.notes))))
        return _Abort()

    def origin(self, span: n.Span | None) -> Origin:
        return Origin(span=span, notes=list(reversed(self.notes)))

    def limit(self, message: str, span: n.Span | None, hint: str | None = None) -> _Abort:
        """A bound crossed: reported once, and nothing more of the model is checked."""
        self.halted = True
        return self.fail(message, span, hint)

    def spend(self, span: n.Span | None) -> None:
        self.expanded += 1
        if self.expanded > MAX_EXPANSION:
            raise self.limit(f"the model expands too far: more than {MAX_EXPANSION:,} block calls and `repeat` rounds",
                             span, "lower a `repeat` count, or use fewer levels of blocks calling blocks")

    @contextlib.contextmanager
    def nested(self, span: n.Span | None):
        if self.depth >= MAX_NESTING:
            raise self.limit(f"nested too deeply: blocks, `repeat` and `parallel` inside one another more than "
                             f"{MAX_NESTING} levels deep", span)
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1

    # -- expressions -------------------------------------------------------

    def value(self, e: n.Expr, env: dict[str, Any], kind: str | None = None, what: str = "value") -> Any:
        """Evaluate an expression; names and calls are resolved in the catalogue `kind` if given."""
        if isinstance(e, n.Number):
            return e.value
        if isinstance(e, n.Str):
            return self.named(e.value, e.span, kind, what) if kind else e.value
        if isinstance(e, n.Name):
            if e.id in env or e.id in self.lets:
                bound = env[e.id] if e.id in env else self.constant(e.id)
                if isinstance(bound, _Call):  # a call passed to a block: resolved where it is used
                    return self.value(bound.expr, bound.env, kind, what)
                if kind and isinstance(bound, str) and bound not in _CONSTANTS:  # a name: from the catalogue here
                    return self.named(bound, e.span, kind, what)
                return bound
            if "." in e.id:
                return self.fact(e.id, e.span)
            if e.id in _CONSTANTS:
                return _CONSTANTS[e.id]
            return self.named(e.id, e.span, kind, what) if kind else e.id
        if isinstance(e, n.Tuple):
            return self.sized(tuple(self.value(i, env) for i in e.items), e)
        if isinstance(e, n.List):
            return self.sized([self.value(i, env, kind, what) for i in e.items], e)
        if isinstance(e, n.Neg):
            v = self.value(e.operand, env)
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise self.fail(f"cannot negate {show_value(v)}", e.span)
            return -v
        if isinstance(e, n.BinOp):
            a, b = self.value(e.left, env), self.value(e.right, env)
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
                raise self.fail(f"`{e.op}` needs two numbers, got {show_value(a)} and {show_value(b)}", e.span)
            if e.op in ("/", "//", "%") and b == 0:
                raise self.fail("division by zero", e.right.span)
            try:
                result = _OPS[e.op](a, b)
            except ArithmeticError as err:  # OverflowError: a number too large for a float
                raise self.fail(f"cannot compute `{e.op}`: {err}", e.span) from None
            if (isinstance(result, int) and abs(result) > MAX_NUMBER) or (isinstance(result, float) and not math.isfinite(result)):
                kind = "a 64-bit whole number" if isinstance(result, int) else "a 64-bit float"
                raise self.fail(f"`{e.op}` makes a number too large for {kind}", e.span)
            return result
        if isinstance(e, n.Call):
            if kind is None:
                raise self.fail(
                    f"`{e.func}(...)` cannot be used as {what}",
                    e.name_span,
                    "calls configure Keras objects where an argument takes one: `activation`, "
                    "`*_initializer`, `*_regularizer`, `*_constraint`, `learning_rate`, `layer`",
                )
            return self.obj(e, env, kind)
        raise InternalError(f"unknown expression {e!r}")

    def sized(self, v: list | tuple, e: n.Expr) -> list | tuple:
        """A list or tuple just built, once its size is known to be within bounds. Its items are values built
        before (each measured then), so the count is a sum however often a constant is named: nothing is walked."""
        elements, depth = 0, 0
        for item in v:
            k, d = self.measure(item)
            elements += k
            depth = max(depth, d)
        depth += 1
        if elements > MAX_VALUE_ELEMENTS:
            raise self.fail(f"this value is too large: {elements:,} elements once the constants it names are put in; "
                            f"specc takes at most {MAX_VALUE_ELEMENTS:,} in one value", e.span,
                            "a spec describes a network; put data in a file named in `data` (`file: \"data.npz\"`)")
        if depth > MAX_VALUE_DEPTH:
            raise self.fail(f"this value is nested too deeply: {depth} levels of lists and tuples once the constants it "
                            f"names are put in; specc takes at most {MAX_VALUE_DEPTH}", e.span)
        self.sizes[id(v)] = (v, elements, depth)
        return v

    def measure(self, v: Any) -> tuple[int, int]:
        """(elements, levels of nesting) of a value; lists and tuples built by `value` were measured then."""
        if isinstance(v, (list, tuple)):
            known = self.sizes.get(id(v))
            if known is not None and known[0] is v:
                return known[1], known[2]
            found = [self.measure(i) for i in v]  # a value from elsewhere (a fact): small, and measured once
            size = (sum(k for k, _ in found), 1 + max((d for _, d in found), default=0))
            self.sizes[id(v)] = (v, *size)
            return size
        if isinstance(v, Obj):
            found = [self.measure(i) for i in v.kwargs.values()]
            return 1 + sum(k for k, _ in found), max((d for _, d in found), default=0)
        return 1, 0

    # -- constants and facts -------------------------------------------------

    def check_lets(self) -> None:
        for let in self.spec.lets:
            if let.name in self.lets:
                self.fail(f"constant `{let.name}` is defined twice", let.name_span, "give each constant its own name")
            elif let.name in RESERVED_NAMES or let.name in _CONSTANTS:
                self.fail(f"`{let.name}` cannot be the name of a constant: it already means something in every "
                          "expression", let.name_span, "choose another name")
            elif let.name in self.blocks or catalog("layer").class_name(let.name) or any(
                    catalog(kind).knows(let.name) for kind in _SHADOWED_KINDS) or let.name in _SHADOWED_WORDS:
                what = "block" if let.name in self.blocks else "Keras layer, object or setting value"
                self.fail(f"constant `{let.name}` has the name of a {what}", let.name_span,
                          "choose another name, so that the two never mean each other")
            else:
                self.lets[let.name] = let

    def constant(self, name: str) -> Any:
        """The value of `let NAME = ...`, evaluated once. A call (`let reg = l2(1e-4)`) stays unresolved until it is
        used, like a call passed to a block: where it lands decides which catalogue it comes from."""
        if name in self.consts:
            return self.consts[name]
        if name in self.failed_lets:  # its error is reported once, where it is defined
            raise _Abort()
        let = self.lets[name]
        if name in self.evaluating:
            cycle = " -> ".join([*self.evaluating[self.evaluating.index(name):], name])
            raise self.fail(f"constant `{name}` is defined in terms of itself: {cycle}", let.name_span)
        self.evaluating.append(name)
        notes, self.notes = self.notes, []  # errors in the constant's own expression are located there
        try:
            value = _Call(let.value, {}) if isinstance(let.value, n.Call) else self.value(let.value, {})
        except _Abort:
            self.failed_lets.add(name)
            raise
        finally:
            self.notes = notes
            self.evaluating.pop()
        self.consts[name] = value
        return value

    def fact(self, name: str, span: n.Span | None) -> Any:
        """`data.classes`, `train.steps`, ...: a fact of the spec's data or training, computed from them."""
        from specc.data.facts import FACT_NAMES

        owner, _, key = name.partition(".")
        known = {"data": FACT_NAMES, "train": TRAIN_FACTS}
        if owner not in known or key not in known[owner]:
            choices = [f"{o}.{k}" for o, keys in known.items() for k in keys]
            raise self.fail(f"unknown name `{name}`", span, did_you_mean(name, choices)
                            or f"names with a dot are facts of the data or training: {', '.join(choices)}")
        if owner == self.in_section:
            raise self.fail(f"`{name}` cannot be used inside the `{owner}` section: it is computed from that section",
                            span, "write the value itself here")
        if owner not in self.ready:
            raise self.fail(f"`{name}` cannot be used here: the `{owner}` section is checked after this one",
                            span, f"facts of `{owner}` can be used in {'the model, `train` and `expect`' if owner == 'data' else 'the model and `expect`'}")
        if name not in self.used_facts:
            self.used_facts[name] = self.data_fact(key, span) if owner == "data" else self.train_fact(key, span)
        return self.used_facts[name]

    def data_facts(self, name: str, span: n.Span | None) -> Any:
        if self.facts is None:
            from specc.core.errors import UserError
            from specc.data.facts import infer_facts

            if self.data_failed or self.facts_error:  # reported once, where the data or the first fact is
                raise _Abort()
            if self.data_plan is None:
                raise self.fail(f"`{name}` is a fact of the data, but the spec has no valid `data` section", span,
                                "add one: `data { dataset: mnist }`")
            try:
                self.facts = infer_facts(self.data_plan, self.src.file, self.init_plan)
            except UserError as err:
                self.facts_error = True
                raise self.fail(f"`{name}` needs the data, which cannot be read: {err.first.message}", span,
                                err.first.hint) from None
        return self.facts

    def data_fact(self, key: str, span: n.Span | None) -> Any:
        facts = self.data_facts(f"data.{key}", span)
        try:
            return facts.value(key)
        except (KeyError, ValueError) as err:
            raise self.fail(str(err.args[0] if err.args else err), span) from None

    def train_fact(self, key: str, span: n.Span | None) -> Any:
        if not any(sec.name == "train" for sec in self.spec.sections):
            raise self.fail(f"`train.{key}` is a fact of the training, but the spec has no `train` section", span,
                            "add one: `train { loss: sparse_categorical_crossentropy; epochs: 5 }`")
        given = self.train_given
        if key in ("epochs", "batch_size"):
            return given.get(key, _fields_default(TrainPlan, key))
        from specc.data.facts import steps_per_epoch

        batch = given.get("batch_size", _fields_default(TrainPlan, "batch_size"))
        examples = self.data_facts(f"train.{key}", span).examples
        per_epoch = steps_per_epoch(examples, batch, given.get("validation_split", 0.0))
        return per_epoch if key == "steps_per_epoch" else per_epoch * given.get("epochs", _fields_default(TrainPlan, "epochs"))

    def named(self, name: str, span: n.Span | None, kind: str, what: str) -> Any:
        """A bare name or string used where a catalogue object goes: check Keras knows it."""
        if kind == "schedule":  # learning_rate=cosine_decay without arguments makes no schedule
            raise self.fail(f"{what} must be a number or a schedule call such as `cosine_decay(0.1, decay_steps=1000)`", span)
        if kind == "metric" and name in METRIC_STRINGS:
            return name
        cat = catalog(kind)
        if kind == "layer":
            return self.obj(n.Call(func=name, span=span, name_span=span), {}, kind)
        if not cat.knows(name):
            raise self.fail(f"unknown {kind} `{name}`", span, did_you_mean(name, cat.choices()) or _listing(kind, cat.choices()))
        if cat.class_name(name) and not cat.keras_accepts(name):
            # A spelling Keras's own `get()` does not take (`adam_w`, `rmse`): name the class instead.
            return self.obj(n.Call(func=name, span=span, name_span=span), {}, kind)
        return name

    def obj(self, call: n.Call, env: dict[str, Any], kind: str) -> Obj:
        cat = catalog(kind)
        if kind == "layer" and call.func in self.blocks:
            raise self.fail(f"block `{call.func}` cannot be used as a layer argument", call.name_span,
                            "wrappers such as `bidirectional(...)` take a single Keras layer")
        cls_name = cat.class_name(call.func)
        if cls_name is None:
            if kind == "layer":
                self.refuse_denied(call)
            if cat.knows(call.func):
                raise self.fail(f"{kind} `{call.func}` takes no arguments", call.span)
            raise self.fail(f"unknown {kind} `{call.func}`", call.name_span,
                            did_you_mean(call.func, cat.choices()) or _listing(kind, cat.choices()))
        cls = cat.get_class(cls_name)
        spans: dict[str, n.Span] = {}
        kwargs = self.arguments(call, cls, env, f"{kind} `{call.func}`", spans)
        made = Obj(kind=kind, module=cat.module_of(cls_name), cls=cls_name, kwargs=kwargs)
        if kind in TRAINING_KINDS:
            self.construct(made, call, spans, f"{kind} `{call.func}`")
        return made

    def construct(self, obj: Obj, call: n.Call, spans: dict[str, n.Span], what: str) -> Any:
        """Make the Keras object of a training setting as `specc run` will, so that what Keras refuses (an integer
        learning rate, a momentum above 1, two kinds of clipping) is an error of `check`, located on the argument it
        is about. State that grows with an argument (a metric's confusion matrix or thresholds) is bounded first, and
        a metric is made without allocating its variables."""
        from specc.compile.build import argument_named, keras_message, make_object, shapes_only

        for key, bound in STATE_ARGUMENTS.items():
            v = obj.kwargs.get(key)
            if isinstance(v, int) and not isinstance(v, bool) and v > bound:
                raise self.fail(f"`{key}` of {what} is {v:,}; specc takes at most {bound:,} (the metric keeps state "
                                f"that grows with it)", spans.get(key, call.span))
        try:
            if obj.kind == "metric":
                with shapes_only():
                    made = make_object(obj)
                    size = sum(math.prod(v.shape) for v in getattr(made, "variables", []))
            else:  # an optimizer makes its step counter: real variables, even where `diff` or `graph` build shapes only
                with _stateful():
                    made, size = make_object(obj), 0
        except Exception as err:  # noqa: BLE001 - the constructor's own validation, as `specc run` would meet it
            message = keras_message(err)
            key = argument_named(message, spans)
            value = obj.kwargs.get(key) if key else None
            hint = (f"write it as a float: `{value}.0`" if isinstance(value, int) and not isinstance(value, bool)
                    and "float" in message else None)
            raise self.fail(f"invalid arguments for {what}: {message}", spans[key] if key else call.span, hint) from None
        if size > MAX_EXAMPLE_VALUES:
            raise self.fail(f"{what} would keep {size:,} values of state; specc takes at most {MAX_EXAMPLE_VALUES:,}",
                            call.span)
        return made

    def refuse_denied(self, call: n.Call) -> None:
        """Layers that run code or load files are not for specs: say so instead of "unknown layer"."""
        for cls, why in DENIED_LAYERS.items():
            if call.func.lower().replace("_", "") == cls.lower():
                raise self.fail(f"layer `{call.func}` cannot be used in a spec: {why}", call.name_span,
                                "use the `keras.layers` classes that build a network")

    def arguments(self, call: n.Call, cls, env: dict[str, Any], what: str,
                  spans: dict[str, n.Span] | None = None) -> dict[str, Any]:
        """Match a call's arguments to the Keras constructor signature; all become keywords.

        `spans`, if given, receives each argument's source span by Keras parameter name."""
        sig = signature_of(cls)
        if len(call.args) > len(sig.positional):
            extra = call.args[len(sig.positional)]
            takes = ", ".join(f"`{p}`" for p in sig.positional) or "none"
            raise self.fail(f"too many positional arguments for {what}: it takes {len(sig.positional)} ({takes})",
                            extra.span, "pass the rest by name, e.g. `name=value`")
        given: dict[str, tuple[n.Expr, n.Span | None]] = {}
        for pname, arg in zip(sig.positional, call.args):
            given[pname] = (arg, arg.span)
        for kw in call.kwargs:
            if kw.name in given:
                raise self.fail(f"argument `{kw.name}` given twice to {what}", kw.name_span)
            if kw.name not in sig.names:
                hint = did_you_mean(kw.name, sig.names) or f"{what} takes: {', '.join(sig.names)}"
                raise self.fail(f"unknown argument `{kw.name}` for {what}", kw.name_span, hint)
            given[kw.name] = (kw.value, kw.span)
        missing = [p for p in sig.required if p not in given]
        if missing:
            raise self.fail(f"{what} needs argument `{missing[0]}`", call.span,
                            f"its required arguments are: write `{call.func}({', '.join(sig.required)})`")
        out: dict[str, Any] = {}
        for pname, (expr, span) in given.items():
            out[pname] = self.value(expr, env, kind_of_argument(pname), f"`{pname}`")
            if pname == "name" and isinstance(out[pname], str):
                self.check_name(out[pname], expr.span)
            if pname in FILE_ARGUMENTS and isinstance(out[pname], str) and _is_layer_class(cls):
                raise self.fail(f"`{pname}` of {what} is given a string, which Keras reads as the path of a file; a "
                                "spec reads only the files its `data` section names", expr.span,
                                f"give the {pname} inline as a list (`{pname}=[\"a\", \"b\"]`); to turn text into "
                                "token ids learned from the data, use the `data` section's `tokenizer`")
            if spans is not None and span is not None:
                spans[pname] = span
        return out

    def check_name(self, name: str, span: n.Span | None) -> None:
        """A name the spec gives a layer or Keras object (`name="..."`): Keras takes any string, but the name is
        printed (summaries, logs, history columns) and written into files, so it holds no control characters."""
        if not name:
            raise self.fail("a name cannot be empty", span, "leave `name` out for an automatic one")
        if printable(name, lines=False) != name:
            shown = printable(name[:80], lines=False)
            raise self.fail(f"the name `{shown}` holds a control or unprintable character", span,
                            "names are printed and written into files: use letters, digits, `_` and `-`")

    # -- the model ---------------------------------------------------------

    def check_model(self) -> tuple[str, list[InputNode], list[LayerNode], list[str]]:
        models = self.spec.models
        if not models:
            raise self.fail("no `model` section: a spec needs one", None,
                            "add `model my_net { input x: (28, 28, 1); dense(10) }`")
        for extra in models[1:]:
            self.fail("only one `model` per file", extra.span)
        model = models[0]
        self.inputs: list[InputNode] = []
        self.layers: list[LayerNode] = []
        self.tensors: dict[str, str] = {}  # spec name -> plan node name
        self.used_names: dict[str, int] = {}
        self.explicit_names: set[str] = set()  # layer names the spec gave with `name=`
        self.reserved: set[str] = set()  # tensor names being defined, kept from automatic layer names
        self.outputs: list[str] = []
        reported = len(self.errors)
        current = self.body(model.body, None, {}, in_block=False)
        if len(self.errors) > reported:  # the model's own errors say enough; no summary complaints
            raise _Abort()
        if not self.inputs:
            raise self.fail("the model has no `input`", model.span, "declare one first: `input x: (28, 28, 1)`")
        if not self.outputs:
            if current is None:
                raise self.fail("the model has no layers", model.span)
            self.outputs = [current]
        return model.name or "model", self.inputs, self.layers, self.outputs

    def body(self, stmts: list[n.Stmt], current: str | None, env: dict[str, Any], in_block: bool) -> str | None:
        for stmt in stmts:
            if in_block:
                current = self.stmt(stmt, current, env, in_block)
                continue
            try:  # in the model, go on after an error to report the independent ones too
                current = self.stmt(stmt, current, env, in_block)
            except _Abort:
                if self.halted:
                    raise
                current = _UNKNOWN
                if isinstance(stmt, n.Chain) and stmt.target and stmt.target not in self.tensors:
                    self.tensors[stmt.target] = _UNKNOWN
        return current

    def stmt(self, s: n.Stmt, current: str | None, env: dict[str, Any], in_block: bool) -> str | None:
        if isinstance(s, n.Input):
            if in_block:
                raise self.fail("inputs are declared in the model, not inside a block or branch", s.span)
            self.declare(s.name, s.span)
            shape = [self.dimension(d, span, s.name) for d, span in zip(s.shape, s.dim_spans or [None] * len(s.shape))]
            dtype = s.dtype or "float32"
            if dtype not in DTYPES:
                raise self.fail(f"unknown dtype `{dtype}`", s.span, did_you_mean(dtype, DTYPES) or f"dtypes: {', '.join(DTYPES)}")
            size = math.prod(d for d in shape if d is not None)
            if size > MAX_EXAMPLE_VALUES:
                raise self.fail(f"input `{s.name}` has {size:,} values per example; specc builds at most "
                                f"{MAX_EXAMPLE_VALUES:,} (2**28)", s.span)
            node = InputNode(name=s.name, shape=tuple(shape), dtype=dtype, origin=self.origin(s.span))
            self.inputs.append(node)
            self.tensors[s.name] = s.name
            return s.name
        if isinstance(s, n.Output):
            if in_block:
                raise self.fail("`output` belongs to the model, not to a block or branch", s.span)
            for name in s.names:
                if name not in self.tensors:
                    raise self.fail(f"unknown tensor `{name}` in `output`", s.span,
                                    did_you_mean(name, self.tensors) or "name a tensor first: `x = dense(10)`")
                self.outputs.append(self.tensors[name])
            return current
        if isinstance(s, n.Chain):
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
        if isinstance(s, n.Repeat):
            count = self.value(s.count, env)
            if not isinstance(count, int) or isinstance(count, bool) or count < 0:
                raise self.fail(f"`repeat` needs a whole number of times, got {show_value(count)}", s.count.span)
            if count > MAX_REPEAT:
                raise self.limit(f"`repeat` {count:,} times is more than specc expands (at most {MAX_REPEAT:,})",
                                 s.count.span)
            with self.nested(s.span):
                for _ in range(count):
                    self.spend(s.count.span)
                    current = self.body(s.body, current, env, in_block)
            return current
        if isinstance(s, n.Parallel):
            if current is None:
                raise self.no_input(s.span)
            if len(s.branches) < 2:
                raise self.fail("`parallel` needs at least two branches", s.span,
                                "an empty `branch {}` passes its input through unchanged (a residual connection)")
            with self.nested(s.span):
                outs = [self.body(b.body, current, env, in_block=True) or current for b in s.branches]
            return self.layer(s.merge, outs, env)
        raise InternalError(f"unknown statement {s!r}")

    def dimension(self, dim: int | str | None, span: n.Span | None, input_name: str) -> int | None:
        """One dimension of an input's shape: a number, `none`, or a constant or fact that is a whole number."""
        if not isinstance(dim, str):
            return dim
        if dim not in self.lets and "." not in dim:
            raise self.fail(f"a shape dimension must be a whole number or `none`, not `{dim}`", span,
                            "write `none` for a dimension that varies (such as sequence length); a name must be a "
                            "`let` constant or a fact such as `data.features`")
        v = self.value(n.Name(id=dim, span=span), {})
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise self.fail(f"`{dim}` is {show_value(v)}, but a dimension of input `{input_name}` must be a whole number "
                            ">= 1 (or `none`)", span)
        return v

    def declare(self, name: str, span: n.Span | None) -> None:
        if name in self.tensors:
            raise self.fail(f"tensor `{name}` is already defined", span, "choose another name")
        if name in self.blocks or catalog("layer").class_name(name):
            raise self.fail(f"tensor name `{name}` is also the name of a layer or block", span, "choose another name")

    def no_input(self, span):
        return self.fail("this layer has no input", span, "declare an input first: `input x: (shape)`")

    def chain(self, c: n.Chain, current: str | None, env: dict[str, Any]) -> str:
        steps = list(c.steps)
        first = steps[0]
        sources: list[str] | None = None
        if isinstance(first, n.Refs):
            sources = []
            for name in first.names:
                if name not in self.tensors:
                    raise self.fail(f"unknown tensor `{name}`", first.span, did_you_mean(name, self.tensors))
                sources.append(self.tensors[name])
            steps.pop(0)
            if not steps:
                raise self.fail("a list of tensors must flow into a layer: `[a, b] -> concatenate`", first.span)
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
                raise self.fail("a list of tensors can only start a chain", step.span)
            call = step if isinstance(step, n.Call) else n.Call(func=step.name, span=step.span, name_span=step.span)
            if isinstance(step, n.Ref) and step.name in self.tensors:
                raise self.fail(f"tensor `{step.name}` can only start a chain", step.span,
                                f"write `{step.name} -> layer(...)`")
            current = self.layer(call, sources, env)
            sources = [current]
        return sources[0]

    def layer(self, call: n.Call, sources: list[str], env: dict[str, Any]) -> str:
        if call.func in self.blocks:
            return self.expand(self.blocks[call.func], call, sources, env)
        cat = catalog("layer")
        cls_name = cat.class_name(call.func)
        kwargs: dict[str, Any] | None = None
        spans: dict[str, n.Span] = {}
        if cls_name is None and catalog("activation").knows(call.func) and not call.args and not call.kwargs:
            cls_name, kwargs = "Activation", {"activation": call.func}
        elif cls_name is None:
            if catalog("activation").knows(call.func):
                raise self.fail(f"activation `{call.func}` takes no arguments when used as a layer", call.span,
                                f"write `{call.func}` alone, or pass it to a layer: `dense(64, activation={call.func})`")
            self.refuse_denied(call)
            names = cat.choices() + list(self.blocks) + list(self.tensors)
            hint = did_you_mean(call.func, names) or "see the Keras layer list: any `keras.layers` class by its snake_case name"
            raise self.fail(f"unknown layer `{call.func}`", call.name_span, hint)
        call_kwargs: dict[str, Any] = {}
        if kwargs is None:
            cls = cat.get_class(cls_name)
            at_call = [k for k in call.kwargs if k.name in call_options_of(cls) and k.name not in signature_of(cls).names]
            for k in at_call:
                call_kwargs[k.name] = self.value(k.value, env)
                spans[k.name] = k.span
            own = call.model_copy(update={"kwargs": [k for k in call.kwargs if k not in at_call]})
            kwargs = self.arguments(own, cls, env, f"layer `{call.func}`", spans)
        name = kwargs.pop("name", None)
        if name is not None:
            if not isinstance(name, str) or name in self.used_names or name in self.tensors:
                raise self.fail(f"layer name {show_value(name)} is not a new name", call.span)
            self.used_names[name] = 1
            self.explicit_names.add(name)
        else:
            name = self.fresh(call.func if cat.class_name(call.func) else "activation")
        if _UNKNOWN in sources:
            return _UNKNOWN
        if len(sources) > 1 and not _is_merge(cls_name):
            raise self.fail(f"layer `{call.func}` takes one input, but {len(sources)} tensors flow into it", call.name_span,
                            "merge them first: `[a, b] -> concatenate` (or add, multiply, average, ...)")
        self.layer_units += _weight(cls_name, kwargs)
        if self.layer_units > MAX_LAYERS:
            used = {c for node in self.layers for c in _classes(node.cls, node.kwargs)} | set(_classes(cls_name, kwargs))
            heavy = {c: w for c, w in LAYER_WEIGHTS.items() if c in used}
            counted = "; ".join(f"`{c}` counts as {w}" for c, w in heavy.items())
            raise self.limit(f"the model has more than {MAX_LAYERS:,} layers once blocks and `repeat` are expanded"
                             + (f" ({counted}: it builds several Keras layers)" if heavy else ""),
                             call.span, "specc builds models of at most this many layers, so that checking one takes "
                             "seconds")
        self.argument_elements += sum(self.measure(v)[0] for v in (*kwargs.values(), *call_kwargs.values()))
        if self.argument_elements > MAX_ARGUMENT_ELEMENTS:
            raise self.limit(f"the model's layer arguments hold more than {MAX_ARGUMENT_ELEMENTS:,} values in all once "
                             "blocks and `repeat` are expanded", call.span,
                             "a large list given to many layers is copied into each; give it to fewer layers")
        origin = self.origin(call.span).model_copy(update={"args": spans})
        self.layers.append(LayerNode(name=name, cls=cls_name, kwargs=kwargs, inputs=sources, call_kwargs=call_kwargs,
                                     origin=origin))
        return name

    def fresh(self, base: str) -> str:
        k = self.used_names.get(base, 0)
        while True:
            name = base if k == 0 else f"{base}_{k}"
            k += 1
            if name not in self.used_names and name not in self.tensors and name not in self.reserved:
                self.used_names[base] = k
                self.used_names[name] = max(self.used_names.get(name, 0), 1)
                return name

    def expand(self, block: n.Block, call: n.Call, sources: list[str], env: dict[str, Any]) -> str:
        if block.name in self.stack:
            raise self.fail(f"block `{block.name}` uses itself", call.name_span, "blocks cannot be recursive; use `repeat`")
        if len(sources) != 1:
            raise self.fail(f"block `{block.name}` takes one input, but {len(sources)} tensors flow into it", call.name_span)
        params = [p.name for p in block.params]
        if len(call.args) > len(params):
            raise self.fail(f"too many arguments for block `{block.name}`: it takes {len(params)} ({', '.join(params) or 'none'})",
                            call.args[len(params)].span)
        local: dict[str, Any] = {}

        def bind(arg: n.Expr, scope: dict[str, Any]) -> Any:
            if isinstance(arg, n.Call):
                return _Call(arg, scope)
            if isinstance(arg, n.Name) and (arg.id in scope or arg.id in self.lets):
                bound = scope[arg.id] if arg.id in scope else self.constant(arg.id)
                if isinstance(bound, _Call):  # a call passed on by name: still resolved where it is used
                    return bound
            return self.value(arg, scope)

        for p, arg in zip(block.params, call.args):
            local[p.name] = bind(arg, env)
        for kw in call.kwargs:
            if kw.name not in params:
                raise self.fail(f"unknown argument `{kw.name}` for block `{block.name}`", kw.name_span,
                                did_you_mean(kw.name, params) or f"it takes: {', '.join(params) or 'no arguments'}")
            if kw.name in local:
                raise self.fail(f"argument `{kw.name}` given twice to block `{block.name}`", kw.name_span)
            local[kw.name] = bind(kw.value, env)
        for p in block.params:
            if p.name not in local:
                if p.default is None:
                    raise self.fail(f"block `{block.name}` needs argument `{p.name}`", call.span,
                                    f"write `{block.name}({', '.join(params)})`")
                local[p.name] = bind(p.default, dict(local))
        self.spend(call.name_span)
        self.stack.append(block.name)
        self.notes.append(f"in block `{block.name}`, used at line {call.span.line if call.span else '?'}")
        known = len(self.tensors)
        try:
            with self.nested(call.name_span):
                out = self.body(block.body, sources[0], local, in_block=True)
        finally:
            self.notes.pop()
            self.stack.pop()
            # Names given inside a block stay inside it. A block only adds names (`declare` refuses a known one), so
            # they are the last ones in the dict: dropped one by one, not by copying every name at each block call.
            for _ in range(len(self.tensors) - known):
                self.tensors.popitem()
        return out or sources[0]

    # -- settings ----------------------------------------------------------

    def check_blocks(self) -> None:
        layer_cat = catalog("layer")
        for b in self.spec.blocks:
            if b.name in self.blocks:
                self.fail(f"block `{b.name}` is defined twice", b.span)
                continue
            if layer_cat.class_name(b.name):
                self.fail(f"block `{b.name}` has the name of a Keras layer", b.span, "choose another name")
                continue
            seen = set()
            for p in b.params:
                if p.name in seen:
                    self.fail(f"parameter `{p.name}` appears twice", p.span)
                seen.add(p.name)
            self.blocks[b.name] = b

    def sections(self) -> dict[str, n.Section]:
        found: dict[str, n.Section] = {}
        for sec in self.spec.sections:
            if sec.name not in SECTIONS:
                self.fail(f"unknown section `{sec.name}`", sec.span,
                          did_you_mean(sec.name, SECTIONS) or f"sections are: {', '.join(SECTIONS)}")
            elif sec.name in found:
                self.fail(f"section `{sec.name}` appears twice", sec.span, "merge the two")
            else:
                found[sec.name] = sec
        return found

    def settings(self, settings: list[n.Setting], allowed: tuple[str, ...], where: str) -> dict[str, n.Setting]:
        out: dict[str, n.Setting] = {}
        homes = {"`train`": _fields(TrainPlan), "`data`": _fields(DataPlan), "`init`": _fields(InitPlan),
                 "`device`": DEVICE_SETTINGS, "the file": TOP_SETTINGS}
        for s in settings:
            if s.key not in allowed:
                home = next((h for h, keys in homes.items() if s.key in keys and h != where), None)
                hint = (f"`{s.key}` belongs {'at the top level of the file' if home == 'the file' else f'in {home}'}"
                        if home else did_you_mean(s.key, allowed) or f"{where} settings: {', '.join(allowed)}")
                self.fail(f"unknown setting `{s.key}` in {where}", s.key_span, hint)
            elif s.key in out:
                self.fail(f"setting `{s.key}` appears twice", s.key_span)
            else:
                out[s.key] = s
        return out

    def guarded(self, fn, *args):
        try:
            return fn(*args)
        except _Abort:
            return None

    def check_train(self, sec: n.Section) -> TrainPlan:
        given = self.settings(sec.settings, _fields(TrainPlan), "`train`")
        plan: dict[str, Any] = {}
        origins = {k: Origin(span=s.span) for k, s in given.items()}
        # The settings that `train.steps` and its kin are computed from come first, wherever they are written;
        # the others (`optimizer: sgd(cosine_decay(0.1, decay_steps=train.steps))`) may name those facts.
        first = ("epochs", "batch_size", "validation_split")
        for key, s in sorted(given.items(), key=lambda item: item[0] not in first):
            self.in_section = "train" if key in first else None
            if key not in first:
                self.ready.add("train")
            try:
                v = self.guarded(self.train_value, key, s)
            finally:
                self.in_section = None
            if v is not None or key == "seed":
                plan[key] = v
            if key in first and v is not None:
                self.train_given[key] = v
        stop = plan.get("early_stopping")
        if stop is not None and ("metrics" in plan or "metrics" not in given):  # else the metrics' error says enough
            e = given["early_stopping"].value
            at = next((k.span for k in e.kwargs if k.name == "monitor"), e.span) if isinstance(e, n.Call) else e.span
            self.guarded(self.check_monitor, stop, plan.get("metrics") or [], at)
        if stop is not None and "monitor" not in stop.kwargs and not plan.get("validation_split"):
            # Keras watches `val_loss` by default, and silently never stops without a validation split.
            plan["early_stopping"] = stop.model_copy(update={"kwargs": {**stop.kwargs, "monitor": "loss"}})
        if "loss" not in given:
            self.fail("`train` needs a `loss`", sec.span,
                      "for integer class labels: `loss: sparse_categorical_crossentropy`; for regression: `loss: mse`")
        return TrainPlan(**plan, origins=origins)

    def train_value(self, key: str, s: n.Setting) -> Any:
        e = s.value
        if key == "loss":
            return self.value(e, {}, "loss", "the loss")
        if key == "optimizer":
            return self.value(e, {}, "optimizer", "the optimizer")
        if key == "metrics":
            items = e.items if isinstance(e, n.List) else [e]
            return [self.value(i, {}, "metric", "a metric") for i in items]
        if key == "early_stopping":
            if isinstance(e, n.Call) and e.func == "early_stopping":
                cls = import_keras().callbacks.EarlyStopping
                spans: dict[str, n.Span] = {}
                kwargs = self.arguments(e, cls, {}, "`early_stopping`", spans)
                for key, v in kwargs.items():  # Keras takes these at construction and fails on them in `fit`
                    self.early_stopping_value(key, v, spans.get(key, e.span))
                made = Obj(kind="callback", module="keras.callbacks", cls="EarlyStopping", kwargs=kwargs)
                self.construct(made, e, spans, "`early_stopping`")
                return made
            v = self.value(e, {})
            if isinstance(v, int) and not isinstance(v, bool) and v >= 0:
                return Obj(kind="callback", module="keras.callbacks", cls="EarlyStopping", kwargs={"patience": v})
            raise self.fail("`early_stopping` takes a patience in epochs or `early_stopping(monitor=val_loss, patience=3)`", e.span)
        if key == "validation":
            if not (isinstance(e, n.Call) and e.func == "kfold" and len(e.args) == 1 and not e.kwargs):
                raise self.fail("`validation` is k-fold cross-validation: `validation: kfold(5)`", e.span,
                                "for a held-out fraction of the training data use `validation_split: 0.1`")
            return self.whole(self.value(e.args[0], {}), e.args[0], "kfold", minimum=2)
        v = self.value(e, {})
        if key in ("epochs", "batch_size"):
            return self.whole(v, e, key, minimum=1)
        if key == "seed":
            return None if v is None else self.whole(v, e, key, minimum=0)
        if key == "validation_split":
            return self.fraction(v, e, key)
        if key == "shuffle":
            if not isinstance(v, bool):
                raise self.fail(f"`shuffle` is `true` or `false`, got {show_value(v)}", e.span)
            return v
        raise InternalError(f"no check for setting {key!r}")

    def early_stopping_value(self, key: str, v: Any, span: n.Span | None) -> None:
        """An argument of `early_stopping(...)` of the type Keras needs: it takes any value when made, and fails on a
        wrong one at the end of the first epoch (`min_delta="x"`) or silently changes it (`mode=maximum`)."""
        number = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        whole = isinstance(v, int) and not isinstance(v, bool) and v >= 0
        wanted = {"monitor": ("the name of a logged value, e.g. `val_loss`", isinstance(v, str)),
                  "min_delta": ("a number", number),
                  "patience": ("a whole number of epochs >= 0", whole),
                  "start_from_epoch": ("a whole number of epochs >= 0", whole),
                  "verbose": ("`0` or `1`", v in (0, 1) and not isinstance(v, bool)),
                  "mode": ("`auto`, `min` or `max`", v in ("auto", "min", "max")),
                  "baseline": ("a number or `none`", v is None or number),
                  "restore_best_weights": ("`true` or `false`", isinstance(v, bool))}
        if key in wanted and not wanted[key][1]:
            raise self.fail(f"`{key}` of `early_stopping` is {wanted[key][0]}, got {show_value(v)}", span)

    def check_monitor(self, stop: Obj, metrics: list, span: n.Span | None) -> None:
        """In `mode: auto` Keras infers whether the monitored value should go up or down from the loss or a compiled
        metric of that name, and fails at the end of the first epoch when there is none: found here instead."""
        outputs = [o for m in self.spec.models[:1] for st in m.body if isinstance(st, n.Output) for o in st.names]
        if stop.kwargs.get("mode", "auto") != "auto" or len(outputs) > 1:  # several outputs: metrics per output
            return
        monitor = stop.kwargs.get("monitor", "val_loss")
        name = monitor.removeprefix("val_")
        if name == "loss":
            return
        names: list[str] = []
        for m in metrics:
            if isinstance(m, str):
                names.append(m)
            elif isinstance(m, Obj):
                from specc.compile.build import make_object, shapes_only

                with shapes_only():
                    made = make_object(m)
                if hasattr(made, "_direction"):
                    names.append(made.name)
        if name not in names:
            raise self.fail(f"`early_stopping` watches `{monitor}`, but Keras can tell whether it should go up or "
                            "down only for the loss and the metrics of `train.metrics` "
                            f"({', '.join(f'`{m}`' for m in ['loss', *names])})", span,
                            "watch one of them (`val_` + its name for the validation value), or give the direction: "
                            "`mode=max` or `mode=min`")

    def fraction(self, v: Any, e: n.Expr, key: str) -> float:
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < 1:
            raise self.fail(f"`{key}` is a fraction in [0, 1), got {show_value(v)}", e.span, f"e.g. `{key}: 0.1`")
        return float(v)

    def whole(self, v: Any, e: n.Expr, key: str, minimum: int) -> int:
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
            raise self.fail(f"`{key}` must be a whole number >= {minimum}, got {show_value(v)}", e.span)
        return v

    def check_data(self, sec: n.Section) -> DataPlan:
        given = self.settings(sec.settings, _fields(DataPlan), "`data`")
        plan: dict[str, Any] = {}
        self.in_section = "data"
        try:
            for key, s in given.items():
                v = self.guarded(self.data_value, key, s)
                if v is not None:
                    plan[key] = v
        finally:
            self.in_section = None
        inline = "x" in given and isinstance(plan.get("x"), list)
        sources = [k for k in ("dataset", "file", "images") if k in given] + (["x"] if inline else [])
        if not sources and "x" not in given:
            self.fail("`data` needs a source: `dataset: mnist`, `file: \"data.csv\"`, `images: \"folder\"`, or inline "
                      "`x: [...]` and `y: [...]`", sec.span)
        elif len(sources) > 1:
            self.fail(f"`data` has more than one source ({', '.join(sources)}); keep one", given[sources[1]].key_span)
        if "file" not in given:
            for key in ("x", "y", "x_test", "y_test"):
                if key in given and not isinstance(given[key].value, n.List):
                    self.fail(f"`{key}` names an array, but there is no `file` to take it from", given[key].span,
                              f"give the values inline, `{key}: [...]`, or add `file: \"data.npz\"`")
        for pair in (("x", "y"), ("x_test", "y_test")):
            if (pair[0] in given) != (pair[1] in given):
                have, missing = (pair[0], pair[1]) if pair[0] in given else (pair[1], pair[0])
                self.fail(f"`{have}` needs `{missing}`: they go together", given[have].key_span)
        table = "file" in given and str(plan.get("file", "")).endswith((".csv", ".tsv", ".data"))
        if table and "target" not in given and plan.get("task", "classify") == "classify":
            self.fail("a table of examples needs a `target` column", given["file"].span,
                      "name the columns: `features: [a, b]` and `target: c`")
        inputs = sum(isinstance(st, n.Input) for m in self.spec.models[:1] for st in m.body)
        if table and not any(k in given for k in ("features", "text")) and inputs <= 1:
            self.fail("a table of examples needs `features` (number columns) or `text` (a text column)",
                      given["file"].span, "e.g. `features: [area, rooms]`; a model with several inputs reads "
                      "the columns named after its inputs")
        data = DataPlan(**plan, origins={k: Origin(span=s.span) for k, s in given.items()})
        if data.is_text:
            if "sequence_length" not in given:
                self.fail("text data needs `sequence_length`: the number of tokens per example", sec.span,
                          "e.g. `sequence_length: 64`, the length of the model's input")
            if "tokenizer" not in given and "init" not in {s.name for s in self.spec.sections}:
                self.fail("text data needs a `tokenizer`", sec.span,
                          "`tokenizer: chars`, `tokenizer: wordpiece(vocab_size=8000)`, or the path of a saved one")
        elif "sequence_length" in given or "task" in given:
            key = "sequence_length" if "sequence_length" in given else "task"
            self.fail(f"`{key}` is for text data", given[key].key_span,
                      "add `tokenizer: ...` and a text source (`dataset: sst2`, a `.txt` file, or `text: COLUMN`)")
        return data

    def data_value(self, key: str, s: n.Setting) -> Any:
        e = s.value
        v = None if isinstance(e, n.Call) and key in ("tokenizer", "task") else self.value(e, {})
        if key == "dataset":
            if not isinstance(v, str) or v not in DATASETS:
                raise self.fail(f"unknown dataset {show_value(v)}", e.span,
                                did_you_mean(str(v), DATASETS) or f"built-in datasets: {', '.join(DATASETS)}; or use `file:`")
            return v
        if key in ("file", "test_file"):
            if not isinstance(e, n.Str):
                raise self.fail(f"`{key}` is a path in quotes, e.g. `{key}: \"data/train.npz\"`", e.span)
            if not v.endswith(DATA_FILES):
                raise self.fail(f"unsupported data file {v!r}", e.span,
                                "specc reads `.npz` arrays, `.csv`/`.tsv`/`.data` tables and `.txt` text")
            return v
        if key == "images":
            if not isinstance(e, n.Str):
                raise self.fail("`images` is a path in quotes: a folder, or a .tar/.tar.gz of one, with one subfolder "
                                "per class", e.span)
            return v
        if key == "image_size":
            if not (isinstance(v, tuple) and len(v) == 2 and all(isinstance(d, int) and not isinstance(d, bool)
                                                               and d > 0 for d in v)):
                raise self.fail("`image_size` is (height, width), e.g. `image_size: (32, 32)`", e.span)
            self.per_example(v[0] * v[1] * 3, f"images of {v[0]:,} x {v[1]:,} pixels in 3 colours", e.span)
            return v
        if key == "columns":
            if not isinstance(v, list) or not v or not all(isinstance(i, str) for i in v):
                raise self.fail("`columns` is a list of column names, e.g. `columns: [user, item, rating]`", e.span)
            return v
        if key == "delimiter":
            if not isinstance(e, n.Str) or len(v.encode().decode("unicode_escape")) != 1:
                raise self.fail("`delimiter` is one character in quotes, e.g. `delimiter: \"\\t\"`", e.span)
            return v.encode().decode("unicode_escape")
        if key == "text":
            if not isinstance(v, str):
                raise self.fail("`text` is the name of the column holding the text, e.g. `text: sentence`", e.span)
            return v
        if key == "sequence_length":
            v = self.whole(v, e, key, minimum=1)
            self.per_example(v, f"examples of {v:,} tokens", e.span)
            return v
        if key == "tokenizer":
            if isinstance(e, n.Str):
                return {"path": v}
            call = e if isinstance(e, n.Call) else n.Call(func=str(v), span=e.span, name_span=e.span) \
                if isinstance(e, n.Name) else None
            if call is None or call.func not in TOKENIZERS:
                got = call.func if call else v
                raise self.fail(f"unknown tokenizer {show_value(got)}", e.span,
                                did_you_mean(str(got), TOKENIZERS) or
                                f"tokenizers: {', '.join(TOKENIZERS)}, or the path of a saved one in quotes")
            options = self.options(call, {"vocab_size": None} if call.func != "chars" else {})
            size = options.get("vocab_size")
            if size is not None:  # at least the special ids and one token
                size = self.whole(size, e, "vocab_size", minimum=len(SPECIALS) + 1)
                if size > MAX_VOCABULARY:
                    raise self.fail(f"`vocab_size` is {size:,}; specc trains vocabularies of at most {MAX_VOCABULARY:,} "
                                    "tokens", e.span)
            return {"kind": call.func, "vocab_size": size}
        if key == "task":
            call = e if isinstance(e, n.Call) else n.Call(func=str(v), span=e.span, name_span=e.span)
            if call.func not in TASKS:
                raise self.fail(f"unknown task {show_value(call.func)}", e.span,
                                did_you_mean(call.func, TASKS) or f"tasks: {', '.join(TASKS)}")
            if call.func != "masked_tokens":
                self.options(call, {})
                return call.func
            rate = self.options(call, {"rate": 0.15})["rate"]
            if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 < rate < 1:
                raise self.fail(f"`rate` is a fraction in (0, 1), got {show_value(rate)}", call.span)
            return {"kind": "masked_tokens", "rate": float(rate)}
        if key == "features":
            if not isinstance(v, list) or not v or not all(isinstance(i, str) for i in v):
                raise self.fail("`features` is a list of column names, e.g. `features: [area, rooms]`", e.span)
            return v
        if key == "target":
            if not isinstance(v, str):
                raise self.fail("`target` is a column name, e.g. `target: price`", e.span)
            return v
        if key in ("x", "y", "x_test", "y_test"):
            if isinstance(v, list):
                if not _numeric(v):
                    raise self.fail(f"inline `{key}` must contain only numbers", e.span)
                if _shape_of(v) is None:
                    raise self.fail(f"inline `{key}` is ragged: every row needs the same length", e.span)
                return v
            if isinstance(v, str):
                return v  # the name of an array inside an .npz file
            raise self.fail(f"`{key}` is an inline list of numbers or the name of an array in the .npz file", e.span)
        if key in ("test_split",):
            return self.fraction(v, e, key)
        if key == "scale":
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise self.fail(f"`scale` is a number, e.g. `scale: 1/255`, got {show_value(v)}", e.span)
            return float(v)
        if key == "flatten":
            if not isinstance(v, bool):
                raise self.fail(f"`flatten` is `true` or `false`, got {show_value(v)}", e.span)
            return v
        if key == "reshape":
            if isinstance(v, int) and not isinstance(v, bool):
                v = (v,)
            if not isinstance(v, tuple) or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in v):
                raise self.fail("`reshape` is a shape per example, e.g. `reshape: (28, 28, 1)`", e.span)
            self.per_example(math.prod(v), f"examples of shape {v}", e.span)
            return v
        if key == "one_hot":
            if isinstance(v, bool) or (isinstance(v, int) and v > 1):
                if not isinstance(v, bool):  # the labels become `v` values each
                    self.per_example(v, f"one-hot labels of {v:,} classes", e.span)
                return v
            raise self.fail("`one_hot` is `true` (classes counted from the labels) or the number of classes", e.span)
        raise InternalError(f"no check for setting {key!r}")

    def per_example(self, values: int, what: str, span: n.Span | None) -> None:
        """A data setting that sizes each example (or label): within the bound on values per example."""
        if values > MAX_EXAMPLE_VALUES:
            raise self.fail(f"{what} make {values:,} values per example; specc builds at most {MAX_EXAMPLE_VALUES:,} "
                            "(2**28)", span)

    def check_data_fits(self, data: DataPlan, inputs: list[InputNode]) -> None:
        """The sizes the `data` section sets (`image_size`, `sequence_length`) against the one input they feed, where
        both are known: found here rather than after the data was read (or the images resized) at run time."""
        if len(inputs) != 1 or data.reshape is not None or data.flatten:
            return
        inp = inputs[0]
        want = [d for d in inp.shape if d != 1]
        if data.image_size is not None and len(inp.shape) == 3 and None not in inp.shape[:2] \
                and tuple(inp.shape[:2]) != tuple(data.image_size):
            h, w = data.image_size
            self.fail(f"`image_size: ({h}, {w})` makes images of {h} x {w} pixels, but input `{inp.name}` takes "
                      f"{inp.shape[0]} x {inp.shape[1]}: its shape is {_shape_text(inp.shape)}", data.span("image_size"),
                      f"make them agree: `image_size: ({inp.shape[0]}, {inp.shape[1]})`, or "
                      f"`input {inp.name}: ({h}, {w}, {inp.shape[2]})`")
        length = data.sequence_length
        if length is not None and data.is_text and None not in want and want != [d for d in (length,) if d != 1]:
            self.fail(f"`sequence_length: {length}` makes examples of {length} tokens, but input `{inp.name}` takes "
                      f"{_shape_text(inp.shape)}", data.span("sequence_length"),
                      f"make them agree: `sequence_length: {math.prod(want)}`, or `input {inp.name}: ({length},) int32`"
                      if len(want) == 1 else f"declare the input as `input {inp.name}: ({length},) int32`")

    def options(self, call: n.Call, defaults: dict[str, Any]) -> dict[str, Any]:
        """The keyword (or positional) options of a specc call such as `wordpiece(vocab_size=8000)`."""
        names = list(defaults)
        if len(call.args) > len(names):
            raise self.fail(f"`{call.func}` takes {len(names)} argument{'s' if len(names) != 1 else ''}"
                            f"{': ' + ', '.join(names) if names else ''}", call.args[len(names)].span)
        out = dict(defaults)
        for name, arg in zip(names, call.args):
            out[name] = self.value(arg, {})
        for kw in call.kwargs:
            if kw.name not in names:
                raise self.fail(f"unknown argument `{kw.name}` for `{call.func}`", kw.name_span,
                                did_you_mean(kw.name, names) or f"it takes: {', '.join(names) or 'no arguments'}")
            out[kw.name] = self.value(kw.value, {})
        return out

    def check_init(self, sec: n.Section) -> InitPlan:
        given = self.settings(sec.settings, _fields(InitPlan), "`init`")
        if "from" not in given:
            raise self.fail("`init` needs `from`: the run directory or .keras file whose weights to take", sec.span,
                            'e.g. `from: "../runs/pretrain"`')
        e = given["from"].value
        if not isinstance(e, n.Str):
            raise self.fail('`from` is a path in quotes, e.g. `from: "../runs/pretrain"`', e.span)
        plan: dict[str, Any] = {"from": e.value}
        for key in ("layers", "freeze"):
            if key in given:
                v = self.value(given[key].value, {})
                v = [v] if isinstance(v, str) else v
                if not isinstance(v, list) or not all(isinstance(i, str) for i in v):
                    self.fail(f"`{key}` is a list of layer names or patterns, e.g. `{key}: [embedding, \"dense_*\"]`",
                              given[key].value.span)
                else:
                    plan[key] = v
        origins = {k: Origin(span=s.span) for k, s in given.items()}
        for key in ("layers", "freeze"):  # each named layer's own span, for errors about it
            value = given[key].value if key in given else None
            for item in value.items if isinstance(value, n.List) else []:
                if isinstance(item, (n.Name, n.Str)):
                    origins[f"{key}:{item.id if isinstance(item, n.Name) else item.value}"] = Origin(span=item.span)
        return InitPlan(**plan, origins=origins)

    def check_language(self, s: n.Setting) -> int:
        from specc.lang.upgrade import LANGUAGE

        v = self.value(s.value, {})
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v:
            raise self.fail(f"`language` is the version of the language the file is written in, a whole number from 1 "
                            f"to {LANGUAGE}; got {show_value(v)}", s.value.span, f"e.g. `language: {LANGUAGE}`")
        if v > LANGUAGE:
            raise self.fail(f"the file is written in language {v}, but this specc knows versions 1 to {LANGUAGE}",
                            s.value.span, "upgrade specc (`pip install -U specc`)")
        return v

    def check_device(self, s: n.Setting) -> str:
        v = self.value(s.value, {})
        if v not in DEVICES:
            raise self.fail(f"unknown device {show_value(v)}", s.value.span,
                            did_you_mean(str(v), DEVICES) or f"devices: {', '.join(DEVICES)}")
        return v

    # -- the device section --------------------------------------------------

    def check_device_section(self, sec: n.Section) -> tuple[str, DistributionPlan | None]:
        """`device { kind: cpu; parallel: data }`: the platform, and how training is spread over its devices."""
        given = self.settings(sec.settings, DEVICE_SETTINGS, "`device`")
        kind = self.guarded(self.check_device, given["kind"]) if "kind" in given else "auto"
        origins = {k: Origin(span=s.span) for k, s in given.items()}
        plan: dict[str, Any] = {}
        for key in ("parallel", "mesh", "axes", "layout"):  # in this order: each may look at the ones before
            if key in given:
                v = self.guarded(self.device_value, key, given[key], plan, origins)
                if v is not None:
                    plan[key] = v
        if "parallel" in given and "parallel" not in plan:  # its error says enough
            return kind, None
        parallel = plan.pop("parallel", None)
        if parallel == "none":
            parallel = None
        for key in ("mesh", "axes", "layout"):
            if key in given and parallel != "model":
                why = "`parallel: data` uses every device as it is" if parallel == "data" else "there is no `parallel`"
                self.fail(f"`{key}` is for `parallel: model`, and {why}", given[key].key_span,
                          "write `parallel: model` to split weights over a mesh of devices, or remove "
                          f"`{key}`")
        if parallel == "model":
            if "mesh" not in given:
                self.fail("`parallel: model` needs a `mesh`: the shape of the grid of devices", sec.span,
                          "e.g. `mesh: (2, 2)` with `axes: (batch, model)` for 4 devices")
            elif "mesh" in plan and "axes" not in given:
                if len(plan["mesh"]) != 2:
                    self.fail(f"a mesh of {len(plan['mesh'])} dimension{'s' if len(plan['mesh']) != 1 else ''} "
                              "needs `axes`: a name for each", given["mesh"].span,
                              f"e.g. `axes: ({', '.join(('batch', 'model', 'x', 'y')[:len(plan['mesh'])])})`")
                else:
                    plan["axes"] = ("batch", "model")
            if "layout" not in given:
                self.fail("`parallel: model` needs a `layout`: which weights to split along which mesh axes", sec.span,
                          'e.g. `layout: [("dense.*kernel", (none, model))]`: the kernels of layers named dense... '
                          "split by columns along the `model` axis")
        if parallel is None:
            return kind, None
        return kind, DistributionPlan(parallel=parallel, **plan, origins=origins)

    def device_value(self, key: str, s: n.Setting, plan: dict[str, Any], origins: dict[str, Origin]) -> Any:
        e = s.value
        v = self.value(e, {})
        if key == "parallel":
            choices = PARALLEL + ("none",)
            if v is None:
                return "none"
            if v not in choices:
                raise self.fail(f"unknown parallelism {show_value(v)}", e.span, did_you_mean(str(v), choices)
                                or "`parallel: data` (copies of the model, each batch split over the devices) or "
                                "`parallel: model` (weights split over a mesh of devices)")
            return v
        if key == "mesh":
            if isinstance(v, int) and not isinstance(v, bool):
                v = (v,)
            if not (isinstance(v, tuple) and v and all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                                                       for d in v)):
                raise self.fail(f"`mesh` is the shape of the grid of devices, e.g. `mesh: (2, 2)`; got {show_value(v)}",
                                e.span)
            return v
        if key == "axes":
            v = (v,) if isinstance(v, str) else tuple(v) if isinstance(v, (tuple, list)) else v
            if not (isinstance(v, tuple) and v and all(isinstance(a, str) for a in v)):
                raise self.fail(f"`axes` names the mesh's axes, e.g. `axes: (batch, model)`; got {show_value(v)}", e.span)
            twice = next((a for i, a in enumerate(v) if a in v[:i]), None)
            if twice is not None:
                raise self.fail(f"mesh axis `{twice}` is named twice", e.span)
            mesh = plan.get("mesh")
            if mesh is not None and len(mesh) != len(v):
                raise self.fail(f"`axes` names {len(v)} axes, but the mesh {show_value(mesh)} has {len(mesh)}", e.span)
            return v
        if key == "layout":
            return self.layout(e, plan, origins)
        raise InternalError(f"no check for setting {key!r}")

    def layout(self, e: n.Expr, plan: dict[str, Any], origins: dict[str, Origin]) -> list:
        """`layout: [("dense.*kernel", (none, model)), ...]`: per weight-path pattern, a mesh axis (or `none`)
        for each dimension of the weights it matches."""
        import re

        example = '`layout: [("dense.*kernel", (none, model)), ("dense.*bias", model)]`'
        items = e.items if isinstance(e, n.List) else None
        if not items:
            raise self.fail("`layout` is a list of (weight pattern, mesh axes) pairs", e.span, f"e.g. {example}")
        axes = plan.get("axes") or (("batch", "model") if len(plan.get("mesh") or ()) == 2 else None)
        out = []
        for i, item in enumerate(items):
            if not (isinstance(item, n.Tuple) and len(item.items) == 2):
                raise self.fail("each `layout` entry is a pair: (weight pattern, mesh axes)", item.span, f"e.g. {example}")
            pattern, dims = self.value(item.items[0], {}), self.value(item.items[1], {})
            if not isinstance(pattern, str):
                raise self.fail(f"a weight pattern is a regular expression in quotes, got {show_value(pattern)}",
                                item.items[0].span, 'e.g. `"dense.*kernel"`, matched against paths such as `dense/kernel`')
            try:
                re.compile(pattern)
            except re.error as err:
                raise self.fail(f"`{pattern}` is not a regular expression: {err}", item.items[0].span) from None
            dims = (dims,) if dims is None or isinstance(dims, str) else dims
            if not (isinstance(dims, tuple) and all(d is None or isinstance(d, str) for d in dims)):
                raise self.fail("the axes of a layout entry are a mesh axis or `none` per dimension of the weight",
                                item.items[1].span, "e.g. `(none, model)` for a kernel split by columns")
            for d in dims:
                if d is not None and axes is not None and d not in axes:
                    raise self.fail(f"`{d}` is not an axis of the mesh", item.items[1].span,
                                    did_you_mean(d, axes) or f"its axes: {', '.join(axes)}")
            twice = next((d for j, d in enumerate(dims) if d is not None and d in dims[:j]), None)
            if twice is not None:
                raise self.fail(f"mesh axis `{twice}` splits two dimensions of the same weight", item.items[1].span)
            origins[f"layout:{i}"] = Origin(span=item.span)
            out.append((pattern, tuple(dims)))
        return out


def _fields(model) -> tuple[str, ...]:
    """The settings a section takes: its plan's fields."""
    return tuple(f.alias or k for k, f in model.model_fields.items() if k != "origins")


def _constant_value(v: Any) -> Any:
    """A constant as `Plan.constants` keeps it: its value, or a call's text (resolved where it is used)."""
    if isinstance(v, _Call):
        return fmt.format_expr(v.expr)
    return v


def _fields_default(model, key: str) -> Any:
    return model.model_fields[key].default


def _shape_text(shape: tuple) -> str:
    return "(" + ", ".join("none" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _numeric(v: Any) -> bool:
    if isinstance(v, list):
        return all(_numeric(i) for i in v)
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _shape_of(v: Any) -> tuple[int, ...] | None:
    """The shape of a nested list of numbers, or None if it is ragged."""
    if not isinstance(v, list):
        return ()
    shapes = {_shape_of(i) for i in v}
    if None in shapes or len(shapes) > 1:
        return None
    return (len(v),) + (shapes.pop() if shapes else ())


def _listing(kind: str, choices: list[str]) -> str:
    shown = ", ".join(choices[:12])
    return f"known {kind}s include: {shown}{', ...' if len(choices) > 12 else ''}"


def _weight(cls_name: str, kwargs: dict[str, Any]) -> int:
    """What a layer counts towards MAX_LAYERS: its LAYER_WEIGHTS, with the layers it wraps."""
    return sum(LAYER_WEIGHTS.get(c, 1) for c in _classes(cls_name, kwargs))


def _classes(cls_name: str, kwargs: dict[str, Any]):
    """A layer's class and those of the layers it wraps."""
    yield cls_name
    for v in kwargs.values():
        if isinstance(v, Obj) and v.kind == "layer":
            yield from _classes(v.cls, v.kwargs)


@contextlib.contextmanager
def _stateful():
    """Outside Keras's stateless scope (`build.shapes_only`) for a moment, in which an optimizer cannot be made."""
    from keras.src.backend.common import global_state

    scope = global_state.get_global_attribute("stateless_scope")
    global_state.set_global_attribute("stateless_scope", None)
    try:
        yield
    finally:
        global_state.set_global_attribute("stateless_scope", scope)


def _is_layer_class(cls: Any) -> bool:
    return isinstance(cls, type) and issubclass(cls, import_keras().layers.Layer)


def _is_merge(cls_name: str) -> bool:
    """Layers that take a list of tensors: Keras's merge layers, and attention (query, value[, key])."""
    from keras.src.layers.merging.base_merge import Merge

    return issubclass(catalog("layer").get_class(cls_name), Merge) or cls_name in (
        "MultiHeadAttention", "GroupQueryAttention", "Attention", "AdditiveAttention")


def compile_text(text: str, file: str = "<string>") -> Plan:
    """Parse and check spec text into its `Plan` (`specc.api.loads` without the API's wrapper, for the tools)."""
    from specc.lang.syntax import parse_text

    return check_spec(parse_text(text, file), Source(text, file))


def load_plan(path) -> Plan:
    """Read, parse and check a `.model` file into its `Plan` (`specc.api.load(path).plan`)."""
    from specc.lang.syntax import read_spec

    return compile_text(read_spec(path), str(path))


def check_spec(spec: n.Spec, source: Source | None = None) -> Plan:
    """Resolve a parsed spec into a `Plan`. Raises `SpecError` listing every independent error found."""
    from specc.compile.build import gc_paused

    prepare_environment()  # before anything starts JAX: its CPU client sizes its thread pools once
    with gc_paused():
        return _check_spec(spec, source)


def _check_spec(spec: n.Spec, source: Source | None) -> Plan:
    src = source or Source("", "<string>")
    ck = Checker(spec, src)
    ck.check_blocks()
    ck.check_lets()
    sections = ck.sections()
    top = ck.settings(spec.settings, TOP_SETTINGS, "the file")
    if "language" in top:
        ck.language = ck.guarded(ck.check_language, top["language"]) or ck.language
    if "device" in top and ck.language >= 2:
        ck.fail("since language 2 the device is set in a section: `device { kind: ... }`", top["device"].span,
                f"write `device {{ kind: {fmt.format_expr(top['device'].value)} }}`; `specc upgrade FILE` rewrites a "
                "file for the newest language")
        del top["device"]
    device = ck.guarded(ck.check_device, top["device"]) if "device" in top else "auto"
    device_origin = Origin(span=top["device"].span) if "device" in top else Origin()
    distribution = None
    if "device" in sections:
        section = sections["device"]
        if "device" in top:
            ck.fail("the device is given twice: by `device:` and by a `device { ... }` section", top["device"].span,
                    "keep the section, with `kind: ...` in it")
        found = ck.guarded(ck.check_device_section, section)
        device, distribution = found if found else (None, None)
        kind = next((s for s in section.settings if s.key == "kind"), None)
        device_origin = Origin(span=kind.span if kind else section.span)
    # The data first: the facts of it (`data.classes`) may be named in `train` and in the model.
    reported = len(ck.errors)
    data = ck.data_plan = ck.guarded(ck.check_data, sections["data"]) if "data" in sections else None
    ck.data_failed = len(ck.errors) > reported
    ck.ready.add("data")
    init = ck.init_plan = ck.guarded(ck.check_init, sections["init"]) if "init" in sections else None
    train = ck.guarded(ck.check_train, sections["train"]) if "train" in sections else None
    ck.ready.add("train")
    model = ck.guarded(ck.check_model)
    for name in ck.lets:  # constants nothing used are checked too
        ck.guarded(ck.constant, name)
    expect = None
    if "expect" in sections:
        from specc.compile.expect import check_expect

        expect = ck.guarded(check_expect, ck, sections["expect"])
    if distribution is not None and train is not None and train.validation:
        ck.fail("k-fold cross-validation (`validation: kfold(...)`) runs on one device; it cannot be combined with "
                "`parallel`", distribution.span("parallel"), "remove `parallel` from the `device` section, or "
                "`validation` from `train`")
    if data is not None and model is not None:
        ck.guarded(ck.check_data_fits, data, model[1])
    if ck.errors:
        unique = {(d.span.line, d.span.col, d.message) if d.span else (0, 0, d.message): d for d in reversed(ck.errors)}
        raise SpecError(sorted(unique.values(), key=lambda d: (d.span.line, d.span.col) if d.span else (0, 0)))
    assert model is not None
    name, inputs, layers, outputs = model
    return Plan(name=name, inputs=inputs, layers=layers, outputs=outputs, train=train, data=data, init=init,
                device=device or "auto", device_origin=device_origin, distribution=distribution, expect=expect,
                constants={**{k: _constant_value(v) for k, v in ck.consts.items()}, **ck.used_facts},
                facts=ck.facts, language=ck.language, file=src.file, source=src.text)
