"""The gateway's service object and what a handler reads from its request (auth, the gateway).

:class:`Gateway` holds the deployed :class:`~uniroute.deployment.Router` and everything that
lives as long as the server: settings, metrics, circuit breakers, the routing batcher, the
upstream client and the admin jobs. A handler takes ``gateway.router.snapshot`` **once** and
uses that snapshot for the whole request, so the decision, its servable candidates, their
endpoints and their costs all describe the same pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple, ParamSpec, TypeVar

import anyio
import anyio.to_thread
from starlette.requests import HTTPConnection

from uniroute.deployment import Decision, Router, Snapshot, VerifyPlan
from uniroute.errors import NoCapableModelError, RouterError
from uniroute.gateway.access_log import GATEWAY_LOGGER
from uniroute.gateway.admin.jobs import JobTracker
from uniroute.gateway.admin.onboarding import ONBOARDING_JOB, onboarding_runner
from uniroute.gateway.batching import RouteItem, RoutingBatcher
from uniroute.gateway.config import GatewayConfig
from uniroute.gateway.errors import ApiError
from uniroute.gateway.fallback import CLOSED, BreakerBoard
from uniroute.gateway.keys import CALLER_KEY, KeyGuard
from uniroute.gateway.latency import LatencyBoard
from uniroute.gateway.metrics import GatewayMetrics
from uniroute.gateway.openai.policy import ROUTED_ALIAS, RoutingPolicy
from uniroute.gateway.openai.requirements import Requirements
from uniroute.gateway.sessions import SessionCache
from uniroute.gateway.upstream import UpstreamClient
from uniroute.onboarding.upstream_hosts import EndpointPolicy

logger = logging.getLogger(GATEWAY_LOGGER)

# After a pushed change, wait this long for the rest of a burst (a script adding models one by
# one) before reading the registry: a burst costs one or two reads, not one per change.
_PUSH_DEBOUNCE_S = 0.02
# How long shutdown waits for the registry listener's thread (a daemon: it cannot outlive us).
_WATCHER_STOP_S = 2.0
# How long shutdown waits for released jobs' threads to notice and stop (daemons too).
_JOB_STOP_S = 2.0

P = ParamSpec("P")
R = TypeVar("R")


class VerifiedDecision(NamedTuple):
    """A prompt's decision and its verify plan (None, with the reason, when none can be made)."""

    decision: Decision
    plan: VerifyPlan | None
    unavailable: str


def _routing_error(exc: RouterError, policy: RoutingPolicy, snapshot: Snapshot) -> ApiError:
    """The client's error for a prompt the router could not route."""
    # With models in the pool, the only routing error a valid ceiling can cause is that no
    # model is cheap enough.
    if policy.max_cost is not None and len(snapshot.pool):
        return ApiError(400, str(exc), param="model", code="no_model_within_budget")
    return ApiError(503, f"cannot route: {exc}", code="routing_unavailable")


