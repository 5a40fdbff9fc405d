"""Whatever text a user writes, specc answers with a located user error or a model: never a crash.

Real specs are mutated at random (characters deleted, duplicated, swapped, or replaced with
punctuation and keywords) with a fixed seed; every mutant must either build or raise a
`UserError` whose location lies inside the file.
"""

import random
from pathlib import Path

import specc
from specc.build import build

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [p.read_text() for p in sorted((ROOT / "specs").glob("*.model"))]
INSERTS = list("(){}[],:;=-+*/#\"'\n ") + ["->", "repeat ", "parallel ", "branch ", "block ", "model ", "input ",
                                              "none", "dense", "1e", "0", "1/0", "relu", "[a, b] -> "]


def mutate(text: str, rng: random.Random) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(chars))
        op = rng.random()
        if op < 0.3:
            del chars[i]
        elif op < 0.6:
            chars.insert(i, rng.choice(INSERTS))
        elif op < 0.8:
            j = rng.randrange(len(chars))
            chars[i], chars[j] = chars[j], chars[i]
        else:
            chars[i] = rng.choice(INSERTS)
    return "".join(chars)


def test_mutated_specs_never_crash():
    rng = random.Random(20261123)
    outcomes = {"built": 0, "error": 0}
    for k in range(400):
        text = mutate(SOURCES[k % len(SOURCES)], rng)
        try:
            build(specc.loads(text, "mutant.model").plan)
            outcomes["built"] += 1
        except specc.UserError as err:
            lines = text.count("\n") + 1
            for d in err.diagnostics:
                assert d.message
                if d.span:
                    assert 1 <= d.span.line <= lines + 1, (text, err.render())
                    assert d.span.col >= 1
            outcomes["error"] += 1
    assert outcomes["error"] > 100 and outcomes["built"] > 10, outcomes
