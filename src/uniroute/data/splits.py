"""Seeded, reproducible splits: training vs unseen test LLMs, and task-stratified prompt splits."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class PromptSplit(NamedTuple):
    """Positions of the prompts in each part (sorted ascending, disjoint, covering all)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split_models(models: Sequence[str], n_test: int, seed: int) -> tuple[list[str], list[str]]:
    """Draw ``n_test`` unseen test LLMs; the rest (at least 2) are the training LLMs.

    Both lists keep the order of ``models``; the draw depends only on ``seed`` and ``models``.
    """
    models = list(models)
    if len(set(models)) != len(models):
        repeated = sorted({m for m in models if models.count(m) > 1})
        raise ValueError(f"model names repeat: {repeated}")
    if isinstance(n_test, bool) or not isinstance(n_test, int | np.integer) or n_test < 1:
        raise ValueError(f"n_test must be an integer >= 1, got {n_test!r}")
    if len(models) - n_test < 2:
        raise ValueError(
            f"holding out {n_test} of {len(models)} models leaves {len(models) - n_test} for "
            "training; at least 2 are needed"
        )
    rng = np.random.default_rng(seed)
    held_out = set(rng.choice(len(models), size=n_test, replace=False).tolist())
    train = [m for i, m in enumerate(models) if i not in held_out]
    test = [m for i, m in enumerate(models) if i in held_out]
    return train, test


def _check_fractions(fractions: Sequence[float]) -> np.ndarray:
    values = np.asarray(fractions, dtype=float)
    if values.shape != (3,):
        raise ValueError(f"fractions must be three numbers (train, val, test), got {fractions!r}")
    if not np.all(np.isfinite(values)) or np.any(values <= 0):
        raise ValueError(
            f"every fraction must be > 0 (an empty split is not allowed): {fractions!r}"
        )
    if not math.isclose(values.sum(), 1.0, abs_tol=1e-9):
        raise ValueError(f"fractions must sum to 1, got {fractions!r} (sum {values.sum():g})")
    return values


def _allocate(size: int, targets: np.ndarray) -> np.ndarray:
    """Split ``size`` items into integer counts close to ``targets`` (largest remainder)."""
    targets = np.clip(targets, 0.0, None)
    targets = targets * (size / targets.sum()) if targets.sum() > 0 else np.full(3, size / 3)
    counts = np.floor(targets).astype(int)
    remainder = targets - counts
    for k in np.argsort(-remainder, kind="stable")[: size - counts.sum()]:
        counts[k] += 1
    return counts


def split_prompts(
    tasks: Sequence[str] | np.ndarray,
    fractions: Sequence[float] = (0.6, 0.1, 0.3),
    seed: int = 0,
) -> PromptSplit:
    """Split prompt positions into train/val/test, each task in the same proportions.

    Within a task the prompts are shuffled with ``seed``; counts per task follow ``fractions``
    up to rounding, and rounding is carried from task to task so the overall sizes match too.
    Every split must end up non-empty.
    """
    shares = _check_fractions(fractions)
    task_array = np.asarray([str(t) for t in tasks], dtype=object)
    if len(task_array) == 0:
        raise ValueError("no prompts to split")
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    carry = np.zeros(3)
    for task in sorted(set(task_array.tolist())):
        members = np.flatnonzero(task_array == task)
        rng.shuffle(members)
        wanted = shares * len(members) + carry
        counts = _allocate(len(members), wanted)
        carry = wanted - counts
        bounds = np.cumsum(counts)[:-1]
        for k, chunk in enumerate(np.split(members, bounds)):
            parts[k].append(chunk)
    train, val, test = (np.sort(np.concatenate(chunks)) for chunks in parts)
    empty = [
        name
        for name, part in zip(("train", "val", "test"), (train, val, test), strict=True)
        if len(part) == 0
    ]
    if empty:
        raise ValueError(
            f"{len(task_array)} prompts split by {tuple(fractions)} leave the {empty} split(s) "
            "empty; use more prompts or larger fractions"
        )
    return PromptSplit(train=train, val=val, test=test)
