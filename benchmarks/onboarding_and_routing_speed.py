"""Onboarding and routing speed of the deployable router.

Builds a real artifact on MMLU-Pro (mmlupro27: 17 training LLMs, 10 held out, 1,000
representative prompts, TF-IDF encoder, UniRoute K-means) and prints, in one run:

1. the time from `uniroute models add NAME --cost C --scores FILE` to routable (in-process
   command, the console script as a fresh process, and a running router's refresh());
2. routing decisions per second for pre-embedded prompts with 10, 100 and 1,000 models in the
   pool (synthetic models: real models' validation scores with 10% of the answers flipped);
3. end-to-end prompts per second (embedding included), one prompt at a time and batched, for
   TF-IDF and, unless --skip-minilm, MiniLM (its artifact is built on RouterBench ARC-Challenge,
   since embedding all of MMLU-Pro with MiniLM takes minutes on two cores);
4. for comparison, the time the RetrainedMLP baseline ("mlp") needs when one model is added,
   and to refit every head, as ratios to UniRoute's onboarding.

    .venv/bin/python benchmarks/onboarding_and_routing_speed.py [--skip-minilm]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from uniroute.artifact import Artifact, build_artifact, split_representative
from uniroute.cli.main import main as cli_main
from uniroute.data.loading import load_dataset
from uniroute.data.paths import default_data_dir
from uniroute.data.splits import split_models
from uniroute.deployment import Router
from uniroute.deployment.pool_changes import seed_registry
from uniroute.registry import ModelCost, ModelRecord, NewModel, Registry
from uniroute.routers import RouterEstimator, make_estimator

N_REPRESENTATIVE = 1000
POOL_SIZES = (10, 100, 1000)


def seconds(action: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def quiet(action: Callable[[], object]) -> object:
    """Run an action with its stdout swallowed."""
    with contextlib.redirect_stdout(io.StringIO()):
        return action()


def write_scores(path: Path, prompt_ids: list[str], values: np.ndarray) -> Path:
    """A CSV scores file (prompt_id, score) as a user would supply it."""
    lines = ["prompt_id,score"] + [
        f"{pid},{'' if np.isnan(v) else v}" for pid, v in zip(prompt_ids, values, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def onboarding(artifact: Artifact, dataset, holdout: list[str], tmp: Path) -> float:
    """Section 1: time from `models add --scores` to routable; returns the in-process median."""
    print("\n1. Time from `uniroute models add NAME --cost C --scores FILE` to routable")
    rows = [list(dataset.prompt_ids).index(pid) for pid in artifact.prompt_ids]
    registry_path = tmp / "onboard.db"
    with Registry(registry_path) as registry:
        seed_registry(artifact, registry)
    gateway = Router.load(artifact, registry_path)  # a running server watching the registry
    in_process, refreshes = [], []
    for model in holdout[:3]:
        scores = write_scores(tmp / "s.csv", artifact.prompt_ids,
                              dataset.scores[rows, dataset.model_index(model)])  # fmt: skip
        argv = ["models", "add", model, "--cost", "10", "--scores", str(scores),
                "--artifact", str(artifact.path), "--registry", str(registry_path)]  # fmt: skip
        in_process.append(seconds(lambda argv=argv: quiet(lambda: cli_main(argv))))
        refreshes.append(seconds(gateway.refresh))
        assert model in gateway.snapshot.pool.names
    model = holdout[3]
    scores = write_scores(tmp / "s.csv", artifact.prompt_ids,
                          dataset.scores[rows, dataset.model_index(model)])  # fmt: skip
    script = Path(sys.executable).with_name("uniroute")
    started = time.perf_counter()
    subprocess.run(
        [str(script), "models", "add", model, "--cost", "10", "--scores", str(scores),
         "--artifact", str(artifact.path), "--registry", str(registry_path)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    fresh_process = time.perf_counter() - started
    refreshes.append(seconds(gateway.refresh))
    print(f"   representative prompts: {len(artifact.prompt_ids)}; pool: "
          f"{len(gateway.snapshot.pool)} models after the adds")  # fmt: skip
    print(
        f"   `models add` in-process (load artifact + registry, read file, Psi, commit), "
        f"median of 3:  {statistics.median(in_process) * 1000:8.1f} ms"
    )
    print(
        f"   `uniroute models add` as a new process (Python start + imports included):"
        f"        {fresh_process * 1000:8.1f} ms"
    )
    print(
        f"   a running router's refresh() picking the new model up, median of 4:"
        f"            {statistics.median(refreshes) * 1000:8.1f} ms"
    )
    return statistics.median(in_process)


def synthetic_pool(artifact: Artifact, n_models: int, seed: int) -> list[NewModel]:
    """n models: the training models' scores with 10% of answers flipped, log-uniform costs."""
    rng = np.random.default_rng(seed)
    base = artifact.training_scores
    lo, hi = artifact.training_costs.min(), artifact.training_costs.max()
    models = []
    for k in range(n_models):
        values = base[:, k % base.shape[1]].copy()
        flip = rng.random(len(values)) < 0.1
        values[flip & ~np.isnan(values)] = 1.0 - values[flip & ~np.isnan(values)]
        scores = {p: float(v) for p, v in zip(artifact.prompt_ids, values, strict=True)
                  if not np.isnan(v)}  # fmt: skip
        cost = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        psi = artifact.router.model_features(values)
        record = ModelRecord(name=f"synthetic-{k:04d}", cost=ModelCost(per_query=cost))
        models.append(NewModel(record, scores, {artifact.artifact_id: psi}))
    return models


