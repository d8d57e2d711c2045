"""The deployable router: an artifact (encoder + fitted router) plus the live pool in a registry.

``Router.load(artifact, registry)`` gives the object the command line and the HTTP gateway route
with. The routable pool is the registry's *enabled* models; each model's Psi for this artifact is
read from the registry (or computed once from its scores when missing). ``refresh()`` re-reads
the pool when the registry's ``pool_version`` changed, so models added, removed, re-priced or
re-enabled by any process are routed to (or away from) without a restart.

A decision minimises ``err(x, h) + lambda * cost(h)`` over the enabled models (ties go to the
cheaper model). ``lambda`` is the caller's, or the calibrated default policy's; with a
``budget`` only models whose expected per-query cost is at most the budget are considered.
When the pool changes, the stored calibration target is solved again for the new pool; if it
cannot be (its model was removed, or it became unreachable) the policy is flagged stale and the
last lambda is still used, with a warning in every decision.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from uniroute.artifact import Artifact
from uniroute.errors import CalibrationError, DataError, RouterError, StateError
from uniroute.registry.calibration import Policy, make_target
from uniroute.registry.calibration import calibrate as calibrate_router
from uniroute.registry.costs import ModelCost, mean_input_tokens
from uniroute.registry.store import (
    ModelRecord,
    NewModel,
    Registry,
    align_scores,
    pool_fingerprint,
    prompts_fingerprint,
)
from uniroute.routers.base import BaseRouter, route_argmin
from uniroute.routers.uniroute_kmeans import ClusterProfileRouter

# A budget compared with float costs gets this relative slack, so "--max-cost 0.002" admits a
# model priced at exactly 0.002 after a round trip through the registry.
_BUDGET_SLACK = 1e-9


def cluster_weights(router: BaseRouter, X: np.ndarray) -> np.ndarray | None:
    """Phi(x): each prompt's weights over the router's clusters, or None for other routers.

    One-hot for the K-means map, the softmax weights for the learned map.
    """
    if isinstance(router, ClusterProfileRouter):
        return router.cluster_weights(X)
    return None


# ------------------------------------------------------------------------------ decisions
@dataclass(frozen=True, eq=False)
class _Batch:
    """Arrays shared by the decisions of one routing call (rows = prompts, columns = models)."""

    names: tuple[str, ...]
    errors: np.ndarray
    costs: np.ndarray
    objective: np.ndarray
    allowed: np.ndarray
    weights: np.ndarray | None


@dataclass(frozen=True, eq=False)
class Decision:
    """Where one prompt goes, and why.

    ``model`` minimises ``objective = estimated_error + lam * cost`` among the allowed models
    (all enabled models, or those within ``budget``); ``ranking`` lists the allowed models
    best-first by objective (ties to the cheaper), for fallback; ``over_budget`` the models a
    budget excluded. ``cluster`` is the prompt's (dominant) cluster and ``cluster_weights`` its
    Phi(x), for the cluster-based routers. ``policy`` says where ``lam`` came from ("default",
    "explicit", "budget" or "uncalibrated"); ``warning`` is set when the default policy is
    missing or stale. The per-model mappings are built on first access, so routing a large batch
    costs no per-model Python work until a decision is inspected.
    """

    model: str
    lam: float
    cluster: int | None
    budget: float | None
    policy: str
    warning: str | None
    _batch: _Batch = field(repr=False)
    _row: int = field(repr=False)

    @functools.cached_property
    def estimated_error(self) -> dict[str, float]:
        """Estimated error of every enabled model on this prompt."""
        return dict(zip(self._batch.names, self._batch.errors[self._row].tolist(), strict=True))

    @functools.cached_property
    def cost(self) -> dict[str, float]:
        """Expected per-query cost of every enabled model."""
        return dict(zip(self._batch.names, self._batch.costs.tolist(), strict=True))

    @functools.cached_property
    def objective(self) -> dict[str, float]:
        """``estimated_error + lam * cost`` of every enabled model."""
        return dict(zip(self._batch.names, self._batch.objective[self._row].tolist(), strict=True))

    @functools.cached_property
    def ranking(self) -> list[str]:
        """Allowed models, best first (the chosen model first; ties to the cheaper)."""
        allowed = np.flatnonzero(self._batch.allowed)
        order = np.lexsort((self._batch.costs[allowed], self._batch.objective[self._row, allowed]))
        ranked = [self._batch.names[j] for j in allowed[order]]
        ranked.remove(self.model)
        return [self.model, *ranked]

    @functools.cached_property
    def over_budget(self) -> list[str]:
        """Models left out because their cost exceeds the budget."""
        return [n for n, ok in zip(self._batch.names, self._batch.allowed, strict=True) if not ok]

    @functools.cached_property
    def cluster_weights(self) -> list[float] | None:
        """Phi(x) over the clusters (one-hot for K-means), or None for other routers."""
        if self._batch.weights is None:
            return None
        return self._batch.weights[self._row].tolist()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form with every field."""
        return {
            "model": self.model,
            "lam": self.lam,
            "budget": self.budget,
            "policy": self.policy,
            "warning": self.warning,
            "estimated_error": self.estimated_error,
            "cost": self.cost,
            "objective": self.objective,
            "ranking": self.ranking,
            "over_budget": self.over_budget,
            "cluster": self.cluster,
            "cluster_weights": self.cluster_weights,
        }


