"""Onboarding a model through a real replay endpoint on loopback, with real RouterBench prompts."""

from __future__ import annotations

import asyncio
import inspect
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from uniroute.data.loading import load_dataset
from uniroute.data.paths import default_data_dir
from uniroute.data.representative import RepresentativePrompt, write_representative_prompts
from uniroute.errors import OnboardingError, StateError
from uniroute.onboarding.answer_cache import AnswerCache
from uniroute.onboarding.client import completion_url, onboard_endpoint, onboard_endpoint_async
from uniroute.onboarding.endpoints import base_url
from uniroute.onboarding.references import attach_references
from uniroute.testing.replay import ReplayServerProcess

ARC_TEST = default_data_dir() / "routerbench" / "arc_challenge_test.csv"
# Its recorded answers mix bare letters with "A)"-style ones.
MODEL = "claude-instant-v1"
KEY_ENV = "UNIROUTE_TEST_UPSTREAM_KEY"
SERVER_KEY_ENV = "UNIROUTE_TEST_REPLAY_KEY"
KEY = "test-key-0123456789"
N_PROMPTS = 50


@pytest.fixture(scope="module")
def arc():
    """The first 50 ARC-Challenge test prompts with a derived reference, and their data set."""
    if not ARC_TEST.is_file():
        pytest.fail(f"shared RouterBench data not found at {ARC_TEST}")
    dataset = attach_references(load_dataset(ARC_TEST, "routerbench"))
    rows = [i for i in range(dataset.n_prompts) if dataset.references[i] is not None][:N_PROMPTS]
    prompts = [
        RepresentativePrompt(
            str(dataset.prompt_ids[i]),
            str(dataset.prompts[i]),
            str(dataset.tasks[i]),
            dataset.references[i],
        )
        for i in rows
    ]
    return dataset, prompts


@pytest.fixture(scope="module")
def server():
    env = {**os.environ, SERVER_KEY_ENV: KEY}
    with ReplayServerProcess(
        ARC_TEST, MODEL, extra_args=["--api-key-env", SERVER_KEY_ENV], env=env
    ) as process:
        yield process


@pytest.fixture()
def upstream(server, monkeypatch: pytest.MonkeyPatch):
    """The shared server with faults cleared, counters zeroed, and the client key set."""
    monkeypatch.setenv(KEY_ENV, KEY)
    reset = {
        "delay_ms": 0, "fail_rate": 0, "fail_first": 0, "fail_status": 500,
        "fixed_answer": None, "reset_stats": True,
    }  # fmt: skip
    httpx.post(f"{server.base_url}/admin/fault", json=reset).raise_for_status()
    return server


def _requests(server) -> int:
    return httpx.get(f"{server.base_url}/stats").json()["requests"]


def _fault(server, **settings) -> None:
    httpx.post(f"{server.base_url}/admin/fault", json=settings).raise_for_status()


def _onboard(server, prompts, cache_path, **options):
    defaults = {
        "api_key_env": KEY_ENV,
        "progress": False,
        "cache_path": cache_path,
        "backoff": 0.01,
    }
    return onboard_endpoint(MODEL, server.v1_url, prompts, **{**defaults, **options})


def test_onboarding_grades_agree_with_routerbench_scores(arc, upstream, tmp_path) -> None:
    dataset, prompts = arc
    result = _onboard(upstream, prompts, tmp_path / "cache.sqlite3")
    assert (result.answers_fetched, result.answers_from_cache) == (N_PROMPTS, 0)
    assert _requests(upstream) == N_PROMPTS
    assert result.failures == [] and result.skipped == {}
    j = dataset.model_index(MODEL)
    row = {pid: i for i, pid in enumerate(dataset.prompt_ids)}
    recorded = {p.prompt_id: dataset.scores[row[p.prompt_id], j] for p in prompts}
    comparable = [pid for pid, score in recorded.items() if np.isfinite(score)]
    agreement = np.mean([result.scores[pid] == recorded[pid] for pid in comparable])
    assert agreement >= 0.95
    responses = dataset.meta["responses"][MODEL]
    assert all(result.answers[p.prompt_id] == responses[row[p.prompt_id]] for p in prompts)
    accuracy, n = result.per_task_accuracy["arc-challenge"]
    assert n == N_PROMPTS
    assert accuracy == pytest.approx(np.mean([result.scores[p.prompt_id] for p in prompts]))
    assert "arc-challenge" in result.summary()


