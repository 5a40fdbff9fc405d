"""Import Keras lazily, on the JAX backend, only for the commands that need a model; and prepare the process
environment JAX reads when it starts (`prepare_environment`)."""

from __future__ import annotations

import functools
import os
import re
import sys
import warnings
from typing import Any
from specc.core.cache import enable_jax_cache


#: Threads per virtual CPU device for XLA's CPU client (PJRT_NPROC), when several share one process.
THREADS_PER_DEVICE = 4

_FORCED_DEVICES = re.compile(r"--xla_force_host_platform_device_count=(\d+)")


def requested_cpu_devices() -> int:
    """How many CPU devices this process's JAX will have: `XLA_FLAGS=--xla_force_host_platform_device_count=N`,
    `JAX_NUM_CPU_DEVICES`, or `jax.config.update("jax_num_cpu_devices", N)` (1 if none)."""
    counts = [1]
    found = _FORCED_DEVICES.findall(os.environ.get("XLA_FLAGS", ""))
    if found:
        counts.append(int(found[-1]))
    env = os.environ.get("JAX_NUM_CPU_DEVICES", "")
    if env.strip().isdigit():
        counts.append(int(env))
    if "jax" in sys.modules:
        try:
            counts.append(int(sys.modules["jax"].config.jax_num_cpu_devices))
        except (AttributeError, TypeError, ValueError):
            pass
    return max(counts)


def backends_started() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except (ImportError, AttributeError):  # a JAX without this private helper: assume it started
        return True


def prepare_environment() -> None:
    """Before JAX's CPU backend starts: with several CPU devices in this process, give XLA's CPU client
    THREADS_PER_DEVICE threads per device (`PJRT_NPROC`), which it reads once, when it starts.

    With its default pool (max(cores, devices) threads), data-parallel training of a small CNN over 2 or 4
    virtual devices on a 2-core machine deadlocked in 11 of 13 and 4 of 4 runs; with 2 threads per device none
    did in 18 (docs/language.md). A `PJRT_NPROC` (or `NPROC`) already set is left as it is."""
    if "PJRT_NPROC" in os.environ or "NPROC" in os.environ:
        return
    devices = requested_cpu_devices()
    if devices <= 1 or backends_started():
        return
    os.environ["PJRT_NPROC"] = str(max(os.cpu_count() or 1, THREADS_PER_DEVICE * devices))


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
    """JAX's persistent compilation cache, switched on once per process (see `specc.core.cache`)."""
    if os.environ["KERAS_BACKEND"] == "jax":

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

    Callback: Any = import_keras().callbacks.Callback  # a named base class (mypy rejects a call as one)

    class FirstStep(Callback):
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
    mod = import_keras()
    for part in path.split(".")[1:]:
        mod = getattr(mod, part)
    return mod
