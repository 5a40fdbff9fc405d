"""The import contract of specc's modules (`specc/module_layers.py`): no import cycles, every import pointing to the same
or a lower layer, `api` and `cli` imported by the entry points only, no private names of another module, and
every module placed in exactly one layer. Imports inside functions count; `if TYPE_CHECKING:` blocks do not.

Read with `ast` only: nothing of specc beyond `specc.module_layers` (which imports nothing) is imported, so no Keras."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

from specc.module_layers import ENTRY_ONLY, LAYERS

PACKAGE = Path(__file__).resolve().parent.parent / "specc"
ENTRY_POINTS = ("cli", "__main__", "__init__")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module, dotted below the package (`compile.check`; `__init__` for the package)
    target: str  # the imported module
    line: int
    names: tuple[str, ...] = ()  # names taken from it (`from .x import a, b`; `x.a` on a module bound to a name)

    def __str__(self) -> str:
        return f"{_path(self.source)}:{self.line} -> {self.target}" + (f" ({', '.join(self.names)})" if self.names else "")


def _top(module: str) -> str:
    """The top-level module or subpackage a module is part of: `cli` for `cli.text_cmds`."""
    return module.split(".")[0]


def _path(module: str) -> str:
    return module.replace(".", "/") + ".py"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _nodes(tree: ast.AST):
    """Every node, leaving out the bodies of `if TYPE_CHECKING:` (their `else` counts)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def module_names(package: Path) -> dict[str, Path]:
    """Every module of the package by dotted name below it: `compile.check`, `compile` (a subpackage's
    `__init__.py`), `__init__` (the package's own)."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(dotted: str, modules) -> str:
    """The module an absolute name below the package lands in: the longest prefix that is a module."""
    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in modules:
            return ".".join(parts[:k])
    return "__init__"


def imports_of(package: Path) -> tuple[set[str], list[Import]]:
    """The package's modules and every import between them, with the names each takes."""
    pkg = package.name
    paths = module_names(package)
    modules = set(paths)
    found: list[Import] = []
    for source, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        here = source.split(".")[:-1] if path.name != "__init__.py" or source == "__init__" else source.split(".")
        if source == "__init__":
            here = []
        bound: dict[str, str] = {}  # local name -> a module of the package bound to it
        for node in _nodes(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level == 0 and node.module and (node.module == pkg or node.module.startswith(pkg + ".")):
                    base = node.module[len(pkg) + 1:]
                elif node.level >= 1:
                    up = here[:len(here) - (node.level - 1)] if node.level > 1 else here
                    base = ".".join([*up, *([node.module] if node.module else [])])
                else:
                    continue  # another package's import
                for alias in node.names:  # from .x import y: the module x.y, or a name y of x
                    sub = f"{base}.{alias.name}" if base else alias.name
                    if sub in modules:
                        found.append(Import(source, sub, node.lineno))
                        bound[alias.asname or alias.name] = sub
                    else:
                        found.append(Import(source, _resolve(base, modules) if base else "__init__", node.lineno,
                                            (alias.name,)))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    parts = alias.name.split(".")
                    if parts[0] != pkg:
                        continue
                    target = _resolve(".".join(parts[1:]), modules) if len(parts) > 1 else "__init__"
                    found.append(Import(source, target, node.lineno))
                    if alias.asname:
                        bound[alias.asname] = target
        for node in _nodes(tree):  # loading._Located: a private name reached through a module bound to a name
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in bound:
                found.append(Import(source, bound[node.value.id], node.lineno, (node.attr,)))
    return modules, found


def cycles(modules: set[str], found: list[Import]) -> list[list[str]]:
    """The strongly connected components of more than one module (or a module importing itself), Tarjan's way."""
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for imp in found:
        if imp.target in modules:
            graph[imp.source].add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        on_stack.add(m)
        for t in sorted(graph[m]):
            if t not in index:
                visit(t)
                low[m] = min(low[m], low[t])
            elif t in on_stack:
                low[m] = min(low[m], index[t])
        if low[m] == index[m]:
            component = []
            while True:
                t = stack.pop()
                on_stack.discard(t)
                component.append(t)
                if t == m:
                    break
            if len(component) > 1 or m in graph[m]:
                out.append(sorted(component))

    for m in sorted(graph):
        if m not in index:
            visit(m)
    return out


def violations(package: Path, layers=LAYERS, entry_only=ENTRY_ONLY, entry_points=ENTRY_POINTS) -> dict[str, list[str]]:
    """What breaks the contract, by rule: `cycles`, `upward`, `entry`, `private`, `placed`."""
    modules, found = imports_of(package)
    layer_of: dict[str, int] = {}  # a layer's member: a top-level module or a subpackage
    placed = []
    for i, (name, members) in enumerate(layers):
        for m in members:
            if m in layer_of:
                placed.append(f"`{m}` is in two layers: {layers[layer_of[m]][0]} and {name}")
            layer_of.setdefault(m, i)
    level = {m: layer_of[m.split(".")[0]] for m in modules if m.split(".")[0] in layer_of}
    placed += [f"`{m}` is in no layer of specc/module_layers.py: place it" for m in sorted(modules - set(level))]
    placed += [f"layer {name} names `{m}`, which is not a module" for name, members in layers for m in members
               if m not in modules]
    upward, entry, private = [], [], []
    for imp in found:
        if imp.target not in modules:
            continue
        if imp.target == "__init__" and imp.source != "__init__":
            entry.append(f"{imp}: nothing imports the package itself (`__version__` is in `specc.core.version`)")
        elif _top(imp.target) in entry_only and _top(imp.source) not in entry_points and imp.source != imp.target:
            entry.append(f"{imp}: only {', '.join(entry_points)} import {', '.join(entry_only)}")
        if imp.source in level and imp.target in level and level[imp.target] > level[imp.source]:
            upward.append(f"{imp}: layer {layers[level[imp.source]][0]} imports layer {layers[level[imp.target]][0]}")
        hidden = [n for n in imp.names if n.startswith("_") and not n.startswith("__")]
        if hidden and imp.target != imp.source:
            private.append(f"{_path(imp.source)}:{imp.line} uses private {', '.join(hidden)} of {imp.target}")
    found_cycles = [" <-> ".join(c) for c in cycles(modules, found)]
    return {"cycles": found_cycles, "upward": upward, "entry": entry, "private": private, "placed": placed}


@pytest.fixture(scope="module")
def specc_violations() -> dict[str, list[str]]:
    return violations(PACKAGE)


@pytest.mark.parametrize("rule", ["cycles", "upward", "entry", "private", "placed"])
def test_specc_keeps_its_import_contract(specc_violations, rule):
    assert specc_violations[rule] == [], "\n".join(specc_violations[rule])


def test_function_level_imports_are_counted():
    """The contract covers lazy imports: `check` reaches `build` only inside functions."""
    _, found = imports_of(PACKAGE)
    assert any(i.source == "compile.check" and i.target == "compile.build" for i in found)
    assert not any(i.source == "core.errors" and i.target == "core.nodes" for i in found)  # under `if TYPE_CHECKING:` only


def test_the_checker_reports_each_kind_of_violation(tmp_path):
    pkg = tmp_path / "fake"
    pkg.mkdir()
    files = {
        "__init__.py": "from .low import VALUE\n",
        "low.py": "VALUE = 1\n\ndef late():\n    from .high import thing  # upward, and a cycle with high\n    return thing\n",
        "high.py": "from .low import VALUE, _hidden\nfrom . import low as l\n\nthing = l._secret\n",
        "tool.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .api import x\nfrom . import api\n",
        "api.py": "from . import __version__\n",
        "stray.py": "",
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    layers = (("base", ("low",)), ("top", ("high", "tool")), ("api", ("api",)), ("entry", ("__init__", "gone")))
    got = violations(pkg, layers, entry_only=("api",))
    assert got["cycles"] == ["high <-> low"]
    assert got["upward"] == ["api.py:1 -> __init__ (__version__): layer api imports layer entry",
                             "low.py:4 -> high (thing): layer base imports layer top",
                             "tool.py:4 -> api: layer top imports layer api"]
    assert got["private"] == ["high.py:1 uses private _hidden of low", "high.py:4 uses private _secret of low"]
    assert got["entry"] == ["api.py:1 -> __init__ (__version__): nothing imports the package itself "
                            "(`__version__` is in `specc.core.version`)",
                            "tool.py:4 -> api: only cli, __main__, __init__ import api"]
    assert got["placed"] == ["`stray` is in no layer of specc/module_layers.py: place it",
                             "layer entry names `gone`, which is not a module"]


def test_an_entry_package_is_one_entry_point(tmp_path):
    """The modules of the `cli` package import `api` freely; nothing below imports any of them."""
    pkg = tmp_path / "fake"
    (pkg / "cli").mkdir(parents=True)
    files = {"__init__.py": "", "api.py": "", "tool.py": "from .cli import cmds\n",
             "cli/__init__.py": "from . import cmds\n", "cli/cmds.py": "from ..api import x\nfrom .. import tool\n"}
    for name, text in files.items():
        (pkg / name).write_text(text)
    layers = (("tools", ("tool",)), ("api", ("api",)), ("entry", ("cli", "__init__")))
    got = violations(pkg, layers, entry_only=("api", "cli"), entry_points=("cli", "__init__"))
    assert got["entry"] == ["tool.py:1 -> cli.cmds: only cli, __init__ import api, cli"]


# --- rule 6: a function-level import only defers something heavy -------------------------------------------------

#: Third-party packages whose import costs start-up time (Keras and JAX above all; `--help`, `fmt`, `parse`,
#: `schema` and `check --syntax-only` load none of them). Deferring one of these is what a function-level import is for.
HEAVY = frozenset({"keras", "jax", "jaxlib", "numpy", "matplotlib", "tokenizers", "PIL", "h5py", "pydantic", "lark",
                   "optax", "torch", "pygments", "scipy"})


def _module_level(tree: ast.Module):
    """The statements that run when the module is imported (not inside functions or `if TYPE_CHECKING:`)."""
    stack = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
            if isinstance(node, ast.ClassDef):
                stack.extend(node.body)
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(n for n in ast.iter_child_nodes(node) if isinstance(n, ast.stmt))


def lazy_violations(package: Path, heavy=HEAVY) -> list[str]:
    """Function-level imports of a module of the package that loads nothing heavy when imported (itself or through
    what it imports at module level): those belong at the top of the module. An import guarded by `try` is left
    alone (it handles its own absence)."""
    pkg = package.name
    paths = module_names(package)
    top: dict[str, tuple[set[str], bool]] = {}  # module -> (package modules it imports at module level, loads heavy)
    lazy: list[tuple[str, int, str]] = []
    for source, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        deps, loads = set(), False
        for node in _module_level(tree):
            if isinstance(node, ast.Import):
                loads |= any(a.name.split(".")[0] in heavy for a in node.names)
                deps |= {_resolve(a.name[len(pkg) + 1:], paths) for a in node.names if a.name.startswith(pkg + ".")}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                if node.module.split(".")[0] in heavy:
                    loads = True
                elif node.module == pkg or node.module.startswith(pkg + "."):
                    base = node.module[len(pkg) + 1:]
                    deps |= {_resolve(f"{base}.{a.name}".strip("."), paths) for a in node.names}
            elif "import_keras(" in ast.unparse(node) and not isinstance(node, (ast.If, ast.Try, ast.With)):
                loads = True  # `keras = import_keras()` at module level loads Keras as an import would
        top[source] = (deps, loads)
        guarded: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Try):
                guarded |= {id(n) for s in node.body for n in ast.walk(s)}
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in _nodes(fn):
                if (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                        and node.module.startswith(pkg + ".") and id(node) not in guarded):
                    base = node.module[len(pkg) + 1:]
                    for a in node.names:
                        lazy.append((source, node.lineno, _resolve(f"{base}.{a.name}", paths)))

    def heavy_at_import(m: str, seen: frozenset = frozenset()) -> bool:
        deps, loads = top.get(m, (set(), False))
        return loads or any(heavy_at_import(d, seen | {m}) for d in deps if d not in seen and d != m)

    return sorted({f"{_path(s)}:{line} imports {t} inside a function, but {t} loads nothing heavy: import it at the top"
                   for s, line, t in lazy if t in top and not heavy_at_import(t)})


def test_function_level_imports_only_defer_heavy_packages():
    found = lazy_violations(PACKAGE)
    assert found == [], "\n".join(found)


def test_a_needless_function_level_import_is_reported(tmp_path):
    pkg = tmp_path / "fake"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "light.py": "import json\nVALUE = 1\n",
        "heavy.py": "import numpy\n",
        "through.py": "from fake.heavy import numpy\n",
        "sub/__init__.py": "",
        "sub/user.py": ("def a():\n    from fake.light import VALUE\n    return VALUE\n\n"
                        "def b():\n    from fake.heavy import numpy\n    from fake.through import numpy as n\n    return n\n\n"
                        "def c():\n    try:\n        from fake.light import VALUE\n    except ImportError:\n        return 0\n"),
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    assert lazy_violations(pkg) == ["sub/user.py:2 imports light inside a function, but light loads nothing heavy: "
                                    "import it at the top"]
