"""Lint: mistakes that Keras accepts without a word and that cost a training run to find.

A spec that checks is a model Keras can build; it can still train badly or not at all: softmax applied twice,
an output size that is not the number of classes, a schedule that ends long before training does. Each such
mistake is a rule in `RULES`, registered with `@rule(code, name, summary, docs)` beside its check: the check
looks at the plan, its built shapes and the facts of its data (`specc.data.facts`), or at the pre-flight cost
(`specc.tools.cost`), and reports a warning with the rule's code, located at its culprit. docs/lint.md
documents every registered rule (a test keeps the two in step).

`lint_report` runs the rules that read the plan and its data: `specc check` prints them (errors with
`--strict`), `specc run` before training. `lint_cost` runs those that read the compiled training step's cost
(W201), which `specc summary` computes. Either way a comment `# specc: ignore[W101]` (or `ignore[W101, W104]`,
or a bare `ignore` for all) on the reported line silences them (`_unsilenced`, the one place that reads those
comments).

Rules only warn about what Keras accepts: a value Keras refuses is already an error of the build, before lint.

A new rule: a function `check(lint)` decorated with `@rule(...)` here, a case and its fixed variant in
tests/lint/, and its section and table row in docs/lint.md.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from specc.compile.losses import loss_class, loss_kind, output_losses
from specc.core.errors import DataError, Diagnostic, InternalError
from specc.core.nodes import Span
from specc.core.plan import LayerNode, Obj, Plan
from specc.core.units import format_bytes
from specc.runtime.keras_env import import_keras
from specc.compile.catalog import catalog

# What a rule reads, besides the plan and its built shapes.
PLAN = "plan"  # nothing more
DATA = "data"  # the data's facts: skipped (with a reason) when the data cannot be read here
COST = "cost"  # the compiled training step's cost (`specc.tools.cost.CostReport`): run by `lint_cost` only


@dataclass(frozen=True)
class Rule:
    """One lint rule: its code and short name, its severity, the one-line summary (its title in docs/lint.md),
    why it matters (the docs' text), what it reads, and the check that reports it."""

    code: str
    name: str
    summary: str
    docs: str
    check: Callable[[_Lint], None]
    needs: str = PLAN
    severity: str = "warning"


#: Every rule by code, in the order they run (warnings on one position keep that order).
RULES: dict[str, Rule] = {}


def rule(code: str, name: str, summary: str, docs: str, needs: str = PLAN, severity: str = "warning"):
    """Register the decorated `check(lint)` as the rule `code`."""
    def register(check: Callable[[_Lint], None]) -> Callable[[_Lint], None]:
        if code in RULES or needs not in (PLAN, DATA, COST):
            raise InternalError(f"lint rule {code}: registered twice, or needs {needs!r}")
        RULES[code] = Rule(code, name, summary, docs, check, needs, severity)
        return check
    return register


# Loss kinds (which activation a cross-entropy reads, which losses want one unit per class) are
# `specc.compile.losses`'s table.
_PROBABILITIES = {"softmax", "sigmoid", "hard_sigmoid"}
# Layers that move values without changing them: an activation before one is still the output's.
_TRANSPARENT = {"Reshape", "Flatten", "Permute", "Identity"}
# Merges of probabilities that are probabilities (an ensemble's average).
_KEEPS_PROBABILITIES = {"Average", "Maximum", "Minimum"}
_DROPOUT_LAYERS = {"Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout",
                   "AlphaDropout"}
# Layers whose output has their input's shape: the units of an output are those of the layer before them.
_SAME_SHAPE = {"Activation", "Softmax", "Identity", "GaussianNoise"} | _DROPOUT_LAYERS
_CLIPPING_RNNS = {"LSTM", "GRU", "SimpleRNN", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"}
# Keras's preprocessing and augmentation layers: the module their classes are defined under.
_PREPROCESSING = "keras.src.layers.preprocessing"
#: How far a schedule's horizon may be from the training steps before W106 (relative).
HORIZON_TOLERANCE = 0.10

_IGNORE = re.compile(r"#.*?\bspecc:\s*ignore\b(?:\[([^\]]*)\])?")


@dataclass
class LintReport:
    """What lint found, and why rules were skipped (the data could not be read, say)."""

    diagnostics: list[Diagnostic]
    skipped: list[str] = field(default_factory=list)


def lint_plan(plan: Plan, built=None) -> list[Diagnostic]:
    """The plan's lint warnings, in source order, without those its `# specc: ignore[...]` comments silence.
    `built`: the plan's `specc.compile.build.Built`, if there is one already (else built here, without weights)."""
    return lint_report(plan, built).diagnostics


def lint_report(plan: Plan, built=None, epochs: int | None = None, limit: int | None = None) -> LintReport:
    """`lint_plan` with the reasons rules were skipped; `epochs`/`limit` as `specc run` overrides them."""
    if built is None:
        from specc.compile.build import build_shapes

        built = build_shapes(plan)
    lint = _Lint(plan, built, epochs, limit)
    found = lint.run([r for r in RULES.values() if r.needs != COST])
    return LintReport(_unsilenced(found, plan.source), lint.skipped)


def lint_cost(plan: Plan, cost) -> list[Diagnostic]:
    """The warnings of the rules that read the pre-flight cost (`cost`, a `specc.tools.cost.CostReport`), in
    source order, without those the spec's comments silence."""
    lint = _Lint(plan, None, None, None, cost)
    return _unsilenced(lint.run([r for r in RULES.values() if r.needs == COST]), plan.source)


def _unsilenced(found: list[Diagnostic], source: str) -> list[Diagnostic]:
    """`found` in source order, less the warnings that a `# specc: ignore[CODE, ...]` comment (a bare `ignore`: every
    code) silences on their line, or on any line of a statement written over several."""
    silenced: dict[int, set[str] | None] = {}
    for number, line in enumerate(source.splitlines(), 1):
        m = _IGNORE.search(line)
        if m:
            codes = m.group(1)
            silenced[number] = None if codes is None else {c.strip().upper() for c in codes.split(",") if c.strip()}

    def ignored(d: Diagnostic) -> bool:
        lines = range(d.span.line, d.span.end_line + 1) if d.span else ()
        return any(line in silenced and ((codes := silenced[line]) is None or d.code in codes) for line in lines)

    kept = [d for d in found if not ignored(d)]
    kept.sort(key=lambda d: (d.span.line, d.span.col) if d.span else (0, 0))
    return kept


def _number(value: Any) -> int | float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _name(value: Any) -> str | None:
    """An activation as written: `softmax`, or the class of a configured one."""
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, Obj):
        return value.cls.lower()
    return None


class _Lint:
    """What the rules read (the plan, its built shapes, its data's facts, the cost) and what they found."""

    def __init__(self, plan: Plan, built, epochs: int | None, limit: int | None, cost=None):
        self.plan, self.built, self.cost = plan, built, cost
        self.nodes = {n.name: n for n in plan.layers}
        self.epochs = epochs if epochs is not None else plan.train.epochs if plan.train else 1
        self.limit = limit
        self.found: list[Diagnostic] = []
        self.skipped: list[str] = []

    def warn(self, code: str, message: str, span: Span | None, hint: str | None = None,
             notes: list[str] | None = None) -> None:
        d = self.plan.diag(message, span, hint, notes)
        d.severity, d.code = RULES[code].severity, code
        self.found.append(d)

    def run(self, rules: list[Rule]) -> list[Diagnostic]:
        for r in rules:
            if r.needs != DATA or self.facts is not None:
                r.check(self)
        return self.found

    # -- facts of the data -------------------------------------------------

    @functools.cached_property
    def facts(self):
        """The data's facts, or None (and a reason in `skipped`) when the data cannot be read here."""
        plan = self.plan
        if plan.facts is not None:
            return plan.facts
        if plan.data is None:
            return None
        from specc.data.facts import infer_facts

        try:
            return infer_facts(plan.data, plan.file, plan.init, plan.source, offline=True)
        except DataError as err:
            self.skipped.append(f"data rules (W104, W106, W109, the last batch of W108) skipped: {err.first.message}")
            return None

    def training_examples(self) -> int | None:
        """Examples one epoch trains on: after `--limit` and the validation split (`train.steps` counts the same)."""
        from specc.data.facts import trained_examples

        facts = self.facts
        if facts is None or facts.examples is None or self.plan.train is None:
            return None
        return trained_examples(facts.examples, self.plan.train.validation_split, self.limit)

    # -- the loss against the output layers -------------------------------

    def losses(self) -> list[tuple[str, str, bool]]:
        """(output node, loss class, from_logits) for each output that a loss trains."""
        train = self.plan.train
        if train is None or train.loss is None:
            return []
        out = []
        for output, loss in zip(self.plan.outputs, output_losses(train.loss, len(self.plan.outputs))):
            if isinstance(loss, Obj):
                out.append((output, loss.cls, bool(loss.kwargs.get("from_logits", False))))
            elif isinstance(loss, str):
                out.append((output, loss_class(loss) or loss, False))
        return out

    def cross_entropies(self):
        """(loss class, from_logits, the activation it reads, the output's final activation, the layer that applies
        it, the output's units) for each output trained by a cross-entropy."""
        for output, cls, logits in self.losses():
            expects = loss_kind(cls).activation
            found = self.final_activation(output) if expects else None
            if found is not None:
                yield cls, logits, expects, found[0], found[1], self.units(output)

    def final_activation(self, name: str) -> tuple[str, LayerNode] | None:
        """The activation the output `name` ends in ("linear" if none), and the layer that applies it."""
        node = self.nodes.get(name)
        if node is None:
            return None
        if node.cls in _TRANSPARENT:
            return self.final_activation(node.inputs[0])
        if node.cls in _KEEPS_PROBABILITIES:
            found = [self.final_activation(i) for i in node.inputs]
            if found and all(f and f[0] in _PROBABILITIES for f in found):
                return found[0]
            return "linear", node
        if node.cls == "Softmax":
            return "softmax", node
        layer = node.kwargs.get("layer")
        kwargs = layer.kwargs if isinstance(layer, Obj) and "activation" not in node.kwargs else node.kwargs
        return _name(kwargs.get("activation")) or "linear", node

    def activation_span(self, node: LayerNode) -> Span | None:
        args = node.origin.args
        return args.get("activation") or args.get("layer") or node.origin.span

    def units(self, name: str) -> int | None:
        shape = self.built.tensors[name].shape
        return shape[-1] if shape else None

    def softmax_last_axis(self, node: LayerNode) -> bool:
        return node.cls != "Softmax" or node.kwargs.get("axis", -1) in (-1, len(self.built.tensors[node.name].shape) - 1)

    def loss_at(self) -> tuple[Span | None, str]:
        """The span of the `loss` setting, and where it is in words."""
        span = self.plan.train.span("loss") if self.plan.train else None
        return span, f"the loss is at line {span.line}" if span else "the loss"


def _layer_at(node: LayerNode) -> str:
    return f"`{node.name}` is at line {node.origin.span.line}" if node.origin.span else f"`{node.name}`"


# ------------------------------------------------------------------------------------------------ the rules
# In the order they run: the output and its loss, layers, then the rules that read the data, then the cost.


@rule("W110", "softmax-single-unit", "softmax over a single unit",
      "A softmax over one value is always 1.0: the output is constant and the model cannot learn. For one "
      "probability use sigmoid; for classes, one unit per class.")
def softmax_over_one_unit(lint: _Lint) -> None:
    for output in lint.plan.outputs:  # no loss needed
        found = lint.final_activation(output)
        if found and found[0] == "softmax" and lint.units(output) == 1 and lint.softmax_last_axis(found[1]):
            node = found[1]
            lint.warn("W110", f"`{node.name}` applies softmax over a single unit: its output is always 1.0",
                      lint.activation_span(node), notes=node.origin.notes,
                      hint="for one probability use `activation=sigmoid` (with binary cross-entropy); for "
                      "classes, one unit per class")


@rule("W101", "probabilities-into-logits", "probabilities into a loss that expects logits",
      "With `from_logits=true` the loss applies softmax (or sigmoid) itself. An output that already ends in "
      "one is squashed twice: the loss still falls, but its gradients are flattened and the model trains "
      "slowly to a worse optimum, with nothing to show why.")
def probabilities_into_logits(lint: _Lint) -> None:
    _, loss_at = lint.loss_at()
    for cls, logits, _, activation, node, _ in lint.cross_entropies():
        if logits and activation in _PROBABILITIES:
            lint.warn("W101", f"`{node.name}` ends in {activation}, but the loss `{_snake(cls)}(from_logits=true)` "
                      f"applies {activation} itself: it is applied twice", lint.activation_span(node),
                      notes=node.origin.notes + [loss_at],
                      hint=f"{_removal(node, activation)}: the loss then applies it, more stably than after the layer; "
                      "or set `from_logits=false`")


@rule("W102", "logits-into-probabilities", "logits into a loss that expects probabilities",
      "Cross-entropy losses read the output as probabilities unless told `from_logits=true` (Keras's default "
      "for the string names). A linear output is then clipped to [1e-7, 1 - 1e-7] (and, for categorical "
      "losses, divided by its sum): the loss is wrong and training stalls or diverges.")
def logits_into_probabilities(lint: _Lint) -> None:
    loss_span, _ = lint.loss_at()
    for cls, logits, expects, activation, node, _ in lint.cross_entropies():
        if not logits and activation not in _PROBABILITIES:
            what = "no activation" if activation == "linear" else f"`{activation}`"
            add = f"add `activation={expects}` to `{node.name}`"
            lint.warn("W102", f"the loss `{_snake(cls)}` expects probabilities, but the output `{node.name}` has {what} "
                      "(not a softmax or sigmoid)", loss_span, notes=[_layer_at(node)],
                      hint=add if cls == "CategoricalGeneralizedCrossEntropy" else  # it has no `from_logits`
                      f"write `from_logits=true` in the loss (`{_snake(cls)}(from_logits=true)`), or {add}")


@rule("W103", "binary-loss-on-softmax", "binary cross-entropy on a multi-class softmax",
      "Binary cross-entropy treats every output unit as its own yes/no question. On a softmax over several "
      "classes, with integer labels, it broadcasts each label against every unit and trains a model that "
      "predicts nothing useful, with plausible-looking accuracy.")
def binary_loss_on_softmax(lint: _Lint) -> None:
    loss_span, _ = lint.loss_at()
    for _, _, expects, activation, node, units in lint.cross_entropies():
        if expects == "sigmoid" and activation == "softmax" and units is not None and units > 1:
            lint.warn("W103", f"binary cross-entropy on a softmax over {units} classes: it scores each unit as "
                      "a separate yes/no question", loss_span, notes=[_layer_at(node)],
                      hint="for one label per example use `sparse_categorical_crossentropy` (integer labels) "
                      "or `categorical_crossentropy` (one-hot); for two classes, `dense(1, activation=sigmoid)`")


@rule("W105", "dropout-rate", "dropout rate outside [0, 1)",
      "A rate of 1.0 drops every value: the layer outputs zeros while training (Keras accepts it). RNN "
      "layers clip a `dropout=`/`recurrent_dropout=` outside [0, 1] to it silently, and attention layers do "
      "not check theirs. Rates Keras rejects are errors of the build instead.")
def dropout_rate(lint: _Lint) -> None:
    for node in lint.plan.layers:
        _dropout_rates(lint, node, node.cls, node.kwargs, None)


def _dropout_rates(lint: _Lint, node: LayerNode, cls: str, kwargs: dict, wrapped: str | None) -> None:
    names = (["rate"] if cls in _DROPOUT_LAYERS else []) + ["dropout", "recurrent_dropout"]
    for arg in names:
        rate = _number(kwargs.get(arg))
        if rate is None or 0 <= rate < 1:
            continue
        if rate == 1:
            effect = "it drops every value while training"
        elif cls in _CLIPPING_RNNS:
            effect = f"Keras's {cls} silently clips it to {1.0 if rate > 1 else 0.0}"
        else:
            effect = "it is not a probability"
        span = node.origin.args.get(wrapped or arg) or node.origin.span
        what = f"{cls} in {node.cls}" if wrapped else cls
        lint.warn("W105", f"dropout rate `{arg}={rate}` of `{node.name}` ({what}) is outside [0, 1): {effect}",
                  span, notes=node.origin.notes,
                  hint="a rate is the fraction of values dropped: 0.1 to 0.5 is usual; 0 (or no dropout) for none")
    for key, value in kwargs.items():  # a wrapped layer: `bidirectional(lstm(64, dropout=0.2))`
        if isinstance(value, Obj) and value.kind == "layer":
            _dropout_rates(lint, node, value.cls, value.kwargs, wrapped or key)


@rule("W107", "unused-output", "output never used",
      "A layer or input whose output reaches no model output is silently left out of the model by Keras "
      "(an input is still required when predicting): usually a forgotten `output` name or a typo in a "
      "tensor name.")
def unused_output(lint: _Lint) -> None:
    plan = lint.plan
    used: set[str] = set()
    todo = list(plan.outputs)
    while todo:
        name = todo.pop()
        if name not in used:
            used.add(name)
            todo.extend(lint.nodes[name].inputs if name in lint.nodes else [])
    fed = {i for n in plan.layers for i in n.inputs}
    for inp in plan.inputs:
        if inp.name not in used:
            lint.warn("W107", f"input `{inp.name}` reaches no model output: the model ignores it, yet it must "
                      "be fed", inp.origin.span, hint=f"use it, or remove `input {inp.name}`")
    for node in plan.layers:
        if node.name in used or node.name in fed:  # report the end of an unused chain, once
            continue
        lint.warn("W107", f"the output of `{node.name}` ({node.cls}) is never used: it reaches no model output, "
                  "and Keras leaves it out of the model", node.origin.span, notes=node.origin.notes,
                  hint=f"list it in `output` (`output {', '.join(plan.outputs)}, {node.name}`), or remove it")


@rule("W111", "training-shape", "output shape differs between training and inference",
      "Keras's augmentation layers act only while training; at inference most pass their input through. "
      "One that changes the shape while training (Keras 3's `random_crop`, whose inference output is its "
      "input uncropped) gives the layers after it another shape when the model is evaluated or predicts: "
      "a layer that pools it away still runs, on images the model never trained on.")
def training_shape(lint: _Lint) -> None:
    """What each preprocessing layer outputs while training and at inference, as Keras computes it."""
    for node in lint.plan.layers:
        module = getattr(catalog("layer").get_class(node.cls), "__module__", "")
        if not module.startswith(_PREPROCESSING) or len(node.inputs) != 1:
            continue
        given = lint.built.tensors[node.inputs[0]]
        if None in given.shape[1:]:
            continue
        shapes = _training_and_inference_shapes(node, tuple(given.shape[1:]), given.dtype)
        if shapes is None or shapes[0] == shapes[1]:
            continue
        training, inference = shapes
        lint.warn("W111", f"`{node.name}` outputs {training} while training but {inference} at inference: "
                  "the layers after it see another shape when the model is evaluated or predicts",
                  node.origin.span, notes=node.origin.notes, hint=_shape_keeping(lint, node, training, inference))


def _shape_keeping(lint: _Lint, node: LayerNode, training: tuple, inference: tuple) -> str:
    """An augmentation with the same shape in both modes: for a random crop, the shift it amounts to."""
    if node.cls != "RandomCrop" or len(training) != 3 or len(inference) != 3:
        return ("use an augmentation that keeps the shape, or follow it with a layer that gives one shape "
                "in both modes (`center_crop`, `resizing`)")
    (h, w), (big_h, big_w) = training[:2], inference[:2]
    tensors = lint.built.tensors
    pad = lint.nodes.get(node.inputs[0])
    layer = lint.built.layers.get(pad.name) if pad is not None and pad.cls == "ZeroPadding2D" else None
    padding = getattr(layer, "padding", None)
    if pad is not None and padding and inference == tuple(tensors[node.inputs[0]].shape[1:]) and \
            tuple(tensors[pad.inputs[0]].shape[1:]) == training and \
            padding[0][0] == padding[0][1] and padding[1][0] == padding[1][1]:
        # A crop of the padded image is a whole-pixel shift of the image, zero-filled: a uniform shift in
        # (-p - 0.5, p + 0.5) pixels, rounded by `nearest`, takes each of -p..p equally often.
        shift = _translation(padding[0][0], h, padding[1][0], w)
        return (f"replace `{_source(lint.plan, pad)}` and `{_source(lint.plan, node)}` with `{shift}, "
                f"fill_mode=constant, interpolation=nearest)`: the same zero-filled whole-pixel shifts, each "
                f"equally often, and {training} in both modes")
    shift = _translation((big_h - h) // 2, big_h, (big_w - w) // 2, big_w)
    return (f"for a random crop while training and the centre at inference, use `{shift}, "
            f"interpolation=nearest)` then `center_crop({h}, {w})`")


@rule("W108", "batch-norm-of-one", "batch norm over a single value",
      "Batch normalization standardizes each channel over the batch (and any spatial axes). Over one value "
      "its output is always `beta` whatever the input, so nothing before it learns. On JAX a data-parallel "
      "batch is normalized across all devices together, so it is the global batch that counts.")
def batch_norm_of_one(lint: _Lint) -> None:
    """Batches of one example, or (when the data can be read) a last batch of one: it reads the facts if any."""
    train = lint.plan.train
    if train is None:
        return
    batch = train.batch_size
    examples = lint.training_examples() if lint.facts is not None and lint.plan.distribution is None else None
    last = examples % batch if examples else 0
    for node in lint.plan.layers:
        if node.cls != "BatchNormalization" or not _over_one_value(lint, node):
            continue
        if batch == 1:
            why, fix = "batches of 1 example", "`batch_size: 2` or more"
        elif examples and last == 1:
            why = f"the last batch of every epoch, which holds 1 example ({examples:,} training examples, batch {batch})"
            better = next(b for d in range(1, batch + 2) for b in (batch + d, batch - d) if b > 1 and examples % b != 1)
            fix = f"a batch size that leaves more than one example over (`batch_size: {better}`)"
        else:
            continue
        span = train.span("batch_size")
        batch_at = f"batch_size is at line {span.line}" if span else f"batch_size is {batch}"
        lint.warn("W108", f"batch norm `{node.name}` normalizes each channel over one value in {why}: "
                  "its output is then a constant and no gradient flows through it", node.origin.span,
                  notes=node.origin.notes + [batch_at],
                  hint=f"use {fix}, or `layernorm`, which does not depend on the batch")


def _over_one_value(lint: _Lint, node: LayerNode) -> bool:
    """Whether batch norm `node` normalizes over no axis but the batch's (every other axis is its own, or of size 1)."""
    shape = lint.built.tensors[node.inputs[0]].shape
    axes = node.kwargs.get("axis", -1)
    axes = {a % len(shape) for a in (axes if isinstance(axes, (list, tuple)) else [axes])}
    spread = [d for k, d in enumerate(shape) if k and k not in axes]
    return None not in spread and math.prod(spread) == 1


@rule("W104", "units-not-classes", "output units do not match the number of classes",
      "A classifier needs one output per class. With fewer, labels beyond the last unit are out of range "
      "(the run refuses them, after loading the data); with more, the model spends probability on classes "
      "that never occur and its loss at initialisation is not ln(classes).", needs=DATA)
def units_not_classes(lint: _Lint) -> None:
    classes = lint.facts.classes
    if not classes:
        return
    for output, cls, _ in lint.losses():
        units = lint.units(output)
        if not loss_kind(cls).classifier or units is None or units == classes or output not in lint.nodes:
            continue
        layer = lint.nodes[output]
        while layer.cls in _SAME_SHAPE and layer.inputs[0] in lint.nodes:  # to the layer that has the units
            layer = lint.nodes[layer.inputs[0]]
        args = layer.origin.args
        span = args.get("units") or args.get("filters") or args.get("layer") or layer.origin.span
        extra = units - classes
        effect = (f"labels from {units} up have no output" if units < classes else
                  f"{extra} of them stand{'s' if extra == 1 else ''} for classes the data does not have")
        call = _snake(layer.cls)
        lint.warn("W104", f"`{layer.name}` has {units} output units, but the data has {classes} classes: "
                  + effect, span, notes=layer.origin.notes,
                  hint=f"give it {classes} units: `{call}({classes}, ...)` or `{call}(data.classes, ...)`"
                  if "units" in layer.kwargs or "filters" in layer.kwargs
                  else f"give it {classes} outputs, one per class (`data.classes`)")


@rule("W106", "schedule-horizon", "learning-rate schedule horizon does not match the training steps",
      "A decaying schedule is written for a number of steps. If training is longer, the last steps all run "
      "at the final (often zero) rate; if shorter, training stops before the rate has come down. Piecewise "
      "boundaries after the last step are never reached.", needs=DATA)
def schedule_horizon(lint: _Lint) -> None:
    train = lint.plan.train
    examples = lint.training_examples()
    if train is None or not examples or not isinstance(train.optimizer, Obj):
        return
    schedule = train.optimizer.kwargs.get("learning_rate")
    if not isinstance(schedule, Obj) or schedule.kind != "schedule":
        return
    per_epoch = math.ceil(examples / train.batch_size)
    steps = per_epoch * lint.epochs
    counted = (f"{steps:,} steps ({per_epoch:,} per epoch: {examples:,} examples at batch "
               f"{train.batch_size}, {lint.epochs} epoch{'s' if lint.epochs != 1 else ''})")
    setting = train.span("optimizer")
    if schedule.cls == "PiecewiseConstantDecay":
        _late_boundaries(lint, setting, schedule, steps, counted)
    else:
        _decay_horizon(lint, setting, schedule, steps, counted)


def _late_boundaries(lint: _Lint, setting: Span | None, schedule: Obj, steps: int, counted: str) -> None:
    """W106 for a piecewise schedule written at `setting`: step s (counted from 0) takes the value after boundary b
    when s > b, and the last step is steps - 1."""
    bounds = schedule.kwargs.get("boundaries")
    late = [b for b in bounds if _number(b) is not None and b >= steps - 1] if isinstance(bounds, list) else []
    if late:
        lint.warn("W106", f"the learning-rate boundar{'ies' if len(late) > 1 else 'y'} "
                  f"{', '.join(f'{b:,}' for b in late)} {'are' if len(late) > 1 else 'is'} never reached: "
                  f"training runs {counted}", _find(lint.plan, setting, "boundaries") or setting,
                  hint=f"put the boundaries below {steps - 1:,} (e.g. at fractions of `train.steps`), or train "
                  "for more epochs")


def _horizon(schedule: Obj) -> tuple[int | float, int | float] | None:
    """(the step a decaying schedule ends at, its warmup steps), or None for one without a horizon (exponential,
    inverse time) or one that restarts."""
    k = schedule.kwargs
    decay, warmup = _number(k.get("decay_steps")), _number(k.get("warmup_steps", 0))
    if decay is None or warmup is None:
        return None
    if schedule.cls == "CosineDecay":
        return decay + warmup, warmup
    if schedule.cls == "PolynomialDecay" and not k.get("cycle"):
        return decay, 0
    return None


def _decay_horizon(lint: _Lint, setting: Span | None, schedule: Obj, steps: int, counted: str) -> None:
    """W106 for a decaying schedule (written at `setting`) whose horizon is off the training steps by more than `HORIZON_TOLERANCE`."""
    found = _horizon(schedule)
    if found is None:
        return
    horizon, warmup = found
    if abs(horizon - steps) <= HORIZON_TOLERANCE * steps:
        return
    if horizon < steps:
        effect = f"the last {steps - horizon:,} steps all run at the final rate"
    else:
        effect = f"training stops {horizon - steps:,} steps before the rate has decayed"
    fix, less = f"{steps - warmup:_}", f" - {warmup}" if warmup else ""
    hint = (f"write `decay_steps={fix}`{' (the steps after the warmup)' if warmup else ''}, "
            f"or write `decay_steps=train.steps{less}`")
    if lint.plan.constants.get("train.steps") in (horizon, horizon - warmup):
        # The spec already follows its training: only `--epochs`/`--limit` of this run shorten or lengthen it.
        hint = ("the schedule follows `train.steps` of the spec as written; `--epochs` and `--limit` change the "
                "training of this run only: expect the rate not to end where the spec's schedule ends")
    lint.warn("W106", f"`{_snake(schedule.cls)}` decays over {horizon:,} steps, but training runs {counted}: "
              f"{effect}", _find(lint.plan, setting, "decay_steps") or setting, hint=hint)


@rule("W109", "input-shape", "input shape does not match the data",
      "The examples the data section produces do not fit the declared input (not equal, nor equal up to "
      "axes of size 1): `specc run` would stop with a data error after loading everything.", needs=DATA)
def input_shape(lint: _Lint) -> None:
    import numpy as np

    from specc.data.prepare import Located, fit_shape

    shape = lint.facts.example_shape
    if shape is None or lint.plan.data is None or lint.plan.data.is_text:
        return
    shapes = shape if isinstance(shape, dict) else {lint.plan.inputs[0].name: shape}
    where = Located(lint.plan)
    for inp in lint.plan.inputs:
        have = shapes.get(inp.name)
        if have is None:
            continue
        try:  # the same rule as the run's: equal, or equal up to axes of size 1
            fit_shape(np.zeros((0, *have), np.float32), inp.shape, inp.name, where, "x")
        except DataError as err:
            lint.warn("W109", f"input `{inp.name}` is declared {tuple(inp.shape)}, but the data's examples have "
                      f"shape {tuple(have)}", inp.origin.span, hint=err.first.hint,
                      notes=[f"`specc run` would stop with: {err.first.message}"])


@rule("W201", "batch-does-not-fit", "the batch does not fit the device's memory",
      "A training step at the spec's batch size needs more memory than the device has: `specc run` would "
      "stop with an out-of-memory error once the step is compiled. The figure is the peak of XLA's compiled "
      "step (`specc summary` compiles it; `specc check` does not, it takes seconds), and the hint gives the "
      "largest batch that fits and the gradient-accumulation alternative.", needs=COST)
def batch_does_not_fit(lint: _Lint) -> None:
    """From the cost's figures: the largest batch that fits, and gradient accumulation to keep the batch."""
    cost, train = lint.cost, lint.plan.train
    if cost is None or cost.fits is not False or train is None:
        return
    need, have = format_bytes(cost.peak_bytes_per_device), format_bytes(cost.device_memory_bytes)
    where = f"per device ({cost.devices} devices)" if cost.devices > 1 else "on the device"
    message = (f"batch_size {cost.batch_size} needs {need} {where} for a training step, more than "
               f"{cost.margin:.0%} of its {have} ({cost.memory_source})")
    notes = [(f"peak of XLA's compiled training step (arguments + outputs - donated + temporaries); "
              f"{100 - cost.margin * 100:.0f}% is kept free for what the step's analysis does not count")]
    if cost.largest_batch is None:
        hint = ("even a batch of 1 does not fit: use a smaller model, a device with more memory, "
                "or split the weights with `device { parallel: model ... }`")
    else:
        # The fewest accumulation steps that split the batch evenly into batches that fit (1 always does).
        k = next(k for k in range(math.ceil(cost.batch_size / cost.largest_batch), cost.batch_size + 1)
                 if cost.batch_size % k == 0)
        hint = (f"use `batch_size: {cost.largest_batch}` (the largest that fits, checked by compiling it), or keep "
                f"the effective batch with gradient accumulation: `batch_size: {cost.batch_size // k}` and "
                f"`gradient_accumulation_steps={k}` in the optimizer, e.g. `optimizer: adam(..., "
                f"gradient_accumulation_steps={k})`")
    lint.warn("W201", message, train.span("batch_size"), hint, notes)


#: The codes `lint_plan` reports (every rule but the cost's): code -> (summary, why it matters).
LINT_CODES: dict[str, tuple[str, str]] = {r.code: (r.summary, r.docs) for r in RULES.values() if r.needs != COST}


def rules_table() -> str:
    """The table of rules in docs/lint.md, made from `RULES` (a test keeps the docs' copy equal to it)."""
    rows = ["| code | name | severity | reads | summary |", "| --- | --- | --- | --- | --- |"]
    for r in sorted(RULES.values(), key=lambda r: r.code):
        rows.append(f"| [{r.code}](#{_anchor(r)}) | `{r.name}` | {r.severity} | {r.needs} | {r.summary} |")
    return "\n".join(rows)


def _anchor(r: Rule) -> str:
    """GitHub's anchor of the rule's section, `## W105: dropout rate outside [0, 1)` -> `w105-dropout-rate-outside-0-1`."""
    return re.sub(r"[^\w\- ]", "", f"{r.code}: {r.summary}".lower()).replace(" ", "-")


def _training_and_inference_shapes(node: LayerNode, shape: tuple, dtype: str) -> tuple[tuple, tuple] | None:
    """The example shapes a fresh `node` outputs on one example of `shape` with `training=True` and `False`, or
    None if Keras cannot run it on zeros (a layer that needs `adapt`, text). Keras's own call: traced without
    computing (`compute_output_spec`, as Keras's symbolic calls are) where the layer allows it, else run eagerly
    on zeros (a layer that cannot be traced, such as `random_crop`); either way the shapes of a real call."""
    import random

    import numpy as np

    from specc.compile.build import make_layer

    keras = import_keras()
    from keras.src import backend

    state = random.getstate()  # a layer without a seed draws one: leave the weights of the next build alone
    try:
        layer = make_layer(node)
        out = []
        for training in (True, False):
            def call(x, training=training):
                return layer(x, training=training, **node.call_kwargs)

            try:
                spec = backend.compute_output_spec(call, keras.KerasTensor((1, *shape), dtype))
            except Exception:  # noqa: BLE001 - a layer JAX cannot trace (value-dependent slices): run it
                spec = call(np.zeros((1, *shape), dtype))
            out.append(tuple(spec.shape[1:]))
        return out[0], out[1]
    except Exception:  # noqa: BLE001 - a layer that cannot run on zeros: no shapes to compare
        return None
    finally:
        random.setstate(state)


def _translation(pad_h: int, size_h: int, pad_w: int, size_w: int) -> str:
    """`random_translation(` with factors whose rounded shifts are each of -pad..pad equally often."""
    return f"random_translation({pad_h + 0.5:g} / {size_h}, {pad_w + 0.5:g} / {size_w}"


def _source(plan: Plan, node: LayerNode) -> str:
    """A layer call as the spec writes it (its first line), or its name."""
    span = node.origin.span
    if span is None:
        return node.name
    line = plan.source.splitlines()[span.line - 1]
    return line[span.col - 1: span.end_col - 1] if span.end_line == span.line else line[span.col - 1:].rstrip()


def _removal(node: LayerNode, activation: str) -> str:
    """How to take an activation off the output: an argument, or a layer of its own."""
    if node.cls in ("Activation", "Softmax"):
        return f"remove the `{activation}` layer" + (f" at line {node.origin.span.line}" if node.origin.span else "")
    return f"drop `activation={activation}`"


def _snake(cls: str) -> str:
    """The spec spelling of a Keras class: `CosineDecay` -> `cosine_decay`."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", cls).lower()


def _find(plan: Plan, span: Span | None, word: str) -> Span | None:
    """The span of `word=` inside `span` (an argument of a setting, which keeps only the setting's span)."""
    if span is None:
        return None
    lines = plan.source.splitlines()
    for line in range(span.line, min(span.end_line, len(lines)) + 1):
        text = lines[line - 1]
        start = span.col - 1 if line == span.line else 0
        m = re.compile(rf"\b{re.escape(word)}\s*=").search(text, start)
        if m:
            return Span(line=line, col=m.start() + 1, end_line=line, end_col=m.start() + 1 + len(word))
    return None
