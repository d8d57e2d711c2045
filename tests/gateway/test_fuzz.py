"""Fuzzing the gateway: properties of its request parser and SSE rewriter, and a live run.

* The request parser (``parse_json_object`` + ``validate`` with every request model) turns any
  bytes, and any JSON-ish document (deep nesting, huge numbers, NaN, lone surrogates, text that
  is not UTF-8), into a request model or an :class:`ApiError` with a 4xx status, nothing else;
  what it accepts can be sent on as strict UTF-8 JSON.
* The SSE rewriter changes nothing but the ``model`` of ``data:`` events, whatever the bytes and
  wherever the stream is cut into chunks, and every event of a well-formed stream comes out
  naming the pool model.
* A schemathesis run against ``uniroute serve`` in a child process, from the gateway's own
  OpenAPI document, with client keys and an admin token set (requests go with the right key,
  a wrong one or none): no 5xx but the upstream failures the gateway reports as such, every
  refusal an OpenAI error body, the answers as documented, and the gateway alive at the end.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from tests.gateway.support import ADMIN_TOKEN, CLIENT_KEY, POOL, pool_gateway
from uniroute.gateway.admin.protocol import AddModelRequest, PriceRequest, RecalibrateRequest
from uniroute.gateway.body import parse_json_object, validate
from uniroute.gateway.errors import ApiError
from uniroute.gateway.fallback import UpstreamError
from uniroute.gateway.openai.policy import parse_model_choice
from uniroute.gateway.openai.protocol import ChatCompletionRequest, CompletionRequest, RouteRequest
from uniroute.gateway.openapi import openapi_document
from uniroute.gateway.upstream import SseModelRewriter

REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    ChatCompletionRequest,
    CompletionRequest,
    RouteRequest,
    AddModelRequest,
    PriceRequest,
    RecalibrateRequest,
)
#: Every field name the request models know, so generated objects hit their validators.
FIELD_NAMES = sorted(
    {name for model in REQUEST_MODELS for name in model.model_fields}
    | {"role", "content", "type", "text", "prompt_id", "score", "share", "onboarding"}
)
POOL_MODEL = "pool/model-7b"
PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# ------------------------------------------------------------------------ JSON-ish values
def _awkward_numbers() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.integers(),
        st.integers(min_value=10**300, max_value=10**320),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([0, -0.0, 1e308, 5e-324, 2**63, -(2**64), 0.5, 1]),
    )


def _awkward_strings() -> st.SearchStrategy[str]:
    return st.one_of(
        st.text(max_size=20),
        st.sampled_from(["", " ", "\ud800", "a\udfffb", "\x00", "uniroute", "uniroute:lambda=1"]),
        st.text(alphabet=st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=3),
    )


def json_values(max_leaves: int = 25) -> st.SearchStrategy[Any]:
    """Values a JSON document can hold, and a few it should not (NaN, lone surrogates)."""
    scalars = st.one_of(st.none(), st.booleans(), _awkward_numbers(), _awkward_strings())
    keys = st.one_of(st.sampled_from(FIELD_NAMES), _awkward_strings())
    return st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)
        ),
        max_leaves=max_leaves,
    )


def request_like_objects() -> st.SearchStrategy[dict[str, Any]]:
    """Objects shaped like the gateway's request bodies, with odd values in their fields."""
    value = json_values(12)
    part = st.dictionaries(st.sampled_from(["type", "text", "image_url"]), value, max_size=3)
    message = st.dictionaries(
        st.sampled_from(["role", "content", "name"]),
        st.one_of(value, st.sampled_from(["user", "system"]), st.lists(part, max_size=3)),
        max_size=3,
    )
    fields = st.dictionaries(
        st.sampled_from(FIELD_NAMES),
        st.one_of(value, st.lists(message, max_size=3), st.sampled_from(["uniroute", POOL_MODEL])),
        max_size=6,
    )
    return st.one_of(fields, st.dictionaries(st.sampled_from(FIELD_NAMES), value, max_size=6))


