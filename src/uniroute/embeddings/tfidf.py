"""TF-IDF + truncated SVD (LSA) embeddings: fast, dependency-light, fitted on training prompts.

Embedding a prompt is sklearn's ``TfidfVectorizer.transform`` followed by the SVD projection and
an L2 normalisation, but computed directly: the prompt's terms (the ones sklearn's analyzer
finds, located by token id: :mod:`uniroute.embeddings.term_index`) are weighted
``(1 + log tf) * idf`` exactly as sklearn weights them, and the few rows of the projection they
select are summed in one product. A batch goes through one sparse product, the same kernel on
the same numbers as the sklearn path (``encode_with_sklearn``), so its vectors are identical; a
lone prompt's vector is within 1e-6 of it (only the summation order differs). sklearn's
per-call input checks and sparse-matrix set-up, which cost most of the time for one prompt, are
skipped.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from uniroute._io import atomic_write_bytes, load_arrays, save_arrays, sha256_file
from uniroute.embeddings._common import (
    as_text_list,
    encoder_from_params,
    read_encoder_manifest,
    staged_encoder_directory,
    write_encoder_manifest,
)
from uniroute.embeddings.term_index import TermIndex
from uniroute.errors import StateError

VOCABULARY_FILE = "vocabulary.json"

#: A lone text with at most this many distinct known terms is projected by gathering their rows
#: of the projection (no sparse matrix to set up); longer texts and batches use one sparse
#: product, which never copies rows.
_GATHER_MAX_TERMS = 2048
#: sklearn's normalize() leaves a row whose norm is below this unscaled (as if zero).
_TINY_NORM = 10 * np.finfo(np.float64).eps


class TfidfSvdEncoder:
    """Word/bigram TF-IDF projected onto its top singular vectors, then L2-normalised.

    ``n_components`` is clamped to what the training data allows (at most the number of
    training texts and of terms); the value used is ``n_components_``. A text with no term of
    the vocabulary embeds as the zero vector.
    """

    name = "tfidf"
    #: Texts up to this many characters embed in about a millisecond or less (0.1 ms for a
    #: 200-token prompt): cheap enough to embed on an event loop rather than in a worker thread
    #: (see ``uniroute.embeddings.base.inline_char_limit``).
    inline_max_chars: ClassVar[int] = 8000

    def __init__(
        self,
        n_components: int = 256,
        max_features: int | None = 50000,
        ngram_range: tuple[int, int] = (1, 2),
        min_df: int | float = 2,
        sublinear_tf: bool = True,
        random_state: int = 0,
    ) -> None:
        self.n_components = n_components
        self.max_features = max_features
        self.ngram_range = ngram_range
        self.min_df = min_df
        self.sublinear_tf = sublinear_tf
        self.random_state = random_state
        self._check_params()

    def _check_params(self) -> None:
        if not _is_int(self.n_components) or self.n_components < 1:
            raise ValueError(f"n_components must be a positive integer, got {self.n_components!r}")
        if self.max_features is not None and (
            not _is_int(self.max_features) or self.max_features < 1
        ):
            raise ValueError(
                f"max_features must be a positive integer or None, got {self.max_features!r}"
            )
        ngram_range = tuple(self.ngram_range) if isinstance(self.ngram_range, list | tuple) else ()
        if len(ngram_range) != 2 or not all(_is_int(n) and n >= 1 for n in ngram_range):
            raise ValueError(
                f"ngram_range must be (min_n, max_n) integers, not {self.ngram_range!r}"
            )
        if ngram_range[0] > ngram_range[1]:
            raise ValueError(f"ngram_range must have min_n <= max_n, got {self.ngram_range!r}")
        self.ngram_range = (int(ngram_range[0]), int(ngram_range[1]))
        min_df_ok = (_is_int(self.min_df) and self.min_df >= 1) or (
            isinstance(self.min_df, float) and 0.0 <= self.min_df <= 1.0
        )
        if not min_df_ok:
            raise ValueError(
                f"min_df must be a count >= 1 or a fraction in [0, 1], got {self.min_df!r}"
            )
        if not isinstance(self.sublinear_tf, bool):
            raise ValueError(f"sublinear_tf must be True or False, got {self.sublinear_tf!r}")
        if not _is_int(self.random_state):
            raise ValueError(f"random_state must be an integer, got {self.random_state!r}")

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters, as saved in the spec."""
        return {
            "n_components": self.n_components,
            "max_features": self.max_features,
            "ngram_range": self.ngram_range,
            "min_df": self.min_df,
            "sublinear_tf": self.sublinear_tf,
            "random_state": self.random_state,
        }

    @property
    def is_fitted(self) -> bool:
        """Whether fit() (or load()) has set the vocabulary, idf and SVD components."""
        return hasattr(self, "components_")

    @property
    def id(self) -> str:
        """'tfidf-svd-<n>-<hash of the fitted state>'; distinct fits never share an id."""
        self._check_fitted("id")
        return f"tfidf-svd-{self.n_components_}-{self.state_hash_[:12]}"

    @property
    def dim(self) -> int:
        """Length of each embedding (the clamped number of SVD components)."""
        self._check_fitted("dim")
        return self.n_components_

    def fit(self, texts: Sequence[str]) -> TfidfSvdEncoder:
        """Learn the vocabulary, idf weights and SVD basis from training prompts."""
        # sklearn is needed to fit, not to encode: loading an artifact and routing stay light.
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        text_list = as_text_list(texts)
        if not text_list:
            raise ValueError("cannot fit the TF-IDF encoder on zero texts")
        vectorizer = TfidfVectorizer(
            max_features=self.max_features,
            ngram_range=self.ngram_range,
            min_df=self.min_df,
            sublinear_tf=self.sublinear_tf,
            dtype=np.float64,
        )
        try:
            tfidf = vectorizer.fit_transform(text_list)
        except ValueError as exc:
            raise ValueError(
                f"TF-IDF found no usable terms in the {len(text_list)} training texts with "
                f"min_df={self.min_df!r} ({exc}); fit on more texts or lower min_df"
            ) from None
        n_components = min(self.n_components, *tfidf.shape)
        svd = TruncatedSVD(n_components=n_components, random_state=self.random_state)
        svd.fit(tfidf)
        terms = vectorizer.get_feature_names_out().tolist()
        self._set_state(terms, vectorizer.idf_, svd.components_)
        return self

    def encode(self, texts: Sequence[str], *, show_progress: bool | None = None) -> np.ndarray:
        """Embed texts as a (len(texts), dim) float32 array; fast enough to need no progress bar."""
        self._check_fitted("encode")
        text_list = as_text_list(texts)
        if not text_list:
            return np.zeros((0, self.n_components_), dtype=np.float32)
        rows = [self._tfidf_row(text) for text in text_list]
        if len(rows) == 1 and len(rows[0][0]) <= _GATHER_MAX_TERMS:
            columns, weights = rows[0]
            # One BLAS product over the gathered rows: within 1e-15 of the sparse product.
            projected = (weights @ self._projection.take(columns, axis=0))[None, :]
        else:
            from scipy.sparse import csr_matrix

            indptr = np.zeros(len(rows) + 1, dtype=np.int64)
            np.cumsum([len(columns) for columns, _ in rows], out=indptr[1:])
            tfidf = csr_matrix(
                (
                    np.concatenate([weights for _, weights in rows]),
                    np.concatenate([columns for columns, _ in rows]),
                    indptr,
                ),
                shape=(len(rows), len(self.vocabulary_)),
            )
            projected = np.asarray(tfidf @ self._projection)
        return _normalize_dense_rows(projected).astype(np.float32)

    def encode_with_sklearn(self, texts: Sequence[str]) -> np.ndarray:
        """encode() computed by sklearn's TfidfVectorizer.transform: the slower reference."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.preprocessing import normalize

        self._check_fitted("encode")
        text_list = as_text_list(texts)
        if not text_list:
            return np.zeros((0, self.n_components_), dtype=np.float32)
        vectorizer = TfidfVectorizer(
            vocabulary=self._columns,
            ngram_range=self.ngram_range,
            sublinear_tf=self.sublinear_tf,
            dtype=np.float64,
        )
        vectorizer.idf_ = self.idf_
        tfidf = vectorizer.transform(text_list)
        projected = np.asarray(tfidf @ self._projection)
        return normalize(projected).astype(np.float32)

    def _tfidf_row(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The text's row of TfidfVectorizer.transform: its sorted term columns and weights."""
        if self._term_index is not None:
            found = self._term_index.term_columns(text)
        else:
            lookup = self._columns.get
            terms = map(lookup, self._analyze(text))
            found = np.array([column for column in terms if column is not None], dtype=np.intp)
        columns, counts = np.unique(found, return_counts=True)
        weights = counts.astype(np.float64)
        if self.sublinear_tf:
            np.log(weights, out=weights)
            weights += 1.0
        weights *= self.idf_[columns]
        # sklearn scales the row to unit L2 norm, summing the squares in order; the final
        # normalisation would cancel this scale, but keeping it keeps every rounding the same.
        if len(weights):
            norm = float(np.sqrt(np.cumsum(weights * weights)[-1]))
            if norm != 0.0:
                weights /= norm
        return columns, weights

    def save(self, directory: Path) -> None:
        """Write the spec, the vocabulary as JSON and idf/components as checksummed .npy files."""
        self._check_fitted("save")
        vocabulary_bytes = json.dumps(self.vocabulary_, ensure_ascii=False).encode("utf-8")
        with staged_encoder_directory(directory) as staging:
            atomic_write_bytes(staging / VOCABULARY_FILE, vocabulary_bytes)
            arrays = save_arrays(staging, {"idf": self.idf_, "components": self.components_})
            write_encoder_manifest(
                staging,
                self.name,
                self.get_params(),
                self.id,
                vocabulary={
                    "file": VOCABULARY_FILE,
                    "sha256": sha256_file(staging / VOCABULARY_FILE),
                },
                arrays=arrays,
                state_sha256=self.state_hash_,
                sklearn_version=_sklearn_version(),
            )

    @classmethod
    def load(cls, directory: Path) -> TfidfSvdEncoder:
        """Rebuild a fitted encoder from save(); its encode() matches the saved one bit for bit."""
        directory = Path(directory)
        manifest = read_encoder_manifest(directory, expected_name=cls.name)
        encoder = encoder_from_params(cls, directory, manifest["params"])
        try:
            vocabulary_entry = manifest["vocabulary"]
            array_entries = manifest["arrays"]
            saved_hash = manifest["state_sha256"]
        except KeyError as exc:
            raise StateError(f"{directory / 'manifest.json'}: missing field {exc}") from None
        arrays = load_arrays(directory, array_entries)
        if set(arrays) != {"idf", "components"}:
            raise StateError(
                f"{directory / 'manifest.json'}: expected arrays idf and components, "
                f"found {sorted(arrays)}"
            )
        vocabulary = _read_vocabulary(directory, vocabulary_entry)
        encoder._set_state(vocabulary, arrays["idf"], arrays["components"], directory=directory)
        if encoder.state_hash_ != saved_hash:
            raise StateError(
                f"{directory}: fitted state does not match the hash in its manifest; "
                "the files were modified"
            )
        return encoder

    def _set_state(
        self,
        vocabulary: list[str],
        idf: np.ndarray,
        components: np.ndarray,
        directory: Path | None = None,
    ) -> None:
        """Install fitted state; fit() and load() both end here, so both encode identically."""
        where = f"{directory}: " if directory is not None else ""
        idf = np.ascontiguousarray(idf, dtype=np.float64)
        components = np.asarray(components, dtype=np.float64)
        n_terms = len(vocabulary)
        if idf.shape != (n_terms,):
            raise StateError(f"{where}idf has shape {idf.shape}, expected ({n_terms},)")
        if components.ndim != 2 or components.shape[1] != n_terms or components.shape[0] < 1:
            raise StateError(
                f"{where}SVD components have shape {components.shape}, expected (k, {n_terms})"
            )
        if len(set(vocabulary)) != n_terms:
            raise StateError(f"{where}the vocabulary has duplicate terms")
        if not (np.isfinite(idf).all() and np.isfinite(components).all()):
            raise StateError(f"{where}idf or SVD components hold NaN or infinite values")
        columns = {term: column for column, term in enumerate(vocabulary)}
        # The analyzer TfidfVectorizer builds with the settings fit() uses (lowercasing, its
        # token pattern, word n-grams), so that encode() finds exactly the terms transform()
        # finds; written out, so that loading an artifact needs no sklearn.
        self._analyze = word_analyzer(self.ngram_range)
        self._columns: dict[str, int] = columns
        self._term_index = (
            TermIndex(vocabulary) if TermIndex.supports(vocabulary, self.ngram_range) else None
        )
        self.vocabulary_ = list(vocabulary)
        self.idf_ = idf
        # Sparse @ dense is ~100x faster with the dense side C-contiguous (terms x components);
        # components_ stays available as a view of it, so the matrix is held once.
        self._projection = np.ascontiguousarray(components.T)
        self.components_ = self._projection.T
        self.n_components_ = int(components.shape[0])
        self.state_hash_ = _hash_state(self.get_params(), self.vocabulary_, idf, components)

    def _check_fitted(self, action: str) -> None:
        if not self.is_fitted:
            raise ValueError(
                f"TfidfSvdEncoder has no {action} before fit(): fit it on training prompts first "
                "(or load a saved one)"
            )

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.get_params().items())
        return f"TfidfSvdEncoder({params})"


