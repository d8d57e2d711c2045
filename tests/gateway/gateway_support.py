"""Building blocks of the gateway tests: a small artifact, replay upstreams, registries, servers."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

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


def start_replays(
    data: Path,
    models: Sequence[str],
    extra: Mapping[str, Sequence[str]] | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, ReplayServerProcess]:
    """Start one replay upstream per model, in parallel; stops all of them if one fails."""
    extra = extra or {}
    servers = {
        model: ReplayServerProcess(data, model, extra_args=list(extra.get(model, ())), env=env)
        for model in models
    }
    with ThreadPoolExecutor(len(servers)) as pool:
        futures = [pool.submit(server.start) for server in servers.values()]
        errors = [f.exception() for f in futures if f.exception() is not None]
    if errors:
        for server in servers.values():
            server.stop()
        raise errors[0]
    return servers


def scores_of(dataset: Any, model: str, prompt_ids: Sequence[str]) -> dict[str, float]:
    """A model's recorded scores on the given prompt ids (missing ones left out)."""
    column = dataset.scores[:, dataset.model_index(model)]
    row_of = {pid: i for i, pid in enumerate(dataset.prompt_ids.tolist())}
    scores = {}
    for prompt_id in prompt_ids:
        value = column[row_of[prompt_id]]
        if np.isfinite(value):
            scores[prompt_id] = float(value)
    return scores


def make_registry(
    artifact_dir: Path,
    registry_path: Path,
    dataset: Any,
    endpoints: Mapping[str, str],
    *,
    api_key_envs: Mapping[str, str] | None = None,
    calibrate: bool = True,
) -> Any:
    """A registry with the given models (recorded scores, COSTS, endpoints); returns its Router."""
    from uniroute.deployment.router import Router

    router = Router.load(artifact_dir, registry_path)
    prompt_ids = router.artifact.prompt_ids
    for model, url in endpoints.items():
        router.add_model(
            model,
            scores_of(dataset, model, prompt_ids),
            COSTS[model],
            endpoint=url,
            api_key_env=(api_key_envs or {}).get(model),
        )
    if calibrate:
        # Half-way between the cheapest and the dearest price: both get traffic.
        router.calibrate(target_cost=(min(COSTS.values()) + max(COSTS.values())) / 2)
    return router


def write_config(path: Path, **settings: Any) -> Path:
    """A JSON gateway config file."""
    path.write_text(json.dumps(settings))
    return path


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
    dataset: Any,
    upstreams: Mapping[str, ReplayServerProcess],
    config: Mapping[str, Any],
    env: Mapping[str, str] | None = None,
) -> Iterator[tuple[GatewayProcess, Any, Path]]:
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
    dataset: Any,
    upstreams: Mapping[str, ReplayServerProcess],
) -> Iterator[tuple[GatewayProcess, Any, Path]]:
    """``pool_gateway`` with the admin API on (ADMIN_TOKEN), onboarding answers cached in
    ``folder`` and pool changes picked up within 0.2 s."""
    config = {"registry_poll_s": 0.2, "onboarding_cache_dir": str(folder / "cache")}
    env = {"UNIROUTE_ADMIN_TOKEN": ADMIN_TOKEN}
    with pool_gateway(folder, artifact_dir, dataset, upstreams, config, env) as running:
        yield running


def stats(server: ReplayServerProcess) -> dict[str, int]:
    """The replay server's request counters."""
    return httpx.get(f"{server.base_url}/stats", timeout=5).json()


def set_fault(server: ReplayServerProcess, **faults: Any) -> None:
    """Change the faults a replay server injects (reset with no arguments)."""
    body = faults or {"delay_ms": 0, "chunk_delay_ms": 0, "fail_rate": 0, "fail_first": 0}
    response = httpx.post(f"{server.base_url}/admin/fault", json=body, timeout=5)
    response.raise_for_status()


def chat_body(prompt: str, model: str = "uniroute", **extra: Any) -> dict[str, Any]:
    """An OpenAI chat request body with one user message."""
    return {"model": model, "messages": [{"role": "user", "content": prompt}], **extra}


def free_port_socket() -> socket.socket:
    """A listening socket on a free loopback port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@contextmanager
def serve_in_thread(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a background thread; yields its base URL."""
    import uvicorn

    sock = free_port_socket()
    server = uvicorn.Server(
        uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", log_level="warning")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise RuntimeError("in-process gateway did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def sse_events(raw: bytes) -> list[Any]:
    """The ``data:`` payloads of an SSE body (JSON decoded; ``[DONE]`` kept as a string)."""
    events = []
    for line in raw.decode().splitlines():
        if line.startswith("data:"):
            payload = line[5:].strip()
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events
