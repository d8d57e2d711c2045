"""Options shared by the pool commands: where the artifact and the registry are, and prices.

The registry is ``--registry FILE`` (an SQLite file) or ``--registry postgresql://user@host:port/db``
(also ``postgres://``; a PostgreSQL database). When ``--registry`` is not given,
``$UNIROUTE_REGISTRY`` is used, read the same way; the option always wins over the variable.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from uniroute.errors import RegistryError, StateError

if TYPE_CHECKING:
    from uniroute.registry import ModelCost

ARTIFACT_ENV = "UNIROUTE_ARTIFACT"
REGISTRY_ENV = "UNIROUTE_REGISTRY"


def add_location_arguments(
    parser: argparse.ArgumentParser, *, artifact: bool = True, registry: bool = True
) -> None:
    """Add --artifact DIR and/or --registry FILE|URL (defaults from the environment)."""
    if artifact:
        parser.add_argument(
            "--artifact", type=Path, help=f"router artifact directory (default: ${ARTIFACT_ENV})"
        )
    if registry:
        parser.add_argument(
            "--registry",
            type=registry_location,
            metavar="FILE|URL",
            help=(
                "model registry: an SQLite file or postgresql://user@host:port/db "
                f"(default: ${REGISTRY_ENV})"
            ),
        )


def artifact_given(args: argparse.Namespace) -> bool:
    """True when an artifact is named by --artifact or the environment."""
    return bool(getattr(args, "artifact", None) or os.environ.get(ARTIFACT_ENV, "").strip())


def artifact_path(args: argparse.Namespace) -> Path:
    """The artifact directory from --artifact or the environment, with a clear error if neither."""
    value = getattr(args, "artifact", None) or os.environ.get(ARTIFACT_ENV, "").strip()
    if not value:
        raise StateError(f"no artifact given: pass --artifact DIR or set {ARTIFACT_ENV}")
    return Path(value).expanduser()


def registry_location(value: str | Path) -> str | Path:
    """A --registry value: a ``postgresql://`` (or ``postgres://``) URL as given, else a path."""
    if isinstance(value, Path):
        return value.expanduser()
    # Imported here: the registry package loads numpy, which `uniroute --help` need not.
    from uniroute.registry.store import is_registry_url

    text = value.strip()
    return text if is_registry_url(text) else Path(text).expanduser()


def registry_path(args: argparse.Namespace, *, must_exist: bool = True) -> str | Path:
    """The registry from --registry, else the environment: a database URL, or a file that by
    default must already exist (a database's tables are made on first open, like a new file's).
    """
    value = getattr(args, "registry", None) or os.environ.get(REGISTRY_ENV, "").strip()
    if not value:
        raise StateError(f"no registry given: pass --registry FILE|URL or set {REGISTRY_ENV}")
    path = registry_location(value)
    if isinstance(path, str):
        return path
    if must_exist and not path.is_file():
        raise StateError(
            f"{path}: no such registry; create one with `uniroute build ... --registry {path}` "
            "or `uniroute models add ... --registry`"
        )
    return path


def add_cost_arguments(parser: argparse.ArgumentParser) -> None:
    """Add --cost or --cost-per-1k-input/--cost-per-1k-output (+ --expected-output-tokens)."""
    group = parser.add_argument_group("price (per query, or per 1k or 1M tokens)")
    group.add_argument("--cost", type=float, help="cost of one query")
    group.add_argument("--cost-per-1k-input", type=float, help="price of 1,000 input tokens")
    group.add_argument("--cost-per-1k-output", type=float, help="price of 1,000 output tokens")
    group.add_argument("--cost-per-1m-input", type=float, help="price of 1M input tokens")
    group.add_argument("--cost-per-1m-output", type=float, help="price of 1M output tokens")
    group.add_argument(
        "--expected-output-tokens",
        type=float,
        help="answer length assumed for token prices (default 256)",
    )


def parse_cost(args: argparse.Namespace) -> ModelCost:
    """The ModelCost given on the command line; RegistryError naming the bad option."""
    # Imported here, not at the top: the registry package loads numpy and sqlite3, and every
    # command module imports this one, so a top-level import would slow `uniroute --help`.
    from uniroute.registry import ModelCost
    from uniroute.registry.costs import per_1k_price

    try:
        per_1k_input = per_1k_price(args.cost_per_1k_input, args.cost_per_1m_input, "input")
        per_1k_output = per_1k_price(args.cost_per_1k_output, args.cost_per_1m_output, "output")
    except ValueError as exc:
        raise RegistryError(f"bad price: {exc}") from None
    by_token = per_1k_input is not None or per_1k_output is not None
    if args.cost is None and not by_token:
        raise RegistryError(
            "give --cost C, or the input and output token prices (--cost-per-1k-input X "
            "--cost-per-1k-output Y, or --cost-per-1m-input X --cost-per-1m-output Y)"
        )
    if args.expected_output_tokens is not None and not by_token:
        raise RegistryError("--expected-output-tokens only applies to token prices")
    tokens = {}
    if args.expected_output_tokens is not None:
        tokens["expected_output_tokens"] = args.expected_output_tokens
    try:
        return ModelCost(
            per_query=args.cost,
            per_1k_input=per_1k_input,
            per_1k_output=per_1k_output,
            **tokens,
        )
    except ValueError as exc:
        raise RegistryError(f"bad price: {exc}") from None
