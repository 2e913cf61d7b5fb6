"""Mixed precision (gen_jax.nn.precision) in the families added after the VAE / DDPM / LM
(tests/nn/test_precision_remat.py): GANs (DCGAN with spectral norm, projection and AC-GAN
heads; the SN-GAN standard CNN; the MLP GAN on points; Pix2Pix), the caption-conditioned DDPM (caption
encoder + cross-attending U-Net), latent diffusion, the flows (Glow, RealNVP), PixelCNN++ and
the (gated) PixelCNN.

Under ``compute_dtype='bfloat16'``: params, model state (batch statistics, spectral-norm
vectors), gradients and losses stay float32; the lowered program has bfloat16 dot/conv
operands; the spectral-norm power iteration runs in float32; the bf16 loss is within a few %
of the float32 one (the float32 program itself is the reference)."""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.autoregressive.image_model import make_gated_pixelcnn, make_pixelcnn
from gen_jax.autoregressive.pixelcnnpp_model import make_pixelcnnpp
from gen_jax.config import ConfigError
from gen_jax.diffusion.latent import make_latent_diffusion
from gen_jax.diffusion.model import make_ddpm
from gen_jax.flows.glow import make_glow
from gen_jax.flows.realnvp import make_realnvp
from gen_jax.gan.model import make_gan
from gen_jax.gan.pix2pix import make_pix2pix
from gen_jax.latent.vae import make_vae
from gen_jax.model import Stage
from gen_jax.nn.spectral_norm import sn_dense
from tests.nn.test_precision_remat import _low_precision_ops, _rel_err

DIGITS = types.SimpleNamespace(image_shape=(8, 8, 1), num_levels=17, num_classes=10)
POINTS = types.SimpleNamespace(image_shape=(1, 1, 2), num_levels=256, num_classes=None, value_range=(-2.0, 2.0))
SHAPES8 = types.SimpleNamespace(name="shapes", image_shape=(8, 8, 3), num_levels=256, num_classes=5)
GANS = {  # name: (factory, config.model, dataset info, the phase compiled and run; the other is lowered only)
    "dcgan": (make_gan, dict(z_dim=8, g_base=8, d_base=8, spectral=True, conditioning="label", aux_weight=1.0,
                             d_norm="layer"), DIGITS, "d"),
    "sngan": (make_gan, dict(arch="sngan", z_dim=8, g_base=8, d_base=8, spectral=True), DIGITS, None),
    "mlp": (make_gan, dict(arch="mlp", z_dim=4, g_hidden=(16, 16), d_hidden=(16, 16), spectral=True), POINTS, "g"),
    "pix2pix": (make_pix2pix, dict(g_base=4, g_depth=3, d_base=4, d_layers=1, dropout_layers=2), SHAPES8, None),
}
KEY = jax.random.PRNGKey(5)
_CACHE: dict = {}


def _gan_batch(info):
    shape = (8,) + tuple(info.image_shape)
    img = np.random.default_rng(0).integers(0, info.num_levels, shape) / (info.num_levels - 1)
    batch = {"image": np.asarray(img, np.float32)}
    if info.num_classes:
        batch["label"] = np.arange(8, dtype=np.int32) % info.num_classes
    return batch


def _fill(shapes, seed):
    """Arrays in the tree of ``jax.eval_shape`` results (no init compile; host numpy draws, no
    per-shape device programs): N(0, 0.1^2) weights, norm scales / batch variances / spectral
    ``sigma`` / weight-norm ``g`` 1 + N(0, 0.1^2), batch means 0, spectral ``u`` N(0, 1)."""
    leaves, tree = jax.tree_util.tree_flatten_with_path(shapes)
    rng = np.random.default_rng(seed)

    def draw(path, s):
        name, z = jax.tree_util.keystr(path), rng.standard_normal(s.shape)
        if name.endswith("['u']") or "/u'" in name:
            return z.astype(s.dtype)
        one = any(t in name for t in ("scale", "'var'", "sigma", "gamma", "['g']"))
        return ((0.0 if "'mean'" in name else 1.0 * one + 0.1 * z) * np.ones(s.shape)).astype(s.dtype)

    return jax.tree.unflatten(tree, [draw(p, s) for p, s in leaves])


