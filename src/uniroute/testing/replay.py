"""An OpenAI-compatible upstream that stands for one recorded model by replaying its answers.

Tests and benchmarks need real HTTP endpoints that answer like real LLMs without any network or
weights: this server looks each prompt up in a data set with recorded responses (RouterBench's
``M|model_response`` columns) and returns the answer that model really gave. It speaks
``POST /v1/chat/completions`` and ``POST /v1/completions`` (plain JSON or SSE streaming),
``GET /v1/models``, ``GET /healthz`` and ``GET /stats``, and injects faults on demand (delay,
error rate, first-N errors, a fixed answer, hostile answers after a 200) from the command line
or ``POST /admin/fault`` (a JSON object of ``FaultConfig`` fields, plus ``"seed": N`` to
reseed the random failures and ``"reset_stats": true`` to zero the counters).

With ``--capabilities tools,vision,json`` it also stands for a model that can (or cannot) do
more than text: a chat request defining ``tools`` is answered with a call of its first tool (not
streamed), one
with ``response_format`` ``json_object`` / ``json_schema`` with the recorded answer wrapped in a
JSON object, and one needing a capability not listed (tools, an image part, JSON mode) is
refused with a 400, as a real endpoint refuses a field it does not support. Without the option
those fields are ignored and the recorded text comes back.

Run it with ``python -m uniroute.testing.replay --data DIR --format routerbench --model NAME
--port 0``; it prints ``listening on http://HOST:PORT`` once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import math
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from uniroute.data.dataset import RoutingDataset
from uniroute.data.loading import load_dataset
from uniroute.data.routerbench import responses_by_prompt
from uniroute.errors import DataError
from uniroute.gateway.serving import announce, bind_socket
from uniroute.testing.child_process import ChildServerProcess

UNKNOWN_ANSWER = "I don't know."
UPSTREAM_MODEL_HEADER = "x-upstream-model"


@dataclass
class FaultConfig:
    """Faults injected into completion requests; changeable at run time via POST /admin/fault.

    ``delay_ms`` delays each answer (before its first byte), ``chunk_delay_ms`` each streamed
    chunk; ``fail_first`` fails the next N requests and ``fail_rate`` a random share of the rest,
    with HTTP status ``fail_status``; ``fixed_answer``, when set, replaces every answer.
    ``hostile``, when set, makes every answer one of :data:`HOSTILE_MODES` (an upstream that
    misbehaves after a 200); streamed ones misbehave after ``hostile_after_chunks`` events.
    """

    delay_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    fail_rate: float = 0.0
    fail_status: int = 500
    fail_first: int = 0
    fixed_answer: str | None = None
    hostile: str | None = None
    hostile_after_chunks: int = 2

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply a partial update, checking every value; raises ValueError naming a bad field."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault setting(s) {unknown}; known: {sorted(known)}")
        staged = FaultConfig(**asdict(self))
        for name, value in changes.items():
            setattr(staged, name, _checked_fault_value(name, value))
        for name in known:
            setattr(self, name, getattr(staged, name))


#: What a hostile upstream does (``FaultConfig.hostile``), streamed (s) or not (n):
HOSTILE_MODES = {
    "hang": "answers nothing, ever (s, n)",
    "garbage": "200 with bytes that are not JSON / not SSE events (s, n)",
    "nested_json": "200 with JSON nested 100,000 deep (s, n)",
    "huge": "200 with a 100 MB body (n) or a 100 MB line (s)",
    "die": "drops the connection partway through the body (s: after some events; n)",
    "stall": "stops sending partway through the body, keeping the connection (s, n)",
    "no_done": "ends the stream cleanly but without data: [DONE] (s)",
    "echo_auth": "400 whose error message echoes the request's Authorization header (s, n)",
}


def _checked_fault_value(name: str, value: Any) -> Any:
    if name == "hostile":
        if value is not None and value not in HOSTILE_MODES:
            raise ValueError(f"hostile must be null or one of {sorted(HOSTILE_MODES)}")
        return value
    if name == "fixed_answer":
        if value is not None and not isinstance(value, str):
            raise ValueError("fixed_answer must be a string or null")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if name == "fail_rate" and not 0.0 <= value <= 1.0:
        raise ValueError(f"fail_rate must lie in [0, 1], got {value}")
    if name == "fail_status":
        if int(value) != value or not 400 <= value <= 599:
            raise ValueError(f"fail_status must be an HTTP error status (400-599), got {value}")
        return int(value)
    if name in ("fail_first", "hostile_after_chunks"):
        if int(value) != value or value < 0:
            raise ValueError(f"fail_first must be a whole number >= 0, got {value}")
        return int(value)
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return float(value)


def normalise_whitespace(text: str) -> str:
    """Collapse every run of whitespace to one space and trim: the lookup's fallback key."""
    return " ".join(str(text).split())


