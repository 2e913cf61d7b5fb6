"""Conditioning embeddings, kept as import names: class labels and tokenized captions ->
vectors ``[B, E]``.

The implementations live in :mod:`gen_jax.nn.conditioning` (labels, the null label) and
:mod:`gen_jax.nn.caption_encoder` (the one caption encoder; the bag-of-words one is
:func:`~gen_jax.nn.caption_encoder.bag_of_words_encoder`).
"""
from __future__ import annotations

from gen_jax.nn.caption_encoder import bag_of_words_encoder as CaptionEncoder  # noqa: F401 (alias)
from gen_jax.nn.conditioning import PAD_ID, LabelEmbedding  # noqa: F401 (import names)
