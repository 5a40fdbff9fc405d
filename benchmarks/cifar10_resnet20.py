"""The full ResNet-20 recipe of specs/cifar10_resnet20.model: what it reaches on CIFAR-10.

    SPECC_DATA_DIR=../shared/datasets python benchmarks/cifar10_resnet20.py [--epochs N] [--limit N]

Runs the spec as `specc run` does (the paper's schedule: SGD 0.1 with momentum 0.9, divided by 10
at 32k and 48k steps, 182 epochs of batch 128, weight decay 1e-4, pad-and-crop augmentation
written as the random whole-pixel shift it is, and flips) and prints the test accuracy, the epoch times and the device. He et al. (2015)
report 91.25% test accuracy for ResNet-20 (8.75% error). `--epochs` shortens the run (the
schedule's boundaries stay where they are, in steps).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import specc  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, help="train this many epochs instead of the recipe's 182")
    parser.add_argument("--limit", type=int, help="train on the first N of the 50,000 training images")
    parser.add_argument("--out", help="run directory (default: a temporary one)")
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="resnet20-"))
    result = specc.load(ROOT / "specs" / "cifar10_resnet20.model").run(
        out=out, epochs=args.epochs, limit=args.limit, verbose=2, force=True)
    m = result.metrics
    report = {
        "test_accuracy": m["test"]["accuracy"], "epochs": m["epochs"], "examples": m["examples"],
        "median_epoch_seconds": statistics.median(m["epoch_seconds"]), "device": m["device"],
        "versions": m["versions"], "run": str(out),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
