"""ESTIMATORS by name, and what importing them costs: routing from a saved estimator needs numpy
only; scikit-learn and SciPy are imported when an estimator fits."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import uniroute.routers
from uniroute.errors import RouterError
from uniroute.routers import ESTIMATORS, load_estimator, make_estimator
from uniroute.routers.knn import KNNRouter
from uniroute.routers.uniroute_learned import UniRouteLearnedMap

HEAVY = "('sklearn', 'scipy')"


def _run(code: str) -> None:
    """Run Python code in a fresh interpreter, where nothing of uniroute is imported yet."""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_importing_every_estimator_and_the_evaluation_curve_imports_no_fitting_library():
    _run(
        "import sys\n"
        "import uniroute.tradeoff\n"
        "from uniroute.routers import ESTIMATORS, RouterEstimator, load_estimator\n"
        "assert 'knn' in ESTIMATORS and 'kmeans' not in ESTIMATORS and len(ESTIMATORS) == 8\n"
        "assert list(ESTIMATORS)[:2] == ['uniroute-kmeans', 'uniroute-learned']\n"
        f"loaded = sorted(m for m in sys.modules if m.startswith({HEAVY}))\n"
        "assert loaded == [], loaded\n"
    )


@pytest.mark.parametrize("name", ["uniroute-kmeans", "uniroute-learned", "knn", "zero"])
def test_a_saved_estimator_routes_with_numpy_only(name, two_groups, fast_params, tmp_path: Path):
    estimator = make_estimator(name, **fast_params[name]).fit(*two_groups.fit_args())
    estimator.save(tmp_path / "router")
    expected = estimator.route(two_groups.test.X, two_groups.pool(estimator), 0.0).tolist()
    _run(
        "import sys\n"
        "import numpy as np\n"
        "from uniroute.routers import load_estimator\n"
        f"estimator = load_estimator({str(tmp_path / 'router')!r})\n"
        f"S = np.array({two_groups.val.S.tolist()!r})\n"
        "pool = estimator.make_pool(['A', 'B'], S, np.ones(2))\n"
        f"X = np.array({two_groups.test.X.tolist()!r})\n"
        f"assert estimator.route(X, pool, 0.0).tolist() == {expected!r}\n"
        f"loaded = sorted(m for m in sys.modules if m.startswith({HEAVY}))\n"
        "assert loaded == [], loaded\n"
    )


def test_lookups_give_the_classes_of_the_estimator_modules():
    assert ESTIMATORS["knn"] is KNNRouter
    assert ESTIMATORS.get("uniroute-learned") is UniRouteLearnedMap
    assert ESTIMATORS.get("kmeans") is None
    with pytest.raises(KeyError):
        ESTIMATORS["kmeans"]
    assert uniroute.routers.KNNRouter is KNNRouter
    assert isinstance(make_estimator("knn"), KNNRouter)
    assert {"KNNRouter", "UniRouteLearnedMap", "make_estimator", "load_estimator"} <= set(
        dir(uniroute.routers)
    )
    assert callable(load_estimator)


def test_unknown_names_are_clear_errors():
    with pytest.raises(AttributeError, match="module 'uniroute.routers' has no attribute 'KNN'"):
        _ = uniroute.routers.KNN
    with pytest.raises(RouterError, match="unknown router 'kmeans'; valid names: uniroute-kmeans"):
        make_estimator("kmeans")
