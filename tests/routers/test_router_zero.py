"""ZeroRouter: one estimate per model, the lower convex hull under the lambda sweep."""

from __future__ import annotations

import numpy as np

from uniroute.routers import ZeroRouter


def test_estimate_is_the_mean_validation_error_for_every_prompt(two_groups):
    router = ZeroRouter().fit(*two_groups.fit_args())
    router.add_model("C", np.array([1.0, np.nan, 0.0, 0.5] + [np.nan] * 36), 0.5)
    errors = router.predict_error(two_groups.test.X)
    np.testing.assert_allclose(errors, np.tile([0.5, 0.5, 0.5], (len(errors), 1)))
    router.add_model("D", np.r_[np.ones(30), np.zeros(10)], 0.5)
    assert router.predict_error(two_groups.test.X[:1])[0, 3] == 0.25


def test_lambda_sweep_visits_only_vertices_of_the_lower_convex_hull(two_groups):
    router = ZeroRouter().fit(*two_groups.fit_args())
    router.clear_pool()
    n_val = len(two_groups.val.X)
    # (cost, error): (1, 0.5), (2, 0.45), (3, 0.1). The middle point lies above the segment
    # joining the others (0.3 at cost 2), so no lambda ever picks it; every point is a vertex
    # once it is removed from the pool.
    for name, cost, error in (("cheap", 1.0, 0.5), ("middle", 2.0, 0.45), ("dear", 3.0, 0.1)):
        scores = np.zeros(n_val)
        scores[: int(round((1 - error) * n_val))] = 1.0
        router.add_model(name, scores, cost)
    lambdas = np.linspace(0.0, 1.0, 401)
    chosen = {int(router.route(two_groups.test.X[:1], lam)[0]) for lam in lambdas}
    assert chosen == {0, 2}
    # The switch from dear to cheap happens at the hull slope (0.5 - 0.1) / (3 - 1) = 0.2.
    assert router.route(two_groups.test.X[:1], 0.199)[0] == 2
    assert router.route(two_groups.test.X[:1], 0.201)[0] == 0