def _gan(name, dtype):
    """``(model, params, state, batch, {phase: (lowered text, (loss, (metrics, state)), grads)})``
    of GAN ``name`` with compute dtype ``dtype`` (memoized; the same float32 params and state
    for both dtypes). The phase named in :data:`GANS` is compiled and run; under bf16 the
    other one is lowered only (its outputs are the lowered program's ``ShapeDtypeStruct`` s),
    under float32 it is skipped (the reference is the run phase)."""
    if (name, dtype) not in _CACHE:
        make, cfg, info, run = GANS[name]
        model = make(dict(cfg, compute_dtype=dtype), info)
        batch = _gan_batch(info)
        if ("init", name) not in _CACHE:
            k = jax.random.PRNGKey(1)
            _CACHE["init", name] = (_fill(jax.eval_shape(model.training.init, k, batch), 2),
                                    _fill(jax.eval_shape(model.training.init_model_state, k, batch), 3))
        params, state = _CACHE["init", name]
        out = {}
        for phase in model.training.phases:
            if dtype == "float32" and phase.name != run:
                continue
            fn = jax.jit(jax.value_and_grad(lambda p, s, f=phase.loss: f(p, s, batch, KEY), has_aux=True))
            lowered = fn.lower(params, state)
            res = lowered.compile()(params, state) if phase.name == run else lowered.out_info
            out[phase.name] = (phase.group, lowered.as_text()) + tuple(res)
        _CACHE[name, dtype] = (model, params, state, batch, out)
    return _CACHE[name, dtype]


def _lower_loss(model, params, batch):
    """The lowered ``value_and_grad`` of ``model``'s first phase loss (one key) at ``params``."""
    return jax.jit(jax.value_and_grad(lambda p: model.training.phases[0].loss(p, batch, KEY),
                                      has_aux=True)).lower(params)


def _float_dtypes(tree) -> set:
    return {jnp.dtype(x.dtype) for x in jax.tree.leaves(tree) if jnp.issubdtype(x.dtype, jnp.floating)}


@pytest.mark.parametrize("name", sorted(GANS))
def test_gan_bf16_keeps_params_state_grads_and_losses_float32(name):
    """Both players' losses under bf16 compute: float32 loss, metrics, new model state (batch
    statistics, spectral ``u`` / ``sigma``) and gradients; bf16 operands in the lowered dot /
    conv ops (none in the float32 program of the run phase). The run phase: loss within 1% and
    the phase's player's gradients within 5% of float32 (bf16 keeps 8 significant bits; the
    gradient passes through both networks; measured 2e-5 / 0.6-0.8%), and not identical
    (really another program)."""
    _, params, state, _, out16 = _gan(name, "bfloat16")
    f32 = {jnp.dtype("float32")}
    assert _float_dtypes(params) == _float_dtypes(state) == f32
    for phase, (group, text16, (l16, (m16, s16)), g16) in out16.items():
        assert l16.dtype == jnp.float32 and _float_dtypes(m16) == f32
        assert _float_dtypes(s16) == f32 and jax.tree.structure(s16) == jax.tree.structure(state)
        assert _float_dtypes(g16) == f32
        ops = _low_precision_ops(text16)
        assert ops["dot_general"] + ops["convolution"] >= 3, (phase, ops)
        if name != "mlp":
            assert ops["convolution"] >= 2, (phase, ops)
        if phase == GANS[name][3]:
            _, text32, (l32, _), g32 = _gan(name, "float32")[4][phase]
            assert _low_precision_ops(text32) == {"dot_general": 0, "convolution": 0}
            np.testing.assert_allclose(float(l16), float(l32), rtol=1e-2)
            assert 0 < _rel_err(g16[group], g32[group]) < 5e-2, phase


def test_spectral_norm_power_iteration_runs_in_float32():
    """An SN Dense with bf16 compute: every product with the power-iteration vector ``u``
    (``[1, out]``) or ``v`` is float32, the stored ``u`` and ``sigma`` are float32 and equal
    the float32 layer's (the same iteration on the same float32 kernel), only the layer's
    product is bf16, and its output is within bf16 rounding of the float32 layer's."""
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 6))
    f32, b16 = sn_dense(5), sn_dense(5, dtype=jnp.bfloat16)
    variables = f32.init(jax.random.PRNGKey(1), x, False)
    (y32, s32), (y16, s16) = (m.apply(variables, x, True, mutable=["spectral"]) for m in (f32, b16))
    jaxpr = jax.make_jaxpr(lambda v: b16.apply(v, x, True, mutable=["spectral"]))(variables)
    dots = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
    small = [e for e in dots if 1 in (e.invars[0].aval.shape[0], e.invars[1].aval.shape[0])]
    assert len(small) >= 3 and all(v.aval.dtype == jnp.float32 for e in small for v in e.invars)
    assert sum(all(v.aval.dtype == jnp.bfloat16 for v in e.invars) for e in dots) == 1
    assert _float_dtypes(s16) == {jnp.dtype("float32")}
    for a, b in zip(jax.tree.leaves(s16), jax.tree.leaves(s32)):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert y16.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(y16, np.float32), y32, atol=3e-2 * float(jnp.max(jnp.abs(y32))))


