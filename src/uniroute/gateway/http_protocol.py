"""The gateway's HTTP/1.1 server protocol: uvicorn's httptools protocol with client deadlines.

uvicorn's :class:`HttpToolsProtocol` parses requests with the C parser of ``httptools`` and runs
each one as an ASGI task; :class:`GatewayHttpProtocol` keeps all of that (keep-alive, pipelining,
flow control) and adds what a server facing untrusted clients needs:

* a **header deadline**: a client has ``header_read_timeout_s`` to send a request's headers, from
  connecting, or on a kept-alive connection from the first byte of its next request (the idle
  time between two requests is uvicorn's keep-alive timeout, ``client_keepalive_s``). A client
  that has started a request is answered 408 before the connection is closed; an idle one is
  just closed;
* a **body deadline**: ``body_read_timeout_s`` from the end of the headers to the end of the
  body, else 408 and close;
* a cap on the **size of the headers** (request line included), since ``httptools`` buffers a
  header of any length: more than :data:`MAX_HEADER_BYTES` is a 431;
* a cap on **open connections**, ``max_client_connections``: a connection beyond it is answered
  503 ``server_busy`` as soon as its request headers arrive, then closed;
* malformed HTTP, and requests asking to switch protocols (``Upgrade``, ``CONNECT``: the gateway
  speaks HTTP/1.1 only), get a 400.

Every such answer has the gateway's OpenAI-style error body and ``connection: close``, and is
logged as one INFO line, never with a traceback: these are the clients' mistakes, not the
server's (refusals at the cap, which say the server is full, are summed in one WARNING at most
every :data:`BUSY_WARNING_INTERVAL_S`).

``uvicorn.Config(http=protocol_class(limits))`` installs it; each class made by
:func:`protocol_class` counts the connections of one server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from uniroute.gateway.access_log import GATEWAY_LOGGER, REFUSAL_KEY
from uniroute.gateway.config import GatewayConfig
from uniroute.gateway.errors import error_body

logger = logging.getLogger(GATEWAY_LOGGER)

#: Most bytes of one request's line and headers. ``httptools`` has no limit of its own (it keeps
#: a header of any length in memory until its end arrives); 64 KiB is twice nginx's default
#: (4 x 8 KiB) and four times Node's, far above any real OpenAI client's headers.
MAX_HEADER_BYTES = 64 * 1024
#: Longest a connection beyond the cap may take to send its headers before it is closed: it will
#: only be told to come back later, and the full deadline would let a flood of such connections
#: hold file descriptors well past the cap.
OVER_CAP_HEADER_TIMEOUT_S = 1.0
#: Least time between two warnings about connections refused at the cap.
BUSY_WARNING_INTERVAL_S = 10.0


@dataclass(frozen=True)
class ClientLimits:
    """The deadlines and caps one server applies to its client connections."""

    header_read_timeout_s: float
    body_read_timeout_s: float
    max_connections: int
    max_header_bytes: int = MAX_HEADER_BYTES

    @classmethod
    def of(cls, config: GatewayConfig) -> ClientLimits:
        """The limits a gateway config sets."""
        return cls(
            header_read_timeout_s=config.header_read_timeout_s,
            body_read_timeout_s=config.body_read_timeout_s,
            max_connections=config.max_client_connections,
        )


class ConnectionSlots:
    """The open connections one server has admitted under its cap, and those it turned away."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.admitted = 0
        self.refused_unreported = 0
        self.last_warning = float("-inf")

    def take(self) -> bool:
        """Admit one more connection if there is room."""
        if self.admitted >= self.capacity:
            return False
        self.admitted += 1
        return True

    def give_back(self) -> None:
        """An admitted connection has closed."""
        self.admitted -= 1

    def note_refused(self) -> None:
        """Count a refused connection; warn at most every BUSY_WARNING_INTERVAL_S (a flood
        would otherwise write one warning per connection)."""
        self.refused_unreported += 1
        now = time.monotonic()
        if now - self.last_warning >= BUSY_WARNING_INTERVAL_S:
            logger.warning(
                "client connections over the cap turned away with 503",
                extra={"refused": self.refused_unreported, "max_connections": self.capacity},
            )
            self.refused_unreported = 0
            self.last_warning = now


def _error_bytes(status: int, message: str, code: str) -> bytes:
    return json.dumps(error_body(message, status=status, code=code)).encode()


