"""Routed traffic while one upstream misbehaves: failed client requests out of total.

Everything runs on this machine, on loopback: three replay upstreams standing for RouterBench
models (real recorded answers), ``uniroute serve`` over a TF-IDF + K-means artifact, and the
load generator (asyncio + httpx) in this process. Two parts:

* **Faults.** For each fault of the model that takes the most routed traffic (killed, hanging,
  HTTP 500, garbage, nested JSON, a 100 MB answer, dying or stalling mid-answer, a stream without
  ``[DONE]``), streamed and not, a fresh gateway gets ``--requests`` routed requests at
  concurrency ``--fault-concurrency`` (default 1: each broken stream is seen before the next one
  starts). Printed per row: requests, failed before the first byte (a status other than
  200), ended by an in-band error after the first byte, whether that model's breaker opened, and
  the gateway's peak resident memory.
  Target: 0 failed before the first byte; in-band errors only until the breaker opens: at most
  its threshold plus the streams already in flight (fault concurrency - 1).
* **Load.** Concurrency ``--concurrency`` for ``--seconds`` seconds with the top model
  SIGKILLed at a third of the run, non-streamed and streamed. Target: 0 failed requests; a
  stream that was already flowing from the killed model can only end in-band (counted apart).

    .venv/bin/python benchmarks/upstream_faults.py [--requests 60] [--seconds 30]

Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import httpx

from uniroute.artifact import build_artifact
from uniroute.data.loading import load_dataset
from uniroute.data.paths import default_data_dir
from uniroute.deployment import Router
from uniroute.deployment.pool_changes import remove_model, seed_registry
from uniroute.testing.harness import add_recorded_model, write_config
from uniroute.testing.process import GatewayProcess
from uniroute.testing.replay import ReplayServerProcess

MODELS = ("mistralai/mistral-7b-chat", "mistralai/mixtral-8x7b-chat", "gpt-4-1106-preview")
#: (label, how the top model misbehaves): a replay fault, or "killed" (SIGKILL before the run).
FAULTS = [
    ("killed", None),
    ("hanging", {"hostile": "hang"}),
    ("HTTP 500", {"fail_rate": 1.0, "fail_status": 500}),
    ("garbage", {"hostile": "garbage"}),
    ("nested JSON", {"hostile": "nested_json"}),
    ("100 MB answer", {"hostile": "huge"}),
    ("dies mid-answer", {"hostile": "die"}),
    ("stalls mid-answer", {"hostile": "stall"}),
    ("stream without [DONE]", {"hostile": "no_done"}),
]
CONFIG = {
    "upstream_timeout_s": 2.0, "stream_idle_timeout_s": 1.0, "connect_retries": 1,
    "breaker_failure_threshold": 3, "breaker_cooldown_s": 30.0, "max_models_per_request": 3,
    "max_upstream_body_bytes": 8_000_000,
}  # fmt: skip


def outcome(response: httpx.Response, stream: bool) -> str:
    """``ok``, ``failed`` (no 200: nothing usable reached the client) or ``in_band`` (a 200
    stream that ended with an error event or without ``[DONE]``)."""
    if response.status_code != 200:
        return "failed"
    if not stream:
        try:
            body = json.loads(response.content)
        except ValueError:
            return "failed"
        return "ok" if isinstance(body, dict) and body.get("choices") else "failed"
    lines = [ln[5:].strip() for ln in response.text.splitlines() if ln.startswith("data:")]
    if not lines or lines[-1] != "[DONE]" or any('"error"' in ln for ln in lines):
        return "in_band"
    return "ok"


async def send(client: httpx.AsyncClient, url: str, prompt: str, stream: bool) -> str:
    """One routed chat request; its outcome."""
    body = {"model": "uniroute", "messages": [{"role": "user", "content": prompt}]}
    if stream:
        body["stream"] = True
    try:
        response = await client.post(url, json=body)
    except httpx.HTTPError as exc:
        return f"failed ({type(exc).__name__})"
    return outcome(response, stream)


async def fixed_run(url: str, prompts: list[str], stream: bool, concurrency: int) -> list[str]:
    """Send every prompt once with ``concurrency`` in flight; the outcomes."""
    queue = collections.deque(prompts)
    outcomes: list[str] = []
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits, trust_env=False) as client:

        async def worker() -> None:
            while queue:
                outcomes.append(await send(client, url, queue.popleft(), stream))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes


async def timed_run(
    url: str, prompts: list[str], stream: bool, concurrency: int, seconds: float, kill
) -> list[str]:
    """Keep ``concurrency`` requests in flight for ``seconds``; ``kill()`` runs at a third."""
    outcomes: list[str] = []
    stop_at = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits, trust_env=False) as client:

        async def worker(offset: int) -> None:
            i = offset
            while time.monotonic() < stop_at:
                outcomes.append(await send(client, url, prompts[i % len(prompts)], stream))
                i += concurrency

        async def killer() -> None:
            await asyncio.sleep(seconds / 3)
            kill()

        await asyncio.gather(killer(), *(worker(i) for i in range(concurrency)))
    return outcomes


def breaker_opened(gateway: GatewayProcess, model: str) -> bool:
    """Whether the gateway's breaker of ``model`` is open (the cool-down outlasts a row)."""
    text = httpx.get(f"{gateway.base_url}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith("uniroute_circuit_open{") and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1]) > 0
    return False


def peak_rss_mb(pid: int) -> float:
    """The peak resident memory of a process so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Pool:
    """Replay upstreams for MODELS, and a registry that routes to them."""

    def __init__(self, data: Path, dataset, folder: Path) -> None:
        self.data, self.dataset, self.folder = data, dataset, folder
        self.artifact = folder / "artifact"
        build_artifact(
            dataset, self.artifact, encoder="tfidf", router="uniroute-kmeans", val_fraction=0.1,
            seed=0, router_params={"n_clusters": 10},
        )  # fmt: skip
        self.registry = folder / "registry.db"
        self.replays: dict[str, ReplayServerProcess] = {}

    def start(self) -> None:
        """(Re)start every replay upstream and point the registry at them."""
        self.stop()
        self.replays = {m: ReplayServerProcess(self.data, m).start() for m in MODELS}
        router = Router.load(self.artifact, self.registry)
        if not router.registry.list_models():
            seed_registry(router.artifact, router.registry)
        for record in router.registry.list_models():
            remove_model(router, record.name)
        for model in MODELS:
            cost = float(self.dataset.model_costs[self.dataset.model_index(model)])
            add_recorded_model(
                router, self.dataset, model, cost, endpoint=self.replays[model].v1_url
            )
        router.registry.close()

    def stop(self) -> None:
        """Stop every replay upstream."""
        for server in self.replays.values():
            server.stop()

    def top_model(self, prompts: list[str]) -> tuple[str, float]:
        """The model taking the most routed traffic, and its share."""
        router = Router.load(self.artifact, self.registry)
        counts = collections.Counter(d.model for d in router.route(prompts))
        router.registry.close()
        model, n = counts.most_common(1)[0]
        return model, n / len(prompts)


def main(argv: list[str] | None = None) -> int:
    """Run both parts and print their tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_dir() / "routerbench")
    parser.add_argument("--requests", type=int, default=60, help="per fault row")
    parser.add_argument("--fault-concurrency", type=int, default=1, help="of the fault rows")
    parser.add_argument("--concurrency", type=int, default=64, help="of the load part")
    parser.add_argument("--seconds", type=float, default=30.0, help="of each load run")
    args = parser.parse_args(argv)
    dataset = load_dataset(args.data, "routerbench")
    print(f"data: {dataset.summary()}; cores: {os.cpu_count()}")
    missed = 0
    with tempfile.TemporaryDirectory(prefix="uniroute-faults-") as tmp:
        pool = Pool(args.data, dataset, Path(tmp))
        config = write_config(Path(tmp) / "gateway.json", **CONFIG)
        env = {k: v for k, v in os.environ.items() if k != "UNIROUTE_CLIENT_KEYS"}
        try:
            pool.start()
            prompts = list(dict.fromkeys(str(t) for t in dataset.prompts))
            top, share = pool.top_model(prompts)
            router = Router.load(pool.artifact, pool.registry)
            to_top = [
                p for p, d in zip(prompts, router.route(prompts), strict=True) if d.model == top
            ]
            router.registry.close()
            print(f"top model: {top} ({share:.0%} of the RouterBench prompts routed to it)")
            print(
                f"\n{'fault of the top model':<24}{'stream':>7}{'requests':>10}{'failed':>8}"
                f"{'in-band':>9}{'breaker opened':>16}{'peak RSS MB':>13}"
            )
            for label, fault in FAULTS:
                for stream in (False, True):
                    if label == "killed" or not stream or fault is None:
                        pool.start()  # fresh upstreams: none killed, no fault left over
                    with GatewayProcess(pool.artifact, pool.registry, config=config, env=env) as gw:
                        if fault is None:
                            pool.replays[top].process.kill()
                            pool.replays[top].process.wait()
                        else:
                            pool.replays[top].set_fault(**fault)
                        url = f"{gw.v1_url}/chat/completions"
                        outcomes = asyncio.run(
                            fixed_run(url, to_top[: args.requests], stream, args.fault_concurrency)
                        )
                        failed = sum(o.startswith("failed") for o in outcomes)
                        in_band = outcomes.count("in_band")
                        opened = breaker_opened(gw, top)
                        rss = peak_rss_mb(gw.process.pid)
                        print(f"{label:<24}{str(stream):>7}{len(outcomes):>10}{failed:>8}"
                              f"{in_band:>9}{str(opened):>16}{rss:>13.0f}", flush=True)  # fmt: skip
                        allowed = CONFIG["breaker_failure_threshold"] + args.fault_concurrency - 1
                        if failed or in_band > allowed:
                            missed += 1
                    if fault is not None:
                        pool.replays[top].set_fault()

            print(f"\nload: concurrency {args.concurrency} for {args.seconds:g} s, {top} "
                  f"SIGKILLed at {args.seconds / 3:g} s")  # fmt: skip
            print(f"{'stream':>7}{'requests':>10}{'failed':>8}{'in-band':>9}{'req/s':>8}")
            for stream in (False, True):
                pool.start()
                with GatewayProcess(pool.artifact, pool.registry, config=config, env=env) as gw:
                    victim = pool.replays[top].process
                    started = time.monotonic()
                    outcomes = asyncio.run(
                        timed_run(
                            f"{gw.v1_url}/chat/completions", prompts, stream, args.concurrency,
                            args.seconds, victim.kill,
                        )
                    )  # fmt: skip
                    wall = time.monotonic() - started
                failed = sum(o.startswith("failed") for o in outcomes)
                in_band = outcomes.count("in_band")
                print(f"{str(stream):>7}{len(outcomes):>10}{failed:>8}{in_band:>9}"
                      f"{len(outcomes) / wall:>8.0f}", flush=True)  # fmt: skip
                reasons = collections.Counter(o for o in outcomes if o != "ok")
                for reason, n in reasons.most_common():
                    print(f"         {n} x {reason}")
                missed += bool(failed or (in_band and not stream))
        finally:
            pool.stop()
    print(f"\ntargets missed: {missed}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
