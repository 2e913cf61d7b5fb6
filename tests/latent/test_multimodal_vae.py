"""Multimodal VAEs (gen_jax.latent.multimodal_vae) and their expert algebra (gen_jax.latent.experts).

The algebra against closed forms and scipy (the normalised product of densities on a grid, the
mixture density); the joint ELBOs of MVAE and MMVAE against a direct Monte Carlo estimate
written with scipy densities from the models' experts and per-modality likelihoods; the
caption and label likelihoods normalised over every outcome; shapes and the errors of a
missing modality.
"""
import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, special, stats

from gen_jax.config import ConfigError
from gen_jax.latent import experts
from gen_jax.latent.multimodal_vae import MultimodalVAEConfig, build_multimodal_vae, make_mmvae, make_mvae

Info = collections.namedtuple("Info", "name image_shape num_levels num_classes vocab_size caption_len")
INFO = Info("tiny", (8, 8, 3), 16, 3, 4, 4)  # vocab: pad, unk, bos, eos -> 4^3 captions after <bos>
Z = 3
SMALL = dict(latent_dim=Z, conv_features=(4,), hidden=(16,), text_dim=4, text_hidden=8, num_mixtures=2)


def _batch(n=2, seed=0):
    r = np.random.default_rng(seed)
    k = INFO.num_levels
    tokens = np.concatenate([np.full((n, 1), 2), r.integers(0, 4, (n, 3))], axis=1)
    return {"image": jnp.asarray(r.integers(0, k, (n,) + INFO.image_shape) / (k - 1), jnp.float32),
            "caption_tokens": jnp.asarray(tokens, jnp.int32), "label": jnp.asarray(r.integers(0, 3, n), jnp.int32)}


def _build(kind, **kw):
    cfg = MultimodalVAEConfig(name=kind, modalities=("image", "caption_tokens", "label"), **{**SMALL, **kw})
    mv = build_multimodal_vae(cfg, INFO, kind)
    params = jax.jit(mv.model.training.init)(jax.random.PRNGKey(1), _batch())
    return mv, params


@pytest.fixture(scope="module")
def mvae():
    return _build("poe")


@pytest.fixture(scope="module")
def mmvae():
    return _build("moe", private_dim=2, num_samples=3)


# ------------------------------------------------------------------------------------------
# Expert algebra.
# ------------------------------------------------------------------------------------------


def test_poe_is_the_precision_weighted_product_with_prior_and_mask():
    r = np.random.default_rng(0)
    means, log_vars = r.normal(size=(3, 4, 5)), r.normal(size=(3, 4, 5))
    mask = np.array([[1, 0, 1, 0], [1, 1, 0, 0], [0, 1, 1, 0]], np.float32)
    mean, log_var = experts.product_of_experts(jnp.asarray(means), jnp.asarray(log_vars), jnp.asarray(mask))
    prec = np.exp(-log_vars) * mask[..., None]
    var = 1.0 / (1.0 + prec.sum(0))
    np.testing.assert_allclose(np.exp(log_var), var, rtol=1e-5)
    np.testing.assert_allclose(mean, var * (prec * means).sum(0), rtol=1e-5, atol=1e-6)
    # a row with every modality missing is the prior expert itself
    np.testing.assert_allclose(mean[3], 0.0, atol=1e-7)
    np.testing.assert_allclose(log_var[3], 0.0, atol=1e-7)
    # a missing expert is the same as leaving it out of the stack
    m0, lv0 = experts.product_of_experts(jnp.asarray(means[:2]), jnp.asarray(log_vars[:2]))  # row 0 sees 0, 1
    np.testing.assert_allclose(mean[0], m0[0], rtol=1e-5)
    np.testing.assert_allclose(log_var[0], lv0[0], rtol=1e-5)


def test_poe_equals_the_normalised_product_of_densities_on_a_grid():
    mus, sds = np.array([1.5, -0.7, 0.4]), np.array([0.6, 1.3, 2.0])
    grid = np.linspace(-12, 12, 200001)
    dens = stats.norm.pdf(grid, 0.0, 1.0) * np.prod(stats.norm.pdf(grid[:, None], mus, sds), axis=1)
    dens /= integrate.trapezoid(dens, grid)
    mean, log_var = experts.product_of_experts(jnp.asarray(mus)[:, None, None],
                                               jnp.asarray(2 * np.log(sds))[:, None, None])
    m, v = float(mean[0, 0]), float(np.exp(log_var[0, 0]))
    np.testing.assert_allclose(integrate.trapezoid(grid * dens, grid), m, atol=1e-6)
    np.testing.assert_allclose(integrate.trapezoid((grid - m) ** 2 * dens, grid), v, rtol=1e-5)
    np.testing.assert_allclose(dens[::1000], stats.norm.pdf(grid[::1000], m, np.sqrt(v)), atol=1e-6)


