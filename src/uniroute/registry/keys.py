"""Virtual client keys kept in the registry: who may call the gateway, within which limits.

A client key is a row of ``client_keys``: its id (shown everywhere, never secret), the SHA-256
of its secret (the secret itself is returned once, by ``create``, and stored nowhere), a name,
an optional team, the models it may use (NULL: every model), and its limits (requests per
minute, spend per UTC day and per UTC month, in the pool's price unit, USD). What a key used is
counted in ``key_usage``, one row per key and period (``minute:2026-12-02T10:15``,
``day:2026-12-02``, ``month:2026-12``).

**The reservation rule.** A request on a key with limits first *reserves*, in one write
transaction (writers take turns, on SQLite and on PostgreSQL alike, so replicas sharing the
registry see each other's reservations): it is refused if the key already used its requests of
this minute, or if its spend of the day or month, counting the estimates reserved by requests
still in flight, has reached the limit; otherwise the request is counted and its estimated cost
added to the day's and the month's spend. When the answer is in, the reservation is *settled*:
``spend = spend + (actual - estimate)``, a relative update, so concurrent settlements never
lose one another. A limit is therefore overshot by at most the cost of the requests admitted
while it was still below it: the last admitted request's own estimate, plus whatever requests
in flight at that moment cost beyond their estimates. Once every request has settled, the
spend is exactly the sum of the actual costs. A reservation that is never settled (the process
died mid-request) stays charged at its estimate.

A key without limits is charged once, after its answer (``charge``): nothing to check before.
Old ``minute:`` rows of a key are deleted when its next minute starts; day and month rows are
kept as the key's history.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import math
import re
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from uniroute.errors import KeyNotFoundError, RegistryError
from uniroute.registry.backend import Backend
from uniroute.registry.records import check_model_name, looks_like_secret
from uniroute.registry.schema import now

#: Every secret starts with this, so a leaked one is recognisable (and scanners can match it).
SECRET_PREFIX = "ur-"
#: Random bytes in a secret (url-safe base64 after the prefix).
SECRET_BYTES = 32
#: The periods usage is counted in.
MINUTE, DAY, MONTH = "minute", "day", "month"
#: Why a reservation was refused.
RATE_LIMITED, DAILY_BUDGET, MONTHLY_BUDGET = "rate_limit", "daily_budget", "monthly_budget"

_COLUMN_NAMES = (
    "id", "key_hash", "name", "team", "allowed_models", "rpm_limit", "daily_spend_limit",
    "monthly_spend_limit", "revoked", "created_at", "revoked_at",
)  # fmt: skip
_COLUMNS = ", ".join(_COLUMN_NAMES)
# Teams are metric labels: short and plain, so a label can neither explode nor mislead.
_TEAM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_MAX_NAME_CHARS = 200
_MAX_ALLOWED_MODELS = 1000
# An upsert both dialects read: a new row, or the period's counters moved by the same amounts.
_ADD_USAGE = (
    "INSERT INTO key_usage (key_id, period, spend, requests) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (key_id, period) DO UPDATE SET spend = key_usage.spend + excluded.spend, "
    "requests = key_usage.requests + excluded.requests"
)


def hash_secret(secret: str) -> str:
    """The SHA-256 (hex) a secret is stored and looked up by."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def new_secret() -> str:
    """A fresh secret: ``ur-`` and 32 random bytes, url-safe."""
    return SECRET_PREFIX + secrets.token_urlsafe(SECRET_BYTES)


