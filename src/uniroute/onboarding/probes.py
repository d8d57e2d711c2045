"""Cheap probes of what an endpoint can do beyond plain text, run while it is onboarded.

Two tiny chat requests, each bounded by a timeout and a size limit on the answer:

* **tools**: a request defining one function (``get_weather``) and asking for the weather; the
  endpoint is capable when it answers 200 with a message whose ``tool_calls`` call a function;
* **json**: a request with ``response_format: {"type": "json_object"}``; capable when it answers
  200 with content that is a JSON object.

A 4xx means the endpoint does not take the field: not capable. A timeout, a connection error, a
5xx or an answer that is not what was asked for is inconclusive: not capable either, and the
report says why. A probe never fails onboarding. Vision has no probe this cheap: it is only
ever declared. Everything the endpoint sends back is untrusted: read within a size limit,
parsed within the JSON bounds, never echoed beyond a short excerpt.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from uniroute._json import JsonLimitError, loads_bounded
from uniroute.errors import OnboardingError
from uniroute.onboarding.endpoints import base_url as endpoint_base_url
from uniroute.onboarding.upstream_hosts import EndpointPolicy

#: The capabilities a probe can establish (vision can only be declared).
PROBED_CAPABILITIES = ("tools", "json")
#: Seconds one probe may take, whatever the onboarding timeout.
MAX_PROBE_SECONDS = 20.0
#: The largest answer body a probe reads (a real answer to these prompts is a few hundred bytes).
MAX_PROBE_BYTES = 64 * 1024
#: Tokens a probe answer may use: a tool call or a one-key object fits easily.
PROBE_MAX_TOKENS = 64
#: Longest excerpt of an endpoint's words put in a report.
_EXCERPT_CHARS = 80

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "the city"}},
            "required": ["city"],
        },
    },
}
TOOLS_PROMPT = "What is the weather in Paris right now? Use the get_weather tool."
JSON_PROMPT = 'Reply with a JSON object {"answer": N} where N is 2 + 2.'


@dataclass(frozen=True)
class ProbeOutcome:
    """One probe: whether the endpoint showed the capability, and what it did."""

    capability: str
    capable: bool
    detail: str
    status: int | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "capability": self.capability,
            "capable": self.capable,
            "detail": self.detail,
            "status": self.status,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class ProbeReport:
    """What the probes of one endpoint found (``outcomes``), or why none ran (``skipped``)."""

    outcomes: tuple[ProbeOutcome, ...] = ()
    skipped: str | None = None
    not_probed: tuple[str, ...] = field(default=("vision",))

    @property
    def capabilities(self) -> tuple[str, ...]:
        """The capabilities the probes established, sorted."""
        return tuple(sorted(o.capability for o in self.outcomes if o.capable))

    def summary(self) -> str:
        """One line: what was probed and what was found."""
        if self.skipped is not None:
            return f"capabilities not probed: {self.skipped}"
        parts = [
            f"{o.capability}: {'yes' if o.capable else 'no'} ({o.detail})" for o in self.outcomes
        ]
        not_probed = ", ".join(self.not_probed)
        return f"capability probes: {'; '.join(parts)}; not probed (declare it): {not_probed}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "capabilities": list(self.capabilities),
            "outcomes": [o.to_dict() for o in self.outcomes],
            "skipped": self.skipped,
            "not_probed": list(self.not_probed),
        }


def probe_capabilities(
    base_url: str,
    model: str,
    *,
    api_key_env: str | None = None,
    timeout: float = MAX_PROBE_SECONDS,
    endpoint_policy: EndpointPolicy | None = None,
    transport: httpx.BaseTransport | None = None,
) -> ProbeReport:
    """Probe a chat endpoint for tools and JSON mode (see the module doc); never raises for
    anything the endpoint does. ``model`` is the model name the endpoint expects."""
    try:
        endpoint = endpoint_base_url(base_url)
        (endpoint_policy or EndpointPolicy()).check(endpoint, OnboardingError)
    except (OnboardingError, ValueError) as exc:
        return ProbeReport(skipped=f"the endpoint may not be called: {exc}")
    headers = {"content-type": "application/json"}
    if api_key_env:
        key = os.environ.get(api_key_env, "")
        if not key.strip():
            return ProbeReport(skipped=f"environment variable {api_key_env} is not set")
        headers["authorization"] = f"Bearer {key}"
    seconds = min(float(timeout), MAX_PROBE_SECONDS) if timeout > 0 else MAX_PROBE_SECONDS
    url = f"{endpoint}/chat/completions"
    base = {"model": model, "max_tokens": PROBE_MAX_TOKENS, "temperature": 0}
    with httpx.Client(
        timeout=httpx.Timeout(seconds), headers=headers, transport=transport
    ) as client:
        tools = _probe(
            client,
            url,
            "tools",
            {
                **base,
                "messages": [{"role": "user", "content": TOOLS_PROMPT}],
                "tools": [WEATHER_TOOL],
            },
            _judge_tools,
            seconds,
        )
        json_mode = _probe(
            client,
            url,
            "json",
            {
                **base,
                "messages": [{"role": "user", "content": JSON_PROMPT}],
                "response_format": {"type": "json_object"},
            },
            _judge_json,
            seconds,
        )
    return ProbeReport((tools, json_mode))


def _probe(
    client: httpx.Client,
    url: str,
    capability: str,
    body: dict[str, Any],
    judge: Any,
    seconds: float,
) -> ProbeOutcome:
    """Send one probe and judge its answer; whatever goes wrong is a 'not capable' outcome."""
    started = time.monotonic()

    def outcome(capable: bool, detail: str, status: int | None = None) -> ProbeOutcome:
        return ProbeOutcome(capability, capable, detail, status, time.monotonic() - started)

    try:
        with client.stream("POST", url, json=body) as response:
            status = response.status_code
            raw = _read_bounded(response, started + seconds)
    except _TooLargeError:
        return outcome(False, f"answer larger than {MAX_PROBE_BYTES} bytes")
    except TimeoutError:
        return outcome(False, f"no complete answer within {seconds:g} s")
    except httpx.TimeoutException:
        return outcome(False, f"timed out after {seconds:g} s")
    except httpx.HTTPError as exc:
        return outcome(False, f"no answer: {type(exc).__name__}")
    if 400 <= status < 500:
        return outcome(False, f"the endpoint refused the field (HTTP {status})", status)
    if status != 200:
        return outcome(False, f"inconclusive: HTTP {status}", status)
    try:
        message = _message(loads_bounded(raw))
    except (JsonLimitError, ValueError, UnicodeDecodeError):
        return outcome(False, "the answer is not an OpenAI-style chat completion", status)
    capable, detail = judge(message)
    return outcome(capable, detail, status)


class _TooLargeError(Exception):
    """The answer went over MAX_PROBE_BYTES."""


def _read_bounded(response: httpx.Response, deadline: float) -> bytes:
    """The body, at most MAX_PROBE_BYTES, before the deadline (a slow drip is cut off)."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if size > MAX_PROBE_BYTES:
            raise _TooLargeError
        if time.monotonic() > deadline:
            raise TimeoutError
        chunks.append(chunk)
    return b"".join(chunks)


def _message(body: Any) -> dict[str, Any]:
    """The first choice's message of a chat completion, or a ValueError."""
    if not isinstance(body, dict):
        raise ValueError("not an object")
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ValueError("no choices")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise ValueError("no message")
    return message


def _excerpt(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return repr(text[:_EXCERPT_CHARS])


def _judge_tools(message: dict[str, Any]) -> tuple[bool, str]:
    calls = message.get("tool_calls")
    if not isinstance(calls, list) or not calls:
        return False, f"answered without a tool call: {_excerpt(message.get('content'))}"
    first = calls[0]
    function = first.get("function") if isinstance(first, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str) or not name:
        return False, "a tool call without a function name"
    return True, f"called {_excerpt(name)}"


def _judge_json(message: dict[str, Any]) -> tuple[bool, str]:
    content = message.get("content")
    if not isinstance(content, str):
        return False, "the answer has no text content"
    try:
        parsed = loads_bounded(content)
    except (JsonLimitError, ValueError):
        return False, f"the content is not JSON: {_excerpt(content)}"
    if not isinstance(parsed, dict):
        return False, f"the content is JSON but not an object: {_excerpt(content)}"
    return True, "answered with a JSON object"
