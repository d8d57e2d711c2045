"""TfidfSvdEncoder: fit/encode, clamping, ids tied to the fitted state, exact save/load."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from uniroute.embeddings.base import Encoder
from uniroute.embeddings.tfidf import TfidfSvdEncoder
from uniroute.errors import StateError

CORPUS = [
    "the cat sat on the mat",
    "the dog sat on the log",
    "a cat and a dog played in the garden",
    "stock prices fell as markets closed lower",
    "markets rallied and stock prices rose",
    "the garden had roses and a small pond",
    "investors sold stock when prices fell",
    "the dog chased the cat around the garden",
]


@pytest.fixture
def fitted() -> TfidfSvdEncoder:
    """A small encoder fitted on CORPUS."""
    return TfidfSvdEncoder(n_components=4, min_df=1).fit(CORPUS)


def test_is_an_encoder_with_unit_float32_rows(fitted: TfidfSvdEncoder) -> None:
    assert isinstance(fitted, Encoder)
    vectors = fitted.encode(["the cat and the dog", "stock markets fell"])
    assert vectors.shape == (2, 4) and fitted.dim == 4
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-6)


def test_similar_texts_are_closer_than_unrelated_ones(fitted: TfidfSvdEncoder) -> None:
    pets, more_pets, finance = fitted.encode(
        ["the cat sat with the dog", "a dog and a cat in the garden", "stock prices fell"]
    )
    assert pets @ more_pets > pets @ finance


def test_word_order_does_not_matter_with_unigrams() -> None:
    encoder = TfidfSvdEncoder(n_components=3, ngram_range=(1, 1), min_df=1).fit(CORPUS)
    forward, backward = encoder.encode(["cat garden dog", "dog cat garden"])
    np.testing.assert_array_equal(forward, backward)


def test_text_with_no_known_term_embeds_as_zero(fitted: TfidfSvdEncoder) -> None:
    (vector,) = fitted.encode(["zebra quantum xylophone"])
    np.testing.assert_array_equal(vector, np.zeros(4, dtype=np.float32))


def test_n_components_is_clamped_to_the_number_of_texts() -> None:
    encoder = TfidfSvdEncoder(n_components=256, min_df=1).fit(CORPUS[:3])
    assert encoder.n_components_ == 3 and encoder.dim == 3
    assert encoder.encode(["cat"]).shape == (1, 3)
    assert encoder.id.startswith("tfidf-svd-3-")


def test_n_components_is_clamped_to_the_number_of_terms() -> None:
    encoder = TfidfSvdEncoder(n_components=256, ngram_range=(1, 1), min_df=1)
    encoder.fit(["red green", "green blue", "blue red", "red red"])
    assert encoder.dim == 3  # three distinct terms, four texts


def test_id_format_and_determinism(fitted: TfidfSvdEncoder) -> None:
    assert re.fullmatch(r"tfidf-svd-4-[0-9a-f]{12}", fitted.id)
    refit = TfidfSvdEncoder(n_components=4, min_df=1).fit(CORPUS)
    assert refit.id == fitted.id
    np.testing.assert_array_equal(refit.encode(CORPUS), fitted.encode(CORPUS))


def test_id_changes_with_the_training_texts(fitted: TfidfSvdEncoder) -> None:
    other = TfidfSvdEncoder(n_components=4, min_df=1).fit([*CORPUS[:-1], "a different text"])
    assert other.id != fitted.id


def test_unfitted_encoder_refuses_to_encode() -> None:
    encoder = TfidfSvdEncoder()
    with pytest.raises(ValueError, match=r"fit\(\)"):
        encoder.encode(["text"])
    with pytest.raises(ValueError, match=r"fit\(\)"):
        _ = encoder.id
    with pytest.raises(ValueError, match=r"fit\(\)"):
        encoder.save(Path("unused"))


def test_fit_with_no_surviving_terms_explains_min_df() -> None:
    with pytest.raises(ValueError, match="min_df=2"):
        TfidfSvdEncoder().fit(["only once", "each word here"])
    with pytest.raises(ValueError, match="zero texts"):
        TfidfSvdEncoder().fit([])


def test_bad_params_are_rejected_at_construction() -> None:
    with pytest.raises(ValueError, match="n_components"):
        TfidfSvdEncoder(n_components=0)
    with pytest.raises(ValueError, match="ngram_range"):
        TfidfSvdEncoder(ngram_range=(2, 1))
    with pytest.raises(ValueError, match="min_df"):
        TfidfSvdEncoder(min_df=-1)


def test_save_load_reproduces_encode_bit_for_bit(fitted: TfidfSvdEncoder, tmp_path: Path) -> None:
    texts = [*CORPUS, "an unseen sentence about a cat", "zebra"]
    fitted.save(tmp_path / "encoder")

    loaded = TfidfSvdEncoder.load(tmp_path / "encoder")

    assert loaded.id == fitted.id
    assert loaded.get_params() == fitted.get_params()
    assert loaded.encode(texts).tobytes() == fitted.encode(texts).tobytes()


def test_saved_state_is_json_and_npy_only(fitted: TfidfSvdEncoder, tmp_path: Path) -> None:
    fitted.save(tmp_path / "encoder")
    names = sorted(path.name for path in (tmp_path / "encoder").iterdir())
    assert names == ["components.npy", "idf.npy", "manifest.json", "vocabulary.json"]
    vocabulary = json.loads((tmp_path / "encoder" / "vocabulary.json").read_text())
    assert set(vocabulary) == set(fitted.vocabulary_) and "cat" in vocabulary
    for name in ("components.npy", "idf.npy"):
        np.load(tmp_path / "encoder" / name, allow_pickle=False)


def test_load_detects_a_modified_array(fitted: TfidfSvdEncoder, tmp_path: Path) -> None:
    fitted.save(tmp_path / "encoder")
    np.save(tmp_path / "encoder" / "idf.npy", fitted.idf_ * 2.0)
    with pytest.raises(StateError, match="idf.npy: checksum mismatch"):
        TfidfSvdEncoder.load(tmp_path / "encoder")


def test_load_detects_a_modified_vocabulary(fitted: TfidfSvdEncoder, tmp_path: Path) -> None:
    fitted.save(tmp_path / "encoder")
    path = tmp_path / "encoder" / "vocabulary.json"
    path.write_text(json.dumps(list(reversed(fitted.vocabulary_))))
    with pytest.raises(StateError, match="vocabulary.json: checksum mismatch"):
        TfidfSvdEncoder.load(tmp_path / "encoder")


def test_save_replaces_an_older_save(fitted: TfidfSvdEncoder, tmp_path: Path) -> None:
    TfidfSvdEncoder(n_components=2, min_df=1).fit(CORPUS).save(tmp_path / "encoder")
    fitted.save(tmp_path / "encoder")
    assert TfidfSvdEncoder.load(tmp_path / "encoder").id == fitted.id


def test_save_refuses_to_replace_a_directory_of_other_files(
    fitted: TfidfSvdEncoder, tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(StateError, match="not a saved encoder"):
        fitted.save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_on_real_prompts_defaults_give_256_dimensions() -> None:
    from uniroute.data.paths import default_data_dir

    path = default_data_dir() / "routerdc7" / "arc_challenge_test.json"
    if not path.is_file():
        pytest.fail(f"shared routerdc7 data not found at {path} (set UNIROUTE_DATA)")
    questions = [record["question"] for record in json.loads(path.read_text())]
    assert len(questions) > 350
    encoder = TfidfSvdEncoder().fit(questions[:300])
    vectors = encoder.encode(questions[300:350])
    assert encoder.dim == 256 and vectors.shape == (50, 256)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
