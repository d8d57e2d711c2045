"""A model onboarded without evidence on a task: how each Psi rule estimates it there.

Builds the RouterBench artifact of ``tests/deployment/test_partial_evidence.py`` (TF-IDF 64
dims, K = 5, seed 0, mistral-7b held out) once per Psi rule, onboards mistral twice (all its
representative-prompt scores; its ARC scores only) and prints, over 30 MBPP prompts outside the
representative set at lambda = 0, each copy's mean estimated error, GPT-4's, and how often the
ARC-only copy is chosen first.

    python benchmarks/partial_evidence_case.py
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np

from uniroute.artifact import Artifact, build_artifact
from uniroute.data.dataset import RoutingDataset
from uniroute.data.loading import load_dataset
from uniroute.data.paths import default_data_dir
from uniroute.deployment import Router
from uniroute.deployment.pool_changes import add_scored_model, seed_registry
from uniroute.embeddings import make_encoder
from uniroute.registry import ModelCost, ModelRecord, Registry

NEW_MODEL = "mistralai/mistral-7b-chat"
STRONG = "gpt-4-1106-preview"


def scores_of(dataset: RoutingDataset, artifact: Artifact, task_part: str | None) -> dict:
    """The new model's scores on the representative prompts (of one task family only)."""
    column = dataset.model_index(NEW_MODEL)
    rows = {str(pid): i for i, pid in enumerate(dataset.prompt_ids)}
    tasks = {p.prompt_id: p.task for p in artifact.representative_prompts}
    scores = {}
    for prompt_id in artifact.prompt_ids:
        if task_part is None or task_part in tasks[prompt_id].lower():
            value = float(dataset.scores[rows[prompt_id], column])
            if math.isfinite(value):
                scores[prompt_id] = value
    return scores


def main() -> None:
    """Print one row per Psi rule."""
    dataset = load_dataset(default_data_dir() / "routerbench", "routerbench")
    cost = ModelCost(per_query=float(dataset.model_costs[dataset.model_index(NEW_MODEL)]))
    print("| Psi rule | ARC-only copy | full copy | GPT-4 | ARC-only chosen first |")
    print("|---|---|---|---|---|")
    for rule in ("own-mean", "population"):
        with tempfile.TemporaryDirectory() as folder:
            artifact = build_artifact(
                dataset,
                Path(folder) / "artifact",
                encoder=make_encoder("tfidf", n_components=64),
                router="uniroute-kmeans",
                router_params={"n_clusters": 5, "psi_prior": rule},
                holdout_models=[NEW_MODEL],
                val_fraction=0.1,
                seed=0,
            )
            registry = Registry(Path(folder) / "pool.db")
            seed_registry(artifact, registry)
            router = Router(artifact, registry)
            add_scored_model(
                router, ModelRecord(name="full", cost=cost), scores_of(dataset, artifact, None)
            )
            arc_only = scores_of(dataset, artifact, "arc")
            add_scored_model(router, ModelRecord(name="arc-only", cost=cost), arc_only)
            representative = set(artifact.prompt_ids)
            coding = [
                str(text)
                for pid, text, task in zip(
                    dataset.prompt_ids, dataset.prompts, dataset.tasks, strict=True
                )
                if "mbpp" in str(task).lower() and str(pid) not in representative
            ][:30]
            decisions = router.route(coding, lam=0.0)
            registry.close()

        mean = {
            name: float(np.mean([d.estimated_errors[name] for d in decisions]))
            for name in ("arc-only", "full", STRONG)
        }
        chosen = sum(d.model == "arc-only" for d in decisions)
        print(
            f"| {rule} | {mean['arc-only']:.3f} | {mean['full']:.3f} | {mean[STRONG]:.3f} | "
            f"{chosen} / {len(decisions)} |"
        )


if __name__ == "__main__":
    main()
