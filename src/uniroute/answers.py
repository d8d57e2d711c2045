"""Answers and agreement: the part of an answer that can be compared, per kind of task.

Two answers *agree* when their canonical keys are equal (``answers_agree``). ``answer_key``
turns a raw answer into its key:

* ``"choice"``: the chosen option letter (A-J), read as the multiple-choice grader reads it
  (the option texts are parsed from the prompt when it is given);
* ``"number"``: the final number, as the numeric grader reads it, printed to
  ``NUMBER_KEY_DIGITS`` significant digits (see ``number_key``);
* ``"exact"``: the text lower-cased, without punctuation and articles (``normalise_text``);
* ``"custom:NAME"``: a key function registered with ``register_comparator``: the only way free
  text is compared.

``None`` means the answer holds nothing comparable; it never agrees with anything, not even with
another ``None``. The graders of ``onboarding.graders`` score answers with this same extraction.
"""

from __future__ import annotations

import fnmatch
import math
import re
import unicodedata
from collections.abc import Callable, Sequence

import numpy as np

from uniroute.errors import DataError

#: The built-in answer kinds; ``"custom:NAME"`` names a registered comparator.
ANSWER_KINDS = ("choice", "number", "exact")
CUSTOM_PREFIX = "custom:"
#: Significant digits of a number's key: numbers within the numeric grader's relative tolerance
#: (1e-4) share a key unless a rounding boundary falls between them.
NUMBER_KEY_DIGITS = 5
#: Below this magnitude a number's key is "0" (the numeric grader's absolute tolerance).
NUMBER_KEY_ZERO = 1e-6

# The fourteen MMLU-Pro categories (ten lettered options, A-J), as the mmlupro27 data names them.
MMLU_PRO_CATEGORIES = (
    "biology", "business", "chemistry", "computer_science", "economics", "engineering", "health",
    "history", "law", "math", "other", "philosophy", "physics", "psychology",
)  # fmt: skip

#: Task glob pattern (matched case-insensitively) -> answer kind, or None where answers are not
#: comparable (code: two programs are not compared by their text). The first match wins.
TASK_ANSWER_KINDS: dict[str, str | None] = {
    "arc*": "choice",
    "mmlu*": "choice",
    "hellaswag*": "choice",
    "winogrande*": "choice",
    **dict.fromkeys(MMLU_PRO_CATEGORIES, "choice"),
    "gsm8k*": "number",
    "grade-school-math*": "number",
    "math_*": "number",
    "mbpp*": None,
    "humaneval*": None,
}
#: The kind of a task that matches no pattern.
DEFAULT_ANSWER_KIND = "exact"

#: Registered free-text comparators: NAME -> key function (answer, prompt text) -> key or None.
KeyFunction = Callable[[str, str | None], str | None]
COMPARATORS: dict[str, KeyFunction] = {}


# ---------------------------------------------------------------------------- multiple choice

_OPTION_LINE = re.compile(r"^[ \t]*\(?([A-J])[).:][ \t]+(\S.*?)[ \t]*$", re.MULTILINE)
MARKDOWN = re.compile(r"[*_`]+")
# A letter standing alone: not part of a word, e.g. "D", "(D)", "D)", "D.", "[D]".
_LETTER_TOKEN = r"[\(\[]?([A-Ja-j])(?![A-Za-z0-9])[\)\]]?"
_EXPLICIT_PATTERNS = [
    re.compile(
        r"\banswer\s*(?:is|would\s+be|should\s+be|will\s+be|=|:)?\s*(?:option|choice|letter)?"
        r"\s*[:\-]?\s*" + _LETTER_TOKEN,
        re.IGNORECASE,
    ),
    re.compile(
        r"\b(?:correct|right|best)\s+(?:option|choice)\s*(?:is|would\s+be|=|:)?\s*" + _LETTER_TOKEN,
        re.IGNORECASE,
    ),
    re.compile(
        r"\b(?:option|choice)\s+" + _LETTER_TOKEN + r"\s+is\s+(?:the\s+)?(?:correct|right|best)",
        re.IGNORECASE,
    ),
    re.compile(
        r"\bI\s+(?:would\s+)?(?:choose|pick|select|go\s+with)\s+(?:option|choice)?\s*"
        + _LETTER_TOKEN,
        re.IGNORECASE,
    ),
]
_LEADING_LETTER = re.compile(r"^" + _LETTER_TOKEN)
# Words after a bare letter that show the letter is the choice: "A is correct", "A because ...".
_CHOICE_CONTINUATIONS = {"is", "because", "since"}
_MARKED_LETTER = re.compile(
    r"(?:^|(?<=\s))(?:\(([A-J])\)|([A-J])[).:](?=\s|$))|\b(?i:option|choice)\s+([A-J])\b"
)
CHOICE_LETTERS = "ABCDEFGHIJ"


