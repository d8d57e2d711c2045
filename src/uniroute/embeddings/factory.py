"""Build encoders by name, reload saved ones, and wrap them with the on-disk cache."""

from __future__ import annotations

import importlib
import inspect
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from uniroute.embeddings._common import as_text_list, read_encoder_manifest
from uniroute.embeddings.base import Encoder
from uniroute.embeddings.cache import CachedEncoder, EmbeddingCache
from uniroute.errors import StateError, UsageError

# name -> "module:Class"; modules are imported on demand so that asking for TF-IDF never pays
# for importing torch (and works where the minilm extra is not installed).
_ENCODER_CLASSES = {
    "minilm": "uniroute.embeddings.minilm:MiniLMEncoder",
    "tfidf": "uniroute.embeddings.tfidf:TfidfSvdEncoder",
}
ENCODERS = tuple(_ENCODER_CLASSES)
EMBEDDING_CACHE_SUBDIR = "embeddings"

#: ``progress(message, done, total)``, told about a long step: ``done`` of its ``total`` units
#: are finished (0 when the step starts, ``total`` when it ends); ``message`` says what was done.
ProgressHook = Callable[[str, int, int], None]
#: Texts per encode() call when progress is reported: on two cores MiniLM embeds this many in a
#: few seconds, so a line every few seconds, while the per-call overhead stays negligible.
PROGRESS_BATCH = 256


class MissingExtraError(UsageError, ImportError):
    """A feature needs an optional extra that is not installed; the message names the install.

    A UsageError, so the command prints it as one line and exits with 2; an ImportError too, so
    code that guarded the import of an optional module with ``except ImportError`` still works.
    """

    code = "missing_extra"


class EncoderClass(Protocol):
    """What the factory needs of a registered encoder class: build one, or load a saved one."""

    def __call__(self, **params: Any) -> Encoder: ...

    def load(self, directory: Path) -> Encoder: ...


def encoder_class(name: str) -> EncoderClass:
    """The encoder class registered under ``name``."""
    if name not in _ENCODER_CLASSES:
        raise UsageError(f"unknown encoder {name!r}; valid names: {', '.join(ENCODERS)}")
    module_name, class_name = _ENCODER_CLASSES[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)


def make_encoder(name: str, **params: Any) -> Encoder:
    """A new encoder of the given type; ``params`` go to its constructor.

    An unknown parameter or a bad value is a UsageError naming the encoder and the parameter,
    raised here, before anything is fitted or loaded.
    """
    cls = encoder_class(name)
    accepted = [p for p in inspect.signature(cls).parameters if p != "self"]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise UsageError(
            f"encoder {name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"its parameters are: {', '.join(accepted)}"
        )
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        # The constructors check every parameter and name it in their message.
        raise UsageError(f"encoder {name!r}: {exc}") from None


def load_encoder(directory: Path | str) -> Encoder:
    """Rebuild the encoder that ``save(directory)`` wrote, fitted state included."""
    manifest = read_encoder_manifest(directory)
    name = manifest["encoder"]
    if name not in _ENCODER_CLASSES:
        raise StateError(
            f"{Path(directory) / 'manifest.json'}: unknown encoder {name!r}; this uniroute knows "
            f"{', '.join(ENCODERS)}"
        )
    return encoder_class(name).load(Path(directory))


def cached(encoder: Encoder, cache_dir: Path | str | None = None) -> CachedEncoder:
    """Wrap an encoder with the embedding cache (default: the project's cache folder).

    An encoder that is already cached is re-wrapped around its inner encoder, never nested.
    """
    if isinstance(encoder, CachedEncoder):
        encoder = encoder.encoder
    if cache_dir is None:
        from uniroute.data.paths import default_cache_dir

        cache_dir = default_cache_dir() / EMBEDDING_CACHE_SUBDIR
    return CachedEncoder(encoder, EmbeddingCache(cache_dir))


def encode_in_batches(
    encoder: Encoder,
    texts: Sequence[str],
    progress: ProgressHook | None = None,
    *,
    what: str = "prompts",
    batch_size: int = PROGRESS_BATCH,
) -> np.ndarray:
    """``encoder.encode(texts)``, in batches of ``batch_size`` that each report to ``progress``.

    Without ``progress`` it is one encode() call. ``what`` names the texts in the messages.
    """
    text_list = as_text_list(texts)
    if progress is None or not text_list:
        return encoder.encode(text_list)
    total = len(text_list)
    started = time.perf_counter()
    progress(f"embedding {total} {what}", 0, total)
    parts = []
    for start in range(0, total, batch_size):
        parts.append(encoder.encode(text_list[start : start + batch_size], show_progress=False))
        done = min(total, start + batch_size)
        if done < total:
            progress(f"embedded {done}/{total} {what}", done, total)
    progress(f"embedded {total} {what} in {time.perf_counter() - started:.1f} s", total, total)
    return np.concatenate(parts, axis=0)
