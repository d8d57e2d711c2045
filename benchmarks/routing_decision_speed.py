"""Speed of one routing decision and of batched decisions: the previous path against today's.

Builds a TF-IDF (256 components) + K-means (K = 10) artifact on RouterBench and times, in the
same run,

* one decision (embed + route) for a real prompt cut to ~200 MiniLM tokens, over the artifact's
  training models: the previous path (sklearn's ``TfidfVectorizer.transform``, every decision
  computed) against today's (direct TF-IDF, decisions looked up per (cluster, policy));
* one decision for each of RouterBench's own prompts in turn (full length: 1,600 characters on
  average), the previous path against today's, the embedding alone too;
* the same decision asked through the gateway's batcher on an event loop: the previous serving
  path (a hop to a routing thread and back) against today's (inline on the loop);
* batched decisions per second over a synthetic pool of 1,000 models (real representative-
  prompt scores resampled, real costs jittered), for pre-embedded prompts and with embedding.

p50 and p99 are over repeated calls after a warm-up; every figure is printed with its ratio to
the previous path measured here, since the machine may be shared.

    .venv/bin/python benchmarks/routing_decision_speed.py [--repeats 2000] [--models 1000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import numpy as np

from uniroute.artifact import Artifact, build_artifact
from uniroute.data.loading import load_dataset
from uniroute.data.paths import default_data_dir
from uniroute.deployment import Decision, Router, Snapshot
from uniroute.deployment.pool_changes import seed_registry
from uniroute.embeddings.tfidf import TfidfSvdEncoder
from uniroute.gateway.batching import RouteItem, RoutingBatcher
from uniroute.pool import Endpoint, Pool

PROBE_TOKENS = 200
TARGET_DECISION_P50_MS = 0.3
TARGET_BATCHED_PER_S = 100_000
LAMBDA = 50.0


def probe_prompt(texts: Sequence[str]) -> tuple[str, int]:
    """The longest real prompt cut to its last ~200 MiniLM tokens (its question end)."""
    from tokenizers import Tokenizer

    from uniroute.embeddings.minilm import minilm_model_dir

    tokenizer = Tokenizer.from_file(str(minilm_model_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    words = max(texts, key=len).split(" ")
    for start in range(len(words)):
        candidate = " ".join(words[start:])
        n = len(tokenizer.encode(candidate, add_special_tokens=False).ids)
        if n <= PROBE_TOKENS:
            return candidate, n
    raise ValueError("no prompt long enough for the probe")


def time_calls(action: Callable[[], object], repeats: int) -> np.ndarray:
    """Seconds of each of ``repeats`` calls, after a few warm-up calls."""
    for _ in range(min(20, repeats)):
        action()
    seconds = np.empty(repeats)
    for i in range(repeats):
        started = time.perf_counter()
        action()
        seconds[i] = time.perf_counter() - started
    return seconds


def row(label: str, seconds: np.ndarray, baseline: np.ndarray | None = None) -> str:
    """One printed line: p50 and p99 in ms, and their ratio to the baseline's."""
    p50, p99 = np.percentile(seconds, 50) * 1e3, np.percentile(seconds, 99) * 1e3
    text = f"  {label:<48} p50 {p50:8.3f} ms  p99 {p99:8.3f} ms"
    if baseline is not None:
        b50, b99 = np.percentile(baseline, 50) * 1e3, np.percentile(baseline, 99) * 1e3
        text += f"   (p50 x{p50 / b50:.3f}, p99 x{p99 / b99:.3f} of previous)"
    return text


def previous_router(router: Router) -> Router:
    """The same artifact and registry with every decision computed (the previous path)."""
    return Router(router.artifact, router.registry, decision_tables=False)


def synthetic_pool(artifact: Artifact, n_models: int, seed: int = 0) -> Pool:
    """``n_models`` servable models built from the training models' real scores and costs.

    Model j has a base model; on each representative prompt it scores what its base model
    scored there with probability 0.6, else what a randomly drawn training model scored (so
    prompt difficulty and missing scores stay real); its cost is its base model's times a
    lognormal factor.
    """
    rng = np.random.default_rng(seed)
    scores = artifact.training_scores
    n_rep, m = scores.shape
    base = rng.integers(m, size=n_models)
    source = np.where(
        rng.random((n_rep, n_models)) < 0.6, base, rng.integers(m, size=(n_rep, n_models))
    )
    synthetic = scores[np.arange(n_rep)[:, None], source]
    # A model needs at least one score to be described: fall back to its base model's column.
    empty = ~np.isfinite(synthetic).any(axis=0)
    synthetic[:, empty] = scores[:, base[empty]]
    costs = artifact.training_costs[base] * rng.lognormal(0.0, 0.5, size=n_models)
    names = [f"synthetic-{j:04d}" for j in range(n_models)]
    endpoints = [Endpoint(f"http://127.0.0.1:9/v1/m{j}") for j in range(n_models)]
    return artifact.router.make_pool(names, synthetic, costs, endpoints=endpoints)


