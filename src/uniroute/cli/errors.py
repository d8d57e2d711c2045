"""Turn the project's own errors into one clear line on stderr and their exit code."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable

from uniroute.errors import UniRouteError

#: Errors of the operating system that describe bad input (a path), not a bug.
_OS_INPUT_ERRORS = (
    FileNotFoundError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
    FileExistsError,
)
#: Exit status when stdout's reader has gone away: what a shell reports for a process killed
#: by SIGPIPE (128 + 13), as git and the coreutils are when they write into a closed pipe. A
#: pipeline under `set -o pipefail` then fails as it does with those tools, while plain
#: `uniroute models list --json | head -1` stays quiet.
BROKEN_PIPE_EXIT = 128 + int(signal.SIGPIPE)


def one_line(text: str) -> str:
    """``text`` with its line breaks turned into spaces: every refusal is one line."""
    return " ".join(text.splitlines())


def stdout_closed() -> int:
    """Give up writing quietly after the reader of stdout went away; the exit status."""
    # Python ignores SIGPIPE, so a closed pipe raises BrokenPipeError instead of ending the
    # process as it ends git or cat. The output still buffered would raise again when the
    # interpreter flushes stdout at exit; pointing stdout at /dev/null drops it silently.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout has no file descriptor (a test's capture)
        pass
    return BROKEN_PIPE_EXIT


def run_with_clear_errors(
    func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace
) -> int:
    """Run a command; our errors print 'uniroute: error: ...' and exit with their exit_code."""
    try:
        return int(func(args) or 0)
    except UniRouteError as exc:
        print(f"uniroute: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        return stdout_closed()
    except _OS_INPUT_ERRORS as exc:
        print(f"uniroute: error: {one_line(str(exc))}", file=sys.stderr)
        return 2
    except OSError as exc:
        # Anything else the system refused (a full disk, a read-only file system): not a bug
        # to show a traceback for, and not the caller's input either.
        print(f"uniroute: error: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("uniroute: interrupted", file=sys.stderr)
        return 130
