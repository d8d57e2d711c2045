"""Evaluation figures (PNG, rendered off-screen with the Agg backend) and what they draw.

The main figure shows every router's deferral curve averaged over trials with a ± 1 std band and
every single test LLM as a point with its spread over trials; the second shows the per-trial
paired area differences behind the sign tests.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox
from numpy.typing import ArrayLike

from uniroute._io import atomic_write_bytes
from uniroute.evaluation.stats import mean_std
from uniroute.tradeoff import DeferralCurve

NORMALISED_COST_LABEL = "cost / cost of most expensive test LLM (per trial)"
#: The cost unit (``results["cost_unit"]``) for which an absolute cost axis is drawn.
DOLLARS = "USD"
#: Font size (points) of the single-LLM labels.
LABEL_FONT_SIZE = 6.5


@dataclass(frozen=True)
class MeanCurve:
    """A curve averaged over trials on a normalised cost grid (cost / most expensive LLM's cost)."""

    costs: np.ndarray
    qualities: np.ndarray
    stds: np.ndarray
    n_trials: int


@dataclass(frozen=True)
class ModelSpread:
    """One test LLM over the trials it was tested in: mean and sample std of its point."""

    cost: float
    cost_std: float
    accuracy: float
    accuracy_std: float
    n_trials: int


@dataclass(frozen=True)
class PairedDifferences:
    """Per-trial area differences of one router against one baseline, with their sign test."""

    values: np.ndarray
    mean: float
    wins: int
    losses: int
    ties: int
    p_value: float


def average_curves(
    curves: Sequence[DeferralCurve], max_cost_per_trial: Sequence[float], grid: int = 201
) -> MeanCurve:
    """Mean (and sample std) over trials of each curve's envelope on a common [0, 1] cost grid.

    Trial ``t`` at normalised cost ``g`` is ``curves[t].quality_at(g * max_cost_per_trial[t])``.
    """
    if len(curves) == 0:
        raise ValueError("average_curves: no curves to average")
    if len(curves) != len(max_cost_per_trial):
        raise ValueError(
            f"average_curves: {len(curves)} curves but {len(max_cost_per_trial)} max costs"
        )
    if int(grid) < 2:
        raise ValueError(f"average_curves: the grid needs at least 2 points, got {grid}")
    max_costs = _positive_costs(max_cost_per_trial, "average_curves")
    normalised = np.linspace(0.0, 1.0, int(grid))
    sampled = np.stack(
        [curve.quality_at(normalised * cap) for curve, cap in zip(curves, max_costs, strict=True)]
    )
    stds = sampled.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(len(normalised))
    return MeanCurve(normalised, sampled.mean(axis=0), stds, len(curves))


def model_spreads(
    points_per_trial: Sequence[Mapping[str, tuple[float, float]]],
    max_cost_per_trial: Sequence[float],
) -> dict[str, ModelSpread]:
    """Each test LLM's mean ± sample std of (cost / trial's max cost, accuracy) over its trials.

    ``points_per_trial[t]`` maps the test LLMs of trial ``t`` to their (mean cost, accuracy); an
    LLM counts only in the trials where it was a test LLM. Names keep their first-seen order.
    """
    if len(points_per_trial) != len(max_cost_per_trial):
        raise ValueError(
            f"model_spreads: {len(points_per_trial)} trials of points but "
            f"{len(max_cost_per_trial)} max costs"
        )
    max_costs = _positive_costs(max_cost_per_trial, "model_spreads")
    seen: dict[str, list[tuple[float, float]]] = {}
    for points, cap in zip(points_per_trial, max_costs, strict=True):
        for name, (cost, accuracy) in points.items():
            seen.setdefault(name, []).append((float(cost) / cap, float(accuracy)))
    spreads = {}
    for name, pairs in seen.items():
        cost, cost_std = mean_std([c for c, _ in pairs])
        accuracy, accuracy_std = mean_std([a for _, a in pairs])
        spreads[name] = ModelSpread(cost, cost_std, accuracy, accuracy_std, len(pairs))
    return spreads


def dollars_per_normalised_cost(
    cost_unit: str | None, max_cost_per_trial: Sequence[float]
) -> float | None:
    """Dollars per prompt at normalised cost 1 (mean of the trials' max costs), or None.

    None, so no absolute axis is drawn, unless the costs are real dollars (``cost_unit`` is
    ``DOLLARS``) and every trial's max cost is known.
    """
    if cost_unit != DOLLARS or len(max_cost_per_trial) == 0:
        return None
    max_costs = np.asarray(max_cost_per_trial, dtype=float)
    if not (np.isfinite(max_costs) & (max_costs > 0)).all():
        return None
    return float(max_costs.mean())


def mean_deferral_figure(
    curves: Mapping[str, MeanCurve],
    spreads: Mapping[str, ModelSpread],
    title: str,
    dollars_per_unit: float | None = None,
) -> Figure:
    """The main figure: mean curves with ± 1 std bands, single LLMs with error bars.

    With ``dollars_per_unit`` a second x axis on top reads the normalised cost in $ per prompt.
    """
    figure = Figure(figsize=(9.5, 5.5), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for name, curve in curves.items():
        style = "--" if "oracle" in name.lower() else "-"
        line = axes.plot(curve.costs, curve.qualities, style, label=name, linewidth=1.4)[0]
        if curve.n_trials > 1:
            axes.fill_between(
                curve.costs,
                curve.qualities - curve.stds,
                curve.qualities + curve.stds,
                color=line.get_color(),
                alpha=0.12,
                linewidth=0,
            )
    for spread in spreads.values():
        axes.errorbar(
            [spread.cost],
            [spread.accuracy],
            xerr=[spread.cost_std],
            yerr=[spread.accuracy_std],
            fmt="o",
            color="black",
            markersize=3.5,
            elinewidth=0.8,
            capsize=2,
        )
    right = max([1.0] + [s.cost + s.cost_std for s in spreads.values()])
    axes.set_xlim(0.0, right * 1.02)
    if spreads:
        # A proxy artist: one legend entry explains every LLM point rather than one per LLM.
        axes.errorbar(
            [],
            [],
            xerr=[],
            yerr=[],
            fmt="o",
            color="black",
            markersize=3.5,
            label="single test LLM (trials), mean ± 1 std",
        )
    axes.set_xlabel(NORMALISED_COST_LABEL)
    axes.set_ylabel("quality (mean accuracy)")
    axes.set_title(title, fontsize=10)
    axes.grid(True, alpha=0.3)
    if dollars_per_unit is not None:
        scale = float(dollars_per_unit)

        def to_dollars(x: ArrayLike) -> ArrayLike:
            return np.asarray(x, dtype=float) * scale

        def to_normalised(x: ArrayLike) -> ArrayLike:
            return np.asarray(x, dtype=float) / scale

        top = axes.secondary_xaxis("top", functions=(to_dollars, to_normalised))
        # Escaped: a bare dollar sign would start mathtext.
        top.set_xlabel(
            f"≈ \\$ per prompt (normalised cost × \\${scale:.3g}: the mean over trials of the "
            "most expensive test LLM's cost)",
            fontsize=8,
        )
        top.tick_params(labelsize=7)
    if curves or spreads:
        # Outside the axes: inside, it would hide curves or LLM points wherever it went.
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7.5, frameon=False)
    figure.tight_layout()
    _label_points(figure, axes, spreads)
    return figure


def _label_points(figure: Figure, axes: Axes, spreads: Mapping[str, ModelSpread]) -> None:
    """Name each LLM point, moving a label up (with a leader line) when it would cover another.

    Runs once the layout is final, so the labels' drawn extents are the ones measured.
    """
    renderer = figure.canvas.get_renderer()  # type: ignore[attr-defined]
    points_per_pixel = 72.0 / figure.dpi
    right_edge = axes.get_window_extent(renderer).x1
    placed: list[Bbox] = []
    for model, spread in sorted(spreads.items(), key=lambda item: item[1].accuracy):
        text = f"{model.rsplit('/', 1)[-1]} ({spread.n_trials})"
        point = (spread.cost, spread.accuracy)
        label = axes.annotate(
            text, point, xytext=(4, 2), textcoords="offset points", fontsize=LABEL_FONT_SIZE
        )
        box = label.get_window_extent(renderer)
        # A label running past the right edge would cover the legend: it goes left instead.
        fits = box.x1 <= right_edge
        side = 4 if fits else -4
        align: Literal["left", "right"] = "left" if fits else "right"
        label.set_horizontalalignment(align)
        label.xyann = (side, 2)
        lift = 0.0
        box = label.get_window_extent(renderer)
        while (hit := next((b for b in placed if b.overlaps(box)), None)) is not None:
            lift += (hit.y1 - box.y0 + 1.0) * points_per_pixel
            label.xyann = (side, 2 + lift)
            box = label.get_window_extent(renderer)
        if lift:
            # Drawn again with a leader line back to its point, now that it sits above it.
            label.remove()
            axes.annotate(
                text,
                point,
                xytext=(side, 2 + lift),
                textcoords="offset points",
                horizontalalignment=align,
                fontsize=LABEL_FONT_SIZE,
                arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.5},
            )
        placed.append(box)


