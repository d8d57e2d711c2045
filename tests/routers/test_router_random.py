"""RandomRouter: uniform draws that depend only on the seed and the prompt."""

from __future__ import annotations

import numpy as np
import pytest

from uniroute.errors import RouterError
from uniroute.routers import RandomRouter


def test_draws_are_uniform_per_prompt_and_model_and_repeat_for_the_same_prompt(two_groups):
    router = RandomRouter(random_state=3).fit(*two_groups.fit_args())
    X = two_groups.test.X
    pool = two_groups.pool(router)
    errors = router.predict_error(X, pool)
    assert errors.shape == (len(X), 2)
    assert ((errors >= 0) & (errors < 1)).all()
    assert len(np.unique(errors)) == errors.size
    # The same prompt gets the same draws in any batch, alone or reordered.
    np.testing.assert_array_equal(router.predict_error(X[[4]], pool), errors[[4]])
    np.testing.assert_array_equal(router.predict_error(X[::-1], pool), errors[::-1])
    # A pool with one more model at the end keeps the earlier models' draws.
    bigger = router.make_pool(
        ["A", "B", "C"], np.column_stack([two_groups.val.S, two_groups.val.S[:, 0]]), [1, 1, 0.5]
    )
    np.testing.assert_array_equal(router.predict_error(X, bigger)[:, :2], errors)


def test_other_seed_gives_other_draws(two_groups):
    a = RandomRouter(random_state=0).fit(*two_groups.fit_args())
    b = RandomRouter(random_state=1).fit(*two_groups.fit_args())
    X = two_groups.test.X
    pool = two_groups.pool(a)
    assert not np.array_equal(a.predict_error(X, pool), b.predict_error(X, pool))


def test_draws_look_uniform(two_groups):
    router = RandomRouter().fit(*two_groups.fit_args())
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, two_groups.test.X.shape[1]))
    errors = router.predict_error(X, two_groups.pool(router))
    assert errors.mean() == pytest.approx(0.5, abs=0.02)
    assert (errors < 0.25).mean() == pytest.approx(0.25, abs=0.02)


def test_seed_must_be_a_non_negative_integer(two_groups):
    with pytest.raises(RouterError, match="random_state"):
        RandomRouter(random_state=None).fit(*two_groups.fit_args())
