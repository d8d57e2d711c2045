"""`uniroute calibrate`: find lambda for a cost, quality or traffic-share target; store it."""

from __future__ import annotations

import argparse
import json

from uniroute.cli.arg_types import non_negative_float
from uniroute.cli.pool_options import add_location_arguments, artifact_path, registry_path
from uniroute.errors import CalibrationError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `calibrate` sub-command."""
    parser = subparsers.add_parser(
        "calibrate",
        help="find lambda for a target on the representative prompts and make it the default",
        description=(
            "Solve a target on the representative prompts with the current pool and store the "
            "resulting lambda as the default policy. When any enabled model has an endpoint, "
            "only those models are solved over (the gateway can call no other). Expected cost "
            "and quality are out-of-sample: each prompt's estimated errors are cross-fitted "
            "(k-fold) from the other prompts' scores, and a missing score counts as 1 - its "
            "estimated error."
        ),
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--target-cost", type=float, help="expected cost per query at most C")
    target.add_argument("--target-quality", type=float, help="expected quality at least Q")
    target.add_argument(
        "--target-share-of",
        nargs=2,
        metavar=("MODEL", "P"),
        help="send a share P in [0, 1] of the traffic to MODEL",
    )
    parser.add_argument(
        "--latency-weight",
        type=non_negative_float,
        metavar="MU",
        help="weight of expected latency (seconds) in the objective, error + lambda * cost + "
        "MU * latency, for requests that give none (default: keep the stored one, else 0)",
    )
    parser.add_argument("--dry-run", action="store_true", help="solve but do not store")
    parser.add_argument("--json", action="store_true", help="print the policy as JSON")
    add_location_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Solve the target and store (or just print) the policy."""
    from uniroute.artifact import Artifact
    from uniroute.deployment import Router
    from uniroute.deployment.pool_changes import calibrate
    from uniroute.registry.calibration import make_target

    share = None
    if args.target_share_of is not None:
        model, value = args.target_share_of
        try:
            share = (model, float(value))
        except ValueError:
            raise CalibrationError(f"--target-share-of: share {value!r} is not a number") from None
    target = make_target(
        target_cost=args.target_cost, target_quality=args.target_quality, target_share=share
    )
    # Calibrating never embeds a prompt: the encoder is not even read.
    artifact = Artifact.load(artifact_path(args), lazy_encoder=True)
    router = Router.load(artifact, registry_path(args))
    policy = calibrate(router, target, store=not args.dry_run, latency_weight=args.latency_weight)
    left_out = policy.left_out(router.snapshot.pool.names)
    if args.json:
        body = {**policy.to_dict(), "left_out_no_endpoint": left_out, "stored": not args.dry_run}
        print(json.dumps(body, indent=2))
        return 0
    print(f"target: {policy.target.describe()}")
    print(f"lambda = {policy.lam:.6g}")
    if policy.latency_weight:
        print(f"latency weight = {policy.latency_weight:.6g} per second (figures below: at 0)")
    print(f"expected cost per query: {policy.expected_cost:.6g}")
    print(f"expected quality:        {policy.expected_quality:.4f}")
    if policy.target.kind == "share":
        print(f"share of {policy.target.model}: {policy.achieved:.1%}")
    print(
        f"({policy.describe_basis()}, on all {policy.n_prompts} representative prompts; "
        f"{policy.n_estimated} of them count through an estimated quality, their chosen model "
        "having no score)"
    )
    which = "servable models (with an endpoint)" if policy.servable_only else "enabled models"
    print(f"solved over {len(policy.models)} {which}: {', '.join(policy.models)}")
    if left_out:
        print(f"left out, no endpoint: {', '.join(left_out)}")
    print("stored as the default policy" if not args.dry_run else "not stored (--dry-run)")
    return 0
