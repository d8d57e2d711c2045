"""Graders: turn a model's raw answer to a representative prompt into a score in [0, 1].

A grader is chosen per task (``grader_for``) from glob patterns (``GRADERS``); projects plug in
their own with ``register_grader``. The built-in graders also say *why* an answer could not be
graded (``extract`` returns None), which onboarding uses to reject endpoints that answer garbage.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import math
import os
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from uniroute.data.representative import RepresentativePrompt
from uniroute.errors import GradingError


@runtime_checkable
class Grader(Protocol):
    """Scores one answer against a prompt's reference answer."""

    def grade(self, answer: str, reference: str | None, prompt: RepresentativePrompt) -> float:
        """Score in [0, 1]; raises GradingError when the prompt itself cannot be graded."""
        ...


class BaseGrader:
    """Shared behaviour of the built-in graders: reference checks and answer extraction.

    ``extract`` returns the part of an answer the grader compares (a letter, a number, normalised
    text, code) or None when the answer holds nothing gradeable; such answers score 0.
    """

    #: Whether a prompt needs a reference answer to be graded.
    requires_reference = True

    def extract(self, answer: str, prompt: RepresentativePrompt | None = None) -> object | None:
        """The gradeable content of an answer, or None when there is none."""
        raise NotImplementedError

    def check_reference(self, reference: str | None, prompt: RepresentativePrompt) -> None:
        """Raise GradingError when this prompt's reference cannot be used for grading."""
        if reference is None or not str(reference).strip():
            raise GradingError(
                f"prompt {prompt.prompt_id!r} (task {prompt.task!r}) has no reference answer"
            )
        if self._parse_reference(reference, prompt) is None:
            raise GradingError(
                f"prompt {prompt.prompt_id!r} (task {prompt.task!r}): reference {reference!r} "
                f"is not a valid reference for {type(self).__name__}"
            )

    def _parse_reference(self, reference: str, prompt: RepresentativePrompt) -> object | None:
        return self.extract(reference, prompt)

    def grade(self, answer: str, reference: str | None, prompt: RepresentativePrompt) -> float:
        """1.0 when the extracted answer matches the extracted reference, else 0.0."""
        self.check_reference(reference, prompt)
        expected = self._parse_reference(str(reference), prompt)
        got = self.extract(answer or "", prompt)
        if got is None:
            return 0.0
        return 1.0 if self._matches(got, expected) else 0.0

    def _matches(self, got: object, expected: object) -> bool:
        return got == expected

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# ---------------------------------------------------------------------------- multiple choice

_OPTION_LINE = re.compile(r"^[ \t]*\(?([A-J])[).:][ \t]+(\S.*?)[ \t]*$", re.MULTILINE)
_MARKDOWN = re.compile(r"[*_`]+")
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


class MultipleChoiceGrader(BaseGrader):
    """Grades lettered multiple-choice answers (letters A-J) robustly from free text.

    Reads "D", "(D)", "d)", "Answer: D", "The answer is D) palms...", "**D**", the option text
    itself ("wet palms"), and rejects answers whose leading capital is a word ("A chart shows",
    "I don't know"). The reference may be the letter or the option text.
    """

    def __init__(self, letters: str = "ABCDEFGHIJ") -> None:
        self.letters = letters

    def __repr__(self) -> str:
        return f"MultipleChoiceGrader(letters={self.letters!r})"

    def extract(self, answer: str, prompt: RepresentativePrompt | None = None) -> str | None:
        """The chosen letter (upper case), or None when the answer names no option."""
        text = _MARKDOWN.sub("", unicodedata.normalize("NFKC", answer or "")).strip()
        if not text:
            return None
        options = parse_options(prompt.text) if prompt is not None else {}
        letter = (
            self._explicit_letter(text, options)
            or self._leading_letter(text, options)
            or self._option_text_letter(text, options)
            or self._marked_letter(text)
        )
        return letter if letter is not None and letter in self.letters else None

    @staticmethod
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

    def _explicit_letter(self, text: str, options: dict[str, str]) -> str | None:
        found: list[tuple[int, str]] = []
        for pattern in _EXPLICIT_PATTERNS:
            for match in pattern.finditer(text):
                letter = self._accept(text, match, options)
                if letter is not None:
                    found.append((match.start(), letter))
        # Reasoning comes first and the conclusion last: the last explicit statement wins.
        return max(found)[1] if found else None

    def _leading_letter(self, text: str, options: dict[str, str]) -> str | None:
        match = _LEADING_LETTER.match(text)
        return self._accept(text, match, options) if match else None

    @staticmethod
    def _option_text_letter(text: str, options: dict[str, str]) -> str | None:
        if not options:
            return None
        answer = f" {_normalise_option_text(text)} "
        normalised = {letter: _normalise_option_text(body) for letter, body in options.items()}
        hits = {
            letter
            for letter, body in normalised.items()
            if len(body) >= 2 and f" {body} " in answer
        }
        # "iron" is inside "iron and nickel": keep only the longest of nested option texts.
        hits = {a for a in hits if not any(a != b and normalised[a] in normalised[b] for b in hits)}
        return hits.pop() if len(hits) == 1 else None

    @staticmethod
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


