"""Checks of single values shared by every layer, each raising the caller's error type."""

from __future__ import annotations

import math

from uniroute.errors import UsageError


def non_negative_number(value: object, label: str, error: type[UsageError] = UsageError) -> float:
    """``value`` as a finite float >= 0, or ``error`` naming ``label`` (booleans are refused)."""
    if isinstance(value, bool):
        raise error(f"{label} must be a finite number >= 0, got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        raise error(f"{label} must be a finite number >= 0, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise error(f"{label} must be a finite number >= 0, got {value!r}")
    return number


def non_negative_int(value: object, label: str, error: type[UsageError] = UsageError) -> int:
    """``value`` as a whole number >= 0, or ``error`` naming ``label``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise error(f"{label} must be a whole number >= 0, got {value!r}")
    return int(value)
