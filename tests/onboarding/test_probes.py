"""Capability probes against replay upstreams: capable, refusing, ignoring and hostile ones; and
the probes as part of onboarding (``pool_changes.onboard_model``)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from uniroute.artifact import Artifact
from uniroute.deployment import Router
from uniroute.deployment.pool_changes import onboard_model, seed_registry
from uniroute.onboarding.probes import MAX_PROBE_BYTES, probe_capabilities
from uniroute.registry import ModelCost, ModelRecord, Registry
from uniroute.testing.harness import serve_in_thread
from uniroute.testing.replay import FaultConfig, create_replay_app

MODEL = "mistralai/mistral-7b-chat"
#: A training model of the shared artifact that the seeded registry is made without.
TO_ONBOARD = "zero-one-ai/Yi-34B-Chat"


@pytest.fixture(scope="module")
def upstreams(arc_dataset):
    """Replays of one model: capable of tools and JSON, capable of nothing (refuses with a
    400), and one that ignores the fields (answers recorded text)."""
    apps = {
        "capable": create_replay_app(arc_dataset, MODEL, capabilities=["tools", "json"]),
        "incapable": create_replay_app(arc_dataset, MODEL, capabilities=[]),
        "ignoring": create_replay_app(arc_dataset, MODEL),
    }
    with (
        serve_in_thread(apps["capable"]) as capable,
        serve_in_thread(apps["incapable"]) as incapable,
        serve_in_thread(apps["ignoring"]) as ignoring,
    ):
        yield {"capable": capable, "incapable": incapable, "ignoring": ignoring}


def test_a_capable_endpoint_is_found_capable(upstreams) -> None:
    report = probe_capabilities(f"{upstreams['capable']}/v1", MODEL)
    assert report.capabilities == ("json", "tools")
    by_name = {o.capability: o for o in report.outcomes}
    assert by_name["tools"].capable and "get_weather" in by_name["tools"].detail
    assert by_name["json"].capable and by_name["json"].status == 200
    assert "vision" in report.not_probed and "vision" not in report.capabilities
    assert "tools: yes" in report.summary() and "json: yes" in report.summary()


def test_a_4xx_means_not_capable(upstreams) -> None:
    report = probe_capabilities(f"{upstreams['incapable']}/v1", MODEL)
    assert report.capabilities == ()
    for outcome in report.outcomes:
        assert not outcome.capable and outcome.status == 400
        assert "refused the field (HTTP 400)" in outcome.detail


def test_an_endpoint_that_ignores_the_fields_is_not_capable(upstreams) -> None:
    report = probe_capabilities(f"{upstreams['ignoring']}/v1", MODEL)
    assert report.capabilities == ()
    by_name = {o.capability: o for o in report.outcomes}
    assert "without a tool call" in by_name["tools"].detail
    assert "not JSON" in by_name["json"].detail


@pytest.mark.parametrize("mode", ["garbage", "nested_json", "huge", "slow", "echo_auth"])
def test_a_hostile_endpoint_is_not_capable_and_the_probe_is_bounded(arc_dataset, mode) -> None:
    # "slow" answers after 2.5 s (a hanging upstream would hold the test server's shutdown).
    faults = FaultConfig(delay_ms=2500) if mode == "slow" else FaultConfig(hostile=mode)
    app = create_replay_app(arc_dataset, MODEL, capabilities=["tools", "json"], faults=faults)
    with serve_in_thread(app) as url:
        started = time.monotonic()
        report = probe_capabilities(f"{url}/v1", MODEL, timeout=1.0)
        elapsed = time.monotonic() - started
    assert report.capabilities == ()
    assert len(report.outcomes) == 2
    assert elapsed < 10  # two probes of at most a second each, plus set-up
    if mode == "huge":
        assert all(str(MAX_PROBE_BYTES) in o.detail for o in report.outcomes)
    if mode == "slow":
        assert all("timed out" in o.detail for o in report.outcomes)


def test_an_unreachable_or_refused_endpoint_gives_a_report_not_an_error() -> None:
    report = probe_capabilities("http://127.0.0.1:9/v1", MODEL, timeout=1.0)
    assert report.capabilities == () and all("no answer" in o.detail for o in report.outcomes)
    refused = probe_capabilities("http://169.254.169.254/v1", MODEL)
    assert refused.outcomes == () and "may not be called" in (refused.skipped or "")
    missing_key = probe_capabilities(
        "http://127.0.0.1:9/v1", MODEL, api_key_env="UNIROUTE_TEST_PROBE_KEY_NOT_SET"
    )
    assert "is not set" in (missing_key.skipped or "")


# ---------------------------------------------------------------------------- onboarding
@pytest.fixture
def router(arc_artifact: Artifact, tmp_path: Path) -> Router:
    registry = Registry(tmp_path / "pool.db")
    seed_registry(arc_artifact, registry)
    registry.remove_model(TO_ONBOARD)
    return Router.load(arc_artifact, registry)


@pytest.fixture(scope="module")
def onboardee(arc_dataset):
    """A replay of TO_ONBOARD that can do tools and JSON mode."""
    app = create_replay_app(arc_dataset, TO_ONBOARD, capabilities=["tools", "json"])
    with serve_in_thread(app) as url:
        yield f"{url}/v1"


def test_onboarding_probes_an_endpoint_that_declares_nothing(router, onboardee, tmp_path) -> None:
    record = ModelRecord(TO_ONBOARD, ModelCost(per_query=0.001), endpoint=onboardee)
    onboarded = onboard_model(
        router, record, cache_path=tmp_path / "answers.db", progress=False, retries=0
    )
    assert onboarded.probes is not None
    assert onboarded.probes.capabilities == ("json", "tools")
    assert onboarded.added.record.capabilities == ("json", "tools")
    assert router.snapshot.pool.capabilities_of(TO_ONBOARD).names == {"json", "tools"}


def test_declared_capabilities_are_not_probed(router, onboardee, tmp_path) -> None:
    record = ModelRecord(
        TO_ONBOARD, ModelCost(per_query=0.001), endpoint=onboardee, capabilities=("vision",)
    )
    onboarded = onboard_model(
        router, record, cache_path=tmp_path / "answers.db", progress=False, retries=0
    )
    assert onboarded.probes is None
    assert router.registry.get_model(TO_ONBOARD).capabilities == ("vision",)


def test_probes_can_be_turned_off(router, onboardee, tmp_path) -> None:
    record = ModelRecord(TO_ONBOARD, ModelCost(per_query=0.001), endpoint=onboardee)
    onboarded = onboard_model(
        router, record, cache_path=tmp_path / "a.db", progress=False, probe_capabilities=False
    )
    assert onboarded.probes is None and onboarded.added.record.capabilities == ()


def test_a_failing_probe_never_fails_onboarding(arc_dataset, router, tmp_path) -> None:
    # Every request after the onboarding prompts fails: the probes find nothing, the model joins.
    app = create_replay_app(arc_dataset, TO_ONBOARD, capabilities=[])
    with serve_in_thread(app) as url:
        record = ModelRecord(TO_ONBOARD, ModelCost(per_query=0.001), endpoint=f"{url}/v1")
        onboarded = onboard_model(router, record, cache_path=tmp_path / "a.db", progress=False)
    assert onboarded.probes is not None and onboarded.probes.capabilities == ()
    assert router.registry.has_model(TO_ONBOARD)
    assert router.registry.get_model(TO_ONBOARD).capabilities == ()
