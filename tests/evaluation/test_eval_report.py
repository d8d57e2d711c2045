"""results.json / results.md / the figures: writing, the Markdown tables, the opening sentence."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from uniroute.evaluation.metrics import evaluate_curve, single_model_points
from uniroute.evaluation.plots import DOLLARS, average_curves, model_spreads
from uniroute.evaluation.report import (
    REQUIRED_KEYS,
    REQUIRED_ROUTER_KEYS,
    cost_unit,
    opening_sentence,
    paired_difference_panels,
    paired_differences,
    results_table_markdown,
    validate_results,
    write_results,
)
from uniroute.evaluation.stats import mean_std, sign_test
from uniroute.tradeoff import deferral_curve


def _paired(a, b):
    """A sign_tests entry as the trial loop stores it (trials._paired_area_test)."""
    differences = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    mean, std = mean_std(differences)
    return {**sign_test(a, b).to_dict(), "mean_area_difference": mean, "std_area_difference": std}


def _entry(areas, qncs, reached, sign=None):
    per_trial = {
        "area": list(areas),
        "area_50": [a - 0.1 for a in areas],
        "qnc": list(qncs),
        "peak_accuracy": [a + 0.1 for a in areas],
    }
    entry: dict[str, Any] = {}
    for key, values in per_trial.items():
        mean, std = mean_std(values)
        entry[key] = {"mean": mean, "std": std}
    entry.update(qnc_reached=reached, trials=len(areas), sign_test_vs_knn=sign, per_trial=per_trial)
    return entry


def _results():
    knn_areas = [0.60, 0.62, 0.61]
    uniroute_areas = [0.65, 0.66, 0.60]
    results: dict[str, Any] = {
        "dataset": "toy",
        "encoder": "tfidf-svd",
        "trials": 3,
        "test_models": 2,
        "seed": 7,
        "routers": {
            "knn": _entry(knn_areas, [80.0, 90.0, 100.0], 2),
            "uniroute-kmeans": _entry(
                uniroute_areas,
                [50.0, 60.0, 70.0],
                3,
                sign_test(uniroute_areas, knn_areas).to_dict(),
            ),
        },
        "models": {"dropped_prompts_per_trial": 1.5},
    }
    results["routers"]["knn"]["sign_tests"] = {}
    results["routers"]["uniroute-kmeans"]["sign_tests"] = {
        "knn": _paired(uniroute_areas, knn_areas)
    }
    return results


def _with_areas(lead, knn, zero=None):
    """Results of routers uniroute-kmeans and knn (and zero) with these per-trial areas."""
    results = _results()
    results["trials"] = len(lead)
    results["routers"] = {
        "uniroute-kmeans": _entry(lead, [50.0] * len(lead), 1),
        "knn": _entry(knn, [60.0] * len(knn), 1),
    }
    tests = {"knn": _paired(lead, knn)}
    if zero is not None:
        results["routers"]["zero"] = _entry(zero, [100.0] * len(zero), 0)
        results["routers"]["zero"]["sign_tests"] = {}
        tests["zero"] = _paired(lead, zero)
    results["routers"]["uniroute-kmeans"]["sign_tests"] = tests
    results["routers"]["uniroute-kmeans"]["sign_test_vs_knn"] = tests["knn"]
    results["routers"]["knn"]["sign_tests"] = {}
    return results


def _curves_and_points():
    rng = np.random.default_rng(0)
    quality = rng.integers(0, 2, size=(30, 2)).astype(float)
    costs = np.array([1.0, 3.0])
    curves = {
        "knn": deferral_curve(rng.random((30, 2)), costs, quality),
        "oracle": deferral_curve(1.0 - quality, costs, quality),
    }
    call_costs = np.broadcast_to(costs, quality.shape)
    point_costs, accuracies = single_model_points(quality, call_costs)
    points = {"a": (point_costs[0], accuracies[0]), "b": (point_costs[1], accuracies[1])}
    return curves, points, quality, call_costs


def _mean_curves_and_spreads():
    """Two trials of the same curves: the figure inputs ``uniroute eval`` passes."""
    curves, points, _, _ = _curves_and_points()
    max_costs = [3.0, 3.0]
    means = {name: average_curves([c, c], max_costs, grid=11) for name, c in curves.items()}
    return means, model_spreads([points, points], max_costs)


def test_table_has_one_row_per_router_with_mean_std_and_sign_test():
    table = results_table_markdown(_results())
    lines = table.strip().splitlines()
    assert len(lines) == 2 + 2
    assert lines[0].startswith("| router | area | area_50 | QNC")
    knn_row, uniroute_row = lines[2], lines[3]
    # knn area: mean 0.61, sample std of (0.60, 0.62, 0.61) = 0.01; QNC mean 90, std 10.
    assert knn_row.startswith("| knn | 0.6100 ± 0.0100 |")
    assert "90.0 ± 10.0 (2/3 reached)" in knn_row
    assert knn_row.endswith("| — |")
    # uniroute vs knn: 0.65 > 0.60 and 0.66 > 0.62 win, 0.60 < 0.61 loses; 2 wins 1 loss, no tie:
    # p = 2 * P(X <= 1 | n = 3, 1/2) = 2 * 4 / 8, capped at 1.
    assert "| 2/1/0, p = 1 |" in uniroute_row
    assert "(3/3 reached)" in uniroute_row


def test_write_results_writes_the_files_with_the_schema(tmp_path):
    curves, spreads = _mean_curves_and_spreads()
    paths = write_results(tmp_path / "out", _results(), curves, spreads)
    names = ("results.json", "results.md", "deferral.png", "paired_differences.png")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(names)
    assert set(paths) == {"json", "markdown", "plot", "paired"}
    for key in ("plot", "paired"):
        assert paths[key].read_bytes().startswith(b"\x89PNG")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(REQUIRED_KEYS) <= set(saved)
    for entry in saved["routers"].values():
        assert set(REQUIRED_ROUTER_KEYS) <= set(entry)
        assert set(entry["per_trial"]) == {"area", "area_50", "qnc", "peak_accuracy"}
    assert saved["routers"]["knn"]["sign_test_vs_knn"] is None
    assert saved["routers"]["uniroute-kmeans"]["sign_test_vs_knn"]["wins"] == 2
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "| uniroute-kmeans |" in markdown
    assert "](deferral.png)" in markdown and "](paired_differences.png)" in markdown


def test_results_md_opens_with_the_sentence_and_explains_qnc(tmp_path):
    curves, spreads = _mean_curves_and_spreads()
    write_results(tmp_path, _results(), curves, spreads)
    markdown = (tmp_path / "results.md").read_text()
    heading, sentence = markdown.splitlines()[0], markdown.splitlines()[2]
    assert heading == "# toy (tfidf-svd): 3 trials with 2 unseen test LLMs"
    assert sentence == opening_sentence(_results()) and sentence.startswith("Over 3 trials")
    assert "trial 1 of" not in markdown.lower()
    # The QNC note sits right under the table and says what "k/N reached" counts.
    table_end = markdown.index("| uniroute-kmeans | 0.6367")
    note = markdown[table_end:].splitlines()[2]
    assert note.startswith("QNC (quality-neutral cost) is the lowest cost")
    assert '"k/3 reached" means' in note and "in k of the 3 trials" in note


def test_no_paired_figure_without_a_uniroute_router(tmp_path):
    results = _results()
    del results["routers"]["uniroute-kmeans"]
    curves, spreads = _mean_curves_and_spreads()
    paths = write_results(tmp_path, results, curves, spreads)
    assert "paired" not in paths and not (tmp_path / "paired_differences.png").exists()
    assert "paired_differences.png" not in (tmp_path / "results.md").read_text()


def test_one_trial_of_real_metrics_round_trips_and_nan_becomes_null(tmp_path):
    curves, points, quality, call_costs = _curves_and_points()
    metrics = {name: evaluate_curve(curve, quality, call_costs) for name, curve in curves.items()}
    results = _results()
    results["trials"] = 1
    results["routers"] = {
        name: _entry([m["area"]], [m["qnc"]], int(m["qnc_reached"])) for name, m in metrics.items()
    }
    results["routers"]["knn"]["area"]["std"] = float("nan")
    means, spreads = _mean_curves_and_spreads()
    write_results(tmp_path, results, means, spreads)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["routers"]["oracle"]["area"]["mean"] == pytest.approx(metrics["oracle"]["area"])
    assert saved["routers"]["oracle"]["qnc_reached"] == 1
    # JSON has no NaN: an undefined std is written as null and shown as n/a.
    assert saved["routers"]["knn"]["area"]["std"] is None
    assert f"{metrics['knn']['area']:.4f} ± n/a" in (tmp_path / "results.md").read_text()


def test_missing_keys_are_named():
    results = _results()
    del results["seed"]
    with pytest.raises(ValueError, match="seed"):
        validate_results(results)
    results = _results()
    del results["routers"]["knn"]["qnc_reached"]
    with pytest.raises(ValueError, match="'knn'.*qnc_reached"):
        results_table_markdown(results)
    results = _results()
    results["routers"]["knn"]["area"] = 0.61
    with pytest.raises(ValueError, match="'knn': 'area' needs 'mean' and 'std'"):
        validate_results(results)


def test_nothing_is_written_for_invalid_results(tmp_path):
    results = _results()
    del results["routers"]["knn"]["per_trial"]["qnc"]
    curves, spreads = _mean_curves_and_spreads()
    with pytest.raises(ValueError, match="per_trial"):
        write_results(tmp_path / "out", results, curves, spreads)
    assert not (tmp_path / "out").exists()


def test_opening_sentence_for_a_significant_win():
    # 9 wins of 10: p = 2 * (1 + 10) / 2^10 = 0.0215 (docs/EVALUATION.md §4).
    knn = [0.70 + 0.01 * t for t in range(10)]
    lead = [a + 0.02 for a in knn[:9]] + [knn[9] - 0.01]
    sentence = opening_sentence(_with_areas(lead, knn))
    assert sentence == (
        "Over 10 trials with unseen test LLMs, uniroute-kmeans has an area of 0.7620, 0.0170 "
        "above K-NN's 0.7450; the difference is significant at the 0.05 level "
        "(sign test p = 0.0215, 9 of 10 trials won)."
    )


def test_opening_sentence_for_a_difference_that_is_not_significant():
    sentence = opening_sentence(_results())
    assert sentence == (
        "Over 3 trials with unseen test LLMs, uniroute-kmeans has an area of 0.6367, 0.0267 "
        "above K-NN's 0.6100; the difference is not significant at the 0.05 level "
        "(sign test p = 1, 2 of 3 trials won)."
    )


def test_opening_sentence_for_a_significant_loss_with_ties():
    knn = [0.80] * 12
    lead = [0.75] * 10 + [0.80] * 2  # 0 wins, 10 losses, 2 ties: p = 2 / 2^10
    sentence = opening_sentence(_with_areas(lead, knn))
    assert "0.0417 below K-NN's 0.8000" in sentence
    assert "the difference is significant at the 0.05 level" in sentence
    assert "(sign test p = 0.00195, 0 of 12 trials won, 2 tied)." in sentence


def test_opening_sentence_when_the_trials_and_the_mean_disagree():
    # 4 small wins and 1 large loss: the mean is below K-NN, but more trials are won.
    knn = [0.70] * 5
    lead = [0.71] * 4 + [0.50]
    sentence = opening_sentence(_with_areas(lead, knn))
    assert "below K-NN's" in sentence and "not significant" in sentence
    many_knn = [0.70] * 12
    many_lead = [0.71] * 11 + [0.10]
    sentence = opening_sentence(_with_areas(many_lead, many_knn))
    assert "below K-NN's" in sentence
    assert "yet uniroute-kmeans wins significantly more trials than it loses" in sentence


def test_opening_sentence_ties_and_fallbacks():
    tied = opening_sentence(_with_areas([0.7, 0.7], [0.7, 0.7]))
    assert "equal to K-NN's 0.7000 to four decimals" in tied
    assert "not significant" in tied and "all 2 trials tied" in tied
    # Without K-NN the sentence compares with ZeroRouter; with neither it says so.
    results = _with_areas([0.8, 0.9], [0.7, 0.7], zero=[0.6, 0.6])
    del results["routers"]["knn"]
    del results["routers"]["uniroute-kmeans"]["sign_tests"]["knn"]
    assert "above ZeroRouter's 0.6000" in opening_sentence(results)
    del results["routers"]["zero"]
    del results["routers"]["uniroute-kmeans"]["sign_tests"]["zero"]
    assert "no router was compared with K-NN or ZeroRouter" in opening_sentence(results)


def test_opening_sentence_leads_with_the_first_uniroute_router_listed():
    results = _with_areas([0.62, 0.63, 0.64], [0.60, 0.61, 0.62])
    better = _entry([0.9, 0.9, 0.9], [10.0] * 3, 3)
    better["sign_tests"] = {"knn": _paired([0.9] * 3, [0.60, 0.61, 0.62])}
    results["routers"] = {"uniroute-learned": better, **results["routers"]}
    sentence = opening_sentence(results)
    # Not the best-scoring one: picking the best of several would overstate the evidence.
    assert "uniroute-learned has an area of 0.9000" in sentence


def test_paired_differences_are_the_stored_per_trial_values_and_tests():
    results = _with_areas([0.80, 0.82, 0.70], [0.78, 0.80, 0.75], zero=[0.70, 0.70, 0.70])
    found = paired_differences(results, "knn")
    assert list(found) == ["uniroute-kmeans"]
    knn = found["uniroute-kmeans"]
    np.testing.assert_allclose(knn.values, [0.02, 0.02, -0.05])
    stored = results["routers"]["uniroute-kmeans"]["sign_tests"]["knn"]
    assert (knn.wins, knn.losses, knn.ties) == (2, 1, 0)
    assert knn.mean == stored["mean_area_difference"] and knn.p_value == stored["p_value"]
    # The mean and p are read from results, not recomputed: a changed stored value shows.
    stored["p_value"] = 0.123
    assert paired_differences(results, "knn")["uniroute-kmeans"].p_value == 0.123
    # A trial where either area is undefined (NaN, or null in JSON) is left out.
    results["routers"]["knn"]["per_trial"]["area"][1] = None
    np.testing.assert_allclose(
        paired_differences(results, "knn")["uniroute-kmeans"].values, [0.02, -0.05]
    )
    panels = paired_difference_panels(results)
    assert list(panels) == ["area − K-NN", "area − ZeroRouter"]
    np.testing.assert_allclose(
        panels["area − ZeroRouter"]["uniroute-kmeans"].values, [0.1, 0.12, 0.0]
    )


def test_cost_unit_is_dollars_only_for_recorded_routerbench_costs():
    assert cost_unit("routerbench", cost_map_given=False) == DOLLARS
    # A cost map replaces the recorded dollars with numbers of unknown unit.
    assert cost_unit("routerbench", cost_map_given=True) is None
    for data_format in ("routerdc", "embedllm", "long"):
        assert cost_unit(data_format, cost_map_given=False) is None
