"""The onboarding answer cache kept in the registry, shared by every process that opens it.

The same rows and rules as ``uniroute.onboarding.answer_cache.AnswerCache`` (a file), in the
registry's ``answer_cache`` table: an onboarding job that a gateway replica began and another
resumes, or a ``uniroute models add --onboard`` run again after a kill, asks the endpoint only
the prompts whose answers are not committed yet. Each answer is its own short write, outside
the pool's revision: caching answers changes nothing that is routed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from uniroute.onboarding.answer_cache import (
    SELECT_ANSWERS,
    UPSERT_ANSWER,
    answer_row,
    normalise_endpoint,
    selection,
    still_valid,
)
from uniroute.registry.backend import Backend

TABLE = "answer_cache"


class RegistryAnswerCache:
    """Raw answers of endpoints to representative prompts, in a registry (an ``AnswerStore``)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend

    def get_many(
        self,
        model: str,
        endpoint: str,
        prompts: Iterable[tuple[str, str]],
        settings: Mapping[str, object],
    ) -> dict[str, str]:
        """Cached answers {prompt_id: answer} for (prompt_id, prompt_text) pairs still valid."""
        with self._backend.read() as connection:
            rows = connection.execute(
                SELECT_ANSWERS.format(table=TABLE), (model, normalise_endpoint(endpoint))
            ).fetchall()
        return still_valid(rows, prompts, settings)

    def put(
        self,
        model: str,
        endpoint: str,
        prompt_id: str,
        prompt_text: str,
        answer: str,
        settings: Mapping[str, object],
    ) -> None:
        """Store (or replace) one answer; committed before returning."""
        row = answer_row(model, endpoint, prompt_id, prompt_text, answer, settings)
        with self._backend.write() as connection:
            connection.execute(UPSERT_ANSWER.format(table=TABLE), row)

    def count(self, model: str | None = None, endpoint: str | None = None) -> int:
        """Number of cached answers, optionally for one model and/or endpoint."""
        query, params = selection("SELECT COUNT(*)", TABLE, model, endpoint)
        with self._backend.read() as connection:
            return int(connection.execute(query, params).fetchone()[0])

    def clear(self, model: str, endpoint: str | None = None) -> int:
        """Forget a model's answers (from one endpoint, or all); returns how many were removed."""
        query, params = selection("DELETE", TABLE, model, endpoint)
        with self._backend.write() as connection:
            return int(connection.execute(query, params).rowcount)