def test_a_second_run_reads_every_answer_from_the_cache(arc, upstream, tmp_path) -> None:
    _, prompts = arc
    cache = tmp_path / "cache.sqlite3"
    first = _onboard(upstream, prompts[:20], cache)
    again = _onboard(upstream, prompts[:30], cache)
    assert (again.answers_from_cache, again.answers_fetched) == (20, 10)
    assert _requests(upstream) == 30
    assert {p: again.scores[p] for p in first.scores} == first.scores
    # Other request settings are other answers: they are asked again.
    other = _onboard(upstream, prompts[:5], cache, max_tokens=7)
    assert (other.answers_from_cache, other.answers_fetched) == (0, 5)


_INTERRUPTED_RUN = """
import sys
from uniroute.data.representative import read_representative_prompts
from uniroute.onboarding.client import onboard_endpoint
prompts = read_representative_prompts(sys.argv[1])
onboard_endpoint(sys.argv[2], sys.argv[3], prompts, api_key_env=sys.argv[4], concurrency=2,
                 cache_path=sys.argv[5], progress=False)
"""


@pytest.mark.slow
def test_a_killed_run_resumes_asking_only_the_missing_prompts(arc, upstream, tmp_path) -> None:
    _, prompts = arc
    prompts_file, cache = tmp_path / "prompts.jsonl", tmp_path / "cache.sqlite3"
    write_representative_prompts(prompts_file, prompts)
    _fault(upstream, delay_ms=60)
    command = [
        sys.executable, "-c", _INTERRUPTED_RUN, str(prompts_file), MODEL, upstream.v1_url,
        KEY_ENV, str(cache),
    ]  # fmt: skip
    child = subprocess.Popen(command)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and child.poll() is None:
            if cache.exists():
                with AnswerCache(cache) as partial:
                    if partial.count(MODEL) >= N_PROMPTS // 2:
                        break
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    with AnswerCache(cache) as opened:
        kept = opened.count(MODEL)
    assert N_PROMPTS // 2 <= kept < N_PROMPTS
    _fault(upstream, delay_ms=0)
    before = _requests(upstream)
    resumed = _onboard(upstream, prompts, cache)
    assert resumed.answers_from_cache == kept
    assert resumed.answers_fetched == N_PROMPTS - kept
    assert _requests(upstream) - before == N_PROMPTS - kept
    assert len(resumed.scores) == N_PROMPTS


def test_transient_failures_are_retried(arc, upstream, tmp_path) -> None:
    _, prompts = arc
    _fault(upstream, fail_first=2, fail_status=503)
    result = _onboard(upstream, prompts[:10], tmp_path / "c.sqlite3", retries=2, concurrency=1)
    assert result.failures == [] and len(result.scores) == 10
    assert _requests(upstream) == 12  # the first prompt took three attempts


def _first_seed_whose_first_draw_passes(rate: float) -> int:
    return next(seed for seed in range(1000) if random.Random(seed).random() >= rate)


def test_failed_prompts_are_missing_not_zero_and_too_many_is_an_error(
    arc, upstream, tmp_path
) -> None:
    _, prompts = arc
    rate = 0.2
    seed = _first_seed_whose_first_draw_passes(rate)
    draws = random.Random(seed)
    expected_failures = sum(draws.random() < rate for _ in range(N_PROMPTS))
    _fault(upstream, fail_rate=rate, seed=seed)
    options = {"retries": 0, "concurrency": 1, "max_failure_rate": 0.5}
    result = _onboard(upstream, prompts, tmp_path / "a.sqlite3", **options)
    assert len(result.failures) == expected_failures > 0
    assert all("HTTP 500" in f.reason for f in result.failures)
    assert len(result.scores) == N_PROMPTS - expected_failures
    assert not {f.prompt_id for f in result.failures} & set(result.scores)
    _fault(upstream, seed=seed)
    strict = {**options, "max_failure_rate": (expected_failures - 0.5) / N_PROMPTS}
    with pytest.raises(
        OnboardingError, match=rf"{expected_failures} of {N_PROMPTS} prompts got no"
    ):
        _onboard(upstream, prompts, tmp_path / "b.sqlite3", **strict)


