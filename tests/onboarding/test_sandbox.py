"""The code grader's sandbox against hostile answers: each escape probe runs through the real
CodeGrader under bubblewrap and must fail; where a probe *can* succeed, the same probe with
isolation "none" shows that it does, so a probe that cannot detect an escape would be noticed.

These tests need bubblewrap (``bwrap``) and fail, not skip, without it: they are the evidence
that the sandbox works on this host.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from uniroute.errors import GradingError
from uniroute.onboarding import sandbox
from uniroute.onboarding.graders import CodeGrader, CodeTests
from uniroute.testing.sandbox_probes import (
    CONNECT_PROBE,
    CORRECT,
    DAEMON_TESTS,
    FORGERIES,
    LEAK_PROBE,
    LEAK_TESTS,
    SQUARE_TESTS,
    WRONG,
    connect_tests,
    daemon_probe,
    grade_with_secret,
    kill_all,
    open_directory,
    processes_with,
    write_probe,
    write_tests,
)


@pytest.fixture(autouse=True)
def _sandbox_not_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests are about the sandbox: an opt-out in the caller's environment must not count."""
    monkeypatch.delenv(sandbox.ISOLATION_ENV, raising=False)


# ---------------------------------------------------------------------------- (a) forged verdicts


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_a_forged_verdict_scores_nothing(forgery: str) -> None:
    result = CodeGrader(timeout=10).run(FORGERIES[forgery], SQUARE_TESTS)
    assert result.passed == 0 and not result.all_passed, result


# ---------------------------------------------------------------------------- (b) secrets


def test_b_the_graders_environment_does_not_reach_the_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    passed, _, status, detail = grade_with_secret("bwrap")
    assert (passed, status) == (0, "failed"), detail
    # In-process too: a key set in os.environ after start-up is not passed on.
    monkeypatch.setenv("SECRET_PROBE_KEY", "sk-in-process")
    assert not CodeGrader().run(LEAK_PROBE, CodeTests(tests=LEAK_TESTS)).all_passed


def test_b_control_without_isolation_the_probe_finds_the_secret() -> None:
    passed, _, status, detail = grade_with_secret("none")
    assert (passed, status) == (1, "passed"), detail


# ---------------------------------------------------------------------------- (c) survivors


@pytest.fixture
def marker() -> Iterator[str]:
    """A unique argv marker; any process still carrying it at the end is killed."""
    value = f"uniroute-probe-{uuid.uuid4().hex}"
    yield value
    kill_all(processes_with(value))


def test_c_a_setsid_grandchild_dies_with_the_sandbox(marker: str) -> None:
    grader = CodeGrader(timeout=10, max_processes=32)
    result = grader.run(daemon_probe(marker), DAEMON_TESTS)
    # The test passing proves the grandchild was running inside the sandbox ...
    assert result.all_passed, result
    # ... and it is gone the moment the grader returns, without any waiting.
    assert processes_with(marker) == []


def test_c_control_without_isolation_the_grandchild_survives(marker: str) -> None:
    grader = CodeGrader(timeout=10, max_processes=32, isolation="none")
    result = grader.run(daemon_probe(marker), DAEMON_TESTS)
    assert result.all_passed, result
    assert processes_with(marker) != []


@pytest.mark.parametrize("program_exits_first", [False, True])
def test_killing_the_sandbox_kills_every_descendant(marker: str, program_exits_first: bool) -> None:
    # The same at the sandbox level: a program whose daemon outlives it, killed from outside,
    # either while it runs or after it has exited by itself (bwrap then exits as soon as its
    # PID 1 reports the exit status, before the namespace is torn down).
    script = daemon_probe(marker) + "assert grandchild_running()\nprint('ready', flush=True)\n"
    if not program_exits_first:
        script += "time.sleep(60)\n"
    interpreter = sandbox.find_interpreter()
    process = sandbox.start_python(
        ["-c", script], isolation="bwrap", interpreter=interpreter, stdout=subprocess.PIPE
    )
    try:
        assert process.popen.stdout is not None
        assert process.popen.stdout.readline() == b"ready\n"
        if program_exits_first:
            process.popen.wait(timeout=10)
    finally:
        process.kill()
    assert processes_with(marker) == []
    assert process.returncode is not None


