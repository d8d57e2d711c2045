"""Every error of the hierarchy becomes an OpenAI error body with its class's status and code."""

from __future__ import annotations

import pytest

from uniroute.errors import (
    CalibrationError,
    DataError,
    ModelExistsError,
    ModelNotFoundError,
    RouterError,
    StateError,
    UniRouteError,
)
from uniroute.gateway.errors import ApiError, api_error_of


@pytest.mark.parametrize(
    ("error", "status", "kind", "code"),
    [
        (StateError("the registry is locked"), 503, "api_error", "state_unavailable"),
        (ModelNotFoundError("no model 'x'"), 404, "invalid_request_error", "model_not_found"),
        (ModelExistsError("model 'x' exists"), 409, "invalid_request_error", "model_exists"),
        (DataError("bad scores"), 400, "invalid_request_error", "invalid_data"),
        (RouterError("empty pool"), 400, "invalid_request_error", "invalid_request"),
        (CalibrationError("cannot meet"), 400, "invalid_request_error", "calibration_failed"),
        (UniRouteError("unexpected"), 500, "api_error", "internal_error"),
    ],
)
def test_an_error_of_the_hierarchy_keeps_its_status_and_code(error, status, kind, code) -> None:
    api_error = api_error_of(error)
    assert api_error.http_status == status
    assert api_error.body() == {
        "error": {"message": str(error), "type": kind, "param": None, "code": code}
    }


def test_an_api_error_is_its_own_refusal() -> None:
    refusal = ApiError(401, "invalid API key", code="invalid_api_key")
    assert api_error_of(refusal) is refusal
    assert refusal.body()["error"]["type"] == "authentication_error"
    assert ApiError(403, "off").body()["error"]["type"] == "permission_error"
    assert ApiError(502, "down", code="upstream_failed").body()["error"]["type"] == "api_error"
