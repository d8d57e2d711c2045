"""Session fixtures of the gateway tests: ARC data, a small artifact, replay upstreams."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# The tests run with --import-mode=importlib, so sibling support modules are not importable by
# default; this folder is put on the path once, here, before any test module is imported.
sys.path.insert(0, str(Path(__file__).parent))

from gateway_support import (  # noqa: E402
    CHEAP,
    EXPENSIVE,
    HELD_OUT,
    MID,
    TO_ONBOARD,
    UPSTREAM_KEY,
    UPSTREAM_KEY_ENV,
    start_replays,
)

from uniroute.data.paths import default_data_dir  # noqa: E402


@pytest.fixture(scope="session")
def arc_file() -> Path:
    """RouterBench ARC-Challenge test split: real prompts, scores and recorded answers."""
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
def artifact_dir(tmp_path_factory: pytest.TempPathFactory, arc_dataset) -> Path:
    """A small tf-idf + K-means artifact (K=5, ~130 representative prompts), built once."""
    from uniroute.artifact import build_artifact
    from uniroute.embeddings import make_encoder

    out = tmp_path_factory.mktemp("gateway") / "artifact"
    build_artifact(
        arc_dataset, out, encoder=make_encoder("tfidf", n_components=64, max_features=20000),
        router="uniroute-kmeans", holdout_models=[HELD_OUT], val_fraction=0.3, seed=0,
        router_params={"n_clusters": 5},
    )  # fmt: skip
    return out


@pytest.fixture(scope="session")
def replays(arc_file: Path):
    """Replay upstreams for five RouterBench models; the GPT-4 one demands an API key."""
    env = {**os.environ, UPSTREAM_KEY_ENV: UPSTREAM_KEY}
    servers = start_replays(
        arc_file, [CHEAP, MID, EXPENSIVE, HELD_OUT, TO_ONBOARD],
        extra={EXPENSIVE: ["--api-key-env", UPSTREAM_KEY_ENV]}, env=env,
    )  # fmt: skip
    yield servers
    for server in servers.values():
        server.stop()
