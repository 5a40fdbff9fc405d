"""The build plan: one resolved, Keras-ready description of a spec.

`check_spec` produces it; `build_model` turns it into a `keras.Model`; the
runner trains from it. It is the one description later stages read too. Values are plain Python (numbers,
strings, tuples, lists) or `Obj` for a configured Keras object (`l2(1e-4)`); a setting with a shape of its own
has a type here (`TokenizerPlan`, `MaskedTokens`, `ExpectPlan`), never a dict with a "kind" key. Every model here
dumps (`model_dump`) to the plain data the facts cache hashes; `str()` of a setting's type is its spec text, which
`specc diff` prints.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, InstanceOf, TypeAdapter, ValidationError

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

# --- the data section's values with a shape of their own ---------------------------------------------------


class TokenizerPlan(BaseModel):
    """A vocabulary trained on the training text: `tokenizer: chars`, `words(vocab_size=8000)`, `wordpiece(...)`."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["chars", "words", "wordpiece"]
    vocab_size: int | None = None  # None: every token seen (chars, and words or wordpiece without a size)

    def __str__(self) -> str:  # as a spec writes it, for `specc diff`
        return self.kind if self.vocab_size is None else f"{self.kind}(vocab_size={self.vocab_size})"


class SavedTokenizer(BaseModel):
    """A saved vocabulary: `tokenizer: "runs/pretrain"` (a run directory or its tokenizer.json)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    path: str  # relative to the spec file (`Plan.path`)

    def __str__(self) -> str:
        return json.dumps(self.path)


class MaskedTokens(BaseModel):
    """`task: masked_tokens(rate=0.15)`: predict a fraction `rate` of the tokens, masked, from the others."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["masked_tokens"] = "masked_tokens"
    rate: float = 0.15

    def __str__(self) -> str:
        return f"masked_tokens(rate={self.rate:g})"


Task = Literal["classify", "next_token"] | MaskedTokens  # the tasks without options are their names
TaskKind = Literal["classify", "next_token", "masked_tokens"]
ArrayName = str  # the name of an array in the data section's .npz file
InlineArray = list[Any]  # nested lists of numbers written in the spec, rectangular (the checker sees to it)


class Settings(BaseModel):
    """A settings section's values, with where each setting was written."""

    origins: dict[str, Origin] = Field(default_factory=dict, exclude=True)

    def span(self, key: str) -> Span | None:
        """Where setting `key` was written, if it was."""
        origin = self.origins.get(key)
        return origin.span if origin else None

    @classmethod
    def fits(cls, key: str, value: Any) -> bool:
        """Whether setting `key` can hold `value` (its field's type; `specc.lang.sections` says it in words). The
        checker asks before it builds the section's plan, so that a value of the wrong type is a located error, not
        a crash there."""
        try:
            _field_type(cls, key).validate_python(value)
        except ValidationError:
            return False
        return True


@functools.cache
def _field_type(cls: type[BaseModel], key: str) -> TypeAdapter:
    return TypeAdapter(cls.model_fields[key].annotation)


Configured = str | Obj  # a Keras object by name (`adam`) or configured (`adam(learning_rate=1e-3)`)


class TrainPlan(Settings):
    loss: Configured | list[Any] | None = None  # a list: one per output, nested as they are (as Keras takes it)
    optimizer: Configured = "adam"
    metrics: list[Configured | list[Any]] = []  # a list in it: the metrics of one output
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
    x: InlineArray | ArrayName | None = None
    y: InlineArray | ArrayName | None = None
    x_test: InlineArray | ArrayName | None = None
    y_test: InlineArray | ArrayName | None = None
    test_split: float = 0.0
    scale: float | None = None
    flatten: bool = False
    reshape: tuple[int, ...] | None = None
    one_hot: bool | int = False
    columns: list[str] | None = None  # column names of a delimited file without a header row
    delimiter: str | None = None  # default: tab for .tsv and .data, comma otherwise
    text: str | None = None  # the column holding text
    tokenizer: TokenizerPlan | SavedTokenizer | None = None
    sequence_length: int | None = None
    task: Task = "classify"
    images: str | None = None  # a folder (or tar) with one subfolder per class
    image_size: tuple[int, int] | None = None

    @property
    def is_text(self) -> bool:
        """Whether the examples are text for a tokenizer."""
        return (self.tokenizer is not None or self.text is not None or self.dataset in TEXT_DATASETS
                or (self.file or "").endswith(".txt"))

    @property
    def task_kind(self) -> TaskKind:
        """The task's name, options left out: `classify`, `next_token` or `masked_tokens`."""
        return self.task if isinstance(self.task, str) else self.task.kind


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


