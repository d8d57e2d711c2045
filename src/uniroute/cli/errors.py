"""Turn the project's own errors into one clear line on stderr and their exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from uniroute.errors import UniRouteError

#: Errors of the operating system that describe bad input (a path), not a bug.
_OS_INPUT_ERRORS = (FileNotFoundError, PermissionError)


def run_with_clear_errors(
    func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace
) -> int:
    """Run a command; our errors print 'uniroute: error: ...' and exit with their exit_code."""
    try:
        return int(func(args) or 0)
    except UniRouteError as exc:
        print(f"uniroute: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except _OS_INPUT_ERRORS as exc:
        print(f"uniroute: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("uniroute: interrupted", file=sys.stderr)
        return 130
