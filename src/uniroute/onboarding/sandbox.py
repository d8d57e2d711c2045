"""Run a Python program that handles untrusted code inside a bubblewrap sandbox.

The code grader runs models' answers, which are untrusted code, through ``start_python``. With
isolation ``"bwrap"`` (the default) each program runs under bubblewrap (``bwrap``, Debian package
``bubblewrap``):

- in new user, PID, network, IPC, UTS and cgroup namespaces (``--unshare-all``), as uid/gid 65534
  inside, with no capabilities and no way to create further user namespaces
  (``--disable-userns``, where the installed bwrap has it);
- with an empty environment apart from ``PATH``, ``LANG``, ``HOME`` and
  ``PYTHONDONTWRITEBYTECODE`` (bwrap itself is started with an empty environment too: the
  sandbox's PID 1 is a bwrap process, and its ``/proc/1/environ`` is readable from inside);
- seeing only, read-only, ``/usr`` (system libraries), the ``/bin``, ``/lib*`` links of a
  merged-/usr system, ``/etc/ld.so.cache`` and the base interpreter's prefix (its standard
  library); a fresh ``/proc`` and ``/dev``, and two private, size-limited tmpfs mounts: ``/tmp``
  and the working directory ``/sandbox``. No host directory is writable, nor is the repository,
  the virtualenv, the registry or any home directory visible;
- with loopback only, in its own network namespace: nothing on the host is reachable;
- in a new session (no terminal to inject input into) that dies with its parent, and killed as a
  whole: ``SandboxedProcess.kill`` kills the sandbox's PID 1, which makes the kernel kill every
  process in the PID namespace, ``setsid()`` daemons included, and returns once they are gone.

When the grader runs as root and the interpreter is readable by uid 65534, bwrap itself runs as
host uid 65534, so the sandbox *is* nobody on the host; an interpreter only root can reach (under
``/root``, e.g. pyenv) is replaced by the system one, ``/usr/bin/python3``, when there is one.
Otherwise (an unprivileged grader, or root with no interpreter nobody can run) the sandbox's
uid 65534 maps to the grader's own host uid: the namespaces and read-only mounts above still hold,
but a kernel bug that broke out of them would land as that user, and the kernel does not enforce
``RLIMIT_NPROC`` for host root (a fork bomb then runs until the wall-clock timeout).

With isolation ``"none"`` (opt-in: ``UNIROUTE_CODE_SANDBOX=none`` or
``CodeGrader(isolation="none")``) the program is a plain child process in its own session and a
temporary directory, with the same minimal environment; it can read and write whatever the
grader's user can, reach the network, read the grader's ``/proc/<pid>/environ``, and a
``setsid()`` grandchild outlives the kill. Use it only for models you trust.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from uniroute.errors import GradingError

#: Environment variable that overrides ``CodeGrader(isolation=...)`` at grading time.
ISOLATION_ENV = "UNIROUTE_CODE_SANDBOX"
#: The isolations a code grader can use.
ISOLATIONS = ("bwrap", "none")
#: uid and gid of the sandboxed program (nobody/nogroup on Debian).
SANDBOX_ID = 65534
#: The interpreter used instead of this one when uid 65534 cannot run this one (it needs only
#: the standard library).
SYSTEM_PYTHON = "/usr/bin/python3"
#: The sandboxed program's private, writable working directory (a tmpfs).
WORKDIR = "/sandbox"

_PATH = "/usr/bin:/bin"
# Top-level directories or links a merged-/usr system needs for the dynamic loader and /bin.
_SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Flags newer than bwrap 0.4 (Debian 11): used only where the installed bwrap lists them.
_OPTIONAL_FLAGS = ("--disable-userns", "--size", "--perms")
# The start-up check: the sandbox must run the interpreter as the sandbox user.
_PROBE = "import os, sys; sys.stdout.write(str(os.getuid()))"
_PROBE_TIMEOUT = 20.0
# How long ``kill`` waits for a sandbox's PID namespace to empty after SIGKILL to its PID 1.
_TEARDOWN_SECONDS = 5.0

_INSTALL_HINT = (
    "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap)"
)
_OPT_OUT_HINT = (
    f"or, only for models you trust, run answers without isolation: {ISOLATION_ENV}=none in the "
    "environment or CodeGrader(isolation='none')"
)


def resolve_isolation(requested: str) -> str:
    """The isolation to grade with: ``UNIROUTE_CODE_SANDBOX`` when set, else ``requested``."""
    chosen = os.environ.get(ISOLATION_ENV, "").strip().lower() or requested
    if chosen not in ISOLATIONS:
        source = ISOLATION_ENV if os.environ.get(ISOLATION_ENV, "").strip() else "isolation"
        raise GradingError(
            f"{source}={chosen!r} is not a code-grader isolation; use one of {list(ISOLATIONS)}"
        )
    return chosen


@dataclass(frozen=True)
class Interpreter:
    """A base Python interpreter and the directories outside ``/usr`` it needs to start."""

    executable: str
    roots: tuple[str, ...]


def find_interpreter(python: str | None = None) -> Interpreter:
    """The base interpreter behind ``python`` (default: this one), outside any virtualenv."""
    if python is None:
        # A virtualenv's python is a link to (or a copy of) the base interpreter; the sandbox
        # runs the base one, with only its standard library (``-I -S``).
        executable = getattr(sys, "_base_executable", None) or sys.executable
        if not _runnable_by_anyone(executable) and _runnable_by_anyone(SYSTEM_PYTHON):
            # An interpreter only root can reach (e.g. under /root) would force the sandbox's
            # uid to map to root's; the system one lets it be nobody on the host too.
            return _query_interpreter(SYSTEM_PYTHON)
        return _interpreter(executable, (sys.base_prefix, sys.base_exec_prefix))
    return _query_interpreter(python)


def _runnable_by_anyone(executable: str) -> bool:
    """True if a user with no special rights (uid 65534) can run ``executable``: every directory
    on its real path is searchable by others and the file is readable and executable by them."""
    real = Path(os.path.realpath(executable))
    try:
        if real.stat().st_mode & 0o005 != 0o005:
            return False
        return all(parent.stat().st_mode & 0o001 for parent in real.parents)
    except OSError:
        return False


@functools.lru_cache(maxsize=16)
def _query_interpreter(python: str) -> Interpreter:
    script = (
        "import json, sys; print(json.dumps([getattr(sys, '_base_executable', None) or "
        "sys.executable, sys.base_prefix, sys.base_exec_prefix]))"
    )
    try:
        done = subprocess.run(
            [python, "-I", "-S", "-c", script],
            capture_output=True,
            text=True,
            env={"PATH": _PATH},
            timeout=_PROBE_TIMEOUT,
            check=True,
        )
        executable, prefix, exec_prefix = json.loads(done.stdout)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        raise GradingError(f"cannot run the code grader's interpreter {python!r}: {exc}") from None
    return _interpreter(executable, (prefix, exec_prefix))


def _interpreter(executable: str, prefixes: Sequence[str]) -> Interpreter:
    real = os.path.realpath(executable)
    roots: list[str] = []
    for path in [*(os.path.realpath(p) for p in prefixes), os.path.dirname(real)]:
        # /usr is bound whole anyway; a root inside another root adds nothing.
        if path in ("", "/") or _within(path, "/usr"):
            continue
        if not any(_within(path, kept) for kept in roots):
            roots = [kept for kept in roots if not _within(kept, path)] + [path]
    return Interpreter(real, tuple(roots))


def _within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


@dataclass(frozen=True)
class Bwrap:
    """A bubblewrap seen to build a working sandbox for one interpreter on this host."""

    path: str
    flags: frozenset[str]
    #: The host uid bwrap is started as (65534 when the grader is root and that works), or None
    #: to keep the grader's own.
    host_uid: int | None


def find_bwrap(interpreter: Interpreter) -> Bwrap:
    """A bwrap that can sandbox ``interpreter`` here; a GradingError naming what is missing."""
    path = shutil.which("bwrap")
    if path is None:
        raise GradingError(
            "the code grader runs answers (untrusted code) inside a bubblewrap sandbox, but "
            f"`bwrap` is not on PATH: {_INSTALL_HINT}, {_OPT_OUT_HINT}"
        )
    return _checked_bwrap(os.path.realpath(path), interpreter, os.geteuid())


@functools.lru_cache(maxsize=16)
def _checked_bwrap(path: str, interpreter: Interpreter, euid: int) -> Bwrap:
    """Run the probe once per (bwrap, interpreter, user); failures are not cached."""
    try:
        usage = subprocess.run(
            [path, "--help"], capture_output=True, text=True, env={}, timeout=_PROBE_TIMEOUT
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise GradingError(f"cannot run {path}: {exc}; {_INSTALL_HINT}, {_OPT_OUT_HINT}") from None
    flags = frozenset(flag for flag in _OPTIONAL_FLAGS if flag in usage)
    # As root, prefer a sandbox that is nobody on the host too; it needs an interpreter that
    # uid 65534 can read, so fall back to mapping the sandbox's uid to root's.
    candidates = [Bwrap(path, flags, SANDBOX_ID), Bwrap(path, flags, None)]
    errors: list[str] = []
    for candidate in candidates if euid == 0 else candidates[1:]:
        error = _probe(candidate, interpreter)
        if error is None:
            return candidate
        errors.append(error)
    raise GradingError(
        f"bubblewrap ({path}) cannot build the code grader's sandbox on this host: {errors[-1]}. "
        "It needs unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1 and "
        "user.max_user_namespaces > 0; in a container, a seccomp/AppArmor profile that allows "
        f"them); {_OPT_OUT_HINT}"
    )


def _probe(bwrap: Bwrap, interpreter: Interpreter) -> str | None:
    """None when ``bwrap`` runs ``interpreter`` as the sandbox user, else what went wrong."""
    argv = bwrap_argv(bwrap, interpreter, ["-c", _PROBE], scratch_mb=1)
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env={},
            cwd="/",
            timeout=_PROBE_TIMEOUT,
            **_as_user(bwrap.host_uid),
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    if done.returncode == 0 and done.stdout == str(SANDBOX_ID):
        return None
    return (done.stderr.strip() or f"exit status {done.returncode}, output {done.stdout!r}")[:300]


def _as_user(uid: int | None) -> dict[str, Any]:
    """Popen keywords starting the child as host ``uid`` (and its group), with no extra groups."""
    if uid is None:
        return {}
    return {"user": uid, "group": uid, "extra_groups": []}


def bwrap_argv(
    bwrap: Bwrap,
    interpreter: Interpreter,
    args: Sequence[str],
    *,
    scratch_mb: int,
    info_fd: int | None = None,
) -> list[str]:
    """The bwrap command line running ``interpreter -I -S -B ARGS`` in a fresh sandbox."""
    argv = [bwrap.path, "--unshare-all", "--unshare-user"]
    if "--disable-userns" in bwrap.flags:
        argv.append("--disable-userns")
    argv += ["--die-with-parent", "--new-session", "--hostname", "sandbox"]
    argv += ["--uid", str(SANDBOX_ID), "--gid", str(SANDBOX_ID), "--clearenv"]
    for name, value in _sandbox_env(WORKDIR).items():
        argv += ["--setenv", name, value]
    argv += ["--ro-bind", "/usr", "/usr"]
    for link in _SYSTEM_LINKS:
        if os.path.islink(link):
            argv += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            argv += ["--ro-bind", link, link]
    argv += ["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"]
    for root in interpreter.roots:
        argv += ["--ro-bind", root, root]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    size = ["--size", str(max(1, scratch_mb) << 20)] if "--size" in bwrap.flags else []
    argv += [*size, "--tmpfs", "/tmp"]
    perms = ["--perms", "0700"] if "--perms" in bwrap.flags else []
    argv += [*perms, *size, "--tmpfs", WORKDIR, "--chdir", WORKDIR]
    if info_fd is not None:
        argv += ["--info-fd", str(info_fd)]
    return [*argv, "--", interpreter.executable, "-I", "-S", "-B", *args]


def _sandbox_env(home: str) -> dict[str, str]:
    return {
        "PATH": _PATH,
        "LANG": "C.UTF-8",
        "HOME": home,
        # -I ignores PYTHON* variables; -B does the same job, this covers child interpreters.
        "PYTHONDONTWRITEBYTECODE": "1",
    }


class SandboxedProcess:
    """A started program; ``kill`` ends it and everything it started."""

    def __init__(
        self,
        popen: subprocess.Popen,
        *,
        info_fd: int | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.popen = popen
        self._info_fd = info_fd
        self._workdir = workdir

    @property
    def returncode(self) -> int | None:
        """The program's exit status so far (bwrap reports a signal N as 128 + N)."""
        return self.popen.poll()

    def kill(self) -> None:
        """Kill the program and all its descendants; return once they are gone."""
        try:
            if self._info_fd is not None:
                self._kill_namespace()
            else:
                # Without a sandbox the program leads its own session: kill its process group
                # (children that called setsid() have left it: nothing reaches them).
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait()
        finally:
            for stream in (self.popen.stdout, self.popen.stderr):
                if stream is not None:
                    stream.close()
            if self._info_fd is not None:
                os.close(self._info_fd)
                self._info_fd = None
            if self._workdir is not None:
                shutil.rmtree(self._workdir, ignore_errors=True)
                self._workdir = None

    def _kill_namespace(self) -> None:
        init = self._sandbox_init()
        if init is None:
            # bwrap never reported a sandbox (it failed, or has not cloned one yet): killing it
            # is enough, a child it cloned meanwhile dies with it (--die-with-parent).
            self.popen.kill()
        else:
            _kill_and_wait(*init)
            # bwrap exits by itself once its child has.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=_TEARDOWN_SECONDS)
            self.popen.kill()
        self.popen.wait()

    def _sandbox_init(self) -> tuple[int, int] | None:
        """The host PID of the sandbox's PID 1 and its PID namespace's inode, or None."""
        assert self._info_fd is not None
        report = b""
        deadline = time.monotonic() + 2.0
        # bwrap writes the report and closes the pipe before running the program, so nothing
        # inside the sandbox can write to it; read up to its end.
        while (left := deadline - time.monotonic()) > 0 and _readable(self._info_fd, left):
            chunk = os.read(self._info_fd, 4096)
            if not chunk:
                break
            report += chunk
        try:
            info = json.loads(report)
            return int(info["child-pid"]), int(info["pid-namespace"])
        except (ValueError, KeyError, TypeError):
            return None


