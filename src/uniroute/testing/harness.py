"""Harness for tests, benchmarks and demos of the gateway: pools from recorded data, servers,
waiting.

* :func:`recorded_scores` and :func:`add_recorded_model` put a model of a data set in a
  registry with its recorded scores, as ``uniroute models add --scores`` would;
  :func:`recorded_pool` a whole calibrated pool of them; :func:`build_arc_test_artifact` the
  test suite's small ARC artifact;
* :func:`serve_in_thread` serves an ASGI app (the gateway, a replay upstream) with uvicorn in a
  thread of this process; :class:`~uniroute.testing.process.GatewayProcess` and
  :func:`~uniroute.testing.replay.start_replays` run them as child processes;
* :func:`wait_until` and :func:`wait_for_job` poll with a deadline; :func:`sse_events` reads a
  streamed answer.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import uvicorn
from starlette.types import ASGIApp

from uniroute.data.dataset import RoutingDataset
from uniroute.deployment import Router
from uniroute.deployment.pool_changes import AddedModel, add_scored_model, calibrate
from uniroute.gateway.serving import bind_socket, url_of
from uniroute.registry import ModelCost, ModelRecord
from uniroute.registry.calibration import make_target

T = TypeVar("T")

#: Job states after which a job's record no longer changes.
FINISHED_JOB_STATES = ("succeeded", "failed")


# ---------------------------------------------------------------------------- pools
def recorded_scores(
    dataset: RoutingDataset, model: str, prompt_ids: Sequence[str]
) -> dict[str, float]:
    """A model's recorded scores on the given prompt ids (missing ones left out)."""
    column = dataset.scores[:, dataset.model_index(model)]
    row_of = {str(pid): i for i, pid in enumerate(dataset.prompt_ids.tolist())}
    scores = {}
    for prompt_id in prompt_ids:
        value = column[row_of[prompt_id]]
        if np.isfinite(value):
            scores[prompt_id] = float(value)
    return scores


def add_recorded_model(
    router: Router,
    dataset: RoutingDataset,
    model: str,
    cost: float,
    *,
    endpoint: str | None = None,
    api_key_env: str | None = None,
    upstream_model: str | None = None,
    with_answers: bool = False,
) -> AddedModel:
    """Add ``model`` to the router's registry with its recorded scores on the representative
    prompts and a per-query ``cost``; routable on return. ``with_answers`` also stores its
    recorded answers to them (RouterBench data), as onboarding would."""
    record = ModelRecord(
        name=model,
        cost=ModelCost(per_query=cost),
        endpoint=endpoint,
        api_key_env=api_key_env,
        upstream_model=upstream_model,
    )
    scores = recorded_scores(dataset, model, router.artifact.prompt_ids)
    answers = None
    if with_answers:
        from uniroute.data.routerbench import responses_by_prompt

        recorded = responses_by_prompt(dataset)[model]
        answers = {pid: recorded.get(pid) for pid in router.artifact.prompt_ids}
    return add_scored_model(
        router, record, scores, answers=answers, source=f"recorded scores of {model!r}"
    )


def recorded_pool(
    artifact_dir: Path,
    registry_path: Path,
    dataset: RoutingDataset,
    endpoints: Mapping[str, str],
    costs: Mapping[str, float],
    *,
    api_key_envs: Mapping[str, str] | None = None,
    with_answers: bool = False,
    target_cost: float | None = None,
) -> Router:
    """A registry of the models at ``endpoints`` with their recorded scores (and answers, if
    ``with_answers``) and per-query ``costs``, calibrated to ``target_cost`` when given; its
    Router."""
    router = Router.load(artifact_dir, registry_path)
    for model, url in endpoints.items():
        add_recorded_model(
            router, dataset, model, costs[model], endpoint=url,
            api_key_env=(api_key_envs or {}).get(model), with_answers=with_answers,
        )  # fmt: skip
    if target_cost is not None:
        calibrate(router, make_target(target_cost=target_cost))
    return router


def build_arc_test_artifact(
    dataset: RoutingDataset, folder: Path, holdout_models: Sequence[str]
) -> Path:
    """The test suite's ARC artifact in ``folder``: TF-IDF (32 dimensions) + K-means (K = 6),
    20% of the prompts representative, seed 84 (tests/conftest.py says what depends on it)."""
    from uniroute.artifact import build_artifact
    from uniroute.embeddings import make_encoder

    artifact = build_artifact(
        dataset,
        Path(folder) / "artifact",
        encoder=make_encoder("tfidf", n_components=32),
        router="uniroute-kmeans",
        router_params={"n_clusters": 6},
        holdout_models=list(holdout_models),
        val_fraction=0.2,
        seed=84,
    )
    return Path(artifact.path)


def write_config(path: str | Path, **settings: Any) -> Path:
    """A JSON gateway config file holding ``settings``."""
    path = Path(path)
    path.write_text(json.dumps(settings))
    return path


# ---------------------------------------------------------------------------- servers
def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on at the moment of the call."""
    with bind_socket(host, 0) as sock:
        return sock.getsockname()[1]


@contextmanager
def serve_in_thread(app: ASGIApp, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve an ASGI app (lifespan on) with uvicorn in a background thread; yields its URL."""
    sock: socket.socket = bind_socket(host, 0)
    server = uvicorn.Server(
        uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", log_level="warning")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_until(
            lambda: server.started or not thread.is_alive(), 30, "in-process server did not start"
        )
        if not server.started:
            raise RuntimeError("in-process server exited at start")
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


# ---------------------------------------------------------------------------- waiting
def wait_until(
    condition: Callable[[], T | None], timeout: float, message: str, interval: float = 0.05
) -> T:
    """Poll ``condition`` until it returns a true value (returned), or fail with ``message``
    (an AssertionError) after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{message} (within {timeout:g} s)")
        time.sleep(interval)


def wait_for_job(
    base_url: str, poll: str, headers: Mapping[str, str], timeout: float = 60.0
) -> dict[str, Any]:
    """Poll an admin job (``poll`` is its path, e.g. ``/admin/jobs/ID``) until it has finished;
    its last record."""

    def finished() -> dict[str, Any] | None:
        job = httpx.get(f"{base_url}{poll}", headers=dict(headers), timeout=10).json()["job"]
        return job if job["status"] in FINISHED_JOB_STATES else None

    return wait_until(finished, timeout, f"job {poll} did not finish", interval=0.1)


def sse_events(raw: bytes) -> list[Any]:
    """The ``data:`` payloads of an SSE body (JSON decoded; ``[DONE]`` kept as a string)."""
    events = []
    for line in raw.decode().splitlines():
        if line.startswith("data:"):
            payload = line[5:].strip()
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events
