"""The `uniroute` command: a thin dispatcher over the packages; each sub-command is one module."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from uniroute import __version__

# Each module defines register(subparsers) and sets `func` on its parser; heavy imports stay
# inside the command functions so that `uniroute --help` is instant.
COMMAND_MODULES = [
    "uniroute.cli.eval_cmd",
    "uniroute.cli.build_cmd",
    "uniroute.cli.models_cmd",
    "uniroute.cli.route_cmd",
    "uniroute.cli.calibrate_cmd",
    "uniroute.cli.serve_cmd",
    "uniroute.cli.registry_cmd",
    "uniroute.cli.keys_cmd",
]


class CommandParser(argparse.ArgumentParser):
    """An argument parser whose refusals are one line, like every other error of the command.

    argparse's own ``error`` prints the whole usage first; the usage of ``models add`` is a dozen
    lines that bury the one that says what is wrong, so it is replaced by a pointer to --help.
    Sub-command parsers are of this class too (``add_subparsers`` uses the parent's class).
    """

    def error(self, message: str) -> NoReturn:
        """Print 'uniroute: error: COMMAND: MESSAGE (see --help)' and exit with status 2."""
        command = self.prog.removeprefix("uniroute").strip()
        where = f"{command}: " if command else ""
        self.exit(2, f"uniroute: error: {where}{message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every sub-command registered."""
    parser = CommandParser(
        prog="uniroute", description="Cost-aware LLM routing that generalises to unseen LLMs."
    )
    parser.add_argument("--version", action="version", version=f"uniroute {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    from uniroute.cli.errors import run_with_clear_errors, stdout_closed

    try:
        try:
            parser = build_parser()
            args = parser.parse_args(argv)  # exits through SystemExit for --help and refusals
            if not getattr(args, "func", None):
                parser.print_help()
                return 2
            return run_with_clear_errors(args.func, args)
        finally:
            # Output still buffered is written now, while a reader that went away (`| head -1`)
            # can still be noticed here; at interpreter exit it would print "Exception ignored".
            sys.stdout.flush()
    except BrokenPipeError:
        return stdout_closed()


if __name__ == "__main__":
    sys.exit(main())
