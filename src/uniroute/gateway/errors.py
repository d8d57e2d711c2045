"""OpenAI-style error bodies, and the exception handlers that render every refusal as one.

Every error the gateway answers with is ``{"error": {"message", "type", "param", "code"}}``:

* an :class:`ApiError` (a refusal decided here: a bad body, a missing key, no servable model)
  carries its own HTTP status, ``param`` and ``code``;
* any other :class:`~uniroute.errors.UniRouteError` that reaches a handler (a registry change
  that cannot be made, a locked registry, ...) is rendered with the class's ``http_status`` and
  ``code``: a ``StateError`` is a 503, a ``ModelNotFoundError`` a 404, a ``ModelExistsError`` a
  409, any other usage error a 400. No handler keeps a list of exceptions to translate;
* a pydantic ``ValidationError`` is a 400 whose ``param`` names the offending field.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticCustomError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from uniroute.errors import UniRouteError
from uniroute.gateway.access_log import note, request_id_of

_TYPE_ERROR_SUFFIXES = ("_type", "_parsing")
#: Key of the context of a validation error raised by :func:`invalid`: the field it names.
PARAM_KEY = "uniroute_param"


def error_type(status: int) -> str:
    """The OpenAI error ``type`` that goes with an HTTP status."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status >= 500:
        return "api_error"
    return "invalid_request_error"


def error_body(
    message: str, *, status: int, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The OpenAI error object ``{"error": {message, type, param, code}}``."""
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}


class ApiError(UniRouteError):
    """A request the gateway refuses, with the HTTP status, field and code to answer with."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.http_status = status
        self.code = code
        self.message = message
        self.param = param

    def body(self) -> dict[str, Any]:
        """The OpenAI error body of this refusal."""
        return error_body(self.message, status=self.http_status, param=self.param, code=self.code)


def api_error_of(exc: UniRouteError) -> ApiError:
    """The refusal an error of the hierarchy stands for (an ApiError is its own)."""
    if isinstance(exc, ApiError):
        return exc
    return ApiError(exc.http_status, str(exc), code=exc.code)


def _param_of(loc: Iterable[int | str]) -> str | None:
    """``("messages", 0, "content")`` -> ``"messages[0].content"``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or None


def invalid(code: str, message: str, param: str | None) -> PydanticCustomError:
    """The error a request model's validator raises: ``code`` and ``param`` are answered as is."""
    return PydanticCustomError(code, message, {PARAM_KEY: param})


def validation_error(exc: ValidationError, accepted: Iterable[str] | None = None) -> ApiError:
    """A 400 for the first problem pydantic found, naming its field (``param``).

    Errors raised with :func:`invalid` keep their code, message and field; pydantic's own get the
    codes ``unknown_field`` (listing the ``accepted`` fields), ``missing_field``, ``invalid_type``
    or ``invalid_request``.
    """
    errors = exc.errors(include_url=False)
    first = errors[0]
    context = first.get("ctx") or {}
    if PARAM_KEY in context:
        return ApiError(400, first["msg"], param=context[PARAM_KEY], code=first["type"])
    param = _param_of(first["loc"])
    kind = first["type"]
    if kind == "extra_forbidden":
        extra = [e["loc"] for e in errors if e["type"] == "extra_forbidden"]
        unknown = [_param_of(loc) for loc in extra]
        top_level = all(len(loc) == 1 for loc in extra)
        listed = f"; accepted: {sorted(accepted)}" if accepted is not None and top_level else ""
        return ApiError(
            400, f"unknown field(s) {unknown}{listed}", param=unknown[0], code="unknown_field"
        )
    if kind == "missing":
        return ApiError(400, f"missing required field '{param}'", param=param, code="missing_field")
    if kind.endswith(_TYPE_ERROR_SUFFIXES):
        return ApiError(400, f"'{param}': {first['msg']}", param=param, code="invalid_type")
    if kind == "value_error" and isinstance(context.get("error"), Exception):
        message = str(context["error"])  # the message of the rule that refused the value
    else:
        message = f"'{param}': {first['msg']}" if param else first["msg"]
    return ApiError(400, message, param=param, code="invalid_request")


# ---------------------------------------------------------------------------- handlers
def _render(request: Request, error: ApiError) -> Response:
    note(request, error=error.message)
    return JSONResponse(
        error.body(),
        status_code=error.http_status,
        headers={"x-request-id": request_id_of(request)},
    )


async def uniroute_error_handler(request: Request, exc: Exception) -> Response:
    """Any UniRouteError (ApiError included) as an OpenAI error with the class's status."""
    assert isinstance(exc, UniRouteError)
    return _render(request, api_error_of(exc))


async def validation_error_handler(request: Request, exc: Exception) -> Response:
    """A pydantic ValidationError as a 400 naming the field."""
    assert isinstance(exc, ValidationError)
    return _render(request, validation_error(exc))


async def http_error_handler(request: Request, exc: Exception) -> Response:
    """Starlette's 404 (unknown path) and 405 (wrong method) as OpenAI errors."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return JSONResponse(
        error_body(message, status=exc.status_code, code=code),
        status_code=exc.status_code,
        headers=exc.headers,
    )


EXCEPTION_HANDLERS = {
    UniRouteError: uniroute_error_handler,
    ValidationError: validation_error_handler,
    HTTPException: http_error_handler,
}
