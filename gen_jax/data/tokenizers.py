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


class UnknownWordsError(ValueError):
    """A text holds words outside a closed vocabulary (another language, a typo, a word the
    captions never use), raised by ``WordTokenizer.encode(..., strict=True)``; ``unknown`` maps
    each offending text's index to its unknown words."""

    def __init__(self, message: str, unknown: dict):
        super().__init__(message)
        self.unknown = unknown


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
               add_eos: bool = True, strict: bool = False) -> np.ndarray:
        """``texts`` -> int32 ``[N, max_len]``: ``<bos> w1 .. wn <eos>`` then 0-padding.

        Unknown words map to ``<unk>``; longer sequences are truncated to ``max_len``. With
        ``strict`` (user prompts) neither happens silently: an :class:`UnknownWordsError` names
        every text with words outside the vocabulary and those words, and a ``ValueError`` every
        text longer than ``max_len`` tokens.
        """
        if isinstance(texts, str):
            raise TypeError("WordTokenizer.encode expects a list of strings, got one str")
        if max_len <= 0:
            raise ValueError(f"WordTokenizer.encode: max_len must be positive, got {max_len}")
        if strict:
            self._check_strict(texts, max_len, int(add_bos) + int(add_eos))
        out = np.zeros((len(texts), max_len), np.int32)
        for i, t in enumerate(texts):
            ids = [self._ids.get(w, UNK) for w in _words(str(t))]
            ids = ([BOS] if add_bos else []) + ids + ([EOS] if add_eos else [])
            ids = ids[:max_len]
            out[i, : len(ids)] = ids
        return out

    def _check_strict(self, texts: Sequence[str], max_len: int, extra: int) -> None:
        unknown = {i: [w for w in _words(str(t)) if w not in self._ids or w in SPECIALS]
                   for i, t in enumerate(texts)}
        unknown = {i: ws for i, ws in unknown.items() if ws}
        if unknown:
            shown = "; ".join(f"text {i} {str(texts[i])!r}: {sorted(set(ws))}" for i, ws in list(unknown.items())[:5])
            more = f" (and {len(unknown) - 5} more texts)" if len(unknown) > 5 else ""
            raise UnknownWordsError(
                f"WordTokenizer.encode: {len(unknown)} text(s) hold words outside the closed vocabulary of "
                f"{self.vocab_size - len(SPECIALS)} words, which cannot be encoded (another language or unknown "
                f"words): {shown}{more}. Known words: {' '.join(self.words[len(SPECIALS):])}", unknown)
        long = [(i, len(_words(str(t))) + extra) for i, t in enumerate(texts) if len(_words(str(t))) + extra > max_len]
        if long:
            raise ValueError(f"WordTokenizer.encode: {len(long)} text(s) longer than max_len={max_len} tokens "
                             f"(with <bos>/<eos>), e.g. text {long[0][0]} {str(texts[long[0][0]])!r} of {long[0][1]}")

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


def encode_prompts(tokenizer: WordTokenizer, prompts, max_len: int) -> np.ndarray:
    """User text prompts (one string or a list) -> int32 ``[N, max_len]`` caption tokens, strictly:
    words the tokenizer's closed vocabulary cannot encode raise :class:`UnknownWordsError` naming
    them, prompts longer than ``max_len`` a ``ValueError`` (never a silent ``<unk>`` or truncation)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise TypeError(f"encode_prompts: prompts must be a non-empty list of strings, got {prompts!r}")
    return tokenizer.encode(prompts, max_len, strict=True)


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
