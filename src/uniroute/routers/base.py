"""The interface every router estimator shares, and how it is saved.

A router estimator (``RouterEstimator``) learns *prompt-side* state once, from the training
LLMs: K-means centroids, a learned cluster map, neighbours. It never stores a pool. It exposes

* ``model_features(scores)``: Psi(h), the feature vector of a model with these scores on the
  representative (validation) prompts; a new model needs nothing else;
* ``predict_error(X, pool)``: the estimated error of every model of a :class:`~uniroute.pool.Pool`
  on each prompt embedding;
* ``cross_fitted_errors(X_rep, pool)``: out-of-fold estimates on the representative prompts (no
  prompt's estimate saw its own scores), what calibration measures its promises with.

The argmin rule over those estimates, its lambda sweep and the deferral curve live in
:mod:`uniroute.tradeoff`. Estimators follow scikit-learn's conventions: constructor arguments
are stored unchanged (``get_params`` / ``set_params``), learned attributes end in ``_`` and are
set by ``fit``. A subclass implements ``_fit``, ``_model_features`` and ``_predict_error`` (and,
when it has prompt-side arrays, ``_state_arrays`` / ``_load_state``).
"""

from __future__ import annotations

import inspect
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from uniroute._io import atomic_directory, load_arrays, read_manifest, save_arrays
from uniroute.errors import RouterError, StateError
from uniroute.pool import Endpoint, Pool
from uniroute.tradeoff import route_argmin

#: Version 2 stores prompt-side state only; version 1 also stored the training pool (ignored).
ROUTER_SCHEMA_VERSION = 2
_READABLE_SCHEMA_VERSIONS = (1, 2)


