"""The `specc` command line. Every command is declared once, beside the function that runs it, in a module of
this package (`@command` of `specc.cli.registry`); `main` parses the arguments, runs the command, and turns what
it raises into a message and an exit code.

    compile_cmds  check, summary, test      a spec compiled and checked, no training
    train_cmds    run                       training, the run directory
    use_cmds      generate, eval, predict, export   a trained run
    text_cmds     emit, fmt, upgrade, diff, graph, import, parse, schema   architectures as text

A command module imports only this package and `specc.core` at its top: `specc --help` reads every command's
declaration, and must import neither Keras nor the compiler. The tools a command needs are imported in its
function.

Exit codes (also in the README and `specc --help`):
  0 success; 1 error in a spec; 2 usage error; 3 data or runtime error;
  70 internal error (a bug in specc); 130 interrupted.
"""

from __future__ import annotations

import errno
import sys
import traceback

# Each module registers its commands as it is imported; `specc --help` lists them in that order (hence not sorted).
from specc.cli import compile_cmds, train_cmds, use_cmds, text_cmds  # noqa: F401  # isort: skip
from specc.cli.registry import COMMANDS, make_parser
from specc.core.errors import EXIT_DATA, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_USAGE, UserError, printable

__all__ = ["COMMANDS", "main", "make_parser"]

#: OS errors that say what the machine refused (space, permissions, limits), not what specc got wrong; any
#: other exception, a `FileNotFoundError` included, is reported as the bug it is.
_ENVIRONMENT_ERRNOS = frozenset(getattr(errno, name) for name in (
    "ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EIO", "EFBIG", "EMFILE", "ENFILE", "ENAMETOOLONG", "ENOMEM")
    if hasattr(errno, name))


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    try:
        return COMMANDS[args.command].run(args)
    except UserError as err:
        print(err.render(), file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("specc: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # noqa: BLE001 - anything else is our bug, never the user's
        if isinstance(err, OSError) and err.errno in _ENVIRONMENT_ERRNOS:  # a full disk, no permission: not a bug
            where = printable(str(err.filename), lines=False) if err.filename else "specc"
            print(f"{where}: error: {printable(err.strerror or str(err), lines=False)}", file=sys.stderr)
            return EXIT_DATA
        print("specc: internal error: this is a bug in specc, not in your spec. Please report it with this traceback:",
              file=sys.stderr)
        traceback.print_exc()
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
