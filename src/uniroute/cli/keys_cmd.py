"""`uniroute keys`: create, list, revoke virtual client keys and show what they used."""

from __future__ import annotations

import argparse
import json
from typing import Any

from uniroute.cli.arg_types import int_at_least, positive_float
from uniroute.cli.pool_options import add_location_arguments, registry_path


def model_list(text: str) -> list[str]:
    """``--models``: comma-separated model names (at least one)."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give at least one model name (comma-separated)")
    return names


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `keys` sub-command and its `create`, `list`, `revoke` and `usage` actions."""
    parser = subparsers.add_parser(
        "keys",
        help="virtual client keys: create, list, revoke, usage",
        description=(
            "Client keys of the gateway kept in the registry, each with an optional team, the "
            "models it may use and its limits (requests per minute, spend per UTC day and "
            "month); every replica on the registry enforces them."
        ),
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    create = actions.add_parser(
        "create",
        help="create a key (its secret is printed once)",
        description=(
            "Create a key and print its secret once: it is stored only as a SHA-256 hash, so "
            "it cannot be shown again."
        ),
    )
    create.add_argument("name", metavar="NAME", help="what the key is for (shown in listings)")
    create.add_argument("--team", help="the team its spend is counted under")
    create.add_argument(
        "--models", type=model_list, help="the only models it may use (comma-separated)"
    )
    create.add_argument("--rpm", type=int_at_least(1), help="requests per minute at most")
    create.add_argument("--daily-budget", type=positive_float, metavar="USD", help="spend per day")
    create.add_argument(
        "--monthly-budget", type=positive_float, metavar="USD", help="spend per month"
    )
    create.add_argument("--json", action="store_true", help="print JSON (the secret included)")
    add_location_arguments(create, artifact=False)
    create.set_defaults(func=run_create)

    listing = actions.add_parser("list", help="every key (never a secret)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    add_location_arguments(listing, artifact=False)
    listing.set_defaults(func=run_list)

    revoke = actions.add_parser("revoke", help="revoke a key for good")
    revoke.add_argument("key_id", metavar="ID", help="the key's id (from `uniroute keys list`)")
    add_location_arguments(revoke, artifact=False)
    revoke.set_defaults(func=run_revoke)

    usage = actions.add_parser("usage", help="spend and requests per day and month")
    usage.add_argument("key_id", metavar="ID", nargs="?", help="one key (default: every key)")
    usage.add_argument("--json", action="store_true", help="print JSON")
    add_location_arguments(usage, artifact=False)
    usage.set_defaults(func=run_usage)


def _registry(args: argparse.Namespace) -> Any:
    from uniroute.registry import Registry

    return Registry(registry_path(args))


def _limits(key: Any) -> str:
    parts = []
    if key.rpm_limit is not None:
        parts.append(f"{key.rpm_limit} rpm")
    if key.daily_spend_limit is not None:
        parts.append(f"{key.daily_spend_limit:g}/day")
    if key.monthly_spend_limit is not None:
        parts.append(f"{key.monthly_spend_limit:g}/month")
    return ", ".join(parts) or "no limits"


def run_create(args: argparse.Namespace) -> int:
    """Create a key and print it with its secret."""
    with _registry(args) as registry:
        created = registry.keys.create(
            args.name,
            team=args.team,
            allowed_models=args.models,
            rpm_limit=args.rpm,
            daily_spend_limit=args.daily_budget,
            monthly_spend_limit=args.monthly_budget,
        )
    key = created.key
    if args.json:
        print(json.dumps({"key": key.to_dict(), "secret": created.secret}, indent=2))
        return 0
    models = ", ".join(key.allowed_models) if key.allowed_models else "every model"
    print(f"created key {key.id} ({key.name}; team {key.team or '-'}; {models}; {_limits(key)})")
    print(f"secret (shown only now): {created.secret}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    """Print every key."""
    with _registry(args) as registry:
        keys = registry.keys.list()
    if args.json:
        print(json.dumps({"keys": [key.to_dict() for key in keys]}, indent=2))
        return 0
    if not keys:
        print("no client keys")
        return 0
    for key in keys:
        state = f"revoked {key.revoked_at}" if key.revoked else "active"
        models = ",".join(key.allowed_models) if key.allowed_models else "*"
        print(
            f"{key.id}  {key.name}  team={key.team or '-'}  models={models}  "
            f"{_limits(key)}  {state}"
        )
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    """Revoke a key."""
    with _registry(args) as registry:
        key = registry.keys.revoke(args.key_id)
    print(f"revoked key {key.id} ({key.name}) at {key.revoked_at}")
    return 0


def run_usage(args: argparse.Namespace) -> int:
    """Print what one key, or every key, used per day and month."""
    with _registry(args) as registry:
        rows = registry.keys.usage(args.key_id)
        names = {key.id: key.name for key in registry.keys.list()}
    if args.json:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            grouped.setdefault(row.key_id, []).append(row.to_dict())
        print(json.dumps({"usage": grouped}, indent=2))
        return 0
    if not rows:
        print("no usage recorded")
        return 0
    for row in rows:
        print(
            f"{row.key_id}  {names.get(row.key_id, '?')}  {row.period}  "
            f"spend {row.spend:.6g}  requests {row.requests}"
        )
    return 0