def _encode(value: Any, ensure_ascii: bool, separators: tuple[str, str] | None) -> bytes:
    text = json.dumps(value, ensure_ascii=ensure_ascii, allow_nan=True, separators=separators)
    # "surrogatepass" writes a lone surrogate as the 3 bytes UTF-8 forbids, as some clients do.
    return text.encode("utf-8", "surrogatepass")


@st.composite
def json_documents(draw: st.DrawFn) -> bytes:
    """JSON text of generated values, encoded as clients (careful or not) would send it."""
    value = draw(st.one_of(request_like_objects(), json_values()))
    return _encode(value, draw(st.booleans()), draw(st.sampled_from([None, (",", ":")])))


@st.composite
def deep_documents(draw: st.DrawFn) -> bytes:
    """Arrays or objects nested up to 50,000 levels, bare or inside a request field."""
    depth = draw(st.one_of(st.integers(1, 200), st.integers(200, 50_000)))
    opening, closing = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
    nested = opening * depth + b"1" + closing * depth
    field = draw(st.sampled_from(["model", "messages", "scores", "x"]))
    return draw(st.sampled_from([nested, b'{"%s": %s}' % (field.encode(), nested)]))


@st.composite
def huge_numbers(draw: st.DrawFn) -> bytes:
    """Numbers of up to 20,000 digits or with huge exponents, where a request has a number."""
    digits = draw(st.integers(1, 20_000))
    number = draw(
        st.sampled_from(
            [
                b"1" * digits,
                b"-" + b"9" * digits,
                b"1e" + str(digits).encode(),
                b"0." + b"1" * digits,
            ]
        )
    )
    template = draw(
        st.sampled_from([b'{"cost": %s, "name": "m", "scores": {"p": 1}}', b'{"x": [%s]}', b"%s"])
    )
    return template % number


@st.composite
def mutated_bodies(draw: st.DrawFn) -> bytes:
    """A valid chat body with bytes inserted, deleted or replaced at random places."""
    body = bytearray(
        json.dumps(
            {"model": "uniroute", "messages": [{"role": "user", "content": "What is 2+2?"}]}
        ).encode()
    )
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, len(body)))
        action = draw(st.sampled_from(["insert", "delete", "replace"]))
        chunk = draw(st.binary(min_size=1, max_size=4))
        if action == "insert":
            body[at:at] = chunk
        elif action == "delete":
            del body[at : at + len(chunk)]
        else:
            body[at : at + len(chunk)] = chunk
    return bytes(body)


def hostile_bodies() -> st.SearchStrategy[bytes]:
    """Every kind of body above, and plain random bytes."""
    return st.one_of(
        st.binary(max_size=200),
        json_documents(),
        deep_documents(),
        huge_numbers(),
        mutated_bodies(),
        st.sampled_from([b"NaN", b'{"cost": NaN}', b'{"a": Infinity}', b'"\\ud800"', b"\xff{}"]),
    )


# ------------------------------------------------------------------------ the request parser
def _parsed_or_refused(raw: bytes) -> dict[str, Any] | None:
    """The object parse_json_object accepted, or None when it refused with a 4xx ApiError."""
    try:
        payload = parse_json_object(raw)
    except ApiError as refusal:
        assert 400 <= refusal.http_status < 500, refusal.http_status
        assert refusal.body()["error"]["message"]
        return None
    assert isinstance(payload, dict)
    return payload


def _check_validation(payload: dict[str, Any]) -> None:
    """Each request model accepts ``payload`` or refuses it with a 4xx ApiError, nothing else."""
    for model in REQUEST_MODELS:
        try:
            parsed = validate(model, payload)
        except ApiError as refusal:
            assert 400 <= refusal.http_status < 500, (model.__name__, refusal.http_status)
            continue
        assert isinstance(parsed, model)
        if isinstance(parsed, ChatCompletionRequest | CompletionRequest | RouteRequest):
            assert isinstance(parsed.routing_text(), str)
            try:
                parse_model_choice(parsed.model, {})
            except ApiError as refusal:
                assert 400 <= refusal.http_status < 500


