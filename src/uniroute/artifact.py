"""The router artifact: a self-contained, versioned directory holding everything needed to route.

Layout::

    manifest.json                 kind "artifact", schema version, artifact id, encoder id, router
                                  name and K, creation time (UTC), training models, prompt counts,
                                  and the SHA-256 of every other file
    encoder/                      the fitted encoder (Encoder.save)
    router/                       the fitted router estimator (prompt-side state only; pools
                                  are built from the registry or the training models)
    representative_prompts.jsonl  the validation prompts every model is described by
                                  (id, text, task, reference where the data has one)
    training/                     the training models' scores on those prompts and their costs,
                                  used to seed a registry

The directory is written through :func:`uniroute._io.atomic_directory`, so a reader sees the old
artifact or the new one, never a mix. :meth:`Artifact.load` checks the schema version and every
checksum before reading anything, so a truncated or edited file is reported by name.

The artifact id is derived from the checksums of its files: two builds with identical content
share an id, and any change to the encoder, router or prompts gives a new one.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from uniroute._io import atomic_directory, load_arrays, read_manifest, save_arrays, sha256_file
from uniroute.data.dataset import RoutingDataset
from uniroute.data.representative import (
    RepresentativePrompt,
    read_representative_prompts,
    write_representative_prompts,
)
from uniroute.embeddings.base import Encoder
from uniroute.embeddings.factory import ProgressHook, encode_in_batches, load_encoder
from uniroute.errors import DataError, StateError, UniRouteError
from uniroute.pool import Pool
from uniroute.routers import RouterEstimator, load_estimator

ARTIFACT_SCHEMA_VERSION = 1
PROMPTS_FILE = "representative_prompts.jsonl"
ENCODER_DIR = "encoder"
ROUTER_DIR = "router"
TRAINING_DIR = "training"
#: The training models' canonical answer keys on the representative prompts (JSON), when the
#: data recorded answers.
TRAINING_ANSWERS_FILE = f"{TRAINING_DIR}/answers.json"


@dataclass
class Artifact:
    """A loaded artifact: the fitted encoder and router estimator, the representative prompts,
    and the training models' validation scores and costs.

    With ``Artifact.load(..., lazy_encoder=True)`` the encoder (the largest part, and only needed
    to embed prompts) is checked and loaded on first access of :attr:`encoder`.
    """

    path: Path
    manifest: dict[str, Any]
    router: RouterEstimator
    representative_prompts: list[RepresentativePrompt]
    training_models: list[str]
    training_scores: np.ndarray
    training_costs: np.ndarray
    #: (n_representative, n_training) canonical answer keys (str or None); None without answers.
    training_answers: np.ndarray | None = None
    _encoder: Encoder | None = field(default=None, repr=False, compare=False)
    _encoder_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def encoder(self) -> Encoder:
        """The fitted encoder (loaded, after checking its files, on first use when lazy)."""
        if self._encoder is None:
            with self._encoder_lock:
                if self._encoder is None:
                    self._encoder = self._load_encoder()
        return self._encoder

    @property
    def artifact_id(self) -> str:
        """Content-derived identifier of this artifact."""
        return str(self.manifest["artifact_id"])

    @property
    def encoder_id(self) -> str:
        """Identifier of the fitted encoder."""
        return str(self.manifest["encoder"]["id"])

    @property
    def router_name(self) -> str:
        """Name of the router type (e.g. 'uniroute-kmeans')."""
        return str(self.manifest["router"]["name"])

    @property
    def n_clusters(self) -> int | None:
        """K, the number of prompt clusters, for the cluster-based routers."""
        return self.manifest.get("n_clusters")

    @property
    def created_at(self) -> str:
        """UTC creation time in ISO format."""
        return str(self.manifest["created_at"])

    @property
    def prompt_ids(self) -> list[str]:
        """Ids of the representative prompts, in the router's order."""
        return [prompt.prompt_id for prompt in self.representative_prompts]

    def training_pool(self) -> Pool:
        """The training models as a pool, each described by its representative-prompt scores."""
        return self.router.make_pool(
            self.training_models, self.training_scores, self.training_costs
        )

    @classmethod
    def load(cls, directory: str | Path, *, lazy_encoder: bool = False) -> Artifact:
        """Read an artifact, verifying its schema version and every file's checksum first.

        ``lazy_encoder`` defers checking and loading the encoder's files to its first use, for
        commands that never embed a prompt (adding a model, calibrating).
        """
        directory = Path(directory)
        if not directory.is_dir():
            raise StateError(f"{directory}: no such artifact directory")
        manifest = read_manifest(directory, "artifact", ARTIFACT_SCHEMA_VERSION)
        if manifest.get("manifest_sha256") != _manifest_checksum(manifest):
            raise StateError(
                f"{directory / 'manifest.json'}: checksum mismatch; the manifest was modified "
                "since the artifact was built"
            )
        files = manifest.get("files")
        if not isinstance(files, dict) or not files:
            raise StateError(f"{directory / 'manifest.json'}: no file checksums listed")
        _check_manifest_fields(manifest, directory / "manifest.json")
        if _artifact_id(files) != manifest.get("artifact_id"):
            raise StateError(f"{directory / 'manifest.json'}: artifact id does not match its files")
        _verify_files(directory, files, skip_prefix=f"{ENCODER_DIR}/" if lazy_encoder else None)

        router = _load_router(directory / ROUTER_DIR)
        try:
            prompts = read_representative_prompts(directory / PROMPTS_FILE)
        except DataError as exc:
            raise StateError(str(exc)) from None
        training = manifest["training"]
        arrays = load_arrays(directory / TRAINING_DIR, training["arrays"])
        models = list(training["models"])
        artifact = cls(
            path=directory,
            manifest=manifest,
            router=router,
            representative_prompts=prompts,
            training_models=models,
            training_scores=arrays.get("scores", np.zeros((0, 0))),
            training_costs=arrays.get("costs", np.zeros(0)),
            training_answers=_read_training_answers(directory, training.get("answers")),
        )
        artifact._check_consistent()
        if not lazy_encoder:
            _ = artifact.encoder
        return artifact

    def _load_encoder(self) -> Encoder:
        encoder_files = {
            relative: checksum
            for relative, checksum in self.manifest["files"].items()
            if relative.startswith(f"{ENCODER_DIR}/")
        }
        _verify_files(self.path, encoder_files)
        encoder = load_encoder(self.path / ENCODER_DIR)
        if encoder.dim != self.router.n_features_in_:
            raise StateError(
                f"artifact {self.path}: the encoder gives {encoder.dim}-dim embeddings, the "
                f"router expects {self.router.n_features_in_}"
            )
        return encoder

    def _check_consistent(self) -> None:
        where = f"artifact {self.path}"
        n = len(self.representative_prompts)
        if n != self.router.n_representative:
            raise StateError(
                f"{where}: {n} representative prompts but the router was fitted on "
                f"{self.router.n_representative}"
            )
        if self.training_scores.shape != (n, len(self.training_models)):
            raise StateError(
                f"{where}: training scores are {self.training_scores.shape}, expected "
                f"({n}, {len(self.training_models)})"
            )
        answers = self.training_answers
        if answers is not None and answers.shape != self.training_scores.shape:
            raise StateError(
                f"{where}: training answers are {answers.shape}, expected "
                f"{self.training_scores.shape}"
            )
        if self.training_costs.shape != (len(self.training_models),):
            raise StateError(f"{where}: {len(self.training_costs)} training costs")
        if self.manifest["encoder"].get("dim") != self.router.n_features_in_:
            raise StateError(
                f"{where}: the manifest gives {self.manifest['encoder'].get('dim')}-dim "
                f"embeddings, the router expects {self.router.n_features_in_}"
            )

    def summary(self) -> str:
        """A few lines describing the artifact."""
        k = f", K={self.n_clusters}" if self.n_clusters is not None else ""
        return (
            f"artifact {self.artifact_id} at {self.path}\n"
            f"  router {self.router_name}{k}, encoder {self.encoder_id}\n"
            f"  {len(self.representative_prompts)} representative prompts, "
            f"{self.manifest.get('n_training_prompts', '?')} training prompts, "
            f"{len(self.training_models)} training models, built {self.created_at}"
        )


