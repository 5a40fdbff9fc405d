"""The build plan: one resolved, Keras-ready description of a spec.

`check_spec` produces it; `build_model` turns it into a `keras.Model`; the
runner trains from it. It is the one description later stages read too. Values are plain Python (numbers,
strings, tuples, lists) or `Obj` for a configured Keras object (`l2(1e-4)`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from specc.core.errors import Diagnostic, Source
from specc.core.nodes import Span


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
    call_kwargs: dict[str, Any] = {}  # options of the call, not the constructor (`use_causal_mask`)
    origin: Origin = Field(default_factory=Origin, exclude=True)


TEXT_DATASETS = ("sst2", "tiny_shakespeare")


class Settings(BaseModel):
    """A settings section's values, with where each setting was written."""

    origins: dict[str, Origin] = Field(default_factory=dict, exclude=True)

    def span(self, key: str) -> Span | None:
        """Where setting `key` was written, if it was."""
        origin = self.origins.get(key)
        return origin.span if origin else None


class TrainPlan(Settings):
    loss: Any = None  # str or Obj
    optimizer: Any = "adam"  # str or Obj
    metrics: list[Any] = []
    epochs: int = 1
    batch_size: int = 32
    validation_split: float = 0.0
    seed: int | None = None
    shuffle: bool = True
    early_stopping: Obj | None = None
    validation: int | None = None  # k of k-fold cross-validation: `validation: kfold(5)`


class DataPlan(Settings):
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
    columns: list[str] | None = None  # column names of a delimited file without a header row
    delimiter: str | None = None  # default: tab for .tsv and .data, comma otherwise
    text: str | None = None  # the column holding text
    tokenizer: Any = None  # {"kind": chars|words|wordpiece, "vocab_size": N} or a path to a saved one
    sequence_length: int | None = None
    task: Any = "classify"  # classify, next_token, or {"kind": "masked_tokens", "rate": 0.15}
    images: str | None = None  # a folder (or tar) with one subfolder per class
    image_size: tuple[int, int] | None = None

    @property
    def is_text(self) -> bool:
        """Whether the examples are text for a tokenizer."""
        return (self.tokenizer is not None or self.text is not None or self.dataset in TEXT_DATASETS
                or (self.file or "").endswith(".txt"))


class InitPlan(Settings):
    """Weights taken from an earlier run (`init` section): which layers, and which to freeze."""

    source: str = Field(alias="from")  # a run directory or a .keras file, relative to the spec file
    layers: list[str] | None = None  # names or glob patterns; None: every layer both models have
    freeze: list[str] = []


PARALLEL = ("data", "model")


class DistributionPlan(Settings):
    """How the `device` section spreads training over devices (`specc.train.distribute`, on `keras.distribution`).

    `parallel: data` replicates the model on every device of the platform and splits each batch among them
    (`DataParallel`); `parallel: model` lays the devices out as a `mesh` with named `axes` and splits the
    weights that `layout` names along them (`ModelParallel` with a `LayoutMap`), each batch along `batch_axis`."""

    parallel: str  # one of PARALLEL
    mesh: tuple[int, ...] | None = None  # the device mesh's shape (`parallel: model`)
    axes: tuple[str, ...] | None = None  # its axis names
    layout: list[tuple[str, tuple[str | None, ...]]] = []  # (regex of weight paths, mesh axis or None per dimension)

    @property
    def batch_axis(self) -> str | None:
        """The mesh axis that batches are split along: `batch` if the mesh has one, else its first axis."""
        if not self.axes:
            return None
        return "batch" if "batch" in self.axes else self.axes[0]


class Plan(BaseModel):
    name: str
    inputs: list[InputNode]
    layers: list[LayerNode]
    outputs: list[str]
    train: TrainPlan | None = None
    data: DataPlan | None = None
    init: InitPlan | None = None
    device: str = "auto"  # the platform: `device: cpu`, or `kind` in a `device { ... }` section
    device_origin: Origin = Field(default_factory=Origin, exclude=True)
    distribution: DistributionPlan | None = None  # `parallel` in the `device` section
    # Named values the spec used: its `let` constants and the facts of its data and training it named
    # (`data.classes`, `train.steps`), resolved; `specc summary` shows them.
    constants: dict[str, Any] = {}
    facts: Any = Field(default=None, exclude=True, repr=False)  # `specc.data.facts.Facts` of the data, when computed
    expect: Any = None  # the `expect` section's contracts (`specc.compile.expect.ExpectPlan`), checked by `specc test`
    language: int = 1  # the language version the file declares (`language: 2`), else 1
    file: str = Field(default="<string>", exclude=True)
    source: str = Field(default="", exclude=True, repr=False)

    def path(self, name: str) -> Path:
        """A path the spec names: relative paths start at the spec file's folder (or the working directory)."""
        path = Path(name)
        if not path.is_absolute():
            base = Path(self.file).parent if self.file and not self.file.startswith("<") else Path.cwd()
            path = base / path
        return path

    def diag(self, message: str, span: Span | None = None, hint: str | None = None,
             notes: list[str] | None = None) -> Diagnostic:
        """A diagnostic located in this plan's spec file."""
        return Source(self.source, self.file).diag(message, span, hint, notes)
