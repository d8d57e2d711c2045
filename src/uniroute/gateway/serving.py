"""Running the gateway with uvicorn: the listening socket, the server, the ``listening on`` line.

``uniroute serve`` calls :func:`serve_gateway`. The socket is bound (and listening) before the
server starts, so ``--port 0`` can pick a free port whose URL is printed as
``listening on http://HOST:PORT`` once the application has started and accepts requests; a
supervisor (or a test harness) waits for that line.

The server runs on uvicorn's C stack: the ``uvloop`` event loop and the ``httptools`` parser,
through :class:`~uniroute.gateway.http_protocol.GatewayHttpProtocol`, which adds the client
deadlines, the connection cap and OpenAI-style answers to malformed HTTP.
"""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from starlette.types import ASGIApp

from uniroute.deployment import Router
from uniroute.gateway.access_log import configure_logging, stop_logging
from uniroute.gateway.app import create_app
from uniroute.gateway.config import GatewayConfig
from uniroute.gateway.http_protocol import ClientLimits, protocol_class

#: What a server prints on stdout, followed by its URL, once it accepts connections.
LISTENING_PREFIX = "listening on "
#: Seconds open requests get to finish after SIGTERM before the server closes them.
GRACEFUL_SHUTDOWN_S = 10


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); port 0 picks a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # An explicit IPPROTO_TCP lets asyncio set TCP_NODELAY on accepted connections; without it
    # every response waits ~40 ms for a delayed ACK between its header and body writes.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None
    # Listening before the address is announced: early connections wait in the backlog.
    sock.listen(2048)
    return sock


def url_of(sock: socket.socket) -> str:
    """The http:// URL a bound socket is reachable at."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def announce(sock: socket.socket) -> None:
    """Print ``listening on URL`` (the line supervisors and test harnesses wait for)."""
    print(f"{LISTENING_PREFIX}{url_of(sock)}", flush=True)


def uvicorn_server(app: ASGIApp, config: GatewayConfig) -> uvicorn.Server:
    """A uvicorn server for the gateway app on uvloop + httptools: our own JSON logs, lifespan
    on, client deadlines, connection cap, keep-alive and graceful shutdown as configured."""
    return uvicorn.Server(
        uvicorn.Config(
            app,
            loop="uvloop",
            http=protocol_class(ClientLimits.of(config)),
            # The gateway has no WebSocket route; an Upgrade request is answered 400 instead.
            ws="none",
            log_config=None,
            access_log=False,
            lifespan="on",
            log_level=config.log_level.lower(),
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            # uvicorn hands this to loop.call_later, which takes fractions of a second too.
            timeout_keep_alive=config.client_keepalive_s,  # type: ignore[arg-type]
        )
    )


async def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    if server.started:
        announce(sock)
    await task


def run_server(server: uvicorn.Server, sock: socket.socket) -> None:
    """Run ``server`` on ``sock`` in an event loop of the kind its config names (uvloop for
    the gateway), announcing the URL once it accepts connections."""
    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(_serve(server, sock))


def serve_gateway(router: Router, config: GatewayConfig, host: str, port: int) -> int:
    """Serve the gateway until interrupted (SIGINT/SIGTERM); the process exit code.

    Logs go to stderr as JSON lines; 1 when the server never started (e.g. the lifespan
    failed), else 0.
    """
    configure_logging(config.log_level)
    try:
        app = create_app(router, config)
        sock = bind_socket(host, port)
        server = uvicorn_server(app, config)
        run_server(server, sock)
    finally:
        stop_logging()
    return 0 if server.started else 1
