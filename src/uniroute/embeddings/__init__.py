"""Prompt encoders (MiniLM, TF-IDF+SVD) and the on-disk embedding cache.

MiniLM needs the ``minilm`` extra (torch, sentence-transformers and the weights package);
importing this package never imports it, so TF-IDF works without that extra.
"""

from uniroute.embeddings.base import Encoder
from uniroute.embeddings.cache import CachedEncoder, EmbeddingCache
from uniroute.embeddings.factory import (
    ENCODERS,
    MissingExtraError,
    ProgressHook,
    cached,
    encode_in_batches,
    encoder_class,
    load_encoder,
    make_encoder,
)

__all__ = [
    "ENCODERS",
    "CachedEncoder",
    "EmbeddingCache",
    "Encoder",
    "MissingExtraError",
    "ProgressHook",
    "cached",
    "encode_in_batches",
    "encoder_class",
    "load_encoder",
    "make_encoder",
]
