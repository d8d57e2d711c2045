"""Session fixtures of the gateway tests: the shared artifact's directory, replay upstreams,
distinct prompts.

The ARC data itself (``arc_file``, ``arc_dataset``) and the artifact (``arc_artifact``) come from
the top-level conftest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gateway.support import EXPENSIVE, HELD_OUT, POOL, TO_ONBOARD, UPSTREAM_KEY_ENV, child_env
from uniroute.testing.replay import start_replays


@pytest.fixture(scope="session")
def artifact_dir(arc_artifact, arc_holdout_models: list[str]) -> Path:
    """The directory of the session's shared ARC artifact (tf-idf + K-means, K=6), read only.

    HELD_OUT is one of the models it leaves out; TO_ONBOARD is one of its training models.
    """
    assert HELD_OUT in arc_holdout_models and TO_ONBOARD in arc_artifact.training_models
    return arc_artifact.path


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
