"""Parsing of OpenAI-style requests: policies in the model field, request models, JSON bodies."""

from __future__ import annotations

import pytest

from uniroute.gateway.body import parse_json_object, validate
from uniroute.gateway.errors import ApiError
from uniroute.gateway.openai.policy import RoutingPolicy, parse_model_choice
from uniroute.gateway.openai.protocol import ChatCompletionRequest, CompletionRequest, RouteRequest


def test_model_field_policies() -> None:
    assert parse_model_choice("uniroute", {}).policy == RoutingPolicy()
    assert parse_model_choice("uniroute:lambda=0.3", {}).policy == RoutingPolicy(lam=0.3)
    assert parse_model_choice("uniroute:max-cost=0.001", {}).policy == RoutingPolicy(max_cost=0.001)
    direct = parse_model_choice("gpt-4-1106-preview", {})
    assert not direct.routed and direct.direct_model == "gpt-4-1106-preview"
    # A pool model whose name merely starts with the alias is still a direct model.
    assert parse_model_choice("uniroute-internal", {}).direct_model == "uniroute-internal"


def test_risk_averse_policies() -> None:
    assert parse_model_choice("uniroute:risk=1.64", {}).policy == RoutingPolicy(risk=1.64)
    both = parse_model_choice("uniroute:lambda=2,risk=1", {}).policy
    assert both == RoutingPolicy(lam=2.0, risk=1.0) and both.describe() == "lambda=2,risk=1"
    header = parse_model_choice("uniroute", {"x-uniroute-risk": "2"}).policy
    assert header == RoutingPolicy(risk=2.0)


def test_latency_weighted_policies() -> None:
    latency = parse_model_choice("uniroute:latency=0.05", {}).policy
    assert (
        latency == RoutingPolicy(latency_weight=0.05)
        and latency.describe() == "default,latency=0.05"
    )
    both = parse_model_choice("uniroute:lambda=2,latency=0.1", {}).policy
    assert both == RoutingPolicy(lam=2.0, latency_weight=0.1)
    header = parse_model_choice("uniroute", {"x-uniroute-latency": "0.2"}).policy
    assert header == RoutingPolicy(latency_weight=0.2)
    assert parse_model_choice("uniroute", {}).policy.latency_weight is None  # the default's
    for bad, headers in (
        ("uniroute:latency=-1", {}),
        ("uniroute:latency=1", {"x-uniroute-latency": "2"}),
    ):
        with pytest.raises(ApiError) as info:
            parse_model_choice(bad, headers)
        assert info.value.http_status == 400


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
        ("uniroute:temperature=1", {}, "unknown routing option"),
        ("uniroute:lambda", {}, "unknown routing option"),
        ("uniroute:", {}, "unknown routing option"),
        ("uniroute:lambda=abc", {}, "lambda must be a number"),
        ("uniroute:lambda=-1", {}, ">= 0"),
        ("uniroute:lambda=nan", {}, ">= 0"),
        ("uniroute:lambda=1,lambda=2", {}, "given twice"),
        ("uniroute:lambda=1,max-cost=2", {}, "not both"),
        ("uniroute", {"x-uniroute-lambda": "1", "x-uniroute-max-cost": "1"}, "not both"),
        ("uniroute:lambda=1", {"x-uniroute-lambda": "2"}, "contradicts"),
    ],
)
def test_bad_routing_policies(model, headers, message) -> None:
    with pytest.raises(ApiError, match=message) as info:
        parse_model_choice(model, headers)
    assert info.value.http_status == 400 and info.value.code == "invalid_routing_policy"
    assert set(info.value.body()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("model", "message", "code"),
    [
        (None, "missing required field 'model'", "missing_field"),
        (3, "non-empty string", "invalid_type"),
        ("  ", "non-empty string", "invalid_type"),
    ],
)
def test_bad_model_fields(model, message, code) -> None:
    messages = [{"role": "user", "content": "hi"}]
    chat = {"messages": messages} if model is None else {"model": model, "messages": messages}
    # /v1/route defaults a missing model to "uniroute", but an explicit null is refused too.
    for kind, body in ((ChatCompletionRequest, chat), (RouteRequest, {**chat, "model": model})):
        with pytest.raises(ApiError, match=message) as info:
            validate(kind, body)
        assert info.value.http_status == 400
        assert (info.value.code, info.value.param) == (code, "model")


