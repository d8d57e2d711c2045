"""The gateway's OpenAPI document: valid OpenAPI 3.1, one operation for every route the app has,
served at /openapi.json, and precise enough that what it calls valid the validators accept."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from pydantic import BaseModel
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from uniroute.deployment import Router
from uniroute.gateway.admin.protocol import AddModelRequest, PriceRequest, RecalibrateRequest
from uniroute.gateway.app import create_app
from uniroute.gateway.body import validate
from uniroute.gateway.openai.policy import parse_model_choice
from uniroute.gateway.openai.protocol import ChatCompletionRequest, CompletionRequest, RouteRequest
from uniroute.gateway.openapi import (
    OPENAPI_PATH,
    _refine,
    openapi_document,
    openapi_json,
    openapi_path,
    request_schemas,
)

#: Bodies of each operation and the request model that checks them.
BODIES: dict[str, type[BaseModel]] = {
    "POST /v1/chat/completions": ChatCompletionRequest,
    "POST /v1/completions": CompletionRequest,
    "POST /v1/route": RouteRequest,
    "POST /admin/models": AddModelRequest,
    "POST /admin/models/{name}/cost": PriceRequest,
    "POST /admin/recalibrate": RecalibrateRequest,
}


@pytest.fixture(scope="module")
def app(artifact_dir, tmp_path_factory):
    """The gateway application over the shared artifact and an empty registry (not started)."""
    registry = tmp_path_factory.mktemp("openapi") / "registry.db"
    return create_app(Router.load(artifact_dir, registry))


def _operations(document: dict[str, Any]) -> set[str]:
    return {f"{m.upper()} {path}" for path, item in document["paths"].items() for m in item}


def _routes(app) -> set[str]:
    """Every (method, path) the application answers, as OpenAPI names them."""
    found = set()
    for route in app.routes:
        if isinstance(route, Mount):  # static files: every path under it, by GET
            found.add(f"GET {route.path}/{{path}}")
            continue
        assert isinstance(route, Route), route
        # Starlette answers HEAD wherever it answers GET; the document lists the GETs.
        for method in sorted((route.methods or set()) - {"HEAD"}):
            found.add(f"{method} {openapi_path(route.path)}")
    return found


def _schemas_in(node: Any) -> Iterator[dict[str, Any]]:
    """Every inline schema of the document's operations (parameters, bodies, responses)."""
    if isinstance(node, dict):
        if isinstance(node.get("schema"), dict):
            yield node["schema"]
        for value in node.values():
            yield from _schemas_in(value)
    elif isinstance(node, list):
        for value in node:
            yield from _schemas_in(value)


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi_document()
    assert document["openapi"] == "3.1.0"
    # schemathesis checks the document against the OpenAPI 3.1 meta-schema ...
    schemathesis.openapi.from_dict(document).validate()
    # ... which leaves schemas free-form: each must also be a valid JSON Schema 2020-12,
    schemas = document["components"]["schemas"]
    for name, schema in schemas.items():
        assert jsonschema_rs.meta.is_valid(schema), name
    for schema in _schemas_in(document["paths"]):
        assert jsonschema_rs.meta.is_valid(schema), schema
    # and every reference must name a schema the document has.
    for ref in _refs(document):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas, ref


def test_an_invalid_document_is_caught_by_the_validation_used_above() -> None:
    document = openapi_document()
    document["paths"]["/healthz"]["get"]["responses"] = "none"
    with pytest.raises(jsonschema_rs.ValidationError, match="responses"):
        schemathesis.openapi.from_dict(document).validate()


def test_every_route_of_the_app_has_an_operation_and_nothing_else(app) -> None:
    routes, documented = _routes(app), _operations(openapi_document())
    assert not routes - documented, f"routes without an OpenAPI operation: {routes - documented}"
    assert not documented - routes, f"operations of no route: {documented - routes}"


def test_the_document_is_served_at_openapi_json_without_a_key(app, monkeypatch) -> None:
    monkeypatch.setenv("UNIROUTE_CLIENT_KEYS", "some-key")
    monkeypatch.setenv("UNIROUTE_ADMIN_TOKEN", "some-token")
    client = TestClient(app)  # no lifespan: serving the document needs nothing started
    response = client.get(OPENAPI_PATH)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"]
    assert response.json() == openapi_document()
    assert response.content == openapi_json()