async def _server_busy(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI app a connection over the cap is answered by (instead of the gateway)."""
    body = _error_bytes(
        503, "the gateway has too many open connections; retry shortly", "server_busy"
    )
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 503, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class GatewayHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines, caps and OpenAI-style refusals (module doc)."""

    limits: ClassVar[ClientLimits] = ClientLimits.of(GatewayConfig())
    slots: ClassVar[ConnectionSlots] = ConnectionSlots(limits.max_connections)

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._admitted = False
        self._header_timeout = self.limits.header_read_timeout_s
        # One timer serves both deadlines: a request's headers and its body are read one after
        # the other, and the next request's bytes are parsed only after this one's body.
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_phase = ""
        # Between the start of a connection or the end of a request and the next headers.
        self._awaiting_headers = True
        self._request_begun = False
        self._header_bytes = 0
        self._headers_seen = 0
        self._refusing_upgrade = False

    # ------------------------------------------------------------------ connection
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Admit the connection under the cap (or mark it to be answered 503), start the header
        deadline."""
        super().connection_made(transport)
        self._admitted = self.slots.take()
        if not self._admitted:
            self.slots.note_refused()
            self.app = _server_busy
            self._header_timeout = min(self._header_timeout, OVER_CAP_HEADER_TIMEOUT_S)
        self._arm("headers", self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the deadline and free the connection's slot."""
        self._disarm()
        if self._admitted:
            self._admitted = False
            self.slots.give_back()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Parse ``data``; refuse malformed HTTP, protocol switches and oversized headers."""
        self._unset_keepalive_if_required()
        awaiting_at_start, headers_before = self._awaiting_headers, self._headers_seen
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "the gateway speaks HTTP/1.1 only", "unsupported_upgrade")
            return
        except httptools.HttpParserError as exc:
            self._refuse(400, f"malformed HTTP request ({exc})", "malformed_request")
            return
        if self._refusing_upgrade:  # a CONNECT or Upgrade the parser did not stop at
            self._refuse(400, "the gateway speaks HTTP/1.1 only", "unsupported_upgrade")
            return
        # Only bytes fed wholly inside one request's headers are counted (never part of a body),
        # so this underestimates by at most one read, which bounds the memory all the same.
        if awaiting_at_start and self._awaiting_headers and self._headers_seen == headers_before:
            self._header_bytes += len(data)
            if self._header_bytes > self.limits.max_header_bytes:
                self._refuse(
                    431,
                    f"the request line and headers exceed {self.limits.max_header_bytes} bytes",
                    "request_headers_too_large",
                )

    def send_400_response(self, msg: str) -> None:
        """uvicorn's plain-text 400, as an OpenAI-style error."""
        self._refuse(400, msg, "malformed_request")

    # ------------------------------------------------------------------ parser callbacks
    def on_message_begin(self) -> None:
        """A request's first byte: on a kept-alive connection its header deadline starts now."""
        super().on_message_begin()
        self._request_begun = True
        if self._deadline is None:
            self._arm("headers", self._header_timeout)

    def on_headers_complete(self) -> None:
        """Headers in: stop their deadline, start the body's; hand the request to the app."""
        self._disarm()
        self._awaiting_headers = False
        self._header_bytes = 0
        self._headers_seen += 1
        if self.parser.should_upgrade():
            # Not started as a request: data_received answers it 400 once the parser stops.
            self._refusing_upgrade = True
            return
        super().on_headers_complete()
        self._arm("body", self.limits.body_read_timeout_s)

    def on_message_complete(self) -> None:
        """Body in: stop its deadline."""
        self._disarm()
        self._awaiting_headers = True
        self._request_begun = False
        if not self._refusing_upgrade:
            super().on_message_complete()

    # ------------------------------------------------------------------ deadlines
    def _arm(self, phase: str, seconds: float) -> None:
        self._disarm()
        self._deadline_phase = phase
        self._deadline = self.loop.call_later(seconds, self._deadline_passed)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _deadline_passed(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._deadline_phase == "headers":
            if self._request_begun:
                self._refuse(
                    408,
                    f"the request headers did not arrive within {self._header_timeout:g} s",
                    "header_read_timeout",
                )
            else:
                self._close_quietly("header_read_timeout")
            return
        if self.flow.read_paused:
            # The app has not taken the body sent so far: the client is not the one stalling.
            self._arm("body", self.limits.body_read_timeout_s)
            return
        self._refuse(
            408,
            f"the request body did not arrive within {self.limits.body_read_timeout_s:g} s",
            "body_read_timeout",
        )

    # ------------------------------------------------------------------ refusals
    def _close_quietly(self, reason: str) -> None:
        logger.info("client connection closed", extra={"reason": reason, **self._who()})
        self.transport.close()

    def _refuse(self, status: int, message: str, code: str) -> None:
        """Answer ``status`` with an OpenAI-style error (unless a response is already under way
        on this connection), then close it."""
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:
                # Its status line is out: another response cannot follow, only the close.
                self._close_quietly(code)
                return
            # The handler still reading this request sees a disconnect and must not write an
            # answer of its own after this one; its access-log line names the refusal.
            cast(dict, cycle.scope)[REFUSAL_KEY] = {"status": status, "code": code}
            cycle.disconnected = True
            cycle.message_event.set()
        else:
            logger.info(
                "client connection closed",
                extra={"reason": code, "status": status, **self._who()},
            )
        body = _error_bytes(status, message, code)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()

    def _who(self) -> dict[str, Any]:
        return {"client": self.client[0] if self.client else ""}


def protocol_class(limits: ClientLimits) -> type[GatewayHttpProtocol]:
    """A GatewayHttpProtocol with these limits, counting its own connections (one per server)."""

    class ConfiguredGatewayHttpProtocol(GatewayHttpProtocol):
        pass

    ConfiguredGatewayHttpProtocol.limits = limits
    ConfiguredGatewayHttpProtocol.slots = ConnectionSlots(limits.max_connections)
    return ConfiguredGatewayHttpProtocol
