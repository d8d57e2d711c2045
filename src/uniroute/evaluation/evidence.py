"""Onboarding with partial evidence: which representative scores the unseen test LLMs keep.

An *evidence setting* describes the test LLMs from part of their validation (representative
prompt) scores; the rest are set to NaN for the test LLMs only. The training LLMs, the routers'
fitting and the test prompts are unchanged, so each fitted estimator is scored under every
setting by building another pool (``make_pool``) and predicting again.

* ``n=N`` (``--onboard-prompts``): the test LLMs keep their scores on a seeded random subset of N
  validation prompts, the same subset for every router and every test LLM of a trial. The subsets
  of one trial are nested (the first N of one seeded permutation), so a larger N only adds
  evidence; N at or above the number of validation prompts keeps them all.
* ``all``: every validation score, exactly the default evaluation.
* ``missing-task`` (``--missing-task TASK`` or ``each``): every test-LLM score on the validation
  prompts of one task is removed; ``each`` draws the task per trial (seeded) from the tasks of that
  trial's validation prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from uniroute.errors import DataError

#: The setting that keeps every validation score (the default evaluation).
ALL = "all"
#: The label of the missing-task setting.
MISSING_TASK = "missing-task"
#: ``--missing-task each``: one task drawn per trial.
EACH = "each"
# Independent seeded streams per trial (the trial seed is the first entropy word).
_SUBSET_STREAM = 1
_TASK_STREAM = 2


@dataclass(frozen=True)
class EvidenceSetting:
    """One way of describing the test LLMs: ``n_prompts`` (None = all) or a removed task."""

    label: str
    n_prompts: int | None = None
    missing_task: str | None = None

    @property
    def is_full(self) -> bool:
        """True for the setting that keeps every validation score."""
        return self.n_prompts is None and self.missing_task is None


def parse_onboard_prompts(text: str) -> list[int | None]:
    """``"10,25,all"`` -> ``[10, 25, None]`` (None = all); numbers must be positive integers."""
    values: list[int | None] = []
    for part in (p.strip() for p in text.split(",")):
        if part.lower() == ALL:
            values.append(None)
            continue
        try:
            n = int(part)
        except ValueError:
            raise DataError(
                f"--onboard-prompts {text!r}: {part!r} is neither a number of prompts nor 'all'"
            ) from None
        if n < 1:
            raise DataError(f"--onboard-prompts {text!r}: {n} must be >= 1")
        values.append(n)
    if not values:
        raise DataError("--onboard-prompts is empty")
    return list(dict.fromkeys(values))


def evidence_settings(
    onboard_prompts: Sequence[int | None] = (), missing_task: str | None = None
) -> list[EvidenceSetting]:
    """The settings of one run, in the order given, the missing-task setting last."""
    settings = [
        EvidenceSetting(ALL) if n is None else EvidenceSetting(f"n={n}", n_prompts=int(n))
        for n in dict.fromkeys(onboard_prompts)
    ]
    if missing_task is not None:
        settings.append(EvidenceSetting(MISSING_TASK, missing_task=missing_task))
    return settings


def check_missing_task(missing_task: str | None, tasks: Sequence[str]) -> None:
    """A named task must exist in the data (``each`` always does)."""
    if missing_task is None or missing_task == EACH:
        return
    present = sorted(set(tasks))
    if missing_task not in present:
        raise DataError(
            f"--missing-task {missing_task!r} is not a task of the data; tasks: {present} "
            f"(or {EACH!r})"
        )


def subset_order(trial_seed: int, n_val: int) -> np.ndarray:
    """The trial's seeded permutation of its validation prompts; ``n=N`` keeps the first N."""
    return np.random.default_rng([int(trial_seed), _SUBSET_STREAM]).permutation(n_val)


def trial_missing_task(
    missing_task: str | None, val_tasks: np.ndarray, trial_seed: int
) -> str | None:
    """The task removed in this trial: the named one, or for ``each`` a seeded draw."""
    if missing_task is None or missing_task != EACH:
        return missing_task
    present = sorted(set(np.asarray(val_tasks).tolist()))
    rng = np.random.default_rng([int(trial_seed), _TASK_STREAM])
    return str(present[int(rng.integers(len(present)))])


def kept_prompts(
    setting: EvidenceSetting, order: np.ndarray, val_tasks: np.ndarray, removed_task: str | None
) -> np.ndarray:
    """Boolean mask over the validation prompts: True where the test LLMs keep their score."""
    n_val = len(order)
    if setting.n_prompts is not None:
        keep = np.zeros(n_val, dtype=bool)
        keep[order[: min(setting.n_prompts, n_val)]] = True
        return keep
    if setting.missing_task is not None:
        return np.asarray(val_tasks) != removed_task
    return np.ones(n_val, dtype=bool)


def partial_scores(scores: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """A copy of the (n_val, m) test-LLM validation scores with the rows not kept set to NaN."""
    partial = np.array(scores, dtype=float, copy=True)
    partial[~np.asarray(keep, dtype=bool)] = np.nan
    return partial