def test_every_operation_documents_the_error_body_and_its_security() -> None:
    document = openapi_document()
    schemes = document["components"]["securitySchemes"]
    for path, item in document["paths"].items():
        for method, operation in item.items():
            label = f"{method.upper()} {path}"
            for status in ("4XX", "5XX"):
                content = operation["responses"][status]["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/Error"}, label
            names = {name for requirement in operation["security"] for name in requirement}
            assert names <= set(schemes), label
            if path.startswith("/v1/"):
                assert names == {"clientKey", "clientApiKey"}, label
            elif path.startswith("/admin/"):
                assert names == {"adminToken"}, label
            elif path.startswith("/ui/api/"):
                assert names == {"adminToken", "clientKey"}, label
            else:
                assert operation["security"] == [], label


def test_request_schemas_keep_every_field_of_the_request_models() -> None:
    schemas = request_schemas()
    for model in BODIES.values():
        assert set(model.model_fields) <= set(schemas[model.__name__]["properties"]), model
    assert schemas["ChatCompletionRequest"]["required"] == ["model", "messages"]
    assert schemas["CompletionRequest"]["required"] == ["model", "prompt"]


def test_a_refinement_of_a_field_the_model_lacks_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"refines \['temperature'\]"):
        _refine(
            "ChatCompletionRequest",
            {"properties": {"model": {}}},
            {"properties": {"temperature": {"type": "number"}}},
        )


SCHEMA = schemathesis.openapi.from_dict(openapi_document())


def _check_accepted(label: str, body: Any) -> None:
    model = BODIES[label]
    parsed = validate(model, body)  # an ApiError here is the document promising too much
    if isinstance(parsed, ChatCompletionRequest | CompletionRequest | RouteRequest):
        assert parsed.routing_text().strip()
        parse_model_choice(parsed.model, {})


@pytest.mark.parametrize("label", sorted(set(BODIES) - {"POST /admin/models"}))
def test_bodies_the_document_calls_valid_are_accepted(label: str) -> None:
    method, path = label.split()
    strategy = SCHEMA[path][method].as_strategy(
        generation_mode=schemathesis.GenerationMode.POSITIVE
    )

    @settings(
        max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=strategy)
    def accepted(case) -> None:
        if isinstance(case.body, dict):
            _check_accepted(label, json.loads(json.dumps(case.body)))

    accepted()


def test_added_models_the_document_calls_valid_are_accepted_but_for_their_prompt_ids() -> None:
    # Which prompt ids the scores must name is the artifact's business, so validation (which
    # does not look them up) is what the document is held to; an id listed twice in the list
    # form is left out, since JSON Schema cannot say "unique by key".
    strategy = SCHEMA["/admin/models"]["POST"].as_strategy(
        generation_mode=schemathesis.GenerationMode.POSITIVE
    )

    @settings(
        max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(case=strategy)
    def accepted(case) -> None:
        body = case.body
        if not isinstance(body, dict):
            return
        if isinstance(body.get("scores"), list):
            ids = [row["prompt_id"] for row in body["scores"]]
            if len(ids) != len(set(ids)):
                return
        body = json.loads(json.dumps(body))
        # JSON Schema's integers include 1.0, which the strict onboarding options refuse.
        options = body.get("onboarding") or {}
        for key, value in options.items():
            if isinstance(value, float) and value.is_integer():
                options[key] = int(value)
        _check_accepted("POST /admin/models", body)

    accepted()


def test_non_blank_means_what_strip_leaves_in_every_regex_dialect() -> None:
    # JSON Schema's \S is ECMA-262's: it would call U+001F or U+0085 text, which str.strip()
    # removes, so the document would promise bodies the validators refuse.
    from uniroute.gateway.openapi import _NON_BLANK

    pattern = re.compile(_NON_BLANK["pattern"])
    for code in range(0x110000):
        char = chr(code)
        assert (pattern.search(char) is None) == char.isspace(), hex(code)
