"""Routers: UniRoute (K-means and learned cluster maps) and the baselines, by name.

A router's module is imported the first time its class is looked up (``ROUTERS[name]``,
``make_router(name)`` or ``from uniroute.routers import UniRouteKMeans``), so code that needs
only the shared interface in ``uniroute.routers.base`` does not pay for scikit-learn or SciPy.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from uniroute.errors import RouterError
from uniroute.routers.base import BaseRouter, route_argmin

if TYPE_CHECKING:
    from uniroute.routers.knn import KNNRouter
    from uniroute.routers.mlp import RetrainedMLP
    from uniroute.routers.oracle import OracleRouter
    from uniroute.routers.random import RandomRouter
    from uniroute.routers.uniroute_kmeans import UniRouteKMeans
    from uniroute.routers.uniroute_learned import UniRouteLearnedMap
    from uniroute.routers.zero import ZeroRouter

#: Where each router class lives, as "module:Class", by the router's ``name``.
_ROUTER_LOCATIONS = {
    "uniroute-kmeans": "uniroute.routers.uniroute_kmeans:UniRouteKMeans",
    "uniroute-learned": "uniroute.routers.uniroute_learned:UniRouteLearnedMap",
    "knn": "uniroute.routers.knn:KNNRouter",
    "zero": "uniroute.routers.zero:ZeroRouter",
    "mlp": "uniroute.routers.mlp:RetrainedMLP",
    "oracle": "uniroute.routers.oracle:OracleRouter",
    "random": "uniroute.routers.random:RandomRouter",
}


def _import_class(location: str) -> type[BaseRouter]:
    module_name, class_name = location.split(":")
    return getattr(importlib.import_module(module_name), class_name)


class _RouterRegistry(Mapping[str, type[BaseRouter]]):
    """Router classes by name; a class's module is imported when the class is first looked up.

    Membership tests, iteration and ``len`` import nothing.
    """

    def __init__(self, locations: Mapping[str, str]) -> None:
        self._locations = dict(locations)

    def __getitem__(self, name: str) -> type[BaseRouter]:
        return _import_class(self._locations[name])

    def __contains__(self, name: object) -> bool:
        return name in self._locations

    def __iter__(self) -> Iterator[str]:
        return iter(self._locations)

    def __len__(self) -> int:
        return len(self._locations)

    def __repr__(self) -> str:
        return f"_RouterRegistry({self._locations!r})"


ROUTERS: Mapping[str, type[BaseRouter]] = _RouterRegistry(_ROUTER_LOCATIONS)

#: Module of each exported router class, for ``from uniroute.routers import UniRouteKMeans``.
_CLASS_LOCATIONS = {location.split(":")[1]: location for location in _ROUTER_LOCATIONS.values()}


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


def __getattr__(name: str) -> Any:
    """Import a router class on first access (``uniroute.routers.KNNRouter``)."""
    location = _CLASS_LOCATIONS.get(name)
    if location is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return _import_class(location)


def __dir__() -> list[str]:
    """The module's names, including the router classes not imported yet."""
    return sorted(set(globals()) | set(__all__))


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
