"""The TF-IDF encoder's direct computation gives sklearn's vectors, on real prompts and odd ones.

``encode()`` tokenises with the vectorizer's own analyzer and sums the projection rows of the
prompt's terms itself; ``encode_with_sklearn()`` is the path it replaced (sklearn's
``TfidfVectorizer.transform``, the projection, ``normalize``). The two must agree to 1e-6 on
every prompt; the batch path (one sparse product, sklearn's own kernel on the same numbers)
must agree exactly, since the evaluation embeds through it.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from uniroute.data.loading import load_dataset
from uniroute.data.paths import default_data_dir
from uniroute.embeddings import CachedEncoder, EmbeddingCache, make_encoder
from uniroute.embeddings.base import inline_char_limit
from uniroute.embeddings.term_index import TOKEN, TermIndex
from uniroute.embeddings.tfidf import _GATHER_MAX_TERMS, TfidfSvdEncoder

TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def routerbench_prompts() -> list[str]:
    """Every RouterBench prompt of the shared data (ARC-Challenge and MBPP, train and test)."""
    dataset = load_dataset(default_data_dir() / "routerbench", "routerbench")
    return [str(text) for text in dataset.prompts]


@pytest.fixture(scope="module")
def default_encoder(routerbench_prompts: list[str]) -> TfidfSvdEncoder:
    """The default encoder (256 components, words and bigrams, sublinear tf) on RouterBench."""
    return TfidfSvdEncoder().fit(routerbench_prompts)


def _odd_texts(prompts: list[str]) -> list[str]:
    known = prompts[0].split()[:3]
    return [
        "",
        "   \n\t  ",
        "?!. , ; a b c 1 2",  # punctuation and one-character tokens only: no term at all
        "zyxwvut qqqqzzz blorptastic",  # unknown words only
        " ".join([known[0]] * 50),  # one word repeated: sublinear tf
        " ".join(known * 7) + " " + known[0].upper(),  # repeats and case
        "Ünïcödé naïve café — Straße İstanbul 東京 タワー 😀 ﬁne e\u0301",  # unicode
        "x" * 10_000,  # one long unknown token
        " ".join(prompts[:100]),  # very long text: more terms than the gathered path takes
    ]


def _max_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max(initial=0.0))


def test_every_routerbench_prompt_embeds_as_sklearn_embeds_it(
    default_encoder: TfidfSvdEncoder, routerbench_prompts: list[str]
) -> None:
    reference = default_encoder.encode_with_sklearn(routerbench_prompts)
    one_by_one = np.vstack([default_encoder.encode([text]) for text in routerbench_prompts])
    batch = default_encoder.encode(routerbench_prompts)
    assert one_by_one.dtype == batch.dtype == np.float32
    assert _max_difference(one_by_one, reference) <= TOLERANCE
    # The same sparse product on the same numbers: identical, so evaluations do not move.
    np.testing.assert_array_equal(batch, reference)


def test_the_shared_arc_artifact_embeds_as_before(arc_artifact, arc_dataset) -> None:
    # The artifact's encoder as loaded from disk (32 components, fitted on ARC training prompts).
    encoder = arc_artifact.encoder
    assert isinstance(encoder, TfidfSvdEncoder)
    prompts = [str(text) for text in arc_dataset.prompts]
    reference = encoder.encode_with_sklearn(prompts)
    one_by_one = np.vstack([encoder.encode([text]) for text in prompts])
    assert _max_difference(one_by_one, reference) <= TOLERANCE
    np.testing.assert_array_equal(encoder.encode(prompts), reference)


def test_odd_texts_embed_as_sklearn_embeds_them(
    default_encoder: TfidfSvdEncoder, routerbench_prompts: list[str]
) -> None:
    texts = _odd_texts(routerbench_prompts)
    # The long text takes the sparse-product path even alone.
    assert len(default_encoder._tfidf_row(texts[-1])[0]) > _GATHER_MAX_TERMS
    reference = default_encoder.encode_with_sklearn(texts)
    for text, expected in zip(texts, reference, strict=True):
        got = default_encoder.encode([text])[0]
        assert _max_difference(got, expected) <= TOLERANCE, text[:60]
    assert _max_difference(default_encoder.encode(texts), reference) <= TOLERANCE
    # No known term: the zero vector, as before.
    for empty in texts[:4] + [texts[7]]:
        assert not default_encoder.encode([empty]).any()
    # Repeating a word changes its weight (1 + log tf) but not the direction of a one-word text.
    word = routerbench_prompts[0].split()[0]
    np.testing.assert_allclose(
        default_encoder.encode([word]), default_encoder.encode([" ".join([word] * 9)]), atol=1e-7
    )


@pytest.mark.parametrize(
    "params",
    [
        {"ngram_range": (1, 1)},
        {"ngram_range": (2, 3)},
        {"ngram_range": (1, 3), "sublinear_tf": False},
        {"sublinear_tf": False, "min_df": 1},
    ],
    ids=["unigrams", "bigrams-trigrams", "raw-tf-trigrams", "raw-tf"],
)
def test_other_settings_embed_as_sklearn_embeds(
    params: dict, routerbench_prompts: list[str]
) -> None:
    train = routerbench_prompts[::4]
    encoder = TfidfSvdEncoder(n_components=24, **params).fit(train)
    texts = routerbench_prompts[1::9] + _odd_texts(routerbench_prompts)[:-1]
    reference = encoder.encode_with_sklearn(texts)
    one_by_one = np.vstack([encoder.encode([text]) for text in texts])
    assert _max_difference(one_by_one, reference) <= TOLERANCE
    assert _max_difference(encoder.encode(texts), reference) <= TOLERANCE


def test_a_reloaded_encoder_embeds_the_same(
    default_encoder: TfidfSvdEncoder, routerbench_prompts: list[str], tmp_path: Path
) -> None:
    # Nothing new is saved: the rows are the saved SVD components, read as before.
    default_encoder.save(tmp_path / "encoder")
    loaded = TfidfSvdEncoder.load(tmp_path / "encoder")
    assert loaded.id == default_encoder.id
    texts = routerbench_prompts[:50]
    np.testing.assert_array_equal(loaded.encode(texts), default_encoder.encode(texts))
    np.testing.assert_array_equal(loaded.encode(texts[:1]), default_encoder.encode(texts[:1]))


def test_only_tfidf_declares_itself_cheap_enough_to_embed_inline(tmp_path: Path) -> None:
    tfidf = TfidfSvdEncoder()
    assert inline_char_limit(tfidf) == TfidfSvdEncoder.inline_max_chars > 0
    assert inline_char_limit(make_encoder("minilm")) == 0
    # A wrapper is its own class: it is not cheap because what it wraps is.
    assert inline_char_limit(CachedEncoder(tfidf, EmbeddingCache(tmp_path))) == 0
    assert inline_char_limit(object()) == 0


def test_the_token_pattern_finds_what_sklearns_finds() -> None:
    sklearn_pattern = re.compile(r"(?u)\b\w\w+\b")
    alphabet = "ab Z_-é\u0301Ü19東😀.\n\t'’ß"
    rng = np.random.default_rng(0)
    for _ in range(5000):
        text = "".join(rng.choice(list(alphabet), size=int(rng.integers(0, 40))))
        assert TOKEN.findall(text) == sklearn_pattern.findall(text), repr(text)


def test_the_term_index_finds_every_term_the_analyzer_finds(
    default_encoder: TfidfSvdEncoder, routerbench_prompts: list[str]
) -> None:
    index = default_encoder._term_index
    assert index is not None
    columns = default_encoder._columns
    for text in routerbench_prompts[::7] + _odd_texts(routerbench_prompts):
        expected = sorted(columns[t] for t in default_encoder._analyze(text) if t in columns)
        assert sorted(index.term_columns(text).tolist()) == expected, text[:60]


def test_a_vocabulary_beyond_bigrams_is_looked_up_term_by_term(
    routerbench_prompts: list[str],
) -> None:
    encoder = TfidfSvdEncoder(n_components=8, ngram_range=(1, 3)).fit(routerbench_prompts[::8])
    assert encoder._term_index is None
    assert not TermIndex.supports(["a b c"], (1, 2))
    assert TermIndex.supports(["a", "a b"], (1, 2))


def test_ascii_and_unicode_texts_find_the_same_terms(default_encoder: TfidfSvdEncoder) -> None:
    index = default_encoder._term_index
    assert index is not None
    columns = default_encoder._columns
    words = [t for t in default_encoder.vocabulary_ if " " not in t][:300]
    pieces = [*words, "a", "I", "_", "x_", "9", "42", " ", "\t", "\n", ".", "-", "\x00", "A1"]
    rng = np.random.default_rng(1)
    for _ in range(2000):
        text = " ".join(rng.choice(pieces, size=int(rng.integers(0, 30))))
        if rng.random() < 0.5:  # glue some pieces together, change case
            text = text.replace(" ", "", int(rng.integers(0, 3))).upper()
        expected = sorted(columns[t] for t in default_encoder._analyze(text) if t in columns)
        assert text.isascii()
        assert sorted(index.term_columns(text).tolist()) == expected, repr(text)
        # The same text with one non-ASCII character added takes the regex path.
        unicode_text = text + " é"
        assert sorted(index.term_columns(unicode_text).tolist()) == expected, repr(text)
