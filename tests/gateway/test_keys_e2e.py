"""Virtual client keys end to end: `uniroute serve` in a child process in front of replay
upstreams, keys made with `uniroute keys` (another process), requests through the official
`openai` client.

Checked: the spend after 200 concurrent requests (plain and streamed, routed and direct) is
exactly the sum of the answers' usage times the models' token prices; a key over its budget
gets 429 (``openai.RateLimitError``) and overshoots by less than one request's estimate; a
revoked key gets 401; a key limited to one model never reaches another; two replicas on one
PostgreSQL registry hold one key's budget together, with its spend exact.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.gateway.support import (
    CHEAP,
    EXPENSIVE,
    MID,
    POOL,
    UPSTREAM_KEY_ENV,
    child_env,
    make_registry,
)
from uniroute.deployment import pool_changes
from uniroute.registry import ModelCost, Registry
from uniroute.registry.keys import Periods
from uniroute.testing.harness import wait_until, write_config
from uniroute.testing.process import GatewayProcess
from uniroute.testing.replay import recorded_answers

pytestmark = pytest.mark.slow

#: Token prices (per 1k input, per 1k output), so that spend depends on every answer's usage.
PRICES = {CHEAP: (0.02, 0.06), MID: (0.1, 0.3), EXPENSIVE: (1.0, 3.0)}
#: Output tokens the gateway reserves for an answer without max_tokens (the registry default).
EXPECTED_OUTPUT_TOKENS = 256


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, artifact_dir, arc_dataset, replays):
    """(gateway, registry path) over the POOL at token prices, admin off, no static keys."""
    folder = tmp_path_factory.mktemp("keys-e2e")
    registry = folder / "registry.db"
    router = make_registry(
        artifact_dir, registry, arc_dataset, {m: replays[m].v1_url for m in POOL},
        api_key_envs={EXPENSIVE: UPSTREAM_KEY_ENV},
    )  # fmt: skip
    for model, (per_in, per_out) in PRICES.items():
        pool_changes.set_cost(router, model, ModelCost(per_1k_input=per_in, per_1k_output=per_out))
    router.registry.close()
    config = write_config(folder / "gateway.json", registry_poll_s=0.2)
    with GatewayProcess(artifact_dir, registry, config=config, env=child_env()) as gateway:
        yield gateway, registry


@pytest.fixture(scope="module")
def prompts(unique_prompts, arc_dataset) -> list[str]:
    """Distinct real prompts every pool model answered."""
    answers = [recorded_answers(arc_dataset, m) for m in POOL]
    return [t for t in unique_prompts if all(t in a for a in answers)]


def _keys_cli(registry: Path, *args: str) -> str:
    """`uniroute keys ...` in a child process; its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "uniroute.cli.main", "keys", *args, "--registry", str(registry)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def _create(registry: Path, name: str, *options: str) -> tuple[str, str]:
    """A new key's (id, secret), made by the CLI."""
    created = json.loads(_keys_cli(registry, "create", name, "--json", *options))
    return created["key"]["id"], created["secret"]


def _spend(registry: Path | str, key_id: str) -> tuple[float, int]:
    """(spend, requests) of a key today, read by this process."""
    with Registry(registry) as opened:
        rows = {row.period: row for row in opened.keys.usage(key_id)}
    row = rows.get(Periods.at().day)
    return (0.0, 0) if row is None else (row.spend, row.requests)


def _cost(model: str, prompt_tokens: int, completion_tokens: int) -> float:
    per_in, per_out = PRICES[model]
    return prompt_tokens / 1000 * per_in + completion_tokens / 1000 * per_out


