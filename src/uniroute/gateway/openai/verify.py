"""Verify and escalate in the gateway: ask two cheap models, answer when they agree.

For ``model: "uniroute:verify"`` (or the header ``x-uniroute-verify: true``) the router's plan
for the prompt (``deployment.verify``) names one model, or two *candidates* and a *target*. Both
candidates are called at once; when their answers agree (the same canonical key for the
prompt's kind of answer: an option letter, a number, normalised text) the first candidate's
answer is returned, else the target is asked and its answer is returned. The answer returned is
always one model's real answer, byte for byte as the plain path returns it, never a merge.

Failures use the plain path's machinery: each call goes through the fallback loop and the
circuit breakers; a candidate that fails leaves nothing to compare, so the target is asked; a
target that fails falls back along the decision's ranking, and if nothing else answers, a
candidate's answer is returned rather than an error. A plan needs the models' answers on the
representative prompts; without them the request is routed as usual and says so.

The headers say what happened: ``x-uniroute-verify`` (``agreed``, ``escalated``, ``single`` or
``unavailable``), ``x-uniroute-verify-plan`` (``a+b->e``), ``x-uniroute-called`` (every model
that was called, in order) and ``x-uniroute-verify-reason``. ``/metrics`` counts outcomes,
extra calls and every call's estimated cost; the access log has the same fields.

Streaming is refused with a 400: the answers have to be complete before they can be compared.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from uniroute._json import JsonLimitError, loads_bounded
from uniroute.answers import answer_key, answers_agree
from uniroute.deployment import Snapshot, VerifyPlan
from uniroute.gateway.access_log import note
from uniroute.gateway.dependencies import Gateway, VerifiedDecision
from uniroute.gateway.errors import ApiError
from uniroute.gateway.fallback import (
    AllModelsFailedError,
    FallbackResult,
    call_with_fallback,
)
from uniroute.gateway.openai.calls import all_failed_error, answer_headers
from uniroute.gateway.upstream import UpstreamAnswer, UpstreamStream

Call = Callable[[str], Awaitable[UpstreamAnswer | UpstreamStream]]
AGREED, ESCALATED, SINGLE, UNAVAILABLE = "agreed", "escalated", "single", "unavailable"


def refuse_stream() -> ApiError:
    """The 400 for a verified request that asks for a stream."""
    return ApiError(
        400,
        "verify compares complete answers before it answers, so it cannot stream; send "
        "'stream': false, or drop verify",
        param="stream",
        code="verify_cannot_stream",
    )


def answer_text(body: bytes) -> str | None:
    """The text of the first choice of a chat or text completion body (None: none)."""
    try:
        payload = loads_bounded(body)
    except JsonLimitError:
        return None
    choices = payload.get("choices") if isinstance(payload, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return None
    choice = choices[0]
    message = choice.get("message")
    text = message.get("content") if isinstance(message, dict) else choice.get("text")
    return text if isinstance(text, str) else None


async def _ask(model: str, call: Call, gateway: Gateway) -> FallbackResult[Any] | None:
    """One candidate's answer, or None when it failed (out of rotation, or its call failed)."""
    try:
        return await call_with_fallback([model], call, gateway.breakers, 1)
    except AllModelsFailedError as exc:
        gateway.update_breaker_gauges(a.model for a in exc.attempts)
        return None


