"""What a request needs of the model that answers it: capabilities and a context.

A request needs **tools** when it defines ``tools`` (or the older ``functions``) or its
conversation already holds tool calls or tool results; **vision** when a message has an image
part (``image_url``, ``input_image``); **json** when ``response_format`` asks for a JSON object
or a JSON schema. It needs a **context** of its estimated prompt tokens (every message, and the
tool definitions, at about four characters a token) plus the ``max_tokens`` /
``max_completion_tokens`` it asks for: a model whose declared ``context_window`` is smaller, or
whose declared ``max_output_tokens`` is below the ``max_tokens`` asked for, cannot take it. A
model that declares no window or no output limit is not limited by it.

A model can do only what it declares (``uniroute models update NAME --capabilities ...``, the
admin API) or what onboarding's probes found: a request that needs a capability goes only to
the models that declare it, and a pool where none does refuses it (400 ``no_capable_model``,
saying how to declare it) rather than send tools to a model that will ignore them.

Routing decides only among the models that can take the request (``Requirements.capable``),
and a request naming a pool model that cannot is refused (``Requirements.check_model``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from uniroute.deployment.snapshot import Snapshot
from uniroute.gateway.errors import ApiError
from uniroute.pool import Capabilities, Pool
from uniroute.registry.costs import estimate_tokens

#: Content part types that carry an image.
IMAGE_PART_TYPES = frozenset({"image_url", "input_image"})
#: ``response_format`` types that need JSON mode.
JSON_FORMATS = frozenset({"json_object", "json_schema"})
#: How each capability is named in a message to the client, and the field that asks for it.
_WORDS = {"tools": "tools", "vision": "image input", "json": "JSON mode"}
_PARAMS = {"tools": "tools", "vision": "messages", "json": "response_format"}
#: How many models a refusal names one by one (a huge pool is summarised).
_SHOWN_MODELS = 20


@dataclass(frozen=True)
class Requirements:
    """What one request needs: ``capabilities`` (names of ``registry.CAPABILITIES``), its
    estimated ``prompt_tokens`` and the ``max_output_tokens`` it asks for (None: not said)."""

    capabilities: frozenset[str] = frozenset()
    prompt_tokens: int = 0
    max_output_tokens: int | None = None

    @classmethod
    def of(cls, request: BaseModel) -> Requirements:
        """The requirements of a parsed ``/v1`` request (chat, completion or route)."""
        fields = {**(request.model_extra or {})}
        messages = getattr(request, "messages", None)
        prompt = getattr(request, "prompt", None)
        return cls.of_body(fields, messages, prompt)

    @classmethod
    def of_body(
        cls, fields: dict[str, Any], messages: list[Any] | None, prompt: str | None = None
    ) -> Requirements:
        """The requirements of a request's fields (besides ``messages`` and ``prompt``)."""
        needs: set[str] = set()
        texts: list[str] = [] if prompt is None else [prompt]
        if _given(fields.get("tools")) or _given(fields.get("functions")):
            needs.add("tools")
            # Tool definitions are sent to the model with the prompt: they take context too.
            texts.append(_json_text(fields.get("tools") or fields.get("functions")))
        response_format = fields.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") in JSON_FORMATS:
            needs.add("json")
            if response_format.get("type") == "json_schema":
                texts.append(_json_text(response_format.get("json_schema")))
        for message in messages or ():
            if not isinstance(message, dict):
                continue
            if message.get("role") in ("tool", "function") or _given(message.get("tool_calls")):
                needs.add("tools")  # a conversation that already used tools
            content = message.get("content")
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                for part in content:
                    if not isinstance(part, dict):
                        continue
                    if part.get("type") in IMAGE_PART_TYPES:
                        needs.add("vision")
                    elif isinstance(part.get("text"), str):
                        texts.append(part["text"])
            if _given(message.get("tool_calls")):
                texts.append(_json_text(message.get("tool_calls")))
        tokens = math.ceil(sum(estimate_tokens(text) for text in texts))
        return cls(frozenset(needs), tokens, _output_tokens(fields))

    @property
    def context_tokens(self) -> int:
        """The context the request needs: its prompt and the answer it allows."""
        return self.prompt_tokens + (self.max_output_tokens or 0)

    def unable(self, capabilities: Capabilities) -> str | None:
        """Why a model with these capabilities cannot take the request (None: it can)."""
        reasons = [f"no {_WORDS.get(c, c)}" for c in sorted(self.capabilities - capabilities.names)]
        window = capabilities.context_window
        if window is not None and self.context_tokens > window:
            reasons.append(f"context window {window:,} tokens < ~{self.context_tokens:,} needed")
        limit, asked = capabilities.max_output_tokens, self.max_output_tokens
        if asked is not None and limit is not None and asked > limit:
            reasons.append(f"answers at most {limit:,} tokens < max_tokens {asked:,}")
        return "; ".join(reasons) or None

    def capable(self, snapshot: Snapshot) -> frozenset[str] | None:
        """The models of the snapshot that can take the request, to route among; None when every
        model routing may pick can (no restriction). A 400 ``no_capable_model`` naming what was
        needed and why each model considered cannot, when none can."""
        pool = snapshot.pool
        needs = self
        considered = _candidates(pool)
        reasons = {name: needs.unable(pool.capabilities_of(name)) for name in considered}
        able = frozenset(name for name, reason in reasons.items() if reason is None)
        if len(able) == len(considered):
            return None
        if not able:
            shown = [f"{name} ({reason})" for name, reason in sorted(reasons.items())]
            more = len(shown) - _SHOWN_MODELS
            listed = "; ".join(shown[:_SHOWN_MODELS]) + (f"; and {more} more" if more > 0 else "")
            raise ApiError(
                400,
                f"no model in the pool can take this request: it needs {needs.summary()}; "
                f"considered {listed}; a model that can is declared with `uniroute models "
                "update NAME --capabilities ...` or POST /admin/models/{name}/capabilities",
                param=needs._param(),
                code="no_capable_model",
            )
        return able | frozenset(n for n in pool.names if n not in considered)

    def check_model(self, name: str, snapshot: Snapshot) -> None:
        """A 400 ``model_not_capable`` when the pool model a request names cannot take it."""
        pool = snapshot.pool
        needs = self
        reason = needs.unable(pool.capabilities_of(name))
        if reason is None:
            return
        able = sorted(n for n in pool.servable if needs.unable(pool.capabilities_of(n)) is None)
        hint = f"models that can: {able[:_SHOWN_MODELS]}" if able else "no pool model can"
        raise ApiError(
            400,
            f"the model {name!r} cannot take this request ({reason}); it needs "
            f"{needs.summary()}; route with 'uniroute' or name a model that can ({hint})",
            param="model",
            code="model_not_capable",
        )

    def summary(self) -> str:
        """What the request needs, in words (for messages)."""
        parts = [f"{_WORDS.get(c, c)} ({_PARAMS.get(c, c)})" for c in sorted(self.capabilities)]
        parts.append(f"a context of ~{self.context_tokens:,} tokens")
        if self.max_output_tokens is not None:
            parts.append(f"answers of up to {self.max_output_tokens:,} tokens")
        return ", ".join(parts)

    def describe(self) -> dict[str, Any]:
        """JSON-serialisable form (``/v1/route`` reports it)."""
        return {
            "capabilities": sorted(self.capabilities),
            "estimated_prompt_tokens": self.prompt_tokens,
            "max_output_tokens": self.max_output_tokens,
            "context_tokens": self.context_tokens,
        }

    def _param(self) -> str:
        """The request field a refusal points at: the first capability's, else the messages."""
        for capability in ("tools", "json", "vision"):
            if capability in self.capabilities:
                return _PARAMS[capability]
        return "messages"


def _candidates(pool: Pool) -> list[str]:
    """The models routing may pick: the servable ones, or every one when none is."""
    return list(pool.servable) or list(pool.names)


def _given(value: Any) -> bool:
    """A field that is present and not empty (``tools: []`` asks for nothing)."""
    return value is not None and value != [] and value != {}


def _json_text(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):  # parsed from JSON, so this is not expected: count nothing
        return ""


def _output_tokens(fields: dict[str, Any]) -> int | None:
    """The answer length the request asks for; a value that is not a whole number >= 1 is left
    to the upstream to refuse (it is forwarded unchanged)."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = fields.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
    return None
