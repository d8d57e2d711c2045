"""Graders: turn a model's raw answer to a representative prompt into a score in [0, 1].

A grader is chosen per task (``grader_for``) from glob patterns (``GRADERS``); projects plug in
their own with ``register_grader``. The built-in graders also say *why* an answer could not be
graded (``extract`` returns None), which onboarding uses to reject endpoints that answer garbage.

Code answers are untrusted code. ``CodeGrader`` never lets them decide their own verdict: the
answer runs in one sandbox (the *solver*), the unit tests in another (the *tester*, see
``sandbox``), each a fresh bubblewrap sandbox with its own PID, network and mount namespaces.
The tester runs the tests with each of the answer's functions replaced by a stub; a call sends
its arguments over a pipe, the solver runs the function and sends back the result as plain data
(None, bool, numbers, str, bytes, tuples, lists, dicts, sets, ranges, fractions, decimals,
iterators of these; anything else fails the call), and the tester's own ``==``, ``assert`` and
built-ins judge it. Only the tester writes the verdict, one line on a pipe that no process of the
solver's sandbox can see. So an answer that calls the old in-process ``report()``, prints or
writes a result line anywhere, monkeypatches ``AssertionError``/``exec``/``json``, returns
objects whose ``__eq__`` is always true, redefines ``len``, exits early or kills itself gains
nothing: every test that calls it fails, and a run that ends without the tester's verdict scores
0. The solver never sees the tests or their expected values, only the arguments of each call.

Residual risk, stated plainly:

- an answer sees every argument a test passes; a test that feeds the expected result through a
  function the answer defines (e.g. ``assert decode(encode(s)) == s`` with both from the answer)
  can be satisfied by echoing, as it could in-process;
- the answer may have memorised a benchmark's tests and special-case their inputs;
- the sandbox is only as strong as the kernel's namespaces (there is no seccomp filter), and
  when the grader runs as root with an interpreter that uid 65534 cannot read (e.g. pyenv under
  ``/root``), the sandbox's uid maps to host root, which ``RLIMIT_NPROC`` does not bind;
- with ``isolation="none"`` there is no sandbox at all: the solver can read the grader's
  ``/proc/<pid>/environ``, write files, reach the network, leave ``setsid()`` daemons behind, and
  reach the tester's verdict pipe through ``/proc`` (same user), so a determined answer can forge
  a pass; use it only for models you trust.

What the tests see differs from running them in the answer's process in a few ways, graded as
failures: a test that passes a function or an object to the answer, keeps a returned object by
identity, calls an answer's function named like a built-in (it gets the built-in), or needs a
third-party package (the sandbox has the standard library only). Arguments the answer changes
in place are copied back, and big results cost time (about 5 s per million nested containers).
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import math
import os
import re
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Protocol, runtime_checkable

from uniroute.answers import MMLU_PRO_CATEGORIES, extract_choice, extract_number

# Re-exported: graders have always offered these to onboarding and to projects' own graders.
from uniroute.answers import normalise_text as normalise_text
from uniroute.answers import parse_options as parse_options
from uniroute.data.representative import RepresentativePrompt
from uniroute.errors import GradingError
from uniroute.onboarding.sandbox import (
    ISOLATIONS,
    SandboxedProcess,
    find_bwrap,
    find_interpreter,
    resolve_isolation,
    start_python,
)


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
# The extraction itself lives in ``uniroute.answers``, which also compares answers (agreement)
# and must not depend on onboarding; the graders score with exactly that extraction.


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
        options = parse_options(prompt.text) if prompt is not None else {}
        return extract_choice(answer, options, self.letters)


# ---------------------------------------------------------------------------- numeric


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
        return extract_number(answer)

    def _matches(self, got: object, expected: object) -> bool:
        # Both come from ``extract``, which returns a float (``grade`` skips a None).
        if not isinstance(got, int | float) or not isinstance(expected, int | float):
            raise GradingError(f"cannot compare {got!r} with {expected!r} as numbers")
        return math.isclose(got, expected, rel_tol=self.rel_tol, abs_tol=self.abs_tol)


# ---------------------------------------------------------------------------- exact match


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


# The code grader runs two programs, each in its own sandbox (see sandbox.py and the module
# docstring): the *solver* runs the answer and executes calls on its functions; the *tester*
# runs the unit tests, with each of the answer's functions replaced by a stub that forwards the
# call to the solver and gets back plain data. Only the tester writes the verdict, on a pipe the
# solver cannot reach. These sources run with ``python -I -S``: standard library only.

_WIRE = r"""
import builtins, json, os, resource, struct, sys

