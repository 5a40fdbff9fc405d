"""Does masked-token pre-training help? specs/sst2_bert_finetune.model trained from the weights of
specs/sst2_bert_pretrain.model and from scratch, on the same labels and steps, side by side.

    SPECC_DATA_DIR=../shared/datasets python benchmarks/bert_pretraining.py [--pretrained RUN_DIR]
        [--limit N] [--epochs N] [--lr RATE] [--seeds 1 2 3]

Without `--pretrained`, it first runs the pre-training spec as written (8 epochs over the 67,349
SST-2 training sentences; 25 minutes on 2 CPU cores). Both fine-tuning runs use the pre-training
run's vocabulary, the same seed, data and schedule; only `init` differs. With several seeds
(which change the classifier's initialization and the order of the examples), each seed trains
both. Prints the SST-2 dev accuracy of each run and their means as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import specc  # noqa: E402
from specc.train.runner import run_plan  # noqa: E402


def compare(pretrained: Path | None = None, seeds: list[int] | None = None, limit: int | None = None,
            epochs: int | None = None, lr: float | None = None) -> dict:
    """Fine-tune from the pre-training run (made first when `pretrained` is None) and from scratch,
    once per seed; returns each run's SST-2 dev accuracy and the means."""
    work = Path(tempfile.mkdtemp(prefix="bert-"))
    if pretrained is None:
        pretrained = work / "pretrain"
        specc.load(ROOT / "specs" / "sst2_bert_pretrain.model").run(out=pretrained, verbose=2)
    spec = specc.load(ROOT / "specs" / "sst2_bert_finetune.model")
    train = spec.plan.train
    if lr:
        optimizer = train.optimizer.model_copy(update={"kwargs": {**train.optimizer.kwargs, "learning_rate": lr}})
        train = train.model_copy(update={"optimizer": optimizer})
    data = spec.plan.data.model_copy(update={"tokenizer": {"path": str(pretrained.resolve())}})
    report: dict = {"pretrained": str(pretrained), "limit": limit, "epochs": epochs or train.epochs,
                    "seeds": seeds or [train.seed], "fine_tuned": [], "from_scratch": []}
    for seed in report["seeds"]:
        for name, init in (("fine_tuned", spec.plan.init.model_copy(update={"source": str(pretrained.resolve())})),
                           ("from_scratch", None)):
            plan = spec.plan.model_copy(update={"init": init, "data": data,
                                                "train": train.model_copy(update={"seed": seed})})
            result = run_plan(plan, out=work / f"{name}-{seed}", epochs=epochs, limit=limit, verbose=0)
            report[name].append(result.metrics["test"]["accuracy"])
            print(f"seed {seed}, {name}: dev accuracy {report[name][-1]:.4f}", flush=True)
    for name in ("fine_tuned", "from_scratch"):
        report[f"{name}_mean"] = sum(report[name]) / len(report[name])
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained", help="a finished run of specs/sst2_bert_pretrain.model (else one is made)")
    parser.add_argument("--limit", type=int, help="fine-tune on the first N labelled sentences (default: all)")
    parser.add_argument("--epochs", type=int, help="fine-tuning epochs (default: the spec's)")
    parser.add_argument("--lr", type=float, help="fine-tuning learning rate (default: the spec's)")
    parser.add_argument("--seeds", type=int, nargs="+", help="fine-tuning seeds (default: the spec's)")
    args = parser.parse_args()
    report = compare(Path(args.pretrained) if args.pretrained else None, args.seeds, args.limit, args.epochs, args.lr)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