#: TfidfVectorizer's default token_pattern: words of two or more word characters.
_TOKEN = re.compile(r"(?u)\b\w\w+\b")


def word_analyzer(ngram_range: tuple[int, int]) -> Callable[[str], list[str]]:
    """The terms TfidfVectorizer's default word analyzer finds in a text (lowercased tokens,
    then word n-grams over ``ngram_range``), without sklearn."""
    min_n, max_n = ngram_range

    def analyze(text: str) -> list[str]:
        tokens = _TOKEN.findall(text.lower())
        if max_n == 1:
            return tokens
        terms = list(tokens) if min_n == 1 else []
        for n in range(max(min_n, 2), min(max_n, len(tokens)) + 1):
            terms.extend(" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
        return terms

    return analyze


def _sklearn_version() -> str:
    """The scikit-learn version that fitted the encoder (recorded in its manifest)."""
    import sklearn

    return str(sklearn.__version__)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _normalize_dense_rows(X: np.ndarray) -> np.ndarray:
    """sklearn's normalize(X) for a dense float64 array, without its input checks (in place)."""
    norms = np.sqrt(np.einsum("ij,ij->i", X, X))
    norms[norms < _TINY_NORM] = 1.0
    X /= norms[:, None]
    return X


def _hash_state(
    params: dict[str, Any], vocabulary: list[str], idf: np.ndarray, components: np.ndarray
) -> str:
    """SHA-256 over everything that determines encode(): params, terms and both arrays."""
    digest = hashlib.sha256()
    digest.update(json.dumps(params, sort_keys=True).encode())
    digest.update(json.dumps(vocabulary, ensure_ascii=False).encode("utf-8"))
    for array in (idf, components):
        digest.update(str(array.shape).encode())
        digest.update(array.astype("<f8", copy=False).tobytes())
    return digest.hexdigest()


def _read_vocabulary(directory: Path, entry: Any) -> list[str]:
    """Read the checksummed vocabulary JSON (a list of terms in column order)."""
    try:
        path = directory / entry["file"]
        expected_sha256 = entry["sha256"]
    except (TypeError, KeyError):
        raise StateError(f"{directory / 'manifest.json'}: malformed 'vocabulary' entry") from None
    if not path.is_file():
        raise StateError(f"{path}: missing (listed in the manifest as the vocabulary)")
    if sha256_file(path) != expected_sha256:
        raise StateError(f"{path}: checksum mismatch; the file is truncated or was modified")
    try:
        vocabulary = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StateError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(vocabulary, list) or not all(isinstance(term, str) for term in vocabulary):
        raise StateError(f"{path}: expected a JSON list of terms")
    return vocabulary
