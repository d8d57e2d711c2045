"""The gateway's OpenAPI 3.1 document, built from the request models, served at ``/openapi.json``.

Request bodies start from the pydantic models of :mod:`uniroute.gateway.openai.protocol` and
:mod:`uniroute.gateway.admin.protocol` (``model_json_schema``, their ``$defs`` collected into
``components.schemas``), so a field added to a model appears here without anyone editing this
file. Those models check most rules in validators written in code, which pydantic cannot put in
a JSON Schema: a chat needs a user message with some text, ``model`` a non-blank string, a price
either ``cost`` or both per-1k prices. :data:`_REFINEMENTS` writes each such rule back into the
generated schema as JSON Schema, naming the field it refines; a refinement of a field the model
no longer has is an error when the document is built, so the two cannot drift apart silently.

The document says what a request must look like to be answered rather than refused: a client
(or a fuzzer such as schemathesis) can generate bodies the gateway accepts from it, and bodies it
must refuse by breaking it. Where a rule has no exact JSON Schema form, the document describes a
safe part of what is accepted: model names in printable ASCII, endpoints without IPv6 hosts, key
variables as upper-case words, no blank user message anywhere in a chat (only the last one is
checked). Rules between values are left out: a policy header that contradicts ``model``, a
lambda together with a max-cost, a prompt id listed twice, prompt ids the artifact lacks.

Every operation documents the OpenAI error body for its 4xx and 5xx answers, and its success body
where the gateway builds it itself; a completion's body is the upstream's, so only its ``model``
field is promised.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from uniroute import __version__
from uniroute.gateway.admin.protocol import (
    AddModelRequest,
    CapabilitiesRequest,
    CreateKeyRequest,
    PriceRequest,
    RecalibrateRequest,
)
from uniroute.gateway.openai.conversation import MAX_SESSION_ID_CHARS, SESSION_HEADER
from uniroute.gateway.openai.policy import (
    LAMBDA_HEADER,
    LATENCY_HEADER,
    MAX_COST_HEADER,
    RISK_HEADER,
)
from uniroute.gateway.openai.protocol import ChatCompletionRequest, CompletionRequest, RouteRequest
from uniroute.registry.score_files import MAX_FILE_ANSWER_CHARS

OPENAPI_PATH = "/openapi.json"
_REF_TEMPLATE = "#/components/schemas/{model}"
_CONVERTOR = re.compile(r"\{(\w+)(?::\w+)?\}")

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": _REF_TEMPLATE.format(model=name)}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


# ---------------------------------------------------------------------------- shared pieces
#: Python's whitespace (what ``str.strip()`` removes), spelled out: JSON Schema's ``\s`` is
#: ECMA-262's, which differs (it leaves U+001C-U+001F and U+0085, and takes U+FEFF).
_PYTHON_WHITESPACE = (
    r"\t\n\u000b\f\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f"
    r"\u205f\u3000"
)
#: A string with at least one character that is not whitespace (what ``.strip()`` leaves).
_NON_BLANK: Schema = {"type": "string", "pattern": f"[^{_PYTHON_WHITESPACE}]"}
#: A price or target: pydantic says "number or null"; the validators also want it >= 0.
_NON_NEGATIVE: Schema = {"type": ["number", "null"], "minimum": 0}
_FRACTION: Schema = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
_NUMBER = r"[0-9]{1,6}(\.[0-9]{1,6})?"
_ROUTED_MODEL: Schema = {
    "anyOf": [
        {"const": "uniroute"},
        {
            "type": "string",
            "pattern": (
                rf"^uniroute:(lambda|max-cost)={_NUMBER}(,risk={_NUMBER})?"
                rf"(,latency={_NUMBER})?$"
            ),
        },
        {"type": "string", "pattern": rf"^uniroute:risk={_NUMBER}(,latency={_NUMBER})?$"},
        {"type": "string", "pattern": rf"^uniroute:latency={_NUMBER}$"},
        {"type": "string", "pattern": rf"^uniroute:verify(,lambda={_NUMBER})?$"},
    ]
}
#: A verified request compares complete answers: it may not stream.
_VERIFY_DOES_NOT_STREAM: Schema = {
    "if": {"required": ["model"], "properties": {"model": {"pattern": "^uniroute:verify"}}},
    "then": {"properties": {"stream": {"not": {"const": True}}}},
}

_HAND_WRITTEN: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "description": "The OpenAI error body of every refusal and failure.",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["message", "type", "param", "code"],
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string", "examples": ["invalid_request_error"]},
                    "param": {"type": ["string", "null"]},
                    "code": {"type": ["string", "null"], "examples": ["invalid_json"]},
                },
            }
        },
    },
    "RoutingPolicy": {
        **copy.deepcopy(_ROUTED_MODEL),
        "description": (
            "'uniroute' (the calibrated default trade-off), 'uniroute:lambda=L', "
            "'uniroute:max-cost=C', optionally with ',risk=Z'; 'uniroute:verify' or "
            "'uniroute:verify,lambda=L' (verify and escalate; not streamed)."
        ),
        "examples": [
            "uniroute",
            "uniroute:lambda=50",
            "uniroute:max-cost=0.001",
            "uniroute:verify",
        ],
    },
    "ModelChoice": {
        "description": "A routing policy (see RoutingPolicy), or a pool model's name (no routing).",
        "anyOf": [
            _ref("RoutingPolicy"),
            {**_NON_BLANK, "not": {"pattern": "^uniroute(:|$)"}},
        ],
        "examples": ["uniroute", "uniroute:lambda=50", "uniroute:max-cost=0.001"],
    },
    "ContentPart": {
        "type": "object",
        "description": "One part of a multi-part content; only the text parts are routed on.",
        "required": ["type"],
        "properties": {"type": {"type": "string"}, "text": {"type": "string"}},
        "anyOf": [
            {"properties": {"type": {"const": "text"}}, "required": ["text"]},
            {"properties": {"type": {"not": {"const": "text"}}}},
        ],
    },
    "UserContent": {
        "description": "What a user message says: text, or parts of which one has text.",
        "anyOf": [
            _NON_BLANK,
            {
                "type": "array",
                "items": _ref("ContentPart"),
                "contains": {
                    "type": "object",
                    "required": ["type", "text"],
                    "properties": {"type": {"const": "text"}, "text": _NON_BLANK},
                },
            },
        ],
    },
    "ChatMessage": {
        "type": "object",
        "required": ["role"],
        "properties": {
            "role": {"type": "string", "minLength": 1, "examples": ["user", "system"]},
            "content": {
                "anyOf": [
                    {"type": "string"},
                    {"type": "array", "items": _ref("ContentPart")},
                    {"type": "null"},
                ]
            },
        },
        "anyOf": [
            {
                "properties": {"role": {"const": "user"}, "content": _ref("UserContent")},
                "required": ["content"],
            },
            {"properties": {"role": {"not": {"const": "user"}}}},
        ],
    },
    "Messages": {
        "type": "array",
        "description": "The chat; the router embeds the last message with role 'user'.",
        "minItems": 1,
        "items": _ref("ChatMessage"),
        "contains": {
            "type": "object",
            "required": ["role"],
            "properties": {"role": {"const": "user"}},
        },
    },
    "Prompt": {
        "description": "One prompt: a string, or a list of exactly one string.",
        "anyOf": [_NON_BLANK, {"type": "array", "items": _NON_BLANK, "minItems": 1, "maxItems": 1}],
    },
    "ChatCompletion": {
        "type": "object",
        "description": "The upstream's answer, its 'model' set to the pool model that answered.",
        "required": ["model"],
        "properties": {"model": {"type": "string"}, "choices": {"type": "array"}},
    },
    "TextCompletion": {
        "type": "object",
        "description": "The upstream's answer, its 'model' set to the pool model that answered.",
        "required": ["model"],
        "properties": {"model": {"type": "string"}, "choices": {"type": "array"}},
    },
    "StreamEvent": {
        "type": "object",
        "description": (
            "One server-sent event, passed through as the upstream sent it with its 'model' set "
            "to the pool model: 'data' is a JSON chunk, or [DONE] at the end; a failure after "
            "the first byte ends the stream with a data event holding an error object."
        ),
        "required": ["data"],
        "properties": {
            "data": {"type": "string"},
            "event": {"type": "string"},
            "id": {"type": "string"},
            "retry": {"type": "integer"},
        },
    },
    "RouteDecision": {
        "type": "object",
        "required": [
            "model",
            "estimated_error",
            "cost",
            "lam",
            "policy",
            "ranking",
            "servable_ranking",
            "estimated_errors",
            "costs",
            "objectives",
            "servable_model",
        ],
        "properties": {
            "model": {"type": "string"},
            "estimated_error": {"type": "number"},
            "error_interval": {
                "anyOf": [
                    {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
                    {"type": "null"},
                ]
            },
            "evidence": {"type": ["integer", "null"]},
            "cost": {"type": "number"},
            "lam": {"type": "number"},
            "risk": {"type": "number"},
            "max_cost": {"type": ["number", "null"]},
            "policy": {"type": "string"},
            "warning": {"type": ["string", "null"]},
            "estimated_errors": {"type": "object", "additionalProperties": {"type": "number"}},
            "costs": {"type": "object", "additionalProperties": {"type": "number"}},
            "objectives": {"type": "object", "additionalProperties": {"type": "number"}},
            "ranking": {"type": "array", "items": {"type": "string"}},
            "servable_ranking": {"type": "array", "items": {"type": "string"}},
            "over_budget": {"type": "array", "items": {"type": "string"}},
            "not_servable": {"type": "array", "items": {"type": "string"}},
            "evidence_by_model": _nullable(
                {"type": "object", "additionalProperties": {"type": "integer"}}
            ),
            "cluster": {"type": ["integer", "null"]},
            "cluster_weights": _nullable({"type": "array", "items": {"type": "number"}}),
            "routing_text": {"type": "string", "description": "What the prompt was routed on."},
            "latency_weight": {"type": "number"},
            "expected_latency": {"type": ["number", "null"]},
            "session": {
                "type": "object",
                "properties": {
                    "rule": {"enum": ["new", "kept", "escalated", "previous_unavailable"]},
                    "previous": {"type": ["string", "null"]},
                },
            },
            "required": {"type": "object", "description": "What the request needs."},
            "not_capable": {"type": "array", "items": {"type": "string"}},
            "unrestricted_model": {"type": ["string", "null"]},
            "capability_rule_changed_pick": {"type": "boolean"},
            "servable_model": {"type": ["string", "null"]},
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {
            "object": {"const": "list"},
            "data": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "object", "created", "owned_by"],
                    "properties": {
                        "id": {"type": "string"},
                        "object": {"const": "model"},
                        "created": {"type": "integer"},
                        "owned_by": {"type": "string"},
                        "default_lambda": {"type": ["number", "null"]},
                        "cost_per_query": {"type": "number"},
                    },
                },
            },
        },
    },
    "Health": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"const": "ok"}},
    },
    "Readiness": {
        "type": "object",
        "required": ["status", "registry_readable", "pool_version", "servable_models"],
        "properties": {
            "status": {"enum": ["ready", "not ready"]},
            "registry_readable": {"type": "boolean"},
            "registry_error": {"type": "string"},
            "pool_version": {"type": "integer"},
            "servable_models": {"type": "integer", "minimum": 0},
        },
    },
    "ModelRecord": {
        "type": "object",
        "required": ["name", "endpoint", "tags", "enabled", "revision"],
        "properties": {
            "name": {"type": "string"},
            "cost_per_query": {"type": ["number", "null"]},
            "cost_per_1k_input": {"type": ["number", "null"]},
            "cost_per_1k_output": {"type": ["number", "null"]},
            "expected_output_tokens": {"type": ["number", "null"]},
            "endpoint": {"type": ["string", "null"]},
            "upstream_model": {"type": ["string", "null"]},
            "api_key_env": {"type": ["string", "null"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "enabled": {"type": "boolean"},
            "revision": {"type": "integer"},
            "created_at": {"type": "string"},
            "updated_at": {"type": "string"},
        },
    },
    "AdminModel": {
        "allOf": [
            _ref("ModelRecord"),
            {
                "type": "object",
                "required": ["n_scores", "servable", "circuit"],
                "properties": {
                    "n_scores": {"type": "integer", "minimum": 0},
                    "servable": {"type": "boolean"},
                    "circuit": {"type": "string"},
                },
            },
        ]
    },
    "AdminModelList": {
        "type": "object",
        "required": ["models"],
        "properties": {"models": {"type": "array", "items": _ref("AdminModel")}},
    },
    "PoolInfo": {
        "type": "object",
        "required": ["pool_version", "servable_models", "circuit_breakers"],
        "properties": {
            "artifact_id": {"type": "string"},
            "artifact_path": {"type": "string"},
            "encoder": {"type": "string"},
            "router": {"type": "string"},
            "n_representative_prompts": {"type": "integer"},
            "registry": {"type": "string"},
            "pool_version": {"type": "integer"},
            "default_lambda": {"type": ["number", "null"]},
            "policy_stale_reason": {"type": ["string", "null"]},
            "servable_models": {"type": "array", "items": {"type": "string"}},
            "most_accurate_model": {"type": ["string", "null"]},
            "circuit_breakers": {"type": "object", "additionalProperties": {"type": "string"}},
            "latency": {
                "type": "object",
                "description": "This replica's moving averages per model (seconds).",
                "additionalProperties": {
                    "type": "object",
                    "properties": {
                        "first_byte_s": {"type": "number"},
                        "total_s": {"type": "number"},
                    },
                },
            },
        },
    },
    "AddedModel": {
        "type": "object",
        "required": ["model", "matched_prompts", "representative_prompts", "servable"],
        "properties": {
            "model": _ref("ModelRecord"),
            "matched_prompts": {"type": "integer", "minimum": 0},
            "representative_prompts": {"type": "integer", "minimum": 0},
            "unknown_prompt_ids": {"type": "array", "items": {"type": "string"}},
            "n_unknown_prompt_ids": {"type": "integer", "minimum": 0},
            "evidence_warnings": {"type": "array", "items": {"type": "string"}},
            "seconds_to_routable": {"type": "number"},
            "cost_per_query": {"type": "number"},
            "price_warning": {"type": ["string", "null"]},
            "servable": {"type": "boolean"},
        },
    },
    "ModelChange": {
        "type": "object",
        "required": ["model"],
        "properties": {
            "model": _ref("ModelRecord"),
            "cost_per_query": {"type": "number", "description": "After a price change."},
            "price_warning": {"type": ["string", "null"]},
        },
    },
    "ModelRemoved": {
        "type": "object",
        "required": ["removed"],
        "properties": {"removed": {"type": "string"}},
    },
    "Calibration": {
        "type": "object",
        "required": ["policy", "basis", "left_out_no_endpoint"],
        "properties": {
            "policy": {
                "type": "object",
                "required": ["lam", "expected_cost", "expected_quality", "target"],
                "properties": {
                    "lam": {"type": "number"},
                    "expected_cost": {"type": "number"},
                    "expected_quality": {"type": "number"},
                    "target": {"type": "object"},
                },
            },
            "basis": {"type": "string"},
            "left_out_no_endpoint": {"type": "array", "items": {"type": "string"}},
        },
    },
    "Job": {
        "type": "object",
        "required": ["id", "kind", "subject", "status", "progress"],
        "properties": {
            "id": {"type": "string"},
            "kind": {"type": "string"},
            "subject": {"type": "string"},
            "status": {"enum": ["queued", "running", "succeeded", "failed"]},
            "progress": {
                "type": "object",
                "required": ["done", "total", "fraction"],
                "properties": {
                    "done": {"type": "integer", "minimum": 0},
                    "total": {"type": ["integer", "null"]},
                    "fraction": {"type": ["number", "null"]},
                },
            },
            "message": {"type": "string"},
            "error": {"type": ["string", "null"]},
            "result": {"type": ["object", "null"]},
            "replica": {"type": ["string", "null"]},
            "attempts": {"type": "integer", "minimum": 0},
            "seconds": {"type": "number"},
        },
    },
    "JobStarted": {
        "type": "object",
        "required": ["job", "poll"],
        "properties": {"job": _ref("Job"), "poll": {"type": "string"}},
    },
    "JobRecord": {"type": "object", "required": ["job"], "properties": {"job": _ref("Job")}},
    "JobList": {
        "type": "object",
        "required": ["jobs"],
        "properties": {"jobs": {"type": "array", "items": _ref("Job")}},
    },
    "DashboardSession": {
        "type": "object",
        "required": ["role"],
        "properties": {"role": {"enum": ["admin", "viewer"]}},
    },
    "DashboardPool": {
        "type": "object",
        "required": ["pool_version", "models"],
        "properties": {
            "pool_version": {"type": "integer"},
            "default_lambda": {"type": ["number", "null"]},
            "policy": {"type": ["object", "null"]},
            "models": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "enabled", "servable", "circuit", "health"],
                    "properties": {
                        "name": {"type": "string"},
                        "enabled": {"type": "boolean"},
                        "servable": {"type": "boolean"},
                        "circuit": {"enum": ["closed", "open", "half_open"]},
                        "health": {
                            "enum": [
                                "ok",
                                "down",
                                "recovering",
                                "no endpoint",
                                "not served",
                                "disabled",
                            ]  # fmt: skip
                        },
                        "cost_per_query": {"type": "number"},
                        "cost_per_1m_input": {"type": ["number", "null"]},
                        "cost_per_1m_output": {"type": ["number", "null"]},
                        "source": {"type": ["string", "null"]},
                        "n_scores": {"type": "integer"},
                    },
                },
            },
        },
    },
    "DashboardEstimates": {
        "type": "object",
        "required": ["available"],
        "description": "Rows are clusters, columns models; or available false with a reason.",
        "properties": {
            "available": {"type": "boolean"},
            "reason": {"type": "string"},
            "models": {"type": "array", "items": {"type": "string"}},
            "clusters": {"type": "array", "items": {"type": "object"}},
            "error": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}},
            "evidence": {
                "type": "array",
                "items": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            },
            "std": {"type": ["array", "null"]},
        },
    },
    "DashboardTradeoff": {
        "type": "object",
        "required": ["available"],
        "properties": {
            "available": {"type": "boolean"},
            "reason": {"type": "string"},
            "models": {"type": "array", "items": {"type": "string"}},
            "points": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["lambda", "cost", "quality", "share"],
                    "properties": {
                        "lambda": {"type": "number"},
                        "cost": {"type": "number"},
                        "quality": {"type": "number"},
                        "share": {"type": "object", "additionalProperties": {"type": "number"}},
                    },
                },
            },
            "singles": {"type": "array", "items": {"type": "object"}},
            "calibrated": {"type": ["object", "null"]},
        },
    },
    "DashboardTraffic": {
        "type": "object",
        "required": ["window", "bucket_s", "buckets", "totals", "keys", "teams"],
        "properties": {
            "window": {"enum": ["hour", "day"]},
            "bucket_s": {"type": "integer"},
            "now": {"type": "number"},
            "since": {"type": "number"},
            "buckets": {"type": "array", "items": {"type": "object"}},
            "totals": {"type": "object"},
            "keys": {"type": "array", "items": {"type": "object"}},
            "teams": {"type": "array", "items": {"type": "object"}},
        },
    },
    "ClientKey": {
        "type": "object",
        "required": ["id", "name", "revoked"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "team": {"type": ["string", "null"]},
            "allowed_models": {"type": ["array", "null"], "items": {"type": "string"}},
            "rpm_limit": {"type": ["integer", "null"]},
            "daily_spend_limit": {"type": ["number", "null"]},
            "monthly_spend_limit": {"type": ["number", "null"]},
            "revoked": {"type": "boolean"},
            "created_at": {"type": "string"},
            "revoked_at": {"type": ["string", "null"]},
        },
    },
    "KeyList": {
        "type": "object",
        "required": ["keys"],
        "properties": {"keys": {"type": "array", "items": _ref("ClientKey")}},
    },
    "KeyChange": {"type": "object", "required": ["key"], "properties": {"key": _ref("ClientKey")}},
    "KeyCreated": {
        "type": "object",
        "required": ["key", "secret"],
        "properties": {
            "key": _ref("ClientKey"),
            "secret": {"type": "string", "description": "Shown in this answer only."},
        },
    },
    "KeyUsage": {
        "type": "object",
        "required": ["key", "today", "this_month", "usage"],
        "properties": {
            "key": _ref("ClientKey"),
            "today": {"type": "object"},
            "this_month": {"type": "object"},
            "usage": {"type": "array", "items": {"type": "object"}},
        },
    },
    "TeamSpend": {
        "type": "object",
        "required": ["periods", "teams"],
        "properties": {
            "periods": {"type": "array", "items": {"type": "string"}},
            "teams": {"type": "array", "items": {"type": "object"}},
        },
    },
    "OpenApiDocument": {
        "type": "object",
        "required": ["openapi", "info", "paths"],
        "properties": {"openapi": {"type": "string"}},
    },
}

# ---------------------------------------------------------------------------- refinements
# A price is `cost`, or an input and an output token price, each per 1k or per 1M tokens
# (with optional expected_output_tokens), never two of one kind.
_TOKEN_PRICES = (
    "cost_per_1k_input",
    "cost_per_1m_input",
    "cost_per_1k_output",
    "cost_per_1m_output",
)


def _token_price_rule(input_field: str, output_field: str) -> Schema:
    return {
        "required": [input_field, output_field],
        "properties": {
            "cost": {"type": "null"},
            **{
                field: {"type": "number" if field in (input_field, output_field) else "null"}
                for field in _TOKEN_PRICES
            },
        },
    }


_PRICE_RULE: Schema = {
    "anyOf": [
        {
            "required": ["cost"],
            "properties": {
                "cost": {"type": "number"},
                **{field: {"type": "null"} for field in _TOKEN_PRICES},
            },
        },
        *(
            _token_price_rule(f"cost_per_{i}_input", f"cost_per_{o}_output")
            for i in ("1k", "1m")
            for o in ("1k", "1m")
        ),
    ]
}
_PRICE_FIELDS: Schema = {
    "cost": _NON_NEGATIVE,
    "cost_per_1k_input": _NON_NEGATIVE,
    "cost_per_1k_output": _NON_NEGATIVE,
    "cost_per_1m_input": _NON_NEGATIVE,
    "cost_per_1m_output": _NON_NEGATIVE,
    "expected_output_tokens": _NON_NEGATIVE,
}
# A model name as the registry accepts it (no surrounding whitespace, printable, at most 200
# characters), described by its printable-ASCII part: "printable" in Python's sense has no
# JSON Schema pattern, and an ASCII name is what endpoints and command lines handle best.
_MODEL_NAME: Schema = {
    "type": "string",
    "description": "Printable, no surrounding spaces, at most 200 characters.",
    "pattern": r"^[!-~]([ -~]{0,198}[!-~])?$",
    "examples": ["my-model", "mistralai/mixtral-8x7b-chat"],
}
# What the registry's endpoint rule accepts, less IPv6 hosts: a DNS name whose last label is
# not a number (clients would read it as an IPv4 address), or a dotted-decimal IPv4 address.
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_LAST_LABEL = r"[A-Za-z]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_HOST = rf"(({_LABEL}\.)*{_LAST_LABEL}|{_OCTET}(\.{_OCTET}){{3}})"
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
_ENDPOINT: Schema = {
    "type": "string",
    "description": (
        "The model's OpenAI base URL: http(s), a host, an optional port and plain path "
        "segments; no credentials, query or fragment."
    ),
    "pattern": rf"^https?://{_HOST}(:{_PORT})?(/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*$",
    "examples": ["http://127.0.0.1:8001/v1"],
}
_SCORE: Schema = {"type": ["number", "null"], "minimum": 0, "maximum": 1}
#: One raw answer: text without NUL, within the admin API's limit, or null (none given).
_ANSWER: Schema = {
    "anyOf": [
        {"type": "string", "maxLength": MAX_FILE_ANSWER_CHARS, "pattern": "^[^\\u0000]*$"},
        {"type": "null"},
    ]
}

#: Per request model: the properties that replace pydantic's, and keywords added to the schema.
_REFINEMENTS: dict[type[BaseModel], Schema] = {
    ChatCompletionRequest: {
        "properties": {
            "model": _ref("ModelChoice"),
            "messages": _ref("Messages"),
            "stream": {"type": "boolean", "default": False},
        },
        "required": ["model", "messages"],
        **_VERIFY_DOES_NOT_STREAM,
    },
    CompletionRequest: {
        "properties": {
            "model": _ref("ModelChoice"),
            "prompt": _ref("Prompt"),
            "stream": {"type": "boolean", "default": False},
        },
        "required": ["model", "prompt"],
        **_VERIFY_DOES_NOT_STREAM,
    },
    RouteRequest: {
        "properties": {
            "model": {**_ref("RoutingPolicy"), "default": "uniroute"},
            "messages": _ref("Messages"),
            "prompt": _ref("Prompt"),
        },
        "anyOf": [{"required": ["messages"]}, {"required": ["prompt"]}],
    },
    PriceRequest: {"properties": _PRICE_FIELDS, **_PRICE_RULE},
    CreateKeyRequest: {},
    CapabilitiesRequest: {},
    AddModelRequest: {
        "properties": {
            **_PRICE_FIELDS,
            "name": _MODEL_NAME,
            "endpoint": _ENDPOINT,
            "upstream_model": {**_MODEL_NAME, "description": "The name its endpoint knows."},
            "api_key_env": {
                "type": "string",
                "description": "The NAME of the environment variable holding its API key.",
                # Upper-case words of at most 15 characters: never the shape of a key.
                "pattern": r"^[A-Z][A-Z0-9]{0,14}(_[A-Z0-9]{1,15}){0,7}$",
                "examples": ["OPENAI_API_KEY"],
            },
            "tags": {"type": "array", "items": _NON_BLANK},
            "scores": {
                "description": "Scores on the representative prompts, in [0, 1]; null: missing.",
                "anyOf": [
                    {
                        "type": "object",
                        "minProperties": 1,
                        "additionalProperties": _SCORE,
                        # Not every score missing.
                        "not": {"additionalProperties": {"type": "null"}},
                    },
                    {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["prompt_id", "score"],
                            "properties": {
                                "prompt_id": {"type": "string"},
                                "score": _SCORE,
                                "answer": _ANSWER,
                            },
                        },
                        "contains": {"properties": {"score": {"type": "number"}}},
                    },
                    {"type": "null"},
                ],
            },
            "answers": {
                "description": "The model's raw answers to the representative prompts, by "
                "prompt id (null: none given); stored with their canonical keys.",
                "anyOf": [{"type": "object", "additionalProperties": _ANSWER}, {"type": "null"}],
            },
        },
        "required": ["name"],
        "dependentRequired": {"upstream_model": ["endpoint"]},
        "allOf": [
            _PRICE_RULE,
            # Answers come in the score rows or as 'answers', not both.
            {
                "if": {"required": ["answers"], "properties": {"answers": {"type": "object"}}},
                "then": {
                    "properties": {
                        "scores": {
                            "anyOf": [
                                {"type": ["object", "null"]},
                                {"type": "array", "items": {"not": {"required": ["answer"]}}},
                            ]
                        }
                    }
                },
            },
            {
                "anyOf": [
                    {
                        "required": ["scores"],
                        "properties": {
                            "scores": {"type": ["object", "array"]},
                            "onboard": {"const": False},
                        },
                    },
                    {
                        "required": ["onboard", "endpoint"],
                        "properties": {
                            "onboard": {"const": True},
                            "scores": {"type": "null"},
                            "answers": {"type": "null"},
                        },
                    },
                ]
            },
        ],
    },
    RecalibrateRequest: {
        "properties": {
            "target_cost": _NON_NEGATIVE,
            "target_quality": _FRACTION,
            "latency_weight": _NON_NEGATIVE,
        },
        # One target at most: none solves the stored target again.
        "not": {
            "anyOf": [
                {"required": list(pair)}
                for pair in (
                    ("target_cost", "target_quality"),
                    ("target_cost", "target_share"),
                    ("target_quality", "target_share"),
                )
            ]
        },
    },
}
#: The same for the models pydantic puts in ``$defs``.
_DEF_REFINEMENTS: dict[str, Schema] = {
    "ShareTarget": {
        "properties": {
            "model": _NON_BLANK,
            "share": {"type": "number", "minimum": 0, "maximum": 1},
        }
    },
}


def _refine(name: str, schema: Schema, refinement: Mapping[str, Any]) -> Schema:
    """``schema`` with the refinement's properties replacing pydantic's and its keywords added."""
    refined = copy.deepcopy(schema)
    properties = refined.setdefault("properties", {})
    changed = refinement.get("properties", {})
    unknown = sorted(set(changed) - set(properties))
    if unknown:
        raise ValueError(f"the OpenAPI schema refines {unknown}, which {name} does not have")
    properties.update(copy.deepcopy(changed))
    for keyword, value in refinement.items():
        if keyword != "properties":
            refined[keyword] = copy.deepcopy(value)
    return refined


def request_schemas() -> dict[str, Schema]:
    """The request body schemas of every request model (and their ``$defs``), refined."""
    schemas: dict[str, Schema] = {}
    for model, refinement in _REFINEMENTS.items():
        generated = model.model_json_schema(ref_template=_REF_TEMPLATE)
        for name, definition in generated.pop("$defs", {}).items():
            schemas[name] = _refine(name, definition, _DEF_REFINEMENTS.get(name, {}))
        schemas[model.__name__] = _refine(model.__name__, generated, refinement)
    missing = sorted(set(_DEF_REFINEMENTS) - set(schemas))
    if missing:
        raise ValueError(f"the OpenAPI schema refines {missing}, which no request model defines")
    return schemas


# ---------------------------------------------------------------------------- operations
def _json(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def _ok(description: str, schema: Schema, **headers: str) -> Schema:
    response: Schema = {"description": description, "content": _json(schema)}
    if headers:
        response["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    return response


_ERRORS: Schema = {
    "4XX": {"description": "The request is refused.", "content": _json(_ref("Error"))},
    "5XX": {
        "description": (
            "502 upstream_failed (every model tried failed), 503 models_unavailable (none can "
            "be called now), 500 internal_error (a bug)."
        ),
        "content": _json(_ref("Error")),
    },
}
_ANSWER_HEADERS = {
    "x-uniroute-model": "The pool model that answered.",
    "x-uniroute-attempts": "How many models were called.",
    "x-request-id": "The request's id (the client's own when short and plain).",
    "x-uniroute-verify": "Verified requests: agreed, escalated, single or unavailable.",
    "x-uniroute-verify-plan": "Verified requests: the plan, 'a' or 'a+b->e'.",
    "x-uniroute-called": "Verified requests: every model called, in order.",
    "x-uniroute-verify-reason": "Verified requests: why the answer came from that model.",
    "x-uniroute-estimated-error": "Routed: the answering model's estimated error on the prompt.",
    "x-uniroute-cost": "Routed: the answering model's expected cost per query.",
    "x-uniroute-lambda": "Routed: the trade-off lambda the decision used.",
    "x-uniroute-cluster": "Routed: the prompt's cluster (cluster routers).",
    "x-uniroute-evidence": "Routed: representative prompts behind the estimate on that cluster.",
    "x-uniroute-saving": "Routed: estimated saving against the most accurate servable model.",
    "x-uniroute-routed-to": "Routed: the router's own pick, before the session rule.",
    "x-uniroute-changed-by": "Routed: rules that changed the pick (capability, session) or none.",
    "x-uniroute-session": "Routed, in a session: new, kept, escalated or previous_unavailable.",
    "x-uniroute-latency-weight": "Routed, latency weighed: the weight mu used.",
    "x-uniroute-expected-latency": "Routed, latency weighed: the model's expected seconds.",
}


def _header(name: str, description: str) -> Schema:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string", "pattern": rf"^{_NUMBER}$"},
    }


_POLICY_HEADERS = [
    _header(LAMBDA_HEADER, "The trade-off lambda (with model 'uniroute')."),
    _header(MAX_COST_HEADER, "The most a query may cost (with model 'uniroute')."),
    _header(RISK_HEADER, "Standard deviations added to each estimated error."),
    _header(LATENCY_HEADER, "Weight of expected seconds per answer in the objective."),
    {
        "name": SESSION_HEADER,
        "in": "header",
        "required": False,
        "description": "The conversation this request continues (else its start identifies it).",
        "schema": {"type": "string", "minLength": 1, "maxLength": MAX_SESSION_ID_CHARS},
    },
]
_NAME_PARAMETER: Schema = {
    "name": "name",
    "in": "path",
    "required": True,
    "description": "The model's name in the pool (it may contain '/').",
    "schema": {"type": "string", "minLength": 1},
}
_KEY_ID_PARAMETER: Schema = {
    "name": "key_id",
    "in": "path",
    "required": True,
    "description": "The key's id (key-…), never its secret.",
    "schema": {"type": "string", "minLength": 1},
}
_CLIENT: list[Schema] = [{"clientKey": []}, {"clientApiKey": []}]
_ADMIN: list[Schema] = [{"adminToken": []}]
#: The dashboard's views: the admin token, or a client key where dashboard_client_keys is on.
_DASHBOARD: list[Schema] = [{"adminToken": []}, {"clientKey": []}]
_DASHBOARD_VIEWS: list[tuple[str, str, str, list[Schema] | None]] = [
    ("session", "The role the token gives: admin or viewer.", "DashboardSession", None),
    ("pool", "Every registered model: price, state, health, capabilities.", "DashboardPool", None),
    (
        "estimates",
        "The cluster x model map of estimated errors and their evidence.",
        "DashboardEstimates",
        None,
    ),
    (
        "tradeoff",
        "The servable pool's deferral curve with the calibrated point.",
        "DashboardTradeoff",
        None,
    ),
    (
        "traffic",
        "This replica's recent traffic, bucketed.",
        "DashboardTraffic",
        [
            {
                "name": "window",
                "in": "query",
                "required": False,
                "schema": {"enum": ["hour", "day"]},
            }
        ],
    ),
    ("jobs", "The onboarding jobs and their progress.", "JobList", None),
]


def _operation(
    operation_id: str,
    summary: str,
    tag: str,
    responses: Schema,
    *,
    security: list[Schema],
    body: str | None = None,
    body_required: bool = True,
    parameters: list[Schema] | None = None,
) -> Schema:
    operation: Schema = {
        "operationId": operation_id,
        "summary": summary,
        "tags": [tag],
        "security": security,
        "responses": {**responses, **_ERRORS},
    }
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": body_required, "content": _json(_ref(body))}
    return operation


def _paths() -> dict[str, Schema]:
    completion: Schema = {
        "200": {
            "description": "The answer (a stream of events when 'stream' is true).",
            "headers": {
                name: {"description": text, "schema": {"type": "string"}}
                for name, text in _ANSWER_HEADERS.items()
            },
            "content": {
                **_json(_ref("ChatCompletion")),
                "text/event-stream": {"schema": _ref("StreamEvent")},
            },
        }
    }
    text_completion = copy.deepcopy(completion)
    text_completion["200"]["content"]["application/json"]["schema"] = _ref("TextCompletion")
    return {
        "/v1/chat/completions": {
            "post": _operation(
                "createChatCompletion",
                "A chat completion answered by the routed (or named) pool model.",
                "openai",
                completion,
                security=_CLIENT,
                body="ChatCompletionRequest",
                parameters=_POLICY_HEADERS,
            )
        },
        "/v1/completions": {
            "post": _operation(
                "createCompletion",
                "A legacy text completion answered by the routed (or named) pool model.",
                "openai",
                text_completion,
                security=_CLIENT,
                body="CompletionRequest",
                parameters=_POLICY_HEADERS,
            )
        },
        "/v1/route": {
            "post": _operation(
                "routePrompt",
                "The routing decision for a prompt or a chat, without calling any model.",
                "openai",
                {"200": _ok("The decision.", _ref("RouteDecision"))},
                security=_CLIENT,
                body="RouteRequest",
                parameters=_POLICY_HEADERS,
            )
        },
        "/v1/models": {
            "get": _operation(
                "listModels",
                "The routing alias and every servable pool model.",
                "openai",
                {"200": _ok("The models.", _ref("ModelList"))},
                security=_CLIENT,
            )
        },
        "/healthz": {
            "get": _operation(
                "healthz",
                "Liveness: the event loop answers.",
                "operations",
                {"200": _ok("Alive.", _ref("Health"))},
                security=[],
            )
        },
        "/readyz": {
            "get": _operation(
                "readyz",
                "Readiness: the registry is readable and a model is servable.",
                "operations",
                {
                    "200": _ok("Ready.", _ref("Readiness")),
                    "503": _ok("Not ready; the body names the failing check.", _ref("Readiness")),
                },
                security=[],
            )
        },
        "/metrics": {
            "get": _operation(
                "metrics",
                "Prometheus metrics (text exposition format).",
                "operations",
                {
                    "200": {
                        "description": "The metrics.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
                security=[],
            )
        },
        OPENAPI_PATH: {
            "get": _operation(
                "openapi",
                "This document.",
                "operations",
                {"200": _ok("The OpenAPI document.", _ref("OpenApiDocument"))},
                security=[],
            )
        },
        "/admin/pool": {
            "get": _operation(
                "adminPool",
                "Artifact, registry, pool version, default lambda and breaker states.",
                "admin",
                {"200": _ok("The pool.", _ref("PoolInfo"))},
                security=_ADMIN,
            )
        },
        "/admin/models": {
            "get": _operation(
                "adminListModels",
                "Every registered model, enabled or not.",
                "admin",
                {"200": _ok("The models.", _ref("AdminModelList"))},
                security=_ADMIN,
            ),
            "post": _operation(
                "adminAddModel",
                "Add a model with its scores (201), or onboard it from its endpoint (202).",
                "admin",
                {
                    "201": _ok("Added; routable at once.", _ref("AddedModel")),
                    "202": _ok("Onboarding started; poll the job.", _ref("JobStarted")),
                },
                security=_ADMIN,
                body="AddModelRequest",
            ),
        },
        "/admin/models/{name}": {
            "delete": _operation(
                "adminRemoveModel",
                "Remove a model from the registry.",
                "admin",
                {"200": _ok("Removed.", _ref("ModelRemoved"))},
                security=_ADMIN,
                parameters=[_NAME_PARAMETER],
            )
        },
        "/admin/models/{name}/enable": {
            "post": _operation(
                "adminEnableModel",
                "Put a model back in rotation.",
                "admin",
                {"200": _ok("Enabled.", _ref("ModelChange"))},
                security=_ADMIN,
                parameters=[_NAME_PARAMETER],
            )
        },
        "/admin/models/{name}/disable": {
            "post": _operation(
                "adminDisableModel",
                "Take a model out of rotation (it stays in the registry).",
                "admin",
                {"200": _ok("Disabled.", _ref("ModelChange"))},
                security=_ADMIN,
                parameters=[_NAME_PARAMETER],
            )
        },
        "/admin/models/{name}/capabilities": {
            "post": _operation(
                "adminSetCapabilities",
                "Declare a model's capabilities and token limits (a field left out is kept).",
                "admin",
                {"200": _ok("Updated.", _ref("ModelChange"))},
                security=_ADMIN,
                body="CapabilitiesRequest",
                parameters=[_NAME_PARAMETER],
            )
        },
        "/admin/models/{name}/cost": {
            "post": _operation(
                "adminSetCost",
                "Change a model's price.",
                "admin",
                {"200": _ok("Re-priced.", _ref("ModelChange"))},
                security=_ADMIN,
                body="PriceRequest",
                parameters=[_NAME_PARAMETER],
            )
        },
        "/admin/recalibrate": {
            "post": _operation(
                "adminRecalibrate",
                "Solve a target for the current pool (no body: the stored target again).",
                "admin",
                {"200": _ok("The new default policy.", _ref("Calibration"))},
                security=_ADMIN,
                body="RecalibrateRequest",
                body_required=False,
            )
        },
        "/admin/keys": {
            "get": _operation(
                "adminListKeys",
                "Every client key (never its secret).",
                "admin",
                {"200": _ok("The keys.", _ref("KeyList"))},
                security=_ADMIN,
            ),
            "post": _operation(
                "adminCreateKey",
                "Create a client key with optional team, models and limits.",
                "admin",
                {"201": _ok("The key and its secret, shown this once.", _ref("KeyCreated"))},
                security=_ADMIN,
                body="CreateKeyRequest",
            ),
        },
        "/admin/keys/{key_id}": {
            "delete": _operation(
                "adminRevokeKey",
                "Revoke a client key.",
                "admin",
                {"200": _ok("Revoked.", _ref("KeyChange"))},
                security=_ADMIN,
                parameters=[_KEY_ID_PARAMETER],
            )
        },
        "/admin/keys/{key_id}/usage": {
            "get": _operation(
                "adminKeyUsage",
                "A key's spend and requests, today, this month and per period.",
                "admin",
                {"200": _ok("The usage.", _ref("KeyUsage"))},
                security=_ADMIN,
                parameters=[_KEY_ID_PARAMETER],
            )
        },
        "/admin/teams": {
            "get": _operation(
                "adminTeamSpend",
                "Spend and requests per team, today and this month (or one period).",
                "admin",
                {"200": _ok("Spend per team.", _ref("TeamSpend"))},
                security=_ADMIN,
                parameters=[
                    {
                        "name": "period",
                        "in": "query",
                        "required": False,
                        "schema": {
                            "type": "string",
                            "pattern": r"^(day:\d{4}-\d{2}-\d{2}|month:\d{4}-\d{2})$",
                        },
                    }
                ],
            )
        },
        "/admin/jobs": {
            "get": _operation(
                "adminListJobs",
                "The onboarding jobs, newest last.",
                "admin",
                {"200": _ok("The jobs.", _ref("JobList"))},
                security=_ADMIN,
            )
        },
        "/admin/jobs/{job_id}": {
            "get": _operation(
                "adminGetJob",
                "One onboarding job and its progress.",
                "admin",
                {"200": _ok("The job.", _ref("JobRecord"))},
                security=_ADMIN,
                parameters=[
                    {
                        "name": "job_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1},
                    }
                ],
            )
        },
        "/ui": {
            "get": _operation(
                "dashboardPage",
                "The web dashboard's page (404 unless 'dashboard' is on).",
                "dashboard",
                {"200": {"description": "The page.", "content": {"text/html": {}}}},
                security=[],
            )
        },
        "/ui/": {
            "get": _operation(
                "dashboardPageSlash",
                "The web dashboard's page, at its directory URL.",
                "dashboard",
                {"200": {"description": "The page.", "content": {"text/html": {}}}},
                security=[],
            )
        },
        "/ui/static/{path}": {
            "get": _operation(
                "dashboardAsset",
                "A script or style sheet of the dashboard (shipped in the package).",
                "dashboard",
                {"200": {"description": "The asset."}},
                security=[],
                parameters=[
                    {
                        "name": "path",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1},
                    }
                ],
            )
        },
        **{
            f"/ui/api/{view}": {
                "get": _operation(
                    f"dashboard{view.title()}",
                    summary,
                    "dashboard",
                    {"200": _ok("The view.", _ref(schema))},
                    security=_DASHBOARD,
                    parameters=parameters,
                )
            }
            for view, summary, schema, parameters in _DASHBOARD_VIEWS
        },
    }


_SECURITY_SCHEMES: Schema = {
    "clientKey": {
        "type": "http",
        "scheme": "bearer",
        "description": (
            "A client key from the variable named by client_keys_env (UNIROUTE_CLIENT_KEYS); "
            "needed only when that variable is set."
        ),
    },
    "clientApiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "api-key",
        "description": "The same client key, in an 'api-key' header.",
    },
    "adminToken": {
        "type": "http",
        "scheme": "bearer",
        "description": (
            "The admin token from the variable named by admin_token_env (UNIROUTE_ADMIN_TOKEN); "
            "unset, the admin API answers 403."
        ),
    },
}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of every gateway route (a fresh copy each call)."""
    schemas = {**request_schemas(), **copy.deepcopy(_HAND_WRITTEN)}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "UniRoute gateway",
            "version": __version__,
            "description": (
                "An OpenAI-compatible gateway that answers each request with the pool model "
                "minimising estimated error + lambda * cost, plus the admin API that changes the "
                "pool and the operator endpoints."
            ),
        },
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "tags": [
            {"name": "openai", "description": "The OpenAI-compatible API (client key)."},
            {"name": "admin", "description": "Changes to the model pool (admin token)."},
            {"name": "operations", "description": "Health, readiness, metrics, this document."},
            {
                "name": "dashboard",
                "description": "The web dashboard and its views (off by default).",
            },
        ],
        "paths": _paths(),
        "components": {"schemas": schemas, "securitySchemes": copy.deepcopy(_SECURITY_SCHEMES)},
    }


def openapi_path(route_path: str) -> str:
    """A Starlette route path as an OpenAPI path template: ``{name:path}`` -> ``{name}``."""
    return _CONVERTOR.sub(r"{\1}", route_path)


@functools.cache
def openapi_json() -> bytes:
    """The document as UTF-8 JSON, built once per process (it depends on the code only)."""
    return json.dumps(openapi_document(), separators=(",", ":")).encode()


async def openapi(request: Request) -> Response:
    """GET /openapi.json: this gateway's OpenAPI document (no key needed)."""
    return Response(openapi_json(), media_type="application/json")


def openapi_routes() -> list[Route]:
    """The route serving the OpenAPI document."""
    return [Route(OPENAPI_PATH, openapi, methods=["GET"])]
