"""A Pygments lexer for `.model` files, so documentation tools and `pygmentize` highlight specs.

Registered as the `pygments.lexers` entry point `specc`; this is the only module of specc that
imports Pygments (it comes with Keras, through rich). The states follow `grammar/specc.lark`:
top-level items, bodies of `model`/`block`/`repeat`/`branch`, settings sections, and brackets,
inside which newlines do not end a statement. Valid specs never produce `Error` tokens.
"""

from pygments.lexer import RegexLexer, bygroups, default, include, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Text, Whitespace

__all__ = ["SpeccLexer"]

NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_SP = r"[ \t\f]*"  # blanks that do not end a statement


class SpeccLexer(RegexLexer):
    """Lexer for specc `.model` files (neural networks and their training)."""

    name = "specc"
    aliases = ["specc", "model"]
    filenames = ["*.model"]
    mimetypes = ["text/x-specc"]

    tokens = {
        # blanks, comments, line continuations and `;` (a statement separator)
        "ws": [
            (r"[ \t\f]+", Whitespace),
            (r"\\[ \t\f]*\r?\n", Text),
            (r"\r?\n", Whitespace),
            (r"#[^\n]*", Comment.Single),
            (r";", Punctuation),
        ],
        # values: of settings, arguments and `repeat` counts
        "expr": [
            (r'"', String.Double, "dqs"),
            (r"'", String.Single, "sqs"),
            (r"([0-9][0-9_]*)?\.[0-9][0-9_]*([eE][-+]?[0-9]+)?|[0-9][0-9_]*\.?[eE][-+]?[0-9]+|[0-9][0-9_]*\.",
             Number.Float),  # the grammar's FLOAT
            (r"[0-9][0-9_]*", Number.Integer),
            (words(("true", "false", "none"), suffix=r"\b"), Keyword.Constant),
            (rf"({NAME})(\.)({NAME})", bygroups(Name.Builtin, Punctuation, Name.Builtin)),  # data.classes, train.steps
            (NAME + rf"(?={_SP}\()", Name.Function),
            (NAME, Name),
            (r"[(\[]", Punctuation, "brackets"),
            (r"->", Operator),
            (r"//|[-+*/%=]", Operator),
            (r",", Punctuation),
        ],
        "dqs": [(r'\\.', String.Escape), (r'[^"\\\n]+', String.Double), (r'"', String.Double, "#pop")],
        "sqs": [(r"\\.", String.Escape), (r"[^'\\\n]+", String.Single), (r"'", String.Single, "#pop")],
        # inside ( ) and [ ]: newlines are blanks; `NAME =` is a keyword argument
        "brackets": [
            include("ws"),
            (r"[)\]]", Punctuation, "#pop"),
            (rf"({NAME})(\s*)(=)", bygroups(Name.Attribute, Whitespace, Operator)),
            include("expr"),
        ],
        "root": [
            include("ws"),
            (r"model\b", Keyword, "model"),
            (r"block\b", Keyword, "block"),
            (rf"(let)({_SP})({NAME})({_SP})(=)", bygroups(Keyword, Whitespace, Name.Constant, Whitespace, Operator)),
            (rf"({NAME})({_SP})(\{{)", bygroups(Name.Namespace, Whitespace, Punctuation), "section"),
            (rf"({NAME})({_SP})(:)", bygroups(Name.Namespace, Whitespace, Punctuation)),  # device: cpu
            include("expr"),
        ],
        "model": [
            (r"[ \t\f]+", Whitespace),
            (NAME, Name.Class),
            (r"\{", Punctuation, ("#pop", "body")),
            default("#pop"),
        ],
        "block": [
            include("ws"),
            (NAME, Name.Function),
            (r"\(", Punctuation, "params"),
            (r"\{", Punctuation, ("#pop", "body")),
            default("#pop"),
        ],
        "params": [
            include("ws"),
            (NAME, Name.Variable),
            (r"=", Operator, "default"),
            (r",", Punctuation),
            (r"\)", Punctuation, "#pop"),
        ],
        # a parameter's default value, up to the `,` or `)` after it
        "default": [include("ws"), (r",", Punctuation, "#pop"), (r"\)", Punctuation, "#pop:2"), include("expr")],
        # the statements of a model, block, repeat or branch
        "body": [
            include("ws"),
            (r"\}", Punctuation, "#pop"),
            (r"\{", Punctuation, "body"),
            (r"input\b", Keyword, "input"),
            (r"output\b", Keyword, "output"),
            (words(("repeat", "parallel", "branch"), suffix=r"\b"), Keyword),
            (rf"({NAME})({_SP})(=)", bygroups(Name.Variable, Whitespace, Operator)),  # a named tensor
            include("expr"),
        ],
        # input NAME: (shape) [dtype]
        "input": [
            (r"[ \t\f]+", Whitespace),
            (rf"({NAME})({_SP})(:)", bygroups(Name.Variable, Whitespace, Punctuation)),
            (r"\(", Punctuation, "brackets"),
            (NAME, Keyword.Type),
            default("#pop"),
        ],
        "output": [(r"[ \t\f]+", Whitespace), (NAME, Name.Variable), (r",", Punctuation), default("#pop")],
        # data { key: value ... }, train { ... }, init { ... }
        "section": [
            include("ws"),
            (r"\}", Punctuation, "#pop"),
            (rf"({NAME})({_SP})(:)", bygroups(Name.Attribute, Whitespace, Punctuation)),
            include("expr"),
        ],
    }
