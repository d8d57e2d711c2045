"""What an operator looks at: the estimate map and the cost/quality trade-off of a snapshot.

Both are read from one :class:`~uniroute.deployment.snapshot.Snapshot`, so they describe the
pool that routing uses now, and are kept in the snapshot's derived values (computed once per
pool change, however often a dashboard asks).

- The **estimate map**: per cluster of the representative prompts, each enabled model's
  estimated error Psi_k(h), how many of the cluster's representative prompts it has scores on
  (its evidence) and the estimate's std, each cluster described by its most typical prompts
  (nearest its centroid; a few-shot preamble all of a task's prompts share is cut). A model
  estimated well on a cluster it has no scores in shows it.
- The **trade-off**: the deferral curve of the models calibration solves over (the servable
  ones) on the representative prompts, with the same cross-fitted errors as calibration, so
  the calibrated point lies on it; each point's expected cost, quality and traffic share per
  model, the single models, and the stored policy's point.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from uniroute.artifact import Artifact
from uniroute.data.representative import RepresentativePrompt
from uniroute.deployment.snapshot import Snapshot, calibration_errors
from uniroute.registry.calibration import filled_quality, lambda_path
from uniroute.routers.uniroute_kmeans import ClusterProfileRouter

#: Representative prompts shown per cluster, and the characters kept of each.
TYPICAL_PROMPTS = 3
TYPICAL_PROMPT_CHARS = 300
#: Points of the trade-off curve sent at most (evenly thinned along the curve beyond this).
MAX_TRADEOFF_POINTS = 200


class ViewUnavailableError(Exception):
    """The view cannot be drawn for this artifact or pool; the message says why."""


@dataclass(frozen=True)
class ClusterSummary:
    """One cluster: its size, most common task and most typical representative prompts."""

    cluster: int
    n_prompts: int
    main_task: str
    typical_prompts: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class EstimateMap:
    """Per (cluster, model): estimated error, evidence count and std (None: no std model)."""

    models: tuple[str, ...]
    clusters: tuple[ClusterSummary, ...]
    error: np.ndarray
    evidence: np.ndarray
    std: np.ndarray | None

    def to_dict(self) -> dict[str, Any]:
        """JSON form: rows are clusters, columns models."""
        return {
            "available": True,
            "models": list(self.models),
            "clusters": [
                {
                    "cluster": c.cluster,
                    "n_prompts": c.n_prompts,
                    "main_task": c.main_task,
                    "typical_prompts": list(c.typical_prompts),
                }
                for c in self.clusters
            ],
            "error": _rounded(self.error),
            "evidence": self.evidence.astype(int).tolist(),
            "std": None if self.std is None else _rounded(self.std),
        }


@dataclass(frozen=True)
class TradeoffPoint:
    """One operating point: its lambda, expected cost and quality, and traffic share per model."""

    lam: float
    cost: float
    quality: float
    share: dict[str, float]


@dataclass(frozen=True)
class PoolTradeoff:
    """The deferral curve of the servable pool on the representative prompts."""

    models: tuple[str, ...]
    n_prompts: int
    basis: str
    points: tuple[TradeoffPoint, ...]
    singles: tuple[tuple[str, float, float], ...]
    calibrated: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (costs are per query, in the registry's unit: USD)."""
        return {
            "available": True,
            "models": list(self.models),
            "n_prompts": self.n_prompts,
            "basis": self.basis,
            "cost_unit": "USD per query",
            "points": [
                {"lambda": p.lam, "cost": p.cost, "quality": p.quality, "share": p.share}
                for p in self.points
            ],
            "singles": [{"model": m, "cost": c, "quality": q} for m, c, q in self.singles],
            "calibrated": self.calibrated,
        }


def estimate_map(artifact: Artifact, snapshot: Snapshot) -> EstimateMap:
    """The cluster x model map of the snapshot's enabled models (cached per snapshot)."""
    router = artifact.router
    if not isinstance(router, ClusterProfileRouter):
        raise ViewUnavailableError(
            f"router {artifact.router_name!r} has no clusters: its estimates are not per cluster"
        )
    pool = snapshot.pool
    if not len(pool):
        raise ViewUnavailableError("the pool has no enabled model")
    clusters = snapshot.derived.get(
        ("overview", "clusters"), lambda: _cluster_summaries(artifact, router), cells=1
    )
    if pool.evidence is None:  # the snapshot counts it for every cluster router
        raise ViewUnavailableError("the pool keeps no evidence counts")
    return EstimateMap(
        models=pool.names,
        clusters=clusters,
        error=pool.features.T,
        evidence=pool.evidence.T,
        std=None if pool.feature_std is None else pool.feature_std.T,
    )


