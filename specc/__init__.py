"""specc: neural networks and their training as reviewable text, built with Keras 3 on JAX.

    import specc
    spec = specc.load("specs/mnist.model")   # or specc.loads(text)
    spec.summary()                           # layers, output shapes, parameters
    model = spec.build_model()               # a fresh keras.Model
    result = spec.run(out="runs/mnist", epochs=1, limit=1000)
"""

__version__ = "0.1.0"

from .api import CompiledSpec, load, loads  # noqa: E402
from .errors import DataError, InternalError, SpecError, UsageError, UserError  # noqa: E402

__all__ = ["load", "loads", "CompiledSpec", "SpecError", "DataError", "UsageError", "UserError", "InternalError",
           "__version__"]
