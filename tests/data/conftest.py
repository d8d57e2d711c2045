"""Shared fixtures for the data-package tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from uniroute.data.paths import default_data_dir

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real shared data folder; tests that need it fail when it is absent."""
    folder = default_data_dir()
    if not (folder / "routerbench").is_dir():
        pytest.fail(f"shared data not found at {folder} (set UNIROUTE_DATA)")
    return folder


@pytest.fixture(scope="session")
def embedllm_fixture() -> Path:
    """A tiny copy of the EmbedLLM folder in its published layout."""
    return FIXTURES / "embedllm"
