"""The build plan: one resolved, Keras-ready description of a spec.

`check_spec` produces it; `build_model` turns it into a `keras.Model`; the
runner trains from it. It is the one description later stages read too. Values are plain Python (numbers,
strings, tuples, lists) or `Obj` for a configured Keras object (`l2(1e-4)`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .errors import Diagnostic, Source
from .nodes import Span


class Obj(BaseModel):
    """A Keras object built from a catalogue class: `keras.<module>.<cls>(**kwargs)`."""

    model_config = ConfigDict(frozen=True)
    kind: str  # layer, initializer, regularizer, constraint, schedule, optimizer, loss, metric
    module: str  # e.g. "keras.regularizers"
    cls: str  # e.g. "L2"
    kwargs: dict[str, Any] = {}


class Origin(BaseModel):
    """Where a plan element came from, for error messages: its span and the block calls around it."""

    span: Span | None = None
    notes: list[str] = []
    args: dict[str, Span] = {}  # spans of the arguments, by Keras parameter name


class InputNode(BaseModel):
    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"
    origin: Origin = Field(default_factory=Origin, exclude=True)


class LayerNode(BaseModel):
    """One Keras layer: `keras.layers.<cls>(**kwargs)` applied to `inputs` (names of nodes)."""

    name: str
    cls: str
    kwargs: dict[str, Any]
    inputs: list[str]
    origin: Origin = Field(default_factory=Origin, exclude=True)


class TrainPlan(BaseModel):
    loss: Any = None  # str or Obj
    optimizer: Any = "adam"  # str or Obj
    metrics: list[Any] = []
    epochs: int = 1
    batch_size: int = 32
    validation_split: float = 0.0
    seed: int | None = None
    shuffle: bool = True
    early_stopping: Obj | None = None
    origins: dict[str, Origin] = Field(default_factory=dict, exclude=True)

    def span(self, key: str) -> Span | None:
        """Where setting `key` was written, if it was."""
        origin = self.origins.get(key)
        return origin.span if origin else None


class DataPlan(BaseModel):
    dataset: str | None = None
    file: str | None = None
    test_file: str | None = None
    features: list[str] | None = None
    target: str | None = None
    x: Any = None  # inline array or array name in an npz file
    y: Any = None
    x_test: Any = None
    y_test: Any = None
    test_split: float = 0.0
    scale: float | None = None
    flatten: bool = False
    reshape: tuple[int, ...] | None = None
    one_hot: bool | int = False
    origins: dict[str, Origin] = Field(default_factory=dict, exclude=True)


class Plan(BaseModel):
    name: str
    inputs: list[InputNode]
    layers: list[LayerNode]
    outputs: list[str]
    train: TrainPlan | None = None
    data: DataPlan | None = None
    device: str = "auto"
    device_origin: Origin = Field(default_factory=Origin, exclude=True)
    file: str = Field(default="<string>", exclude=True)
    source: str = Field(default="", exclude=True, repr=False)

    def diag(self, message: str, span: Span | None = None, hint: str | None = None,
             notes: list[str] | None = None) -> Diagnostic:
        """A diagnostic located in this plan's spec file."""
        return Source(self.source, self.file).diag(message, span, hint, notes)
