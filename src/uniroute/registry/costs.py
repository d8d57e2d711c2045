"""Model prices and the expected per-query cost the router trades off against error.

A model is priced either per query, or per 1,000 input and per 1,000 output tokens. The router
needs one number per model, so token prices are turned into an *expected* per-query cost:

    cost = mean_input_tokens / 1000 * cost_per_1k_input
         + expected_output_tokens / 1000 * cost_per_1k_output

``mean_input_tokens`` is measured on the representative prompts with the usual rough estimate of
four characters per token (:data:`CHARS_PER_TOKEN`): no tokenizer is shared by every model, and
the estimate only has to rank models by price, not bill them. ``expected_output_tokens`` is set
per model (default :data:`DEFAULT_OUTPUT_TOKENS`) because answer length depends on the model and
the workload: a multiple-choice workload answers in a few tokens, a chat workload in hundreds.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from uniroute._checks import non_negative_number
from uniroute.errors import DataError, UsageError

#: Rough characters per token used to estimate prompt length without a tokenizer.
CHARS_PER_TOKEN = 4.0
#: Output length assumed for token-priced models when none is given.
DEFAULT_OUTPUT_TOKENS = 256
#: Prices per 1M tokens are this many times the stored prices per 1k tokens.
PER_1M_OVER_PER_1K = 1000.0
#: A price this many times above or below the pool's median cost per query is worth a warning.
OUTLIER_RATIO = 100.0


def _check_price(value: float | None, label: str) -> float | None:
    return None if value is None else non_negative_number(value, label, DataError)


@dataclass(frozen=True)
class ModelCost:
    """How a model is priced: per query, or per 1k input and output tokens (exactly one of them)."""

    per_query: float | None = None
    per_1k_input: float | None = None
    per_1k_output: float | None = None
    expected_output_tokens: float = DEFAULT_OUTPUT_TOKENS

    def __post_init__(self) -> None:
        for label in ("per_query", "per_1k_input", "per_1k_output"):
            object.__setattr__(self, label, _check_price(getattr(self, label), f"cost {label}"))
        tokens = _check_price(self.expected_output_tokens, "expected_output_tokens")
        object.__setattr__(self, "expected_output_tokens", tokens)
        by_token = self.per_1k_input is not None or self.per_1k_output is not None
        if self.per_query is not None and by_token:
            raise DataError("give a per-query cost or per-1k-token costs, not both")
        if self.per_query is None and not by_token:
            raise DataError(
                "no cost given: set a per-query cost or per-1k input/output token costs"
            )
        if by_token and (self.per_1k_input is None or self.per_1k_output is None):
            raise DataError("per-1k-token pricing needs both the input and the output price")

    @property
    def is_per_token(self) -> bool:
        """True when the model is priced per token rather than per query."""
        return self.per_query is None

    def _token_prices(self) -> tuple[float, float]:
        """(per 1k input, per 1k output) of a token-priced model; ``__post_init__`` ensures both."""
        if self.per_1k_input is None or self.per_1k_output is None:
            raise DataError("per-1k-token pricing needs both the input and the output price")
        return self.per_1k_input, self.per_1k_output

    def per_query_cost(self, mean_input_tokens: float) -> float:
        """Expected cost of one query whose prompt has ``mean_input_tokens`` tokens."""
        if self.per_query is not None:
            return self.per_query
        tokens = non_negative_number(mean_input_tokens, "mean_input_tokens", UsageError)
        per_1k_input, per_1k_output = self._token_prices()
        return tokens / 1000.0 * per_1k_input + self.expected_output_tokens / 1000.0 * per_1k_output

    def describe(self) -> str:
        """Short human-readable price, e.g. '0.002/query' or '0.5/1k in + 1.5/1k out (500/1M
        in + 1500/1M out, ~256 output tokens)'."""
        if self.per_query is not None:
            return f"{self.per_query:g}/query"
        per_1k_input, per_1k_output = self._token_prices()
        return (
            f"{per_1k_input:g}/1k in + {per_1k_output:g}/1k out "
            f"({per_1k_input * PER_1M_OVER_PER_1K:g}/1M in + "
            f"{per_1k_output * PER_1M_OVER_PER_1K:g}/1M out, "
            f"~{self.expected_output_tokens:g} output tokens)"
        )


def per_1k_price(per_1k: float | None, per_1m: float | None, side: str) -> float | None:
    """A token price per 1k tokens from one given per 1k or per 1M (not both) for ``side``
    ("input" or "output"); None when neither is given."""
    if per_1k is not None and per_1m is not None:
        raise DataError(f"give the {side} price per 1k tokens or per 1M tokens, not both")
    if per_1m is not None:
        return non_negative_number(per_1m, f"cost per 1M {side} tokens", DataError) / (
            PER_1M_OVER_PER_1K
        )
    return per_1k


def price_warning(name: str, query_cost: float, others: Mapping[str, float]) -> str | None:
    """A warning when a model's cost per query lies ``OUTLIER_RATIO`` times or more above or
    below the median of the other models' (paid) costs — most often a price per 1M tokens
    given as per 1k, or per token given as per query; None otherwise. A $0 model (self-hosted)
    is never an outlier."""
    paid = [cost for other, cost in others.items() if other != name and cost > 0]
    if query_cost <= 0 or not paid:
        return None
    median = statistics.median(paid)
    ratio = query_cost / median
    if 1 / OUTLIER_RATIO < ratio < OUTLIER_RATIO:
        return None
    side = "above" if ratio > 1 else "below"
    return (
        f"model {name!r}: ~{query_cost:.6g} per query is {max(ratio, 1 / ratio):,.0f}x {side} "
        f"the median of the other {len(paid)} paid models ({median:.6g}): check the unit (a "
        f"price per 1M tokens given per 1k tokens is 1,000x too high)"
    )


def estimate_tokens(text: str) -> float:
    """Token count estimated from the text length (see :data:`CHARS_PER_TOKEN`)."""
    return len(text) / CHARS_PER_TOKEN


def mean_input_tokens(texts: Iterable[str]) -> float:
    """Mean estimated token count of prompts; 0 for no prompts."""
    lengths = [estimate_tokens(text) for text in texts]
    return sum(lengths) / len(lengths) if lengths else 0.0