async def batcher_times(batcher: RoutingBatcher, item: RouteItem, repeats: int) -> np.ndarray:
    """Seconds of ``repeats`` sequential decisions through the batcher (concurrency 1)."""
    seconds = np.empty(repeats)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(batcher.run_worker)
        for _ in range(min(20, repeats)):
            await batcher.decide(item)
        for i in range(repeats):
            started = time.perf_counter()
            await batcher.decide(item)
            seconds[i] = time.perf_counter() - started
        tasks.cancel_scope.cancel()
    return seconds


def run_batcher(batcher: RoutingBatcher, item: RouteItem, repeats: int) -> np.ndarray:
    """``batcher_times`` on the event loop the gateway serves on (uvloop when installed)."""
    try:
        import uvloop  # noqa: F401

        options = {"use_uvloop": True}
    except ImportError:
        options = {}
    return anyio.run(batcher_times, batcher, item, repeats, backend_options=options)


def rate(seconds: np.ndarray, n: int) -> float:
    """Decisions per second from the median time of a call routing ``n`` prompts."""
    return n / float(np.median(seconds))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_dir() / "routerbench")
    parser.add_argument("--clusters", type=int, default=10, help="K of the K-means map")
    parser.add_argument("--repeats", type=int, default=2000, help="calls per single-decision row")
    parser.add_argument("--models", type=int, default=1000, help="models of the synthetic pool")
    parser.add_argument("--batch", type=int, default=1000, help="prompts per batched call")
    parser.add_argument("--batch-repeats", type=int, default=30)
    args = parser.parse_args(argv)

    dataset = load_dataset(args.data, "routerbench")
    texts = [str(t) for t in dataset.prompts]
    probe, probe_tokens = probe_prompt(texts)
    print(f"data: {dataset.summary()}; cores: {os.cpu_count()}; python {sys.version.split()[0]}")
    print("load average at start (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))

    with tempfile.TemporaryDirectory(prefix="uniroute-decision-bench-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        artifact = build_artifact(
            dataset, folder / "artifact", encoder="tfidf", router="uniroute-kmeans",
            val_fraction=0.1, seed=0, router_params={"n_clusters": args.clusters},
        )  # fmt: skip
        print(f"built the tf-idf artifact in {time.perf_counter() - started:.1f} s")
        router = Router.load(folder / "artifact", folder / "registry.db")
        seed_registry(router.artifact, router.registry)
        router.refresh()
        previous = previous_router(router)
        encoder = router.artifact.encoder
        assert isinstance(encoder, TfidfSvdEncoder)

        def previous_decision() -> Decision:
            return previous.route_embeddings(encoder.encode_with_sklearn([probe]), lam=LAMBDA)[0]

        def decision() -> Decision:
            return router.route(probe, lam=LAMBDA)

        assert previous_decision().to_dict() == decision().to_dict()
        n_pool = len(router.snapshot.pool)
        print(
            f"\none decision (embed + route), a {probe_tokens}-token prompt ({len(probe)} "
            f"characters), {n_pool} models, K = {artifact.n_clusters}, lambda = {LAMBDA:g}:"
        )
        before = time_calls(previous_decision, args.repeats)
        now = time_calls(decision, args.repeats)
        print(row("previous: sklearn transform + computed", before))
        print(row("today: direct tf-idf + (cluster, policy) table", now, before))
        X_probe = encoder.encode([probe])
        embed_before = time_calls(lambda: encoder.encode_with_sklearn([probe]), args.repeats)
        embed_now = time_calls(lambda: encoder.encode([probe]), args.repeats)
        lookup_before = time_calls(
            lambda: previous.route_embeddings(X_probe, lam=LAMBDA), args.repeats
        )
        lookup_now = time_calls(lambda: router.route_embeddings(X_probe, lam=LAMBDA), args.repeats)
        print(row("  embed, previous (sklearn transform)", embed_before))
        print(row("  embed, today (direct)", embed_now, embed_before))
        print(row("  route, previous (computed)", lookup_before))
        print(row("  route, today (table lookup)", lookup_now, lookup_before))

        cycle = iter(np.random.default_rng(0).permutation(len(texts)).tolist() * 1000)
        lengths = np.array([len(t) for t in texts])
        print(
            f"\none decision per prompt, RouterBench's prompts in turn (full length: median "
            f"{int(np.median(lengths))}, mean {lengths.mean():.0f} characters):"
        )
        full_before = time_calls(
            lambda: previous.route_embeddings(
                encoder.encode_with_sklearn([texts[next(cycle)]]), lam=LAMBDA
            ),
            args.repeats,
        )
        full_now = time_calls(lambda: router.route(texts[next(cycle)], lam=LAMBDA), args.repeats)
        full_embed = time_calls(lambda: encoder.encode([texts[next(cycle)]]), args.repeats)
        print(row("previous: sklearn transform + computed", full_before))
        print(row("today: direct tf-idf + (cluster, policy) table", full_now, full_before))
        print(row("  of which embedding, today", full_embed))

        print("\nthe same decision through the gateway's batcher, on an event loop (c=1):")
        item = RouteItem(probe, LAMBDA, None, router.snapshot)
        previous_item = RouteItem(probe, LAMBDA, None, previous.snapshot)
        limiter = anyio.CapacityLimiter(2)

        def previous_embed(batch: Sequence[str]) -> np.ndarray:
            return encoder.encode_with_sklearn(batch)

        serving_before = run_batcher(
            RoutingBatcher(previous_embed, previous.route_embeddings, limiter), previous_item,
            args.repeats // 2,
        )  # fmt: skip
        threaded_now = run_batcher(
            RoutingBatcher(router.embed, router.route_embeddings, limiter), item,
            args.repeats // 2,
        )  # fmt: skip
        inline_now = run_batcher(
            RoutingBatcher(
                router.embed, router.route_embeddings, limiter,
                inline_max_chars=router.inline_max_chars,
            ),
            item, args.repeats // 2,
        )  # fmt: skip
        print(row("previous: routing thread, sklearn, computed", serving_before))
        print(row("today's maths in a routing thread", threaded_now, serving_before))
        print(row("today: inline on the loop", inline_now, serving_before))

        print(f"\nbatched decisions, synthetic pool of {args.models} models:")
        started = time.perf_counter()
        pool = synthetic_pool(router.artifact, args.models)
        snapshot = Snapshot(pool, (), f"synthetic-{args.models}", None, None)
        print(f"  (pool described in {time.perf_counter() - started:.1f} s)")
        batch = [texts[i % len(texts)] for i in range(args.batch)]
        X = encoder.encode(batch)

        def route_previous() -> list[Decision]:
            return previous.route_embeddings(X, lam=LAMBDA, snapshot=snapshot)

        def route_now() -> list[Decision]:
            return router.route_embeddings(X, lam=LAMBDA, snapshot=snapshot)

        def first_decision() -> list[Decision]:
            # A fresh snapshot of the same pool: this one prompt's call builds the policy's table.
            fresh = Snapshot(pool, (), snapshot.fingerprint, None, None)
            return router.route_embeddings(X[:1], lam=LAMBDA, snapshot=fresh)

        cold = time_calls(first_decision, 200)
        check_previous = route_previous()
        check_now = route_now()
        assert [d.to_dict() for d in check_previous] == [d.to_dict() for d in check_now]
        routed_before = rate(time_calls(route_previous, args.batch_repeats), len(X))
        routed_now = rate(time_calls(route_now, args.batch_repeats), len(X))
        print(
            f"  first decision of a policy on a snapshot (builds its {artifact.n_clusters}-row "
            f"table): p50 {np.median(cold) * 1e3:.3f} ms"
        )
        print(f"  pre-embedded, previous (computed)     {routed_before:12,.0f} decisions/s")
        print(
            f"  pre-embedded, today (table lookup)    {routed_now:12,.0f} decisions/s"
            f"   (x{routed_now / routed_before:.1f} of previous)"
        )
        repeats = max(3, args.batch_repeats // 5)
        embedded_before = rate(
            time_calls(
                lambda: previous.route_embeddings(
                    encoder.encode_with_sklearn(batch), lam=LAMBDA, snapshot=snapshot
                ),
                repeats,
            ),
            len(batch),
        )
        embedded_now = rate(
            time_calls(
                lambda: router.route_embeddings(
                    encoder.encode(batch), lam=LAMBDA, snapshot=snapshot
                ),
                repeats,
            ),
            len(batch),
        )
        print(f"  with embedding, previous              {embedded_before:12,.0f} decisions/s")
        print(
            f"  with embedding, today                 {embedded_now:12,.0f} decisions/s"
            f"   (x{embedded_now / embedded_before:.1f} of previous)"
        )

    p50_ms = float(np.percentile(now, 50) * 1e3)
    print("\ntargets:")
    print(
        f"  one decision p50 <= {TARGET_DECISION_P50_MS} ms: {p50_ms:.3f} ms, "
        f"{'met' if p50_ms <= TARGET_DECISION_P50_MS else 'NOT met'}"
    )
    print(
        f"  batched >= {TARGET_BATCHED_PER_S:,} decisions/s with {args.models} models "
        f"(pre-embedded): {routed_now:,.0f}, "
        f"{'met' if routed_now >= TARGET_BATCHED_PER_S else 'NOT met'}"
    )
    print("load average at end (1, 5, 15 min): {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
