"""JSON from outside (a client, an upstream, a user's file) parsed within bounds.

``json.loads`` alone lets one document crash its reader: nesting deeper than the interpreter's
recursion limit raises ``RecursionError``, an integer of more than 4,300 digits ``ValueError``,
``NaN``/``Infinity`` are accepted though not JSON, and ``"\\ud800"`` gives a string that cannot be
encoded back to UTF-8. :func:`loads_bounded` turns each of these into one
:class:`JsonLimitError` saying what is wrong, so callers handle a single exception type.
"""

from __future__ import annotations

import functools
import json
import math
import re
from typing import Any

#: Nesting accepted by default: far beyond any real request, far below the recursion limit.
DEFAULT_MAX_DEPTH = 64
#: Characters of one number accepted by default (a 64-bit integer has at most 20).
DEFAULT_MAX_NUMBER_CHARS = 100

# A JSON escape of a UTF-16 surrogate; a valid pair is two of these in a row.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abAB]|\\u[dD][c-fC-F]")


class JsonLimitError(ValueError):
    """The text is not acceptable JSON: malformed, too deep, a huge or non-finite number, or a
    lone surrogate. The message is a clause to follow a subject: "the body " + str(error)."""


def _reject_constant(name: str) -> Any:
    raise JsonLimitError(f"holds {name}, which is not JSON (use null or a finite number)")


def _bounded_number(max_chars: int, kind: type) -> Any:
    def parse(text: str) -> Any:
        if len(text) > max_chars:
            raise JsonLimitError(
                f"holds a number of {len(text)} characters (the limit is {max_chars})"
            )
        value = kind(text)
        if kind is float and not math.isfinite(value):
            raise JsonLimitError(f"holds the number {text[:20]}, too big for a 64-bit float")
        return value

    return parse


@functools.lru_cache(maxsize=8)
def _decoder(max_number_chars: int) -> json.JSONDecoder:
    """One decoder per number limit, built once (json.loads with hooks builds one per call)."""
    return json.JSONDecoder(
        parse_int=_bounded_number(max_number_chars, int),
        parse_float=_bounded_number(max_number_chars, float),
        parse_constant=_reject_constant,
    )


def json_depth_exceeds(value: Any, max_depth: int) -> bool:
    """True if arrays/objects in ``value`` nest deeper than ``max_depth`` (iterative, no
    recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def loads_bounded(
    data: bytes | str,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_number_chars: int = DEFAULT_MAX_NUMBER_CHARS,
) -> Any:
    """Parse JSON text; :class:`JsonLimitError` for anything ``json.loads`` would refuse or
    accept unsafely."""
    if isinstance(data, str):
        text = data
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise JsonLimitError(
                "holds a lone UTF-16 surrogate in a string (not valid Unicode)"
            ) from None
    else:
        # Strict UTF-8 only: json.loads(bytes) would also guess UTF-16/32 and let encoded
        # surrogates (b"\xed\xa0\x80") through, which nothing downstream can encode again.
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise JsonLimitError("is not UTF-8 text") from None
    try:
        value = _decoder(max_number_chars).decode(text)
    except json.JSONDecodeError as exc:
        raise JsonLimitError(
            f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except RecursionError:
        raise JsonLimitError(f"is nested deeper than {max_depth} levels") from None
    # Counting brackets is cheap and bounds the depth from above: most documents skip the walk.
    if text.count("[") + text.count("{") > max_depth and json_depth_exceeds(value, max_depth):
        raise JsonLimitError(f"is nested deeper than {max_depth} levels")
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(value):
        raise JsonLimitError("holds a lone UTF-16 surrogate in a string (not valid Unicode)")
    return value


def dumps_compact(value: Any) -> bytes:
    """UTF-8 JSON of a value that :func:`loads_bounded` produced (never NaN, never a surrogate)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
