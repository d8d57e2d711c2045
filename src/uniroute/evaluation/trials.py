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
from uniroute.embeddings.factory import ProgressHook
from uniroute.errors import RouterError
from uniroute.evaluation.evidence import (
    MISSING_TASK,
    EvidenceSetting,
    check_missing_task,
    kept_prompts,
    partial_scores,
    subset_order,
    trial_missing_task,
)
from uniroute.evaluation.metrics import evaluate_curve, single_model_points
from uniroute.evaluation.plans import plan_metrics
from uniroute.evaluation.promises import (
    CALIBRATION_KINDS,
    Calibrator,
    check_promise,
    summarise_promises,
)
from uniroute.evaluation.specs import RouterSpec, prior_partners, router_specs
from uniroute.evaluation.stats import mean_std, sign_test
from uniroute.pool import Pool
from uniroute.routers import ESTIMATORS, ClusterProfileRouter, UniRouteVerify, make_estimator
from uniroute.routers.base import RouterEstimator
from uniroute.routers.verify import PlanTable
from uniroute.tradeoff import DeferralCurve, deferral_curve

log = logging.getLogger(__name__)

METRICS = ("area", "area_50", "qnc", "peak_accuracy")
SIGN_TEST_BASELINES = ("knn", "zero", "uniroute-kmeans")


