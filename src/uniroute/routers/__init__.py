"""Router estimators by name: UniRoute (K-means, learned cluster maps, verify plans) and the
baselines.

Every estimator class is imported here. Their fitting dependencies (scikit-learn, SciPy) are
imported only inside the code that fits, so loading a saved estimator to route needs numpy only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from uniroute.errors import RouterError, StateError
from uniroute.routers.base import RouterEstimator, read_estimator_manifest
from uniroute.routers.knn import KNNRouter
from uniroute.routers.mlp import RetrainedMLP
from uniroute.routers.oracle import OracleRouter
from uniroute.routers.random import RandomRouter
from uniroute.routers.uniroute_kmeans import ClusterProfileRouter, UniRouteKMeans
from uniroute.routers.uniroute_learned import UniRouteLearnedMap
from uniroute.routers.verify import UniRouteVerify
from uniroute.routers.zero import ZeroRouter

#: Every estimator class by its ``name``: UniRoute first, the verify-plan router last.
ESTIMATORS: dict[str, type[RouterEstimator]] = {
    cls.name: cls
    for cls in (
        UniRouteKMeans,
        UniRouteLearnedMap,
        KNNRouter,
        ZeroRouter,
        RetrainedMLP,
        OracleRouter,
        RandomRouter,
        UniRouteVerify,
    )
}


def make_estimator(name: str, **params: Any) -> RouterEstimator:
    """A new, unfitted estimator of the given name built with ``params``."""
    estimator_class = ESTIMATORS.get(name)
    if estimator_class is None:
        raise RouterError(f"unknown router {name!r}; valid names: {', '.join(ESTIMATORS)}")
    unknown = sorted(set(params) - set(estimator_class._param_names()))
    if unknown:
        valid = ", ".join(estimator_class._param_names()) or "none"
        raise RouterError(f"router {name!r} has no parameter(s) {unknown}; valid: {valid}")
    return estimator_class(**params)


def load_estimator(directory: Path | str) -> RouterEstimator:
    """Read an estimator written by ``RouterEstimator.save``, checking version and checksums."""
    manifest = read_estimator_manifest(directory)
    name = manifest.get("router")
    estimator_class = ESTIMATORS.get(name) if isinstance(name, str) else None
    if estimator_class is None:
        raise StateError(f"{directory}: unknown router {name!r}")
    return estimator_class.from_saved(directory, manifest)


__all__ = [
    "ESTIMATORS",
    "ClusterProfileRouter",
    "KNNRouter",
    "OracleRouter",
    "RandomRouter",
    "RetrainedMLP",
    "RouterEstimator",
    "UniRouteKMeans",
    "UniRouteLearnedMap",
    "UniRouteVerify",
    "ZeroRouter",
    "load_estimator",
    "make_estimator",
    "read_estimator_manifest",
]
