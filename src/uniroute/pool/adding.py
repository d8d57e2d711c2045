"""Adding a complete registry record to a running Router's pool.

``Router.add_model`` builds the record from a fixed set of keyword arguments. The command line
and the admin API add models whose record carries more than those (the model name its endpoint
expects), and the record, the scores and Psi must still reach the registry in one transaction,
so that no reader ever sees the model half-described.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from uniroute.data.dataset import DataError
from uniroute.pool.registry import ModelRecord, NewModel, align_scores

if TYPE_CHECKING:
    from uniroute.deployment import AddedModel, Router


def add_model_record(
    router: Router,
    record: ModelRecord,
    scores: Mapping[str, float],
    *,
    replace: bool = False,
    source: str = "scores",
) -> AddedModel:
    """Store ``record`` with its scores and Psi in one transaction; routable on return.

    Prompt ids that are not representative prompts are ignored (and reported); scores that match
    none, or only missing scores, are a DataError naming ``source``.
    """
    from uniroute.deployment import AddedModel

    prompt_ids = router.artifact.prompt_ids
    aligned = align_scores(scores, prompt_ids, source)
    if not np.isfinite(aligned.values).any():
        raise DataError(f"{source}: every matched score is missing")
    psi = router.artifact.router.model_features(aligned.values)
    matched = {
        prompt_id: float(value)
        for prompt_id, value in zip(prompt_ids, aligned.values.tolist(), strict=True)
        if math.isfinite(value)
    }
    stored = router.registry.add_models(
        [NewModel(record, matched, {router.artifact.artifact_id: psi})], replace=replace
    )[0]
    router.refresh()
    return AddedModel(stored, aligned.n_matched, len(prompt_ids), aligned.unknown_ids)
