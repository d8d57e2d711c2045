"""What the gateway tests share: the test pool (models, prices, keys) and gateways over it.

The reusable machinery (replay upstreams, gateway processes, waiting) is ``uniroute.testing``;
this module only fixes the test's own choices.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from uniroute.data.dataset import RoutingDataset
from uniroute.deployment import Router
from uniroute.testing.harness import recorded_pool, write_config
from uniroute.testing.process import GatewayProcess
from uniroute.testing.replay import ReplayServerProcess

CHEAP = "mistralai/mistral-7b-chat"
MID = "mistralai/mixtral-8x7b-chat"
EXPENSIVE = "gpt-4-1106-preview"
#: Left out of the artifact's training models: it joins the pool later, through the admin API.
HELD_OUT = "claude-instant-v1"
#: A training model that is not put in the pool at first: onboarded from its endpoint later.
TO_ONBOARD = "zero-one-ai/Yi-34B-Chat"

#: The servable pool the end-to-end gateways start with.
POOL = (CHEAP, MID, EXPENSIVE)

#: Per-query prices set by the tests (round numbers, so expected costs are easy to compute).
COSTS = {CHEAP: 0.0001, MID: 0.0004, EXPENSIVE: 0.005}

UPSTREAM_KEY_ENV = "REPLAY_GPT4_KEY"
UPSTREAM_KEY = "upstream-secret-7c1f0e9b2d"
ADMIN_TOKEN = "admin-secret-5e8a41c3"
CLIENT_KEY = "client-secret-93d2f6a7"


def make_registry(
    artifact_dir: Path,
    registry_path: Path,
    dataset: RoutingDataset,
    endpoints: Mapping[str, str],
    *,
    api_key_envs: Mapping[str, str] | None = None,
    calibrate: bool = True,
    with_answers: bool = False,
) -> Router:
    """A registry with the given models (recorded scores, COSTS, endpoints; with their recorded
    answers to the representative prompts if ``with_answers``); returns its Router."""
    # Three times the cheapest price, below the middle one: the best quality within it (out of
    # sample, as calibration measures it) mixes the cheap and middle models, so both get
    # traffic. (Half-way to the dearest price bought all-middle-model: out of sample, GPT-4
    # adds no quality the router can find.)
    return recorded_pool(
        artifact_dir, registry_path, dataset, endpoints, COSTS, api_key_envs=api_key_envs,
        with_answers=with_answers, target_cost=3 * COSTS[CHEAP] if calibrate else None,
    )  # fmt: skip


def child_env(**variables: str) -> dict[str, str]:
    """The environment of a child server: the GPT-4 upstream's key set, gateway client keys and
    admin token only when given (so a developer's own settings cannot change what a test sees)."""
    inherited = {
        name: value
        for name, value in os.environ.items()
        if name not in ("UNIROUTE_CLIENT_KEYS", "UNIROUTE_ADMIN_TOKEN")
    }
    return {**inherited, UPSTREAM_KEY_ENV: UPSTREAM_KEY, **variables}


@contextmanager
def pool_gateway(
    folder: Path,
    artifact_dir: Path,
    dataset: RoutingDataset,
    upstreams: Mapping[str, ReplayServerProcess],
    config: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
) -> Iterator[tuple[GatewayProcess, Router, Path]]:
    """A registry of the POOL models at ``upstreams`` and ``uniroute serve`` over it.

    ``config`` is the gateway's JSON config and ``env`` extra environment variables (see
    ``child_env``). Yields the running gateway, the registry's Router in this process and the
    registry's path.
    """
    registry = folder / "registry.db"
    router = make_registry(
        artifact_dir, registry, dataset, {model: upstreams[model].v1_url for model in POOL},
        api_key_envs={EXPENSIVE: UPSTREAM_KEY_ENV},
    )  # fmt: skip
    config_path = write_config(folder / "gateway.json", **config)
    with GatewayProcess(
        artifact_dir, registry, config=config_path, env=child_env(**(env or {}))
    ) as gateway:
        yield gateway, router, registry


@contextmanager
def admin_pool_gateway(
    folder: Path,
    artifact_dir: Path,
    dataset: RoutingDataset,
    upstreams: Mapping[str, ReplayServerProcess],
) -> Iterator[tuple[GatewayProcess, Router, Path]]:
    """``pool_gateway`` with the admin API on (ADMIN_TOKEN), onboarding answers cached in
    ``folder`` and pool changes picked up within 0.2 s."""
    config = {"registry_poll_s": 0.2}
    env = {"UNIROUTE_ADMIN_TOKEN": ADMIN_TOKEN}
    with pool_gateway(folder, artifact_dir, dataset, upstreams, config, env) as running:
        yield running


def chat_body(prompt: str, model: str = "uniroute", **extra: Any) -> dict[str, Any]:
    """An OpenAI chat request body with one user message."""
    return {"model": model, "messages": [{"role": "user", "content": prompt}], **extra}