async def _ask(client: openai.AsyncOpenAI, prompt: str, mode: int) -> tuple[str, float]:
    """One request (by ``mode``: plain routed, plain direct, streamed with the usage chunk, or
    streamed without it); the model that answered and its cost from the answer's usage."""
    messages = [{"role": "user", "content": prompt}]
    if mode in (0, 1):
        model = "uniroute" if mode == 0 else MID
        raw = await client.chat.completions.with_raw_response.create(model=model, messages=messages)
        completion = raw.parse()
        usage = completion.usage
        assert usage is not None
        answered = raw.headers["x-uniroute-model"]
        return answered, _cost(answered, usage.prompt_tokens, usage.completion_tokens)
    include = mode == 2
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if include else {}
    stream = await client.chat.completions.create(
        model=CHEAP, messages=messages, stream=True, **extra
    )
    text, usage = "", None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
    if include:
        assert usage is not None
        return CHEAP, _cost(CHEAP, usage.prompt_tokens, usage.completion_tokens)
    # Not asked for, the usage chunk is withheld: the replay counts ceil(chars / 4) tokens.
    assert usage is None
    return CHEAP, _cost(CHEAP, math.ceil(len(prompt) / 4), math.ceil(len(text) / 4))


def _client(gateway: GatewayProcess, secret: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.v1_url, api_key=secret, max_retries=0, timeout=60)


def test_spend_is_exact_after_200_concurrent_requests(deployment, prompts) -> None:
    gateway, registry = deployment
    key_id, secret = _create(registry, "load", "--team", "load", "--daily-budget", "1000")

    async def run() -> list[tuple[str, float]]:
        async with _client(gateway, secret) as client:
            return await asyncio.gather(
                *(_ask(client, prompts[i % len(prompts)], i % 4) for i in range(200))
            )

    results = asyncio.run(run())
    expected = sum(cost for _, cost in results)
    assert {model for model, _ in results} >= {CHEAP, MID}
    # A stream is settled as it ends, just after the client read its last event.
    wait_until(
        lambda: _spend(registry, key_id) == (pytest.approx(expected, rel=1e-9), 200),
        15, f"the key's spend {_spend(registry, key_id)} never became {expected}, 200",
    )  # fmt: skip


