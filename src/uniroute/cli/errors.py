"""Turn the project's own errors into one clear line on stderr and a non-zero exit code."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from uniroute._io import StateError
from uniroute.data.dataset import DataError


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that describe bad input rather than a bug."""
    from uniroute.routers.base import RouterError

    return (DataError, StateError, RouterError, FileNotFoundError, PermissionError)


def run_with_clear_errors(
    func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace
) -> int:
    """Run a command; user errors print 'uniroute: error: ...' and exit 2, not a traceback."""
    try:
        return int(func(args) or 0)
    except user_errors() as exc:
        print(f"uniroute: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("uniroute: interrupted", file=sys.stderr)
        return 130
