"""Text to token ids: character vocabularies, and word/WordPiece vocabularies trained with
Hugging Face `tokenizers` (Rust, no TensorFlow).

Every vocabulary reserves id 0 for padding, 1 for unknown text and 2 for the mask of masked-token
pre-training; a run saves its vocabulary as `tokenizer.json` and later runs (`specc generate`,
a fine-tuning spec that starts from the run) read it back.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, Field, RootModel, StringConstraints, ValidationError

from specc.core.errors import printable

SPECIALS = ("[PAD]", "[UNK]", "[MASK]")
PAD, UNK, MASK = 0, 1, 2
KINDS = ("chars", "words", "wordpiece")


class CharVocabulary:
    """One id per character seen in the training text (sorted), after the special ids."""

    kind = "chars"

    def __init__(self, chars: Iterable[str]):
        self.chars = list(chars)
        self.index = {c: i + len(SPECIALS) for i, c in enumerate(self.chars)}

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int | None = None) -> CharVocabulary:
        seen: set[str] = set()
        for t in texts:
            seen.update(t)
        return cls(sorted(seen))

    @property
    def size(self) -> int:
        return len(SPECIALS) + len(self.chars)

    def ids(self, text: str) -> np.ndarray:
        return np.array([self.index.get(c, UNK) for c in text], dtype=np.int32)

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[i - len(SPECIALS)] for i in ids if i >= len(SPECIALS))

    def to_json(self) -> str:
        return json.dumps({"specc_vocabulary": "chars", "specials": SPECIALS, "chars": self.chars})


class HFVocabulary:
    """A Hugging Face `tokenizers` model (word-level or WordPiece) split on whitespace and punctuation."""

    def __init__(self, tokenizer, kind: str):
        self.tok, self.kind = tokenizer, kind
        # `batch` switches truncation and padding on and off on the one tokenizer: threads encoding at once
        # (`specc serve` prepares requests in a thread pool) would see each other's settings.
        self._lock = threading.Lock()

    @classmethod
    def train(cls, texts: Iterable[str], kind: str, vocab_size: int) -> HFVocabulary:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        trainer: trainers.Trainer
        if kind == "words":
            tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
            trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False)
        else:
            tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
            tok.decoder = decoders.WordPiece()
            trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False)
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        tok.train_from_iterator(texts, trainer=trainer)
        # The trainer numbers tokens of equal count in an arbitrary order that changes from run to run;
        # renumber them (special ids first, then in sorted order) so that a spec always gets one vocabulary.
        learned = sorted(t for t in tok.get_vocab() if t not in SPECIALS)
        ids = {t: i for i, t in enumerate([*SPECIALS, *learned])}
        tok.model = (models.WordLevel(ids, unk_token="[UNK]") if kind == "words"
                     else models.WordPiece(ids, unk_token="[UNK]"))
        return cls(tok, kind)

    @property
    def size(self) -> int:
        return self.tok.get_vocab_size()

    def ids(self, text: str) -> np.ndarray:
        with self._lock:
            return np.array(self.tok.encode(text).ids, dtype=np.int32)

    def batch(self, texts: list[str], length: int) -> np.ndarray:
        with self._lock:
            self.tok.enable_truncation(max_length=length)
            self.tok.enable_padding(length=length, pad_id=PAD, pad_token="[PAD]")
            try:
                return np.array([e.ids for e in self.tok.encode_batch(texts)], dtype=np.int32)
            finally:
                self.tok.no_truncation()
                self.tok.no_padding()

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode([int(i) for i in ids])

    def to_json(self) -> str:
        return json.dumps({"specc_vocabulary": self.kind, "tokenizer": json.loads(self.tok.to_str())})


Vocabulary = CharVocabulary | HFVocabulary


def train_vocabulary(kind: str, texts: list[str], vocab_size: int | None) -> Vocabulary:
    if kind == "chars":
        return CharVocabulary.train(texts)
    return HFVocabulary.train(texts, kind, vocab_size or 30_000)


class _CharsFile(BaseModel):
    specc_vocabulary: Literal["chars"]
    chars: list[Annotated[str, StringConstraints(min_length=1, max_length=1)]]


class _HFFile(BaseModel):
    specc_vocabulary: Literal["words", "wordpiece"]
    tokenizer: dict[str, Any]


class _VocabularyFile(RootModel[Annotated[_CharsFile | _HFFile, Field(discriminator="specc_vocabulary")]]):
    pass


def vocabulary_from_json(text: str) -> Vocabulary:
    """A vocabulary saved by `to_json`. Raises ValueError (saying what is wrong) if the text is not one."""
    from specc.core.files import MAX_JSON_DEPTH, json_depth

    try:
        data = json.loads(text)
    except RecursionError:
        data = None
    if data is None or json_depth(data) > MAX_JSON_DEPTH:
        raise ValueError(f"it nests lists and objects more than {MAX_JSON_DEPTH} deep (MAX_JSON_DEPTH)")
    if not isinstance(data, dict) or "specc_vocabulary" not in data:
        raise ValueError("not a vocabulary written by specc (no `specc_vocabulary` key)")
    try:
        saved = _VocabularyFile.model_validate(data).root
    except ValidationError as err:
        first = err.errors()[0]
        at = ".".join(str(p) for p in first["loc"][1:]) or "specc_vocabulary"  # loc[0]: the kind
        raise ValueError(f"not a vocabulary specc wrote: `{printable(at, lines=False)}`: "
                         f"{printable(first['msg'], lines=False)}") from None
    if isinstance(saved, _CharsFile):
        if len(set(saved.chars)) != len(saved.chars):
            raise ValueError("not a vocabulary specc wrote: `chars` names a character twice")
        return CharVocabulary(saved.chars)
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_str(json.dumps(saved.tokenizer))
    except Exception as err:  # noqa: BLE001 - the Rust library raises a bare Exception for a malformed tokenizer
        why = printable((str(err).strip().splitlines() or [type(err).__name__])[0][:200], lines=False)
        raise ValueError(f"`tokenizer` is not a Hugging Face tokenizer: {why}") from None
    return HFVocabulary(tok, saved.specc_vocabulary)


def read_vocabulary(path: Path) -> Vocabulary:
    """The vocabulary in a `tokenizer.json` file (bounded in size and nesting); a DataError naming the file."""
    from specc.core.files import bad, read_json

    read_json(path, "tokenizer")  # size, encoding, JSON and nesting, each a located error
    try:
        return vocabulary_from_json(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise bad(path, str(err), "it must be the tokenizer.json that `specc run` wrote for a text model") from None


def encode_texts(vocab: Vocabulary, texts: list[str], length: int) -> np.ndarray:
    """(examples, length) ids: each text truncated or padded with id 0 at the end."""
    if isinstance(vocab, HFVocabulary):
        return vocab.batch(texts, length)
    out = np.zeros((len(texts), length), dtype=np.int32)
    for i, t in enumerate(texts):
        ids = vocab.ids(t)[:length]
        out[i, : len(ids)] = ids
    return out


def next_token_windows(ids: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive windows of a token stream: x = ids[i:i+length], y = ids[i+1:i+length+1]."""
    count = (len(ids) - 1) // length
    x = ids[: count * length].reshape(count, length)  # (windows, length)
    y = ids[1: count * length + 1].reshape(count, length)  # the same windows shifted by one token
    return x, y


def mask_tokens(ids: np.ndarray, rate: float, vocab_size: int, rng: np.random.Generator):
    """BERT's masking: `rate` of the non-padding tokens are chosen; of those, 80% become [MASK],
    10% a random token, 10% stay. Returns (inputs, targets, weights); the weights are 1 at the
    chosen positions and 0 elsewhere (the runner makes the loss their weighted mean)."""
    real = ids >= len(SPECIALS)
    chosen = real & (rng.random(ids.shape) < rate)
    roll = rng.random(ids.shape)
    inputs = ids.copy()
    inputs[chosen & (roll < 0.8)] = MASK
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    inputs[swap] = rng.integers(len(SPECIALS), vocab_size, size=int(swap.sum()))
    return inputs, ids.copy(), chosen.astype(np.float32)