def test_a_key_over_its_budget_gets_429_and_never_overshoots_by_one_estimate(
    deployment, prompts
) -> None:
    gateway, registry = deployment
    chosen = prompts[:200]
    typical = sorted(_cost(CHEAP, len(p) // 4, 2) for p in chosen)[100]
    limit = 25 * typical
    key_id, secret = _create(registry, "small", "--daily-budget", repr(limit))

    async def run() -> list[tuple[str, float] | BaseException]:
        async with _client(gateway, secret) as client:
            return await asyncio.gather(
                *(_ask(client, prompt, 1 if i % 2 else 2) for i, prompt in enumerate(chosen)),
                return_exceptions=True,
            )

    results = asyncio.run(run())
    answered = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert answered and refused
    assert all(isinstance(r, openai.RateLimitError) for r in refused), refused[:3]
    assert all(r.body["code"] == "budget_exceeded" for r in refused)  # type: ignore[union-attr]
    expected = sum(cost for _, cost in answered)
    wait_until(
        lambda: _spend(registry, key_id)[0] == pytest.approx(expected, rel=1e-9),
        15, "the key's spend never matched its answers",
    )  # fmt: skip
    spend, requests = _spend(registry, key_id)
    assert requests == len(answered)
    # What one request reserves at most: its prompt's estimated tokens and 256 output tokens.
    estimates = [
        _cost(m, len(p) / 4, EXPECTED_OUTPUT_TOKENS) for p in chosen for m in (CHEAP, MID)
    ]  # fmt: skip
    # Under concurrency, requests are refused while the estimates of those in flight hold the
    # budget: the spend may stay below the limit, never above it by a request's estimate.
    assert spend < limit + max(estimates)
    # One at a time, requests are admitted until the spend reaches the limit, then refused.
    client = openai.OpenAI(base_url=gateway.v1_url, api_key=secret, max_retries=0, timeout=30)
    for prompt in prompts[200:400]:
        try:
            client.chat.completions.create(
                model=MID, messages=[{"role": "user", "content": prompt}]
            )
        except openai.RateLimitError as exc:
            assert int(exc.response.headers["retry-after"]) >= 1
            break
    else:
        pytest.fail("the budget never refused a request")
    spend, _ = _spend(registry, key_id)
    assert limit <= spend < limit + max(estimates)


def test_a_revoked_key_gets_401(deployment, prompts) -> None:
    gateway, registry = deployment
    key_id, secret = _create(registry, "to-revoke")
    client = openai.OpenAI(base_url=gateway.v1_url, api_key=secret, max_retries=0, timeout=30)
    messages = [{"role": "user", "content": prompts[0]}]
    assert client.chat.completions.create(model="uniroute", messages=messages).choices
    assert "revoked key" in _keys_cli(registry, "revoke", key_id)

    def refused() -> bool:
        try:
            client.chat.completions.create(model="uniroute", messages=messages)
        except openai.AuthenticationError as exc:
            return exc.body["code"] == "invalid_api_key"  # type: ignore[index]
        return False

    # Revoked in another process: the gateway's key cache forgets it within its TTL (5 s).
    wait_until(refused, 15, "the revoked key was still accepted", interval=0.5)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


def test_a_key_limited_to_one_model_never_reaches_another(deployment, prompts, replays) -> None:
    gateway, registry = deployment
    _, secret = _create(registry, "cheap-only", "--models", CHEAP, "--rpm", "1000")
    client = openai.OpenAI(base_url=gateway.v1_url, api_key=secret, max_retries=0, timeout=30)
    before = {m: replays[m].stats()["chat_completions"] for m in POOL}
    for prompt in prompts[:30]:
        raw = client.chat.completions.with_raw_response.create(
            model="uniroute", messages=[{"role": "user", "content": prompt}]
        )
        assert raw.headers["x-uniroute-model"] == CHEAP
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.chat.completions.create(
            model=EXPENSIVE, messages=[{"role": "user", "content": prompts[0]}]
        )
    assert info.value.body["code"] == "model_not_allowed"  # type: ignore[index]
    after = {m: replays[m].stats()["chat_completions"] for m in POOL}
    assert after == {**before, CHEAP: before[CHEAP] + 30}


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, artifact_dir, arc_dataset, replays, postgres_cluster):
    """Two gateways on one PostgreSQL registry (the same POOL at the same token prices)."""
    url = postgres_cluster.create_database()
    router = make_registry(
        artifact_dir, url, arc_dataset, {m: replays[m].v1_url for m in POOL},
        api_key_envs={EXPENSIVE: UPSTREAM_KEY_ENV},
    )  # fmt: skip
    for model, (per_in, per_out) in PRICES.items():
        pool_changes.set_cost(router, model, ModelCost(per_1k_input=per_in, per_1k_output=per_out))
    router.registry.close()
    config = write_config(tmp_path_factory.mktemp("keys-replicas") / "gw.json")
    with (
        GatewayProcess(artifact_dir, url, config=config, env=child_env()) as a,
        GatewayProcess(artifact_dir, url, config=config, env=child_env()) as b,
    ):
        yield (a, b), url


def test_a_budget_holds_across_replicas_and_their_spend_is_exact(replicas, prompts) -> None:
    (a, b), url = replicas
    chosen = prompts[:200]
    limit = 40 * sorted(_cost(CHEAP, len(p) // 4, 2) for p in chosen)[100]
    with Registry(url) as registry:
        created = registry.keys.create("shared", team="both", daily_spend_limit=limit)
    key_id, secret = created.key.id, created.secret

    async def run() -> list[tuple[str, float] | BaseException]:
        async with _client(a, secret) as on_a, _client(b, secret) as on_b:
            return await asyncio.gather(
                *(_ask(on_b if i % 2 else on_a, p, i % 4) for i, p in enumerate(chosen)),
                return_exceptions=True,
            )

    results = asyncio.run(run())
    answered = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert answered and refused and all(isinstance(r, openai.RateLimitError) for r in refused)
    expected = sum(cost for _, cost in answered)
    wait_until(
        lambda: _spend(url, key_id) == (pytest.approx(expected, rel=1e-9), len(answered)),
        15, f"the shared key's spend {_spend(url, key_id)} never became {expected}",
    )  # fmt: skip
    estimates = [
        _cost(m, len(p) / 4, EXPECTED_OUTPUT_TOKENS) for p in chosen for m in (CHEAP, MID)
    ]  # fmt: skip
    assert _spend(url, key_id)[0] < limit + max(estimates)