def _kill_and_wait(pid: int, namespace: int) -> None:
    """SIGKILL a sandbox's PID 1 (so the kernel kills its whole PID namespace) and wait for it.

    PID 1 of a namespace finishes exiting only after every other process in it has, so once it
    has exited nothing of the sandbox runs. bwrap may already have exited and left it to the
    system's reaper, so it is followed by a pidfd (or, on kernels before 5.3, by polling), not
    by ``wait``. The PID must still name a process of that namespace: a reused one is left alone.
    """
    try:
        pidfd: int | None = os.pidfd_open(pid)
    except ProcessLookupError:
        return  # exited and reaped: its namespace is already empty
    except (AttributeError, OSError):
        pidfd = None
    try:
        if _namespace_of(pid) != namespace:
            return  # gone, or the PID now names someone else
        with contextlib.suppress(ProcessLookupError):
            if pidfd is not None:
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        if pidfd is not None:
            _readable(pidfd, _TEARDOWN_SECONDS)
            return
        deadline = time.monotonic() + _TEARDOWN_SECONDS
        while time.monotonic() < deadline and _state_of(pid) not in (None, "Z", "X"):
            time.sleep(0.002)
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _readable(fd: int, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``fd`` to be readable (poll, unlike select, takes any fd)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0, int(seconds * 1000))))