def test_mixture_density_is_the_mean_of_expert_densities():
    r = np.random.default_rng(1)
    means, log_vars = r.normal(size=(3, 2, 4)), r.normal(size=(3, 2, 4)) * 0.5
    z = r.normal(size=(5, 2, 4))
    mask = np.array([[1, 1], [0, 1], [1, 1]], np.float32)
    pdf = np.stack([[stats.multivariate_normal.pdf(z[:, b], means[m, b], np.diag(np.exp(log_vars[m, b])))
                     for b in range(2)] for m in range(3)])  # [M, B, S]
    got = experts.mixture_log_prob(jnp.asarray(z), jnp.asarray(means), jnp.asarray(log_vars))
    np.testing.assert_allclose(got, np.log(pdf.mean(0)).T, rtol=1e-5)
    got_m = experts.mixture_log_prob(jnp.asarray(z), jnp.asarray(means), jnp.asarray(log_vars), jnp.asarray(mask))
    ref = np.log((pdf * mask[..., None]).sum(0) / mask.sum(0)[:, None]).T
    np.testing.assert_allclose(got_m, ref, rtol=1e-5)


def test_stratified_iwae():
    lw = np.random.default_rng(2).normal(size=(2, 5, 3)) * 3
    ref = np.mean(special.logsumexp(lw, axis=1) - np.log(5), axis=0)
    np.testing.assert_allclose(experts.stratified_iwae(jnp.asarray(lw)), ref, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\[M, K, B\]"):
        experts.stratified_iwae(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="mask"):
        experts.product_of_experts(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3, 4)), jnp.ones((3, 2)))


# ------------------------------------------------------------------------------------------
# Likelihood terms and bounds.
# ------------------------------------------------------------------------------------------


def test_caption_and_label_likelihoods_are_normalised(mmvae):
    mv, params = mmvae
    z = jnp.asarray(np.random.default_rng(3).normal(size=(2, Z + 2)), jnp.float32)
    grid = np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3)
    tokens = jnp.asarray(np.concatenate([np.full((64, 1), 2), grid], 1), jnp.int32)
    lp = jax.vmap(lambda zz: mv.log_likelihood(params, "caption_tokens", jnp.broadcast_to(zz, (64, Z + 2)),
                                               tokens))(z)
    np.testing.assert_allclose(np.exp(special.logsumexp(np.asarray(lp, np.float64), axis=1)), 1.0, rtol=1e-4)
    labels = jnp.arange(3, dtype=jnp.int32)
    lpl = jax.vmap(lambda zz: mv.log_likelihood(params, "label", jnp.broadcast_to(zz, (3, Z + 2)), labels))(z)
    np.testing.assert_allclose(np.exp(special.logsumexp(np.asarray(lpl, np.float64), axis=1)), 1.0, rtol=1e-5)


def _mc_terms(mv, params, batch, z_shared, w, rng_logq):
    """``log p(X | z, w) + log p(z) + log p(w) - rng_logq`` per draw, every modality scored."""
    total = 0.0
    for m in ("image", "caption_tokens", "label"):
        zz = z_shared if w is None else np.concatenate([z_shared, w[m]], -1)
        n = zz.shape[0] // batch["label"].shape[0]
        value = jnp.tile(batch[m], (n,) + (1,) * (batch[m].ndim - 1))
        fn = jax.jit(mv.log_likelihood, static_argnums=1)
        total = total + np.asarray(fn(params, m, jnp.asarray(zz, jnp.float32), value), np.float64)
    total = total + stats.norm.logpdf(z_shared).sum(-1)
    if w is not None:
        total = total + sum(stats.norm.logpdf(v).sum(-1) for v in w.values())
    return total - rng_logq


def _agree(a, b, n_sd=5.0):
    """Two Monte Carlo estimates ``[S, B]`` of the same per-example expectation agree."""
    se = np.sqrt(a.var(0) / a.shape[0] + b.var(0) / b.shape[0])
    assert np.all(np.abs(a.mean(0) - b.mean(0)) < n_sd * se + 1e-3), (a.mean(0), b.mean(0), se)


