"""Slow embedding runs off the event loop, cheap TF-IDF routing on it; readiness reflects the pool.

These tests serve the gateway app in a background thread of the test process, so that the
artifact's encoder can be wrapped by a deliberately slow one, or watched.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
import numpy as np

from tests.gateway.support import CHEAP, MID, make_registry
from uniroute.deployment import Router
from uniroute.deployment.pool_changes import seed_registry
from uniroute.embeddings.tfidf import TfidfSvdEncoder
from uniroute.gateway.app import create_app
from uniroute.gateway.config import GatewayConfig
from uniroute.testing.harness import serve_in_thread

EMBED_SECONDS = 1.5


class SlowEncoder:
    """An Encoder that answers like the one it wraps, after a pause; signals start and end."""

    def __init__(self, inner, seconds: float) -> None:
        self.inner = inner
        self.seconds = seconds
        self.started = threading.Event()
        self.finished = threading.Event()

    @property
    def id(self) -> str:
        """Same id as the wrapped encoder (same vectors)."""
        return self.inner.id

    @property
    def dim(self) -> int:
        """Same dimension as the wrapped encoder."""
        return self.inner.dim

    def fit(self, texts: Sequence[str]) -> SlowEncoder:
        """Already fitted."""
        return self

    def encode(self, texts: Sequence[str], *, show_progress: bool | None = None) -> np.ndarray:
        """The wrapped encoder's vectors, after ``seconds``."""
        self.started.set()
        time.sleep(self.seconds)
        vectors = self.inner.encode(texts, show_progress=show_progress)
        self.finished.set()
        return vectors

    def save(self, directory: Path) -> None:
        """Not needed here."""
        raise NotImplementedError


class WithEncoder:
    """An artifact seen through another encoder (everything else is the artifact's own)."""

    def __init__(self, artifact, encoder) -> None:
        self._artifact = artifact
        self.encoder = encoder

    def __getattr__(self, name: str):
        return getattr(self._artifact, name)


def test_slow_embedding_does_not_block_other_requests(tmp_path, artifact_dir, arc_dataset, replays):
    router = make_registry(
        artifact_dir, tmp_path / "registry.db", arc_dataset,
        {model: replays[model].v1_url for model in (CHEAP, MID)},
    )  # fmt: skip
    slow = SlowEncoder(router.artifact.encoder, EMBED_SECONDS)
    router = Router(WithEncoder(router.artifact, slow), router.registry)
    app = create_app(router, GatewayConfig(routing_threads=2))
    prompt = str(arc_dataset.prompts[0])
    with serve_in_thread(app) as base_url:
        routed: list[httpx.Response] = []
        worker = threading.Thread(
            target=lambda: routed.append(
                httpx.post(f"{base_url}/v1/route", json={"prompt": prompt}, timeout=30)
            )
        )
        worker.start()
        assert slow.started.wait(10), "the routing request never reached the encoder"
        started = time.perf_counter()
        health = httpx.get(f"{base_url}/healthz", timeout=10)
        elapsed = time.perf_counter() - started
        still_embedding = not slow.finished.is_set()
        worker.join(timeout=30)
    assert health.status_code == 200
    assert still_embedding, "the health check did not overlap the slow embedding"
    assert elapsed < EMBED_SECONDS / 3
    assert routed[0].status_code == 200
    assert routed[0].json()["model"] in (CHEAP, MID)


def test_readiness_needs_a_model_with_an_endpoint(tmp_path, artifact_dir, arc_dataset):
    router = make_registry(artifact_dir, tmp_path / "registry.db", arc_dataset, {},
                           calibrate=False)  # fmt: skip
    # The artifact's training models, with scores and costs but no endpoint.
    seed_registry(router.artifact, router.registry)
    app = create_app(router, GatewayConfig())
    with serve_in_thread(app) as base_url:
        ready = httpx.get(f"{base_url}/readyz", timeout=10)
        decision = httpx.post(f"{base_url}/v1/route", json={"prompt": "Which gas do plants use?"})
        completion = httpx.post(
            f"{base_url}/v1/chat/completions",
            json={"model": "uniroute", "messages": [{"role": "user", "content": "Which gas?"}]},
        )
    # Every enabled model lacks an endpoint: routable, but nothing can be called.
    assert ready.status_code == 503
    assert ready.json()["servable_models"] == 0 and ready.json()["registry_readable"] is True
    assert decision.status_code == 200 and decision.json()["servable_model"] is None
    assert decision.json()["warning"]  # never calibrated: routed with lambda = 0
    assert completion.status_code == 503
    assert completion.json()["error"]["code"] == "models_unavailable"


