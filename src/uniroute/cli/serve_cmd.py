"""`uniroute serve`: run the OpenAI-compatible routing gateway."""

from __future__ import annotations

import argparse

from uniroute.cli.pool_options import add_location_arguments, artifact_path, registry_path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `serve` sub-command."""
    parser = subparsers.add_parser(
        "serve",
        help="run the OpenAI-compatible routing gateway",
        description=(
            "Serve /v1/chat/completions, /v1/completions, /v1/route and /v1/models, answering "
            "each request with the model the router picks among the registry's enabled models "
            "that have an endpoint. Prints 'listening on URL' once it accepts requests."
        ),
    )
    add_location_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (8000; 0 picks a free one)")
    parser.add_argument(
        "--config", help="gateway settings, TOML or JSON (timeouts, retries, breaker, limits)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the artifact and registry, then serve until interrupted."""
    from uniroute.deployment import Router
    from uniroute.gateway.config import load_config
    from uniroute.gateway.serving import serve_gateway

    # A bad setting (a ConfigError) is reported before any state is read.
    config = load_config(args.config)
    router = Router.load(artifact_path(args), registry_path(args))
    return serve_gateway(router, config, args.host, args.port)
