"""Partial evidence, Psi-prior variants and calibration promises in the trial loop."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from tests.evaluation.test_eval_trials import FAST_PARAMS, planted_dataset
from uniroute.cli.eval_cmd import product_calibrator
from uniroute.data.splits import split_prompts
from uniroute.deployment.snapshot import calibrate_pool
from uniroute.errors import DataError, RouterError
from uniroute.evaluation.evidence import (
    MISSING_TASK,
    EvidenceSetting,
    evidence_settings,
    parse_onboard_prompts,
)
from uniroute.evaluation.report import (
    _markdown_document,
    calibration_table_markdown,
    evidence_tables_markdown,
)
from uniroute.evaluation.specs import parse_router_label, prior_partners, router_specs
from uniroute.evaluation.trials import TrialConfig, run_trial, run_trials
from uniroute.registry.calibration import Target
from uniroute.routers import make_estimator
from uniroute.routers.base import RouterEstimator
from uniroute.tradeoff import route_argmin

ROUTERS = ["uniroute-kmeans", "uniroute-kmeans:own-mean", "knn", "zero"]
PARAMS = {r: p for r, p in FAST_PARAMS.items() if r in ("uniroute-kmeans", "knn")}


def config(**overrides: Any) -> TrialConfig:
    values: dict[str, Any] = {
        "routers": ROUTERS,
        "test_models": 4,
        "trials": 2,
        "seed": 0,
        "router_params": PARAMS,
    }
    values.update(overrides)
    return TrialConfig(**values)


def evaluate(cfg: TrialConfig):
    dataset, X = planted_dataset()
    return run_trials(dataset, lambda: None, cfg, fixed_embeddings=X, encoder_id="planted")


class Recorder:
    """Wraps RouterEstimator.fit / make_pool to record who was fitted and with which scores."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fits: list[tuple[str, np.ndarray]] = []
        self.pools: list[tuple[str, str, tuple[str, ...], np.ndarray]] = []
        original_fit, original_make_pool = RouterEstimator.fit, RouterEstimator.make_pool
        recorder = self

        def fit(self, X_train, S_train, X_val, S_val, costs):
            recorder.fits.append((self.get_params().get("psi_prior", self.name), np.copy(S_val)))
            return original_fit(self, X_train, S_train, X_val, S_val, costs)

        def make_pool(self, names, scores, costs, **kwargs):
            label = f"{self.name}:{self.get_params().get('psi_prior', '')}"
            recorder.pools.append((label, self.name, tuple(names), np.array(scores, copy=True)))
            return original_make_pool(self, names, scores, costs, **kwargs)

        monkeypatch.setattr(RouterEstimator, "fit", fit)
        monkeypatch.setattr(RouterEstimator, "make_pool", make_pool)


# ---------------------------------------------------------------- parsing


def test_onboard_prompts_and_settings_parse() -> None:
    assert parse_onboard_prompts("10, 25,all,10") == [10, 25, None]
    settings = evidence_settings([10, None], "each")
    assert [s.label for s in settings] == ["n=10", "all", MISSING_TASK]
    assert settings[1].is_full and not settings[0].is_full
    for bad in ("0", "ten", ""):
        with pytest.raises(DataError, match="--onboard-prompts"):
            parse_onboard_prompts(bad)


def test_router_labels_name_a_psi_prior_variant() -> None:
    assert parse_router_label("uniroute-kmeans:own-mean") == ("uniroute-kmeans", "own-mean")
    assert parse_router_label("knn") == ("knn", None)
    with pytest.raises(RouterError, match="no Psi prior"):
        parse_router_label("knn:own-mean")
    with pytest.raises(RouterError, match="unknown Psi prior"):
        parse_router_label("uniroute-kmeans:flat")
    with pytest.raises(RouterError, match="more than once"):
        router_specs(["zero", "zero"])
    specs = router_specs(
        ["uniroute-kmeans", "uniroute-kmeans:own-mean", "uniroute-learned:own-mean"],
        {"uniroute-kmeans": {"k_grid": [2, 4]}, "uniroute-kmeans:own-mean": {"n_clusters": 3}},
    )
    assert specs[0].params == {"k_grid": [2, 4]} and specs[0].psi_prior == "population"
    assert specs[1].params == {"k_grid": [2, 4], "n_clusters": 3, "psi_prior": "own-mean"}
    # Only same-estimator, same-parameter pairs: the differing n_clusters breaks this one.
    assert prior_partners(specs) == {}
    specs = router_specs(["uniroute-kmeans", "uniroute-kmeans:own-mean", "knn"], PARAMS)
    assert prior_partners(specs) == {"uniroute-kmeans": "uniroute-kmeans:own-mean"}


