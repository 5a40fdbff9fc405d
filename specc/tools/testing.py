"""Contracts: what a spec's `expect` section says must hold, checked by `specc test` on the CPU in seconds.

```
expect {
  params: at_most(40_000)  # or an exact count `34_826`, `at_least(1_000)`, `between(30_000, 40_000)`
  output_shape: (10,)      # per example; several outputs: a list of shapes in output order
  initial_loss: chance     # ln(number of classes) within 10%; or near(2.30, 0.1): a value and a tolerance
  overfit: 100             # within 100 steps on one batch, the loss falls below 5% of its initial value
  gradients: healthy       # one step's gradients: every trainable weight's finite and not all zero
}
```

`check_expect` validates the section into an `ExpectPlan` (located errors); `run_contracts` checks it. `params`
and `output_shape` need no weights (the build `specc summary` does). The others build the model with its
weights (seeded: the spec's `seed`, else 1), compile it with the spec's own loss and optimizer
(`runner.compile_model`) and feed it one synthetic batch made from the declared inputs: random normal floats,
token ids uniform in [0, input_dim) of the first `embedding` that reads the input, labels that fit the output
and the loss (`make_labels`). The loss they measure is the data loss, as the first training step sees it
(training mode: dropout active, batch norm on the batch's statistics), without weight regularization: a
regularizer is not a mistake of the architecture, and it would hide zero gradients. Output masks are not
applied (the synthetic ids rarely hit the padding id). `init` and `freeze` are left out: contracts describe
the architecture from scratch.

Why "loss below 5% of its initial value" for `overfit`: it applies to every loss (regression too, where
accuracy means nothing), and a network that cannot drive one batch's loss to near zero cannot learn, while
accuracy 1.0 is reached by outputs that are barely right (the arg-max flips long before the loss is small).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any

from specc.core import nodes as n
from specc.core.errors import Diagnostic, SpecError
from specc.compile.expect import (ALLOWED, BOUNDS, CHANCE_TOLERANCE, MAX_OVERFIT_STEPS, TRAINED, Bound, ExpectPlan,  # noqa: F401
                     LossTarget, check_expect)  # (the compile-stage half, re-exported)
from specc.compile.losses import BINARY, CATEGORICAL, REGRESSION, SPARSE, loss_class, loss_kind, output_losses
from specc.core.plan import Plan
from specc.lang.render import render_shape
from specc.compile.catalog import catalog
from specc.runtime.keras_env import import_keras

OVERFIT_FRACTION = 0.05  # `overfit`: the loss must fall below 5% of its initial value
MAX_BATCH = 32  # one batch: the spec's batch size, at most this many examples
CHECK_EVERY = 5  # `overfit` measures the batch's loss every few steps (and after the last)
FREE_LENGTH = 16  # a dimension an input leaves free (`None`): the data's sequence length, else this
DEFAULT_SEED = 1


@dataclass
class ContractResult:
    key: str
    ok: bool
    message: str  # what was measured (PASS) or what went wrong (FAIL)
    span: n.Span | None = None
    hint: str | None = None
    notes: list[str] | None = None

    def diagnostic(self, plan: Plan) -> Diagnostic:
        return plan.diag(f"expect `{self.key}`: {self.message}", self.span, self.hint, self.notes)


# -- running the contracts ---------------------------------------------------------------------------------


def run_contracts(plan: Plan) -> list[ContractResult]:
    """Check the plan's contracts, in the order the spec writes them. A contract that does not hold is a
    result with `ok=False`; a spec the contracts cannot apply to (`chance` for a regression) is a `SpecError`."""
    expect: ExpectPlan | None = plan.expect
    if expect is None or not expect.keys:
        return []
    results: dict[str, ContractResult] = {}
    if expect.params is not None or expect.output_shape is not None:
        results.update(_run_static(plan, expect))
    if any(getattr(expect, key) not in (None, False) for key in TRAINED):
        with _on_cpu():
            results.update(_run_trained(plan, expect))
    return [results[key] for key in expect.keys]


@contextlib.contextmanager
def _on_cpu():
    """JAX's CPU as the default device while contracts run (as `specc run` selects one), then what it was."""
    import jax

    from specc.train.runner import select_device

    before = jax.config.jax_default_device  # type: ignore[attr-defined]  # JAX adds its options at run time
    select_device("cpu")
    try:
        yield
    finally:
        jax.config.update("jax_default_device", before)


