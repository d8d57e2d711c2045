"""KNNRouter: neighbour averages with missing scores, Psi, and the choice of k."""

from __future__ import annotations

import numpy as np
import pytest

from uniroute.errors import RouterError
from uniroute.routers import KNNRouter, load_estimator
from uniroute.routers.knn import nearest_neighbors


def on_circle(degrees):
    radians = np.deg2rad(np.asarray(degrees, dtype=float))
    return np.column_stack([np.cos(radians), np.sin(radians)])


X_VAL = on_circle([0, 10, 20, 90, 100]) * np.array([[1], [2], [3], [1], [5]])  # norms differ
S_VAL = 1.0 - np.array(
    [
        [1.0, np.nan],
        [np.nan, np.nan],
        [0.0, 1.0],
        [0.0, 0.0],
        [1.0, 0.0],
    ]
)  # errors per prompt for models "p" and "q"


def fitted(**params):
    router = KNNRouter(**params)
    return router.fit(on_circle([45, 50]), np.ones((2, 2)), X_VAL, S_VAL, [1.0, 2.0])


def pool_of(router):
    return router.make_pool(["p", "q"], S_VAL, [1.0, 2.0])


def test_neighbours_are_found_by_cosine_similarity():
    neighbors = nearest_neighbors(on_circle([5, 95]), on_circle([0, 10, 20, 90, 100]), 2)
    assert [sorted(row) for row in neighbors.tolist()] == [[0, 1], [3, 4]]


def test_estimates_average_observed_neighbours_and_fall_back_to_the_mean():
    router = fitted(n_neighbors=2)
    errors = router.predict_error(on_circle([5, 15, 95]) * 7.0, pool_of(router))
    # 5 deg -> prompts 0 and 10 deg: p has errors 1 and missing -> 1; q has neither -> its
    #   overall mean error (1 + 0 + 0) / 3.
    # 15 deg -> 10 and 20 deg: p: missing, 0 -> 0; q: missing, 1 -> 1.
    # 95 deg -> 90 and 100 deg: p: 0, 1 -> 0.5; q: 0, 0 -> 0.
    np.testing.assert_allclose(errors, [[1.0, 1 / 3], [0.0, 1.0], [0.5, 0.0]])


def test_psi_is_the_error_vector_with_missing_entries_filled_by_the_mean():
    features = pool_of(fitted(n_neighbors=2)).features
    np.testing.assert_allclose(features[0], [1.0, 0.5, 0.0, 0.0, 1.0])
    np.testing.assert_allclose(features[1], [1 / 3, 1 / 3, 1.0, 0.0, 0.0])


def test_auto_k_drops_values_above_the_describing_half_and_records_scores():
    router = fitted(n_neighbors_grid=(1, 2, 50))
    assert set(router.selection_scores_) == {1, 2}
    assert router.n_neighbors_ in (1, 2)
    assert router.selection_scores_[router.n_neighbors_] == max(router.selection_scores_.values())


def test_auto_k_on_the_two_group_problem_records_every_candidate(two_groups):
    router = KNNRouter(n_neighbors_grid=(3, 5, 10, 21)).fit(*two_groups.fit_args())
    assert set(router.selection_scores_) == {3, 5, 10}  # 21 > 40 / 2 validation prompts
    assert router.n_neighbors_ in (3, 5, 10)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"n_neighbors": 6}, "exceeds the 5 validation prompts"),
        ({"n_neighbors_grid": (3, 4)}, "every k in n_neighbors_grid"),
        ({"n_neighbors": 0}, "n_neighbors must be"),
    ],
)
def test_bad_parameters_are_reported_at_fit(params, message):
    with pytest.raises(RouterError, match=message):
        fitted(**params)


def test_chosen_k_survives_save_and_load(tmp_path):
    router = fitted(n_neighbors_grid=(1, 2))
    router.save(tmp_path / "knn")
    loaded = load_estimator(tmp_path / "knn")
    assert isinstance(loaded, KNNRouter)
    assert loaded.n_neighbors_ == router.n_neighbors_
    assert loaded.selection_scores_ == router.selection_scores_
