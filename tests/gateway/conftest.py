"""Session fixtures of the gateway tests: a small artifact, replay upstreams, distinct prompts.

The ARC data itself (``arc_file``, ``arc_dataset``) comes from the top-level conftest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gateway.support import EXPENSIVE, HELD_OUT, POOL, TO_ONBOARD, UPSTREAM_KEY_ENV, child_env
from uniroute.artifact import build_artifact
from uniroute.embeddings import make_encoder
from uniroute.testing.replay import start_replays


@pytest.fixture(scope="session")
def artifact_dir(tmp_path_factory: pytest.TempPathFactory, arc_dataset) -> Path:
    """A small tf-idf + K-means artifact (K=5, ~130 representative prompts), built once."""
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
    servers = start_replays(
        arc_file, [*POOL, HELD_OUT, TO_ONBOARD],
        extra_args={EXPENSIVE: ["--api-key-env", UPSTREAM_KEY_ENV]}, env=child_env(),
    )  # fmt: skip
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="session")
def unique_prompts(arc_dataset) -> list[str]:
    """The real ARC prompts whose text occurs only once in the data, in data order."""
    texts = [str(t) for t in arc_dataset.prompts]
    return [t for t in dict.fromkeys(texts) if texts.count(t) == 1]