@dataclass
class TrialConfig:
    """What to evaluate and how: routers, LLM hold-out size, number of trials, seed.

    ``routers`` are labels (``NAME`` or ``NAME:PSI_PRIOR``, see :mod:`.specs`). ``evidence``
    lists extra evidence settings to score every fitted router under (see :mod:`.evidence`);
    ``calibration_targets`` ({"quality" or "cost": value}) are solved per trial and router by
    ``calibrator`` and checked on the test prompts (see :mod:`.promises`).
    """

    routers: Sequence[str]
    test_models: int
    trials: int = 20
    seed: int = 0
    fractions: tuple[float, float, float] = (0.6, 0.1, 0.3)
    router_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    evidence: Sequence[EvidenceSetting] = ()
    calibration_targets: Mapping[str, float] = field(default_factory=dict)
    calibrator: Calibrator | None = None

    def specs(self) -> list[RouterSpec]:
        """The router specs of ``routers`` with their parameters."""
        return router_specs(self.routers, self.router_params)

    def check(self, tasks: Sequence[str] = ()) -> None:
        """Fail early on an invalid router label, evidence setting or calibration target."""
        self.specs()
        labels = [setting.label for setting in self.evidence]
        if len(set(labels)) != len(labels):
            raise ValueError(f"evidence settings repeat: {labels}")
        for setting in self.evidence:
            check_missing_task(setting.missing_task, tasks)
        unknown = sorted(set(self.calibration_targets) - set(CALIBRATION_KINDS))
        if unknown:
            raise ValueError(f"calibration targets {unknown}; use {list(CALIBRATION_KINDS)}")
        if self.calibration_targets and self.calibrator is None:
            raise ValueError("calibration targets need a calibrator")


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
    #: Evidence setting label -> router label -> metrics (the "all" setting is ``metrics``).
    evidence: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    #: Evidence setting label -> how many validation prompts the test LLMs kept (all tasks).
    evidence_prompts: dict[str, int] = field(default_factory=dict)
    #: The task removed in the missing-task setting (None without one).
    missing_task: str | None = None
    #: "all" / "missing-task" -> router label -> metrics on the removed task's test prompts.
    removed_task_metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    #: Target kind -> router label -> promised and realised quality and cost.
    calibration: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    n_representative: int = 0
    #: Router label -> what a plan router chose in this trial (shrinkage, plans kept, K).
    plan_details: dict[str, dict[str, Any]] = field(default_factory=dict)


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
    on_router: Callable[[str, float], None] | None = None,
) -> TrialOutcome:
    """Fit each router on the training LLMs, onboard the unseen LLMs, score on the test prompts.

    Each router is fitted once; every evidence setting and calibration target reuses that fit
    (only the test pool changes). ``on_router(label, seconds)`` is called as each router is done
    (fitted, scored, and its evidence settings and calibration targets checked).
    """
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
    val_scores_test = scores[np.ix_(val_idx, test_cols)]
    answers = dataset.answers
    uses_answers = any(
        getattr(ESTIMATORS[spec.name], "uses_answers", False) for spec in config.specs()
    )
    if uses_answers and answers is None:
        raise RouterError(
            f"dataset {dataset.name!r} records no answers, which uniroute-verify needs "
            "(RouterBench M|model_response, mmlupro27 'answers', a long-format 'answer' column)"
        )

    # Evidence settings: one seeded subset order and one removed task per trial, shared by all.
    val_tasks = dataset.tasks[val_idx]
    order = subset_order(trial_seed, len(val_idx))
    missing = next((s.missing_task for s in config.evidence if s.missing_task is not None), None)
    removed_task = trial_missing_task(missing, val_tasks, trial_seed)
    kept = {
        s.label: kept_prompts(s, order, val_tasks, removed_task)
        for s in config.evidence
        if not s.is_full
    }
    on_removed_task = None if removed_task is None else dataset.tasks[test_idx] == removed_task

    curves, metrics, fit_seconds = {}, {}, {}
    evidence: dict[str, dict[str, dict[str, float]]] = {s.label: {} for s in config.evidence}
    removed_metrics: dict[str, dict[str, dict[str, float]]] = (
        {} if on_removed_task is None else {"all": {}, MISSING_TASK: {}}
    )
    calibration: dict[str, dict[str, dict[str, Any]]] = {
        kind: {} for kind in config.calibration_targets
    }

    def score(errors: np.ndarray, rows: np.ndarray | None = None) -> dict[str, float]:
        if rows is None:
            return evaluate_curve(
                deferral_curve(errors, test_costs, test_quality, call_costs=test_call_costs),
                test_quality,
                test_call_costs,
            )
        quality, costs = test_quality[rows], test_call_costs[rows]
        return evaluate_curve(
            deferral_curve(errors[rows], test_costs, quality, call_costs=costs),
            quality,
            costs,
        )

    def plan_outcome(
        estimator: UniRouteVerify, val_scores: np.ndarray, rows: np.ndarray | None = None
    ) -> tuple[dict[str, float], DeferralCurve, PlanTable] | None:
        assert answers is not None
        return plan_metrics(
            estimator,
            list(test_models),
            val_scores,
            answers[np.ix_(val_idx, test_cols)],
            test_costs,
            embeddings[test_idx],
            test_quality,
            test_call_costs,
            answers[np.ix_(test_idx, test_cols)],
            subset=rows,
        )

    def plans_scored(
        estimator: UniRouteVerify, val_scores: np.ndarray, rows: np.ndarray | None = None
    ) -> dict[str, float]:
        outcome = plan_outcome(estimator, val_scores, rows)
        return _nan_metrics() if outcome is None else outcome[0]

    plan_details: dict[str, dict[str, Any]] = {}
    chosen_k: dict[str | None, int] = {}
    # K-means first: its K selection is exactly what the learned map's n_clusters="auto" would
    # repeat on the same data with the same seed (and Psi prior), so the learned map reuses it.
    specs = sorted(config.specs(), key=lambda spec: spec.name != "uniroute-kmeans")
    for spec in specs:
        started = time.perf_counter()
        params = spec.params
        # The learned map's and the verify router's "auto" K would repeat the K-means selection
        # (same procedure, data and seed), so they reuse it.
        sharing_k = spec.name in ("uniroute-learned", "uniroute-verify") and spec.uses_defaults
        if sharing_k and spec.psi_prior in chosen_k:
            params.setdefault("n_clusters", chosen_k[spec.psi_prior])
        estimator = make_estimator(spec.name, **params)
        fit_args = (
            embeddings[train_idx],
            scores[np.ix_(train_idx, train_cols)],
            embeddings[val_idx],
            scores[np.ix_(val_idx, train_cols)],
            dataset.model_costs[train_cols],
        )
        plans = isinstance(estimator, UniRouteVerify)
        if isinstance(estimator, UniRouteVerify):
            assert answers is not None
            # Training LLMs' answers only: they choose how much agreement is worth.
            estimator.fit(
                *fit_args,
                answers_train=answers[np.ix_(train_idx, train_cols)],
                answers_val=answers[np.ix_(val_idx, train_cols)],
            )
        else:
            estimator.fit(*fit_args)
        pool: Pool | None = None
        if estimator.clairvoyant:
            errors_hat = estimator.oracle_error(test_quality)
        else:
            # The evaluation pool is the unseen LLMs only, each described by its validation scores
            # (and, for plans, its validation answers).
            pool = estimator.make_pool(
                test_models,
                val_scores_test,
                test_costs,
                answers=None if answers is None else answers[np.ix_(val_idx, test_cols)],
            )
            errors_hat = estimator.predict_error(embeddings[test_idx], pool)
        fit_seconds[spec.label] = time.perf_counter() - started
        if spec.name == "uniroute-kmeans" and spec.uses_defaults:
            if not isinstance(estimator, ClusterProfileRouter):
                raise RouterError(
                    f"{spec.name!r} is a {type(estimator).__name__}, not a cluster router"
                )
            chosen_k.setdefault(spec.psi_prior, int(estimator.n_clusters_))
        if isinstance(estimator, UniRouteVerify):
            scored = plan_outcome(estimator, val_scores_test)
            if scored is None:
                raise RouterError("a test LLM has no validation score; it cannot be described")
            metrics[spec.label], curves[spec.label], table = scored
            plan_details[spec.label] = {
                "shrinkage": float(estimator.shrinkage_),
                "candidates": estimator.candidates_,
                "n_clusters": int(estimator.n_clusters_),
                "plans": len(table),
                "verify_plans": int((~table.is_single()).sum()),
            }
        else:
            curve = deferral_curve(errors_hat, test_costs, test_quality, call_costs=test_call_costs)
            curves[spec.label] = curve
            metrics[spec.label] = evaluate_curve(curve, test_quality, test_call_costs)

        partial_errors: dict[str, np.ndarray | None] = {}
        for setting in config.evidence:
            if setting.is_full or estimator.clairvoyant:
                evidence[setting.label][spec.label] = metrics[spec.label]
                partial_errors[setting.label] = errors_hat
                continue
            if isinstance(estimator, UniRouteVerify):
                evidence[setting.label][spec.label] = plans_scored(
                    estimator, partial_scores(val_scores_test, kept[setting.label])
                )
                partial_errors[setting.label] = None
                continue
            errors = _errors_with_evidence(
                estimator,
                test_models,
                partial_scores(val_scores_test, kept[setting.label]),
                test_costs,
                embeddings[test_idx],
            )
            partial_errors[setting.label] = errors
            evidence[setting.label][spec.label] = (
                _nan_metrics() if errors is None else score(errors)
            )
        if on_removed_task is not None and isinstance(estimator, UniRouteVerify):
            removed_scores = (
                partial_scores(val_scores_test, kept[MISSING_TASK])
                if MISSING_TASK in kept
                else val_scores_test
            )
            empty = not on_removed_task.any()
            removed_metrics["all"][spec.label] = (
                _nan_metrics()
                if empty
                else plans_scored(estimator, val_scores_test, on_removed_task)
            )
            removed_metrics[MISSING_TASK][spec.label] = (
                _nan_metrics()
                if empty
                else plans_scored(estimator, removed_scores, on_removed_task)
            )
        elif on_removed_task is not None:
            removed = partial_errors.get(MISSING_TASK)
            if on_removed_task.any():
                removed_metrics["all"][spec.label] = score(errors_hat, on_removed_task)
                removed_metrics[MISSING_TASK][spec.label] = (
                    _nan_metrics() if removed is None else score(removed, on_removed_task)
                )
            else:
                removed_metrics["all"][spec.label] = _nan_metrics()
                removed_metrics[MISSING_TASK][spec.label] = _nan_metrics()

        # Calibration promises solve lambda for single-model routing; plans are not calibrated.
        if pool is not None and config.calibrator is not None and not plans:
            for kind, value in config.calibration_targets.items():
                calibration[kind][spec.label] = check_promise(
                    config.calibrator,
                    estimator,
                    embeddings[val_idx],
                    pool,
                    kind,
                    value,
                    test_errors=errors_hat,
                    test_quality=test_quality,
                    test_call_costs=test_call_costs,
                )
        if on_router is not None:
            on_router(spec.label, time.perf_counter() - started)

    point_costs, point_accuracies = single_model_points(test_quality, test_call_costs)
    model_points = {
        m: (float(c), float(a))
        for m, c, a in zip(test_models, point_costs, point_accuracies, strict=True)
    }
    n_val = len(val_idx)
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
        evidence=evidence,
        evidence_prompts={
            s.label: int(kept[s.label].sum()) if s.label in kept else n_val for s in config.evidence
        },
        missing_task=removed_task,
        removed_task_metrics=removed_metrics,
        calibration=calibration,
        n_representative=n_val,
        plan_details=plan_details,
    )