# ---------------------------------------------------------------- evidence settings


def test_each_router_is_fitted_once_per_trial_whatever_the_settings(monkeypatch) -> None:
    recorder = Recorder(monkeypatch)
    evaluate(config(evidence=evidence_settings([3, 10, None], "each")))
    assert len(recorder.fits) == 2 * len(ROUTERS)
    # Training LLMs are unchanged: their validation scores are complete in every fit.
    assert all(np.isfinite(s_val).all() for _, s_val in recorder.fits)


def test_the_onboarding_subset_is_the_same_for_every_router_and_test_llm(monkeypatch) -> None:
    recorder = Recorder(monkeypatch)
    evaluation = evaluate(config(trials=1, evidence=evidence_settings([5, 12], None)))
    outcome = evaluation.outcomes[0]
    assert outcome.evidence_prompts == {"n=5": 5, "n=12": 12}
    # Per router: the full pool, then n=5, then n=12 (make_pool calls in that order).
    by_router: dict[str, list[np.ndarray]] = {}
    for label, _, names, scores in recorder.pools:
        assert list(names) == outcome.test_models
        by_router.setdefault(label, []).append(scores)
    assert len(by_router) == len(ROUTERS)
    subsets = {label: [np.isfinite(s) for s in pools[1:3]] for label, pools in by_router.items()}
    first = next(iter(subsets.values()))
    for n, kept in zip((5, 12), first, strict=True):
        rows = kept.any(axis=1)
        assert rows.sum() == n
        # The same rows for every test LLM (the planted data has no missing score).
        assert (kept == rows[:, None]).all()
    # Nested: the n=12 subset contains the n=5 one.
    assert (first[1].any(axis=1) >= first[0].any(axis=1)).all()
    for kept in subsets.values():
        assert all((a == b).all() for a, b in zip(kept, first, strict=True))
    # The kept scores are the real ones.
    full = next(iter(by_router.values()))[0]
    partial = next(iter(by_router.values()))[1]
    assert np.array_equal(partial[first[0]], full[first[0]])


def test_missing_task_removes_exactly_that_tasks_test_llm_validation_scores(monkeypatch) -> None:
    dataset, X = planted_dataset()
    recorder = Recorder(monkeypatch)
    cfg = config(trials=1, evidence=evidence_settings([], "math"))
    seed = int(np.random.SeedSequence(0).generate_state(1)[0])
    split = split_prompts(dataset.tasks, cfg.fractions, seed=seed)
    outcome = run_trial(dataset, X, cfg, seed, split)
    assert outcome.missing_task == "math"
    val_tasks = dataset.tasks[split.val]
    assert outcome.evidence_prompts[MISSING_TASK] == int((val_tasks != "math").sum())
    test_cols = [dataset.model_index(m) for m in outcome.test_models]
    true_val = dataset.scores[np.ix_(split.val, test_cols)]
    pools = [scores for _, _, _, scores in recorder.pools]
    assert len(pools) == 2 * len(ROUTERS)  # full + missing-task per router
    for full, partial in zip(pools[::2], pools[1::2], strict=True):
        assert np.array_equal(full, true_val)
        assert np.isnan(partial[val_tasks == "math"]).all()
        assert np.array_equal(partial[val_tasks != "math"], true_val[val_tasks != "math"])
    # Metrics on the removed task's test prompts are reported for both pools.
    assert set(outcome.removed_task_metrics) == {"all", MISSING_TASK}
    assert set(outcome.removed_task_metrics[MISSING_TASK]) == set(ROUTERS)


def test_missing_task_each_draws_a_seeded_task_per_trial() -> None:
    cfg = config(trials=6, routers=["zero"], evidence=evidence_settings([], "each"))
    first, again = evaluate(cfg), evaluate(cfg)
    tasks = first.results["evidence"]["missing_task_per_trial"]
    assert tasks == again.results["evidence"]["missing_task_per_trial"]
    assert set(tasks) <= {"math", "text"} and len(set(tasks)) == 2
    with pytest.raises(DataError, match="not a task"):
        evaluate(config(evidence=evidence_settings([], "poetry")))