def _cluster_summaries(
    artifact: Artifact, router: ClusterProfileRouter
) -> tuple[ClusterSummary, ...]:
    prompts = artifact.representative_prompts
    # Few-shot prompts of a task share their examples: what tells them apart comes after.
    shared = _shared_prefix_by_task(prompts)
    X = np.asarray(router.X_val_, dtype=float)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    similarity = (X / np.where(norms > 0, norms, 1.0)) @ router.centroids_.T
    summaries = []
    for k in range(router.n_clusters_):
        members = np.flatnonzero(router.val_clusters_ == k)
        nearest = members[np.argsort(-similarity[members, k], kind="stable")[:TYPICAL_PROMPTS]]
        tasks = [prompts[i].task for i in members]
        main_task = max(set(tasks), key=lambda t: (tasks.count(t), t)) if tasks else "-"
        summaries.append(
            ClusterSummary(
                cluster=k,
                n_prompts=len(members),
                main_task=main_task,
                typical_prompts=tuple(
                    _shortened(
                        _after_prefix(prompts[i].text, shared.get(prompts[i].task, 0)),
                        TYPICAL_PROMPT_CHARS,
                    )
                    for i in nearest
                ),
            )
        )
    return tuple(summaries)


def pool_tradeoff(artifact: Artifact, snapshot: Snapshot) -> PoolTradeoff:
    """The servable pool's deferral curve on the representative prompts (cached per snapshot)."""
    if not len(snapshot.pool):
        raise ViewUnavailableError("the pool has no enabled model")
    return snapshot.derived.get(
        ("overview", "tradeoff"),
        lambda: _compute_tradeoff(artifact, snapshot),
        cells=len(artifact.prompt_ids) * len(snapshot.pool),
    )


def _compute_tradeoff(artifact: Artifact, snapshot: Snapshot) -> PoolTradeoff:
    over, errors, folds = calibration_errors(artifact, snapshot.pool)
    path = lambda_path(errors, over.costs, over.scores)
    n, m = errors.shape
    # The curve is the upper envelope: a point no cheaper point beats. A cost target solved on
    # these same errors (``POST /admin/recalibrate``) lands on exactly the point of that cost.
    order = np.argsort(path.costs, kind="stable")
    kept, best = [], -np.inf
    for j in order.tolist():
        if path.qualities[j] > best + 1e-12:
            kept.append(j)
            best = float(path.qualities[j])
    if len(kept) > MAX_TRADEOFF_POINTS:
        picks = np.unique(np.linspace(0, len(kept) - 1, MAX_TRADEOFF_POINTS).round().astype(int))
        kept = [kept[i] for i in picks.tolist()]
    points = []
    for j in kept:
        counts = np.bincount(path.path.choices(j), minlength=m) / n
        points.append(
            TradeoffPoint(
                lam=float(path.lambdas[j]),
                cost=float(path.costs[j]),
                quality=float(path.qualities[j]),
                share={name: float(counts[i]) for i, name in enumerate(over.names) if counts[i]},
            )
        )
    qualities = filled_quality(over.scores, errors).mean(axis=0)
    singles = tuple(
        (name, float(over.costs[i]), float(qualities[i])) for i, name in enumerate(over.names)
    )
    policy = snapshot.policy
    calibrated = None
    if policy is not None:
        calibrated = {
            "lambda": policy.lam,
            "cost": policy.expected_cost,
            "quality": policy.expected_quality,
            "target": policy.target.describe(),
        }
    basis = f"{folds}-fold cross-fitted estimates" if folds else "in-sample estimates"
    which = "servable models" if snapshot.pool.servable else "enabled models"
    return PoolTradeoff(
        models=over.names,
        n_prompts=n,
        basis=f"{basis} on the {n} representative prompts, over the {m} {which}",
        points=tuple(points),
        singles=singles,
        calibrated=calibrated,
    )


#: A prefix shared by a task's prompts is cut from the ones shown only when this long.
MIN_SHARED_PREFIX_CHARS = 80


def _shared_prefix_by_task(prompts: Sequence[RepresentativePrompt]) -> dict[str, int]:
    """Per task with two or more prompts: the length of the prefix all of them share, cut back
    to a line or word boundary (only when at least ``MIN_SHARED_PREFIX_CHARS`` long)."""
    by_task: dict[str, list[str]] = {}
    for prompt in prompts:
        by_task.setdefault(prompt.task, []).append(prompt.text)
    shared = {}
    for task, texts in by_task.items():
        if len(texts) < 2:
            continue
        prefix = os.path.commonprefix(texts)
        cut = max(prefix.rfind("\n"), prefix.rfind(" ")) + 1
        if cut >= MIN_SHARED_PREFIX_CHARS:
            shared[task] = cut
    return shared


def _after_prefix(text: str, cut: int) -> str:
    return "… " + text[cut:] if cut and text[cut:].strip() else text


def _rounded(values: np.ndarray) -> list[list[float]]:
    return np.round(np.asarray(values, dtype=float), 6).tolist()


def _shortened(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