def _errors_with_evidence(
    estimator: RouterEstimator,
    names: Sequence[str],
    val_scores: np.ndarray,
    costs: np.ndarray,
    X_test: np.ndarray,
) -> np.ndarray | None:
    """Estimated test errors with the test LLMs described by these (partial) scores.

    None when some test LLM has no validation score left: it cannot be described at all.
    """
    if not np.isfinite(val_scores).any(axis=0).all():
        return None
    pool = estimator.make_pool(names, val_scores, costs)
    return estimator.predict_error(X_test, pool)


def _nan_metrics() -> dict[str, float]:
    """Metrics of a setting that could not be scored in a trial (left out of means)."""
    return {**{k: float("nan") for k in METRICS}, "qnc_reached": False}


def trial_seeds(config: TrialConfig, dataset: RoutingDataset) -> list[int]:
    """Check ``config`` against the data and draw every trial's seed from ``config.seed``.

    All seeds are drawn up front, so a trial's seed depends only on its index: never on which
    process or machine runs it, nor on the order trials finish in.
    """
    if config.trials < 1:
        raise ValueError(f"trials must be >= 1, got {config.trials}")
    config.check(dataset.tasks.tolist())
    seeds: list[int] = np.random.SeedSequence(config.seed).generate_state(config.trials).tolist()
    return seeds


