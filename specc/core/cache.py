"""Where specc keeps what it can rebuild: decoded datasets, the parser's tables, and JAX's compiled programs.

The folder is `$SPECC_CACHE_DIR`, else `$XDG_CACHE_HOME/specc`, else `~/.cache/specc`. Everything in it may
be deleted at any time; specc then rebuilds it (more slowly). A cache that cannot be created or written
never stops a command: specc goes on without it.

- `lark/`: the analysed grammar (`Lark.save`; one file per grammar, Lark and Python version), so that a
  command does not analyse the grammar again in every process.
- `jax/`: JAX's persistent compilation cache (`enable_jax_cache`), so that a second `specc run` of the same
  model skips XLA compilation. `SPECC_JAX_CACHE=0` turns it off; a `JAX_COMPILATION_CACHE_DIR` of the
  user's own is respected and left as it is.

Like any compiled-code cache (JAX's own documentation says so of its cache), these files are trusted:
keep the folder private to you.
"""

from __future__ import annotations

import os
from pathlib import Path

JAX_CACHE_MAX_BYTES = 2 * 1024**3  # least recently used programs are dropped beyond this


def cache_dir() -> Path:
    base = os.environ.get("SPECC_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "specc")
    return Path(base)


def writable_subdir(name: str) -> Path | None:
    """`cache_dir()/name`, created if needed; None if it cannot be created or written."""
    path = cache_dir() / name
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path if os.access(path, os.W_OK | os.X_OK) else None


def _off(value: str | None) -> bool:
    return (value or "").strip().lower() in ("0", "false", "no", "off")


def enable_jax_cache() -> Path | None:
    """Turn on JAX's persistent compilation cache under `cache_dir()/"jax"` and return that folder.

    Every compiled program is kept (`jax_persistent_cache_min_compile_time_secs=0`: with JAX's default of
    1 s, a small model keeps at most its training step), up to `JAX_CACHE_MAX_BYTES`; a
    `JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS` or `JAX_COMPILATION_CACHE_MAX_SIZE` of the user's wins.
    Nothing is changed, and None returned,
    when `SPECC_JAX_CACHE=0`, when the user configured a cache of their own (`JAX_COMPILATION_CACHE_DIR`
    or `jax_compilation_cache_dir`), or when the folder cannot be written.
    """
    if _off(os.environ.get("SPECC_JAX_CACHE")) or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None
    import jax

    # JAX's flags are attributes made at run time, which its type information does not declare.
    if (jax.config.jax_compilation_cache_dir  # type: ignore[attr-defined]
            or not jax.config.jax_enable_compilation_cache):  # type: ignore[attr-defined]
        return None  # the user's own choice, made in Python
    path = writable_subdir("jax")
    if path is None:
        return None
    jax.config.update("jax_compilation_cache_dir", str(path))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    if "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ and _has_filelock():  # JAX bounds the size with it
        jax.config.update("jax_compilation_cache_max_size", JAX_CACHE_MAX_BYTES)
    return path


def _has_filelock() -> bool:
    try:
        import filelock  # noqa: F401
    except ImportError:
        return False
    return True
