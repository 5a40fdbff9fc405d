"""Class labels against the loss and the model's output: checked before training (`specc run`) and before
evaluating (`specc eval`, on the run's test split or on `--data`), by the same code.

Whole numbers indexing the model's outputs for a sparse categorical loss, 0..1 for binary cross-entropy, never
NaN. An error is located at the spec's `loss` for a run, and names the file for `eval --data`.
"""

from __future__ import annotations

import math

import numpy as np

from specc.compile.losses import SPARSE, loss_class, loss_kind
from specc.core.errors import DataError, Diagnostic
from specc.core.plan import Plan


def check_labels(plan: Plan, model, data, file: str | None = None) -> None:
    """Raise a DataError if the labels of `data` (a prepared `specc.data.prepare.Dataset`) cannot be the targets of
    `model` under the spec's loss. `file`: the data file given on the command line, named in the error
    (otherwise the error points at the spec's `loss`)."""
    from specc.data.prepare import data_source

    loss = plan.train.loss if plan.train else None
    if loss is None or isinstance(loss, list) or isinstance(data.y_train, dict) or len(model.outputs) != 1:
        return
    cls = loss_class(loss)
    kind = loss_kind(cls)
    if not kind.class_labels:
        return
    classes = model.outputs[0].shape[-1]

    def wrong(message: str, hint: str) -> DataError:
        if file is not None:
            return DataError(Diagnostic(message, file=file, hint=hint))
        return DataError(plan.diag(message, plan.train.span("loss"), hint))  # type: ignore[union-attr]

    for split, y in (("training", data.y_train), ("test", data.y_test)):
        if y is None or not len(y) or y.dtype.kind not in "iuf":
            continue
        source = file or data_source(plan, data, split)
        lo, hi = float(np.min(y)), float(np.max(y))
        if math.isnan(lo) or math.isnan(hi):
            raise wrong(f"{split} labels from {source} include NaN", "remove those examples or fill in their labels")
        if kind.labels != SPARSE:
            if lo < 0 or hi > 1:
                raise wrong(f"{split} labels from {source} run from {lo:g} to {hi:g}, but {cls} needs labels in 0..1",
                            "use 0 and 1 for the two classes, or `sparse_categorical_crossentropy` for more classes")
            continue
        if classes is None:
            continue
        if lo < 0 or hi >= classes:
            raise wrong(f"{split} labels run from {lo:g} to {hi:g}, but the model has {classes} outputs (classes 0..{classes - 1})",
                        f"the labels come from {source}: make the last layer as wide as the number of classes")
        if y.dtype.kind == "f" and not np.array_equal(y, np.floor(y)):
            odd = y[y != np.floor(y)].flat[0]
            raise wrong(f"{split} labels from {source} include {odd:g}, which is not a class number: "
                        f"{cls} needs whole numbers 0..{classes - 1}",
                        "round or encode the labels as class numbers, or use a loss for real-valued targets (`mse`)")
