"""The Encoder interface: text in, one float32 vector per text out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Encoder(Protocol):
    """Turns prompt texts into fixed-size vectors.

    ``id`` names the encoder *and* its fitted state, so two encoders with the same id give
    the same vector for the same text (the embedding cache relies on this).
    """

    @property
    def id(self) -> str:
        """Stable identifier of the encoder and its fitted state."""
        ...

    @property
    def dim(self) -> int:
        """Length of each embedding."""
        ...

    def fit(self, texts: Sequence[str]) -> Encoder:
        """Fit on training texts (a no-op for pretrained encoders); returns self."""
        ...

    def encode(self, texts: Sequence[str], *, show_progress: bool | None = None) -> np.ndarray:
        """Embed texts as a (len(texts), dim) float32 array."""
        ...

    def save(self, directory: Path) -> None:
        """Write what is needed to rebuild this encoder (its spec and any fitted state)."""
        ...
