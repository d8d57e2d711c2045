"""Behaviour every estimator shares: the registry, routing the two-group problem, persistence, and
routing over any pool of models without refitting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uniroute._io import save_arrays
from uniroute.errors import RouterError, StateError
from uniroute.pool import Pool
from uniroute.routers import (
    ESTIMATORS,
    RouterEstimator,
    UniRouteKMeans,
    load_estimator,
    make_estimator,
)
from uniroute.routers.base import ROUTER_SCHEMA_VERSION, read_estimator_manifest

ALL_ROUTERS = [
    "uniroute-kmeans",
    "uniroute-learned",
    "knn",
    "zero",
    "mlp",
    "oracle",
    "random",
    "uniroute-verify",
]
PROMPT_AWARE = ["uniroute-kmeans", "uniroute-learned", "knn", "mlp", "uniroute-verify"]


def fitted(name, two_groups, fast_params):
    return make_estimator(name, **fast_params[name]).fit(*two_groups.fit_args())


def estimates(estimator: RouterEstimator, pool: Pool, split) -> np.ndarray:
    if estimator.clairvoyant:
        return estimator.oracle_error(split.S[:, : len(pool)])
    return estimator.predict_error(split.X, pool)


def with_c(two_groups, estimator: RouterEstimator, cost_a: float = 1.0) -> Pool:
    """A, B and C, where C scores like B on the representative prompts and costs 0.1."""
    return estimator.make_pool(
        ["A", "B", "C"],
        np.column_stack([two_groups.val.S, two_groups.val.S[:, 1]]),
        np.array([cost_a, 1.0, 0.1]),
    )


def test_registry_holds_exactly_the_documented_names():
    assert sorted(ESTIMATORS) == sorted(ALL_ROUTERS)
    for name, estimator_class in ESTIMATORS.items():
        assert estimator_class.name == name
        assert issubclass(estimator_class, RouterEstimator)


def test_make_estimator_passes_params_and_rejects_unknown_names_and_params():
    estimator = make_estimator("knn", n_neighbors=7)
    assert estimator.get_params()["n_neighbors"] == 7
    with pytest.raises(RouterError, match="valid names: .*uniroute-kmeans.*knn"):
        make_estimator("kmeans")
    with pytest.raises(RouterError, match="no parameter.*'k'.*n_neighbors"):
        make_estimator("knn", k=3)


@pytest.mark.parametrize("name", PROMPT_AWARE)
def test_prompt_aware_routers_send_each_group_to_its_expert(name, two_groups, fast_params):
    estimator = fitted(name, two_groups, fast_params)
    chosen = estimator.route(two_groups.test.X, two_groups.pool(estimator), lam=0.0)
    assert (chosen == two_groups.test.group).all()  # pool index 0 = A (group 0), 1 = B (group 1)


def test_oracle_routes_by_the_true_scores(two_groups, fast_params):
    estimator = fitted("oracle", two_groups, fast_params)
    errors = estimator.oracle_error(two_groups.test.S)
    assert (errors.argmin(axis=1) == two_groups.test.group).all()


@pytest.mark.parametrize("name", ALL_ROUTERS)
def test_save_load_round_trip_reproduces_state_psi_and_estimates_exactly(
    name, two_groups, fast_params, tmp_path
):
    estimator = fitted(name, two_groups, fast_params)
    estimator.save(tmp_path / "router")
    loaded = load_estimator(tmp_path / "router")

    assert type(loaded) is type(estimator)
    assert loaded.get_params() == json.loads(json.dumps(estimator.get_params()))
    np.testing.assert_array_equal(loaded.X_val_, estimator.X_val_)
    state = estimator._state_arrays()
    assert set(loaded._state_arrays()) == set(state)
    for key, value in loaded._state_arrays().items():
        np.testing.assert_array_equal(value, state[key], err_msg=key)
    # The loaded estimator describes models exactly as the original does ...
    pool = with_c(two_groups, estimator, cost_a=0.25)
    loaded_pool = with_c(two_groups, loaded, cost_a=0.25)
    np.testing.assert_array_equal(loaded_pool.features, pool.features)
    np.testing.assert_array_equal(loaded_pool.costs, pool.costs)
    # ... and predicts exactly the same over a pool the original described.
    np.testing.assert_array_equal(
        estimates(loaded, pool, two_groups.test), estimates(estimator, pool, two_groups.test)
    )


def test_saved_manifest_holds_no_pool(two_groups, fast_params, tmp_path):
    fitted("uniroute-kmeans", two_groups, fast_params).save(tmp_path / "r")
    manifest = read_estimator_manifest(tmp_path / "r")
    assert manifest["schema_version"] == ROUTER_SCHEMA_VERSION == 2
    assert "pool_names" not in manifest
    assert not any(key.startswith("pool_") for key in manifest["arrays"])


@pytest.mark.parametrize("name", ["uniroute-kmeans", "knn", "mlp"])
def test_a_version_1_directory_loads_and_its_stored_pool_is_ignored(
    name, two_groups, fast_params, tmp_path
):
    estimator = fitted(name, two_groups, fast_params)
    directory = tmp_path / "v1"
    estimator.save(directory)
    # Rewrite it as version 1 wrote it: the training pool beside the prompt-side state.
    pool = two_groups.pool(estimator)
    legacy = save_arrays(
        directory / "arrays",
        {"pool_costs": pool.costs, "pool_val_scores": pool.scores, "pool_features": pool.features},
    )
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["schema_version"] = 1
    manifest["pool_names"] = list(pool.names)
    manifest["arrays"].update({k: {**v, "file": f"arrays/{v['file']}"} for k, v in legacy.items()})
    (directory / "manifest.json").write_text(json.dumps(manifest))

    loaded = load_estimator(directory)
    assert not any(attribute.startswith("pool") for attribute in vars(loaded))
    np.testing.assert_array_equal(
        loaded.predict_error(two_groups.test.X, pool),
        estimator.predict_error(two_groups.test.X, pool),
    )


@pytest.mark.parametrize("name", PROMPT_AWARE)
def test_a_pool_with_one_more_model_changes_routing_without_refitting(
    name, two_groups, fast_params
):
    estimator = fitted(name, two_groups, fast_params)
    prompt_state = {k: v.copy() for k, v in estimator._state_arrays().items()}
    X_val = estimator.X_val_.copy()
    pool = two_groups.pool(estimator)
    errors_before = estimator.predict_error(two_groups.test.X, pool)
    group = two_groups.test.group

    # C is as good as B on the representative prompts (right on group 1 only) but 10x cheaper.
    bigger = with_c(two_groups, estimator)
    chosen = estimator.route(two_groups.test.X, bigger, lam=0.05)
    assert (chosen[group == 1] == bigger.index("C")).all()
    assert (chosen[group == 0] == bigger.index("A")).all()
    for key, value in estimator._state_arrays().items():
        np.testing.assert_array_equal(value, prompt_state[key], err_msg=key)
    np.testing.assert_array_equal(estimator.X_val_, X_val)
    np.testing.assert_array_equal(bigger.features[:2], pool.features)

    # The pool without C routes exactly as before C was described.
    np.testing.assert_array_equal(estimator.predict_error(two_groups.test.X, pool), errors_before)
    assert (estimator.route(two_groups.test.X, pool, lam=0.05) == group).all()
    np.testing.assert_array_equal(
        estimator.predict_error(two_groups.test.X, bigger.select(["A", "B"])), errors_before
    )


@pytest.mark.parametrize("name", ["uniroute-kmeans", "uniroute-learned", "knn", "zero", "mlp"])
def test_a_pool_of_unseen_models_replaces_the_training_models(name, two_groups, fast_params):
    estimator = fitted(name, two_groups, fast_params)
    # Unseen models: U1 is right on group 1, U0 on group 0; U1 first so pool order differs.
    pool = estimator.make_pool(["U1", "U0"], two_groups.val.S[:, [1, 0]], np.array([1.0, 1.0]))
    errors = estimator.predict_error(two_groups.test.X, pool)
    assert errors.shape == (len(two_groups.test.X), 2)
    if name != "zero":
        assert (estimator.route(two_groups.test.X, pool) == 1 - two_groups.test.group).all()


@pytest.mark.parametrize("name", ["uniroute-kmeans", "knn", "zero", "mlp", "random"])
def test_predicting_checks_fitting_pool_and_dimensions(name, two_groups, fast_params):
    estimator = make_estimator(name, **fast_params[name])
    n_val = len(two_groups.val.X)
    with pytest.raises(RouterError, match="not fitted"):
        estimator.predict_error(two_groups.test.X, Pool.empty(n_val))
    with pytest.raises(RouterError, match="not fitted"):
        estimator.make_pool(["A"], two_groups.val.S[:, :1], np.ones(1))
    estimator.fit(*two_groups.fit_args())
    pool = two_groups.pool(estimator)
    with pytest.raises(RouterError, match="dim"):
        estimator.predict_error(two_groups.test.X[:, :3], pool)
    with pytest.raises(RouterError, match="pool is empty"):
        estimator.predict_error(two_groups.test.X, Pool.empty(n_val))
    other = Pool(pool.names, pool.costs, pool.scores[:-1], pool.features)
    with pytest.raises(RouterError, match="representative prompts"):
        estimator.predict_error(two_groups.test.X, other)


def test_describing_a_model_checks_its_scores(two_groups, fast_params):
    estimator = fitted("uniroute-kmeans", two_groups, fast_params)
    S = two_groups.val.S
    with pytest.raises(RouterError, match="model 'A': 39 validation scores"):
        estimator.model_features(S[:-1, 0], name="A")
    with pytest.raises(RouterError, match=r"model 'B': validation scores must lie in \[0, 1\]"):
        estimator.make_pool(["A", "B"], np.column_stack([S[:, 0], S[:, 1] + 1]), np.ones(2))
    with pytest.raises(RouterError, match="model 'B': no validation score at all"):
        estimator.make_pool(
            ["A", "B"], np.column_stack([S[:, 0], np.full(len(S), np.nan)]), np.ones(2)
        )
    with pytest.raises(RouterError, match="duplicate model names"):
        estimator.make_pool(["A", "A"], S, np.ones(2))
    with pytest.raises(RouterError, match="model 'B': cost must be a finite number >= 0"):
        estimator.make_pool(["A", "B"], S, np.array([1.0, -1.0]))


def test_loading_as_the_wrong_estimator_class_is_refused(two_groups, fast_params, tmp_path):
    fitted("uniroute-learned", two_groups, fast_params).save(tmp_path / "learned")
    manifest = read_estimator_manifest(tmp_path / "learned")
    with pytest.raises(StateError, match="not a UniRouteKMeans"):
        UniRouteKMeans.from_saved(tmp_path / "learned", manifest)


def test_an_unknown_estimator_name_is_a_state_error(two_groups, fast_params, tmp_path):
    fitted("zero", two_groups, fast_params).save(tmp_path / "r")
    path = tmp_path / "r" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["router"] = "kmeans"
    path.write_text(json.dumps(manifest))
    with pytest.raises(StateError, match="unknown router 'kmeans'"):
        load_estimator(tmp_path / "r")


def test_a_tampered_state_array_is_detected(two_groups, fast_params, tmp_path):
    fitted("uniroute-kmeans", two_groups, fast_params).save(tmp_path / "r")
    centroids = tmp_path / "r" / "arrays" / "centroids.npy"
    np.save(centroids, np.load(centroids) + 1.0)
    with pytest.raises(StateError, match="checksum"):
        load_estimator(tmp_path / "r")


@pytest.mark.parametrize("name", ["uniroute-kmeans", "uniroute-learned", "knn", "zero", "mlp"])
def test_a_pool_from_stored_psi_matches_one_described_here(name, two_groups, fast_params):
    estimator = fitted(name, two_groups, fast_params)
    described = with_c(two_groups, estimator)
    # Psi of each model alone is its row of the pool.
    for j in range(len(described)):
        np.testing.assert_array_equal(
            estimator.model_features(described.scores[:, j]), described.features[j]
        )
    # A pool given the stored Psi rows (as a registry holds them) routes identically.
    stored = estimator.make_pool(
        described.names, described.scores, described.costs, features=described.features
    )
    np.testing.assert_array_equal(
        estimator.predict_error(two_groups.test.X, stored),
        estimator.predict_error(two_groups.test.X, described),
    )