def parse_options(prompt_text: str) -> dict[str, str]:
    """The lettered options ("A) text") of the last question in a prompt; {} when there are none.

    Few-shot prompts repeat the option block for every example; the question to answer is the
    last block, which starts at the last line lettered "A".
    """
    matches = list(_OPTION_LINE.finditer(prompt_text or ""))
    starts = [i for i, m in enumerate(matches) if m.group(1) == "A"]
    if not starts:
        return {}
    options: dict[str, str] = {}
    expected = "A"
    for match in matches[starts[-1] :]:
        if match.group(1) != expected:
            break
        options[expected] = match.group(2)
        expected = chr(ord(expected) + 1)
    return options


def _normalise_option_text(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return " ".join(text.split())


def extract_choice(
    answer: str | None, options: dict[str, str] | None = None, letters: str = CHOICE_LETTERS
) -> str | None:
    """The chosen option letter (upper case) of a free-text answer, or None when it names none.

    Reads "D", "(D)", "d)", "Answer: D", "The answer is D) palms...", "**D**", the option text
    itself ("wet palms", with ``options`` from ``parse_options``), and rejects answers whose
    leading capital is a word ("A chart shows", "I don't know").
    """
    text = MARKDOWN.sub("", unicodedata.normalize("NFKC", answer or "")).strip()
    if not text:
        return None
    options = options or {}
    letter = (
        _explicit_letter(text, options)
        or _leading_letter(text, options)
        or _option_text_letter(text, options)
        or _marked_letter(text)
    )
    return letter if letter is not None and letter in letters else None


def _accept(text: str, match: re.Match, options: dict[str, str]) -> str | None:
    """Accept a letter token unless it is really a word: "a bit", "A chart", "I do"."""
    raw = match.group(1)
    letter = raw.upper()
    token = match.group(0)
    rest = text[match.end() :]
    if token.startswith(("(", "[")) or token.endswith((")", "]")):
        return letter
    if not rest.strip() or rest[0] in ".:,;-\n":
        return letter
    # "D palms covered with lotion": a letter followed by its own option text.
    option = _normalise_option_text(options.get(letter, ""))
    if option and _normalise_option_text(rest).startswith(option):
        return letter
    next_word = rest.split(maxsplit=1)[0].lower() if rest.split() else ""
    if next_word in _CHOICE_CONTINUATIONS or not next_word[:1].isalpha():
        return letter
    # A lower-case letter followed by words is prose ("the answer is a bit..."), and so are
    # the words "A" and "I" ("A chart shows...", "I do not know", "Answer: I think B").
    return None if raw.islower() or raw in "AI" else letter


def _explicit_letter(text: str, options: dict[str, str]) -> str | None:
    found: list[tuple[int, str]] = []
    for pattern in _EXPLICIT_PATTERNS:
        for match in pattern.finditer(text):
            letter = _accept(text, match, options)
            if letter is not None:
                found.append((match.start(), letter))
    # Reasoning comes first and the conclusion last: the last explicit statement wins.
    return max(found)[1] if found else None


def _leading_letter(text: str, options: dict[str, str]) -> str | None:
    match = _LEADING_LETTER.match(text)
    return _accept(text, match, options) if match else None


def _option_text_letter(text: str, options: dict[str, str]) -> str | None:
    if not options:
        return None
    answer = f" {_normalise_option_text(text)} "
    normalised = {letter: _normalise_option_text(body) for letter, body in options.items()}
    hits = {
        letter for letter, body in normalised.items() if len(body) >= 2 and f" {body} " in answer
    }
    # "iron" is inside "iron and nickel": keep only the longest of nested option texts.
    hits = {a for a in hits if not any(a != b and normalised[a] in normalised[b] for b in hits)}
    return hits.pop() if len(hits) == 1 else None


def _marked_letter(text: str) -> str | None:
    letters = {next(g for g in m.groups() if g) for m in _MARKED_LETTER.finditer(text)}
    return letters.pop() if len(letters) == 1 else None


# ---------------------------------------------------------------------------- numeric

_NUMBER = re.compile(
    r"(?<![\w.])[-+\u2212]?\s?\$?\s?"
    r"(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+|\d+|\.\d+)(?:[eE][-+]?\d+)?"
    r"(?:\s?/\s?\d+(?![\d.]))?"
)
_ANSWER_IS = re.compile(r"\banswer\s*(?:is|:|=)\s*:?", re.IGNORECASE)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def _to_number(token: str) -> float | None:
    token = token.replace("\u2212", "-").replace("$", "").replace(",", "").replace(" ", "")
    try:
        if "/" in token:
            numerator, denominator = token.split("/")
            value = float(numerator) / float(denominator)
        else:
            value = float(token)
    except (ValueError, ZeroDivisionError):
        return None
    return value if math.isfinite(value) else None


def _first_number(text: str) -> float | None:
    for match in _NUMBER.finditer(text):
        value = _to_number(match.group(0))
        if value is not None:
            return value
    return None


def _last_number(text: str) -> float | None:
    for match in reversed(list(_NUMBER.finditer(text))):
        value = _to_number(match.group(0))
        if value is not None:
            return value
    return None


def extract_number(answer: str | None) -> float | None:
    """The final number of an answer, or None when it holds no number.

    In order: the one after the last "####", inside the last ``\\boxed{}``, right after the last
    "answer is"/"answer:", else the last number in the text. Commas, "$" and a trailing "%" are
    ignored; "3/4" is 0.75.
    """
    text = MARKDOWN.sub("", answer or "")
    if "####" in text:
        value = _first_number(text.rsplit("####", 1)[1])
        if value is not None:
            return value
    boxed = _BOXED.findall(text)
    if boxed:
        value = _first_number(boxed[-1])
        if value is not None:
            return value
    statements = list(_ANSWER_IS.finditer(text))
    if statements:
        tail = text[statements[-1].end() :].lstrip()
        match = _NUMBER.match(tail)
        value = _to_number(match.group(0)) if match else None
        if value is not None:
            return value
    return _last_number(text)


def number_key(value: float) -> str:
    """A number's key: ``NUMBER_KEY_DIGITS`` significant digits, "0" for |value| < 1e-6.

    Two numbers with the same key differ by less than one unit in the fifth significant digit,
    i.e. by less than the numeric grader's relative tolerance (1e-4); numbers within that
    tolerance get the same key except when a rounding boundary of the fifth digit lies between
    them (then they count as disagreeing, which only costs an escalation).
    """
    if not math.isfinite(value):
        raise DataError(f"cannot key the non-finite number {value!r}")
    if abs(value) < NUMBER_KEY_ZERO:
        return "0"
    return f"{value:.{NUMBER_KEY_DIGITS}g}"


# ---------------------------------------------------------------------------- exact match

_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def normalise_text(text: str) -> str:
    """Lower case, no punctuation, no articles (a/an/the), single spaces (SQuAD style)."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


# ---------------------------------------------------------------------------- keys and agreement


def register_comparator(name: str, key_function: KeyFunction) -> None:
    """Compare free-text answers of kind ``"custom:NAME"`` by ``key_function(answer, prompt)``.

    The function maps one answer (and the prompt text, or None) to a canonical key, None when
    the answer holds nothing comparable; two answers agree when their keys are equal, so
    agreement stays symmetric and transitive. Registering a name again replaces it.
    """
    if not isinstance(name, str) or not name or ":" in name or name != name.strip():
        raise DataError(f"comparator name {name!r} must be a non-empty word without ':'")
    if not callable(key_function):
        raise DataError(f"comparator {name!r}: {key_function!r} is not callable")
    COMPARATORS[name] = key_function


def check_kind(kind: str) -> str:
    """The kind itself when it is a built-in kind or a registered ``custom:NAME``."""
    if kind in ANSWER_KINDS:
        return kind
    if isinstance(kind, str) and kind.startswith(CUSTOM_PREFIX):
        name = kind[len(CUSTOM_PREFIX) :]
        if name in COMPARATORS:
            return kind
        raise DataError(
            f"answer kind {kind!r}: no comparator {name!r} is registered "
            f"(registered: {sorted(COMPARATORS) or 'none'})"
        )
    raise DataError(
        f"unknown answer kind {kind!r}; use one of {list(ANSWER_KINDS)} or 'custom:NAME'"
    )


def answer_key(answer: str | None, kind: str, prompt_text: str | None = None) -> str | None:
    """The canonical key of an answer of this kind (see the module docstring); None if none."""
    kind = check_kind(kind)
    if answer is None:
        return None
    if not isinstance(answer, str):
        raise DataError(f"an answer must be text or None, got {type(answer).__name__}")
    if kind == "choice":
        return extract_choice(answer, parse_options(prompt_text) if prompt_text else None)
    if kind == "number":
        value = extract_number(answer)
        return None if value is None else number_key(value)
    if kind == "exact":
        return normalise_text(answer) or None
    key = COMPARATORS[kind[len(CUSTOM_PREFIX) :]](answer, prompt_text)
    if key is not None and not isinstance(key, str):
        raise DataError(f"comparator {kind!r} returned {key!r}, not a text key or None")
    return key or None


def answers_agree(a: str | None, b: str | None) -> bool:
    """Whether two canonical keys agree: equal and both present (None never agrees)."""
    return a is not None and b is not None and a == b


def answer_kind_for_task(task: str) -> str | None:
    """The answer kind of a task: the first matching ``TASK_ANSWER_KINDS`` pattern, else
    ``DEFAULT_ANSWER_KIND`` (as the graders default to exact match); None: not comparable."""
    name = str(task).lower()
    for pattern, kind in TASK_ANSWER_KINDS.items():
        if fnmatch.fnmatchcase(name, pattern.lower()):
            return kind
    return DEFAULT_ANSWER_KIND


def answer_keys(
    answers: Sequence[str | None] | np.ndarray,
    tasks: Sequence[str] | np.ndarray,
    prompts: Sequence[str | None] | np.ndarray,
) -> np.ndarray:
    """Keys of one model's answers to these prompts (each by its task's kind): object (n,)."""
    out = np.full(len(answers), None, dtype=object)
    for i, (answer, task, prompt) in enumerate(zip(answers, tasks, prompts, strict=True)):
        kind = answer_kind_for_task(task)
        if kind is not None and answer is not None:
            out[i] = answer_key(answer, kind, prompt)
    return out
