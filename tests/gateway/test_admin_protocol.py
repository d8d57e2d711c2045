"""Admin request bodies: refused with a 400 naming the field, or turned into registry values."""

from __future__ import annotations

import pytest

from uniroute.gateway.admin.protocol import AddModelRequest, PriceRequest, RecalibrateRequest
from uniroute.gateway.body import validate
from uniroute.gateway.errors import ApiError
from uniroute.registry import ModelCost
from uniroute.registry.calibration import Target

BASE = {"name": "acme/m", "cost": 0.002, "scores": {"p1": 1, "p2": 0.5, "p3": None}}


def _refusal(kind, body) -> ApiError:
    with pytest.raises(ApiError) as info:
        validate(kind, body)
    assert info.value.http_status == 400
    return info.value


def test_a_valid_body_gives_the_record_price_and_scores() -> None:
    body = validate(AddModelRequest, {**BASE, "endpoint": "http://h:1/v1", "tags": ["a"]})
    assert body.record.name == "acme/m" and body.record.endpoint == "http://h:1/v1"
    assert body.record.cost == ModelCost(per_query=0.002) and body.record.tags == ("a",)
    assert body.scores == {"p1": 1.0, "p2": 0.5}  # a null score is missing, never 0
    assert (body.onboard, body.replace, body.onboarding.settings()) == (False, False, {})
    tokens = validate(PriceRequest, {"cost_per_1k_input": 1, "cost_per_1k_output": 2}).price
    assert tokens == ModelCost(per_1k_input=1.0, per_1k_output=2.0)
    # Prices per 1M tokens, as providers list them, are stored per 1k; one side may use each.
    per_1m = {"cost_per_1m_input": 2.5, "cost_per_1k_output": 0.01}
    price = validate(PriceRequest, per_1m).price
    assert price == ModelCost(per_1k_input=0.0025, per_1k_output=0.01)


def test_a_token_price_given_both_per_1k_and_per_1m_is_refused() -> None:
    both = {"cost_per_1k_input": 1, "cost_per_1m_input": 1000, "cost_per_1m_output": 3}
    refusal = _refusal(PriceRequest, both)
    assert refusal.param == "cost" and "per 1k tokens or per 1M tokens, not both" in str(refusal)


def test_answers_come_in_the_score_rows_or_as_an_object() -> None:
    rows = [
        {"prompt_id": "p1", "score": 1, "answer": "The answer is B."},
        {"prompt_id": "p2", "score": None, "answer": "C"},
        {"prompt_id": "p3", "score": 0},
        {"prompt_id": "p4", "score": 0, "answer": None},
    ]
    body = validate(AddModelRequest, {**BASE, "scores": rows})
    assert body.scores == {"p1": 1.0, "p3": 0.0, "p4": 0.0}
    assert body.answers == {"p1": "The answer is B.", "p2": "C"}
    body = validate(AddModelRequest, {**BASE, "answers": {"p1": "A", "p2": None}})
    assert body.answers == {"p1": "A"} and body.scores == {"p1": 1.0, "p2": 0.5}
    assert validate(AddModelRequest, BASE).answers is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"scores": [{"prompt_id": "p1", "score": 1, "answer": 7}]},
         "answer to prompt 'p1' must be text without NUL, got int"),
        ({"answers": {"p1": "A\x00"}}, "answer to prompt 'p1' must be text without NUL"),
        ({"answers": {"p1": "x" * 100_001}}, "is 100001 characters, over 100000"),
        ({"answers": ["A"]}, "'answers' must be an object"),
        ({"scores": [{"prompt_id": "p1", "score": 1, "answer": "A"}], "answers": {"p1": "A"}},
         "either in the score rows or as 'answers'"),
        ({"scores": None, "onboard": True, "endpoint": "http://h:1/v1", "answers": {"p1": "A"}},
         "onboarding records the endpoint's own answers"),
    ],
)  # fmt: skip
def test_bad_answers_are_a_400_naming_the_field(change, message) -> None:
    body = {**BASE, **change}
    error = _refusal(AddModelRequest, {k: v for k, v in body.items() if v is not None})
    assert (error.code, error.param) == ("invalid_answers", "answers")
    assert message in error.message


@pytest.mark.parametrize(
    ("kind", "body", "param"),
    [
        (AddModelRequest, {**BASE, "colour": "red"}, "colour"),
        (PriceRequest, {"cost": 1, "currency": "EUR"}, "currency"),
        (RecalibrateRequest, {"target_cost": 1, "target_costs": 1}, "target_costs"),
    ],
)
def test_an_unknown_field_is_a_400_naming_it(kind, body, param) -> None:
    error = _refusal(kind, body)
    assert (error.code, error.param) == ("unknown_field", param)
    assert f"unknown field(s) ['{param}']" in error.message
    # The message lists what is accepted.
    assert all(field in error.message for field in kind.model_fields)