def thread_counts() -> dict[str, int]:
    """This process's native thread pools ({"blas": n, "openmp": m}), the largest of each API."""
    # scikit-learn's OpenMP runtime is counted only once it is loaded, as a trial loads it.
    import sklearn.cluster  # noqa: F401
    from threadpoolctl import threadpool_info

    counts: dict[str, int] = {}
    for pool in threadpool_info():
        api, n = str(pool["user_api"]), int(pool["num_threads"])
        counts[api] = max(n, counts.get(api, 0))
    return counts


def compute_trial(
    dataset: RoutingDataset,
    encoder_factory: EncoderFactory,
    config: TrialConfig,
    trial_seed: int,
    fixed_embeddings: np.ndarray | None = None,
    *,
    threads: Mapping[str, int] | None = None,
    on_embedded: Callable[[float], None] | None = None,
    on_router: Callable[[str, float], None] | None = None,
) -> tuple[TrialOutcome, str]:
    """One whole trial from its seed alone: prompt split, encoder fit (unless fixed), routers.

    The unit of work a serial run and a cluster run share: it reads nothing but its arguments
    (all picklable when ``encoder_factory`` is), so the same seed gives the same outcome in any
    process. ``threads`` ({"blas" or "openmp": count}, as :func:`thread_counts` reads them)
    sets the native thread pools for the trial: OpenBLAS sums in a different order with another
    thread count, which changes the last bits of the TF-IDF SVD, so a worker runs with the
    counts of the process it stands in for. Returns the outcome and the id of the encoder that
    embedded the prompts ("" for ``fixed_embeddings``, whose encoder the caller knows).
    """
    if threads:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=dict(threads)):
            return compute_trial(
                dataset,
                encoder_factory,
                config,
                trial_seed,
                fixed_embeddings,
                on_embedded=on_embedded,
                on_router=on_router,
            )
    split = split_prompts(dataset.tasks, config.fractions, seed=trial_seed)
    encoder_id = ""
    if fixed_embeddings is None:
        started = time.perf_counter()
        embeddings, encoder_id = embed_for_trial(encoder_factory, dataset.prompts, split.train)
        if on_embedded is not None:
            on_embedded(time.perf_counter() - started)
    else:
        embeddings = fixed_embeddings
    outcome = run_trial(dataset, embeddings, config, trial_seed, split, on_router=on_router)
    return outcome, encoder_id


