"""Reading JSON and JSON Lines files, with errors that name the file and the line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from uniroute.errors import DataError


def read_json_file(path: str | Path) -> Any:
    """The JSON document in a file; bad JSON or bytes that are not UTF-8 are a DataError."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc})") from None


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
                line.encode("utf-8")
            except UnicodeEncodeError:
                raise DataError(f"{path}, line {line_number}: not UTF-8 text") from None
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {line_number}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise DataError(
                    f"{path}, line {line_number}: expected a JSON object, "
                    f"got {type(record).__name__}"
                )
            yield line_number, record
