"""What the gateway needs from the deployable Router: decisions and the servable pool.

The router ranks every *enabled* model; the gateway can only call those that also have an
endpoint. Since ``Decision.ranking`` is sorted by objective, its first model with an endpoint
is exactly the argmin over the servable models, so filtering the ranking loses nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from uniroute.gateway.upstream import UpstreamTarget

if TYPE_CHECKING:
    from uniroute.deployment.router import Decision, Router


@dataclass(frozen=True)
class PoolEntry:
    """A servable model: where to call it and its expected per-query cost."""

    name: str
    cost: float
    target: UpstreamTarget


@dataclass(frozen=True)
class PoolSnapshot:
    """The servable pool at one registry version, plus the reference for cost savings."""

    version: int
    models: dict[str, PoolEntry] = field(default_factory=dict)
    all_costs: dict[str, float] = field(default_factory=dict)
    #: The enabled model with the highest mean score on the representative prompts.
    most_accurate: str | None = None
    default_lambda: float | None = None

    def cost(self, model: str) -> float | None:
        """Expected per-query cost of an enabled model, None when unknown."""
        return self.all_costs.get(model)

    def reference_cost(self) -> float | None:
        """Expected per-query cost of the most accurate enabled model."""
        return None if self.most_accurate is None else self.all_costs.get(self.most_accurate)


def _base_url(endpoint: str) -> str:
    """The OpenAI base URL of an endpoint, by the same rule as onboarding (``/v1`` if bare)."""
    from uniroute.onboarding.client import normalise_base_url

    return normalise_base_url(endpoint)


class PoolView:
    """Adapts a loaded ``uniroute.deployment.router.Router`` to the gateway (all methods block)."""

    def __init__(self, router: Router) -> None:
        self.router = router

    @property
    def loaded(self) -> bool:
        """True once the artifact and registry are open (always, for a constructed view)."""
        return self.router is not None

    @property
    def version(self) -> int:
        """The registry pool version the router's current pool was read at."""
        return self.router.pool_version

    def registry_version(self) -> int:
        """The registry's pool version read from the file now (a cheap readability check)."""
        return self.router.registry.pool_version()

    def refresh(self) -> bool:
        """Re-read the registry if its pool version changed."""
        return self.router.refresh()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of prompts with the artifact's encoder, one row each."""
        return self.router.embed(texts)

    def route_embeddings(
        self, X: np.ndarray, lam: float | None, max_cost: float | None
    ) -> list[Decision]:
        """Decisions for pre-embedded prompts under one policy."""
        return self.router.route_embeddings(X, lam=lam, budget=max_cost)

    def snapshot(self) -> PoolSnapshot:
        """The servable models (enabled, with an endpoint) as the router sees them now."""
        router = self.router
        version = router.pool_version
        costs = router.pool_costs
        records = {r.name: r for r in router.registry.list_models(enabled_only=True)}
        models = {}
        for name, cost in costs.items():
            record = records.get(name)
            if record is None or not record.endpoint:
                continue
            target = UpstreamTarget(
                name,
                _base_url(record.endpoint),
                record.api_key_env,
                upstream_model=record.upstream_model,
            )
            models[name] = PoolEntry(name=name, cost=cost, target=target)
        return PoolSnapshot(
            version=version,
            models=models,
            all_costs=dict(costs),
            most_accurate=self._most_accurate(list(costs)),
            default_lambda=router.default_lambda,
        )

    def _most_accurate(self, names: list[str]) -> str | None:
        if not names:
            return None
        scores = self.router.registry.scores_matrix(names, self.router.artifact.prompt_ids)
        counts = np.isfinite(scores).sum(axis=0)
        if not counts.any():
            return None
        means = np.where(counts > 0, np.nansum(scores, axis=0) / np.maximum(counts, 1), -1.0)
        return names[int(np.argmax(means))]

    def describe(self) -> dict[str, Any]:
        """Artifact and registry facts for the admin API."""
        artifact = self.router.artifact
        return {
            "artifact_id": artifact.artifact_id,
            "artifact_path": str(artifact.path),
            "encoder": artifact.encoder_id,
            "router": artifact.router_name,
            "n_representative_prompts": len(artifact.prompt_ids),
            "registry": str(self.router.registry.path),
            "pool_version": self.router.pool_version,
            "default_lambda": self.router.default_lambda,
            "policy_stale_reason": self.router.policy_stale_reason,
        }
