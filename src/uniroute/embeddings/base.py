"""The Encoder interface: text in, one float32 vector per text out.

How costly an encoder is is declared by its class, never measured: a class that sets
``inline_max_chars`` to N > 0 promises that embedding one text of up to N characters takes about
a millisecond or less, so a server may embed such a text on its event loop instead of paying for
the hop to a worker thread. Every other encoder (MiniLM, wrappers such as the embedding cache,
test doubles) declares nothing and is always run off the event loop.
"""

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


def inline_char_limit(encoder: object) -> int:
    """Longest text ``encoder``'s class declares cheap enough to embed inline (0: none)."""
    # Read from the class, not the instance: what is declared is the cost of the algorithm,
    # and a wrapper (which has its own class) never inherits it by accident.
    limit = getattr(type(encoder), "inline_max_chars", 0)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        return 0
    return limit
