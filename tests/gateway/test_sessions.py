"""Conversations through a live gateway with the official client: a conversation keeps its
model, escalates when a turn's pick is clearly better, never downgrades; every routed answer
explains its decision in headers, plain and streamed; replicas on one registry share sessions.

The in-process Router over the same registry finds conversations where the rule matters (a
turn whose own pick differs from the conversation's model); the gateway must then do what the
rule says, which the router alone would not.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.gateway.support import POOL, child_env, pool_gateway
from uniroute.registry import Registry
from uniroute.testing.harness import wait_until, write_config
from uniroute.testing.process import GatewayProcess

pytestmark = pytest.mark.slow

MARGIN = 0.05
CONTEXT_CHARS = 600
FOLLOW_UPS = (
    "Why?",
    "Explain your reasoning step by step.",
    "Write a Python function that checks this answer.",
    "ok",
    "Can you give another example?",
    "Are you sure? Think again about each option.",
)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, artifact_dir, arc_dataset, replays):
    """A gateway over the three servable POOL models (sessions in memory, default margin)."""
    with pool_gateway(
        tmp_path_factory.mktemp("sessions"), artifact_dir, arc_dataset, replays,
        config={"registry_poll_s": 0.2},
    ) as (gateway, router, registry):  # fmt: skip
        yield gateway, router, registry


@pytest.fixture(scope="module")
def client(deployment) -> openai.OpenAI:
    """The official client pointed at the gateway."""
    return openai.OpenAI(base_url=deployment[0].v1_url, api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def questions(unique_prompts) -> list[str]:
    """Real ARC questions, the first turns of the conversations."""
    return unique_prompts[:150]


def _routed_text(user_turns: list[str]) -> str:
    """What the gateway routes a chat on: the last user turn after the earlier ones (nearest
    first, at most CONTEXT_CHARS of them, a turn that does not fit keeping its end)."""
    *earlier, last = user_turns
    context, room = [], CONTEXT_CHARS
    for text in reversed(earlier):
        text = text.strip()
        if room <= 0 or not text:
            continue
        piece = text if len(text) <= room else text[-room:]
        context.append(piece)
        room -= len(piece) + 1
    return "\n".join([*reversed(context), last])


def _messages(user_turns: list[str], answers: list[str]) -> list[dict]:
    messages = [{"role": "system", "content": "Answer the question."}]
    for index, text in enumerate(user_turns):
        messages.append({"role": "user", "content": text})
        if index < len(answers):
            messages.append({"role": "assistant", "content": answers[index]})
    return messages


def _ask(client: openai.OpenAI, user_turns: list[str], answers: list[str], **extra):
    raw = client.chat.completions.with_raw_response.create(
        model="uniroute", messages=_messages(user_turns, answers), **extra
    )
    return raw.headers, raw.parse()


def _stays(router, turns: list[str], model: str) -> str | None:
    """The routed pick for the next turn when it differs from ``model`` without being better
    by the margin (the rule keeps ``model``), else None."""
    decision = router.route(_routed_text(turns))
    errors = decision.estimated_errors
    if decision.model != model and errors[decision.model] > errors[model] - MARGIN:
        return decision.model
    return None


def test_a_conversation_keeps_its_model_when_a_turn_alone_would_switch(
    deployment, client, questions
) -> None:
    _, router, _ = deployment
    found = None
    for question in questions:
        first = router.route(question).model
        for follow_up in FOLLOW_UPS:
            switch = _stays(router, [question, follow_up], first)
            if switch is not None:
                found = question, follow_up, first, switch
                break
        if found:
            break
    assert found, "no conversation in the data where per-turn routing switches model"
    question, follow_up, first, per_turn = found
    headers, answer = _ask(client, [question], [])
    assert headers["x-uniroute-model"] == first and headers["x-uniroute-session"] == "new"
    turns, answers = [question, follow_up], [answer.choices[0].message.content]
    headers, answer = _ask(client, turns, answers)
    # Routed alone this turn would go to per_turn; the conversation stays where it was.
    assert headers["x-uniroute-model"] == first, headers
    assert headers["x-uniroute-routed-to"] == per_turn
    assert (headers["x-uniroute-session"], headers["x-uniroute-changed-by"]) == ("kept", "session")
    for more in ("ok", "Thanks. One more: why not the others?"):
        answers.append(answer.choices[0].message.content)
        turns.append(more)
        headers, answer = _ask(client, turns, answers)
        pick = router.route(_routed_text(turns))
        better = pick.estimated_errors[pick.model] <= pick.estimated_errors[first] - MARGIN
        assert headers["x-uniroute-model"] == (pick.model if better else first)


def test_a_conversation_escalates_when_a_turn_needs_a_clearly_better_model(
    deployment, client, questions
) -> None:
    _, router, _ = deployment
    found = None
    for first_question in questions[:60]:
        first = router.route(first_question).model
        for second in questions[60:]:
            decision = router.route(_routed_text([first_question, second]))
            errors = decision.estimated_errors
            if errors[decision.model] > errors[first] - MARGIN:
                continue
            # ... and a follow-up whose own pick would leave the model it escalated to.
            downhill = [
                f
                for f in FOLLOW_UPS
                if _stays(router, [first_question, second, f], decision.model) is not None
            ]
            if downhill:
                found = first_question, second, first, decision.model, downhill[0]
                break
        if found:
            break
    assert found, "no pair of questions where the second needs a clearly better model"
    first_question, second, first, better, easy = found
    headers, answer = _ask(client, [first_question], [])
    assert headers["x-uniroute-model"] == first
    answers = [answer.choices[0].message.content]
    headers, answer = _ask(client, [first_question, second], answers)
    assert headers["x-uniroute-model"] == better and headers["x-uniroute-session"] == "escalated"
    # Having escalated, it does not come back down for an easy follow-up.
    answers.append(answer.choices[0].message.content)
    headers, _ = _ask(client, [first_question, second, easy], answers)
    assert headers["x-uniroute-model"] == better
    assert headers["x-uniroute-session"] == "kept"


def test_a_session_header_ties_unrelated_requests_together(deployment, client, questions) -> None:
    _, router, _ = deployment
    for a in questions[:40]:
        first = router.route(a).model
        b = next((q for q in questions[40:] if _stays(router, [q], first)), None)
        if b is not None:
            break
    assert b is not None
    session = {"x-uniroute-session": f"user-42-{first}"}
    headers, _ = _ask(client, [a], [], extra_headers=session)
    assert headers["x-uniroute-model"] == first
    # A new chat (no earlier answer), but the header says it continues the session.
    headers, _ = _ask(client, [b], [], extra_headers=session)
    assert headers["x-uniroute-model"] == first and headers["x-uniroute-session"] == "kept"
    headers, _ = _ask(client, [b], [])  # without it: routed afresh
    assert headers["x-uniroute-model"] != first


@pytest.mark.parametrize("stream", [False, True])
def test_every_routed_answer_explains_its_decision(deployment, questions, stream) -> None:
    gateway, router, _ = deployment
    question = questions[3 if stream else 2]
    decision = router.route(question)
    snapshot = router.snapshot
    body = {"model": "uniroute", "messages": [{"role": "user", "content": question}],
            "stream": stream}  # fmt: skip
    with httpx.stream("POST", f"{gateway.v1_url}/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        r.read()
        headers = r.headers
    model = headers["x-uniroute-model"]
    assert model == decision.model
    assert headers["x-uniroute-estimated-error"] == f"{decision.estimated_error:.4f}"
    assert float(headers["x-uniroute-cost"]) == pytest.approx(snapshot.pool.cost(model), rel=1e-5)
    assert float(headers["x-uniroute-lambda"]) == pytest.approx(decision.lam, rel=1e-5)
    assert headers["x-uniroute-cluster"] == str(decision.cluster)
    assert headers["x-uniroute-evidence"] == str(decision.evidence_by_model[model])
    reference = snapshot.pool.cost(snapshot.pool.most_accurate())
    saving = reference - snapshot.pool.cost(model)
    assert float(headers["x-uniroute-saving"]) == pytest.approx(saving, rel=1e-5, abs=1e-12)
    assert headers["x-uniroute-changed-by"] == "none"
    assert headers["x-uniroute-session"] == "new"

    def logged_line() -> dict | None:
        return next(
            (
                entry
                for entry in map(json.loads, reversed(gateway.log_lines()))
                if entry.get("request_id") == headers["x-request-id"] and "estimated_error" in entry
            ),
            None,
        )

    # The access line is written once the answer has ended (a stream's, after its last byte).
    logged = wait_until(logged_line, 10, "no access line with the decision")
    assert logged["cluster"] == decision.cluster and logged["changed_by"] == []
    assert logged["estimated_error"] == pytest.approx(decision.estimated_error)


@pytest.fixture(scope="module")
def two_replicas(tmp_path_factory, deployment, artifact_dir) -> Iterator[tuple[str, str]]:
    """Two more gateways on the same registry file, sessions kept in the registry."""
    _, _, registry = deployment
    config = write_config(
        tmp_path_factory.mktemp("shared-sessions") / "gw.json", session_store="registry"
    )
    with (
        GatewayProcess(artifact_dir, registry, config=config, env=child_env()) as a,
        GatewayProcess(artifact_dir, registry, config=config, env=child_env()) as b,
    ):
        yield a.v1_url, b.v1_url


def test_replicas_on_one_registry_share_a_conversation(deployment, two_replicas, questions) -> None:
    _, router, registry = deployment
    on_a = openai.OpenAI(base_url=two_replicas[0], api_key="unused", max_retries=0)
    on_b = openai.OpenAI(base_url=two_replicas[1], api_key="unused", max_retries=0)
    for question in questions[100:]:
        first = router.route(question).model
        follow_up = next((f for f in FOLLOW_UPS if _stays(router, [question, f], first)), None)
        if follow_up is not None:
            break
    assert follow_up is not None and first in POOL
    with Registry(registry) as shared:
        before = shared.sessions.count()
        headers, answer = _ask(on_a, [question], [])
        assert headers["x-uniroute-model"] == first
        # Recorded after the answer, off the request's path: in the registry a moment later.
        wait_until(lambda: shared.sessions.count() > before, 10, "A never recorded the session")
    headers, _ = _ask(on_b, [question, follow_up], [answer.choices[0].message.content])
    assert headers["x-uniroute-model"] == first and headers["x-uniroute-session"] == "kept"
