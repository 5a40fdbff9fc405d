"""The layers of specc's modules, lowest first: the import contract that `tests/test_module_layers.py` enforces.

A module imports only modules of its own layer or of a lower one, and the modules of one layer never import one
another in a cycle. Every import counts, those inside functions too (a lazy import is still a dependency; only
`if TYPE_CHECKING:` blocks are left out). No module imports another's private (`_name`) names, nor the package
`specc` itself (`__version__` is in `specc.version`). `api` and `cli` are imported by the entry points only:
the tools reach a checked plan through `check.load_plan` / `check.compile_text`. Each module is in exactly one
layer: a new module must be placed here before the tests pass.

This module imports nothing; it is data for the test and for docs/architecture.md.
"""

LAYERS = (
    # base: what every stage needs, importing nothing of specc above it (no Keras, no JAX)
    ("base", ("version", "limits", "module_layers", "errors", "nodes", "plan", "artifacts", "cache", "datafiles")),
    # the Keras/JAX runtime: importing Keras lazily on JAX, the process environment JAX reads, specc's own layers
    ("runtime", ("keras_env", "extras")),
    # the language: parsing, formatting, upgrading and highlighting spec text
    ("lang", ("syntax", "fmt", "upgrade", "highlight")),
    # data sources and the facts the checker reads from them
    ("data", ("text", "data", "facts")),
    # compiling a spec: the catalogue of Keras names, building, the `expect` section, the checker
    ("compile", ("catalog", "build", "expect", "check")),
    # training a plan
    ("train", ("labels", "lower", "distribute", "trace", "checkpoint", "rundir", "curves", "runner")),
    # the commands' tools, each on a checked plan
    ("tools", ("lint", "cost", "contract", "emit", "diff", "graph", "importer", "inference", "export", "generate")),
    # the Python API (`specc.load`, ...)
    ("api", ("api",)),
    # entry points: the command line, `python -m specc`, and the package's lazy facade (`specc/__init__.py`)
    ("entry", ("cli", "__main__", "__init__")),
)

#: Modules that only the entry points may import.
ENTRY_ONLY = ("api", "cli")