class Gateway:
    """Everything a request needs besides its own body; one per application."""

    def __init__(
        self, router: Router, config: GatewayConfig, metrics: GatewayMetrics | None = None
    ) -> None:
        self.router = router
        self.config = config
        self.metrics = metrics or GatewayMetrics(config.replica())
        self.breakers = BreakerBoard(config.breaker_failure_threshold, config.breaker_cooldown_s)
        self.routing_limiter = anyio.CapacityLimiter(config.routing_threads)
        # Read once, here: the encoder's declared cost decides where prompts are embedded, and
        # reading it loads a lazily loaded encoder, which must not happen on the event loop.
        self.batcher = RoutingBatcher(
            router.embed,
            router.route_embeddings,
            self.routing_limiter,
            config.routing_batch_size,
            inline_max_chars=router.inline_max_chars,
        )
        #: The registry's jobs; this replica runs the ones it starts and resumes abandoned
        #: ones. Its owner name is unique per process, even where replicas share a name.
        self.jobs = JobTracker(
            router.registry.jobs,
            f"{config.replica()}/{secrets.token_hex(3)}",
            lease_s=config.job_lease_s,
            max_attempts=config.job_max_attempts,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Which upstream hosts may be called (``upstream_allowlist``): checked when a model is
        #: added or onboarded, and before each upstream call (``refusal``, cached, no DNS).
        self.endpoint_policy = EndpointPolicy(config.upstream_allowlist)
        self.jobs.runners[ONBOARDING_JOB] = onboarding_runner(
            router, self.endpoint_policy, self.observe_soon
        )
        #: The registry's virtual client keys: who is calling, their limits and spend.
        self.keys = KeyGuard(router.registry.keys, self.metrics)
        #: How long each model takes to answer, on this replica's own calls.
        self.latency = LatencyBoard()
        #: Conversations' sessions: which model answered each one's last turn.
        self.sessions = SessionCache(
            router.registry,
            config.session_store,
            ttl_s=config.session_ttl_s,
            max_sessions=config.max_sessions,
        )
        self._upstream: UpstreamClient | None = None
        #: True from a shutdown signal on: /readyz answers 503 so that no new traffic comes.
        self.draining = False
        self._observed: Snapshot | None = None
        self._reference: tuple[Snapshot, float | None] | None = None
        self.observe(router.snapshot)

    # ------------------------------------------------------------------ life cycle
    @property
    def upstream(self) -> UpstreamClient:
        """The pooled client of the upstream endpoints (open while the app runs)."""
        if self._upstream is None:
            raise RuntimeError("the gateway is not running: its upstream client is not open")
        return self._upstream

    def open_upstream(self) -> None:
        """Open the upstream connection pools (at application start)."""
        self._upstream = UpstreamClient(self.config, self.endpoint_policy)

    def start_draining(self) -> None:
        """Report not ready from now on (the server is about to stop accepting)."""
        self.draining = True

    async def aclose(self) -> None:
        """Hand unfinished jobs back to the registry (another replica, or this one restarted,
        resumes them), then close the upstream connections."""
        try:
            released = await anyio.to_thread.run_sync(self.jobs.release_unfinished)
        except Exception:  # the registry is unreachable: their leases run out instead
            logger.exception("could not release the running jobs")
        else:
            if released:
                logger.info("released unfinished jobs", extra={"jobs": released})
            await anyio.to_thread.run_sync(self.jobs.wait, _JOB_STOP_S)
        if self._upstream is not None:
            await self._upstream.aclose()
            self._upstream = None

    async def tend_jobs(self) -> None:
        """Renew the leases of the jobs running here and resume abandoned ones, every third of
        a lease (so a job whose replica died is resumed within about 1.3 leases)."""
        self._loop = asyncio.get_running_loop()
        while True:
            try:
                await anyio.to_thread.run_sync(self.jobs.renew_leases)
                await anyio.to_thread.run_sync(self.jobs.resume_abandoned)
            except Exception:  # the registry is unreachable: tried again next time
                logger.exception("tending the registry's jobs failed")
            await anyio.sleep(self.config.job_lease_s / 3)

    def observe_soon(self, snapshot: Snapshot) -> None:
        """``observe`` from a job's thread: scheduled on the event loop, not waited for."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
                self._loop.call_soon_threadsafe(self.observe, snapshot)

    # ------------------------------------------------------------------ the pool
    def observe(self, snapshot: Snapshot) -> None:
        """Bring the gauges and breakers in line with a snapshot (on the event loop)."""
        if snapshot is self._observed:
            return
        self._observed = snapshot
        servable = set(snapshot.pool.servable)
        self.metrics.servable_models.set(len(servable))
        for name in list(self.breakers.states()):
            if name not in servable:
                self.breakers.forget(name)

    async def refresh(self) -> bool:
        """Re-read the registry if it changed (in a thread); True when a new pool was read."""
        changed = await anyio.to_thread.run_sync(self.router.refresh)
        # The router may also have been refreshed by a pool change: observe in any case.
        self.observe(self.router.snapshot)
        return changed

    async def change_pool(self, change: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """Run a ``pool_changes`` function in a thread; the gateway serves its result on return."""
        result = await anyio.to_thread.run_sync(lambda: change(*args, **kwargs))
        self.observe(self.router.snapshot)
        return result

    async def poll_registry(self) -> None:
        """Notice changes made by other processes (the CLI) within ``registry_poll_s``."""
        while True:
            await anyio.sleep(self.config.registry_poll_s)
            try:
                await self.refresh()
            except Exception:  # the next poll retries; serving goes on with the last pool
                logger.exception("registry refresh failed")

    async def listen_registry(self) -> None:
        """Refresh as soon as the registry pushes a change (PostgreSQL LISTEN/NOTIFY), debounced.

        Returns at once when the registry cannot push (an SQLite file) or ``registry_listen`` is
        off: then ``poll_registry`` alone notices changes. The poll runs in any case, as the
        fallback for a listener that is reconnecting.
        """
        if not self.config.registry_listen:
            return
        loop = asyncio.get_running_loop()
        pending = asyncio.Event()

        def on_change(revision: int | None) -> None:
            # Runs on the watcher's thread: it only hands the news to the event loop, never
            # waits for it (a shutdown joining that thread from the loop cannot deadlock).
            if revision is None:
                logger.info("registry listener connected: reading the registry again")
            with contextlib.suppress(RuntimeError):  # the loop is already closed: shutting down
                loop.call_soon_threadsafe(pending.set)

        # A thread (Registry.watch: psycopg's blocking API on one dedicated connection) rather
        # than an async connection on this loop: the registry layer is synchronous and shared
        # with the CLI, the thread's waits and its reconnect backoff never touch the event loop,
        # and the loop's only part is the refresh below, which reads the snapshot in a thread.
        watcher = self.router.registry.watch(on_change)
        if watcher is None:
            return
        try:
            while True:
                await pending.wait()
                await anyio.sleep(_PUSH_DEBOUNCE_S)
                # Cleared before reading: a change announced during the read triggers one more.
                pending.clear()
                try:
                    await self.refresh()
                except Exception:  # the next notification or poll retries
                    logger.exception("registry refresh failed")
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(watcher.stop, _WATCHER_STOP_S)

    def reference_cost(self, snapshot: Snapshot) -> float | None:
        """Expected per-query cost of the snapshot's most accurate model (for the savings)."""
        if self._reference is None or self._reference[0] is not snapshot:
            best = snapshot.pool.most_accurate()
            self._reference = (snapshot, None if best is None else snapshot.pool.cost(best))
        return self._reference[1]

    # ------------------------------------------------------------------ routing
    async def decide(
        self,
        text: str,
        policy: RoutingPolicy,
        snapshot: Snapshot,
        required: Requirements | None = None,
    ) -> Decision:
        """The router's decision for one prompt over ``snapshot`` (inline or batched in a thread).

        With a cheap encoder (TF-IDF) a prompt of ordinary length is embedded and routed right
        here on the event loop, in a fraction of a millisecond; anything else (MiniLM, long
        prompts) is batched in the routing threads, so it never blocks the loop. ``required``
        (what the request needs: capabilities, a context) restricts the decision to the models
        that can take it; none can is a 400 ``no_capable_model``.
        """
        started = time.perf_counter()
        capable = None if required is None else required.capable(snapshot)
        latency = self._latency_terms(policy, snapshot)
        try:
            if capable is None and latency is None:
                item = RouteItem(text, policy.lam, policy.max_cost, snapshot, policy.risk)
                decision = await self.batcher.decide(item)
            else:
                # The batcher groups by policy only: a restricted decision, or one weighing
                # latency, is routed on its own.
                decision = await self._run_alone(
                    text,
                    lambda: self._route_one(
                        self.router.embed([text]), policy, snapshot, capable, latency
                    ),
                )
        except NoCapableModelError as exc:
            raise ApiError(400, str(exc), code="no_capable_model") from None
        except RouterError as exc:
            raise _routing_error(exc, policy, snapshot) from None
        self.metrics.routing_latency.observe(time.perf_counter() - started)
        return decision

    async def _run_alone(self, text: str, work: Callable[[], R]) -> R:
        """Routing work for one prompt outside the batcher: inline when the encoder is cheap
        for ``text``, else in a routing thread."""
        limit = self.batcher.inline_max_chars
        if limit and len(text) <= limit:
            return work()
        return await anyio.to_thread.run_sync(work, limiter=self.routing_limiter)

    def _route_one(
        self,
        X: Any,
        policy: RoutingPolicy,
        snapshot: Snapshot,
        capable: frozenset[str] | None,
        latency: dict[str, Any] | None,
    ) -> Decision:
        """One embedded prompt's decision outside the batcher (restricted, or weighing latency)."""
        return self.router.route_embeddings(
            X,
            lam=policy.lam,
            max_cost=policy.max_cost,
            risk=policy.risk,
            snapshot=snapshot,
            capable=capable,
            **(latency or {}),
        )[0]

    def _latency_terms(self, policy: RoutingPolicy, snapshot: Snapshot) -> dict[str, Any] | None:
        """The latency arguments of a routing call (its weight mu and each model's expected
        seconds on this replica), or None when mu is 0: the decision ignores latency."""
        mu = policy.latency_weight
        if mu is None:
            mu = 0.0 if snapshot.policy is None else snapshot.policy.latency_weight
        if mu == 0:
            return None
        return {"latency_weight": mu, "latencies": self.latency.expected(snapshot)}

    async def decide_verified(
        self,
        text: str,
        policy: RoutingPolicy,
        snapshot: Snapshot,
        required: Requirements | None = None,
    ) -> VerifiedDecision:
        """The decision and the verify-and-escalate plan for one prompt, from one embedding
        (inline for a cheap encoder, else in a routing thread); the plan trades error against
        cost with the decision's lambda (explicit or default). With ``required``, the decision
        is among the models that can take the request, and a plan asking any other is dropped
        (the request is then routed as usual)."""
        capable = None if required is None else required.capable(snapshot)
        latency = self._latency_terms(policy, snapshot)

        def work() -> VerifiedDecision:
            X = self.router.embed([text])
            decision = self._route_one(X, policy, snapshot, capable, latency)
            try:
                plan = self.router.verify_plans(X, lam=decision.lam, snapshot=snapshot)[0]
            except RouterError as exc:  # no plan: the request is routed as usual, and says why
                return VerifiedDecision(decision, None, str(exc))
            if capable is not None:
                unable = [m for m in (*plan.candidates, plan.target) if m and m not in capable]
                if unable:
                    reason = f"the plan asks {unable}, which cannot take this request"
                    return VerifiedDecision(decision, None, reason)
            return VerifiedDecision(decision, plan, "")

        started = time.perf_counter()
        try:
            verified = await self._run_alone(text, work)
        except NoCapableModelError as exc:
            raise ApiError(400, str(exc), code="no_capable_model") from None
        except RouterError as exc:
            raise _routing_error(exc, policy, snapshot) from None
        self.metrics.routing_latency.observe(time.perf_counter() - started)
        return verified

    @staticmethod
    def check_direct_model(name: str, snapshot: Snapshot) -> None:
        """A directly named model must be a servable model (enabled, with an endpoint)."""
        servable = snapshot.pool.servable
        if name in servable:
            return
        raise ApiError(
            404,
            f"the model {name!r} does not exist or is not served here; use "
            f"'{ROUTED_ALIAS}' to route, or one of {sorted(servable)}",
            param="model",
            code="model_not_found",
        )

    def update_breaker_gauges(self, models: Iterable[str]) -> None:
        """Mirror the circuit state of these models in the metrics."""
        for model in models:
            self.metrics.set_circuit_open(model, self.breakers.get(model).state != CLOSED)


# ---------------------------------------------------------------------------- accessors
def gateway_of(request: HTTPConnection) -> Gateway:
    """The gateway serving this request."""
    return request.app.state.gateway


def bearer_token(request: HTTPConnection) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (None: none sent)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def _same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison (the time taken says nothing about how much matched)."""
    return hmac.compare_digest(given.encode(), expected.encode())


async def check_client_key(request: HTTPConnection) -> Gateway:
    """The gateway, once the request carries an accepted client key (when any key exists: a
    static one from ``client_keys_env``, or a virtual one in the registry); the caller is
    kept in the request's scope (``uniroute.gateway.keys.caller_of``) for its limits and spend."""
    gateway = gateway_of(request)
    key = bearer_token(request) or request.headers.get("api-key") or None
    caller = await gateway.keys.authenticate(key, gateway.config.client_keys())
    request.scope[CALLER_KEY] = caller
    return gateway


def require_admin(request: HTTPConnection) -> Gateway:
    """The gateway, once the request carries the admin token (403 when the admin API is off)."""
    gateway = gateway_of(request)
    token = gateway.config.admin_token()
    if token is None:
        raise ApiError(
            403,
            f"the admin API is disabled: set the environment variable "
            f"{gateway.config.admin_token_env} before starting the gateway",
            code="admin_disabled",
        )
    given = bearer_token(request)
    if given is None:
        raise ApiError(
            401,
            "admin API: send 'Authorization: Bearer <admin token>'",
            code="invalid_admin_token",
        )
    if not _same_secret(given, token):
        raise ApiError(401, "admin API: invalid admin token", code="invalid_admin_token")
    return gateway
