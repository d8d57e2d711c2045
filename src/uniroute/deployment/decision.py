"""Where one prompt goes, and why: the routing decision over one pool snapshot."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from uniroute.pool import Pool


@dataclass(frozen=True, eq=False)
class DecisionBatch:
    """Arrays shared by several decisions (columns = models; rows = the prompts of one routing
    call, or the clusters of a decision table)."""

    pool: Pool
    errors: np.ndarray
    objective: np.ndarray
    allowed: np.ndarray
    weights: np.ndarray | None
    error_std: np.ndarray | None = None
    #: Which models can take the request (its capabilities, its context), when the routing call
    #: restricted the candidates to them (None: no restriction).
    capable: np.ndarray | None = None
    #: Per row, the column the argmin picks without that restriction (None: no restriction).
    unrestricted_choice: np.ndarray | None = None
    #: mu times each model's expected latency, in the objective (None: latency had no part).
    latency_penalty: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class Decision:
    """Where one prompt goes, and why.

    ``model`` minimises ``estimated_error + lam * cost`` among the allowed models: the pool's
    servable models (those with an endpoint) when it has any, else every model, within
    ``max_cost`` when one is given; so the model named here is the one the gateway calls first.
    ``ranking`` lists the allowed models best-first (ties to the cheaper), for fallback;
    ``not_servable`` the enabled models left out for having no endpoint. ``risk`` is the number
    of standard deviations added to every estimate before the argmin (0: decide on the mean).
    ``estimated_error`` and ``cost`` are the chosen model's; ``evidence`` counts the
    representative prompts behind that estimate on this prompt's cluster and ``error_interval``
    is its 95% interval (None when the estimator gives no uncertainty). ``estimated_errors``,
    ``costs`` and ``objectives`` map every pool model to its own.
    ``cluster`` is the prompt's (dominant) cluster and ``cluster_weights`` its Phi(x), for the
    cluster-based routers. ``policy`` says where ``lam`` came from ("default", "explicit",
    "max_cost" or "uncalibrated"); ``warning`` is set when the default policy is missing or stale.
    When the routing call named the models that can take the request (``capable``: tools,
    images, JSON mode, its context), only those are allowed: ``not_capable`` lists the others
    and ``capability_rule_changed_pick`` says whether the pick without that rule
    (``unrestricted_model``) differs.
    The per-model mappings are built on first access, so routing a large batch costs no
    per-model Python work until a decision is inspected.

    Nothing here depends on the prompt beyond its estimated errors and cluster weights. With a
    hard K-means router those are the same for every prompt of a cluster, so the router gives
    all the prompts of one cluster, routed over one snapshot with one policy, the *same*
    Decision object: treat its lists and mappings as read-only.
    """

    model: str
    lam: float
    cluster: int | None
    max_cost: float | None
    policy: str
    warning: str | None
    batch: DecisionBatch = field(repr=False)
    row: int = field(repr=False)
    risk: float = 0.0
    #: mu, the weight of expected latency in the objective (0: latency had no part).
    latency_weight: float = 0.0

    @property
    def pool(self) -> Pool:
        """The pool snapshot this decision was made over."""
        return self.batch.pool

    @property
    def estimated_error(self) -> float:
        """The chosen model's estimated error on this prompt."""
        return float(self.batch.errors[self.row, self.pool.index(self.model)])

    @property
    def cost(self) -> float:
        """The chosen model's expected cost per query."""
        return self.pool.cost(self.model)

    def expected_latency(self, model: str | None = None) -> float | None:
        """A model's (default: the chosen one's) expected seconds per answer as the objective
        counted it (None: latency had no part in this decision)."""
        penalty = self.batch.latency_penalty
        if penalty is None or self.latency_weight == 0:
            return None
        return float(penalty[self.pool.index(model or self.model)]) / self.latency_weight

    @property
    def evidence(self) -> int | None:
        """Representative prompts behind the chosen model's estimate on this prompt's cluster."""
        if self.pool.evidence is None or self.cluster is None:
            return None
        return int(self.pool.evidence[self.pool.index(self.model), self.cluster])

    @property
    def error_interval(self) -> tuple[float, float] | None:
        """A 95% interval of the chosen model's error on this prompt (None: no uncertainty)."""
        if self.batch.error_std is None:
            return None
        std = float(self.batch.error_std[self.row, self.pool.index(self.model)])
        center = self.estimated_error
        return max(0.0, center - 1.96 * std), min(1.0, center + 1.96 * std)

    @functools.cached_property
    def evidence_by_model(self) -> dict[str, int] | None:
        """Representative prompts behind each pool model's estimate on this prompt's cluster."""
        if self.pool.evidence is None or self.cluster is None:
            return None
        column = self.pool.evidence[:, self.cluster].astype(int).tolist()
        return dict(zip(self.pool.names, column, strict=True))

    @functools.cached_property
    def not_servable(self) -> list[str]:
        """Enabled models the gateway cannot call (no endpoint), left out of the ranking."""
        if not self.pool.servable:
            return []
        return [n for n in self.pool.names if self.pool.endpoint(n) is None]

    @functools.cached_property
    def not_capable(self) -> list[str]:
        """Models left out because they cannot take the request (its capabilities, context)."""
        if self.batch.capable is None:
            return []
        excluded = set(self.not_servable)
        return [
            n
            for n, ok in zip(self.pool.names, self.batch.capable, strict=True)
            if not ok and n not in excluded
        ]

    @property
    def unrestricted_model(self) -> str:
        """The model the argmin picks without the capability rule (``model`` without one)."""
        if self.batch.unrestricted_choice is None:
            return self.model
        return self.pool.names[int(self.batch.unrestricted_choice[self.row])]

    @property
    def capability_rule_changed_pick(self) -> bool:
        """Whether restricting to the models that can take the request changed the pick."""
        return self.unrestricted_model != self.model

    @functools.cached_property
    def estimated_errors(self) -> dict[str, float]:
        """Estimated error of every pool model on this prompt."""
        return dict(zip(self.pool.names, self.batch.errors[self.row].tolist(), strict=True))

    @functools.cached_property
    def costs(self) -> dict[str, float]:
        """Expected cost per query of every pool model."""
        return dict(zip(self.pool.names, self.pool.costs.tolist(), strict=True))

    @functools.cached_property
    def objectives(self) -> dict[str, float]:
        """``estimated_error + lam * cost`` of every pool model."""
        return dict(zip(self.pool.names, self.batch.objective[self.row].tolist(), strict=True))

    @functools.cached_property
    def ranking(self) -> list[str]:
        """Allowed models, best first (the chosen model first; ties to the cheaper)."""
        allowed = np.flatnonzero(self.batch.allowed)
        costs = self.pool.costs
        order = np.lexsort((costs[allowed], self.batch.objective[self.row, allowed]))
        ranked = [self.pool.names[j] for j in allowed[order]]
        ranked.remove(self.model)
        return [self.model, *ranked]

    @functools.cached_property
    def servable_ranking(self) -> list[str]:
        """The ranking restricted to models the gateway can call (those with an endpoint)."""
        return [name for name in self.ranking if self.pool.endpoint(name) is not None]

    @functools.cached_property
    def over_budget(self) -> list[str]:
        """Models left out because their cost exceeds ``max_cost``."""
        excluded = set(self.not_servable) | set(self.not_capable)
        return [
            n
            for n, ok in zip(self.pool.names, self.batch.allowed, strict=True)
            if not ok and n not in excluded
        ]

    @functools.cached_property
    def cluster_weights(self) -> list[float] | None:
        """Phi(x) over the clusters (one-hot for K-means), or None for other routers."""
        if self.batch.weights is None:
            return None
        return self.batch.weights[self.row].tolist()

    def capability_dict(self) -> dict[str, Any]:
        """What the capability rule did to this decision (JSON-serialisable)."""
        return {
            "not_capable": self.not_capable,
            "capability_rule_changed_pick": self.capability_rule_changed_pick,
            "unrestricted_model": self.unrestricted_model,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form with every field (the capability rule's: ``capability_dict``)."""
        return {
            "model": self.model,
            "estimated_error": self.estimated_error,
            "error_interval": self.error_interval,
            "evidence": self.evidence,
            "cost": self.cost,
            "lam": self.lam,
            "risk": self.risk,
            "latency_weight": self.latency_weight,
            "expected_latency": self.expected_latency(),
            "max_cost": self.max_cost,
            "policy": self.policy,
            "warning": self.warning,
            "estimated_errors": self.estimated_errors,
            "costs": self.costs,
            "objectives": self.objectives,
            "ranking": self.ranking,
            "servable_ranking": self.servable_ranking,
            "over_budget": self.over_budget,
            "not_servable": self.not_servable,
            "evidence_by_model": self.evidence_by_model,
            "cluster": self.cluster,
            "cluster_weights": self.cluster_weights,
        }
