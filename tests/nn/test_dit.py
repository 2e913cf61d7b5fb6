"""The diffusion transformer (gen_jax.nn.dit, Peebles & Xie 2023): identity at initialization
(adaLN-Zero), the patch layout and its exact inverse, the 2-D sin-cos embedding against its
formula, non-causal attention (every output patch depends on every input patch), the
conditioning vector, parameter counts (closed form; DiT-XL/2 = 675M by shapes only) and the
config / input errors."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.config import ConfigError, typed
from gen_jax.nn.dit import (DiT, DiTBlock, DiTConfig, patchify, sincos_position_embedding_2d,
                            unpatchify)

SMALL = DiTConfig(patch_size=2, width=32, depth=2, num_heads=2, mlp_ratio=2.0, time_dim=16,
                  num_classes=3, out_channels=2)
B, H, W, C = 2, 8, 6, 1


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _inputs(seed=0):
    r = np.random.default_rng(seed)
    return (jnp.asarray(r.normal(size=(B, H, W, C)), jnp.float32), jnp.array([3, 17], jnp.int32),
            jnp.array([0, 2], jnp.int32))


@pytest.fixture(scope="module")
def small():
    """The small DiT, its real init, an apply compiled once, and params whose zero-initialized
    leaves (the adaLN-Zero modulations and the final linear layer) are perturbed."""
    net = DiT(SMALL)
    x, t, y = _inputs()
    params = jax.jit(net.init)(jax.random.PRNGKey(0), x, t, y)
    apply = jax.jit(net.apply)
    r = np.random.default_rng(1)
    perturbed = jax.tree.map(
        lambda p: p + jnp.asarray(r.normal(0.0, 0.1, p.shape), p.dtype) if not np.any(np.asarray(p)) else p, params)
    return net, params, perturbed, apply


def test_output_is_zero_and_blocks_are_identities_at_init(small):
    net, params, _, apply = small
    x, t, y = _inputs()
    out = apply(params, x, t, y)
    assert out.shape == (B, H, W, SMALL.out_channels)
    assert not np.any(np.asarray(out))  # the zero-initialized final linear layer
    # adaLN-Zero: every gate is zero at init, so each block returns its input exactly.
    block = DiTBlock(SMALL.num_heads, SMALL.mlp_width)
    z = jax.random.normal(jax.random.PRNGKey(2), (B, 12, SMALL.width))
    c = jax.random.normal(jax.random.PRNGKey(3), (B, SMALL.width))
    bp = {"params": params["params"]["block0"]}
    np.testing.assert_array_equal(jax.jit(block.apply)(bp, z, c), z)


def test_patchify_layout_and_exact_inverse():
    p = 2
    x = np.random.default_rng(4).normal(size=(2, 6, 4, 3)).astype(np.float32)
    tok = np.asarray(patchify(jnp.asarray(x), p))
    assert tok.shape == (2, (6 // p) * (4 // p), p * p * 3)
    for r in range(6 // p):  # token r (W/p) + q holds x[r p + i, q p + j, c] at (i p + j) C + c
        for q in range(4 // p):
            for i in range(p):
                for j in range(p):
                    np.testing.assert_array_equal(tok[:, r * (4 // p) + q, (i * p + j) * 3:(i * p + j + 1) * 3],
                                                  x[:, r * p + i, q * p + j, :])
    np.testing.assert_array_equal(np.asarray(unpatchify(jnp.asarray(tok), 6 // p, 4 // p, p)), x)
    # And the other way round, on a token array of another channel count.
    tk = jnp.asarray(np.random.default_rng(5).normal(size=(2, 6, 4 * 5)), jnp.float32)
    np.testing.assert_array_equal(patchify(unpatchify(tk, 3, 2, 2), 2), tk)


def test_sincos_position_embedding_formula():
    gh, gw, d = 3, 4, 16
    emb = sincos_position_embedding_2d(gh, gw, d)
    assert emb.shape == (gh * gw, d) and emb.dtype == np.float32
    omega = 10000.0 ** (-np.arange(d // 4) / (d // 4))
    for r in range(gh):
        for q in range(gw):
            want = np.concatenate([np.sin(r * omega), np.cos(r * omega), np.sin(q * omega), np.cos(q * omega)])
            np.testing.assert_allclose(emb[r * gw + q], want, rtol=1e-6, atol=1e-7)
    assert len({tuple(np.round(e, 5)) for e in emb}) == gh * gw  # every patch its own position


def test_every_output_patch_depends_on_every_input_patch(small):
    """Non-causal attention: the gradient of one output patch reaches every input patch
    (a per-patch network or a causal mask would leave zeros)."""
    net, _, perturbed, _ = small
    x, t, y = _inputs()
    p = SMALL.patch_size

    g = jax.jit(jax.grad(lambda x: net.apply(perturbed, x, t, y)[0, :p, :p].sum()))(x)  # the first patch
    per_patch = np.abs(np.asarray(patchify(g, p)))[0].sum(-1)  # [T]
    assert per_patch.shape == (12,) and np.all(per_patch > 0), per_patch
    assert not np.any(np.asarray(g)[1])  # examples stay independent


def test_conditioning_changes_the_output(small):
    _, params, perturbed, apply = small
    x, t, y = _inputs()
    base = np.asarray(apply(perturbed, x, t, y))
    other_label = np.asarray(apply(perturbed, x, t, jnp.array([1, 3], jnp.int32)))  # 3 = the null class
    other_time = np.asarray(apply(perturbed, x, jnp.array([500, 17], jnp.int32), y))
    assert np.abs(other_label - base)[0].max() > 1e-4 and np.abs(other_label - base)[1].max() > 1e-4
    assert np.abs(other_time - base)[0].max() > 1e-4
    np.testing.assert_allclose(other_time[1], base[1], rtol=1e-5, atol=1e-6)  # example 1's t unchanged
    # At init (zero modulations, zero decoder) the output is zero whatever the condition.
    assert not np.any(np.asarray(apply(params, x, jnp.array([500, 1], jnp.int32), jnp.array([1, 3]))))


def _closed_form_count(cfg: DiTConfig, c_in: int, out: int) -> int:
    """Parameters of the DiT layout (module docstring): patch embedding, timestep MLP, label
    table (+ null row), per block adaLN (d -> 6d), q/k/v/out (d -> d each), MLP (d -> m -> d),
    final adaLN (d -> 2d) and decoder (d -> p^2 out); parameter-free LayerNorms."""
    d, m, p = cfg.width, cfg.mlp_width, cfg.patch_size
    dense = lambda i, o: i * o + o
    block = dense(d, 6 * d) + 4 * dense(d, d) + dense(d, m) + dense(m, d)
    return (dense(p * p * c_in, d) + dense(cfg.time_dim, d) + dense(d, d)
            + (cfg.num_classes + 1) * d * (cfg.num_classes > 0)
            + cfg.depth * block + dense(d, 2 * d) + dense(d, p * p * out))


def test_parameter_count_matches_the_closed_form(small):
    _, params, _, _ = small
    assert _count(params) == _closed_form_count(SMALL, C, SMALL.out_channels)
    uncond = dataclasses.replace(SMALL, num_classes=0, out_channels=0, mlp_ratio=4.0, depth=3)
    shapes = jax.eval_shape(lambda k: DiT(uncond).init(k, jnp.zeros((1, 4, 4, 3)), jnp.zeros((1,))),
                            jax.random.PRNGKey(0))
    assert _count(shapes) == _closed_form_count(uncond, 3, 3)


def test_dit_xl2_has_the_papers_675m_parameters():
    """DiT-XL/2 (Table 1: depth 28, width 1152, 16 heads; patch 2) on the 32x32x4 latents of
    256x256 ImageNet, 1000 classes + null, learned variances (8 outputs): 675M (shapes only)."""
    cfg = DiTConfig(patch_size=2, width=1152, depth=28, num_heads=16, num_classes=1000, out_channels=8)
    net = DiT(cfg)
    x, t = jnp.zeros((1, 32, 32, 4)), jnp.zeros((1,), jnp.int32)
    shapes = jax.eval_shape(lambda k: net.init(k, x, t, t), jax.random.PRNGKey(0))
    n = _count(shapes)
    assert n == _closed_form_count(cfg, 4, 8) == 674_834_720
    assert round(n / 1e6) == 675
    assert cfg.num_tokens((32, 32, 4)) == 256


def test_config_and_input_errors(small):
    with pytest.raises(ConfigError, match=r"config\.model\.dit\.num_heads: must divide width=96"):
        typed(DiTConfig, {"width": 96, "num_heads": 5}, "config.model.dit")
    with pytest.raises(ConfigError, match=r"config\.model\.dit\.width: .*divisible by 4"):
        DiTConfig(width=6, num_heads=3)
    with pytest.raises(ConfigError, match=r"config\.model\.dit\.patch_size: must be > 0"):
        DiTConfig(patch_size=0)
    with pytest.raises(ValueError, match=r"7x6 is not divisible by the patch size \(config\.model\.dit\.patch_size=2\)"):
        SMALL.check_image_shape((7, 6, 1))
    net, params, _, _ = small
    x, t, y = _inputs()
    with pytest.raises(ValueError, match="config.model.dit.patch_size=2"):
        net.apply(params, x[:, :7], t, y)
    with pytest.raises(ValueError, match="label is required"):
        net.apply(params, x, t)
    with pytest.raises(ValueError, match=r"t must be \[B\] = \[2\]"):
        net.apply(params, x, t[:1], y)
    with pytest.raises(ValueError, match="unconditional"):
        DiT(dataclasses.replace(SMALL, num_classes=0)).init(jax.random.PRNGKey(0), x, t, y)
