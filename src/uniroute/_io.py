"""Atomic, checksummed writes of state directories and files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from uniroute._json import JsonLimitError, loads_bounded
from uniroute.errors import StateError


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_tree(directory: Path) -> None:
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    for path in [directory, *sorted(p for p in directory.rglob("*") if p.is_dir())]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_directory(target: Path | str) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``target`` only once the block succeeds.

    Readers see either the old complete directory or the new complete one, never a mix:
    the new tree is fsynced, then swapped in by rename.
    """
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield staging
        _fsync_tree(staging)
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rename(target, retired / "old")
            os.rename(staging, target)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write a file so that readers see the old or the new content, never a torn one."""
    path = Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path | str, obj: Any) -> None:
    """Atomically write an object as indented JSON."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def save_arrays(directory: Path, arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, str]]:
    """Write one .npy per array (no pickles); return {name: {file, sha256}} for a manifest."""
    directory.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name, array in arrays.items():
        array = np.asarray(array)
        if array.dtype == object:
            raise StateError(f"array {name!r} has dtype object; store strings in the manifest")
        path = directory / f"{name}.npy"
        np.save(path, array, allow_pickle=False)
        entries[name] = {"file": path.name, "sha256": sha256_file(path)}
    return entries


def load_arrays(directory: Path, entries: Mapping[str, Mapping[str, str]]) -> dict[str, np.ndarray]:
    """Read arrays written by save_arrays, checking each file's checksum first."""
    arrays = {}
    for name, entry in entries.items():
        if not (
            isinstance(entry, Mapping)
            and isinstance(entry.get("file"), str)
            and isinstance(entry.get("sha256"), str)
        ):
            raise StateError(
                f"{directory}: the manifest entry of array {name!r} must be an object with "
                f"string 'file' and 'sha256', got {entry!r:.80}"
            )
        path = directory / entry["file"]
        if not path.is_file():
            raise StateError(f"{path}: missing (listed in the manifest as array {name!r})")
        if sha256_file(path) != entry["sha256"]:
            raise StateError(f"{path}: checksum mismatch; the file is truncated or was modified")
        try:
            arrays[name] = np.load(path, allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:
            raise StateError(f"{path}: not a readable array ({exc})") from None
    return arrays


def read_manifest(
    directory: Path, kind: str, schema_version: int | tuple[int, ...]
) -> dict[str, Any]:
    """Load ``manifest.json`` of a state directory and check its kind and schema version(s)."""
    readable = (schema_version,) if isinstance(schema_version, int) else schema_version
    path = Path(directory) / "manifest.json"
    if not path.is_file():
        raise StateError(f"{path}: no manifest; {directory} is not a saved {kind}")
    try:
        manifest = loads_bounded(path.read_bytes())
    except JsonLimitError as exc:
        raise StateError(f"{path}: corrupt manifest (it {exc})") from None
    if not isinstance(manifest, dict):
        raise StateError(
            f"{path}: corrupt manifest (expected a JSON object, got {type(manifest).__name__})"
        )
    if manifest.get("kind") != kind:
        raise StateError(f"{path}: holds a {manifest.get('kind')!r}, expected a {kind!r}")
    if manifest.get("schema_version") not in readable:
        raise StateError(
            f"{path}: schema version {manifest.get('schema_version')!r}, this uniroute reads "
            f"version {' or '.join(map(str, readable))}"
        )
    return manifest
