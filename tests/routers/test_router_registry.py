"""The ROUTERS registry imports a router's module only when its class is looked up."""

from __future__ import annotations

import subprocess
import sys

import pytest

import uniroute.routers
from uniroute.routers import ROUTERS, RouterError, make_router
from uniroute.routers.knn import KNNRouter
from uniroute.routers.uniroute_learned import UniRouteLearnedMap


def _run(code: str) -> None:
    """Run Python code in a fresh interpreter, where no router module is imported yet."""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_the_interface_and_the_evaluation_code_import_no_router_module():
    _run(
        "import sys\n"
        "import uniroute.evaluation.deferral\n"
        "from uniroute.routers import ROUTERS, BaseRouter, RouterError, route_argmin\n"
        "assert 'knn' in ROUTERS and 'kmeans' not in ROUTERS and len(ROUTERS) == 7\n"
        "assert list(ROUTERS)[:2] == ['uniroute-kmeans', 'uniroute-learned']\n"
        "prefixes = ('sklearn', 'uniroute.routers.')\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(prefixes))\n"
        "assert loaded == ['uniroute.routers.base'], loaded\n"
    )


def test_looking_up_one_router_imports_only_its_own_module():
    _run(
        "import sys\n"
        "from uniroute.routers import ROUTERS\n"
        "assert ROUTERS['zero'].__name__ == 'ZeroRouter'\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('uniroute.routers.'))\n"
        "assert loaded == ['uniroute.routers.base', 'uniroute.routers.zero'], loaded\n"
    )


def test_lookups_give_the_classes_of_the_router_modules():
    assert ROUTERS["knn"] is KNNRouter
    assert ROUTERS.get("uniroute-learned") is UniRouteLearnedMap
    assert ROUTERS.get("kmeans") is None
    with pytest.raises(KeyError):
        ROUTERS["kmeans"]
    assert uniroute.routers.KNNRouter is KNNRouter
    assert isinstance(make_router("knn"), KNNRouter)
    assert {"KNNRouter", "UniRouteLearnedMap", "make_router"} <= set(dir(uniroute.routers))


def test_unknown_names_are_clear_errors():
    with pytest.raises(AttributeError, match="module 'uniroute.routers' has no attribute 'KNN'"):
        _ = uniroute.routers.KNN
    with pytest.raises(RouterError, match="unknown router 'kmeans'; valid names: uniroute-kmeans"):
        make_router("kmeans")
