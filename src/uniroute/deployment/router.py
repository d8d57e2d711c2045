"""The deployed router: an artifact (encoder + fitted estimator) over the registry's pool.

``Router.load(artifact, registry)`` gives the object the command line and the HTTP gateway route
with. It holds the artifact and one immutable :class:`Snapshot` of the registry's enabled models;
``refresh()`` reads a new snapshot when the registry's revision changed (a cheap query) and swaps
it in whole, so models added, removed, re-priced or re-enabled by any process are routed to (or
away from) without a restart, and a request never sees a half-applied change.

A decision minimises ``err(x, h) + lambda * cost(h)`` over the enabled models (ties go to the
cheaper model). ``lambda`` is the caller's, or the calibrated default policy's; with a
``max_cost`` only models whose expected per-query cost is at most that are considered; with
``capable`` (the models that can take the request: tools, images, JSON mode, its context) only
those are, so the argmin is the best capable model and the fallback ranking holds capable ones
only.
Changes to the pool go through :mod:`uniroute.deployment.pool_changes`.

With a hard K-means estimator a prompt's decision depends on it only through its cluster: for a
given snapshot and policy there are K possible decisions. They are computed once per (snapshot,
policy) and kept on the snapshot (``Snapshot.derived``), so routing a prompt is finding its
cluster and looking its decision up; the decisions are the ones the general path computes,
field for field. A pool change brings a new snapshot, and with it new tables.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

import numpy as np

from uniroute._checks import non_negative_number
from uniroute.artifact import Artifact
from uniroute.deployment.decision import Decision, DecisionBatch
from uniroute.deployment.snapshot import Snapshot, SnapshotReader
from uniroute.deployment.verify import VerifyPlan, verify_plans
from uniroute.embeddings.base import inline_char_limit
from uniroute.errors import NoCapableModelError, RouterError, StateError
from uniroute.pool import Pool
from uniroute.registry import Registry, prompts_fingerprint
from uniroute.routers.uniroute_kmeans import ClusterProfileRouter, UniRouteKMeans
from uniroute.tradeoff import route_argmin

# A max_cost compared with float costs gets this relative slack, so "--max-cost 0.002" admits a
# model priced at exactly 0.002 after a round trip through the registry.
_MAX_COST_SLACK = 1e-9

_UNCALIBRATED_WARNING = (
    "no default policy is calibrated (run `uniroute calibrate`); routing with lambda=0, i.e. to "
    "the most accurate model whatever it costs"
)


@dataclass(frozen=True)
class _Policy:
    """A routing call's policy, checked and resolved against its snapshot."""

    lam: float
    label: str
    warning: str | None
    max_cost: float | None
    risk: float
    #: mu, and mu times each pool model's expected latency (None: latency plays no part).
    latency_weight: float = 0.0
    penalty: np.ndarray | None = None

    def key(self) -> tuple[object, ...]:
        """What identifies the policy's decisions; -0.0 and 0.0 differ, as they print apart."""
        max_cost = None if self.max_cost is None else self.max_cost.hex()
        return (self.label, self.warning, self.lam.hex(), max_cost, self.risk.hex())


