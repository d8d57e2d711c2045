"""SSE pass-through with the model field rewritten, and JSON body rewriting."""

from __future__ import annotations

import json

import pytest

from uniroute.gateway.fallback import UpstreamError
from uniroute.gateway.upstream import SseModelRewriter, UpstreamTarget, rewrite_model_field
from uniroute.pool import Endpoint


def _event(model: str, text: str) -> bytes:
    return (
        b"data: " + json.dumps({"model": model, "choices": [{"delta": {"content": text}}]}).encode()
    )


def test_rewriter_passes_matching_events_through_byte_for_byte() -> None:
    stream = _event("m", "hel") + b"\n\n" + _event("m", "lo") + b"\n\ndata: [DONE]\n\n"
    rewriter = SseModelRewriter("m")
    out = b"".join(rewriter.feed(stream[i : i + 7]) for i in range(0, len(stream), 7))
    assert out + rewriter.flush() == stream


def test_rewriter_sets_the_model_and_keeps_everything_else() -> None:
    rewriter = SseModelRewriter("pool-name")
    out = rewriter.feed(b": comment\r\n" + _event("upstream-name", "x") + b"\r\n\r\n")
    out += rewriter.feed(b"data: [DONE]\n\n") + rewriter.flush()
    lines = out.split(b"\r\n")
    assert lines[0] == b": comment"
    event = json.loads(lines[1][len(b"data: ") :])
    assert event == {"model": "pool-name", "choices": [{"delta": {"content": "x"}}]}
    assert out.endswith(b"\r\n\r\ndata: [DONE]\n\n")


def test_rewriter_holds_only_the_incomplete_line() -> None:
    rewriter = SseModelRewriter("m")
    assert rewriter.feed(b'data: {"model": "m"') == b""
    assert rewriter.feed(b"}\n\nda") == b'data: {"model": "m"}\n\n'
    assert rewriter.flush() == b"da"


def test_json_body_rewrite() -> None:
    body = json.dumps({"model": "m", "choices": []}).encode()
    assert rewrite_model_field(body, "m") is body
    assert json.loads(rewrite_model_field(body, "other"))["model"] == "other"
    with pytest.raises(UpstreamError, match="not valid JSON"):
        rewrite_model_field(b"<html>", "m")
    with pytest.raises(UpstreamError, match="not an object"):
        rewrite_model_field(b"[]", "m")


def test_target_urls() -> None:
    target = UpstreamTarget("m", Endpoint("http://127.0.0.1:9/v1/", "M_KEY", "served-name"))
    assert target.url("/chat/completions") == "http://127.0.0.1:9/v1/chat/completions"
    assert (target.api_key_env, target.upstream_model) == ("M_KEY", "served-name")
