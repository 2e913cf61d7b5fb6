"""FactorVAE (gen_jax.latent.factorvae): the permutation of Kim & Mnih's Alg. 1, the density-ratio
TC estimate against the closed-form total correlation of Gaussians (optimal discriminator in
closed form, and a briefly trained one), the two-phase bundle and its config errors."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.stats import multivariate_normal, norm

from gen_jax.config import ConfigError
from gen_jax.latent import factorvae as fv
from gen_jax.latent.vae import make_vae
from tests.latent.stand_in import INFO, stand_in_batch


def _gaussian_tc(cov):
    """``TC = KL(N(0, S) || prod_j N(0, S_jj)) = 1/2 (sum_j log S_jj - log det S)``."""
    return 0.5 * (np.sum(np.log(np.diag(cov))) - np.linalg.slogdet(cov)[1])


COV = np.array([[1.0, 0.8, 0.3], [0.8, 1.0, 0.5], [0.3, 0.5, 1.0]])


def test_permute_dims_keeps_marginals_breaks_dependence():
    r = np.random.default_rng(0)
    z = jnp.asarray(r.multivariate_normal(np.zeros(3), COV, size=4000), jnp.float32)
    p = np.asarray(fv.permute_dims(jax.random.PRNGKey(1), z))
    for j in range(3):  # each column is a permutation of the original column
        np.testing.assert_array_equal(np.sort(p[:, j]), np.sort(np.asarray(z[:, j])))
    assert not np.array_equal(p[:, 0], np.asarray(z[:, 0]))
    corr = np.corrcoef(p.T)
    assert np.max(np.abs(corr - np.eye(3))) < 0.06  # 4000 samples: sd of a null correlation ~0.016
    assert np.corrcoef(np.asarray(z).T)[0, 1] > 0.75
    with pytest.raises(ValueError, match=r"z must be \[B, Z\]"):
        fv.permute_dims(jax.random.PRNGKey(0), z[:, 0])


def test_tc_with_the_optimal_discriminator_is_the_closed_form():
    # The optimal logit is log q(z) - log prod_j q(z_j); its mean over q(z) samples is the TC.
    r = np.random.default_rng(1)
    z = r.multivariate_normal(np.zeros(3), COV, size=200_000)
    logit = (multivariate_normal(np.zeros(3), COV).logpdf(z)
             - norm(0, np.sqrt(np.diag(COV))).logpdf(z).sum(1))
    tc = float(fv.tc_estimate(jnp.asarray(logit)))
    se = logit.std() / np.sqrt(len(logit))
    assert abs(tc - _gaussian_tc(COV)) < 4 * se
    # Factorized: the optimal logit is 0 everywhere, so is the estimate.
    assert _gaussian_tc(np.diag(np.diag(COV))) == pytest.approx(0.0, abs=1e-12)
    # The discriminator loss is minimized at the optimal logit (scaled logits do worse).
    zp = np.stack([r.permutation(z[:, j]) for j in range(3)], 1)
    logit_p = (multivariate_normal(np.zeros(3), COV).logpdf(zp)
               - norm(0, np.sqrt(np.diag(COV))).logpdf(zp).sum(1))
    losses = [float(fv.discriminator_loss(jnp.asarray(s * logit), jnp.asarray(s * logit_p)))
              for s in (0.7, 1.0, 1.3)]
    assert losses[1] < losses[0] and losses[1] < losses[2]


@pytest.fixture(scope="module")
def trained_tc():
    """Trains the MLP discriminator by the discriminator loss on q(z) against permuted q(z)
    samples (one compiled scan, for a correlated and a factorized Gaussian); returns
    ``{name: (estimate, closed form)}``."""
    disc = fv.Discriminator((64, 64))
    opt = optax.adam(3e-3)

    def fit(chol, key):
        def batch(k):
            k1, k2, k3 = jax.random.split(k, 3)
            zj = jax.random.normal(k1, (256, 3)) @ chol.T
            zp = fv.permute_dims(k3, jax.random.normal(k2, (256, 3)) @ chol.T)
            return zj, zp

        def loss(p, zj, zp):
            return fv.discriminator_loss(disc.apply(p, zj), disc.apply(p, zp))

        def step(carry, k):
            p, s = carry
            g = jax.grad(loss)(p, *batch(k))
            u, s = opt.update(g, s)
            return (optax.apply_updates(p, u), s), None

        k0, k1, k2 = jax.random.split(key, 3)
        p = disc.init(k0, jnp.zeros((1, 3)))
        (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), jax.random.split(k1, 400))
        zj = jax.random.normal(k2, (8000, 3)) @ chol.T
        return fv.tc_estimate(disc.apply(p, zj))

    run = jax.jit(jax.vmap(fit))
    covs = {"correlated": COV, "factorized": np.diag([1.0, 2.0, 0.5])}
    chols = jnp.asarray(np.stack([np.linalg.cholesky(c) for c in covs.values()]), jnp.float32)
    est = run(chols, jax.random.split(jax.random.PRNGKey(0), 2))
    return {n: (float(e), _gaussian_tc(c)) for (n, c), e in zip(covs.items(), est)}


def test_trained_discriminator_estimates_gaussian_tc(trained_tc):
    est, exact = trained_tc["correlated"]
    assert exact == pytest.approx(0.6, abs=0.1)  # 1/2 log of 1 / det(corr) = 0.61
    assert abs(est - exact) < 0.15, (est, exact)
    est0, exact0 = trained_tc["factorized"]
    assert exact0 == pytest.approx(0.0, abs=1e-12) and abs(est0) < 0.05, est0


# ---------------------------------------------------------------------------- the bundle

CFG = dict(name="fv", likelihood="gaussian", gaussian_scale=0.2, encoder="mlp", hidden=(16,),
           latent_dim=3, iwae_k=4, iwae_chunk=2, gamma=5.0, disc_hidden=(8,))


@pytest.fixture(scope="module")
def bundle():
    model = fv.make_factorvae(CFG, INFO)
    batch = stand_in_batch(8)
    vae_phase, disc_phase = model.training.phases

    def run(key):
        k0, k1, k2, k3 = jax.random.split(key, 4)
        params = model.training.init(k0, batch)
        (lv, mv), gv = jax.value_and_grad(vae_phase.loss, has_aux=True)(params, batch, k1)
        (ld, md), gd = jax.value_and_grad(disc_phase.loss, has_aux=True)(params, batch, k2)
        lp = model.likelihood.log_prob(params, batch, k3)
        s = model.sampler.sample(params, k3, 4)
        z = model.codec.encode(params, batch["image"])
        # the pieces the VAE phase is made of, recomputed independently
        vae = make_vae({k: v for k, v in CFG.items() if k not in ("gamma", "disc_hidden")}, INFO)
        k_vae, k_z = jax.random.split(k1)
        neg_elbo, _ = vae.training.phases[0].loss(params["vae"], batch, k_vae)
        mean, log_var = vae.codec.posterior(params["vae"], batch["image"])
        zs = mean + jnp.exp(0.5 * log_var) * jax.random.normal(k_z, mean.shape)
        tc = jnp.mean(fv.Discriminator((8,)).apply(params["disc"], zs))
        return params, lv, mv, gv, ld, md, gd, lp, s, z, neg_elbo, tc

    return model, jax.jit(run)(jax.random.PRNGKey(0))


def test_bundle_phases_and_capabilities(bundle):
    model, (params, lv, mv, gv, ld, md, gd, lp, s, z, neg_elbo, tc) = bundle
    assert [p.group for p in model.training.phases] == ["vae", "disc"]
    assert set(params) == {"vae", "disc"}
    # VAE phase: -ELBO + gamma * TC(z ~ q(z|x)) under the current discriminator.
    np.testing.assert_allclose(lv, neg_elbo + 5.0 * tc, rtol=1e-5)
    np.testing.assert_allclose(mv["tc"], tc, rtol=1e-5)
    assert {"recon", "kl", "elbo", "tc"} <= set(mv)
    # Each phase's loss moves its own group (and the VAE phase sees the discriminator's logit).
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(gv["vae"]))
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(gd["disc"]))
    assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(gd["vae"]))  # z is stop-gradient
    assert 0.0 <= float(md["disc_acc"]) <= 1.0 and np.isfinite(float(ld))
    assert lp.shape == (8,) and model.likelihood.kind == "iwae-4" and np.all(np.isfinite(lp))
    assert s.shape == (4, 8, 8, 1) and float(s.min()) >= 0 and float(s.max()) <= 1
    assert z.shape == (8, 3)


def test_discriminator_phase_needs_an_even_batch(bundle):
    model, (params, *_) = bundle
    with pytest.raises(ValueError, match="even batch >= 4"):
        model.training.phases[1].loss(params, stand_in_batch(3), jax.random.PRNGKey(0))


@pytest.mark.parametrize("field,value,match", [
    ("gamma", -1.0, "gamma"),
    ("disc_hidden", (), "disc_hidden"),
    ("conditioning", "label", "conditioning"),
    ("train_iwae_k", 4, "train_iwae_k"),
    ("latent_dim", 0, "latent_dim"),
    ("disc_width", 3, "disc_width"),
])
def test_bad_config(field, value, match):
    with pytest.raises(ConfigError, match=rf"config\.model\.{match}"):
        fv.make_factorvae({**CFG, field: value}, INFO)
