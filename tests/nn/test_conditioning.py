"""gen_jax.nn.conditioning against closed forms: the null label / caption, condition dropout
(Ho & Salimans 2022, Alg. 1) with the exact draws the families made before, guidance
(Eq. 6) and the one-call guided evaluation, and the label embedding's param tree."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax.linen as nn

from gen_jax.nn import conditioning as cond


def test_null_label_and_rows():
    assert cond.null_label(10) == 10
    assert cond.label_rows(10, null=True) == 11 and cond.label_rows(10, null=False) == 10
    np.testing.assert_array_equal(cond.null_labels(4, 3), np.full((3,), 4, np.int32))
    assert cond.null_labels(4, 3).dtype == jnp.int32
    with pytest.raises(ValueError, match="num_classes >= 1"):
        cond.null_label(0)


def test_null_caption_is_all_padding():
    c = cond.null_caption(2, 5)
    assert c.shape == (2, 5) and c.dtype == jnp.int32
    assert cond.PAD_ID == 0 and not np.any(np.asarray(c))


def test_drop_labels_uses_one_bernoulli_per_example():
    key = jax.random.PRNGKey(3)
    labels = jnp.arange(64, dtype=jnp.int32) % 10
    out = cond.drop_labels(key, labels, 0.3, cond.null_label(10))
    mask = np.asarray(jax.random.bernoulli(key, 0.3, (64,)))
    np.testing.assert_array_equal(np.asarray(out), np.where(mask, 10, np.asarray(labels)))
    assert out.dtype == labels.dtype and out.shape == labels.shape
    assert 0 < mask.sum() < 64


def test_drop_labels_matches_the_families_previous_code():
    """Same key -> same result as the code gen_jax.diffusion.{model,latent} ran before."""
    key = jax.random.PRNGKey(7)
    b, null = 16, 5
    labels = jnp.arange(b, dtype=jnp.int32) % 5
    old_latent = jnp.where(jax.random.bernoulli(key, 0.25, labels.shape), null, labels)
    drop = jax.random.bernoulli(key, 0.25, (b,))
    old_model = jnp.where(drop.reshape((-1,)), jnp.full((b,), null, jnp.int32), labels)
    new = cond.drop_labels(key, labels, 0.25, null)
    np.testing.assert_array_equal(np.asarray(new), np.asarray(old_latent))
    np.testing.assert_array_equal(np.asarray(new), np.asarray(old_model))
    tokens = jax.random.randint(jax.random.PRNGKey(1), (b, 6), 1, 30)
    old_cap = jnp.where(drop.reshape((-1, 1)), jnp.zeros((b, 6), jnp.int32), tokens)
    np.testing.assert_array_equal(np.asarray(cond.drop_captions(key, tokens, 0.25)), np.asarray(old_cap))


def test_drop_captions_drops_whole_captions_with_the_label_draw():
    key = jax.random.PRNGKey(0)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (32, 7), 1, 50)
    out = np.asarray(cond.drop_captions(key, tokens, 0.5))
    mask = np.asarray(cond.drop_mask(key, 0.5, 32))
    assert np.all(out[mask] == 0)
    np.testing.assert_array_equal(out[~mask], np.asarray(tokens)[~mask])
    lab = np.asarray(cond.drop_labels(key, jnp.zeros((32,), jnp.int32), 0.5, 1))
    np.testing.assert_array_equal(lab == 1, mask)
    with pytest.raises(ValueError, match=r"\[B, L\]"):
        cond.drop_captions(key, tokens[0], 0.5)


def test_drop_rate_is_p():
    n, p = 20000, 0.2
    out = np.asarray(cond.drop_labels(jax.random.PRNGKey(11), jnp.zeros((n,), jnp.int32), p, 1))
    rate = out.mean()
    assert abs(rate - p) < 4 * np.sqrt(p * (1 - p) / n), rate


def test_drop_probability_zero_is_the_identity():
    labels = jnp.arange(8, dtype=jnp.int32)
    assert cond.drop_labels(jax.random.PRNGKey(0), labels, 0.0, 99) is labels


def test_guidance_combine_is_eq6():
    c = jnp.array([1.0, -2.0, 0.5])
    u = jnp.array([0.25, 1.0, 0.5])
    for w in (0.0, 0.5, 3.0):
        np.testing.assert_allclose(cond.guidance_combine(c, u, w), (1 + w) * c - w * u, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(cond.guidance_combine(c, u, 0.0), c)
    np.testing.assert_allclose(cond.guidance_combine(c, u, -1.0), u, rtol=1e-6)


def test_guided_call_is_one_batched_call():
    calls = []

    def apply(x, t, c):
        calls.append((x.shape, t.shape, c.shape))
        return x * (1.0 + c[:, None].astype(x.dtype)) + t[:, None]

    x = jnp.arange(6.0).reshape(3, 2)
    t = jnp.array([1.0, 2.0, 3.0])
    lab = jnp.array([1, 2, 0])
    neg = jnp.array([3, 3, 3])
    out = cond.guided_call(apply, x, t, lab, neg, 2.0)
    assert calls == [((6, 2), (6,), (6,))]
    oc = x * (1.0 + lab[:, None]) + t[:, None]
    ou = x * (1.0 + neg[:, None]) + t[:, None]
    np.testing.assert_allclose(out, 3.0 * oc - 2.0 * ou, rtol=1e-6)


def test_guided_call_keeps_the_conditional_variance_channels():
    def apply(x, t, c):
        return jnp.concatenate([x * c[:, None], x + 10.0 * c[:, None]], -1)  # [2B, 4]: mean 2, var 2

    x = jnp.array([[1.0, 2.0], [3.0, 4.0]])
    t = jnp.zeros((2,))
    lab, neg = jnp.array([2.0, 3.0]), jnp.array([0.0, 0.0])
    out = cond.guided_call(apply, x, t, lab, neg, 0.5, guide_channels=2)
    oc = apply(x, t, lab)
    ou = apply(x, t, neg)
    np.testing.assert_allclose(out[:, :2], 1.5 * oc[:, :2] - 0.5 * ou[:, :2], rtol=1e-6)
    np.testing.assert_array_equal(out[:, 2:], oc[:, 2:])
    # Only mean channels: the output has just those.
    out2 = cond.guided_call(lambda x, t, c: apply(x, t, c)[:, :2], x, t, lab, neg, 0.5, guide_channels=2)
    np.testing.assert_array_equal(out2, out[:, :2])


def test_guided_call_takes_pytree_conditions():
    def apply(x, t, c):
        return x * c["a"][:, None] + c["b"]

    x = jnp.ones((2, 3))
    out = cond.guided_call(apply, x, jnp.zeros((2,)), {"a": jnp.array([1.0, 2.0]), "b": jnp.ones((2, 3))},
                           {"a": jnp.zeros((2,)), "b": jnp.zeros((2, 3))}, 1.0)
    np.testing.assert_allclose(out, 2.0 * (x * jnp.array([1.0, 2.0])[:, None] + 1.0), rtol=1e-6)


class _Host(nn.Module):
    @nn.compact
    def __call__(self, labels):
        return cond.embed_labels(labels, 4, 3, null=True, name="label_embed")


def test_embed_labels_has_the_null_row_and_the_flat_param_tree():
    labels = jnp.array([0, 4, 2])
    params = _Host().init(jax.random.PRNGKey(0), labels)
    table = params["params"]["label_embed"]["embedding"]
    assert table.shape == (5, 3)
    out = _Host().apply(params, labels)
    np.testing.assert_array_equal(out, np.asarray(table)[[0, 4, 2]])
    # The same tree and init as an nn.Embed of num_classes + 1 rows named in the same scope.
    class Ref(nn.Module):
        @nn.compact
        def __call__(self, labels):
            return nn.Embed(5, 3, name="label_embed")(labels)
    ref = Ref().init(jax.random.PRNGKey(0), labels)
    np.testing.assert_array_equal(ref["params"]["label_embed"]["embedding"], table)


def test_label_embedding_module():
    m = cond.LabelEmbedding(3, 2)
    p = m.init(jax.random.PRNGKey(0), jnp.array([0, 2]))
    assert p["params"]["embed"]["embedding"].shape == (3, 2)
    m2 = cond.LabelEmbedding(3, 2, null=True)
    p2 = m2.init(jax.random.PRNGKey(0), jnp.array([3]))
    assert p2["params"]["embed"]["embedding"].shape == (4, 2)
    with pytest.raises(ValueError, match=r"labels must be \[B\]"):
        m.apply(p, jnp.zeros((2, 1), jnp.int32))
