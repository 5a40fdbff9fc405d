"""Training speed: specc against the same model written by hand in Keras 3, in JAX + optax and in PyTorch.

    SPECC_DATA_DIR=../shared/datasets python benchmarks/speed.py            # the three MNIST specs, all epochs
    SPECC_DATA_DIR=../shared/datasets python benchmarks/speed.py --models mnist --epochs 3
    SPECC_DATA_DIR=../shared/datasets python benchmarks/speed.py --quick    # a tiny setting (the test suite's)

For each spec (`specs/mnist.model`, the seed CNN; `specs/mnist_mlp.model`; `specs/mnist_sgd.model`)
four sides train the same network with the same optimizer, batch size and number of epochs on
the same arrays (specc's data stage loads them once for all):

- `specc`: `specc.load(spec).run(...)`, the code behind `specc run` (checkpoints and all);
- `keras`: what a Keras user writes (`keras.Sequential`, `compile`, `fit`), on JAX;
- `jax`: a hand-written JAX + optax loop (`jax.jit` step, data kept on the device, per-epoch
  permutation), layers from `jax.lax` as Flax writes them;
- `torch`: hand-written PyTorch 2 on the CPU (`nn.Sequential`, eager, in-memory tensors).

Each side lives in its own worker process (JAX's and PyTorch's thread pools slow each other
down when they share one: PyTorch ran at 360 samples/s beside an idle JAX instead of about
4,000). The workers are started together and then run one epoch at a time, in turn, rotating
the order every round, so that the machine's drift hits every side alike; only one computes
at any moment. The first epoch of each side holds its compilation, so ratios are the median
over the later epochs, each epoch's time divided by the time of the other side's epoch of the
same round. Last, each side's test accuracy after the same number of epochs.

It prints per-epoch times, `specc / torch`, `specc / keras` and `specc / jax` ratios, and the
accuracies. Absolute times on shared machines are noise; the ratios are the claim.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
ROOT = Path(__file__).resolve().parent.parent
MODELS = ("mnist", "mnist_mlp", "mnist_sgd")
SIDES = ("specc", "keras", "jax", "torch")


# --------------------------------------------------------------------------------------------------
# The parent: start the workers, alternate epochs, print ratios.

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    ap.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    ap.add_argument("--epochs", type=int, default=None, help="epochs per side (default: each spec's own)")
    ap.add_argument("--limit", type=int, default=None, help="train on the first N examples (default: all)")
    ap.add_argument("--quick", action="store_true", help="a tiny setting: 2 epochs of 640 examples, MLP and SGD CNN")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:VAR=VALUE[,VAR=VALUE]",
                    help="one more specc side run with these environment variables (to measure a lever: "
                    "`--variant keras-lowering:SPECC_LOWERING=keras`, `--variant onednn:XLA_FLAGS=--xla_cpu_use_onednn=true`)")
    ap.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker, args.model, args.epochs, args.limit)
    if args.quick:
        args.epochs, args.limit = args.epochs or 2, args.limit or 640
        if args.models == list(MODELS):
            args.models = ["mnist_mlp", "mnist_sgd"]
    if "torch" in args.sides:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("speed: PyTorch is not installed (`pip install torch==2.13.0`); skipping the torch side",
                  file=sys.stderr)
            args.sides = [s for s in args.sides if s != "torch"]
    variants = {}
    for v in args.variant:
        name, _, assignments = v.partition(":")
        variants[name] = dict(a.split("=", 1) for a in assignments.split(",") if a)
    print(machine_line(), flush=True)
    results = {m: compare(m, args.sides, args.epochs, args.limit, variants) for m in args.models}
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine_line(), "results": results}, indent=1) + "\n")
    return 0


def machine_line() -> str:
    import platform

    import jax
    import keras

    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    try:
        import torch
        tv = f", PyTorch {torch.__version__}"
    except ImportError:
        tv = ""
    return (f"{time.strftime('%Y-%m-%d')}: {os.cpu_count()} cores ({cpu}), {jax.devices()[0].platform}; "
            f"Keras {keras.__version__}, JAX {jax.__version__}{tv}, Python {platform.python_version()}")


def compare(model: str, sides: list[str], epochs: int | None, limit: int | None,
            variants: dict[str, dict[str, str]] | None = None) -> dict:
    procs = {}
    variants = variants or {}
    sides = [*sides, *variants]
    for side in sides:
        cmd = [sys.executable, __file__, "--worker", "specc" if side in variants else side, "--model", model]
        cmd += ["--epochs", str(epochs)] if epochs else []
        cmd += ["--limit", str(limit)] if limit else []
        procs[side] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                       env={**os.environ, "KERAS_BACKEND": "jax", **variants.get(side, {})})
    try:
        info = {side: read(procs[side]) for side in sides}  # each says it is ready: data loaded, model built
        n = info[sides[0]]["epochs"]
        print(f"\n{model}: {info[sides[0]]['describe']}; {n} epochs of {info[sides[0]]['examples']:,} examples",
              flush=True)
        times: dict[str, list[float]] = {s: [] for s in sides}
        for epoch in range(n):
            order = sides[epoch % len(sides):] + sides[:epoch % len(sides)]  # rotate who goes first
            for side in order:
                send(procs[side], "epoch")
                times[side].append(read(procs[side])["seconds"])
            print(f"  epoch {epoch + 1}: " + "  ".join(f"{s} {times[s][-1]:.2f} s" for s in sides), flush=True)
        acc = {}
        for side in sides:
            send(procs[side], "evaluate")
            acc[side] = read(procs[side])["accuracy"]
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.stdin.close()
                p.wait(timeout=120)
    later = slice(1, None) if n > 1 else slice(None)  # epoch 1 holds the compilation
    result = {"epochs": n, "examples": info[sides[0]]["examples"], "seconds": times, "accuracy": acc, "ratios": {}}
    print(f"  median epoch (after the first): " + "  ".join(
        f"{s} {statistics.median(times[s][later]):.2f} s" for s in sides))
    print(f"  first epoch (with compilation): " + "  ".join(f"{s} {times[s][0]:.2f} s" for s in sides))
    if "specc" in sides:
        for other in sides:
            if other == "specc":
                continue
            pairs = [a / b for a, b in zip(times["specc"][later], times[other][later])]
            result["ratios"][other] = {"median": statistics.median(pairs), "min": min(pairs), "max": max(pairs)}
            print(f"  specc / {other} = {statistics.median(pairs):.3f} "
                  f"(median of {len(pairs)} epoch pairs, {min(pairs):.3f}-{max(pairs):.3f})")
    print(f"  test accuracy after {n} epochs: " + "  ".join(f"{s} {acc[s]:.4f}" for s in sides), flush=True)
    return result


def send(proc, command: str) -> None:
    proc.stdin.write(command + "\n")
    proc.stdin.flush()


def read(proc) -> dict:
    line = proc.stdout.readline()
    if not line:
        raise SystemExit(f"speed: a worker stopped (exit code {proc.wait()}); see its errors above")
    return json.loads(line)


# --------------------------------------------------------------------------------------------------
# A worker: one side, one model. It reports `ready`, then runs an epoch per `epoch` line and
# answers `evaluate` with the test accuracy.

class Protocol:
    """The worker's half of the conversation: JSON lines on stdout, commands on stdin."""

    def __init__(self):
        self.out = sys.stdout
        sys.stdout = sys.stderr  # whatever the frameworks print must not mix with the protocol

    def say(self, **fields) -> None:
        self.out.write(json.dumps(fields) + "\n")
        self.out.flush()

    def wait(self, expected: str) -> None:
        line = sys.stdin.readline().strip()
        if line != expected:
            raise SystemExit(0 if not line else f"speed worker: expected {expected!r}, got {line!r}")


