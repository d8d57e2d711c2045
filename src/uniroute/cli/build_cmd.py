"""`uniroute build`: fit a router on the training LLMs and write a deployable artifact."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from uniroute.cli.pool_options import REGISTRY_ENV

BUILD_ROUTERS = ("uniroute-kmeans", "uniroute-learned", "knn", "zero")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `build` sub-command."""
    parser = subparsers.add_parser(
        "build",
        help="fit a router and write a deployable artifact (optionally seeding a registry)",
        description=(
            "Split the prompts by task into training and representative (validation) prompts, fit "
            "the encoder and the router on the training LLMs, and write a self-contained artifact "
            "directory. With --registry, the training LLMs are added to that registry with their "
            "scores, costs and Psi, ready to route."
        ),
    )
    parser.add_argument("--data", required=True, type=Path, help="a data file or folder")
    parser.add_argument(
        "--format",
        required=True,
        choices=("routerbench", "routerdc", "embedllm", "long"),
        help="data format",
    )
    parser.add_argument("--out", required=True, type=Path, help="artifact directory to write")
    parser.add_argument("--encoder", default="minilm", help="prompt encoder: minilm or tfidf")
    parser.add_argument("--router", default="uniroute-kmeans", choices=BUILD_ROUTERS)
    parser.add_argument(
        "--router-params", default="{}", help="JSON router parameters, e.g. '{\"n_clusters\": 20}'"
    )
    parser.add_argument(
        "--encoder-params",
        default="{}",
        help="JSON encoder parameters, e.g. '{\"n_components\": 64}'",
    )
    parser.add_argument("--costs", type=Path, help="JSON map {model: cost per query}")
    parser.add_argument(
        "--holdout-models", default="", help="comma-separated models to leave out of training"
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of each task's prompts kept as representative prompts (default 0.1)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the prompt split and router")
    parser.add_argument(
        "--registry",
        type=Path,
        help=f"registry file to seed with the training LLMs (default: ${REGISTRY_ENV} if set)",
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="do not use the on-disk embedding cache"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the data, build the artifact, and seed the registry when asked."""
    import os

    from uniroute.artifact import build_artifact
    from uniroute.data.loading import load_dataset
    from uniroute.data.paths import default_cache_dir
    from uniroute.embeddings import ENCODERS
    from uniroute.errors import DataError
    from uniroute.registry.store import Registry

    started = time.perf_counter()
    if args.encoder not in ENCODERS:
        raise DataError(
            f"--encoder: unknown encoder {args.encoder!r}; choose from {list(ENCODERS)}"
        )
    router_params = _json_object(args.router_params, "--router-params")
    encoder_params = _json_object(args.encoder_params, "--encoder-params")
    holdout = [m.strip() for m in args.holdout_models.split(",") if m.strip()]

    dataset = load_dataset(args.data, args.format, costs=args.costs)
    print(f"loaded {dataset.summary()}")
    artifact = build_artifact(
        dataset,
        args.out,
        encoder=args.encoder,
        router=args.router,
        holdout_models=holdout,
        val_fraction=args.val_fraction,
        seed=args.seed,
        router_params=router_params,
        encoder_params=encoder_params,
        embedding_cache=None if args.no_cache else default_cache_dir() / "embeddings",
    )
    print(artifact.summary())
    registry_file = args.registry or os.environ.get(REGISTRY_ENV, "").strip() or None
    if registry_file:
        from uniroute.deployment.pool_changes import seed_registry

        with Registry(registry_file) as registry:
            records = seed_registry(artifact, registry)
        print(f"registry {registry_file}: {len(records)} training models added with their Psi")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0


def _json_object(text: str, option: str) -> dict:
    from uniroute.errors import DataError

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise DataError(f"{option} must be a JSON object of parameters")
    return value
