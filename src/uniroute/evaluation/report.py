"""Aggregated evaluation results: results.json, results.md and the figures drawn from them.

results.md opens with one sentence on what the run shows (``opening_sentence``), then the
tables. The figures are deferral.png (mean curves over trials, see ``plots``) and
paired_differences.png (the per-trial area differences behind the sign tests). The schema of
results.json is read by other tools; ``REQUIRED_KEYS`` and ``REQUIRED_ROUTER_KEYS`` list the
keys that must always be present.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from uniroute._io import atomic_write_bytes, atomic_write_json
from uniroute.evaluation.evidence import MISSING_TASK
from uniroute.evaluation.plots import (
    DOLLARS,
    MeanCurve,
    ModelSpread,
    PairedDifferences,
    dollars_per_normalised_cost,
    plot_mean_deferral,
    plot_paired_differences,
)
from uniroute.evaluation.stats import SignTestResult

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
#: The baselines the opening sentence and the paired figure compare with, by display name.
BASELINE_NAMES = {"knn": "K-NN", "zero": "ZeroRouter"}
#: Routers whose labels start so are UniRoute's (``uniroute-kmeans``, ``uniroute-learned:...``).
UNIROUTE_PREFIX = "uniroute"
#: Routers the opening sentence does not lead with: baselines and bounds, not candidates.
NOT_HEADLINE = ("knn", "zero", "oracle", "random")
#: Significance level of the opening sentence.
ALPHA = 0.05
#: Data formats whose recorded per-call costs are US dollars (RouterBench's ``M|total_cost``).
DOLLAR_FORMATS = ("routerbench",)
#: Mean differences below this print as equal at the 4 decimals shown.
SHOWN_PRECISION = 0.00005


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
    curves: Mapping[str, MeanCurve],
    spreads: Mapping[str, ModelSpread],
    *,
    title: str | None = None,
) -> dict[str, Path]:
    """Write results.json, results.md, deferral.png and paired_differences.png; return paths.

    ``curves`` are the routers' mean curves over trials (``plots.average_curves``) and
    ``spreads`` the single test LLMs (``plots.model_spreads``). The $ axis is drawn when
    ``results["cost_unit"]`` is dollars, from ``results["models"]["max_cost_per_trial"]``.
    paired_differences.png is written only when a UniRoute router and K-NN or ZeroRouter ran.
    ``title`` is the heading of results.md.
    """
    validate_results(results)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    panels = paired_difference_panels(results)
    paths = {
        "json": out_dir / "results.json",
        "markdown": out_dir / "results.md",
        "plot": out_dir / "deferral.png",
    }
    if panels:
        paths["paired"] = out_dir / "paired_differences.png"
    atomic_write_json(paths["json"], _jsonable(results))
    atomic_write_bytes(paths["markdown"], _markdown_document(results, title).encode())
    n = results["trials"]
    max_costs = results.get("models", {}).get("max_cost_per_trial", [])
    plot_mean_deferral(
        curves,
        spreads,
        paths["plot"],
        f"{results['dataset']} ({results['encoder']}): mean over {n} {_trials(n)} "
        "(band: ± 1 std across trials)",
        dollars_per_normalised_cost(results.get("cost_unit"), max_costs),
    )
    if panels:
        plot_paired_differences(
            panels,
            paths["paired"],
            f"{results['dataset']} ({results['encoder']}): paired area differences, "
            f"one dot per trial ({n} {_trials(n)})",
        )
    return paths


def cost_unit(data_format: str, *, cost_map_given: bool) -> str | None:
    """``DOLLARS`` when the data's recorded costs are real dollars, else None (unit unknown).

    Only RouterBench records the dollar cost of every call; a ``--costs`` map replaces those with
    costs of its own, whose unit is not known (mmlupro27's map is active parameters, not $).
    """
    return DOLLARS if data_format in DOLLAR_FORMATS and not cost_map_given else None


def paired_differences(results: Mapping[str, Any], baseline: str) -> dict[str, PairedDifferences]:
    """Each UniRoute router's per-trial area minus ``baseline``'s, with the stored sign test.

    The values are the trials where both areas are defined, as the sign tests of results.json
    pair them; mean, W/L/T and p are read from ``sign_tests[baseline]``, not recomputed.
    """
    routers = results["routers"]
    if baseline not in routers:
        return {}
    base = _floats(routers[baseline]["per_trial"]["area"])
    found = {}
    for name, entry in routers.items():
        test = (entry.get("sign_tests") or {}).get(baseline)
        if not name.startswith(UNIROUTE_PREFIX) or name == baseline or test is None:
            continue
        own = _floats(entry["per_trial"]["area"])
        both = np.isfinite(own) & np.isfinite(base)
        mean = test.get("mean_area_difference")
        found[name] = PairedDifferences(
            values=own[both] - base[both],
            mean=float("nan") if mean is None else float(mean),
            wins=int(test["wins"]),
            losses=int(test["losses"]),
            ties=int(test["ties"]),
            p_value=float(test["p_value"]),
        )
    return found


def paired_difference_panels(
    results: Mapping[str, Any],
) -> dict[str, dict[str, PairedDifferences]]:
    """{"area − K-NN": ..., "area − ZeroRouter": ...}: the panels of paired_differences.png."""
    panels = {}
    for baseline, shown in BASELINE_NAMES.items():
        found = paired_differences(results, baseline)
        if found:
            panels[f"area − {shown}"] = found
    return panels


def opening_sentence(results: Mapping[str, Any]) -> str:
    """One plain sentence: the lead router's area against K-NN's (else ZeroRouter's), and
    whether the sign test finds the difference significant at ``ALPHA``.

    The lead router is the first UniRoute router listed (the order of ``--routers``), so the
    sentence never picks the luckiest of several; the tables show every router.
    """
    validate_results(results)
    n = int(results["trials"])
    start = f"Over {n} {_trials(n)} with unseen test LLMs"
    lead = _headline_pair(results)
    if lead is None:
        return (
            f"{start}, no router was compared with K-NN or ZeroRouter; the table below gives "
            "each router's area."
        )
    name, baseline, test = lead
    routers = results["routers"]
    shown = BASELINE_NAMES[baseline]
    area = _number(routers[name]["area"]["mean"])
    base_area = _number(routers[baseline]["area"]["mean"])
    difference = _number(test.get("mean_area_difference"))
    if not math.isfinite(difference):
        return f"{start}, {name} and {shown} have no trial in which both have an area."
    direction = 0 if abs(difference) < SHOWN_PRECISION else (1 if difference > 0 else -1)
    if direction == 0:
        comparison = f"equal to {shown}'s {base_area:.4f} to four decimals"
    else:
        side = "above" if direction > 0 else "below"
        comparison = f"{abs(difference):.4f} {side} {shown}'s {base_area:.4f}"
    wins, losses, ties = int(test["wins"]), int(test["losses"]), int(test["ties"])
    paired = wins + losses + ties
    if ties == paired:
        record = f"all {paired} {_trials(paired)} tied"
    else:
        record = f"{wins} of {paired} {_trials(paired)} won" + (f", {ties} tied" if ties else "")
    p_value = float(test["p_value"])
    evidence = f"sign test p = {p_value:.3g}, {record}"
    if p_value >= ALPHA:
        verdict = f"the difference is not significant at the {ALPHA:g} level ({evidence})"
    elif (wins > losses) == (direction > 0) and direction != 0:
        verdict = f"the difference is significant at the {ALPHA:g} level ({evidence})"
    else:
        # The sign test counts trials, the mean weighs them: they can point different ways.
        ahead = name if wins > losses else shown
        verdict = f"yet {ahead} wins significantly more trials than it loses ({evidence})"
    return f"{start}, {name} has an area of {area:.4f}, {comparison}; {verdict}."


def qnc_note(results: Mapping[str, Any]) -> str:
    """The line under the table saying in words what QNC and "k/N reached" mean."""
    n = results["trials"]
    return (
        "QNC (quality-neutral cost) is the lowest cost at which a router's curve reaches the "
        "accuracy of the most accurate test LLM, as a % of that LLM's cost (100 when it does not "
        f'get there more cheaply); "k/{n} reached" means the curve reached that accuracy, at '
        f"some cost, in k of the {n} {_trials(n)}."
    )


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


def _markdown_document(results: Mapping[str, Any], title: str | None = None) -> str:
    n = results["trials"]
    title = title or (
        f"{results['dataset']} ({results['encoder']}): {n} {_trials(n)} with "
        f"{results['test_models']} unseen test LLMs"
    )
    setting = (
        f"Data set `{results['dataset']}`, encoder `{results['encoder']}`, "
        f"{results['test_models']} unseen test LLMs, {n} {_trials(n)}, "
        f"seed {results['seed']}. Values are mean ± sample std over trials; the sign test "
        f"compares the per-trial {SIGN_TEST_METRIC} with K-NN's (two-sided, ties ignored)."
    )
    table = results_table_markdown(results)
    sections = [f"# {title}\n\n{opening_sentence(results)}\n\n{setting}\n\n{table}"]
    sections.append(qnc_note(results) + "\n")
    paired = paired_table_markdown(results)
    if paired:
        sections.append(f"Paired per-trial differences (full evidence):\n\n{paired}")
    if paired_difference_panels(results):
        sections.append(
            "Per-trial area differences of the UniRoute routers (one dot per trial, bar: mean; "
            "W/L/T and sign test p in the legend):\n\n"
            "![paired area differences](paired_differences.png)\n"
        )
    for extra in (evidence_tables_markdown(results), calibration_table_markdown(results)):
        if extra:
            sections.append(extra)
    sections.append(
        f"Mean deferral curves over the {n} {_trials(n)} (band: ± 1 std across trials; cost "
        "divided by each trial's most expensive test LLM's cost) and each single test LLM "
        "(mean ± 1 std over the trials it was tested in, count in brackets):\n\n"
        "![mean deferral curves](deferral.png)\n"
    )
    return "\n".join(sections)


def _trials(n: int) -> str:
    return "trial" if n == 1 else "trials"


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def _floats(values: Any) -> np.ndarray:
    """Per-trial values as floats, null (NaN written to JSON) as NaN."""
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def _headline_pair(results: Mapping[str, Any]) -> tuple[str, str, Mapping[str, Any]] | None:
    """(router, baseline, its sign test) the opening sentence is about, or None."""
    routers = results["routers"]
    uniroute = [n for n in routers if n.startswith(UNIROUTE_PREFIX)]
    others = [n for n in routers if n not in uniroute and n not in NOT_HEADLINE]
    for name in [*uniroute, *others, "knn"]:
        tests = (routers.get(name) or {}).get("sign_tests") or {}
        for baseline in BASELINE_NAMES:
            if baseline != name and baseline in routers and tests.get(baseline):
                return name, baseline, tests[baseline]
    return None


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