MAX_FRAME = 1 << 24
MAX_ITEMS = 100000


def apply_limits(limits):
    cpu, memory, file_size, processes = limits
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        # Counted per user and not enforced for host root; it stops fork bombs elsewhere.
        resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
    except (AttributeError, ValueError, OSError):
        pass


def take_payload(fd):
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(fd)
    return json.loads(b"".join(chunks))


def silence_stdio():
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def describe(exc):
    try:
        return str(exc)[:1000]
    except BaseException:
        return "(unprintable)"


def read_exact(fd, size):
    data = bytearray()
    while len(data) < size:
        chunk = os.read(fd, min(size - len(data), 1 << 20))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


def recv(fd):
    head = read_exact(fd, 4)
    if head is None:
        return None
    (size,) = struct.unpack(">I", head)
    if size > MAX_FRAME:
        raise ValueError("a message of %d bytes is over the %d-byte limit" % (size, MAX_FRAME))
    body = read_exact(fd, size)
    return None if body is None else json.loads(body)


def frame(message):
    body = json.dumps(message).encode()
    if len(body) > MAX_FRAME:
        raise ValueError("a value of %d bytes is over the %d-byte limit" % (len(body), MAX_FRAME))
    return struct.pack(">I", len(body)) + body


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def send(fd, message):
    write_all(fd, frame(message))


def encode(value):
    # Plain data as JSON, every container tagged with its type; anything else is refused.
    if value is None or value is True or value is False:
        return value
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        # Big ints travel in hex: decimal conversion is quadratic, and refused past 4300 digits.
        value = int(value)
        return value if value.bit_length() <= 64 else {"int": hex(value)}
    if isinstance(value, float):
        return float(value)
    if isinstance(value, complex):
        return {"complex": [value.real, value.imag]}
    if isinstance(value, bytes):
        return {"bytes": bytes(value).hex()}
    if isinstance(value, bytearray):
        return {"bytearray": value.hex()}
    if isinstance(value, tuple):
        return {"tuple": [encode(item) for item in value]}
    if isinstance(value, list):
        return {"list": [encode(item) for item in value]}
    if isinstance(value, dict):
        return {"dict": [[encode(key), encode(item)] for key, item in value.items()]}
    if isinstance(value, frozenset):
        return {"frozenset": [encode(item) for item in value]}
    if isinstance(value, set):
        return {"set": [encode(item) for item in value]}
    if isinstance(value, range):
        return {"range": [value.start, value.stop, value.step]}
    kind = "%s.%s" % (type(value).__module__, type(value).__qualname__)
    if kind == "fractions.Fraction":
        return {"fraction": [int(value.numerator), int(value.denominator)]}
    if kind == "decimal.Decimal":
        return {"decimal": str(value)}
    if hasattr(type(value), "__next__"):
        items = []
        for item in value:
            if len(items) == MAX_ITEMS:
                raise ValueError("an iterator of over %d items" % MAX_ITEMS)
            items.append(encode(item))
        return {"iterator": items}
    raise TypeError(
        "a %s cannot be passed between the solution and the tests: only None, bool, int, "
        "float, complex, str, bytes, tuples, lists, dicts, sets, ranges, fractions, decimals "
        "and iterators of these can" % type(value).__name__
    )


def _items(body):
    if type(body) is not list:
        raise ValueError("malformed value")
    return [decode(item) for item in body]


def _numbers(body, count, kinds):
    if type(body) is not list or len(body) != count or any(type(x) not in kinds for x in body):
        raise ValueError("malformed value")
    return body


