"""Prompt encoders (MiniLM, TF-IDF+SVD) and the on-disk embedding cache."""

from uniroute.embeddings.base import Encoder
from uniroute.embeddings.cache import CachedEncoder, EmbeddingCache
from uniroute.embeddings.factory import ENCODERS, cached, load_encoder, make_encoder

__all__ = [
    "ENCODERS",
    "CachedEncoder",
    "EmbeddingCache",
    "Encoder",
    "cached",
    "load_encoder",
    "make_encoder",
]
