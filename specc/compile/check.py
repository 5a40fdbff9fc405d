"""Stage 2: check a parsed spec and resolve it against Keras's catalogues into a `Plan`.

`check_spec` runs one validator per section of the file (`VALIDATORS`, in the order of `specc.lang.sections.
SECTIONS` that facts need: the data before `train` and the model, which may name `data.classes`), each on the
checker's core (`specc.compile.checker.Checker`, seen through `specc.compile.shared.Core`), then the few rules
between sections, and assembles the plan. Shapes are inferred later, by building on symbolic tensors
(`specc.compile.build.infer_shapes`). The tools reach a checked plan through `load_plan` and `compile_text`.
"""

from __future__ import annotations

from typing import Any, Callable

from specc.compile.catalog import catalog, signature_of
from specc.compile.checker import Checker
from specc.compile.expect import check_expect
from specc.compile.section_data import check_data, check_data_fits
from specc.compile.section_device import check_device, check_one_device_for_kfold
from specc.compile.section_file import check_file
from specc.compile.section_init import check_init
from specc.compile.section_model import DTYPES, check_model  # noqa: F401 - DTYPES for `specc import`
from specc.compile.section_train import check_train
from specc.compile.section_tune import check_tune
from specc.compile.shared import Core
from specc.compile.space import check_spaces, find_spaces, has_spaces
from specc.core import nodes as n
from specc.core.errors import Source, SpecError, brief  # noqa: F401 - brief re-exported
from specc.core.limits import (MAX_EXAMPLE_VALUES, MAX_LAYERS, MAX_NESTING, MAX_REPEAT,  # noqa: F401 - re-exported
                               MAX_VALUE_ELEMENTS)
from specc.core.plan import Plan
from specc.runtime.keras_env import prepare_environment

Validator = Callable[[Core, "n.Section | None"], Any]

#: The validator of each section of `specc.lang.sections.SECTIONS`, in the order they run: the file's settings
#: (the language version) first, the data before `train` and the model (which may name its facts), the model
#: before `expect`, `train` and the model before `tune` (its objective is a value they log). Each takes the section as
#: written (None when the spec has none) and returns its part of the plan.
VALIDATORS: dict[str, Validator] = {
    "file": check_file,
    "device": check_device,
    "data": check_data,
    "init": check_init,
    "train": check_train,
    "model": check_model,
    "expect": check_expect,
    "tune": check_tune,
}


def compile_text(text: str, file: str = "<string>") -> Plan:
    """Parse and check spec text into its `Plan` (`specc.api.loads` without the API's wrapper, for the tools)."""
    from specc.lang.syntax import parse_text

    return check_spec(parse_text(text, file), Source(text, file))


def load_plan(path) -> Plan:
    """Read, parse and check a `.model` file into its `Plan` (`specc.api.load(path).plan`)."""
    from specc.lang.syntax import read_spec

    return compile_text(read_spec(path), str(path))


def check_spec(spec: n.Spec, source: Source | None = None) -> Plan:
    """Resolve a parsed spec into a `Plan`. Raises `SpecError` listing every independent error found."""
    from specc.compile.build import gc_paused

    prepare_environment()  # before anything starts JAX: its CPU client sizes its thread pools once
    src = source or Source("", "<string>")
    with gc_paused():
        if not has_spaces(spec):
            return _check_spec(spec, src)
        dims = find_spaces(spec, src, _param_namer(spec))
        return check_spaces(spec, src, dims, lambda resolved: _checked_and_built(resolved, src))


def plan_at(plan: Plan, point: dict[str, Any]) -> Plan:
    """The plan of `plan`'s spec at one point of its search space: its text with each space replaced by its value
    (`specc.compile.space.substitute`), checked as a spec of its own at the same path (data paths stay relative
    to the spec's folder)."""
    from specc.compile.space import substitute

    return compile_text(substitute(plan.source, plan.space, point), plan.file)


def _checked_and_built(spec: n.Spec, src: Source) -> Plan:
    """The plan of a spec at one point of its space, its shapes inferred too: a value may break a later layer."""
    from specc.compile.build import build_shapes

    plan = _check_spec(spec, src)
    build_shapes(plan)
    return plan


def _param_namer(spec: n.Spec) -> Callable[[str, int], str | None]:
    """The name of a block's, layer's or Keras object's i-th positional parameter, for naming a space given there."""
    blocks = {b.name: [p.name for p in b.params] for b in spec.blocks}

    def name(func: str, i: int) -> str | None:
        if func in blocks:
            return blocks[func][i] if i < len(blocks[func]) else None
        for kind in ("layer", "optimizer", "schedule", "loss", "metric", "initializer", "regularizer", "constraint"):
            cat = catalog(kind)
            cls = cat.class_name(func)
            if cls:
                positional = signature_of(cat.get_class(cls)).positional
                return positional[i] if i < len(positional) else None
        return None

    return name


def _check_spec(spec: n.Spec, src: Source) -> Plan:
    ck = Checker(spec, src)
    ck.check_blocks()
    ck.check_lets()
    written = ck.sections()
    for name, validate in VALIDATORS.items():
        reported = len(ck.errors)
        ck.record(name, ck.guarded(validate, ck, written.get(name)), failed=len(ck.errors) > reported)
    part = ck.results
    device = part["device"]
    check_one_device_for_kfold(ck, device.distribution, part["train"])
    if part["data"] is not None and part["model"] is not None:
        ck.guarded(check_data_fits, ck, part["data"], part["model"][1])
    if ck.errors:
        unique = {(d.span.line, d.span.col, d.message) if d.span else (0, 0, d.message): d for d in reversed(ck.errors)}
        raise SpecError(sorted(unique.values(), key=lambda d: (d.span.line, d.span.col) if d.span else (0, 0)))
    name, inputs, layers, outputs = part["model"]
    return Plan(name=name, inputs=inputs, layers=layers, outputs=outputs, train=part["train"], data=part["data"],
                init=part["init"], device=device.kind or "auto", device_origin=device.origin,
                distribution=device.distribution, expect=part["expect"], tune=part["tune"], constants=ck.named_values(),
                facts=ck.facts, language=part["file"].language, file=src.file, source=src.text)
