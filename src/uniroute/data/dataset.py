"""The RoutingDataset: prompts, models, their per-prompt scores and costs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from uniroute.errors import DataError


@dataclass
class RoutingDataset:
    """Per-prompt correctness of a set of LLMs.

    ``scores[i, j]`` is the quality of model ``models[j]`` on prompt ``prompt_ids[i]`` in [0, 1];
    NaN means the pair was never recorded (it is never read as 0). ``model_costs[j]`` is the
    cost of one query to model ``j``; ``call_costs[i, j]``, when known, is the real cost of that
    call. ``answers[i, j]``, when the data records answers, is the canonical key of model ``j``'s
    answer to prompt ``i`` (``uniroute.answers.answer_key``: a letter, a number's key, normalised
    text) or None where it has none or none comparable; two models agree on a prompt when their
    keys are equal (``answers_agree``). It is aligned to ``scores`` and kept through ``subset``,
    ``concat`` and ``with_costs``.
    """

    prompt_ids: np.ndarray
    prompts: np.ndarray
    tasks: np.ndarray
    models: list[str]
    model_costs: np.ndarray
    scores: np.ndarray
    call_costs: np.ndarray | None = None
    references: np.ndarray | None = None
    answers: np.ndarray | None = None
    name: str = "dataset"
    source: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.prompt_ids = np.asarray(self.prompt_ids, dtype=object).astype(str).astype(object)
        self.prompts = np.asarray(self.prompts, dtype=object)
        self.tasks = np.asarray(self.tasks, dtype=object).astype(str).astype(object)
        self.models = [str(m) for m in self.models]
        self.model_costs = np.asarray(self.model_costs, dtype=float)
        self.scores = np.asarray(self.scores, dtype=float)
        if self.call_costs is not None:
            self.call_costs = np.asarray(self.call_costs, dtype=float)
        if self.references is not None:
            self.references = np.asarray(self.references, dtype=object)
        if self.answers is not None:
            self.answers = _object_matrix(self.answers)
        self.validate()

    @property
    def n_prompts(self) -> int:
        """Number of prompts (rows)."""
        return len(self.prompt_ids)

    @property
    def n_models(self) -> int:
        """Number of models (columns)."""
        return len(self.models)

    def validate(self) -> None:
        """Check shapes, ranges and uniqueness; raise DataError naming what is wrong."""
        where = f"dataset {self.name!r}" + (f" ({self.source})" if self.source else "")
        n, m = len(self.prompt_ids), len(self.models)
        for label, arr in (("prompts", self.prompts), ("tasks", self.tasks)):
            if len(arr) != n:
                raise DataError(f"{where}: {len(arr)} {label} for {n} prompt ids")
        if self.references is not None and len(self.references) != n:
            raise DataError(f"{where}: {len(self.references)} references for {n} prompt ids")
        if self.scores.shape != (n, m):
            raise DataError(f"{where}: score matrix is {self.scores.shape}, expected ({n}, {m})")
        if self.model_costs.shape != (m,):
            raise DataError(f"{where}: {self.model_costs.shape[0]} model costs for {m} models")
        if self.call_costs is not None and self.call_costs.shape != (n, m):
            raise DataError(
                f"{where}: call-cost matrix is {self.call_costs.shape}, expected ({n}, {m})"
            )
        if self.answers is not None:
            if self.answers.shape != (n, m):
                raise DataError(
                    f"{where}: answer matrix is {self.answers.shape}, expected ({n}, {m})"
                )
            bad = [(i, j) for (i, j), a in np.ndenumerate(self.answers) if not _is_key(a)]
            if bad:
                i, j = bad[0]
                raise DataError(
                    f"{where}: answer {self.answers[i, j]!r} for prompt {self.prompt_ids[i]!r}, "
                    f"model {self.models[j]!r} is not a text key or None"
                )
        duplicates = _duplicates(self.models)
        if duplicates:
            raise DataError(f"{where}: duplicate model names {duplicates}")
        duplicates = _duplicates(self.prompt_ids.tolist())
        if duplicates:
            raise DataError(f"{where}: duplicate prompt ids {duplicates[:5]}")
        bad_cost = ~np.isfinite(self.model_costs) | (self.model_costs < 0)
        if bad_cost.any():
            j = int(np.flatnonzero(bad_cost)[0])
            raise DataError(
                f"{where}: model {self.models[j]!r} has invalid cost {self.model_costs[j]}"
            )
        finite = np.isfinite(self.scores)
        if np.isinf(self.scores).any():
            i, j = np.argwhere(np.isinf(self.scores))[0]
            raise DataError(
                f"{where}: infinite score for prompt {self.prompt_ids[i]!r}, "
                f"model {self.models[j]!r}"
            )
        out_of_range = finite & ((self.scores < 0) | (self.scores > 1))
        if out_of_range.any():
            i, j = np.argwhere(out_of_range)[0]
            raise DataError(
                f"{where}: score {self.scores[i, j]} for prompt {self.prompt_ids[i]!r}, "
                f"model {self.models[j]!r} is outside [0, 1]"
            )

    def subset(
        self,
        prompt_index: Sequence[int] | np.ndarray | None = None,
        models: Sequence[str] | None = None,
    ) -> RoutingDataset:
        """Return a copy restricted to some prompts (by position) and/or models (by name)."""
        rows = (
            np.arange(self.n_prompts)
            if prompt_index is None
            else np.asarray(prompt_index, dtype=int)
        )
        cols = (
            np.arange(self.n_models)
            if models is None
            else np.array([self.model_index(name) for name in models], dtype=int)
        )
        return RoutingDataset(
            prompt_ids=self.prompt_ids[rows],
            prompts=self.prompts[rows],
            tasks=self.tasks[rows],
            models=[self.models[j] for j in cols],
            model_costs=self.model_costs[cols],
            scores=self.scores[np.ix_(rows, cols)],
            call_costs=None if self.call_costs is None else self.call_costs[np.ix_(rows, cols)],
            references=None if self.references is None else self.references[rows],
            answers=None if self.answers is None else self.answers[np.ix_(rows, cols)],
            name=self.name,
            source=self.source,
            meta=_subset_meta(self.meta, rows, self.n_prompts),
        )

    def model_index(self, name: str) -> int:
        """Column of a model, with a clear error when it is unknown."""
        try:
            return self.models.index(name)
        except ValueError:
            raise DataError(
                f"dataset {self.name!r} has no model {name!r}; it has {self.models}"
            ) from None

    def with_costs(self, costs: Mapping[str, float], source: str = "cost map") -> RoutingDataset:
        """Replace every model's per-query cost from a {model: cost} map.

        Recorded per-call costs are dropped: a user-supplied per-query cost overrides them.
        Every model of the dataset must be in the map; extra entries are ignored.
        """
        missing = [m for m in self.models if m not in costs]
        if missing:
            raise DataError(f"{source}: no cost for models {missing}")
        values = []
        for m in self.models:
            try:
                value = float(costs[m])
            except (TypeError, ValueError):
                raise DataError(
                    f"{source}: cost of model {m!r} is not a number: {costs[m]!r}"
                ) from None
            if not np.isfinite(value) or value < 0:
                raise DataError(
                    f"{source}: cost of model {m!r} must be a finite number >= 0, got {value}"
                )
            values.append(value)
        out = self.subset()
        out.model_costs = np.array(values)
        out.call_costs = None
        return out

    def effective_call_costs(self) -> np.ndarray:
        """Cost of every (prompt, model) call: recorded where known, else the per-query cost."""
        per_query = np.broadcast_to(self.model_costs, self.scores.shape)
        if self.call_costs is None:
            return np.array(per_query)
        return np.where(np.isfinite(self.call_costs), self.call_costs, per_query)

    @staticmethod
    def concat(parts: Sequence[RoutingDataset], name: str | None = None) -> RoutingDataset:
        """Stack datasets row-wise; models are the union, missing pairs become NaN."""
        if not parts:
            raise DataError("nothing to merge: no datasets given")
        models: list[str] = []
        for part in parts:
            models += [m for m in part.models if m not in models]
        costs: dict[str, list[tuple[float, int]]] = {}
        for part in parts:
            for m, c in zip(part.models, part.model_costs, strict=True):
                costs.setdefault(m, []).append((c, part.n_prompts))
        model_costs = np.array(
            [sum(c * w for c, w in costs[m]) / max(sum(w for _, w in costs[m]), 1) for m in models]
        )
        n = sum(p.n_prompts for p in parts)
        scores = np.full((n, len(models)), np.nan)
        has_calls = any(p.call_costs is not None for p in parts)
        call_costs = np.full((n, len(models)), np.nan) if has_calls else None
        has_refs = any(p.references is not None for p in parts)
        references = np.full(n, None, dtype=object) if has_refs else None
        has_answers = any(p.answers is not None for p in parts)
        answers = np.full((n, len(models)), None, dtype=object) if has_answers else None
        row = 0
        for part in parts:
            cols = [models.index(m) for m in part.models]
            rows = slice(row, row + part.n_prompts)
            scores[rows, cols] = part.scores
            if call_costs is not None and part.call_costs is not None:
                call_costs[rows, cols] = part.call_costs
            if references is not None and part.references is not None:
                references[rows] = part.references
            if answers is not None and part.answers is not None:
                answers[rows, cols] = part.answers
            row += part.n_prompts
        return RoutingDataset(
            prompt_ids=np.concatenate([p.prompt_ids for p in parts]),
            prompts=np.concatenate([p.prompts for p in parts]),
            tasks=np.concatenate([p.tasks for p in parts]),
            models=models,
            model_costs=model_costs,
            scores=scores,
            call_costs=call_costs,
            references=references,
            answers=answers,
            name=name or parts[0].name,
            source=", ".join(p.source for p in parts if p.source),
        )

    def summary(self) -> str:
        """One line describing the dataset."""
        missing = float(np.isnan(self.scores).mean()) if self.scores.size else 0.0
        return (
            f"{self.name}: {self.n_prompts} prompts, {self.n_models} models, "
            f"{len(set(self.tasks.tolist()))} tasks, {missing:.1%} scores missing"
        )


def _subset_meta(meta: dict, rows: np.ndarray, n_prompts: int) -> dict:
    """Copy meta, re-aligning per-prompt arrays (e.g. recorded responses per model) to ``rows``."""

    def aligned(value: object) -> bool:
        return isinstance(value, np.ndarray) and value.shape[:1] == (n_prompts,)

    out = {}
    for key, value in meta.items():
        if aligned(value):
            out[key] = value[rows]
        elif isinstance(value, Mapping) and value and all(aligned(v) for v in value.values()):
            out[key] = {k: v[rows] for k, v in value.items()}
        else:
            out[key] = value
    return out


def _object_matrix(values: Any) -> np.ndarray:
    """Values as an object array, keeping None (not turned into NaN or "None")."""
    array = np.empty(np.shape(values), dtype=object)
    array[...] = values
    return array


def _is_key(value: object) -> bool:
    return value is None or (isinstance(value, str) and value != "")


def _duplicates(values: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    dup: list[str] = []
    for v in values:
        if v in seen and v not in dup:
            dup.append(v)
        seen.add(v)
    return dup
