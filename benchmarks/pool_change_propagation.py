"""How long a pool change made through one gateway replica takes to reach another, pushed or polled.

Everything runs on this machine, on loopback: a throwaway PostgreSQL 15 cluster
(``uniroute.testing.postgres``) holding the registry, one replay upstream (real RouterBench ARC
answers) and two gateway replicas (``uniroute serve``, child processes) on that registry. The
same run measures two set-ups, each with a fresh pair of replicas:

* **push**: ``registry_listen`` on (LISTEN/NOTIFY) and ``registry_poll_s`` = 30, so only the
  notification can explain a fast update;
* **poll only**: ``registry_listen`` off and ``registry_poll_s`` = 1 (the default).

For each, N changes are made through replica A's admin API, alternately adding a model (``POST
/admin/models`` with its recorded scores) and removing it (``DELETE``), each after a random
pause of up to 1 s (so that changes fall at any moment of B's poll period); the propagation
time of one change runs from A's answer (the change is committed by then) until replica B's
``/v1/models`` agrees, checked every 5 ms. Printed: p50, p99 and max per set-up, and the
poll/push ratio.

    nice -n 19 .venv/bin/python benchmarks/pool_change_propagation.py [--changes 40]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from uniroute.artifact import build_artifact
from uniroute.data.loading import load_dataset
from uniroute.data.paths import default_data_dir
from uniroute.deployment import Router
from uniroute.testing.harness import add_recorded_model, recorded_scores, write_config
from uniroute.testing.postgres import PostgresCluster
from uniroute.testing.process import GatewayProcess
from uniroute.testing.replay import ReplayServerProcess

SERVED = "mistralai/mixtral-8x7b-chat"
CHANGED = "claude-instant-v1"
ADMIN_TOKEN = "bench-admin-token"
# Longest random pause before a change (one poll period).
PAUSE_S = 1.0
# Gives up on one change after this long (a poll of 1 s can never take this long).
GIVE_UP_S = 10.0
SETUPS = {
    "push": {"registry_poll_s": 30.0, "registry_listen": True},
    "poll only": {"registry_poll_s": 1.0, "registry_listen": False},
}


def served(client: httpx.Client) -> set[str]:
    """The model ids a replica lists."""
    response = client.get("/v1/models")
    response.raise_for_status()
    return {model["id"] for model in response.json()["data"]}


def propagation_times(
    a: httpx.Client, b: httpx.Client, body: dict[str, Any], n: int, seed: int
) -> list[float]:
    """Seconds from A acknowledging each of ``n`` changes until B lists the pool it made."""
    pauses = random.Random(seed)
    times = []
    for i in range(n):
        # A random pause first: back to back, each change would come just after B's previous
        # poll and always wait a whole period; real changes come at any moment.
        time.sleep(pauses.uniform(0.0, PAUSE_S))
        add = i % 2 == 0
        if add:
            response = a.post("/admin/models", json=body)
        else:
            response = a.delete(f"/admin/models/{CHANGED}")
        response.raise_for_status()
        acknowledged = time.monotonic()
        while (CHANGED in served(b)) != add:
            if time.monotonic() - acknowledged > GIVE_UP_S:
                raise SystemExit(f"replica B did not see change {i} within {GIVE_UP_S:g} s")
            time.sleep(0.005)
        times.append(time.monotonic() - acknowledged)
    return times


def measure(
    artifact: Path, url: str, folder: Path, name: str, body: dict[str, Any], n: int
) -> list[float]:
    """Two fresh replicas in one set-up; the propagation time of each of ``n`` changes."""
    config = write_config(folder / f"gateway-{name.replace(' ', '-')}.json", **SETUPS[name])
    env = {**os.environ, "UNIROUTE_ADMIN_TOKEN": ADMIN_TOKEN}
    env.pop("UNIROUTE_CLIENT_KEYS", None)
    auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    with (
        GatewayProcess(artifact, url, config=config, env=env) as replica_a,
        GatewayProcess(artifact, url, config=config, env=env) as replica_b,
        httpx.Client(base_url=replica_a.base_url, headers=auth, timeout=30) as a,
        httpx.Client(base_url=replica_b.base_url, timeout=30) as b,
    ):
        if name == "push":  # wait until B listens (it connects right after start-up)
            deadline = time.monotonic() + 15
            while "registry listener connected" not in replica_b.log_text():
                if time.monotonic() > deadline:
                    raise SystemExit("replica B never started listening")
                time.sleep(0.05)
        return propagation_times(a, b, body, n, seed=0)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=default_data_dir() / "routerbench" / "arc_challenge_test.csv"
    )
    parser.add_argument("--changes", type=int, default=40, help="changes per set-up")
    args = parser.parse_args(argv)

    dataset = load_dataset(args.data, "routerbench")
    print(f"data: {dataset.summary()}; cores: {os.cpu_count()}; python {sys.version.split()[0]}")
    print("load average at start (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    with tempfile.TemporaryDirectory(prefix="uniroute-propagation-") as tmp:
        folder = Path(tmp)
        artifact = build_artifact(
            dataset, folder / "artifact", encoder="tfidf", router="uniroute-kmeans",
            holdout_models=[CHANGED], seed=0, router_params={"n_clusters": 6},
        )  # fmt: skip
        cluster = PostgresCluster().start()
        upstream = ReplayServerProcess(args.data, SERVED)
        try:
            upstream.start()
            url = cluster.create_database()
            router = Router.load(artifact, url)
            add_recorded_model(router, dataset, SERVED, 0.0004, endpoint=upstream.v1_url)
            router.registry.close()
            body = {
                "name": CHANGED,
                "cost": 0.00005,
                "endpoint": upstream.v1_url,
                "scores": recorded_scores(dataset, CHANGED, artifact.prompt_ids),
            }
            figures = {
                name: measure(artifact.path, url, folder, name, body, args.changes)
                for name in SETUPS
            }
        finally:
            upstream.stop()
            cluster.stop()

    print(f"\n{args.changes} changes through replica A per set-up; propagation to replica B:")
    print(f"{'set-up':<12} {'settings':<46} {'p50':>8} {'p99':>8} {'max':>8}")
    stats = {}
    for name, times in figures.items():
        p50, p99 = np.percentile(times, [50, 99])
        stats[name] = (p50, p99)
        settings = ", ".join(f"{k}={v}" for k, v in SETUPS[name].items())
        print(f"{name:<12} {settings:<46} {p50 * 1e3:6.1f}ms {p99 * 1e3:6.1f}ms "
              f"{max(times) * 1e3:6.1f}ms")  # fmt: skip
    push, poll = stats["push"], stats["poll only"]
    print(f"poll only / push: p50 {poll[0] / push[0]:.1f}x, p99 {poll[1] / push[1]:.1f}x")
    print("load average at end (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