def recorded_answers(dataset: RoutingDataset, model: str) -> dict[str, str]:
    """{prompt text: the model's recorded answer} for every prompt that has one.

    The first answer wins when a prompt text appears twice.
    """
    dataset.model_index(model)
    responses = responses_by_prompt(dataset).get(model)
    if responses is None:
        raise DataError(f"dataset {dataset.name!r} has no recorded responses for model {model!r}")
    answers: dict[str, str] = {}
    for prompt_id, text in zip(dataset.prompt_ids, dataset.prompts, strict=True):
        answer = responses.get(prompt_id)
        if answer is not None and text not in answers:
            answers[str(text)] = str(answer)
    if not answers:
        raise DataError(f"dataset {dataset.name!r}: model {model!r} has no recorded answer at all")
    return answers


class _ReplayState:
    """The answers, the fault settings and the request counters of one replay server."""

    def __init__(
        self,
        model: str,
        answers: dict[str, str],
        *,
        strict: bool,
        faults: FaultConfig,
        api_key: str | None,
        seed: int,
        unknown_answer: str,
        capabilities: frozenset[str] | None = None,
    ) -> None:
        self.model = model
        #: What the model stands for beyond text (None: the fields are ignored).
        self.capabilities = capabilities
        self.answers = answers
        self.by_normalised: dict[str, str] = {}
        for text, answer in answers.items():
            self.by_normalised.setdefault(normalise_whitespace(text), answer)
        self.strict = strict
        self.faults = faults
        self.api_key = api_key
        self.unknown_answer = unknown_answer
        self.rng = random.Random(seed)
        self.stats: Counter = Counter()
        #: How often each prompt (whitespace-normalised) was answered: a test of resumed work
        #: checks that no prompt was answered twice.
        self.answered_prompts: Counter = Counter()
        self.ids = itertools.count(1)

    def lookup(self, prompt: str) -> str | None:
        """The recorded answer: by exact text, else by whitespace-normalised text."""
        answer = self.answers.get(prompt)
        if answer is None:
            answer = self.by_normalised.get(normalise_whitespace(prompt))
        return answer

    def injected_failure(self) -> bool:
        """Whether this request is one the fault settings make fail."""
        if self.faults.fail_first > 0:
            self.faults.fail_first -= 1
            return True
        return self.faults.fail_rate > 0 and self.rng.random() < self.faults.fail_rate


#: What the replay can stand for beyond text (``--capabilities``).
REPLAY_CAPABILITIES = ("tools", "vision", "json")


def _needed_capabilities(body: dict) -> set[str]:
    """What a chat request needs beyond text: tools, image input, JSON mode."""
    needed = set()
    if body.get("tools") or body.get("functions"):
        needed.add("tools")
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in (
        "json_object",
        "json_schema",
    ):
        needed.add("json")
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") in ("image_url", "input_image") for p in content
        ):
            needed.add("vision")
    return needed


