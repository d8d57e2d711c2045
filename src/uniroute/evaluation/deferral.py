"""Deferral curves: the (cost, quality) trade-off a router traces as lambda goes from 0 to infinity.

A router sends prompt ``i`` to ``argmin_h errors_hat[i, h] + lam * costs[h]``. As ``lam`` grows,
each prompt's decision walks down the lower envelope of the lines ``errors_hat[i, h] + lam *
costs[h]`` towards cheaper models. Every place where one prompt's decision changes is an *event*
``(lam, prompt, from_model, to_model)``; sorting all events by ``lam`` and accumulating their
effect on the total cost and quality with cumulative sums gives every point of the curve exactly,
with no grid over ``lam``. See docs/EVALUATION.md for the definitions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from uniroute.routers.base import route_argmin

#: Relative tolerance under which two breakpoints are the same lambda (floating-point rounding).
LAMBDA_TOLERANCE = 1e-12

# Rows processed together by the event sweep: keeps its (rows, models) work arrays near 8 MB.
_SWEEP_BLOCK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class DeferralCurve:
    """The raw points of a router's deferral curve and their interpolated (concave) envelope.

    ``lambdas[k]`` is the trade-off from which point ``k`` holds (until ``lambdas[k + 1]``);
    ``costs[k]`` is the mean realised cost per prompt and ``qualities[k]`` the mean true quality.
    ``envelope_costs`` / ``envelope_qualities`` are the vertices of the upper concave envelope
    of the raw points from the cheapest point to the first point of maximum quality; both are
    strictly increasing.
    """

    lambdas: np.ndarray
    costs: np.ndarray
    qualities: np.ndarray
    n_prompts: int = 0
    envelope_costs: np.ndarray = field(init=False, repr=False)
    envelope_qualities: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        lambdas = np.array(self.lambdas, dtype=float).reshape(-1)
        costs = np.array(self.costs, dtype=float).reshape(-1)
        qualities = np.array(self.qualities, dtype=float).reshape(-1)
        if not (len(lambdas) == len(costs) == len(qualities)):
            raise ValueError(
                f"deferral curve: {len(lambdas)} lambdas, {len(costs)} costs and "
                f"{len(qualities)} qualities; they must have the same length"
            )
        if len(costs) == 0:
            raise ValueError("deferral curve: no points")
        if not (np.isfinite(costs).all() and np.isfinite(qualities).all()):
            raise ValueError("deferral curve: costs and qualities must be finite numbers")
        envelope_costs, envelope_qualities = upper_envelope(costs, qualities)
        for name, value in (
            ("lambdas", lambdas),
            ("costs", costs),
            ("qualities", qualities),
            ("envelope_costs", envelope_costs),
            ("envelope_qualities", envelope_qualities),
        ):
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    def quality_at(self, cost: float | np.ndarray) -> float | np.ndarray:
        """Envelope quality at a mean cost; flat below the cheapest point and past the best one."""
        values = np.interp(cost, self.envelope_costs, self.envelope_qualities)
        return float(values) if np.ndim(values) == 0 else values

    @property
    def max_quality(self) -> float:
        """The highest quality on the curve."""
        return float(self.envelope_qualities[-1])


def upper_envelope(costs: np.ndarray, qualities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vertices of the non-decreasing part of the upper concave hull of (cost, quality) points."""
    costs = np.asarray(costs, dtype=float).reshape(-1)
    qualities = np.asarray(qualities, dtype=float).reshape(-1)
    order = np.lexsort((-qualities, costs))
    costs, qualities = costs[order], qualities[order]
    # A point no better than some cheaper point cannot be a vertex of the rising part of the
    # hull, so only the Pareto front (strictly better than everything cheaper) goes to the hull.
    best_cheaper = np.maximum.accumulate(np.r_[-np.inf, qualities[:-1]])
    front = qualities > best_cheaper
    xs, ys = costs[front].tolist(), qualities[front].tolist()
    hull_x: list[float] = []
    hull_y: list[float] = []
    for x, y in zip(xs, ys, strict=True):
        while len(hull_x) >= 2:
            turn = (hull_x[-1] - hull_x[-2]) * (y - hull_y[-2]) - (hull_y[-1] - hull_y[-2]) * (
                x - hull_x[-2]
            )
            if turn < 0:  # a right turn keeps the hull concave
                break
            hull_x.pop()
            hull_y.pop()
        hull_x.append(x)
        hull_y.append(y)
    return np.array(hull_x), np.array(hull_y)


