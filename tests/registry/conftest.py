"""The registry tests run on both backends: ``backend`` is parametrised over SQLite and
PostgreSQL (a new database of the session's cluster per test), and ``registry`` is an open,
empty registry on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.registry.postgres import BACKENDS, RegistryBackend
from uniroute.registry import Registry


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> RegistryBackend:
    """One registry backend (``sqlite`` or ``postgresql``) with fresh locations on it."""
    cluster = request.getfixturevalue("postgres_cluster") if request.param != "sqlite" else None
    return RegistryBackend(request.param, tmp_path, cluster)


@pytest.fixture
def registry(backend: RegistryBackend):
    """An empty registry on the backend, closed after the test."""
    with Registry(backend.new_location()) as opened:
        yield opened
