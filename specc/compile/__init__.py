"""Compiling a spec: Keras's catalogues, the checker (AST -> Plan) and building a plan on symbolic tensors."""
