"""A server in a child process that announces ``listening on URL``: start, wait, stop.

The gateway (``uniroute serve``) and the replay upstream both print that line on stdout once
they accept connections; tests, benchmarks and demos run them through subclasses of
:class:`ChildServerProcess`.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import IO, ClassVar, Self

from uniroute.gateway.serving import LISTENING_PREFIX

__all__ = ["LISTENING_PREFIX", "ChildServerProcess"]


class ChildServerProcess:
    """A server command run as a child process until it prints its URL; a context manager.

    Both output pipes are drained for the child's whole life, so it never blocks on a full pipe;
    stdout is read for the ``listening on URL`` line and stderr is kept (``stderr_lines()``).
    ``base_url`` is the announced server root, ``v1_url`` the OpenAI base URL under it.
    """

    #: How the child is named in error messages.
    label: ClassVar[str] = "child process"
    #: Seconds ``stop()`` waits after SIGTERM before it kills the child.
    stop_grace_s: ClassVar[float] = 10.0

    def __init__(
        self,
        command: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.command = list(command)
        self.env = dict(os.environ if env is None else env)
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self.base_url = ""
        self._stderr_lines: list[str] = []
        self._readers: list[threading.Thread] = []

    @property
    def v1_url(self) -> str:
        """The base URL to give an OpenAI client."""
        return f"{self.base_url}/v1"

    def start(self) -> Self:
        """Start the child and wait until it announces its address."""
        self.process = subprocess.Popen(
            self.command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        stdout_lines: queue.Queue[str | None] = queue.Queue()

        def read_stdout(stream: IO[str]) -> None:
            for line in stream:
                stdout_lines.put(line)
            stdout_lines.put(None)

        def read_stderr(stream: IO[str]) -> None:
            for line in stream:
                self._stderr_lines.append(line)

        for target, stream in (
            (read_stdout, self.process.stdout),
            (read_stderr, self.process.stderr),
        ):
            reader = threading.Thread(target=target, args=(stream,), daemon=True)
            reader.start()
            self._readers.append(reader)
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                line = stdout_lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.stop()
                raise RuntimeError(self._startup_timeout_message()) from None
            if line is None:
                self.stop()
                raise RuntimeError(f"{self.label} exited at start: {self.stderr_text()}")
            if line.startswith(LISTENING_PREFIX):
                self.base_url = line.removeprefix(LISTENING_PREFIX).strip()
                return self

    def _startup_timeout_message(self) -> str:
        """The error raised when the child has not announced its address in time."""
        return f"{self.label} did not start within {self.startup_timeout} s"

    def stderr_lines(self) -> list[str]:
        """Lines the child wrote to stderr so far."""
        return list(self._stderr_lines)

    def stderr_text(self) -> str:
        """What the child wrote to stderr so far."""
        return "".join(self._stderr_lines).strip()

    def stop(self) -> None:
        """Ask the child to stop (SIGTERM), then kill it if it lingers."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=self.stop_grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for reader in self._readers:
            # Each reader ends at its pipe's end of file once the child has exited.
            reader.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
