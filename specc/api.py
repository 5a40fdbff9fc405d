"""The Python API used by tests and notebooks: load a spec, build it, run it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specc.core.errors import Source
from specc.lang.syntax import read_spec  # noqa: F401 - re-exported: the Python API reads spec files with it

if TYPE_CHECKING:  # loading a spec imports neither until it is used
    from specc.core import nodes
    from specc.core.plan import Plan


@dataclass
class CompiledSpec:
    """A parsed and checked spec: its AST and its build plan."""

    ast: nodes.Spec
    plan: Plan
    source: Source = field(repr=False)

    def build_model(self):
        """A fresh `keras.Model` (shapes inferred; errors blamed on spec lines)."""
        from specc.compile.build import build_model

        return build_model(self.plan)

    def summary(self) -> str:
        from specc.compile.build import format_summary, summarize

        rows, total = summarize(self.plan)
        return format_summary(self.plan, rows, total)

    def run(self, out: str | Path | None = None, epochs: int | None = None, limit: int | None = None,
            verbose: Any = 0, force: bool = False, resume: str | Path | None = None, callbacks: list | None = None):
        """Train, evaluate and save (`specc run`); `resume`: continue that run directory; `callbacks`: Keras
        callbacks to run beside specc's own."""
        from specc.train.runner import run_plan

        return run_plan(self.plan, out=out, epochs=epochs, limit=limit, verbose=verbose, force=force, resume=resume,
                        callbacks=callbacks)

    def tune(self, out: str | Path | None = None, verbose: int = 0, **settings: Any):
        """Search the spec's spaces on Optuna (`specc tune`); `settings` (`trials`, `timeout`, `workers`,
        `storage`, `study`, `sampler`, `pruner`, `seed`) replace its `tune` section's. Returns a `TuneResult`:
        `best_values` (each space's best value as spec text), `best_value`, `best_spec` (best.model's text),
        `study_dir`, `trials`."""
        from specc.tools.tune import tune

        return tune(self.plan, out=out, verbose=verbose, **settings)


def loads(text: str, file: str = "<string>") -> CompiledSpec:
    """Parse and check spec text. Raises `SpecError` for mistakes in it."""
    from specc.compile.check import check_spec
    from specc.lang.syntax import parse_text

    ast = parse_text(text, file)
    src = Source(text, file)
    return CompiledSpec(ast=ast, plan=check_spec(ast, src), source=src)


def load(path: str | Path) -> CompiledSpec:
    """Parse and check a `.model` file."""
    return loads(read_spec(path), str(path))


def import_model(model, name: str | None = None) -> str:
    """Spec text for a `keras.Model` built in Python (`specc import` for files). Raises `UsageError`
    naming the layer when the model uses something the language cannot express."""
    from specc.tools.importer import import_model as _import

    return _import(model, name=name)


def emit(spec: CompiledSpec, train: bool = False) -> str:
    """Standalone Keras 3 Python code that builds (and with `train`, trains) the spec's model."""
    from specc.tools.emit import emit_python

    return emit_python(spec.plan, train=train)


def format_text(text: str, file: str = "<string>") -> str:
    """Spec text in the canonical layout (`specc fmt`); comments kept, meaning unchanged."""
    from specc.lang.fmt import format_text as _format

    return _format(text, file)
