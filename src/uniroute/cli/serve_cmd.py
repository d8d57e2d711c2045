"""`uniroute serve`: run the OpenAI-compatible routing gateway."""

from __future__ import annotations

import argparse
import sys

from uniroute.cli.pool_options import add_location_arguments


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
    import asyncio

    import uvicorn

    from uniroute.cli.pool_options import artifact_path, registry_path
    from uniroute.deployment.router import Router
    from uniroute.errors import ConfigError
    from uniroute.gateway.access_log import configure_logging, stop_logging
    from uniroute.gateway.app import create_app
    from uniroute.gateway.config import load_config
    from uniroute.gateway.pool_view import PoolView
    from uniroute.testing.replay import bind_socket, url_of

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"uniroute: error: {exc}", file=sys.stderr)
        return 2
    router = Router.load(artifact_path(args), registry_path(args))
    configure_logging(config.log_level)
    app = create_app(PoolView(router), config)
    sock = bind_socket(args.host, args.port)
    server = uvicorn.Server(
        uvicorn.Config(
            app, log_config=None, access_log=False, lifespan="on",
            log_level=config.log_level.lower(), timeout_graceful_shutdown=10,
            timeout_keep_alive=max(1, round(config.client_keepalive_s)),
        )
    )  # fmt: skip

    async def serve() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            print(f"listening on {url_of(sock)}", flush=True)
        await task

    try:
        asyncio.run(serve())
    finally:
        stop_logging()
    return 0 if server.started else 1
