"""make_encoder / load_encoder / cached: names, params, round trips and the default cache folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from uniroute.embeddings import ENCODERS, CachedEncoder, cached, load_encoder, make_encoder
from uniroute.embeddings.base import Encoder
from uniroute.embeddings.cache import CACHE_FILE_NAME
from uniroute.embeddings.minilm import MiniLMEncoder
from uniroute.embeddings.tfidf import TfidfSvdEncoder
from uniroute.errors import StateError

TEXTS = ["the cat sat", "the dog sat", "a cat and a dog", "stock prices fell", "prices rose"]


def test_registered_names() -> None:
    assert {"minilm", "tfidf"} <= set(ENCODERS)


def test_make_encoder_builds_each_type_with_params() -> None:
    assert isinstance(make_encoder("minilm", max_tokens=128), MiniLMEncoder)
    tfidf = make_encoder("tfidf", n_components=8)
    assert isinstance(tfidf, TfidfSvdEncoder) and tfidf.n_components == 8


def test_unknown_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown encoder 'bert'; valid names: minilm, tfidf"):
        make_encoder("bert")


def test_unknown_param_is_named_with_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="no parameter 'n_dims'.*n_components"):
        make_encoder("tfidf", n_dims=8)


def test_load_encoder_round_trips_tfidf(tmp_path: Path) -> None:
    encoder = make_encoder("tfidf", n_components=3, min_df=1).fit(TEXTS)
    encoder.save(tmp_path / "enc")
    loaded = load_encoder(tmp_path / "enc")
    assert isinstance(loaded, TfidfSvdEncoder) and loaded.id == encoder.id
    np.testing.assert_array_equal(loaded.encode(TEXTS), encoder.encode(TEXTS))


def test_load_encoder_round_trips_minilm_spec(tmp_path: Path) -> None:
    make_encoder("minilm", truncate="right").save(tmp_path / "enc")
    loaded = load_encoder(tmp_path / "enc")
    assert isinstance(loaded, MiniLMEncoder) and loaded.truncate == "right"


def test_load_encoder_without_a_manifest(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="no manifest"):
        load_encoder(tmp_path)


def test_load_encoder_with_an_unknown_type(tmp_path: Path) -> None:
    make_encoder("minilm").save(tmp_path / "enc")
    manifest_path = tmp_path / "enc" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["encoder"] = "word2vec"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(StateError, match="unknown encoder 'word2vec'"):
        load_encoder(tmp_path / "enc")


def test_load_encoder_with_bad_params(tmp_path: Path) -> None:
    make_encoder("minilm").save(tmp_path / "enc")
    manifest_path = tmp_path / "enc" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["params"]["truncate"] = "middle"
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(StateError, match="manifest.json: bad encoder params"):
        load_encoder(tmp_path / "enc")


def test_cached_uses_the_project_cache_folder_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hashing_encoder: Encoder
) -> None:
    monkeypatch.setenv("UNIROUTE_CACHE", str(tmp_path / "cache-root"))
    wrapped = cached(hashing_encoder)
    assert wrapped.cache.path == tmp_path / "cache-root" / "embeddings" / CACHE_FILE_NAME
    assert wrapped.cache.path.is_file()


def test_cached_does_not_nest(tmp_path: Path, hashing_encoder: Encoder) -> None:
    inner = hashing_encoder
    once = cached(inner, tmp_path / "a")
    twice = cached(once, tmp_path / "b")
    assert isinstance(twice, CachedEncoder) and twice.encoder is inner
    assert twice.cache.directory == tmp_path / "b"


def test_cached_tfidf_serves_repeats_from_disk(tmp_path: Path) -> None:
    encoder = make_encoder("tfidf", n_components=3, min_df=1).fit(TEXTS)
    first = cached(encoder, tmp_path).encode(TEXTS)
    reopened = cached(encoder, tmp_path)
    assert reopened.cache.count(encoder.id) == len(TEXTS)
    np.testing.assert_array_equal(reopened.encode(TEXTS), first)
    np.testing.assert_array_equal(first, encoder.encode(TEXTS))
