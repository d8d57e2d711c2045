"""The replay upstream: OpenAI-compatible answers from recorded data, faults, stats, CLI."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest

from uniroute.data.dataset import RoutingDataset
from uniroute.data.loading import load_dataset
from uniroute.data.paths import default_data_dir
from uniroute.errors import DataError
from uniroute.testing.replay import (
    UNKNOWN_ANSWER,
    FaultConfig,
    ReplayServerProcess,
    create_replay_app,
)
from uniroute.testing.replay import main as replay_main

MODELS = ["small", "large"]
PROMPTS = ["What is 2+2?\nAnswer:", "Name a metal.", "Spell cat."]


def _dataset() -> RoutingDataset:
    ids = np.array(["p1", "p2", "p3"], dtype=object)
    return RoutingDataset(
        prompt_ids=ids,
        prompts=np.array(PROMPTS, dtype=object),
        tasks=np.array(["t"] * 3, dtype=object),
        models=MODELS,
        model_costs=np.array([1.0, 2.0]),
        scores=np.array([[1.0, 1.0], [0.0, 1.0], [1.0, np.nan]]),
        name="tiny",
        meta={
            "responses": {
                "small": np.array(["4", "wood", "c a t"], dtype=object),
                "large": np.array(["Four", "iron is a metal", None], dtype=object),
            },
            "response_prompt_ids": ids.copy(),
        },
    )


def _run(coro):
    return asyncio.run(coro)


async def _post(app, path: str, body, headers=None) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://replay") as client:
        if isinstance(body, bytes):
            return await client.post(path, content=body, headers=headers)
        return await client.post(path, json=body, headers=headers)


async def _get(app, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://replay") as client:
        return await client.get(path)


def _chat(text: str, **extra) -> dict:
    return {"model": "anything", "messages": [{"role": "user", "content": text}], **extra}


def test_chat_and_completions_replay_the_recorded_answer() -> None:
    app = create_replay_app(_dataset(), "large")
    response = _run(_post(app, "/v1/chat/completions", _chat(PROMPTS[1])))
    assert response.status_code == 200
    assert response.headers["x-upstream-model"] == "large"
    body = response.json()
    assert body["model"] == "large"
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "iron is a metal"}
    assert body["usage"]["completion_tokens"] == 4  # ceil(15 characters / 4)
    completion = _run(
        _post(app, "/v1/completions", {"model": "x", "prompt": [PROMPTS[0], PROMPTS[1]]})
    )
    assert [c["text"] for c in completion.json()["choices"]] == ["Four", "iron is a metal"]
    assert completion.json()["object"] == "text_completion"


def test_the_last_user_message_is_looked_up_with_a_whitespace_fallback() -> None:
    app = create_replay_app(_dataset(), "small")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Name a metal."},
        {"role": "assistant", "content": "wood"},
        {"role": "user", "content": [{"type": "text", "text": "  What is 2+2?   Answer: "}]},
    ]
    body = _run(_post(app, "/v1/chat/completions", {"model": "m", "messages": messages})).json()
    assert body["choices"][0]["message"]["content"] == "4"


def test_unknown_prompts_get_a_fixed_answer_or_404_when_strict() -> None:
    lenient = create_replay_app(_dataset(), "large")
    # "Spell cat." has no recorded answer for "large": it is unknown to that model.
    for text in ("Never recorded.", PROMPTS[2]):
        body = _run(_post(lenient, "/v1/chat/completions", _chat(text))).json()
        assert body["choices"][0]["message"]["content"] == UNKNOWN_ANSWER
    strict = create_replay_app(_dataset(), "large", strict=True)
    response = _run(_post(strict, "/v1/chat/completions", _chat("Never recorded.")))
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
    stats = _run(_get(lenient, "/stats")).json()
    assert stats["unknown_prompts"] == 2
    assert stats["requests"] == 2


def test_streaming_sends_openai_chunks_ending_with_done() -> None:
    app = create_replay_app(_dataset(), "large")
    payload = _chat(PROMPTS[1], stream=True, stream_options={"include_usage": True})
    response = _run(_post(app, "/v1/chat/completions", payload))
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-upstream-model"] == "large"
    events = [line[len("data: ") :] for line in response.text.split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["model"] for c in chunks} == {"large"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert content == "iron is a metal"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4
    streamed = _run(_post(app, "/v1/completions", {"prompt": PROMPTS[0], "stream": True}))
    parts = [json.loads(e[6:]) for e in streamed.text.split("\n\n") if e and e != "data: [DONE]"]
    assert "".join(p["choices"][0]["text"] for p in parts) == "Four"


def test_bad_requests_get_openai_style_400s() -> None:
    app = create_replay_app(_dataset(), "small")
    cases = [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({"messages": []}).encode(), "non-empty list"),
        (json.dumps({"messages": [{"role": "system", "content": "x"}]}).encode(), "role 'user'"),
        (json.dumps({"messages": [{"role": "user", "content": 5}]}).encode(), "no text content"),
    ]
    for raw, message in cases:
        response = _run(_post(app, "/v1/chat/completions", raw))
        assert response.status_code == 400
        assert message in response.json()["error"]["message"]
    response = _run(_post(app, "/v1/completions", {"prompt": 3}))
    assert response.status_code == 400
    assert _run(_get(app, "/stats")).json()["bad_requests"] == 6


def test_faults_fail_first_and_fail_rate_and_fixed_answer() -> None:
    app = create_replay_app(_dataset(), "small", faults=FaultConfig(fail_first=2, fail_status=503))
    statuses = [
        _run(_post(app, "/v1/chat/completions", _chat(PROMPTS[0]))).status_code for _ in range(3)
    ]
    assert statuses == [503, 503, 200]
    changed = _run(_post(app, "/admin/fault", {"fail_rate": 1.0, "fail_status": 429}))
    assert changed.json()["faults"]["fail_rate"] == 1.0
    assert _run(_post(app, "/v1/chat/completions", _chat(PROMPTS[0]))).status_code == 429
    _run(_post(app, "/admin/fault", {"fail_rate": 0.0, "fixed_answer": "zzz", "reset_stats": True}))
    body = _run(_post(app, "/v1/chat/completions", _chat(PROMPTS[0]))).json()
    assert body["choices"][0]["message"]["content"] == "zzz"
    stats = _run(_get(app, "/stats")).json()
    assert (stats["requests"], stats["failures_injected"], stats["answered"]) == (1, 0, 1)


def test_fail_rate_is_seeded_and_roughly_right() -> None:
    def failures(seed: int) -> list[int]:
        app = create_replay_app(_dataset(), "small", faults=FaultConfig(fail_rate=0.3), seed=seed)

        async def go() -> list[int]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://r") as client:
                return [
                    (await client.post("/v1/completions", json={"prompt": "x"})).status_code
                    for _ in range(200)
                ]

        return _run(go())

    first = failures(seed=1)
    assert first == failures(seed=1)
    assert 30 <= first.count(500) <= 90  # 60 expected; far outside this is a broken rate


def test_admin_fault_rejects_bad_settings() -> None:
    app = create_replay_app(_dataset(), "small")
    for bad, message in (
        ({"fail_rate": 2}, "fail_rate"),
        ({"fail_status": 200}, "fail_status"),
        ({"fail_first": -1}, "fail_first"),
        ({"delay_ms": "slow"}, "delay_ms"),
        ({"colour": "red"}, "unknown fault setting"),
    ):
        response = _run(_post(app, "/admin/fault", bad))
        assert response.status_code == 400
        assert message in response.json()["error"]["message"]
    # A rejected update changes nothing, even its valid parts.
    _run(_post(app, "/admin/fault", {"delay_ms": 5, "fail_rate": 7}))
    assert _run(_post(app, "/admin/fault", {})).json()["faults"]["delay_ms"] == 0.0


def test_api_key_is_required_when_configured() -> None:
    app = create_replay_app(_dataset(), "small", api_key="secret-key")
    assert _run(_post(app, "/v1/chat/completions", _chat(PROMPTS[0]))).status_code == 401
    wrong = {"authorization": "Bearer nope"}
    assert _run(_post(app, "/v1/chat/completions", _chat(PROMPTS[0]), wrong)).status_code == 401
    right = {"authorization": "Bearer secret-key"}
    assert _run(_post(app, "/v1/chat/completions", _chat(PROMPTS[0]), right)).status_code == 200
    assert _run(_get(app, "/healthz")).json() == {"status": "ok", "model": "small"}


def test_unknown_model_or_missing_responses_is_a_data_error() -> None:
    with pytest.raises(DataError, match="no model 'medium'"):
        create_replay_app(_dataset(), "medium")
    dataset = _dataset()
    dataset.meta = {}
    with pytest.raises(DataError, match="no recorded model responses"):
        create_replay_app(dataset, "small")


# ---------------------------------------------------------------------------- the real thing

ARC_TEST = default_data_dir() / "routerbench" / "arc_challenge_test.csv"
MODEL = "mistralai/mistral-7b-chat"


@pytest.fixture(scope="module")
def replay_server():
    if not ARC_TEST.is_file():
        pytest.fail(f"shared RouterBench data not found at {ARC_TEST}")
    with ReplayServerProcess(ARC_TEST, MODEL, extra_args=["--delay-ms", "1"]) as server:
        yield server


def test_subprocess_server_replays_real_routerbench_answers(replay_server) -> None:
    import openai

    assert replay_server.base_url.startswith("http://127.0.0.1:")
    dataset = load_dataset(ARC_TEST, "routerbench")
    responses = dataset.meta["responses"][MODEL]
    client = openai.OpenAI(base_url=replay_server.v1_url, api_key="unused", max_retries=0)
    before = httpx.get(f"{replay_server.base_url}/stats").json()["requests"]
    for i in (0, 7):
        reply = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": dataset.prompts[i]}]
        )
        assert reply.model == MODEL
        assert reply.choices[0].message.content == responses[i]
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": dataset.prompts[3]}], stream=True
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream) == responses[3]
    text = client.completions.create(model=MODEL, prompt=dataset.prompts[5])
    assert text.choices[0].text == responses[5]
    assert [m.id for m in client.models.list().data] == [MODEL]
    raw = httpx.get(f"{replay_server.base_url}/healthz")
    assert raw.headers["x-upstream-model"] == MODEL
    assert httpx.get(f"{replay_server.base_url}/stats").json()["requests"] - before == 4


def test_command_line_reports_bad_arguments(capsys, monkeypatch) -> None:
    base = ["--data", str(ARC_TEST), "--model", MODEL]
    assert replay_main(["--data", str(ARC_TEST), "--model", "no-such-model"]) == 2
    assert "no model 'no-such-model'" in capsys.readouterr().err
    assert replay_main([*base, "--fail-rate", "2"]) == 2
    assert "fail_rate must lie in [0, 1]" in capsys.readouterr().err
    monkeypatch.delenv("UNIROUTE_TEST_UNSET_KEY", raising=False)
    assert replay_main([*base, "--api-key-env", "UNIROUTE_TEST_UNSET_KEY"]) == 2
    assert "UNIROUTE_TEST_UNSET_KEY is not set" in capsys.readouterr().err


def test_a_server_that_cannot_start_is_reported() -> None:
    server = ReplayServerProcess(ARC_TEST, MODEL, extra_args=["--fail-status", "200"])
    with pytest.raises(RuntimeError, match="exited at start: replay: error: fail_status"):
        server.start()
