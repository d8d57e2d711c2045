"""Verify-and-escalate plans of the deployed router: which models to ask for one prompt.

A plan (``uniroute.routers.verify``) is one model, or two cheap *candidates* whose answers are
compared and a *target* asked only when they disagree. The deployed router computes the plan
table of its K-means estimator over the servable models of a snapshot (their scores and answers
on the representative prompts) once per snapshot and keeps it there (``Snapshot.derived``), so a
pool change brings new plans, and a new model takes part as soon as its answers are stored.

How two answers are compared depends on the task: a prompt is compared as the representative
prompts of its cluster are (``uniroute.answers.answer_kind_for_task`` of their tasks, the most
common one). A cluster whose prompts have no comparable answers (code) only ever gets
single-model plans.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from uniroute.answers import answer_kind_for_task
from uniroute.data.representative import RepresentativePrompt
from uniroute.deployment.snapshot import Snapshot
from uniroute.errors import RouterError
from uniroute.routers.uniroute_kmeans import UniRouteKMeans
from uniroute.routers.verify import PlanTable, UniRouteVerify, cluster_plan_table
from uniroute.tradeoff import route_argmin


@dataclass(frozen=True)
class VerifyPlan:
    """The models to ask for one prompt and how to compare their answers.

    ``candidates`` holds one model (answer with it) or two (compare; the first one's answer is
    returned when they agree); ``target`` is asked when two candidates disagree (None for a
    single model). The estimates are the plan's in the prompt's cluster: error, expected cost
    of every call it makes, and the probability that the candidates agree.
    """

    cluster: int
    candidates: tuple[str, ...]
    target: str | None
    answer_kind: str | None
    lam: float
    estimated_error: float
    expected_cost: float
    agreement: float

    @property
    def is_single(self) -> bool:
        """True when the plan asks one model only."""
        return self.target is None

    def label(self) -> str:
        """``a`` or ``a+b->e`` (logs, headers)."""
        if self.target is None:
            return self.candidates[0]
        return f"{self.candidates[0]}+{self.candidates[1]}->{self.target}"

    def to_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready values."""
        return {
            "cluster": self.cluster,
            "candidates": list(self.candidates),
            "target": self.target,
            "answer_kind": self.answer_kind,
            "lambda": self.lam,
            "estimated_error": self.estimated_error,
            "expected_cost": self.expected_cost,
            "agreement": self.agreement,
        }


def cluster_answer_kinds(
    prompts: Sequence[RepresentativePrompt], clusters: np.ndarray, n_clusters: int
) -> list[str | None]:
    """Per cluster, the answer kind most of its representative prompts have (None: none)."""
    kinds: list[Counter[str | None]] = [Counter() for _ in range(n_clusters)]
    for prompt, cluster in zip(prompts, clusters.tolist(), strict=True):
        kinds[cluster][answer_kind_for_task(prompt.task)] += 1
    return [counts.most_common(1)[0][0] if counts else None for counts in kinds]


@dataclass(frozen=True)
class _PlanSet:
    """A snapshot's plan table over its servable models and each cluster's answer kind."""

    table: PlanTable
    kinds: list[str | None]


def _plan_set(estimator: UniRouteKMeans, prompts: Sequence[RepresentativePrompt],
              snapshot: Snapshot) -> _PlanSet:  # fmt: skip
    pool = snapshot.pool
    servable = pool.servable
    if servable:
        pool = pool.select(servable)
    if not len(pool):
        raise RouterError("no enabled model in the pool to plan with")
    if pool.answers is None:
        raise RouterError(
            "verify needs the models' answers on the representative prompts, and no servable "
            "model has any recorded (onboard them, or add them with an 'answer' column)"
        )
    kinds = cluster_answer_kinds(prompts, estimator.val_clusters_, estimator.n_clusters_)
    # A verify artifact uses the shrinkage and candidate rule it chose on its training LLMs.
    if isinstance(estimator, UniRouteVerify):
        table = estimator.plan_table(pool)
    else:
        table = cluster_plan_table(estimator, pool)
    # A cluster whose answers cannot be compared keeps only its single-model plans.
    uncomparable = np.array([k for k, kind in enumerate(kinds) if kind is None], dtype=np.intp)
    if len(uncomparable):
        errors = table.errors.copy()
        errors[np.ix_(uncomparable, np.flatnonzero(~table.is_single()))] = np.inf
        table = PlanTable(
            table.names, table.first, table.second, table.target, errors, table.costs,
            table.agreement,
        )  # fmt: skip
    return _PlanSet(table, kinds)


def verify_plans(
    estimator: object,
    prompts: Sequence[RepresentativePrompt],
    snapshot: Snapshot,
    X: np.ndarray,
    lam: float,
) -> list[VerifyPlan]:
    """Each embedded prompt's plan at trade-off ``lam`` over the snapshot's servable models."""
    if not isinstance(estimator, UniRouteKMeans):
        raise RouterError(
            f"verify plans need a K-means artifact (uniroute-kmeans or uniroute-verify); this "
            f"one holds {type(estimator).__name__}"
        )
    plans = snapshot.derived.get(
        ("verify-plans",),
        lambda: _plan_set(estimator, prompts, snapshot),
        cells=3 * estimator.n_clusters_ * max(1, len(snapshot.pool) ** 3),
    )
    table = plans.table
    clusters = estimator.error_rows(X, snapshot.pool)
    chosen = route_argmin(table.errors[clusters], table.costs[clusters], lam)
    result = []
    for cluster, p in zip(clusters.tolist(), chosen.tolist(), strict=True):
        described = table.describe(p)
        result.append(
            VerifyPlan(
                cluster=cluster,
                candidates=tuple(described["candidates"]),
                target=described["target"],
                answer_kind=plans.kinds[cluster],
                lam=lam,
                estimated_error=float(table.errors[cluster, p]),
                expected_cost=float(table.costs[cluster, p]),
                agreement=float(table.agreement[cluster, p]),
            )
        )
    return result
