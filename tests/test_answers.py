"""Answer keys and agreement: letters, numbers within tolerance, normalised text, comparators."""

from __future__ import annotations

import numpy as np
import pytest

from uniroute.answers import (
    ANSWER_KINDS,
    COMPARATORS,
    answer_key,
    answer_keys,
    answer_kind_for_task,
    answers_agree,
    number_key,
    register_comparator,
)
from uniroute.errors import DataError
from uniroute.onboarding.graders import MultipleChoiceGrader, NumericGrader

PROMPT = "Which is a metal?\nA) wood\nB) iron and nickel\nC) glass\nD) iron\nAnswer:"


def test_the_kinds_are_the_documented_three() -> None:
    assert ANSWER_KINDS == ("choice", "number", "exact")


@pytest.mark.parametrize(
    ("answer", "key"),
    [
        ("C", "C"),
        ("(c)", "C"),
        ("The answer is B) iron and nickel", "B"),
        ("**D**", "D"),
        ("iron and nickel", "B"),  # the option text, read from the prompt
        ("A chart shows that", None),  # "A" is a word here
        ("I don't know", None),
        ("", None),
    ],
)
def test_choice_keys_read_letters_like_the_grader(answer: str, key: str | None) -> None:
    assert answer_key(answer, "choice", PROMPT) == key
    # Without the prompt, the key is exactly what the grader extracts without one.
    assert answer_key(answer, "choice") == MultipleChoiceGrader().extract(answer, None)


def test_option_text_needs_the_prompt() -> None:
    assert answer_key("iron and nickel", "choice") is None
    assert answer_key("iron and nickel", "choice", PROMPT) == "B"


def test_number_keys_agree_within_the_grader_tolerance() -> None:
    grader = NumericGrader()
    same = ["#### 1,234", "The answer is 1234.0", "\\boxed{1234.00004}"]
    keys = {answer_key(a, "number") for a in same}
    assert keys == {"1234"}
    assert all(grader._matches(grader.extract(a), 1234.0) for a in same)
    assert answer_key("so 3/4", "number") == answer_key("0.75", "number") == "0.75"
    assert answer_key("x = 1235", "number") != answer_key("x = 1234", "number")
    assert number_key(-0.0) == number_key(4e-7) == "0"
    assert answer_key("no number here", "number") is None


def test_same_number_key_implies_within_tolerance() -> None:
    rng = np.random.default_rng(0)
    values = rng.uniform(-1e6, 1e6, 2000)
    values = np.r_[values, values * (1 + rng.uniform(-2e-4, 2e-4, 2000))]
    grader = NumericGrader()
    by_key: dict[str, list[float]] = {}
    for v in values:
        by_key.setdefault(number_key(float(v)), []).append(float(v))
    for group in by_key.values():
        assert all(grader._matches(group[0], v) for v in group)


def test_exact_keys_are_normalised_text() -> None:
    assert answer_key("The  Eiffel Tower!", "exact") == answer_key("eiffel tower", "exact")
    assert answer_key("...", "exact") is None


def test_none_never_agrees() -> None:
    assert answers_agree("A", "A")
    assert not answers_agree("A", "B")
    assert not answers_agree(None, None)
    assert not answers_agree("A", None)
    assert answer_key(None, "choice") is None


def test_bad_kind_is_named() -> None:
    with pytest.raises(DataError, match="'letter'"):
        answer_key("A", "letter")
    with pytest.raises(DataError, match="no comparator 'nothing'"):
        answer_key("A", "custom:nothing")


def test_free_text_only_through_a_registered_comparator() -> None:
    def first_word(answer: str, prompt: str | None) -> str | None:
        words = answer.lower().split()
        return words[0] if words else None

    register_comparator("first-word", first_word)
    try:
        a = answer_key("Paris is the capital", "custom:first-word")
        b = answer_key("paris, of course", "custom:first-word")
        assert a == "paris" and b == "paris," and not answers_agree(a, b)
        assert answers_agree(a, answer_key("PARIS is big", "custom:first-word"))
        with pytest.raises(DataError, match="without ':'"):
            register_comparator("a:b", first_word)
        register_comparator("bad", lambda answer, prompt: 3)  # type: ignore[arg-type,return-value]
        with pytest.raises(DataError, match="not a text key"):
            answer_key("x", "custom:bad")
    finally:
        COMPARATORS.pop("first-word", None)
        COMPARATORS.pop("bad", None)


def test_task_kinds_and_keys_per_task() -> None:
    assert answer_kind_for_task("arc-challenge") == "choice"
    assert answer_kind_for_task("law") == "choice"
    assert answer_kind_for_task("gsm8k") == "number"
    assert answer_kind_for_task("mbpp") is None
    assert answer_kind_for_task("my-task") == "exact"
    keys = answer_keys(["B", "def f(): pass", "#### 7"], ["arc", "mbpp", "gsm8k"], [None] * 3)
    assert keys.tolist() == ["B", None, "7"]
