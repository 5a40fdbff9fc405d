"""The sections of a `.model` file and the settings each takes, as data: the `SECTIONS` registry.

One record per section (`model`, `data`, `train`, `init`, `device`, `expect`, `tune`, and the file's own top-level
settings), one per setting: its name, what value it takes, the values it allows where they are a closed set, its
default, the example a mistake is shown, and the meaning docs/language.md gives it. The checker validates each
section against its record (`specc.compile.check`, one validator per section); "unknown setting" errors and their
"belongs in" hints, `specc diff`'s list of settings and the docs' setting tables (tests/test_sections.py keeps them
equal) all read it here, so this module imports nothing of Keras or JAX and nothing above `specc.core`.

A new section is a record here, a validator registered under its name in `specc.compile`, its table in
docs/language.md, and its field of the plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from specc.core.errors import show_value
from specc.core.plan import DIRECTIONS, PARALLEL, PRUNERS, SAMPLERS, TEXT_DATASETS

_NOTHING = object()


@dataclass(frozen=True)
class Setting:
    """One `key: value` a section takes."""

    name: str
    takes: str  # the value it takes, in words, as a message says it: "a list of column names"
    doc: str  # what it means, as the section's table in docs/language.md says it
    choices: tuple[str, ...] = ()  # the values it allows, where they are a closed set
    default: str = ""  # as the docs show it: "`adam`", "32", "required" ("": none shown)
    example: str = ""  # the setting written right, shown on a mistake: "columns: [user, item, rating]"

    def mistake(self, got: object = _NOTHING) -> str:
        """The message for a value of the wrong kind: "`columns` is a list of column names, e.g. `columns: [...]`",
        with ", got VALUE" when `got` is given."""
        message = f"`{self.name}` is {self.takes}"
        if self.example:
            message += f", e.g. `{self.example}`"
        return message if got is _NOTHING else f"{message}, got {show_value(got)}"


@dataclass(frozen=True)
class Section:
    """A part of a spec: `NAME { key: value ... }` for a settings section, `model NAME { ... }` for the network, and
    the top-level settings of the file (`language: 2`)."""

    name: str
    purpose: str  # one line: what it says
    settings: tuple[Setting, ...] = ()
    form: str = "settings"  # "settings": `NAME { ... }`; "model": `model NAME { ... }`; "file": top-level `key: value`
    plan: str | None = None  # the `Plan` field holding its checked settings (a `Settings` model), if one does

    @property
    def names(self) -> tuple[str, ...]:
        """Its settings' names, in the order of the plan's fields (the order messages list them in)."""
        return tuple(s.name for s in self.settings)

    @property
    def where(self) -> str:
        """How a message names it: "`train`", or "the file" for the top-level settings."""
        return "the file" if self.form == "file" else f"`{self.name}`"

    @property
    def home(self) -> str:
        """Where a setting of it is written, for "`epochs` belongs in `train`"."""
        return "at the top level of the file" if self.form == "file" else f"in `{self.name}`"

    def __getitem__(self, name: str) -> Setting:
        for s in self.settings:
            if s.name == name:
                return s
        raise KeyError(name)


DATASETS = ("mnist", "fashion_mnist", "cifar10") + TEXT_DATASETS
TOKENIZERS = ("chars", "words", "wordpiece")
TASKS = ("classify", "next_token", "masked_tokens")
DEVICES = ("auto", "cpu", "gpu", "tpu")

_ARRAYS = "inline arrays of numbers; for npz: the names of the arrays to use"
_TABLE_COLUMNS = "for tables: the number columns that are the input, and the target column"

FILE = Section("file", "settings of the whole file: the language version it is written in, and (language 1) the device",
               form="file", settings=(
    Setting("device", "a platform", "language 1 only: the platform, as `kind` in the `device` section does",
            choices=DEVICES, default="`auto`", example="device: cpu"),
    Setting("language", "the version of the language the file is written in",
            "the version of the language the file is written in", default="1", example="language: 2"),
))

MODEL = Section("model", "the network: its inputs, layers, named tensors, blocks, `repeat`, `parallel` and outputs",
                form="model")

DATA = Section("data", "where the examples come from and how to prepare them", plan="data", settings=(
    Setting("dataset", "a built-in dataset", "a built-in dataset: `mnist`, `fashion_mnist`, `cifar10` (images), `sst2` "
            "(sentences and labels), `tiny_shakespeare` (one text)", choices=DATASETS, example="dataset: mnist"),
    Setting("file", "a path in quotes", "`.npz` arrays (`x_train`, `y_train`, `x_test`, `y_test`, or `x`, `y`); a "
            "`.csv`, `.tsv` or `.data` table; a `.txt` text; relative to the spec's folder",
            example='file: "data/train.npz"'),
    Setting("test_file", "a path in quotes", "a separate file for the test split", example='test_file: "data/train.npz"'),
    Setting("features", "a list of column names", _TABLE_COLUMNS, example="features: [area, rooms]"),
    Setting("target", "a column name", _TABLE_COLUMNS, example="target: price"),
    Setting("x", "an inline list of numbers or the name of an array in the .npz file", _ARRAYS),
    Setting("y", "an inline list of numbers or the name of an array in the .npz file", _ARRAYS),
    Setting("x_test", "an inline list of numbers or the name of an array in the .npz file", _ARRAYS),
    Setting("y_test", "an inline list of numbers or the name of an array in the .npz file", _ARRAYS),
    Setting("test_split", "a fraction in [0, 1)", "hold out this last fraction as the test split when the source has "
            "none", default="0", example="test_split: 0.1"),
    Setting("scale", "a number", "multiply inputs by this (`1/255` for pixels)", example="scale: 1/255"),
    Setting("flatten", "`true` or `false`", "`true`: flatten each example to one axis", default="`false`"),
    Setting("reshape", "a shape per example", "a shape per example, e.g. `(28, 28, 1)`", example="reshape: (28, 28, 1)"),
    Setting("one_hot", "`true` (classes counted from the labels) or the number of classes",
            "`true` (classes counted from the labels) or the number of classes", default="`false`"),
    Setting("columns", "a list of column names", "names for the columns of a table without a header row (MovieLens "
            "`u.data`)", example="columns: [user, item, rating]"),
    Setting("delimiter", "one character in quotes", "the table's separator: `\",\"` (the default for `.csv`) or "
            "`\"\\t\"` (the default for `.tsv` and `.data`)", example='delimiter: "\\t"'),
    Setting("text", "the name of the column holding the text", "the table column that holds text",
            example="text: sentence"),
    Setting("tokenizer", "a tokenizer", "`chars`, `words(vocab_size=N)`, `wordpiece(vocab_size=N)`, or the path of a "
            "saved `tokenizer.json` (or of the run that saved it)", choices=TOKENIZERS, example="tokenizer: chars"),
    Setting("sequence_length", "a whole number >= 1", "tokens per example: sentences are cut or padded (id 0) to it; a "
            "text is cut into windows of it", example="sequence_length: 64"),
    Setting("task", "a task", "`classify` (text and labels; the default), `next_token` (y is x shifted by one token), "
            "or `masked_tokens(rate=0.15)` (BERT's masking; the loss counts the masked tokens only)", choices=TASKS,
            default="`classify`"),
    Setting("images", "a path in quotes: a folder, or a .tar/.tar.gz of one, with one subfolder per class",
            "a folder, or a `.tar`/`.tar.gz` of one, of `<class>/<image>` or `train/<class>/<image>` and "
            "`test/<class>/<image>`"),
    Setting("image_size", "(height, width)", "`(height, width)` to resize images to; needed when they differ in size",
            example="image_size: (32, 32)"),
))

TRAIN = Section("train", "how the model is trained: loss, optimizer, metrics, epochs, batches, validation",
                plan="train", settings=(
    Setting("loss", "a Keras loss", "a Keras loss: `sparse_categorical_crossentropy`, `mse`, "
            "`binary_crossentropy(from_logits=true)`, ...", default="required"),
    Setting("optimizer", "a Keras optimizer", "a Keras optimizer, with hyperparameters: `adam`, "
            "`sgd(learning_rate=0.01, momentum=0.9)`, `adamw(weight_decay=1e-4)`", default="`adam`"),
    Setting("metrics", "a list of Keras metrics", "a list: `accuracy`, `precision`, `recall`, `auc`, `mae`, `rmse`, ...",
            default="none"),
    Setting("epochs", "a whole number >= 1", "passes over the training data", default="1", example="epochs: 5"),
    Setting("batch_size", "a whole number >= 1", "examples per step", default="32", example="batch_size: 64"),
    Setting("validation_split", "a fraction in [0, 1)", "the last fraction of the training data held out for "
            "validation", default="0", example="validation_split: 0.1"),
    Setting("seed", "a whole number >= 0 or `none`", "seeds Python, NumPy and Keras's random generators",
            default="none", example="seed: 1"),
    Setting("shuffle", "`true` or `false`", "shuffle the training data every epoch", default="`true`"),
    Setting("early_stopping", "a patience in epochs or `early_stopping(monitor=val_loss, patience=3)`",
            "a patience in epochs, or `early_stopping(monitor=val_loss, patience=3, restore_best_weights=true)`",
            default="off"),
    Setting("validation", "k-fold cross-validation", "`kfold(k)`: k-fold cross-validation on the training data before "
            "the final training; `metrics.json` gets each metric's mean, standard deviation and per-fold values",
            default="off", example="validation: kfold(5)"),
))

INIT = Section("init", "the weights training starts from: an earlier run or a `.keras` file", plan="init", settings=(
    Setting("from", "a path in quotes", "the run directory or `.keras` file whose weights to take, relative to the "
            "spec's folder; `specc run --init PATH` replaces it for one run", default="required",
            example='from: "../runs/pretrain"'),
    Setting("layers", "a list of layer names or patterns", "the names or glob patterns (`\"dense_*\"`) of the layers "
            "to take", default="every layer with weights that both models have by name",
            example='layers: [embedding, "dense_*"]'),
    Setting("freeze", "a list of layer names or patterns", "layers that keep their weights during training",
            default="none", example='freeze: [embedding, "dense_*"]'),
))

DEVICE = Section("device", "the platform, and how training is spread over its devices", settings=(
    Setting("kind", "a platform", "the platform: `auto` (what JAX finds), `cpu`, `gpu` or `tpu`", choices=DEVICES,
            default="`auto`", example="kind: cpu"),
    Setting("parallel", "a parallelism", "how training is spread over the platform's devices: `data` (copies of the "
            "model, each batch split over the devices) or `model` (weights split over a mesh of devices)",
            choices=PARALLEL + ("none",), default="`none`", example="parallel: data"),
    Setting("mesh", "the shape of the grid of devices", "`parallel: model`: the shape of the grid of devices",
            default="required by `parallel: model`", example="mesh: (2, 2)"),
    Setting("axes", "a name for each axis of the mesh", "`parallel: model`: a name for each axis of the mesh",
            default="`(batch, model)` for a mesh of 2 dimensions", example="axes: (batch, model)"),
    Setting("layout", "a list of (weight pattern, mesh axes) pairs", "`parallel: model`: a list of (weight pattern, "
            "mesh axes) pairs: which weights to split along which mesh axes", default="required by `parallel: model`",
            example='layout: [("dense.*kernel", (none, model))]'),
))

EXPECT = Section("expect", "what must hold of the model, checked by `specc test`", plan="expect", settings=(
    Setting("params", "a parameter count or bound", "the model has exactly that many parameters; also `at_most(N)`, "
            "`at_least(N)`, `between(LOW, HIGH)`", example="params: at_most(40_000)"),
    Setting("output_shape", "a shape per example", "each output has that shape per example (without the batch); "
            "several outputs: a list of shapes in the order of `output`, `[(10,), (1,)]`", example="output_shape: (10,)"),
    Setting("initial_loss", "`chance` or `near(value, tolerance)`", "the loss before training is ln(number of classes) "
            "within 10%: a classifier that starts by guessing. The number of classes is the units of the output (2 per "
            "unit for binary cross-entropy); a regression loss is an error", example="initial_loss: chance"),
    Setting("overfit", "a number of training steps", "within 100 training steps on one batch, with the spec's loss and "
            "optimizer, the loss falls below 5% of its initial value", example="overfit: 100"),
    Setting("gradients", "`healthy`", "in one step, every trainable weight's gradients are finite and not all zero",
            example="gradients: healthy"),
))

TUNE = Section("tune", "how `specc tune` searches hyperparameters: the study's trials, objective, sampler and pruner",
               plan="tune", settings=(
    Setting("trials", "a whole number >= 1", "trials the study runs, every worker's together", default="20",
            example="trials: 50"),
    Setting("timeout", 'a number of seconds, or a duration in quotes: "90s", "30m", "2h"',
            'the time the study may take, in seconds or as `"90s"`, `"30m"`, `"2h"`: no trial starts after it',
            default="none", example='timeout: "30m"'),
    Setting("objective", "`val_loss` or `val_` and the name of a metric of `train`", "the value each trial is "
            "scored by: `val_loss`, or `val_` and a metric of `train` as history.csv names it (`val_accuracy`); "
            "with `validation: kfold(k)` in `train`, its mean over the folds", default="`val_` and the first "
            "metric of `train`, else `val_loss`", example="objective: val_accuracy"),
    Setting("direction", "`maximize` or `minimize`", "whether a higher or a lower objective is better",
            choices=DIRECTIONS, default="`minimize` for a loss or an error (`mse`, `mae`, cross-entropy, ...), "
            "else `maximize`", example="direction: maximize"),
    Setting("sampler", "an Optuna sampler", "how the next trial's values are chosen: `tpe`, `random`, `grid` (every "
            "combination) or `cmaes`", choices=SAMPLERS, default="`tpe`", example="sampler: random"),
    Setting("pruner", "an Optuna pruner", "stops trials whose objective after an epoch is behind the others': "
            "`median`, `hyperband` or `none`", choices=PRUNERS, default="`median`", example="pruner: hyperband"),
    Setting("workers", "a whole number >= 1", "processes on this machine running trials of the study at once",
            default="1", example="workers: 4"),
    Setting("storage", "an Optuna storage URL in quotes", "where the study is kept, for workers on other machines "
            'and to resume it: a database URL such as `"postgresql://user@host/db"` or `"sqlite:///study.db"`',
            default="a SQLite file in the study's directory", example='storage: "sqlite:///study.db"'),
    Setting("study", "a name", "the study's name in the storage: letters, digits, `_`, `-` and `.`",
            default="the spec file's name without `.model`", example='study: "mnist-width"'),
    Setting("seed", "a whole number >= 0 or `none`", "seeds the sampler", default="none", example="seed: 0"),
))

#: The `device` settings a `DistributionPlan` holds, in the order they are checked (each may look at the ones
#: before); `kind` is the plan's `device`.
DISTRIBUTION_SETTINGS: tuple[str, ...] = tuple(name for name in DEVICE.names if name != "kind")

#: Every section by name: the file's top-level settings, the model, then the settings sections in the order the
#: docs present them (and messages list them).
SECTIONS: dict[str, Section] = {s.name: s for s in (FILE, MODEL, DATA, TRAIN, INIT, DEVICE, EXPECT, TUNE)}

#: The sections a spec writes as `NAME { key: value ... }`.
SETTINGS_SECTIONS: tuple[str, ...] = tuple(name for name, s in SECTIONS.items() if s.form == "settings")


def homes(key: str) -> list[Section]:
    """The sections that take a setting named `key` (for "`epochs` belongs in `train`")."""
    return [s for s in SECTIONS.values() if key in s.names]
