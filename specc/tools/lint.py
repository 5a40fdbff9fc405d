"""Lint: mistakes that Keras accepts without a word and that cost a training run to find.

A spec that checks is a model Keras can build; it can still train badly or not at all: softmax applied twice,
an output size that is not the number of classes, a schedule that ends long before training does. `lint_plan`
looks at the whole plan, its built shapes and the facts of its data (`specc.data.facts`), and reports each such
mistake as a warning with a code (`LINT_CODES`, documented in docs/lint.md), located at its culprit.
`specc check` prints them (errors with `--strict`), `specc run` before training. A comment
`# specc: ignore[W101]` (or `ignore[W101, W104]`, or a bare `ignore` for all) on the reported line silences them.

Rules only warn about what Keras accepts: a value Keras refuses is already an error of the build, before lint.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from specc.core.errors import DataError, Diagnostic
from specc.runtime.keras_env import import_keras
from specc.core.nodes import Span
from specc.core.plan import LayerNode, Obj, Plan

#: Every lint code: (title, why it matters). docs/lint.md documents each one; a test keeps the two in step.
LINT_CODES: dict[str, tuple[str, str]] = {
    "W101": ("probabilities into a loss that expects logits",
             "With `from_logits=true` the loss applies softmax (or sigmoid) itself. An output that already ends in "
             "one is squashed twice: the loss still falls, but its gradients are flattened and the model trains "
             "slowly to a worse optimum, with nothing to show why."),
    "W102": ("logits into a loss that expects probabilities",
             "Cross-entropy losses read the output as probabilities unless told `from_logits=true` (Keras's default "
             "for the string names). A linear output is then clipped to [1e-7, 1 - 1e-7] (and, for categorical "
             "losses, divided by its sum): the loss is wrong and training stalls or diverges."),
    "W103": ("binary cross-entropy on a multi-class softmax",
             "Binary cross-entropy treats every output unit as its own yes/no question. On a softmax over several "
             "classes, with integer labels, it broadcasts each label against every unit and trains a model that "
             "predicts nothing useful, with plausible-looking accuracy."),
    "W104": ("output units do not match the number of classes",
             "A classifier needs one output per class. With fewer, labels beyond the last unit are out of range "
             "(the run refuses them, after loading the data); with more, the model spends probability on classes "
             "that never occur and its loss at initialisation is not ln(classes)."),
    "W105": ("dropout rate outside [0, 1)",
             "A rate of 1.0 drops every value: the layer outputs zeros while training (Keras accepts it). RNN "
             "layers clip a `dropout=`/`recurrent_dropout=` outside [0, 1] to it silently, and attention layers do "
             "not check theirs. Rates Keras rejects are errors of the build instead."),
    "W106": ("learning-rate schedule horizon does not match the training steps",
             "A decaying schedule is written for a number of steps. If training is longer, the last steps all run "
             "at the final (often zero) rate; if shorter, training stops before the rate has come down. Piecewise "
             "boundaries after the last step are never reached."),
    "W107": ("output never used",
             "A layer or input whose output reaches no model output is silently left out of the model by Keras "
             "(an input is still required when predicting): usually a forgotten `output` name or a typo in a "
             "tensor name."),
    "W108": ("batch norm over a single value",
             "Batch normalization standardizes each channel over the batch (and any spatial axes). Over one value "
             "its output is always `beta` whatever the input, so nothing before it learns. On JAX a data-parallel "
             "batch is normalized across all devices together, so it is the global batch that counts."),
    "W109": ("input shape does not match the data",
             "The examples the data section produces do not fit the declared input (not equal, nor equal up to "
             "axes of size 1): `specc run` would stop with a data error after loading everything."),
    "W110": ("softmax over a single unit",
             "A softmax over one value is always 1.0: the output is constant and the model cannot learn. For one "
             "probability use sigmoid; for classes, one unit per class."),
    "W111": ("output shape differs between training and inference",
             "Keras's augmentation layers act only while training; at inference most pass their input through. "
             "One that changes the shape while training (Keras 3's `random_crop`, whose inference output is its "
             "input uncropped) gives the layers after it another shape when the model is evaluated or predicts: "
             "a layer that pools it away still runs, on images the model never trained on."),
}

# Cross-entropy losses by Keras class: the activation their probabilities come from.
_CROSS_ENTROPY = {"BinaryCrossentropy": "sigmoid", "BinaryFocalCrossentropy": "sigmoid",
                  "CategoricalCrossentropy": "softmax", "CategoricalFocalCrossentropy": "softmax",
                  "SparseCategoricalCrossentropy": "softmax", "CategoricalGeneralizedCrossEntropy": "softmax"}
_CLASSIFIERS = {"CategoricalCrossentropy", "CategoricalFocalCrossentropy", "SparseCategoricalCrossentropy",
                "CategoricalGeneralizedCrossEntropy"}
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
    found = lint.run()
    silenced = ignores(plan.source)
    kept = [d for d in found if not is_ignored(d, silenced)]
    kept.sort(key=lambda d: (d.span.line, d.span.col) if d.span else (0, 0))
    return LintReport(kept, lint.skipped)


def ignores(source: str) -> dict[int, set[str] | None]:
    """Line -> the codes its `# specc: ignore[...]` comment silences (None: all)."""
    out: dict[int, set[str] | None] = {}
    for number, line in enumerate(source.splitlines(), 1):
        m = _IGNORE.search(line)
        if m:
            out[number] = None if m.group(1) is None else {c.strip().upper() for c in m.group(1).split(",") if c.strip()}
    return out


def is_ignored(d: Diagnostic, silenced: dict[int, set[str] | None]) -> bool:
    if d.span is None:
        return False
    for line in range(d.span.line, d.span.end_line + 1):  # a statement over several lines: a comment on any
        if line in silenced and (silenced[line] is None or d.code in silenced[line]):
            return True
    return False


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
    def __init__(self, plan: Plan, built, epochs: int | None, limit: int | None):
        self.plan, self.built = plan, built
        self.nodes = {n.name: n for n in plan.layers}
        self.epochs = epochs if epochs is not None else plan.train.epochs if plan.train else 1
        self.limit = limit
        self.found: list[Diagnostic] = []
        self.skipped: list[str] = []

    def warn(self, code: str, message: str, span: Span | None, hint: str | None = None,
             notes: list[str] | None = None) -> None:
        d = self.plan.diag(message, span, hint, notes)
        d.severity, d.code = "warning", code
        self.found.append(d)

    def run(self) -> list[Diagnostic]:
        self.check_outputs()
        self.check_dropout()
        self.check_unused()
        self.check_training_shapes()
        facts = self.facts()
        self.check_batch_norm(facts)
        if facts is not None:
            self.check_classes(facts)
            self.check_schedule(facts)
            self.check_input_shapes(facts)
        return self.found

    # -- facts of the data -------------------------------------------------

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

    def training_examples(self, facts) -> int | None:
        """Examples one epoch trains on: after `--limit` and the validation split (`train.steps` counts the same)."""
        from specc.data.facts import trained_examples

        if facts.examples is None or self.plan.train is None:
            return None
        return trained_examples(facts.examples, self.plan.train.validation_split, self.limit)

    # -- the loss against the output layers -------------------------------

    def losses(self) -> list[tuple[str, str, bool]]:
        """(output node, loss class, from_logits) for each output that a loss trains."""
        train = self.plan.train
        if train is None or train.loss is None:
            return []
        from specc.compile.catalog import catalog

        given = train.loss if isinstance(train.loss, list) else [train.loss] * len(self.plan.outputs)
        out = []
        for output, loss in zip(self.plan.outputs, given):
            if isinstance(loss, Obj):
                out.append((output, loss.cls, bool(loss.kwargs.get("from_logits", False))))
            elif isinstance(loss, str):
                out.append((output, catalog("loss").class_name(loss) or loss, False))
        return out

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

    def check_outputs(self) -> None:
        plan = self.plan
        loss_span = plan.train.span("loss") if plan.train else None
        for output in plan.outputs:  # W110 needs no loss
            found = self.final_activation(output)
            if found and found[0] == "softmax" and self.units(output) == 1 and self.softmax_last_axis(found[1]):
                node = found[1]
                self.warn("W110", f"`{node.name}` applies softmax over a single unit: its output is always 1.0",
                          self.activation_span(node), notes=node.origin.notes,
                          hint="for one probability use `activation=sigmoid` (with binary cross-entropy); for "
                          "classes, one unit per class")
        for output, cls, logits in self.losses():
            if cls not in _CROSS_ENTROPY:
                continue
            found = self.final_activation(output)
            if found is None:
                continue
            activation, node = found
            units = self.units(output)
            loss_at = f"the loss is at line {loss_span.line}" if loss_span else "the loss"
            layer_at = f"`{node.name}` is at line {node.origin.span.line}" if node.origin.span else f"`{node.name}`"
            expects = _CROSS_ENTROPY[cls]
            if logits and activation in _PROBABILITIES:
                self.warn("W101", f"`{node.name}` ends in {activation}, but the loss `{_snake(cls)}(from_logits=true)` "
                          f"applies {activation} itself: it is applied twice", self.activation_span(node),
                          notes=node.origin.notes + [loss_at],
                          hint=f"{_removal(node, activation)}: the loss then applies it, more stably than after the layer; "
                          "or set `from_logits=false`")
            elif not logits and activation not in _PROBABILITIES:
                what = "no activation" if activation == "linear" else f"`{activation}`"
                add = f"add `activation={expects}` to `{node.name}`"
                self.warn("W102", f"the loss `{_snake(cls)}` expects probabilities, but the output `{node.name}` has {what} "
                          "(not a softmax or sigmoid)", loss_span, notes=[layer_at],
                          hint=add if cls == "CategoricalGeneralizedCrossEntropy" else  # it has no `from_logits`
                          f"write `from_logits=true` in the loss (`{_snake(cls)}(from_logits=true)`), or {add}")
            if expects == "sigmoid" and activation == "softmax" and units is not None and units > 1:
                self.warn("W103", f"binary cross-entropy on a softmax over {units} classes: it scores each unit as "
                          "a separate yes/no question", loss_span, notes=[layer_at],
                          hint="for one label per example use `sparse_categorical_crossentropy` (integer labels) "
                          "or `categorical_crossentropy` (one-hot); for two classes, `dense(1, activation=sigmoid)`")

    def softmax_last_axis(self, node: LayerNode) -> bool:
        return node.cls != "Softmax" or node.kwargs.get("axis", -1) in (-1, len(self.built.tensors[node.name].shape) - 1)

    def check_classes(self, facts) -> None:
        classes = facts.classes
        if not classes:
            return
        for output, cls, _ in self.losses():
            units = self.units(output)
            if cls not in _CLASSIFIERS or units is None or units == classes or output not in self.nodes:
                continue
            layer = self.nodes[output]
            while layer.cls in _SAME_SHAPE and layer.inputs[0] in self.nodes:  # to the layer that has the units
                layer = self.nodes[layer.inputs[0]]
            args = layer.origin.args
            span = args.get("units") or args.get("filters") or args.get("layer") or layer.origin.span
            extra = units - classes
            effect = (f"labels from {units} up have no output" if units < classes else
                      f"{extra} of them stand{'s' if extra == 1 else ''} for classes the data does not have")
            call = _snake(layer.cls)
            self.warn("W104", f"`{layer.name}` has {units} output units, but the data has {classes} classes: "
                      + effect, span, notes=layer.origin.notes,
                      hint=f"give it {classes} units: `{call}({classes}, ...)` or `{call}(data.classes, ...)`"
                      if "units" in layer.kwargs or "filters" in layer.kwargs
                      else f"give it {classes} outputs, one per class (`data.classes`)")

    # -- layers ---------------------------------------------------------

    def check_dropout(self) -> None:
        for node in self.plan.layers:
            self.dropout_rates(node, node.cls, node.kwargs, None)

    def dropout_rates(self, node: LayerNode, cls: str, kwargs: dict, wrapped: str | None) -> None:
        names = (["rate"] if cls in _DROPOUT_LAYERS else []) + ["dropout", "recurrent_dropout"]
        for arg in names:
            rate = kwargs.get(arg)
            if _number(rate) is None or 0 <= rate < 1:
                continue
            if rate == 1:
                effect = "it drops every value while training"
            elif cls in _CLIPPING_RNNS:
                effect = f"Keras's {cls} silently clips it to {1.0 if rate > 1 else 0.0}"
            else:
                effect = "it is not a probability"
            span = node.origin.args.get(wrapped or arg) or node.origin.span
            what = f"{cls} in {node.cls}" if wrapped else cls
            self.warn("W105", f"dropout rate `{arg}={rate}` of `{node.name}` ({what}) is outside [0, 1): {effect}",
                      span, notes=node.origin.notes,
                      hint="a rate is the fraction of values dropped: 0.1 to 0.5 is usual; 0 (or no dropout) for none")
        for key, value in kwargs.items():  # a wrapped layer: `bidirectional(lstm(64, dropout=0.2))`
            if isinstance(value, Obj) and value.kind == "layer":
                self.dropout_rates(node, value.cls, value.kwargs, wrapped or key)

    def check_unused(self) -> None:
        plan = self.plan
        used: set[str] = set()
        todo = list(plan.outputs)
        while todo:
            name = todo.pop()
            if name not in used:
                used.add(name)
                todo.extend(self.nodes[name].inputs if name in self.nodes else [])
        fed = {i for n in plan.layers for i in n.inputs}
        for inp in plan.inputs:
            if inp.name not in used:
                self.warn("W107", f"input `{inp.name}` reaches no model output: the model ignores it, yet it must "
                          "be fed", inp.origin.span, hint=f"use it, or remove `input {inp.name}`")
        for node in plan.layers:
            if node.name in used or node.name in fed:  # report the end of an unused chain, once
                continue
            self.warn("W107", f"the output of `{node.name}` ({node.cls}) is never used: it reaches no model output, "
                      "and Keras leaves it out of the model", node.origin.span, notes=node.origin.notes,
                      hint=f"list it in `output` (`output {', '.join(plan.outputs)}, {node.name}`), or remove it")

    def check_batch_norm(self, facts) -> None:
        train = self.plan.train
        if train is None:
            return
        batch = train.batch_size
        examples = self.training_examples(facts) if facts is not None and self.plan.distribution is None else None
        last = examples % batch if examples else 0
        for node in self.plan.layers:
            if node.cls != "BatchNormalization":
                continue
            shape = self.built.tensors[node.inputs[0]].shape
            axes = node.kwargs.get("axis", -1)
            axes = {a % len(shape) for a in (axes if isinstance(axes, (list, tuple)) else [axes])}
            spread = [d for k, d in enumerate(shape) if k and k not in axes]
            if None in spread or math.prod(spread) != 1:
                continue
            if batch == 1:
                why, fix = "batches of 1 example", "`batch_size: 2` or more"
            elif last == 1:
                why = f"the last batch of every epoch, which holds 1 example ({examples:,} training examples, batch {batch})"
                better = next(b for d in range(1, batch + 2) for b in (batch + d, batch - d) if b > 1 and examples % b != 1)
                fix = f"a batch size that leaves more than one example over (`batch_size: {better}`)"
            else:
                continue
            span = train.span("batch_size")
            batch_at = f"batch_size is at line {span.line}" if span else f"batch_size is {batch}"
            self.warn("W108", f"batch norm `{node.name}` normalizes each channel over one value in {why}: "
                      "its output is then a constant and no gradient flows through it", node.origin.span,
                      notes=node.origin.notes + [batch_at],
                      hint=f"use {fix}, or `layernorm`, which does not depend on the batch")

    def check_training_shapes(self) -> None:
        """W111: what each preprocessing layer outputs while training and at inference, as Keras computes it."""
        from specc.compile.catalog import catalog

        for node in self.plan.layers:
            module = getattr(catalog("layer").get_class(node.cls), "__module__", "")
            if not module.startswith(_PREPROCESSING) or len(node.inputs) != 1:
                continue
            given = self.built.tensors[node.inputs[0]]
            if None in given.shape[1:]:
                continue
            shapes = _training_and_inference_shapes(node, tuple(given.shape[1:]), given.dtype)
            if shapes is None or shapes[0] == shapes[1]:
                continue
            training, inference = shapes
            self.warn("W111", f"`{node.name}` outputs {training} while training but {inference} at inference: "
                      "the layers after it see another shape when the model is evaluated or predicts",
                      node.origin.span, notes=node.origin.notes, hint=self.shape_keeping(node, training, inference))

    def shape_keeping(self, node: LayerNode, training: tuple, inference: tuple) -> str:
        """An augmentation with the same shape in both modes: for a random crop, the shift it amounts to."""
        if node.cls != "RandomCrop" or len(training) != 3 or len(inference) != 3:
            return ("use an augmentation that keeps the shape, or follow it with a layer that gives one shape "
                    "in both modes (`center_crop`, `resizing`)")
        (h, w), (big_h, big_w) = training[:2], inference[:2]
        pad = self.nodes.get(node.inputs[0])
        layer = self.built.layers.get(pad.name) if pad is not None and pad.cls == "ZeroPadding2D" else None
        padding = getattr(layer, "padding", None)
        if padding and inference == tuple(self.built.tensors[node.inputs[0]].shape[1:]) and \
                tuple(self.built.tensors[pad.inputs[0]].shape[1:]) == training and \
                padding[0][0] == padding[0][1] and padding[1][0] == padding[1][1]:
            # A crop of the padded image is a whole-pixel shift of the image, zero-filled: a uniform shift in
            # (-p - 0.5, p + 0.5) pixels, rounded by `nearest`, takes each of -p..p equally often.
            shift = _translation(padding[0][0], h, padding[1][0], w)
            return (f"replace `{_source(self.plan, pad)}` and `{_source(self.plan, node)}` with `{shift}, "
                    f"fill_mode=constant, interpolation=nearest)`: the same zero-filled whole-pixel shifts, each "
                    f"equally often, and {training} in both modes")
        shift = _translation((big_h - h) // 2, big_h, (big_w - w) // 2, big_w)
        return (f"for a random crop while training and the centre at inference, use `{shift}, "
                f"interpolation=nearest)` then `center_crop({h}, {w})`")

    # -- the data ---------------------------------------------------------

    def check_schedule(self, facts) -> None:
        train = self.plan.train
        examples = self.training_examples(facts)
        if train is None or not examples or not isinstance(train.optimizer, Obj):
            return
        schedule = train.optimizer.kwargs.get("learning_rate")
        if not isinstance(schedule, Obj) or schedule.kind != "schedule":
            return
        per_epoch = math.ceil(examples / train.batch_size)
        steps = per_epoch * self.epochs
        setting = train.span("optimizer")
        k = schedule.kwargs
        counted = (f"{steps:,} steps ({per_epoch:,} per epoch: {examples:,} examples at batch "
                   f"{train.batch_size}, {self.epochs} epoch{'s' if self.epochs != 1 else ''})")
        if schedule.cls == "PiecewiseConstantDecay":
            # Step s (counted from 0) takes the value after boundary b when s > b: the last step is steps - 1.
            bounds = k.get("boundaries")
            late = [b for b in bounds if _number(b) is not None and b >= steps - 1] if isinstance(bounds, list) else []
            if late:
                self.warn("W106", f"the learning-rate boundar{'ies' if len(late) > 1 else 'y'} "
                          f"{', '.join(f'{b:,}' for b in late)} {'are' if len(late) > 1 else 'is'} never reached: "
                          f"training runs {counted}", _find(self.plan, setting, "boundaries") or setting,
                          hint=f"put the boundaries below {steps - 1:,} (e.g. at fractions of `train.steps`), or train "
                          "for more epochs")
            return
        decay, warmup = _number(k.get("decay_steps")), _number(k.get("warmup_steps", 0))
        if decay is None or warmup is None:
            return
        if schedule.cls == "CosineDecay":
            horizon = decay + warmup
        elif schedule.cls == "PolynomialDecay" and not k.get("cycle"):
            horizon, warmup = decay, 0
        else:  # no horizon (exponential, inverse time) or one that restarts
            return
        if abs(horizon - steps) <= HORIZON_TOLERANCE * steps:
            return
        if horizon < steps:
            effect = f"the last {steps - horizon:,} steps all run at the final rate"
        else:
            effect = f"training stops {horizon - steps:,} steps before the rate has decayed"
        fix, less = f"{steps - warmup:_}", f" - {warmup}" if warmup else ""
        hint = (f"write `decay_steps={fix}`{' (the steps after the warmup)' if warmup else ''}, "
                f"or write `decay_steps=train.steps{less}`")
        if self.plan.constants.get("train.steps") in (horizon, horizon - warmup):
            # The spec already follows its training: only `--epochs`/`--limit` of this run shorten or lengthen it.
            hint = ("the schedule follows `train.steps` of the spec as written; `--epochs` and `--limit` change the "
                    "training of this run only: expect the rate not to end where the spec's schedule ends")
        self.warn("W106", f"`{_snake(schedule.cls)}` decays over {horizon:,} steps, but training runs {counted}: "
                  f"{effect}", _find(self.plan, setting, "decay_steps") or setting, hint=hint)

    def check_input_shapes(self, facts) -> None:
        from specc.data.prepare import fit_shape, Located
        import numpy as np

        shape = facts.example_shape
        if shape is None or self.plan.data.is_text:
            return
        shapes = shape if isinstance(shape, dict) else {self.plan.inputs[0].name: shape}
        where = Located(self.plan)
        for inp in self.plan.inputs:
            have = shapes.get(inp.name)
            if have is None:
                continue
            try:  # the same rule as the run's: equal, or equal up to axes of size 1
                fit_shape(np.zeros((0, *have), np.float32), inp.shape, inp.name, where, "x")
            except DataError as err:
                self.warn("W109", f"input `{inp.name}` is declared {tuple(inp.shape)}, but the data's examples have "
                          f"shape {tuple(have)}", inp.origin.span, hint=err.first.hint,
                          notes=[f"`specc run` would stop with: {err.first.message}"])


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
