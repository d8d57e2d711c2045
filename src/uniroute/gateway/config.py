"""Gateway settings: timeouts, retries, circuit breaker, body limit and where secrets come from.

A config file is TOML or JSON (chosen by extension) holding any subset of the fields of
``GatewayConfig``, either at the top level or under a ``[gateway]`` table. Secrets are never
written in the file itself: the file names the environment variables that hold them.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import socket
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from uniroute._json import JsonLimitError, loads_bounded
from uniroute.errors import ConfigError


@dataclass(frozen=True)
class GatewayConfig:
    """Every tunable of the gateway, with defaults suited to a single-host deployment."""

    #: Seconds one upstream call may take, from sending the request to the last byte of a
    #: non-streamed answer or to the first byte of a streamed one.
    upstream_timeout_s: float = 60.0
    #: Seconds to open a TCP connection to an upstream.
    connect_timeout_s: float = 5.0
    #: Longest silence between two chunks of a streamed answer before it is abandoned.
    stream_idle_timeout_s: float = 60.0
    #: Extra attempts on the same model after a connection error (refused, reset, connect timeout).
    connect_retries: int = 1
    #: Pause before such a retry; doubled on each further retry.
    retry_backoff_s: float = 0.05
    #: Most models tried for one routed request (the first choice plus fallbacks).
    max_models_per_request: int = 3
    #: Consecutive failures that take a model out of rotation.
    breaker_failure_threshold: int = 3
    #: Seconds a tripped model stays out before one probe request is let through.
    breaker_cooldown_s: float = 30.0
    #: Largest accepted request body in bytes.
    max_body_bytes: int = 1_000_000
    #: Deepest nesting of arrays and objects accepted in a JSON body (a client's or an upstream's).
    max_json_depth: int = 64
    #: Largest non-streamed upstream answer in bytes; a bigger one counts as that model failing.
    max_upstream_body_bytes: int = 16_000_000
    #: Longest line of a streamed upstream answer in bytes; a longer one breaks the stream.
    max_stream_line_bytes: int = 1_000_000
    #: Seconds a client may take to send a request's headers, from connecting or from the first
    #: byte of its next request on a kept-alive connection (idle time between requests is
    #: ``client_keepalive_s``); then 408 and the connection is closed.
    header_read_timeout_s: float = 10.0
    #: Seconds a client may take to send a request's whole body once its headers have arrived.
    body_read_timeout_s: float = 30.0
    #: Most client connections open at once; a further one is answered 503 ``server_busy``
    #: (with ``retry-after``) and closed.
    max_client_connections: int = 2048
    #: Upstream hosts and networks models may be served from: host names (``api.openai.com``,
    #: ``*.internal``) and IP networks (``10.0.0.0/8``, ``::1``). Empty: any host, except that
    #: link-local and cloud metadata addresses are refused unless listed here explicitly.
    upstream_allowlist: tuple[str, ...] = ()
    #: Name of the environment variable with comma-separated client API keys; when that variable
    #: is unset or empty, the /v1 API needs no key.
    client_keys_env: str = "UNIROUTE_CLIENT_KEYS"
    #: Name of the environment variable holding the admin bearer token; when unset or empty the
    #: admin API answers 403 to everyone.
    admin_token_env: str = "UNIROUTE_ADMIN_TOKEN"
    #: Threads that embed prompts and compute routing decisions (off the event loop).
    routing_threads: int = 2
    #: Most prompts embedded in one encoder call when requests arrive together.
    routing_batch_size: int = 32
    #: Seconds between checks of the registry's pool version (changes made by other processes).
    registry_poll_s: float = 1.0
    #: On a PostgreSQL registry, also LISTEN for the changes other replicas and the CLI announce
    #: (NOTIFY) and read the pool as soon as one arrives; the poll above stays as the fallback.
    registry_listen: bool = True
    #: Open connections to the upstreams, in total.
    max_upstream_connections: int = 256
    #: Seconds an idle upstream connection is kept for reuse. Kept below the upstreams' own
    #: idle timeouts (uvicorn's is 5 s), so the gateway never reuses a connection that the
    #: upstream is closing at that very moment.
    upstream_keepalive_s: float = 2.0
    #: Seconds the gateway keeps an idle client connection open. Kept above the idle timeouts
    #: of client libraries (httpx: 5 s), for the same reason in the other direction.
    client_keepalive_s: float = 75.0
    #: Accepted for config files written for older versions; unused (the upstream client keeps
    #: one pool, whose cost does not grow with its size).
    upstream_client_shards: int = 8
    #: Accepted for config files written for older versions; unused (the answers of onboarding
    #: jobs are cached in the registry, where every replica finds them).
    onboarding_cache_dir: str | None = None
    #: Seconds a replica's claim on an onboarding job it runs lasts unless renewed (it renews
    #: every third of it); when a replica dies, another resumes its jobs this long after.
    job_lease_s: float = 30.0
    #: Attempts (by any replicas) before a job whose replicas keep dying is failed.
    job_max_attempts: int = 3
    #: Characters of a chat's earlier user turns routed with its last user message, as context
    #: (0: the last user message alone).
    routing_context_chars: int = 600
    #: Where conversations' sessions live: "memory" (per replica), "registry" (shared by every
    #: replica on it), or "auto": the registry when it is PostgreSQL, else memory.
    session_store: str = "auto"
    #: Seconds a conversation keeps its model after its last turn.
    session_ttl_s: float = 1800.0
    #: A turn leaves its conversation's model only for one estimated better by this much error.
    session_margin: float = 0.05
    #: Most sessions kept in memory (the least recently used go first).
    max_sessions: int = 100_000
    #: Level of the gateway's own logs (access logs are always written at INFO).
    log_level: str = "INFO"
    #: Seconds after SIGTERM during which the gateway still accepts and serves requests but
    #: answers /readyz with 503 ``draining``, so a load balancer's health checks take it out of
    #: rotation before it stops accepting (0: stop accepting at once).
    shutdown_drain_s: float = 0.0
    #: This replica's name in ``/metrics`` (``target_info{replica=...}``) and ``/readyz``;
    #: empty: the host name and process id.
    replica_name: str = ""
    #: Seconds requests still open when the gateway stops accepting get to finish (streams
    #: included); what is still open then is cut off.
    shutdown_grace_s: float = 10.0
    #: Serve the web dashboard at ``/ui`` (docs/DASHBOARD.md). Its data needs the admin token.
    dashboard: bool = False
    #: Let client API keys (static or virtual) open the dashboard's read-only views too; its
    #: actions still need the admin token.
    dashboard_client_keys: bool = False

    def __post_init__(self) -> None:
        positive = (
            "upstream_timeout_s",
            "connect_timeout_s",
            "stream_idle_timeout_s",
            "breaker_cooldown_s",
            "registry_poll_s",
            "upstream_keepalive_s",
            "client_keepalive_s",
            "header_read_timeout_s",
            "body_read_timeout_s",
            "job_lease_s",
            "session_ttl_s",
        )
        for name in positive:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)!r}")
        at_least_one = (
            "max_models_per_request",
            "breaker_failure_threshold",
            "max_body_bytes",
            "max_json_depth",
            "max_upstream_body_bytes",
            "max_stream_line_bytes",
            "max_client_connections",
            "routing_threads",
            "routing_batch_size",
            "max_upstream_connections",
            "upstream_client_shards",
            "job_max_attempts",
            "max_sessions",
        )
        for name in at_least_one:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.routing_context_chars < 0:
            raise ConfigError(
                f"routing_context_chars must be >= 0, got {self.routing_context_chars!r}"
            )
        if not 0 <= self.session_margin <= 1:
            raise ConfigError(f"session_margin must lie in [0, 1], got {self.session_margin!r}")
        if self.session_store not in ("auto", "memory", "registry"):
            raise ConfigError(
                f"session_store must be auto, memory or registry, got {self.session_store!r}"
            )
        if self.connect_retries < 0:
            raise ConfigError(f"connect_retries must be >= 0, got {self.connect_retries!r}")
        if len(self.replica_name) > 200 or not self.replica_name.isprintable():
            raise ConfigError(
                f"replica_name must be printable and at most 200 characters, got "
                f"{self.replica_name[:60]!r}"
            )
        for name in ("retry_backoff_s", "shutdown_drain_s", "shutdown_grace_s"):
            value = getattr(self, name)
            if not value >= 0:
                raise ConfigError(f"{name} must be >= 0, got {value!r}")
        for name in ("client_keys_env", "admin_token_env"):
            value = getattr(self, name)
            if not value or not value.replace("_", "").isalnum():
                raise ConfigError(f"{name} must name an environment variable, got {value!r}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(
                f"log_level must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {self.log_level!r}"
            )

    def replica(self) -> str:
        """This replica's name: ``replica_name``, else ``host:pid``."""
        return self.replica_name or f"{socket.gethostname()}:{os.getpid()}"

    def client_keys(self) -> frozenset[str]:
        """The accepted client API keys, read from the environment now (empty: no key needed)."""
        return _parse_keys(os.environ.get(self.client_keys_env, ""))

    def admin_token(self) -> str | None:
        """The admin bearer token from the environment, or None when the admin API is off."""
        return os.environ.get(self.admin_token_env) or None

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (holds variable names only, never secrets)."""
        return asdict(self)


@functools.lru_cache(maxsize=8)
def _parse_keys(raw: str) -> frozenset[str]:
    """The keys of a comma-separated list (parsed once per value: it is read on every request)."""
    return frozenset(key.strip() for key in raw.split(",") if key.strip())


#: Integer settings must fit a signed 64-bit integer: beyond that no count or size means
#: anything, and the values reach C code (sockets, thread pools) that cannot hold them.
_MAX_INT_SETTING = 2**63 - 1
#: Characters of an offending value shown in an error (a value may be a whole pasted file).
_SHOWN_CHARS = 80
#: Unknown setting names listed in an error.
_SHOWN_UNKNOWN = 10
# A TOML key that needs no quotes.
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _shown(value: object) -> str:
    """``repr(value)`` cut to a length that fits one line of an error."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def config_from_mapping(values: dict[str, Any], source: str = "config") -> GatewayConfig:
    """Build a config from a mapping, naming unknown fields and wrongly typed values."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a table of settings, got {type(values).__name__}")
    known = {f.name: f for f in fields(GatewayConfig)}
    unknown = sorted((key for key in values if key not in known), key=str)
    if unknown:
        listed = ", ".join(_shown(key) for key in unknown[:_SHOWN_UNKNOWN])
        more = f" and {len(unknown) - _SHOWN_UNKNOWN} more" if len(unknown) > _SHOWN_UNKNOWN else ""
        raise ConfigError(
            f"{source}: unknown setting(s) [{listed}{more}]; valid ones are {sorted(known)}"
        )
    defaults = GatewayConfig()
    converted: dict[str, Any] = {}
    for name, value in values.items():
        expected = type(getattr(defaults, name))
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if name == "onboarding_cache_dir":
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{source}: {name} must be a path string, got {_shown(value)}")
            converted[name] = value
        elif expected is tuple:
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise ConfigError(
                    f"{source}: {name} must be a list of strings, got {_shown(value)}"
                )
            converted[name] = tuple(value)
        elif expected is float and is_number:
            try:
                number = float(value)
            except OverflowError:  # an integer beyond any float
                number = math.inf
            if not math.isfinite(number):
                raise ConfigError(f"{source}: {name} must be a finite number, got {_shown(value)}")
            converted[name] = number
        elif expected is int and is_number and isinstance(value, int):
            if abs(value) > _MAX_INT_SETTING:
                raise ConfigError(
                    f"{source}: {name} must fit a 64-bit integer, got {_shown(value)}"
                )
            converted[name] = value
        elif (expected is str and isinstance(value, str)) or (
            expected is bool and isinstance(value, bool)
        ):
            converted[name] = value
        else:
            raise ConfigError(
                f"{source}: {name} must be a {expected.__name__}, got {_shown(value)}"
            )
    try:
        return GatewayConfig(**converted)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _toml_key(key: str) -> str:
    """A key as TOML writes it: bare when it can be, else quoted (escaping line breaks)."""
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _non_finite_key(values: Any) -> str | None:
    """Dotted key of the first ``inf`` or ``nan`` in parsed TOML, or None (iterative walk)."""
    stack: list[tuple[str, Any]] = [("", values)]
    while stack:
        key, node = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            return key or "(top level)"
        if isinstance(node, dict):
            stack.extend(
                (f"{key}.{_toml_key(k)}" if key else _toml_key(k), v) for k, v in node.items()
            )
        elif isinstance(node, list):
            stack.extend((f"{key}[{i}]", v) for i, v in enumerate(node))
    return None


def _parse(path: Path, raw: bytes) -> Any:
    """The parsed document of a .toml or .json config file; ConfigError for anything else."""
    suffix = path.suffix.lower()
    if suffix == ".json":
        try:
            return loads_bounded(raw)
        except JsonLimitError as exc:
            raise ConfigError(f"{path}: the file {exc}") from None
    if suffix != ".toml":
        raise ConfigError(f"{path}: config must be a .toml or .json file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid TOML (not UTF-8 text: {exc.reason} at byte {exc.start})"
        ) from None
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except RecursionError:
        # tomllib parses nested arrays and inline tables recursively.
        raise ConfigError(f"{path}: not valid TOML (arrays or tables nested too deeply)") from None
    bad = _non_finite_key(values)
    if bad is not None:
        raise ConfigError(f"{path}: {bad} is not a finite number (inf and nan are not settings)")
    return values


def load_config(path: str | Path | None) -> GatewayConfig:
    """Read a TOML (.toml) or JSON (.json) config file; None gives the defaults."""
    if path is None:
        return GatewayConfig()
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, expected a config file")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None
    values = _parse(path, raw)
    if isinstance(values, dict) and set(values) == {"gateway"}:
        values = values["gateway"]
    return config_from_mapping(values, source=str(path))