class RouterEstimator(ABC):
    """Estimates err(x, h) of every model h of a pool from prompt embeddings."""

    name: ClassVar[str] = ""
    #: True for estimators that read the true test scores instead of predicting (the oracle).
    clairvoyant: ClassVar[bool] = False

    # ------------------------------------------------------------------ sklearn-style params
    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [p for p in signature.parameters if p != "self"]

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters, as scikit-learn estimators expose them."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> Self:
        """Change constructor parameters (takes effect at the next ``fit``)."""
        unknown = sorted(set(params) - set(self._param_names()))
        if unknown:
            raise RouterError(f"{type(self).__name__} has no parameter(s) {unknown}")
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    # ------------------------------------------------------------------ fitting
    def fit(
        self,
        X_train: np.ndarray,
        S_train: np.ndarray,
        X_val: np.ndarray,
        S_val: np.ndarray,
        costs: np.ndarray,
    ) -> Self:
        """Learn prompt-side state from the training LLMs.

        ``X_*`` are prompt embeddings, ``S_*`` the training LLMs' scores in [0, 1] (NaN =
        missing), ``costs`` their per-query costs; the validation prompts are the representative
        prompts every model is described by.
        """
        X_train, X_val = _as_matrix(X_train, "X_train"), _as_matrix(X_val, "X_val")
        S_train, S_val = np.asarray(S_train, float), np.asarray(S_val, float)
        costs = np.asarray(costs, float).reshape(-1)
        m = len(costs)
        if S_train.shape != (len(X_train), m):
            raise RouterError(f"S_train is {S_train.shape}, expected ({len(X_train)}, {m})")
        if S_val.shape != (len(X_val), m):
            raise RouterError(f"S_val is {S_val.shape}, expected ({len(X_val)}, {m})")
        if X_train.shape[1] != X_val.shape[1]:
            raise RouterError(f"X_train has dim {X_train.shape[1]} but X_val has {X_val.shape[1]}")
        if len(X_val) == 0:
            raise RouterError("no validation (representative) prompts to describe models with")
        self.X_val_ = X_val
        self.n_features_in_ = X_val.shape[1]
        self._fit(X_train, S_train, X_val, S_val, costs)
        return self

    @abstractmethod
    def _fit(
        self,
        X_train: np.ndarray,
        S_train: np.ndarray,
        X_val: np.ndarray,
        S_val: np.ndarray,
        costs: np.ndarray,
    ) -> None:
        """Learn prompt-side state; ``self.X_val_`` is already set."""

    def _check_fitted(self) -> None:
        if not hasattr(self, "X_val_"):
            raise RouterError(f"{type(self).__name__} is not fitted; call fit() or load() first")

    @property
    def n_representative(self) -> int:
        """Number of representative (validation) prompts a new model must answer."""
        self._check_fitted()
        return len(self.X_val_)

    # ------------------------------------------------------------------ models
    def model_features(self, scores: np.ndarray, name: str = "model") -> np.ndarray:
        """Psi(h): the feature vector of a model with these scores on the representative prompts."""
        self._check_fitted()
        return np.asarray(self._model_features(self._check_scores(scores, name)), float)

    @abstractmethod
    def _model_features(self, scores: np.ndarray) -> np.ndarray:
        """Psi(h) from representative-prompt scores (NaN = missing); a 1-D float array."""

    def model_evidence(self, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray | None] | None:
        """Per feature: how many representative prompts back it, and its std (None: unknown).

        None for estimators whose features are not per-cluster errors (K-NN, MLP, ...).
        """
        return None

    def _check_scores(self, scores: np.ndarray, name: str) -> np.ndarray:
        values = np.asarray(scores, dtype=float).reshape(-1)
        if len(values) != len(self.X_val_):
            raise RouterError(
                f"model {name!r}: {len(values)} validation scores, the router has "
                f"{len(self.X_val_)} representative prompts"
            )
        finite = np.isfinite(values)
        if np.isinf(values).any() or ((values[finite] < 0) | (values[finite] > 1)).any():
            raise RouterError(
                f"model {name!r}: validation scores must lie in [0, 1] (NaN = missing)"
            )
        if not finite.any():
            raise RouterError(f"model {name!r}: no validation score at all; cannot describe it")
        return values

    def make_pool(
        self,
        names: Sequence[str],
        scores: np.ndarray,
        costs: np.ndarray,
        *,
        features: np.ndarray | None = None,
        endpoints: Sequence[Endpoint | None] = (),
        revision: int = 0,
        answers: np.ndarray | None = None,
    ) -> Pool:
        """A pool of these models, each described by its representative-prompt scores.

        ``scores`` is (n_representative, len(names)); ``features`` may pass Psi rows computed
        before (as a registry stores them) instead of computing them here. ``answers``, when
        known, are the models' canonical answer keys on the same prompts (``Pool.answers``).
        """
        self._check_fitted()
        names = [str(name) for name in names]
        scores = np.asarray(scores, dtype=float).reshape(len(self.X_val_), len(names))
        for j, name in enumerate(names):
            self._check_scores(scores[:, j], name)
        if not names:
            features, evidence, feature_std = np.zeros((0, 0)), None, None
        elif features is None:
            features, evidence, feature_std = self.describe_pool(scores)
        else:
            evidence, feature_std = self.pool_evidence(scores)
        return Pool(
            names=tuple(names),
            costs=np.asarray(costs, dtype=float),
            scores=scores,
            features=features,
            endpoints=tuple(endpoints),
            revision=revision,
            evidence=evidence,
            feature_std=feature_std,
            answers=answers,
        )

    def describe_pool(
        self, scores: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Psi rows (m, F) of (n_representative, m) checked scores, with ``pool_evidence``."""
        rows = [
            np.asarray(self._model_features(scores[:, j]), float) for j in range(scores.shape[1])
        ]
        return (np.vstack(rows), *self.pool_evidence(scores))

    def pool_evidence(self, scores: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``model_evidence`` of every column of (n_representative, m) scores, stacked (m, F)."""
        described = [self.model_evidence(scores[:, j]) for j in range(scores.shape[1])]
        if not described or any(d is None for d in described):
            return None, None
        evidence = np.vstack([d[0] for d in described if d is not None])
        stds = [d[1] for d in described if d is not None]
        if any(s is None for s in stds):
            return evidence, None
        return evidence, np.vstack([s for s in stds if s is not None])

    # ------------------------------------------------------------------ prediction
    def predict_error(self, X: np.ndarray, pool: Pool) -> np.ndarray:
        """Estimated error in [0, 1] of every pool model on each prompt: shape (n, len(pool))."""
        X = self._check_prediction_inputs(X, pool)
        return np.clip(self._predict_error(X, pool), 0.0, 1.0)

    def _check_prediction_inputs(self, X: np.ndarray, pool: Pool) -> np.ndarray:
        """The checks of ``predict_error``, in its order; returns X as a float matrix."""
        self._check_pool(pool)
        X = _as_matrix(X, "X")
        if X.shape[1] != self.n_features_in_:
            raise RouterError(
                f"embeddings have dim {X.shape[1]}, the router was fitted on {self.n_features_in_}"
            )
        return X

    def _check_pool(self, pool: Pool) -> None:
        """A fitted router and a non-empty pool described on its representative prompts."""
        self._check_fitted()
        if not len(pool):
            raise RouterError("the pool is empty; add a model first")
        if pool.scores.shape[0] != len(self.X_val_):
            raise RouterError(
                f"the pool's models are described on {pool.scores.shape[0]} representative "
                f"prompts, the router on {len(self.X_val_)}"
            )

    @abstractmethod
    def _predict_error(self, X: np.ndarray, pool: Pool) -> np.ndarray:
        """Estimated error of each pool model, shape (n, len(pool)), from ``pool.features``."""

    def cross_fitted_errors(
        self, X_rep: np.ndarray, pool: Pool, *, folds: int = 5, seed: int = 0
    ) -> np.ndarray:
        """Out-of-fold estimated errors (n_rep, len(pool)) on the representative prompts.

        ``predict_error(X_rep, pool)`` describes every model with Psi computed from its scores
        on these same prompts, so its estimates there have seen the answers they estimate. Here
        the representative prompts are shuffled (``seed``) into ``folds`` folds of near-equal
        size; the rows of fold f are predicted over a pool whose models are described only by
        their scores on the *other* folds (``make_pool`` with fold f's scores set to NaN), so no
        prompt's estimate depends on its own scores. This holds for every estimator: K-NN's
        neighbours, too, are read only from the other folds, through the masked scores.

        A model with no score outside fold f cannot be described without it: for that fold it
        keeps all its scores, i.e. its in-sample features (the only description it has).
        ``X_rep`` are the representative prompts' embeddings, in the order of ``pool.scores``'
        rows (normally ``self.X_val_``). Deterministic for a given ``seed``.
        """
        self._check_fitted()
        n_rep = len(self.X_val_)
        if pool.scores.shape[0] != n_rep:
            raise RouterError(
                f"the pool's models are described on {pool.scores.shape[0]} representative "
                f"prompts, the router on {n_rep}"
            )
        X_rep = _as_matrix(X_rep, "X_rep")
        if len(X_rep) != n_rep:
            raise RouterError(
                f"X_rep has {len(X_rep)} rows; cross-fitting needs one per representative "
                f"prompt ({n_rep})"
            )
        if isinstance(folds, bool) or not isinstance(folds, int | np.integer):
            raise RouterError(f"folds must be an integer, got {folds!r}")
        if not 2 <= folds <= n_rep:
            raise RouterError(
                f"folds must lie in [2, {n_rep}] (the number of representative prompts), "
                f"got {folds}"
            )
        if not len(pool):
            raise RouterError("the pool is empty; add a model first")
        order = np.random.default_rng(seed).permutation(n_rep)
        errors = np.empty((n_rep, len(pool)))
        for rows in np.array_split(order, int(folds)):
            masked = np.array(pool.scores, dtype=float)
            masked[rows] = np.nan
            # A model scored only inside this fold keeps its scores (in-sample, documented).
            undescribed = ~np.isfinite(masked).any(axis=0)
            masked[:, undescribed] = pool.scores[:, undescribed]
            fold_pool = self.make_pool(pool.names, masked, pool.costs)
            errors[rows] = self.predict_error(X_rep[rows], fold_pool)
        return errors

    def route(self, X: np.ndarray, pool: Pool, lam: float = 0.0) -> np.ndarray:
        """Pool column chosen for each prompt at trade-off ``lam`` (error + lam * cost)."""
        return route_argmin(self.predict_error(X, pool), pool.costs, lam)

    def oracle_error(self, true_scores: np.ndarray) -> np.ndarray:
        """Only for clairvoyant estimators: the 'estimate' read from the true scores."""
        raise RouterError(
            f"{type(self).__name__} predicts from prompts; it does not read true scores"
        )

    # ------------------------------------------------------------------ persistence
    def _state_arrays(self) -> dict[str, np.ndarray]:
        """Prompt-side learned arrays to persist (besides X_val_)."""
        return {}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore prompt-side state from ``_state_arrays`` output."""
        return None

    def save(self, directory: Path | str) -> None:
        """Write the estimator (manifest + arrays) atomically to a directory."""
        self._check_fitted()
        state = self._state_arrays()
        if "X_val" in state:
            raise RouterError("state array name 'X_val' is reserved")
        with atomic_directory(directory) as staging:
            entries = save_arrays(staging / "arrays", {**state, "X_val": self.X_val_})
            manifest = {
                "kind": "router",
                "schema_version": ROUTER_SCHEMA_VERSION,
                "router": self.name,
                "params": self.get_params(),
                "arrays": {k: {**v, "file": f"arrays/{v['file']}"} for k, v in entries.items()},
            }
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))

    @classmethod
    def from_saved(cls, directory: Path | str, manifest: dict[str, Any]) -> Self:
        """Rebuild an estimator of this class from its saved directory (see ``load_estimator``)."""
        if manifest.get("router") != cls.name:
            raise StateError(
                f"{directory}: holds a {manifest.get('router')!r} estimator, not a {cls.__name__}"
            )
        estimator = cls(**manifest["params"])
        arrays = load_arrays(Path(directory), manifest["arrays"])
        for legacy in ("pool_costs", "pool_val_scores", "pool_features"):
            arrays.pop(legacy, None)  # version 1 also stored the training pool
        estimator.X_val_ = arrays.pop("X_val")
        estimator.n_features_in_ = estimator.X_val_.shape[1]
        estimator._load_state(arrays)
        return estimator


def read_estimator_manifest(directory: Path | str) -> dict[str, Any]:
    """The checked manifest of a saved estimator (kind and schema version)."""
    return read_manifest(Path(directory), "router", _READABLE_SCHEMA_VERSIONS)


def _as_matrix(X: np.ndarray, label: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise RouterError(f"{label} must be a 2-D array of embeddings, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise RouterError(f"{label} contains NaN or infinite values")
    return X
