"""The cost/quality trade-off: the argmin rule, the exact lambda sweep, the deferral curve, area.

A router sends prompt ``i`` to ``argmin_h errors[i, h] + lam * costs[h]`` (ties to the cheaper
model). As ``lam`` grows from 0, each prompt's decision walks down the lower envelope of the lines
``errors[i, h] + lam * costs[h]`` towards cheaper models. Every place where one prompt's decision
changes is an *event* ``(lam, prompt, from_model, to_model)``. :func:`decision_path` finds every
event exactly (no grid over ``lam``); summing any per-(prompt, model) quantity along the events
gives its value at every breakpoint. Routers' hyper-parameter selection, calibration of the
default lambda and the evaluation all read this one sweep, so a calibrated point lies on the
evaluated curve by construction. See docs/EVALUATION.md for the definitions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Relative tolerance under which two objective values, or two breakpoints, are equal.
LAMBDA_TOLERANCE = 1e-12

# Rows processed together by the event sweep: keeps its (rows, models) work arrays near 8 MB.
_SWEEP_BLOCK_ELEMENTS = 1 << 20


def _slack(values: np.ndarray | float) -> np.ndarray | float:
    """The tolerance around a value: relative for large values, absolute near 0."""
    return LAMBDA_TOLERANCE * np.maximum(1.0, np.abs(values))


def route_argmin(errors: np.ndarray, costs: np.ndarray, lam: float | np.ndarray) -> np.ndarray:
    """Index of ``argmin_h errors[:, h] + lam * costs[h]`` per row; ties go to the cheaper model.

    ``lam`` may be a scalar or one value per row; ``costs`` is (m,) or one row per prompt
    (n, m), for options whose expected cost depends on the prompt (verify plans).
    """
    errors = np.asarray(errors, dtype=float)
    costs = np.broadcast_to(np.asarray(costs, dtype=float), errors.shape)
    lam = np.asarray(lam, dtype=float)
    objective = errors + (lam[:, None] if lam.ndim == 1 else lam) * costs
    best = objective.min(axis=1, keepdims=True)
    tied = objective <= best + _slack(best)
    return np.where(tied, costs, np.inf).argmin(axis=1)


@dataclass(frozen=True, eq=False)
class DecisionPath:
    """Every decision of every prompt for all lambda >= 0.

    ``start`` (n,) is each prompt's model at lambda = 0; the events, sorted by lambda, are
    ``(event_lambdas[e], event_rows[e], event_from[e], event_to[e])``. Events closer than the
    tolerance form one breakpoint: ``breakpoints[p]`` is the lambda from which point ``p`` holds
    (until ``breakpoints[p + 1]``), with ``breakpoints[0] == 0``.
    """

    start: np.ndarray
    event_lambdas: np.ndarray
    event_rows: np.ndarray
    event_from: np.ndarray
    event_to: np.ndarray
    breakpoints: np.ndarray = field(init=False)
    _group_ends: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        lambdas = self.event_lambdas
        new_lambda = lambdas[1:] > lambdas[:-1] + _slack(lambdas[:-1])
        group_starts = np.flatnonzero(np.r_[True, new_lambda])[: len(lambdas)]
        group_ends = np.r_[group_starts[1:], len(lambdas)][: len(group_starts)] - 1
        breakpoints = np.r_[0.0, lambdas[group_starts]]
        object.__setattr__(self, "breakpoints", breakpoints)
        object.__setattr__(self, "_group_ends", group_ends)

    @property
    def n_prompts(self) -> int:
        """Number of prompts (rows) swept."""
        return len(self.start)

    def totals(self, values: np.ndarray) -> np.ndarray:
        """``sum_i values[i, choice_i]`` at every breakpoint: shape (len(breakpoints),).

        ``values`` is (n, m), or (m,) for a per-model quantity such as a cost.
        """
        values = np.asarray(values, dtype=float)
        n = self.n_prompts
        if values.ndim == 1:
            values = np.broadcast_to(values, (n, len(values)))
        rows = np.arange(n)
        first = values[rows, self.start].sum()
        steps = values[self.event_rows, self.event_to] - values[self.event_rows, self.event_from]
        return np.r_[first, first + np.cumsum(steps)[self._group_ends]]

    def point_index(self, lam: float) -> int:
        """The breakpoint whose interval holds ``lam`` (the last one when several start there)."""
        return int(np.searchsorted(self.breakpoints, float(lam), side="right") - 1)

    def choices(self, point: int) -> np.ndarray:
        """Each prompt's model at breakpoint ``point``."""
        choice = self.start.copy()
        if point > 0:
            last = int(self._group_ends[point - 1]) + 1
            # Events are sorted by lambda, and each row's events follow its envelope in order.
            choice[self.event_rows[:last]] = self.event_to[:last]
        return choice

    def interior_lambda(self, point: int) -> float:
        """A lambda strictly inside point ``point``'s interval (0 for the first point)."""
        if point == 0:
            return 0.0
        if point + 1 < len(self.breakpoints):
            return float((self.breakpoints[point] + self.breakpoints[point + 1]) / 2)
        return float(2 * self.breakpoints[point])


