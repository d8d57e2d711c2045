"""`uniroute registry`: back up a registry file, copy a registry between SQLite and PostgreSQL."""

from __future__ import annotations

import argparse
from pathlib import Path

from uniroute.cli.pool_options import REGISTRY_ENV, registry_location, registry_path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `registry` sub-command and its `backup` and `copy` actions."""
    parser = subparsers.add_parser(
        "registry",
        help="back up or copy the model registry",
        description="Operations on a whole registry: an online backup and a verified copy.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    backup = actions.add_parser(
        "backup",
        help="a consistent copy of a live SQLite registry file",
        description=(
            "Copy an SQLite registry with SQLite's online backup API: safe while a gateway "
            "writes to it, with everything committed before the backup began (the write-ahead "
            "log included); written beside DEST and renamed into place. A PostgreSQL registry "
            "is backed up with pg_dump."
        ),
    )
    backup.add_argument("dest", type=Path, metavar="DEST", help="the backup file to write")
    backup.add_argument(
        "--registry",
        type=registry_location,
        metavar="FILE",
        help=f"the registry to back up (default: ${REGISTRY_ENV})",
    )
    backup.add_argument("--force", action="store_true", help="overwrite DEST if it exists")
    backup.set_defaults(func=run_backup)

    copy = actions.add_parser(
        "copy",
        help="copy a registry (SQLite file or postgresql:// URL) into another, verified",
        description=(
            "Copy every table of SRC into DEST (each an SQLite file or a postgresql:// URL) in "
            "one transaction on DEST, then compare every row with SRC's. The pool's revision "
            "and binding come along, so a gateway on DEST serves the same pool. A DEST that "
            "holds a pool is refused unless --replace."
        ),
    )
    copy.add_argument("source", type=registry_location, metavar="SRC", help="registry to copy")
    copy.add_argument("dest", type=registry_location, metavar="DEST", help="registry to write")
    copy.add_argument(
        "--replace",
        action="store_true",
        help="empty a DEST that holds a pool (in the same transaction) and copy over it",
    )
    copy.set_defaults(func=run_copy)


def run_backup(args: argparse.Namespace) -> int:
    """Back up the registry to DEST and print what was written."""
    from uniroute.registry.transfer import backup_registry

    source = registry_path(args, must_exist=False)
    report = backup_registry(source, args.dest, force=args.force)
    print(report.describe())
    return 0


def run_copy(args: argparse.Namespace) -> int:
    """Copy SRC into DEST, verify it and print the counts."""
    from uniroute.registry.transfer import copy_registry

    report = copy_registry(args.source, args.dest, replace=args.replace)
    print(report.describe())
    return 0
