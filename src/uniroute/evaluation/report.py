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
from uniroute.evaluation.evidence import MISSING_TASK
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
#: Key of the missing-task setting in results["evidence"] (``evidence.MISSING_TASK``).
MISSING_TASK_LABEL = MISSING_TASK


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


def paired_table_markdown(results: Mapping[str, Any]) -> str:
    """Per router: the paired area difference against ZeroRouter and against the same router
    without the population Psi prior (mean over trials, sign test W/L/T and p)."""
    validate_results(results)
    routers = results["routers"]
    partners = results.get("prior_pairs", {})
    columns: list[tuple[str | None, str]] = (
        [("zero", "area − ZeroRouter")] if "zero" in routers else []
    )
    if partners:
        columns.append((None, "area − same router without the prior"))
    if not columns:
        return ""
    lines = [
        "| router | " + " | ".join(title for _, title in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, entry in routers.items():
        cells = []
        for baseline, _ in columns:
            other = partners.get(name) if baseline is None else baseline
            cells.append(_difference_cell(entry["sign_tests"].get(other) if other else None))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evidence_tables_markdown(results: Mapping[str, Any]) -> str:
    """The partial-evidence tables: area per router per setting, and its paired differences."""
    evidence = results.get("evidence")
    if not evidence:
        return ""
    settings = evidence["settings"]
    labels = [s["label"] for s in settings]
    routers = evidence["routers"]
    partners = results.get("prior_pairs", {})
    kept = ", ".join(f"{s['label']}: {s['kept_prompts_per_trial']:.1f}" for s in settings)
    header = "| router | " + " | ".join(labels) + " |"
    rule = "|---|" + "---|" * len(labels)
    parts = [
        "## Area by onboarding evidence\n",
        "The unseen test LLMs are described from part of their "
        f"{evidence['representative_prompts_per_trial']:.1f} representative prompts per trial "
        f"(mean kept per trial: {kept}); routers are fitted once per trial.\n",
        header,
        rule,
    ]
    for name, per_setting in routers.items():
        cells = [_mean_pm_std(per_setting[label]["area"], 4) for label in labels]
        parts.append(f"| {name} | " + " | ".join(cells) + " |")
    comparisons: list[tuple[str | None, str]] = (
        [("zero", "ZeroRouter")] if "zero" in routers else []
    )
    if partners:
        comparisons.append((None, "the same router without the prior"))
    for baseline, title in comparisons:
        parts += ["", f"Area − {title}, same setting (mean, W/L/T, p):\n", header, rule]
        for name, per_setting in routers.items():
            other = partners.get(name) if baseline is None else baseline
            if other is None or other == name:
                continue
            cells = [
                _difference_cell(per_setting[label]["sign_tests"].get(other)) for label in labels
            ]
            parts.append(f"| {name} | " + " | ".join(cells) + " |")
    removed = evidence.get("removed_task")
    if removed:
        tasks = evidence.get("missing_task_per_trial", [])
        drawn = ", ".join(f"{t}×{tasks.count(t)}" for t in sorted(set(tasks), key=str))
        parts += [
            "",
            f"On the removed task's test prompts only (tasks removed: {drawn}):\n",
            "| router | area, full evidence | area, task removed | "
            "task removed − ZeroRouter (task removed) |",
            "|---|---|---|---|",
        ]
        for name, per_setting in removed.items():
            versus_zero = per_setting[MISSING_TASK_LABEL]["sign_tests"].get("zero")
            cells = [
                _mean_pm_std(per_setting["all"]["area"], 4),
                _mean_pm_std(per_setting[MISSING_TASK_LABEL]["area"], 4),
                _difference_cell(versus_zero),
            ]
            parts.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(parts) + "\n"


def calibration_table_markdown(results: Mapping[str, Any]) -> str:
    """Promised (on the representative prompts) versus realised (on the test prompts)."""
    calibration = results.get("calibration")
    if not calibration:
        return ""
    parts = []
    for kind, section in calibration.items():
        parts += [
            f"## Calibration to expected {kind} ≥ {section['target']:g}\n"
            if kind == "quality"
            else f"## Calibration to expected {kind} ≤ {section['target']:g}\n",
            "λ is calibrated per trial on the representative prompts with the unseen test pool; "
            "realised = the test prompts routed at that λ. Differences are realised − promised, "
            "over the trials where the target could be met.\n",
            "| router | target met | promised quality | realised quality "
            "| mean (realised − promised) | mean abs. difference | promised cost | realised cost |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, entry in section["routers"].items():
            cells = [
                f"{entry['trials_met']}/{entry['trials']}",
                _mean_pm_std(entry["promised_quality"], 4),
                _mean_pm_std(entry["realised_quality"], 4),
                _signed(entry["quality_difference"], 4),
                _mean_pm_std(entry["quality_abs_difference"], 4),
                _mean_pm_std(entry["promised_cost"], 4, general=True),
                _mean_pm_std(entry["realised_cost"], 4, general=True),
            ]
            parts.append(f"| {name} | " + " | ".join(cells) + " |")
        parts.append("")
    return "\n".join(parts)


def _markdown_document(results: Mapping[str, Any], title: str) -> str:
    setting = (
        f"Data set `{results['dataset']}`, encoder `{results['encoder']}`, "
        f"{results['test_models']} unseen test LLMs, {results['trials']} trials, "
        f"seed {results['seed']}. Values are mean ± sample std over trials; the sign test "
        f"compares the per-trial {SIGN_TEST_METRIC} with K-NN's (two-sided, ties ignored)."
    )
    table = results_table_markdown(results)
    sections = [f"# {title}\n\n{setting}\n\n{table}"]
    paired = paired_table_markdown(results)
    if paired:
        sections.append(f"Paired per-trial differences (full evidence):\n\n{paired}")
    for extra in (evidence_tables_markdown(results), calibration_table_markdown(results)):
        if extra:
            sections.append(extra)
    sections.append("![deferral curves](deferral.png)\n")
    return "\n".join(sections)


def _mean_pm_std(summary: Mapping[str, Any], decimals: int, *, general: bool = False) -> str:
    mean, std = summary.get("mean"), summary.get("std")
    style = "g" if general else "f"
    if mean is None or not math.isfinite(float(mean)):
        return "n/a"
    if std is None or not math.isfinite(float(std)):
        return f"{float(mean):.{decimals}{style}} ± n/a"
    return f"{float(mean):.{decimals}{style}} ± {float(std):.{decimals}{style}}"


def _signed(summary: Mapping[str, Any], decimals: int) -> str:
    mean, std = summary.get("mean"), summary.get("std")
    if mean is None or not math.isfinite(float(mean)):
        return "n/a"
    text = f"{float(mean):+.{decimals}f}".replace("-", "−")
    if std is not None and math.isfinite(float(std)):
        text += f" ± {float(std):.{decimals}f}"
    return text


def _difference_cell(result: Mapping[str, Any] | None) -> str:
    """``+0.0099 (14/6/0, p = 0.12)`` from a paired sign test with its mean area difference."""
    if result is None:
        return "—"
    mean = result.get("mean_area_difference")
    if mean is None or not math.isfinite(float(mean)):
        return "n/a"
    difference = f"{float(mean):+.4f}".replace("-", "−")
    return f"{difference} ({_sign_test_cell(result)})"


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