def test_unknown_compute_dtype_is_refused_naming_the_field():
    for make, cfg, info, _ in GANS.values():
        with pytest.raises(ConfigError, match=r"config\.model\.compute_dtype: must be one of \['bfloat16', 'float32'\]"):
            make(dict(cfg, compute_dtype="float16"), info)


# ---------------------------------------------------------------------------------------
# Caption-conditioned DDPM and latent diffusion.
# ---------------------------------------------------------------------------------------

CAPTIONED = types.SimpleNamespace(image_shape=(8, 8, 3), num_levels=17, num_classes=0, vocab_size=12, caption_len=5)
CAPTION_DDPM = dict(timesteps=10, vlb_chunk=10, conditioning="caption", caption_dim=16, caption_heads=2,
                    caption_layers=1, cond_drop_prob=0.2,
                    unet=dict(ch=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(8,), dropout=0.0,
                              num_groups=4, num_heads=1))


def _caption_batch():
    r = np.random.default_rng(0)
    tok = r.integers(1, CAPTIONED.vocab_size, (4, CAPTIONED.caption_len))
    tok[:, 3:] = 0
    return {"image": np.asarray(r.integers(0, 17, (4, 8, 8, 3)) / 16, np.float32),
            "caption_tokens": np.asarray(tok, np.int32)}


def _has_checkpoint(fn, *args) -> bool:
    """Whether ``fn``'s jaxpr holds a ``jax.checkpoint`` region (``remat``) at any depth."""
    def walk(jaxpr):
        return any(e.primitive.name in ("checkpoint", "remat", "remat2")
                   or any(walk(sub) for sub in jax.extend.core.jaxprs_in_params(e.params)) for e in jaxpr.eqns)

    return walk(jax.make_jaxpr(fn)(*args).jaxpr)


def test_caption_ddpm_bf16_and_remat():
    """The caption DDPM (which refused both switches before): under bf16 the caption encoder's
    attention / MLP products and the U-Net's convs are bf16 in the lowered loss, params,
    gradients and loss float32 (the bound's code, which casts the network output to float32,
    is the one checked in tests/nn/test_precision_remat.py); ``remat='full'`` wraps the
    U-Net's blocks. Lowered only (U-Net compiles are the slow ones)."""
    batch = _caption_batch()
    m16 = make_ddpm(dict(CAPTION_DDPM, compute_dtype="bfloat16"), CAPTIONED)
    params = _fill(jax.eval_shape(m16.training.init, jax.random.PRNGKey(1), batch), 2)
    assert _float_dtypes(params) == {jnp.dtype("float32")}
    lowered = _lower_loss(m16, params, batch)
    (loss, metrics), grads = lowered.out_info
    assert loss.dtype == jnp.float32 and _float_dtypes(metrics) | _float_dtypes(grads) == {jnp.dtype("float32")}
    text = lowered.as_text()
    ops, dots = _low_precision_ops(text), [l for l in text.splitlines() if "stablehlo.dot_general" in l]
    assert ops["convolution"] >= 6 and ops["dot_general"] >= 6, ops
    assert any("x5x16xbf16" in l for l in dots)  # the caption encoder's [B, L=5, 16] products
    m_remat = make_ddpm(dict(CAPTION_DDPM, remat="full"), CAPTIONED)
    assert _has_checkpoint(lambda p: m_remat.training.phases[0].loss(p, batch, KEY)[0], params)


@pytest.fixture(scope="module")
def latent_stage(digits_data_dir):
    """A tiny random-weight MLP VAE on digits as stage one (its latent statistics are
    computed over the real digits train split)."""
    vae = make_vae(dict(hidden=(16,), latent_dim=4), DIGITS)
    batch = {"image": np.zeros((2, 8, 8, 1), np.float32)}
    params = _fill(jax.eval_shape(vae.training.init, jax.random.PRNGKey(0), batch), 4)
    config = types.SimpleNamespace(dataset=types.SimpleNamespace(name="digits", data_dir=digits_data_dir))
    return Stage(vae, params, config, "", 0)