# ------------------------------------------------------------------------------ pool snapshots
@dataclass(frozen=True, eq=False)
class _PoolState:
    """An immutable view of the routable pool; routing reads one and never sees a half-update."""

    version: int
    records: tuple[ModelRecord, ...]
    costs: np.ndarray
    router: BaseRouter | None
    fingerprint: str
    policy: Policy | None
    policy_stale_reason: str | None

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the routable models, in pool order."""
        return tuple(record.name for record in self.records)


@dataclass(frozen=True)
class AddedModel:
    """Outcome of adding a model from scores: its record and how its prompt ids matched."""

    record: ModelRecord
    n_matched: int
    n_representative: int
    unknown_ids: list[str]


class Router:
    """Routes prompts with an artifact's encoder and router over a registry's enabled models.

    Thread-safe: routing reads an immutable pool snapshot; ``refresh`` and the admin methods swap
    in a new one under a lock.
    """

    def __init__(self, artifact: Artifact, registry: Registry, *, auto_recalibrate: bool = True):
        self.artifact = artifact
        self.registry = registry
        self.auto_recalibrate = auto_recalibrate
        self._prompt_ids = artifact.prompt_ids
        self._mean_input_tokens = mean_input_tokens(p.text for p in artifact.representative_prompts)
        self._scores_cache: dict[str, tuple[int, np.ndarray]] = {}
        self._lock = threading.RLock()
        self._check_binding()
        self._state = self._build_state()

    @classmethod
    def load(cls, artifact: str | Path | Artifact, registry: str | Path | Registry) -> Router:
        """Open an artifact directory (or use a loaded one) with a registry file (or object)."""
        if not isinstance(artifact, Artifact):
            artifact = Artifact.load(artifact)
        if not isinstance(registry, Registry):
            registry = Registry(registry)
        return cls(artifact, registry)

    def _check_binding(self) -> None:
        binding = self.registry.binding()
        if binding is None:
            self.registry.bind(self.artifact.artifact_id, self._prompt_ids)
        elif binding.prompts_fingerprint != prompts_fingerprint(self._prompt_ids):
            raise StateError(
                f"registry {self.registry.path} holds scores on the representative prompts of "
                f"artifact {binding.artifact_id}, not those of artifact "
                f"{self.artifact.artifact_id} ({self.artifact.path}); use the matching artifact "
                "or a new registry"
            )

    # -------------------------------------------------------------- pool snapshots
    def _scores_of(self, records: Sequence[ModelRecord]) -> np.ndarray:
        """Validation scores of these models, reading only those changed since last time."""
        stale = [r for r in records if self._scores_cache.get(r.name, (None,))[0] != r.revision]
        if stale:
            fresh = self.registry.scores_matrix([r.name for r in stale], self._prompt_ids)
            for j, record in enumerate(stale):
                self._scores_cache[record.name] = (record.revision, fresh[:, j])
        live = {r.name for r in records}
        for name in [n for n in self._scores_cache if n not in live]:
            del self._scores_cache[name]
        if not records:
            return np.zeros((len(self._prompt_ids), 0))
        return np.column_stack([self._scores_cache[r.name][1] for r in records])

    def _build_state(self) -> _PoolState:
        version = self.registry.pool_version()
        records = tuple(self.registry.list_models(enabled_only=True))
        artifact_id = self.artifact.artifact_id
        fingerprint = pool_fingerprint(artifact_id, [(r.name, r.revision) for r in records])
        costs = np.array([r.cost.per_query_cost(self._mean_input_tokens) for r in records])
        router = None
        if records:
            scores = self._scores_of(records)
            stored = self.registry.get_features(artifact_id, [r.name for r in records])
            missing = {
                r.name: self.artifact.router.model_features(scores[:, j])
                for j, r in enumerate(records)
                if r.name not in stored
            }
            if missing:
                # Psi depends on the artifact: computed once here and kept for later loads
                # (a read-only registry file just keeps it in memory).
                with contextlib.suppress(StateError):
                    self.registry.set_features(artifact_id, missing)
                stored.update(missing)
            router = copy.copy(self.artifact.router)
            router.set_pool(
                [r.name for r in records],
                scores,
                costs,
                features=np.vstack([stored[r.name] for r in records]),
            )
        policy, stale_reason = self._current_policy(router, records, fingerprint)
        return _PoolState(
            version=version,
            records=records,
            costs=costs,
            router=router,
            fingerprint=fingerprint,
            policy=policy,
            policy_stale_reason=stale_reason,
        )

    def _current_policy(
        self, router: BaseRouter | None, records: Sequence[ModelRecord], fingerprint: str
    ) -> tuple[Policy | None, str | None]:
        stored = self.registry.get_policy()
        if stored is None or stored.pool_fingerprint == fingerprint:
            return stored, None
        if router is None:
            return stored, "the pool has no enabled model"
        if not self.auto_recalibrate:
            return stored, "the pool changed since the policy was calibrated"
        try:
            policy = calibrate_router(router, target=stored.target, pool_fingerprint=fingerprint)
        except CalibrationError as exc:
            return stored, f"the pool changed and the target can no longer be met: {exc}"
        # Solving again is deterministic, so other processes need not be told (notify=False).
        with contextlib.suppress(StateError):
            self.registry.set_policy(policy, notify=False)
        return policy, None

    def refresh(self) -> bool:
        """Re-read the pool if the registry changed since the last read; True when it did.

        The check is one small query, cheap enough to run before every request.
        """
        if self.registry.pool_version() == self._state.version:
            return False
        with self._lock:
            if self.registry.pool_version() == self._state.version:
                return False
            self._state = self._build_state()
        return True

    # -------------------------------------------------------------- read-only views
    @property
    def pool_models(self) -> list[str]:
        """Names of the routable (enabled) models."""
        return list(self._state.names)

    @property
    def pool_version(self) -> int:
        """The registry pool_version the current snapshot was read at."""
        return self._state.version

    @property
    def pool_costs(self) -> dict[str, float]:
        """Expected per-query cost of each routable model."""
        return dict(zip(self._state.names, self._state.costs.tolist(), strict=True))

    @property
    def policy(self) -> Policy | None:
        """The default policy in force (possibly stale), or None if never calibrated."""
        return self._state.policy

    @property
    def default_lambda(self) -> float | None:
        """Lambda of the default policy, or None if never calibrated."""
        policy = self._state.policy
        return None if policy is None else policy.lam

    @property
    def policy_is_stale(self) -> bool:
        """True when the pool changed and the default policy could not be solved again."""
        return self._state.policy_stale_reason is not None

    @property
    def policy_stale_reason(self) -> str | None:
        """Why the default policy is stale, or None."""
        return self._state.policy_stale_reason

    @property
    def mean_input_tokens(self) -> float:
        """Estimated mean token count of the representative prompts (for token-priced models)."""
        return self._mean_input_tokens

    # -------------------------------------------------------------- routing
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed prompts with the artifact's encoder."""
        if isinstance(texts, str):
            raise RouterError("embed() takes a list of texts; wrap a single prompt in a list")
        return self.artifact.encoder.encode(list(texts), show_progress=False)

    def route(
        self,
        prompt_or_prompts: str | Sequence[str],
        *,
        lam: float | None = None,
        budget: float | None = None,
    ) -> Decision | list[Decision]:
        """Route one prompt (returns a Decision) or a list of prompts (returns a list)."""
        single = isinstance(prompt_or_prompts, str)
        prompts = [prompt_or_prompts] if single else list(prompt_or_prompts)
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise RouterError(f"prompt {index} is a {type(prompt).__name__}, not a string")
        if not prompts:
            return []
        decisions = self.route_embeddings(self.embed(prompts), lam=lam, budget=budget)
        return decisions[0] if single else decisions

    def route_embeddings(
        self, X: np.ndarray, *, lam: float | None = None, budget: float | None = None
    ) -> list[Decision]:
        """Route pre-embedded prompts (one row each); the work over models is vectorised."""
        state = self._state
        if state.router is None:
            raise RouterError(
                f"no enabled model in the registry {self.registry.path}; add or enable one"
            )
        X = np.asarray(X, dtype=float)
        if X.ndim == 1:
            X = X[None, :]
        lam_value, policy_label, warning = self._resolve_lambda(state, lam, budget)
        costs = state.costs
        allowed = np.ones(len(costs), dtype=bool)
        if budget is not None:
            budget = _non_negative(budget, "budget")
            allowed = costs <= budget * (1 + _BUDGET_SLACK)
            if not allowed.any():
                cheapest = int(np.argmin(costs))
                raise RouterError(
                    f"no enabled model costs at most {budget:g} per query; the cheapest is "
                    f"{state.names[cheapest]!r} at {costs[cheapest]:g}"
                )
        errors = state.router.predict_error(X)
        objective = errors + lam_value * costs[None, :]
        candidates = np.flatnonzero(allowed)
        choice = candidates[route_argmin(errors[:, candidates], costs[candidates], lam_value)]
        weights = cluster_weights(state.router, X)
        clusters = None if weights is None else weights.argmax(axis=1).tolist()
        batch = _Batch(state.names, errors, costs, objective, allowed, weights)
        names = state.names
        return [
            Decision(
                model=names[j],
                lam=lam_value,
                cluster=None if clusters is None else clusters[i],
                budget=budget,
                policy=policy_label,
                warning=warning,
                _batch=batch,
                _row=i,
            )
            for i, j in enumerate(choice.tolist())
        ]

    def _resolve_lambda(
        self, state: _PoolState, lam: float | None, budget: float | None
    ) -> tuple[float, str, str | None]:
        if lam is not None:
            return _non_negative(lam, "lambda"), "explicit", None
        if budget is not None:
            return 0.0, "budget", None
        if state.policy is None:
            return (
                0.0,
                "uncalibrated",
                (
                    "no default policy is calibrated (run `uniroute calibrate`); routing with "
                    "lambda=0, i.e. to the most accurate model whatever it costs"
                ),
            )
        warning = None
        if state.policy_stale_reason is not None:
            warning = f"the default policy is stale ({state.policy_stale_reason}); using its lambda"
        return state.policy.lam, "default", warning

    # -------------------------------------------------------------- pool changes
    def add_model(
        self,
        name: str,
        scores: Mapping[str, float],
        cost: ModelCost | float,
        *,
        endpoint: str | None = None,
        api_key_env: str | None = None,
        upstream_model: str | None = None,
        tags: Sequence[str] = (),
        enabled: bool = True,
        replace: bool = False,
        source: str = "scores",
    ) -> AddedModel:
        """Onboard a model from its scores on the representative prompts; routable on return.

        Prompt ids that are not representative prompts are ignored (and reported); scores that
        match none is an error naming ``source``.
        """
        if not isinstance(cost, ModelCost):
            cost = ModelCost(per_query=cost)
        record = ModelRecord(
            name=name,
            cost=cost,
            endpoint=endpoint,
            api_key_env=api_key_env,
            tags=tuple(tags),
            enabled=enabled,
            upstream_model=upstream_model,
        )
        return self.add_record(record, scores, replace=replace, source=source)

    def add_record(
        self,
        record: ModelRecord,
        scores: Mapping[str, float],
        *,
        replace: bool = False,
        source: str = "scores",
    ) -> AddedModel:
        """Store a complete model record with its scores and Psi in one transaction.

        No reader ever sees the model half-described; it is routable on return.
        """
        aligned = align_scores(scores, self._prompt_ids, source)
        if not np.isfinite(aligned.values).any():
            raise DataError(f"{source}: every matched score is missing")
        psi = self.artifact.router.model_features(aligned.values)
        matched = {
            prompt_id: float(value)
            for prompt_id, value in zip(self._prompt_ids, aligned.values.tolist(), strict=True)
            if math.isfinite(value)
        }
        stored = self.registry.add_models(
            [NewModel(record, matched, {self.artifact.artifact_id: psi})], replace=replace
        )[0]
        self.refresh()
        return AddedModel(stored, aligned.n_matched, len(self._prompt_ids), aligned.unknown_ids)

    def remove_model(self, name: str) -> None:
        """Delete a model from the registry and stop routing to it."""
        self.registry.remove_model(name)
        self.refresh()

    def set_enabled(self, name: str, enabled: bool) -> ModelRecord:
        """Enable or disable a model."""
        record = self.registry.set_enabled(name, enabled)
        self.refresh()
        return record

    def set_cost(self, name: str, cost: ModelCost | float) -> ModelRecord:
        """Change a model's price."""
        if not isinstance(cost, ModelCost):
            cost = ModelCost(per_query=cost)
        record = self.registry.set_cost(name, cost)
        self.refresh()
        return record

    def calibrate(
        self,
        *,
        target_cost: float | None = None,
        target_quality: float | None = None,
        target_share: tuple[str, float] | None = None,
        store: bool = True,
    ) -> Policy:
        """Solve a target on the representative prompts for the current pool; store as default."""
        target = make_target(
            target_cost=target_cost, target_quality=target_quality, target_share=target_share
        )
        self.refresh()
        state = self._state
        if state.router is None:
            raise CalibrationError(f"no enabled model in the registry {self.registry.path}")
        policy = calibrate_router(state.router, target=target, pool_fingerprint=state.fingerprint)
        if store:
            self.registry.set_policy(policy)
            self.refresh()
        return policy


def _non_negative(value: float, label: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise RouterError(f"{label} must be a number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise RouterError(f"{label} must be a finite number >= 0, got {value!r}")
    return number


def seed_registry(
    artifact: Artifact, registry: Registry, *, replace: bool = True
) -> list[ModelRecord]:
    """Bind a registry to an artifact and add the artifact's training models (scores, cost, Psi)."""
    registry.bind(artifact.artifact_id, artifact.prompt_ids)
    router = artifact.router
    models = []
    for j, name in enumerate(artifact.training_models):
        values = artifact.training_scores[:, j]
        scores = {
            prompt_id: float(value)
            for prompt_id, value in zip(artifact.prompt_ids, values.tolist(), strict=True)
            if math.isfinite(value)
        }
        if name in router.pool_names_:
            psi = router.pool_features_[router.pool_index(name)]
        else:
            psi = router.model_features(values)
        record = ModelRecord(
            name=name,
            cost=ModelCost(per_query=float(artifact.training_costs[j])),
            tags=("training",),
        )
        models.append(NewModel(record, scores, {artifact.artifact_id: psi}))
    return registry.add_models(models, replace=replace)