def decode(data):
    # The value ``encode`` described, rebuilt from built-in types only.
    if data is None or type(data) in (bool, int, float, str):
        return data
    if type(data) is not dict or len(data) != 1:
        raise ValueError("malformed value")
    ((tag, body),) = data.items()
    if tag == "list":
        return _items(body)
    if tag == "tuple":
        return tuple(_items(body))
    if tag == "set":
        return set(_items(body))
    if tag == "frozenset":
        return frozenset(_items(body))
    if tag == "iterator":
        return iter(_items(body))
    if tag == "dict":
        if type(body) is not list or any(type(p) is not list or len(p) != 2 for p in body):
            raise ValueError("malformed value")
        return {decode(key): decode(item) for key, item in body}
    if tag == "int" and type(body) is str:
        return int(body, 16)
    if tag in ("bytes", "bytearray") and type(body) is str:
        return (bytes if tag == "bytes" else bytearray).fromhex(body)
    if tag == "decimal" and type(body) is str:
        import decimal

        return decimal.Decimal(body)
    if tag == "complex":
        return complex(*_numbers(body, 2, (int, float)))
    if tag == "range":
        return range(*_numbers(body, 3, (int,)))
    if tag == "fraction":
        import fractions

        return fractions.Fraction(*_numbers(body, 2, (int,)))
    raise ValueError("malformed value")
"""

_SOLVER = r"""

def offer(value):
    if isinstance(value, type(sys)):
        return {"kind": "module", "name": value.__name__}
    if callable(value):
        return {"kind": "callable"}
    try:
        return {"kind": "value", "value": encode(value)}
    except Exception:
        return None


def call(namespace, message):
    try:
        function = namespace[message["name"]]
        args = [decode(arg) for arg in message["args"]]
        kwargs = {str(key): decode(arg) for key, arg in message["kwargs"].items()}
        value = encode(function(*args, **kwargs))
    except BaseException as exc:
        return {"raise": [type(exc).__name__, describe(exc)]}
    # Arguments changed in place travel back, for tests that check them after the call.
    after = []
    for arg in args:
        try:
            after.append(encode(arg) if isinstance(arg, (list, dict, set, bytearray)) else None)
        except Exception:
            after.append(None)
    return {"value": value, "args": after}


def main():
    payload, requests, replies = (int(arg) for arg in sys.argv[1:4])
    spec = take_payload(payload)
    silence_stdio()
    apply_limits(spec["limits"])
    namespace = {"__name__": "solution", "__builtins__": builtins}
    try:
        exec(compile(spec["setup"] + "\n" + spec["code"], "solution.py", "exec"), namespace)
    except BaseException as exc:
        send(replies, {"error": "%s: %s" % (type(exc).__name__, describe(exc))})
        return
    send(replies, {"ready": True})
    while True:
        message = recv(requests)
        if type(message) is not dict:
            return
        if message.get("op") == "names":
            found = {}
            for name in message.get("names", ()):
                if isinstance(name, str) and name in namespace:
                    offered = offer(namespace[name])
                    if offered is not None:
                        found[name] = offered
            reply = {"names": found}
        else:
            reply = call(namespace, message)
        try:
            send(replies, reply)
        except ValueError as exc:
            send(replies, {"raise": ["ValueError", describe(exc)]})


main()
"""

_TESTER = r"""
import ast, importlib

_NOT_IMPORTED = {"antigravity", "this"}


class SolutionGone(Exception):
    pass  # the solution's process ended, or broke the protocol


class SolutionRaised(Exception):
    pass  # an exception the solution raised that has no built-in counterpart


class Link:
    def __init__(self, replies, requests):
        self.replies, self.requests, self.gone = replies, requests, ""

    def request(self, message):
        data = frame(message)  # a ValueError here is about the tests' own arguments
        if not self.gone:
            try:
                write_all(self.requests, data)
                reply = recv(self.replies)
            except (OSError, ValueError, RecursionError, MemoryError) as exc:
                reply = exc
            if type(reply) is dict:
                return reply
            if reply is None or isinstance(reply, OSError):
                self.gone = "the solution's process ended"
            else:
                self.gone = "the solution's process broke the protocol (%s)" % describe(reply)
        raise SolutionGone(self.gone)


