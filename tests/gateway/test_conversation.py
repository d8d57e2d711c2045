"""What of a conversation is routed, the session key, and the session rule on decisions."""

from __future__ import annotations

import numpy as np
import pytest

from uniroute.deployment.decision import Decision, DecisionBatch
from uniroute.deployment.sessions import ESCALATED, KEPT, NEW, UNAVAILABLE, apply_session
from uniroute.gateway.errors import ApiError
from uniroute.gateway.openai.conversation import routing_text, session_key
from uniroute.pool import Endpoint, Pool


def _chat(*turns: tuple[str, str]) -> list[dict]:
    return [{"role": role, "content": content} for role, content in turns]


def test_earlier_user_turns_come_first_nearest_kept_assistant_turns_left_out() -> None:
    messages = _chat(
        ("system", "Be brief."), ("user", "A" * 50), ("assistant", "long answer " * 40),
        ("user", "B" * 30), ("assistant", "x"), ("user", "why?"),
    )  # fmt: skip
    assert routing_text(messages, "why?", 600) == f"{'A' * 50}\n{'B' * 30}\nwhy?"
    # The budget keeps the nearest turn whole and the end of the one before it.
    assert routing_text(messages, "why?", 40) == f"{'A' * 9}\n{'B' * 30}\nwhy?"
    assert routing_text(messages, "why?", 0) == "why?"
    assert routing_text(_chat(("user", "only")), "only", 600) == "only"


def test_the_last_message_is_never_cut_however_long() -> None:
    last = "Q" * 5000
    text = routing_text(_chat(("user", "earlier"), ("user", last)), last, 600)
    assert text.endswith(last) and text.startswith("earlier")


def test_a_conversation_keeps_its_key_from_turn_to_turn() -> None:
    first = _chat(("system", "S"), ("user", "What is 2+2?"))
    later = [*first, *_chat(("assistant", "4"), ("user", "why?"))]
    other = _chat(("system", "S"), ("user", "What is 3+3?"))
    assert session_key({}, first) == session_key({}, later) != session_key({}, other)
    assert session_key({}, first).startswith("c:")
    assert session_key({"x-uniroute-session": " abc "}, first) == "h:abc"
    assert session_key({}, None) is None


@pytest.mark.parametrize("value", ["", "x" * 201, "bad\x01id"])
def test_a_bad_session_header_is_a_400_naming_it(value: str) -> None:
    with pytest.raises(ApiError) as info:
        session_key({"x-uniroute-session": value}, None)
    assert info.value.http_status == 400 and info.value.param == "x-uniroute-session"


def _decision(errors: dict[str, float], costs: dict[str, float], lam: float) -> Decision:
    names = list(errors)
    pool = Pool(
        tuple(names),
        np.array([costs[n] for n in names]),
        np.zeros((1, len(names))),
        np.zeros((len(names), 1)),
        endpoints=tuple(Endpoint(f"http://127.0.0.1:9/{n}/v1") for n in names),
    )
    error_row = np.array([[errors[n] for n in names]])
    objective = error_row + lam * pool.costs
    batch = DecisionBatch(pool, error_row, objective, np.ones(len(names), bool), None)
    best = names[int(np.argmin(objective[0]))]
    return Decision(best, lam, None, None, "explicit", None, batch, 0)


ERRORS = {"cheap": 0.30, "mid": 0.20, "dear": 0.05}
COSTS = {"cheap": 0.001, "mid": 0.01, "dear": 0.1}


def test_a_first_turn_is_routed_as_decided() -> None:
    decision = _decision(ERRORS, COSTS, lam=0.0)
    choice = apply_session(decision, None, margin=0.05)
    assert (choice.rule, choice.ranking[0], choice.changed_pick) == (NEW, "dear", False)


def test_a_cheaper_pick_does_not_downgrade_the_conversation() -> None:
    decision = _decision(ERRORS, COSTS, lam=100.0)  # the decision alone would pick "cheap"
    assert decision.model == "cheap"
    choice = apply_session(decision, "dear", margin=0.05)
    assert (choice.rule, choice.ranking[0], choice.changed_pick) == (KEPT, "dear", True)
    assert sorted(choice.ranking) == sorted(decision.servable_ranking)  # fallback kept


def test_a_clearly_better_pick_escalates_and_a_slightly_better_one_does_not() -> None:
    decision = _decision(ERRORS, COSTS, lam=0.0)  # picks "dear" (0.05)
    escalated = apply_session(decision, "mid", margin=0.10)  # 0.05 <= 0.20 - 0.10
    assert (escalated.rule, escalated.ranking[0]) == (ESCALATED, "dear")
    kept = apply_session(decision, "mid", margin=0.20)  # 0.05 > 0.20 - 0.20
    assert (kept.rule, kept.ranking[0], kept.changed_pick) == (KEPT, "mid", True)


def test_a_previous_model_no_longer_servable_is_routed_afresh() -> None:
    decision = _decision(ERRORS, COSTS, lam=0.0)
    choice = apply_session(decision, "retired-model", margin=0.05)
    assert (choice.rule, choice.ranking[0]) == (UNAVAILABLE, "dear")
    assert choice.previous == "retired-model"