def worker(side: str, model: str, epochs: int | None, limit: int | None) -> int:
    sys.path.insert(0, str(ROOT))
    import specc
    from specc.data.prepare import load_dataset, prepare

    spec = specc.load(str(ROOT / "specs" / f"{model}.model"))
    plan = spec.plan
    train = plan.train
    n = epochs or train.epochs
    data = prepare(plan, load_dataset(plan), limit)
    x, y = data.x_train, data.y_train
    x_test, y_test = data.x_test, data.y_test
    proto = Protocol()
    setting = {"batch": train.batch_size, "seed": train.seed or 0, "model": model}
    ready = dict(epochs=n, examples=len(x), describe=f"batch {train.batch_size}, {getattr(train.optimizer, 'cls', train.optimizer)}")
    if side == "specc":
        return specc_side(spec, n, limit, proto, ready)
    if side == "keras":
        return keras_side(setting, n, x, y, x_test, y_test, proto, ready)
    if side == "jax":
        return jax_side(setting, n, x, y, x_test, y_test, proto, ready)
    return torch_side(setting, n, x, y, x_test, y_test, proto, ready)


def epoch_gate(proto: Protocol):
    """A Keras callback that waits for the parent before each epoch and reports each epoch's time, from
    its start to the start of the next one (so what runs at an epoch's end, checkpoints included, counts)."""
    import keras

    class Gate(keras.callbacks.Callback):
        started = None

        def _report(self):
            if self.started is not None:
                proto.say(seconds=time.perf_counter() - self.started)

        def on_epoch_begin(self, epoch, logs=None):
            self._report()
            proto.wait("epoch")
            self.started = time.perf_counter()

        def on_train_end(self, logs=None):
            self._report()

    return Gate()


