"""Spec text: the parser (grammar/specc.lark -> AST), the formatter, language upgrades and the Pygments lexer. Imports neither Keras nor JAX."""
