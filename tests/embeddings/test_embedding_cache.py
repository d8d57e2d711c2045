"""EmbeddingCache (SQLite) and CachedEncoder: hits, misses, ordering, concurrency, corruption."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from uniroute.embeddings.base import Encoder
from uniroute.embeddings.cache import CACHE_FILE_NAME, CachedEncoder, EmbeddingCache
from uniroute.errors import StateError


def test_empty_cache_reports_every_text_missing(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    hits, mask = cache.get_many("enc", ["a", "b"])
    assert mask.tolist() == [False, False]
    assert hits.shape == (0, 0)
    assert (tmp_path / CACHE_FILE_NAME).is_file()


def test_put_then_get_returns_hit_rows_in_input_order(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    vectors = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=np.float32)
    cache.put_many("enc", ["first", "second"], vectors)

    hits, mask = cache.get_many("enc", ["second", "absent", "first", "second"])

    assert mask.tolist() == [True, False, True, True]
    assert hits.dtype == np.float32
    np.testing.assert_array_equal(hits, [[4, 5, 6], [1, 2, 3], [4, 5, 6]])


def test_entries_are_separate_per_encoder_id(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    cache.put_many("enc-a", ["text"], np.ones((1, 2), dtype=np.float32))
    _, mask = cache.get_many("enc-b", ["text"])
    assert mask.tolist() == [False]
    assert cache.count("enc-a") == 1 and cache.count("enc-b") == 0


def test_entries_persist_for_a_new_cache_object(tmp_path: Path) -> None:
    EmbeddingCache(tmp_path).put_many("enc", ["kept"], np.full((1, 4), 0.25, dtype=np.float32))
    hits, mask = EmbeddingCache(tmp_path).get_many("enc", ["kept"])
    assert mask.tolist() == [True]
    np.testing.assert_array_equal(hits, [[0.25, 0.25, 0.25, 0.25]])


def test_put_many_rejects_wrong_shape_and_non_finite_vectors(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    with pytest.raises(ValueError, match=r"expected a \(2, dim\) array"):
        cache.put_many("enc", ["a", "b"], np.zeros((3, 4)))
    with pytest.raises(ValueError, match="text 1 holds NaN"):
        cache.put_many("enc", ["a", "b"], np.array([[0.0, 1.0], [np.nan, 1.0]]))
    assert cache.count() == 0


def test_non_string_text_is_named_by_position(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    with pytest.raises(ValueError, match="position 1 is float"):
        cache.get_many("enc", ["fine", float("nan")])


def test_cached_encoder_is_an_encoder_with_the_wrapped_id_and_dim(
    tmp_path: Path, hashing_encoder_class: type
) -> None:
    cached = CachedEncoder(hashing_encoder_class("some-id", dim=5), EmbeddingCache(tmp_path))
    assert isinstance(cached, Encoder)
    assert (cached.id, cached.dim) == ("some-id", 5)


def test_second_call_embeds_nothing(tmp_path: Path, hashing_encoder: Encoder) -> None:
    cached = CachedEncoder(hashing_encoder, EmbeddingCache(tmp_path))
    texts = ["alpha", "beta", "gamma"]

    first = cached.encode(texts)
    second = cached.encode(texts)

    assert hashing_encoder.calls == [texts]
    expected = np.stack([hashing_encoder.vector_for(text) for text in texts])
    np.testing.assert_array_equal(first, expected)
    np.testing.assert_array_equal(second, expected)


def test_only_misses_are_embedded_in_one_batch_and_rows_keep_input_order(
    tmp_path: Path, hashing_encoder: Encoder
) -> None:
    cached = CachedEncoder(hashing_encoder, EmbeddingCache(tmp_path))
    cached.encode(["b", "d"])
    texts = ["a", "b", "c", "a", "d", "e", "c"]

    result = cached.encode(texts)

    # Duplicates within one call are embedded once; cached texts are not embedded again.
    assert hashing_encoder.calls == [["b", "d"], ["a", "c", "e"]]
    expected = np.stack([hashing_encoder.vector_for(text) for text in texts])
    np.testing.assert_array_equal(result, expected)
    assert result.dtype == np.float32


def test_empty_input_gives_an_empty_matrix(tmp_path: Path, hashing_encoder: Encoder) -> None:
    result = CachedEncoder(hashing_encoder, EmbeddingCache(tmp_path)).encode([])
    assert result.shape == (0, 8) and result.dtype == np.float32
    assert hashing_encoder.calls == []


def test_cached_vectors_of_another_length_are_reported(
    tmp_path: Path, hashing_encoder_class: type
) -> None:
    cache = EmbeddingCache(tmp_path)
    cache.put_many("shared-id", ["x"], np.zeros((1, 3), dtype=np.float32))
    cached = CachedEncoder(hashing_encoder_class("shared-id", dim=8), cache)
    with pytest.raises(StateError, match="have length 3, the encoder gives 8"):
        cached.encode(["x"])


def test_encoder_returning_a_wrong_shape_is_reported(
    tmp_path: Path, hashing_encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    def one_row_too_many(texts: list[str], *, show_progress: bool | None = None) -> np.ndarray:
        return np.zeros((len(texts) + 1, 8), dtype=np.float32)

    monkeypatch.setattr(hashing_encoder, "encode", one_row_too_many)
    cached = CachedEncoder(hashing_encoder, EmbeddingCache(tmp_path))
    with pytest.raises(ValueError, match=r"returned shape \(3, 8\) for 2 texts"):
        cached.encode(["a", "b"])


def test_vectors_of_mixed_lengths_under_one_id_are_reported(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    cache.put_many("enc", ["a"], np.ones((1, 2), dtype=np.float32))
    cache.put_many("enc", ["b"], np.ones((1, 3), dtype=np.float32))
    with pytest.raises(StateError, match="mixed byte sizes"):
        cache.get_many("enc", ["a", "b"])


def test_garbage_cache_file_names_the_file_and_how_to_recover(tmp_path: Path) -> None:
    (tmp_path / CACHE_FILE_NAME).write_bytes(b"this is not an SQLite database at all" * 200)
    with pytest.raises(StateError) as excinfo:
        EmbeddingCache(tmp_path)
    message = str(excinfo.value)
    assert str(tmp_path / CACHE_FILE_NAME) in message
    assert "delete it" in message


def test_cache_file_corrupted_after_opening_is_reported(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    cache.put_many("enc", ["a"], np.ones((1, 2), dtype=np.float32))
    for leftover in tmp_path.glob(f"{CACHE_FILE_NAME}-*"):
        leftover.unlink()
    (tmp_path / CACHE_FILE_NAME).write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(StateError, match="not a readable embedding cache"):
        cache.get_many("enc", ["a"])


def test_threads_sharing_one_cached_encoder(tmp_path: Path, hashing_encoder: Encoder) -> None:
    cached = CachedEncoder(hashing_encoder, EmbeddingCache(tmp_path))
    errors: list[BaseException] = []
    results: dict[int, np.ndarray] = {}

    def work(worker: int) -> None:
        try:
            texts = [f"text {i}" for i in range(worker, worker + 40)]
            results[worker] = cached.encode(texts)
        except BaseException as exc:  # collected so the main thread can fail loudly
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    for worker, result in results.items():
        texts = [f"text {i}" for i in range(worker, worker + 40)]
        expected = np.stack([hashing_encoder.vector_for(text) for text in texts])
        np.testing.assert_array_equal(result, expected)


_WRITER_SCRIPT = textwrap.dedent(
    """
    import importlib.util, sys, time
    spec = importlib.util.spec_from_file_location("embedding_test_helpers", sys.argv[1])
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    from uniroute.embeddings.cache import CachedEncoder, EmbeddingCache

    cache_dir, worker, start_at = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    # Both processes create the same fresh cache files at the same instant, so that their
    # first-time setups race as well as their writes.
    time.sleep(max(0.0, start_at - time.time()))
    for attempt in range(40):
        EmbeddingCache(f"{cache_dir}/fresh-{attempt}")
    encoder = CachedEncoder(helpers.HashingEncoder(), EmbeddingCache(cache_dir))
    for round_ in range(30):
        # Half the texts are shared by both processes, half are this process's own.
        texts = [f"shared {round_} {i}" for i in range(10)]
        texts += [f"worker {worker} {round_} {i}" for i in range(10)]
        vectors = encoder.encode(texts)
        for text, vector in zip(texts, vectors):
            assert (vector == helpers.HashingEncoder.vector_for(text)).all(), text
    print("ok")
    """
)


def test_two_processes_write_the_same_cache_at_once(
    tmp_path: Path, hashing_encoder: Encoder
) -> None:
    helpers = Path(__file__).with_name("conftest.py")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    start_at = time.time() + 1.5
    writers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WRITER_SCRIPT,
                str(helpers),
                str(tmp_path),
                str(worker),
                repr(start_at),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for worker in range(2)
    ]
    outputs = [writer.communicate(timeout=120) for writer in writers]

    for writer, (stdout, stderr) in zip(writers, outputs, strict=True):
        assert writer.returncode == 0, stderr
        assert stdout.strip() == "ok"
    cache = EmbeddingCache(tmp_path)
    assert cache.count("hashing-8") == 30 * 10 + 2 * 30 * 10
    texts = [f"shared 29 {i}" for i in range(10)] + [f"worker 1 0 {i}" for i in range(10)]
    hits, mask = cache.get_many("hashing-8", texts)
    assert mask.all()
    expected = np.stack([hashing_encoder.vector_for(text) for text in texts])
    np.testing.assert_array_equal(hits, expected)