async def answer_verified(
    gateway: Gateway,
    request: Request,
    text: str,
    verified: VerifiedDecision,
    snapshot: Snapshot,
    call: Call,
) -> Response:
    """Answer one verified request (see the module doc)."""
    plan, unavailable = verified.plan, verified.unavailable
    started = time.perf_counter()
    ranking = verified.decision.servable_ranking
    if plan is None or plan.is_single:
        first = [plan.candidates[0]] if plan is not None else []
        outcome = UNAVAILABLE if plan is None else SINGLE
        reason = unavailable if plan is None else "the plan asks one model"
        result = await _fallback(gateway, [*first, *ranking], call)
        return _respond(gateway, request, snapshot, plan, outcome, reason, result, [result],
                        started)  # fmt: skip
    a, b = plan.candidates
    assert plan.target is not None
    # Both calls run to their end even if one is refused, so neither is left running unseen.
    asked = await asyncio.gather(
        _ask(a, call, gateway), _ask(b, call, gateway), return_exceptions=True
    )
    for refused in asked:
        if isinstance(refused, BaseException):
            raise refused  # the upstream refused the request itself: the caller answers it
    answers = [r for r in asked if not isinstance(r, BaseException)]
    answered = [r for r in answers if r is not None]
    keys = {
        r.model: answer_key(answer_text(r.value.body), plan.answer_kind, text)
        for r in answered
        if isinstance(r.value, UpstreamAnswer) and plan.answer_kind is not None
    }
    note(request, answer_keys=keys)
    if len(answered) == 2 and answers_agree(keys.get(a), keys.get(b)):
        agreed = f"the answers agree ({keys[a]})"
        return _respond(gateway, request, snapshot, plan, AGREED, agreed, answered[0], answered,
                        started)  # fmt: skip
    if len(answered) == 2:
        unreadable = [m for m in (a, b) if keys.get(m) is None]
        if unreadable:
            reason = f"no comparable answer from {' and '.join(unreadable)}"
        else:
            reason = f"the answers differ ({keys[a]} vs {keys[b]})"
    else:
        failed = [m for m, r in zip((a, b), answers, strict=True) if r is None]
        reason = f"{' and '.join(failed)} failed"
    order = [plan.target, *(m for m in ranking if m != plan.target)]
    try:
        result = await _fallback(gateway, order, call)
    except ApiError:
        if not answered:
            raise
        # Nothing else answered: a candidate's real answer beats an error.
        result = answered[0]
        reason += f"; {plan.target} and the fallbacks failed, answering with {result.model}"
    return _respond(gateway, request, snapshot, plan, ESCALATED, reason, result,
                    [*answered, result], started)  # fmt: skip


async def _fallback(gateway: Gateway, candidates: Sequence[str], call: Call) -> FallbackResult[Any]:
    """The plain path's fallback loop over ``candidates`` (each model once)."""
    unique = list(dict.fromkeys(candidates))
    try:
        result = await call_with_fallback(
            unique, call, gateway.breakers, gateway.config.max_models_per_request
        )
    except AllModelsFailedError as exc:
        gateway.update_breaker_gauges(a.model for a in exc.attempts)
        raise all_failed_error(exc) from None
    gateway.update_breaker_gauges(a.model for a in result.attempts)
    return result


def _respond(
    gateway: Gateway,
    request: Request,
    snapshot: Snapshot,
    plan: VerifyPlan | None,
    outcome: str,
    reason: str,
    result: FallbackResult[Any],
    calls: Sequence[FallbackResult[Any]],
    started: float,
) -> Response:
    """The returned model's answer with the verify headers, metrics and log fields."""
    answer = result.value
    assert isinstance(answer, UpstreamAnswer)  # verified requests are never streamed
    called = list(
        dict.fromkeys(a.model for r in calls for a in r.attempts if a.outcome != "skipped")
    )
    answered = list(dict.fromkeys(r.model for r in calls))
    seconds = time.perf_counter() - started
    pool = snapshot.pool
    gateway.metrics.record_verified(
        outcome,
        result.model,
        {m: pool.cost(m) for m in answered},
        gateway.reference_cost(snapshot),
        seconds,
    )
    gateway.metrics.observe_upstream_latency(result.model, answer.seconds)
    gateway.latency.observe(result.model, answer.seconds, answer.seconds)
    note(
        request,
        model=result.model,
        verify=outcome,
        verify_plan=None if plan is None else plan.label(),
        verify_reason=reason,
        called=called,
        verify_seconds=round(seconds, 6),
        attempts=[a.__dict__ for r in calls for a in r.attempts],
    )
    headers = answer_headers(result.model, request, len(called))
    headers.update(
        {
            "x-uniroute-verify": outcome,
            "x-uniroute-called": ",".join(called),
            "x-uniroute-verify-reason": _header_value(reason),
        }
    )
    if plan is not None:
        headers["x-uniroute-verify-plan"] = plan.label()
    return Response(answer.body, status_code=200, media_type=answer.content_type, headers=headers)


def _header_value(text: str, limit: int = 300) -> str:
    """Text safe for a header value: printable ASCII, cut to ``limit`` characters."""
    safe = "".join(c if " " <= c <= "~" else "?" for c in text)
    return safe[:limit]
