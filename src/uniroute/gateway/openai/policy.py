"""How a request is answered, from its ``model`` field and the policy headers.

* ``uniroute``: routed with the registry's calibrated default lambda;
* ``uniroute:lambda=L``: routed with trade-off ``L >= 0`` (error + L * cost per query);
* ``uniroute:max-cost=C``: routed to the most accurate model whose cost per query is <= ``C``;
* ``latency=MU`` added to any of these (``uniroute:latency=0.05``,
  ``uniroute:lambda=L,latency=MU``): the objective becomes error + L * cost + MU * expected
  seconds per answer (the latency each model showed on this replica's traffic, or at
  onboarding); without it, the default policy's latency weight (0 unless calibrated with one);
* ``risk=Z`` added to either (``uniroute:risk=1.64``, ``uniroute:lambda=L,risk=Z``): decide on
  each estimated error plus ``Z`` standard deviations, so thin evidence is not taken for a low
  error (risk-averse routing);
* ``verify`` added to the default or a lambda (``uniroute:verify``, ``uniroute:verify,lambda=L``):
  verify and escalate: the router's plan for the prompt may ask two cheap models, answer with
  the first when their answers agree and ask a stronger model only when they do not
  (:mod:`uniroute.gateway.openai.verify`);
* the name of a pool model: sent straight to that model (no routing, no fallback).

The headers ``x-uniroute-lambda``, ``x-uniroute-max-cost``, ``x-uniroute-latency``,
``x-uniroute-risk`` and
``x-uniroute-verify`` (``true`` / ``false``) set the same parameters for clients that cannot
change the model name; a header and the model string may not
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
LATENCY_HEADER = "x-uniroute-latency"
VERIFY_HEADER = "x-uniroute-verify"
VERIFY_OPTION = "verify"
_TRUE, _FALSE = frozenset({"true", "1", "on", "yes"}), frozenset({"false", "0", "off", "no"})
_PARAM_NAMES = {
    "lambda": "lam",
    "max-cost": "max_cost",
    "risk": "risk",
    "latency": "latency_weight",
}


@dataclass(frozen=True)
class RoutingPolicy:
    """How a routed request trades error against cost; both None means the default lambda."""

    lam: float | None = None
    max_cost: float | None = None
    risk: float = 0.0
    verify: bool = False
    #: mu, the weight of expected seconds per answer (None: the default policy's).
    latency_weight: float | None = None

    def describe(self) -> str:
        """A short label for logs: ``default``, ``lambda=0.3``, ``max-cost=0.001,risk=1.64``,
        ``verify,lambda=0.3``."""
        if self.lam is not None:
            label = f"lambda={self.lam:g}"
        elif self.max_cost is not None:
            label = f"max-cost={self.max_cost:g}"
        else:
            label = "default"
        if self.risk:
            label += f",risk={self.risk:g}"
        if self.latency_weight is not None:
            label += f",latency={self.latency_weight:g}"
        return f"{VERIFY_OPTION},{label}" if self.verify else label


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
    verify: bool | None = None
    if model != ROUTED_ALIAS:
        for part in model[len(ROUTED_ALIAS) + 1 :].split(","):
            key, sep, raw = part.partition("=")
            key = key.strip()
            if key == VERIFY_OPTION and not sep:
                if verify:
                    raise ApiError(
                        400,
                        f"verify is given twice in model {model!r}",
                        param="model",
                        code="invalid_routing_policy",
                    )
                verify = True
                continue
            if not sep or key not in _PARAM_NAMES:
                raise ApiError(
                    400,
                    f"unknown routing option {part!r} in model {model!r}; use "
                    "'uniroute:lambda=L', 'uniroute:max-cost=C', 'latency=MU', 'risk=Z' and/or "
                    "'verify'",
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
        (LATENCY_HEADER, "latency_weight"),
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
    header_verify = headers.get(VERIFY_HEADER)
    if header_verify is not None:
        flag = header_verify.strip().lower()
        if flag not in _TRUE | _FALSE:
            raise ApiError(
                400,
                f"header {VERIFY_HEADER} must be true or false, got {header_verify!r}",
                param=VERIFY_HEADER,
                code="invalid_routing_policy",
            )
        if verify and flag in _FALSE:
            raise ApiError(
                400,
                f"header {VERIFY_HEADER}: {header_verify} contradicts the model field {model!r}",
                param=VERIFY_HEADER,
                code="invalid_routing_policy",
            )
        verify = flag in _TRUE
    if "lam" in values and "max_cost" in values:
        raise ApiError(
            400,
            "give either a lambda or a max-cost, not both",
            param="model",
            code="invalid_routing_policy",
        )
    if verify and ("max_cost" in values or values.get("risk")):
        raise ApiError(
            400,
            "verify trades error against cost with a lambda only; drop max-cost and risk, or "
            "drop verify",
            param="model",
            code="invalid_routing_policy",
        )
    return ModelChoice(policy=RoutingPolicy(**values, verify=bool(verify)))
