"""Router specs of an evaluation: an estimator name, optionally with a Psi-prior variant.

``--routers`` takes labels ``NAME`` or ``NAME:PSI_PRIOR``, e.g. ``uniroute-kmeans`` (its default
prior, the population prior) and ``uniroute-kmeans:own-mean`` (the same estimator with
``psi_prior="own-mean"``) in one run. Every label is fitted and scored on the same splits, so two
variants pair per trial; results are keyed by the label. Only estimators that take a
``psi_prior`` parameter accept a variant.

Parameters (``router_params``) keyed by the estimator name apply to every variant of it; those
keyed by a label apply to that label only and win. The variant sets ``psi_prior`` last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from uniroute.errors import RouterError
from uniroute.routers import ESTIMATORS
from uniroute.routers.uniroute_kmeans import PSI_PRIORS

#: Separates an estimator name from its variant in a router label.
VARIANT_SEPARATOR = ":"
#: The Psi prior that counts as "with the prior"; its partner "without" is ``WITHOUT_PRIOR``.
WITH_PRIOR = "population"
WITHOUT_PRIOR = "own-mean"


@dataclass(frozen=True)
class RouterSpec:
    """One evaluated router: its ``label`` (results key), estimator ``name`` and parameters.

    ``explicit_params`` are the parameters the user passed (``router_params`` for the name or
    the label), ``variant`` the Psi prior named in the label (None without one).
    """

    label: str
    name: str
    variant: str | None = None
    explicit_params: Mapping[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> dict[str, Any]:
        """Keyword arguments of ``make_estimator``: explicit parameters, then the variant."""
        params = dict(self.explicit_params)
        if self.variant is not None:
            params["psi_prior"] = self.variant
        return params

    @property
    def psi_prior(self) -> str | None:
        """The Psi prior this router fits with (its default if unset); None if it has none."""
        if "psi_prior" not in ESTIMATORS[self.name]._param_names():
            return None
        if self.variant is not None:
            return self.variant
        if "psi_prior" in self.explicit_params:
            return str(self.explicit_params["psi_prior"])
        return str(ESTIMATORS[self.name]().get_params()["psi_prior"])

    @property
    def uses_defaults(self) -> bool:
        """True when nothing but the variant was set, so it selects its own K like the default."""
        return not {k for k in self.explicit_params if k != "psi_prior"}


def parse_router_label(label: str) -> tuple[str, str | None]:
    """``"uniroute-kmeans:own-mean"`` -> ``("uniroute-kmeans", "own-mean")``; checks both parts."""
    name, separator, variant = label.strip().partition(VARIANT_SEPARATOR)
    if name not in ESTIMATORS:
        raise RouterError(f"unknown router {name!r}; valid names: {', '.join(ESTIMATORS)}")
    if not separator:
        return name, None
    if "psi_prior" not in ESTIMATORS[name]._param_names():
        raise RouterError(
            f"router label {label!r}: {name!r} has no Psi prior, so it takes no ':variant'"
        )
    if variant not in PSI_PRIORS:
        raise RouterError(
            f"router label {label!r}: unknown Psi prior {variant!r}; use one of {PSI_PRIORS}"
        )
    return name, variant


def router_specs(
    labels: Sequence[str], router_params: Mapping[str, Mapping[str, Any]] | None = None
) -> list[RouterSpec]:
    """The specs of these labels, in order (a repeated label fails)."""
    router_params = dict(router_params or {})
    labels = [label.strip() for label in labels]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise RouterError(f"router label(s) {repeated} given more than once")
    specs = []
    for label in labels:
        name, variant = parse_router_label(label)
        params = {**router_params.get(name, {}), **(router_params.get(label, {}) or {})}
        if variant is not None and params.get("psi_prior", variant) != variant:
            raise RouterError(
                f"router {label!r}: router_params set psi_prior={params['psi_prior']!r}, "
                f"the label says {variant!r}"
            )
        if variant is not None:
            params.pop("psi_prior", None)
        specs.append(RouterSpec(label, name, variant, params))
    return specs


def prior_partners(specs: Sequence[RouterSpec]) -> dict[str, str]:
    """Label with the population prior -> label of the same estimator without it (own-mean).

    Only pairs whose other parameters are equal, so the comparison isolates the prior.
    """
    partners: dict[str, str] = {}
    for spec in specs:
        if spec.psi_prior != WITH_PRIOR:
            continue
        for other in specs:
            if (
                other.name == spec.name
                and other.psi_prior == WITHOUT_PRIOR
                and _without_prior(other.explicit_params) == _without_prior(spec.explicit_params)
            ):
                partners[spec.label] = other.label
                break
    return partners


def _without_prior(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in params.items() if k != "psi_prior"}