def _read_training_answers(directory: Path, relative: object) -> np.ndarray | None:
    """The training answer keys named by the manifest (checksummed with the other files)."""
    if relative is None:
        return None
    path = directory / str(relative)
    if relative != TRAINING_ANSWERS_FILE or not path.is_file():
        raise StateError(f"{directory / 'manifest.json'}: bad training answers file {relative!r}")
    try:
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise StateError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        raise StateError(f"{path}: expected a list of rows of answer keys")
    widths = {len(row) for row in rows}
    if len(widths) > 1 or any(
        key is not None and not (isinstance(key, str) and key) for row in rows for key in row
    ):
        raise StateError(f"{path}: every row must hold the same number of text keys or nulls")
    keys = np.full((len(rows), widths.pop() if widths else 0), None, dtype=object)
    for i, row in enumerate(rows):
        keys[i, :] = row
    return keys


def _check_manifest_fields(manifest: dict[str, Any], path: Path) -> None:
    """Every manifest field the loader reads has the type it is read as; StateError naming it.

    The checksum only shows that the manifest is the one written with it, and both can be
    rewritten together; the loader must not then fail on a list where an object belongs.
    """

    def refuse(key: str, expected: str, value: object) -> StateError:
        return StateError(f"{path}: {key!r} must be {expected}, got {value!r:.80}")

    files = manifest["files"]
    for relative, checksum in files.items():
        if not isinstance(checksum, str):
            raise refuse(f"files.{relative}", "a SHA-256 hex string", checksum)
    for key in ("artifact_id", "created_at"):
        if not isinstance(manifest.get(key), str):
            raise refuse(key, "a string", manifest.get(key))
    n_clusters = manifest.get("n_clusters")
    if n_clusters is not None and (isinstance(n_clusters, bool) or not isinstance(n_clusters, int)):
        raise refuse("n_clusters", "an integer or null", n_clusters)
    encoder = manifest.get("encoder")
    if not isinstance(encoder, dict):
        raise refuse("encoder", "an object with 'id' and 'dim'", encoder)
    if not isinstance(encoder.get("id"), str):
        raise refuse("encoder.id", "a string", encoder.get("id"))
    dim = encoder.get("dim")
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise refuse("encoder.dim", "an integer", dim)
    router = manifest.get("router")
    if not isinstance(router, dict) or not isinstance(router.get("name"), str):
        raise refuse("router", "an object with a string 'name'", router)
    training = manifest.get("training")
    if not isinstance(training, dict):
        raise refuse("training", "an object with 'models' and 'arrays'", training)
    models = training.get("models")
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise refuse("training.models", "a list of model names", models)
    if not isinstance(training.get("arrays"), dict):
        raise refuse("training.arrays", "an object of array entries", training.get("arrays"))