class NumericGrader(BaseGrader):
    """Grades a final numeric answer (GSM8K style) within a tolerance.

    The answer's number is, in order: the one after the last "####", inside the last
    ``\\boxed{}``, right after the last "answer is"/"answer:", else the last number in the text.
    Commas, "$" and a trailing "%" are ignored; "3/4" is 0.75. The reference is read the same way,
    so a full GSM8K solution ending in "#### 42" is a valid reference.
    """

    def __init__(self, rel_tol: float = 1e-4, abs_tol: float = 1e-6) -> None:
        self.rel_tol = rel_tol
        self.abs_tol = abs_tol

    def __repr__(self) -> str:
        return f"NumericGrader(rel_tol={self.rel_tol}, abs_tol={self.abs_tol})"

    def extract(self, answer: str, prompt: RepresentativePrompt | None = None) -> float | None:
        """The final number of an answer, or None when it holds no number."""
        text = _MARKDOWN.sub("", answer or "")
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

    def _matches(self, got: object, expected: object) -> bool:
        # Both come from ``extract``, which returns a float (``grade`` skips a None).
        if not isinstance(got, int | float) or not isinstance(expected, int | float):
            raise GradingError(f"cannot compare {got!r} with {expected!r} as numbers")
        return math.isclose(got, expected, rel_tol=self.rel_tol, abs_tol=self.abs_tol)


# ---------------------------------------------------------------------------- exact match

_ARTICLES = re.compile(r"\b(?:a|an|the)\b")


def normalise_text(text: str) -> str:
    """Lower case, no punctuation, no articles (a/an/the), single spaces (SQuAD style)."""
    text = unicodedata.normalize("NFKC", text or "").lower()
    text = "".join(" " if unicodedata.category(ch).startswith("P") else ch for ch in text)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


class ExactMatchGrader(BaseGrader):
    """1.0 when the answer equals the reference after ``normalise_text``."""

    def extract(self, answer: str, prompt: RepresentativePrompt | None = None) -> str | None:
        """The normalised answer, or None when nothing is left after normalising."""
        return normalise_text(answer) or None


# ---------------------------------------------------------------------------- code

_FENCE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_PYTHON_TAGS = {"python", "py", "python3"}
_DEFINITION = re.compile(r"^(?:def|async\s+def|class)\s", re.MULTILINE)


@dataclass(frozen=True)
class CodeTests:
    """Unit tests for one coding prompt: setup code run first, then each test statement."""

    tests: tuple[str, ...]
    setup: str = ""


@dataclass(frozen=True)
class CodeRunResult:
    """What happened when a solution ran against its tests."""

    passed: int
    total: int
    status: str
    detail: str = ""

    @property
    def all_passed(self) -> bool:
        """True when every test passed."""
        return self.total > 0 and self.passed == self.total and self.status == "passed"


def parse_code_tests(reference: str | None) -> CodeTests:
    """Read unit tests from a prompt's reference (a JSON document; see docs/ONBOARDING.md).

    Accepted: a JSON list of Python statements (usually asserts); an MBPP record
    ``{"test_list": [...], "test_setup_code": "..."}``; ``{"tests": [...], "setup": "..."}``;
    a HumanEval record ``{"test": "def check(candidate): ...", "entry_point": "name"}``.
    """
    if reference is None or not str(reference).strip():
        raise GradingError(
            "no unit tests: a coding prompt needs its tests in the reference, e.g. "
            '["assert add(1, 2) == 3"]'
        )
    try:
        spec = json.loads(reference)
    except json.JSONDecodeError as exc:
        raise GradingError(f"unit tests are not valid JSON ({exc})") from None
    tests: object
    setup = ""
    if isinstance(spec, dict):
        if "test" in spec and "entry_point" in spec:
            tests = [f"{spec['test']}\ncheck({spec['entry_point']})"]
        else:
            tests = spec.get("test_list", spec.get("tests"))
            setup = spec.get("test_setup_code", spec.get("setup", "")) or ""
    else:
        tests = spec
    if (
        not isinstance(tests, list)
        or not tests
        or not all(isinstance(t, str) and t.strip() for t in tests)
        or not isinstance(setup, str)
    ):
        raise GradingError(
            "unit tests must be a non-empty JSON list of Python statements (or an object with "
            "'test_list'/'tests', or HumanEval's 'test' and 'entry_point')"
        )
    return CodeTests(tests=tuple(tests), setup=setup)


