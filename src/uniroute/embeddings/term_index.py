r"""Finding a text's TF-IDF terms by token ids, without building a string per word bigram.

sklearn's word analyzer lowercases a text, finds its tokens and joins each pair of neighbours
into a bigram string, which is then looked up in the vocabulary. For a prompt of a few hundred
words most of that time goes into the bigram strings. :class:`TermIndex` numbers every word the
vocabulary uses, so a text's tokens become one array of ids (unknown words are -1), its unigram
terms one array lookup, and its bigram terms a sorted search of ``id(a) * n_words + id(b)``
codes: the same terms, found as arrays. A text of ASCII characters only (nearly every prompt)
is tokenised by one byte translation and a split instead of the regular expression: for ASCII,
``\w`` is exactly ``[A-Za-z0-9_]``, so mapping every other byte to a space, folding the case
and dropping one-character words finds the same tokens, five times faster.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import repeat

import numpy as np

#: TfidfVectorizer's default token pattern ``(?u)\b\w\w+\b``, written so the regex engine does
#: not test word boundaries: a greedy run of two or more word characters always starts and
#: ends at one, so both find the same tokens (a test checks it).
TOKEN = re.compile(r"\w{2,}")
_ASCII_WORD_BYTES = b"abcdefghijklmnopqrstuvwxyz0123456789_"
#: Byte translation of ASCII text: word characters lowercased, every other byte a space.
_ASCII_FOLD = bytes(
    byte if byte in _ASCII_WORD_BYTES else byte + 32 if 65 <= byte <= 90 else 32
    for byte in range(256)
)
# The id given to a one-character ASCII word: not a token (the pattern wants two characters),
# so it is dropped before bigrams are formed, as sklearn's analyzer never sees it.
_TOO_SHORT = -2


class TermIndex:
    """The vocabulary's words and bigrams by token id; for ``ngram_range`` within (1, 2)."""

    def __init__(self, vocabulary: Sequence[str]) -> None:
        words: dict[str, int] = {}
        for term in vocabulary:
            for word in term.split(" "):
                words.setdefault(word, len(words))
        n_words = len(words)
        unigram_column = np.full(n_words, -1, dtype=np.intp)
        codes, bigram_columns = [], []
        for column, term in enumerate(vocabulary):
            first, _, second = term.partition(" ")
            if second:
                codes.append(words[first] * n_words + words[second])
                bigram_columns.append(column)
            else:
                unigram_column[words[first]] = column
        order = np.argsort(np.array(codes, dtype=np.int64), kind="stable")
        self._word_id = words.get
        ascii_words = {word.encode(): i for word, i in words.items() if word.isascii()}
        ascii_words.update({bytes([byte]): _TOO_SHORT for byte in _ASCII_WORD_BYTES})
        self._ascii_word_id = ascii_words.get
        self._n_words = n_words
        self._unigram_column = unigram_column
        self._bigram_codes = np.array(codes, dtype=np.int64)[order]
        self._bigram_columns = np.array(bigram_columns, dtype=np.intp)[order]

    @staticmethod
    def supports(vocabulary: Sequence[str], ngram_range: tuple[int, int]) -> bool:
        """Whether terms of this vocabulary can be found by the index: words and bigrams only."""
        return ngram_range[1] <= 2 and all(term.count(" ") <= 1 for term in vocabulary)

    def term_columns(self, text: str) -> np.ndarray:
        """The vocabulary column of every term occurrence in ``text`` (unsorted, repeated)."""
        if text.isascii():
            words = text.encode("ascii").translate(_ASCII_FOLD).split()
            ids = np.fromiter(map(self._ascii_word_id, words, repeat(-1)), np.int64, len(words))
            ids = ids[ids != _TOO_SHORT]
        else:
            tokens = TOKEN.findall(text.lower())
            ids = np.fromiter(map(self._word_id, tokens, repeat(-1)), np.int64, len(tokens))
        known = ids >= 0
        unigrams = self._unigram_column[ids[known]]
        unigrams = unigrams[unigrams >= 0]
        codes = self._bigram_codes
        if len(ids) < 2 or not len(codes):
            return unigrams
        pairs = known[:-1] & known[1:]
        wanted = ids[:-1][pairs] * self._n_words + ids[1:][pairs]
        found = np.searchsorted(codes, wanted)
        found[found == len(codes)] = 0
        hits = found[codes[found] == wanted]
        return np.concatenate([unigrams, self._bigram_columns[hits]])
