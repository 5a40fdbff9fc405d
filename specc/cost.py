"""What a training step costs, from XLA's own analysis of the lowered step (no per-layer formulas).

`step_flops` lowers one forward and backward pass of the model on a batch (tracing only: nothing
is compiled or run) and reads XLA's cost analysis. `choose_steps_per_execution` uses it to pick
Keras's `steps_per_execution`: between executions Keras runs its Python loop, callbacks and
bookkeeping (about 0.1-0.3 ms per call on a CPU), which a step of a small model does not hide.
"""

from __future__ import annotations

import math

# An execution should hold at least this much work (about 10 ms on a 2-core CPU) ...
EXECUTION_FLOPS = 1e9
# ... and at most this many steps, with at least this many executions per epoch so that progress
# bars, the NaN guard and early stopping still hear from training often.
MAX_STEPS_PER_EXECUTION = 64
MIN_EXECUTIONS_PER_EPOCH = 8


def step_flops(model, batch_size: int) -> float | None:
    """FLOPs of one training step (forward and gradients) on a batch, as XLA counts them; None when
    the model cannot be lowered here (XLA's analysis is missing or the inputs are not plain tensors)."""
    import jax

    try:
        specs = [jax.ShapeDtypeStruct((batch_size, *t.shape[1:]), t.dtype) for t in model.inputs]
        trainable = [v.value for v in model.trainable_variables]
        others = [v.value for v in model.non_trainable_variables]

        def loss(values, *inputs):
            outputs, _ = model.stateless_call(values, others, list(inputs) if len(inputs) > 1 else inputs[0],
                                              training=True)
            return sum(o.astype("float32").sum() for o in jax.tree_util.tree_leaves(outputs))

        cost = jax.jit(jax.grad(loss)).lower(trainable, *specs).cost_analysis()
    except Exception:  # noqa: BLE001 - an estimate only: without one, Keras's default stands
        return None
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    flops = (cost or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def choose_steps_per_execution(flops: float | None, steps_per_epoch: int) -> int:
    """Enough steps per execution to hold EXECUTION_FLOPS of work, within the bounds above."""
    if not flops:
        return 1
    wanted = math.floor(EXECUTION_FLOPS / flops)
    return max(1, min(wanted, MAX_STEPS_PER_EXECUTION, steps_per_epoch // MIN_EXECUTIONS_PER_EPOCH))