def deferral_curve(
    errors_hat: np.ndarray,
    costs: np.ndarray,
    quality: np.ndarray,
    call_costs: np.ndarray | None = None,
) -> DeferralCurve:
    """Exact deferral curve of a router from its estimated errors, over every breakpoint of lambda.

    ``errors_hat`` (n, m) are the router's estimates, ``costs`` (m,) the costs it decides with,
    ``quality`` (n, m) the true scores in [0, 1] and ``call_costs`` (n, m) the realised cost of
    each call (default: ``costs`` for every prompt).
    """
    errors_hat, costs, quality, call_costs = _check_inputs(errors_hat, costs, quality, call_costs)
    n = errors_hat.shape[0]
    rows = np.arange(n)
    start = route_argmin(errors_hat, costs, 0.0)
    event_lambdas, event_rows, event_from, event_to = _decision_events(errors_hat, costs, start)

    order = np.argsort(event_lambdas, kind="stable")
    event_lambdas = event_lambdas[order]
    event_rows, event_from, event_to = event_rows[order], event_from[order], event_to[order]
    cost_steps = call_costs[event_rows, event_to] - call_costs[event_rows, event_from]
    quality_steps = quality[event_rows, event_to] - quality[event_rows, event_from]

    # Breakpoints closer than the tolerance are one lambda: apply their events together. (The
    # slices keep both index arrays empty when no prompt ever changes its decision.)
    new_lambda = event_lambdas[1:] > event_lambdas[:-1] + LAMBDA_TOLERANCE * np.maximum(
        1.0, event_lambdas[:-1]
    )
    group_starts = np.flatnonzero(np.r_[True, new_lambda])[: len(event_lambdas)]
    group_ends = np.r_[group_starts[1:], len(event_lambdas)][: len(group_starts)] - 1

    start_cost = call_costs[rows, start].sum()
    start_quality = quality[rows, start].sum()
    total_cost = np.r_[start_cost, start_cost + np.cumsum(cost_steps)[group_ends]]
    total_quality = np.r_[start_quality, start_quality + np.cumsum(quality_steps)[group_ends]]
    return DeferralCurve(
        lambdas=np.r_[0.0, event_lambdas[group_starts]],
        costs=total_cost / n,
        qualities=total_quality / n,
        n_prompts=n,
    )


