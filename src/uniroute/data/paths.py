"""Where the project finds its shared data and keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "UNIROUTE_DATA"
CACHE_ENV = "UNIROUTE_CACHE"


def source_tree_root() -> Path | None:
    """The repository root when running from a source checkout (src layout), else None."""
    package_dir = Path(__file__).resolve().parent.parent
    if package_dir.parent.name != "src":
        return None
    root = package_dir.parent.parent
    return root if (root / "pyproject.toml").is_file() else None


def default_data_dir() -> Path:
    """The shared data folder: $UNIROUTE_DATA, else ``../shared/data`` beside the repository."""
    configured = os.environ.get(DATA_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    root = source_tree_root()
    # An installed package has no checkout to look beside; the working directory stands in.
    base = root if root is not None else Path.cwd()
    return base.parent / "shared" / "data"


def default_cache_dir() -> Path:
    """The cache folder: $UNIROUTE_CACHE, else ``<repo>/.cache``, else ~/.cache/uniroute."""
    configured = os.environ.get(CACHE_ENV, "").strip()
    if configured:
        return Path(configured).expanduser()
    root = source_tree_root()
    if root is not None and os.access(root, os.W_OK):
        return root / ".cache"
    return Path.home() / ".cache" / "uniroute"