def plot_mean_deferral(
    curves: Mapping[str, MeanCurve],
    spreads: Mapping[str, ModelSpread],
    path: Path | str,
    title: str,
    dollars_per_unit: float | None = None,
) -> Path:
    """Write ``mean_deferral_figure`` as a PNG at ``path`` (atomically); return the path."""
    return _write_png(mean_deferral_figure(curves, spreads, title, dollars_per_unit), path)


def paired_differences_figure(
    panels: Mapping[str, Mapping[str, PairedDifferences]], title: str
) -> Figure:
    """One panel per baseline: per router a row of per-trial differences, zero line, mean.

    ``panels`` maps a panel title (e.g. "area − K-NN") to {router: its paired differences}.
    """
    if not panels:
        raise ValueError("paired_differences_figure: no baseline to compare with")
    rows = max(len(routers) for routers in panels.values())
    figure = Figure(figsize=(4.2 * len(panels) + 0.8, 1.2 + 0.7 * rows + 0.35 * rows), dpi=120)
    FigureCanvasAgg(figure)
    grid = figure.subplots(1, len(panels), squeeze=False)[0]
    for axes, (panel, routers) in zip(grid, panels.items(), strict=True):
        names = list(routers)
        axes.axvline(0.0, color="grey", linestyle="--", linewidth=0.9)
        for row, name in enumerate(names):
            found = routers[name]
            # A fixed, small vertical offset per trial keeps equal values from hiding each other.
            offsets = np.linspace(-0.15, 0.15, len(found.values)) if len(found.values) > 1 else [0]
            dots = axes.plot(
                found.values,
                row + np.asarray(offsets),
                "o",
                markersize=3.5,
                alpha=0.7,
                label=(
                    f"{name}: {found.wins}/{found.losses}/{found.ties} (W/L/T), "
                    f"sign test p = {found.p_value:.3g}"
                ),
            )[0]
            if math.isfinite(found.mean):
                axes.plot(
                    [found.mean],
                    [row],
                    "|",
                    color=dots.get_color(),
                    markersize=22,
                    markeredgewidth=2.2,
                )
        axes.set_yticks(range(len(names)), [n for n in names], fontsize=8)
        axes.set_ylim(-0.6, len(names) - 0.4)
        axes.invert_yaxis()
        axes.set_xlabel(f"{panel}, per trial (bar: mean)", fontsize=9)
        axes.grid(True, axis="x", alpha=0.3)
        axes.legend(
            loc="upper center", bbox_to_anchor=(0.5, -0.22), fontsize=7, frameon=False, ncol=1
        )
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def plot_paired_differences(
    panels: Mapping[str, Mapping[str, PairedDifferences]], path: Path | str, title: str
) -> Path:
    """Write ``paired_differences_figure`` as a PNG at ``path`` (atomically); return the path."""
    return _write_png(paired_differences_figure(panels, title), path)


def _write_png(figure: Figure, path: Path | str) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _positive_costs(values: Sequence[float], where: str) -> np.ndarray:
    max_costs = np.asarray(values, dtype=float)
    bad = ~np.isfinite(max_costs) | (max_costs <= 0)
    if bad.any():
        t = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{where}: max cost of trial {t} must be > 0, got {max_costs[t]}")
    return max_costs
