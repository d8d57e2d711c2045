"""Escape probes against the code grader's sandbox, and what the sandbox costs per grading.

Runs hostile answers through the real ``CodeGrader`` (isolation "bwrap"), each trying one way out,
plus a correct and a wrong answer, and prints one row per probe: what was expected, what the host
observed, and the grader's verdict. Then the median wall time of grading a trivial answer with
isolation "bwrap" and "none", measured alternately in the same run, and their ratio.

    .venv/bin/python benchmarks/sandbox_probes.py [--repeats 30]

Exits 1 if any probe escapes (or a normal answer is misgraded); ``UNIROUTE_CODE_SANDBOX`` is
ignored, so the probes always run sandboxed. No probe runs unsandboxed: some would harm the host.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from uniroute.onboarding import sandbox
from uniroute.onboarding.graders import CodeGrader, CodeRunResult, CodeTests

SQUARE_TESTS = CodeTests(
    tests=(
        "assert square_perimeter(5) == 20",
        "assert square_perimeter(0) == 0",
        "assert square_perimeter(2.5) == 10.0",
    )
)
CORRECT = "def square_perimeter(s):\n    return 4 * s\n"
WRONG = "def square_perimeter(s):\n    return -1\n"
FAKE_VERDICT = json.dumps({"passed": 3, "status": "passed", "detail": "", "gone": False})
# Call the old harness's report(), write a passing verdict everywhere the answer can (its own
# descriptors, and the pipes of a sibling process running the tests, as an unsandboxed grader
# would have it), monkeypatch the assertion machinery, and answer with always-equal values.
FORGERY = (
    "import builtins, json, os, stat, sys\n"
    f"FAKE = ({FAKE_VERDICT!r} + '\\n').encode()\n"
    "own = {int(arg) for arg in sys.argv[1:] if arg.isdigit()}\n"
    "for name in ('report', 'send'):\n"
    "    try:\n"
    "        getattr(sys.modules['__main__'], name)(3, 'passed')\n"
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
    "print(FAKE.decode(), flush=True)\n"
    "builtins.AssertionError = type('Harmless', (Exception,), {})\n"
    "class Anything(int):\n"
    "    def __eq__(self, other):\n"
    "        return True\n"
    "    __hash__ = int.__hash__\n"
    "def square_perimeter(s):\n"
    "    return Anything(-1)\n"
)
LEAK = (
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
DRIVER = (
    "import json, sys\n"
    "from uniroute.onboarding.graders import CodeGrader, CodeTests\n"
    "code, tests = json.load(sys.stdin)\n"
    "result = CodeGrader().run(code, CodeTests(tests=tuple(tests)))\n"
    "print(json.dumps([result.passed, result.total, result.status, result.detail]))\n"
)
DAEMON = (
    "import os, sys, time\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', "
    "MARKER])\n"
    "    os._exit(0)\n"
    "os.wait()\n"
    "def grandchild_running():\n"
    "    deadline = time.monotonic() + 5\n"
    "    while time.monotonic() < deadline:\n"
    "        for entry in os.listdir('/proc'):\n"
    "            try:\n"
    "                with open('/proc/' + entry + '/cmdline', 'rb') as handle:\n"
    "                    if MARKER.encode() in handle.read():\n"
    "                        return True\n"
    "            except OSError:\n"
    "                pass\n"
    "        time.sleep(0.02)\n"
    "    return False\n"
)
WRITE = (
    "import os\n"
    "def escape(directory):\n"
    "    try:\n"
    "        with open(os.path.join(directory, 'escaped.txt'), 'w') as handle:\n"
    "            handle.write('out')\n"
    "        return True\n"
    "    except OSError:\n"
    "        return False\n"
)
CONNECT = (
    "import socket\n"
    "def reach(port):\n"
    "    try:\n"
    "        socket.create_connection(('127.0.0.1', port), timeout=2).close()\n"
    "        return True\n"
    "    except OSError:\n"
    "        return False\n"
)


@dataclass(frozen=True)
class Row:
    """One probe's line in the table."""

    probe: str
    expected: str
    outcome: str
    verdict: str
    #: None when the probe could not run, so it proves nothing.
    escaped: bool | None


def verdict(result: CodeRunResult) -> str:
    """The grader's verdict as ``passed/total status``."""
    return f"{result.passed}/{result.total} {result.status}"


