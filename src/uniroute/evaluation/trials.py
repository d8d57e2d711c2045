"""Repeated trials: split LLMs and prompts anew, fit every router, score it on unseen LLMs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from uniroute.data.dataset import RoutingDataset
from uniroute.data.splits import split_models, split_prompts
from uniroute.embeddings.base import Encoder
from uniroute.errors import RouterError
from uniroute.evaluation.metrics import evaluate_curve, single_model_points
from uniroute.evaluation.stats import mean_std, sign_test
from uniroute.routers import ClusterProfileRouter, make_estimator
from uniroute.tradeoff import DeferralCurve, deferral_curve

log = logging.getLogger(__name__)

METRICS = ("area", "area_50", "qnc", "peak_accuracy")
SIGN_TEST_BASELINES = ("knn", "zero")


@dataclass
class TrialConfig:
    """What to evaluate and how: routers, LLM hold-out size, number of trials, seed."""

    routers: Sequence[str]
    test_models: int
    trials: int = 20
    seed: int = 0
    fractions: tuple[float, float, float] = (0.6, 0.1, 0.3)
    router_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass
class TrialOutcome:
    """One trial: the LLM split, its curves and metrics per router."""

    train_models: list[str]
    test_models: list[str]
    n_test_prompts: int
    n_dropped_prompts: int
    curves: dict[str, DeferralCurve]
    metrics: dict[str, dict[str, float]]
    model_points: dict[str, tuple[float, float]]
    max_cost: float
    fit_seconds: dict[str, float]


@dataclass
class EvaluationRun:
    """All trials of one evaluation plus the aggregated results dict written to results.json."""

    outcomes: list[TrialOutcome]
    results: dict[str, Any]


EncoderFactory = Callable[[], Encoder]


def embed_for_trial(
    encoder_factory: EncoderFactory, texts: np.ndarray, train_index: np.ndarray
) -> tuple[np.ndarray, str]:
    """Embed every prompt with an encoder fitted on this trial's training prompts only."""
    encoder = encoder_factory()
    encoder.fit(texts[train_index].tolist())
    return np.asarray(encoder.encode(texts.tolist()), dtype=np.float64), encoder.id


def run_trial(
    dataset: RoutingDataset,
    embeddings: np.ndarray,
    config: TrialConfig,
    trial_seed: int,
    prompt_split: Any,
) -> TrialOutcome:
    """Fit each router on the training LLMs, onboard the unseen LLMs, score on the test prompts."""
    train_models, test_models = split_models(dataset.models, config.test_models, trial_seed)
    train_cols = [dataset.model_index(m) for m in train_models]
    test_cols = [dataset.model_index(m) for m in test_models]
    train_idx, val_idx, test_idx = prompt_split.train, prompt_split.val, prompt_split.test

    scores, call_costs = dataset.scores, dataset.effective_call_costs()
    test_quality = scores[np.ix_(test_idx, test_cols)]
    complete = np.isfinite(test_quality).all(axis=1)
    test_idx = test_idx[complete]
    test_quality = test_quality[complete]
    test_call_costs = call_costs[np.ix_(test_idx, test_cols)]
    test_costs = dataset.model_costs[test_cols]

    curves, metrics, fit_seconds = {}, {}, {}
    chosen_k: int | None = None
    # K-means first: its K selection is exactly what the learned map's n_clusters="auto" would
    # repeat on the same data with the same seed, so the learned map reuses the chosen K.
    order = sorted(config.routers, key=lambda name: name != "uniroute-kmeans")
    for name in order:
        started = time.perf_counter()
        params = dict(config.router_params.get(name, {}))
        if name == "uniroute-learned" and chosen_k is not None:
            params.setdefault("n_clusters", chosen_k)
        estimator = make_estimator(name, **params)
        estimator.fit(
            embeddings[train_idx],
            scores[np.ix_(train_idx, train_cols)],
            embeddings[val_idx],
            scores[np.ix_(val_idx, train_cols)],
            dataset.model_costs[train_cols],
        )
        if estimator.clairvoyant:
            errors_hat = estimator.oracle_error(test_quality)
        else:
            # The evaluation pool is the unseen LLMs only, each described by its validation scores.
            pool = estimator.make_pool(
                test_models, scores[np.ix_(val_idx, test_cols)], dataset.model_costs[test_cols]
            )
            errors_hat = estimator.predict_error(embeddings[test_idx], pool)
        fit_seconds[name] = time.perf_counter() - started
        if name == "uniroute-kmeans" and not any(
            config.router_params.get(r) for r in ("uniroute-kmeans", "uniroute-learned")
        ):
            if not isinstance(estimator, ClusterProfileRouter):
                raise RouterError(f"{name!r} is a {type(estimator).__name__}, not a cluster router")
            chosen_k = int(estimator.n_clusters_)
        curve = deferral_curve(errors_hat, test_costs, test_quality, call_costs=test_call_costs)
        curves[name] = curve
        metrics[name] = evaluate_curve(curve, test_quality, test_call_costs)

    point_costs, point_accuracies = single_model_points(test_quality, test_call_costs)
    model_points = {
        m: (float(c), float(a))
        for m, c, a in zip(test_models, point_costs, point_accuracies, strict=True)
    }
    return TrialOutcome(
        train_models=list(train_models),
        test_models=list(test_models),
        n_test_prompts=int(len(test_idx)),
        n_dropped_prompts=int((~complete).sum()),
        curves=curves,
        metrics=metrics,
        model_points=model_points,
        max_cost=float(point_costs.max()),
        fit_seconds=fit_seconds,
    )


