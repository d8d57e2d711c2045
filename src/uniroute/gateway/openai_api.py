"""The OpenAI-shaped surface of the gateway: error bodies, request checks, routing policies.

The ``model`` field of a request chooses how it is answered:

* ``uniroute``: routed with the registry's calibrated default lambda;
* ``uniroute:lambda=L``: routed with trade-off ``L >= 0`` (error + L * cost per query);
* ``uniroute:max-cost=C``: routed to the most accurate model whose cost per query is <= ``C``;
* the name of a pool model: sent straight to that model (no routing, no fallback).

The headers ``x-uniroute-lambda`` and ``x-uniroute-max-cost`` set the same parameters for
clients that cannot change the model name; a header and the model string may not disagree, and
lambda and max-cost may not be combined. Both are ignored when the model is named directly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ROUTED_ALIAS = "uniroute"
LAMBDA_HEADER = "x-uniroute-lambda"
MAX_COST_HEADER = "x-uniroute-max-cost"
_PARAM_NAMES = {"lambda": "lam", "max-cost": "max_cost"}


class ApiError(Exception):
    """A request the gateway refuses; rendered as an OpenAI error body with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        """The OpenAI error object ``{"error": {message, type, param, code}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass(frozen=True)
class RoutingPolicy:
    """How a routed request trades error against cost; both None means the default lambda."""

    lam: float | None = None
    max_cost: float | None = None

    def describe(self) -> str:
        """A short label for logs: ``default``, ``lambda=0.3`` or ``max-cost=0.001``."""
        if self.lam is not None:
            return f"lambda={self.lam:g}"
        if self.max_cost is not None:
            return f"max-cost={self.max_cost:g}"
        return "default"


@dataclass(frozen=True)
class ModelChoice:
    """The parsed ``model`` field: a routing policy, or a pool model named directly."""

    policy: RoutingPolicy | None = None
    direct_model: str | None = None

    @property
    def routed(self) -> bool:
        """True when the router picks the model."""
        return self.direct_model is None


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying what is wrong with it."""
    if not raw.strip():
        raise ApiError(400, "the request body is empty; send a JSON object", code="invalid_json")
    try:
        payload = json.loads(raw)
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8 text", code="invalid_json") from None
    except json.JSONDecodeError as exc:
        raise ApiError(
            400,
            f"the request body is not valid JSON ({exc.msg} at line {exc.lineno} column "
            f"{exc.colno})",
            code="invalid_json",
        ) from None
    if not isinstance(payload, dict):
        raise ApiError(
            400,
            f"the request body must be a JSON object, got {type(payload).__name__}",
            code="invalid_json",
        )
    return payload


