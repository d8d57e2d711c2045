"""Verify and escalate end to end: a gateway over replay upstreams that serve recorded answers.

The pool is the gateway tests' three ARC models with their recorded answers to the
representative prompts; at lambda 20 the plan for nearly every prompt is "ask Mixtral and
Mistral-7B, escalate to GPT-4 when their letters differ". Which prompts the pair agrees on is
read from the recorded answers, so each test knows what the gateway must do.
"""

from __future__ import annotations

import httpx
import pytest

from tests.gateway.support import (
    CHEAP,
    EXPENSIVE,
    MID,
    POOL,
    UPSTREAM_KEY_ENV,
    chat_body,
    child_env,
    make_registry,
)
from uniroute.answers import answer_key
from uniroute.data.routerbench import responses_by_prompt
from uniroute.testing.harness import write_config
from uniroute.testing.process import GatewayProcess

LAM = 20.0
VERIFY = f"uniroute:verify,lambda={LAM:g}"


@pytest.fixture(scope="module")
def verify_gateway(tmp_path_factory, artifact_dir, arc_dataset, replays):
    """A gateway over POOL with answers stored, breakers opening after two failures."""
    folder = tmp_path_factory.mktemp("verify")
    registry = folder / "registry.db"
    make_registry(
        artifact_dir, registry, arc_dataset, {m: replays[m].v1_url for m in POOL},
        api_key_envs={EXPENSIVE: UPSTREAM_KEY_ENV}, with_answers=True,
    )  # fmt: skip
    config = write_config(folder / "gateway.json", breaker_failure_threshold=2)
    with GatewayProcess(artifact_dir, registry, config=config, env=child_env()) as gateway:
        yield gateway


def _plans(gateway, prompts):
    """The gateway's plan for each prompt (through /v1/route), by prompt."""
    plans = {}
    with httpx.Client(base_url=gateway.base_url, timeout=30) as client:
        for prompt in prompts:
            answer = client.post("/v1/route", json={"model": VERIFY, "prompt": prompt})
            assert answer.status_code == 200, answer.text
            plans[prompt] = answer.json()["verify_plan"]
    return plans


@pytest.fixture(scope="module")
def pair_prompts(verify_gateway, arc_dataset, unique_prompts):
    """(agreeing, disagreeing) prompts whose plan is the pair MID+CHEAP -> EXPENSIVE."""
    recorded = responses_by_prompt(arc_dataset)
    by_text = dict(
        zip((str(t) for t in arc_dataset.prompts), arc_dataset.prompt_ids.tolist(), strict=True)
    )
    agree, differ = [], []
    plans = _plans(verify_gateway, unique_prompts[:80])
    for prompt, plan in plans.items():
        if plan["candidates"] != [MID, CHEAP] or plan["target"] != EXPENSIVE:
            continue
        pid = by_text[prompt]
        keys = [answer_key(recorded[m].get(pid), "choice", prompt) for m in (MID, CHEAP)]
        if keys[0] is not None and keys[0] == keys[1]:
            agree.append(prompt)
        elif keys[0] != keys[1]:
            differ.append(prompt)
    assert len(agree) >= 3 and len(differ) >= 3, (len(agree), len(differ))
    return agree, differ


def _verified(client: httpx.Client, replays, prompt: str) -> tuple[httpx.Response, dict[str, int]]:
    """A verified chat request's answer (checked to be a 200) and the calls each upstream got."""
    before = {m: int(replays[m].stats()["requests"]) for m in POOL}
    answer = client.post("/v1/chat/completions", json=chat_body(prompt, VERIFY))
    assert answer.status_code == 200, answer.text
    return answer, {m: int(replays[m].stats()["requests"]) - before[m] for m in POOL}


