"""Checks of option values, made before a command reads or computes anything.

The number types are ``argparse`` ``type=``s: a bad value stops the command while it is parsed,
with exit code 2 and a message naming the option and what it accepts, e.g.
``argument --concurrency: must be an integer >= 1, got '0'``. The JSON and output-path checks
run first thing in a command and raise DataError naming the option.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from uniroute._json import JsonLimitError, loads_bounded
from uniroute.errors import DataError

#: The largest TCP port.
MAX_PORT = 65535


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An integer option whose value must be >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be an integer >= {minimum}, got {text!r}"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {text!r}")
        return value

    return parse


def port_number(text: str) -> int:
    """A TCP port, 0-65535 (0 lets the system pick a free one)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_PORT:
        raise argparse.ArgumentTypeError(
            f"must be a port number in 0-{MAX_PORT} (0 picks a free one), got {text!r}"
        )
    return value


def _finite(text: str, wanted: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (a duration, a count of seconds)."""
    wanted = "a finite number > 0"
    value = _finite(text, wanted)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    """A finite number >= 0 (a weight)."""
    wanted = "a finite number >= 0"
    value = _finite(text, wanted)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
    return value


def open_fraction(text: str) -> float:
    """A number strictly between 0 and 1 (a share of the prompts)."""
    wanted = "a number strictly between 0 and 1"
    value = _finite(text, wanted)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}")
    return value


def json_object(text: str, option: str) -> dict[str, Any]:
    """The JSON object given to ``option``; DataError naming the option for anything else.

    Parsed within the bounds of :func:`uniroute._json.loads_bounded` (no NaN, no nesting
    thousands deep, no number of thousands of digits).
    """
    try:
        value = loads_bounded(text)
    except JsonLimitError as exc:
        raise DataError(f"{option}: the value {exc}") from None
    if not isinstance(value, dict):
        raise DataError(f"{option} must be a JSON object of parameters, got {type(value).__name__}")
    return value


def check_output_path(path: Path, option: str, *, directory: bool) -> None:
    """Refuse, before any work, a path the command could not write its output to at the end.

    ``directory``: the output is a directory (it may exist); else a file (it must not be a
    directory). Either way the nearest existing ancestor must be a directory.
    """
    if path.exists():
        if directory and not path.is_dir():
            raise DataError(f"{option} {path}: exists and is not a directory")
        if not directory and path.is_dir():
            raise DataError(f"{option} {path}: is a directory, expected a file")
        return
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise DataError(f"{option} {path}: cannot be created, {ancestor} is not a directory")
