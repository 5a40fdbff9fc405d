"""The checker's core: errors, values, names, constants, facts and Keras objects, for every section's validator.

`Checker` implements `specc.compile.shared.Core`, the interface the section validators see (`section_model`,
`section_data`, ...). It evaluates expressions (`value`), resolves names in Keras's catalogues (`named`, `obj`,
`arguments`), makes the Keras objects of the training settings as `specc run` will (`construct`), keeps the `let`
constants and the facts of the data and training that a spec names (`data.classes`, `train.steps`), and records
located errors (`fail`). What a section takes is declared in `specc.lang.sections`; how each is checked is in its
validator; `specc.compile.check.check_spec` runs them in order.
"""

from __future__ import annotations

import contextlib
import math
import operator
from typing import Any, Callable, Iterator, TypeVar

from specc.compile.catalog import DENIED_LAYERS, METRIC_STRINGS, catalog, kind_of_argument, signature_of
from specc.compile.shared import Abort, CallArg
from specc.core import nodes as n
from specc.core.errors import Diagnostic, did_you_mean, InternalError, printable, show_value, Source, UserError
from specc.core.limits import MAX_ERRORS, MAX_EXAMPLE_VALUES, MAX_NUMBER, MAX_VALUE_DEPTH, MAX_VALUE_ELEMENTS
from specc.core.plan import Obj, Origin, TrainPlan
from specc.lang import fmt
from specc.lang.sections import SECTIONS, SETTINGS_SECTIONS, Section, homes
from specc.runtime.keras_env import import_keras

T = TypeVar("T")

# Facts of the training a spec can name (`decay_steps=train.steps`), beside those of its data (`specc.data.facts`).
TRAIN_FACTS = ("epochs", "batch_size", "steps_per_epoch", "steps")
# Names a `let` cannot take: they already mean something in every expression.
RESERVED_NAMES = ("data", "train", "let")
# Nor words that name Keras objects or settings' values, which a constant of that name would silently replace.
SHADOWED_KINDS = ("activation", "loss", "optimizer", "metric", "initializer", "regularizer", "constraint")
SHADOWED_WORDS = ("auto", "cpu", "gpu", "tpu", "same", "valid", "causal", "chance", "healthy", "horizontal",
                  "vertical", "horizontal_and_vertical", "constant", "nearest", "reflect", "wrap", "bilinear")
CONSTANTS = {"true": True, "false": False, "none": None, "True": True, "False": False, "None": None}
# Keras objects of the training settings, made at check time so that what their constructors refuse is a located
# error before `specc run` creates anything (layers and their arguments are made when the model is built).
TRAINING_KINDS = ("optimizer", "loss", "metric", "schedule")
# Arguments of metrics that size their state, bounded before the metric is made: `AUC` builds a Python list of
# `num_thresholds` floats in its constructor; `MeanIoU` keeps a `num_classes` x `num_classes` confusion matrix.
STATE_ARGUMENTS = {"num_thresholds": 2**20, "num_classes": 2**14, "num_labels": 2**14}
# Layer arguments that Keras reads as a file's path when given a string (`string_lookup`, `integer_lookup`,
# `text_vectorization`: "an array ... or a string path to a text file"); no other `keras.layers` argument opens a file.
FILE_ARGUMENTS = ("vocabulary",)
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
       "//": operator.floordiv, "%": operator.mod}