def _load_router(directory: Path) -> RouterEstimator:
    """The artifact's fitted estimator; a saved estimator that cannot be rebuilt is a StateError."""
    try:
        return load_estimator(directory)
    except UniRouteError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        # Its manifest passed the checksums but lacks a field or holds one of the wrong type.
        raise StateError(
            f"{directory / 'manifest.json'}: not a loadable router ({type(exc).__name__}: {exc})"
        ) from None


def check_artifact_destination(out_dir: str | Path) -> None:
    """Refuse to replace anything but an earlier artifact (or an empty directory), and a
    directory that cannot be created there; StateError naming the path, before any work."""
    out_dir = Path(out_dir)
    if not out_dir.exists():
        # The nearest existing ancestor must be a directory, or creating out_dir would fail
        # only once the encoder and the router have been fitted.
        ancestor = out_dir.absolute().parent
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise StateError(
                f"{out_dir}: cannot create an artifact there; {ancestor} is not a directory"
            )
        return
    if not out_dir.is_dir():
        raise StateError(
            f"{out_dir}: exists and is not a directory; cannot write an artifact there"
        )
    if not any(out_dir.iterdir()):
        return
    try:
        kind = json.loads((out_dir / "manifest.json").read_text()).get("kind")
    except (OSError, ValueError, AttributeError, RecursionError):
        kind = None
    if kind != "artifact":
        raise StateError(
            f"{out_dir}: not empty and not a router artifact; refusing to replace it (choose a "
            "new or empty directory)"
        )