def _decision_events(
    errors_hat: np.ndarray, costs: np.ndarray, start: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every (lambda, row, from, to) change of decision, walking each row's lower envelope.

    From the current model h (optimal at the current lambda), the next decision is the cheaper
    model g whose line crosses h's first, at lambda = (err_g - err_h) / (c_h - c_g); lines
    crossing at the same lambda are tied and the cheapest wins, as in ``route_argmin``. Each
    step costs O(m) per row that still has a cheaper model to move to, so the walk does O(m)
    work per event.
    """
    n, m = errors_hat.shape
    lambdas, rows_out, from_out, to_out = [], [], [], []
    cheapest_cost = costs.min()
    block = max(1, _SWEEP_BLOCK_ELEMENTS // m)
    for first in range(0, n, block):
        errors = errors_hat[first : first + block]
        current = start[first : first + block].copy()
        current_lambda = np.zeros(len(current))
        active = np.flatnonzero(costs[current] > cheapest_cost)
        while active.size:
            model = current[active]
            model_error = errors[active, model]
            model_cost = costs[model]
            cost_saving = model_cost[:, None] - costs[None, :]
            with np.errstate(divide="ignore", invalid="ignore"):
                crossing = (errors[active] - model_error[:, None]) / cost_saving
            # Only cheaper models lie ahead; rounding must not move a crossing behind us.
            crossing = np.where(
                cost_saving > 0, np.maximum(crossing, current_lambda[active, None]), np.inf
            )
            next_lambda = crossing.min(axis=1)
            tied = (
                crossing <= (next_lambda + LAMBDA_TOLERANCE * np.maximum(1.0, next_lambda))[:, None]
            )
            next_model = np.where(tied, costs[None, :], np.inf).argmin(axis=1)

            lambdas.append(next_lambda)
            rows_out.append(active + first)
            from_out.append(model)
            to_out.append(next_model)
            current[active] = next_model
            current_lambda[active] = next_lambda
            active = active[costs[next_model] > cheapest_cost]
    if not lambdas:
        empty_int = np.zeros(0, dtype=int)
        return np.zeros(0), empty_int, empty_int, empty_int
    return (
        np.concatenate(lambdas),
        np.concatenate(rows_out),
        np.concatenate(from_out),
        np.concatenate(to_out),
    )


def single_model_points(
    quality: np.ndarray, call_costs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean cost and accuracy of each model when it answers every prompt: two (m,) arrays."""
    quality = _score_matrix(quality, "quality")
    call_costs = _cost_matrix(call_costs, quality.shape, "call_costs")
    return call_costs.mean(axis=0), quality.mean(axis=0)


def _check_inputs(
    errors_hat: np.ndarray,
    costs: np.ndarray,
    quality: np.ndarray,
    call_costs: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    errors_hat = np.asarray(errors_hat, dtype=float)
    if errors_hat.ndim != 2 or 0 in errors_hat.shape:
        raise ValueError(
            f"errors_hat must be a non-empty (prompts, models) matrix, got shape {errors_hat.shape}"
        )
    if not np.isfinite(errors_hat).all():
        i, j = np.argwhere(~np.isfinite(errors_hat))[0]
        raise ValueError(f"errors_hat has a non-finite value at prompt row {i}, model column {j}")
    n, m = errors_hat.shape
    costs = np.asarray(costs, dtype=float)
    if costs.shape != (m,):
        raise ValueError(f"costs has shape {costs.shape}, expected ({m},) for {m} models")
    bad = ~np.isfinite(costs) | (costs < 0)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        raise ValueError(f"cost of model column {j} must be a finite number >= 0, got {costs[j]}")
    quality = _score_matrix(quality, "quality")
    if quality.shape != (n, m):
        raise ValueError(f"quality has shape {quality.shape}, errors_hat has {errors_hat.shape}")
    if call_costs is None:
        call_costs = np.broadcast_to(costs, (n, m))
    else:
        call_costs = _cost_matrix(call_costs, (n, m), "call_costs")
    return errors_hat, costs, quality, call_costs


def _score_matrix(values: np.ndarray, label: str) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"{label} must be a non-empty (prompts, models) matrix: {values.shape}")
    missing = np.isnan(values)
    if missing.any():
        i, j = np.argwhere(missing)[0]
        raise ValueError(
            f"{label} has {int(missing.sum())} missing (NaN) scores, first at prompt row {i}, "
            f"model column {j}; drop prompts with a missing score before evaluating"
        )
    outside = ~np.isfinite(values) | (values < 0) | (values > 1)
    if outside.any():
        i, j = np.argwhere(outside)[0]
        raise ValueError(
            f"{label} value {values[i, j]} at prompt row {i}, model column {j} is outside [0, 1]"
        )
    return values


def _cost_matrix(values: np.ndarray, shape: tuple[int, int], label: str) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    if values.shape != tuple(shape):
        raise ValueError(f"{label} has shape {values.shape}, expected {tuple(shape)}")
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(
            f"{label} value {values[i, j]} at prompt row {i}, model column {j} must be a finite "
            "number >= 0"
        )
    return values
