"""The one multi-head attention (gen_jax.nn.attention): causal masks against numpy, the two
placements of 1/sqrt(d), the KV-cache path against the full causal computation, the shared
param tree, the bit-for-bit equality with the decoder's pre-merge formula, and errors.
(Padding masks and feature-map attention against numpy: tests/nn/test_unet.py.)"""
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.nn import kv_cache
from gen_jax.nn.attention import (FeatureMapAttention, MultiHeadAttention, apply_rotary, cached_attention,
                                  dot_product_attention)


def _np_attention(q, k, v, visible):
    """float64 Eq. 1 with a boolean [B, Lq, Lk] visibility; rows with no visible key -> 0."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    logits = np.einsum("bind,bjnd->bnij", q, k) / math.sqrt(q.shape[-1])
    logits = np.where(visible[:, None], logits, -np.inf)
    m = np.max(logits, -1, keepdims=True)
    w = np.exp(logits - np.where(np.isfinite(m), m, 0.0))
    w = w / np.maximum(w.sum(-1, keepdims=True), 1e-300)
    return np.einsum("bnij,bjnd->bind", w, v)


def _qkv(b=2, l=5, n=2, d=8, seed=0):
    ks = jax.random.split(jax.random.PRNGKey(seed), 3)
    return tuple(jax.random.normal(k, (b, l, n, d)) for k in ks)


@pytest.mark.parametrize("scale_at", ["queries", "logits"])
def test_causal_attention_matches_numpy(scale_at):
    q, k, v = _qkv()
    pos = jnp.arange(5)
    out = dot_product_attention(q, k, v, q_pos=pos, k_pos=pos, scale_at=scale_at)
    visible = np.broadcast_to(np.tril(np.ones((5, 5), bool)), (2, 5, 5))
    np.testing.assert_allclose(out, _np_attention(q, k, v, visible), rtol=1e-5, atol=1e-5)


def test_causal_and_padding_masks_combine():
    q, k, v = _qkv()
    pos = jnp.arange(5)
    mask = jnp.array([[1, 0, 1, 1, 1], [1, 1, 1, 1, 0]], bool)
    out = dot_product_attention(q, k, v, mask, q_pos=pos, k_pos=pos)
    visible = np.tril(np.ones((5, 5), bool))[None] & np.asarray(mask)[:, None, :]
    np.testing.assert_allclose(out, _np_attention(q, k, v, visible), rtol=1e-5, atol=1e-5)


def test_future_keys_do_not_reach_the_output():
    q, k, v = _qkv()
    pos = jnp.arange(5)
    f = lambda v: dot_product_attention(q, k, v, q_pos=pos, k_pos=pos, scale_at="logits")
    jac = jax.jacobian(lambda v: f(v)[:, 2])(v)  # d out[:, 2] / d v: [B, N, D, B, L, N, D]
    assert np.all(np.asarray(jac)[..., 3:, :, :] == 0)


def test_the_two_scale_placements_agree_and_are_identical_for_power_of_four_widths():
    for d in (8, 12):
        q, k, v = _qkv(d=d)
        a = dot_product_attention(q, k, v, scale_at="queries")
        b = dot_product_attention(q, k, v, scale_at="logits")
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    q, k, v = _qkv(d=16)
    np.testing.assert_array_equal(dot_product_attention(q, k, v, scale_at="queries"),
                                  dot_product_attention(q, k, v, scale_at="logits"))


def _old_causal_attention(q, k, v, q_pos, k_pos):
    """The decoder's attention before the merge (gen_jax.nn.transformer.causal_attention)."""
    d = q.shape[-1]
    logits = jnp.einsum("bthd,bshd->bhts", q, k) / math.sqrt(d)
    visible = k_pos[None, :] <= q_pos[:, None]
    logits = jnp.where(visible[None, None], logits, jnp.finfo(logits.dtype).min)
    return jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(logits, axis=-1), v)


def test_causal_path_is_the_pre_merge_formula_bit_for_bit():
    q, k, v = _qkv(d=6)
    pos = jnp.arange(5)
    np.testing.assert_array_equal(dot_product_attention(q, k, v, q_pos=pos, k_pos=pos, scale_at="logits"),
                                  _old_causal_attention(q, k, v, pos, pos))
    f = jax.jit(lambda q, k, v: dot_product_attention(q, k, v, q_pos=pos, k_pos=pos, scale_at="logits"))
    g = jax.jit(lambda q, k, v: _old_causal_attention(q, k, v, pos, pos))
    np.testing.assert_array_equal(f(q, k, v), g(q, k, v))


