"""What the dashboard's estimate map and trade-off cost to compute, and what they cost kept.

Builds a TF-IDF + K-means artifact of RouterBench (10% of the prompts representative), puts
every one of its LLMs in a registry with its recorded scores and price, and times, on the
snapshot routing uses, the first ``pool_tradeoff`` and ``estimate_map`` (computed: the cost the
first dashboard request after a pool change pays) and the next ones (kept with the snapshot).

    .venv/bin/python benchmarks/dashboard_views.py [--data DIR] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from uniroute.artifact import build_artifact
from uniroute.data.loading import load_dataset
from uniroute.data.paths import default_data_dir
from uniroute.deployment.overview import estimate_map, pool_tradeoff
from uniroute.embeddings import make_encoder
from uniroute.testing.harness import recorded_pool


def main() -> None:
    """Build the pool, time both views computed and kept, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data_dir() / "routerbench")
    parser.add_argument("--repeats", type=int, default=5, help="kept-value reads timed (5)")
    args = parser.parse_args()
    dataset = load_dataset(args.data, "routerbench")
    with tempfile.TemporaryDirectory(prefix="uniroute-dashboard-views-") as tmp:
        folder = Path(tmp)
        artifact = build_artifact(
            dataset, folder / "artifact", encoder=make_encoder("tfidf"),
            router="uniroute-kmeans", val_fraction=0.1, seed=0,
        )  # fmt: skip
        models = [str(m) for m in dataset.models]
        router = recorded_pool(
            artifact.path, folder / "registry.db", dataset,
            {m: "http://127.0.0.1:9/v1" for m in models},
            {m: float(c) for m, c in zip(models, dataset.model_costs, strict=True)},
        )  # fmt: skip
        snapshot = router.snapshot
        print(
            f"data: {dataset.summary()}; {len(snapshot.pool)} models, "
            f"{len(artifact.prompt_ids)} representative prompts, K = {artifact.n_clusters}"
        )
        for name, view in (("trade-off", pool_tradeoff), ("estimate map", estimate_map)):
            started = time.perf_counter()
            view(router.artifact, snapshot)
            first = time.perf_counter() - started
            kept = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                view(router.artifact, snapshot)
                kept.append(time.perf_counter() - started)
            print(
                f"{name:<13} computed {first * 1e3:7.1f} ms; kept (median of {args.repeats}) "
                f"{statistics.median(kept) * 1e6:7.1f} us"
            )


if __name__ == "__main__":
    main()
