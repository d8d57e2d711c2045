"""deploy/haproxy.cfg and deploy/gateway.toml, as shipped: two replicas on one PostgreSQL
registry behind the balancer.

Under load at concurrency 32 (half the requests streamed), each replica in turn gets SIGTERM,
exits once its open requests are done, and is started again on its port: no client request
fails, every stream ends with ``data: [DONE]``, and both replicas serve again at the end.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.gateway.support import MID, child_env, make_registry
from uniroute.testing.harness import free_port
from uniroute.testing.process import GatewayProcess
from uniroute.testing.replay import start_replays

pytestmark = pytest.mark.slow

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
HAPROXY_CONFIG = DEPLOY / "haproxy.cfg"
#: The replicas' settings as shipped: a drain above the balancer's 2 failed checks x 500 ms.
GATEWAY_CONFIG = DEPLOY / "gateway.toml"
CONCURRENCY = 32


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _client(base_url: str, prompts: list[str], index: int, stop, outcomes: list) -> None:
    stream = index % 2 == 1
    with httpx.Client(base_url=base_url, timeout=60) as client:
        i = index
        while not stop.is_set():
            prompt = prompts[i % len(prompts)]
            body = {"model": MID, "messages": [{"role": "user", "content": prompt}]}
            try:
                if stream:
                    body["stream"] = True
                    with client.stream("POST", "/v1/chat/completions", json=body) as answer:
                        text = "".join(answer.iter_text())
                    ok = answer.status_code == 200 and text.rstrip().endswith("data: [DONE]")
                    outcomes.append("ok" if ok else f"stream {answer.status_code}: {text[-80:]}")
                else:
                    answer = client.post("/v1/chat/completions", json=body)
                    ok = answer.status_code == 200 and b'"choices"' in answer.content
                    outcomes.append("ok" if ok else f"{answer.status_code}: {answer.text[:80]}")
            except httpx.HTTPError as exc:
                outcomes.append(f"{type(exc).__name__}: {exc}")
            i += CONCURRENCY


def test_a_rolling_restart_behind_haproxy_fails_no_request(
    postgres_cluster, arc_file, arc_artifact, arc_dataset
) -> None:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.fail("haproxy is missing: install Debian's haproxy (make install does)")
    url = postgres_cluster.create_database()
    prompts = [str(p) for p in arc_dataset.prompts][:200]
    replays = start_replays(arc_file, [MID], env=child_env())
    # Answers take a while and streams longer, so requests are open (and streams mid-way) at
    # every signal.
    replays[MID].set_fault(delay_ms=150, chunk_delay_ms=100)
    make_registry(arc_artifact.path, url, arc_dataset, {MID: replays[MID].v1_url},
                  calibrate=False)  # fmt: skip
    config = GATEWAY_CONFIG
    ports = {"a": free_port(), "b": free_port()}

    def replica(name: str) -> GatewayProcess:
        return GatewayProcess(
            arc_artifact.path, url, config=config, port=ports[name], env=child_env()
        ).start()

    replicas = {name: replica(name) for name in ports}
    lb_port = free_port()
    lb_url = f"http://127.0.0.1:{lb_port}"
    env = {
        **os.environ,
        "UNIROUTE_LB_BIND": f"127.0.0.1:{lb_port}",
        "UNIROUTE_REPLICA_A": f"127.0.0.1:{ports['a']}",
        "UNIROUTE_REPLICA_B": f"127.0.0.1:{ports['b']}",
    }
    balancer = subprocess.Popen(
        [haproxy, "-db", "-f", str(HAPROXY_CONFIG)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    stop, outcomes = threading.Event(), []
    workers = []
    try:
        _wait(lambda: _ready(lb_url), 20, "the balancer to reach a replica")
        time.sleep(1.5)  # both replicas pass their first checks (rise 2 x 500 ms)
        workers = [
            threading.Thread(target=_client, args=(lb_url, prompts, i, stop, outcomes))
            for i in range(CONCURRENCY)
        ]
        for worker in workers:
            worker.start()
        time.sleep(2.0)
        before_restart = len(outcomes)
        for name in ("a", "b"):
            old = replicas[name]
            assert old.process is not None
            old.process.send_signal(signal.SIGTERM)
            old.process.wait(timeout=60)
            old.stop()  # joins its output readers
            replicas[name] = replica(name)
            base = f"http://127.0.0.1:{ports[name]}"
            _wait(lambda base=base: _ready(base), 30, f"replica {name} to be ready again")
            time.sleep(1.5)  # the balancer puts it back (rise 2 x 500 ms)
        time.sleep(2.0)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=90)
        balancer.terminate()
        balancer.wait(timeout=10)
        for process in replicas.values():
            process.stop()
        for server in replays.values():
            server.stop()
    failed = [o for o in outcomes if o != "ok"]
    print(f"rolling restart: {len(outcomes)} requests, {len(failed)} failed")
    assert not failed, (len(failed), len(outcomes), failed[:5])
    assert before_restart > 50 and len(outcomes) > 2 * before_restart, len(outcomes)
