"""A pool snapshot: the registry's enabled models read at one revision, as an immutable value.

Routing reads one snapshot and never sees a half-applied change; the deployed router swaps in a
new snapshot when the registry's revision moves. Reading a snapshot also re-solves the stored
calibration target when the pool changed since it was solved (or flags the policy stale).

A snapshot also keeps what is computed from it alone and reused across requests (the decision
tables of ``Router.route_embeddings``): a pool change replaces the snapshot, and so discards
every such value with it, without any invalidation to get wrong.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from uniroute.artifact import Artifact
from uniroute.errors import CalibrationError, StateError
from uniroute.onboarding.endpoints import base_url
from uniroute.pool import Capabilities, Endpoint, Pool
from uniroute.registry import ModelRecord, Registry, pool_fingerprint
from uniroute.registry.calibration import Policy, Target, solve_target
from uniroute.registry.costs import mean_input_tokens

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: What one snapshot keeps of its derived values, in array cells (8 bytes each): 32 MB. Clients
#: choose lambda freely, so without a bound every distinct lambda would be kept forever.
DERIVED_BUDGET_CELLS = 1 << 22


class DerivedValues:
    """Values computed from one snapshot, by key, within a budget (the oldest are dropped).

    Thread-safe. Two threads missing the same key at once both compute it (the value depends
    on the snapshot and the key only, so either result will do); a value larger than the whole
    budget is computed every time and never kept.
    """

    def __init__(self, budget_cells: int = DERIVED_BUDGET_CELLS) -> None:
        self.budget_cells = budget_cells
        self._values: dict[Hashable, tuple[Any, int]] = {}
        self._used = 0
        self._lock = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], T], cells: int) -> T:
        """The value for ``key``, from ``compute()`` the first time (``cells``: its size)."""
        found = self._values.get(key)
        if found is not None:
            return found[0]
        value = compute()  # outside the lock: a slow computation must not stall the hits
        if cells > self.budget_cells:
            return value
        with self._lock:
            found = self._values.get(key)
            if found is not None:
                return found[0]
            while self._values and self._used + cells > self.budget_cells:
                oldest = next(iter(self._values))
                self._used -= self._values.pop(oldest)[1]
            self._values[key] = (value, cells)
            self._used += cells
        return value

    def __len__(self) -> int:
        return len(self._values)


@dataclass(frozen=True, eq=False)
class Snapshot:
    """The routable pool at one registry revision and the default policy in force for it.

    ``pool`` holds the enabled models (with their endpoints, when they have one, and their
    capabilities and token limits, read from the records); ``records``
    their registry records in pool order; ``policy_stale_reason`` says why the stored policy
    could not be solved again for this pool (None when it is current, or when there is none).
    A record with a ``problem`` (an endpoint or key variable stored by an older version that
    today's rules refuse) is in the pool without an endpoint: routed over, never served.
    ``derived`` holds values computed from this snapshot alone (decision tables), so they live
    and die with it.
    """

    pool: Pool
    records: tuple[ModelRecord, ...]
    fingerprint: str
    policy: Policy | None
    policy_stale_reason: str | None
    derived: DerivedValues = field(
        default_factory=DerivedValues, init=False, repr=False, compare=False
    )

    @property
    def revision(self) -> int:
        """The registry revision this snapshot was read at."""
        return self.pool.revision

    @property
    def problems(self) -> dict[str, str]:
        """Why each enabled model that has a ``problem`` is not served, by name."""
        return {r.name: r.problem for r in self.records if r.problem is not None}

    @property
    def default_lambda(self) -> float | None:
        """Lambda of the default policy, or None if never calibrated."""
        return None if self.policy is None else self.policy.lam


#: Folds of the representative prompts the calibration errors are cross-fitted over.
CALIBRATION_FOLDS = 5


def calibration_errors(artifact: Artifact, pool: Pool) -> tuple[Pool, np.ndarray, int]:
    """The models calibration solves over (the servable ones, else every enabled one), their
    estimated errors on the representative prompts, cross-fitted over ``CALIBRATION_FOLDS``
    folds, and the number of folds (0: one prompt, in-sample)."""
    servable = pool.servable
    over = pool.select(servable) if servable else pool
    estimator = artifact.router
    n_rep = len(estimator.X_val_)
    if n_rep >= 2:
        folds = min(CALIBRATION_FOLDS, n_rep)
        errors = estimator.cross_fitted_errors(estimator.X_val_, over, folds=folds, seed=0)
    else:  # one representative prompt cannot be split: in-sample, and the policy says so
        folds = 0
        errors = estimator.predict_error(estimator.X_val_, over)
    return over, errors, folds


def calibrate_pool(artifact: Artifact, pool: Pool, target: Target, fingerprint: str) -> Policy:
    """Solve ``target`` on the artifact's representative prompts for this pool, out of sample.

    The models solved over are the ones traffic can reach: when any pool model has an endpoint,
    the servable models only (routing picks among those, see ``Router.route_embeddings``), else
    every enabled model. Their errors are ``cross_fitted_errors`` over ``CALIBRATION_FOLDS``
    folds, so each prompt's estimate never saw that prompt's scores and the promised expected
    cost and quality are out-of-sample (a missing score counts as ``1 - estimated error``). At
    routing time the policy's lambda is applied to the usual estimates, from Psi computed on all
    the scores (more evidence than any fold had).
    """
    if not len(pool):
        raise CalibrationError("the pool has no enabled model to calibrate")
    servable = pool.servable
    share_model = target.model if target.kind == "share" else None
    if servable and share_model in pool and share_model not in servable:
        raise CalibrationError(
            f"target model {target.model!r} has no endpoint, so the gateway never sends it "
            f"traffic; calibration is over the models with one: {list(servable)}"
        )
    over, errors, folds = calibration_errors(artifact, pool)
    try:
        return solve_target(
            errors,
            over.costs,
            over.scores,
            list(over.names),
            target,
            fingerprint,
            out_of_sample=folds > 0,
            n_folds=folds,
            servable_only=bool(servable),
        )
    except CalibrationError as exc:
        basis = f"{folds}-fold cross-fitted" if folds else "in-sample"
        which = "servable model(s) (with an endpoint)" if servable else "enabled model(s)"
        raise CalibrationError(f"{exc} [{basis}, over the {len(over)} {which}]") from exc


class SnapshotReader:
    """Reads snapshots of one registry for one artifact, re-reading only changed scores."""

    def __init__(self, artifact: Artifact, registry: Registry, *, auto_recalibrate: bool = True):
        self.artifact = artifact
        self.registry = registry
        self.auto_recalibrate = auto_recalibrate
        self._prompt_ids = artifact.prompt_ids
        self.mean_input_tokens = mean_input_tokens(p.text for p in artifact.representative_prompts)
        self._scores_cache: dict[str, tuple[int, np.ndarray]] = {}
        # name -> (revision, answer keys column, number of recorded answers)
        self._answers_cache: dict[str, tuple[int, np.ndarray, int]] = {}
        self._warned: set[tuple[str, int, str]] = set()

    def _scores_of(self, records: Sequence[ModelRecord]) -> np.ndarray:
        """Representative-prompt scores of these models, reading only those changed since."""
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

    def _answers_of(self, records: Sequence[ModelRecord]) -> np.ndarray | None:
        """Canonical answer keys of these models (None when none of them has a recorded answer).

        Answers change only with a model's revision (they are written with its scores), so
        only models changed since the last read are read again, in one query.
        """
        cache = self._answers_cache
        stale = [r for r in records if cache.get(r.name, (None,))[0] != r.revision]
        if stale:
            keys, recorded = self.registry.answers_matrix([r.name for r in stale], self._prompt_ids)
            for j, record in enumerate(stale):
                cache[record.name] = (record.revision, keys[:, j], int(recorded[j]))
        live = {r.name for r in records}
        for name in [n for n in cache if n not in live]:
            del cache[name]
        if not any(cache[r.name][2] for r in records):
            return None
        return np.column_stack([cache[r.name][1] for r in records])

    def _features_of(self, records: Sequence[ModelRecord], scores: np.ndarray) -> np.ndarray:
        """Psi rows of these models for this artifact, computing (and storing) missing ones."""
        artifact_id = self.artifact.artifact_id
        stored = self.registry.get_features(artifact_id, [r.name for r in records])
        missing = {
            r.name: self.artifact.router.model_features(scores[:, j], r.name)
            for j, r in enumerate(records)
            if r.name not in stored
        }
        if missing:
            # Psi depends on the artifact: computed once here and kept for later loads
            # (a read-only registry file just keeps it in memory).
            with contextlib.suppress(StateError):
                self.registry.set_features(artifact_id, missing)
            stored.update(missing)
        return np.vstack([stored[r.name] for r in records])

    def read(self) -> Snapshot:
        """The enabled models and the default policy, as the registry holds them now."""
        revision = self.registry.pool_version()
        records = tuple(self.registry.list_models(enabled_only=True))
        fingerprint = pool_fingerprint(
            self.artifact.artifact_id, [(r.name, r.revision) for r in records]
        )
        self._warn_about_problems(records)
        if records:
            scores = self._scores_of(records)
            evidence, feature_std = self.artifact.router.pool_evidence(scores)
            pool = Pool(
                names=tuple(r.name for r in records),
                costs=np.array([r.cost.per_query_cost(self.mean_input_tokens) for r in records]),
                scores=scores,
                features=self._features_of(records, scores),
                endpoints=tuple(_endpoint_of(r) for r in records),
                revision=revision,
                evidence=evidence,
                feature_std=feature_std,
                answers=self._answers_of(records),
                capabilities=tuple(capabilities_of(r) for r in records),
            )
        else:
            pool = Pool.empty(len(self._prompt_ids), revision)
        policy, stale_reason = self._current_policy(pool, fingerprint)
        return Snapshot(pool, records, fingerprint, policy, stale_reason)

    def _warn_about_problems(self, records: Sequence[ModelRecord]) -> None:
        """Log once per stored version each enabled model that cannot be served, and why."""
        for record in records:
            if record.problem is None:
                continue
            key = (record.name, record.revision, record.problem)
            if key not in self._warned:
                self._warned.add(key)
                logger.warning(
                    "model %r in %s is not served: %s",
                    record.name,
                    self.registry.path,
                    record.problem,
                )

    def _current_policy(self, pool: Pool, fingerprint: str) -> tuple[Policy | None, str | None]:
        stored = self.registry.get_policy()
        if stored is None or stored.pool_fingerprint == fingerprint:
            return stored, None
        if not len(pool):
            return stored, "the pool has no enabled model"
        if not self.auto_recalibrate:
            return stored, "the pool changed since the policy was calibrated"
        try:
            policy = calibrate_pool(self.artifact, pool, stored.target, fingerprint)
            # The operator's latency weight is not solved: it carries over.
            policy = dataclasses.replace(policy, latency_weight=stored.latency_weight)
        except CalibrationError as exc:
            return stored, f"the pool changed and the target can no longer be met: {exc}"
        # Solving again is deterministic, so other processes need not be told (notify=False).
        with contextlib.suppress(StateError):
            self.registry.set_policy(policy, notify=False)
        return policy, None


def capabilities_of(record: ModelRecord) -> Capabilities:
    """A record's declared (or probed) capabilities and token limits, as the pool holds them."""
    return Capabilities(
        frozenset(record.capabilities), record.context_window, record.max_output_tokens
    )


def _endpoint_of(record: ModelRecord) -> Endpoint | None:
    # A record with a problem keeps its (masked) endpoint for display only: never called.
    if not record.endpoint or record.problem is not None:
        return None
    return Endpoint(base_url(record.endpoint), record.api_key_env, record.upstream_model)
