"""A tiny stand-in dataset for the latent-family tests: dataset info and batches with
images on the levels, labels and captions."""
import collections

import jax
import jax.numpy as jnp
import numpy as np

Info = collections.namedtuple("Info", "image_shape num_levels num_classes vocab_size caption_len")
INFO = Info((8, 8, 1), 17, 10, 12, 5)


def stand_in_batch(n=8, info=INFO, seed=0):
    """``n`` random images on the levels of ``info``, labels in 0..9 and 3-token captions."""
    r = np.random.default_rng(seed)
    k = info.num_levels
    return {"image": jnp.asarray(r.integers(0, k, (n,) + tuple(info.image_shape)) / (k - 1), jnp.float32),
            "label": jnp.asarray(r.integers(0, 10, n), jnp.int32),
            "caption_tokens": jnp.asarray(np.where(np.arange(info.caption_len) < 3,
                                                   r.integers(1, info.vocab_size, (n, info.caption_len)), 0),
                                          jnp.int32)}


def finite(tree):
    """Whether every leaf of ``tree`` is finite."""
    return all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(tree))