def run_trials(
    dataset: RoutingDataset,
    encoder_factory: EncoderFactory,
    config: TrialConfig,
    *,
    fixed_embeddings: np.ndarray | None = None,
    encoder_id: str | None = None,
    on_trial: Callable[[int, TrialOutcome], None] | None = None,
) -> EvaluationRun:
    """Run ``config.trials`` trials, each with a fresh LLM split and prompt split.

    ``fixed_embeddings`` (with ``encoder_id``) skips per-trial embedding for pretrained encoders,
    whose vectors do not depend on the training prompts; otherwise the encoder is fitted on each
    trial's training prompts so no test prompt leaks into it.
    """
    if config.trials < 1:
        raise ValueError(f"trials must be >= 1, got {config.trials}")
    seeds = np.random.SeedSequence(config.seed).generate_state(config.trials)
    outcomes = []
    for t, trial_seed in enumerate(seeds.tolist()):
        split = split_prompts(dataset.tasks, config.fractions, seed=trial_seed)
        if fixed_embeddings is None:
            embeddings, encoder_id = embed_for_trial(encoder_factory, dataset.prompts, split.train)
        else:
            embeddings = fixed_embeddings
        outcome = run_trial(dataset, embeddings, config, trial_seed, split)
        outcomes.append(outcome)
        if on_trial is not None:
            on_trial(t, outcome)
    results = aggregate(outcomes, dataset=dataset.name, encoder=encoder_id or "", config=config)
    return EvaluationRun(outcomes=outcomes, results=results)


def aggregate(
    outcomes: Sequence[TrialOutcome], *, dataset: str, encoder: str, config: TrialConfig
) -> dict[str, Any]:
    """Mean ± std of each metric per router over trials, and a paired sign test against K-NN."""
    routers: dict[str, Any] = {}
    for name in config.routers:
        per_trial = {k: [o.metrics[name][k] for o in outcomes] for k in METRICS}
        entry: dict[str, Any] = {"trials": len(outcomes), "per_trial": per_trial}
        for k in METRICS:
            mean, std = mean_std(per_trial[k])
            entry[k] = {"mean": mean, "std": std}
        entry["qnc_reached"] = int(sum(bool(o.metrics[name]["qnc_reached"]) for o in outcomes))
        entry["fit_seconds"] = float(np.mean([o.fit_seconds[name] for o in outcomes]))
        # Paired sign tests of the per-trial area against each baseline that was run.
        entry["sign_tests"] = {}
        for baseline_name in SIGN_TEST_BASELINES:
            if name == baseline_name or baseline_name not in config.routers:
                continue
            baseline = [o.metrics[baseline_name]["area"] for o in outcomes]
            difference = np.asarray(per_trial["area"]) - np.asarray(baseline)
            mean_difference, std_difference = mean_std(difference.tolist())
            entry["sign_tests"][baseline_name] = {
                **sign_test(per_trial["area"], baseline).to_dict(),
                "mean_area_difference": mean_difference,
                "std_area_difference": std_difference,
            }
        entry["sign_test_vs_knn"] = entry["sign_tests"].get("knn")
        routers[name] = entry
    return {
        "dataset": dataset,
        "encoder": encoder,
        "trials": len(outcomes),
        "test_models": config.test_models,
        "seed": config.seed,
        "fractions": list(config.fractions),
        "routers": routers,
        "models": {
            "test_prompts_per_trial": float(np.mean([o.n_test_prompts for o in outcomes])),
            "dropped_prompts_per_trial": float(np.mean([o.n_dropped_prompts for o in outcomes])),
            "splits": [{"train": o.train_models, "test": o.test_models} for o in outcomes],
        },
    }
