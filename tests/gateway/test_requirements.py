"""What a request needs of the model that answers it (``gateway.openai.requirements``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from uniroute.deployment import Snapshot
from uniroute.gateway.errors import ApiError
from uniroute.gateway.openai.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    RouteRequest,
)
from uniroute.gateway.openai.requirements import Requirements
from uniroute.pool import Capabilities, Endpoint, Pool

WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


def _chat(**fields: Any) -> Requirements:
    body = {"model": "uniroute", "messages": [{"role": "user", "content": "hi"}], **fields}
    return Requirements.of(ChatCompletionRequest.model_validate(body))


def _snapshot(capabilities: dict[str, Capabilities], servable: set[str] | None = None) -> Snapshot:
    names = tuple(capabilities)
    servable = set(names) if servable is None else servable
    pool = Pool(
        names=names,
        costs=np.arange(1, len(names) + 1, dtype=float),
        scores=np.full((2, len(names)), 0.5),
        features=np.zeros((len(names), 1)),
        endpoints=tuple(
            Endpoint("http://127.0.0.1:1/v1") if n in servable else None for n in names
        ),
        capabilities=tuple(capabilities.values()),
    )
    return Snapshot(pool, (), "fingerprint", None, None)


# ---------------------------------------------------------------------------- detection
def test_a_plain_request_needs_nothing_but_its_context() -> None:
    needs = _chat()
    assert needs.capabilities == frozenset()
    assert needs.prompt_tokens == 1 and needs.max_output_tokens is None
    assert needs.context_tokens == 1


@pytest.mark.parametrize(
    "fields",
    [
        {"tools": [WEATHER]},
        {"functions": [WEATHER["function"]]},
        {"tools": [WEATHER], "tool_choice": "none"},
    ],
)
def test_tool_definitions_need_tools(fields: dict[str, Any]) -> None:
    needs = _chat(**fields)
    assert needs.capabilities == {"tools"}
    # The definitions are sent with the prompt: they count towards the context.
    assert needs.prompt_tokens > _chat().prompt_tokens


def test_an_empty_tool_list_asks_for_nothing() -> None:
    assert _chat(tools=[]).capabilities == frozenset()


def test_a_conversation_that_already_used_tools_needs_tools() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "user", "content": "thanks, and tomorrow?"},
    ]
    body = {"model": "uniroute", "messages": messages}
    assert Requirements.of(ChatCompletionRequest.model_validate(body)).capabilities == {"tools"}


@pytest.mark.parametrize("part_type", ["image_url", "input_image"])
def test_an_image_part_needs_vision(part_type: str) -> None:
    part = {**IMAGE, "type": part_type}
    messages = [{"role": "user", "content": [{"type": "text", "text": "what is it?"}, part]}]
    body = {"model": "uniroute", "messages": messages}
    assert Requirements.of(ChatCompletionRequest.model_validate(body)).capabilities == {"vision"}


@pytest.mark.parametrize(
    "response_format, needed",
    [
        ({"type": "json_object"}, {"json"}),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}, {"json"}),
        ({"type": "text"}, set()),
        ("json_object", set()),  # not an object: left to the upstream to refuse
    ],
)
def test_json_mode_is_asked_by_response_format(response_format: Any, needed: set[str]) -> None:
    assert _chat(response_format=response_format).capabilities == needed


def test_everything_at_once() -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "see"}, IMAGE]}]
    needs = Requirements.of(
        ChatCompletionRequest.model_validate(
            {
                "model": "uniroute",
                "messages": messages,
                "tools": [WEATHER],
                "response_format": {"type": "json_object"},
            }
        )
    )
    assert needs.capabilities == {"tools", "vision", "json"}


def test_the_context_counts_every_message_and_the_answer_asked_for() -> None:
    messages = [
        {"role": "system", "content": "s" * 400},
        {"role": "user", "content": "u" * 800},
        {"role": "assistant", "content": "a" * 400},
        {"role": "user", "content": "q" * 4},
    ]
    body = {"model": "uniroute", "messages": messages, "max_tokens": 500}
    needs = Requirements.of(ChatCompletionRequest.model_validate(body))
    assert needs.prompt_tokens == 401  # 1604 characters at four a token
    assert needs.max_output_tokens == 500 and needs.context_tokens == 901
    newer = Requirements.of(
        ChatCompletionRequest.model_validate({**body, "max_completion_tokens": 700})
    )
    assert newer.max_output_tokens == 700


@pytest.mark.parametrize("value", [True, "500", 0, -3, 2.5, None])
def test_a_max_tokens_that_is_not_a_whole_number_is_not_counted(value: Any) -> None:
    assert _chat(max_tokens=value).max_output_tokens is None


def test_completions_and_route_requests_have_requirements_too() -> None:
    completion = CompletionRequest.model_validate(
        {"model": "uniroute", "prompt": "p" * 40, "max_tokens": 10}
    )
    assert Requirements.of(completion).context_tokens == 20
    route = RouteRequest.model_validate(
        {"prompt": "hi", "response_format": {"type": "json_object"}}
    )
    assert Requirements.of(route).capabilities == {"json"}


# ---------------------------------------------------------------------------- who can
def test_unable_names_each_missing_capability_and_limit() -> None:
    needs = Requirements(frozenset({"tools", "json"}), prompt_tokens=900, max_output_tokens=200)
    assert needs.unable(Capabilities(frozenset({"tools", "json"}))) is None
    reason = needs.unable(Capabilities(frozenset({"json"}), context_window=1000))
    assert reason == "no tools; context window 1,000 tokens < ~1,100 needed"
    assert needs.unable(Capabilities(frozenset({"tools", "json"}), 1100, 200)) is None
    assert "answers at most 100 tokens" in needs.unable(
        Capabilities(frozenset({"tools", "json"}), None, 100)
    )


def test_capable_is_none_when_every_model_can() -> None:
    snapshot = _snapshot({"a": Capabilities(), "b": Capabilities(context_window=10_000)})
    assert Requirements(prompt_tokens=500).capable(snapshot) is None


def test_capable_names_the_models_that_can() -> None:
    snapshot = _snapshot(
        {
            "small": Capabilities(context_window=1000),
            "tools": Capabilities(frozenset({"tools"})),
            "both": Capabilities(frozenset({"tools", "vision"}), context_window=100_000),
        }
    )
    assert Requirements(frozenset({"tools"})).capable(snapshot) == {"tools", "both"}
    assert Requirements(prompt_tokens=5000).capable(snapshot) == {"tools", "both"}
    assert Requirements(frozenset({"vision"}), 5000).capable(snapshot) == {"both"}


def test_none_capable_is_a_400_naming_the_need_and_every_model_considered() -> None:
    snapshot = _snapshot(
        {
            "a": Capabilities(context_window=1000),
            "b": Capabilities(frozenset({"vision"})),
            "c": Capabilities(frozenset({"tools"})),  # no endpoint: not considered
        },
        servable={"a", "b"},
    )
    with pytest.raises(ApiError) as caught:
        Requirements(frozenset({"tools"}), prompt_tokens=2000).capable(snapshot)
    error = caught.value
    assert error.http_status == 400 and error.code == "no_capable_model" and error.param == "tools"
    message = str(error.message)
    assert "tools (tools)" in message and "~2,000 tokens" in message
    assert "a (no tools; context window 1,000 tokens < ~2,000 needed)" in message
    assert "b (no tools)" in message and "c (" not in message


def test_a_model_can_do_only_what_it_declares() -> None:
    # A pool where no model declares tools refuses a tool request, saying how to declare one,
    # rather than send the tools to a model that would ignore them.
    snapshot = _snapshot({"a": Capabilities(), "b": Capabilities(context_window=1000)})
    needs = Requirements(frozenset({"tools", "json"}), prompt_tokens=10)
    with pytest.raises(ApiError) as caught:
        needs.capable(snapshot)
    assert caught.value.code == "no_capable_model"
    assert "uniroute models update NAME --capabilities" in caught.value.message
    with pytest.raises(ApiError, match="no tools"):
        needs.check_model("a", snapshot)
    # Once one model declares both, the request goes to it alone.
    declared = _snapshot({"a": Capabilities(), "b": Capabilities(frozenset({"tools", "json"}))})
    assert needs.capable(declared) == {"b"}
    # A plain request is not restricted at all.
    assert Requirements(frozenset(), prompt_tokens=10).capable(snapshot) is None


def test_models_without_an_endpoint_are_not_considered() -> None:
    snapshot = _snapshot(
        {"served": Capabilities(), "unserved": Capabilities(frozenset({"tools"}))},
        servable={"served"},
    )
    with pytest.raises(ApiError) as caught:
        Requirements(frozenset({"tools"})).capable(snapshot)
    assert "served (no tools)" in caught.value.message
    assert "unserved" not in caught.value.message


def test_a_named_model_that_cannot_take_the_request_is_refused() -> None:
    snapshot = _snapshot(
        {"plain": Capabilities(), "tools": Capabilities(frozenset({"tools"}))},
    )
    needs = Requirements(frozenset({"tools"}))
    needs.check_model("tools", snapshot)
    with pytest.raises(ApiError) as caught:
        needs.check_model("plain", snapshot)
    error = caught.value
    assert error.http_status == 400 and error.code == "model_not_capable" and error.param == "model"
    assert "'plain' cannot take this request (no tools)" in error.message
    assert "['tools']" in error.message
    Requirements().check_model("plain", snapshot)


def test_describe_is_what_route_reports() -> None:
    needs = Requirements(frozenset({"vision", "json"}), prompt_tokens=12, max_output_tokens=8)
    assert needs.describe() == {
        "capabilities": ["json", "vision"],
        "estimated_prompt_tokens": 12,
        "max_output_tokens": 8,
        "context_tokens": 20,
    }