# ---------------------------------------------------------------------------- (d) host files


def test_d_the_answer_cannot_write_outside_its_work_dir(tmp_path: Path, marker: str) -> None:
    directory = open_directory(tmp_path)
    tests = write_tests(directory)
    result = CodeGrader().run(write_probe(marker), tests)
    assert (result.passed, result.status) == (0, "failed"), result
    assert not (directory / "escaped.txt").exists()
    # Its /tmp is its own: nothing lands in the host's.
    assert not Path("/tmp", marker).exists()
    # Nor can it see the repository, the virtualenv, /etc, host files or the home directory
    # (apart from the interpreter, where it lives there).
    host_file = tmp_path / "registry.db"
    host_file.write_text("private")
    repository = Path(__file__).resolve().parents[2]
    interpreter = sandbox.find_interpreter().executable
    home = [p for p in Path.home().iterdir() if not interpreter.startswith(f"{p}/")][:1]
    hidden = [repository / "README.md", Path(sys.prefix) / "pyvenv.cfg", Path("/etc/passwd")]
    for path in [*hidden, host_file, *home]:
        assert path.exists()
        hidden_tests = CodeTests(tests=(f"assert visible({str(path)!r})",))
        result = CodeGrader().run(write_probe(marker), hidden_tests)
        assert (result.passed, result.status) == (0, "failed"), (path, result)


def test_d_control_without_isolation_the_write_lands(tmp_path: Path, marker: str) -> None:
    directory = open_directory(tmp_path)
    tests = write_tests(directory)
    try:
        result = CodeGrader(isolation="none").run(write_probe(marker), tests)
        assert result.all_passed, result
        assert (directory / "escaped.txt").exists()
    finally:
        Path("/tmp", marker).unlink(missing_ok=True)


# ---------------------------------------------------------------------------- (e) network


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP server on the host's loopback; yields its port."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def test_e_the_answer_cannot_reach_the_hosts_loopback(listener: int) -> None:
    tests = connect_tests(listener)
    result = CodeGrader().run(CONNECT_PROBE, tests)
    assert (result.passed, result.status) == (0, "failed"), result


def test_e_control_without_isolation_the_connection_succeeds(listener: int) -> None:
    tests = connect_tests(listener)
    assert CodeGrader(isolation="none").run(CONNECT_PROBE, tests).all_passed


# ---------------------------------------------------------------------------- normal behaviour


def test_a_correct_answer_scores_one_and_a_wrong_one_zero_inside_the_sandbox() -> None:
    grader = CodeGrader(timeout=10)
    assert grader.run(CORRECT, SQUARE_TESTS).all_passed
    wrong = grader.run(WRONG, SQUARE_TESTS)
    assert (wrong.passed, wrong.status) == (0, "failed")
    # Where the answer ran: uid 65534, its own host name, PID namespace and working directory.
    where = (
        "import os, socket\n"
        "def where():\n"
        "    pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())\n"
        "    return os.getuid(), os.getgid(), socket.gethostname(), os.getcwd(), pids\n"
    )
    tests = CodeTests(tests=("assert where() == (65534, 65534, 'sandbox', '/sandbox', [1, 2])",))
    assert grader.run(where, tests).all_passed, grader.run(where, tests)


def test_an_endless_loop_times_out() -> None:
    started = time.monotonic()
    result = CodeGrader(timeout=1.0).run(
        "def square_perimeter(s):\n    while True:\n        pass\n", SQUARE_TESTS
    )
    assert result.status in ("timeout", "cpu-limit") and not result.all_passed
    assert time.monotonic() - started < 5