def extract_code(answer: str) -> str | None:
    """The Python code in an answer: its fenced blocks that define something, else any code.

    Blocks tagged ``python``/``py`` are preferred over untagged ones; blocks that only show example
    usage or output are dropped when another block defines a function or class, so a wrong
    example cannot fail the tests. An answer with no fence is used whole if it parses.
    """
    blocks = [(tag.lower(), body) for tag, body in _FENCE.findall(answer or "")]
    tagged = [body for tag, body in blocks if tag in _PYTHON_TAGS]
    untagged = [body for tag, body in blocks if not tag and _parses(body)]
    candidates = tagged or untagged
    if not blocks and _parses(answer or "") and (answer or "").strip():
        candidates = [answer]
    definitions = [body for body in candidates if _DEFINITION.search(body)]
    chosen = definitions or candidates
    code = "\n\n".join(body.strip("\n") for body in chosen)
    return code if code.strip() else None


def _parses(code: str) -> bool:
    try:
        compile(code, "<answer>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return False
    return True


_HARNESS = r"""
import json, os, sys
nonce = sys.stdin.readline().strip()
with open("spec.json", encoding="utf-8") as handle:
    spec = json.load(handle)
result_fd = os.dup(1)
sys.stdout = open(os.devnull, "w")
def report(passed, status, detail=""):
    line = json.dumps({"passed": passed, "status": status, "detail": detail[:500]})
    os.write(result_fd, ("\n" + nonce + " " + line + "\n").encode())
namespace = {"__name__": "solution"}
try:
    exec(compile(spec["setup"] + "\n" + spec["code"], "solution.py", "exec"), namespace)
except BaseException as exc:
    report(0, "error", "solution: " + type(exc).__name__ + ": " + str(exc))
else:
    passed, failure = 0, ""
    for index, test in enumerate(spec["tests"]):
        try:
            exec(compile(test, "test_%d" % index, "exec"), namespace)
            passed += 1
        except BaseException as exc:
            failure = failure or "test %d: %s: %s" % (index, type(exc).__name__, exc)
    report(passed, "passed" if passed == len(spec["tests"]) else "failed", failure)
"""


class CodeGrader(BaseGrader):
    """Runs a prompt's unit tests against the code in an answer, in a sandboxed subprocess.

    The solution runs in ``python -I`` (isolated: no user site, no PYTHON* variables) in a fresh
    temporary directory, with an empty environment (so no API key leaks to it), a wall-clock
    timeout, and ``resource`` limits on CPU seconds, address space, file size and (for non-root
    users) the number of processes. It assumes nothing about the network. Score 1.0 when every
    test passes. This limits accidents, it is not a security sandbox for hostile code.
    """

    def __init__(
        self,
        timeout: float = 10.0,
        cpu_seconds: int | None = None,
        memory_mb: int = 512,
        file_size_mb: int = 16,
        max_processes: int = 0,
        python: str | None = None,
    ) -> None:
        self.timeout = timeout
        self.cpu_seconds = cpu_seconds
        self.memory_mb = memory_mb
        self.file_size_mb = file_size_mb
        self.max_processes = max_processes
        self.python = python

    def __repr__(self) -> str:
        return (
            f"CodeGrader(timeout={self.timeout}, cpu_seconds={self.cpu_seconds}, "
            f"memory_mb={self.memory_mb}, file_size_mb={self.file_size_mb}, "
            f"max_processes={self.max_processes})"
        )

    def extract(self, answer: str, prompt: RepresentativePrompt | None = None) -> str | None:
        """The answer's Python code, or None when it holds none."""
        return extract_code(answer)

    def check_reference(self, reference: str | None, prompt: RepresentativePrompt) -> None:
        """Raise GradingError unless the reference holds unit tests."""
        try:
            parse_code_tests(reference)
        except GradingError as exc:
            raise GradingError(
                f"prompt {prompt.prompt_id!r} (task {prompt.task!r}): {exc}"
            ) from None

    def grade(self, answer: str, reference: str | None, prompt: RepresentativePrompt) -> float:
        """1.0 when every unit test in the reference passes against the answer's code."""
        self.check_reference(reference, prompt)
        code = self.extract(answer or "", prompt)
        if code is None:
            return 0.0
        return 1.0 if self.run(code, parse_code_tests(reference)).all_passed else 0.0

    def run(self, code: str, tests: CodeTests) -> CodeRunResult:
        """Run ``tests`` against ``code`` in a limited subprocess and report what happened."""
        nonce = secrets.token_hex(16)
        workdir = Path(tempfile.mkdtemp(prefix="uniroute-code-"))
        try:
            (workdir / "harness.py").write_text(_HARNESS, encoding="utf-8")
            spec = {"code": code, "setup": tests.setup, "tests": list(tests.tests)}
            (workdir / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
            output_path = workdir / "output.txt"
            with open(output_path, "wb") as output:
                process = subprocess.Popen(
                    [self.python or sys.executable, "-I", "harness.py"],
                    cwd=workdir,
                    env={"PATH": os.defpath, "HOME": str(workdir), "LC_ALL": "C.UTF-8"},
                    stdin=subprocess.PIPE,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=self._limits(),
                )
                try:
                    process.communicate(input=(nonce + "\n").encode(), timeout=self.timeout)
                except subprocess.TimeoutExpired:
                    _kill_group(process)
                    return CodeRunResult(0, len(tests.tests), "timeout", f"over {self.timeout} s")
                finally:
                    _kill_group(process)
            return self._read_result(output_path, nonce, process.returncode, len(tests.tests))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _limits(self):
        """A preexec_fn applying the resource limits; values are computed before the fork."""
        cpu = int(self.cpu_seconds or max(1, math.ceil(self.timeout)))
        memory = int(self.memory_mb) << 20
        file_size = int(self.file_size_mb) << 20
        processes = int(self.max_processes)

        def apply_limits() -> None:
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
            resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if hasattr(resource, "RLIMIT_NPROC"):
                # Counted per user and not enforced for root; it stops fork bombs elsewhere.
                with contextlib.suppress(ValueError, OSError):
                    resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))

        return apply_limits

    @staticmethod
    def _read_result(
        output_path: Path, nonce: str, returncode: int | None, total: int
    ) -> CodeRunResult:
        text = output_path.read_text(encoding="utf-8", errors="replace")
        for line in reversed(text.splitlines()):
            if line.startswith(nonce + " "):
                record = json.loads(line[len(nonce) + 1 :])
                return CodeRunResult(
                    int(record["passed"]), total, record["status"], record["detail"]
                )
        if returncode is not None and returncode < 0:
            name = signal.Signals(-returncode).name
            status = "cpu-limit" if name == "SIGXCPU" else "killed"
            return CodeRunResult(0, total, status, f"terminated by {name}")
        return CodeRunResult(0, total, "error", f"exit status {returncode}: {text[-500:]}")


