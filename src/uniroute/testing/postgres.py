"""A throwaway PostgreSQL 15 cluster, for the tests and the registry benchmark.

``PostgresCluster`` runs ``initdb`` and ``pg_ctl`` from ``PG_BIN`` (``$UNIROUTE_PG_BIN``, by
default Debian's ``/usr/lib/postgresql/15/bin``) in a temporary directory, as the ``postgres``
user when run as root (``initdb`` refuses root), listening on a free loopback port and on a unix
socket inside that directory, with ``fsync=off`` (nothing in it outlives the run). Every login
is trusted, so it is for loopback tests only.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

PG_BIN = Path(os.environ.get("UNIROUTE_PG_BIN", "/usr/lib/postgresql/15/bin"))


class ClusterUnavailableError(RuntimeError):
    """The PostgreSQL server cannot be run here; the message says what is missing."""


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresCluster:
    """One PostgreSQL server in a temporary directory, stopped and removed by ``stop``."""

    def __init__(self, bin_dir: Path = PG_BIN) -> None:
        self.bin_dir = bin_dir
        missing = [
            name for name in ("initdb", "pg_ctl", "postgres") if not (bin_dir / name).is_file()
        ]
        if missing:
            raise ClusterUnavailableError(
                f"the PostgreSQL 15 server binaries are missing ({', '.join(missing)} not found "
                f"in {bin_dir}); install Debian's postgresql-15 package "
                "(`bash scripts/install-system-packages.sh`, run by `make install`)"
            )
        self._as_user: list[str] = []
        self._owner: tuple[int, int] | None = None
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise ClusterUnavailableError(
                    "running as root, and there is no 'postgres' user to run the server as "
                    "(initdb refuses root); install Debian's postgresql-15 package"
                ) from None
            runuser = shutil.which("runuser")
            if runuser is None:
                raise ClusterUnavailableError("running as root, and `runuser` is missing")
            self._as_user = [runuser, "-u", "postgres", "--"]
            self._owner = (entry.pw_uid, entry.pw_gid)
        self.root = Path(tempfile.mkdtemp(prefix="uniroute-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root / "socket"
        self.log = self.root / "server.log"
        self.port = 0
        self._names = itertools.count()
        self._started = False

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            [*self._as_user, *args], capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise ClusterUnavailableError(
                f"{Path(args[0]).name} failed (exit {result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[-2000:]}\n{log}"
            )

    def start(self) -> PostgresCluster:
        """initdb, then start the server and wait until it accepts connections."""
        self.socket_dir.mkdir()
        if self._owner is not None:
            for path in (self.root, self.socket_dir):
                os.chown(path, *self._owner)
        self._run(
            str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
            "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions",
        )  # fmt: skip
        self.port = _free_port()
        self.start_server()
        return self

    def start_server(self) -> None:
        """Start the (initialised) server on its port and wait until it accepts connections."""
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            " -c max_connections=200"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip
        self._started = True

    def stop_server(self) -> None:
        """Stop the server as an operator's restart would (fast: clients are disconnected),
        keeping its data for ``start_server``."""
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        self._started = False

    def stop(self) -> None:
        """Stop the server (immediately: nothing in it is kept) and remove its directory."""
        if self._started:
            with contextlib.suppress(ClusterUnavailableError, subprocess.TimeoutExpired):
                self._run(
                    str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w",
                    "stop",
                )  # fmt: skip
            self._started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres", *, password: str | None = None) -> str:
        """The URL of one database, over TCP on loopback (the cluster trusts every login)."""
        user = "postgres" if password is None else f"postgres:{password}"
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        name = f"registry_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"'.encode())
        return self.url(name)