def test_an_endpoint_that_stops_answering_fails_fast(arc, upstream, tmp_path) -> None:
    _, prompts = arc
    rate = 0.9
    seed = _first_seed_whose_first_draw_passes(rate)
    draws = random.Random(seed)
    draws.random()
    in_a_row, asked = 0, 1
    while in_a_row < 5:
        asked += 1
        in_a_row = in_a_row + 1 if draws.random() < rate else 0
    _fault(upstream, fail_rate=rate, seed=seed)
    with pytest.raises(OnboardingError, match="stopped answering: 5 prompts in a row failed"):
        _onboard(upstream, prompts, tmp_path / "c.sqlite3", retries=0, concurrency=1)
    assert asked <= _requests(upstream) <= asked + 1 < N_PROMPTS


def test_unreachable_endpoint_fails_fast(arc, tmp_path, monkeypatch) -> None:
    _, prompts = arc
    monkeypatch.setenv(KEY_ENV, KEY)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(OnboardingError, match="unreachable"):
        onboard_endpoint(
            MODEL, f"http://127.0.0.1:{closed_port}/v1", prompts, api_key_env=KEY_ENV,
            retries=2, backoff=0.05, progress=False, cache_path=tmp_path / "c.sqlite3",
        )  # fmt: skip
    assert time.monotonic() - started < 5


def test_a_rejected_key_is_a_clear_error_that_never_shows_the_key(
    arc, upstream, tmp_path, monkeypatch
) -> None:
    _, prompts = arc
    monkeypatch.setenv(KEY_ENV, "wrong-key-987")
    with pytest.raises(OnboardingError, match=f"HTTP 401.*{KEY_ENV}") as error:
        _onboard(upstream, prompts, tmp_path / "c.sqlite3")
    assert "wrong-key-987" not in str(error.value)
    assert _requests(upstream) == 1  # no retry of a rejected key
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(OnboardingError, match=f"{KEY_ENV}.*is not set"):
        _onboard(upstream, prompts, tmp_path / "c.sqlite3")


def test_garbage_answers_are_an_error_and_are_not_kept(arc, upstream, tmp_path) -> None:
    _, prompts = arc
    cache = tmp_path / "c.sqlite3"
    _fault(upstream, fixed_answer="Lorem ipsum dolor sit amet.")
    with pytest.raises(OnboardingError, match="garbage: 20 of 20 answers"):
        _onboard(upstream, prompts, cache, concurrency=1)
    assert _requests(upstream) < N_PROMPTS  # it gave up early
    with AnswerCache(cache) as opened:
        assert opened.count(MODEL) == 0
    _fault(upstream, fixed_answer="")
    with pytest.raises(OnboardingError, match="garbage"):
        _onboard(upstream, prompts[:10], cache)


def test_coding_prompts_without_unit_tests_fail_before_any_request(arc, upstream, tmp_path) -> None:
    _, prompts = arc
    mbpp = [
        RepresentativePrompt(f"mbpp-{i}", f"Write function {i}.", "mbpp", None) for i in range(3)
    ]
    with pytest.raises(OnboardingError, match=r"task 'mbpp': none of its 3 prompts.*unit tests"):
        _onboard(upstream, prompts[:5] + mbpp, tmp_path / "c.sqlite3")
    assert _requests(upstream) == 0
    result = _onboard(
        upstream, prompts[:5] + mbpp, tmp_path / "c.sqlite3", skip_ungradeable_tasks=True
    )
    assert set(result.skipped) == {p.prompt_id for p in mbpp}
    assert set(result.scores) == {p.prompt_id for p in prompts[:5]}


def test_prompts_with_an_unusable_reference_are_skipped_not_scored(arc, upstream, tmp_path) -> None:
    _, prompts = arc
    unresolved = RepresentativePrompt("no-ref", prompts[0].text, prompts[0].task, None)
    result = _onboard(upstream, [*prompts[1:6], unresolved], tmp_path / "c.sqlite3")
    assert "no-ref" in result.skipped and "no-ref" not in result.scores
    assert _requests(upstream) == 5