def specc_side(spec, n, limit, proto, ready) -> int:
    proto.say(**ready)
    with tempfile.TemporaryDirectory() as tmp:
        result = spec.run(out=Path(tmp) / "run", epochs=n, limit=limit, verbose=0, callbacks=[epoch_gate(proto)])
    proto.wait("evaluate")
    proto.say(accuracy=result.metrics["test"]["accuracy"])
    return 0


def keras_model(model: str):
    """The three specs' networks as a Keras user writes them."""
    import keras
    from keras import layers

    if model == "mnist":
        net = keras.Sequential([
            keras.Input((28, 28, 1)),
            layers.Conv2D(32, 3, activation="relu"),  # (26, 26, 32)
            layers.MaxPooling2D(2),                   # (13, 13, 32)
            layers.Conv2D(64, 3, activation="relu"),  # (11, 11, 64)
            layers.MaxPooling2D(2),                   # (5, 5, 64)
            layers.Flatten(),                         # (1600,)
            layers.Dense(10, activation="softmax"),
        ])
        return net, keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy"
    if model == "mnist_mlp":
        net = keras.Sequential([keras.Input((784,)), layers.Dense(128, activation="relu"),
                                layers.Dense(10, activation="softmax")])
        return net, keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy"
    net = keras.Sequential([
        keras.Input((28, 28, 1)),
        layers.Conv2D(16, 3, activation="relu"),  # (26, 26, 16)
        layers.MaxPooling2D(2),                   # (13, 13, 16)
        layers.Flatten(),                         # (2704,)
        layers.Dense(10),                         # logits
    ])
    return net, keras.optimizers.SGD(0.01, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def keras_side(setting, n, x, y, x_test, y_test, proto, ready) -> int:
    import keras

    keras.utils.set_random_seed(setting["seed"])
    net, opt, loss = keras_model(setting["model"])
    net.compile(optimizer=opt, loss=loss, metrics=["accuracy"])
    proto.say(**ready)
    net.fit(x, y, batch_size=setting["batch"], epochs=n, shuffle=True, verbose=0, callbacks=[epoch_gate(proto)])
    proto.wait("evaluate")
    proto.say(accuracy=float(net.evaluate(x_test, y_test, batch_size=256, verbose=0, return_dict=True)["accuracy"]))
    return 0


def jax_side(setting, n, x, y, x_test, y_test, proto, ready) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    from jax import lax

    model = setting["model"]
    key = jax.random.PRNGKey(setting["seed"])
    dn = ("NHWC", "HWIO", "NHWC")

    def glorot(k, shape, fan_in, fan_out):
        lim = np.sqrt(6 / (fan_in + fan_out))
        return jax.random.uniform(k, shape, jnp.float32, -lim, lim)

    def conv_init(k, cin, cout):
        return {"w": glorot(k, (3, 3, cin, cout), 9 * cin, 9 * cout), "b": jnp.zeros(cout)}

    def dense_init(k, din, dout):
        return {"w": glorot(k, (din, dout), din, dout), "b": jnp.zeros(dout)}

    def conv(p, h):
        return lax.conv_general_dilated(h, p["w"], (1, 1), "VALID", dimension_numbers=dn) + p["b"]

    def max_pool(h):  # as flax.linen.max_pool: reduce_window
        return lax.reduce_window(h, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")

    ks = jax.random.split(key, 3)
    if model == "mnist":
        params = {"c1": conv_init(ks[0], 1, 32), "c2": conv_init(ks[1], 32, 64), "d": dense_init(ks[2], 1600, 10)}

        def logits(p, h):  # (b, 28, 28, 1) -> (b, 10)
            h = max_pool(jax.nn.relu(conv(p["c1"], h)))  # (b, 13, 13, 32)
            h = max_pool(jax.nn.relu(conv(p["c2"], h)))  # (b, 5, 5, 64)
            return h.reshape(h.shape[0], -1) @ p["d"]["w"] + p["d"]["b"]
        opt = optax.adam(1e-3)
    elif model == "mnist_mlp":
        params = {"h": dense_init(ks[0], 784, 128), "o": dense_init(ks[1], 128, 10)}

        def logits(p, h):  # (b, 784) -> (b, 10)
            return jax.nn.relu(h @ p["h"]["w"] + p["h"]["b"]) @ p["o"]["w"] + p["o"]["b"]
        opt = optax.adam(1e-3)
    else:
        params = {"c": conv_init(ks[0], 1, 16), "d": dense_init(ks[1], 2704, 10)}

        def logits(p, h):  # (b, 28, 28, 1) -> (b, 10)
            h = max_pool(jax.nn.relu(conv(p["c"], h)))  # (b, 13, 13, 16)
            return h.reshape(h.shape[0], -1) @ p["d"]["w"] + p["d"]["b"]
        opt = optax.sgd(0.01, momentum=0.9)

    def loss_fn(p, xb, yb):
        return optax.softmax_cross_entropy_with_integer_labels(logits(p, xb), yb).mean()

    @jax.jit
    def step(p, s, xb, yb):
        loss, g = jax.value_and_grad(loss_fn)(p, xb, yb)
        updates, s = opt.update(g, s, p)
        return optax.apply_updates(p, updates), s, loss

    state = opt.init(params)
    xd, yd = jnp.asarray(x), jnp.asarray(y, jnp.int32)  # on the device once
    rng = np.random.default_rng(setting["seed"])
    bs = setting["batch"]
    proto.say(**ready)
    for _ in range(n):
        proto.wait("epoch")
        t0 = time.perf_counter()
        order = jnp.asarray(rng.permutation(len(x)))
        for i in range(0, len(x), bs):
            idx = order[i:i + bs]
            params, state, loss = step(params, state, xd[idx], yd[idx])
        jax.block_until_ready(loss)
        proto.say(seconds=time.perf_counter() - t0)
    proto.wait("evaluate")
    pred = jax.jit(lambda p, h: jnp.argmax(logits(p, h), -1))
    hits = sum(int((pred(params, jnp.asarray(x_test[i:i + 1000])) == jnp.asarray(y_test[i:i + 1000])).sum())
               for i in range(0, len(x_test), 1000))
    proto.say(accuracy=hits / len(x_test))
    return 0


def torch_side(setting, n, x, y, x_test, y_test, proto, ready) -> int:
    import numpy as np
    import torch
    from torch import nn

    torch.manual_seed(setting["seed"])
    model = setting["model"]
    if model == "mnist":
        net = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),   # (b, 32, 13, 13)
                            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),  # (b, 64, 5, 5)
                            nn.Flatten(), nn.Linear(1600, 10))
        opt = torch.optim.Adam(net.parameters(), 1e-3)
    elif model == "mnist_mlp":
        net = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
        opt = torch.optim.Adam(net.parameters(), 1e-3)
    else:
        net = nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2704, 10))
        opt = torch.optim.SGD(net.parameters(), 0.01, momentum=0.9)

    def tensor(a):  # images NHWC -> NCHW, as PyTorch's convolutions want them
        t = torch.from_numpy(np.ascontiguousarray(a))
        return t.permute(0, 3, 1, 2).contiguous() if t.ndim == 4 else t

    xt, yt = tensor(x), torch.from_numpy(np.asarray(y, np.int64))
    loss_fn = nn.CrossEntropyLoss()
    bs = setting["batch"]
    proto.say(**ready)
    for _ in range(n):
        proto.wait("epoch")
        t0 = time.perf_counter()
        net.train()
        order = torch.randperm(len(xt))
        for i in range(0, len(xt), bs):
            idx = order[i:i + bs]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        proto.say(seconds=time.perf_counter() - t0)
    proto.wait("evaluate")
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(tensor(x_test[i:i + 1000])).argmax(-1) for i in range(0, len(x_test), 1000)])
    proto.say(accuracy=float((pred.numpy() == np.asarray(y_test)).mean()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
