"""Prometheus metrics of the gateway, in a registry of its own (not the process-global one).

Costs are the registry's *estimated* per-query costs (the same numbers the router trades
against error), not billed amounts. The saving of a request is the estimated cost of the pool's
most accurate model minus the estimated cost of the model that answered; it is negative when a
request had to use something dearer than that model (e.g. a fallback or a named model).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from uniroute.gateway.traffic import TrafficHistory

# Routing runs in tens of microseconds for pre-embedded prompts and up to ~100 ms with a
# neural encoder; upstream calls take from a millisecond (loopback) to minutes.
ROUTING_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
UPSTREAM_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
)


class GatewayMetrics:
    """All gateway metrics; ``render()`` gives the Prometheus text exposition, ``history`` the
    last day of them minute by minute (for the dashboard)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, replica: str | None = None) -> None:
        self.history = TrafficHistory()
        self.registry = CollectorRegistry(auto_describe=True)
        if replica:
            # OpenMetrics' target metadata: one series naming the replica these metrics are
            # of, for dashboards that join it (Prometheus also labels scrapes by instance).
            self.registry.set_target_info({"replica": replica})
        self.requests = Counter(
            "uniroute_requests",
            "Completed requests by API endpoint, answering model and status",
            ["endpoint", "model", "status"],
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "uniroute_upstream_errors",
            "Failed upstream calls by model and kind of failure",
            ["model", "kind"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "uniroute_fallbacks",
            "Requests answered by a model other than the first choice",
            registry=self.registry,
        )
        self.routing_latency = Histogram(
            "uniroute_routing_latency_seconds",
            "Time to embed the prompt and compute the routing decision",
            buckets=ROUTING_BUCKETS,
            registry=self.registry,
        )
        self.upstream_latency = Histogram(
            "uniroute_upstream_latency_seconds",
            "Upstream time to the full answer (non-streamed) or to the response headers (streamed)",
            ["model"],
            buckets=UPSTREAM_BUCKETS,
            registry=self.registry,
        )
        self.estimated_cost = Counter(
            "uniroute_estimated_cost",
            "Estimated cost of answered requests, per model (USD)",
            ["model"],
            registry=self.registry,
        )
        self.estimated_saving = Counter(
            "uniroute_estimated_saving",
            "Estimated cost saved versus sending every answered request to the most accurate "
            "pool model (USD; a negative amount is recorded as uniroute_estimated_overspend)",
            registry=self.registry,
        )
        self.estimated_overspend = Counter(
            "uniroute_estimated_overspend",
            "Estimated cost above the most accurate pool model's, for requests that used a "
            "dearer model (USD)",
            registry=self.registry,
        )
        self.breaker_open = Gauge(
            "uniroute_circuit_open",
            "1 while a model is out of rotation (circuit open)",
            ["model"],
            registry=self.registry,
        )
        self.servable_models = Gauge(
            "uniroute_pool_servable_models",
            "Servable models in the pool (enabled, with an endpoint)",
            registry=self.registry,
        )
        self.verify_requests = Counter(
            "uniroute_verify_requests",
            "Verified requests by outcome: agreed (the candidates' answers agreed), escalated "
            "(the target was asked), single (the plan asked one model), unavailable (no plan: "
            "routed as usual)",
            ["outcome"],
            registry=self.registry,
        )
        self.verify_extra_calls = Counter(
            "uniroute_verify_extra_calls",
            "Upstream calls a verified request made besides the one whose answer it returned",
            ["model"],
            registry=self.registry,
        )
        self.verify_latency = Histogram(
            "uniroute_verify_latency_seconds",
            "Time from the plan to the answer of a verified request (every call it made)",
            buckets=UPSTREAM_BUCKETS,
            registry=self.registry,
        )
        # Virtual client keys: labelled by key id (never a secret) and team, so there is one
        # series per key created, whatever the traffic.
        self.key_spend = Counter(
            "uniroute_key_spend",
            "Spend of answered requests per virtual client key and team (USD), by how it was "
            "found: usage (the upstream's token counts x the price), per_query (the price), "
            "estimated (usage missing or malformed: estimated from the text)",
            ["key", "team", "basis"],
            registry=self.registry,
        )
        self.team_spend = Counter(
            "uniroute_team_spend",
            "Spend of answered requests per team of virtual client keys (USD; 'none': keys "
            "without a team)",
            ["team"],
            registry=self.registry,
        )
        self.key_requests = Counter(
            "uniroute_key_requests",
            "Requests admitted per virtual client key and team (answered or not)",
            ["key", "team"],
            registry=self.registry,
        )
        self.key_refusals = Counter(
            "uniroute_key_refusals",
            "Requests refused for a virtual client key's limits, by reason (rate_limit, "
            "daily_budget, monthly_budget, model_not_allowed)",
            ["key", "reason"],
            registry=self.registry,
        )
        self.key_estimated_usage = Counter(
            "uniroute_key_estimated_usage",
            "Answers on virtual keys whose cost was estimated because the upstream's usage was "
            "missing or malformed, by model and reason",
            ["model", "reason"],
            registry=self.registry,
        )
        # Labelled children by (metric, label values): prometheus_client's labels() checks and
        # locks on every call, which every request would otherwise pay four or five times.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._circuit_open: dict[str, bool] = {}

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def count_request(self, endpoint: str, model: str, status: str) -> None:
        """Count one completed request."""
        self._child(self.requests, endpoint, model, status).inc()
        self.history.count_request(endpoint, model, status)

    def count_fallback(self) -> None:
        """Count one request answered by a model other than its first choice."""
        self.fallbacks.inc()
        self.history.count_fallback()

    def count_upstream_error(self, model: str, kind: str) -> None:
        """Count one failed upstream call."""
        self._child(self.upstream_errors, model, kind).inc()

    def observe_upstream_latency(self, model: str, seconds: float) -> None:
        """Record how long one model took (to its full answer, or to a stream's headers)."""
        self._child(self.upstream_latency, model).observe(seconds)

    def set_circuit_open(self, model: str, is_open: bool) -> None:
        """Mirror a model's circuit state (written only when it changed)."""
        if self._circuit_open.get(model) is not is_open:
            self._circuit_open[model] = is_open
            self._child(self.breaker_open, model).set(1.0 if is_open else 0.0)

    def record_answer(self, model: str, cost: float | None, reference_cost: float | None) -> None:
        """Count the estimated cost of an answered request and its saving against the reference."""
        if cost is None:
            return
        self._child(self.estimated_cost, model).inc(cost)
        if reference_cost is None:
            self.history.add_cost(cost, None)
            return
        saving = reference_cost - cost
        self.history.add_cost(cost, saving)
        if saving >= 0:
            self.estimated_saving.inc(saving)
        else:
            self.estimated_overspend.inc(-saving)

    def record_verified(
        self,
        outcome: str,
        answered_by: str | None,
        call_costs: dict[str, float],
        reference_cost: float | None,
        seconds: float,
    ) -> None:
        """Count a verified request: its outcome, every call's estimated cost, its extra calls
        and its saving against the reference (all its calls together)."""
        self._child(self.verify_requests, outcome).inc()
        self.verify_latency.observe(seconds)
        for model, cost in call_costs.items():
            self._child(self.estimated_cost, model).inc(cost)
            if model != answered_by:
                self._child(self.verify_extra_calls, model).inc()
        total = sum(call_costs.values())
        if reference_cost is None or not call_costs:
            self.history.add_cost(total, None)
            return
        saving = reference_cost - total
        self.history.add_cost(total, saving)
        if saving >= 0:
            self.estimated_saving.inc(saving)
        else:
            self.estimated_overspend.inc(-saving)

    def record_key_spend(self, key: str, team: str, amount: float, basis: str) -> None:
        """Count one answer's spend against its key and team."""
        if amount > 0:
            self._child(self.key_spend, key, team, basis).inc(amount)
            self._child(self.team_spend, team).inc(amount)
            self.history.count_key(key, team, spend=amount)

    def count_key_request(self, key: str, team: str) -> None:
        """Count one admitted request of a virtual key."""
        self._child(self.key_requests, key, team).inc()
        self.history.count_key(key, team, requests=1)

    def count_key_refusal(self, key: str, reason: str) -> None:
        """Count one request refused for a key's limits."""
        self._child(self.key_refusals, key, reason).inc()

    def count_estimated_usage(self, model: str, reason: str) -> None:
        """Count one answer whose usage had to be estimated (``missing`` or ``malformed``)."""
        self._child(self.key_estimated_usage, model, reason).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
