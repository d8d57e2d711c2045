"""How long each model takes to answer, as this replica sees it: the latency in the objective.

For every model the gateway calls it keeps an exponentially weighted moving average (EWMA, the
newest answer weighing ``alpha``) of the seconds to the first byte of the answer (for a stream,
its headers and first event; for a plain answer, the whole of it) and of the seconds to the full
answer, from the upstream calls it makes itself (each replica its own, as with the breakers).
A model this replica has not called yet counts its latency measured at onboarding (the median
seconds per answer, in its registry record), and one with neither the median of the others'
(``Router.route_embeddings``), so an unknown model is neither favoured nor shunned.
"""

from __future__ import annotations

import math
import threading

from uniroute.deployment import Snapshot

#: Weight of the newest answer in the moving averages.
ALPHA = 0.2


class LatencyBoard:
    """Per model: EWMA seconds to the first byte and to the full answer."""

    def __init__(self, alpha: float = ALPHA) -> None:
        self.alpha = float(alpha)
        self._first: dict[str, float] = {}
        self._total: dict[str, float] = {}
        self._lock = threading.Lock()

    def observe(self, model: str, first_byte_s: float, total_s: float) -> None:
        """One answer of ``model``: its seconds to the first byte and to the last."""
        if not (math.isfinite(first_byte_s) and math.isfinite(total_s)):
            return
        with self._lock:
            for averages, value in ((self._first, first_byte_s), (self._total, total_s)):
                previous = averages.get(model)
                averages[model] = (
                    value if previous is None else previous + self.alpha * (value - previous)
                )

    def expected(self, snapshot: Snapshot) -> dict[str, float]:
        """Expected seconds to a full answer of each model of the snapshot that has a figure:
        this replica's average, else its onboarding measurement."""
        with self._lock:
            seen = dict(self._total)
        expected = {}
        for record in snapshot.records:
            value = seen.get(record.name, record.latency_s)
            if value is not None:
                expected[record.name] = value
        return expected

    def to_dict(self) -> dict[str, dict[str, float]]:
        """The averages by model, for ``/admin/pool``."""
        with self._lock:
            return {
                model: {"first_byte_s": self._first[model], "total_s": self._total[model]}
                for model in sorted(self._total)
            }
