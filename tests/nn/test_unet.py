"""The DDPM U-Net and attention: paper parameter count (shapes only), attention against a
direct numpy computation, GroupNorm against flax and numpy, conditioning paths, masks,
dropout, and input / config errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax.linen as nn

from gen_jax.config import ConfigError
from gen_jax.nn.attention import FeatureMapAttention, MultiHeadAttention, dot_product_attention
from gen_jax.nn.unet import GroupNorm, UNet, UNetConfig, as_unet_config, timestep_embedding


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


# ----------------------------------------------------------------------------------------
# Paper-scale config: 35.7M parameters (Ho et al. 2020, Sec. 4), by jax.eval_shape only.
# ----------------------------------------------------------------------------------------

def test_ddpm_cifar10_parameter_count_matches_the_paper():
    from experiments.configs.ddpm_cifar10 import get_config
    from gen_jax.config import typed
    from gen_jax.diffusion.model import DiffusionConfig

    c = get_config()
    assert c.dataset.name == "cifar10" and c.model.name == "ddpm"
    cfg = typed(DiffusionConfig, c.model).unet  # the config's U-Net (the UNetConfig defaults)
    model = UNet(cfg)
    params = jax.eval_shape(
        lambda k: model.init(k, jnp.zeros((1, 32, 32, 3)), jnp.zeros((1,), jnp.int32), train=False),
        jax.random.PRNGKey(0))
    n = _count(params)
    assert abs(n - 35.7e6) / 35.7e6 < 0.01, n
    # The official DDPM CIFAR-10 model has exactly this many (diffusion_tf, 35,746,307).
    assert n == 35_746_307
    out = jax.eval_shape(lambda p: model.apply(p, jnp.zeros((2, 32, 32, 3)), jnp.zeros((2,), jnp.int32),
                                               train=False), params)
    assert out.shape == (2, 32, 32, 3)


# ----------------------------------------------------------------------------------------
# Attention against numpy: softmax(Q K^T / sqrt(d)) V (Vaswani et al. 2017, Eq. 1).
# ----------------------------------------------------------------------------------------

def _np_attention(q, k, v, mask=None):
    """q [Lq, D], k [Lk, D], v [Lk, Dv], mask [Lk] -> [Lq, Dv] (float64)."""
    logits = q @ k.T / np.sqrt(q.shape[-1])
    if mask is not None:
        if not mask.any():
            return np.zeros((q.shape[0], v.shape[-1]))
        logits = np.where(mask[None, :], logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    return w @ v


def test_dot_product_attention_matches_numpy_with_mask():
    r = np.random.default_rng(0)
    b, lq, lk, n, d = 3, 5, 4, 2, 8
    q, k, v = (r.normal(size=s).astype(np.float32) for s in ((b, lq, n, d), (b, lk, n, d), (b, lk, n, d)))
    mask = np.array([[1, 1, 0, 1], [1, 0, 0, 0], [0, 0, 0, 0]], bool)  # last row: all padding
    out = np.asarray(dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(mask)))
    ref = np.stack([np.stack([_np_attention(q[i, :, h].astype(np.float64), k[i, :, h], v[i, :, h], mask[i])
                              for h in range(n)], axis=1) for i in range(b)])
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert np.all(out[2] == 0)
    out_nomask = np.asarray(dot_product_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v)))
    np.testing.assert_allclose(out_nomask[0, :, 1], _np_attention(q[0, :, 1], k[0, :, 1], v[0, :, 1]), atol=1e-5)


def test_multi_head_attention_matches_numpy_projections():
    r = np.random.default_rng(1)
    b, lq, lk, f, e, heads = 2, 6, 3, 8, 5, 2
    x = r.normal(size=(b, lq, f)).astype(np.float32)
    ctx = r.normal(size=(b, lk, e)).astype(np.float32)
    mask = np.array([[1, 0, 1], [1, 1, 1]], bool)
    mha = MultiHeadAttention(num_heads=heads)
    p = jax.jit(mha.init)(jax.random.PRNGKey(0), x, ctx, mask)
    out = np.asarray(jax.jit(mha.apply)(p, x, ctx, mask))
    w = jax.tree.map(lambda a: np.asarray(a, np.float64), p["params"])
    hd = f // heads
    ref = np.zeros((b, lq, f))
    for i in range(b):
        heads_out = []
        for h in range(heads):
            q = x[i] @ w["query"]["kernel"][:, h] + w["query"]["bias"][h]
            k = ctx[i] @ w["key"]["kernel"][:, h] + w["key"]["bias"][h]
            v = ctx[i] @ w["value"]["kernel"][:, h] + w["value"]["bias"][h]
            heads_out.append(_np_attention(q, k, v, mask[i]))
        cat = np.concatenate(heads_out, axis=-1)  # [Lq, N * D]
        ref[i] = cat @ w["out"]["kernel"].reshape(heads * hd, f) + w["out"]["bias"]
    np.testing.assert_allclose(out, ref, atol=1e-4)
    # Self-attention over a feature map = MHA over its H*W pixels.
    fm = r.normal(size=(b, 2, 3, f)).astype(np.float32)
    fma = FeatureMapAttention(num_heads=heads, zero_init_out=False)
    ps = jax.jit(mha.init)(jax.random.PRNGKey(1), fm.reshape(b, 6, f))
    got = np.asarray(jax.jit(fma.apply)({"params": {"mha": ps["params"]}}, fm))
    want = np.asarray(jax.jit(mha.apply)(ps, fm.reshape(b, 6, f)))
    np.testing.assert_allclose(got, want.reshape(b, 2, 3, f), atol=1e-5)


def test_group_norm_matches_flax_and_numpy():
    r = np.random.default_rng(2)
    x = (3.0 + 2.0 * r.normal(size=(2, 4, 4, 12))).astype(np.float32)
    gn = GroupNorm(num_groups=3)
    p = gn.init(jax.random.PRNGKey(0), x)
    p = jax.tree.map(lambda a: a + jnp.asarray(r.normal(size=a.shape), jnp.float32), p)
    got = np.asarray(gn.apply(p, x))
    ref_flax = nn.GroupNorm(num_groups=3, epsilon=1e-6).apply(
        {"params": {"scale": p["params"]["scale"], "bias": p["params"]["bias"]}}, x)
    np.testing.assert_allclose(got, np.asarray(ref_flax), atol=2e-5)
    xg = x.astype(np.float64).reshape(2, 4, 4, 3, 4)
    norm = (xg - xg.mean(axis=(1, 2, 4), keepdims=True)) / np.sqrt(xg.var(axis=(1, 2, 4), keepdims=True) + 1e-6)
    ref = norm.reshape(x.shape) * np.asarray(p["params"]["scale"]) + np.asarray(p["params"]["bias"])
    np.testing.assert_allclose(got, ref, atol=2e-5)


def test_timestep_embedding_formula():
    t = jnp.array([0.0, 1.0, 37.0])
    e = np.asarray(timestep_embedding(t, 8))
    w = 10000.0 ** (-np.arange(4) / 3.0)
    ref = np.concatenate([np.sin(np.array([0, 1, 37.0])[:, None] * w), np.cos(np.array([0, 1, 37.0])[:, None] * w)], -1)
    np.testing.assert_allclose(e, ref, atol=1e-5)
    # Integer steps are embedded as floats.
    np.testing.assert_array_equal(np.asarray(timestep_embedding(jnp.array([0, 1, 37]), 8)), e)


# ----------------------------------------------------------------------------------------
# A tiny conditional U-Net: 8x8x1, ch 16, two levels, attention + cross-attention at 4x4.
# ----------------------------------------------------------------------------------------

TINY = UNetConfig(ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.3,
                  num_groups=4, num_heads=2, num_classes=3, emb_dim=5, context_dim=6)
B, L = 4, 3


def _inputs(seed=0):
    r = np.random.default_rng(seed)
    return dict(x=jnp.asarray(r.normal(size=(B, 8, 8, 1)), jnp.float32),
                t=jnp.array([0, 10, 500, 999], jnp.int32),
                label=jnp.array([0, 1, 2, 3], jnp.int32),  # 3 = null class
                context=jnp.asarray(r.normal(size=(B, L, 6)), jnp.float32),
                context_mask=jnp.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]], bool),
                emb=jnp.asarray(r.normal(size=(B, 5)), jnp.float32))


def _random_params(shapes, seed=0):
    """Values for a params pytree of shapes (``jax.eval_shape`` of init): kernels and
    embeddings ~ N(0, 1 / fan_in), biases ~ N(0, 0.1^2), GroupNorm scales ~ 1 + N(0, 0.1^2).
    Every path of the network is then live (real init zeroes conv2, attention outputs and
    conv_out), and no init program has to be compiled."""
    r = np.random.default_rng(seed)

    def fill(path, s):
        name = path[-1].key
        if name == "kernel":
            qkv = len(s.shape) == 3 and path[-2].key != "out"  # DenseGeneral [F, N, D]
            fan_in = s.shape[0] if qkv else int(np.prod(s.shape[:-1]))
            return jnp.asarray(r.normal(size=s.shape) / np.sqrt(fan_in), jnp.float32)
        if name == "scale":
            return jnp.asarray(1.0 + 0.1 * r.normal(size=s.shape), jnp.float32)
        return jnp.asarray((1.0 if name == "embedding" else 0.1) * r.normal(size=s.shape), jnp.float32)

    return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def tiny():
    model = UNet(TINY)
    inp = _inputs()
    shapes = jax.eval_shape(lambda k: model.init(k, **inp, train=False), jax.random.PRNGKey(0))
    live = _random_params(shapes)

    # One compiled program gives the eval-mode output and its input gradients (each compile
    # costs seconds here, so the forward-only tests reuse it).
    @jax.jit
    def fwd_grads(p, x, t, label, context, context_mask, emb, w):
        def f(t, context, emb):
            out = model.apply(p, x, t, label, context, context_mask, emb, train=False)
            return jnp.sum(w * out), out
        return jax.grad(f, argnums=(0, 1, 2), has_aux=True)(t.astype(jnp.float32), context, emb)

    def apply(p, x, t, label, context, context_mask, emb):
        return fwd_grads(p, x, t, label, context, context_mask, emb, jnp.ones_like(x))[1]

    @jax.jit
    def apply_train(p, key, x, t, label, context, context_mask, emb):
        return model.apply(p, x, t, label, context, context_mask, emb, train=True, rngs={"dropout": key})

    def input_grads(p, x, t, label, context, context_mask, emb, w):
        return fwd_grads(p, x, t, label, context, context_mask, emb, w)[0]

    return dict(model=model, shapes=shapes, live=live, apply=apply, apply_train=apply_train,
                input_grads=input_grads, inp=inp)


def test_zero_output_at_init():
    # A real (compiled) init is costly here (one RNG program per parameter), so a minimal
    # U-Net is initialized: the output conv is zero-initialized, whatever comes before it.
    cfg = UNetConfig(ch=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), num_groups=2)
    model = UNet(cfg)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 3)), jnp.float32)
    t = jnp.array([3, 700])
    out = jax.jit(lambda k: model.apply(model.init(k, x, t, train=False), x, t, train=False))(
        jax.random.key(0, impl="rbg"))  # rbg: a shorter init program to compile than threefry
    assert out.shape == (2, 4, 4, 3) and np.all(np.asarray(out) == 0.0)


def test_tiny_output_shape_and_parameters(tiny):
    p = tiny["shapes"]["params"]
    assert p["label_embed"]["embedding"].shape == (TINY.num_classes + 1, 4 * TINY.ch)
    assert p["conv_out"]["kernel"].shape == (3, 3, 16, 1)
    assert "cross_attn" in p["mid_attn"] and "cross_attn" in p["down1_attn0"] and "up0_attn0" not in p
    out = np.asarray(tiny["apply"](tiny["live"], **tiny["inp"]))
    assert out.shape == (B, 8, 8, 1)
    assert np.all(np.isfinite(out)) and np.std(out) > 1e-3


def test_output_depends_on_time_label_embedding_and_context(tiny):
    inp = dict(tiny["inp"])
    w = jax.random.normal(jax.random.PRNGKey(3), (B, 8, 8, 1))
    g_t, g_ctx, g_emb = tiny["input_grads"](tiny["live"], inp["x"], inp["t"],
                                            inp["label"], inp["context"], inp["context_mask"], inp["emb"], w)
    g_t, g_ctx, g_emb = map(np.asarray, (g_t, g_ctx, g_emb))
    assert np.all(np.abs(g_t) > 0)
    assert np.all(np.abs(g_emb).sum(-1) > 0)
    mask = np.asarray(inp["context_mask"])
    assert np.all(np.abs(g_ctx).sum(-1)[mask] > 0)  # every real token influences the output
    assert np.all(g_ctx[~mask] == 0)                # padding tokens do not
    # The label: same x, t, context, emb in every row, labels 0..3 -> four different outputs.
    same = {k: jnp.broadcast_to(v[:1], v.shape) for k, v in inp.items() if k != "label"}
    out = np.asarray(tiny["apply"](tiny["live"], label=inp["label"], **same))
    for i in range(B):
        for j in range(i):
            assert np.max(np.abs(out[i] - out[j])) > 1e-4, (i, j)


def test_masked_context_tokens_change_nothing(tiny):
    inp = tiny["inp"]
    out = np.asarray(tiny["apply"](tiny["live"], **inp))
    mask = np.asarray(inp["context_mask"])
    noise = np.random.default_rng(5).normal(size=inp["context"].shape) * 10.0
    ctx2 = jnp.asarray(np.where(mask[..., None], np.asarray(inp["context"]), noise), jnp.float32)
    out2 = np.asarray(tiny["apply"](tiny["live"], **{**inp, "context": ctx2}))
    np.testing.assert_allclose(out2, out, atol=1e-6, rtol=0)
    # ... while changing a real token does change the output.
    ctx3 = np.asarray(inp["context"]).copy()
    ctx3[0, 0] += 1.0
    out3 = np.asarray(tiny["apply"](tiny["live"], **{**inp, "context": jnp.asarray(ctx3)}))
    assert np.max(np.abs(out3[0] - out[0])) > 1e-4


def test_dropout_only_in_train_mode(tiny):
    inp, p = tiny["inp"], tiny["live"]
    ev = np.asarray(tiny["apply"](p, **inp))
    a = np.asarray(tiny["apply_train"](p, jax.random.PRNGKey(1), **inp))
    a2 = np.asarray(tiny["apply_train"](p, jax.random.PRNGKey(1), **inp))
    b = np.asarray(tiny["apply_train"](p, jax.random.PRNGKey(2), **inp))
    np.testing.assert_array_equal(a, a2)
    assert np.max(np.abs(a - b)) > 1e-3 and np.max(np.abs(a - ev)) > 1e-3


# ----------------------------------------------------------------------------------------
# Bad inputs and configs: clear errors naming the problem (raised while tracing).
# ----------------------------------------------------------------------------------------

def _init_shapes(cfg, x_shape, **kw):
    model = UNet(cfg)
    b = x_shape[0]
    return jax.eval_shape(lambda k: model.init(k, jnp.zeros(x_shape), jnp.zeros((b,), jnp.int32), **kw,
                                               train=False), jax.random.PRNGKey(0))


def test_image_size_not_divisible():
    cfg = UNetConfig(ch=16, ch_mult=(1, 2, 2), attn_resolutions=(), num_groups=4)
    with pytest.raises(ValueError, match=r"image size 10x10 is not divisible by 2\^\(len\(ch_mult\) - 1\) = 4"):
        _init_shapes(cfg, (2, 10, 10, 1))
    with pytest.raises(ValueError, match=r"image size 10x10"):
        cfg.check_image_shape((10, 10, 3))
    with pytest.raises(ValueError, match=r"attn_resolutions \[16\] never occur"):
        UNetConfig(ch=16, ch_mult=(1, 2), attn_resolutions=(16,), num_groups=4).check_image_shape((8, 8, 1))


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"config\.model\.unet\.num_groups: channel count .* = 24 is not divisible "
                                          r"by num_groups=16"):
        UNetConfig(ch=24, ch_mult=(1, 2), num_groups=16)
    with pytest.raises(ConfigError, match=r"config\.model\.unet\.num_heads"):
        UNetConfig(ch=16, ch_mult=(1,), num_groups=4, num_heads=3)
    with pytest.raises(ConfigError, match=r"config\.model\.unet\.dropout"):
        as_unet_config(dict(dropout=1.5))
    with pytest.raises(ConfigError, match=r"config\.model\.unet\.chmult: unknown field"):
        as_unet_config(dict(chmult=(1, 2)))
    with pytest.raises(ConfigError, match=r"config\.model\.unet\.ch: expected int"):
        as_unet_config(dict(ch="128"))
    with pytest.raises(ValueError, match=r"GroupNorm: 6 channels are not divisible by num_groups=4"):
        GroupNorm(4).init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 6)))


def test_conditioning_input_errors():
    inp = {k: v for k, v in _inputs().items()}
    x_shape = inp["x"].shape
    with pytest.raises(ValueError, match=r"label is required: the U-Net is class-conditional \(num_classes=3\)"):
        _init_shapes(TINY, x_shape, **{k: v for k, v in inp.items() if k not in ("x", "t", "label")})
    with pytest.raises(ValueError, match=r"context must be \[B, L, context_dim\] = \[4, L, 6\], got \(4, 3, 7\)"):
        _init_shapes(TINY, x_shape, label=inp["label"], emb=inp["emb"], context=jnp.zeros((4, 3, 7)))
    with pytest.raises(ValueError, match=r"context_mask must be \[B, L\] = \[4, 3\]"):
        _init_shapes(TINY, x_shape, label=inp["label"], emb=inp["emb"], context=inp["context"],
                     context_mask=jnp.ones((4, 2), bool))
    with pytest.raises(ValueError, match=r"emb must be \[B, emb_dim\] = \[4, 5\]"):
        _init_shapes(TINY, x_shape, label=inp["label"], context=inp["context"], emb=jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"t must be \[B\] = \[4\]"):
        UNet(TINY).init(jax.random.PRNGKey(0), inp["x"], jnp.zeros((4, 1)), inp["label"], inp["context"],
                        emb=inp["emb"], train=False)
    plain = UNetConfig(ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), num_groups=4)
    with pytest.raises(ValueError, match=r"label given but the U-Net is unconditional"):
        _init_shapes(plain, x_shape, label=inp["label"])
    with pytest.raises(ValueError, match=r"context given but config\.model\.unet\.context_dim=0"):
        _init_shapes(plain, x_shape, context=inp["context"])
    with pytest.raises(ValueError, match=r"mask must be \[B, L\] = \[3, 4\]"):
        dot_product_attention(jnp.zeros((3, 2, 1, 4)), jnp.zeros((3, 4, 1, 4)), jnp.zeros((3, 4, 1, 4)),
                              jnp.ones((3, 5), bool))
