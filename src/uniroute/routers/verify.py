"""Verify and escalate: ask two cheap models, answer when they agree, else ask a stronger one.

A *plan* is either one model ``h`` (answer with h), or a triple ``(a, b, e)``: call the two
*candidates* a and b; when their answers agree (``uniroute.answers.answers_agree`` of their
canonical keys) return a's answer, otherwise call the *target* e and return its answer. On a
prompt of cluster k (the K-means clusters of ``UniRouteKMeans``) a plan's estimated error and
expected cost are

    err_k(a, b, e)  = P_k(agree) * err_k(a | agree) + (1 - P_k(agree)) * err_k(e | disagree)
    cost_k(a, b, e) = c_a + c_b + (1 - P_k(agree)) * c_e

and a single model's are Psi_k(h) and c_h, as for UniRoute. The three terms are read from the
pool's representative prompts (``Pool.scores`` and ``Pool.answers``) of cluster k, each shrunk
with ``s`` pseudo-counts toward a prior: the same quantity over all representative prompts,
carried to cluster k through Psi (err(a | agree) scaled by Psi_k(a) / a's mean error,
err(e | disagree) by Psi_k(e) / e's mean error, P(agree) by the candidates' product of accuracies
in k over their overall product). So what agreement is worth is measured over all the
representative prompts and applied at each cluster's own difficulty; ``s`` says how much a
cluster's own agreement evidence counts besides. A quantity with no prompt at all behind it falls
back to the model's mean error.

Which verify plans a cluster may choose is a rule: every (pair, target), or only those on the
rising envelope of the cluster-free estimates (error against expected cost over all
representative prompts), since choosing among hundreds of triples separately in every small
cluster tends to pick the luckiest estimate rather than the best plan. With ``"auto"`` both the
rule and ``s`` are chosen on the training LLMs only: described on the representative prompts,
routed on (a seeded sample of) the training prompts, scored by the area of the plan deferral
curve with every call counted. So a new model needs nothing but its scores and answers on the
representative prompts, as for UniRoute.

A prompt goes to ``argmin_plan err_k(plan) + lam * cost_k(plan)``: one lambda-sweepable family
with a deferral curve (``uniroute.tradeoff`` with per-prompt costs). Only plans on some
cluster's lower convex hull of (cost, error) can ever be that argmin, so the plan set is pruned
to them (exactly, from the estimates alone). In every pair the candidate that answers (``a``) is
the one with the lower mean error on the representative prompts; the target is any other model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from uniroute.errors import RouterError
from uniroute.pool import Pool
from uniroute.routers.uniroute_kmeans import DEFAULT_K_GRID, UniRouteKMeans
from uniroute.tradeoff import area, deferral_curve, route_argmin, upper_envelope

#: Candidate pseudo-counts of the per-cluster shrinkage; the largest is all but cluster-free.
DEFAULT_SHRINKAGE_GRID = (1.0, 4.0, 16.0, 64.0, 1e6)
#: The pseudo-count used when no training answers are given to choose one.
DEFAULT_SHRINKAGE = 16.0
#: Training prompts the shrinkage is scored on (a seeded sample; bounds the selection's time).
MAX_SELECTION_PROMPTS = 3000
NO_MODEL = -1
#: Which verify plans a cluster may choose: those on the cluster-free envelope, or every one.
CANDIDATE_RULES = ("envelope", "all")


@dataclass(frozen=True, eq=False)
class PlanTable:
    """The plans over one pool, with their estimates per cluster.

    Plan ``p`` is ``first[p]`` alone when ``second[p] == -1``; else candidates ``first[p]``
    (answers on agreement) and ``second[p]``, escalating to ``target[p]``. ``errors``, ``costs``
    and ``agreement`` are (K, P): estimated error, expected cost and P(agree) (1 for a single
    model) per cluster. Indices are pool columns.
    """

    names: tuple[str, ...]
    first: np.ndarray
    second: np.ndarray
    target: np.ndarray
    errors: np.ndarray
    costs: np.ndarray
    agreement: np.ndarray

    def __len__(self) -> int:
        return len(self.first)

    def is_single(self) -> np.ndarray:
        """(P,) True for the single-model plans."""
        return self.second == NO_MODEL

    def describe(self, p: int) -> dict[str, Any]:
        """Plan ``p`` by model names: ``candidates`` (one or two) and ``target`` (or None)."""
        if self.second[p] == NO_MODEL:
            return {"candidates": (self.names[self.first[p]],), "target": None}
        return {
            "candidates": (self.names[self.first[p]], self.names[self.second[p]]),
            "target": self.names[self.target[p]],
        }

    def label(self, p: int) -> str:
        """``a`` or ``a+b->e``, for logs and reports."""
        plan = self.describe(p)
        if plan["target"] is None:
            return str(plan["candidates"][0])
        return f"{plan['candidates'][0]}+{plan['candidates'][1]}->{plan['target']}"

    def select(self, keep: np.ndarray) -> PlanTable:
        """The table restricted to the plans where ``keep`` is true (or to these indices)."""
        return PlanTable(
            names=self.names,
            first=self.first[keep],
            second=self.second[keep],
            target=self.target[keep],
            errors=self.errors[:, keep],
            costs=self.costs[:, keep],
            agreement=self.agreement[:, keep],
        )


def agreement_matrix(answers: np.ndarray, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(n, P) whether the answers of ``first[p]`` and ``second[p]`` agree on each prompt.

    ``answers`` is an (n, m) object array of canonical keys (None = nothing comparable, which
    never agrees). A single-model plan (``second == -1``) "agrees" always: it never escalates.
    """
    answers = np.asarray(answers, dtype=object)
    n = answers.shape[0]
    columns = np.arange(answers.shape[1])
    # Keys as integer codes (None -> -1) so the comparison is one vectorised equality.
    codes = np.full(answers.shape, -1, dtype=np.int64)
    vocabulary: dict[str, int] = {}
    for (i, j), key in np.ndenumerate(answers):
        if key is not None:
            codes[i, j] = vocabulary.setdefault(key, len(vocabulary))
    single = second == NO_MODEL
    if np.any((first < 0) | (first >= len(columns))) or np.any(second[~single] >= len(columns)):
        raise RouterError("a plan names a model column outside the answers matrix")
    a = codes[:, first]
    b = codes[:, np.where(single, first, second)]
    agree = (a == b) & (a >= 0)
    agree[:, single] = True
    return agree.reshape(n, len(first))


