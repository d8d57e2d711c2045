"""The estimated cost and saving counters, and JSON log lines."""

from __future__ import annotations

import io
import json
import logging
import os
import sys

import pytest

from uniroute.errors import ConfigError
from uniroute.gateway.access_log import (
    ACCESS_LOGGER,
    JsonFormatter,
    configure_logging,
    log_access,
    new_request_id,
    stop_logging,
)
from uniroute.gateway.metrics import GatewayMetrics


def _value(metrics: GatewayMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_cost_saving_and_overspend() -> None:
    metrics = GatewayMetrics()
    metrics.record_answer("cheap", 0.001, reference_cost=0.01)
    metrics.record_answer("cheap", 0.001, reference_cost=0.01)
    metrics.record_answer("dear", 0.03, reference_cost=0.01)
    metrics.record_answer("unknown", None, reference_cost=0.01)
    assert _value(metrics, "uniroute_estimated_cost_total", model="cheap") == pytest.approx(0.002)
    assert _value(metrics, "uniroute_estimated_cost_total", model="dear") == pytest.approx(0.03)
    assert _value(metrics, "uniroute_estimated_saving_total") == pytest.approx(0.018)
    assert _value(metrics, "uniroute_estimated_overspend_total") == pytest.approx(0.02)
    assert b"\nuniroute_requests_total{" not in metrics.render()  # no request counted yet
    assert GatewayMetrics().registry is not metrics.registry


def test_request_ids() -> None:
    assert new_request_id("trace-1.a:b") == "trace-1.a:b"
    for bad in (None, "", "has space", "x" * 65, "new\nline"):
        generated = new_request_id(bad)
        assert generated != bad and len(generated) == 32


@pytest.fixture
def restore_loggers():
    """Put back the handlers and levels that configure_logging changes."""
    names = (ACCESS_LOGGER, "uniroute.gateway", "uvicorn", "uvicorn.error", "uvicorn.access")
    saved = {}
    for name in names:
        logger = logging.getLogger(name)
        saved[name] = (list(logger.handlers), logger.level, logger.propagate, logger.disabled)
    yield
    for name, (handlers, level, propagate, disabled) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate, logger.disabled = propagate, disabled


def test_access_log_is_one_json_line(restore_loggers) -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    log_access(request_id="r1", path="/v1/route", status=200, attempts=[{"model": "m"}])
    stop_logging()  # the writer thread has written everything once stopped
    line = stream.getvalue().strip()
    record = json.loads(line)
    assert record["logger"] == ACCESS_LOGGER and record["request_id"] == "r1"
    assert record["status"] == 200 and record["attempts"] == [{"model": "m"}]


def test_exceptions_are_logged_with_their_type() -> None:
    try:
        raise KeyError("x")
    except KeyError:
        record = logging.LogRecord("g", logging.ERROR, __file__, 1, "boom", None, None)
        record.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(record))
    assert entry["exc_type"] == "KeyError" and "Traceback" in entry["exc"]


def test_access_lines_read_as_the_formatter_writes_them_in_order(restore_loggers) -> None:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    logging.getLogger("uniroute.gateway").warning("before")
    log_access(request_id="r2", path="/v1/chat/completions", status=200, model="m")
    logging.getLogger("uniroute.gateway").warning("after")
    stop_logging()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["msg"] for line in lines] == ["before", "request", "after"]
    # The same line through the logging module and the JSON formatter (embedded use).
    record = logging.LogRecord(ACCESS_LOGGER, logging.INFO, __file__, 1, "request", None, None)
    for key, value in {"request_id": "r2", "path": "/v1/chat/completions"}.items():
        setattr(record, key, value)
    record.status, record.model = 200, "m"
    formatted = json.loads(JsonFormatter().format(record))
    assert list(lines[1]) == list(formatted)
    assert {k: v for k, v in lines[1].items() if k != "ts"} == {
        k: v for k, v in formatted.items() if k != "ts"
    }
    assert len(lines[1]["ts"]) == len(formatted["ts"]) and lines[1]["ts"].endswith("Z")


def test_metrics_name_their_replica() -> None:
    from uniroute.gateway.config import GatewayConfig

    text = GatewayMetrics(replica="eu-1").render().decode()
    assert 'target_info{replica="eu-1"} 1.0' in text
    assert "target_info" not in GatewayMetrics().render().decode()
    assert GatewayConfig(replica_name="eu-1").replica() == "eu-1"
    assert GatewayConfig().replica().endswith(f":{os.getpid()}")
    with pytest.raises(ConfigError, match="replica_name"):
        GatewayConfig(replica_name="a\nb")
