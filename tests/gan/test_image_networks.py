"""gen_jax.gan.image_networks: U-Net and PatchGAN shapes, ranges, the dropout noise, and the
receptive field of a patch logit checked by autodiff (Isola et al. 2017, Sec. 3.2)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.gan.image_networks import (PatchDiscriminator, UNetGenerator, patch_logits_shape,
                                        patch_receptive_field, patch_window)

KEY = jax.random.PRNGKey(0)
X = jax.random.uniform(jax.random.PRNGKey(1), (2, 32, 32, 3))


@pytest.fixture(scope="module")
def unet():
    g = UNetGenerator(out_channels=3, base=4, depth=5)
    v = g.init({"params": KEY, "dropout": KEY}, X)
    return g, v


def test_unet_shapes_range_and_dropout_noise(unet):
    g, v = unet
    out = g.apply(v, X, noise=True, rngs={"dropout": jax.random.PRNGKey(2)})
    assert out.shape == (2, 32, 32, 3) and out.dtype == jnp.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    other = g.apply(v, X, noise=True, rngs={"dropout": jax.random.PRNGKey(3)})
    assert float(jnp.abs(out - other).max()) > 1e-4  # dropout is the noise
    det = g.apply(v, X, noise=False)
    np.testing.assert_array_equal(np.asarray(det), np.asarray(g.apply(v, X, noise=False)))
    # The skips: the output layer sees the first encoder layer directly (concatenated).
    assert v["params"]["out"]["kernel"].shape[-2] == 2 * 4  # decoder 4 + skip 4 channels


def test_unet_batch_norm_state_and_resize():
    g = UNetGenerator(out_channels=1, base=2, depth=3, norm="batch", upsample="resize", dropout_layers=2)
    v = g.init({"params": KEY, "dropout": KEY}, X[:, :8, :8])
    assert "batch_stats" in v
    out, state = g.apply(v, X[:, :8, :8], train=True, mutable=["batch_stats"], rngs={"dropout": KEY})
    assert out.shape == (2, 8, 8, 1) and "batch_stats" in state


def test_unet_refuses_bad_input():
    with pytest.raises(ValueError, match="divisible by 2\\^depth = 32"):
        UNetGenerator(depth=5).init({"params": KEY, "dropout": KEY}, X[:, :16, :24])
    with pytest.raises(ValueError, match="norm must be one of"):
        UNetGenerator(norm="layer")
    with pytest.raises(ValueError, match="dropout_layers"):
        UNetGenerator(depth=2, dropout_layers=2)
    with pytest.raises(ValueError, match="source must be"):
        UNetGenerator(depth=2, dropout_layers=1).init({"params": KEY, "dropout": KEY}, X[0])


def test_patch_geometry_formulas():
    assert [patch_receptive_field(n)[0] for n in (0, 1, 2, 3)] == [7, 16, 34, 70]  # 70x70 of the paper
    assert patch_logits_shape(1, 32, 32) == (14, 14) and patch_logits_shape(3, 256, 256) == (30, 30)


@pytest.mark.parametrize("n_layers,norm,row", [(1, "none", 5), (1, "batch", 4), (2, "none", 3)])
def test_patch_logit_receptive_field_by_autodiff(n_layers, norm, row):
    d = PatchDiscriminator(base=4, n_layers=n_layers, norm=norm, conditional=True)
    src = jax.random.uniform(jax.random.PRNGKey(4), X.shape)
    v = d.init(KEY, X, src, train=False)
    logits = d.apply(v, X, src, train=False)
    assert logits.shape == (2, *patch_logits_shape(n_layers, 32, 32))
    col = row + 1

    def one_logit(x, s):
        return d.apply(v, x, s, train=False)[0, row, col]

    gx, gs = jax.grad(one_logit, argnums=(0, 1))(X, src)
    for g in (gx, gs):  # both halves of the concatenated pair
        mag = np.abs(np.asarray(g[0])).sum(-1)  # [H, W]
        assert np.abs(np.asarray(g[1])).max() == 0.0  # other examples untouched
        r0, r1 = (max(0, b) for b in patch_window(n_layers, row))
        c0, c1 = (max(0, b) for b in patch_window(n_layers, col))
        r1, c1 = min(r1, 32), min(c1, 32)
        inside = np.zeros_like(mag, bool)
        inside[r0:r1, c0:c1] = True
        assert mag[~inside].max() == 0.0
        # The window is tight: its corner pixels do reach the logit.
        assert min(mag[r0, c0], mag[r1 - 1, c1 - 1], mag[r0, c1 - 1], mag[r1 - 1, c0]) > 0.0


def test_patch_discriminator_conditioning_checks():
    d = PatchDiscriminator(base=4, conditional=True)
    with pytest.raises(ValueError, match="needs source"):
        d.init(KEY, X)
    with pytest.raises(ValueError, match="must share"):
        d.init(KEY, X, X[:1])
    u = PatchDiscriminator(base=4, conditional=False, norm="instance")
    v = u.init(KEY, X)
    assert u.apply(v, X).shape == (2, 14, 14)
    with pytest.raises(ValueError, match="conditional=False"):
        u.apply(v, X, X)
    with pytest.raises(ValueError, match="too small"):
        PatchDiscriminator(base=4, n_layers=3, conditional=False).init(KEY, X[:, :8, :8])
