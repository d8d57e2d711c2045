"""Latency and throughput of the routing gateway on loopback, against calling upstreams directly.

Everything runs on this machine: replay upstreams (real RouterBench answers) and the gateway
(`uniroute serve`) in child processes, the load generator (asyncio + httpx) in this one, all on
127.0.0.1. For each concurrency (1 and 64) the same real RouterBench prompts are sent

* directly to the upstream the router picks for each prompt (the baseline),
* to the gateway with ``model="uniroute"`` (embedding + routing + proxying), and
* to the gateway naming that same model (proxying only),

and p50/p99 latencies, the added latency over the baseline and its ratio are printed, with
requests/s and the error count. The routing decision alone (embed + route, in process) is timed
for a ~200-token prompt with the TF-IDF artifact and with a MiniLM one.

    .venv/bin/python benchmarks/gateway_latency.py [--requests 2000] [--requests-single 300]

Loops are bounded by request counts; every request has a 30 s timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import numpy as np

from uniroute.artifact import build_artifact
from uniroute.data.loading import load_dataset
from uniroute.data.paths import default_cache_dir, default_data_dir
from uniroute.deployment import Router
from uniroute.deployment.pool_changes import calibrate, remove_model, seed_registry
from uniroute.embeddings.factory import EMBEDDING_CACHE_SUBDIR
from uniroute.errors import CalibrationError
from uniroute.registry.calibration import make_target
from uniroute.testing.harness import add_recorded_model
from uniroute.testing.process import GatewayProcess
from uniroute.testing.replay import ReplayServerProcess

#: What went wrong with each failed request, printed at the end.
ERROR_LOG: list[str] = []
MODELS = ("mistralai/mistral-7b-chat", "mistralai/mixtral-8x7b-chat", "gpt-4-1106-preview")
PROBE_TOKENS = 200


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of values."""
    return float(np.percentile(np.asarray(values), q))