class Checker:
    """The state every section shares while a spec is checked: errors, constants, facts, and what each section's
    validator returned. The model's own state (tensors, layers, names) is `section_model`'s."""

    def __init__(self, spec: n.Spec, src: Source):
        self._spec = spec
        self.src = src
        self.errors: list[Diagnostic] = []
        self.blocks: dict[str, n.Block] = {}
        self.notes: list[str] = []  # "in block `x` used at line N", innermost last
        self._halted = False  # a bound was crossed: stop checking the model
        # `let` constants, evaluated when first used (in any order; a cycle is an error), and the facts
        # (`data.classes`, `train.steps`) that the spec names, resolved: both go into `Plan.constants`.
        self.lets: dict[str, n.Let] = {}
        self.consts: dict[str, Any] = {}
        self.evaluating: list[str] = []
        self.failed_lets: set[str] = set()
        self.used_facts: dict[str, Any] = {}
        self.facts: Any = None  # `specc.data.facts.Facts` of the data, once a fact of it is named
        self.results: dict[str, Any] = {}  # what each section's validator returned, by section
        self.failed: set[str] = set()  # sections with errors
        self.givens: dict[str, dict[str, Any]] = {}  # settings facts are computed from, by section
        self.in_section: str | None = None  # the section being checked, whose own facts cannot be named there
        self.ready: set[str] = set()  # `data`, `train`: checked, so that their facts can be named
        self.facts_error: bool = False  # reading the data for its facts failed (reported once)
        self.sizes: dict[int, tuple[Any, int, int]] = {}  # id -> (list or tuple, elements, depth): `sized`

    @property
    def spec(self) -> n.Spec:
        return self._spec

    # -- reporting ---------------------------------------------------------

    def fail(self, message: str, span: n.Span | None, hint: str | None = None) -> Abort:
        if len(self.errors) >= MAX_ERRORS:  # a file of garbage: say so once, and stop checking the model
            if not self._halted:
                self.errors.append(self.src.diag(f"too many errors: specc stops checking after {MAX_ERRORS}", span))
            self._halted = True
            return Abort()
        self.errors.append(self.src.diag(message, span, hint, list(reversed(self.notes))))
        return Abort()

    def limit(self, message: str, span: n.Span | None, hint: str | None = None) -> Abort:
        """A bound crossed: reported once, and nothing more of the model is checked."""
        self._halted = True
        return self.fail(message, span, hint)

    @property
    def halted(self) -> bool:
        return self._halted

    def errors_so_far(self) -> int:
        return len(self.errors)

    def origin(self, span: n.Span | None) -> Origin:
        return Origin(span=span, notes=list(reversed(self.notes)))

    @contextlib.contextmanager
    def noting(self, note: str) -> Iterator[None]:
        self.notes.append(note)
        try:
            yield
        finally:
            self.notes.pop()

    def guarded(self, fn: Callable[..., T], *args: Any) -> T | None:
        try:
            return fn(*args)
        except Abort:
            return None

    # -- expressions -------------------------------------------------------

    def value(self, e: n.Expr, env: dict[str, Any], kind: str | None = None, what: str = "value") -> Any:
        """Evaluate an expression; names and calls are resolved in the catalogue `kind` if given."""
        if isinstance(e, n.Number):
            return e.value
        if isinstance(e, n.Str):
            return self.named(e.value, e.span, kind, what) if kind else e.value
        if isinstance(e, n.Name):
            return self.name_value(e, env, kind, what)
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
            return self.arithmetic(e, env)
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

    def name_value(self, e: n.Name, env: dict[str, Any], kind: str | None, what: str) -> Any:
        """A name: a block's parameter or a constant, a fact (`data.classes`), `true`/`none`, or a catalogue name."""
        if e.id in env or e.id in self.lets:
            bound = env[e.id] if e.id in env else self.constant(e.id)
            if isinstance(bound, CallArg):  # a call passed to a block: resolved where it is used
                return self.value(bound.expr, bound.env, kind, what)
            if kind and isinstance(bound, str) and bound not in CONSTANTS:  # a name: from the catalogue here
                return self.named(bound, e.span, kind, what)
            return bound
        if "." in e.id:
            return self.fact(e.id, e.span)
        if e.id in CONSTANTS:
            return CONSTANTS[e.id]
        return self.named(e.id, e.span, kind, what) if kind else e.id

    def arithmetic(self, e: n.BinOp, env: dict[str, Any]) -> int | float:
        a, b = self.value(e.left, env), self.value(e.right, env)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b)):
            raise self.fail(f"`{e.op}` needs two numbers, got {show_value(a)} and {show_value(b)}", e.span)
        if e.op in ("/", "//", "%") and b == 0:
            raise self.fail("division by zero", e.right.span)
        try:
            result = OPS[e.op](a, b)
        except ArithmeticError as err:  # OverflowError: a number too large for a float
            raise self.fail(f"cannot compute `{e.op}`: {err}", e.span) from None
        if (isinstance(result, int) and abs(result) > MAX_NUMBER) or (isinstance(result, float) and not math.isfinite(result)):
            kind = "a 64-bit whole number" if isinstance(result, int) else "a 64-bit float"
            raise self.fail(f"`{e.op}` makes a number too large for {kind}", e.span)
        return result

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

    def bind(self, arg: n.Expr, scope: dict[str, Any]) -> Any:
        """A block's argument: a call (given here or by name) stays unresolved until the block uses it."""
        if isinstance(arg, n.Call):
            return CallArg(arg, scope)
        if isinstance(arg, n.Name) and (arg.id in scope or arg.id in self.lets):
            bound = scope[arg.id] if arg.id in scope else self.constant(arg.id)
            if isinstance(bound, CallArg):  # a call passed on by name: still resolved where it is used
                return bound
        return self.value(arg, scope)

    # -- blocks, constants and facts -------------------------------------------

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

    def block(self, name: str) -> n.Block | None:
        return self.blocks.get(name)

    def check_lets(self) -> None:
        for let in self.spec.lets:
            if let.name in self.lets:
                self.fail(f"constant `{let.name}` is defined twice", let.name_span, "give each constant its own name")
            elif let.name in RESERVED_NAMES or let.name in CONSTANTS:
                self.fail(f"`{let.name}` cannot be the name of a constant: it already means something in every "
                          "expression", let.name_span, "choose another name")
            elif let.name in self.blocks or catalog("layer").class_name(let.name) or any(
                    catalog(kind).knows(let.name) for kind in SHADOWED_KINDS) or let.name in SHADOWED_WORDS:
                what = "block" if let.name in self.blocks else "Keras layer, object or setting value"
                self.fail(f"constant `{let.name}` has the name of a {what}", let.name_span,
                          "choose another name, so that the two never mean each other")
            else:
                self.lets[let.name] = let

    def is_constant(self, name: str) -> bool:
        return name in self.lets

    def constant(self, name: str) -> Any:
        """The value of `let NAME = ...`, evaluated once. A call (`let reg = l2(1e-4)`) stays unresolved until it is
        used, like a call passed to a block: where it lands decides which catalogue it comes from."""
        if name in self.consts:
            return self.consts[name]
        if name in self.failed_lets:  # its error is reported once, where it is defined
            raise Abort()
        let = self.lets[name]
        if name in self.evaluating:
            cycle = " -> ".join([*self.evaluating[self.evaluating.index(name):], name])
            raise self.fail(f"constant `{name}` is defined in terms of itself: {cycle}", let.name_span)
        self.evaluating.append(name)
        notes, self.notes = self.notes, []  # errors in the constant's own expression are located there
        try:
            value = CallArg(let.value, {}) if isinstance(let.value, n.Call) else self.value(let.value, {})
        except Abort:
            self.failed_lets.add(name)
            raise
        finally:
            self.notes = notes
            self.evaluating.pop()
        self.consts[name] = value
        return value

    def check_constants(self) -> None:
        for name in self.lets:
            self.guarded(self.constant, name)

    def named_values(self) -> dict[str, Any]:
        """`Plan.constants`: the constants (a call as its text) and the facts the spec named."""
        return {**{k: fmt.format_expr(v.expr) if isinstance(v, CallArg) else v for k, v in self.consts.items()},
                **self.used_facts}

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
            from specc.data.facts import infer_facts

            if "data" in self.failed or self.facts_error:  # reported once, where the data or the first fact is
                raise Abort()
            if self.results.get("data") is None:
                raise self.fail(f"`{name}` is a fact of the data, but the spec has no valid `data` section", span,
                                "add one: `data { dataset: mnist }`")
            try:
                self.facts = infer_facts(self.results["data"], self.src.file, self.results.get("init"))
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
        given = self.givens.get("train", {})
        if key in ("epochs", "batch_size"):
            return given.get(key, _default(TrainPlan, key))
        from specc.data.facts import steps_per_epoch

        batch = given.get("batch_size", _default(TrainPlan, "batch_size"))
        examples = self.data_facts(f"train.{key}", span).examples
        per_epoch = steps_per_epoch(examples, batch, given.get("validation_split", 0.0))
        return per_epoch if key == "steps_per_epoch" else per_epoch * given.get("epochs", _default(TrainPlan, "epochs"))

    # -- Keras objects ---------------------------------------------------------

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
            named = argument_named(message, spans)
            value = obj.kwargs.get(named) if named else None
            hint = (f"write it as a float: `{value}.0`" if isinstance(value, int) and not isinstance(value, bool)
                    and "float" in message else None)
            raise self.fail(f"invalid arguments for {what}: {message}", spans[named] if named else call.span,
                            hint) from None
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
            out[pname] = self.argument(pname, expr, cls, env, what)
            if spans is not None and span is not None:
                spans[pname] = span
        return out

    def argument(self, pname: str, expr: n.Expr, cls: Any, env: dict[str, Any], what: str) -> Any:
        """One argument's value, from the catalogue its parameter's name says (`kernel_regularizer`: regularizers)."""
        v = self.value(expr, env, kind_of_argument(pname), f"`{pname}`")
        if pname == "name" and isinstance(v, str):
            self.check_name(v, expr.span)
        if pname in FILE_ARGUMENTS and isinstance(v, str) and _is_layer_class(cls):
            raise self.fail(f"`{pname}` of {what} is given a string, which Keras reads as the path of a file; a "
                            "spec reads only the files its `data` section names", expr.span,
                            f"give the {pname} inline as a list (`{pname}=[\"a\", \"b\"]`); to turn text into "
                            "token ids learned from the data, use the `data` section's `tokenizer`")
        return v

    def check_name(self, name: str, span: n.Span | None) -> None:
        """A name the spec gives a layer or Keras object (`name="..."`): Keras takes any string, but the name is
        printed (summaries, logs, history columns) and written into files, so it holds no control characters."""
        if not name:
            raise self.fail("a name cannot be empty", span, "leave `name` out for an automatic one")
        if printable(name, lines=False) != name:
            shown = printable(name[:80], lines=False)
            raise self.fail(f"the name `{shown}` holds a control or unprintable character", span,
                            "names are printed and written into files: use letters, digits, `_` and `-`")

    # -- sections ----------------------------------------------------------------

    def sections(self) -> dict[str, n.Section]:
        """The settings sections of the spec by name; an unknown one, or one written twice, is an error."""
        found: dict[str, n.Section] = {}
        for sec in self.spec.sections:
            if sec.name not in SETTINGS_SECTIONS:
                self.fail(f"unknown section `{sec.name}`", sec.span, did_you_mean(sec.name, SETTINGS_SECTIONS)
                          or f"sections are: {', '.join(SETTINGS_SECTIONS)}")
            elif sec.name in found:
                self.fail(f"section `{sec.name}` appears twice", sec.span, "merge the two")
            else:
                found[sec.name] = sec
        return found

    def settings(self, section: str, settings: list[n.Setting]) -> dict[str, n.Setting]:
        """The settings written in `section` by name; one it does not take, or one written twice, is an error."""
        sec = SECTIONS[section]
        out: dict[str, n.Setting] = {}
        for s in settings:
            if s.key not in sec.names:
                self.fail(f"unknown setting `{s.key}` in {sec.where}", s.key_span, _unknown_setting_hint(s.key, sec))
            elif s.key in out:
                self.fail(f"setting `{s.key}` appears twice", s.key_span)
            else:
                out[s.key] = s
        return out

    def record(self, section: str, result: Any, failed: bool) -> None:
        """A section checked: what its validator returned, and whether it had errors. Its facts can be named now."""
        self.results[section] = result
        if failed:
            self.failed.add(section)
        self.ready.add(section)

    def result(self, section: str) -> Any:
        return self.results.get(section)

    @contextlib.contextmanager
    def checking(self, section: str | None) -> Iterator[None]:
        self.in_section = section
        try:
            yield
        finally:
            self.in_section = None

    def facts_ready(self, section: str) -> None:
        self.ready.add(section)

    def given(self, section: str, key: str, value: Any) -> None:
        self.givens.setdefault(section, {})[key] = value


def _unknown_setting_hint(key: str, section: Section) -> str:
    """Where a setting that `section` does not take belongs, else the closest setting it takes, else its list."""
    home = next((h for h in homes(key) if h is not section), None)
    if home is not None:
        return f"`{key}` belongs {home.home}"
    return did_you_mean(key, section.names) or f"{section.where} settings: {', '.join(section.names)}"


def _default(model, key: str) -> Any:
    return model.model_fields[key].default


def _listing(kind: str, choices: list[str]) -> str:
    shown = ", ".join(choices[:12])
    return f"known {kind}s include: {shown}{', ...' if len(choices) > 12 else ''}"


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
