"""gen_jax.gan.networks and gen_jax.nn.conditional_norm: shapes, ranges, state handling and the
conditioning terms, against numpy recomputations from the params."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.gan.networks import (DCGANDiscriminator, DCGANGenerator, MLPDiscriminator, MLPGenerator,
                                  count_params, dcgan_upsamplings)
from gen_jax.nn.conditional_norm import ConditionalBatchNorm
from gen_jax.nn.spectral_norm import SPECTRAL

KEY = jax.random.PRNGKey(0)


def _np(tree):
    return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _assert_tree_equal(a, b):
    jax.tree.map(lambda u, v: np.testing.assert_array_equal(np.asarray(u), np.asarray(v)), a, b)


def _leaf_names(tree):
    return {path[-1].key for path, _ in jax.tree_util.tree_leaves_with_path(tree)}


def _tree_differs(a, b):
    return any(not np.array_equal(np.asarray(u), np.asarray(v)) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# ------------------------------------------------------------------------------------------
# ConditionalBatchNorm (de Vries et al. 2017).
# ------------------------------------------------------------------------------------------


def _cbn_setup():
    r = np.random.default_rng(0)
    x = (2.0 + 3.0 * r.normal(size=(6, 2, 3, 4))).astype(np.float32)
    y = np.array([0, 1, 2, 0, 2, 2], np.int32)
    cbn = ConditionalBatchNorm(num_classes=3)
    v = cbn.init(KEY, x, y, True)
    assert set(v) == {"params", "batch_stats"}
    gamma = (1.0 + 0.5 * r.normal(size=(3, 4))).astype(np.float32)
    beta = r.normal(size=(3, 4)).astype(np.float32)
    v = {"params": {"gamma": {"embedding": jnp.asarray(gamma)}, "beta": {"embedding": jnp.asarray(beta)}},
         "batch_stats": v["batch_stats"]}
    return cbn, v, x.astype(np.float64), y, gamma.astype(np.float64), beta.astype(np.float64)


def test_conditional_batch_norm_train_matches_numpy():
    cbn, v, x, y, gamma, beta = _cbn_setup()
    out, state = cbn.apply(v, jnp.asarray(x, jnp.float32), jnp.asarray(y), True, mutable=["batch_stats"])
    mu, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    ref = (x - mu) / np.sqrt(var + 1e-5) * gamma[y][:, None, None, :] + beta[y][:, None, None, :]
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-4)
    # Running averages: momentum 0.9 from the initial (mean 0, var 1).
    np.testing.assert_allclose(np.asarray(state["batch_stats"]["bn"]["mean"]), 0.1 * mu, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(state["batch_stats"]["bn"]["var"]), 0.9 + 0.1 * var, rtol=1e-5)


def test_conditional_batch_norm_eval_uses_running_stats():
    cbn, v, x, y, gamma, beta = _cbn_setup()
    r = np.random.default_rng(1)
    mean, var = r.normal(size=4), 1.0 + r.random(4)
    v = {"params": v["params"], "batch_stats": {"bn": {"mean": jnp.asarray(mean, jnp.float32),
                                                        "var": jnp.asarray(var, jnp.float32)}}}
    out, state = cbn.apply(v, jnp.asarray(x, jnp.float32), jnp.asarray(y), False, mutable=["batch_stats"])
    ref = (x - mean) / np.sqrt(var + 1e-5) * gamma[y][:, None, None, :] + beta[y][:, None, None, :]
    np.testing.assert_allclose(np.asarray(out), ref, atol=1e-4)
    _assert_tree_equal(state["batch_stats"], v["batch_stats"])
    with pytest.raises(ValueError, match=r"label must be int \[B\] = \[6\]"):
        cbn.apply(v, jnp.asarray(x, jnp.float32), jnp.asarray(y[:5]), False)


# ------------------------------------------------------------------------------------------
# MLPs.
# ------------------------------------------------------------------------------------------


def test_mlp_shapes_and_spectral_collection():
    z = jax.random.normal(KEY, (5, 3))
    g = MLPGenerator(hidden=(16, 16), out_dim=2)
    assert g.apply(g.init(KEY, z), z).shape == (5, 2)
    x = jax.random.normal(KEY, (5, 2))
    d = MLPDiscriminator(hidden=(16, 8), spectral=True)
    v = d.init(KEY, x, False)
    assert set(v) == {"params", SPECTRAL}
    assert set(v[SPECTRAL]) == {"dense_0", "dense_1", "out"}
    assert _leaf_names(v["params"]) <= {"kernel", "bias", "embedding"}  # no u / sigma
    logits, state = d.apply(v, x, True, mutable=[SPECTRAL])
    assert logits.shape == (5,) and _tree_differs(state[SPECTRAL], v[SPECTRAL])
    assert set(MLPDiscriminator(hidden=(4,)).init(KEY, x, False)) == {"params"}
    with pytest.raises(ValueError, match=r"x must be \[B, D\]"):
        d.init(KEY, jnp.zeros((5,)), False)


# ------------------------------------------------------------------------------------------
# DCGAN generator.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(8, 8, 1), (32, 32, 3)])
def test_generator_shapes_range_and_batch_stats(shape):
    g = DCGANGenerator(image_shape=shape, base=4)
    z = 3.0 * jax.random.normal(KEY, (4, 6))
    v = g.init(KEY, z)
    x, state = g.apply(v, z, train=True, mutable=["batch_stats"])
    assert x.shape == (4,) + shape and x.dtype == jnp.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x.std()) > 0
    assert _tree_differs(state["batch_stats"], v["batch_stats"])  # training updates the averages
    x_eval, state_eval = g.apply(v, z, train=False, mutable=["batch_stats"])
    _assert_tree_equal(state_eval["batch_stats"], v["batch_stats"])  # evaluation does not
    # Eval uses the running averages: an example's image does not depend on the rest of the batch.
    np.testing.assert_allclose(np.asarray(g.apply(v, z[:1], train=False)), np.asarray(x_eval[:1]), atol=1e-5)
    assert not np.allclose(np.asarray(g.apply(v, z[:1], train=True, mutable=["batch_stats"])[0]), np.asarray(x[:1]))


def test_generator_depth_rule_and_bad_image_shape():
    assert [dcgan_upsamplings(s) for s in [(8, 8, 1), (16, 16, 1), (28, 28, 1), (32, 32, 3), (64, 64, 3)]] == \
        [2, 2, 2, 3, 4]
    for bad in [(10, 10, 1), (32, 36, 3), (32, 32)]:
        with pytest.raises(ValueError, match="image_shape"):
            DCGANGenerator(image_shape=bad)


def test_conditional_generator_uses_the_label():
    g = DCGANGenerator(image_shape=(8, 8, 1), base=4, num_classes=3)
    z = jax.random.normal(KEY, (2, 6))
    v = g.init(KEY, z, jnp.array([0, 1]))
    assert "ConditionalBatchNorm" not in str(v) and set(v["params"]["norm_0"]) == {"gamma", "beta"}
    # Perturb the per-class scales and shifts: the same z then gives a different image per label.
    params = jax.tree.map(lambda a: a + 0.5 * jax.random.normal(jax.random.PRNGKey(1), a.shape), v["params"])
    zz = jnp.concatenate([z[:1]] * 2)
    out = g.apply({"params": params, "batch_stats": v["batch_stats"]}, zz, jnp.array([0, 2]), train=False)
    assert not np.allclose(np.asarray(out[0]), np.asarray(out[1]), atol=1e-4)
    with pytest.raises(ValueError, match="label int \\[B\\] is required"):
        g.apply(v, z, train=False)
    with pytest.raises(ValueError, match="label given"):
        DCGANGenerator(image_shape=(8, 8, 1), base=4).init(KEY, z, jnp.array([0, 1]))


# ------------------------------------------------------------------------------------------
# DCGAN discriminator.
# ------------------------------------------------------------------------------------------


def _images(b, shape=(8, 8, 1), seed=2):
    return jax.random.uniform(jax.random.PRNGKey(seed), (b,) + shape)


def test_projection_term_equals_embedding_dot_features():
    d = DCGANDiscriminator(base=4, num_classes=3, projection=True)
    x, y = _images(5), jnp.array([0, 1, 2, 1, 0])
    v = d.init(KEY, x, y)
    assert set(v) == {"params"} and not d.uses_batch_norm
    logits, inter = d.apply(v, x, y, train=False, mutable=["intermediates"])
    phi = np.asarray(inter["intermediates"]["phi"][0], np.float64)
    p = _np(v["params"])
    assert phi.shape == (5, 8)  # base * 2^(n-1) channels, n = 2 for 8x8
    psi = phi @ p["psi"]["kernel"][:, 0] + p["psi"]["bias"][0]
    proj = np.sum(p["embed"]["embedding"][np.asarray(y)] * phi, axis=-1)
    assert np.abs(proj).max() > 1e-3
    np.testing.assert_allclose(np.asarray(logits), psi + proj, rtol=1e-4, atol=1e-5)
    zeroed = {"params": {**v["params"], "embed": {"embedding": jnp.zeros_like(v["params"]["embed"]["embedding"])}}}
    np.testing.assert_allclose(np.asarray(d.apply(zeroed, x, y, train=False)), psi, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="label int \\[B\\] is required"):
        d.apply(v, x)


def test_aux_classifier_outputs_class_logits():
    d = DCGANDiscriminator(base=4, num_classes=3, projection=False, aux_classifier=True)
    x = _images(4, (32, 32, 3))
    v = d.init(KEY, x)
    (logits, cls), inter = d.apply(v, x, train=False, mutable=["intermediates"])
    assert logits.shape == (4,) and cls.shape == (4, 3)
    phi = np.asarray(inter["intermediates"]["phi"][0], np.float64)
    assert phi.shape == (4, 16)  # n = 3 for 32x32: 4 -> 8 -> 16 channels
    p = _np(v["params"])
    np.testing.assert_allclose(np.asarray(cls), phi @ p["classifier"]["kernel"] + p["classifier"]["bias"],
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="aux_classifier=True needs num_classes"):
        DCGANDiscriminator(aux_classifier=True)
    with pytest.raises(ValueError, match="norm must be one of"):
        DCGANDiscriminator(norm="group")


@pytest.mark.parametrize("norm", ["none", "layer", "batch"])
def test_norms_and_per_example_independence(norm):
    d = DCGANDiscriminator(base=4, norm=norm)
    x = _images(4)
    v = d.init(KEY, x)
    assert d.uses_batch_norm == (norm == "batch") and (("batch_stats" in v) == (norm == "batch"))
    mutable = ["batch_stats"] if norm == "batch" else False
    full, alone = (d.apply(v, xs, train=True, mutable=mutable) for xs in (x, x[:1]))
    full, alone = (o[0] if mutable else o for o in (full, alone))
    # Only batch norm couples the examples of a batch (why a gradient penalty refuses it).
    same = np.allclose(np.asarray(full[:1]), np.asarray(alone), atol=1e-5)
    assert same == (norm != "batch")
    with pytest.raises(ValueError, match="x \\[B, H, W, C\\] image shape"):
        d.apply(v, jnp.zeros((1, 10, 10, 1)), train=False)


def test_spectral_discriminator_keeps_u_in_spectral():
    d = DCGANDiscriminator(base=4, num_classes=3, spectral=True, aux_classifier=True)
    x, y = _images(3), jnp.array([0, 1, 2])
    v = d.init(KEY, x, y)
    assert set(v) == {"params", SPECTRAL}
    assert set(v[SPECTRAL]) == {"conv_0", "conv_1", "psi", "classifier"}  # the embedding stays plain
    assert _leaf_names(v["params"]) <= {"kernel", "bias", "embedding"}  # no u / sigma
    _, state = d.apply(v, x, y, train=True, mutable=[SPECTRAL])
    assert _tree_differs(state[SPECTRAL], v[SPECTRAL])
    _, state = d.apply(v, x, y, train=False, mutable=[SPECTRAL])
    _assert_tree_equal(state[SPECTRAL], v[SPECTRAL])


# ------------------------------------------------------------------------------------------
# Paper-scale parameter counts (jax.eval_shape; expected counts from the layer shapes).
# ------------------------------------------------------------------------------------------


def test_dcgan_32x32_parameter_counts():
    z_dim, base, c = 100, 64, 3
    # Generator: Dense z -> 4x4x256 (no bias), BN(256); deconv 256->128 (4x4, no bias), BN(128);
    # deconv 128->64, BN(64); deconv 64->3 with bias. BN = scale + shift per channel.
    gen_layers = [z_dim * 4 * 4 * 4 * base, 2 * 4 * base,
                  4 * 4 * (4 * base) * (2 * base), 2 * 2 * base,
                  4 * 4 * (2 * base) * base, 2 * base,
                  4 * 4 * base * c + c]
    g = DCGANGenerator(image_shape=(32, 32, c), base=base)
    shapes = jax.eval_shape(g.init, KEY, jnp.zeros((2, z_dim)))
    assert count_params(shapes["params"]) == sum(gen_layers) == 1_068_931
    # Conditional (10 classes): every BN's affine becomes [10, C] gamma and beta tables.
    gc = DCGANGenerator(image_shape=(32, 32, c), base=base, num_classes=10)
    shapes = jax.eval_shape(gc.init, KEY, jnp.zeros((2, z_dim)), jnp.zeros((2,), jnp.int32))
    bn_channels = [4 * base, 2 * base, base]
    assert count_params(shapes["params"]) == sum(gen_layers) - sum(2 * ch for ch in bn_channels) + \
        sum(2 * 10 * ch for ch in bn_channels)
    # Discriminator (batch norm, projection with 10 classes): convs 3->64->128->256 with biases,
    # BN(128), BN(256), psi 256->1, embedding [10, 256].
    disc_layers = [4 * 4 * c * base + base, 4 * 4 * base * 2 * base + 2 * base, 2 * 2 * base,
                   4 * 4 * 2 * base * 4 * base + 4 * base, 2 * 4 * base, 4 * base + 1, 10 * 4 * base]
    d = DCGANDiscriminator(base=base, num_classes=10, norm="batch")
    shapes = jax.eval_shape(d.init, KEY, jnp.zeros((2, 32, 32, c)), jnp.zeros((2,), jnp.int32))
    assert count_params(shapes["params"]) == sum(disc_layers)