def plan_outcomes(
    table: PlanTable, quality: np.ndarray, call_costs: np.ndarray, answers: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Realised quality and cost (n, P) of every plan on prompts with these real answers.

    ``quality`` and ``call_costs`` are (n, m) per pool model, ``answers`` (n, m) their keys. A
    verify plan's cost counts every call it makes: both candidates always, the target only
    where the candidates disagree; its quality is that of the answer it returns.
    """
    quality = np.asarray(quality, dtype=float)
    call_costs = np.asarray(call_costs, dtype=float)
    agree = agreement_matrix(answers, table.first, table.second)
    single = table.is_single()
    second = np.where(single, table.first, table.second)
    target = np.where(single, table.first, table.target)
    returned = np.where(agree, quality[:, table.first], quality[:, target])
    paid = call_costs[:, table.first] + np.where(single, 0.0, call_costs[:, second])
    paid = paid + np.where(agree, 0.0, call_costs[:, target])
    return returned, paid


def _cluster_sums(labels: np.ndarray, values: np.ndarray, n_clusters: int) -> np.ndarray:
    """(K, ...) sums of ``values`` rows per cluster."""
    membership = np.zeros((n_clusters, len(labels)))
    membership[labels, np.arange(len(labels))] = 1.0
    return membership @ values


def _verify_estimates(
    labels: np.ndarray,
    single_errors: np.ndarray,
    agree: np.ndarray,
    errors0: np.ndarray,
    observed: np.ndarray,
    mean_error: np.ndarray,
    plans: tuple[np.ndarray, np.ndarray, np.ndarray],
    costs: np.ndarray,
    shrinkage: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K, T) P(agree), error and expected cost of verify plans ``(first, second, target)``.

    ``agree`` (n_rep, T) is where each plan's candidates agree, ``errors0`` (n_rep, m) the errors
    with 0 where ``observed`` is false, ``single_errors`` (K, m) the models' per-cluster errors
    (Psi) and ``mean_error`` (m,) their mean errors over all representative prompts. Each
    per-cluster quantity is shrunk, with ``shrinkage`` pseudo-counts, toward its value over all
    representative prompts carried to the cluster through Psi: err(a | agree) scaled by
    Psi_k(a) / mean error of a, err(e | disagree) by Psi_k(e) / mean error of e, and P(agree) by
    the product of the candidates' accuracies in k over their overall product. So a cluster with
    few prompts gets the overall worth of agreement at its own difficulty.
    """
    first, second, target = plans
    n_clusters = len(single_errors)
    s = float(shrinkage)
    counts = np.bincount(labels, minlength=n_clusters).astype(float)

    def ratio(values: np.ndarray, overall: np.ndarray) -> np.ndarray:
        return np.divide(values, overall, out=np.ones_like(values), where=overall > 0)

    def shrunk(cluster_sum: np.ndarray, cluster_n: np.ndarray, prior: np.ndarray) -> np.ndarray:
        n = np.broadcast_to(cluster_n, cluster_sum.shape)
        prior = np.clip(prior, 0.0, 1.0)
        return np.divide(cluster_sum + s * prior, n + s, out=prior.copy(), where=n + s > 0)

    accuracy = 1.0 - np.clip(single_errors, 0.0, 1.0)
    mean_accuracy = 1.0 - mean_error
    agreement_scale = ratio(
        accuracy[:, first] * accuracy[:, second],
        (mean_accuracy[first] * mean_accuracy[second])[None, :],
    )
    p_agree = shrunk(
        _cluster_sums(labels, agree, n_clusters),
        counts[:, None],
        agree.mean(axis=0)[None, :] * agreement_scale,
    )

    def conditional(mask: np.ndarray, cols: np.ndarray) -> np.ndarray:
        seen = mask * observed[:, cols]
        err_sum = _cluster_sums(labels, mask * errors0[:, cols], n_clusters)
        n_seen = _cluster_sums(labels, seen, n_clusters)
        total_n = n_seen.sum(axis=0)
        # With no prompt at all behind it, a conditional error is the model's mean error.
        overall = np.where(
            total_n > 0, err_sum.sum(axis=0) / np.maximum(total_n, 1), mean_error[cols]
        )
        prior = overall[None, :] * ratio(single_errors[:, cols], mean_error[cols][None, :])
        return np.clip(shrunk(err_sum, n_seen, prior), 0.0, 1.0)

    err_agree = conditional(agree, first)
    err_escalate = conditional(1.0 - agree, target)
    errors = p_agree * err_agree + (1.0 - p_agree) * err_escalate
    expected_cost = costs[first] + costs[second] + (1.0 - p_agree) * costs[target][None, :]
    return p_agree, np.clip(errors, 0.0, 1.0), expected_cost


def plan_table(
    labels: np.ndarray,
    n_clusters: int,
    single_errors: np.ndarray,
    scores: np.ndarray,
    answers: np.ndarray,
    costs: np.ndarray,
    names: Sequence[str],
    shrinkage: float,
    candidates: str = "envelope",
) -> PlanTable:
    """Every useful plan's per-cluster estimates from the representative prompts.

    ``labels`` (n_rep,) are the representative prompts' clusters, ``single_errors`` (K, m) the
    single models' estimates (Psi), ``scores`` / ``answers`` (n_rep, m) the pool's evidence and
    ``costs`` (m,) its expected costs. With ``candidates="envelope"`` the verify plans
    considered are those on the rising envelope of all plans' estimates over all representative
    prompts (cluster-free, where the estimates rest on the most prompts), so the many
    per-cluster comparisons do not pick the plan that is luckiest in one small cluster; with
    ``"all"`` every (pair, target) is. The table is then pruned to the plans some cluster can
    choose (``hull_plans``).
    """
    if candidates not in CANDIDATE_RULES:
        raise RouterError(f"candidates must be one of {CANDIDATE_RULES}, got {candidates!r}")
    scores = np.asarray(scores, dtype=float)
    costs = np.asarray(costs, dtype=float)
    m = scores.shape[1]
    errors = 1.0 - scores
    observed = np.isfinite(errors)
    errors0 = np.where(observed, errors, 0.0)
    mean_error = np.where(
        observed.any(axis=0), errors0.sum(axis=0) / np.maximum(observed.sum(axis=0), 1), 1.0
    )
    triples = []
    for a in range(m):
        for b in range(a + 1, m):
            # The better candidate (lower mean error) answers when the two agree.
            answerer, other = (a, b) if mean_error[a] <= mean_error[b] else (b, a)
            triples += [(answerer, other, e) for e in range(m) if e not in (a, b)]
    first, second, target = (np.array([t[i] for t in triples], dtype=int) for i in range(3))
    plans = (first, second, target)
    if triples:
        agree = agreement_matrix(answers, first, second).astype(float)
        common = (agree, errors0, observed, mean_error)
        everywhere = np.zeros(len(labels), dtype=int)
        _, overall_errors, overall_costs = _verify_estimates(
            everywhere, mean_error[None, :], *common, plans, costs, 0.0
        )
        overall = hull_plans(
            np.r_[costs, overall_costs[0]][None, :], np.r_[mean_error, overall_errors[0]][None, :]
        )
        kept = overall[overall >= m] - m if candidates == "envelope" else np.arange(len(first))
        first, second, target = (x[kept] for x in plans)
        agreement, verify_errors, verify_costs = _verify_estimates(
            labels,
            np.asarray(single_errors, dtype=float),
            agree[:, kept],
            *common[1:],
            (first, second, target),
            costs,
            shrinkage,
        )
    else:
        agreement = verify_errors = verify_costs = np.zeros((n_clusters, 0))
    table = PlanTable(
        names=tuple(str(n) for n in names),
        first=np.r_[np.arange(m), first].astype(int),
        second=np.r_[np.full(m, NO_MODEL), second].astype(int),
        target=np.r_[np.full(m, NO_MODEL), target].astype(int),
        errors=np.clip(np.hstack([single_errors, verify_errors]), 0.0, 1.0),
        costs=np.hstack([np.broadcast_to(costs, (n_clusters, m)), verify_costs]),
        agreement=np.hstack([np.ones((n_clusters, m)), agreement]),
    )
    return table.select(hull_plans(table.costs, table.errors))


def hull_plans(costs: np.ndarray, errors: np.ndarray) -> np.ndarray:
    """Indices of the plans that are ``argmin err + lam * cost`` in some cluster for some lam.

    Those are the vertices of each cluster's rising envelope (``tradeoff.upper_envelope`` of
    cost against 1 - error); a plan tied with another on the same point is kept once.
    """
    keep: set[int] = set()
    for k in range(costs.shape[0]):
        vertex_costs, vertex_qualities = upper_envelope(costs[k], 1.0 - errors[k])
        for c, q in zip(vertex_costs, vertex_qualities, strict=True):
            at = np.flatnonzero(
                np.isclose(costs[k], c, rtol=1e-12, atol=0.0)
                & np.isclose(1.0 - errors[k], q, rtol=1e-12, atol=1e-15)
            )
            if at.size:
                # Of plans on the same point, the one the argmin's tie rule would take.
                keep.add(int(at[0]))
    return np.array(sorted(keep), dtype=int)


class UniRouteVerify(UniRouteKMeans):
    """UniRoute K-means with verify-and-escalate plans (see the module docstring).

    As an estimator it is ``UniRouteKMeans`` (``predict_error`` estimates single models, so it
    routes and deploys like it); ``plan_table(pool)`` and ``predict_plans(X, pool)`` add the
    plans, which need ``pool.answers``. ``fit`` takes the training LLMs' answers on the training
    and representative prompts (``answers_train``, ``answers_val``) to choose the shrinkage
    and the candidate rule (``CANDIDATE_RULES``) where they are "auto"; without them "auto"
    means ``DEFAULT_SHRINKAGE`` and "envelope". Learned: ``shrinkage_``, ``candidates_`` and
    ``plan_selection_scores_`` ({(rule, s): area on the training prompts}, empty when nothing
    was selected).
    """

    name = "uniroute-verify"
    #: The trial loop passes answers to ``fit`` and scores this router by its plans.
    uses_answers = True

    def __init__(
        self,
        n_clusters: str | int = "auto",
        k_grid: Sequence[int] = DEFAULT_K_GRID,
        prior_strength: float = 1.0,
        psi_prior: str = "population",
        random_state: int | None = 0,
        shrinkage: str | float = "auto",
        shrinkage_grid: Sequence[float] = DEFAULT_SHRINKAGE_GRID,
        candidates: str = "auto",
    ) -> None:
        super().__init__(n_clusters, k_grid, prior_strength, psi_prior, random_state)
        self.shrinkage = shrinkage
        self.shrinkage_grid = shrinkage_grid
        self.candidates = candidates

    def fit(
        self,
        X_train: np.ndarray,
        S_train: np.ndarray,
        X_val: np.ndarray,
        S_val: np.ndarray,
        costs: np.ndarray,
        *,
        answers_train: np.ndarray | None = None,
        answers_val: np.ndarray | None = None,
    ) -> Self:
        """Fit the clusters as ``UniRouteKMeans``, then choose the plan rule on training LLMs."""
        super().fit(X_train, S_train, X_val, S_val, costs)
        shrinkages = (
            self._check_shrinkage_grid()
            if self.shrinkage == "auto"
            else [self._check_shrinkage(self.shrinkage)]
        )
        if self.candidates == "auto":
            rules = list(CANDIDATE_RULES)
        elif self.candidates in CANDIDATE_RULES:
            rules = [str(self.candidates)]
        else:
            raise RouterError(
                f"candidates must be 'auto' or one of {CANDIDATE_RULES}, got {self.candidates!r}"
            )
        self.plan_selection_scores_: dict[tuple[str, float], float] = {}
        self.shrinkage_ = shrinkages[0] if len(shrinkages) == 1 else DEFAULT_SHRINKAGE
        self.candidates_ = rules[0]
        if len(shrinkages) * len(rules) == 1 or answers_train is None or answers_val is None:
            return self
        S_train = np.asarray(S_train, dtype=float)
        answers_train = _answer_matrix(answers_train, S_train.shape, "answers_train")
        answers_val = _answer_matrix(answers_val, np.shape(S_val), "answers_val")
        costs = np.asarray(costs, dtype=float).reshape(-1)
        names = [f"training model {j}" for j in range(len(costs))]
        pool = self.make_pool(names, S_val, costs, answers=answers_val)
        rows = np.flatnonzero(np.isfinite(S_train).all(axis=1))
        if len(rows) > MAX_SELECTION_PROMPTS:
            rng = np.random.default_rng(self.random_state)
            rows = np.sort(rng.choice(rows, MAX_SELECTION_PROMPTS, replace=False))
        if len(rows) == 0:
            return self
        clusters = self.clusters(X_train[rows])
        max_cost = float(costs.max())
        for rule in rules:
            for s in shrinkages:
                table = self._table(pool, s, rule)
                quality, paid = plan_outcomes(
                    table,
                    S_train[rows],
                    np.broadcast_to(costs, (len(rows), len(costs))),
                    answers_train[rows],
                )
                curve = deferral_curve(
                    table.errors[clusters], table.costs[clusters], quality, call_costs=paid
                )
                self.plan_selection_scores_[(rule, s)] = (
                    area(curve, max_cost) if max_cost > 0 else float(curve.qualities[0])
                )
        best = max(self.plan_selection_scores_.values())
        # Ties go to the envelope rule, then to the most shrinkage: the estimates that trust
        # small clusters least.
        tied = [key for key, v in self.plan_selection_scores_.items() if v >= best - 1e-12]
        self.candidates_, self.shrinkage_ = min(
            tied, key=lambda key: (CANDIDATE_RULES.index(key[0]), -key[1])
        )
        return self

    def _check_shrinkage(self, value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float | np.number):
            raise RouterError(f"shrinkage must be 'auto' or a number > 0, got {value!r}")
        value = float(value)
        if not np.isfinite(value) or value <= 0:
            raise RouterError(f"shrinkage must be 'auto' or a finite number > 0, got {value}")
        return value

    def _check_shrinkage_grid(self) -> list[float]:
        grid = list(self.shrinkage_grid)
        if not grid:
            raise RouterError("shrinkage_grid must hold at least one value")
        return [self._check_shrinkage(v) for v in dict.fromkeys(grid)]

    def _table(self, pool: Pool, shrinkage: float, candidates: str) -> PlanTable:
        return cluster_plan_table(self, pool, shrinkage, candidates)

    def plan_table(self, pool: Pool) -> PlanTable:
        """The plans over ``pool`` with their per-cluster estimates (needs ``pool.answers``)."""
        self._check_pool(pool)
        return self._table(pool, self.shrinkage_, self.candidates_)

    def predict_plans(self, X: np.ndarray, pool: Pool) -> tuple[PlanTable, np.ndarray]:
        """The plan table and each prompt's row of it (its cluster): estimates are
        ``table.errors[rows]`` and ``table.costs[rows]``, both (n, P)."""
        table = self.plan_table(pool)
        return table, self.error_rows(X, pool)

    def route_plans(self, X: np.ndarray, pool: Pool, lam: float = 0.0) -> list[dict[str, Any]]:
        """Each prompt's plan at trade-off ``lam``: {"candidates": names, "target": name|None}."""
        table, rows = self.predict_plans(X, pool)
        chosen = route_argmin(table.errors[rows], table.costs[rows], lam)
        return [table.describe(int(p)) for p in chosen]

    def _state_arrays(self) -> dict[str, np.ndarray]:
        keys = sorted(self.plan_selection_scores_)
        return {
            **super()._state_arrays(),
            "verify_shrinkage": np.array([self.shrinkage_], dtype=float),
            "verify_candidates": np.array([CANDIDATE_RULES.index(self.candidates_)], dtype=int),
            "verify_selection_rule": np.array(
                [CANDIDATE_RULES.index(rule) for rule, _ in keys], dtype=int
            ),
            "verify_selection_s": np.array([s for _, s in keys], dtype=float),
            "verify_selection_scores": np.array(
                [self.plan_selection_scores_[key] for key in keys], dtype=float
            ),
        }

    def _load_state(self, arrays: dict[str, np.ndarray]) -> None:
        self.shrinkage_ = float(arrays.pop("verify_shrinkage")[0])
        self.candidates_ = CANDIDATE_RULES[int(arrays.pop("verify_candidates")[0])]
        rules = arrays.pop("verify_selection_rule")
        grid = arrays.pop("verify_selection_s")
        scores = arrays.pop("verify_selection_scores")
        self.plan_selection_scores_ = {
            (CANDIDATE_RULES[int(r)], float(s)): float(v)
            for r, s, v in zip(rules, grid, scores, strict=True)
        }
        super()._load_state(arrays)


def cluster_plan_table(
    router: UniRouteKMeans,
    pool: Pool,
    shrinkage: float = DEFAULT_SHRINKAGE,
    candidates: str = "envelope",
) -> PlanTable:
    """The plan table of any fitted K-means router over a pool with answers.

    ``UniRouteVerify`` uses it with its chosen shrinkage and rule; a deployment whose artifact
    holds a plain ``UniRouteKMeans`` can use it with the defaults.
    """
    router._check_pool(pool)
    if pool.answers is None:
        raise RouterError(
            "verify plans need the pool's answers on the representative prompts "
            "(Pool.answers); this pool has none"
        )
    return plan_table(
        router.val_clusters_,
        router.n_clusters_,
        router.cluster_errors(pool),
        pool.scores,
        pool.answers,
        pool.costs,
        pool.names,
        shrinkage,
        candidates,
    )


def _answer_matrix(values: np.ndarray, shape: tuple[int, ...], label: str) -> np.ndarray:
    """An (n, m) object array of keys (str or None) of the expected shape."""
    array = np.empty(np.shape(values), dtype=object)
    array[...] = values
    if array.shape != tuple(shape):
        raise RouterError(f"{label} is {array.shape}, expected {tuple(shape)}")
    bad = [a for a in array.flat if a is not None and not isinstance(a, str)]
    if bad:
        raise RouterError(f"{label}: answers must be text keys or None, got {bad[0]!r}")
    return array
