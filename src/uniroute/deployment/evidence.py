"""What backs a model's estimates: evidence per cluster and per task, and warnings when thin.

A model is estimated from its scores on the representative prompts. Where it has none (a task
its endpoint could not be graded on, prompts it failed to answer), its error is predicted from
the clusters where it has scores, with a wider interval; these helpers say so in numbers, for
``uniroute models show``, onboarding and the admin API.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

from uniroute.artifact import PROMPTS_FILE, Artifact
from uniroute.routers.uniroute_kmeans import ClusterProfileRouter

#: A task with scores on fewer than this share of its representative prompts is thinly covered.
THIN_SHARE = 0.5
#: ... or on fewer than this many prompts.
THIN_COUNT = 10


@dataclass(frozen=True)
class ClusterEvidence:
    """One cluster: the model's estimate there and the representative prompts behind it."""

    cluster: int
    estimated_error: float
    std: float | None
    n_scored: int
    n_prompts: int
    main_task: str

    def to_dict(self) -> dict[str, object]:
        """JSON-serialisable form."""
        return asdict(self)


def scores_vector(artifact: Artifact, scores: Mapping[str, float]) -> np.ndarray:
    """A model's scores aligned to the artifact's representative prompts (NaN = none)."""
    return np.array([scores.get(pid, math.nan) for pid in artifact.prompt_ids], dtype=float)


def cluster_evidence(artifact: Artifact, scores: Mapping[str, float]) -> list[ClusterEvidence]:
    """Per cluster of the artifact's router: estimate, std, evidence (empty for other routers)."""
    router = artifact.router
    if not isinstance(router, ClusterProfileRouter):
        return []
    values = scores_vector(artifact, scores)
    if not np.isfinite(values).any():
        return []
    features = router.model_features(values)
    counts, std = router.model_evidence(values)
    tasks = [p.task for p in artifact.representative_prompts]
    rows = []
    for k in range(router.n_clusters_):
        members = np.flatnonzero(router.val_clusters_ == k)
        main = Counter(tasks[i] for i in members).most_common(1)
        rows.append(
            ClusterEvidence(
                cluster=k,
                estimated_error=float(features[k]),
                std=None if std is None else float(std[k]),
                n_scored=int(counts[k]),
                n_prompts=len(members),
                main_task=main[0][0] if main else "-",
            )
        )
    return rows


def task_warnings(artifact: Artifact, scores: Mapping[str, float]) -> list[str]:
    """One line per task whose scores are missing or thin, naming what to do about it."""
    total: Counter[str] = Counter()
    scored: Counter[str] = Counter()
    for prompt in artifact.representative_prompts:
        total[prompt.task] += 1
        value = scores.get(prompt.prompt_id)
        if value is not None and math.isfinite(value):
            scored[prompt.task] += 1
    warnings = []
    for task in sorted(total):
        n, have = total[task], scored[task]
        if have == 0:
            warnings.append(
                f"no evidence on task {task!r} ({n} representative prompts): the model's error "
                "there is predicted from its other tasks, with a wide interval; send scores for "
                f"those prompts (`uniroute models add ... --scores FILE --replace`; their ids "
                f"and texts are the {task!r} lines of {artifact.path / PROMPTS_FILE}) or make the "
                "task gradeable (for code, unit tests: docs/ONBOARDING.md) and onboard again"
            )
        elif have < THIN_COUNT or have < THIN_SHARE * n:
            warnings.append(
                f"thin evidence on task {task!r}: scores on {have} of {n} representative "
                "prompts; its estimates there lean on the other tasks (see `uniroute models "
                "show`); send the missing scores to sharpen them"
            )
    return warnings
