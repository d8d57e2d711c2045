"""How a request is answered, from its ``model`` field and the policy headers.

* ``uniroute``: routed with the registry's calibrated default lambda;
* ``uniroute:lambda=L``: routed with trade-off ``L >= 0`` (error + L * cost per query);
* ``uniroute:max-cost=C``: routed to the most accurate model whose cost per query is <= ``C``;
* ``risk=Z`` added to either (``uniroute:risk=1.64``, ``uniroute:lambda=L,risk=Z``): decide on
  each estimated error plus ``Z`` standard deviations, so thin evidence is not taken for a low
  error (risk-averse routing);
* the name of a pool model: sent straight to that model (no routing, no fallback).

The headers ``x-uniroute-lambda``, ``x-uniroute-max-cost`` and ``x-uniroute-risk`` set the same
parameters for clients that cannot change the model name; a header and the model string may not
disagree, and lambda and max-cost may not be combined. They are ignored when the model is named
directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from uniroute.gateway.errors import ApiError

ROUTED_ALIAS = "uniroute"
LAMBDA_HEADER = "x-uniroute-lambda"
MAX_COST_HEADER = "x-uniroute-max-cost"
RISK_HEADER = "x-uniroute-risk"
_PARAM_NAMES = {"lambda": "lam", "max-cost": "max_cost", "risk": "risk"}


@dataclass(frozen=True)
class RoutingPolicy:
    """How a routed request trades error against cost; both None means the default lambda."""

    lam: float | None = None
    max_cost: float | None = None
    risk: float = 0.0

    def describe(self) -> str:
        """A short label for logs: ``default``, ``lambda=0.3``, ``max-cost=0.001,risk=1.64``."""
        if self.lam is not None:
            label = f"lambda={self.lam:g}"
        elif self.max_cost is not None:
            label = f"max-cost={self.max_cost:g}"
        else:
            label = "default"
        return f"{label},risk={self.risk:g}" if self.risk else label


@dataclass(frozen=True)
class ModelChoice:
    """The parsed ``model`` field: a routing policy, or a pool model named directly."""

    policy: RoutingPolicy | None = None
    direct_model: str | None = None

    @property
    def routed(self) -> bool:
        """True when the router picks the model."""
        return self.direct_model is None


def _parse_number(text: str, what: str, param: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ApiError(
            400,
            f"{what} must be a number, got {text!r}",
            param=param,
            code="invalid_routing_policy",
        ) from None
    if not math.isfinite(value) or value < 0:
        raise ApiError(
            400,
            f"{what} must be a finite number >= 0, got {text!r}",
            param=param,
            code="invalid_routing_policy",
        )
    return value


def is_routed(model: str) -> bool:
    """True when ``model`` asks the router to choose (``uniroute`` or ``uniroute:...``)."""
    return model == ROUTED_ALIAS or model.startswith(ROUTED_ALIAS + ":")


def parse_model_choice(model: str, headers: Mapping[str, str]) -> ModelChoice:
    """Read the ``model`` field (a non-empty string) and the policy headers (see the module
    docstring)."""
    if not is_routed(model):
        return ModelChoice(direct_model=model)
    values: dict[str, float] = {}
    if model != ROUTED_ALIAS:
        for part in model[len(ROUTED_ALIAS) + 1 :].split(","):
            key, sep, raw = part.partition("=")
            key = key.strip()
            if not sep or key not in _PARAM_NAMES:
                raise ApiError(
                    400,
                    f"unknown routing option {part!r} in model {model!r}; use "
                    "'uniroute:lambda=L', 'uniroute:max-cost=C' and/or 'risk=Z'",
                    param="model",
                    code="invalid_routing_policy",
                )
            if _PARAM_NAMES[key] in values:
                raise ApiError(
                    400,
                    f"{key} is given twice in model {model!r}",
                    param="model",
                    code="invalid_routing_policy",
                )
            values[_PARAM_NAMES[key]] = _parse_number(raw.strip(), key, "model")
    for header, key in (
        (LAMBDA_HEADER, "lam"),
        (MAX_COST_HEADER, "max_cost"),
        (RISK_HEADER, "risk"),
    ):
        header_value = headers.get(header)
        if header_value is None:
            continue
        value = _parse_number(header_value.strip(), f"header {header}", header)
        if key in values and values[key] != value:
            raise ApiError(
                400,
                f"header {header}: {header_value} contradicts the model field {model!r}",
                param=header,
                code="invalid_routing_policy",
            )
        values[key] = value
    if "lam" in values and "max_cost" in values:
        raise ApiError(
            400,
            "give either a lambda or a max-cost, not both",
            param="model",
            code="invalid_routing_policy",
        )
    return ModelChoice(policy=RoutingPolicy(**values))
