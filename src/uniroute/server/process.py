"""Run the gateway in a child process (``uniroute serve``), for tests, benchmarks and demos."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType


class GatewayProcess:
    """``uniroute serve`` in a child process on a free port; a context manager.

    Both output pipes are drained for the child's whole life (so it never blocks on a full
    pipe); ``log_lines()`` returns what it wrote to stderr: its JSON logs.
    """

    def __init__(
        self,
        artifact: str | Path,
        registry: str | Path,
        *,
        config: str | Path | None = None,
        host: str = "127.0.0.1",
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 60.0,
    ) -> None:
        self.command = [
            sys.executable, "-m", "uniroute.cli.main", "serve", "--artifact", str(artifact),
            "--registry", str(registry), "--host", host, "--port", "0", *extra_args,
        ]  # fmt: skip
        if config is not None:
            self.command += ["--config", str(config)]
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

    def start(self) -> GatewayProcess:
        """Start the child and wait until it accepts requests."""
        self.process = subprocess.Popen(
            self.command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        stdout_lines: queue.Queue[str | None] = queue.Queue()

        def read_stdout(stream) -> None:
            for line in stream:
                stdout_lines.put(line)
            stdout_lines.put(None)

        def read_stderr(stream) -> None:
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
                raise RuntimeError(
                    f"gateway did not start within {self.startup_timeout} s: {self.log_text()}"
                ) from None
            if line is None:
                self.stop()
                raise RuntimeError(f"gateway exited at start: {self.log_text()}")
            if line.startswith("listening on "):
                self.base_url = line.removeprefix("listening on ").strip()
                return self

    def log_lines(self) -> list[str]:
        """Lines the child wrote to stderr so far (its JSON logs)."""
        return list(self._stderr_lines)

    def log_text(self) -> str:
        """Everything the child wrote to stderr so far."""
        return "".join(self._stderr_lines).strip()

    def stop(self) -> None:
        """Ask the child to stop (SIGTERM), then kill it if it lingers."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for reader in self._readers:
            reader.join(timeout=5)

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
