"""Helpers the encoders share: input checks and the saved layout (``manifest.json`` + arrays)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from uniroute._io import atomic_directory, atomic_write_json, read_manifest
from uniroute.errors import StateError

ENCODER_KIND = "encoder"
ENCODER_SCHEMA_VERSION = 1

EncoderType = TypeVar("EncoderType")


def as_text_list(texts: Sequence[str]) -> list[str]:
    """Return texts as a list, raising ValueError naming the first item that is not a string."""
    if isinstance(texts, str):
        raise ValueError("expected a sequence of texts, got a single string; wrap it in a list")
    text_list = list(texts)
    for index, text in enumerate(text_list):
        if not isinstance(text, str):
            raise ValueError(
                f"text at position {index} is {type(text).__name__} ({text!r:.60}), not a string"
            )
    return text_list


@contextlib.contextmanager
def staged_encoder_directory(directory: Path | str) -> Iterator[Path]:
    """Yield a staging directory that atomically replaces ``directory`` once the block succeeds.

    A non-empty directory that is not a saved encoder is refused, so saving an encoder can
    never wipe unrelated files (for example a router artifact's root).
    """
    directory = Path(directory)
    if directory.exists():
        if not directory.is_dir():
            raise StateError(f"{directory}: exists and is not a directory; cannot save an encoder")
        if any(directory.iterdir()) and not (directory / "manifest.json").is_file():
            raise StateError(
                f"{directory}: not empty and not a saved encoder; refusing to replace it "
                "(save the encoder into its own directory)"
            )
    with atomic_directory(directory) as staging:
        yield staging


def write_encoder_manifest(
    staging: Path, name: str, params: Mapping[str, Any], encoder_id: str, **extra: Any
) -> None:
    """Write the manifest naming the encoder type, its constructor params and its id."""
    manifest = {
        "kind": ENCODER_KIND,
        "schema_version": ENCODER_SCHEMA_VERSION,
        "encoder": name,
        "params": dict(params),
        "id": encoder_id,
        **extra,
    }
    atomic_write_json(staging / "manifest.json", manifest)


def read_encoder_manifest(
    directory: Path | str, expected_name: str | None = None
) -> dict[str, Any]:
    """Read and check an encoder manifest; ``expected_name`` guards against loading another type."""
    directory = Path(directory)
    manifest = read_manifest(directory, ENCODER_KIND, ENCODER_SCHEMA_VERSION)
    name = manifest.get("encoder")
    if not isinstance(name, str):
        raise StateError(f"{directory / 'manifest.json'}: no encoder name")
    if expected_name is not None and name != expected_name:
        raise StateError(
            f"{directory / 'manifest.json'}: holds a {name!r} encoder, expected {expected_name!r}"
        )
    if not isinstance(manifest.get("params"), dict):
        raise StateError(f"{directory / 'manifest.json'}: 'params' is missing or not an object")
    return manifest


def encoder_from_params(
    cls: type[EncoderType], directory: Path | str, params: Mapping[str, Any]
) -> EncoderType:
    """Construct ``cls(**params)`` from a manifest, turning bad params into a StateError."""
    try:
        return cls(**params)
    except (TypeError, ValueError) as exc:
        manifest_path = Path(directory) / "manifest.json"
        raise StateError(f"{manifest_path}: bad encoder params ({exc})") from None
