"""What each Keras loss wants of its labels and of the model's output: the one table of loss kinds.

Every stage that must know what a loss reads asks here: the run's label check (`specc.train.labels`: class
numbers in range, 0..1 for binary), lint (softmax or sigmoid before a cross-entropy, one unit per class), the
pre-flight cost (integer targets without the class axis for a sparse loss), `specc test` (synthetic labels of
the right kind) and `specc predict` (a table of classes or of values). A loss not in `LOSS_KINDS` reads real
values (`REGRESSION`): mean squared error and its kin, and any loss known only as a function.

Adding a loss that takes class labels is one line in `LOSS_KINDS`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from specc.compile.catalog import catalog
from specc.core.plan import Obj

#: Label kinds: what `y` holds for a loss.
SPARSE = "sparse"  # one whole number per example, the class (0..classes - 1): no class axis
CATEGORICAL = "categorical"  # one row per example over the classes (one-hot, or a distribution)
BINARY = "binary"  # one number in 0..1 per output unit: each unit a yes/no question
REGRESSION = "regression"  # real values, the output's shape


@dataclass(frozen=True)
class LossKind:
    """What a loss reads: its labels, and (for a cross-entropy) the activation its probabilities come from."""

    labels: str  # SPARSE, CATEGORICAL, BINARY or REGRESSION
    activation: str | None = None  # "softmax" or "sigmoid" for a cross-entropy: what `from_logits` stands in for

    @property
    def classifier(self) -> bool:
        """One output unit per class, the labels choosing one of them."""
        return self.labels in (SPARSE, CATEGORICAL)

    @property
    def class_labels(self) -> bool:
        """The labels are classes (whole numbers, or 0..1), not values: what `specc run` checks before training."""
        return self.labels in (SPARSE, BINARY)


#: Keras loss class -> what it reads. Losses not listed read real values.
LOSS_KINDS: dict[str, LossKind] = {
    "SparseCategoricalCrossentropy": LossKind(SPARSE, "softmax"),
    "CategoricalGeneralizedCrossEntropy": LossKind(SPARSE, "softmax"),  # integer labels (it has no `from_logits`)
    "CategoricalCrossentropy": LossKind(CATEGORICAL, "softmax"),
    "CategoricalFocalCrossentropy": LossKind(CATEGORICAL, "softmax"),
    "BinaryCrossentropy": LossKind(BINARY, "sigmoid"),
    "BinaryFocalCrossentropy": LossKind(BINARY, "sigmoid"),
}
_VALUES = LossKind(REGRESSION)


def loss_kind(cls: str | None) -> LossKind:
    """What the loss of Keras class `cls` reads (None: a loss known only as a function, which reads values)."""
    return LOSS_KINDS.get(cls or "", _VALUES)


def loss_class(loss: Any) -> str | None:
    """The Keras class of one loss of a plan (`sparse_categorical_crossentropy`, or a configured `Obj`); None for a
    loss Keras knows only as a function."""
    if isinstance(loss, Obj):
        return loss.cls
    return catalog("loss").class_name(str(loss)) if isinstance(loss, str) else None


def output_losses(loss: Any, outputs: int) -> list[Any]:
    """The loss of each of `outputs` model outputs: a list as written, else the one loss for every output."""
    return loss if isinstance(loss, list) else [loss] * outputs
