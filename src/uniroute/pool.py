"""The pool: the one in-memory description of the models a router chooses among.

A ``Pool`` is an immutable value. Per model it holds its name, expected cost per query, its
scores on the representative prompts, its feature vector Psi(h) (computed from those scores by
the router that routes over this pool), what it can do beyond plain text with its token limits
(``Capabilities``) and, when the gateway can call it, its endpoint. Routers
never store a pool: they take one in ``predict_error(X, pool)``. The deployed router reads a new
pool from the registry when the registry's revision changes and swaps it in whole, so a request
always sees one consistent pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from uniroute.errors import RouterError


@dataclass(frozen=True)
class Endpoint:
    """Where the gateway calls a model: an OpenAI base URL, the name of the environment variable
    holding its API key (never the key), and the model name the endpoint expects."""

    base_url: str
    api_key_env: str | None = None
    upstream_model: str | None = None


@dataclass(frozen=True)
class Capabilities:
    """What a model can do beyond plain text (``names``: "tools", "vision", "json") and its
    token limits (None: not known, so not limited)."""

    names: frozenset[str] = frozenset()
    context_window: int | None = None
    max_output_tokens: int | None = None

    def __post_init__(self) -> None:
        names = frozenset(self.names)
        if not all(isinstance(n, str) and n for n in names):
            raise RouterError(f"capabilities must be non-empty names, got {sorted(names, key=str)}")
        object.__setattr__(self, "names", names)
        for label in ("context_window", "max_output_tokens"):
            value = getattr(self, label)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise RouterError(f"{label} must be a whole number of tokens >= 1, got {value!r}")

    def __contains__(self, name: object) -> bool:
        return name in self.names


#: A model that declares nothing: no capability, no known limit.
NO_CAPABILITIES = Capabilities()


@dataclass(frozen=True, eq=False)
class Pool:
    """Models to route among, column ``j`` of every array describing ``names[j]``.

    ``costs`` (m,) are expected costs per query, ``scores`` (n_representative, m) the scores on
    the representative prompts (NaN = missing), ``features`` (m, F) the Psi rows, ``endpoints``
    one entry per model (None when the gateway cannot call it), ``capabilities`` one
    ``Capabilities`` per model (default: none declared). ``revision`` is the registry revision
    the pool was read at (0 for a pool built in memory). For estimators whose features are
    per-cluster errors, ``evidence`` (m, F) counts the representative prompts behind each
    feature and ``feature_std`` (m, F) is its uncertainty (posterior std); None otherwise.
    """

    names: tuple[str, ...]
    costs: np.ndarray
    scores: np.ndarray
    features: np.ndarray
    endpoints: tuple[Endpoint | None, ...] = ()
    revision: int = 0
    evidence: np.ndarray | None = None
    feature_std: np.ndarray | None = None
    answers: np.ndarray | None = None
    capabilities: tuple[Capabilities, ...] = ()
    _index: dict[str, int] = field(init=False, repr=False)
    _servable: tuple[str, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        names = tuple(str(name) for name in self.names)
        if len(set(names)) != len(names):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            raise RouterError(f"duplicate model names in the pool: {duplicates}")
        m = len(names)
        costs = np.array(self.costs, dtype=float).reshape(-1)
        if costs.shape != (m,):
            raise RouterError(f"{len(costs)} costs for {m} models")
        bad = ~np.isfinite(costs) | (costs < 0)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise RouterError(
                f"model {names[j]!r}: cost must be a finite number >= 0, got {costs[j]}"
            )
        scores = np.array(self.scores, dtype=float)
        if scores.ndim != 2 or scores.shape[1] != m:
            raise RouterError(f"scores must be (n_representative, {m}), got shape {scores.shape}")
        features = np.array(self.features, dtype=float)
        if features.ndim != 2 or len(features) != m:
            raise RouterError(f"features must have one row per model, got shape {features.shape}")
        endpoints = tuple(self.endpoints) if self.endpoints else (None,) * m
        if len(endpoints) != m:
            raise RouterError(f"{len(endpoints)} endpoints for {m} models")
        capabilities = tuple(self.capabilities) if self.capabilities else (NO_CAPABILITIES,) * m
        if len(capabilities) != m or not all(isinstance(c, Capabilities) for c in capabilities):
            raise RouterError(f"capabilities must be one Capabilities per model ({m})")
        evidence = self._per_feature(self.evidence, features.shape, "evidence")
        feature_std = self._per_feature(self.feature_std, features.shape, "feature_std")
        answers = None
        if self.answers is not None:
            answers = np.array(self.answers, dtype=object)
            if answers.shape != scores.shape:
                raise RouterError(
                    f"answers must have the scores' shape {scores.shape}, got {answers.shape}"
                )
            bad_keys = [a for a in answers.flat if a is not None and not isinstance(a, str)]
            if bad_keys:
                raise RouterError(f"answers must be strings or None, got {bad_keys[0]!r}")
        for value in (costs, scores, features, evidence, feature_std, answers):
            if value is not None:
                value.setflags(write=False)
        object.__setattr__(self, "evidence", evidence)
        object.__setattr__(self, "feature_std", feature_std)
        object.__setattr__(self, "answers", answers)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "costs", costs)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "features", features)
        object.__setattr__(self, "endpoints", endpoints)
        object.__setattr__(self, "capabilities", capabilities)
        object.__setattr__(self, "_index", {name: j for j, name in enumerate(names)})
        servable = tuple(n for n, e in zip(names, endpoints, strict=True) if e is not None)
        object.__setattr__(self, "_servable", servable)

    @staticmethod
    def _per_feature(
        values: np.ndarray | None, shape: tuple[int, ...], label: str
    ) -> np.ndarray | None:
        if values is None:
            return None
        array = np.array(values, dtype=float)
        if array.shape != shape or not np.isfinite(array).all() or (array < 0).any():
            raise RouterError(f"{label} must be finite values >= 0 of shape {shape}")
        return array

    @classmethod
    def empty(cls, n_representative: int, revision: int = 0) -> Pool:
        """A pool with no model."""
        return cls((), np.zeros(0), np.zeros((n_representative, 0)), np.zeros((0, 0)), (), revision)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def index(self, name: str) -> int:
        """Column of a model, with a clear error when it is not in the pool."""
        try:
            return self._index[name]
        except KeyError:
            raise RouterError(f"model {name!r} is not in the pool {list(self.names)}") from None

    def cost(self, name: str) -> float:
        """Expected cost per query of a pool model."""
        return float(self.costs[self.index(name)])

    def endpoint(self, name: str) -> Endpoint | None:
        """Where the gateway calls a pool model, or None when it cannot."""
        return self.endpoints[self.index(name)]

    def capabilities_of(self, name: str) -> Capabilities:
        """What a pool model can do beyond plain text, and its token limits."""
        return self.capabilities[self.index(name)]

    @property
    def servable(self) -> tuple[str, ...]:
        """Models the gateway can call (those with an endpoint), in pool order."""
        return self._servable

    def select(self, names: Sequence[str]) -> Pool:
        """The pool restricted to ``names``, in that order."""
        columns = [self.index(name) for name in names]
        return Pool(
            names=tuple(names),
            costs=self.costs[columns],
            scores=self.scores[:, columns],
            features=self.features[columns],
            endpoints=tuple(self.endpoints[j] for j in columns),
            revision=self.revision,
            evidence=None if self.evidence is None else self.evidence[columns],
            feature_std=None if self.feature_std is None else self.feature_std[columns],
            answers=None if self.answers is None else self.answers[:, columns],
            capabilities=tuple(self.capabilities[j] for j in columns),
        )

    def pessimistic(self, z: float) -> Pool:
        """The pool with each feature raised by ``z`` standard deviations (clipped to [0, 1]).

        Routing over it decides on an upper bound of every estimated error instead of its mean,
        so a model is trusted on a cluster only as far as its evidence there allows. A pool
        without uncertainty is returned unchanged.
        """
        if self.feature_std is None or z == 0:
            return self
        return replace(self, features=np.clip(self.features + z * self.feature_std, 0.0, 1.0))

    def most_accurate(self) -> str | None:
        """The model with the highest mean score on the representative prompts (None if empty)."""
        counts = np.isfinite(self.scores).sum(axis=0)
        if not len(self) or not counts.any():
            return None
        sums = np.nansum(self.scores, axis=0)
        means = np.where(counts > 0, sums / np.maximum(counts, 1), -1.0)
        return self.names[int(np.argmax(means))]