def test_completions_style_and_progress_callback(arc, upstream, tmp_path) -> None:
    _, prompts = arc
    seen: list[tuple[int, int]] = []
    result = _onboard(
        upstream, prompts[:8], tmp_path / "c.sqlite3", api_style="completions",
        on_progress=lambda done, total: seen.append((done, total)),
    )  # fmt: skip
    assert len(result.scores) == 8
    assert httpx.get(f"{upstream.base_url}/stats").json()["completions"] == 8
    assert sorted(seen) == [(k, 8) for k in range(1, 9)]


def test_bad_arguments_are_rejected_before_any_request(arc) -> None:
    _, prompts = arc
    with pytest.raises(ValueError, match="api_style"):
        onboard_endpoint(MODEL, "http://127.0.0.1:9/v1", prompts, api_style="rpc")
    with pytest.raises(ValueError, match="concurrency"):
        onboard_endpoint(MODEL, "http://127.0.0.1:9/v1", prompts, concurrency=0)
    with pytest.raises(OnboardingError, match="twice"):
        onboard_endpoint(MODEL, "http://127.0.0.1:9/v1", [prompts[0], prompts[0]])
    with pytest.raises(OnboardingError, match="http"):
        onboard_endpoint(MODEL, "ftp://example/v1", prompts)
    with pytest.raises(OnboardingError, match="must not embed credentials"):
        onboard_endpoint(MODEL, "http://user:secret@127.0.0.1:9/v1", prompts)
    for option, value in (
        ("retries", -1),
        ("retries", 1.5),
        ("backoff", -0.1),
        ("temperature", -1),
    ):
        with pytest.raises(ValueError, match=f"{option} must be a"):
            onboard_endpoint(MODEL, "http://127.0.0.1:9/v1", prompts, **{option: value})


def test_the_blocking_form_takes_the_same_arguments_and_refuses_a_running_loop(arc) -> None:
    _, prompts = arc
    assert onboard_endpoint.__name__ == "onboard_endpoint"
    assert inspect.signature(onboard_endpoint) == inspect.signature(onboard_endpoint_async)

    async def call_it_inside_a_loop() -> None:
        onboard_endpoint(MODEL, "http://127.0.0.1:9/v1", prompts)

    with pytest.raises(
        RuntimeError,
        match=r"^onboard_endpoint\(\) blocks and cannot run inside an event loop; "
        r"await onboard_endpoint_async\(\) instead$",
    ):
        asyncio.run(call_it_inside_a_loop())


def test_base_url_normalisation() -> None:
    assert base_url("http://127.0.0.1:8000") == "http://127.0.0.1:8000/v1"
    assert base_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1"
    assert completion_url("https://h/api/v1", "chat") == "https://h/api/v1/chat/completions"
    assert completion_url("https://h/api/v1", "completions") == "https://h/api/v1/completions"


def test_answer_cache_invalidates_changed_prompts_and_settings(tmp_path) -> None:
    settings = {"api_style": "chat", "max_tokens": 5}
    with AnswerCache(tmp_path / "a.sqlite3") as cache:
        cache.put("m", "http://h/v1/", "p1", "text one", "A", settings)
        cache.put("m", "http://h/v1", "p2", "text two", "B", settings)
        cache.put("other", "http://h/v1", "p1", "text one", "C", settings)
        pairs = [("p1", "text one"), ("p2", "text two")]
        assert cache.get_many("m", "http://h/v1", pairs, settings) == {"p1": "A", "p2": "B"}
        changed_text = [("p1", "text one, edited"), ("p2", "text two")]
        assert cache.get_many("m", "http://h/v1", changed_text, settings) == {"p2": "B"}
        assert cache.get_many("m", "http://h/v1", pairs, {**settings, "max_tokens": 6}) == {}
        assert cache.get_many("m", "http://elsewhere/v1", pairs, settings) == {}
        assert cache.count("m") == 2 and cache.count() == 3
        assert cache.clear("m") == 2
        assert cache.count() == 1


def test_answer_cache_rejects_a_foreign_or_newer_file(tmp_path) -> None:
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StateError, match="not a usable answer cache"):
        AnswerCache(garbage)
    newer = tmp_path / "newer.sqlite3"
    connection = sqlite3.connect(newer)
    connection.execute("PRAGMA user_version=99")
    connection.close()
    with pytest.raises(StateError, match="schema version 99"):
        AnswerCache(newer)
