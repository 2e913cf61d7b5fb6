"""Deterministic text tokenizers: a closed-vocabulary word tokenizer and a byte tokenizer.

Both map a list of strings to int32 ``[N, max_len]`` with 0 as padding, and back.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

PAD, UNK, BOS, EOS = 0, 1, 2, 3
SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")


def _words(text: str) -> list[str]:
    return text.lower().split()


class WordTokenizer:
    """Whitespace word tokenizer over a fixed vocabulary.

    Ids: 0 ``<pad>``, 1 ``<unk>``, 2 ``<bos>``, 3 ``<eos>``, then the distinct lower-cased
    words in sorted order (so the mapping depends only on the word set).
    """

    def __init__(self, words: Iterable[str]):
        vocab = sorted({w.lower() for w in words} - set(SPECIALS))
        for w in vocab:
            if not w or any(ch.isspace() for ch in w):
                raise ValueError(f"WordTokenizer: invalid word {w!r} (empty or contains whitespace)")
        self.words: tuple[str, ...] = SPECIALS + tuple(vocab)
        self._ids = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "WordTokenizer":
        """Builds the vocabulary from every word occurring in ``texts``."""
        return cls(w for t in texts for w in _words(t))

    @property
    def vocab_size(self) -> int:
        return len(self.words)

    def max_length(self, texts: Iterable[str]) -> int:
        """Token length (with ``<bos>``/``<eos>``) of the longest of ``texts``."""
        return max((len(_words(t)) + 2 for t in texts), default=2)

    def encode(self, texts: Sequence[str], max_len: int, add_bos: bool = True,
               add_eos: bool = True) -> np.ndarray:
        """``texts`` -> int32 ``[N, max_len]``: ``<bos> w1 .. wn <eos>`` then 0-padding.

        Unknown words map to ``<unk>``; longer sequences are truncated to ``max_len``.
        """
        if isinstance(texts, str):
            raise TypeError("WordTokenizer.encode expects a list of strings, got one str")
        if max_len <= 0:
            raise ValueError(f"WordTokenizer.encode: max_len must be positive, got {max_len}")
        out = np.zeros((len(texts), max_len), np.int32)
        for i, t in enumerate(texts):
            ids = [self._ids.get(w, UNK) for w in _words(str(t))]
            ids = ([BOS] if add_bos else []) + ids + ([EOS] if add_eos else [])
            ids = ids[:max_len]
            out[i, : len(ids)] = ids
        return out

    def decode(self, tokens) -> list[str]:
        """int ``[N, L]`` -> list of strings; skips pad/bos, stops at eos, unknown as ``<unk>``."""
        tokens = np.asarray(tokens)
        if tokens.ndim == 1:
            tokens = tokens[None]
        texts = []
        for row in tokens:
            words = []
            for t in row.tolist():
                if t == EOS:
                    break
                if t in (PAD, BOS):
                    continue
                words.append(self.words[t] if 0 <= t < len(self.words) else SPECIALS[UNK])
            texts.append(" ".join(words))
        return texts


class ByteTokenizer:
    """UTF-8 byte tokenizer: token = byte + 1, 0 is padding, ``vocab_size = 257``."""

    vocab_size = 257

    def encode(self, texts: Sequence[str], max_len: int) -> np.ndarray:
        """``texts`` -> int32 ``[N, max_len]`` (truncated / 0-padded)."""
        if isinstance(texts, str):
            raise TypeError("ByteTokenizer.encode expects a list of strings, got one str")
        if max_len <= 0:
            raise ValueError(f"ByteTokenizer.encode: max_len must be positive, got {max_len}")
        out = np.zeros((len(texts), max_len), np.int32)
        for i, t in enumerate(texts):
            b = np.frombuffer(str(t).encode("utf-8"), np.uint8)[:max_len]
            out[i, : len(b)] = b.astype(np.int32) + 1
        return out

    def decode(self, tokens) -> list[str]:
        """int ``[N, L]`` -> strings (padding dropped; invalid UTF-8 replaced)."""
        tokens = np.asarray(tokens)
        if tokens.ndim == 1:
            tokens = tokens[None]
        return [bytes((row[row > 0] - 1).astype(np.uint8).tolist()).decode("utf-8", "replace")
                for row in tokens]
