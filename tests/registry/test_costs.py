"""Model prices and their conversion to an expected per-query cost."""

from __future__ import annotations

import pytest

from uniroute.errors import DataError, UsageError
from uniroute.registry.costs import (
    DEFAULT_OUTPUT_TOKENS,
    ModelCost,
    estimate_tokens,
    mean_input_tokens,
)


def test_per_query_cost_is_used_as_is() -> None:
    cost = ModelCost(per_query=0.003)
    assert not cost.is_per_token
    assert cost.per_query_cost(mean_input_tokens=1234.0) == 0.003
    assert cost.describe() == "0.003/query"


def test_token_prices_become_an_expected_per_query_cost() -> None:
    # Prompts of 400 and 200 characters: 100 and 50 tokens at 4 characters per token, mean 75.
    tokens = mean_input_tokens(["abcd" * 100, "ab" * 100])
    assert tokens == 75.0
    cost = ModelCost(per_1k_input=2.0, per_1k_output=4.0)
    assert cost.is_per_token
    assert cost.expected_output_tokens == DEFAULT_OUTPUT_TOKENS == 256
    # 75 / 1000 * 2.0 + 256 / 1000 * 4.0 = 0.15 + 1.024
    assert cost.per_query_cost(tokens) == pytest.approx(1.174)
    short_answers = ModelCost(per_1k_input=2.0, per_1k_output=4.0, expected_output_tokens=10)
    # 0.15 + 10 / 1000 * 4.0 = 0.19
    assert short_answers.per_query_cost(tokens) == pytest.approx(0.19)


def test_token_estimate_and_empty_prompt_sets() -> None:
    assert estimate_tokens("x" * 10) == 2.5
    assert mean_input_tokens([]) == 0.0


@pytest.mark.parametrize(
    "fields, message",
    [
        ({}, "no cost given"),
        ({"per_query": 1.0, "per_1k_input": 1.0, "per_1k_output": 1.0}, "not both"),
        ({"per_1k_input": 1.0}, "needs both the input and the output price"),
        ({"per_query": -1.0}, "finite number >= 0"),
        ({"per_query": float("inf")}, "finite number >= 0"),
        ({"per_query": "cheap"}, "cost per_query must be a finite number >= 0, got 'cheap'"),
        ({"per_1k_input": None, "per_1k_output": float("nan")}, "cost per_1k_output must be"),
        ({"per_1k_input": 1.0, "per_1k_output": 1.0, "expected_output_tokens": -5}, ">= 0"),
    ],
)
def test_invalid_prices_are_rejected(fields: dict, message: str) -> None:
    # A DataError, which is still a ValueError for callers that catch that.
    with pytest.raises(DataError, match=message):
        ModelCost(**fields)


@pytest.mark.parametrize("tokens", [-1.0, float("nan"), float("inf"), "many"])
def test_a_bad_mean_input_token_count_is_a_usage_error(tokens: object) -> None:
    cost = ModelCost(per_1k_input=1.0, per_1k_output=1.0)
    with pytest.raises(UsageError, match="mean_input_tokens must be a finite number >= 0"):
        cost.per_query_cost(tokens)


def test_prices_per_1m_tokens_are_stored_per_1k_and_shown_both_ways() -> None:
    from uniroute.registry.costs import per_1k_price

    cost = ModelCost(
        per_1k_input=per_1k_price(None, 2.5, "input"),
        per_1k_output=per_1k_price(None, 10.0, "output"),
        expected_output_tokens=200,
    )
    assert (cost.per_1k_input, cost.per_1k_output) == (0.0025, 0.01)
    assert "2.5/1M in + 10/1M out" in cost.describe()
    # 1,000 input tokens and 200 output tokens: 0.0025 + 0.002.
    assert cost.per_query_cost(1000) == pytest.approx(0.0045)
    assert per_1k_price(0.5, None, "input") == 0.5 and per_1k_price(None, None, "input") is None
    with pytest.raises(ValueError, match="per 1k tokens or per 1M tokens, not both"):
        per_1k_price(0.5, 500, "output")


def test_a_price_far_from_the_pool_is_flagged_and_a_free_model_never() -> None:
    from uniroute.registry.costs import price_warning

    pool = {"a": 0.001, "b": 0.002, "c": 0.004, "local": 0.0}
    assert price_warning("new", 0.003, pool) is None
    high = price_warning("new", 2.0, pool)  # a per-1M price given per 1k
    assert high and "1,000x above the median of the other 3 paid models (0.002)" in high
    low = price_warning("new", 0.00001, pool)
    assert low and "200x below" in low
    assert price_warning("new", 0.0, pool) is None  # a self-hosted model at $0
    assert price_warning("a", 0.001, {"a": 0.001}) is None  # nothing to compare with
