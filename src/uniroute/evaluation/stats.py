"""Statistics over trials: the paired sign test and mean / sample standard deviation."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import binomtest

#: Paired values closer than this (absolute) count as a tie in the sign test.
TIE_TOLERANCE = 1e-12


class SignTestResult(NamedTuple):
    """Outcome of a paired sign test: how often ``a`` beat ``b`` and the two-sided p-value."""

    wins: int
    losses: int
    ties: int
    p_value: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (the ``sign_test_vs_knn`` entry of results.json)."""
        return {
            "wins": int(self.wins),
            "losses": int(self.losses),
            "ties": int(self.ties),
            "p_value": float(self.p_value),
        }


def sign_test(a: ArrayLike, b: ArrayLike) -> SignTestResult:
    """Two-sided exact sign test on paired per-trial values (higher is better), ties ignored."""
    a = np.asarray(a, dtype=float).reshape(-1)
    b = np.asarray(b, dtype=float).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"sign test needs paired values: {len(a)} values against {len(b)}")
    missing = np.isnan(a) | np.isnan(b)
    if missing.any():
        raise ValueError(
            f"sign test: trial {int(np.flatnonzero(missing)[0])} has a NaN value "
            f"({int(missing.sum())} of {len(a)} trials); drop unpaired trials first"
        )
    tie = np.abs(a - b) <= TIE_TOLERANCE
    wins = int(np.sum((a > b) & ~tie))
    losses = int(np.sum((a < b) & ~tie))
    ties = int(tie.sum())
    decided = wins + losses
    p_value = 1.0 if decided == 0 else float(binomtest(wins, decided, 0.5).pvalue)
    return SignTestResult(wins, losses, ties, p_value)


def mean_std(values: ArrayLike, *, return_count: bool = False) -> tuple[float, ...]:
    """Mean and sample std (ddof=1; 0 for one value) of the non-NaN values.

    NaN values are left out; with ``return_count=True`` the number of values used is returned as
    a third element. With no value left both statistics are NaN.
    """
    values = np.asarray(values, dtype=float).reshape(-1)
    if np.isinf(values).any():
        raise ValueError("mean_std: infinite value among the per-trial values")
    used = values[~np.isnan(values)]
    if used.size == 0:
        mean, std = float("nan"), float("nan")
    else:
        mean = float(used.mean())
        std = float(used.std(ddof=1)) if used.size > 1 else 0.0
    return (mean, std, int(used.size)) if return_count else (mean, std)