@PROPERTY_SETTINGS
@given(raw=hostile_bodies())
def test_any_body_is_parsed_and_validated_or_refused_with_a_4xx(raw: bytes) -> None:
    note(f"body: {raw[:2000]!r}")
    payload = _parsed_or_refused(raw)
    if payload is None:
        return
    # What the parser accepts is forwarded upstream and logged: it must encode as strict JSON.
    json.dumps(payload, allow_nan=False, ensure_ascii=False).encode("utf-8")
    _check_validation(payload)


@PROPERTY_SETTINGS
@given(payload=request_like_objects())
def test_any_json_object_is_validated_or_refused_with_a_4xx(payload: dict[str, Any]) -> None:
    note(f"payload: {payload!r:.2000}")
    _check_validation(payload)


@settings(max_examples=20, deadline=None)
@given(depth=st.integers(65, 500_000))
def test_nesting_past_the_limit_is_a_400(depth: int) -> None:
    with pytest.raises(ApiError) as refused:
        parse_json_object(b'{"model": ' + b"[" * depth + b"]" * depth + b"}")
    assert refused.value.http_status == 400


# ------------------------------------------------------------------------ the SSE rewriter
def _rewrite(stream: bytes, cuts: list[int], model: str = POOL_MODEL) -> bytes:
    """What the rewriter sends for ``stream`` delivered in chunks cut at ``cuts``."""
    rewriter = SseModelRewriter(model)
    bounds = [0, *sorted(set(cuts)), len(stream)]
    out = [rewriter.feed(stream[a:b]) for a, b in itertools.pairwise(bounds)]
    return b"".join(out) + rewriter.flush()


def _cut_points(stream: bytes, draw: st.DrawFn) -> list[int]:
    return draw(st.lists(st.integers(0, len(stream)), max_size=12))


def _line_ending(line: bytes) -> bytes:
    return line[len(line.rstrip(b"\r\n")) :]


def _canonical(event: Any) -> str:
    return json.dumps(event, sort_keys=True, allow_nan=True)


def _is_model_rewrite(before: bytes, after: bytes, model: str) -> bool:
    """True when ``after`` is the ``data:`` line ``before`` with only its ``model`` changed."""
    if not before.startswith(b"data:") or not after.startswith(b"data:"):
        return False
    if _line_ending(before) != _line_ending(after):
        return False
    try:
        old = json.loads(before[5:])
        new = json.loads(after[5:])
    except ValueError:
        return False
    if not isinstance(old, dict) or not isinstance(new, dict) or new.get("model") != model:
        return False
    return old.get("model") != model and _canonical({**old, "model": model}) == _canonical(new)


def _units(stream: bytes) -> list[bytes]:
    """Complete lines as the rewriter splits them, then the unterminated tail as one unit."""
    cut = stream.rfind(b"\n") + 1
    tail = [stream[cut:]] if stream[cut:] else []
    return stream[:cut].splitlines(keepends=True) + tail


def _assert_only_models_changed(stream: bytes, out: bytes, model: str = POOL_MODEL) -> None:
    before, after = _units(stream), _units(out)
    assert len(before) == len(after), (stream, out)
    for old, new in zip(before, after, strict=True):
        assert old == new or _is_model_rewrite(old, new, model), (old, new)


@st.composite
def sse_lines(draw: st.DrawFn) -> bytes:
    """One SSE line (with its ending): events, comments, fields, junk, near-JSON."""
    ending = draw(st.sampled_from([b"\n", b"\r\n", b"\r", b""]))
    event = draw(st.dictionaries(st.sampled_from(["model", "id", "choices"]), json_values(6)))
    kind = draw(st.integers(0, 6))
    if kind == 0:
        body = b"data: " + _encode(event, draw(st.booleans()), None)
    elif kind == 1:
        body = b"data:" + json.dumps({**event, "model": draw(_model_names())}).encode()
    elif kind == 2:
        body = draw(st.sampled_from([b"data: [DONE]", b"", b": keep-alive", b"event: x", b"id: 1"]))
    elif kind == 3:
        body = b'data: {"model": "' + draw(st.binary(max_size=12)) + b'"}'
    elif kind == 4:
        body = b"data: " + _encode(draw(json_values(4)), draw(st.booleans()), None)
    else:
        body = draw(st.binary(max_size=40))
    return body + ending


