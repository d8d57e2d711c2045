"""Behaviour every router shares: the registry, routing the two-group problem, persistence, and
changing the pool without refitting."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uniroute.errors import StateError
from uniroute.routers import ROUTERS, BaseRouter, RouterError, make_router
from uniroute.routers.uniroute_kmeans import UniRouteKMeans

ALL_ROUTERS = ["uniroute-kmeans", "uniroute-learned", "knn", "zero", "mlp", "oracle", "random"]
PROMPT_AWARE = ["uniroute-kmeans", "uniroute-learned", "knn", "mlp"]


def fitted(name, two_groups, fast_params):
    return make_router(name, **fast_params[name]).fit(*two_groups.fit_args())


def estimates(router: BaseRouter, split) -> np.ndarray:
    if router.clairvoyant:
        return router.oracle_error(split.S[:, : len(router.pool_names_)])
    return router.predict_error(split.X)


def test_registry_holds_exactly_the_documented_names():
    assert sorted(ROUTERS) == sorted(ALL_ROUTERS)
    for name, router_class in ROUTERS.items():
        assert router_class.name == name
        assert issubclass(router_class, BaseRouter)


def test_make_router_passes_params_and_rejects_unknown_names_and_params():
    router = make_router("knn", n_neighbors=7)
    assert router.get_params()["n_neighbors"] == 7
    with pytest.raises(RouterError, match="valid names: .*uniroute-kmeans.*knn"):
        make_router("kmeans")
    with pytest.raises(RouterError, match="no parameter.*'k'.*n_neighbors"):
        make_router("knn", k=3)


@pytest.mark.parametrize("name", PROMPT_AWARE)
def test_prompt_aware_routers_send_each_group_to_its_expert(name, two_groups, fast_params):
    router = fitted(name, two_groups, fast_params)
    chosen = router.route(two_groups.test.X, lam=0.0)
    assert (chosen == two_groups.test.group).all()  # pool index 0 = A (group 0), 1 = B (group 1)


def test_oracle_routes_by_the_true_scores(two_groups, fast_params):
    router = fitted("oracle", two_groups, fast_params)
    errors = router.oracle_error(two_groups.test.S)
    assert (errors.argmin(axis=1) == two_groups.test.group).all()


@pytest.mark.parametrize("name", ALL_ROUTERS)
def test_save_load_round_trip_reproduces_pool_and_estimates_exactly(
    name, two_groups, fast_params, tmp_path
):
    router = fitted(name, two_groups, fast_params)
    router.set_cost("A", 0.25)
    router.save(tmp_path / "router")
    loaded = BaseRouter.load(tmp_path / "router")

    assert type(loaded) is type(router)
    assert loaded.get_params() == json.loads(json.dumps(router.get_params()))
    assert loaded.pool_names_ == router.pool_names_
    np.testing.assert_array_equal(loaded.pool_costs_, router.pool_costs_)
    np.testing.assert_array_equal(loaded.pool_val_scores_, router.pool_val_scores_)
    np.testing.assert_array_equal(loaded.pool_features_, router.pool_features_)
    np.testing.assert_array_equal(
        estimates(loaded, two_groups.test), estimates(router, two_groups.test)
    )
    # The loaded router onboards new models exactly as the original does.
    for r in (router, loaded):
        r.add_model("C", two_groups.val.S[:, 1], 0.1)
    np.testing.assert_array_equal(loaded.pool_features_, router.pool_features_)


@pytest.mark.parametrize("name", PROMPT_AWARE)
def test_adding_and_removing_a_model_changes_routing_without_refitting(
    name, two_groups, fast_params
):
    router = fitted(name, two_groups, fast_params)
    prompt_state = {k: v.copy() for k, v in router._state_arrays().items()}
    X_val = router.X_val_.copy()
    features_before = router.pool_features_.copy()
    errors_before = router.predict_error(two_groups.test.X)
    group = two_groups.test.group

    # C is as good as B on the representative prompts (right on group 1 only) but 10x cheaper.
    router.add_model("C", two_groups.val.S[:, 1], 0.1)
    chosen = router.route(two_groups.test.X, lam=0.05)
    assert (chosen[group == 1] == router.pool_index("C")).all()
    assert (chosen[group == 0] == router.pool_index("A")).all()
    for key, value in router._state_arrays().items():
        np.testing.assert_array_equal(value, prompt_state[key], err_msg=key)
    np.testing.assert_array_equal(router.X_val_, X_val)
    np.testing.assert_array_equal(router.pool_features_[:2], features_before)

    router.remove_model("C")
    assert router.pool_names_ == ["A", "B"]
    np.testing.assert_array_equal(router.predict_error(two_groups.test.X), errors_before)
    assert (router.route(two_groups.test.X, lam=0.05) == group).all()


@pytest.mark.parametrize("name", ["uniroute-kmeans", "uniroute-learned", "knn", "zero", "mlp"])
def test_a_new_pool_of_unseen_models_replaces_the_training_models(name, two_groups, fast_params):
    router = fitted(name, two_groups, fast_params)
    router.clear_pool()
    # Unseen models: U1 is right on group 1, U0 on group 0; U1 first so pool order differs.
    router.add_model("U1", two_groups.val.S[:, 1], 1.0)
    router.add_model("U0", two_groups.val.S[:, 0], 1.0)
    errors = router.predict_error(two_groups.test.X)
    assert errors.shape == (len(two_groups.test.X), 2)
    if name != "zero":
        assert (router.route(two_groups.test.X) == 1 - two_groups.test.group).all()


@pytest.mark.parametrize("name", ["uniroute-kmeans", "knn", "zero", "mlp", "random"])
def test_predicting_checks_fitting_pool_and_dimensions(name, two_groups, fast_params):
    router = make_router(name, **fast_params[name])
    with pytest.raises(RouterError, match="not fitted"):
        router.predict_error(two_groups.test.X)
    router.fit(*two_groups.fit_args())
    with pytest.raises(RouterError, match="dim"):
        router.predict_error(two_groups.test.X[:, :3])
    router.clear_pool()
    with pytest.raises(RouterError, match="pool is empty"):
        router.predict_error(two_groups.test.X)


def test_loading_as_the_wrong_router_class_is_refused(two_groups, fast_params, tmp_path):
    fitted("uniroute-learned", two_groups, fast_params).save(tmp_path / "learned")
    with pytest.raises(StateError, match="not a UniRouteKMeans"):
        UniRouteKMeans.load(tmp_path / "learned")


def test_a_tampered_state_array_is_detected(two_groups, fast_params, tmp_path):
    fitted("uniroute-kmeans", two_groups, fast_params).save(tmp_path / "r")
    centroids = tmp_path / "r" / "arrays" / "centroids.npy"
    np.save(centroids, np.load(centroids) + 1.0)
    with pytest.raises(StateError, match="checksum"):
        BaseRouter.load(tmp_path / "r")


@pytest.mark.parametrize("name", ["uniroute-kmeans", "uniroute-learned", "knn", "zero", "mlp"])
def test_setting_the_whole_pool_matches_adding_models_one_by_one(name, two_groups, fast_params):
    one_by_one = fitted(name, two_groups, fast_params)
    one_by_one.add_model("C", two_groups.val.S[:, 1], 0.1)
    at_once = fitted(name, two_groups, fast_params)
    at_once.set_pool(
        ["A", "B", "C"],
        np.column_stack([two_groups.val.S, two_groups.val.S[:, 1]]),
        np.array([1.0, 1.0, 0.1]),
        features=one_by_one.pool_features_,
    )
    np.testing.assert_array_equal(
        at_once.predict_error(two_groups.test.X), one_by_one.predict_error(two_groups.test.X)
    )
