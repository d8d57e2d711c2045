"""Session fixtures shared across test packages: real ARC-Challenge data and an artifact of it.

``arc_artifact`` is the one router artifact the suite builds (only the tests of building itself,
``tests/test_artifact.py``'s build failures and the CLI's ``uniroute build``, build others). Every
package uses it: the artifact, deployment and calibration tests through the ``Artifact``, the
gateway tests through its directory (``tests/gateway/conftest.py::artifact_dir``). It is shared,
so it is never changed: a test that edits its files works on a copy of its directory.
"""

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
    """The ARC models ``arc_artifact`` leaves out, to be onboarded later as unseen models.

    claude-instant-v1 is the gateway tests' ``HELD_OUT`` model (added through the admin API);
    gpt-4 and claude-v2 are the ones the deployment and calibration tests add.
    """
    return ["claude-instant-v1", "claude-v2", "gpt-4-1106-preview"]


@pytest.fixture(scope="session")
def arc_artifact(arc_dataset, arc_holdout_models: list[str], tmp_path_factory):
    """A tf-idf (32 dimensions) + K-means (K = 6) artifact of ARC, 20% representative prompts.

    Built once per session; tests that change files work on a copy of its directory. With seed
    0 the 89 representative prompts include neither of the six ARC prompts that only
    gpt-3.5-turbo answered, but both that it alone left unanswered: the training models other
    than gpt-3.5 have a score on every representative prompt (``test_calibration_on_curve``
    needs both a pool with missing scores and one without).

    At the end of the session the directory must still load (every checksum intact), which
    catches a test that changed the shared files instead of a copy.
    """
    from uniroute.artifact import Artifact, build_artifact
    from uniroute.embeddings import make_encoder

    artifact = build_artifact(
        arc_dataset,
        tmp_path_factory.mktemp("arc-artifact") / "artifact",
        encoder=make_encoder("tfidf", n_components=32),
        router="uniroute-kmeans",
        router_params={"n_clusters": 6},
        holdout_models=arc_holdout_models,
        val_fraction=0.2,
        seed=0,
    )
    yield artifact
    assert Artifact.load(artifact.path).artifact_id == artifact.artifact_id, (
        "a test changed the shared arc_artifact; copy its directory first"
    )
