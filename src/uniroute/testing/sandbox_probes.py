"""Hostile answers that probe the code grader's sandbox (``uniroute.onboarding.sandbox``), shared
by the sandbox tests and ``benchmarks/sandbox_probes.py``.

Each probe is an "answer" program graded by the real ``CodeGrader`` against unit tests that pass
only if the probe got out. What each one tries, and what a sandbox that holds does with it:

* forged verdicts (:data:`FORGERIES`, and :data:`FORGERY`, all of them at once that can be
  combined): a wrong answer that calls the old in-process harness's ``report()``, writes a
  passing verdict to its own descriptors and to the pipes of its sibling process running the
  grader's harness, prints one and exits early, disarms ``AssertionError``, replaces
  ``json.dumps`` or returns values equal to anything. It must score nothing: 0 tests passed.
* environment leak (:data:`LEAK_PROBE`, :func:`grade_with_secret`): the answer looks for
  ``SECRET_PROBE_KEY`` in its own environment and in every visible ``/proc/<pid>/environ``,
  graded by a process started with that key set. It must not find it.
* surviving daemon (:func:`daemon_probe`): the answer leaves a ``setsid()`` double-forked
  grandchild, marked in its argv, behind. The grandchild runs inside the sandbox, and no process
  carrying the marker (:func:`processes_with`) is left when the grader returns.
* host writes (:func:`write_probe`, :func:`write_tests`): the answer writes into a world-writable
  host directory (:func:`open_directory`) and into ``/tmp``, and checks whether host paths are
  visible. Nothing lands on the host, in the directory or in the host's ``/tmp``, and no host
  path is visible.
* network (:data:`CONNECT_PROBE`, :func:`connect_tests`): the answer connects to a TCP server on
  the host's loopback. The connection is refused: the server accepts nothing.

:data:`CORRECT` and :data:`WRONG` answer :data:`SQUARE_TESTS`, and must score 1 and 0 inside the
sandbox. The forgeries write to every descriptor of their own process: grade them sandboxed only.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from uniroute.onboarding import sandbox
from uniroute.onboarding.graders import CodeTests

__all__ = [
    "CONNECT_PROBE",
    "CORRECT",
    "DAEMON_TESTS",
    "DRIVER",
    "FAKE_VERDICT",
    "FORGERIES",
    "FORGERY",
    "LEAK_PROBE",
    "LEAK_TESTS",
    "SQUARE_TESTS",
    "WRONG",
    "connect_tests",
    "daemon_probe",
    "grade_with_secret",
    "kill_all",
    "open_directory",
    "processes_with",
    "write_probe",
    "write_tests",
]

# ---------------------------------------------------------------------------- normal answers

#: The unit tests of the square-perimeter prompt (as in tests/onboarding/fixtures/code).
SQUARE_TESTS = CodeTests(
    tests=(
        "assert square_perimeter(5) == 20",
        "assert square_perimeter(0) == 0",
        "assert square_perimeter(2.5) == 10.0",
    )
)
#: An answer that passes :data:`SQUARE_TESTS`.
CORRECT = "def square_perimeter(s):\n    return 4 * s\n"
#: An answer that fails every test of :data:`SQUARE_TESTS`.
WRONG = "def square_perimeter(s):\n    return -1\n"
#: The verdict line a forgery claims: every test of :data:`SQUARE_TESTS` passed.
FAKE_VERDICT = json.dumps({"passed": 3, "status": "passed", "detail": "", "gone": False})

# ---------------------------------------------------------------------------- (a) forged verdicts

# The old harness decided pass/fail in the answer's own process: call its report(), write a
# passing verdict to the answer's own descriptors (its protocol pipes excepted, so the tests do
# run), then look for its sibling running the tests and write to that one's pipes. (Only pipes,
# and only of a sibling running the grader's harness: unsandboxed, as root, writing to every
# descriptor of every process would damage the host.)
_REPORT = (
    "import json, os, stat, sys\n"
    f"FAKE = ({FAKE_VERDICT!r} + '\\n').encode()\n"
    "own = {int(arg) for arg in sys.argv[1:] if arg.isdigit()}\n"
    "main = sys.modules.get('__main__')\n"
    "for name in ('report', 'send'):\n"
    "    try:\n"
    "        getattr(main, name)(3, 'passed')\n"
    "    except Exception:\n"
    "        pass\n"
    "for fd in set(range(256)) - own:\n"
    "    try:\n"
    "        os.write(fd, FAKE)\n"
    "    except OSError:\n"
    "        pass\n"
    "for pid in os.listdir('/proc'):\n"
    "    try:\n"
    "        with open('/proc/' + pid + '/stat', 'rb') as handle:\n"
    "            parent = int(handle.read().rpartition(b')')[2].split()[1])\n"
    "        with open('/proc/' + pid + '/cmdline', 'rb') as handle:\n"
    "            harness = b'SolutionGone' in handle.read()\n"
    "        if parent != os.getppid() or int(pid) == os.getpid() or not harness:\n"
    "            continue\n"
    "        entries = os.listdir('/proc/' + pid + '/fd')\n"
    "    except (OSError, ValueError):\n"
    "        continue\n"
    "    for entry in entries:\n"
    "        path = '/proc/' + pid + '/fd/' + entry\n"
    "        try:\n"
    "            if stat.S_ISFIFO(os.stat(path).st_mode):\n"
    "                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)\n"
    "                os.write(fd, FAKE)\n"
    "                os.close(fd)\n"
    "        except OSError:\n"
    "            pass\n"
)
# Disarm the assertion machinery in the answer's interpreter.
_DISARM = "import builtins\nbuiltins.AssertionError = type('Harmless', (Exception,), {})\n"
# An int that claims to equal anything.
_SNEAKY = (
    "class Sneaky(int):\n"
    "    def __eq__(self, other):\n"
    "        return True\n"
    "    __hash__ = int.__hash__\n"
)

#: Wrong answers to :data:`SQUARE_TESTS`, each forging a passing verdict one way; by name.
FORGERIES: dict[str, str] = {
    "report": _REPORT + WRONG,
    # Exit 0 before any test runs, after printing a result line.
    "exit-early": (f"import os\nprint({FAKE_VERDICT!r}, flush=True)\nos._exit(0)\n" + WRONG),
    "monkeypatch": (
        _DISARM + "builtins.exec = lambda *args, **kwargs: None\n"
        "builtins.compile = lambda *args, **kwargs: None\n" + WRONG
    ),
    # Answer every message of the protocol with a passing verdict.
    "protocol": (f"import json\njson.dumps = lambda *args, **kwargs: {FAKE_VERDICT!r}\n" + WRONG),
    # Values that claim to equal anything.
    "always-equal": (
        _SNEAKY + "class Anything:\n"
        "    def __eq__(self, other):\n"
        "        return True\n"
        "def square_perimeter(s):\n"
        "    return Sneaky(-1) if s else Anything()\n"
    ),
}
#: One wrong answer forging every way that combines: the "report" forgery, then the verdict
#: printed on stdout, ``AssertionError`` disarmed and an always-equal return value.
FORGERY = (
    _REPORT
    + "print(FAKE.decode(), flush=True)\n"
    + _DISARM
    + _SNEAKY
    + "def square_perimeter(s):\n    return Sneaky(-1)\n"
)

# ---------------------------------------------------------------------------- (b) secrets

#: Defines ``leaked()``: whether ``SECRET_PROBE_KEY`` is in the answer's or any visible environ.
LEAK_PROBE = (
    "import os\n"
    "def leaked():\n"
    "    if any('SECRET_PROBE_KEY' in key for key in os.environ):\n"
    "        return True\n"
    "    for entry in os.listdir('/proc'):\n"
    "        try:\n"
    "            with open('/proc/' + entry + '/environ', 'rb') as handle:\n"
    "                if b'SECRET_PROBE_KEY=' in handle.read():\n"
    "                    return True\n"
    "        except OSError:\n"
    "            pass\n"
    "    return False\n"
)
#: The test that passes only if :data:`LEAK_PROBE` found the secret.
LEAK_TESTS = ("assert leaked() is True",)
#: Reads ``[code, tests, isolation]`` on stdin, grades, prints ``[passed, total, status,
#: detail]``. Run in a process started with the secret in its environment, so that the secret is
#: also in that process's /proc/<pid>/environ (setting os.environ later would not put it there).
DRIVER = (
    "import json, sys\n"
    "from uniroute.onboarding.graders import CodeGrader, CodeTests\n"
    "code, tests, isolation = json.load(sys.stdin)\n"
    "result = CodeGrader(isolation=isolation).run(code, CodeTests(tests=tuple(tests)))\n"
    "print(json.dumps([result.passed, result.total, result.status, result.detail]))\n"
)


def grade_with_secret(isolation: str) -> tuple[int, int, str, str]:
    """(passed, total, status, detail) of the leak probe, graded by a child holding the secret."""
    env = {k: v for k, v in os.environ.items() if k != sandbox.ISOLATION_ENV}
    env["SECRET_PROBE_KEY"] = "sk-" + uuid.uuid4().hex
    done = subprocess.run(
        [sys.executable, "-c", DRIVER],
        input=json.dumps([LEAK_PROBE, list(LEAK_TESTS), isolation]),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    passed, total, status, detail = json.loads(done.stdout)
    return int(passed), int(total), str(status), str(detail)


# ---------------------------------------------------------------------------- (c) survivors

#: The test that passes only if :func:`daemon_probe`'s grandchild was running.
DAEMON_TESTS = CodeTests(tests=("assert grandchild_running()",))


def daemon_probe(marker: str) -> str:
    """An answer that leaves a setsid() double-forked grandchild, marked in its argv, behind."""
    return (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', "
        f"{marker!r}])\n"
        "    os._exit(0)\n"
        "os.wait()\n"
        "def grandchild_running():\n"
        "    deadline = time.monotonic() + 5\n"
        "    while time.monotonic() < deadline:\n"
        "        for entry in os.listdir('/proc'):\n"
        "            try:\n"
        "                with open('/proc/' + entry + '/cmdline', 'rb') as handle:\n"
        f"                    if {marker.encode()!r} in handle.read():\n"
        "                        return True\n"
        "            except OSError:\n"
        "                pass\n"
        "        time.sleep(0.02)\n"
        "    return False\n"
    )


def processes_with(marker: str) -> list[int]:
    """Host PIDs whose command line holds ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path("/proc", entry, "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(int(entry))
    return found


def kill_all(pids: list[int]) -> None:
    """SIGKILL ``pids`` (processes that escaped the grading)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------- (d) host files


def open_directory(parent: Path) -> Path:
    """A new world-writable host directory in ``parent``: only the sandbox can keep answers out."""
    directory = parent / "open"
    directory.mkdir()
    directory.chmod(0o777)
    return directory


def write_tests(directory: Path) -> CodeTests:
    """The test that passes only if :func:`write_probe` wrote ``escaped.txt`` into ``directory``."""
    return CodeTests(tests=(f"assert escape({str(directory)!r}) is True",))


def write_probe(marker: str) -> str:
    """An answer that writes /tmp/<marker> and defines ``escape(directory)``, ``visible(path)``."""
    return (
        "import os\n"
        "try:\n"
        f"    with open('/tmp/{marker}', 'w') as handle:\n"
        "        handle.write('out')\n"
        "except OSError:\n"
        "    pass\n"
        "def escape(directory):\n"
        "    try:\n"
        "        with open(os.path.join(directory, 'escaped.txt'), 'w') as handle:\n"
        "            handle.write('out')\n"
        "        return True\n"
        "    except OSError:\n"
        "        return False\n"
        "def visible(path):\n"
        "    return os.path.exists(path)\n"
    )


# ---------------------------------------------------------------------------- (e) network


def connect_tests(port: int) -> CodeTests:
    """The test that passes only if :data:`CONNECT_PROBE` reached the loopback's ``port``."""
    return CodeTests(tests=(f"assert reach({port}) is True",))


#: Defines ``reach(port)``: whether a TCP connection to the loopback's ``port`` succeeds.
CONNECT_PROBE = (
    "import socket\n"
    "def reach(port):\n"
    "    try:\n"
    "        socket.create_connection(('127.0.0.1', port), timeout=2).close()\n"
    "        return True\n"
    "    except OSError:\n"
    "        return False\n"
)
