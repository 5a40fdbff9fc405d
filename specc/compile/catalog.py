"""Keras's own catalogues, indexed by the names a spec uses.

Every public Keras layer is usable by its snake_case name (`Conv2D` -> `conv2d`,
`MultiHeadAttention` -> `multi_head_attention`) and by its lower-cased class name
(`maxpool2d`, `adamw`); a few short aliases people expect are added. Nothing here
wraps or re-describes a layer: names map to the Keras classes themselves.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any
from specc.runtime.keras_env import import_keras, keras_module

# Layers a spec may not use: they run arbitrary code, load files, or are not layers one stacks.
DENIED_LAYERS = {
    "Lambda": "it runs arbitrary Python code, which a spec may never do",
    "TFSMLayer": "it loads a TensorFlow SavedModel from disk",
    "JaxLayer": "it wraps arbitrary JAX code",
    "FlaxLayer": "it wraps arbitrary Flax code",
    "TorchModuleWrapper": "it wraps arbitrary PyTorch code",
    "Layer": "it is the abstract base class",
    "Wrapper": "it is an abstract base class",
    "InputLayer": "declare inputs with `input NAME: (shape)`",
    "Input": "declare inputs with `input NAME: (shape)`",
    "InputSpec": "it is not a layer",
}

LAYER_ALIASES = {
    "batchnorm": "BatchNormalization",
    "layernorm": "LayerNormalization",
    "groupnorm": "GroupNormalization",
    "rmsnorm": "RMSNormalization",
    "leaky_relu": "LeakyReLU",
    "mha": "MultiHeadAttention",
    "gap1d": "GlobalAveragePooling1D",
    "gap2d": "GlobalAveragePooling2D",
}

OBJECT_ALIASES = {
    "loss": {"mse": "MeanSquaredError", "mae": "MeanAbsoluteError", "mape": "MeanAbsolutePercentageError",
             "msle": "MeanSquaredLogarithmicError", "crossentropy": "CategoricalCrossentropy"},
    "metric": {"mse": "MeanSquaredError", "mae": "MeanAbsoluteError", "rmse": "RootMeanSquaredError",
               "mape": "MeanAbsolutePercentageError"},
    "schedule": {"cosine": "CosineDecay", "exponential": "ExponentialDecay", "piecewise": "PiecewiseConstantDecay",
                 "cosine_restarts": "CosineDecayRestarts", "polynomial": "PolynomialDecay"},
    "optimizer": {},
    "initializer": {},
    "regularizer": {},
    "constraint": {},
}

# Names Keras's compile() understands for metrics besides its catalogue (`get_metric` in its compile_utils).
METRIC_STRINGS = {"accuracy", "acc"}  # not "crossentropy" or "ce": compile() takes those for a loss only


def snake_case(name: str) -> str:
    from keras.src.utils.naming import to_snake_case  # Keras's own rule, not ours

    return to_snake_case(name)


@dataclass
class Catalog:
    """Spec names -> Keras objects for one kind (layer, loss, optimizer, ...)."""

    kind: str
    module_path: str
    classes: dict[str, str] = field(default_factory=dict)  # spec name -> class name in module
    functions: dict[str, str] = field(default_factory=dict)  # spec name -> function name in module
    extras: dict[str, type] = field(default_factory=dict)  # class name -> specc's own class (`specc.runtime.custom_objects`)
    canonical: list[str] = field(default_factory=list)  # names shown in suggestions
    _module: Any = field(default=None, repr=False, compare=False)  # looked up once: a layer is made per use

    def module(self):
        if self._module is None:
            self._module = keras_module(self.module_path)
        return self._module

    def class_name(self, name: str) -> str | None:
        return self.classes.get(name)

    def get_class(self, class_name: str):
        return self.extras.get(class_name) or getattr(self.module(), class_name)

    def module_of(self, class_name: str) -> str:
        """The module path an `Obj` of this class is built from."""
        return "specc.runtime.custom_objects" if class_name in self.extras else self.module_path

    def knows(self, name: str) -> bool:
        return name in self.classes or name in self.functions

    def keras_accepts(self, name: str) -> bool:
        """Whether Keras's own `get()` takes this spelling as a string."""
        get = getattr(self.module(), "get", None)
        if get is None:
            return False
        try:
            get(name)
            return True
        except Exception:  # noqa: BLE001 - Keras raises ValueError or TypeError for unknown names
            return False

    def choices(self) -> list[str]:
        return self.canonical


