"""The layers of specc's modules, lowest first: the import contract that `tests/test_module_layers.py` enforces.

A layer is a subpackage (every module of `specc/compile/` is in layer compile) or a top-level module. A module
imports only modules of its own layer or of a lower one, and the modules of one layer never import one
another in a cycle. Every import counts, those inside functions too (a lazy import is still a dependency; only
`if TYPE_CHECKING:` blocks are left out), and a function-level import of a specc module is allowed only where it
defers a heavy package (Keras, JAX, NumPy, Pydantic, ...) that the imported module loads. No module imports another's private (`_name`) names, nor the package
`specc` itself (`__version__` is in `specc.core.version`). `api` and `cli` are imported by the entry points only:
the tools reach a checked plan through `check.load_plan` / `check.compile_text`. A new module in a subpackage is placed by
its folder; a new top-level module must be placed here before the tests pass.

This module imports nothing; it is data for the test and for docs/architecture.md.
"""

LAYERS = (
    # core: what every stage needs, importing nothing of specc above it (no Keras, no JAX): diagnostics and exit
    # codes, the AST and the plan, named bounds, atomic writes, the cache, the readers of untrusted files
    ("core", ("core", "module_layers")),
    # the Keras/JAX runtime: importing Keras lazily on JAX, the process environment JAX reads, specc's own Keras
    # objects, the checked model-file loader
    ("runtime", ("runtime",)),
    # the language: parsing, formatting, upgrading and highlighting spec text
    ("lang", ("lang",)),
    # data sources, their preparation, tokenizers, and the facts the checker reads from the data
    ("data", ("data",)),
    # compiling a spec: the catalogue of Keras names, the checker, building on symbolic tensors
    ("compile", ("compile",)),
    # training a plan
    ("train", ("train",)),
    # the commands' tools, each on a checked plan or a trained run
    ("tools", ("tools",)),
    # the Python API (`specc.load`, ...)
    ("api", ("api",)),
    # entry points: the command line, `python -m specc`, and the package's lazy facade (`specc/__init__.py`)
    ("entry", ("cli", "__main__", "__init__")),
)

#: Modules that only the entry points may import.
ENTRY_ONLY = ("api", "cli")
