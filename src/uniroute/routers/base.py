"""The one interface every router shares, the pool of routable models, and the argmin rule.

A router has two kinds of state:

* prompt-side state, learned once by ``fit`` from the *training* LLMs (K-means centroids, a
  learned cluster map, ...). It never depends on which LLMs are in the pool;
* the pool: for each routable model its name, cost, scores on the representative (validation)
  prompts and its feature vector Psi(h) computed from those scores. ``add_model`` onboards a new
  model from its validation scores alone, with no refitting.

A subclass implements ``_fit``, ``_model_features`` and ``_predict_error`` (and, when it has
prompt-side arrays, ``_state_arrays`` / ``_load_state``); everything else lives here.
"""

from __future__ import annotations

import inspect
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from uniroute._io import atomic_directory, load_arrays, read_manifest, save_arrays
from uniroute.errors import RouterError, StateError

ROUTER_SCHEMA_VERSION = 1


def route_argmin(errors: np.ndarray, costs: np.ndarray, lam: float | np.ndarray) -> np.ndarray:
    """Index of ``argmin_h errors[:, h] + lam * costs[h]`` per row; ties go to the cheaper model.

    ``lam`` may be a scalar or one value per row.
    """
    errors = np.asarray(errors, dtype=float)
    costs = np.asarray(costs, dtype=float)
    lam = np.asarray(lam, dtype=float)
    objective = errors + (lam[:, None] if lam.ndim == 1 else lam) * costs[None, :]
    best = objective.min(axis=1, keepdims=True)
    tied = objective <= best + 1e-12 * np.maximum(1.0, np.abs(best))
    return np.where(tied, costs[None, :], np.inf).argmin(axis=1)