def rebuild(raised):
    if type(raised) is not list or len(raised) != 2:
        raised = ["Exception", ""]
    name, message = str(raised[0])[:100], str(raised[1])[:1000]
    kind = getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        try:
            return kind(message)
        except Exception:
            pass
    return SolutionRaised("%s: %s" % (name, message))


def refresh(args, sent, after):
    # Copy arguments the solution changed in place back into the tests' objects.
    if type(after) is not list or len(after) != len(args):
        return
    for arg, before, image in zip(args, sent, after):
        if image is None or image == before:
            continue
        new = decode(image)
        if isinstance(arg, list) and type(new) is list:
            arg[:] = new
        elif isinstance(arg, bytearray) and type(new) is bytearray:
            arg[:] = new
        elif isinstance(arg, dict) and type(new) is dict:
            arg.clear()
            arg.update(new)
        elif isinstance(arg, set) and type(new) is set:
            arg.clear()
            arg.update(new)


class Remote:
    # One of the solution's functions, called in the solution's process.

    def __init__(self, link, name):
        self.link, self.name, self.__name__ = link, name, name

    def __repr__(self):
        return "<solution function %s>" % self.name

    def __call__(self, *args, **kwargs):
        sent = [encode(arg) for arg in args]
        named = {str(key): encode(value) for key, value in kwargs.items()}
        reply = self.link.request({"op": "call", "name": self.name, "args": sent, "kwargs": named})
        if "raise" in reply:
            raise rebuild(reply["raise"])
        try:
            value = decode(reply.get("value"))
            refresh(args, sent, reply.get("args"))
        except Exception as exc:
            raise ValueError("the solution sent a malformed value (%s)" % describe(exc)) from None
        return value


def referenced_names(sources):
    names = set()
    for source in sources:
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            continue
        names.update(node.id for node in ast.walk(tree) if isinstance(node, ast.Name))
    # Built-ins stay the tests' own: a solution defining ``len`` or ``set`` cannot change them.
    return sorted(name for name in names if not hasattr(builtins, name))


def bind_solution(link, names, namespace):
    offered = link.request({"op": "names", "names": names}).get("names")
    if type(offered) is not dict:
        return
    for name in names:
        info = offered.get(name)
        kind = info.get("kind") if type(info) is dict else None
        if kind == "callable":
            namespace[name] = Remote(link, name)
        elif kind == "module" and type(info.get("name")) is str:
            # A module the solution imported (tests may use its ``math`` unimported); the
            # tests get their own copy, and only of the standard library.
            module = info["name"]
            top = module.partition(".")[0]
            if top in sys.stdlib_module_names and top not in _NOT_IMPORTED:
                try:
                    namespace[name] = importlib.import_module(module)
                except Exception:
                    pass
        elif kind == "value":
            try:
                namespace[name] = decode(info.get("value"))
            except Exception:
                pass


def run_tests(spec, link):
    try:
        hello = recv(link.replies)
    except Exception as exc:
        hello = exc
    if hello is None:
        link.gone = "the solution's process ended before the tests ran"
    elif type(hello) is dict and type(hello.get("error")) is str:
        return 0, "error", "solution: %s" % hello["error"][:1000]
    elif type(hello) is not dict or hello.get("ready") is not True:
        link.gone = "the solution's process broke the protocol before the tests ran"
    if link.gone:
        return 0, "error", link.gone
    tests = spec["tests"]
    namespace = {"__name__": "tests", "__builtins__": builtins}
    try:
        bind_solution(link, referenced_names([spec["setup"], *tests]), namespace)
    except SolutionGone as exc:
        return 0, "error", describe(exc)
    try:
        exec(compile(spec["setup"], "setup", "exec"), namespace)
    except BaseException as exc:
        return 0, "error", "setup: %s: %s" % (type(exc).__name__, describe(exc))
    passed, failure = 0, ""
    for index, test in enumerate(tests):
        try:
            exec(compile(test, "test_%d" % index, "exec"), namespace)
        except BaseException as exc:
            failure = failure or "test %d: %s: %s" % (index, type(exc).__name__, describe(exc))
        else:
            passed += 1
    return passed, ("passed" if passed == len(tests) else "failed"), failure


