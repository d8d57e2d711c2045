"""Reading JSON and JSON Lines files, with errors that name the file and the line.

Both go through :func:`uniroute._json.loads_bounded`, so a document nested thousands of levels
deep, a number of thousands of digits, ``NaN``/``Infinity`` or a lone UTF-16 surrogate is one
``DataError`` naming the file (and the line), never a ``RecursionError`` or a crash further on.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from uniroute._json import JsonLimitError, loads_bounded
from uniroute.errors import DataError


def _problem(exc: JsonLimitError, subject: str, *, with_position: bool) -> str:
    """What is wrong with ``subject`` ("the file", "the line"): a syntax error as "not valid
    JSON (...)", with its line and column when ``with_position``; a limit as loads_bounded
    words it."""
    # loads_bounded raises its error "from None": a JSONDecodeError, if that is what it was,
    # is still its __context__ and carries the position.
    cause = exc.__context__
    if isinstance(cause, json.JSONDecodeError):
        where = f"line {cause.lineno}, column {cause.colno}: " if with_position else ""
        return f"not valid JSON ({where}{cause.msg})"
    return f"{subject} {exc}"


def read_json_file(path: str | Path) -> Any:
    """The JSON document in a file; bad JSON or bytes that are not UTF-8 are a DataError."""
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from None
    try:
        return loads_bounded(raw)
    except JsonLimitError as exc:
        raise DataError(f"{path}: {_problem(exc, 'the file', with_position=True)}") from None


def iter_jsonl_objects(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for each non-blank line of a JSON Lines file.

    Line numbers count from 1 and include blank lines, so they match what an editor shows. A
    line that is not UTF-8 text, not valid JSON or not a JSON object is a DataError naming the
    file and the line.
    """
    # Undecodable bytes become lone surrogates here rather than failing a whole read-ahead
    # chunk, so the check below can name the exact line that holds them.
    with open(path, encoding="utf-8", errors="surrogateescape") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                raw = line.encode("utf-8")
            except UnicodeEncodeError:
                raise DataError(f"{path}, line {line_number}: not UTF-8 text") from None
            try:
                record = loads_bounded(raw)
            except JsonLimitError as exc:
                raise DataError(
                    f"{path}, line {line_number}: {_problem(exc, 'the line', with_position=False)}"
                ) from None
            if not isinstance(record, dict):
                raise DataError(
                    f"{path}, line {line_number}: expected a JSON object, "
                    f"got {type(record).__name__}"
                )
            yield line_number, record
