"""The Python API used by tests and notebooks: load a spec, build it, run it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import Diagnostic, Source, UsageError, printable

if TYPE_CHECKING:  # `read_spec` serves `fmt` and `check --syntax-only`, which need neither
    from . import nodes
    from .plan import Plan


@dataclass
class CompiledSpec:
    """A parsed and checked spec: its AST and its build plan."""

    ast: nodes.Spec
    plan: Plan
    source: Source = field(repr=False)

    def build_model(self):
        """A fresh `keras.Model` (shapes inferred; errors blamed on spec lines)."""
        from .build import build_model

        return build_model(self.plan)

    def summary(self) -> str:
        from .build import format_summary, summarize

        rows, total = summarize(self.plan)
        return format_summary(self.plan, rows, total)

    def run(self, out: str | Path | None = None, epochs: int | None = None, limit: int | None = None,
            verbose: Any = 0, force: bool = False, resume: str | Path | None = None, callbacks: list | None = None):
        """Train, evaluate and save (`specc run`); `resume`: continue that run directory; `callbacks`: Keras
        callbacks to run beside specc's own."""
        from .runner import run_plan

        return run_plan(self.plan, out=out, epochs=epochs, limit=limit, verbose=verbose, force=force, resume=resume,
                        callbacks=callbacks)


def loads(text: str, file: str = "<string>") -> CompiledSpec:
    """Parse and check spec text. Raises `SpecError` for mistakes in it."""
    from .check import check_spec
    from .syntax import parse_text

    ast = parse_text(text, file)
    src = Source(text, file)
    return CompiledSpec(ast=ast, plan=check_spec(ast, src), source=src)


def read_spec(path: str | Path) -> str:
    """The text of a spec file. Only a regular file is read (after symlinks are followed): a folder, a named pipe
    (which would block), a device (`/dev/zero` never ends) or a socket is refused by name before it is opened, and
    whatever is read stops at the size limit."""
    import os
    import stat

    from .syntax import MAX_CHARS, decode_spec

    path = Path(path)
    limit = 4 * MAX_CHARS  # bytes: a spec is at most 1,000,000 characters of UTF-8
    try:
        kind = _file_kind(path.stat().st_mode)
        if kind is None:  # checked again on the open file: it may have been replaced in between
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
            with os.fdopen(fd, "rb") as f:
                info = os.fstat(f.fileno())
                kind = _file_kind(info.st_mode)
                if kind is None:
                    if info.st_size > limit:  # not even read
                        raise _too_large(path, info.st_size, MAX_CHARS)
                    data = f.read(limit + 1)  # a cap whatever the size said (a file that grows, /proc)
                    if len(data) > limit:
                        raise _too_large(path, None, MAX_CHARS)
                    return decode_spec(data, str(path))  # UTF-8, a byte-order mark dropped; else a located error
        if stat.S_ISDIR(path.stat().st_mode):
            raise UsageError(Diagnostic("this is a folder, not a .model file", file=str(path)))
        if path.is_symlink():
            kind = f"a link to {printable(str(path.resolve()), lines=False)}, {kind}"
        raise UsageError(Diagnostic(f"this is {kind}, not a regular file: specc reads a spec only from a file",
                                    file=str(path), hint="copy the spec into a file and give that file's path"))
    except FileNotFoundError:
        raise UsageError(Diagnostic("no such file", file=str(path))) from None
    except IsADirectoryError:
        raise UsageError(Diagnostic("this is a folder, not a .model file", file=str(path))) from None
    except OSError as err:
        raise UsageError(Diagnostic(f"cannot read it: {err.strerror or err}", file=str(path))) from None


def _file_kind(mode: int) -> str | None:
    """What a file that is not a regular file is, in words; None for a regular file."""
    import stat

    if stat.S_ISREG(mode):
        return None
    kinds = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((words for test, words in kinds if test(mode)), "not a regular file")


def _too_large(path: Path, size: int | None, max_chars: int) -> UsageError:
    said = f"{size:,} bytes" if size is not None else f"more than {4 * max_chars:,} bytes"
    return UsageError(Diagnostic(f"too large for a spec ({said}; at most {max_chars:,} characters)", file=str(path)))


def load(path: str | Path) -> CompiledSpec:
    """Parse and check a `.model` file."""
    return loads(read_spec(path), str(path))


def import_model(model, name: str | None = None) -> str:
    """Spec text for a `keras.Model` built in Python (`specc import` for files). Raises `UsageError`
    naming the layer when the model uses something the language cannot express."""
    from .importer import import_model as _import

    return _import(model, name=name)


def emit(spec: CompiledSpec, train: bool = False) -> str:
    """Standalone Keras 3 Python code that builds (and with `train`, trains) the spec's model."""
    from .emit import emit_python

    return emit_python(spec.plan, train=train)


def format_text(text: str, file: str = "<string>") -> str:
    """Spec text in the canonical layout (`specc fmt`); comments kept, meaning unchanged."""
    from .fmt import format_text as _format

    return _format(text, file)
