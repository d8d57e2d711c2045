"""Registry write and snapshot-load times on SQLite vs PostgreSQL, same run, same pool.

Writes ``--models`` models (default 1,000) one transaction each, as ``uniroute models add``
does: each with a score on every one of ``--prompts`` representative prompts (default 1,000,
as the MMLU-Pro artifact has), a canonical answer key and a short raw answer per prompt, and a
Psi vector of ``--psi-dim`` numbers. Then it times what a router reads from the registry to load
its first snapshot (``SnapshotReader.read`` with nothing cached: the pool version, the enabled
records, the score and answer-key matrices, the Psi rows, the policy), and the one-integer
revision check a server polls. Each backend gets a fresh registry: an SQLite file in a temporary
folder, and a new database on ``--postgres URL`` or, without it, on a throwaway PostgreSQL 15
cluster started on loopback (``uniroute.testing.postgres``, ``fsync=off`` as in the tests;
``--postgres`` measures a real server's durability settings instead).

    .venv/bin/python benchmarks/registry_backends.py [--models 1000] [--prompts 1000]
        [--loads 5] [--postgres postgresql://user@host:port/db]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from uniroute.registry import ModelAnswer, ModelCost, ModelRecord, Registry


def write_pool(registry: Registry, n_models: int, n_prompts: int, psi_dim: int) -> list[float]:
    """Add ``n_models`` complete models one transaction each; the seconds each add took."""
    rng = np.random.default_rng(0)
    prompts = [f"p{k:05d}" for k in range(n_prompts)]
    seconds = []
    for i in range(n_models):
        values = rng.random(n_prompts)
        scores = {p: float(v) for p, v in zip(prompts, values, strict=True)}
        answers = {
            p: ModelAnswer.of("ABCD"[int(v * 4) % 4], f"The answer is {'ABCD'[int(v * 4) % 4]}.")
            for p, v in zip(prompts, values, strict=True)
        }
        record = ModelRecord(name=f"model-{i:05d}", cost=ModelCost(per_query=0.001 * (i + 1)))
        started = time.perf_counter()
        registry.add_model(record, scores, {"artifact": rng.random(psi_dim)}, answers)
        seconds.append(time.perf_counter() - started)
    return seconds


def load_snapshot(registry: Registry, prompts: list[str]) -> tuple[float, int]:
    """Seconds for the registry reads of a first snapshot load; the number of models read."""
    started = time.perf_counter()
    registry.pool_version()
    records = registry.list_models(enabled_only=True)
    names = [r.name for r in records]
    scores = registry.scores_matrix(names, prompts)
    features = registry.get_features("artifact", names)
    keys, _ = registry.answers_matrix(names, prompts)
    registry.get_policy()
    elapsed = time.perf_counter() - started
    assert scores.shape == keys.shape == (len(prompts), len(names)) and len(features) == len(names)
    assert not np.isnan(scores).any()
    return elapsed, len(names)


def measure(location: str | Path, args: argparse.Namespace) -> dict[str, float]:
    """Write the pool into a fresh registry at ``location``, then time loads and checks."""
    prompts = [f"p{k:05d}" for k in range(args.prompts)]
    with Registry(location) as registry:
        started = time.perf_counter()
        adds = write_pool(registry, args.models, args.prompts, args.psi_dim)
        write_total = time.perf_counter() - started
        loads = []
        for _ in range(args.loads):
            seconds, n_read = load_snapshot(registry, prompts)
            assert n_read == args.models
            loads.append(seconds)
        checks = []
        for _ in range(200):
            started = time.perf_counter()
            registry.pool_version()
            checks.append(time.perf_counter() - started)
    adds_sorted = sorted(adds)
    return {
        "write_total_s": write_total,
        "add_p50_ms": 1000 * statistics.median(adds),
        "add_p99_ms": 1000 * adds_sorted[min(len(adds) - 1, int(0.99 * len(adds)))],
        "load_median_s": statistics.median(loads),
        "load_min_s": min(loads),
        "check_p50_ms": 1000 * statistics.median(checks),
    }


ROWS = (
    ("write: all models, one transaction each", "write_total_s", "{:.1f} s"),
    ("write: one model (scores, answers, Psi), p50", "add_p50_ms", "{:.1f} ms"),
    ("write: one model, p99", "add_p99_ms", "{:.1f} ms"),
    ("snapshot load (registry reads), median", "load_median_s", "{:.2f} s"),
    ("snapshot load, best", "load_min_s", "{:.2f} s"),
    ("revision check (pool_version), p50", "check_p50_ms", "{:.3f} ms"),
)


def main() -> None:
    """Measure both backends in this run and print a table with the PostgreSQL/SQLite ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--psi-dim", type=int, default=64)
    parser.add_argument("--loads", type=int, default=5)
    parser.add_argument("--postgres", help="a database URL to use instead of a throwaway cluster")
    args = parser.parse_args()
    cluster = None
    with tempfile.TemporaryDirectory(prefix="uniroute-bench-") as folder:
        try:
            if args.postgres:
                url = args.postgres
            else:
                from uniroute.testing.postgres import PostgresCluster

                cluster = PostgresCluster().start()
                url = cluster.create_database()
            print(
                f"{args.models} models x {args.prompts} prompts (scores and answers), "
                f"Psi of {args.psi_dim}; {args.loads} loads"
            )
            results = {
                "SQLite": measure(Path(folder) / "pool.db", args),
                "PostgreSQL": measure(url, args),
            }
        finally:
            if cluster is not None:
                cluster.stop()
    print("| | SQLite | PostgreSQL | PostgreSQL / SQLite |\n|---|---:|---:|---:|")
    for label, key, form in ROWS:
        lite, pg = results["SQLite"][key], results["PostgreSQL"][key]
        print(f"| {label} | {form.format(lite)} | {form.format(pg)} | {pg / lite:.1f}x |")


if __name__ == "__main__":
    main()
