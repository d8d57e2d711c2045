"""Run the gateway in a child process (``uniroute serve``), for tests, benchmarks and demos."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from uniroute.testing.child_process import ChildServerProcess


class GatewayProcess(ChildServerProcess):
    """``uniroute serve`` in a child process on a free port (or ``port``); a context manager.

    Both output pipes are drained for the child's whole life (so it never blocks on a full
    pipe); ``log_lines()`` returns what it wrote to stderr: its JSON logs.
    """

    label = "gateway"
    # On SIGTERM the gateway first lets open requests finish, then its background jobs.
    stop_grace_s = 15.0

    def __init__(
        self,
        artifact: str | Path,
        registry: str | Path,
        *,
        config: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 60.0,
    ) -> None:
        command = [
            sys.executable, "-m", "uniroute.cli.main", "serve", "--artifact", str(artifact),
            "--registry", str(registry), "--host", host, "--port", str(port), *extra_args,
        ]  # fmt: skip
        if config is not None:
            command += ["--config", str(config)]
        super().__init__(command, env=env, startup_timeout=startup_timeout)

    def _startup_timeout_message(self) -> str:
        """The timeout error, with the gateway's logs so far (they say where it got stuck)."""
        return f"{super()._startup_timeout_message()}: {self.log_text()}"

    def log_lines(self) -> list[str]:
        """Lines the child wrote to stderr so far (its JSON logs)."""
        return self.stderr_lines()

    def log_text(self) -> str:
        """Everything the child wrote to stderr so far."""
        return self.stderr_text()