def _parse_number(text: str, what: str, param: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ApiError(
            400,
            f"{what} must be a number, got {text!r}",
            param=param,
            code="invalid_routing_policy",
        ) from None
    if not math.isfinite(value) or value < 0:
        raise ApiError(
            400,
            f"{what} must be a finite number >= 0, got {text!r}",
            param=param,
            code="invalid_routing_policy",
        )
    return value


def parse_model_choice(model: Any, headers: Mapping[str, str]) -> ModelChoice:
    """Read the ``model`` field and the policy headers (see the module docstring)."""
    if model is None:
        raise ApiError(
            400,
            "missing required field 'model' (use 'uniroute' to route)",
            param="model",
            code="missing_field",
        )
    if not isinstance(model, str) or not model.strip():
        raise ApiError(
            400, "'model' must be a non-empty string", param="model", code="invalid_type"
        )
    if model != ROUTED_ALIAS and not model.startswith(ROUTED_ALIAS + ":"):
        return ModelChoice(direct_model=model)
    values: dict[str, float] = {}
    spec = model[len(ROUTED_ALIAS) + 1 :]
    if model.startswith(ROUTED_ALIAS + ":"):
        for part in spec.split(","):
            key, sep, raw = part.partition("=")
            key = key.strip()
            if not sep or key not in _PARAM_NAMES:
                raise ApiError(
                    400,
                    f"unknown routing option {part!r} in model {model!r}; use "
                    "'uniroute:lambda=L' or 'uniroute:max-cost=C'",
                    param="model",
                    code="invalid_routing_policy",
                )
            if _PARAM_NAMES[key] in values:
                raise ApiError(
                    400,
                    f"{key} is given twice in model {model!r}",
                    param="model",
                    code="invalid_routing_policy",
                )
            values[_PARAM_NAMES[key]] = _parse_number(raw.strip(), key, "model")
    for header, key in ((LAMBDA_HEADER, "lam"), (MAX_COST_HEADER, "max_cost")):
        raw = headers.get(header)
        if raw is None:
            continue
        value = _parse_number(raw.strip(), f"header {header}", header)
        if key in values and values[key] != value:
            raise ApiError(
                400,
                f"header {header}: {raw} contradicts the model field {model!r}",
                param=header,
                code="invalid_routing_policy",
            )
        values[key] = value
    if len(values) > 1:
        raise ApiError(
            400,
            "give either a lambda or a max-cost, not both",
            param="model",
            code="invalid_routing_policy",
        )
    return ModelChoice(policy=RoutingPolicy(**values))


def _content_text(content: Any, index: int) -> str:
    """Text of a message's content: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or "type" not in part:
                raise ApiError(
                    400,
                    f"messages[{index}].content parts must be objects with a 'type'",
                    param=f"messages[{index}].content",
                    code="invalid_type",
                )
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    raise ApiError(
                        400,
                        f"messages[{index}].content text part needs a string 'text'",
                        param=f"messages[{index}].content",
                        code="invalid_type",
                    )
                texts.append(part["text"])
        return "\n".join(texts)
    if content is None:
        return ""
    raise ApiError(
        400,
        f"messages[{index}].content must be a string or a list of parts",
        param=f"messages[{index}].content",
        code="invalid_type",
    )


def chat_routing_text(body: dict[str, Any]) -> str:
    """Check ``messages`` and return the text the router embeds: the last user message.

    The last user message is what the answer must address; earlier turns mostly repeat context.
    An encoder with a bounded window keeps the end of that text, so a long message is judged by
    its final part (normally where the question is).
    """
    messages = body.get("messages")
    if messages is None:
        raise ApiError(
            400, "missing required field 'messages'", param="messages", code="missing_field"
        )
    if not isinstance(messages, list):
        raise ApiError(
            400,
            "'messages' must be a list of message objects",
            param="messages",
            code="invalid_type",
        )
    if not messages:
        raise ApiError(
            400,
            "'messages' is empty; send at least one user message",
            param="messages",
            code="empty_messages",
        )
    last_user: str | None = None
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ApiError(
                400,
                f"messages[{index}] must be an object with 'role' and 'content'",
                param=f"messages[{index}]",
                code="invalid_type",
            )
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise ApiError(
                400,
                f"messages[{index}] has no 'role'",
                param=f"messages[{index}].role",
                code="missing_field",
            )
        text = _content_text(message.get("content"), index)
        if role == "user":
            last_user = text
    if last_user is None:
        raise ApiError(
            400,
            "'messages' has no message with role 'user' to route on",
            param="messages",
            code="no_user_message",
        )
    if not last_user.strip():
        raise ApiError(
            400, "the last user message is empty", param="messages", code="empty_messages"
        )
    return last_user


def completion_routing_text(body: dict[str, Any]) -> str:
    """Check ``prompt`` of a legacy completion request and return it (one text prompt only)."""
    prompt = body.get("prompt")
    if prompt is None:
        raise ApiError(400, "missing required field 'prompt'", param="prompt", code="missing_field")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise ApiError(
                400,
                "'prompt' must be one string (a list is accepted only with "
                "exactly one string: each prompt is routed on its own)",
                param="prompt",
                code="invalid_type",
            )
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "'prompt' must be a string", param="prompt", code="invalid_type")
    if not prompt.strip():
        raise ApiError(400, "'prompt' is empty", param="prompt", code="empty_prompt")
    return prompt


def check_stream_flag(body: dict[str, Any]) -> bool:
    """The request's ``stream`` flag, which must be a boolean when present."""
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false", param="stream", code="invalid_type")
    return stream


def route_request_text(body: dict[str, Any]) -> str:
    """Text of a /v1/route request: ``prompt`` (a string) or chat ``messages``."""
    if "messages" in body:
        return chat_routing_text(body)
    if "prompt" in body:
        return completion_routing_text(body)
    raise ApiError(
        400,
        "send 'prompt' (a string) or 'messages' (a chat) to route",
        param="prompt",
        code="missing_field",
    )