def _run_static(plan: Plan, expect: ExpectPlan) -> dict[str, ContractResult]:
    from specc.compile.build import build_shapes

    built = build_shapes(plan)  # no weights: shapes and counts only
    out: dict[str, ContractResult] = {}
    if expect.params is not None:
        total = built.model.count_params()
        bound, span = expect.params, expect.span("params")
        if bound.holds(total):
            out["params"] = ContractResult("params", True, bound.relation(total), span)
        else:
            more = bound.high is not None and total > bound.high
            side = f"{'more' if more else 'fewer'} than {bound.written}"
            if bound.low == bound.high:
                side = f"{abs(total - bound.low):,} {'more' if more else 'fewer'} than the {bound.written} expected"
            hint = "`specc summary` lists every layer's count"
            if plan.layers:
                big = max(plan.layers, key=lambda node: built.layers[node.name].count_params())
                line = f", line {big.origin.span.line}" if big.origin.span else ""
                hint = (f"the largest layer is `{big.name}` ({big.cls}{line}) with "
                        f"{built.layers[big.name].count_params():,}; {hint}")
            out["params"] = ContractResult("params", False, f"the model has {total:,} parameters, {side}", span, hint)
    if expect.output_shape is not None:
        have = [tuple(t.shape[1:]) for t in built.model.outputs]
        want, span = expect.output_shape, expect.span("output_shape")
        shown = ", ".join(render_shape(s) for s in have)
        if have == [tuple(s) for s in want]:
            out["output_shape"] = ContractResult("output_shape", True, shown, span)
        elif len(have) != len(want):
            out["output_shape"] = ContractResult(
                "output_shape", False, f"the model has {len(have)} output{'s' if len(have) != 1 else ''} ({shown}), "
                f"but {len(want)} shape{'s are' if len(want) != 1 else ' is'} expected", span,
                "give one shape per output, in the order of the model's `output` line")
        else:
            k = next(i for i, (h, w) in enumerate(zip(have, want)) if h != tuple(w))
            node = next((node for node in plan.layers if node.name == plan.outputs[k]), None)
            line = f" (line {node.origin.span.line})" if node is not None and node.origin.span else ""
            out["output_shape"] = ContractResult(
                "output_shape", False, f"output `{plan.outputs[k]}`{line} has shape {render_shape(have[k])} per example, "
                f"expected {render_shape(want[k])}", span,
                "the last layer sets the output: e.g. `dense(10)` for 10 classes; `specc summary` shows every shape")
    return out


@dataclass
class _Setup:
    """A built, compiled model with one synthetic batch and the spec's loss, per output."""

    model: Any
    x: Any
    y: list
    losses: list  # keras loss objects, one per output
    kinds: list[str]  # per output: sparse, categorical, binary or regression
    batch: int


def _run_trained(plan: Plan, expect: ExpectPlan) -> dict[str, ContractResult]:
    setup = _set_up(plan)
    out: dict[str, ContractResult] = {}
    start = float(_loss_fn(setup)(*_values(setup.model), setup.x))
    if not math.isfinite(start):
        why = f"the loss of the first batch is {start}: nothing can be measured from it"
        hint = "something overflows at initialisation: initial weights far too large, or a log or division of 0"
        return {key: ContractResult(key, False, why, expect.span(key), hint)
                for key in TRAINED if getattr(expect, key) not in (None, False)}
    if expect.initial_loss is not None:
        out["initial_loss"] = _initial_loss(plan, expect, setup, start)
    if expect.gradients:
        out["gradients"] = _gradients(plan, expect, setup)
    if expect.overfit is not None:  # last: it trains the weights
        out["overfit"] = _overfit(expect, setup, start)
    return out


def _set_up(plan: Plan) -> _Setup:
    import numpy as np

    from specc.compile.build import build
    from specc.train.runner import adapt_layers, compile_model

    keras = import_keras()
    train = plan.train
    assert train is not None  # check_expect refuses loss contracts without `train`
    seed = train.seed if train.seed is not None else DEFAULT_SEED
    keras.utils.set_random_seed(seed)
    plan = plan.model_copy(update={"init": None, "distribution": None})
    model = build(plan).model
    batch = min(train.batch_size, MAX_BATCH)
    rng = np.random.default_rng(seed)
    x = make_inputs(plan, batch, rng)
    adapt_layers(plan, model, x)
    compile_model(plan, model)
    shapes = [(batch, *t.shape[1:]) for t in model.outputs]
    if any(d is None for shape in shapes for d in shape):  # sizes that follow a free input dimension
        outputs = model.predict_on_batch(x)
        shapes = [tuple(o.shape) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs])]
    losses, kinds = _losses(train.loss, len(shapes))
    y = [make_labels(kind, shape, rng) for kind, shape in zip(kinds, shapes)]
    return _Setup(model, x, y, losses, kinds, batch)


