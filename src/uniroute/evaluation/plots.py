"""Deferral-curve plots (PNG, rendered off-screen with the Agg backend) and curve averaging."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from uniroute._io import atomic_write_bytes
from uniroute.tradeoff import DeferralCurve

NORMALISED_COST_LABEL = "cost / cost of most expensive LLM"
RAW_COST_LABEL = "mean cost per prompt"


@dataclass(frozen=True)
class MeanCurve:
    """A curve averaged over trials on a normalised cost grid (cost / most expensive LLM's cost)."""

    costs: np.ndarray
    qualities: np.ndarray
    stds: np.ndarray
    n_trials: int


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
    max_costs = np.asarray(max_cost_per_trial, dtype=float)
    bad = ~np.isfinite(max_costs) | (max_costs <= 0)
    if bad.any():
        t = int(np.flatnonzero(bad)[0])
        raise ValueError(f"average_curves: max cost of trial {t} must be > 0, got {max_costs[t]}")
    normalised = np.linspace(0.0, 1.0, int(grid))
    sampled = np.stack(
        [curve.quality_at(normalised * cap) for curve, cap in zip(curves, max_costs, strict=True)]
    )
    stds = sampled.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(len(normalised))
    return MeanCurve(normalised, sampled.mean(axis=0), stds, len(curves))


def plot_deferral_curves(
    curves: Mapping[str, DeferralCurve | MeanCurve],
    model_points: Mapping[str, tuple[float, float]],
    path: Path | str,
    title: str,
    max_cost: float | None = None,
) -> Path:
    """Write a PNG with one envelope per router (oracle dashed) and each single LLM as a point.

    With ``max_cost`` the cost axis of DeferralCurves and model points is divided by it. A
    MeanCurve is already normalised, so it may only be drawn on a normalised axis: pass
    ``max_cost=1.0`` with model points normalised the same way.
    """
    if max_cost is not None and (not np.isfinite(max_cost) or max_cost <= 0):
        raise ValueError(f"max_cost must be a finite number > 0, got {max_cost}")
    scale = 1.0 if max_cost is None else float(max_cost)
    if max_cost is None and any(isinstance(c, MeanCurve) for c in curves.values()):
        raise ValueError("mean curves are normalised; pass max_cost (1.0) to plot them")

    figure = Figure(figsize=(7.5, 5.0), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    right_edge = max(
        [float(c) / scale for c, _ in model_points.values()]
        + [_right_end(curve, scale) for curve in curves.values()]
        + [1.0 if max_cost is not None else 0.0]
    )
    for name, curve in curves.items():
        style = "--" if "oracle" in name.lower() else "-"
        if isinstance(curve, MeanCurve):
            line = axes.plot(curve.costs, curve.qualities, style, label=name)[0]
            if curve.n_trials > 1:
                axes.fill_between(
                    curve.costs,
                    curve.qualities - curve.stds,
                    curve.qualities + curve.stds,
                    color=line.get_color(),
                    alpha=0.12,
                    linewidth=0,
                )
        else:
            # Beyond the best point extra budget can stay unspent: the curve continues flat.
            end = max(right_edge, curve.envelope_costs[-1] / scale)
            xs = np.r_[curve.envelope_costs / scale, end]
            ys = np.r_[curve.envelope_qualities, curve.envelope_qualities[-1]]
            axes.plot(xs, ys, style, label=name)
    for model, (cost, accuracy) in model_points.items():
        x = float(cost) / scale
        axes.plot([x], [float(accuracy)], "o", color="black", markersize=4)
        axes.annotate(
            model.rsplit("/", 1)[-1],
            (x, float(accuracy)),
            textcoords="offset points",
            xytext=(4, 3),
            fontsize=7,
        )
    axes.set_xlabel(NORMALISED_COST_LABEL if max_cost is not None else RAW_COST_LABEL)
    axes.set_ylabel("quality (mean accuracy)")
    axes.set_title(title)
    axes.set_xlim(left=0.0)
    axes.grid(True, alpha=0.3)
    if curves:
        axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    path = Path(path)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _right_end(curve: DeferralCurve | MeanCurve, scale: float) -> float:
    if isinstance(curve, MeanCurve):
        return float(curve.costs[-1])
    return float(curve.envelope_costs[-1]) / scale