def run_trials(
    dataset: RoutingDataset,
    encoder_factory: EncoderFactory,
    config: TrialConfig,
    *,
    fixed_embeddings: np.ndarray | None = None,
    encoder_id: str | None = None,
    on_trial: Callable[[int, TrialOutcome], None] | None = None,
    progress: ProgressHook | None = None,
) -> EvaluationRun:
    """Run ``config.trials`` trials, each with a fresh LLM split and prompt split.

    ``fixed_embeddings`` (with ``encoder_id``) skips per-trial embedding for pretrained encoders,
    whose vectors do not depend on the training prompts; otherwise the encoder is fitted on each
    trial's training prompts so no test prompt leaks into it. ``progress`` hears of the whole run
    as one step whose units are the routers fitted and scored in every trial, plus each trial's
    encoder fit when it refits one; ``on_trial(t, outcome)`` is called as each trial ends.
    """
    seeds = trial_seeds(config, dataset)
    n_routers = len(config.specs())
    per_trial = n_routers + (1 if fixed_embeddings is None else 0)
    total = config.trials * per_trial
    done = 0

    def report(message: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(message, done, total)

    if progress is not None:
        progress(f"running {config.trials} trial(s) of {n_routers} router(s)", 0, total)
    outcomes = []
    for t, trial_seed in enumerate(seeds):
        trial = f"trial {t + 1}/{config.trials}"

        def embedded(seconds: float, trial: str = trial) -> None:
            report(
                f"{trial}: fitted the encoder and embedded {len(dataset.prompts)} prompts in "
                f"{seconds:.1f} s"
            )

        def router_done(label: str, seconds: float, trial: str = trial) -> None:
            report(f"{trial}: {label} fitted and scored in {seconds:.1f} s")

        outcome, trial_encoder = compute_trial(
            dataset,
            encoder_factory,
            config,
            trial_seed,
            fixed_embeddings,
            on_embedded=embedded,
            on_router=router_done,
        )
        encoder_id = trial_encoder if fixed_embeddings is None else encoder_id
        outcomes.append(outcome)
        if on_trial is not None:
            on_trial(t, outcome)
    results = aggregate(outcomes, dataset=dataset.name, encoder=encoder_id or "", config=config)
    return EvaluationRun(outcomes=outcomes, results=results)


def aggregate(
    outcomes: Sequence[TrialOutcome], *, dataset: str, encoder: str, config: TrialConfig
) -> dict[str, Any]:
    """Mean ± std of each metric per router over trials, and paired sign tests.

    Each router is tested against the baselines K-NN and ZeroRouter and, for a router with the
    population Psi prior, against the same router without it (``specs.prior_partners``). With
    evidence settings or calibration targets, ``evidence`` and ``calibration`` hold the same per
    setting / target.
    """
    labels = [spec.label for spec in config.specs()]
    partners = prior_partners(config.specs())
    routers: dict[str, Any] = {}
    per_router = {label: [o.metrics[label] for o in outcomes] for label in labels}
    for name in labels:
        entry = _summary(per_router, name, partners)
        entry["qnc_reached"] = int(sum(bool(m["qnc_reached"]) for m in per_router[name]))
        entry["fit_seconds"] = float(np.mean([o.fit_seconds[name] for o in outcomes]))
        entry["sign_test_vs_knn"] = entry["sign_tests"].get("knn")
        if name in partners:
            entry["without_prior"] = partners[name]
        details = [o.plan_details[name] for o in outcomes if name in o.plan_details]
        if details:
            entry["plans_per_trial"] = details
        routers[name] = entry
    results: dict[str, Any] = {
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
    if partners:
        results["prior_pairs"] = dict(partners)
    if config.evidence:
        results["evidence"] = _aggregate_evidence(outcomes, config, labels, partners)
    if config.calibration_targets:
        results["calibration"] = {
            kind: {
                "target": float(value),
                "routers": {
                    name: summarise_promises([o.calibration[kind][name] for o in outcomes])
                    for name in labels
                    if all(name in o.calibration[kind] for o in outcomes)
                },
            }
            for kind, value in config.calibration_targets.items()
        }
    return results


def _aggregate_evidence(
    outcomes: Sequence[TrialOutcome],
    config: TrialConfig,
    labels: Sequence[str],
    partners: Mapping[str, str],
) -> dict[str, Any]:
    settings = []
    for setting in config.evidence:
        kept = [o.evidence_prompts[setting.label] for o in outcomes]
        settings.append(
            {
                "label": setting.label,
                "onboard_prompts": setting.n_prompts,
                "missing_task": setting.missing_task,
                "kept_prompts_per_trial": float(np.mean(kept)),
            }
        )
    section: dict[str, Any] = {
        "settings": settings,
        "representative_prompts_per_trial": float(np.mean([o.n_representative for o in outcomes])),
        "routers": {
            name: {
                setting.label: _summary(
                    {r: [o.evidence[setting.label][r] for o in outcomes] for r in labels},
                    name,
                    partners,
                )
                for setting in config.evidence
            }
            for name in labels
        },
    }
    if any(o.missing_task is not None for o in outcomes):
        section["missing_task_per_trial"] = [o.missing_task for o in outcomes]
        section["removed_task"] = {
            name: {
                setting: _summary(
                    {r: [o.removed_task_metrics[setting][r] for o in outcomes] for r in labels},
                    name,
                    partners,
                )
                for setting in ("all", MISSING_TASK)
            }
            for name in labels
        }
    return section


def _summary(
    per_router: Mapping[str, Sequence[Mapping[str, Any]]],
    name: str,
    partners: Mapping[str, str],
) -> dict[str, Any]:
    """Mean ± std per metric of one router and its paired area sign tests (NaN trials left out)."""
    per_trial = {k: [float(m[k]) for m in per_router[name]] for k in METRICS}
    entry: dict[str, Any] = {"trials": len(per_router[name]), "per_trial": per_trial}
    for k in METRICS:
        mean, std = mean_std(per_trial[k])
        entry[k] = {"mean": mean, "std": std}
    # Paired sign tests of the per-trial area against each baseline that was run.
    entry["sign_tests"] = {}
    others = [b for b in SIGN_TEST_BASELINES if b != name and b in per_router]
    if name in partners:
        others.append(partners[name])
    for other in others:
        entry["sign_tests"][other] = _paired_area_test(
            per_trial["area"], [float(m["area"]) for m in per_router[other]]
        )
    return entry


def _paired_area_test(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Sign test and mean ± std of the paired difference over trials where both are defined."""
    a_values, b_values = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    both = np.isfinite(a_values) & np.isfinite(b_values)
    a_values, b_values = a_values[both], b_values[both]
    mean_difference, std_difference = mean_std((a_values - b_values).tolist())
    return {
        **sign_test(a_values, b_values).to_dict(),
        "mean_area_difference": mean_difference,
        "std_area_difference": std_difference,
    }
