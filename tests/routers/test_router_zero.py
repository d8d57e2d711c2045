"""ZeroRouter: one estimate per model, the lower convex hull under the lambda sweep."""

from __future__ import annotations

import numpy as np

from uniroute.routers import ZeroRouter


def test_estimate_is_the_mean_validation_error_for_every_prompt(two_groups):
    router = ZeroRouter().fit(*two_groups.fit_args())
    c = np.array([1.0, np.nan, 0.0, 0.5] + [np.nan] * 36)
    d = np.r_[np.ones(30), np.zeros(10)]
    pool = router.make_pool(["A", "B", "C"], np.column_stack([two_groups.val.S, c]), [1, 1, 0.5])
    errors = router.predict_error(two_groups.test.X, pool)
    np.testing.assert_allclose(errors, np.tile([0.5, 0.5, 0.5], (len(errors), 1)))
    pool = router.make_pool(
        list("ABCD"), np.column_stack([two_groups.val.S, c, d]), [1, 1, 0.5, 0.5]
    )
    assert router.predict_error(two_groups.test.X[:1], pool)[0, 3] == 0.25


def test_lambda_sweep_visits_only_vertices_of_the_lower_convex_hull(two_groups):
    router = ZeroRouter().fit(*two_groups.fit_args())
    n_val = len(two_groups.val.X)
    # (cost, error): (1, 0.5), (2, 0.45), (3, 0.1). The middle point lies above the segment
    # joining the others (0.3 at cost 2), so no lambda ever picks it.
    columns = []
    for error in (0.5, 0.45, 0.1):
        scores = np.zeros(n_val)
        scores[: int(round((1 - error) * n_val))] = 1.0
        columns.append(scores)
    pool = router.make_pool(["cheap", "middle", "dear"], np.column_stack(columns), [1.0, 2.0, 3.0])
    X = two_groups.test.X[:1]
    lambdas = np.linspace(0.0, 1.0, 401)
    chosen = {int(router.route(X, pool, lam)[0]) for lam in lambdas}
    assert chosen == {0, 2}
    # The switch from dear to cheap happens at the hull slope (0.5 - 0.1) / (3 - 1) = 0.2.
    assert router.route(X, pool, 0.199)[0] == 2
    assert router.route(X, pool, 0.201)[0] == 0