def _index(kind: str, module_path: str, base: type | None, denied=(), aliases=None, extras=None) -> Catalog:
    cat = Catalog(kind, module_path, extras=dict(extras or {}))
    mod = cat.module()
    members = {attr: getattr(mod, attr) for attr in dir(mod)} | cat.extras
    for attr in sorted(members):
        if attr.startswith("_") or attr in denied or attr in ("get", "serialize", "deserialize"):
            continue
        obj = members[attr]
        if inspect.isclass(obj):
            if base is not None and not issubclass(obj, base):
                continue
            if inspect.isabstract(obj):
                continue
            snake = snake_case(attr)
            for name in (snake, attr.lower()):
                cat.classes.setdefault(name, attr)
            # `re_lu`, `adam_w`, `rm_sprop` are Keras's mechanical split of acronyms: show `relu`, `adamw`.
            odd_split = any(len(part) <= 2 and not part[-1:].isdigit() for part in snake.split("_")) and "_" in snake
            cat.canonical.append(attr.lower() if odd_split else snake)
        elif callable(obj) and attr.islower():
            cat.functions.setdefault(attr, attr)
            if attr not in cat.classes:
                cat.canonical.append(attr)
    for alias, target in (aliases or {}).items():
        cat.classes.setdefault(alias, target)
        cat.canonical.append(alias)
    cat.canonical = list(dict.fromkeys(cat.canonical))
    return cat


@functools.lru_cache(maxsize=None)
def catalog(kind: str) -> Catalog:
    keras = import_keras()
    from specc.runtime import custom_objects
    if kind == "layer":
        cat = _index("layer", "keras.layers", keras.layers.Layer, DENIED_LAYERS, LAYER_ALIASES, custom_objects.LAYERS)
        cat.functions.clear()  # keras.layers.add() etc. are functional forms of the classes
        cat.canonical = [c for c in cat.canonical if c in cat.classes]
        return cat
    if kind == "activation":
        cat = _index("activation", "keras.activations", None)
        return cat
    spec = {
        "loss": ("keras.losses", keras.losses.Loss),
        "metric": ("keras.metrics", keras.metrics.Metric),
        "optimizer": ("keras.optimizers", keras.optimizers.Optimizer),
        "schedule": ("keras.optimizers.schedules", keras.optimizers.schedules.LearningRateSchedule),
        "initializer": ("keras.initializers", keras.initializers.Initializer),
        "regularizer": ("keras.regularizers", keras.regularizers.Regularizer),
        "constraint": ("keras.constraints", keras.constraints.Constraint),
    }[kind]
    denied = {"LossScaleOptimizer", "MultiOptimizer", "OptimizerMap", "Loss", "Metric", "MeanMetricWrapper",
              "Optimizer", "LearningRateSchedule", "Initializer", "Regularizer", "Constraint", "legacy", "schedules"}
    return _index(kind, spec[0], spec[1], denied, OBJECT_ALIASES[kind], custom_objects.METRICS if kind == "metric" else None)


def kind_of_argument(arg: str) -> str | None:
    """Which catalogue resolves a layer or optimizer argument, by its name (Keras's own naming)."""
    if arg == "activation" or arg.endswith("_activation"):
        return "activation"
    if arg.endswith("initializer"):
        return "initializer"
    if arg.endswith("regularizer"):
        return "regularizer"
    if arg.endswith("constraint"):
        return "constraint"
    if arg in ("layer", "backward_layer"):
        return "layer"
    if arg == "learning_rate":
        return "schedule"
    return None


@dataclass(frozen=True)
class Signature:
    """A Keras constructor's parameters, read with `inspect.signature`."""

    positional: tuple[str, ...]  # may be given by position, in order
    names: tuple[str, ...]  # every accepted keyword
    required: tuple[str, ...]


@functools.lru_cache(maxsize=None)
def signature_of(cls) -> Signature:
    keras = import_keras()
    sig = inspect.signature(cls.__init__)
    params = [p for p in list(sig.parameters.values())[1:]]
    positional = tuple(p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    names = [p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    required = tuple(p.name for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
    open_kwargs = any(p.kind == p.VAR_KEYWORD for p in params)
    if open_kwargs and isinstance(cls, type) and issubclass(cls, keras.layers.Layer):
        base = inspect.signature(keras.layers.Layer.__init__)
        names += [p for p in base.parameters if p not in ("self", "kwargs") and p not in names]
        names += [p for p in ("input_dim", "input_length", "seed") if p not in names]
    return Signature(positional, tuple(names), required)


@functools.lru_cache(maxsize=None)
def call_options_of(cls) -> tuple[str, ...]:
    """Options a layer takes when called rather than constructed (`use_causal_mask` of attention):
    the keyword parameters of `call` with a plain default (a flag or number), `training` excepted."""
    try:
        params = inspect.signature(cls.call).parameters.values()
    except (TypeError, ValueError):
        return ()
    return tuple(p.name for p in params if p.name != "training" and isinstance(p.default, (bool, int, float))
                 and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
