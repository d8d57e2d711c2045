"""Fixtures shared by the deployment tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from uniroute.artifact import Artifact
from uniroute.deployment import Router
from uniroute.deployment.pool_changes import seed_registry
from uniroute.registry import Registry


@pytest.fixture
def seeded(arc_artifact: Artifact, tmp_path: Path) -> Router:
    """A Router over the shared ARC artifact and a registry seeded with its training models."""
    registry = Registry(tmp_path / "seeded.db")
    seed_registry(arc_artifact, registry)
    return Router.load(arc_artifact, registry)
