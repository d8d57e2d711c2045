"""ChildServerProcess: waiting for the announced URL, draining pipes, failing clearly, stopping."""

from __future__ import annotations

import signal
import sys
import time

import pytest

from uniroute.testing.child_process import ChildServerProcess


def python(code: str) -> list[str]:
    """A command running ``code`` in a fresh interpreter."""
    return [sys.executable, "-c", code]


ANNOUNCE_AND_WAIT = (
    "import sys, time\n"
    "print('starting up', flush=True)\n"
    "sys.stderr.write('log line 1\\nlog line 2\\n'); sys.stderr.flush()\n"
    "print('listening on http://127.0.0.1:5555', flush=True)\n"
    "time.sleep(60)\n"
)


def test_start_waits_for_the_announced_url_and_stop_terminates_the_child():
    with ChildServerProcess(python(ANNOUNCE_AND_WAIT)) as child:
        assert child.base_url == "http://127.0.0.1:5555"
        assert child.v1_url == "http://127.0.0.1:5555/v1"
        deadline = time.monotonic() + 10
        while len(child.stderr_lines()) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert child.stderr_lines() == ["log line 1\n", "log line 2\n"]
        assert child.stderr_text() == "log line 1\nlog line 2"
        assert child.process.poll() is None
    assert child.process.returncode == -signal.SIGTERM


def test_a_child_that_writes_far_more_than_a_pipe_holds_still_starts():
    # 1 MB on each pipe before the announcement: a child whose pipes were not drained would block.
    code = (
        "import sys, time\n"
        "sys.stderr.write('e' * 1_000_000 + '\\n'); sys.stderr.flush()\n"
        "print('o' * 1_000_000, flush=True)\n"
        "print('listening on http://127.0.0.1:1', flush=True)\n"
        "time.sleep(60)\n"
    )
    with ChildServerProcess(python(code), startup_timeout=30) as child:
        assert child.base_url == "http://127.0.0.1:1"
        assert len(child.stderr_text()) == 1_000_000


def test_a_child_that_exits_at_start_is_an_error_with_its_stderr():
    code = "import sys\nsys.stderr.write('bad flag --x\\n')\nsys.exit(2)\n"
    child = ChildServerProcess(python(code))
    with pytest.raises(RuntimeError, match=r"^child process exited at start: bad flag --x$"):
        child.start()
    assert child.process.returncode == 2


def test_a_child_that_never_announces_is_stopped_at_the_timeout():
    class SlowServer(ChildServerProcess):
        label = "slow server"

    child = SlowServer(python("import time\ntime.sleep(60)\n"), startup_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"^slow server did not start within 0.3 s$"):
        child.start()
    assert time.monotonic() - started < 10
    assert child.process.returncode == -signal.SIGTERM


def test_a_child_that_ignores_sigterm_is_killed_after_the_grace_period():
    class Stubborn(ChildServerProcess):
        stop_grace_s = 0.3

    code = (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('listening on http://127.0.0.1:2', flush=True)\n"
        "time.sleep(60)\n"
    )
    child = Stubborn(python(code)).start()
    child.stop()
    assert child.process.returncode == -signal.SIGKILL