@dataclass(frozen=True)
class ClientKey:
    """One client key as the registry holds it (never its secret)."""

    id: str
    name: str
    team: str | None
    allowed_models: tuple[str, ...] | None
    rpm_limit: int | None
    daily_spend_limit: float | None
    monthly_spend_limit: float | None
    revoked: bool
    created_at: str
    revoked_at: str | None

    @property
    def has_limits(self) -> bool:
        """Whether a request must reserve before it is made (some limit to check)."""
        return (
            self.rpm_limit is not None
            or self.daily_spend_limit is not None
            or self.monthly_spend_limit is not None
        )

    def allows(self, model: str) -> bool:
        """Whether the key may use ``model``."""
        return self.allowed_models is None or model in self.allowed_models

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the admin API and ``uniroute keys list --json``."""
        return {
            "id": self.id,
            "name": self.name,
            "team": self.team,
            "allowed_models": None if self.allowed_models is None else list(self.allowed_models),
            "rpm_limit": self.rpm_limit,
            "daily_spend_limit": self.daily_spend_limit,
            "monthly_spend_limit": self.monthly_spend_limit,
            "revoked": self.revoked,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
        }


@dataclass(frozen=True)
class CreatedKey:
    """A new key and its secret, which is shown this once and stored nowhere."""

    key: ClientKey
    secret: str


@dataclass(frozen=True)
class UsageRow:
    """What one key used in one period."""

    key_id: str
    period: str
    spend: float
    requests: int

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"period": self.period, "spend": self.spend, "requests": self.requests}


@dataclass(frozen=True)
class Periods:
    """The minute, day and month a moment falls in (UTC), as ``key_usage`` names them."""

    minute: str
    day: str
    month: str
    #: Seconds until the next minute, day and month begin (what ``retry-after`` says).
    to_next: dict[str, float]

    @classmethod
    def at(cls, moment: datetime | None = None) -> Periods:
        """The periods of ``moment`` (default: now)."""
        moment = (moment or datetime.now(UTC)).astimezone(UTC)
        minute_start = moment.replace(second=0, microsecond=0)
        day_start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        month_start = day_start.replace(day=1)
        next_month = (month_start + timedelta(days=32)).replace(day=1)
        return cls(
            minute=f"{MINUTE}:{minute_start:%Y-%m-%dT%H:%M}",
            day=f"{DAY}:{day_start:%Y-%m-%d}",
            month=f"{MONTH}:{month_start:%Y-%m}",
            to_next={
                MINUTE: (minute_start + timedelta(minutes=1) - moment).total_seconds(),
                DAY: (day_start + timedelta(days=1) - moment).total_seconds(),
                MONTH: (next_month - moment).total_seconds(),
            },
        )


@dataclass(frozen=True)
class Reservation:
    """The outcome of ``reserve``: admitted (with what was charged where), or refused."""

    key_id: str
    estimate: float
    #: The day and month periods the estimate was added to (settled there, even after midnight).
    periods: tuple[str, ...]
    #: None when admitted; else RATE_LIMITED, DAILY_BUDGET or MONTHLY_BUDGET.
    refused: str | None = None
    #: When refused: seconds until the limit that refused it resets.
    retry_after_s: float = 0.0
    #: When refused: the limit and what was used against it.
    limit: float | None = None
    used: float | None = None

    @property
    def admitted(self) -> bool:
        """Whether the request may go ahead."""
        return self.refused is None


# ---------------------------------------------------------------------------- checks
def check_key_name(name: Any) -> str:
    """A key's name: non-empty printable text, at most 200 characters, not a secret."""
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise RegistryError(f"key name must be non-empty text without surrounding spaces: {name!r}")
    if len(name) > _MAX_NAME_CHARS or not name.isprintable():
        raise RegistryError(f"key name must be printable and at most {_MAX_NAME_CHARS} characters")
    if _looks_pasted(name):
        # Never echoed: a pasted secret must not end up in a message or a log.
        raise RegistryError("key name looks like a secret; give a plain name")
    return name


def _looks_pasted(name: str) -> bool:
    """Whether a name looks like a pasted key: one of ours, or a long random-looking run."""
    if name.startswith(SECRET_PREFIX) and len(name) >= 20:
        return True
    for word in name.split():
        if looks_like_secret(word) and len(word) >= 24 and any(c.isdigit() for c in word):
            return True
        if any(word.startswith(p) for p in ("sk-", "sk_", "pk_", "rk_")) and len(word) >= 20:
            return True
    return False


def check_team(team: Any) -> str | None:
    """A team name (a metric label): letters, digits, '.', '_', '-', up to 64, or None."""
    if team is None:
        return None
    if not isinstance(team, str) or not _TEAM.fullmatch(team):
        shown = repr(team)[:80]
        raise RegistryError(
            f"team must be 1-64 letters, digits, '.', '_' or '-' (starting with a letter or "
            f"digit), got {shown}"
        )
    return team


def check_allowed_models(models: Sequence[str] | None) -> tuple[str, ...] | None:
    """The models a key may use, without duplicates, or None for every model."""
    if models is None:
        return None
    if isinstance(models, str) or not isinstance(models, Sequence):
        raise RegistryError("allowed models must be a list of model names")
    names = tuple(dict.fromkeys(check_model_name(m, "allowed model name") for m in models))
    if not names:
        raise RegistryError("allowed models is empty: name at least one model, or leave it out")
    if len(names) > _MAX_ALLOWED_MODELS:
        raise RegistryError(f"at most {_MAX_ALLOWED_MODELS} allowed models per key")
    return names


