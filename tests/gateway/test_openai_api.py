"""Parsing of OpenAI-style requests: policies in the model field, routing text, errors."""

from __future__ import annotations

import pytest

from uniroute.gateway.openai_api import (
    ApiError,
    RoutingPolicy,
    chat_routing_text,
    check_stream_flag,
    completion_routing_text,
    parse_json_object,
    parse_model_choice,
    route_request_text,
)


def test_model_field_policies() -> None:
    assert parse_model_choice("uniroute", {}).policy == RoutingPolicy()
    assert parse_model_choice("uniroute:lambda=0.3", {}).policy == RoutingPolicy(lam=0.3)
    assert parse_model_choice("uniroute:max-cost=0.001", {}).policy == RoutingPolicy(max_cost=0.001)
    direct = parse_model_choice("gpt-4-1106-preview", {})
    assert not direct.routed and direct.direct_model == "gpt-4-1106-preview"
    # A pool model whose name merely starts with the alias is still a direct model.
    assert parse_model_choice("uniroute-internal", {}).direct_model == "uniroute-internal"


def test_policy_headers() -> None:
    assert parse_model_choice("uniroute", {"x-uniroute-lambda": "2"}).policy == RoutingPolicy(lam=2)
    assert parse_model_choice("uniroute", {"x-uniroute-max-cost": "0.5"}).policy == RoutingPolicy(
        max_cost=0.5
    )
    # Same value in both places is fine; headers are ignored for a directly named model.
    assert parse_model_choice("uniroute:lambda=2", {"x-uniroute-lambda": "2.0"}).policy.lam == 2
    assert parse_model_choice("m", {"x-uniroute-lambda": "oops"}).direct_model == "m"


@pytest.mark.parametrize(
    ("model", "headers", "message"),
    [
        (None, {}, "missing required field 'model'"),
        (3, {}, "non-empty string"),
        ("uniroute:temperature=1", {}, "unknown routing option"),
        ("uniroute:lambda", {}, "unknown routing option"),
        ("uniroute:lambda=abc", {}, "lambda must be a number"),
        ("uniroute:lambda=-1", {}, ">= 0"),
        ("uniroute:lambda=nan", {}, ">= 0"),
        ("uniroute:lambda=1,lambda=2", {}, "given twice"),
        ("uniroute:lambda=1,max-cost=2", {}, "not both"),
        ("uniroute", {"x-uniroute-lambda": "1", "x-uniroute-max-cost": "1"}, "not both"),
        ("uniroute:lambda=1", {"x-uniroute-lambda": "2"}, "contradicts"),
    ],
)
def test_bad_model_fields(model, headers, message) -> None:
    with pytest.raises(ApiError, match=message) as info:
        parse_model_choice(model, headers)
    assert info.value.status == 400
    assert set(info.value.body()["error"]) == {"message", "type", "param", "code"}


def test_last_user_message_is_routed() -> None:
    body = {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "second"},
                    {"type": "image_url", "image_url": {"url": "x"}},
                    {"type": "text", "text": "question"},
                ],
            },
        ]
    }
    assert chat_routing_text(body) == "second\nquestion"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "missing required field 'messages'"),
        ({"messages": "hi"}, "must be a list"),
        ({"messages": []}, "is empty"),
        ({"messages": ["hi"]}, r"messages\[0\] must be an object"),
        ({"messages": [{"content": "hi"}]}, "has no 'role'"),
        ({"messages": [{"role": "system", "content": "x"}]}, "no message with role 'user'"),
        ({"messages": [{"role": "user", "content": "  "}]}, "last user message is empty"),
        ({"messages": [{"role": "user", "content": 5}]}, "string or a list"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "string 'text'"),
    ],
)
def test_bad_chat_bodies(body, message) -> None:
    with pytest.raises(ApiError, match=message):
        chat_routing_text(body)


def test_completion_prompts() -> None:
    assert completion_routing_text({"prompt": "say hi"}) == "say hi"
    assert completion_routing_text({"prompt": ["say hi"]}) == "say hi"
    for body, message in [
        ({}, "missing"),
        ({"prompt": ["a", "b"]}, "exactly one string"),
        ({"prompt": [1, 2]}, "exactly one string"),
        ({"prompt": ""}, "empty"),
        ({"prompt": 7}, "must be a string"),
    ]:
        with pytest.raises(ApiError, match=message):
            completion_routing_text(body)


def test_route_request_accepts_prompt_or_messages() -> None:
    assert route_request_text({"prompt": "p"}) == "p"
    assert route_request_text({"messages": [{"role": "user", "content": "q"}]}) == "q"
    with pytest.raises(ApiError, match="send 'prompt'"):
        route_request_text({"text": "p"})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "empty"),
        (b"{", "not valid JSON"),
        (b"[1]", "must be a JSON object"),
        (b"\xff\xfe", "not UTF-8|not valid JSON"),
    ],
)
def test_bad_json(raw, message) -> None:
    with pytest.raises(ApiError, match=message):
        parse_json_object(raw)


def test_stream_flag() -> None:
    assert check_stream_flag({}) is False and check_stream_flag({"stream": True}) is True
    with pytest.raises(ApiError, match="true or false"):
        check_stream_flag({"stream": "yes"})
