"""Session-stable routing: the turns of one conversation stay on the model that answered before.

A conversation that changes model mid-way reads as a different assistant each turn. So a turn
whose conversation was answered by ``previous`` goes to ``previous`` again, unless this turn's
decision prefers a model whose estimated error is lower than ``previous``'s by at least
``margin``: then it escalates to that model. It never moves to a model estimated worse (a
cheaper pick for an easy follow-up does not downgrade the conversation), nor to one better by
less than the margin. When ``previous`` cannot be called now (no longer in the pool, no
endpoint, over the request's budget), the turn is routed afresh.
"""

from __future__ import annotations

from dataclasses import dataclass

from uniroute.deployment.decision import Decision

#: What the session rule did with a turn (``SessionChoice.rule``).
NEW, KEPT, ESCALATED, UNAVAILABLE = "new", "kept", "escalated", "previous_unavailable"


@dataclass(frozen=True)
class SessionChoice:
    """The models to try for one turn, best first; what the session rule did; the model that
    answered the conversation before, and the one the decision alone picked."""

    ranking: list[str]
    rule: str
    previous: str | None
    routed: str

    @property
    def changed_pick(self) -> bool:
        """Whether the rule sends the turn elsewhere than the decision alone would."""
        return bool(self.ranking) and self.ranking[0] != self.routed


def apply_session(decision: Decision, previous: str | None, margin: float) -> SessionChoice:
    """The turn's ranking under the session rule (see the module doc)."""
    ranking = decision.servable_ranking
    if previous is None:
        return SessionChoice(ranking, NEW, None, decision.model)
    if previous not in ranking:
        return SessionChoice(ranking, UNAVAILABLE, previous, decision.model)
    if decision.model == previous:
        return SessionChoice(ranking, KEPT, previous, decision.model)
    errors = decision.estimated_errors
    if errors[decision.model] <= errors[previous] - margin:
        return SessionChoice(ranking, ESCALATED, previous, decision.model)
    kept = [previous, *(name for name in ranking if name != previous)]
    return SessionChoice(kept, KEPT, previous, decision.model)