def test_prompts_arriving_together_share_one_encoder_call(
    tmp_path, artifact_dir, arc_dataset, replays
):
    router = make_registry(artifact_dir, tmp_path / "registry.db", arc_dataset,
                           {CHEAP: replays[CHEAP].v1_url}, calibrate=False)  # fmt: skip
    plain = router
    slow = SlowEncoder(router.artifact.encoder, 0.5)
    router = Router(WithEncoder(router.artifact, slow), router.registry)
    batches: list[int] = []
    original = slow.encode

    def counting_encode(texts, *, show_progress=None):
        batches.append(len(texts))
        return original(texts, show_progress=show_progress)

    slow.encode = counting_encode
    app = create_app(router, GatewayConfig(routing_threads=1))
    prompts = [str(t) for t in arc_dataset.prompts[:4]]
    with serve_in_thread(app) as base_url:
        decisions: dict[str, dict] = {}

        def route(prompt: str) -> None:
            response = httpx.post(f"{base_url}/v1/route", json={"prompt": prompt}, timeout=30)
            decisions[prompt] = response.json()

        first = threading.Thread(target=route, args=(prompts[0],))
        first.start()
        assert slow.started.wait(10)
        # Three more arrive while the first is being embedded: they wait, then go together.
        others = [threading.Thread(target=route, args=(p,)) for p in prompts[1:]]
        for thread in others:
            thread.start()
        for thread in [first, *others]:
            thread.join(timeout=30)
    assert batches == [1, 3]
    # Batched or not, each prompt gets the decision the router gives it alone.
    for prompt in prompts:
        assert decisions[prompt]["model"] == plain.route(prompt).model


def _on_event_loop() -> bool:
    """Whether the caller runs on an event loop's thread (not in a worker thread)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class WhereEncoded:
    """Replaces an encoder's ``encode`` (on the instance: its class is unchanged) with one that
    records, for each call, whether it ran on the event loop."""

    def __init__(self, encoder) -> None:
        self.on_loop: list[bool] = []
        inner = encoder.encode

        def encode(texts, *, show_progress=None):
            self.on_loop.append(_on_event_loop())
            return inner(texts, show_progress=show_progress)

        encoder.encode = encode


def _unserved_router(tmp_path: Path, artifact_dir: Path, arc_dataset) -> Router:
    """A router over the training models (no endpoints): /v1/route needs no upstream."""
    router = make_registry(artifact_dir, tmp_path / "registry.db", arc_dataset, {},
                           calibrate=False)  # fmt: skip
    seed_registry(router.artifact, router.registry)
    router.refresh()
    return router


def test_tfidf_prompts_are_routed_on_the_event_loop(tmp_path, artifact_dir, arc_dataset):
    router = _unserved_router(tmp_path, artifact_dir, arc_dataset)
    assert isinstance(router.artifact.encoder, TfidfSvdEncoder)
    assert router.inline_max_chars == TfidfSvdEncoder.inline_max_chars > 0
    watched = WhereEncoded(router.artifact.encoder)
    app = create_app(router, GatewayConfig(routing_threads=1))
    batcher = app.state.gateway.batcher
    prompts = [str(t) for t in arc_dataset.prompts[:5]]
    long_prompt = " ".join(prompts * 40)[: router.inline_max_chars + 1]
    with serve_in_thread(app) as base_url:
        answers = [
            httpx.post(f"{base_url}/v1/route", json={"prompt": p, "model": "uniroute:lambda=5"})
            for p in prompts
        ]
        assert watched.on_loop == [True] * len(prompts)
        assert batcher.routed_inline == len(prompts) and batcher.routed_in_threads == 0
        # A prompt longer than the encoder declares cheap goes to the routing thread.
        long_answer = httpx.post(f"{base_url}/v1/route", json={"prompt": long_prompt}, timeout=30)
    assert watched.on_loop[-1] is False
    assert batcher.routed_inline == len(prompts) and batcher.routed_in_threads == 1
    for prompt, answer in zip(prompts, answers, strict=True):
        assert answer.status_code == 200
        assert answer.json()["model"] == router.route(prompt, lam=5.0).model
    assert long_answer.status_code == 200
    assert long_answer.json()["model"] == router.route(long_prompt).model


def test_an_encoder_not_declared_cheap_is_never_run_on_the_event_loop(
    tmp_path, artifact_dir, arc_dataset
):
    router = _unserved_router(tmp_path, artifact_dir, arc_dataset)
    # As fast as TF-IDF, but its class declares nothing: like MiniLM, it is batched in threads.
    wrapped = SlowEncoder(router.artifact.encoder, 0.0)
    router = Router(WithEncoder(router.artifact, wrapped), router.registry)
    assert router.inline_max_chars == 0
    watched = WhereEncoded(wrapped)
    app = create_app(router, GatewayConfig(routing_threads=1))
    batcher = app.state.gateway.batcher
    prompts = [str(t) for t in arc_dataset.prompts[:3]]
    with serve_in_thread(app) as base_url:
        answers = [httpx.post(f"{base_url}/v1/route", json={"prompt": p}) for p in prompts]
    assert all(answer.status_code == 200 for answer in answers)
    assert watched.on_loop == [False] * len(prompts)
    assert batcher.routed_inline == 0 and batcher.routed_in_threads == len(prompts)
