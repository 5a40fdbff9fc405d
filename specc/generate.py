"""Sample text from a trained next-token model: `specc generate RUN_DIR --prompt TEXT --tokens N`.

The run directory must hold `model.keras` and the `tokenizer.json` its training saved. The model
takes a fixed window of token ids; the context is written at the start of the window and the
rest is padding, which a causal model never looks at, so one compiled function serves every step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import Diagnostic, UsageError
from .text import SPECIALS, CharVocabulary


def generate_text(run_dir: str | Path, prompt: str, tokens: int, temperature: float = 1.0,
                  seed: int | None = None) -> str:
    """The prompt followed by `tokens` sampled tokens (greedy when `temperature` is 0)."""
    from .extras import load_model
    from .text import vocabulary_from_json

    run = Path(run_dir)
    for name in ("model.keras", "tokenizer.json"):
        if not (run / name).is_file():
            raise UsageError(Diagnostic(
                f"{run} is not a finished run of a text model: it has no {name}",
                hint="train one first, e.g. `specc run specs/shakespeare_gpt.model --out runs/gpt`"))
    if temperature < 0:
        raise UsageError(Diagnostic(f"--temperature must be >= 0, got {temperature}"))
    try:
        vocab = vocabulary_from_json((run / "tokenizer.json").read_text(encoding="utf-8"))
    except (ValueError, KeyError, TypeError) as err:
        raise UsageError(Diagnostic(f"cannot read {run / 'tokenizer.json'}: {err}")) from None
    model = load_model(run / "model.keras")
    window = _window(model, run)
    if isinstance(vocab, CharVocabulary):
        unknown = sorted({c for c in prompt if c not in vocab.index})
        if unknown:
            raise UsageError(Diagnostic(f"the prompt has characters the model never saw: {''.join(unknown)!r}",
                                        hint="use characters from the training text"))
    ids = [int(i) for i in vocab.ids(prompt)]
    if not ids:
        raise UsageError(Diagnostic("the prompt is empty: give at least one token of text with --prompt"))
    rng = np.random.default_rng(seed)
    for _ in range(tokens):
        context = ids[-window:]
        x = np.zeros((1, window), dtype=np.int32)  # (1, window): context, then padding
        x[0, : len(context)] = context
        scores = np.asarray(model.predict_on_batch(x), dtype=np.float64)[0, len(context) - 1]  # (vocab,)
        if scores.min() >= 0 and abs(scores.sum() - 1) < 1e-3:  # probabilities (softmax output): to logits
            scores = np.log(np.maximum(scores, 1e-12))
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
            or len(model.outputs[0].shape) != 3 or model.inputs[0].shape[1] is None:
        raise UsageError(Diagnostic(
            f"the model in {run} is not a next-token model: it maps {tuple(model.inputs[0].shape)} to "
            f"{tuple(model.outputs[0].shape)}; `generate` needs (batch, steps) ids to (batch, steps, vocabulary) scores",
            hint="train it with `task: next_token` in `data`"))
    return int(model.inputs[0].shape[1])
