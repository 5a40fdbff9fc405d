"""The specc AST: Pydantic nodes lowered from the Lark parse tree.

Every node carries its source `span`; spans are kept beside the tree and never
take part in equality, so two specs that differ only in layout compare equal.
Class names are the DSL keywords: `input` -> `Input`, `repeat` -> `Repeat`, ...

Start-up: building Pydantic's validators for these classes takes longer than parsing a spec, so
it is deferred (`defer_build`) to the first validation or JSON Schema. The parser makes nodes with
`model_construct` (its output is typed by the grammar; tests/test_schema.py validates it for every
spec), and equality and hashing below read the fields directly, so `specc fmt`, `check
--syntax-only` and `parse` never build a validator.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field


class Span(BaseModel):
    """A range of source text, 1-based lines and columns (end exclusive)."""

    model_config = ConfigDict(frozen=True, defer_build=True)
    line: int
    col: int
    end_line: int
    end_col: int

    def __str__(self) -> str:
        return f"{self.line}:{self.col}"


class Node(BaseModel):
    model_config = ConfigDict(frozen=True, defer_build=True)
    span: Span | None = Field(default=None, exclude=True, repr=False)

    def __eq__(self, other: object) -> bool:  # spans never count
        return type(self) is type(other) and all(
            getattr(self, k) == getattr(other, k) for k in _compared(type(self)))

    def __hash__(self) -> int:
        return hash((type(self).__name__, *(_frozen(getattr(self, k)) for k in _compared(type(self)))))


_COMPARED: dict[type, tuple[str, ...]] = {}


def _compared(cls: type[Node]) -> tuple[str, ...]:
    """The fields that make up a node's meaning: those `model_dump` keeps (not spans, not spellings)."""
    names = _COMPARED.get(cls)
    if names is None:
        names = _COMPARED[cls] = tuple(k for k, f in cls.model_fields.items() if not f.exclude)
    return names


def _frozen(value):
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


# --- expressions -----------------------------------------------------------


class Number(Node):
    tag: Literal["number"] = "number"
    value: int | float
    text: str | None = Field(default=None, exclude=True, repr=False)  # as written (`1e-4`, `32_000`), for `fmt`


class Str(Node):
    tag: Literal["str"] = "str"
    value: str


class Name(Node):
    """A bare identifier: a block parameter, a `let` constant, `true`/`false`/`none`, a symbol such as
    `relu`, or a fact of the data or training, written with a dot (`data.classes`, `train.steps`)."""

    tag: Literal["name"] = "name"
    id: str


class Kwarg(Node):
    name: str
    value: Expr
    name_span: Span | None = Field(default=None, exclude=True, repr=False)


class Call(Node):
    """`func(args, key=value)`: a layer, block, or configured Keras object."""

    tag: Literal["call"] = "call"
    func: str
    args: list[Expr] = []
    kwargs: list[Kwarg] = []
    name_span: Span | None = Field(default=None, exclude=True, repr=False)


class Tuple(Node):
    tag: Literal["tuple"] = "tuple"
    items: list[Expr]


class List(Node):
    tag: Literal["list"] = "list"
    items: list[Expr]


Operator = Literal["+", "-", "*", "/", "//", "%"]


class BinOp(Node):
    tag: Literal["binop"] = "binop"
    op: Operator
    left: Expr
    right: Expr


class Neg(Node):
    tag: Literal["neg"] = "neg"
    operand: Expr


Expr = Annotated[
    Union[Number, Str, Name, Call, Tuple, List, BinOp, Neg], Field(discriminator="tag")
]


# --- model statements ------------------------------------------------------


class Input(Node):
    """`input NAME: (d1, d2, ...) [dtype]`"""

    tag: Literal["input"] = "input"
    name: str
    shape: list[int | str | None]  # a name stands for a `let` constant or a fact (`data.features`)
    dtype: str | None = None
    dim_spans: list[Span] = Field(default=[], exclude=True, repr=False)


class Output(Node):
    """`output a, b`: the model's outputs, in order."""

    tag: Literal["output"] = "output"
    names: list[str]


class Ref(Node):
    """A tensor named earlier (or, if no tensor has that name, a layer without arguments)."""

    tag: Literal["ref"] = "ref"
    name: str


class Refs(Node):
    """`[a, b]`: several named tensors feeding one (merge) layer."""

    tag: Literal["refs"] = "refs"
    names: list[str]


Step = Annotated[Union[Call, Ref, Refs], Field(discriminator="tag")]


class Chain(Node):
    """`[target =] step -> step -> ...`; a single layer call is a chain of one."""

    tag: Literal["chain"] = "chain"
    target: str | None = None
    steps: list[Step]


class Repeat(Node):
    """`repeat N { ... }`"""

    tag: Literal["repeat"] = "repeat"
    count: Expr
    body: list[Stmt]


class Branch(Node):
    """`branch { ... }`; an empty branch is the identity."""

    tag: Literal["branch"] = "branch"
    body: list[Stmt]


class Parallel(Node):
    """`parallel MERGE { branch {...} branch {...} }`"""

    tag: Literal["parallel"] = "parallel"
    merge: Call
    branches: list[Branch]


Stmt = Annotated[Union[Input, Output, Chain, Repeat, Parallel], Field(discriminator="tag")]


# --- top level -------------------------------------------------------------


class Param(Node):
    name: str
    default: Expr | None = None


class Block(Node):
    """`block NAME(params) { ... }`: a reusable piece of network."""

    tag: Literal["block"] = "block"
    name: str
    params: list[Param] = []
    body: list[Stmt]


class Let(Node):
    """`let NAME = EXPR`: a named constant, usable in every expression after it."""

    tag: Literal["let"] = "let"
    name: str
    value: Expr
    name_span: Span | None = Field(default=None, exclude=True, repr=False)


class Model(Node):
    tag: Literal["model"] = "model"
    name: str | None = None
    body: list[Stmt]


class Setting(Node):
    """`key: value`"""

    tag: Literal["setting"] = "setting"
    key: str
    value: Expr
    key_span: Span | None = Field(default=None, exclude=True, repr=False)


class Section(Node):
    """`NAME { key: value ... }`: `data`, `train`."""

    tag: Literal["section"] = "section"
    name: str
    settings: list[Setting]


class Spec(Node):
    """A whole `.model` file."""

    models: list[Model] = []
    blocks: list[Block] = []
    sections: list[Section] = []
    settings: list[Setting] = []
    lets: list[Let] = []


def dump_ast(value):
    """The AST as JSON-ready data with every field, spans and spellings included (what `specc parse`
    prints and `specc schema` describes); `Spec.model_validate` reads it back."""
    if isinstance(value, BaseModel):
        return {name: dump_ast(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, list):
        return [dump_ast(v) for v in value]
    return value


def ast_schema() -> dict:
    """The JSON Schema (draft 2020-12) of `dump_ast(spec)`."""
    schema = Spec.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "specc spec AST",
            "description": "A parsed .model file, as printed by `specc parse FILE`.", **schema}

