"""What the section validators share: the checker's interface (`Core`) and the small checks every section uses.

Each section of a spec has its validator, a function `validate(ck, section)` in a module of its own
(`section_data`, `section_train`, ...; `expect`), registered by name in `specc.compile.check.VALIDATORS`. A
validator sees the checker through `Core`, the methods below, and never its attributes: values and names are
resolved by the core (`specc.compile.checker.Checker`), settings are declared in `specc.lang.sections`. This module
imports neither, so the validators sit beside the core and below `check`, which wires them together.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Callable, Protocol, TypeVar

from specc.core import nodes as n
from specc.core.errors import did_you_mean, show_value
from specc.core.limits import MAX_EXAMPLE_VALUES

if TYPE_CHECKING:
    from specc.core.plan import Obj, Origin

T = TypeVar("T")


class Abort(Exception):
    """Stops checking the current unit (a setting, a statement, a section) after its error was recorded."""


class CallArg:
    """A call passed as a block argument or a `let` (`stage(l2(1e-4))`): resolved where it is used, against the
    catalogue of the argument it lands in."""

    def __init__(self, expr: n.Call, env: dict[str, Any]):
        self.expr, self.env = expr, env


# Stands for the output of a statement that failed: later statements are still checked for their own mistakes
# (names, arguments), but nothing that depends on that output is reported.
UNKNOWN = "\0unknown"


class Core(Protocol):
    """The checker as a section validator sees it."""

    @property
    def spec(self) -> n.Spec: ...

    # -- reporting
    def fail(self, message: str, span: n.Span | None, hint: str | None = None) -> Abort:
        """Record an error; the caller raises what it returns to stop checking the unit."""
    def limit(self, message: str, span: n.Span | None, hint: str | None = None) -> Abort:
        """A bound crossed: reported once, and nothing more of the model is checked."""
    def guarded(self, fn: Callable[..., T], *args: Any) -> T | None:
        """`fn(*args)`, or None if it stopped on an error it recorded."""
    def errors_so_far(self) -> int: ...
    @property
    def halted(self) -> bool:
        """A bound was crossed: stop checking the model."""
    def origin(self, span: n.Span | None) -> Origin: ...
    def noting(self, note: str) -> contextlib.AbstractContextManager[None]:
        """Errors inside carry `note` ("in block `x`, used at line 3")."""

    # -- values, names and Keras objects
    def value(self, e: n.Expr, env: dict[str, Any], kind: str | None = None, what: str = "value") -> Any: ...
    def bind(self, arg: n.Expr, scope: dict[str, Any]) -> Any:
        """A block's argument: its value, or a call left to resolve where the block uses it."""
    def is_constant(self, name: str) -> bool: ...
    def block(self, name: str) -> n.Block | None: ...
    def arguments(self, call: n.Call, cls: Any, env: dict[str, Any], what: str,
                  spans: dict[str, n.Span] | None = None) -> dict[str, Any]: ...
    def construct(self, obj: Obj, call: n.Call, spans: dict[str, n.Span], what: str) -> Any: ...
    def refuse_denied(self, call: n.Call) -> None: ...
    def measure(self, v: Any) -> tuple[int, int]: ...
    def check_constants(self) -> None:
        """Every `let` constant, those nothing used too."""

    # -- sections and their facts
    def settings(self, section: str, settings: list[n.Setting]) -> dict[str, n.Setting]: ...
    def result(self, section: str) -> Any:
        """What the validator of an earlier section returned."""
    def checking(self, section: str | None) -> contextlib.AbstractContextManager[None]:
        """Inside, the facts of `section` cannot be named (`epochs: train.steps`)."""
    def facts_ready(self, section: str) -> None:
        """The facts of `section` can be named from now on."""
    def given(self, section: str, key: str, value: Any) -> None:
        """A setting that the facts of its section are computed from (`train.steps` from `epochs`)."""


def whole(ck: Core, v: Any, e: n.Expr, key: str, minimum: int) -> int:
    """`v` as a whole number >= minimum (a float such as `5.0` is taken)."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise ck.fail(f"`{key}` must be a whole number >= {minimum}, got {show_value(v)}", e.span)
    return v


def fraction(ck: Core, v: Any, e: n.Expr, key: str) -> float:
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v < 1:
        raise ck.fail(f"`{key}` is a fraction in [0, 1), got {show_value(v)}", e.span, f"e.g. `{key}: 0.1`")
    return float(v)


def per_example(ck: Core, values: int, what: str, span: n.Span | None) -> None:
    """A setting that sizes each example (or label): within the bound on values per example."""
    if values > MAX_EXAMPLE_VALUES:
        raise ck.fail(f"{what} make {values:,} values per example; specc builds at most {MAX_EXAMPLE_VALUES:,} "
                      "(2**28)", span)


def options(ck: Core, call: n.Call, defaults: dict[str, Any]) -> dict[str, Any]:
    """The keyword (or positional) options of a specc call such as `wordpiece(vocab_size=8000)`."""
    names = list(defaults)
    if len(call.args) > len(names):
        raise ck.fail(f"`{call.func}` takes {len(names)} argument{'s' if len(names) != 1 else ''}"
                      f"{': ' + ', '.join(names) if names else ''}", call.args[len(names)].span)
    out = dict(defaults)
    for name, arg in zip(names, call.args):
        out[name] = ck.value(arg, {})
    for kw in call.kwargs:
        if kw.name not in names:
            raise ck.fail(f"unknown argument `{kw.name}` for `{call.func}`", kw.name_span,
                          did_you_mean(kw.name, names) or f"it takes: {', '.join(names) or 'no arguments'}")
        out[kw.name] = ck.value(kw.value, {})
    return out


def one_of(ck: Core, v: Any, choices: tuple[str, ...], what: str, span: n.Span | None, listing: str) -> str:
    """`v` if it is one of `choices`, else "unknown WHAT `v`" with the closest choice or `listing` as hint."""
    if not isinstance(v, str) or v not in choices:
        raise ck.fail(f"unknown {what} {show_value(v)}", span, did_you_mean(str(v), choices) or listing)
    return v
