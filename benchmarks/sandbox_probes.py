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
import functools
import os
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
from uniroute.testing import sandbox_probes as probes


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


def probe_forgery() -> Row:
    """(a) A wrong answer that forges a passing verdict every way it can."""
    result = CodeGrader().run(probes.FORGERY, probes.SQUARE_TESTS)
    escaped = result.passed > 0 or result.all_passed
    outcome = "forged verdict counted" if escaped else "forgery ignored"
    return Row("forged report", "score 0", outcome, verdict(result), escaped)


def probe_secret() -> Row:
    """(b) The answer looks for an API key in its and every visible process's environment."""
    passed, total, status, _ = probes.grade_with_secret("bwrap")
    escaped = passed > 0
    outcome = "secret read" if escaped else "secret not visible"
    return Row("parent environ", "not leaked", outcome, f"{passed}/{total} {status}", escaped)


def probe_daemon() -> Row:
    """(c) A setsid() double-forked grandchild meant to outlive the grading."""
    marker = f"uniroute-probe-{uuid.uuid4().hex}"
    result = CodeGrader(max_processes=32).run(probes.daemon_probe(marker), probes.DAEMON_TESTS)
    survivors = probes.processes_with(marker)
    probes.kill_all(survivors)
    ran = "ran" if result.all_passed else "did not start"
    outcome = f"grandchild {ran}, {len(survivors)} left after grading"
    # The test passes only if the grandchild was running inside the sandbox.
    escaped = bool(survivors) if result.all_passed else None
    return Row("setsid grandchild", "killed", outcome, verdict(result), escaped)


def probe_write(directory: Path) -> Row:
    """(d) The answer writes into a world-writable host directory and into /tmp."""
    target = probes.open_directory(directory)
    marker = f"uniroute-probe-{uuid.uuid4().hex}"
    result = CodeGrader().run(probes.write_probe(marker), probes.write_tests(target))
    in_tmp = Path("/tmp", marker)
    written = (target / "escaped.txt").exists() or in_tmp.exists()
    in_tmp.unlink(missing_ok=True)
    outcome = "file written on the host" if written else "nothing written"
    return Row("host file write", "refused", outcome, verdict(result), written or result.passed > 0)


def probe_connect() -> Row:
    """(e) The answer connects to a TCP server on the host's loopback."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        port = server.getsockname()[1]
        result = CodeGrader().run(probes.CONNECT_PROBE, probes.connect_tests(port))
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
    for label, code, expected in (
        ("correct answer", probes.CORRECT, 1.0),
        ("wrong answer", probes.WRONG, 0.0),
    ):
        result = CodeGrader().run(code, probes.SQUARE_TESTS)
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