def decision_path(errors: np.ndarray, costs: np.ndarray) -> DecisionPath:
    """The exact decisions of ``argmin_h errors[i, h] + lam * costs[h]`` for all lambda >= 0.

    From the current model h (optimal at the current lambda), the next decision is the cheaper
    model g whose line crosses h's first, at lambda = (err_g - err_h) / (c_h - c_g); lines
    crossing at the same lambda (within the tolerance) are tied and the cheapest wins, as in
    :func:`route_argmin`. Each step costs O(m) per row that still has a cheaper model to move
    to, so the walk does O(m) work per event. ``costs`` is (m,) or (n, m): with one cost row
    per prompt each prompt walks its own lines, by the same rule.
    """
    errors, costs = _check_errors_and_costs(errors, costs)
    n, m = errors.shape
    row_costs = np.broadcast_to(costs, (n, m))
    start = route_argmin(errors, row_costs, 0.0)
    lambdas, rows_out, from_out, to_out = [], [], [], []
    block = max(1, _SWEEP_BLOCK_ELEMENTS // m)
    for first in range(0, n, block):
        block_errors = errors[first : first + block]
        block_costs = row_costs[first : first + block]
        cheapest_cost = block_costs.min(axis=1)
        current = start[first : first + block].copy()
        current_lambda = np.zeros(len(current))
        active = np.flatnonzero(block_costs[np.arange(len(current)), current] > cheapest_cost)
        while active.size:
            model = current[active]
            model_error = block_errors[active, model]
            active_costs = block_costs[active]
            cost_saving = active_costs[np.arange(len(active)), model][:, None] - active_costs
            with np.errstate(divide="ignore", invalid="ignore"):
                crossing = (block_errors[active] - model_error[:, None]) / cost_saving
            # Only cheaper models lie ahead; rounding must not move a crossing behind us.
            crossing = np.where(
                cost_saving > 0, np.maximum(crossing, current_lambda[active, None]), np.inf
            )
            next_lambda = crossing.min(axis=1)
            tied = crossing <= (next_lambda + _slack(next_lambda))[:, None]
            next_model = np.where(tied, active_costs, np.inf).argmin(axis=1)
            lambdas.append(next_lambda)
            rows_out.append(active + first)
            from_out.append(model)
            to_out.append(next_model)
            current[active] = next_model
            current_lambda[active] = next_lambda
            still = active_costs[np.arange(len(active)), next_model] > cheapest_cost[active]
            active = active[still]
    if lambdas:
        event_lambdas = np.concatenate(lambdas)
        order = np.argsort(event_lambdas, kind="stable")
        return DecisionPath(
            start=start,
            event_lambdas=event_lambdas[order],
            event_rows=np.concatenate(rows_out)[order],
            event_from=np.concatenate(from_out)[order],
            event_to=np.concatenate(to_out)[order],
        )
    empty = np.zeros(0, dtype=int)
    return DecisionPath(start, np.zeros(0), empty, empty, empty)


# ---------------------------------------------------------------------------- deferral curves
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

    def point_at(self, lam: float) -> tuple[float, float]:
        """The raw (mean cost, mean quality) routing at trade-off ``lam`` gives."""
        k = int(np.searchsorted(self.lambdas, float(lam), side="right") - 1)
        return float(self.costs[k]), float(self.qualities[k])

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

    ``errors_hat`` (n, m) are the router's estimates, ``costs`` (m,) or (n, m) the costs it
    decides with, ``quality`` (n, m) the true scores in [0, 1] and ``call_costs`` (n, m) the
    realised cost of each call (default: ``costs``). A column may be any routing option, not only
    one model: for a verify plan, ``quality`` is that of the answer it returns and ``call_costs``
    the sum of every call it makes on that prompt.
    """
    errors_hat, costs = _check_errors_and_costs(errors_hat, costs)
    n, m = errors_hat.shape
    quality = score_matrix(quality, "quality")
    if quality.shape != (n, m):
        raise ValueError(f"quality has shape {quality.shape}, errors_hat has {errors_hat.shape}")
    if call_costs is None:
        call_costs = np.broadcast_to(costs, (n, m))
    else:
        call_costs = cost_matrix(call_costs, (n, m), "call_costs")
    path = decision_path(errors_hat, costs)
    return DeferralCurve(
        lambdas=path.breakpoints,
        costs=path.totals(call_costs) / n,
        qualities=path.totals(quality) / n,
        n_prompts=n,
    )


def mean_quality_up_to(curve: DeferralCurve, budget: float) -> float:
    """(1/budget) * integral over [0, budget] of the envelope quality, computed exactly."""
    budget = float(budget)
    if not np.isfinite(budget) or budget <= 0:
        raise ValueError(f"cost budget must be a finite number > 0, got {budget}")
    # quality_at is linear between envelope vertices and flat outside them, so the trapezoid
    # rule on the vertices inside (0, budget) plus both ends is the exact integral.
    inside = curve.envelope_costs[(curve.envelope_costs > 0) & (curve.envelope_costs < budget)]
    knots = np.r_[0.0, inside, budget]
    values = np.asarray(curve.quality_at(knots))
    return float(np.sum(np.diff(knots) * (values[1:] + values[:-1])) / 2.0 / budget)


def area(curve: DeferralCurve, max_cost: float) -> float:
    """Area under the envelope over [0, max_cost] with the cost axis normalised to [0, 1]."""
    return mean_quality_up_to(curve, max_cost)


# ---------------------------------------------------------------------------- input checks
def _check_errors_and_costs(errors: np.ndarray, costs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    errors = np.asarray(errors, dtype=float)
    if errors.ndim != 2 or 0 in errors.shape:
        raise ValueError(
            f"errors_hat must be a non-empty (prompts, models) matrix, got shape {errors.shape}"
        )
    if not np.isfinite(errors).all():
        i, j = np.argwhere(~np.isfinite(errors))[0]
        raise ValueError(f"errors_hat has a non-finite value at prompt row {i}, model column {j}")
    m = errors.shape[1]
    costs = np.asarray(costs, dtype=float)
    if costs.shape not in ((m,), errors.shape):
        raise ValueError(
            f"costs has shape {costs.shape}, expected ({m},) for {m} models or {errors.shape}"
        )
    bad = ~np.isfinite(costs) | (costs < 0)
    if bad.any():
        where = np.argwhere(bad)[0]
        j = int(where[-1])
        at = f"prompt row {int(where[0])}, " if costs.ndim == 2 else ""
        raise ValueError(
            f"cost of {at}model column {j} must be a finite number >= 0, got {costs[tuple(where)]}"
        )
    return errors, costs


def score_matrix(values: np.ndarray, label: str) -> np.ndarray:
    """A complete (prompts, models) matrix of scores in [0, 1], or a ValueError naming the cell."""
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


def cost_matrix(values: np.ndarray, shape: tuple[int, int], label: str) -> np.ndarray:
    """A (prompts, models) matrix of finite costs >= 0, or a ValueError naming the cell."""
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
