"""Import Keras lazily, on the JAX backend, only for the commands that need a model."""

from __future__ import annotations

import functools
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

    _jax_cache_once()
    return keras


@functools.lru_cache(maxsize=1)
def _jax_cache_once():
    """JAX's persistent compilation cache, switched on once per process (see `specc.cache`)."""
    if os.environ["KERAS_BACKEND"] == "jax":
        from .cache import enable_jax_cache

        return enable_jax_cache()
    return None


def startup_probe() -> list:
    """For `benchmarks/startup.py`: with `SPECC_STARTUP_PROBE=FILE` set, a callback that appends to FILE the
    wall-clock times (`time.time()`) at which the first training step begins and ends, as JSON lines;
    with it unset (always, outside that benchmark), nothing."""
    path = os.environ.get("SPECC_STARTUP_PROBE")
    if not path:
        return []
    import json
    import time

    def note(event: str) -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"event": event, "time": time.time(), "pid": os.getpid()}) + "\n")

    class FirstStep(import_keras().callbacks.Callback):
        seen = False

        def on_train_batch_begin(self, batch, logs=None):
            if not self.seen:
                note("first_step_begin")

        def on_train_batch_end(self, batch, logs=None):
            if not self.seen:
                self.seen = True
                import jax

                jax.block_until_ready(logs)  # the step's results exist: it ran, not only dispatched
                note("first_step_end")

    return [FirstStep()]


def keras_module(path: str):
    """`"keras.optimizers.schedules"` -> that module, Keras imported lazily."""
    if path == "specc.extras":
        from . import extras

        return extras
    mod = import_keras()
    for part in path.split(".")[1:]:
        mod = getattr(mod, part)
    return mod