class BaseRouter(ABC):
    """Estimates err(x, h) for every model h in the pool and routes by argmin err + lam * cost."""

    name: ClassVar[str] = ""
    #: True for routers that read the true test scores instead of predicting (the oracle).
    clairvoyant: ClassVar[bool] = False

    # ------------------------------------------------------------------ sklearn-style params
    @classmethod
    def _param_names(cls) -> list[str]:
        signature = inspect.signature(cls.__init__)
        return [p for p in signature.parameters if p != "self"]

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters, as scikit-learn estimators expose them."""
        return {name: getattr(self, name) for name in self._param_names()}

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
        model_names: list[str],
        costs: np.ndarray,
    ) -> Self:
        """Learn prompt-side state from the training LLMs; the pool becomes those LLMs.

        ``X_*`` are prompt embeddings, ``S_*`` the training LLMs' scores in [0, 1] (NaN = missing);
        the validation prompts are the representative prompts every model is described by.
        """
        X_train, X_val = _as_matrix(X_train, "X_train"), _as_matrix(X_val, "X_val")
        S_train, S_val = np.asarray(S_train, float), np.asarray(S_val, float)
        costs = np.asarray(costs, float)
        m = len(model_names)
        if S_train.shape != (len(X_train), m):
            raise RouterError(f"S_train is {S_train.shape}, expected ({len(X_train)}, {m})")
        if S_val.shape != (len(X_val), m):
            raise RouterError(f"S_val is {S_val.shape}, expected ({len(X_val)}, {m})")
        if costs.shape != (m,):
            raise RouterError(f"costs has shape {costs.shape}, expected ({m},)")
        if X_train.shape[1] != X_val.shape[1]:
            raise RouterError(f"X_train has dim {X_train.shape[1]} but X_val has {X_val.shape[1]}")
        if len(X_val) == 0:
            raise RouterError("no validation (representative) prompts to describe models with")
        self.X_val_ = X_val
        self.n_features_in_ = X_val.shape[1]
        self._fit(X_train, S_train, X_val, S_val, costs)
        self.clear_pool()
        for j, model in enumerate(model_names):
            self.add_model(model, S_val[:, j], float(costs[j]))
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

    # ------------------------------------------------------------------ the pool
    def _check_fitted(self) -> None:
        if not hasattr(self, "X_val_"):
            raise RouterError(f"{type(self).__name__} is not fitted; call fit() or load() first")

    def clear_pool(self) -> None:
        """Remove every model from the pool (prompt-side state is kept)."""
        self._check_fitted()
        self.pool_names_: list[str] = []
        self.pool_costs_ = np.zeros(0)
        self.pool_val_scores_ = np.zeros((len(self.X_val_), 0))
        self.pool_features_: np.ndarray | None = None

    @property
    def n_representative(self) -> int:
        """Number of representative (validation) prompts a new model must answer."""
        self._check_fitted()
        return len(self.X_val_)

    def model_features(self, val_scores: np.ndarray) -> np.ndarray:
        """Psi(h): the feature vector of a model with these scores on the representative prompts."""
        self._check_fitted()
        return np.asarray(self._model_features(self._check_val_scores(val_scores, "model")), float)

    @abstractmethod
    def _model_features(self, val_scores: np.ndarray) -> np.ndarray:
        """Psi(h) from validation scores (NaN = missing); a 1-D float array."""

    def _check_val_scores(self, val_scores: np.ndarray, name: str) -> np.ndarray:
        scores = np.asarray(val_scores, dtype=float).reshape(-1)
        if len(scores) != len(self.X_val_):
            raise RouterError(
                f"model {name!r}: {len(scores)} validation scores, the router has "
                f"{len(self.X_val_)} representative prompts"
            )
        finite = np.isfinite(scores)
        if np.isinf(scores).any() or ((scores[finite] < 0) | (scores[finite] > 1)).any():
            raise RouterError(
                f"model {name!r}: validation scores must lie in [0, 1] (NaN = missing)"
            )
        if not finite.any():
            raise RouterError(f"model {name!r}: no validation score at all; cannot describe it")
        return scores

    def add_model(
        self, name: str, val_scores: np.ndarray, cost: float, *, features: np.ndarray | None = None
    ) -> None:
        """Onboard a model from its scores on the representative prompts; no refitting.

        ``features`` may pass a precomputed Psi(h) (as stored in a registry) to skip recomputing.
        """
        self._check_fitted()
        if name in self.pool_names_:
            raise RouterError(f"model {name!r} is already in the pool; remove it first")
        cost = float(cost)
        if not np.isfinite(cost) or cost < 0:
            raise RouterError(f"model {name!r}: cost must be a finite number >= 0, got {cost}")
        scores = self._check_val_scores(val_scores, name)
        psi = self._model_features(scores) if features is None else np.asarray(features, float)
        psi = psi.reshape(1, -1)
        if self.pool_features_ is not None and self.pool_features_.shape[1] != psi.shape[1]:
            raise RouterError(
                f"model {name!r}: feature vector of length {psi.shape[1]}, the pool uses "
                f"{self.pool_features_.shape[1]}"
            )
        self.pool_names_.append(name)
        self.pool_costs_ = np.append(self.pool_costs_, cost)
        self.pool_val_scores_ = np.column_stack([self.pool_val_scores_, scores])
        self.pool_features_ = (
            psi if self.pool_features_ is None else np.vstack([self.pool_features_, psi])
        )
        self._on_pool_change()

    def set_pool(
        self,
        names: list[str],
        val_scores: np.ndarray,
        costs: np.ndarray,
        features: np.ndarray | None = None,
    ) -> None:
        """Replace the whole pool in one step (as a registry holds it); no prompt-side refit.

        ``val_scores`` is (n_representative, len(names)); ``features`` optionally passes the
        precomputed Psi rows. Same checks as ``add_model``, without its per-model copying.
        """
        self._check_fitted()
        names = [str(name) for name in names]
        if len(set(names)) != len(names):
            raise RouterError(f"duplicate model names in the pool {names}")
        costs = np.asarray(costs, dtype=float).reshape(-1)
        if costs.shape != (len(names),):
            raise RouterError(f"{len(costs)} costs for {len(names)} models")
        bad = ~np.isfinite(costs) | (costs < 0)
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            raise RouterError(
                f"model {names[j]!r}: cost must be a finite number >= 0, got {costs[j]}"
            )
        scores = np.asarray(val_scores, dtype=float)
        if scores.shape != (len(self.X_val_), len(names)):
            raise RouterError(
                f"validation scores are {scores.shape}, expected ({len(self.X_val_)}, {len(names)})"
            )
        columns = [self._check_val_scores(scores[:, j], name) for j, name in enumerate(names)]
        if not names:
            self.clear_pool()
            self._on_pool_change()
            return
        if features is None:
            psi = np.vstack([np.asarray(self._model_features(c), float) for c in columns])
        else:
            psi = np.asarray(features, dtype=float)
            if psi.ndim != 2 or len(psi) != len(names):
                raise RouterError(f"features must have one row per model, got shape {psi.shape}")
        self.pool_names_ = names
        self.pool_costs_ = costs.copy()
        self.pool_val_scores_ = scores.copy()
        self.pool_features_ = psi.copy()
        self._on_pool_change()

    def remove_model(self, name: str) -> None:
        """Take a model out of the pool."""
        j = self.pool_index(name)
        keep = [i for i in range(len(self.pool_names_)) if i != j]
        self.pool_names_ = [self.pool_names_[i] for i in keep]
        self.pool_costs_ = self.pool_costs_[keep]
        self.pool_val_scores_ = self.pool_val_scores_[:, keep]
        self.pool_features_ = self.pool_features_[keep] if keep else None
        self._on_pool_change()

    def set_cost(self, name: str, cost: float) -> None:
        """Change a pool model's per-query cost."""
        j = self.pool_index(name)
        cost = float(cost)
        if not np.isfinite(cost) or cost < 0:
            raise RouterError(f"model {name!r}: cost must be a finite number >= 0, got {cost}")
        self.pool_costs_[j] = cost

    def pool_index(self, name: str) -> int:
        """Position of a model in the pool, with a clear error when absent."""
        self._check_fitted()
        try:
            return self.pool_names_.index(name)
        except ValueError:
            raise RouterError(f"model {name!r} is not in the pool {self.pool_names_}") from None

    def _on_pool_change(self) -> None:
        """Hook for routers whose prediction state depends on the pool (the retrained MLP)."""
        return None

    # ------------------------------------------------------------------ prediction
    def predict_error(self, X: np.ndarray) -> np.ndarray:
        """Estimated error in [0, 1] of every pool model on each prompt: shape (n, n_pool)."""
        self._check_fitted()
        if not self.pool_names_:
            raise RouterError("the pool is empty; add a model first")
        X = _as_matrix(X, "X")
        if X.shape[1] != self.n_features_in_:
            raise RouterError(
                f"embeddings have dim {X.shape[1]}, the router was fitted on {self.n_features_in_}"
            )
        return np.clip(self._predict_error(X), 0.0, 1.0)

    @abstractmethod
    def _predict_error(self, X: np.ndarray) -> np.ndarray:
        """Estimated error of each pool model, shape (n, n_pool); uses ``self.pool_features_``."""

    def route(self, X: np.ndarray, lam: float = 0.0) -> np.ndarray:
        """Pool index chosen for each prompt at trade-off ``lam`` (error + lam * cost)."""
        return route_argmin(self.predict_error(X), self.pool_costs_, lam)

    def oracle_error(self, true_scores: np.ndarray) -> np.ndarray:
        """Only for clairvoyant routers: the 'estimate' read from the true scores."""
        raise RouterError(
            f"{type(self).__name__} predicts from prompts; it does not read true scores"
        )

    # ------------------------------------------------------------------ persistence
    def _state_arrays(self) -> dict[str, np.ndarray]:
        """Prompt-side learned arrays to persist (besides X_val_ and the pool)."""
        return {}

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Restore prompt-side state from ``_state_arrays`` output."""
        return None

    def save(self, directory: Path | str) -> None:
        """Write the router (manifest + arrays) atomically to a directory."""
        self._check_fitted()
        state = self._state_arrays()
        clash = {"X_val", "pool_costs", "pool_val_scores", "pool_features"} & set(state)
        if clash:
            raise RouterError(f"state array names {sorted(clash)} are reserved")
        arrays = {
            **state,
            "X_val": self.X_val_,
            "pool_costs": self.pool_costs_,
            "pool_val_scores": self.pool_val_scores_,
        }
        if self.pool_features_ is not None:
            arrays["pool_features"] = self.pool_features_
        with atomic_directory(directory) as staging:
            entries = save_arrays(staging / "arrays", arrays)
            manifest = {
                "kind": "router",
                "schema_version": ROUTER_SCHEMA_VERSION,
                "router": self.name,
                "params": self.get_params(),
                "pool_names": list(self.pool_names_),
                "arrays": {k: {**v, "file": f"arrays/{v['file']}"} for k, v in entries.items()},
            }
            (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: Path | str) -> BaseRouter:
        """Read a router written by ``save``; checks schema version and checksums."""
        from uniroute.routers import ROUTERS

        directory = Path(directory)
        manifest = read_manifest(directory, "router", ROUTER_SCHEMA_VERSION)
        router_cls = ROUTERS.get(manifest.get("router"))
        if router_cls is None:
            raise StateError(f"{directory}: unknown router {manifest.get('router')!r}")
        if cls is not BaseRouter and not issubclass(router_cls, cls):
            raise StateError(f"{directory}: holds a {router_cls.__name__}, not a {cls.__name__}")
        router = router_cls(**manifest["params"])
        arrays = load_arrays(directory, manifest["arrays"])
        router.X_val_ = arrays.pop("X_val")
        router.n_features_in_ = router.X_val_.shape[1]
        router.pool_names_ = list(manifest["pool_names"])
        router.pool_costs_ = arrays.pop("pool_costs")
        router.pool_val_scores_ = arrays.pop("pool_val_scores")
        router.pool_features_ = arrays.pop("pool_features", None)
        router._load_state(arrays)
        router._on_pool_change()
        return router


def _as_matrix(X: np.ndarray, label: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise RouterError(f"{label} must be a 2-D array of embeddings, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise RouterError(f"{label} contains NaN or infinite values")
    return X
