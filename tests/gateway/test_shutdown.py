"""Shutting down under traffic: drain, stop accepting, let open requests finish, exit.

A gateway over one slow replay upstream (every answer takes a while, streams come word by word)
gets SIGTERM while plain and streamed requests are open: during the drain ``/readyz`` says
``draining`` and new requests are still served; then the listener closes; every request that
was open completes in full; the process exits. With a short grace period, what is still open
then is answered 503 (nothing had been sent yet) and the process exits anyway.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from urllib.parse import urlsplit

import httpx
import pytest

from tests.gateway.support import MID, child_env, make_registry
from uniroute.testing.harness import write_config
from uniroute.testing.process import GatewayProcess
from uniroute.testing.replay import start_replays

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def slow_upstream(arc_file):
    """One replay upstream of MID whose answers take 1.2 s (streams: 60 ms per chunk)."""
    servers = start_replays(arc_file, [MID], env=child_env())
    servers[MID].set_fault(delay_ms=1200, chunk_delay_ms=60)
    yield servers[MID]
    servers[MID].stop()


def _gateway(folder, artifact_dir, arc_dataset, upstream, **settings) -> GatewayProcess:
    registry = folder / "registry.db"
    make_registry(artifact_dir, registry, arc_dataset, {MID: upstream.v1_url}, calibrate=False)
    config = write_config(folder / "gateway.json", **settings)
    return GatewayProcess(artifact_dir, registry, config=config, env=child_env())


def _accepts(base_url: str) -> bool:
    parts = urlsplit(base_url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=0.5):
            return True
    except OSError:
        return False


def _ask(base_url: str, prompt: str, stream: bool, results: list) -> None:
    body = {"model": MID, "messages": [{"role": "user", "content": prompt}], "stream": stream}
    try:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            if stream:
                with client.stream("POST", "/v1/chat/completions", json=body) as answer:
                    text = "".join(answer.iter_text())
                results.append((answer.status_code, text.rstrip().endswith("data: [DONE]")))
            else:
                answer = client.post("/v1/chat/completions", json=body)
                results.append((answer.status_code, b'"choices"' in answer.content))
    except httpx.HTTPError as exc:
        results.append((type(exc).__name__, False))


def _start(base_url: str, prompts: list[str], results: list) -> list[threading.Thread]:
    threads = [
        threading.Thread(target=_ask, args=(base_url, p, i % 2 == 1, results), daemon=True)
        for i, p in enumerate(prompts)
    ]
    for thread in threads:
        thread.start()
    return threads


def test_sigterm_drains_then_finishes_open_requests_and_exits(
    tmp_path, artifact_dir, arc_dataset, slow_upstream, unique_prompts
) -> None:
    gateway = _gateway(tmp_path, artifact_dir, arc_dataset, slow_upstream,
                       shutdown_drain_s=1.5, shutdown_grace_s=20)  # fmt: skip
    with gateway:
        base = gateway.base_url
        assert httpx.get(base + "/readyz", timeout=10).status_code == 200
        results: list = []
        threads = _start(base, unique_prompts[:6], results)
        time.sleep(0.4)  # the six requests are waiting for the upstream
        assert gateway.process is not None
        gateway.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        ready = httpx.get(base + "/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["status"] == "draining"
        # Still accepted while draining: a request sent now is served in full.
        threads += _start(base, unique_prompts[6:7], results)
        deadline = time.monotonic() + 10
        while _accepts(base) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _accepts(base), "the listener stayed open after the drain"
        for thread in threads:
            thread.join(timeout=30)
        assert sorted(results) == [(200, True)] * 7, results
        gateway.process.wait(timeout=20)
        logs = gateway.log_text()
    assert "draining" in logs


def test_requests_still_open_after_the_grace_period_are_cut_off(
    tmp_path, artifact_dir, arc_dataset, slow_upstream, unique_prompts
) -> None:
    slow_upstream.set_fault(delay_ms=8000)
    try:
        gateway = _gateway(tmp_path, artifact_dir, arc_dataset, slow_upstream,
                           shutdown_drain_s=0, shutdown_grace_s=0.5)  # fmt: skip
        with gateway:
            results: list = []
            threads = _start(gateway.base_url, unique_prompts[:2], results)
            time.sleep(0.4)
            assert gateway.process is not None
            signalled = time.monotonic()
            gateway.process.send_signal(signal.SIGTERM)
            gateway.process.wait(timeout=10)
            exited_after = time.monotonic() - signalled
            for thread in threads:
                thread.join(timeout=10)
    finally:
        slow_upstream.set_fault(delay_ms=1200)
    assert exited_after < 5, exited_after
    # Cut off before a byte was sent: 503 shutting_down, which a client may retry elsewhere.
    assert sorted(results) == [(503, False)] * 2, results
