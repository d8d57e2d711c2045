"""Routers: UniRoute (K-means and learned cluster maps) and the baselines, by name."""

from __future__ import annotations

from typing import Any

from uniroute.routers.base import BaseRouter, RouterError, route_argmin
from uniroute.routers.knn import KNNRouter
from uniroute.routers.mlp import RetrainedMLP
from uniroute.routers.oracle import OracleRouter
from uniroute.routers.random import RandomRouter
from uniroute.routers.uniroute_kmeans import UniRouteKMeans
from uniroute.routers.uniroute_learned import UniRouteLearnedMap
from uniroute.routers.zero import ZeroRouter

ROUTERS: dict[str, type[BaseRouter]] = {
    cls.name: cls
    for cls in (
        UniRouteKMeans,
        UniRouteLearnedMap,
        KNNRouter,
        ZeroRouter,
        RetrainedMLP,
        OracleRouter,
        RandomRouter,
    )
}


def make_router(name: str, **params: Any) -> BaseRouter:
    """A new, unfitted router of the given name built with ``params``."""
    router_class = ROUTERS.get(name)
    if router_class is None:
        raise RouterError(f"unknown router {name!r}; valid names: {', '.join(ROUTERS)}")
    unknown = sorted(set(params) - set(router_class._param_names()))
    if unknown:
        valid = ", ".join(router_class._param_names()) or "none"
        raise RouterError(f"router {name!r} has no parameter(s) {unknown}; valid: {valid}")
    return router_class(**params)


__all__ = [
    "ROUTERS",
    "BaseRouter",
    "KNNRouter",
    "OracleRouter",
    "RandomRouter",
    "RetrainedMLP",
    "RouterError",
    "UniRouteKMeans",
    "UniRouteLearnedMap",
    "ZeroRouter",
    "make_router",
    "route_argmin",
]
