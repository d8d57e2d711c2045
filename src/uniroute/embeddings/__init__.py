"""Prompt encoders (MiniLM, TF-IDF+SVD) and the on-disk embedding cache."""

from uniroute.embeddings.base import Encoder

__all__ = ["Encoder"]