def make_inputs(plan: Plan, batch: int, rng) -> Any:
    """A batch for the declared inputs: random normal floats; integer ids uniform in [0, input_dim) of the first
    `embedding` reading the input (0 or 1 when none does). Free dimensions take the data's sequence length."""
    free = (plan.data.sequence_length if plan.data else None) or FREE_LENGTH
    x = {}
    for inp in plan.inputs:
        shape = (batch, *(free if d is None else d for d in inp.shape))
        if inp.dtype.startswith(("int", "uint", "bool")):
            high = next((node.kwargs.get("input_dim") for node in plan.layers
                         if node.cls == "Embedding" and inp.name in node.inputs), None) or 2
            x[inp.name] = rng.integers(0, high, size=shape).astype(inp.dtype)
        else:
            x[inp.name] = rng.standard_normal(shape).astype(inp.dtype)
    return x[plan.inputs[0].name] if len(x) == 1 else x


def make_labels(kind: str, shape: tuple, rng) -> Any:
    """Labels for an output of `shape` (with the batch) that the loss accepts: class numbers in [0, units) for a
    sparse categorical loss, one-hot rows for a categorical one, 0/1 for binary, random normal for regression."""
    import numpy as np

    units = shape[-1]
    if kind == SPARSE:
        return rng.integers(0, units, size=shape[:-1]).astype("int32")
    if kind == CATEGORICAL:
        return np.eye(units, dtype="float32")[rng.integers(0, units, size=shape[:-1])]
    if kind == BINARY:
        return rng.integers(0, 2, size=shape).astype("float32")
    return rng.standard_normal(shape).astype("float32")


def _losses(loss: Any, count: int) -> tuple[list, list[str]]:
    """The spec's loss (`train.loss`) for each output, as Keras loss objects (mean over the batch), and what labels it takes."""
    from specc.compile.build import make_object
    from specc.core.plan import Obj

    losses, kinds = [], []
    for one in output_losses(loss, count):
        cls = loss_class(one)
        if isinstance(one, Obj):
            obj = make_object(one)
        elif cls:
            obj = catalog("loss").get_class(cls)()
        else:  # a loss known only as a function: per example, averaged here
            keras = import_keras()
            fn = keras.losses.get(one)
            obj = lambda y, p, fn=fn: keras.ops.mean(fn(y, p))  # noqa: E731
        losses.append(obj)
        kinds.append(loss_kind(cls).labels)
    return losses, kinds


def _values(model) -> tuple[list, list]:
    return [v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables]


def _loss_fn(setup: _Setup):
    """The data loss of the batch as a function of the weights (training mode), jitted by JAX."""
    import jax

    model = setup.model

    def loss(trainable, others, x):
        outputs, _ = model.stateless_call(trainable, others, x, training=True)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return sum(fn(y, o) for fn, y, o in zip(setup.losses, setup.y, outputs))

    # Keras compiles the model's steps unless a layer cannot be (`random_crop` slices at random offsets).
    return jax.jit(loss) if model.jit_compile else loss


def _initial_loss(plan: Plan, expect: ExpectPlan, setup: _Setup, start: float) -> ContractResult:
    target, span = expect.initial_loss, expect.span("initial_loss")
    assert target is not None
    if target.value is None:  # chance
        if any(kind == REGRESSION for kind in setup.kinds):
            raise SpecError(plan.diag(
                "expect `initial_loss: chance` is for classifiers (a cross-entropy loss), but the loss is "
                f"`{_loss_name(plan)}`", span,
                "write the loss expected at initialisation: `initial_loss: near(1.0, 0.2)`"))
        parts, want = [], 0.0
        for kind, tensor, out in zip(setup.kinds, setup.model.outputs, plan.outputs):
            classes = 2 if kind == BINARY else tensor.shape[-1]
            want += math.log(classes)
            parts.append(f"{classes} classes, the units of output `{out}`" if kind != BINARY
                         else f"2 classes per unit of output `{out}`")
        value = f"ln({classes}) = {want:.3f}" if len(parts) == 1 else f"{want:.3f}"
        tolerance = CHANCE_TOLERANCE * want
        expected = f"{value} ± 10% (chance: {'; '.join(parts)})"
    else:
        want, tolerance = target.value, target.tolerance
        expected = f"near({want:g}, {tolerance:g})"
    if abs(start - want) <= tolerance:
        return ContractResult("initial_loss", True, f"{_loss(start)}, expected {expected}", span)
    above = start > want
    hint = ("far above chance: an output activation the loss does not expect (softmax twice, or probabilities fed "
            "to a `from_logits=true` loss), or weights initialised too large" if above else
            "below chance before any training: labels the inputs give away, or an output that ignores the loss's form")
    return ContractResult("initial_loss", False, f"the loss at initialisation is {_loss(start)}, expected {expected}",
                          span, hint if target.value is None else None)


