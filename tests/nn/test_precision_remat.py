"""Mixed precision (gen_jax.nn.precision) and rematerialization (gen_jax.nn.remat) through the
families: params and gradients stay float32 under bfloat16 compute, the matmuls / convs of
the lowered program really are bfloat16, the attention softmax, the losses and the
log-likelihoods are float32, bfloat16 results are close to float32 ones, and remat changes
no number (loss and gradients equal to no remat within 1e-6)."""
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.autoregressive.transformer_lm import make_transformer_lm
from gen_jax.config import ConfigError
from gen_jax.data.datasets import get_info
from gen_jax.diffusion.model import make_ddpm
from gen_jax.latent.vae import make_vae
from gen_jax.nn.attention import dot_product_attention
from gen_jax.nn.precision import compute_dtype, to_float32
from gen_jax.nn.remat import remat_policy

INFO = get_info("digits")  # 8x8x1 images, 17 levels
UNET = dict(unet=dict(ch=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(8,), num_groups=4, dropout=0.1))
MLP = dict(network="mlp", loss="hybrid", learn_variance=True, level_posterior=True,
           denoiser=dict(width=32, num_blocks=2))
DIT = dict(network="dit", dit=dict(patch_size=2, width=16, depth=2, num_heads=2, time_dim=16))
LM = dict(tokens="image", num_layers=2, d_model=16, num_heads=2, mlp_ratio=2)
VAE = dict(likelihood="logistic_mixture", hidden=(32, 32), iwae_k=2, iwae_chunk=2)

FAMILIES = {
    "vae": lambda **kw: make_vae(dict(VAE, **kw), INFO),
    "ddpm_unet": lambda **kw: make_ddpm(dict(UNET, **kw), INFO),
    "ddpm_dit": lambda **kw: make_ddpm(dict(DIT, **kw), INFO),
    "ddpm_mlp": lambda **kw: make_ddpm(dict(MLP, **kw), INFO),
    "lm": lambda **kw: make_transformer_lm(dict(LM, **kw), INFO),
}
BATCH = {"image": np.asarray(jax.random.randint(jax.random.PRNGKey(0), (4, 8, 8, 1), 0, 17), np.float32) / 16}
KEY = jax.random.PRNGKey(3)
_CACHE: dict = {}


def _loss(model):
    return lambda p: model.training.phases[0].loss(p, BATCH, KEY)


def _params(name):
    """Random params of family ``name`` in the init's tree (no init compile): N(0, 0.1^2)
    weights, norm scales 1 + N(0, 0.1^2); zero-initialized output layers would make the
    denoisers output exactly 0 in both precisions."""
    if ("params", name) not in _CACHE:
        shapes = jax.eval_shape(FAMILIES[name]().training.init, jax.random.PRNGKey(1), BATCH)
        leaves, tree = jax.tree_util.tree_flatten_with_path(shapes)
        keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
        draw = lambda path, s, k: (1.0 * ("scale" in jax.tree_util.keystr(path))
                                   + 0.1 * np.asarray(jax.random.normal(k, s.shape))).astype(s.dtype)
        _CACHE["params", name] = jax.tree.unflatten(tree, [draw(p, s, k) for (p, s), k in zip(leaves, keys)])
    return _CACHE["params", name]


def _value_and_grad(name, compile=True, **kw):
    """``(model, lowered StableHLO text, ((loss, metrics), grads) or None)`` of the family's
    loss (memoized; ``compile=False``: lowered only, nothing compiled or run)."""
    k = (name, compile, tuple(sorted(kw.items())))
    if k not in _CACHE:
        model = FAMILIES[name](**kw)
        lowered = jax.jit(jax.value_and_grad(_loss(model), has_aux=True)).lower(_params(name))
        _CACHE[k] = (model, lowered.as_text(), lowered.compile()(_params(name)) if compile else None)
    return _CACHE[k]


def _low_precision_ops(text: str) -> dict:
    """``{op: count}`` of the dot_general / convolution ops of a lowered StableHLO program whose
    operands are bfloat16."""
    out = {}
    for op in ("dot_general", "convolution"):
        lines = [l for l in text.splitlines() if f"stablehlo.{op}" in l]
        out[op] = sum(1 for l in lines if re.search(r"\(tensor<[^>]*bf16>, tensor<[^>]*bf16>\)", l))
    return out


def _rel_err(a, b) -> float:
    a, b = (jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(t)]) for t in (a, b))
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_bf16_compute_keeps_params_grads_loss_and_likelihood_float32(name):
    """Every family: float32 params (init), loss, metrics and log-likelihood; bf16 operands of
    the lowered dot/conv ops. The VAE and the LM are also
    compiled and run: float32 gradients, and loss and gradients of bf16 compute within a loose
    2% / 5% of float32 (bf16 keeps 8 significant bits), and their float32 programs have no bf16
    dot; the denoisers are lowered only (their
    compiles are the slow ones; the MLP denoiser's outputs are compared below)."""
    run = name in ("vae", "lm")
    m16, text16, out16 = _value_and_grad(name, compile=run, compute_dtype="bfloat16")
    params = _params(name)
    init16 = jax.eval_shape(m16.training.init, jax.random.PRNGKey(1), BATCH)
    assert jax.tree.structure(init16) == jax.tree.structure(params)
    assert {x.dtype for x in jax.tree.leaves(init16)} == {jnp.dtype("float32")}
    (loss, metrics), grads = jax.eval_shape(jax.value_and_grad(_loss(m16), has_aux=True), params)
    assert loss.dtype == jnp.float32 and all(v.dtype == jnp.float32 for v in jax.tree.leaves(metrics))
    assert {x.dtype for x in jax.tree.leaves(grads)} == {jnp.dtype("float32")}
    if name in ("vae", "lm", "ddpm_mlp"):  # the DDPM bound's code is the same for every denoiser
        lp = jax.eval_shape(m16.likelihood.log_prob, params, BATCH, KEY)  # the log-likelihood is float32
        assert lp.shape == (4,) and lp.dtype == jnp.float32
    # The products really run in bfloat16 (operands of the lowered dot/conv ops, forward and backward).
    ops = _low_precision_ops(text16)
    assert ops["dot_general"] + ops["convolution"] >= 6, ops
    if name == "ddpm_unet":
        assert ops["convolution"] >= 6, ops
    if run:
        _, text32, out32 = _value_and_grad(name)
        assert _low_precision_ops(text32) == {"dot_general": 0, "convolution": 0}
        ((l16, _), g16), ((l32, _), g32) = out16, out32
        assert {x.dtype for x in jax.tree.leaves(g16)} == {jnp.dtype("float32")}
        np.testing.assert_allclose(float(l16), float(l32), rtol=2e-2)
        assert 0 < _rel_err(g16, g32) < 5e-2  # close, and really another computation