class Router:
    """Routes prompts with an artifact's encoder and estimator over a registry's enabled models.

    Thread-safe: routing reads one immutable snapshot; ``refresh`` swaps in a new one under a lock.
    ``decision_tables=False`` computes every decision (the same decisions, more slowly: for
    checking the tables).
    """

    def __init__(
        self,
        artifact: Artifact,
        registry: Registry,
        *,
        auto_recalibrate: bool = True,
        decision_tables: bool = True,
    ):
        self.artifact = artifact
        self.registry = registry
        self.decision_tables = decision_tables
        self._check_binding()
        self._reader = SnapshotReader(artifact, registry, auto_recalibrate=auto_recalibrate)
        self._lock = threading.Lock()
        self._snapshot = self._reader.read()

    @classmethod
    def load(cls, artifact: str | Path | Artifact, registry: str | Path | Registry) -> Router:
        """Open an artifact directory (or use a loaded one) with a registry: an SQLite file, a
        ``postgresql://`` URL, or an open ``Registry``."""
        if not isinstance(artifact, Artifact):
            artifact = Artifact.load(artifact)
        if not isinstance(registry, Registry):
            registry = Registry(registry)
        return cls(artifact, registry)

    def _check_binding(self) -> None:
        binding = self.registry.binding()
        prompt_ids = self.artifact.prompt_ids
        if binding is None:
            self.registry.bind(self.artifact.artifact_id, prompt_ids)
        elif binding.prompts_fingerprint != prompts_fingerprint(prompt_ids):
            raise StateError(
                f"registry {self.registry.path} holds scores on the representative prompts of "
                f"artifact {binding.artifact_id}, not those of artifact "
                f"{self.artifact.artifact_id} ({self.artifact.path}); use the matching artifact "
                "or a new registry"
            )

    # -------------------------------------------------------------- the pool snapshot
    @property
    def snapshot(self) -> Snapshot:
        """The pool and default policy in force now (an immutable value)."""
        return self._snapshot

    @property
    def mean_input_tokens(self) -> float:
        """Estimated mean token count of the representative prompts (for token-priced models)."""
        return self._reader.mean_input_tokens

    def registry_revision(self) -> int:
        """The registry's revision read now (one small query; raises if it is unreadable)."""
        return self.registry.pool_version()

    def refresh(self) -> bool:
        """Read a new snapshot if the registry changed since the current one; True when it did."""
        if self.registry.pool_version() == self._snapshot.revision:
            return False
        with self._lock:
            if self.registry.pool_version() == self._snapshot.revision:
                return False
            self._snapshot = self._reader.read()
        return True

    def describe(self) -> dict[str, Any]:
        """Artifact, registry and policy facts (for `models list`, `/admin/pool`)."""
        snapshot = self._snapshot
        return {
            "artifact_id": self.artifact.artifact_id,
            "artifact_path": str(self.artifact.path),
            "encoder": self.artifact.encoder_id,
            "router": self.artifact.router_name,
            "n_representative_prompts": len(self.artifact.prompt_ids),
            "registry": str(self.registry.path),
            "pool_version": snapshot.revision,
            "default_lambda": snapshot.default_lambda,
            "policy_stale_reason": snapshot.policy_stale_reason,
        }

    # -------------------------------------------------------------- routing
    @property
    def inline_max_chars(self) -> int:
        """Longest prompt the encoder declares cheap enough to embed on an event loop (0: none)."""
        return inline_char_limit(self.artifact.encoder)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed prompts with the artifact's encoder."""
        if isinstance(texts, str):
            raise RouterError("embed() takes a list of texts; wrap a single prompt in a list")
        return self.artifact.encoder.encode(list(texts), show_progress=False)

    # A str is also a Sequence[str]; the first overload wins for it, as the body does.
    @overload
    def route(  # type: ignore[overload-overlap]
        self,
        prompt_or_prompts: str,
        *,
        lam: float | None = None,
        max_cost: float | None = None,
        risk: float = 0.0,
    ) -> Decision: ...

    @overload
    def route(
        self,
        prompt_or_prompts: Sequence[str],
        *,
        lam: float | None = None,
        max_cost: float | None = None,
        risk: float = 0.0,
    ) -> list[Decision]: ...

    def route(
        self,
        prompt_or_prompts: str | Sequence[str],
        *,
        lam: float | None = None,
        max_cost: float | None = None,
        risk: float = 0.0,
    ) -> Decision | list[Decision]:
        """Route one prompt (returns a Decision) or a list of prompts (returns a list)."""
        single = isinstance(prompt_or_prompts, str)
        if isinstance(prompt_or_prompts, str):
            prompts = [prompt_or_prompts]
        else:
            prompts = list(prompt_or_prompts)
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise RouterError(f"prompt {index} is a {type(prompt).__name__}, not a string")
        if not prompts:
            return []
        decisions = self.route_embeddings(
            self.embed(prompts), lam=lam, max_cost=max_cost, risk=risk
        )
        return decisions[0] if single else decisions

    def route_embeddings(
        self,
        X: np.ndarray,
        *,
        lam: float | None = None,
        max_cost: float | None = None,
        risk: float = 0.0,
        snapshot: Snapshot | None = None,
        capable: Collection[str] | None = None,
        latency_weight: float | None = None,
        latencies: Mapping[str, float] | None = None,
    ) -> list[Decision]:
        """Route pre-embedded prompts (one row each) over one snapshot (default: the current).

        With ``latencies`` (expected seconds per answer, by model) and a latency weight mu
        (``latency_weight``, else the default policy's, else 0), the objective is
        ``error + lam * cost + mu * latency``; a model with no latency counts the median of the
        others'.

        ``risk`` > 0 decides on ``estimate + risk * std`` (an upper bound of each error) where
        the estimator gives uncertainties, so thin evidence is not taken for a low error.
        ``capable`` names the models that can take these prompts (None: every model can): the
        argmin and the ranking are over those only; none of them servable is a
        ``NoCapableModelError``.
        """
        snapshot = snapshot or self._snapshot
        pool = snapshot.pool
        if not len(pool):
            raise RouterError(
                f"no enabled model in the registry {self.registry.path}; add or enable one"
            )
        X = np.asarray(X, dtype=float)
        if X.ndim == 1:
            X = X[None, :]
        lam_value, policy_label, warning = _resolve_lambda(snapshot, lam, max_cost)
        risk = non_negative_number(risk, "risk", RouterError)
        if max_cost is not None:
            max_cost = non_negative_number(max_cost, "max_cost", RouterError)
        mu = _resolve_latency_weight(snapshot, latency_weight)
        penalty = None if mu == 0 else _latency_penalty(pool, latencies, mu)
        policy = _Policy(lam_value, policy_label, warning, max_cost, risk, mu, penalty)
        mask = None if capable is None else _capable_mask(pool, capable)
        estimator = self.artifact.router
        # Latencies move with traffic: a decision with them is computed, not looked up.
        if self.decision_tables and isinstance(estimator, UniRouteKMeans) and penalty is None:
            # The capable set is part of the key: each set of models has its own argmins.
            mask_key = None if mask is None else tuple(np.flatnonzero(mask).tolist())
            table = snapshot.derived.get(
                ("decisions", *policy.key(), mask_key),
                lambda: self._decision_table(estimator, snapshot, policy, mask),
                cells=3 * estimator.n_clusters_ * len(pool),  # errors, objective, error std
            )
            return [table[k] for k in estimator.error_rows(X, pool).tolist()]
        return self._compute_decisions(X, snapshot, policy, mask)

    def verify_plans(
        self, X: np.ndarray, *, lam: float | None = None, snapshot: Snapshot | None = None
    ) -> list[VerifyPlan]:
        """Each embedded prompt's verify-and-escalate plan (``deployment.verify``) at ``lam``
        (default: the calibrated policy's), over one snapshot's servable models."""
        snapshot = snapshot or self._snapshot
        lam_value, _, _ = _resolve_lambda(snapshot, lam, None)
        X = np.asarray(X, dtype=float)
        if X.ndim == 1:
            X = X[None, :]
        return verify_plans(
            self.artifact.router, self.artifact.representative_prompts, snapshot, X, lam_value
        )

    def _allowed(
        self, pool: Pool, max_cost: float | None, capable: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Which models a decision may pick: the servable ones (all if none is) that can take
        the request, within budget; and the same without the capability rule (None without
        one), to tell whether that rule changed the pick."""
        costs = pool.costs
        # The gateway can only call models with an endpoint: when the pool has any, the others
        # are not candidates, so the decision names the model that will really be called.
        servable = np.array([e is not None for e in pool.endpoints], dtype=bool)
        allowed = servable.copy() if servable.any() else np.ones(len(costs), dtype=bool)
        unrestricted = None
        if capable is not None:
            if not (allowed & capable).any():
                considered = [n for n, ok in zip(pool.names, allowed, strict=True) if ok]
                raise NoCapableModelError(
                    f"no model can take this request; considered {considered}"
                )
            unrestricted = allowed.copy()
            allowed = allowed & capable
        if max_cost is not None:
            within = costs <= max_cost * (1 + _MAX_COST_SLACK)
            if not (allowed & within).any():
                cheapest = int(np.argmin(np.where(allowed, costs, np.inf)))
                which = "enabled model" if capable is None else "model that can take the request"
                raise RouterError(
                    f"no {which} costs at most {max_cost:g} per query; the cheapest is "
                    f"{pool.names[cheapest]!r} at {costs[cheapest]:g}"
                )
            allowed &= within
            if unrestricted is not None:
                unrestricted &= within
        return allowed, unrestricted

    def _compute_decisions(
        self, X: np.ndarray, snapshot: Snapshot, policy: _Policy, capable: np.ndarray | None = None
    ) -> list[Decision]:
        """Every prompt's decision computed from its estimated errors (any estimator)."""
        pool = snapshot.pool
        costs = pool.costs
        allowed, unrestricted = self._allowed(pool, policy.max_cost, capable)
        estimator = self.artifact.router
        risk = policy.risk
        errors = estimator.predict_error(X, pool.pessimistic(risk) if risk else pool)
        weights = (
            estimator.cluster_weights(X) if isinstance(estimator, ClusterProfileRouter) else None
        )
        shifted = errors if policy.penalty is None else errors + policy.penalty[None, :]
        choice = _choices(shifted, costs, allowed, policy.lam)
        batch = _decision_batch(
            pool, errors, allowed, policy.lam, weights, capable, unrestricted, policy.penalty
        )
        clusters = None if weights is None else weights.argmax(axis=1).tolist()
        return [
            _decision(pool.names[j], policy, None if clusters is None else clusters[i], batch, i)
            for i, j in enumerate(choice.tolist())
        ]

    def _decision_table(
        self,
        estimator: UniRouteKMeans,
        snapshot: Snapshot,
        policy: _Policy,
        capable: np.ndarray | None = None,
    ) -> tuple[Decision, ...]:
        """The decision for a prompt of each cluster (row k: cluster k), for one policy.

        The arithmetic is ``_compute_decisions``' on one row per cluster: the errors of a prompt
        of cluster k are row k of ``cluster_errors``, its weights the one-hot row k.
        """
        pool = snapshot.pool
        allowed, unrestricted = self._allowed(pool, policy.max_cost, capable)
        risk = policy.risk
        errors = estimator.cluster_errors(pool.pessimistic(risk) if risk else pool)
        weights = np.eye(estimator.n_clusters_)
        choice = _choices(errors, pool.costs, allowed, policy.lam)
        batch = _decision_batch(pool, errors, allowed, policy.lam, weights, capable, unrestricted)
        return tuple(
            _decision(pool.names[j], policy, k, batch, k) for k, j in enumerate(choice.tolist())
        )


def _capable_mask(pool: Pool, capable: Collection[str]) -> np.ndarray:
    """Which pool columns are named in ``capable`` (names not in the pool are ignored)."""
    if isinstance(capable, str):
        raise RouterError("capable must be a collection of model names, not one string")
    names = set(capable)
    return np.array([name in names for name in pool.names], dtype=bool)


def _decision_batch(
    pool: Pool,
    errors: np.ndarray,
    allowed: np.ndarray,
    lam: float,
    weights: np.ndarray | None,
    capable: np.ndarray | None = None,
    unrestricted: np.ndarray | None = None,
    penalty: np.ndarray | None = None,
) -> DecisionBatch:
    """The arrays the decisions of these rows of errors share (with the capability rule: the
    capable models and each row's pick without the rule; with a latency ``penalty``, mu times
    each model's latency, added to the objective)."""
    objective = errors + lam * pool.costs[None, :]
    if penalty is not None:
        objective = objective + penalty[None, :]
    error_std = None
    if weights is not None and pool.feature_std is not None:
        error_std = weights @ pool.feature_std.T  # Phi(x) . std(Psi(h)): an upper bound
    unrestricted_choice = None
    if unrestricted is not None:
        shifted = errors if penalty is None else errors + penalty[None, :]
        unrestricted_choice = _choices(shifted, pool.costs, unrestricted, lam)
    return DecisionBatch(
        pool, errors, objective, allowed, weights, error_std, capable, unrestricted_choice,
        penalty,
    )  # fmt: skip


def _choices(errors: np.ndarray, costs: np.ndarray, allowed: np.ndarray, lam: float) -> np.ndarray:
    """The chosen pool column of each row: the argmin among the allowed models."""
    candidates = np.flatnonzero(allowed)
    return candidates[route_argmin(errors[:, candidates], costs[candidates], lam)]


def _decision(
    model: str, policy: _Policy, cluster: int | None, batch: DecisionBatch, row: int
) -> Decision:
    return Decision(
        model=model,
        lam=policy.lam,
        cluster=cluster,
        max_cost=policy.max_cost,
        policy=policy.label,
        warning=policy.warning,
        batch=batch,
        row=row,
        risk=policy.risk,
        latency_weight=policy.latency_weight,
    )


def _resolve_latency_weight(snapshot: Snapshot, latency_weight: float | None) -> float:
    """mu: the request's, else the default policy's, else 0."""
    if latency_weight is not None:
        return non_negative_number(latency_weight, "latency weight", RouterError)
    return 0.0 if snapshot.policy is None else snapshot.policy.latency_weight


def _latency_penalty(
    pool: Pool, latencies: Mapping[str, float] | None, mu: float
) -> np.ndarray | None:
    """mu times each pool model's expected latency (unknown ones: the median of the known);
    None when no model's latency is known, so latency cannot tell the models apart."""
    if not latencies:
        return None
    known = {n: float(v) for n, v in latencies.items() if n in pool and np.isfinite(v) and v >= 0}
    if not known:
        return None
    median = float(np.median(list(known.values())))
    return mu * np.array([known.get(name, median) for name in pool.names])


def _resolve_lambda(
    snapshot: Snapshot, lam: float | None, max_cost: float | None
) -> tuple[float, str, str | None]:
    if lam is not None:
        return non_negative_number(lam, "lambda", RouterError), "explicit", None
    if max_cost is not None:
        return 0.0, "max_cost", None
    if snapshot.policy is None:
        return 0.0, "uncalibrated", _UNCALIBRATED_WARNING
    warning = None
    if snapshot.policy_stale_reason is not None:
        warning = f"the default policy is stale ({snapshot.policy_stale_reason}); using its lambda"
    return snapshot.policy.lam, "default", warning
