"""specc: neural networks and their training as reviewable text, built with Keras 3 on JAX.

    import specc
    spec = specc.load("specs/mnist.model")   # or specc.loads(text)
    spec.summary()                           # layers, output shapes, parameters
    model = spec.build_model()               # a fresh keras.Model
    result = spec.run(out="runs/mnist", epochs=1, limit=1000)
    text = specc.import_model(model)         # a keras.Model -> spec text
    code = specc.emit(spec)                  # spec -> standalone Keras code
"""

from specc.core.errors import (DataError, DeviceError, DivergedError, InternalError, OutOfMemoryError, SpecError,
                               TrainingError, UsageError, UserError)
from specc.core.version import __version__


def __getattr__(name: str):
    """The API is imported on first use, so `specc --help` starts fast."""
    if name in ("load", "loads", "CompiledSpec", "import_model", "emit", "format_text"):
        from specc import api
        return getattr(api, name)
    raise AttributeError(f"module 'specc' has no attribute {name!r}")

__all__ = ["load", "loads", "CompiledSpec", "import_model", "emit", "format_text", "SpecError", "DataError", "UsageError", "UserError", "InternalError",
           "TrainingError", "DeviceError", "DivergedError", "OutOfMemoryError",
           "__version__"]