def _namespace_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        return None


def _state_of(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[0] if fields else None


def start_python(
    args: Sequence[str],
    *,
    isolation: str,
    interpreter: Interpreter,
    pass_fds: Sequence[int] = (),
    stdout: int | IO[Any] | None = subprocess.DEVNULL,
    stderr: int | IO[Any] | None = subprocess.DEVNULL,
    scratch_mb: int = 64,
) -> SandboxedProcess:
    """Start ``interpreter -I -S -B ARGS`` isolated as ``isolation`` says, stdin closed."""
    if isolation == "none":
        workdir = Path(tempfile.mkdtemp(prefix="uniroute-code-"))
        popen = subprocess.Popen(
            [interpreter.executable, "-I", "-S", "-B", *args],
            cwd=workdir,
            env=_sandbox_env(str(workdir)),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            pass_fds=tuple(pass_fds),
            start_new_session=True,
        )
        return SandboxedProcess(popen, workdir=workdir)
    if isolation != "bwrap":
        raise GradingError(f"unknown isolation {isolation!r}; use one of {list(ISOLATIONS)}")
    bwrap = find_bwrap(interpreter)
    info_read, info_write = os.pipe()
    try:
        popen = subprocess.Popen(
            bwrap_argv(bwrap, interpreter, args, scratch_mb=scratch_mb, info_fd=info_write),
            cwd="/",
            # Nothing of the grader's environment reaches bwrap, whose memory the sandbox sees.
            env={},
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            pass_fds=(*pass_fds, info_write),
            **_as_user(bwrap.host_uid),
        )
    except BaseException:
        os.close(info_read)
        raise
    finally:
        os.close(info_write)
    return SandboxedProcess(popen, info_fd=info_read)
