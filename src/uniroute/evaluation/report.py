"""Aggregated evaluation results: results.json, a Markdown table (results.md) and deferral.png.

The schema of results.json is read by other tools; ``REQUIRED_KEYS`` and
``REQUIRED_ROUTER_KEYS`` list the keys that must always be present.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from uniroute._io import atomic_write_bytes, atomic_write_json
from uniroute.evaluation.plots import MeanCurve, plot_deferral_curves
from uniroute.evaluation.stats import SignTestResult
from uniroute.tradeoff import DeferralCurve

REQUIRED_KEYS = ("dataset", "encoder", "trials", "test_models", "seed", "routers")
REQUIRED_ROUTER_KEYS = (
    "area",
    "area_50",
    "qnc",
    "qnc_reached",
    "peak_accuracy",
    "trials",
    "sign_test_vs_knn",
    "per_trial",
)
#: Per-trial metrics summarised as {"mean", "std"} and kept in "per_trial".
TRIAL_METRICS = ("area", "area_50", "qnc", "peak_accuracy")
#: The per-trial metric the sign test against K-NN compares (higher is better).
SIGN_TEST_METRIC = "area"


def validate_results(results: Mapping[str, Any]) -> None:
    """Raise ValueError naming the first key the results.json schema requires but is absent."""
    missing = [key for key in REQUIRED_KEYS if key not in results]
    if missing:
        raise ValueError(f"results are missing the keys {missing}")
    if not isinstance(results["routers"], Mapping) or not results["routers"]:
        raise ValueError("results['routers'] must be a non-empty {router name: entry} mapping")
    for name, entry in results["routers"].items():
        if not isinstance(entry, Mapping):
            raise ValueError(f"results for router {name!r} must be a mapping, got {entry!r}")
        missing = [key for key in REQUIRED_ROUTER_KEYS if key not in entry]
        if missing:
            raise ValueError(f"results for router {name!r} are missing the keys {missing}")
        for key in TRIAL_METRICS:
            if not isinstance(entry[key], Mapping) or not {"mean", "std"} <= set(entry[key]):
                raise ValueError(f"results for router {name!r}: {key!r} needs 'mean' and 'std'")
        missing = [key for key in TRIAL_METRICS if key not in entry["per_trial"]]
        if missing:
            raise ValueError(f"results for router {name!r}: per_trial is missing {missing}")


def results_table_markdown(results: Mapping[str, Any]) -> str:
    """A Markdown table with one row per router: mean ± std of every metric and the sign test."""
    validate_results(results)
    lines = [
        "| router | area | area_50 | QNC (% of best LLM's cost) | peak acc. "
        "| sign test vs K-NN (W/L/T, p) |",
        "|---|---|---|---|---|---|",
    ]
    for name, entry in results["routers"].items():
        qnc = f"{_mean_pm_std(entry['qnc'], 1)} ({entry['qnc_reached']}/{entry['trials']} reached)"
        cells = [
            str(name),
            _mean_pm_std(entry["area"], 4),
            _mean_pm_std(entry["area_50"], 4),
            qnc,
            _mean_pm_std(entry["peak_accuracy"], 4),
            _sign_test_cell(entry["sign_test_vs_knn"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(
    out_dir: Path | str,
    results: Mapping[str, Any],
    curves: Mapping[str, DeferralCurve | MeanCurve],
    model_points: Mapping[str, tuple[float, float]],
    *,
    title: str | None = None,
    max_cost: float | None = None,
) -> dict[str, Path]:
    """Write results.json, results.md and deferral.png into ``out_dir``; return their paths.

    ``curves`` and ``model_points`` go to ``plot_deferral_curves`` with ``max_cost`` (pass 1.0
    for mean curves over trials, whose costs are already normalised).
    """
    validate_results(results)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    title = title or f"{results['dataset']}: deferral curves ({results['trials']} trials)"
    paths = {
        "json": out_dir / "results.json",
        "markdown": out_dir / "results.md",
        "plot": out_dir / "deferral.png",
    }
    atomic_write_json(paths["json"], _jsonable(results))
    atomic_write_bytes(paths["markdown"], _markdown_document(results, title).encode())
    plot_deferral_curves(curves, model_points, paths["plot"], title, max_cost=max_cost)
    return paths


def _markdown_document(results: Mapping[str, Any], title: str) -> str:
    setting = (
        f"Data set `{results['dataset']}`, encoder `{results['encoder']}`, "
        f"{results['test_models']} unseen test LLMs, {results['trials']} trials, "
        f"seed {results['seed']}. Values are mean ± sample std over trials; the sign test "
        f"compares the per-trial {SIGN_TEST_METRIC} with K-NN's (two-sided, ties ignored)."
    )
    table = results_table_markdown(results)
    return f"# {title}\n\n{setting}\n\n{table}\n![deferral curves](deferral.png)\n"


def _mean_pm_std(summary: Mapping[str, Any], decimals: int) -> str:
    mean, std = summary.get("mean"), summary.get("std")
    if mean is None or not math.isfinite(float(mean)):
        return "n/a"
    if std is None or not math.isfinite(float(std)):
        return f"{float(mean):.{decimals}f} ± n/a"
    return f"{float(mean):.{decimals}f} ± {float(std):.{decimals}f}"


def _sign_test_cell(result: Mapping[str, Any] | None) -> str:
    if result is None:
        return "—"
    return f"{result['wins']}/{result['losses']}/{result['ties']}, p = {result['p_value']:.3g}"


def _jsonable(value: Any) -> Any:
    """Plain JSON types; NaN and infinities become null (JSON has no NaN)."""
    if isinstance(value, SignTestResult):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    return value
