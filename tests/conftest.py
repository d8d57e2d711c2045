"""Session fixtures shared across test packages: real ARC-Challenge data and an artifact of it."""

from __future__ import annotations

from pathlib import Path

import pytest

from uniroute.data.paths import default_data_dir


@pytest.fixture(scope="session")
def arc_file() -> Path:
    """RouterBench ARC-Challenge test split: 445 real prompts, 11 LLMs, recorded answers."""
    path = default_data_dir() / "routerbench" / "arc_challenge_test.csv"
    if not path.is_file():
        pytest.skip(f"shared RouterBench data not found at {path} (set UNIROUTE_DATA)")
    return path


@pytest.fixture(scope="session")
def arc_dataset(arc_file: Path):
    """The ARC file loaded as a RoutingDataset."""
    from uniroute.data.loading import load_dataset

    return load_dataset(arc_file, "routerbench")


@pytest.fixture(scope="session")
def arc_holdout_models() -> list[str]:
    """The ARC models ``arc_artifact`` leaves out, to be onboarded later as unseen models."""
    return ["claude-v2", "gpt-4-1106-preview"]


@pytest.fixture(scope="session")
def arc_artifact(arc_dataset, arc_holdout_models: list[str], tmp_path_factory):
    """A tf-idf (32 dimensions) + K-means (K = 6) artifact of ARC, 20% representative prompts.

    Built once per session; tests that change files work on a copy of its directory.
    """
    from uniroute.artifact import build_artifact
    from uniroute.embeddings import make_encoder

    return build_artifact(
        arc_dataset,
        tmp_path_factory.mktemp("arc-artifact") / "artifact",
        encoder=make_encoder("tfidf", n_components=32),
        router="uniroute-kmeans",
        router_params={"n_clusters": 6},
        holdout_models=arc_holdout_models,
        val_fraction=0.2,
        seed=3,
    )
