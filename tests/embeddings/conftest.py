"""Fixtures for the embeddings tests: a small deterministic encoder that records its calls."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest


class HashingEncoder:
    """Embeds a text as 8 floats derived from its SHA-256; remembers every encode() batch."""

    def __init__(self, encoder_id: str = "hashing-8", dim: int = 8) -> None:
        self._id = encoder_id
        self._dim = dim
        self.calls: list[list[str]] = []

    @property
    def id(self) -> str:
        """The id given at construction."""
        return self._id

    @property
    def dim(self) -> int:
        """The vector length given at construction."""
        return self._dim

    def fit(self, texts: Sequence[str]) -> HashingEncoder:
        """Nothing to learn."""
        return self

    def encode(self, texts: Sequence[str], *, show_progress: bool | None = None) -> np.ndarray:
        """One vector per text, a pure function of the text."""
        self.calls.append(list(texts))
        return np.stack([self.vector_for(text, self._dim) for text in texts])

    def save(self, directory: Path) -> None:
        """Not needed by the tests."""
        raise NotImplementedError

    @staticmethod
    def vector_for(text: str, dim: int = 8) -> np.ndarray:
        """The vector this encoder gives ``text``: SHA-256 bytes scaled to [0, 1), float32."""
        digest = hashlib.sha256(text.encode()).digest()
        return np.frombuffer(digest[:dim], dtype=np.uint8).astype(np.float32) / np.float32(256)


@pytest.fixture
def hashing_encoder() -> HashingEncoder:
    """A fresh HashingEncoder (id "hashing-8", dim 8) with an empty call log."""
    return HashingEncoder()


@pytest.fixture
def hashing_encoder_class() -> type[HashingEncoder]:
    """The HashingEncoder class, for tests that need another id or dim."""
    return HashingEncoder