# --- the `expect` section (checked by specc.compile.expect, run by specc.tools.testing) -------------------

CHANCE_TOLERANCE = 0.10  # `initial_loss: chance`: within 10% of ln(classes)


class Bound(BaseModel):
    """A parameter budget: `low <= count <= high` (None: no bound on that side), and how it was written."""

    low: int | None = None
    high: int | None = None
    written: str  # `at_most(40,000)`, for messages

    def __str__(self) -> str:  # as written, for `specc diff`
        return self.written

    def holds(self, count: int) -> bool:
        return (self.low is None or count >= self.low) and (self.high is None or count <= self.high)

    def relation(self, count: int) -> str:
        """The comparison that holds, for a PASS line: `34,826 <= 40,000`."""
        if self.low == self.high:
            return f"{count:,} == {self.low:,}"
        if self.low is None:
            return f"{count:,} <= {self.high:,}"
        if self.high is None:
            return f"{count:,} >= {self.low:,}"
        return f"{self.low:,} <= {count:,} <= {self.high:,}"


class LossTarget(BaseModel):
    """`chance` (value None: ln(classes), within CHANCE_TOLERANCE of it) or `near(value, tolerance)`."""

    value: float | None = None
    tolerance: float = CHANCE_TOLERANCE

    def __str__(self) -> str:  # as a spec writes it, for `specc diff`
        return "chance" if self.value is None else f"near({self.value:g}, {self.tolerance:g})"


class ExpectPlan(Settings):
    """The `expect` section's contracts; `origins` says where each was written."""

    params: Bound | None = None
    output_shape: list[tuple[int | None, ...]] | None = None
    initial_loss: LossTarget | None = None
    overfit: int | None = None  # steps
    gradients: bool = False

    @property
    def keys(self) -> list[str]:
        """The contracts given, in the order they were written."""
        return list(self.origins)


# --- the `tune` section (checked by specc.compile.section_tune; `specc tune` runs the study on Optuna) -----------

Sampler = Literal["tpe", "random", "grid", "cmaes"]
Pruner = Literal["median", "hyperband", "none"]
Direction = Literal["maximize", "minimize"]
SAMPLERS: tuple[str, ...] = get_args(Sampler)  # the choices as the registry (`specc.lang.sections`) lists them
PRUNERS: tuple[str, ...] = get_args(Pruner)
DIRECTIONS: tuple[str, ...] = get_args(Direction)


class TunePlan(Settings):
    """How `specc tune` searches hyperparameters: an Optuna study of `trials` runs of the spec, each scored by
    `objective`, a value Keras logs on the validation data (`val_loss`, `val_accuracy`; with `validation: kfold(k)`
    in `train`, its mean over the folds)."""

    trials: int = 20  # in all, every worker's together
    timeout: float | None = None  # seconds; None: no limit
    objective: str  # `val_loss` or `val_` + a metric's name as history.csv has it
    direction: Direction  # written, or inferred from the objective (`direction_of`)
    sampler: Sampler = "tpe"
    pruner: Pruner = "median"  # on the objective's value after each epoch
    workers: int = 1  # processes on this machine running trials
    storage: str | None = None  # an Optuna (SQLAlchemy) storage URL; None: SQLite in the study's directory
    study: str | None = None  # the study's name in the storage; None: the spec file's stem
    seed: int | None = None  # the sampler's seed


