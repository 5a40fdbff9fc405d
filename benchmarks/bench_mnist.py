"""specc vs the same network written by hand in Keras: epoch time ratio, side by side in one process.

    SPECC_DATA_DIR=../shared/datasets python benchmarks/bench_mnist.py [--pairs 6] [--limit N]

The specc model is built and compiled by the code behind `specc run` (`build_model`,
`compile_model`, `fit_options`); the hand-written one is what a Keras user writes. Both
train on the same arrays, one epoch at a time, alternating (specc, keras, keras, specc,
...), so that the machine's drift hits both alike. Each model's first epoch (XLA
compilation) is discarded. It prints each pair's ratio and their median: on shared
machines absolute times are noise, and the ratio is the claim.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import specc  # noqa: E402
from specc.compile.build import build_model  # noqa: E402
from specc.data.prepare import load_dataset, prepare  # noqa: E402
from specc.train.runner import compile_model, fit_options  # noqa: E402


def hand_written(seed: int):
    """What a user writes without specc."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def timed_epoch(model, x, y, epoch: int, **fit_kw) -> float:
    t0 = time.perf_counter()
    model.fit(x, y, epochs=epoch + 1, initial_epoch=epoch, verbose=0, **fit_kw)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=6, help="measured epochs per side (default 6)")
    ap.add_argument("--limit", type=int, default=None, help="train on the first N examples (default: all 60,000)")
    ap.add_argument("--spec", default=str(ROOT / "specs" / "mnist.model"))
    args = ap.parse_args()

    import jax
    import keras

    plan = specc.load(args.spec).plan
    data = prepare(plan, load_dataset(plan), args.limit)
    seed = plan.train.seed or 0
    keras.utils.set_random_seed(seed)
    ours = build_model(plan)
    compile_model(plan, ours)
    theirs = hand_written(seed)
    assert ours.count_params() == theirs.count_params()
    ours_kw = fit_options(plan)
    theirs_kw = {"batch_size": plan.train.batch_size, "shuffle": True}

    x, y = data.x_train, data.y_train
    timed_epoch(ours, x, y, 0, **ours_kw)  # compilation
    timed_epoch(theirs, x, y, 0, **theirs_kw)
    a_times, b_times = [], []
    for i in range(args.pairs):
        order = ("specc", "keras") if i % 2 == 0 else ("keras", "specc")
        for who in order:
            if who == "specc":
                a_times.append(timed_epoch(ours, x, y, i + 1, **ours_kw))
            else:
                b_times.append(timed_epoch(theirs, x, y, i + 1, **theirs_kw))
        print(f"pair {i + 1}: specc {a_times[-1]:6.2f} s, keras {b_times[-1]:6.2f} s, "
              f"ratio {a_times[-1] / b_times[-1]:.3f}", flush=True)
    ratios = [a / b for a, b in zip(a_times, b_times)]
    print(f"\n{Path(args.spec).name}, batch {plan.train.batch_size}, {len(x):,} examples per epoch, "
          f"keras {keras.__version__}, jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} cpus")
    print(f"median epoch: specc {statistics.median(a_times):.2f} s, hand-written keras {statistics.median(b_times):.2f} s")
    print(f"ratio specc / hand-written (median of {len(ratios)} pairs): {statistics.median(ratios):.3f}"
          f"  [min {min(ratios):.3f}, max {max(ratios):.3f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
