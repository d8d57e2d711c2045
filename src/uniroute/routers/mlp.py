"""The retrained-MLP baseline: one small network per model, trained on that model's scores on
the representative prompts, so every model that joins the pool needs training."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from numbers import Integral

import numpy as np

from uniroute._checks import non_negative_number
from uniroute.errors import RouterError
from uniroute.pool import Pool
from uniroute.routers.base import RouterEstimator
from uniroute.routers.selection import check_random_state

#: First entry of a packed head: how its output unit is turned into an error estimate.
IDENTITY_OUTPUT = 0.0
LOGISTIC_OUTPUT = 1.0
#: Early stopping holds out 10% of a model's scored prompts; below this many it trains on all.
MIN_PROMPTS_FOR_EARLY_STOPPING = 50


class RetrainedMLP(RouterEstimator):
    """Baseline that must be retrained for every new model: a per-model MLP error predictor.

    Each model h gets its own head, trained on the representative (validation) prompts'
    embeddings with target err = 1 - score (missing scores skipped): an sklearn ``MLPClassifier``
    (probability of an error) when every target is 0 or 1, else an ``MLPRegressor``; a model whose
    observed targets are all equal gets a constant head. Describing a new model
    (``model_features`` / ``make_pool``) trains its head, which is exactly the per-model training
    UniRoute avoids; a pool without a model has no head for it. The training prompts and LLMs
    are not used (``fit`` only checks the parameters).

    Psi(h) is the head's packed weights: [output kind, W_1, b_1, ..., W_L, b_L] flattened, with
    ReLU hidden units and a logistic (classifier) or identity (regressor) output. Prediction is
    a forward pass over these arrays, so a pool's heads predict exactly as when they were made.
    With ``early_stopping`` (and at least ``MIN_PROMPTS_FOR_EARLY_STOPPING`` scored prompts) a
    seeded 10% of the model's scored prompts is held out and training keeps the epoch that did
    best on them; without it the head trains for ``max_iter`` epochs and, on about a thousand
    prompts, overfits badly. Either way training stops after ``max_iter`` epochs even if the
    optimiser has not converged.
    """

    name = "mlp"

    def __init__(
        self,
        hidden_layer_sizes: Sequence[int] = (64,),
        alpha: float = 1e-3,
        max_iter: int = 300,
        early_stopping: bool = True,
        random_state: int | None = 0,
    ) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.alpha = alpha
        self.max_iter = max_iter
        self.early_stopping = early_stopping
        self.random_state = random_state

    def _fit(
        self,
        X_train: np.ndarray,
        S_train: np.ndarray,
        X_val: np.ndarray,
        S_val: np.ndarray,
        costs: np.ndarray,
    ) -> None:
        self._hidden_sizes()
        non_negative_number(self.alpha, "alpha", RouterError)
        check_random_state(self.random_state)
        if isinstance(self.max_iter, bool) or not isinstance(self.max_iter, Integral):
            raise RouterError(f"max_iter must be a positive integer, got {self.max_iter!r}")
        if self.max_iter < 1:
            raise RouterError(f"max_iter must be a positive integer, got {self.max_iter!r}")

    def _hidden_sizes(self) -> list[int]:
        sizes = self.hidden_layer_sizes
        if (
            isinstance(sizes, str | bytes)
            or not isinstance(sizes, Sequence)
            or not all(
                isinstance(s, Integral) and not isinstance(s, bool) and s >= 1 for s in sizes
            )
        ):
            raise RouterError(f"hidden_layer_sizes must be positive integers, got {sizes!r}")
        return [int(s) for s in sizes]

    def _layer_sizes(self) -> list[int]:
        return [self.n_features_in_, *self._hidden_sizes(), 1]

    def _model_features(self, scores: np.ndarray) -> np.ndarray:
        observed = np.isfinite(scores)
        X = self.X_val_[observed]
        targets = 1.0 - scores[observed]
        sizes = self._layer_sizes()
        if np.ptp(targets) == 0:
            weights = [
                np.zeros((n_in, n_out)) for n_in, n_out in zip(sizes, sizes[1:], strict=False)
            ]
            biases = [np.zeros(n_out) for n_out in sizes[1:]]
            biases[-1][0] = targets[0]
            return _pack(IDENTITY_OUTPUT, weights, biases)
        # Imported here: routing from a saved artifact needs numpy only, not scikit-learn.
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier, MLPRegressor

        binary = bool(np.isin(targets, (0.0, 1.0)).all())
        smallest_class = min(np.count_nonzero(targets == 0), np.count_nonzero(targets == 1))
        estimator_class = MLPClassifier if binary else MLPRegressor
        estimator = estimator_class(
            hidden_layer_sizes=tuple(self._hidden_sizes()),
            alpha=float(self.alpha),
            max_iter=int(self.max_iter),
            early_stopping=bool(self.early_stopping)
            and len(targets) >= MIN_PROMPTS_FOR_EARLY_STOPPING
            and (not binary or smallest_class >= 2),
            random_state=self.random_state,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            estimator.fit(X, targets.astype(int) if binary else targets)
        kind = LOGISTIC_OUTPUT if binary else IDENTITY_OUTPUT
        return _pack(kind, estimator.coefs_, estimator.intercepts_)

    def _predict_error(self, X: np.ndarray, pool: Pool) -> np.ndarray:
        # Each pool model's head is unpacked (as views) from its Psi row.
        sizes = self._layer_sizes()
        return np.column_stack([_forward(_unpack(row, sizes), X) for row in pool.features])


def _pack(kind: float, weights: Sequence[np.ndarray], biases: Sequence[np.ndarray]) -> np.ndarray:
    parts = [np.array([kind])]
    for weight, bias in zip(weights, biases, strict=True):
        parts += [np.asarray(weight, float).ravel(), np.asarray(bias, float).ravel()]
    return np.concatenate(parts)


def _unpack(
    packed: np.ndarray, sizes: Sequence[int]
) -> tuple[float, list[np.ndarray], list[np.ndarray]]:
    expected = 1 + sum(n_in * n_out + n_out for n_in, n_out in zip(sizes, sizes[1:], strict=False))
    if len(packed) != expected:
        raise RouterError(
            f"an MLP head has {len(packed)} packed weights, layers {list(sizes)} need {expected}"
        )
    kind = float(packed[0])
    if kind not in (IDENTITY_OUTPUT, LOGISTIC_OUTPUT):
        raise RouterError(f"an MLP head has unknown output kind {kind}")
    weights, biases, offset = [], [], 1
    for n_in, n_out in zip(sizes, sizes[1:], strict=False):
        weights.append(packed[offset : offset + n_in * n_out].reshape(n_in, n_out))
        offset += n_in * n_out
        biases.append(packed[offset : offset + n_out])
        offset += n_out
    return kind, weights, biases


def _forward(head: tuple[float, list[np.ndarray], list[np.ndarray]], X: np.ndarray) -> np.ndarray:
    # Imported here: SciPy's logistic is needed only when an MLP head predicts, and no
    # artifact deploys this baseline, so importing the estimators costs numpy only.
    from scipy.special import expit

    kind, weights, biases = head
    activation = X
    for weight, bias in zip(weights[:-1], biases[:-1], strict=True):
        activation = np.maximum(activation @ weight + bias, 0.0)
    output = (activation @ weights[-1] + biases[-1])[:, 0]
    return expit(output) if kind == LOGISTIC_OUTPUT else output