def test_bf16_network_outputs_close_to_f32():
    """The MLP denoiser's network output (level-posterior logits and variance channels,
    before any loss) in bf16 against f32: within 5% of its scale (loose: bf16 rounds every
    product input to 8 significant bits), cast to float32 before the likelihood reads it."""
    m32, m16 = FAMILIES["ddpm_mlp"](), FAMILIES["ddpm_mlp"](compute_dtype="bfloat16")
    params = _params("ddpm_mlp")
    x_t, t = 2.0 * BATCH["image"] - 1.0, jnp.array([0, 10, 100, 999])
    o32 = jax.jit(m32.denoiser.denoise)(params, x_t, t)
    o16 = jax.jit(m16.denoiser.denoise)(params, x_t, t)
    assert o16.dtype == jnp.float32
    err = float(jnp.max(jnp.abs(o16 - o32)))
    assert 0 < err < 0.05 * float(jnp.max(jnp.abs(o32))) and float(jnp.std(o32)) > 0.01


def test_attention_softmax_runs_in_float32():
    """bf16 queries/keys/values: the logits are cast to float32 before the softmax (every exp
    of the program is float32) and the output is bf16."""
    q, k, v = (jax.random.normal(jax.random.PRNGKey(i), (2, 5, 2, 8), jnp.bfloat16) for i in range(3))
    jaxpr = jax.make_jaxpr(lambda q, k, v: dot_product_attention(q, k, v, q_pos=jnp.arange(5), k_pos=jnp.arange(5)))(q, k, v)
    exps = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "exp"]
    assert exps and all(e.outvars[0].aval.dtype == jnp.float32 for e in exps)
    out = dot_product_attention(q, k, v)
    ref = dot_product_attention(*(a.astype(jnp.float32) for a in (q, k, v)))
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(jnp.float32), ref, atol=2e-2)


def _has_checkpoint(model) -> bool:
    """Whether the loss's jaxpr holds a ``jax.checkpoint`` region (primitive ``remat2``)."""
    def walk(jaxpr):
        for e in jaxpr.eqns:
            if e.primitive.name in ("checkpoint", "remat", "remat2"):
                return True
            if any(walk(sub) for sub in jax.extend.core.jaxprs_in_params(e.params)):
                return True
        return False

    return walk(jax.make_jaxpr(lambda p: _loss(model)(p)[0])(_params_shape(model)).jaxpr)


def _params_shape(model):
    return jax.eval_shape(model.training.init, jax.random.PRNGKey(1), BATCH)


@pytest.mark.parametrize("name,policies", [("ddpm_unet", ("full",)), ("lm", ("full", "dots_saveable"))])
def test_remat_changes_no_number(name, policies):
    """Loss and gradients with remat equal no remat within 1e-6 (the U-Net with dropout: the
    lifted RNG gives the recomputed blocks the same masks). The DiT's blocks are wrapped by
    the same :func:`gen_jax.nn.remat.remat_block` (checked below, traced only)."""
    base, _, ((ref_l, _), ref_g) = _value_and_grad(name)
    assert not _has_checkpoint(base)
    for policy in policies:
        m, _, ((l, _), g) = _value_and_grad(name, remat=policy)
        assert _has_checkpoint(m), policy
        np.testing.assert_allclose(l, ref_l, rtol=1e-6, atol=1e-6)
        for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(ref_g)):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_remat_wraps_the_dit_and_mlp_denoiser_blocks():
    for name in ("ddpm_dit", "ddpm_mlp"):
        assert not _has_checkpoint(FAMILIES[name]())
        assert _has_checkpoint(FAMILIES[name](remat="dots_saveable"))


def test_unknown_names_raise_config_errors_naming_the_field():
    with pytest.raises(ConfigError, match=r"config\.model\.compute_dtype: must be one of"):
        compute_dtype("float16")
    with pytest.raises(ConfigError, match=r"config\.model\.remat: must be one of"):
        remat_policy("everything")
    assert remat_policy("dots_saveable") is jax.checkpoint_policies.dots_saveable
    for make in FAMILIES.values():
        with pytest.raises(ConfigError, match=r"config\.model\.compute_dtype"):
            make(compute_dtype="fp8")
    for name in ("ddpm_unet", "lm"):
        with pytest.raises(ConfigError, match=r"config\.model\.remat"):
            FAMILIES[name](remat="some")
    assert to_float32({"a": jnp.ones(2, jnp.bfloat16), "i": jnp.ones(2, jnp.int32)})["a"].dtype == jnp.float32
