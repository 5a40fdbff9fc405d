"""Import Keras lazily, on the JAX backend, only for the commands that need a model."""

from __future__ import annotations

import os
import warnings


def import_keras():
    """Return the `keras` module with `KERAS_BACKEND=jax` set first.

    Commands that need no model (`--help`, syntax checks) never call this.
    """
    backend = os.environ.setdefault("KERAS_BACKEND", "jax")
    if backend != "jax":
        warnings.warn(f"KERAS_BACKEND={backend}: specc is built and tested on the JAX backend", stacklevel=2)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


def keras_module(path: str):
    """`"keras.optimizers.schedules"` -> that module, Keras imported lazily."""
    if path == "specc.extras":
        from . import extras

        return extras
    mod = import_keras()
    for part in path.split(".")[1:]:
        mod = getattr(mod, part)
    return mod