# --- the facts of the data (computed by specc.data.facts) ---------------------------------------------------

FACT_NAMES = ("classes", "features", "vocab_size", "sequence_length", "examples")


@dataclass(frozen=True)
class Facts:
    """What the data section's examples are like, as the model will receive them."""

    source: str  # in words, for `specc summary`: "dataset mnist", "file data/diabetes.csv", "images cifar/"
    examples: int  # training examples (after the spec's test_split; before --limit and validation_split)
    test_examples: int | None  # held-out examples (None: metrics are on the training data)
    example_shape: tuple[int, ...] | None  # one example after the data section's reshaping; None: several inputs
    features: int | None  # values per example (a table: its feature columns)
    classes: int | None  # classify: number of classes; next_token / masked_tokens: the vocabulary size
    vocab_size: int | None  # text: the tokenizer's vocabulary size, special tokens included
    sequence_length: int | None  # text: tokens per example
    label_kind: str  # what y holds: "classes" | "real" | "tokens" | "none" (no targets, or not known yet)
    why_unknown: tuple[tuple[str, str], ...] = ()  # (fact, why it is None), for `value`'s messages

    def value(self, name: str):
        """The fact `name`; KeyError for a name that is no fact, ValueError saying why it is unknown here."""
        if name not in FACT_NAMES:
            raise KeyError(f"`data.{name}` is not a fact of the data; the facts are: "
                           + ", ".join(f"data.{n}" for n in FACT_NAMES))
        found = getattr(self, name)
        if found is None:
            why = dict(self.why_unknown).get(name, "it is not known for this data")
            raise ValueError(f"`data.{name}` is unknown: {why}")
        return found


# --- the plan -------------------------------------------------------------------------------------------------


class Dimension(BaseModel):
    """One value a spec leaves to `specc tune`: a search space (`choice(64, 128)`, `uniform(0.0, 0.5)`,
    `loguniform(1e-4, 1e-2)`, `intrange(32, 256, step=32)`), found and checked by `specc.compile.space`."""

    name: str  # the `let` it is written in, else from where it stands: `dense.units`, `batch_size`
    kind: Literal["choice", "uniform", "loguniform", "intrange"]
    choices: list[Any] = []  # choice: the values picked among (numbers, or each option as written)
    texts: list[str] = []  # choice: each option as written in the spec
    low: float | int | None = None  # the ranges' ends, both included
    high: float | int | None = None
    step: int | None = None  # intrange: the grid's step
    default: Any = None  # the value `specc run` and `specc check` use (`default=`, else documented per kind)
    written: str = ""  # the whole space as written: `choice(64, 128)`
    span: Span | None = Field(default=None, exclude=True, repr=False)  # the whole space as written
    value_spans: list[Span] = Field(default=[], exclude=True, repr=False)  # each option, or the two ends

    def text_of(self, value: Any) -> str:
        """`value` as spec text: a choice's option as written, a number of a range."""
        if self.kind == "choice":
            return self.texts[self.choices.index(value)]
        if self.kind == "intrange" or (isinstance(value, int) and not isinstance(value, bool)):
            return str(int(value))
        return repr(float(value))  # the shortest text that reads back as the very number drawn

    def span_of(self, value: Any) -> Span | None:
        """Where `value` is written: its option, or the end of the range it is; else the whole space."""
        if self.kind == "choice" and value in self.choices:
            return self.value_spans[self.choices.index(value)] if self.value_spans else self.span
        for end, span in zip((self.low, self.high), self.value_spans):
            if value == end:
                return span
        return self.span


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
    facts: InstanceOf[Facts] | None = Field(default=None, exclude=True, repr=False)  # of the data, when computed
    expect: ExpectPlan | None = None  # the `expect` section's contracts, checked by `specc test`
    tune: TunePlan | None = None  # the `tune` section: how `specc tune` searches hyperparameters
    # The search spaces the spec holds (`specc tune`), in the order they are written; the plan is the spec at
    # their default point (`Dimension.default`).
    space: list[Dimension] = []
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