def decisions_per_second(router: Router, X: np.ndarray) -> tuple[float, float, float]:
    """(batched, one prompt per call, batched with every decision's to_dict()) decisions/s."""
    router.route_embeddings(X[:10], lam=50.0)  # warm-up
    batched = min(seconds(lambda: router.route_embeddings(X, lam=50.0)) for _ in range(3))
    singles = X[:300]
    one_by_one = seconds(lambda: [router.route_embeddings(x[None, :], lam=50.0) for x in singles])
    explained = X[:200]
    with_dicts = seconds(
        lambda: [d.to_dict() for d in router.route_embeddings(explained, lam=50.0)]
    )
    return len(X) / batched, len(singles) / one_by_one, len(explained) / with_dicts


def routing_throughput(artifact: Artifact, X: np.ndarray, tmp: Path) -> None:
    """Section 2: decisions per second for pre-embedded prompts, by pool size."""
    print(f"\n2. Routing decisions per second, pre-embedded prompts ({len(X)} prompts, lambda=50)")
    print("   models | load pool | batched    | one per call | batched + to_dict() of all models")
    for n_models in POOL_SIZES:
        path = tmp / f"pool-{n_models}.db"
        with Registry(path) as registry:
            registry.bind(artifact.artifact_id, artifact.prompt_ids)
            registry.add_models(synthetic_pool(artifact, n_models, seed=n_models))
        started = time.perf_counter()
        router = Router.load(artifact, path)
        load = time.perf_counter() - started
        assert len(router.snapshot.pool) == n_models
        batched, single, explained = decisions_per_second(router, X)
        print(
            f"   {n_models:6d} | {load:7.2f} s | {batched:8.0f}/s | {single:10.0f}/s | "
            f"{explained:8.0f}/s"
        )


def end_to_end(label: str, router: Router, prompts: list[str]) -> None:
    """Prompts per second with embedding included, one at a time and batched."""
    router.route(prompts[:4])  # warm-up (lazy model loading)
    latencies = [seconds(lambda p=p: router.route(p)) for p in prompts[:100]]
    batch = prompts[:500]
    batched = seconds(lambda: router.route(batch))
    print(f"   {label:<34} one at a time {1 / statistics.mean(latencies):7.0f} prompts/s "
          f"(p50 {statistics.median(latencies) * 1000:6.2f} ms) | batched "
          f"{len(batch) / batched:7.0f} prompts/s")  # fmt: skip