def test_unknown_onboarding_options_are_refused() -> None:
    body = {**BASE, "endpoint": "http://h:1/v1", "onboard": True, "onboarding": {"colour": 1}}
    del body["scores"]
    error = _refusal(AddModelRequest, body)
    assert (error.code, error.param) == ("unknown_field", "onboarding")
    assert "'onboarding' may hold only" in error.message and "concurrency" in error.message
    body["onboarding"] = {"concurrency": 0}
    error = _refusal(AddModelRequest, body)
    assert (error.code, error.param) == ("invalid_request", "onboarding.concurrency")
    body["onboarding"] = {"concurrency": "8"}  # no coercion
    assert _refusal(AddModelRequest, body).code == "invalid_type"
    body["onboarding"] = {"concurrency": 8, "api_style": "completions", "timeout": 2}
    settings = validate(AddModelRequest, body).onboarding.settings()
    assert settings == {"concurrency": 8, "api_style": "completions", "timeout": 2.0}


@pytest.mark.parametrize(
    ("change", "code", "param", "message"),
    [
        ({"name": None}, "missing_field", "name", "'name' must be a non-empty string"),
        ({"name": 5}, "missing_field", "name", "'name' must be a non-empty string"),
        ({"cost": True}, "invalid_type", "cost", "'cost' must be a finite number"),
        ({"cost": float("nan")}, "invalid_type", "cost", "'cost' must be a finite number"),
        ({"cost": None}, "invalid_cost", "cost", "no cost given"),
        ({"cost": -1}, "invalid_cost", "cost", ">= 0"),
        ({"cost_per_1k_input": 1}, "invalid_cost", "cost", "not both"),
        ({"tags": "a"}, "invalid_type", "tags", "list of strings"),
        ({"enabled": "yes"}, "invalid_type", "enabled", "true or false"),
        ({"replace": 1}, "invalid_type", "replace", "true or false"),
        ({"endpoint": ""}, "invalid_type", "endpoint", "non-empty string"),
        ({"endpoint": "ftp://h"}, "invalid_request", "endpoint", "http(s) base URL"),
        ({"upstream_model": "x"}, "invalid_request", None, "give the endpoint too"),
        ({"api_key_env": "sk-live-abcdefghijklmnopqrstuvwxyz0123"}, "invalid_request", None,
         "not the key itself"),
        ({"scores": {"p1": 2}}, "invalid_scores", "scores", "must be a number in [0, 1]"),
        ({"scores": {"p1": None}}, "invalid_scores", "scores", "every score given is missing"),
        ({"scores": [{"prompt_id": "p1", "score": 1}, {"prompt_id": "p1", "score": 0}]},
         "invalid_scores", "scores", "appears twice"),
        ({"scores": None}, "missing_field", "scores", "give either 'scores' or 'onboard'"),
        ({"onboard": True}, "missing_field", "scores", "give either 'scores' or 'onboard'"),
    ],
)  # fmt: skip
def test_bad_add_model_bodies(change, code, param, message) -> None:
    body = {**BASE, **change}
    error = _refusal(AddModelRequest, {k: v for k, v in body.items() if v is not None})
    assert (error.code, error.param) == (code, param)
    assert message in error.message


def test_onboarding_needs_an_endpoint() -> None:
    body = {"name": "m", "cost": 1, "onboard": True}
    error = _refusal(AddModelRequest, body)
    assert (error.code, error.param) == ("missing_field", "endpoint")


def test_recalibration_targets() -> None:
    assert validate(RecalibrateRequest, {}).target is None
    share = {"target_share": {"model": "m", "share": 0.3}}
    assert validate(RecalibrateRequest, share).target == Target("share", 0.3, model="m")
    assert validate(RecalibrateRequest, {"target_cost": 1}).target == Target("cost", 1.0)
    for body, code, message in [
        ({"target_quality": 2}, "invalid_request", "[0, 1]"),
        ({"target_cost": 1, "target_quality": 0.5}, "invalid_request", "exactly one"),
        ({"target_share": {"model": "m"}}, "invalid_type", "target_share"),
        ({"target_cost": "1"}, "invalid_type", "finite number"),
    ]:
        error = _refusal(RecalibrateRequest, body)
        assert error.code == code and message in error.message