def test_latent_diffusion_bf16_and_remat(latent_stage):
    """Latent diffusion's residual MLP denoiser (which had no switch): bf16 dots in the lowered
    loss (none in the float32 program), float32 params, loss and gradients; ``remat`` wraps
    its blocks; a bad policy names the field. Lowered only: the MLP denoiser's bf16 numbers
    against float32 are checked in tests/nn/test_precision_remat.py (``ddpm_mlp``)."""
    info = types.SimpleNamespace(image_shape=(8, 8, 1), num_levels=17, num_classes=10)
    cfg = dict(timesteps=10, denoiser=dict(width=32, num_blocks=2, time_dim=16))
    batch = {"image": _gan_batch(DIGITS)["image"]}
    out, params = {}, None
    for dt in ("float32", "bfloat16"):
        m = make_latent_diffusion(dict(cfg, compute_dtype=dt), info, {"stage1": latent_stage})
        if params is None:
            shapes = jax.eval_shape(m.training.init, jax.random.PRNGKey(1), batch)
            params = {**_fill(shapes, 5), **m.training.frozen}
        lowered = _lower_loss(m, params, batch)
        out[dt] = (_low_precision_ops(lowered.as_text()), lowered.out_info)
    assert out["float32"][0] == {"dot_general": 0, "convolution": 0}
    assert out["bfloat16"][0]["dot_general"] >= 6, out["bfloat16"][0]
    (l16, m16), g16 = out["bfloat16"][1]
    assert l16.dtype == jnp.float32 and _float_dtypes(m16) | _float_dtypes(g16) == {jnp.dtype("float32")}
    mr = make_latent_diffusion(dict(cfg, remat="dots_saveable"), info, {"stage1": latent_stage})
    assert _has_checkpoint(lambda p: mr.training.phases[0].loss(p, batch, KEY)[0], params)
    with pytest.raises(ConfigError, match=r"config\.model\.remat: must be one of"):
        make_latent_diffusion(dict(cfg, remat="all"), info, {"stage1": latent_stage})


# ---------------------------------------------------------------------------------------
# Flows.
# ---------------------------------------------------------------------------------------

FLOWS = {  # name: (factory, config.model, compiled and run?)
    "glow": (make_glow, dict(levels=2, steps_per_level=1, hidden=8, conditioning="label", cond_coupling=True), True),
    "realnvp": (make_realnvp, dict(scales=2, checkerboard_couplings=1, channel_couplings=1, final_couplings=1,
                                   hidden=8, num_blocks=1), False),
}


def _check_density_bf16(make, cfg, run, fill, min_convs):
    """The bf16 checks shared by the image densities (flows, PixelCNNs): bf16 convs in the
    lowered loss and none in the float32 program; params, gradients, loss and log-likelihood
    float32; when ``run``, the loss within 1% and gradients within 5% of float32, not identical.
    Returns ``(batch, params)``."""
    batch = {"image": _gan_batch(DIGITS)["image"][:4], "label": np.arange(4, dtype=np.int32)}
    models = {dt: make(dict(cfg, compute_dtype=dt), DIGITS) for dt in ("float32", "bfloat16")}
    params = _fill(jax.eval_shape(models["float32"].training.init, jax.random.PRNGKey(1), batch), fill)
    out = {}
    for dt, m in models.items():
        lowered = _lower_loss(m, params, batch)
        out[dt] = (_low_precision_ops(lowered.as_text()), lowered.compile()(params) if run else lowered.out_info)
    assert out["float32"][0] == {"dot_general": 0, "convolution": 0}
    assert out["bfloat16"][0]["convolution"] >= min_convs, out["bfloat16"][0]
    (l16, m16), g16 = out["bfloat16"][1]
    assert l16.dtype == jnp.float32 and _float_dtypes(m16) | _float_dtypes(g16) == {jnp.dtype("float32")}
    lp = jax.eval_shape(models["bfloat16"].likelihood.log_prob, params, batch, KEY)
    assert lp.shape == (4,) and lp.dtype == jnp.float32
    if run:
        (l32, _), g32 = out["float32"][1]
        np.testing.assert_allclose(float(l16), float(l32), rtol=1e-2)
        assert 0 < _rel_err(g16, g32) < 5e-2
    return batch, params


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_flow_bf16_couplings_with_float32_logdets_and_likelihood(name):
    """Glow / RealNVP under bf16: the coupling networks' convs are bf16 in the lowered loss
    (none in the float32 program), params, gradients, the loss and the log-likelihood float32
    (ActNorm, the 1x1 convs and every log-det are float32 code on float32 values); Glow is
    also run: bits/dim within 1% and gradients within 5% of float32, not identical."""
    make, cfg, run = FLOWS[name]
    _check_density_bf16(make, cfg, run, 6, 4)
    with pytest.raises(ConfigError, match=r"config\.model\.compute_dtype: must be one of"):
        make(dict(cfg, compute_dtype="half"), DIGITS)