def test_mvae_joint_elbo_against_direct_monte_carlo(mvae):
    mv, params = mvae
    batch, s = _batch(), 400
    elbo = jax.jit(jax.vmap(lambda k: mv.joint_elbo(params, batch, k)["elbo"]))(
        jax.random.split(jax.random.PRNGKey(5), s))
    mean, log_var = map(np.asarray, mv.posterior(params, batch))  # the PoE [B, Z]
    sd = np.exp(0.5 * log_var)
    z = mean + sd * np.random.default_rng(4).normal(size=(s, 2, Z))  # [S, B, Z]
    logq = stats.norm.logpdf(z, mean, sd).sum(-1).reshape(-1)
    direct = _mc_terms(mv, params, batch, z.reshape(-1, Z), None, logq).reshape(s, 2)
    _agree(np.asarray(elbo, np.float64), direct)
    # the posterior is the product of the three experts with the prior
    _, means, log_vars = mv.experts(params, batch)
    ref = experts.product_of_experts(means, log_vars)
    np.testing.assert_allclose(mean, ref[0], rtol=1e-5)


def test_mmvae_joint_elbo_against_direct_monte_carlo(mmvae):
    mv, params = mmvae
    batch, s = _batch(), 400
    elbo = jax.jit(jax.vmap(lambda k: mv.joint_elbo(params, batch, k)["elbo"]))(
        jax.random.split(jax.random.PRNGKey(6), s))
    names, means, log_vars = mv.experts(params, batch)
    means, log_vars = np.asarray(means, np.float64), np.asarray(log_vars, np.float64)
    r = np.random.default_rng(7)
    pick = r.integers(0, 3, size=(s, 2))  # a draw of the uniform mixture
    sm, ssd = means[..., :Z], np.exp(0.5 * log_vars[..., :Z])
    z = sm[pick, np.arange(2)] + ssd[pick, np.arange(2)] * r.normal(size=(s, 2, Z))
    logq = special.logsumexp(stats.norm.logpdf(z[:, None], sm, ssd).sum(-1), axis=1) - np.log(3)  # [S, B]
    w = {}
    for i, m in enumerate(names):
        pm, psd = means[i, :, Z:], np.exp(0.5 * log_vars[i, :, Z:])
        w[m] = pm + psd * r.normal(size=(s, 2, 2))
        logq = logq + stats.norm.logpdf(w[m], pm, psd).sum(-1)
    direct = _mc_terms(mv, params, batch, z.reshape(-1, Z), {m: v.reshape(-1, 2) for m, v in w.items()},
                       logq.reshape(-1)).reshape(s, 2)
    _agree(np.asarray(elbo, np.float64), direct)


def test_training_objectives_compose_the_bounds(mvae, mmvae):
    """MVAE: the loss is minus the joint plus the unimodal ELBOs (lambda = beta = 1); MMVAE: the
    K-sample stratified bound, which on average is at least the K = 1 bound (the joint ELBO)."""
    mv, params = mvae
    batch = _batch()
    (phase,) = mv.model.training.phases
    loss, met = jax.jit(phase.loss)(params, batch, jax.random.PRNGKey(0))
    total = met["elbo"] + met["elbo_image"] + met["elbo_caption_tokens"] + met["elbo_label"]
    np.testing.assert_allclose(loss, -np.mean(total), rtol=1e-5)
    mm, mparams = mmvae
    (mphase,) = mm.model.training.phases
    bound, elbo = jax.jit(jax.vmap(lambda k: (mphase.loss(mparams, batch, k)[1]["bound"],
                                              mm.joint_elbo(mparams, batch, k)["elbo"])))(
        jax.random.split(jax.random.PRNGKey(1), 200))
    assert np.all(np.asarray(bound).mean(0) > np.asarray(elbo).mean(0))


