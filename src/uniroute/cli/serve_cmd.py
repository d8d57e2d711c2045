"""`uniroute serve`: run the OpenAI-compatible routing gateway."""

from __future__ import annotations

import argparse
import dataclasses
import socket

from uniroute.cli.arg_types import port_number
from uniroute.cli.pool_options import add_location_arguments, artifact_path, registry_path
from uniroute.errors import ConfigError


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
    parser.add_argument(
        "--port", type=port_number, default=8000, help="port (8000; 0 picks a free one)"
    )
    parser.add_argument(
        "--config", help="gateway settings, TOML or JSON (timeouts, retries, breaker, limits)"
    )
    parser.add_argument(
        "--dashboard",
        action="store_true",
        help="serve the web dashboard at /ui (as 'dashboard = true' in the config; its views "
        "need the admin token)",
    )
    parser.set_defaults(func=run)


def check_host(host: str) -> None:
    """Refuse a --host that is no address of this machine's resolver, before any state is read."""
    if host == "":  # the wildcard address, as socket.bind reads it
        return
    try:
        socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(
            f"--host {host!r}: not an address to listen on ({exc.strerror}); give an IP "
            "address such as 127.0.0.1 or 0.0.0.0, or a resolvable host name"
        ) from None
    except (UnicodeError, ValueError) as exc:  # a label too long for IDNA, a NUL byte
        raise ConfigError(f"--host {host!r}: not a host name or IP address ({exc})") from None


def listen_failure(host: str, port: int, exc: BaseException) -> ConfigError:
    """The one-line error for a socket that could not be bound (port taken, no permission)."""
    reason = str(exc)
    if f"{host}:{port}" not in reason:
        reason = f"cannot listen on {host}:{port} ({reason})"
    return ConfigError(reason)


def run(args: argparse.Namespace) -> int:
    """Load the artifact and registry, then serve until interrupted."""
    from uniroute.deployment import Router
    from uniroute.gateway.config import load_config
    from uniroute.gateway.serving import serve_gateway

    # A bad setting (a ConfigError) is reported before any state is read.
    config = load_config(args.config)
    if args.dashboard:
        config = dataclasses.replace(config, dashboard=True)
    check_host(args.host)
    router = Router.load(artifact_path(args), registry_path(args))
    try:
        return serve_gateway(router, config, args.host, args.port)
    except BrokenPipeError:
        raise  # stdout went away (see cli.errors.stdout_closed), not the socket
    except (OSError, OverflowError) as exc:
        # Binding happens once the app is built; a port taken meanwhile (or one this user may
        # not bind) ends here. OverflowError is what socket.bind raises for a port past 65535.
        raise listen_failure(args.host, args.port, exc) from None