def _mha(**kw):
    return MultiHeadAttention(num_heads=2, causal=True, rope_base=10000.0, scale_at="logits", **kw)


def test_cached_decoding_matches_the_full_causal_pass():
    b, t, f, heads = 2, 6, 8, 2
    x = jax.random.normal(jax.random.PRNGKey(1), (b, t, f))
    m = _mha()
    params = m.init(jax.random.PRNGKey(0), x)
    full = m.apply(params, x)
    cache = kv_cache.init_cache(1, b, t, heads, f // heads)
    k_l, v_l = cache.k[0], cache.v[0]
    outs = []
    for i in range(t):  # one token at a time, then the last two at once
        if i == t - 2:
            out, (k_l, v_l) = m.apply(params, x[:, i:], positions=i + jnp.arange(2), cache=(k_l, v_l, jnp.int32(i)))
            outs.append(out)
            break
        out, (k_l, v_l) = m.apply(params, x[:, i:i + 1], positions=jnp.array([i]), cache=(k_l, v_l, jnp.int32(i)))
        outs.append(out)
    np.testing.assert_allclose(jnp.concatenate(outs, 1), full, rtol=1e-5, atol=1e-5)
    # The cache holds the (rotated) keys and the values of every position.
    _, (k_all, v_all) = m.apply(params, x, positions=jnp.arange(t), cache=(cache.k[0], cache.v[0], jnp.int32(0)))
    np.testing.assert_allclose(k_l, k_all, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(v_l, v_all, rtol=1e-6, atol=1e-6)


def test_cached_attention_ignores_slots_past_pos():
    q, k, v = _qkv(b=1, l=2, n=1, d=4)
    kc = jax.random.normal(jax.random.PRNGKey(5), (1, 1, 4, 7))
    vc = jax.random.normal(jax.random.PRNGKey(6), (1, 1, 7, 4))
    a = cached_attention(q, k, v, kc, vc, jnp.int32(3))
    b = cached_attention(q, k, v, kc.at[..., 3:].set(99.0), vc.at[:, :, 3:].set(-99.0), jnp.int32(3))
    np.testing.assert_array_equal(a, b)


def test_rope_makes_logits_depend_on_offsets_only():
    q, k, _ = _qkv(b=1, l=1, n=1, d=8)
    dot = lambda m, n: float(jnp.sum(apply_rotary(q, jnp.array([m])) * apply_rotary(k, jnp.array([n]))))
    np.testing.assert_allclose(dot(3, 5), dot(10, 12), rtol=1e-4, atol=1e-5)


def test_every_use_has_the_same_projection_param_tree():
    x = jnp.zeros((1, 4, 8))
    keys = lambda p: {k: jax.tree.map(jnp.shape, v) for k, v in p["params"].items()}
    causal = keys(_mha().init(jax.random.PRNGKey(0), x))
    plain = keys(MultiHeadAttention(num_heads=2).init(jax.random.PRNGKey(0), x))
    fmap = FeatureMapAttention(2).init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 8)))["params"]["mha"]
    assert causal == plain == {k: jax.tree.map(jnp.shape, v) for k, v in fmap.items()}
    assert set(causal) == {"query", "key", "value", "out"}


def test_custom_initializers():
    x = jnp.ones((1, 3, 4))
    p = MultiHeadAttention(num_heads=1, out_init=nn.initializers.ones, zero_init_out=True).init(
        jax.random.PRNGKey(0), x)
    assert np.all(np.asarray(p["params"]["out"]["kernel"]) == 1.0)
    p = MultiHeadAttention(num_heads=1, zero_init_out=True).init(jax.random.PRNGKey(0), x)
    assert np.all(np.asarray(p["params"]["out"]["kernel"]) == 0.0)


def test_errors():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="both q_pos"):
        dot_product_attention(q, k, v, q_pos=jnp.arange(5))
    with pytest.raises(ValueError, match="scale_at"):
        dot_product_attention(q, k, v, scale_at="keys")
    x = jnp.zeros((1, 3, 4))
    with pytest.raises(ValueError, match="context must be None"):
        _mha().init(jax.random.PRNGKey(0), x, x)
    with pytest.raises(ValueError, match="causal=True"):
        MultiHeadAttention(2).init(jax.random.PRNGKey(0), x, cache=(None, None, 0))