def _kill_group(process: subprocess.Popen) -> None:
    """Kill the solution and anything it started (it leads its own session)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# ---------------------------------------------------------------------------- task registry

_MULTIPLE_CHOICE = MultipleChoiceGrader()
_NUMERIC = NumericGrader()
_CODE = CodeGrader()
DEFAULT_GRADER: Grader = ExactMatchGrader()
# The fourteen MMLU-Pro categories (ten lettered options, A-J), as the mmlupro27 data names them.
_MMLU_PRO_CATEGORIES = (
    "biology", "business", "chemistry", "computer_science", "economics", "engineering", "health",
    "history", "law", "math", "other", "philosophy", "physics", "psychology",
)  # fmt: skip

#: Task glob pattern (matched case-insensitively) -> grader; the first matching pattern wins.
GRADERS: dict[str, Grader] = {
    "arc*": _MULTIPLE_CHOICE,
    "mmlu*": _MULTIPLE_CHOICE,
    "hellaswag*": _MULTIPLE_CHOICE,
    "winogrande*": _MULTIPLE_CHOICE,
    **dict.fromkeys(_MMLU_PRO_CATEGORIES, _MULTIPLE_CHOICE),
    "gsm8k*": _NUMERIC,
    "grade-school-math*": _NUMERIC,
    "math_*": _NUMERIC,
    "mbpp*": _CODE,
    "humaneval*": _CODE,
}


def register_grader(task_pattern: str, grader: Grader) -> None:
    """Grade tasks matching a glob pattern with ``grader``, ahead of every earlier pattern."""
    if not isinstance(task_pattern, str) or not task_pattern:
        raise ValueError("task_pattern must be a non-empty glob pattern such as 'gsm8k*'")
    if not callable(getattr(grader, "grade", None)):
        raise ValueError(f"{grader!r} is not a grader: it has no grade(answer, reference, prompt)")
    others = {k: v for k, v in GRADERS.items() if k != task_pattern}
    GRADERS.clear()
    GRADERS[task_pattern] = grader
    GRADERS.update(others)


def grader_for(task: str) -> Grader:
    """The grader for a task: the first matching pattern of GRADERS, else exact match."""
    name = str(task).lower()
    for pattern, grader in GRADERS.items():
        if fnmatch.fnmatchcase(name, pattern.lower()):
            return grader
    return DEFAULT_GRADER