def _verify_files(directory: Path, files: dict[str, str], skip_prefix: str | None = None) -> None:
    for relative, expected in sorted(files.items()):
        if skip_prefix is not None and relative.startswith(skip_prefix):
            continue
        path = directory / relative
        if not path.is_file():
            raise StateError(f"{path}: missing (listed in the artifact manifest)")
        if sha256_file(path) != expected:
            raise StateError(
                f"{path}: checksum mismatch; the file is truncated or was modified since the "
                "artifact was built"
            )


def _artifact_id(files: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for relative, checksum in sorted(files.items()):
        digest.update(f"{relative}\0{checksum}\0".encode())
    return digest.hexdigest()[:16]


def _file_checksums(root: Path) -> dict[str, str]:
    own_manifest = root / "manifest.json"
    return {
        path.relative_to(root).as_posix(): sha256_file(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path != own_manifest
    }


def _manifest_checksum(manifest: dict[str, Any]) -> str:
    """SHA-256 of the manifest's canonical JSON without its own checksum field."""
    body = {key: value for key, value in manifest.items() if key != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def split_representative(
    tasks: Sequence[str] | np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of prompt positions into (training, representative), stratified by task.

    Each task contributes ``val_fraction`` of its prompts to the representative set, with the
    rounding remainder carried from task to task so the total matches too.
    """
    task_array = np.asarray([str(t) for t in tasks], dtype=object)
    rng = np.random.default_rng(seed)
    train, val = [], []
    carry = 0.0
    for task in sorted(set(task_array.tolist())):
        members = np.flatnonzero(task_array == task)
        rng.shuffle(members)
        wanted = val_fraction * len(members) + carry
        n_val = min(len(members), max(0, int(math.floor(wanted + 0.5))))
        carry = wanted - n_val
        val.append(members[:n_val])
        train.append(members[n_val:])
    train_rows = np.sort(np.concatenate(train)) if train else np.zeros(0, dtype=int)
    val_rows = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=int)
    if len(train_rows) == 0 or len(val_rows) == 0:
        raise DataError(
            f"{len(task_array)} prompts with val_fraction={val_fraction} leave no "
            f"{'training' if len(train_rows) == 0 else 'representative'} prompts"
        )
    return train_rows, val_rows


def build_artifact(
    dataset: RoutingDataset,
    out_dir: str | Path,
    encoder: str | Encoder = "minilm",
    router: str | RouterEstimator = "uniroute-kmeans",
    holdout_models: Sequence[str] = (),
    val_fraction: float = 0.1,
    seed: int = 0,
    *,
    router_params: dict[str, Any] | None = None,
    encoder_params: dict[str, Any] | None = None,
    embedding_cache: str | Path | None = None,
    progress: ProgressHook | None = None,
) -> Artifact:
    """Fit a router on the training LLMs of ``dataset`` and write an artifact to ``out_dir``.

    Prompts are split by task (seeded): ``1 - val_fraction`` of each task trains the encoder and
    the router, the rest become the representative prompts. Models in ``holdout_models`` are left
    out entirely (to be onboarded later as unseen models). ``encoder`` / ``router`` are a name or
    an unfitted instance (``*_params`` then go to its constructor); ``embedding_cache`` is a
    directory for the on-disk embedding cache. ``progress`` hears of each step (fitting the
    encoder, each batch of prompts embedded, fitting the router, writing) as it starts and ends.
    """
    # Only building needs these: the references pull in the data loaders (pandas), and loading
    # an artifact to route must not pay for them.
    from uniroute.embeddings.factory import cached, make_encoder
    from uniroute.onboarding.references import attach_references
    from uniroute.routers import make_estimator

    def step(message: str, done: int) -> None:
        if progress is not None:
            progress(message, done, 1)

    started = time.perf_counter()
    check_artifact_destination(out_dir)
    if not 0.0 < float(val_fraction) < 1.0:
        raise DataError(f"val_fraction must lie strictly between 0 and 1, got {val_fraction}")
    unknown = [m for m in holdout_models if m not in dataset.models]
    if unknown:
        raise DataError(f"hold-out model(s) {unknown} not in {dataset.name!r}: {dataset.models}")
    training_models = [m for m in dataset.models if m not in set(holdout_models)]
    if len(training_models) < 2:
        raise DataError(
            f"at least 2 training models are needed; {dataset.name!r} leaves {training_models}"
        )
    dataset = attach_references(dataset).subset(models=training_models)
    train_rows, val_rows = split_representative(dataset.tasks, float(val_fraction), int(seed))

    if isinstance(encoder, str):
        encoder = make_encoder(encoder, **(encoder_params or {}))
    elif encoder_params:
        raise DataError("encoder_params only apply when the encoder is given by name")
    if isinstance(router, str):
        router = make_estimator(router, **(router_params or {}))
    elif router_params:
        raise DataError("router_params only apply when the router is given by name")

    train_texts = [str(t) for t in dataset.prompts[train_rows]]
    val_texts = [str(t) for t in dataset.prompts[val_rows]]
    step_started = time.perf_counter()
    step(f"fitting the encoder on {len(train_texts)} training prompts", 0)
    encoder.fit(train_texts)
    step(f"fitted the encoder {encoder.id} in {time.perf_counter() - step_started:.1f} s", 1)
    embed = encoder
    if embedding_cache is not None:
        embed = cached(encoder, embedding_cache)
    X_train = encode_in_batches(embed, train_texts, progress, what="training prompts")
    X_val = encode_in_batches(embed, val_texts, progress, what="representative prompts")
    costs = dataset.model_costs
    step_started = time.perf_counter()
    step(
        f"fitting {router.name} on {len(train_texts)} prompts and {len(training_models)} models",
        0,
    )
    router.fit(X_train, dataset.scores[train_rows], X_val, dataset.scores[val_rows], costs)
    n_clusters = getattr(router, "n_clusters_", None)
    chosen = "" if n_clusters is None else f" (K={n_clusters})"
    step(f"fitted {router.name}{chosen} in {time.perf_counter() - step_started:.1f} s", 1)
    step(f"writing the artifact to {out_dir}", 0)

    references = dataset.references
    prompts = [
        RepresentativePrompt(
            prompt_id=str(dataset.prompt_ids[i]),
            text=str(dataset.prompts[i]),
            task=str(dataset.tasks[i]),
            reference=None if references is None or references[i] is None else str(references[i]),
        )
        for i in val_rows
    ]
    out_dir = Path(out_dir)
    with atomic_directory(out_dir) as staging:
        encoder.save(staging / ENCODER_DIR)
        router.save(staging / ROUTER_DIR)
        write_representative_prompts(staging / PROMPTS_FILE, prompts)
        entries = save_arrays(
            staging / TRAINING_DIR,
            {"scores": dataset.scores[val_rows], "costs": np.asarray(costs, dtype=float)},
        )
        training: dict[str, Any] = {"models": list(training_models), "arrays": entries}
        if dataset.answers is not None:
            # Keys are strings or None: JSON, since the arrays are stored without pickles.
            keys = dataset.answers[val_rows].tolist()
            (staging / TRAINING_ANSWERS_FILE).write_text(json.dumps(keys))
            training["answers"] = TRAINING_ANSWERS_FILE
        files = _file_checksums(staging)
        manifest = {
            "kind": "artifact",
            "schema_version": ARTIFACT_SCHEMA_VERSION,
            "artifact_id": _artifact_id(files),
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "encoder": {"id": encoder.id, "dim": int(encoder.dim)},
            "router": {"name": router.name, "params": router.get_params()},
            "n_clusters": None if n_clusters is None else int(n_clusters),
            "n_representative_prompts": len(val_rows),
            "n_training_prompts": len(train_rows),
            "training": training,
            "dataset": {"name": dataset.name, "source": dataset.source},
            "split": {
                "val_fraction": float(val_fraction),
                "seed": int(seed),
                "holdout_models": list(holdout_models),
            },
            "build_seconds": round(time.perf_counter() - started, 3),
            "files": files,
        }
        manifest["manifest_sha256"] = _manifest_checksum(manifest)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    artifact = Artifact.load(out_dir)
    step(f"wrote the artifact {artifact.artifact_id}", 1)
    return artifact