def _loss(value: float) -> str:
    return f"{value:.3f}" if abs(value) < 1e4 else f"{value:.3g}"


def _loss_name(plan: Plan) -> str:
    assert plan.train is not None  # check_expect refuses loss contracts without `train`
    loss = plan.train.loss
    return getattr(loss, "cls", None) or str(loss)


def _gradients(plan: Plan, expect: ExpectPlan, setup: _Setup) -> ContractResult:
    import jax
    import numpy as np

    span = expect.span("gradients")
    trainable, others = _values(setup.model)
    if not trainable:
        return ContractResult("gradients", False, "the model has no trainable weights", span,
                              "a layer with `trainable=false` everywhere learns nothing")
    loss = _loss_fn(setup)
    grad = jax.grad(lambda t: loss(t, others, setup.x))
    grads = (jax.jit(grad) if setup.model.jit_compile else grad)(trainable)
    variables = setup.model.trainable_variables
    lines = {node.name: node.origin.span.line for node in plan.layers if node.origin.span}
    bad_values, zeros = [], []
    for v, g in zip(variables, grads):
        g = np.asarray(g)
        layer = v.path.split("/")[0]
        where = f"`{v.path}` (layer `{layer}`, line {lines[layer]})" if layer in lines else f"`{v.path}`"
        if not np.all(np.isfinite(g)):
            bad_values.append(where)
        elif not np.any(g):
            zeros.append(where)
    if not bad_values and not zeros:
        return ContractResult("gradients", True, f"{len(variables)} trainable weights, all finite and not all zero",
                              span)
    if bad_values:
        return ContractResult("gradients", False, f"{len(bad_values)} of {len(variables)} trainable weights get NaN "
                              f"or infinite gradients: {_first(bad_values)}", span,
                              "an operation overflows in the first step: large initial weights, or a log or a "
                              "division of 0")
    return ContractResult("gradients", False, f"{len(zeros)} of {len(variables)} trainable weights get all-zero "
                          f"gradients: {_first(zeros)}", span,
                          "something after them passes no gradient back: zero weights (`kernel_initializer=zeros`), "
                          "a dead activation, or an output that does not depend on them")


def _first(items: list[str], shown: int = 3) -> str:
    return ", ".join(items[:shown]) + (f" and {len(items) - shown} more" if len(items) > shown else "")


def _overfit(expect: ExpectPlan, setup: _Setup, start: float) -> ContractResult:
    steps, span = expect.overfit, expect.span("overfit")
    assert steps is not None
    target = OVERFIT_FRACTION * start
    loss = _loss_fn(setup)
    y = setup.y[0] if len(setup.y) == 1 else setup.y
    last = start
    for step in range(1, steps + 1):
        setup.model.train_on_batch(setup.x, y)
        if step % CHECK_EVERY == 0 or step == steps:
            last = float(loss(*_values(setup.model), setup.x))
            if last < target:
                return ContractResult("overfit", True, f"loss {start:.3g} -> {last:.3g} (below 5%) in {step} of "
                                      f"{steps} steps on one batch of {setup.batch}", span)
    return ContractResult(
        "overfit", False, f"after {steps} steps on one batch of {setup.batch} examples the loss is {last:.3g} "
        f"(from {start:.3g}); it must fall below 5% of its initial value, {target:.3g}", span,
        "a network that cannot memorize one batch cannot learn: look for what blocks learning (dropout near 1, "
        "frozen or zero weights, a learning rate far too small or too large), or allow more steps")


# -- `specc test` ----------------------------------------------------------------------------------------