def probe_prompt(texts: Sequence[str]) -> tuple[str, int]:
    """A real prompt cut to its last ~200 MiniLM tokens (the question end), and its length."""
    from tokenizers import Tokenizer

    from uniroute.embeddings.minilm import minilm_model_dir

    tokenizer = Tokenizer.from_file(str(minilm_model_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    text = max(texts, key=len)
    words = text.split(" ")
    for start in range(len(words)):
        candidate = " ".join(words[start:])
        n = len(tokenizer.encode(candidate, add_special_tokens=False).ids)
        if n <= PROBE_TOKENS:
            return candidate, n
    raise ValueError("no prompt long enough for the probe")


def time_calls(action: Callable[[], object], repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls (after one warm-up call)."""
    action()
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - started)
    return seconds


def routing_decision_times(router: Router, probe: str, repeats: int) -> dict[str, list[float]]:
    """Seconds for embed + route, embed alone, and route of a pre-embedded prompt."""
    X = router.embed([probe])
    return {
        "embed+route": time_calls(lambda: router.route(probe), repeats),
        "embed": time_calls(lambda: router.embed([probe]), repeats),
        "route (pre-embedded)": time_calls(lambda: router.route_embeddings(X), repeats),
    }


async def run_load(
    url: str | Callable[[dict], str], bodies: Sequence[dict], concurrency: int, warmup: int = 0
) -> tuple[list[float], int, float]:
    """Send every body once with ``concurrency`` in flight; (latencies, errors, wall seconds).

    The first ``warmup`` bodies are sent untimed on the same client (and so the same open
    connections), at the same concurrency, before the measured ones.
    """
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30.0, limits=limits, trust_env=False) as client:
        queue: asyncio.Queue[dict] = asyncio.Queue()

        async def worker() -> None:
            nonlocal errors
            while True:
                try:
                    body = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                started = time.perf_counter()
                try:
                    response = await client.post(url(body) if callable(url) else url, json=body)
                    ok = response.status_code == 200
                    if not ok:
                        ERROR_LOG.append(f"HTTP {response.status_code}: {response.text[:300]}")
                except httpx.HTTPError as exc:
                    ok = False
                    ERROR_LOG.append(f"client: {type(exc).__name__}: {exc}")
                latencies.append(time.perf_counter() - started)
                errors += not ok

        for body in bodies[:warmup]:
            queue.put_nowait(body)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        latencies.clear()
        errors = 0
        for body in bodies[warmup:]:
            queue.put_nowait(body)
        wall_started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - wall_started
    return latencies, errors, wall


def chat(prompt: str, model: str) -> dict:
    """A chat request body with one user message and a short answer."""
    return {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 16}


def build_tfidf(dataset, folder: Path, clusters: int) -> Path:
    """The TF-IDF (default settings) + K-means artifact the gateway serves."""
    out = folder / "artifact-tfidf"
    build_artifact(
        dataset, out, encoder="tfidf", router="uniroute-kmeans", val_fraction=0.1, seed=0,
        router_params={"n_clusters": clusters},
    )  # fmt: skip
    return out


def build_minilm(dataset, folder: Path, clusters: int) -> Router:
    """A MiniLM + K-means artifact with the training models as the pool (timing only).

    Its embeddings are kept in the project's embedding cache, so a second run skips them.
    """
    out = folder / "artifact-minilm"
    artifact = build_artifact(
        dataset, out, encoder="minilm", router="uniroute-kmeans", val_fraction=0.1, seed=0,
        router_params={"n_clusters": clusters},
        embedding_cache=default_cache_dir() / EMBEDDING_CACHE_SUBDIR,
    )  # fmt: skip
    router = Router.load(artifact, folder / "registry-minilm.db")
    seed_registry(artifact, router.registry)
    router.refresh()
    return router


def summary_row(label: str, latencies: list[float], errors: int, wall: float) -> str:
    """One printed line of a load phase."""
    return (
        f"  {label:<34} p50 {percentile(latencies, 50) * 1e3:8.2f} ms  "
        f"p99 {percentile(latencies, 99) * 1e3:8.2f} ms  {len(latencies) / wall:8.1f} req/s  "
        f"errors {errors}"
    )


def measure_decisions(
    args: argparse.Namespace, router: Router, probe: str, probe_tokens: int, folder: Path
) -> None:
    """Print the in-process decision time for the probe, TF-IDF and (unless skipped) MiniLM."""
    print(f"\nrouting decision, one prompt of {probe_tokens} MiniLM tokens, in process:")
    rows = [
        ("tfidf", label, seconds)
        for label, seconds in routing_decision_times(router, probe, args.decision_repeats).items()
    ]
    if not args.skip_minilm:
        started = time.perf_counter()
        arc = load_dataset(args.data / "arc_challenge_test.csv", "routerbench")
        minilm = build_minilm(arc, folder, args.clusters)
        print(f"  (built a MiniLM artifact on ARC test in {time.perf_counter() - started:.1f} s)")
        times = routing_decision_times(minilm, probe, max(30, args.decision_repeats // 6))
        rows += [("minilm", label, seconds) for label, seconds in times.items()]
    for encoder, label, seconds in rows:
        print(
            f"  {encoder:<7} {label:<22} p50 {percentile(seconds, 50) * 1e3:8.3f} ms  "
            f"p99 {percentile(seconds, 99) * 1e3:8.3f} ms  (n={len(seconds)})"
        )


def serve_pool(router: Router, dataset, replays: dict[str, ReplayServerProcess]) -> None:
    """Replace the pool by the replayed models (recorded scores and mean costs), calibrated so
    that the dearest model gets about a third of the representative prompts."""
    for record in router.registry.list_models():
        remove_model(router, record.name)
    costs = [float(dataset.model_costs[dataset.model_index(model)]) for model in MODELS]
    for model, cost in zip(MODELS, costs, strict=True):
        add_recorded_model(router, dataset, model, cost, endpoint=replays[model].v1_url)
    # A third, or the nearest share calibration can give (shares move in steps, and a target
    # is only met within a tolerance).
    for share in sorted((1 / 3, *np.arange(0.15, 0.56, 0.05)), key=lambda s: abs(s - 1 / 3)):
        try:
            policy = calibrate(router, make_target(target_share=(MODELS[-1], float(share))))
        except CalibrationError:
            continue
        print(f"calibrated: {policy.achieved:.0%} of the representative prompts to {MODELS[-1]}")
        return
    raise CalibrationError(f"no lambda gives {MODELS[-1]} between 15% and 55% of the traffic")


def measure_http(
    gateway: GatewayProcess,
    upstream_of: dict[str, str],
    prompts: list[str],
    decided: dict[str, str],
    concurrency: int,
    n: int,
) -> tuple[dict[str, tuple[list[float], int, float]], float]:
    """The three load phases at one concurrency, each after an untimed warm-up, and the mean
    routing time the gateway measured itself during the routed phase."""
    warm = max(50, 4 * concurrency)
    chosen = [prompts[i % len(prompts)] for i in range(n + warm)]
    direct = [chat(p, decided[p]) for p in chosen]
    routed = [chat(p, "uniroute") for p in chosen]
    named = [chat(p, decided[p]) for p in chosen]
    gateway_url = gateway.v1_url + "/chat/completions"

    def upstream_url(body: dict) -> str:
        return upstream_of[body["model"]] + "/chat/completions"

    phases = {
        "direct to the upstream": asyncio.run(run_load(upstream_url, direct, concurrency, warm))
    }
    total_before, count_before = gateway_routing_time(gateway)
    phases["gateway, model=uniroute"] = asyncio.run(
        run_load(gateway_url, routed, concurrency, warm)
    )
    total_after, count_after = gateway_routing_time(gateway)
    phases["gateway, model named"] = asyncio.run(run_load(gateway_url, named, concurrency, warm))
    return phases, (total_after - total_before) / max(1, count_after - count_before)


def print_http(
    figures: dict[int, tuple[dict[str, tuple[list[float], int, float]], float]],
) -> None:
    """Latency, throughput and added latency (absolute and as a ratio) per concurrency."""
    for concurrency, (phases, routing_seconds) in figures.items():
        n = len(next(iter(phases.values()))[0])
        print(f"\nconcurrency {concurrency} ({n} requests per phase):")
        for label, (latencies, errors, wall) in phases.items():
            print(summary_row(label, latencies, errors, wall))
        base = phases["direct to the upstream"][0]
        for label in ("gateway, model=uniroute", "gateway, model named"):
            latencies = phases[label][0]
            for q in (50, 99):
                added = percentile(latencies, q) - percentile(base, q)
                ratio = percentile(latencies, q) / percentile(base, q)
                print(f"    {label:<26} added p{q}: {added * 1e3:8.2f} ms (x{ratio:.2f} of direct)")
        print(
            "    routing inside the gateway (wait for a routing thread + embed + route), mean "
            f"{routing_seconds * 1e3:.2f} ms"
        )


def gateway_routing_time(gateway: GatewayProcess) -> tuple[float, int]:
    """Total seconds the gateway spent routing (its own histogram) and the number of requests."""
    total = count = 0.0
    for line in httpx.get(f"{gateway.base_url}/metrics").text.splitlines():
        if line.startswith("uniroute_routing_latency_seconds_sum"):
            total = float(line.split()[-1])
        elif line.startswith("uniroute_routing_latency_seconds_count"):
            count = float(line.split()[-1])
    return total, int(count)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_dir() / "routerbench")
    parser.add_argument("--requests", type=int, default=2000, help="requests per phase at c=64")
    parser.add_argument("--requests-single", type=int, default=300, help="per phase at c=1")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=10, help="K of the K-means map")
    parser.add_argument("--decision-repeats", type=int, default=300)
    parser.add_argument("--skip-minilm", action="store_true")
    args = parser.parse_args(argv)

    dataset = load_dataset(args.data, "routerbench")
    probe, probe_tokens = probe_prompt([str(t) for t in dataset.prompts])
    print(f"data: {dataset.summary()}; cores: {os.cpu_count()}; python {sys.version.split()[0]}")
    print("load average at start (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))

    with tempfile.TemporaryDirectory(prefix="uniroute-gw-bench-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        artifact_dir = build_tfidf(dataset, folder, args.clusters)
        print(f"built the tf-idf artifact in {time.perf_counter() - started:.1f} s")
        registry_path = folder / "registry.db"
        router = Router.load(artifact_dir, registry_path)
        seed_registry(router.artifact, router.registry)
        router.refresh()
        measure_decisions(args, router, probe, probe_tokens, folder)

        replays = {m: ReplayServerProcess(args.data, m) for m in MODELS}
        figures: dict[int, tuple[dict[str, tuple[list[float], int, float]], float]] = {}
        try:
            for server in replays.values():
                server.start()
            serve_pool(router, dataset, replays)
            prompts = list(dict.fromkeys(str(t) for t in dataset.prompts))
            decided = {p: d.model for p, d in zip(prompts, router.route(prompts), strict=True)}
            print("\nserved pool (per-query cost, share of the RouterBench prompts routed to it):")
            for model in MODELS:
                share = sum(1 for v in decided.values() if v == model) / len(decided)
                print(f"  {model:<30} {router.snapshot.pool.cost(model):.6f}  {share:.0%}")
            env = {**os.environ}
            env.pop("UNIROUTE_CLIENT_KEYS", None)
            with GatewayProcess(artifact_dir, registry_path, env=env) as gateway:
                upstream_of = {m: replays[m].v1_url for m in MODELS}
                loads = ((1, args.requests_single), (args.concurrency, args.requests))
                for concurrency, n in loads:
                    figures[concurrency] = measure_http(
                        gateway, upstream_of, prompts, decided, concurrency, n
                    )
                print_http(figures)
        finally:
            for server in replays.values():
                server.stop()
    errors = sum(e for phases, _ in figures.values() for _, e, _ in phases.values())
    print(f"errors over all phases: {errors}")
    for line in sorted(set(ERROR_LOG)):
        print(f"  {ERROR_LOG.count(line)} x {line}")
    print("load average at end (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
