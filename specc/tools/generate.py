"""Sample text from a trained next-token model: `specc generate RUN_DIR --prompt TEXT --tokens N`.

The run directory must hold `model.keras` and the `tokenizer.json` its training saved. The model
takes a fixed window of token ids; the context is written at the start of the window and the
rest is padding, which a causal model never looks at, so one compiled function serves every step.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from specc.core.errors import DataError, Diagnostic, UsageError, printable
from specc.data.tokenizers import SPECIALS, CharVocabulary


def generate_text(run_dir: str | Path, prompt: str, tokens: int, temperature: float = 1.0,
                  seed: int | None = None) -> str:
    """The prompt followed by `tokens` sampled tokens (greedy when `temperature` is 0)."""
    from specc.data.tokenizers import read_vocabulary
    from specc.runtime.model_files import open_model
    from specc.train.rundir import saved_model

    run = Path(run_dir)
    for name in ("model.keras", "tokenizer.json"):
        if not (run / name).is_file():
            raise UsageError(Diagnostic(
                f"this is not a finished run of a text model: it has no {name}", file=str(run),
                hint="train one first, e.g. `specc run specs/shakespeare_gpt.model --out runs/gpt`"))
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or temperature < 0:
        raise UsageError(Diagnostic(f"the temperature must be a finite number >= 0, got {temperature!r}",
                                    file="--temperature"))
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise UsageError(Diagnostic(f"the seed must be a whole number >= 0, got {seed!r}", file="--seed"))
    vocab = read_vocabulary(run / "tokenizer.json")  # bounded, checked; a DataError naming the file
    model = open_model(saved_model(run))
    window = _window(model, run)
    width = int(model.outputs[0].shape[-1])
    size = min(width, vocab.size)  # ids the model scores and the tokenizer can decode
    if size <= len(SPECIALS):
        raise DataError(Diagnostic(
            f"the model scores {width} tokens and the tokenizer has {vocab.size}: no token to sample beyond "
            f"{', '.join(SPECIALS)}", file=str(run), hint="the run's model.keras and tokenizer.json do not belong together"))
    if isinstance(vocab, CharVocabulary):
        unknown = sorted({c for c in prompt if c not in vocab.index})
        if unknown:
            raise UsageError(Diagnostic(
                f"the prompt has characters the model never saw: {printable(repr(''.join(unknown))[:200], lines=False)}",
                file="--prompt", hint="use characters from the training text"))
    ids = [int(i) for i in vocab.ids(prompt)]
    if not ids:
        raise UsageError(Diagnostic("the prompt is empty: give at least one token of text", file="--prompt"))
    if max(ids) >= width:
        raise DataError(Diagnostic(
            f"the prompt has token id {max(ids)}, but the model scores only {width} tokens (its tokenizer has {vocab.size})",
            file=str(run / "tokenizer.json"), hint="the run's model.keras and tokenizer.json do not belong together"))
    rng = np.random.default_rng(seed)
    for _ in range(tokens):
        context = ids[-window:]
        x = np.zeros((1, window), dtype=np.int32)  # (1, window): context, then padding
        x[0, : len(context)] = context
        scores = np.asarray(model.predict_on_batch(x), dtype=np.float64)[0, len(context) - 1]  # (width,)
        if not np.isfinite(scores).all():
            raise DataError(Diagnostic(
                f"the model's scores for the next token are not finite ({scores[~np.isfinite(scores)][0]}) "
                f"after {len(ids)} tokens", file=str(run / "model.keras"),
                hint="its weights are NaN or infinite: was the run's training stopped by a diverging loss?"))
        if scores.min() >= 0 and abs(scores.sum() - 1) < 1e-3:  # probabilities (softmax output): to logits
            scores = np.log(np.maximum(scores, 1e-12))
        scores = scores[:size]  # a model wider than the tokenizer: ids past its end cannot be written out
        scores[: len(SPECIALS)] = -np.inf  # never padding, unknown or mask
        if temperature == 0:
            ids.append(int(np.argmax(scores)))
            continue
        z = scores / temperature
        p = np.exp(z - z.max())
        ids.append(int(rng.choice(len(p), p=p / p.sum())))
    return vocab.decode(ids)


def _window(model, run: Path) -> int:
    """The model's fixed context length; the model must map (batch, steps) ids to (batch, steps, vocab)."""
    if len(model.inputs) != 1 or len(model.outputs) != 1 or len(model.inputs[0].shape) != 2 \
            or len(model.outputs[0].shape) != 3 or model.inputs[0].shape[1] is None or model.outputs[0].shape[-1] is None:
        raise UsageError(Diagnostic(
            f"not a next-token model: it maps {tuple(model.inputs[0].shape)} to "
            f"{tuple(model.outputs[0].shape)}; `generate` needs (batch, steps) ids to (batch, steps, vocabulary) scores",
            file=str(run / "model.keras"), hint="train it with `task: next_token` in `data`"))
    return int(model.inputs[0].shape[1])
