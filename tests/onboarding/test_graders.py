"""Graders on hand-written answers, the sandboxed code grader, and the task -> grader registry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uniroute.data.representative import RepresentativePrompt
from uniroute.errors import GradingError
from uniroute.onboarding import graders as graders_module
from uniroute.onboarding.graders import (
    GRADERS,
    CodeGrader,
    CodeTests,
    ExactMatchGrader,
    MultipleChoiceGrader,
    NumericGrader,
    extract_code,
    grader_for,
    normalise_text,
    parse_code_tests,
    parse_options,
    register_grader,
)

FIXTURES = Path(__file__).parent / "fixtures" / "code"

ARC_PROMPT = RepresentativePrompt(
    prompt_id="arc-1",
    task="arc-challenge",
    text=(
        "Which skin surface will produce the most heat?\n"
        "A) dry palms\nB) wet palms\nC) palms covered with oil\nD) palms covered with lotion\n"
        "Answer:\nA\n\n"
        "George wants to warm his hands quickly by rubbing them. Which skin surface will produce "
        "the most heat?\n"
        "A) a chart\nB) wet palms\nC) iron\nD) iron and nickel\n"
        'Print only a single choice from "A" or "B" or "C" or "D" without explanation.\nAnswer:'
    ),
    reference="B",
)


def test_parse_options_reads_the_last_question_of_a_few_shot_prompt() -> None:
    assert parse_options(ARC_PROMPT.text) == {
        "A": "a chart",
        "B": "wet palms",
        "C": "iron",
        "D": "iron and nickel",
    }
    assert parse_options("What is 2 + 2?") == {}


@pytest.mark.parametrize(
    ("answer", "letter"),
    [
        ("B", "B"),
        ("B\n", "B"),
        ("  b  ", "B"),
        ("(B)", "B"),
        ("B)", "B"),
        ("B.", "B"),
        ("[B]", "B"),
        ("**B**", "B"),
        ("Answer: B", "B"),
        ("answer: (b)", "B"),
        ("The answer is B) wet palms", "B"),
        ("The correct answer is B because water reduces friction.", "B"),
        ("Answer:\nB\n\nExplanation: friction.", "B"),
        ("I would choose option B.", "B"),
        ("Answer: I think B.", "B"),
        ("Option B is correct.", "B"),
        ("Let me think. A) is wrong since it is dry. So the final answer is B.", "B"),
        ("B (wet palms)", "B"),
        ("B wet palms", "B"),
        ("wet palms", "B"),
        ("The answer is: wet palms.", "B"),
        ("iron and nickel", "D"),  # "iron" is an option too, but only as part of the longer one
        ("A chart", "A"),  # the truncated option text "a chart"
        ("A is correct", "A"),
        ("A\n", "A"),
        ("E", "E"),  # a letter the question does not offer is still a choice (a wrong one)
    ],
)
def test_multiple_choice_extracts_the_chosen_letter(answer: str, letter: str) -> None:
    assert MultipleChoiceGrader().extract(answer, ARC_PROMPT) == letter


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "   \n",
        "I do",  # a truncated "I don't know": "I" is the pronoun, not option I
        "I don't know the answer to this question.",
        "Unfortunately I cannot tell.",
        "A first-aid kit would help.",  # the article "A", not option A
        "Based on",
        "The answer is a bit unclear.",
        "13",
        "Either A) or C) could be right.",
        "Answer: I think it depends.",  # the pronoun "I", not option I
        "K",
    ],
)
def test_multiple_choice_finds_no_letter_in_prose(answer: str) -> None:
    assert MultipleChoiceGrader().extract(answer, ARC_PROMPT) is None


def test_multiple_choice_grades_against_the_reference_letter_or_option_text() -> None:
    grader = MultipleChoiceGrader()
    assert grader.grade("The answer is B.", "B", ARC_PROMPT) == 1.0
    assert grader.grade("D", "B", ARC_PROMPT) == 0.0
    assert grader.grade("I don't know", "B", ARC_PROMPT) == 0.0
    assert grader.grade("(B)", "(B)", ARC_PROMPT) == 1.0
    assert grader.grade("B", "wet palms", ARC_PROMPT) == 1.0


def test_multiple_choice_without_options_in_the_prompt_accepts_letters_a_to_j() -> None:
    bare = RepresentativePrompt("q", "Pick one of ten options.", "law", "J")
    grader = MultipleChoiceGrader()
    assert grader.extract("The answer is (J).", bare) == "J"
    assert grader.grade("j", "J", bare) == 1.0


def test_multiple_choice_reference_must_name_an_option() -> None:
    grader = MultipleChoiceGrader()
    with pytest.raises(GradingError, match="no reference"):
        grader.grade("B", None, ARC_PROMPT)
    with pytest.raises(GradingError, match="not a valid reference"):
        grader.grade("B", "no idea at all", ARC_PROMPT)


NUMERIC_PROMPT = RepresentativePrompt("g-1", "How many apples?", "gsm8k", "#### 1234")


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("42", 42.0),
        ("She has 3 boxes of 4, so 3 * 4 = 12.\n#### 12", 12.0),
        ("#### 1,234", 1234.0),
        ("The total is $1,234.50.", 1234.5),
        ("The answer is 18, since 2 * 9 = 18.", 18.0),
        ("The answer is: -7 degrees, up from 3.", -7.0),
        ("It costs \u22125 dollars", -5.0),
        ("First 10, then 20, finally 35 apples.", 35.0),
        ("Half of it: 3/4", 0.75),
        ("The result is \\boxed{17} as shown above with 5 steps.", 17.0),
        ("The rate is 12.5%.", 12.5),
        ("**Answer: 8**", 8.0),
        ("1.5e3 grams", 1500.0),
    ],
)
def test_numeric_extracts_the_final_number(answer: str, value: float) -> None:
    assert NumericGrader().extract(answer) == pytest.approx(value)


@pytest.mark.parametrize("answer", ["", "no idea", "many apples"])
def test_numeric_finds_no_number(answer: str) -> None:
    assert NumericGrader().extract(answer) is None


def test_numeric_grades_with_tolerance_and_reads_gsm8k_references() -> None:
    grader = NumericGrader()
    assert grader.grade("The answer is 1234.", "#### 1234", NUMERIC_PROMPT) == 1.0
    assert grader.grade("1,234.00", "Long solution...\n#### 1,234", NUMERIC_PROMPT) == 1.0
    assert grader.grade("1234.00001", "1234", NUMERIC_PROMPT) == 1.0
    assert grader.grade("1235", "1234", NUMERIC_PROMPT) == 0.0
    assert grader.grade("0.3333", "1/3", NUMERIC_PROMPT) == 1.0
    assert NumericGrader(rel_tol=1e-9, abs_tol=0).grade("0.3333", "1/3", NUMERIC_PROMPT) == 0.0
    assert grader.grade("no number here", "1234", NUMERIC_PROMPT) == 0.0
    with pytest.raises(GradingError):
        grader.grade("12", "twelve", NUMERIC_PROMPT)


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  an   apple,\n a pear ", "apple pear"),
        ("Paris.", "paris"),
        ("“Hello”—world", "hello world"),
        ("theory", "theory"),  # "the" inside a word stays
    ],
)
def test_exact_match_normalisation(text: str, normalised: str) -> None:
    assert normalise_text(text) == normalised


def test_exact_match_grades_after_normalising() -> None:
    prompt = RepresentativePrompt("e-1", "Capital of France?", "trivia", "Paris")
    grader = ExactMatchGrader()
    assert grader.grade("paris.", "Paris", prompt) == 1.0
    assert grader.grade("The Paris", "Paris", prompt) == 1.0
    assert grader.grade("Paris, France", "Paris", prompt) == 0.0
    assert grader.grade("!!!", "Paris", prompt) == 0.0
    assert grader.extract("!!!") is None


# ---------------------------------------------------------------------------- code

CODE_PROMPT = RepresentativePrompt(
    "mbpp-1",
    "Write a function that returns the perimeter of a square given its side length.",
    "mbpp",
    (FIXTURES / "tests.json").read_text(),
)


def test_parse_code_tests_accepts_the_documented_formats() -> None:
    assert parse_code_tests('["assert f(1) == 2"]') == CodeTests(tests=("assert f(1) == 2",))
    mbpp = parse_code_tests('{"test_list": ["assert f(1) == 2"], "test_setup_code": "import math"}')
    assert mbpp == CodeTests(tests=("assert f(1) == 2",), setup="import math")
    humaneval = parse_code_tests('{"test": "def check(candidate):\\n    pass", "entry_point": "f"}')
    assert humaneval.tests == ("def check(candidate):\n    pass\ncheck(f)",)
    for bad in (None, "", "assert f(1) == 2", "[]", '{"tests": "assert x"}', "[1, 2]"):
        with pytest.raises(GradingError):
            parse_code_tests(bad)


def test_extract_code_keeps_definitions_and_drops_example_blocks() -> None:
    code = extract_code((FIXTURES / "answer_pass.md").read_text())
    assert code is not None
    assert "def square_perimeter" in code
    assert "deliberately wrong" not in code
    assert "is 20." not in code  # the untagged block shows output, not code
    assert "```" not in code
    assert extract_code("def f():\n    return 1\n") == "def f():\n    return 1"
    assert extract_code("```\ndef g(): return 2\n```") == "def g(): return 2"
    assert extract_code("No code, only words.") is None
    truncated = "```python\ndef h(x):\n    return x + 1\n"
    assert extract_code(truncated) == "def h(x):\n    return x + 1"


def test_code_grader_passes_a_correct_solution_and_fails_a_wrong_one() -> None:
    grader = CodeGrader(timeout=10)
    assert (
        grader.grade((FIXTURES / "answer_pass.md").read_text(), CODE_PROMPT.reference, CODE_PROMPT)
        == 1.0
    )
    assert (
        grader.grade((FIXTURES / "answer_fail.md").read_text(), CODE_PROMPT.reference, CODE_PROMPT)
        == 0.0
    )
    result = grader.run(
        "def square_perimeter(s):\n    return 2 * s\n", parse_code_tests(CODE_PROMPT.reference)
    )
    # 0 * 2 == 0 still holds; the other two asserts fail.
    assert (result.passed, result.total, result.status) == (1, 3, "failed")
    assert "AssertionError" in result.detail
    assert grader.grade("I cannot write code.", CODE_PROMPT.reference, CODE_PROMPT) == 0.0


def test_code_grader_stops_an_endless_loop_at_the_timeout() -> None:
    result = CodeGrader(timeout=1.5).run(
        "def square_perimeter(s):\n    while True:\n        pass\n",
        parse_code_tests(CODE_PROMPT.reference),
    )
    assert result.status in ("timeout", "cpu-limit")
    assert not result.all_passed


def test_code_grader_limits_memory() -> None:
    hungry = "blob = bytearray(2 * 1024 ** 3)\ndef square_perimeter(s):\n    return 4 * s\n"
    result = CodeGrader(timeout=10, memory_mb=256).run(
        hungry, parse_code_tests(CODE_PROMPT.reference)
    )
    assert result.status == "error"
    assert "MemoryError" in result.detail
    # The same solution without the allocation passes under the same limits.
    fine = hungry.replace("blob = bytearray(2 * 1024 ** 3)\n", "")
    assert (
        CodeGrader(timeout=10, memory_mb=256)
        .run(fine, parse_code_tests(CODE_PROMPT.reference))
        .all_passed
    )


def test_code_grader_runs_isolated_from_the_parent_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("UNIROUTE_TEST_SECRET_KEY", "sk-do-not-leak")
    code = "import os\ndef leaked():\n    return os.environ.get('UNIROUTE_TEST_SECRET_KEY')\n"
    assert CodeGrader().run(code, CodeTests(tests=("assert leaked() is None",))).all_passed
    # Code that calls sys.exit(0) before the tests run does not pass them.
    quitter = "import sys\nsys.exit(0)\ndef square_perimeter(s):\n    return 4 * s\n"
    assert not CodeGrader().run(quitter, parse_code_tests(CODE_PROMPT.reference)).all_passed


def test_code_grader_runs_humaneval_checks_against_the_answers_function() -> None:
    record = json.dumps(
        {
            "test": "def check(candidate):\n"
            "    assert candidate([1, 2, 3]) == 6\n"
            "    assert candidate([]) == 0\n",
            "entry_point": "total",
        }
    )
    grader = CodeGrader()
    assert grader.run("def total(xs):\n    return sum(xs)\n", parse_code_tests(record)).all_passed
    wrong = grader.run("def total(xs):\n    return len(xs)\n", parse_code_tests(record))
    assert (wrong.passed, wrong.status) == (0, "failed")


def test_code_grader_passes_plain_data_both_ways() -> None:
    # The tests run apart from the answer: arguments and results cross as plain data, and the
    # tests' comparisons are their own.
    code = (
        "import math\n"
        "from fractions import Fraction\n"
        "def shapes(n, *, scale=1):\n"
        "    return {'n': n * scale, 'pair': (1, 2.5), 'set': {1, 2}, 'raw': b'ab',\n"
        "            'half': Fraction(1, 2), 'none': None, 'nan': float('nan')}\n"
        "def count_up(n):\n"
        "    yield from range(n)\n"
        "def sort_in_place(items):\n"
        "    items.sort()\n"
        "def positive(x):\n"
        "    if x < 0:\n"
        "        raise ValueError('negative: %d' % x)\n"
        "    return x\n"
        "def area(r):\n"
        "    print('computing', r)\n"
        "    return math.pi * r * r\n"
    )
    tests = (
        "got = shapes(2, scale=3)\n"
        "assert {k: v for k, v in got.items() if k != 'nan'} == {'n': 6, 'pair': (1, 2.5), "
        "'set': {1, 2}, 'raw': b'ab', 'half': 0.5, 'none': None}\n"
        "assert got['nan'] != got['nan']",
        "assert list(count_up(3)) == [0, 1, 2] and next(count_up(2)) == 0",
        "items = [3, 1, 2]\nsort_in_place(items)\nassert items == [1, 2, 3]",
        "try:\n    positive(-1)\nexcept ValueError as exc:\n    assert 'negative: -1' in str(exc)\n"
        "else:\n    raise AssertionError('no ValueError')",
        # ``math`` comes from the answer's import, as MBPP tests expect.
        "assert math.isclose(area(2), 12.566, rel_tol=1e-3)",
    )
    result = CodeGrader().run(code, CodeTests(tests=tests))
    assert result.all_passed, result


def test_code_grader_keeps_the_tests_builtins_and_refuses_opaque_values() -> None:
    # An answer that redefines ``len`` changes its own, not the one the tests use.
    shadow = "def len(x):\n    return 3\ndef items(n):\n    return [0] * n\n"
    result = CodeGrader().run(shadow, CodeTests(tests=("assert len(items(1)) == 3",)))
    assert (result.passed, result.status) == (0, "failed")
    # Objects that are not plain data cannot leave the answer's sandbox: the test fails, saying so.
    opaque = "class Box:\n    pass\ndef make():\n    return Box()\n"
    result = CodeGrader().run(opaque, CodeTests(tests=("assert make() is not None",)))
    assert result.status == "failed" and "cannot be passed" in result.detail


def test_code_grader_without_unit_tests_is_a_clear_error() -> None:
    prompt = RepresentativePrompt("mbpp-2", "Write a function.", "mbpp", None)
    with pytest.raises(GradingError, match="no unit tests"):
        CodeGrader().grade("def f(): pass", None, prompt)


# ---------------------------------------------------------------------------- registry


@pytest.mark.parametrize(
    ("task", "grader_type"),
    [
        ("arc-challenge", MultipleChoiceGrader),
        ("arc_easy", MultipleChoiceGrader),
        ("mmlu-astronomy", MultipleChoiceGrader),
        ("MMLU", MultipleChoiceGrader),
        ("law", MultipleChoiceGrader),
        ("math", MultipleChoiceGrader),  # the MMLU-Pro category, lettered options
        ("MATH_prealgebra", NumericGrader),
        ("gsm8k", NumericGrader),
        ("mbpp", CodeGrader),
        ("humaneval", CodeGrader),
        ("some-new-task", ExactMatchGrader),
    ],
)
def test_grader_for_maps_tasks_to_graders(task: str, grader_type: type) -> None:
    assert isinstance(grader_for(task), grader_type)


def test_register_grader_takes_precedence_and_rejects_non_graders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(graders_module, "GRADERS", dict(GRADERS))
    custom = NumericGrader(rel_tol=0.5)
    graders_module.register_grader("arc-*", custom)
    assert graders_module.grader_for("arc-challenge") is custom
    assert isinstance(graders_module.grader_for("arc_easy"), MultipleChoiceGrader)
    with pytest.raises(ValueError, match="not a grader"):
        register_grader("x*", object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="glob pattern"):
        register_grader("", custom)


def test_graders_satisfy_the_protocol() -> None:
    for grader in (MultipleChoiceGrader(), NumericGrader(), ExactMatchGrader(), CodeGrader()):
        assert isinstance(grader, graders_module.Grader)
    assert json.loads(json.dumps(sorted(GRADERS)))  # patterns are plain strings


def test_code_grader_applies_its_resource_limits_in_the_child() -> None:
    code = (
        "import resource\n"
        "def limits():\n"
        "    return [resource.getrlimit(getattr(resource, name))[0] for name in\n"
        "            ('RLIMIT_CPU', 'RLIMIT_AS', 'RLIMIT_FSIZE', 'RLIMIT_NPROC')]\n"
    )
    grader = CodeGrader(timeout=3, cpu_seconds=2, memory_mb=300, file_size_mb=1, max_processes=0)
    # RLIMIT_NPROC is set even where it is not enforced (for root), so fork bombs fail elsewhere.
    expected = [2, 300 * 1024 * 1024, 1024 * 1024, 0]
    assert grader.run(code, CodeTests(tests=(f"assert limits() == {expected}",))).all_passed
    writer = "def write():\n    open('big.bin', 'wb').write(b'x' * (2 * 1024 * 1024))\n"
    result = grader.run(writer, CodeTests(tests=("write()",)))
    assert not result.all_passed
    assert "File too large" in result.detail