def _model_names() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from([POOL_MODEL, "upstream-name", "", 'quote"d', "back\\slash", "é"]),
        st.text(max_size=10),
    )


@st.composite
def chunked_streams(draw: st.DrawFn) -> tuple[bytes, list[int], list[int]]:
    """A stream of SSE-ish lines or raw bytes, and two ways to cut it into chunks."""
    stream = draw(
        st.one_of(st.binary(max_size=300), st.lists(sse_lines(), max_size=10).map(b"".join))
    )
    return stream, _cut_points(stream, draw), _cut_points(stream, draw)


def _outcome(stream: bytes, cuts: list[int]) -> bytes | str:
    """The rewritten stream, or the kind of the UpstreamError that broke it off."""
    try:
        return _rewrite(stream, cuts)
    except UpstreamError as failure:
        return failure.kind


@PROPERTY_SETTINGS
@given(case=chunked_streams())
def test_rewriter_changes_only_model_fields_wherever_the_stream_is_cut(
    case: tuple[bytes, list[int], list[int]],
) -> None:
    # Garbage may break the stream off (an UpstreamError: the model failing), but nothing else
    # may escape, and where the chunks were cut must change nothing.
    stream, cuts, other_cuts = case
    note(f"stream: {stream!r}, cut at {sorted(set(cuts))} and {sorted(set(other_cuts))}")
    out = _outcome(stream, cuts)
    if isinstance(out, bytes):
        _assert_only_models_changed(stream, out)
    assert _outcome(stream, other_cuts) == out
    assert _outcome(stream, []) == out


@st.composite
def event_streams(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    """A well-formed chat completion stream from an upstream that names the model its own way."""
    upstream_model = draw(_model_names())
    text = st.text(max_size=15)
    nested_model = st.one_of(st.just(POOL_MODEL), _model_names())
    events = []
    for index in range(draw(st.integers(1, 6))):
        delta: dict[str, Any] = {"content": draw(text)}
        if draw(st.booleans()):
            # Other objects may carry a "model" key of their own (tool calls, metadata).
            delta[draw(st.sampled_from(["model", "metadata"]))] = draw(nested_model)
        event = {
            "id": f"chatcmpl-{index}",
            "object": "chat.completion.chunk",
            "model": upstream_model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }
        ensure_ascii = draw(st.booleans())
        separators = draw(st.sampled_from([None, (",", ":")]))
        events.append(json.dumps(event, ensure_ascii=ensure_ascii, separators=separators))
    ending = draw(st.sampled_from(["\n\n", "\r\n\r\n"]))
    stream = "".join(f"data: {event}{ending}" for event in events) + f"data: [DONE]{ending}"
    raw = stream.encode()
    return raw, _cut_points(raw, draw)


@PROPERTY_SETTINGS
@given(case=event_streams())
def test_every_event_of_a_stream_comes_out_naming_the_pool_model(
    case: tuple[bytes, list[int]],
) -> None:
    stream, cuts = case
    note(f"stream: {stream!r}, cut at {sorted(set(cuts))}")
    out = _rewrite(stream, cuts)
    _assert_only_models_changed(stream, out)
    payloads = [line[5:].strip() for line in out.splitlines() if line.startswith(b"data:")]
    assert payloads[-1] == b"[DONE]"
    for payload in payloads[:-1]:
        assert json.loads(payload)["model"] == POOL_MODEL, payload


# ------------------------------------------------------------------------ a live gateway
#: Statuses >= 500 the gateway may answer with, and the codes that say an upstream failed.
UPSTREAM_FAILURES = {502: "upstream_failed", 503: "models_unavailable"}
#: Examples schemathesis generates per operation and mode: the 18 operations take ~25 s.
LIVE_EXAMPLES = 50
#: An endpoint nothing listens on, for the models the run adds: nothing leaves this machine.
UNREACHABLE_ENDPOINT = "http://127.0.0.1:9/v1"


def _fuzzing_document() -> dict[str, Any]:
    """The gateway's document, with endpoints of added models kept on this machine."""
    document = openapi_document()
    endpoint = document["components"]["schemas"]["AddModelRequest"]["properties"]["endpoint"]
    endpoint.pop("pattern")
    endpoint["enum"] = [UNREACHABLE_ENDPOINT]
    # Models named directly are the pool's, so that those requests reach an upstream too.
    document["components"]["schemas"]["ModelChoice"]["anyOf"][1] = {"enum": list(POOL)}
    return document


@pytest.fixture(scope="module")
def live_gateway(tmp_path_factory, artifact_dir, arc_dataset, replays):
    """``uniroute serve`` over the test pool with client keys and the admin API on."""
    folder = tmp_path_factory.mktemp("gateway-fuzz")
    config = {
        "max_body_bytes": 20_000,
        "registry_poll_s": 0.2,
        "upstream_timeout_s": 10.0,
        "breaker_cooldown_s": 1.0,
    }
    env = {"UNIROUTE_ADMIN_TOKEN": ADMIN_TOKEN, "UNIROUTE_CLIENT_KEYS": f"other-key,{CLIENT_KEY}"}
    with pool_gateway(folder, artifact_dir, arc_dataset, replays, config, env) as running:
        yield running[0]


def _fuzzing_schema() -> Any:
    """The gateway's document as a schemathesis schema, bounded in examples and phases."""
    schema = schemathesis.openapi.from_dict(_fuzzing_document())
    schema.config.update(request_timeout=30)
    schema.config.generation.update(
        modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE],
        max_examples=LIVE_EXAMPLES,
        deterministic=True,
    )
    schema.config.phases.update(phases=["examples", "fuzzing"])
    return schema