def test_without_bwrap_grading_refuses_and_says_how_to_opt_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no bwrap on it
    with pytest.raises(GradingError) as refused:
        CodeGrader().run(CORRECT, SQUARE_TESTS)
    message = str(refused.value)
    assert "bwrap" in message and "apt-get install bubblewrap" in message
    assert "UNIROUTE_CODE_SANDBOX=none" in message and "isolation='none'" in message
    # The explicit opt-outs: the argument, or the environment variable read at grading time.
    assert CodeGrader(isolation="none").run(CORRECT, SQUARE_TESTS).all_passed
    monkeypatch.setenv(sandbox.ISOLATION_ENV, "none")
    assert CodeGrader().run(CORRECT, SQUARE_TESTS).all_passed
    # The variable wins over the argument either way.
    monkeypatch.setenv(sandbox.ISOLATION_ENV, "bwrap")
    with pytest.raises(GradingError, match="apt-get install bubblewrap"):
        CodeGrader(isolation="none").run(CORRECT, SQUARE_TESTS)


def test_a_bwrap_that_cannot_build_namespaces_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake = tmp_path / "bwrap"
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = --help ]; then echo "usage: bwrap"; exit 0; fi\n'
        "echo 'bwrap: No permissions to create a new namespace' >&2\n"
        "exit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GradingError) as refused:
        CodeGrader().run(CORRECT, SQUARE_TESTS)
    message = str(refused.value)
    assert "cannot build" in message and "No permissions to create a new namespace" in message
    assert "UNIROUTE_CODE_SANDBOX=none" in message


def test_isolation_values_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="isolation"):
        CodeGrader(isolation="docker")
    monkeypatch.setenv(sandbox.ISOLATION_ENV, "off")
    with pytest.raises(GradingError, match="UNIROUTE_CODE_SANDBOX='off'"):
        CodeGrader().run(CORRECT, SQUARE_TESTS)


def test_the_command_line_shares_nothing_writable_and_no_environment() -> None:
    interpreter = sandbox.find_interpreter()
    bwrap = sandbox.find_bwrap(interpreter)
    argv = sandbox.bwrap_argv(bwrap, interpreter, ["-c", "pass"], scratch_mb=8)
    for flag in ("--unshare-all", "--unshare-user", "--clearenv", "--die-with-parent"):
        assert flag in argv
    assert "--new-session" in argv and argv[argv.index("--uid") + 1] == "65534"
    assert "--bind" not in argv and "--dev-bind" not in argv  # nothing of the host is writable
    sources = [argv[i + 1] for i, arg in enumerate(argv) if arg.startswith("--ro-bind")]
    repository = str(Path(__file__).resolve().parents[2])
    assert not any(source.startswith((repository, sys.prefix)) for source in sources)
    # The interpreter is the base one (or the system one, when uid 65534 cannot run the base
    # one): the virtualenv is neither needed nor visible.
    assert interpreter.executable in (
        os.path.realpath(sys._base_executable),
        os.path.realpath(sandbox.SYSTEM_PYTHON),
    )
    if os.geteuid() == 0 and SYSTEM_PYTHON.exists():
        assert bwrap.host_uid == sandbox.SANDBOX_ID  # nobody on the host, not mapped to root
    assert argv[argv.index("--") + 1 :][:4] == [interpreter.executable, "-I", "-S", "-B"]


SYSTEM_PYTHON = Path("/usr/bin/python3")


@pytest.mark.skipif(
    os.geteuid() != 0, reason="only a grader running as root can start bwrap as uid 65534"
)
def test_as_root_with_a_system_python_the_sandbox_is_nobody_on_the_host() -> None:
    assert SYSTEM_PYTHON.exists(), f"{SYSTEM_PYTHON} is missing (Debian: apt-get install python3)"
    interpreter = sandbox.find_interpreter(str(SYSTEM_PYTHON))
    assert sandbox.find_bwrap(interpreter).host_uid == sandbox.SANDBOX_ID
    grader = CodeGrader(python=str(SYSTEM_PYTHON))
    assert grader.run(CORRECT, SQUARE_TESTS).all_passed
    assert not grader.run(WRONG, SQUARE_TESTS).all_passed
    # Host uid 65534 is not root, so the kernel enforces max_processes=0: no fork.
    forker = (
        "import os\n"
        "def can_fork():\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        return False\n"
        "    if pid == 0:\n"
        "        os._exit(0)\n"
        "    os.waitpid(pid, 0)\n"
        "    return True\n"
    )
    assert grader.run(forker, CodeTests(tests=("assert can_fork() is False",))).all_passed
