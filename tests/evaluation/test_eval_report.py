"""results.json / results.md / deferral.png writing and the Markdown table."""

from __future__ import annotations

import json

import numpy as np
import pytest

from uniroute.evaluation.metrics import evaluate_curve, single_model_points
from uniroute.evaluation.report import (
    REQUIRED_KEYS,
    REQUIRED_ROUTER_KEYS,
    results_table_markdown,
    validate_results,
    write_results,
)
from uniroute.evaluation.stats import mean_std, sign_test
from uniroute.tradeoff import deferral_curve


def _entry(areas, qncs, reached, sign=None):
    per_trial = {
        "area": list(areas),
        "area_50": [a - 0.1 for a in areas],
        "qnc": list(qncs),
        "peak_accuracy": [a + 0.1 for a in areas],
    }
    entry = {}
    for key, values in per_trial.items():
        mean, std = mean_std(values)
        entry[key] = {"mean": mean, "std": std}
    entry.update(qnc_reached=reached, trials=len(areas), sign_test_vs_knn=sign, per_trial=per_trial)
    return entry


def _results():
    knn_areas = [0.60, 0.62, 0.61]
    uniroute_areas = [0.65, 0.66, 0.60]
    return {
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


def test_write_results_writes_three_files_with_the_schema(tmp_path):
    curves, points, _, _ = _curves_and_points()
    paths = write_results(tmp_path / "out", _results(), curves, points, max_cost=3.0)
    for name in ("results.json", "results.md", "deferral.png"):
        assert (tmp_path / "out" / name).is_file()
    assert set(paths) == {"json", "markdown", "plot"}
    assert (tmp_path / "out" / "deferral.png").read_bytes().startswith(b"\x89PNG")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(REQUIRED_KEYS) <= set(saved)
    for entry in saved["routers"].values():
        assert set(REQUIRED_ROUTER_KEYS) <= set(entry)
        assert set(entry["per_trial"]) == {"area", "area_50", "qnc", "peak_accuracy"}
    assert saved["routers"]["knn"]["sign_test_vs_knn"] is None
    assert saved["routers"]["uniroute-kmeans"]["sign_test_vs_knn"]["wins"] == 2
    markdown = (tmp_path / "out" / "results.md").read_text()
    assert "| uniroute-kmeans |" in markdown and "deferral.png" in markdown


def test_one_trial_of_real_metrics_round_trips_and_nan_becomes_null(tmp_path):
    curves, points, quality, call_costs = _curves_and_points()
    metrics = {name: evaluate_curve(curve, quality, call_costs) for name, curve in curves.items()}
    results = _results()
    results["trials"] = 1
    results["routers"] = {
        name: _entry([m["area"]], [m["qnc"]], int(m["qnc_reached"])) for name, m in metrics.items()
    }
    results["routers"]["knn"]["area"]["std"] = float("nan")
    write_results(tmp_path, results, curves, points)
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
    curves, points, _, _ = _curves_and_points()
    with pytest.raises(ValueError, match="per_trial"):
        write_results(tmp_path / "out", results, curves, points)
    assert not (tmp_path / "out").exists()
