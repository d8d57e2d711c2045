"""OracleRouter: reads true scores, refuses to predict from prompts."""

from __future__ import annotations

import numpy as np
import pytest

from uniroute.errors import RouterError
from uniroute.routers import OracleRouter


def test_oracle_error_is_one_minus_the_true_score_with_missing_as_wrong(two_groups):
    # The model count comes from the true scores: any number of columns, no pool needed.
    router = OracleRouter().fit(*two_groups.fit_args())
    assert router.clairvoyant
    errors = router.oracle_error(np.array([[1.0, 0.25], [np.nan, 0.0]]))
    np.testing.assert_array_equal(errors, [[0.0, 0.75], [1.0, 1.0]])
    np.testing.assert_array_equal(router.oracle_error(np.array([[0.5, 1.0, 0.0]])), [[0.5, 0, 1]])


def test_oracle_refuses_prompt_based_prediction_and_bad_scores(two_groups):
    router = OracleRouter().fit(*two_groups.fit_args())
    with pytest.raises(RouterError, match="needs the true scores"):
        router.route(two_groups.test.X, two_groups.pool(router))
    with pytest.raises(RouterError, match="one column per pool model"):
        router.oracle_error(np.ones(3))
    with pytest.raises(RouterError, match="one column per pool model"):
        router.oracle_error(np.ones((3, 0)))
    with pytest.raises(RouterError, match=r"\[0, 1\]"):
        router.oracle_error(np.array([[1.5, 0.0]]))
