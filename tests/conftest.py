"""Session fixtures shared across test packages: real ARC-Challenge data and an artifact of it.

``arc_artifact`` is the one ARC router artifact the suite builds, and every test package that
needs an ARC artifact uses it: the artifact, deployment and calibration tests as an
``Artifact``, the gateway tests through its directory (``tests/gateway/conftest.py``). Only
tests of building itself (``tests/test_artifact.py``'s failed builds, the CLI's ``uniroute
build``) and tests that need other data (ARC + MBPP) build artifacts of their own. It is
shared, so it is never changed: a test that edits its files works on a copy of its directory.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from uniroute.data.paths import default_data_dir


@pytest.fixture(scope="session")
def postgres_cluster():
    """A throwaway PostgreSQL 15 server for the whole run (``uniroute.testing.postgres``).

    Started on first use; a missing server binary fails the test that needs it, saying what is
    missing, rather than skipping it.
    """
    from uniroute.testing.postgres import ClusterUnavailableError, PostgresCluster

    try:
        cluster = PostgresCluster().start()
    except ClusterUnavailableError as exc:
        pytest.fail(f"no PostgreSQL server for the registry tests: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def arc_file() -> Path:
    """RouterBench ARC-Challenge test split: 445 real prompts, 11 LLMs, recorded answers."""
    path = default_data_dir() / "routerbench" / "arc_challenge_test.csv"
    if not path.is_file():
        pytest.fail(f"shared RouterBench data not found at {path} (set UNIROUTE_DATA)")
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

    Built once per session; tests that change files work on a copy of its directory. Tests
    depend on which prompts the seed makes representative (seed 84 meets all of this):

    * none of the six ARC prompts that only gpt-3.5-turbo answered, and one of the two it alone
      left unanswered: every training model but gpt-3.5 has a score on every representative
      prompt, so ``test_calibration_on_curve`` has a pool with missing scores and one without;
    * every one has a reference letter and its own text, so onboarding asks every one of them
      (the gateway's onboarding tests count the requests);
    * the gateway tests' calibrated pool (tests/gateway/support.py) sends their prompts to more
      than one model, and HELD_OUT, added at half the cheapest price, then gets routed requests;
      the deployment tests' share target for the dearest training model is reachable.

    At the end of the session the directory must still load (every checksum intact), which
    catches a test that changed the shared files instead of a copy.
    """
    from uniroute.artifact import Artifact
    from uniroute.testing.harness import build_arc_test_artifact

    folder = tmp_path_factory.mktemp("arc-artifact")
    artifact = Artifact.load(build_arc_test_artifact(arc_dataset, folder, arc_holdout_models))
    yield artifact
    assert Artifact.load(artifact.path).artifact_id == artifact.artifact_id, (
        "a test changed the shared arc_artifact; copy its directory first"
    )


# ------------------------------------------------------------------------------- slow tests
#: Tests marked ``slow`` here, beside those marked in their own module (the MiniLM encoder tests,
#: the interrupted onboarding run), by module: every test (``"*"``), a test (every
#: parametrisation) or one parametrisation (``"name[id]"``), each with why it is slow. Plain
#: ``pytest`` leaves the slow tests out; ``make test`` (what CI runs) runs every test (see
#: ``[tool.pytest.ini_options]`` in pyproject.toml).
SLOW_TESTS: dict[str, dict[str, str]] = {
    # A full data set, or seconds of fitting.
    "tests/cli/test_eval_cli.py": {
        "test_eval_writes_results_table_and_plot": "`uniroute eval` on all of RouterBench",
        "test_partial_evidence_prior_variants_and_calibration": "two `uniroute eval` runs",
    },
    "tests/routers/test_router_real_data.py": {"*": "fits on all of RouterBench"},
    "tests/deployment/test_partial_evidence.py": {"*": "artifacts of all of RouterBench"},
    "tests/routers/test_cross_fitted.py": {
        "test_a_prompts_own_score_does_not_reach_its_estimate[mlp]": "fits 5 x 2 MLP heads",
    },
    "tests/evaluation/test_eval_trials.py": {
        "test_learned_map_reusing_the_kmeans_choice_of_k_changes_nothing": "4 learned-map fits",
    },
    # `uniroute serve` in a child process, in front of replay upstreams in child processes.
    "tests/gateway/test_gateway.py": {"*": "gateway and replay child processes"},
    "tests/gateway/test_gateway_admin.py": {"*": "gateway and replay child processes"},
    "tests/gateway/test_admin_upstream_model.py": {"*": "gateway and replay child processes"},
    "tests/gateway/test_gateway_fallback.py": {"*": "gateway and replay child processes"},
    "tests/gateway/test_fuzz.py": {
        "test_the_live_gateway_survives_its_own_schema": "schemathesis against a gateway child",
        "test_the_live_gateway_is_still_healthy_after_the_run": "the same gateway child process",
    },
    "tests/gateway/test_hostile_upstreams.py": {"*": "gateway and replay child processes"},
    "tests/gateway/test_serving_limits.py": {"*": "a gateway child process, read deadlines"},
    # Other child processes that take seconds to start, to fail or to finish their work.
    "tests/gateway/test_gateway_event_loop.py": {
        "test_slow_embedding_does_not_block_other_requests": "replay child processes, waits",
        "test_prompts_arriving_together_share_one_encoder_call": "replay child processes",
    },
    "tests/gateway/test_replay.py": {
        "test_subprocess_server_replays_real_routerbench_answers": "a replay child process",
        "test_a_server_that_cannot_start_is_reported": "a child process that fails to start",
    },
    "tests/cli/test_pool_cli.py": {
        "test_models_add_by_querying_a_replayed_endpoint": "a replay child process",
        "test_models_add_can_skip_tasks_that_cannot_be_graded": "a build, a replay child process",
    },
    "tests/embeddings/test_embedding_cache.py": {
        "test_two_processes_write_the_same_cache_at_once": "two child processes",
    },
    "tests/registry/test_registry.py": {
        "test_readers_see_consistent_snapshots_while_a_writer_writes": "a busy writer process",
    },
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the SLOW_TESTS ``slow`` (before ``-m`` selects); warn about an entry naming no test
    of its module (a renamed test would otherwise quietly join the fast set)."""
    modules = {}
    for item in items:
        module, _, rest = item.nodeid.partition("::")
        modules[module] = getattr(item, "module", None)
        reasons = SLOW_TESTS.get(module, {})
        reason = reasons.get(rest, reasons.get(rest.split("[", 1)[0], reasons.get("*")))
        if reason is not None:
            item.add_marker(pytest.mark.slow(reason=reason))
    for module, reasons in SLOW_TESTS.items():
        code = modules.get(module)
        missing = [k for k in reasons if k != "*" and not hasattr(code, k.split("[", 1)[0])]
        if code is not None and missing:
            warnings.warn(f"SLOW_TESTS: {module} has no test {missing}", stacklevel=1)