def test_mvae_cross_elbo_is_the_joint_elbo_under_each_unimodal_posterior():
    """cross_elbo: each unimodal term is the ELBO of every modality with ``z ~ q(z | x_m)`` (the
    expert times the prior, in closed form here) against a direct Monte Carlo estimate, and the
    loss is minus the sum of the joint and those terms."""
    mv, params = _build("poe", cross_elbo=True)
    batch, s = _batch(), 400
    (phase,) = mv.model.training.phases
    loss_fn = jax.jit(jax.vmap(lambda k: phase.loss(params, batch, k)))
    loss, met = loss_fn(jax.random.split(jax.random.PRNGKey(6), s))
    total = met["elbo"] + met["elbo_image"] + met["elbo_caption_tokens"] + met["elbo_label"]
    np.testing.assert_allclose(loss, -np.mean(total, axis=1), rtol=1e-5)
    names, means, log_vars = mv.experts(params, batch)
    rng = np.random.default_rng(7)
    for i, m in enumerate(names):
        prec = 1.0 + np.exp(-np.asarray(log_vars[i], np.float64))  # expert x N(0, I)
        mean, sd = np.asarray(means[i], np.float64) * np.exp(-np.asarray(log_vars[i])) / prec, prec ** -0.5
        z = mean + sd * rng.normal(size=(s, 2, Z))
        logq = stats.norm.logpdf(z, mean, sd).sum(-1).reshape(-1)
        direct = _mc_terms(mv, params, batch, z.reshape(-1, Z), None, logq).reshape(s, 2)
        _agree(np.asarray(met[f"elbo_{m}"], np.float64), direct)


# ------------------------------------------------------------------------------------------
# Capabilities, shapes and errors.
# ------------------------------------------------------------------------------------------


def _capabilities(mv, params, batch):
    model, key = mv.model, jax.random.PRNGKey(0)
    z = model.codec.encode(params, batch["image"])
    return dict(x=model.sampler.sample(params, key, 2, {k: batch[k] for k in ("caption_tokens", "label")}),
                u=model.sampler.sample(params, key, 3), caps=mv.caption_image(params, batch["image"]),
                joint=mv.generate(params, key, 3), z=z, rec=model.codec.decode(params, z),
                lp=model.likelihood.log_prob(params, batch, key))


@pytest.mark.parametrize("which", ["mvae", "mmvae"])
def test_capabilities_shapes(which, request):
    mv, params = request.getfixturevalue(which)
    zdim = Z if which == "mvae" else Z + 2
    assert mv.model.conditioning.keys[0] == "caption_tokens"
    out = jax.jit(lambda p, b: _capabilities(mv, p, b))(params, _batch())
    assert out["x"].shape == (2, 8, 8, 3) and out["u"].shape == (3, 8, 8, 3)
    assert float(out["x"].min()) >= 0.0 and float(out["x"].max()) <= 1.0
    caps = out["caps"]
    assert caps.shape == (2, 4) and caps.dtype == jnp.int32 and np.all(np.asarray(caps[:, 0]) == 2)
    joint = out["joint"]
    assert joint["image"].shape == (3, 8, 8, 3) and joint["caption_tokens"].shape == (3, 4)
    assert joint["label"].shape == (3,)
    assert out["z"].shape == (2, zdim) and out["rec"].shape == (2, 8, 8, 3) and out["lp"].shape == (2,)
    assert np.all(np.isfinite(out["lp"]))


def test_missing_modality_errors(mvae):
    mv, params = mvae
    batch = _batch()
    (phase,) = mv.model.training.phases
    with pytest.raises(ValueError, match="'caption_tokens' is missing"):
        phase.loss(params, {k: batch[k] for k in ("image", "label")}, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="'label' is missing"):
        mv.joint_elbo(params, {k: batch[k] for k in ("image", "caption_tokens")}, jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match="'caption_tokens' is missing"):
        mv.model.sampler.sample(params, jax.random.PRNGKey(0), 2, {"label": batch["label"]})
    with pytest.raises(ValueError, match="lacks"):
        mv.generate(params, jax.random.PRNGKey(0), 2, {"caption": batch["caption_tokens"]})
    with pytest.raises(ValueError, match=r"caption_tokens'\] must be int \[B, 4\]"):
        mv.generate(params, jax.random.PRNGKey(0), 2, {"caption_tokens": batch["caption_tokens"][:, :3]})


def test_config_errors():
    with pytest.raises(ConfigError, match="modalities"):
        make_mvae(dict(name="mvae", modalities=("caption_tokens", "label")), INFO)
    with pytest.raises(ConfigError, match="likelihood"):
        make_mmvae(dict(name="mmvae", likelihood="bernoulli"), INFO)
    no_text = INFO._replace(vocab_size=0, caption_len=0)
    with pytest.raises(ConfigError, match="needs a dataset with captions"):
        make_mvae(dict(name="mvae"), no_text)
