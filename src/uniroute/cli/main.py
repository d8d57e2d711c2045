"""The `uniroute` command: a thin dispatcher over the packages; each sub-command is one module."""

from __future__ import annotations

import argparse
import importlib
import sys

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
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="uniroute", description="Cost-aware LLM routing that generalises to unseen LLMs."
    )
    parser.add_argument("--version", action="version", version=f"uniroute {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from uniroute.cli.errors import run_with_clear_errors

    return run_with_clear_errors(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
