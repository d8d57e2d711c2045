"""Request bodies: read within the size limit, parsed as one JSON object, validated by a model.

The parsed object is what is forwarded upstream (unknown fields and all); the pydantic model
validated from it only checks it and gives the handlers typed access to the fields they use.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from uniroute._json import DEFAULT_MAX_DEPTH, JsonLimitError, loads_bounded
from uniroute.gateway.config import GatewayConfig
from uniroute.gateway.errors import ApiError, validation_error

ModelT = TypeVar("ModelT", bound=BaseModel)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes with a 413 before reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            declared_size = int(declared)
        except ValueError:
            raise ApiError(400, "invalid Content-Length header", code="invalid_request") from None
        if declared_size > limit:
            raise ApiError(
                413,
                f"the request body is {declared_size} bytes; the limit is {limit}",
                code="request_too_large",
            )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(
                413,
                f"the request body exceeds the limit of {limit} bytes",
                code="request_too_large",
            )
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json_object(raw: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying what is wrong with it.

    Parsing is bounded (nesting depth, number size, no NaN, no lone surrogates) so that no body
    can make anything after it fail: what passes here can be validated, logged and re-encoded.
    """
    if not raw.strip():
        raise ApiError(400, "the request body is empty; send a JSON object", code="invalid_json")
    try:
        payload = loads_bounded(raw, max_depth=max_depth)
    except JsonLimitError as exc:
        raise ApiError(400, f"the request body {exc}", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise ApiError(
            400,
            f"the request body must be a JSON object, got {type(payload).__name__}",
            code="invalid_json",
        )
    return payload


def validate(model: type[ModelT], payload: dict[str, Any]) -> ModelT:
    """``payload`` checked by a request model; a 400 naming the first bad field otherwise."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise validation_error(exc, accepted=model.model_fields) from None


async def json_body(
    request: Request, config: GatewayConfig, *, allow_empty: bool = False
) -> dict[str, Any]:
    """The body read within the config's size limit and parsed as a JSON object within its depth
    limit (``{}`` if empty and ``allow_empty``)."""
    raw = await read_body(request, config.max_body_bytes)
    if allow_empty and not raw.strip():
        return {}
    return parse_json_object(raw, config.max_json_depth)