def check_rpm(value: Any) -> int | None:
    """A requests-per-minute limit: a whole number >= 1, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RegistryError(f"rpm limit must be a whole number >= 1, got {repr(value)[:40]}")
    return value


def check_budget(value: Any, label: str) -> float | None:
    """A spend limit: a finite number > 0 (USD), or None."""
    if value is None:
        return None
    number = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = None
    if number is None or not math.isfinite(number) or number <= 0:
        raise RegistryError(f"{label} must be a finite number > 0, got {repr(value)[:40]}")
    return number


def _checked_amount(value: float, label: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number < 0:
        raise RegistryError(f"{label} must be a finite number >= 0, got {value!r}")
    return number


# ---------------------------------------------------------------------------- the store
class KeyStore:
    """The registry's ``client_keys`` and ``key_usage`` tables."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    # ------------------------------------------------------------------ keys
    def create(
        self,
        name: str,
        *,
        team: str | None = None,
        allowed_models: Sequence[str] | None = None,
        rpm_limit: int | None = None,
        daily_spend_limit: float | None = None,
        monthly_spend_limit: float | None = None,
    ) -> CreatedKey:
        """A new key; its secret is in the result, and only there."""
        name = check_key_name(name)
        team = check_team(team)
        models = check_allowed_models(allowed_models)
        rpm = check_rpm(rpm_limit)
        daily = check_budget(daily_spend_limit, "daily budget")
        monthly = check_budget(monthly_spend_limit, "monthly budget")
        secret = new_secret()
        key_id = f"key-{uuid.uuid4().hex[:16]}"
        created = now()
        with self._backend.write() as connection:
            connection.execute(
                f"INSERT INTO client_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, NULL)",
                (
                    key_id,
                    hash_secret(secret),
                    name,
                    team,
                    None if models is None else json.dumps(list(models)),
                    rpm,
                    daily,
                    monthly,
                    created,
                ),
            )
        return CreatedKey(self.get(key_id), secret)

    def get(self, key_id: str) -> ClientKey:
        """A key by id; KeyNotFoundError when there is none."""
        with self._backend.read() as connection:
            row = connection.execute(
                f"SELECT {_COLUMNS} FROM client_keys WHERE id = ?", (key_id,)
            ).fetchone()
        if row is None:
            raise KeyNotFoundError(f"no client key {str(key_id)[:80]!r}")
        return _key(row)

    def list(self) -> list[ClientKey]:
        """Every key (revoked ones too), oldest first."""
        with self._backend.read() as connection:
            rows = connection.execute(
                f"SELECT {_COLUMNS} FROM client_keys ORDER BY created_at, id"
            ).fetchall()
        return [_key(row) for row in rows]

    def lookup(self, secret: str) -> ClientKey | None:
        """The key a secret belongs to (revoked or not), or None."""
        with self._backend.query() as connection:
            row = connection.execute(
                f"SELECT {_COLUMNS} FROM client_keys WHERE key_hash = ?", (hash_secret(secret),)
            ).fetchone()
        return None if row is None else _key(row)

    def any_keys(self) -> bool:
        """Whether any key was ever created (a revoked one counts: the gateway stays closed)."""
        with self._backend.query() as connection:
            return connection.execute("SELECT 1 FROM client_keys LIMIT 1").fetchone() is not None

    def revoke(self, key_id: str) -> ClientKey:
        """Revoke a key (for good; revoking it again changes nothing); the key as it is now."""
        with self._backend.write() as connection:
            cursor = connection.execute(
                "UPDATE client_keys SET revoked = 1, revoked_at = ? WHERE id = ? AND revoked = 0",
                (now(), key_id),
            )
            changed = cursor.rowcount
        if not changed:
            self.get(key_id)  # KeyNotFoundError for an unknown id; else it was revoked already
        return self.get(key_id)

    # ------------------------------------------------------------------ usage
    def reserve(self, key_id: str, estimate: float, *, at: datetime | None = None) -> Reservation:
        """Check the key's limits and, if none is reached, count the request and reserve
        ``estimate`` (see the module doc); one write transaction."""
        estimate = _checked_amount(estimate, "estimated cost")
        periods = Periods.at(at)
        with self._backend.write() as connection:
            row = connection.execute(
                f"SELECT {_COLUMNS} FROM client_keys WHERE id = ?", (key_id,)
            ).fetchone()
            if row is None:
                raise KeyNotFoundError(f"no client key {str(key_id)[:80]!r}")
            key = _key(row)
            used = dict(
                (period, (float(spend), int(requests)))
                for period, spend, requests in connection.execute(
                    "SELECT period, spend, requests FROM key_usage "
                    "WHERE key_id = ? AND period IN (?, ?, ?)",
                    (key_id, periods.minute, periods.day, periods.month),
                ).fetchall()
            )
            refusal = _refusal(key, used, periods, estimate)
            if refusal is not None:
                return refusal
            if periods.minute not in used:
                # The first request of a new minute: the key's earlier minutes are done with.
                connection.execute(
                    "DELETE FROM key_usage WHERE key_id = ? AND period LIKE ? AND period < ?",
                    (key_id, f"{MINUTE}:%", periods.minute),
                )
            connection.execute(_ADD_USAGE, (key_id, periods.minute, 0.0, 1))
            for period in (periods.day, periods.month):
                connection.execute(_ADD_USAGE, (key_id, period, estimate, 1))
        return Reservation(key_id, estimate, (periods.day, periods.month))

    def settle(self, reservation: Reservation, actual: float) -> None:
        """Replace a reservation's estimate by the request's actual cost."""
        if not reservation.admitted:
            return
        delta = _checked_amount(actual, "actual cost") - reservation.estimate
        if delta == 0.0:
            return
        day, month = reservation.periods
        with self._backend.write() as connection:
            connection.execute(
                "UPDATE key_usage SET spend = spend + ? WHERE key_id = ? AND period IN (?, ?)",
                (delta, reservation.key_id, day, month),
            )

    def charge(self, key_id: str, amount: float, *, at: datetime | None = None) -> None:
        """Count one request and its cost at once (a key without limits: nothing to reserve)."""
        amount = _checked_amount(amount, "cost")
        periods = Periods.at(at)
        with self._backend.write() as connection:
            for period in (periods.day, periods.month):
                connection.execute(_ADD_USAGE, (key_id, period, amount, 1))

    def usage(self, key_id: str | None = None) -> builtins.list[UsageRow]:
        """The day and month rows of one key (KeyNotFoundError if unknown), or of every key."""
        sql = (
            "SELECT key_id, period, spend, requests FROM key_usage "
            "WHERE (period LIKE 'day:%' OR period LIKE 'month:%')"
        )
        parameters: tuple[str, ...] = ()
        if key_id is not None:
            self.get(key_id)
            sql += " AND key_id = ?"
            parameters = (key_id,)
        with self._backend.read() as connection:
            rows = connection.execute(sql + " ORDER BY key_id, period", parameters).fetchall()
        return [UsageRow(k, p, float(s), int(r)) for k, p, s, r in rows]

    def team_spend(self, period: str) -> dict[str | None, dict[str, float]]:
        """Spend and requests per team (None: keys without a team) in one period."""
        with self._backend.read() as connection:
            rows = connection.execute(
                "SELECT k.team, SUM(u.spend), SUM(u.requests) FROM key_usage u "
                "JOIN client_keys k ON k.id = u.key_id WHERE u.period = ? GROUP BY k.team",
                (period,),
            ).fetchall()
        return {team: {"spend": float(s or 0.0), "requests": int(r or 0)} for team, s, r in rows}


