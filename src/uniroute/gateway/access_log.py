"""Structured JSON logs: one access-log line per request, tied together by a request id.

Nothing that could hold a secret is logged: no request or response headers, no bodies, and
no upstream keys (those are read from the environment at call time and never stored).
"""

from __future__ import annotations

import itertools
import json
import logging
import logging.handlers
import os
import queue
import re
import sys
import time
from typing import Any

from starlette.requests import HTTPConnection

ACCESS_LOGGER = "uniroute.access"
GATEWAY_LOGGER = "uniroute.gateway"
#: Scope keys of one request: its id, and the fields of its access-log line (set by the
#: request-context middleware, filled in by the handlers through ``note``).
REQUEST_ID_KEY = "uniroute_request_id"
LOG_FIELDS_KEY = "uniroute_log"
#: Scope key set by the HTTP protocol when it answers a request itself while the app is still
#: reading it (a body deadline passed, a malformed body): ``{"status": int, "code": str}``.
REFUSAL_KEY = "uniroute_refusal"

_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_STANDARD_RECORD_KEYS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
}


# Fresh ids are a random per-process prefix and a counter: unique across processes and
# restarts without drawing 16 random bytes (and building a UUID) for every request.
_ID_PREFIX = os.urandom(8).hex()
_id_counter = itertools.count(1)


def new_request_id(client_value: str | None = None) -> str:
    """The client's x-request-id when it is short and plain, else a fresh unique id."""
    if client_value and _CLIENT_REQUEST_ID.match(client_value):
        return client_value
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


def _timestamp(created: float) -> str:
    """``2026-12-02T03:04:05.678Z`` for a ``time.time()`` value."""
    milliseconds = int((created - int(created)) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{milliseconds:03d}Z"


class _AccessLine:
    """An access-log line waiting in the writer's queue: its time and fields, not yet JSON.

    Access lines skip the logging module's records and handler chain (a LogRecord costs more
    to build than the line costs to write); they share the writer thread and its order with
    every other record.
    """

    __slots__ = ("created", "fields")

    def __init__(self, fields: dict[str, Any]) -> None:
        self.created = time.time()
        self.fields = fields

    def json(self) -> str:
        """The line as the JSON formatter writes an access record."""
        entry: dict[str, Any] = {
            "ts": _timestamp(self.created),
            "level": "INFO",
            "logger": ACCESS_LOGGER,
            "msg": "request",
        }
        entry.update(self.fields)
        return json.dumps(entry, default=str, ensure_ascii=False)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, logger, message and any extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON line for the record."""
        entry: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_RECORD_KEYS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["exc_type"] = record.exc_info[0].__name__
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class _RecordQueueHandler(logging.handlers.QueueHandler):
    """Queues records as they are; the writer thread formats them (extra fields included)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """The record itself: nothing is formatted on the caller's thread."""
        return record


class _UnflushedStreamHandler(logging.StreamHandler):
    """A StreamHandler that leaves flushing to the listener (see _BatchingListener)."""

    def emit(self, record: logging.LogRecord) -> None:
        """Write the formatted record without flushing."""
        try:
            self.stream.write(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)


class _BatchingListener(logging.handlers.QueueListener):
    """Writes records as they come, and flushes only when the queue has run dry: under load many
    lines go out in one write instead of one system call each."""

    def __init__(self, records: queue.SimpleQueue[Any], writer: _UnflushedStreamHandler) -> None:
        super().__init__(records, writer)
        self.records = records
        self.writer = writer

    def handle(self, record: Any) -> None:
        """Write one record; an access line straight to the writer's stream."""
        if isinstance(record, _AccessLine):
            try:
                self.writer.stream.write(record.json() + self.writer.terminator)
            except Exception:  # reported as the logging module reports a failed write
                self.writer.handleError(logging.makeLogRecord({"msg": "access line"}))
            return
        super().handle(record)

    def dequeue(self, block: bool) -> logging.LogRecord:
        """The next record; flush the handlers first if none is waiting."""
        try:
            return self.records.get_nowait()
        except queue.Empty:
            for handler in self.handlers:
                handler.flush()
            return self.records.get(block)

    def stop(self) -> None:
        """Write out every queued record, flush, and stop the writer thread."""
        super().stop()
        for handler in self.handlers:
            handler.flush()


def _buffered(stream: Any) -> Any:
    """``stream`` itself, or for a standard stream a block-buffered writer on its descriptor
    (stderr is line-buffered, which would cost a system call per log line)."""
    if stream not in (sys.stderr, sys.stdout):
        return stream
    try:
        descriptor = stream.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a capture without a descriptor
        return stream
    stream.flush()
    return open(
        descriptor, "w", buffering=1 << 16, encoding="utf-8", errors="backslashreplace",
        closefd=False,
    )  # fmt: skip


_listener: _BatchingListener | None = None
#: The writer's queue while configure_logging's writer runs (access lines go straight to it).
_access_queue: queue.SimpleQueue[Any] | None = None


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    """Send the gateway's and uvicorn's logs to ``stream`` (stderr) as JSON lines.

    Records are handed to a writer thread through a queue, so a slow log consumer (a full
    pipe) never stalls the event loop, and formatting and I/O stay off it.
    """
    global _listener, _access_queue
    stop_logging()
    writer = _UnflushedStreamHandler(_buffered(stream or sys.stderr))
    writer.setFormatter(JsonFormatter())
    records: queue.SimpleQueue[Any] = queue.SimpleQueue()
    _listener = _BatchingListener(records, writer)
    _listener.start()
    _access_queue = records
    handler = _RecordQueueHandler(records)
    # uniroute.deployment warns about pool rows it cannot serve (a bad stored endpoint).
    for name in (GATEWAY_LOGGER, "uniroute.deployment", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    access = logging.getLogger(ACCESS_LOGGER)
    access.handlers[:] = [handler]
    access.setLevel(logging.INFO)
    access.propagate = False
    # uvicorn's own access log would duplicate ours without the request id.
    logging.getLogger("uvicorn.access").disabled = True


def stop_logging() -> None:
    """Write out every queued record and stop the writer thread (at shutdown)."""
    global _listener, _access_queue
    _access_queue = None
    if _listener is not None:
        _listener.stop()
        _listener = None


def note(request: HTTPConnection, **fields: Any) -> None:
    """Add fields to this request's access-log line."""
    request.scope.setdefault(LOG_FIELDS_KEY, {}).update(fields)


def request_id_of(request: HTTPConnection) -> str:
    """This request's id ("" outside the request-context middleware)."""
    return request.scope.get(REQUEST_ID_KEY, "")


def log_access(**fields: Any) -> None:
    """Write one access-log line with the given fields (request id, path, status, model, ...)."""
    records = _access_queue
    if records is not None:
        records.put(_AccessLine(fields))
    else:  # logging not configured by the gateway (embedded, tests): the standard path
        logging.getLogger(ACCESS_LOGGER).info("request", extra=fields)
