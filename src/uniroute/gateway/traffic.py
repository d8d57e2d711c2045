"""The gateway's recent traffic, minute by minute, for the dashboard's traffic view.

Prometheus counters only ever grow, so "the last hour" needs a scraper; an operator without one
still wants to see it. :class:`TrafficHistory` keeps one bucket per minute for the last day
(at most 1,440 small dicts) of what :class:`~uniroute.gateway.metrics.GatewayMetrics` counts:
completion requests, errors, fallbacks, answers per model, estimated cost and saving, and
requests and spend per virtual key. It is per replica, like the metrics it mirrors, and lives
in memory only: a restart starts it afresh (``since`` says when).

Every method runs on the event loop (the metrics are written there), so no lock is taken.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: Completion endpoints the traffic view counts (``/v1/route`` asks for a decision only).
ANSWERING_ENDPOINTS = frozenset({"chat", "completions"})
BUCKET_S = 60
#: The windows the view offers: seconds covered and seconds per bucket shown.
WINDOWS: dict[str, tuple[int, int]] = {"hour": (3600, 60), "day": (86_400, 900)}
KEPT_S = max(span for span, _ in WINDOWS.values())


@dataclass
class _Bucket:
    requests: int = 0
    errors: int = 0
    fallbacks: int = 0
    cost: float = 0.0
    saving: float = 0.0
    by_model: dict[str, int] = field(default_factory=dict)
    # key id -> [team, requests, spend]
    by_key: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, other: _Bucket) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.fallbacks += other.fallbacks
        self.cost += other.cost
        self.saving += other.saving
        for model, count in other.by_model.items():
            self.by_model[model] = self.by_model.get(model, 0) + count
        for key, (team, requests, spend) in other.by_key.items():
            entry = self.by_key.setdefault(key, [team, 0, 0.0])
            entry[1] += requests
            entry[2] += spend

    def to_dict(self, start: float) -> dict[str, Any]:
        return {
            "t": start,
            "requests": self.requests,
            "errors": self.errors,
            "fallbacks": self.fallbacks,
            "cost": round(self.cost, 9),
            "saving": round(self.saving, 9),
            "by_model": dict(sorted(self.by_model.items())),
        }


class TrafficHistory:
    """Per-minute counts of the last day of this replica's traffic."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.since = clock()
        self._buckets: dict[int, _Bucket] = {}
        self._current_minute = -1
        self._current = _Bucket()

    def _bucket(self) -> _Bucket:
        minute = int(self.clock() // BUCKET_S)
        if minute != self._current_minute:
            self._current_minute = minute
            self._current = self._buckets.setdefault(minute, _Bucket())
            oldest = minute - KEPT_S // BUCKET_S
            for old in [m for m in self._buckets if m <= oldest]:
                del self._buckets[old]
        return self._current

    def count_request(self, endpoint: str, model: str, status: str) -> None:
        """One finished request: answered by ``model`` (2xx) or failed (4xx/5xx)."""
        if endpoint not in ANSWERING_ENDPOINTS:
            return
        bucket = self._bucket()
        bucket.requests += 1
        if status.startswith("2"):
            if model and model != "none":
                bucket.by_model[model] = bucket.by_model.get(model, 0) + 1
        else:
            bucket.errors += 1

    def count_fallback(self) -> None:
        """One request answered by a model other than its first choice."""
        self._bucket().fallbacks += 1

    def add_cost(self, cost: float, saving: float | None) -> None:
        """Estimated cost of an answer and its saving against the reference model."""
        bucket = self._bucket()
        bucket.cost += cost
        if saving is not None:
            bucket.saving += saving

    def count_key(self, key: str, team: str, requests: int = 0, spend: float = 0.0) -> None:
        """Requests admitted and spend settled for one virtual key."""
        entry = self._bucket().by_key.setdefault(key, [team, 0, 0.0])
        entry[1] += requests
        entry[2] += spend

    def window(self, name: str) -> dict[str, Any]:
        """The last hour or day: buckets (oldest first), totals, and per key and team."""
        if name not in WINDOWS:
            raise ValueError(f"unknown window {name!r}; use one of {sorted(WINDOWS)}")
        span, step = WINDOWS[name]
        now = self.clock()
        per_step = step // BUCKET_S
        last = int(now // step)
        first = last - span // step + 1
        shown = [_Bucket() for _ in range(last - first + 1)]
        totals = _Bucket()
        for minute, bucket in self._buckets.items():
            slot = minute // per_step - first
            if 0 <= slot < len(shown):
                shown[slot].add(bucket)
                totals.add(bucket)
        teams: dict[str, list[Any]] = {}
        for _, (team, requests, spend) in totals.by_key.items():
            entry = teams.setdefault(team, [0, 0.0])
            entry[0] += requests
            entry[1] += spend
        return {
            "window": name,
            "bucket_s": step,
            "now": now,
            "since": self.since,
            "buckets": [b.to_dict(float((first + i) * step)) for i, b in enumerate(shown)],
            "totals": {k: v for k, v in totals.to_dict(now).items() if k != "t"},
            "keys": [
                {"key": key, "team": team, "requests": requests, "spend": round(spend, 9)}
                for key, (team, requests, spend) in sorted(totals.by_key.items())
            ],
            "teams": [
                {"team": team, "requests": requests, "spend": round(spend, 9)}
                for team, (requests, spend) in sorted(teams.items())
            ],
        }
