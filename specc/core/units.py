"""Sizes in bytes, as people write and read them: `64MiB`, `1.5 GB` in (`parse_bytes`); `64 MiB`, `0.42 MB`,
`16.0 MiB` out (`size_text`, the one renderer of byte sizes).

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


def size_text(n: float, measured: bool = False, decimal: bool = False, places: int | None = None) -> str:
    """Bytes as text, the one renderer of sizes. A bound (the default): exact bytes below 1 MiB, whole MiB, GiB
    to one decimal (`64 MiB`). `measured` (a size found, not one set): the largest unit that keeps a number of at
    least 1, two decimals in the largest unit and one below it (`4.00 GiB`, `32.5 KiB`, `512 B`); with `decimal`,
    in MB and kB (a file's size, as `ls --si` shows it: `0.42 MB`, `121.3 kB`). `places`: that many decimals in every
    unit, with thousands separators (`16.0 MiB`, `1,023 B`: the cost report's memory figures)."""
    if not measured:
        return f"{n:,} bytes" if n < 2**20 else f"{n / 2**20:,.0f} MiB" if n < 2**30 else f"{n / 2**30:,.1f} GiB"
    units = (("MB", 10**6), ("kB", 10**3)) if decimal else (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10))
    for i, (unit, size) in enumerate(units):
        if n >= size:
            if places is not None:
                return f"{n / size:,.{places}f} {unit}"
            return f"{n / size:.{1 if i else 2}f} {unit}"
    return f"{int(n):,} B" if places is not None else f"{int(n)} B"


def format_bytes(n: float) -> str:
    """`16.0 MiB`: the largest binary unit that keeps at least 1, one decimal; bytes below 1 KiB."""
    return size_text(n, measured=True, places=1)
