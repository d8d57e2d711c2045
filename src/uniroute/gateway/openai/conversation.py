"""What of a conversation is routed, and which conversation a request continues.

**Routing text.** A multi-turn request is routed on its last user message with the user turns
before it as context: up to ``context_chars`` characters of them, nearest first (a turn that
does not fit whole keeps its end), placed *before* the last message, which is never cut. A
follow-up such as "and why?" is then judged with the question it follows, while the message
the answer must address still weighs most; an encoder whose window is shorter keeps the end of
the text, so it keeps the last message first. Assistant turns are left out: they are the
models' own answers, long and about what was already answered.

**Session key.** A conversation is identified by the client's ``x-uniroute-session`` header
(``h:`` + its value), else by its start — the system messages and the first user message —
which every later turn of the same conversation repeats (``c:`` + a hash): the key is the same
at every turn without the gateway storing or parsing any answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from uniroute.deployment import Decision
from uniroute.deployment.sessions import SessionChoice, apply_session
from uniroute.gateway.dependencies import Gateway
from uniroute.gateway.errors import ApiError
from uniroute.gateway.openai.protocol import content_text

SESSION_HEADER = "x-uniroute-session"
#: The longest session id a client may send.
MAX_SESSION_ID_CHARS = 200


def routing_text(messages: Sequence[Any], last: str, context_chars: int) -> str:
    """``last`` (the last user message's routing text) preceded by up to ``context_chars``
    characters of the earlier user turns, nearest kept first; ``messages`` already checked."""
    user_texts = [
        content_text(message.get("content"), index)
        for index, message in enumerate(messages)
        if message.get("role") == "user"
    ]
    context: list[str] = []
    room = context_chars
    for text in reversed(user_texts[:-1]):
        text = text.strip()
        if not text or room <= 0:
            continue
        piece = text if len(text) <= room else text[-room:]
        context.append(piece)
        room -= len(piece) + 1
    if not context:
        return last
    return "\n".join([*reversed(context), last])


def session_key(headers: Mapping[str, str], messages: Sequence[Any] | None = None) -> str | None:
    """The session a request belongs to: from its header, else from its conversation's start
    (None: a plain prompt without a header, which starts no session)."""
    given = headers.get(SESSION_HEADER)
    if given is not None:
        given = given.strip()
        if not given or len(given) > MAX_SESSION_ID_CHARS or not given.isprintable():
            raise ApiError(
                400,
                f"'{SESSION_HEADER}' must be 1-{MAX_SESSION_ID_CHARS} printable characters",
                param=SESSION_HEADER,
                code="invalid_session",
            )
        return f"h:{given}"
    if not messages:
        return None
    start: list[list[str]] = []
    for index, message in enumerate(messages):
        role = message.get("role")
        if role in ("system", "developer"):
            start.append([role, content_text(message.get("content"), index)])
        elif role == "user":
            start.append([role, content_text(message.get("content"), index)])
            break
    digest = hashlib.sha256(json.dumps(start, ensure_ascii=False).encode("utf-8")).hexdigest()
    return f"c:{digest[:32]}"


def is_continuation(messages: Sequence[Any] | None) -> bool:
    """Whether a chat already holds an earlier answer (an assistant turn)."""
    return messages is not None and any(m.get("role") == "assistant" for m in messages)


def conversation_text(parsed: Any, context_chars: int) -> str:
    """What a parsed request is routed on: a chat's last user message with its earlier user
    turns as context (``routing_text`` above), a prompt as it is."""
    last = parsed.routing_text()
    messages = getattr(parsed, "messages", None)
    if not messages or context_chars <= 0:
        return last
    return routing_text(messages, last, context_chars)


@dataclass(frozen=True)
class Turn:
    """One routed turn under the session rule: its session key (None: no session) and choice."""

    key: str | None
    choice: SessionChoice


async def session_turn(
    gateway: Gateway, headers: Mapping[str, str], parsed: Any, decision: Decision
) -> Turn:
    """The session rule applied to a routed request's decision (see ``deployment.sessions``).

    Only a continuing conversation — one with an earlier answer in it, or a client's session
    header — looks its session up; a first turn starts one.
    """
    messages = getattr(parsed, "messages", None)
    key = session_key(headers, messages)
    previous = None
    if key is not None and (SESSION_HEADER in headers or is_continuation(messages)):
        found = await gateway.sessions.previous(key)
        previous = None if found is None else found[0]
    return Turn(key, apply_session(decision, previous, gateway.config.session_margin))
