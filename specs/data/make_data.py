"""Generate the synthetic datasets of specs/: `python specs/data/make_data.py` rewrites them.

Both are generated from a fixed seed, so the files here are reproducible; the tests generate
their own copies with these functions and check what a model trained on them reaches.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def reverse_digits(count: int, length: int = 8, seed: int = 0) -> dict[str, np.ndarray]:
    """Strings of `length` random digits (x) and the same digits reversed (y), 10% held out."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 10, size=(count, length), dtype=np.int32)  # (count, length)
    y = x[:, ::-1].copy()  # (count, length)
    cut = count - count // 10
    return {"x_train": x[:cut], "y_train": y[:cut], "x_test": x[cut:], "y_test": y[cut:]}


def low_rank_ratings(users: int = 150, items: int = 200, rank: int = 3, noise: float = 0.25,
                     density: float = 0.4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ratings r[u, i] = 3 + (U V^T)[u, i] + N(0, noise^2) for a random `density` of the (user, item)
    pairs. Ids start at 1, as in MovieLens. Returns ((n, 3) [user, item, rating] rows, the noise-free
    matrix)."""
    rng = np.random.default_rng(seed)
    u = rng.normal(0, 1 / rank ** 0.25, size=(users, rank))
    v = rng.normal(0, 1 / rank ** 0.25, size=(items, rank))
    clean = 3 + u @ v.T  # (users, items), each entry's spread about 1
    pairs = np.argwhere(rng.random((users, items)) < density)
    pairs = pairs[rng.permutation(len(pairs))]
    ratings = clean[pairs[:, 0], pairs[:, 1]] + rng.normal(0, noise, size=len(pairs))
    rows = np.column_stack([pairs[:, 0] + 1, pairs[:, 1] + 1, np.round(ratings, 4)])
    return rows, clean


def write_ratings_csv(path: Path, rows: np.ndarray) -> None:
    with open(path, "w") as f:
        f.write("user,item,rating\n")
        for user, item, rating in rows:
            f.write(f"{int(user)},{int(item)},{rating:.4f}\n")


def main(folder: Path) -> None:
    np.savez_compressed(folder / "reverse_digits.npz", **reverse_digits(20_000))
    write_ratings_csv(folder / "ratings.csv", low_rank_ratings()[0])


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
