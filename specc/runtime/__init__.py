"""Keras imported lazily on the JAX backend, the process environment JAX reads, specc's registered Keras objects and the checked model-file loader."""
