"""`uniroute build`: fit a router on the training LLMs and write a deployable artifact."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from uniroute.cli.arg_types import check_output_path, int_at_least, json_object, open_fraction
from uniroute.cli.pool_options import REGISTRY_ENV, registry_location

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
        type=open_fraction,
        default=0.1,
        help="share of each task's prompts kept as representative prompts (default 0.1)",
    )
    parser.add_argument(
        "--seed", type=int_at_least(0), default=0, help="seed of the prompt split and router"
    )
    parser.add_argument(
        "--registry",
        type=registry_location,
        metavar="FILE|URL",
        help=(
            "registry (SQLite file or postgresql:// URL) to seed with the training LLMs "
            f"(default: ${REGISTRY_ENV} if set)"
        ),
    )
    parser.add_argument(
        "--no-cache", action="store_true", help="do not use the on-disk embedding cache"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the data, build the artifact, and seed the registry when asked."""
    import os

    from uniroute.artifact import build_artifact, check_artifact_destination
    from uniroute.cli.progress import ProgressPrinter
    from uniroute.data.loading import load_dataset
    from uniroute.data.paths import default_cache_dir
    from uniroute.embeddings import ENCODERS, encoder_class, make_encoder
    from uniroute.errors import DataError
    from uniroute.registry.store import Registry
    from uniroute.routers import make_estimator

    started = time.perf_counter()
    progress = ProgressPrinter(clock=time.perf_counter, started=started)
    if args.encoder not in ENCODERS:
        raise DataError(
            f"--encoder: unknown encoder {args.encoder!r}; choose from {list(ENCODERS)}"
        )
    # An encoder whose extra is not installed says so (MissingExtraError) before anything else.
    encoder_class(args.encoder)
    # Every option is checked before the data is read or anything is fitted: the encoder and
    # the router are built here, which checks their parameters, and handed over built.
    encoder_params = json_object(args.encoder_params, "--encoder-params")
    router_params = json_object(args.router_params, "--router-params")
    try:
        encoder = make_encoder(args.encoder, **encoder_params)
    except (TypeError, ValueError) as exc:  # UsageError from its checks, or any other refusal
        raise DataError(f"--encoder-params: {exc}") from None
    try:
        router = make_estimator(args.router, **router_params)
    except (TypeError, ValueError) as exc:
        raise DataError(f"--router-params: {exc}") from None
    holdout = [m.strip() for m in args.holdout_models.split(",") if m.strip()]
    check_artifact_destination(args.out)
    registry_value = args.registry or os.environ.get(REGISTRY_ENV, "").strip() or None
    registry_file = registry_location(registry_value) if registry_value else None
    if isinstance(registry_file, Path):
        check_output_path(registry_file, "--registry", directory=False)
    elif registry_file is not None:
        # A database is checked before the build too: a bad URL or a server that is down is
        # refused now, not after minutes of fitting.
        Registry(registry_file).close()

    dataset = load_dataset(args.data, args.format, costs=args.costs)
    print(f"loaded {dataset.summary()}", flush=True)
    try:
        artifact = build_artifact(
            dataset,
            args.out,
            encoder=encoder,
            router=router,
            holdout_models=holdout,
            val_fraction=args.val_fraction,
            seed=args.seed,
            embedding_cache=None if args.no_cache else default_cache_dir() / "embeddings",
            progress=progress,
        )
    finally:
        progress.close()
    print(artifact.summary())
    if registry_file:
        from uniroute.deployment.pool_changes import seed_registry

        with Registry(registry_file) as registry:
            records = seed_registry(artifact, registry)
            shown = registry.path  # a URL without its password
        print(f"registry {shown}: {len(records)} training models added with their Psi")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0
