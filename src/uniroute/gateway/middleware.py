"""The request-context middleware: a request id, one access-log line, and no crash reaches a client.

Each HTTP request gets an id (the client's ``x-request-id`` when it is short and plain, else a
fresh one), sent back in ``x-request-id``. When the request ends, one access-log line is written
with the fields handlers added (:func:`~uniroute.gateway.access_log.note`), and the request is
counted in ``uniroute_requests_total`` if a handler named its endpoint. An exception that escapes
a handler becomes an OpenAI-style 500 (when nothing has been sent yet), so no input can take the
server down or leak a traceback to the client.

A client that goes away before its answer is complete (closing mid-body or mid-stream) is not an
error of the server: nothing more is sent, nothing is logged at ERROR, and the access-log line
says ``"client_disconnected": true`` (with status 499 when no status had been sent, as nginx
logs it). A request still open when the server's shutdown grace period ends is answered 503
``shutting_down`` (with ``retry-after``) if nothing was sent yet. A request the HTTP protocol
answered itself while the handler was reading it (a body
deadline, a malformed body; see :mod:`uniroute.gateway.http_protocol`) is logged with that
answer's status and code instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from uniroute.gateway.access_log import (
    GATEWAY_LOGGER,
    LOG_FIELDS_KEY,
    REFUSAL_KEY,
    REQUEST_ID_KEY,
    log_access,
    new_request_id,
)
from uniroute.gateway.errors import error_body
from uniroute.gateway.metrics import GatewayMetrics

logger = logging.getLogger(GATEWAY_LOGGER)

#: The access-log status of a request whose client left before any status was sent.
CLIENT_CLOSED_STATUS = 499


def is_client_disconnect(exc: BaseException) -> bool:
    """Whether ``exc`` only says that the client went away (a group of such errors included)."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_client_disconnect(inner) for inner in exc.exceptions)
    return isinstance(exc, ClientDisconnect)


class RequestContextMiddleware:
    """Request id, access log, request counter and the last-resort 500 (see the module doc)."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Wrap one HTTP request."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        request_id = new_request_id(None if given is None else given.decode("latin-1"))
        scope[REQUEST_ID_KEY] = request_id
        request_id_bytes = request_id.encode()
        fields: dict = {}
        scope[LOG_FIELDS_KEY] = fields
        started = time.perf_counter()
        status = {"code": 500, "sent": False, "complete": False, "disconnected": False}

        async def receive_wrapper() -> Message:
            message = await receive()
            # A server also answers "disconnect" once the response is complete: only one that
            # comes before means the client left (how a streamed answer learns of it).
            if message["type"] == "http.disconnect" and not status["complete"]:
                status["disconnected"] = True
            return message

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                status["sent"] = True
                headers = message.get("headers", [])
                # Handlers of answers already send it; only other responses need it added.
                if (b"x-request-id", request_id_bytes) not in headers:
                    raw = [(k, v) for k, v in headers if k != b"x-request-id"]
                    raw.append((b"x-request-id", request_id_bytes))
                    message = {**message, "headers": raw}
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                status["complete"] = True
            try:
                await send(message)
            except OSError:
                # A server that reports a write to a closed connection (ASGI 2.4) instead of
                # dropping it: the client has gone.
                status["disconnected"] = True
                raise ClientDisconnect() from None

        try:
            await self.app(scope, receive_wrapper, send_wrapper)
        except asyncio.CancelledError:
            # The server cancels what is still open when its shutdown grace period is over:
            # tell the client to retry elsewhere rather than leave it a bare 500.
            fields["error"] = "cut off at shutdown"
            if not status["sent"]:
                body = error_body(
                    "the gateway is shutting down; retry the request", status=503,
                    code="shutting_down",
                )  # fmt: skip
                with contextlib.suppress(Exception):
                    await JSONResponse(body, 503, {"retry-after": "1"})(
                        scope, receive, send_wrapper
                    )
            raise
        except Exception as exc:
            if is_client_disconnect(exc):
                status["disconnected"] = True
            else:
                logger.error("unhandled error", exc_info=True, extra={"request_id": request_id})
                fields["error"] = f"internal: {type(exc).__name__}"
                if not status["sent"]:
                    body = error_body(
                        f"internal error ({type(exc).__name__}); request id {request_id}",
                        status=500,
                        code="internal_error",
                    )
                    await JSONResponse(body, status_code=500)(scope, receive, send_wrapper)
        finally:
            refusal = scope.get(REFUSAL_KEY)
            if refusal is not None:
                status["code"] = refusal["status"]
                fields["error"] = refusal["code"]
            elif status["disconnected"]:
                fields["client_disconnected"] = True
                if not status["sent"]:
                    status["code"] = CLIENT_CLOSED_STATUS
            log_access(
                request_id=request_id,
                method=scope["method"],
                path=scope["path"],
                status=status["code"],
                duration_ms=round((time.perf_counter() - started) * 1e3, 3),
                client=(scope.get("client") or ("", 0))[0],
                **fields,
            )
            endpoint = fields.get("endpoint")
            if endpoint:
                self.metrics.count_request(
                    endpoint, fields.get("model", "none"), str(status["code"])
                )