def main():
    payload, replies, requests = (int(arg) for arg in sys.argv[1:4])
    spec = take_payload(payload)
    verdict = os.dup(1)
    silence_stdio()
    apply_limits(spec["limits"])
    link = Link(replies, requests)
    passed, status, detail = run_tests(spec, link)
    record = {"passed": passed, "status": status, "detail": detail[:500], "gone": bool(link.gone)}
    os.write(verdict, (json.dumps(record) + "\n").encode())


main()
"""

_SOLVER_SOURCE = _WIRE + _SOLVER
_TESTER_SOURCE = _WIRE + _TESTER


class CodeGrader(BaseGrader):
    """Runs a prompt's unit tests against the code in an answer, each side in its own sandbox.

    The answer runs under bubblewrap (``isolation="bwrap"``, the default; see ``sandbox``) in
    one sandbox and the tests in another; the tests call the answer's functions through a pipe
    and compare what comes back themselves, so the verdict never depends on the answer's word
    (see the module docstring). Both run ``python -I -S`` (standard library only) with a
    wall-clock ``timeout`` and ``resource`` limits on CPU seconds, address space, file size and
    processes. Without bubblewrap, or where it cannot build a sandbox, grading raises
    GradingError unless isolation is switched off explicitly (``isolation="none"``, or
    ``UNIROUTE_CODE_SANDBOX=none``, read at grading time and winning over the argument).
    Score 1.0 when every test passes.
    """

    def __init__(
        self,
        timeout: float = 10.0,
        cpu_seconds: int | None = None,
        memory_mb: int = 512,
        file_size_mb: int = 16,
        max_processes: int = 0,
        python: str | None = None,
        isolation: str = "bwrap",
    ) -> None:
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {list(ISOLATIONS)}, not {isolation!r}")
        self.timeout = timeout
        self.cpu_seconds = cpu_seconds
        self.memory_mb = memory_mb
        self.file_size_mb = file_size_mb
        self.max_processes = max_processes
        self.python = python
        self.isolation = isolation

    def __repr__(self) -> str:
        return (
            f"CodeGrader(timeout={self.timeout}, cpu_seconds={self.cpu_seconds}, "
            f"memory_mb={self.memory_mb}, file_size_mb={self.file_size_mb}, "
            f"max_processes={self.max_processes}, isolation={self.isolation!r})"
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
        """Run ``tests`` against ``code``, each in its own sandbox, and report what happened."""
        isolation = resolve_isolation(self.isolation)
        interpreter = find_interpreter(self.python)
        if isolation == "bwrap":
            find_bwrap(interpreter)  # refuse before starting anything
        total = len(tests.tests)
        limits = self._limits()
        solver_spec = {"setup": tests.setup, "code": code, "limits": limits}
        tester_spec = {"setup": tests.setup, "tests": list(tests.tests), "limits": limits}
        scratch_mb = max(8, 4 * int(self.file_size_mb))
        started: list[SandboxedProcess] = []
        parent_fds: list[int] = []
        with tempfile.TemporaryFile() as tester_errors:
            try:
                to_solver, to_tester = os.pipe(), os.pipe()
                parent_fds += [*to_solver, *to_tester]
                solver_payload, tester_payload = _payload(solver_spec), _payload(tester_spec)
                parent_fds += [solver_payload, tester_payload]
                solver_fds = (solver_payload, to_solver[0], to_tester[1])
                solver = start_python(
                    ["-c", _SOLVER_SOURCE, *map(str, solver_fds)],
                    isolation=isolation,
                    interpreter=interpreter,
                    pass_fds=solver_fds,
                    scratch_mb=scratch_mb,
                )
                started.append(solver)
                tester_fds = (tester_payload, to_tester[0], to_solver[1])
                tester = start_python(
                    ["-c", _TESTER_SOURCE, *map(str, tester_fds)],
                    isolation=isolation,
                    interpreter=interpreter,
                    pass_fds=tester_fds,
                    stdout=subprocess.PIPE,
                    stderr=tester_errors,
                    scratch_mb=scratch_mb,
                )
                started.append(tester)
                # Only the children may hold the pipes: a dead side must read as end of file.
                while parent_fds:
                    os.close(parent_fds.pop())
                try:
                    output, _ = tester.popen.communicate(timeout=self.timeout)
                except subprocess.TimeoutExpired:
                    return CodeRunResult(0, total, "timeout", f"over {self.timeout} s")
                return _verdict(output, tester_errors, solver, total)
            finally:
                for fd in parent_fds:
                    os.close(fd)
                for process in started:
                    process.kill()

    def _limits(self) -> list[int]:
        """The rlimits each sandboxed program sets on itself: CPU s, bytes, bytes, processes."""
        cpu = int(self.cpu_seconds or max(1, math.ceil(self.timeout)))
        return [cpu, int(self.memory_mb) << 20, int(self.file_size_mb) << 20, self.max_processes]


def _payload(spec: Mapping[str, object]) -> int:
    """An fd, positioned at its start, holding ``spec`` as JSON (it never touches a disk)."""
    data = json.dumps(spec).encode()
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("uniroute-code-payload")
    else:  # not Linux: only isolation "none" runs here
        with tempfile.TemporaryFile() as handle:
            fd = os.dup(handle.fileno())
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _verdict(
    output: bytes, tester_errors: IO[bytes], solver: SandboxedProcess, total: int
) -> CodeRunResult:
    """The tester's verdict line, with a signal that ended the solution named in the status."""
    lines = output.decode("utf-8", errors="replace").strip().splitlines()
    try:
        # Exactly one line: the tester writes one, and nothing else can write there.
        (line,) = lines
        record = json.loads(line)
        passed, status = int(record["passed"]), str(record["status"])
        detail, gone = str(record["detail"]), bool(record["gone"])
    except (IndexError, ValueError, KeyError, TypeError):
        tester_errors.seek(0)
        errors = tester_errors.read()[-4000:].decode("utf-8", errors="replace").strip()
        if "bwrap:" in errors:
            # The tests' own sandbox failed, which no answer can cause: not a score.
            raise GradingError(f"the code grader's sandbox failed: {errors[-300:]}") from None
        return CodeRunResult(
            0, total, "error", f"the test process gave no verdict: {errors[-500:]}"
        )
    if gone:
        with contextlib.suppress(subprocess.TimeoutExpired):
            solver.popen.wait(timeout=0.5)
        code = solver.returncode
        # A plain child reports signal N as -N, bwrap as 128 + N.
        number = -code if code is not None and code < 0 else (code or 0) - 128
        if number in {int(s) for s in signal.Signals}:
            name = signal.Signals(number).name
            status = "cpu-limit" if name == "SIGXCPU" else "killed"
            detail = f"terminated by {name}"
    return CodeRunResult(min(max(passed, 0), total), total, status, detail)


# ---------------------------------------------------------------------------- task registry

_MULTIPLE_CHOICE = MultipleChoiceGrader()
_NUMERIC = NumericGrader()
_CODE = CodeGrader()
DEFAULT_GRADER: Grader = ExactMatchGrader()


#: Task glob pattern (matched case-insensitively) -> grader; the first matching pattern wins.
GRADERS: dict[str, Grader] = {
    "arc*": _MULTIPLE_CHOICE,
    "mmlu*": _MULTIPLE_CHOICE,
    "hellaswag*": _MULTIPLE_CHOICE,
    "winogrande*": _MULTIPLE_CHOICE,
    **dict.fromkeys(MMLU_PRO_CATEGORIES, _MULTIPLE_CHOICE),
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