def test_all_equals_the_default_run_exactly() -> None:
    plain = evaluate(config(trials=3))
    swept = evaluate(config(trials=3, evidence=evidence_settings([2, 10, None], "each")))
    for label in ROUTERS:
        default = plain.results["routers"][label]
        entry = swept.results["routers"][label]
        assert entry["per_trial"] == default["per_trial"]
        assert entry["sign_tests"] == default["sign_tests"]
        assert (
            swept.results["evidence"]["routers"][label]["all"]["per_trial"]
            == (default["per_trial"])
        )
    assert "evidence" not in plain.results
    # Less evidence is scored, and differs from full evidence.
    few = swept.results["evidence"]["routers"]["uniroute-kmeans"]["n=2"]["per_trial"]["area"]
    assert few != plain.results["routers"]["uniroute-kmeans"]["per_trial"]["area"]


def test_a_setting_that_leaves_a_test_llm_without_scores_is_nan_not_a_crash() -> None:
    dataset, X = planted_dataset()
    dataset.scores[dataset.tasks == "text", 0] = np.nan  # math0 only has math scores
    cfg = config(
        trials=4, routers=["zero"], evidence=[EvidenceSetting("gone", missing_task="math")]
    )
    evaluation = run_trials(dataset, lambda: None, cfg, fixed_embeddings=X)
    areas = evaluation.results["evidence"]["routers"]["zero"]["gone"]["per_trial"]["area"]
    held_out = ["math0" in o.test_models for o in evaluation.outcomes]
    assert [np.isnan(a) for a in areas] == held_out


# ---------------------------------------------------------------- Psi-prior variants


def test_prior_variants_pair_per_trial_and_match_separate_runs() -> None:
    evaluation = evaluate(config(trials=3, evidence=evidence_settings([4, None], None)))
    results = evaluation.results
    assert results["prior_pairs"] == {"uniroute-kmeans": "uniroute-kmeans:own-mean"}
    entry = results["routers"]["uniroute-kmeans"]
    assert entry["without_prior"] == "uniroute-kmeans:own-mean"
    paired = entry["sign_tests"]["uniroute-kmeans:own-mean"]
    with_prior = np.array(entry["per_trial"]["area"])
    without = np.array(results["routers"]["uniroute-kmeans:own-mean"]["per_trial"]["area"])
    assert paired["wins"] == int((with_prior > without + 1e-12).sum())
    assert paired["mean_area_difference"] == pytest.approx(float(np.mean(with_prior - without)))
    assert (
        "uniroute-kmeans:own-mean"
        in (results["evidence"]["routers"]["uniroute-kmeans"]["n=4"]["sign_tests"])
    )
    # The alias is exactly the estimator with psi_prior="own-mean".
    alone = evaluate(
        config(
            trials=3,
            routers=["uniroute-kmeans"],
            router_params={
                "uniroute-kmeans": {**PARAMS["uniroute-kmeans"], "psi_prior": "own-mean"}
            },
        )
    )
    assert (
        alone.results["routers"]["uniroute-kmeans"]["per_trial"]
        == (results["routers"]["uniroute-kmeans:own-mean"]["per_trial"])
    )


@pytest.mark.slow  # two learned-map fits
def test_the_learned_map_reuses_k_of_the_kmeans_router_with_the_same_prior() -> None:
    routers = ["uniroute-learned:own-mean", "uniroute-kmeans:own-mean", "uniroute-kmeans"]
    shared = evaluate(config(routers=routers, router_params={}, trials=1))
    alone = evaluate(
        config(
            routers=["uniroute-learned:own-mean"],
            router_params={"uniroute-learned:own-mean": {"n_clusters": "auto"}},
            trials=1,
        )
    )
    assert (
        shared.outcomes[0].metrics["uniroute-learned:own-mean"]
        == (alone.outcomes[0].metrics["uniroute-learned:own-mean"])
    )


# ---------------------------------------------------------------- calibration promises


