"""Request models of ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/route``.

They check the fields the gateway reads (``model``, ``messages`` or ``prompt``, ``stream``) and
allow every other field (``extra="allow"``): the body forwarded upstream is the parsed JSON object
itself, never a re-serialised model, so fields this module does not know reach the upstream
unchanged. Each refusal keeps the message, ``param`` and code clients and tests rely on.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from uniroute.gateway.errors import invalid
from uniroute.gateway.openai.policy import ROUTED_ALIAS


def _model_name(value: Any) -> str:
    if value is None:
        raise invalid(
            "missing_field", "missing required field 'model' (use 'uniroute' to route)", "model"
        )
    if not isinstance(value, str) or not value.strip():
        raise invalid("invalid_type", "'model' must be a non-empty string", "model")
    return value


def _stream_flag(value: Any) -> bool:
    if value is None:  # OpenAI's own API and clients treat null as "not streamed"
        return False
    if not isinstance(value, bool):
        raise invalid("invalid_type", "'stream' must be true or false", "stream")
    return value


def content_text(content: Any, index: int) -> str:
    """Text of a message's content: a string, or the text parts of a list of content parts."""
    param = f"messages[{index}].content"
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or "type" not in part:
                raise invalid(
                    "invalid_type",
                    f"messages[{index}].content parts must be objects with a 'type'",
                    param,
                )
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    raise invalid(
                        "invalid_type",
                        f"messages[{index}].content text part needs a string 'text'",
                        param,
                    )
                texts.append(part["text"])
        return "\n".join(texts)
    if content is None:
        return ""
    raise invalid(
        "invalid_type", f"messages[{index}].content must be a string or a list of parts", param
    )


def _last_user_text(messages: list[Any]) -> str:
    """Check every message and return the text of the last one with role ``user``.

    A last user message without text (an image, an audio clip) is routed on the text of the
    conversation before it, which is what that part is about; with no text at all, on "".
    """
    last_user: str | None = None
    texts: list[str] = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise invalid(
                "invalid_type",
                f"messages[{index}] must be an object with 'role' and 'content'",
                f"messages[{index}]",
            )
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise invalid(
                "missing_field", f"messages[{index}] has no 'role'", f"messages[{index}].role"
            )
        text = content_text(message.get("content"), index)
        if role == "user":
            last_user = text if text.strip() or not texts else "\n".join(texts)
        if text.strip():
            texts.append(text)
    if last_user is None:
        raise invalid(
            "no_user_message", "'messages' has no message with role 'user' to route on", "messages"
        )
    return last_user


def _has_content(message: dict[str, Any]) -> bool:
    """True if a message carries text or any non-text part (an image, audio, a file)."""
    content = message.get("content")
    if isinstance(content, str):
        return bool(content.strip())
    if isinstance(content, list):
        return any(
            part.get("type") != "text" or str(part.get("text", "")).strip() for part in content
        )
    return False


def _messages(value: Any) -> list[Any]:
    if value is None:
        raise invalid("missing_field", "missing required field 'messages'", "messages")
    if not isinstance(value, list):
        raise invalid("invalid_type", "'messages' must be a list of message objects", "messages")
    if not value:
        raise invalid(
            "empty_messages", "'messages' is empty; send at least one user message", "messages"
        )
    _last_user_text(value)  # checks every message
    last_user = next(m for m in reversed(value) if m.get("role") == "user")
    if not _has_content(last_user):
        raise invalid("empty_messages", "the last user message is empty", "messages")
    return value


def _prompt(value: Any) -> str:
    if value is None:
        raise invalid("missing_field", "missing required field 'prompt'", "prompt")
    if isinstance(value, list):
        if len(value) != 1 or not isinstance(value[0], str):
            raise invalid(
                "invalid_type",
                "'prompt' must be one string (a list is accepted only with exactly one string: "
                "each prompt is routed on its own)",
                "prompt",
            )
        value = value[0]
    if not isinstance(value, str):
        raise invalid("invalid_type", "'prompt' must be a string", "prompt")
    if not value.strip():
        raise invalid("empty_prompt", "'prompt' is empty", "prompt")
    return value


ModelName = Annotated[str, BeforeValidator(_model_name)]
StreamFlag = Annotated[bool, BeforeValidator(_stream_flag)]
#: Chat messages, each checked; the router embeds the last user message.
Messages = Annotated[list[dict[str, Any]], BeforeValidator(_messages)]
#: A completion prompt: one string (a list of exactly one string is that string).
Prompt = Annotated[str, BeforeValidator(_prompt)]


class _OpenAIRequest(BaseModel):
    # Every field the gateway does not read is allowed and forwarded as sent.
    model_config = ConfigDict(extra="allow")


class ChatCompletionRequest(_OpenAIRequest):
    """``POST /v1/chat/completions``; routed on the last user message."""

    model: ModelName = Field(default=None, validate_default=True)
    messages: Messages = Field(default=None, validate_default=True)
    stream: StreamFlag = False

    def routing_text(self) -> str:
        """The text the router embeds: the last user message.

        It is what the answer must address; earlier turns mostly repeat context. An encoder
        with a bounded window keeps the end of that text, so a long message is judged by its
        final part (normally where the question is).
        """
        return _last_user_text(self.messages)


class CompletionRequest(_OpenAIRequest):
    """``POST /v1/completions`` (legacy text completions): one prompt, routed on itself."""

    model: ModelName = Field(default=None, validate_default=True)
    prompt: Prompt = Field(default=None, validate_default=True)
    stream: StreamFlag = False

    def routing_text(self) -> str:
        """The text the router embeds: the prompt."""
        return self.prompt


class RouteRequest(_OpenAIRequest):
    """``POST /v1/route``: a ``prompt`` or chat ``messages``, and an optional routing policy."""

    model: ModelName = ROUTED_ALIAS
    messages: Messages | None = None
    prompt: Prompt | None = None

    @model_validator(mode="after")
    def _something_to_route(self) -> RouteRequest:
        if self.messages is None and self.prompt is None:
            message = "send 'prompt' (a string) or 'messages' (a chat) to route"
            raise invalid("missing_field", message, "prompt")
        return self

    def routing_text(self) -> str:
        """The last user message of ``messages`` when given, else ``prompt``."""
        if self.messages is not None:
            return _last_user_text(self.messages)
        assert self.prompt is not None
        return self.prompt