LIVE = _fuzzing_schema()
#: What the live run saw, reported by the last test of the module.
SEEN: Counter[str] = Counter()
_TURN = itertools.count()


def _credentials(path: str) -> dict[str, str]:
    """Three requests in four carry the right key; the fourth keeps what was generated."""
    if next(_TURN) % 4 == 3:
        return {}
    secret = ADMIN_TOKEN if path.startswith("/admin") else CLIENT_KEY
    return {"Authorization": f"Bearer {secret}"}


def _check_answer(case: Any, response: Any) -> None:
    status = response.status_code
    SEEN[f"{case.method} {case.operation.path} {status}"] += 1
    if status < 400 or case.operation.path == "/readyz":
        return
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"{status} without a JSON body: {response.content[:300]!r}") from None
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(error, dict), f"{status} body is not an OpenAI error: {body!r}"
    assert set(error) >= {"message", "type", "param", "code"}, body
    if status >= 500:
        # "failed unexpectedly" is an exception of the gateway's own, counted as the model's.
        assert "failed unexpectedly (" not in error["message"], body
        assert UPSTREAM_FAILURES.get(status) == error["code"], (
            f"{case.method} {case.formatted_path} answered {status} {body!r}\n"
            f"{case.as_curl_command()}"
        )


@LIVE.parametrize()
def test_the_live_gateway_survives_its_own_schema(case, live_gateway) -> None:
    # The checks of the document itself: answers with documented statuses, content types and
    # bodies (schemathesis's own response checks), then the gateway's error rules.
    response = case.call(base_url=live_gateway.base_url, headers=_credentials(case.operation.path))
    case.validate_response(
        response,
        checks=[
            schemathesis.checks.status_code_conformance,
            schemathesis.checks.content_type_conformance,
            schemathesis.checks.response_schema_conformance,
        ],
    )
    _check_answer(case, response)


def test_the_live_gateway_is_still_healthy_after_the_run(live_gateway) -> None:
    assert live_gateway.process.poll() is None, live_gateway.log_text()[-3000:]
    health = httpx.get(f"{live_gateway.base_url}/healthz", timeout=10)
    assert health.status_code == 200
    total = sum(SEEN.values())
    statuses = Counter(int(key.rsplit(" ", 1)[1]) for key in SEEN.elements())
    print(f"live run: {total} requests, statuses {dict(sorted(statuses.items()))}")
    for key, count in sorted(SEEN.items()):
        print(f"  {count:4d} {key}")
    operations = {key.rsplit(" ", 1)[0] for key in SEEN}
    documented = {f"{m.upper()} {p}" for p, item in LIVE.raw_schema["paths"].items() for m in item}
    assert operations == documented
