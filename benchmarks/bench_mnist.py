"""specc vs the same network written by hand in Keras: epoch time ratio, side by side in one process.

    SPECC_DATA_DIR=../shared/datasets python benchmarks/bench_mnist.py [--rounds 3] [--limit N]

Each round trains `specs/mnist.model` through specc's runner (`run_plan`, the code
behind `specc run`) and the hand-written Keras model with the same settings, in
alternating order (ABBA...), each for 2 epochs; the first epoch of each (XLA
compilation) is discarded. It prints the median epoch time of each and the ratio
specc / hand-written. Absolute times on shared machines are noise; the ratio is the claim.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


import specc  # noqa: E402
from specc.data import load_dataset, prepare  # noqa: E402
from specc.runner import run_plan  # noqa: E402


def hand_written_epochs(x, y, batch_size, epochs, seed):
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
    times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.t0)

    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0, callbacks=[Timer()])
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--limit", type=int, default=None, help="train on the first N examples (default: all 60,000)")
    ap.add_argument("--spec", default=str(ROOT / "specs" / "mnist.model"))
    args = ap.parse_args()

    spec = specc.load(args.spec)
    plan = spec.plan
    data = prepare(plan, load_dataset(plan), args.limit)
    bs, seed = plan.train.batch_size, plan.train.seed or 0
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            order = ("specc", "keras") if r % 2 == 0 else ("keras", "specc")
            for who in order:
                if who == "specc":
                    res = run_plan(plan, out=Path(tmp) / f"run{r}", epochs=2, limit=args.limit, verbose=0)
                    t = res.metrics["epoch_seconds"][1]
                    ours.append(t)
                else:
                    t = hand_written_epochs(data.x_train, data.y_train, bs, 2, seed)[1]
                    theirs.append(t)
                print(f"round {r + 1}: {who:<6} epoch {t:7.2f} s", flush=True)
    a, b = statistics.median(ours), statistics.median(theirs)
    paired = [x / y for x, y in zip(ours, theirs)]
    import jax
    import keras

    print(f"\nmnist.model, batch {bs}, {len(data.x_train):,} examples, keras {keras.__version__}, jax {jax.__version__}, "
          f"{jax.devices()[0].platform}, {os.cpu_count()} cpus")
    print(f"median epoch: specc {a:.2f} s, hand-written keras {b:.2f} s")
    print(f"ratio per round: {', '.join(f'{r:.3f}' for r in paired)}")
    print(f"ratio specc / hand-written (median of rounds): {statistics.median(paired):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
