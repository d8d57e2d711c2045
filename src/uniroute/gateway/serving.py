"""Running the gateway with uvicorn: the listening socket, the server, the ``listening on`` line.

``uniroute serve`` calls :func:`serve_gateway`. The socket is bound (and listening) before the
server starts, so ``--port 0`` can pick a free port whose URL is printed as
``listening on http://HOST:PORT`` once the application has started and accepts requests; a
supervisor (or a test harness) waits for that line.

The server runs on uvicorn's C stack: the ``uvloop`` event loop and the ``httptools`` parser,
through :class:`~uniroute.gateway.http_protocol.GatewayHttpProtocol`, which adds the client
deadlines, the connection cap and OpenAI-style answers to malformed HTTP.

**Shutdown.** On SIGTERM (or SIGINT) the gateway first *drains* for ``shutdown_drain_s``: it
still accepts and serves requests, but ``/readyz`` answers 503 ``draining``, so a load
balancer that health-checks it stops sending it traffic. Then it stops accepting, closes idle
connections, lets the requests still open finish (streams included) for up to
``shutdown_grace_s``, cuts off what is left, and exits. A second signal during the drain skips
the rest of it; a second SIGINT while requests are finishing stops at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from types import FrameType

import uvicorn
from starlette.types import ASGIApp

from uniroute.deployment import Router
from uniroute.gateway.access_log import GATEWAY_LOGGER, configure_logging, stop_logging
from uniroute.gateway.app import create_app
from uniroute.gateway.config import GatewayConfig
from uniroute.gateway.http_protocol import ClientLimits, protocol_class

logger = logging.getLogger(GATEWAY_LOGGER)

#: What a server prints on stdout, followed by its URL, once it accepts connections.
LISTENING_PREFIX = "listening on "


class GatewayServer(uvicorn.Server):
    """uvicorn's server with a drain before its graceful shutdown (see the module doc)."""

    def __init__(
        self,
        config: uvicorn.Config,
        drain_s: float = 0.0,
        on_drain: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.drain_s = drain_s
        self.on_drain = on_drain
        self.draining = False
        self.loop: asyncio.AbstractEventLoop | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """A shutdown signal: start draining, or (drained, a second signal) shut down."""
        loop = self.loop
        if self.draining or self.should_exit or self.drain_s <= 0 or loop is None:
            super().handle_exit(sig, frame)
            return
        self.draining = True
        # A signal handler runs between two bytecodes of the loop's thread: hand the rest to
        # the loop itself.
        loop.call_soon_threadsafe(self._start_drain, sig)

    def _start_drain(self, sig: int) -> None:
        logger.info("shutting down: draining for %gs before closing the listener", self.drain_s)
        if self.on_drain is not None:
            self.on_drain()
        assert self.loop is not None
        self.loop.call_later(self.drain_s, self._drained, sig)

    def _drained(self, sig: int) -> None:
        if not self.should_exit:
            super().handle_exit(sig, None)


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


def uvicorn_server(
    app: ASGIApp, config: GatewayConfig, on_drain: Callable[[], None] | None = None
) -> GatewayServer:
    """A uvicorn server for the gateway app on uvloop + httptools: our own JSON logs, lifespan
    on, client deadlines, connection cap, keep-alive, drain and graceful shutdown as configured
    (``on_drain`` is called when the drain starts)."""
    return GatewayServer(
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
            # uvicorn hands these to asyncio, which takes fractions of a second too.
            timeout_graceful_shutdown=config.shutdown_grace_s,  # type: ignore[arg-type]
            timeout_keep_alive=config.client_keepalive_s,  # type: ignore[arg-type]
        ),
        drain_s=config.shutdown_drain_s,
        on_drain=on_drain,
    )


async def _serve(server: uvicorn.Server, sock: socket.socket) -> None:
    if isinstance(server, GatewayServer):
        server.loop = asyncio.get_running_loop()
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
        server = uvicorn_server(app, config, on_drain=app.state.gateway.start_draining)
        run_server(server, sock)
    finally:
        stop_logging()
    return 0 if server.started else 1