def _refusal(
    key: ClientKey,
    used: dict[str, tuple[float, int]],
    periods: Periods,
    estimate: float,
) -> Reservation | None:
    """The refusal of a request on ``key`` given its usage, or None when it is admitted."""

    def refused(reason: str, period: str, limit: float, amount: float) -> Reservation:
        return Reservation(
            key.id, estimate, (), refused=reason,
            retry_after_s=periods.to_next[period], limit=limit, used=amount,
        )  # fmt: skip

    if key.revoked:
        raise KeyNotFoundError(f"client key {key.id} is revoked")
    requests = used.get(periods.minute, (0.0, 0))[1]
    if key.rpm_limit is not None and requests >= key.rpm_limit:
        return refused(RATE_LIMITED, MINUTE, key.rpm_limit, requests)
    day = used.get(periods.day, (0.0, 0))[0]
    if key.daily_spend_limit is not None and day >= key.daily_spend_limit:
        return refused(DAILY_BUDGET, DAY, key.daily_spend_limit, day)
    month = used.get(periods.month, (0.0, 0))[0]
    if key.monthly_spend_limit is not None and month >= key.monthly_spend_limit:
        return refused(MONTHLY_BUDGET, MONTH, key.monthly_spend_limit, month)
    return None


def _key(row: Sequence[Any]) -> ClientKey:
    """The key of a row selected with ``_COLUMNS``."""
    (key_id, _hash, name, team, allowed, rpm, daily, monthly, revoked, created,
     revoked_at) = row  # fmt: skip
    models = None if allowed is None else tuple(str(m) for m in json.loads(allowed))
    return ClientKey(
        id=key_id,
        name=name,
        team=team,
        allowed_models=models,
        rpm_limit=None if rpm is None else int(rpm),
        daily_spend_limit=None if daily is None else float(daily),
        monthly_spend_limit=None if monthly is None else float(monthly),
        revoked=bool(revoked),
        created_at=str(created),
        revoked_at=None if revoked_at is None else str(revoked_at),
    )
