"""`uniroute route "text"`: print where a prompt goes and why."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from uniroute.cli.pool_options import add_location_arguments, artifact_path, registry_path

if TYPE_CHECKING:
    from uniroute.deployment import Decision
    from uniroute.registry.calibration import Policy


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `route` sub-command."""
    parser = subparsers.add_parser(
        "route",
        help="route a prompt and explain the decision",
        description=(
            "Route one prompt over the enabled models of the registry: each model's estimated "
            "error, cost and objective (error + lambda * cost), and the prompt's cluster. Without "
            "--lambda or --max-cost the calibrated default policy is used."
        ),
    )
    parser.add_argument("prompt", help="the prompt text")
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument("--lambda", dest="lam", type=float, help="cost trade-off lambda")
    choice.add_argument(
        "--max-cost", type=float, help="budget per query: the most accurate model within it"
    )
    parser.add_argument(
        "--risk",
        type=float,
        default=0.0,
        metavar="Z",
        help="decide on estimated error + Z standard deviations (risk-averse; default 0)",
    )
    parser.add_argument("--json", action="store_true", help="print the decision as JSON")
    add_location_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Route the prompt and print the decision."""
    from uniroute.deployment import Router

    router = Router.load(artifact_path(args), registry_path(args))
    prompt: str = args.prompt
    decision = router.route(prompt, lam=args.lam, max_cost=args.max_cost, risk=args.risk)
    if args.json:
        print(json.dumps(decision.to_dict(), indent=2))
        return 0
    # Nothing refreshed the router since it routed: this is the decision's snapshot.
    print(explain(decision, router.snapshot.policy))
    return 0


def explain(decision: Decision, policy: Policy | None) -> str:
    """Human-readable account of a decision: the policy, the cluster, and each model's numbers.

    ``policy`` is the default policy of the snapshot the decision was made over.
    """
    lines = [f"routed to: {decision.model}"]
    if decision.policy == "default" and policy is not None:
        lines.append(f"lambda = {decision.lam:.6g} (default policy: {policy.target.describe()})")
    elif decision.policy == "max_cost":
        lines.append(f"budget = {decision.max_cost:g} per query: most accurate model within it")
    else:
        lines.append(f"lambda = {decision.lam:.6g} ({decision.policy})")
    if decision.risk:
        lines.append(f"risk-averse: each error raised by {decision.risk:g} standard deviations")
    if decision.warning:
        lines.append(f"warning: {decision.warning}")
    if decision.cluster is not None:
        weights = decision.cluster_weights
        share = "" if weights is None else f", weight {weights[decision.cluster]:.2f}"
        lines.append(f"cluster {decision.cluster} of {len(weights or [])}{share}")
    interval = decision.error_interval
    if interval is not None:
        lines.append(
            f"estimated error {decision.estimated_error:.4f} (95% interval {interval[0]:.3f}-"
            f"{interval[1]:.3f}), from {decision.evidence} representative prompts in its cluster"
        )
    ranked = decision.ranking + decision.over_budget + decision.not_servable
    evidence = decision.evidence_by_model
    width = max(len(name) for name in ranked)
    header = f"  {'model':<{width}}  {'est. error':>10}  {'cost/query':>12}  {'objective':>10}"
    lines.append(header + ("  evidence" if evidence is not None else ""))
    for name in ranked:
        mark = "*" if name == decision.model else " "
        note = ""
        if name in decision.over_budget:
            note = "  over budget"
        elif name in decision.not_servable:
            note = "  not servable (no endpoint)"
        count = "" if evidence is None else f"  {evidence[name]:>8d}"
        lines.append(
            f"{mark} {name:<{width}}  {decision.estimated_errors[name]:>10.4f}  "
            f"{decision.costs[name]:>12.6g}  {decision.objectives[name]:>10.4f}{count}{note}"
        )
    lines.append("(objective = estimated error + lambda * cost; lowest wins, ties to the cheaper)")
    return "\n".join(lines)
