"""Calling pool models for one request: the per-model call, the answer's headers, the error
when none answered.

Shared by the plain path (``routes``) and verify-and-escalate (``verify``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.requests import Request

from uniroute.deployment import Decision, Snapshot
from uniroute.gateway.access_log import GATEWAY_LOGGER, request_id_of
from uniroute.gateway.dependencies import Gateway
from uniroute.gateway.errors import ApiError
from uniroute.gateway.fallback import AllModelsFailedError, UpstreamError
from uniroute.gateway.upstream import UpstreamAnswer, UpstreamStream, UpstreamTarget

logger = logging.getLogger(GATEWAY_LOGGER)


def answer_headers(model: str, request: Request, attempts: int) -> dict[str, str]:
    """The headers of an answer: which model gave it, after how many attempts, the request id."""
    return {
        "x-uniroute-model": model,
        "x-uniroute-attempts": str(attempts),
        "x-request-id": request_id_of(request),
    }


def error_of(decision: Decision, model: str) -> float:
    """A pool model's estimated error in a decision (without building the per-model mapping)."""
    return float(decision.batch.errors[decision.row, decision.pool.index(model)])


def decision_headers(
    decision: Decision,
    model: str,
    snapshot: Snapshot,
    reference_cost: float | None,
    changed_by: Sequence[str] = (),
    session_rule: str | None = None,
) -> dict[str, str]:
    """Why a routed answer came from ``model`` (the model that answered, after any fallback):
    its estimated error and cost, the lambda used, the prompt's cluster, how many
    representative prompts back the estimate, the estimated saving against the most accurate
    servable model, which rules (session, capability) changed the router's pick, and, when
    latency had a part, its weight and the model's expected seconds."""
    pool = decision.pool
    column = pool.index(model)
    headers = {
        "x-uniroute-estimated-error": f"{error_of(decision, model):.4f}",
        "x-uniroute-cost": f"{snapshot.pool.cost(model):.6g}",
        "x-uniroute-lambda": f"{decision.lam:.6g}",
        "x-uniroute-routed-to": decision.model,
        "x-uniroute-changed-by": ",".join(changed_by) or "none",
    }
    if decision.cluster is not None:
        headers["x-uniroute-cluster"] = str(decision.cluster)
    if pool.evidence is not None and decision.cluster is not None:
        headers["x-uniroute-evidence"] = str(int(pool.evidence[column, decision.cluster]))
    if reference_cost is not None:
        headers["x-uniroute-saving"] = f"{reference_cost - snapshot.pool.cost(model):.6g}"
    if session_rule is not None:
        headers["x-uniroute-session"] = session_rule
    expected = decision.expected_latency(model)
    if expected is not None:
        headers["x-uniroute-latency-weight"] = f"{decision.latency_weight:.6g}"
        headers["x-uniroute-expected-latency"] = f"{expected:.4f}"
    return headers


def all_failed_error(exc: AllModelsFailedError) -> ApiError:
    """The client's error when no model answered: 503 if every one was out of rotation."""
    if exc.attempts and all(a.outcome == "skipped" for a in exc.attempts):
        return ApiError(
            503,
            f"every candidate model is out of rotation after repeated failures ({exc}); "
            "retry later",
            code="models_unavailable",
        )
    return ApiError(502, str(exc), code="upstream_failed")


def model_caller(
    gateway: Gateway,
    snapshot: Snapshot,
    path: str,
    body: dict[str, Any],
    stream: bool,
    request_id: str,
) -> Callable[[str], Awaitable[UpstreamAnswer | UpstreamStream]]:
    """The call of one pool model for this request: an answer, or an UpstreamError for every
    way the model can fail (so the fallback loop and the breakers see it)."""

    async def call(model: str) -> UpstreamAnswer | UpstreamStream:
        endpoint = snapshot.pool.endpoint(model)
        assert endpoint is not None  # candidates are servable models of this snapshot
        target = UpstreamTarget(model, endpoint)
        try:
            if stream:
                return await gateway.upstream.open_stream(target, path, body, request_id)
            return await gateway.upstream.complete(target, path, body, request_id)
        except UpstreamError as failure:
            if failure.counts_against_model:
                # The breaker is updated by the fallback loop right after this re-raise.
                gateway.metrics.count_upstream_error(model, failure.kind)
            raise
        except Exception as exc:
            # Whatever else went wrong with this model's answer is this model failing: the next
            # model is tried and the breaker counts it, instead of one upstream failing the
            # request. Logged with its traceback, since it may also be a bug here.
            logger.warning(
                "unexpected failure calling %s", model, exc_info=True,
                extra={"request_id": request_id},
            )  # fmt: skip
            gateway.metrics.count_upstream_error(model, "unexpected")
            raise UpstreamError(
                f"{model!r} failed unexpectedly ({type(exc).__name__})", kind="unexpected"
            ) from exc

    return call
