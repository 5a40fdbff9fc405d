"""Sizes in bytes, as people write and read them: `64MiB`, `1.5 GB` in; `16.0 MiB` out.

The pre-flight cost reads `$SPECC_DEVICE_MEMORY` with `parse_bytes` and reports memory with `format_bytes`, and
so does lint's W201 warning, which is made from the cost's figures.
"""

from __future__ import annotations

import re

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6, "mib": 2**20,
          "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12, "tib": 2**40}


def parse_bytes(text: str) -> int:
    """`64MiB`, `1.5 GB`, `2e9`: a size in bytes (binary units with `i`, decimal without)."""
    found = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", text.lower())
    if not found or found.group(2) not in _UNITS:
        raise ValueError(f"{text!r} is not a size such as `64MiB`, `16GB` or `1000000`")
    return int(float(found.group(1)) * _UNITS[found.group(2)])


def format_bytes(n: float) -> str:
    """`16.0 MiB`: the largest binary unit that keeps at least 1, one decimal; bytes below 1 KiB."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{int(n):,} B"