def test_agreeing_candidates_answer_without_the_expensive_model(verify_gateway, pair_prompts,
                                                                replays) -> None:  # fmt: skip
    agree, _ = pair_prompts
    with httpx.Client(base_url=verify_gateway.base_url, timeout=30) as client:
        for prompt in agree[:3]:
            answer, calls = _verified(client, replays, prompt)
            assert answer.headers["x-uniroute-verify"] == "agreed"
            assert answer.headers["x-uniroute-model"] == MID
            assert answer.headers["x-uniroute-called"].split(",") == [MID, CHEAP]
            assert answer.headers["x-uniroute-verify-plan"] == f"{MID}+{CHEAP}->{EXPENSIVE}"
            assert calls == {MID: 1, CHEAP: 1, EXPENSIVE: 0}
            assert answer.json()["model"] == MID  # MID's real answer, not a merge


def test_disagreeing_candidates_escalate_to_the_target(verify_gateway, pair_prompts,
                                                       replays) -> None:  # fmt: skip
    _, differ = pair_prompts
    with httpx.Client(base_url=verify_gateway.base_url, timeout=30) as client:
        for prompt in differ[:3]:
            answer, calls = _verified(client, replays, prompt)
            assert answer.headers["x-uniroute-verify"] == "escalated"
            assert answer.headers["x-uniroute-model"] == EXPENSIVE
            assert answer.headers["x-uniroute-called"].split(",") == [MID, CHEAP, EXPENSIVE]
            assert "differ" in answer.headers["x-uniroute-verify-reason"]
            assert calls == {MID: 1, CHEAP: 1, EXPENSIVE: 1}
            assert answer.json()["model"] == EXPENSIVE
        metrics = client.get("/metrics").text
    assert 'uniroute_verify_requests_total{outcome="escalated"}' in metrics
    assert f'uniroute_verify_extra_calls_total{{model="{CHEAP}"}}' in metrics


def test_verify_refuses_to_stream_and_bad_flags(verify_gateway, pair_prompts) -> None:
    prompt = pair_prompts[0][0]
    with httpx.Client(base_url=verify_gateway.base_url, timeout=30) as client:
        streamed = client.post("/v1/chat/completions", json=chat_body(prompt, VERIFY, stream=True))
        assert streamed.status_code == 400
        assert streamed.json()["error"]["code"] == "verify_cannot_stream"
        bad = client.post(
            "/v1/chat/completions", json=chat_body(prompt), headers={"x-uniroute-verify": "maybe"}
        )
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-uniroute-verify"
        capped = client.post(
            "/v1/chat/completions", json=chat_body(prompt, "uniroute:verify,max-cost=1")
        )
        assert capped.status_code == 400 and "verify" in capped.json()["error"]["message"]
        by_header = client.post(
            "/v1/chat/completions",
            json=chat_body(prompt, f"uniroute:lambda={LAM:g}"),
            headers={"x-uniroute-verify": "true"},
        )
        assert by_header.status_code == 200 and by_header.headers["x-uniroute-verify"] == "agreed"


def test_a_failing_candidate_escalates_and_its_breaker_opens(verify_gateway, pair_prompts,
                                                            replays) -> None:  # fmt: skip
    agree, _ = pair_prompts
    replays[CHEAP].set_fault(fail_rate=1.0)
    try:
        with httpx.Client(base_url=verify_gateway.base_url, timeout=30) as client:
            outcomes = []
            for prompt in agree[:3]:
                answer = client.post("/v1/chat/completions", json=chat_body(prompt, VERIFY))
                assert answer.status_code == 200, answer.text
                assert answer.headers["x-uniroute-model"] == EXPENSIVE
                outcomes.append(answer.headers["x-uniroute-verify-reason"])
            metrics = client.get("/metrics").text
    finally:
        replays[CHEAP].set_fault(fail_rate=0.0)
    assert all(f"{CHEAP} failed" in reason for reason in outcomes)
    # Two failures open its breaker (threshold 2): the third request skips it.
    assert f'uniroute_circuit_open{{model="{CHEAP}"}} 1.0' in metrics