def test_calibration_promise_is_the_products_and_realised_is_on_the_test_prompts(
    monkeypatch,
) -> None:
    dataset, X = planted_dataset()
    fitted: dict[str, RouterEstimator] = {}
    original_fit = RouterEstimator.fit

    def fit(self, *args):
        fitted[self.name] = self
        return original_fit(self, *args)

    monkeypatch.setattr(RouterEstimator, "fit", fit)
    cfg = config(
        trials=1,
        routers=["uniroute-kmeans", "zero", "oracle"],
        calibration_targets={"quality": 0.6, "cost": 2.5},
        calibrator=product_calibrator,
    )
    seed = 11
    split = split_prompts(dataset.tasks, cfg.fractions, seed=seed)
    outcome = run_trial(dataset, X, cfg, seed, split)
    assert set(outcome.calibration) == {"quality", "cost"}
    # The oracle reads true scores and has no pool to calibrate.
    assert set(outcome.calibration["quality"]) == {"uniroute-kmeans", "zero"}

    test_cols = [dataset.model_index(m) for m in outcome.test_models]
    costs = dataset.model_costs[test_cols]
    quality = dataset.scores[np.ix_(split.test, test_cols)]
    for name in ("uniroute-kmeans", "zero"):
        estimator = fitted[name]
        pool = estimator.make_pool(
            outcome.test_models, dataset.scores[np.ix_(split.val, test_cols)], costs
        )
        for kind, value in (("quality", 0.6), ("cost", 2.5)):
            record = outcome.calibration[kind][name]
            assert record["met"]
            product = calibrate_pool(
                SimpleNamespace(router=estimator), pool, Target(kind, value), ""
            )
            assert record["lam"] == product.lam
            assert record["promised_quality"] == product.expected_quality
            assert record["promised_cost"] == product.expected_cost
            choice = route_argmin(estimator.predict_error(X[split.test], pool), costs, product.lam)
            rows = np.arange(len(choice))
            assert record["realised_quality"] == pytest.approx(quality[rows, choice].mean())
            assert record["realised_cost"] == pytest.approx(costs[choice].mean())


def test_calibration_table_in_results_and_markdown() -> None:
    cfg = config(
        trials=3,
        evidence=evidence_settings([5, None], "each"),
        calibration_targets={"quality": 0.6, "cost": 0.5},  # the cost target is below any model
        calibrator=product_calibrator,
    )
    results = evaluate(cfg).results
    quality = results["calibration"]["quality"]
    assert quality["target"] == 0.6 and set(quality["routers"]) == set(ROUTERS)
    entry = quality["routers"]["uniroute-kmeans"]
    met = [i for i, m in enumerate(entry["per_trial"]["met"]) if m]
    assert entry["trials_met"] == len(met) > 0
    differences = [
        entry["per_trial"]["realised_quality"][i] - entry["per_trial"]["promised_quality"][i]
        for i in met
    ]
    assert entry["quality_difference"]["mean"] == pytest.approx(np.mean(differences))
    assert entry["quality_abs_difference"]["mean"] == pytest.approx(np.mean(np.abs(differences)))
    cost = results["calibration"]["cost"]["routers"]["zero"]
    assert cost["trials_met"] == 0 and cost["unmet_reasons"]
    table = calibration_table_markdown(results)
    assert "## Calibration to expected quality ≥ 0.6" in table
    assert "| uniroute-kmeans | " in table and "0/3" in table
    evidence = evidence_tables_markdown(results)
    assert "## Area by onboarding evidence" in evidence
    assert "| router | n=5 | all | missing-task |" in evidence
    assert "without the prior" in evidence and "removed task" in evidence
    document = _markdown_document(results, "title")
    assert table in document and evidence in document


def test_calibration_needs_a_calibrator_and_known_kinds() -> None:
    with pytest.raises(ValueError, match="calibrator"):
        evaluate(config(calibration_targets={"quality": 0.5}))
    with pytest.raises(ValueError, match="share"):
        evaluate(config(calibration_targets={"share": 0.5}, calibrator=product_calibrator))


def test_make_estimator_rejects_the_variant_syntax_itself() -> None:
    # Aliases belong to the evaluation; the estimator registry knows plain names only.
    with pytest.raises(RouterError, match="unknown router"):
        make_estimator("uniroute-kmeans:own-mean")