def _first_tool_name(body: dict) -> str:
    """The name of the first tool (or function) a request defines ("tool" if it has none)."""
    for entry in body.get("tools") or ():
        function = entry.get("function") if isinstance(entry, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return function["name"]
    for function in body.get("functions") or ():
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return function["name"]
    return "tool"


def _error(status: int, message: str, error_type: str, code: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": error_type, "param": None, "code": code}}
    return JSONResponse(body, status_code=status)


def _estimate_tokens(text: str) -> int:
    # About four characters per token for English text; replayed answers carry no real counts.
    return max(1, math.ceil(len(text) / 4))


def _message_text(content: Any) -> str | None:
    """Text of a chat message's content: a string, or the {"type": "text"} parts of a list of
    parts ("" when they are all images or other media, which a text model answers as unknown)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        parts = [p.get("text") for p in content if p.get("type") == "text"]
        texts = [p for p in parts if isinstance(p, str)]
        if len(texts) == len(parts):
            return "\n".join(texts)
    return None


class _UpstreamModelHeader:
    """ASGI middleware adding ``x-upstream-model`` to every response, streamed ones included."""

    def __init__(self, app: ASGIApp, model: str) -> None:
        self.app = app
        self.header = (UPSTREAM_MODEL_HEADER.encode(), model.encode("utf-8"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, send_with_header)


def create_replay_app(
    dataset: RoutingDataset,
    model: str,
    *,
    strict: bool = False,
    faults: FaultConfig | None = None,
    api_key: str | None = None,
    seed: int = 0,
    unknown_answer: str = UNKNOWN_ANSWER,
    capabilities: Sequence[str] | None = None,
) -> ASGIApp:
    """An ASGI app replaying ``model``'s recorded answers in ``dataset`` (see the module doc).

    ``strict`` answers unknown prompts with 404 instead of ``unknown_answer``; ``api_key``, when
    given, is required as ``Authorization: Bearer KEY`` on the /v1 routes (401 otherwise).
    ``capabilities`` (of ``REPLAY_CAPABILITIES``) makes it answer tool and JSON-mode requests as
    a capable model does and refuse what it lacks (None: such fields are ignored).
    """
    if capabilities is not None:
        unknown = sorted(set(capabilities) - set(REPLAY_CAPABILITIES))
        if unknown:
            raise ValueError(f"unknown capabilities {unknown}; known: {list(REPLAY_CAPABILITIES)}")
    state = _ReplayState(
        model,
        recorded_answers(dataset, model),
        strict=strict,
        faults=faults or FaultConfig(),
        api_key=api_key,
        seed=seed,
        unknown_answer=unknown_answer,
        capabilities=None if capabilities is None else frozenset(capabilities),
    )

    async def read_body(request: Request) -> dict | Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            state.stats["bad_requests"] += 1
            return _error(400, "request body is not valid JSON", "invalid_request_error")
        if not isinstance(body, dict):
            state.stats["bad_requests"] += 1
            return _error(400, "request body must be a JSON object", "invalid_request_error")
        return body

    def unauthorised(request: Request) -> Response | None:
        if state.api_key is None:
            return None
        if request.headers.get("authorization", "") == f"Bearer {state.api_key}":
            return None
        state.stats["auth_failures"] += 1
        return _error(
            401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
        )

    async def completion(request: Request, kind: str) -> Response:
        state.stats["requests"] += 1
        state.stats[kind] += 1
        rejected = unauthorised(request)
        if rejected is not None:
            return rejected
        body = await read_body(request)
        if isinstance(body, Response):
            return body
        prompts = _prompts_of(body, kind)
        if isinstance(prompts, str):
            state.stats["bad_requests"] += 1
            return _error(400, prompts, "invalid_request_error")
        if state.faults.delay_ms > 0:
            await asyncio.sleep(state.faults.delay_ms / 1000)
        if state.injected_failure():
            state.stats["failures_injected"] += 1
            status = state.faults.fail_status
            return _error(status, f"injected failure (HTTP {status})", "server_error")
        if state.faults.hostile is not None:
            state.stats["hostile_answers"] += 1
            return _hostile_answer(state, request, bool(body.get("stream")))
        needed = _needed_capabilities(body) if kind == "chat_completions" else set()
        if state.capabilities is not None and needed - state.capabilities:
            state.stats["capability_refusals"] += 1
            missing = ", ".join(sorted(needed - state.capabilities))
            return _error(
                400, f"model {state.model!r} does not support: {missing}", "invalid_request_error"
            )
        answers = []
        for prompt in prompts:
            fixed = state.faults.fixed_answer
            answer = fixed if fixed is not None else state.lookup(prompt)
            if answer is None:
                state.stats["unknown_prompts"] += 1
                if state.strict:
                    return _error(404, "prompt not in the replayed data", "not_found_error")
                answer = state.unknown_answer
            answers.append(answer)
        state.stats["answered"] += 1
        state.answered_prompts.update(normalise_whitespace(prompt) for prompt in prompts)
        ident = f"{'chatcmpl' if kind == 'chat_completions' else 'cmpl'}-replay-{next(state.ids)}"
        capable = state.capabilities or frozenset()
        if "tools" in needed and "tools" in capable and not body.get("stream"):
            state.stats["tool_calls"] += 1
            return JSONResponse(_tool_call_response(state.model, ident, _first_tool_name(body)))
        if "json" in needed and "json" in capable:
            state.stats["json_answers"] += 1
            answers = [json.dumps({"answer": answer}) for answer in answers]
        if body.get("stream"):
            state.stats["streamed"] += 1
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                _stream(state, kind, ident, prompts, answers, include_usage),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache"},
            )
        return JSONResponse(_full_response(state.model, kind, ident, prompts, answers))

    async def chat_completions(request: Request) -> Response:
        return await completion(request, "chat_completions")

    async def completions(request: Request) -> Response:
        return await completion(request, "completions")

    async def list_models(request: Request) -> Response:
        rejected = unauthorised(request)
        if rejected is not None:
            return rejected
        entry = {"id": state.model, "object": "model", "created": 0, "owned_by": "uniroute-replay"}
        return JSONResponse({"object": "list", "data": [entry]})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": state.model})

    async def stats(request: Request) -> Response:
        keys = (
            "requests", "chat_completions", "completions", "answered", "streamed",
            "failures_injected", "unknown_prompts", "bad_requests", "auth_failures",
            "capability_refusals", "tool_calls", "json_answers",
        )  # fmt: skip
        counts = state.answered_prompts.values()
        prompts = {
            "distinct_prompts_answered": len(state.answered_prompts),
            "prompts_answered_twice": sum(1 for count in counts if count > 1),
        }
        return JSONResponse({"model": state.model, **{k: state.stats[k] for k in keys}, **prompts})

    async def admin_fault(request: Request) -> Response:
        body = await read_body(request)
        if isinstance(body, Response):
            return body
        changes = dict(body)
        reset = changes.pop("reset_stats", False)
        seed = changes.pop("seed", None)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            return _error(
                400, f"seed must be a whole number, got {seed!r}", "invalid_request_error"
            )
        try:
            state.faults.update(changes)
        except ValueError as exc:
            return _error(400, str(exc), "invalid_request_error")
        if seed is not None:
            state.rng.seed(seed)
        if reset:
            state.stats.clear()
            state.answered_prompts.clear()
        return JSONResponse({"model": state.model, "faults": asdict(state.faults)})

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/stats", stats, methods=["GET"]),
            Route("/admin/fault", admin_fault, methods=["POST"]),
        ]
    )
    return _UpstreamModelHeader(app, model)


def _prompts_of(body: dict, kind: str) -> list[str] | str:
    """The prompt texts of a request, or an error message saying what is wrong with it."""
    if kind == "chat_completions":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "'messages' must be a non-empty list"
        users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
        if not users:
            return "'messages' has no message with role 'user'"
        text = _message_text(users[-1].get("content"))
        if text is None:
            return "the last user message has no text content"
        return [text]
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        return prompt
    return "'prompt' must be a string or a non-empty list of strings"


def _full_response(
    model: str, kind: str, ident: str, prompts: list[str], answers: list[str]
) -> dict:
    usage = {
        "prompt_tokens": sum(_estimate_tokens(p) for p in prompts),
        "completion_tokens": sum(_estimate_tokens(a) for a in answers),
    }
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    if kind == "chat_completions":
        choices = [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answers[0]},
                "finish_reason": "stop",
            }
        ]
        obj = "chat.completion"
    else:
        choices = [
            {"index": i, "text": answer, "logprobs": None, "finish_reason": "stop"}
            for i, answer in enumerate(answers)
        ]
        obj = "text_completion"
    return {
        "id": ident,
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage,
    }


def _tool_call_response(model: str, ident: str, tool: str) -> dict:
    """A chat completion whose message calls ``tool`` (arguments ``{}``), as a tools model
    answers a request that defines it."""
    call = {
        "id": f"call-{ident}",
        "type": "function",
        "function": {"name": tool, "arguments": "{}"},
    }
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    return {
        "id": ident,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


_NESTED = b"[" * 100_000 + b"]" * 100_000


class _RawAnswer:
    """An ASGI response sent piece by piece, then ending as ``ending`` says: ``"close"``
    (complete), ``"die"`` (the connection dropped mid-body) or ``"stall"`` (silence)."""

    def __init__(
        self, status: int, content_type: str, pieces: list[bytes], ending: str, length: int | None
    ) -> None:
        self.status, self.content_type, self.pieces = status, content_type, pieces
        self.ending, self.length = ending, length

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", self.content_type.encode())]
        if self.length is not None:
            headers.append((b"content-length", str(self.length).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        for piece in self.pieces:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            await asyncio.sleep(0)
        if self.ending == "stall":
            await asyncio.sleep(3600)
        if self.ending == "die":
            # An exception after the response started makes the server drop the connection.
            raise ConnectionAbortedError("replay upstream dies mid-answer (fault injected)")
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _hostile_answer(state: _ReplayState, request: Request, stream: bool) -> Any:
    mode = state.faults.hostile
    model = json.dumps(state.model)
    event = f'data: {{"id":"x","object":"chat.completion.chunk","model":{model},'
    event += '"choices":[{"index":0,"delta":{"content":"hi "},"finish_reason":null}]}\n\n'
    events = [event.encode()] * state.faults.hostile_after_chunks
    sse, js = "text/event-stream", "application/json"
    if mode == "hang":
        return _RawAnswer(200, sse if stream else js, [], "stall", None)
    if mode == "garbage":
        junk = b"\x00\xff<html>not what you asked for</html>\n" * 8
        return _RawAnswer(200, sse if stream else js, [junk], "close", None)
    if mode == "nested_json":
        if stream:
            return _RawAnswer(200, sse, [b"data: " + _NESTED + b"\n\n"], "close", None)
        body = b'{"model":"x","choices":' + _NESTED + b"}"
        return _RawAnswer(200, js, [body], "close", len(body))
    if mode == "huge":
        block = b"x" * 1_000_000
        head = b"data: " if stream else b'{"model":"x","pad":"'
        return _RawAnswer(200, sse if stream else js, [head, *[block] * 100], "close", None)
    if mode == "die":
        if stream:
            return _RawAnswer(200, sse, events, "die", None)
        return _RawAnswer(200, js, [b'{"id":"x","choices":[{"mess'], "die", 4096)
    if mode == "stall":
        if stream:
            return _RawAnswer(200, sse, events, "stall", None)
        return _RawAnswer(200, js, [b'{"id":"x","choices":[{"mess'], "stall", 4096)
    if mode == "no_done":
        return _RawAnswer(200, sse, events, "close", None)
    assert mode == "echo_auth"
    sent = request.headers.get("authorization", "(none)")
    return _error(400, f"Bad request. You sent Authorization: {sent}", "invalid_request_error")


def _pieces(answer: str) -> list[str]:
    """An answer cut into word-sized pieces, as an LLM streams tokens."""
    return re.findall(r"\s*\S+\s*|\s+", answer) or [""]


async def _stream(
    state: _ReplayState,
    kind: str,
    ident: str,
    prompts: list[str],
    answers: list[str],
    include_usage: bool,
) -> AsyncIterator[bytes]:
    created = int(time.time())
    chat = kind == "chat_completions"
    obj = "chat.completion.chunk" if chat else "text_completion"

    def event(choices: list[dict], **extra: Any) -> bytes:
        payload = {"id": ident, "object": obj, "created": created, "model": state.model}
        payload.update(choices=choices, **extra)
        return f"data: {json.dumps(payload)}\n\n".encode()

    for index, answer in enumerate(answers[:1] if chat else answers):
        if chat:
            yield event(
                [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
            )
        for piece in _pieces(answer):
            if state.faults.chunk_delay_ms > 0:
                await asyncio.sleep(state.faults.chunk_delay_ms / 1000)
            if chat:
                yield event([{"index": 0, "delta": {"content": piece}, "finish_reason": None}])
            else:
                yield event(
                    [{"index": index, "text": piece, "logprobs": None, "finish_reason": None}]
                )
        if chat:
            yield event([{"index": 0, "delta": {}, "finish_reason": "stop"}])
        else:
            yield event([{"index": index, "text": "", "logprobs": None, "finish_reason": "stop"}])
    if include_usage:
        usage = _full_response(state.model, kind, ident, prompts, answers)["usage"]
        yield event([], usage=usage)
    yield b"data: [DONE]\n\n"


# ---------------------------------------------------------------------------- running it


def serve(app: ASGIApp, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
    """Serve an app with uvicorn, printing ``listening on URL`` once connections are accepted."""
    sock = bind_socket(host, port)
    announce(sock)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


def build_arg_parser() -> argparse.ArgumentParser:
    """Command-line options of ``python -m uniroute.testing.replay``."""
    parser = argparse.ArgumentParser(
        prog="python -m uniroute.testing.replay",
        description="Serve one recorded model's answers as an OpenAI-compatible endpoint.",
    )
    parser.add_argument("--data", required=True, help="data file or folder with recorded answers")
    parser.add_argument("--format", default="routerbench", help="data format (default routerbench)")
    parser.add_argument("--model", required=True, help="the recorded model to stand for")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--strict", action="store_true", help="404 for unknown prompts")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--chunk-delay-ms", type=float, default=0.0)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--fail-status", type=int, default=500)
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--fixed-answer", default=None, help="answer every prompt with this text")
    parser.add_argument(
        "--api-key-env",
        default=None,
        help="require the key held by this environment variable (Authorization: Bearer KEY)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the random failures")
    parser.add_argument(
        "--capabilities",
        default=None,
        help="comma-separated capabilities to stand for (tools,vision,json): answer tool and "
        "JSON-mode requests as a capable model does, refuse (400) what is not listed",
    )
    parser.add_argument("--log-level", default="warning")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m uniroute.testing.replay``."""
    args = build_arg_parser().parse_args(argv)
    try:
        faults = FaultConfig()
        faults.update(
            {
                "delay_ms": args.delay_ms,
                "chunk_delay_ms": args.chunk_delay_ms,
                "fail_rate": args.fail_rate,
                "fail_status": args.fail_status,
                "fail_first": args.fail_first,
                "fixed_answer": args.fixed_answer,
            }
        )
        api_key = None
        if args.api_key_env:
            api_key = os.environ.get(args.api_key_env)
            if not api_key:
                raise ValueError(f"environment variable {args.api_key_env} is not set")
        capabilities = None
        if args.capabilities is not None:
            capabilities = [c.strip() for c in args.capabilities.split(",") if c.strip()]
        dataset = load_dataset(args.data, args.format)
        app = create_replay_app(
            dataset, args.model, strict=args.strict, faults=faults, api_key=api_key,
            seed=args.seed, capabilities=capabilities,
        )  # fmt: skip
        serve(app, args.host, args.port, args.log_level)
    except (DataError, ValueError, OSError) as exc:
        print(f"replay: error: {exc}", file=sys.stderr)
        return 2
    return 0


class ReplayServerProcess(ChildServerProcess):
    """A replay server in a child process, for tests and benchmarks; a context manager.

    ``base_url`` is the server root (``http://127.0.0.1:PORT``), ``v1_url`` the OpenAI base URL.
    """

    label = "replay server"

    def __init__(
        self,
        data: str | Path,
        model: str,
        *,
        data_format: str = "routerbench",
        host: str = "127.0.0.1",
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        command = [
            sys.executable, "-m", "uniroute.testing.replay", "--data", str(data),
            "--format", data_format, "--model", model, "--host", host, "--port", "0",
            *extra_args,
        ]  # fmt: skip
        super().__init__(command, env=env, startup_timeout=startup_timeout)

    def stats(self) -> dict[str, Any]:
        """The server's request counters (``GET /stats``)."""
        return httpx.get(f"{self.base_url}/stats", timeout=5).json()

    def set_fault(self, **faults: Any) -> None:
        """Change the faults the server injects (``POST /admin/fault``); no argument clears
        the delays and failures."""
        body = faults or {
            "delay_ms": 0, "chunk_delay_ms": 0, "fail_rate": 0, "fail_first": 0, "hostile": None,
        }  # fmt: skip
        httpx.post(f"{self.base_url}/admin/fault", json=body, timeout=5).raise_for_status()


def start_replays(
    data: str | Path,
    models: Sequence[str],
    *,
    extra_args: Mapping[str, Sequence[str]] | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, ReplayServerProcess]:
    """Start one replay server per model, in parallel (``extra_args`` per model); if one fails
    to start, every one is stopped and its error raised."""
    extra_args = extra_args or {}
    servers = {
        model: ReplayServerProcess(data, model, extra_args=list(extra_args.get(model, ())), env=env)
        for model in models
    }
    with ThreadPoolExecutor(max(1, len(servers))) as pool:
        futures = [pool.submit(server.start) for server in servers.values()]
        errors = [e for e in (f.exception() for f in futures) if e is not None]
    if errors:
        for server in servers.values():
            server.stop()
        raise errors[0]
    return servers


if __name__ == "__main__":
    sys.exit(main())
