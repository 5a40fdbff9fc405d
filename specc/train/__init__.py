"""Training a plan: run directories, devices, lowering, compile, fit, checkpoints, curves, and the diagnosis of NaN and out-of-memory failures."""