def mlp_comparison(artifact: Artifact, dataset, holdout: list[str], onboard_s: float,
                   train_rows: np.ndarray, val_rows: np.ndarray) -> None:  # fmt: skip
    """Section 4: the RetrainedMLP baseline's cost of adding one model."""
    print("\n4. Adding one model: UniRoute versus the RetrainedMLP baseline (same data, same run)")
    training = artifact.training_models
    columns = [dataset.model_index(m) for m in training]
    texts = [str(t) for t in dataset.prompts]
    X_train = artifact.encoder.encode([texts[i] for i in train_rows])
    X_val = artifact.encoder.encode([texts[i] for i in val_rows])
    S_train = dataset.scores[np.ix_(train_rows, columns)]
    S_val = dataset.scores[np.ix_(val_rows, columns)]
    costs = dataset.model_costs[columns]
    newcomers = holdout[:5]

    def describe(estimator: RouterEstimator, model: str) -> float:
        """Seconds to compute one model's Psi row: all that adding it to a pool needs."""
        values = dataset.scores[val_rows, dataset.model_index(model)]
        return seconds(lambda: estimator.model_features(values, name=model))

    uniroute = make_estimator("uniroute-kmeans", n_clusters=artifact.n_clusters)
    uniroute.fit(X_train, S_train, X_val, S_val, costs)
    uniroute_add = statistics.median(describe(uniroute, m) for m in newcomers * 3)
    mlp = make_estimator("mlp")
    mlp.fit(X_train, S_train, X_val, S_val, costs)
    # The MLP's heads are trained when its models are described, so its "fit" of the 17
    # training models is describing all of them.
    mlp_fit = seconds(lambda: mlp.make_pool(training, S_val, costs))
    mlp_adds = [describe(mlp, m) for m in newcomers]
    mlp_add = statistics.median(mlp_adds)
    print(f"   one of {len(newcomers)} held-out models added to the 17-model pool (median):")
    rows = [
        (f"UniRoute model_features (Psi from {len(val_rows)} scores)", uniroute_add),
        ("RetrainedMLP model_features (trains the new head)", mlp_add),
        (f"RetrainedMLP heads of the {len(training)} training models", mlp_fit),
    ]
    for label, value in rows:
        print(f"   {label:<46} {value * 1000:10.2f} ms = {value / uniroute_add:7.0f} x UniRoute")
    print(
        f"   (MLP head training per model ranged {min(mlp_adds) * 1000:.0f}-"
        f"{max(mlp_adds) * 1000:.0f} ms; the whole `models add` command of section 1, "
        f"{onboard_s * 1000:.0f} ms including loading, is {mlp_add / onboard_s:.1f}x faster than "
        "the MLP's head training alone)"
    )


def cached_build(path: Path, build: Callable[[], object]) -> str:
    """Build an artifact unless ``path`` already holds one; says which and how long it took."""
    if (path / "manifest.json").is_file():
        return "reused"
    return f"built in {seconds(build):.1f} s"


def main(argv: list[str] | None = None) -> int:
    """Run every section and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-minilm", action="store_true", help="TF-IDF only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workdir", type=Path, help="keep (and on later runs reuse) the built artifacts here"
    )
    parser.add_argument(
        "--sections", default="1,2,3,4", help="comma-separated sections to run (default all)"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data = default_data_dir()
    print(f"machine: {os.cpu_count()} CPUs; python {sys.version.split()[0]}")

    dataset = load_dataset(data / "mmlupro27", "routerdc", costs=data / "costs" / "mmlupro27.json")
    training, holdout = split_models(dataset.models, 10, seed=args.seed)
    val_fraction = N_REPRESENTATIVE / dataset.n_prompts
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        keep = args.workdir or tmp
        how = cached_build(keep / "mmlupro-tfidf", lambda: build_artifact(
            dataset, keep / "mmlupro-tfidf", encoder="tfidf", router="uniroute-kmeans",
            holdout_models=holdout, val_fraction=val_fraction, seed=args.seed))  # fmt: skip
        artifact = Artifact.load(keep / "mmlupro-tfidf")
        print(f"artifact: {dataset.summary()}; {len(training)} training / {len(holdout)} held-out "
              f"LLMs; {len(artifact.prompt_ids)} representative prompts; K={artifact.n_clusters}; "
              f"{artifact.encoder_id}; {how}")  # fmt: skip

        sections = {s.strip() for s in args.sections.split(",")}
        if sections & {"1", "4"}:
            onboard_s = onboarding(artifact, dataset, holdout, tmp)

        train_rows, val_rows = split_representative(dataset.tasks, val_fraction, args.seed)
        prompts = [str(dataset.prompts[i]) for i in train_rows[:2000]]
        if "2" in sections:
            routing_throughput(artifact, artifact.encoder.encode(prompts), tmp)

        if "3" in sections:
            print("\n3. End-to-end prompts per second (embedding included), 17 training models")
            with Registry(tmp / "e2e.db") as registry:
                seed_registry(artifact, registry)
            router = Router.load(artifact, tmp / "e2e.db")
            end_to_end("TF-IDF (MMLU-Pro artifact)", router, prompts)
        if "3" in sections and not args.skip_minilm:
            arc = load_dataset(data / "routerbench" / "arc_challenge_test.csv", "routerbench")
            how = cached_build(keep / "arc-minilm", lambda: build_artifact(
                arc, keep / "arc-minilm", encoder="minilm", router="uniroute-kmeans",
                val_fraction=0.25, seed=args.seed))  # fmt: skip
            minilm = Artifact.load(keep / "arc-minilm")
            with Registry(tmp / "e2e-minilm.db") as registry:
                seed_registry(minilm, registry)
            end_to_end(f"MiniLM (ARC artifact, {how})", Router.load(minilm, tmp / "e2e-minilm.db"),
                       [str(p) for p in arc.prompts])  # fmt: skip

        if "4" in sections:
            mlp_comparison(artifact, dataset, holdout, onboard_s, train_rows, val_rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
