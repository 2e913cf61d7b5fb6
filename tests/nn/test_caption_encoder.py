"""The one caption encoder (gen_jax.nn.caption_encoder): the bag-of-words configuration is the
pre-merge gen_jax.nn.embeddings.CaptionEncoder bit for bit (params and outputs), the
transformer configuration's outputs against closed forms (masked mean, the empty caption),
and input errors."""
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.nn.caption_encoder import CaptionEncoder, bag_of_words_encoder

TOKENS = jnp.array([[2, 5, 7, 3, 0, 0], [0, 0, 0, 0, 0, 0], [2, 9, 11, 13, 17, 3]], jnp.int32)


class _OldBagOfWords(nn.Module):
    """gen_jax.nn.embeddings.CaptionEncoder before the merge (the reference)."""

    vocab_size: int
    embed_dim: int = 32
    hidden: Sequence[int] = (64,)
    features: int = 32

    @nn.compact
    def __call__(self, tokens):
        emb = nn.Embed(self.vocab_size, self.embed_dim, name="embed")(tokens.astype(jnp.int32))
        mask = (tokens != 0).astype(emb.dtype)[..., None]
        h = jnp.sum(emb * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)
        for i, width in enumerate(self.hidden):
            h = nn.gelu(nn.Dense(width, name=f"hidden{i}")(h))
        return nn.Dense(self.features, name="out")(h)


def _same(a, b):
    ta, tb = jax.tree_util.tree_flatten_with_path(a), jax.tree_util.tree_flatten_with_path(b)
    assert [p for p, _ in ta[0]] == [p for p, _ in tb[0]]
    for (_, x), (_, y) in zip(ta[0], tb[0]):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("kw", [{}, dict(embed_dim=12, hidden=(), features=16), dict(hidden=(8, 4), features=5)])
def test_bag_of_words_is_the_pre_merge_encoder(kw):
    key = jax.random.PRNGKey(0)
    old, new = _OldBagOfWords(20, **kw), bag_of_words_encoder(20, **kw)
    p_old, p_new = old.init(key, TOKENS), new.init(key, TOKENS)
    _same(p_old, p_new)
    _same(old.apply(p_old, TOKENS), new.apply(p_new, TOKENS))
    # What the families call builds the same module.
    _same(bag_of_words_encoder(20, **kw).init(key, TOKENS), p_new)


def test_bag_of_words_in_a_setup_module_keeps_its_attribute_name():
    class Host(nn.Module):
        def setup(self):
            self.cond_embed = bag_of_words_encoder(20, features=4)

        def __call__(self, tokens):
            return self.cond_embed(tokens)

    class OldHost(nn.Module):
        def setup(self):
            self.cond_embed = _OldBagOfWords(20, features=4)

        def __call__(self, tokens):
            return self.cond_embed(tokens)

    key = jax.random.PRNGKey(3)
    p = Host().init(key, TOKENS)
    assert set(p["params"]["cond_embed"]) == {"embed", "hidden0", "out"}
    _same(p, OldHost().init(key, TOKENS))


def test_bag_of_words_of_padding_is_the_mlp_of_zero():
    m = bag_of_words_encoder(20, embed_dim=6, hidden=(), features=3)
    p = m.init(jax.random.PRNGKey(0), TOKENS)
    out = m.apply(p, TOKENS)
    np.testing.assert_allclose(out[1], p["params"]["out"]["bias"], rtol=0, atol=0)


def test_transformer_encoder_pools_the_masked_mean():
    m = CaptionEncoder(20, 6, dim=8, num_layers=2, num_heads=2)
    p = m.init(jax.random.PRNGKey(0), TOKENS)
    context, mask, pooled = m.apply(p, TOKENS)
    assert context.shape == (3, 6, 8) and mask.shape == (3, 6) and pooled.shape == (3, 8)
    np.testing.assert_array_equal(mask, np.asarray(TOKENS) != 0)
    np.testing.assert_allclose(pooled[0], np.asarray(context)[0, :4].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(pooled[1], np.zeros(8))  # the empty caption pools to zero
    assert {"token_embed", "pos_embed", "layer0_attn", "layer1_mlp1", "norm_out"} <= set(p["params"])


def test_pooled_head_on_the_transformer_encoder():
    m = CaptionEncoder(20, 6, dim=8, num_layers=1, num_heads=2, hidden=(4,), features=3)
    p = m.init(jax.random.PRNGKey(0), TOKENS)
    assert m.apply(p, TOKENS).shape == (3, 3)


def test_token_errors():
    m = CaptionEncoder(20, 6, dim=8)
    with pytest.raises(ValueError, match=r"caption_tokens must be int \[B, L\] = \[B, 6\]"):
        m.init(jax.random.PRNGKey(0), TOKENS[:, :5])
    with pytest.raises(ValueError, match="integer token ids"):
        m.init(jax.random.PRNGKey(0), TOKENS.astype(jnp.float32))
    with pytest.raises(ValueError, match=r"caption tokens must be \[B, L\]"):
        bag_of_words_encoder(20).init(jax.random.PRNGKey(0), TOKENS[0])