def processes_with(marker: str) -> list[int]:
    """Host PIDs whose command line holds ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in Path("/proc", entry, "cmdline").read_bytes():
                    found.append(int(entry))
    return found


def probe_forgery() -> Row:
    """(a) A wrong answer that forges a passing verdict every way it can."""
    result = CodeGrader().run(FORGERY, SQUARE_TESTS)
    escaped = result.passed > 0 or result.all_passed
    outcome = "forged verdict counted" if escaped else "forgery ignored"
    return Row("forged report", "score 0", outcome, verdict(result), escaped)


def probe_secret() -> Row:
    """(b) The answer looks for an API key in its and every visible process's environment."""
    env = {k: v for k, v in os.environ.items() if k != sandbox.ISOLATION_ENV}
    env["SECRET_PROBE_KEY"] = "sk-" + uuid.uuid4().hex
    done = subprocess.run(
        [sys.executable, "-c", DRIVER],
        input=json.dumps([LEAK, ["assert leaked() is True"]]),
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    passed, total, status, _ = json.loads(done.stdout)
    escaped = passed > 0
    outcome = "secret read" if escaped else "secret not visible"
    return Row("parent environ", "not leaked", outcome, f"{passed}/{total} {status}", escaped)


def probe_daemon() -> Row:
    """(c) A setsid() double-forked grandchild meant to outlive the grading."""
    marker = f"uniroute-probe-{uuid.uuid4().hex}"
    code = f"MARKER = {marker!r}\n" + DAEMON
    result = CodeGrader(max_processes=32).run(
        code, CodeTests(tests=("assert grandchild_running()",))
    )
    survivors = processes_with(marker)
    for pid in survivors:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    ran = "ran" if result.all_passed else "did not start"
    outcome = f"grandchild {ran}, {len(survivors)} left after grading"
    # The test passes only if the grandchild was running inside the sandbox.
    escaped = bool(survivors) if result.all_passed else None
    return Row("setsid grandchild", "killed", outcome, verdict(result), escaped)


def probe_write(directory: Path) -> Row:
    """(d) The answer writes into a world-writable host directory."""
    target = directory / "open"
    target.mkdir()
    target.chmod(0o777)
    tests = CodeTests(tests=(f"assert escape({str(target)!r}) is True",))
    result = CodeGrader().run(WRITE, tests)
    written = (target / "escaped.txt").exists()
    outcome = "file written on the host" if written else "nothing written"
    return Row("host file write", "refused", outcome, verdict(result), written or result.passed > 0)


def probe_connect() -> Row:
    """(e) The answer connects to a TCP server on the host's loopback."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        port = server.getsockname()[1]
        result = CodeGrader().run(CONNECT, CodeTests(tests=(f"assert reach({port}) is True",)))
        try:
            server.accept()[0].close()
            accepted = True
        except BlockingIOError:
            accepted = False
    outcome = "connection accepted" if accepted else "no connection"
    return Row(
        "loopback connect", "refused", outcome, verdict(result), accepted or result.passed > 0
    )


def probe_normal() -> list[Row]:
    """A correct answer must score 1 and a wrong one 0, inside the sandbox."""
    rows = []
    for label, code, expected in (("correct answer", CORRECT, 1.0), ("wrong answer", WRONG, 0.0)):
        result = CodeGrader().run(code, SQUARE_TESTS)
        score = 1.0 if result.all_passed else 0.0
        outcome = f"score {score:.0f}"
        rows.append(
            Row(label, f"score {expected:.0f}", outcome, verdict(result), score != expected)
        )
    return rows


def timed_ms(action: Callable[[], object]) -> float:
    """Wall time of one call of ``action``, in milliseconds."""
    started = time.perf_counter()
    action()
    return (time.perf_counter() - started) * 1e3


def main(argv: list[str] | None = None) -> int:
    """Run the probes and the overhead measurement; 1 if any probe escaped."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30, help="gradings per isolation for p50")
    args = parser.parse_args(argv)
    os.environ.pop(sandbox.ISOLATION_ENV, None)

    interpreter = sandbox.find_interpreter()
    bwrap = sandbox.find_bwrap(interpreter)
    version = subprocess.run(
        [bwrap.path, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    host_uid = os.geteuid() if bwrap.host_uid is None else bwrap.host_uid
    print(
        f"{version} at {bwrap.path}; interpreter {interpreter.executable}; the sandbox's uid "
        f"65534 is host uid {host_uid}; machine load average {os.getloadavg()[0]:.1f}"
    )

    with tempfile.TemporaryDirectory() as scratch:
        rows = [
            probe_forgery(),
            probe_secret(),
            probe_daemon(),
            probe_write(Path(scratch)),
            probe_connect(),
            *probe_normal(),
        ]
    header = f"{'probe':<18} {'expected':<11} {'outcome':<38} {'grader verdict':<16} escaped"
    print(header)
    print("-" * len(header))
    for row in rows:
        flag = {True: "YES", False: "no", None: "inconclusive"}[row.escaped]
        print(f"{row.probe:<18} {row.expected:<11} {row.outcome:<38} {row.verdict:<16} {flag}")

    trivial = CodeTests(tests=("assert f() == 1",))
    answer = "def f():\n    return 1\n"
    graders = {name: CodeGrader(isolation=name) for name in sandbox.ISOLATIONS}
    for grader in graders.values():  # warm-up: the bwrap check, page cache
        grader.run(answer, trivial)
    samples: dict[str, list[float]] = {name: [] for name in graders}
    for _ in range(args.repeats):  # alternate, so both see the same machine load
        for name, grader in graders.items():
            samples[name].append(timed_ms(functools.partial(grader.run, answer, trivial)))
    sandboxed, bare = (statistics.median(samples[name]) for name in ("bwrap", "none"))
    print(
        f"\ngrading a trivial answer, median of {args.repeats}: isolation bwrap "
        f"{sandboxed:.1f} ms, none {bare:.1f} ms, ratio {sandboxed / bare:.2f}x "
        f"(+{sandboxed - bare:.1f} ms)"
    )
    escaped = [row.probe for row in rows if row.escaped]
    inconclusive = [row.probe for row in rows if row.escaped is None]
    if escaped or inconclusive:
        print(
            f"ESCAPED: {', '.join(escaped) or '-'}; inconclusive: {', '.join(inconclusive) or '-'}"
        )
        return 1
    print("no probe escaped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