def _chat(**body) -> ChatCompletionRequest:
    return validate(ChatCompletionRequest, {"model": "uniroute", **body})


def test_last_user_message_is_routed() -> None:
    messages = [
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
    assert _chat(messages=messages).routing_text() == "second\nquestion"


@pytest.mark.parametrize(
    ("body", "message", "code", "param"),
    [
        ({}, "missing required field 'messages'", "missing_field", "messages"),
        ({"messages": "hi"}, "must be a list", "invalid_type", "messages"),
        ({"messages": []}, "is empty", "empty_messages", "messages"),
        ({"messages": ["hi"]}, r"messages\[0\] must be an object", "invalid_type", "messages[0]"),
        ({"messages": [{"content": "hi"}]}, "has no 'role'", "missing_field", "messages[0].role"),
        ({"messages": [{"role": "system", "content": "x"}]}, "no message with role 'user'",
         "no_user_message", "messages"),
        ({"messages": [{"role": "user", "content": "  "}]}, "last user message is empty",
         "empty_messages", "messages"),
        ({"messages": [{"role": "user", "content": 5}]}, "string or a list", "invalid_type",
         "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "string 'text'",
         "invalid_type", "messages[0].content"),
    ],
)  # fmt: skip
def test_bad_chat_bodies(body, message, code, param) -> None:
    with pytest.raises(ApiError, match=message) as info:
        _chat(**body)
    assert (info.value.code, info.value.param) == (code, param)


def test_completion_prompts() -> None:
    def prompt(value):
        return validate(CompletionRequest, {"model": "uniroute", "prompt": value}).routing_text()

    assert prompt("say hi") == "say hi"
    assert prompt(["say hi"]) == "say hi"
    with pytest.raises(ApiError, match="missing required field 'prompt'"):
        validate(CompletionRequest, {"model": "uniroute"})
    for value, message in [
        (None, "missing"),
        (["a", "b"], "exactly one string"),
        ([1, 2], "exactly one string"),
        ("", "empty"),
        (7, "must be a string"),
    ]:
        with pytest.raises(ApiError, match=message) as info:
            prompt(value)
        assert info.value.param == "prompt"


def test_route_request_accepts_prompt_or_messages() -> None:
    assert validate(RouteRequest, {"prompt": "p"}).routing_text() == "p"
    chat = validate(RouteRequest, {"messages": [{"role": "user", "content": "q"}], "prompt": "p"})
    assert chat.routing_text() == "q"
    assert validate(RouteRequest, {"prompt": "p"}).model == "uniroute"
    with pytest.raises(ApiError, match="send 'prompt'") as info:
        validate(RouteRequest, {"text": "p"})
    assert info.value.code == "missing_field"


def test_unknown_fields_are_kept_for_the_upstream() -> None:
    body = {
        "model": "uniroute",
        "messages": [{"role": "user", "content": "q"}],
        "temperature": 0.2,
        "tools": [{"type": "function"}],
        "x-vendor": {"a": [1, None]},
    }
    parsed = _chat(**{k: v for k, v in body.items() if k != "model"})
    assert parsed.model_extra == {k: body[k] for k in ("temperature", "tools", "x-vendor")}


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
    with pytest.raises(ApiError, match=message) as info:
        parse_json_object(raw)
    assert info.value.code == "invalid_json"


def test_stream_flag() -> None:
    assert _chat(messages=[{"role": "user", "content": "q"}]).stream is False
    assert _chat(messages=[{"role": "user", "content": "q"}], stream=True).stream is True
    assert _chat(messages=[{"role": "user", "content": "q"}], stream=None).stream is False
    for bad in ("yes", 1):
        with pytest.raises(ApiError, match="true or false") as info:
            _chat(messages=[{"role": "user", "content": "q"}], stream=bad)
        assert (info.value.code, info.value.param) == ("invalid_type", "stream")