# ---------------------------------------------------------------------------------------
# PixelCNN++.
# ---------------------------------------------------------------------------------------

PIXELCNNPP = dict(nr_resnet=1, nr_filters=8, num_stages=1, nr_logistic_mix=2, dropout=0.5, conditional=True)


def test_pixelcnnpp_bf16_convs_float32_mixture_likelihood_and_remat():
    """PixelCNN++ under bf16: the streams' convolutions (forward and backward) are bf16 in the
    lowered loss (none in the float32 program); params, gradients, loss and the logistic-mixture
    log-likelihood float32; ``remat`` wraps the gated ResNet blocks and keeps the parameter tree
    (names). Lowered only (its compiles take ~5 s each here; the numbers of bf16 against float32
    are compared on the gated PixelCNN below, which uses the same cast-in-the-conv code)."""
    batch = {"image": _gan_batch(DIGITS)["image"][:4], "label": np.arange(4, dtype=np.int32)}
    models = {k: make_pixelcnnpp(dict(PIXELCNNPP, **kw), DIGITS)
              for k, kw in (("f32", {}), ("bf16", dict(compute_dtype="bfloat16")), ("remat", dict(remat="full")))}
    params = _fill(jax.eval_shape(models["f32"].training.init, jax.random.PRNGKey(1), batch), 7)
    out = {}
    for k in ("f32", "bf16"):
        m = models[k]
        lowered = _lower_loss(m, params, batch)
        out[k] = (_low_precision_ops(lowered.as_text()), lowered.out_info)
    assert out["f32"][0] == {"dot_general": 0, "convolution": 0}
    assert out["bf16"][0]["convolution"] >= 20, out["bf16"][0]
    (l16, m16), g16 = out["bf16"][1]
    assert l16.dtype == jnp.float32 and _float_dtypes(m16) | _float_dtypes(g16) == {jnp.dtype("float32")}
    lp = jax.eval_shape(models["bf16"].likelihood.log_prob, params, batch, KEY)
    assert lp.shape == (4,) and lp.dtype == jnp.float32
    loss_of = lambda m: (lambda p: m.training.phases[0].loss(p, batch, KEY)[0])
    assert not _has_checkpoint(loss_of(models["f32"]), params)
    assert _has_checkpoint(loss_of(models["remat"]), params)
    remat_shapes = jax.eval_shape(models["remat"].training.init, jax.random.PRNGKey(1), batch)
    assert jax.tree_util.tree_structure(remat_shapes) == jax.tree_util.tree_structure(params)
    with pytest.raises(ConfigError, match=r"config\.model\.remat: must be one of"):
        make_pixelcnnpp(dict(PIXELCNNPP, remat="half"), DIGITS)


PIXELCNNS = {  # name: (factory, config.model, compiled and run?)
    "gated": (make_gated_pixelcnn, dict(hidden=8, num_layers=2, first_kernel=3, out_hidden=8, conditioning="label"),
              True),
    "pixelcnn": (make_pixelcnn, dict(hidden=8, num_blocks=1, first_kernel=3, out_hidden=8), False),
}


@pytest.mark.parametrize("name", sorted(PIXELCNNS))
def test_pixelcnn_bf16_convs_float32_categorical_likelihood(name):
    """Gated PixelCNN / PixelCNN under bf16: bf16 masked / stack convs in the lowered loss (none
    in the float32 program); params, gradients, loss and log-likelihood float32; the gated one
    is run: loss within 1% and gradients within 5% of float32, not identical; its ``remat``
    wraps the gated layers with the same parameter tree."""
    make, cfg, run = PIXELCNNS[name]
    batch, params = _check_density_bf16(make, cfg, run, 8, 8)
    if run:
        mr = make(dict(cfg, remat="full"), DIGITS)
        assert _has_checkpoint(lambda p: mr.training.phases[0].loss(p, batch, KEY)[0], params)
        shapes = jax.eval_shape(mr.training.init, jax.random.PRNGKey(1), batch)
        assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(params)
    with pytest.raises(ConfigError, match=r"config\.model\.compute_dtype: must be one of"):
        make(dict(cfg, compute_dtype="half"), DIGITS)
