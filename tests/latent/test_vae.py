"""The VAE bundle (gen_jax.latent.vae) on a tiny stand-in dataset: training loss, IWAE
likelihood, sampler, codec (and its agreement with the sampler), conditioning, config errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.config import ConfigError
from gen_jax.latent import objectives, traversal
from gen_jax.latent.vae import VAEConfig, make_vae
from tests.latent.stand_in import INFO, Info, finite as _finite, stand_in_batch as _batch


def _loss(model):
    """The model's one loss (a VAE trains all its params with one phase)."""
    (phase,) = model.training.phases
    assert phase.group is None and phase.update is None
    return phase.loss


def _random_params(model, batch, seed=0, scale=0.05):
    """Random params of the model's shapes from ``eval_shape`` (a compiled init spends most of
    its compile time on random-number code; the real init is exercised where it is tested)."""
    r = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.training.init, jax.random.PRNGKey(0), batch)
    return jax.tree.map(lambda s: jnp.asarray(r.normal(0.0, scale, s.shape), s.dtype), shapes)


def _run_bundle(model, batch, num, cond, real_init=True):
    """(init,) loss + grads, log_prob, sample and reconstruct in one compiled program."""
    given = None if real_init else _random_params(model, batch)
    loss_fn = _loss(model)

    def run(key):
        k0, k1, k2, k3 = jax.random.split(key, 4)
        params = model.training.init(k0, batch) if given is None else given
        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch, k1)
        lp = None if model.likelihood is None else model.likelihood.log_prob(params, batch, k2)
        s = model.sampler.sample(params, k3, num, cond)
        rec = traversal.reconstruct(model, params, batch)
        return params, loss, metrics, grads, lp, s, rec

    return jax.jit(run)(jax.random.PRNGKey(0))


@pytest.mark.parametrize("likelihood,encoder,conditioning", [
    ("categorical", "mlp", "none"),
    ("logistic_mixture", "mlp", "label"),
    pytest.param("gaussian", "mlp", "caption", marks=pytest.mark.slow),
    ("bernoulli", "mlp", "none"),
])
def test_vae_bundle(likelihood, encoder, conditioning):
    cfg = dict(name="v", likelihood=likelihood, encoder=encoder, conditioning=conditioning,
               hidden=(32,), conv_features=(8,), latent_dim=4, iwae_k=16, iwae_chunk=8)
    model = make_vae(cfg, INFO)
    batch = _batch()
    cond = {k: batch[k][:5] for k in ("label", "caption_tokens")} if conditioning != "none" else None
    # The real init is compiled once (bernoulli); the other cases use eval_shape params.
    params, loss, metrics, grads, lp, s, rec = _run_bundle(model, batch, 5, cond,
                                                           real_init=likelihood == "bernoulli")
    assert np.isfinite(float(loss)) and _finite(grads) and _finite(params)
    assert set(metrics) == {"recon", "kl", "elbo"} and metrics["kl"].shape == (8,)
    np.testing.assert_allclose(metrics["elbo"], metrics["recon"] - metrics["kl"], rtol=1e-5)
    assert s.shape == (5, 8, 8, 1) and s.dtype == jnp.float32
    assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    assert model.sampler.kind == "image" and model.codec is not None
    assert model.conditional == (conditioning != "none")
    if conditioning == "label":
        assert model.conditioning.keys == ("label",) and model.conditioning.num_classes == 10
    if conditioning == "caption":
        assert model.conditioning.key == "caption_tokens"
    if likelihood == "bernoulli":
        assert model.likelihood is None
    else:
        assert model.likelihood.kind == "iwae-16" and model.likelihood.unit == "dim"
        assert lp.shape == (8,) and _finite(lp)
    assert rec.shape == (8, 8, 8, 1) and float(rec.min()) >= 0.0 and float(rec.max()) <= 1.0


@pytest.mark.parametrize("likelihood,sample_mean", [("categorical", False), ("logistic_mixture", True)])
def test_vae_codec_agrees_with_the_sampler(likelihood, sample_mean):
    """The Codec contract latent diffusion composes: ``encode`` is the posterior mean of
    ``posterior``; ``decode`` with a key is exactly the sampler after its ``z`` draw (on the
    levels), without a key the decoder mean."""
    model = make_vae(dict(hidden=(16,), latent_dim=4, likelihood=likelihood, num_mixtures=2,
                          conditioning="label", sample_mean=sample_mean), INFO)
    batch = _batch()
    cond = {"label": batch["label"][:5]}
    params = _random_params(model, batch)

    @jax.jit
    def run(params, key):
        s = model.sampler.sample(params, key, 5, cond)
        k_z, k_x = jax.random.split(key)
        z = jax.random.normal(k_z, (5, 4), jnp.float32)
        drawn = model.codec.decode(params, z, cond, key=k_x)
        mean_img = model.codec.decode(params, z, cond)
        mu, log_var = model.codec.posterior(params, batch["image"], batch)
        return s, drawn, mean_img, mu, log_var, model.codec.encode(params, batch["image"], batch)

    s, drawn, mean_img, mu, log_var, enc = jax.device_get(run(params, jax.random.PRNGKey(3)))
    np.testing.assert_array_equal(drawn, s)
    assert drawn.dtype == np.float32 and drawn.shape == (5, 8, 8, 1)
    np.testing.assert_allclose(drawn * 16, np.round(drawn * 16), atol=1e-5)  # on the 17 levels
    assert mean_img.shape == (5, 8, 8, 1) and mean_img.min() >= 0 and mean_img.max() <= 1
    if sample_mean:
        np.testing.assert_allclose(drawn, np.round(mean_img * 16) / 16, atol=1e-6)
    assert mu.shape == log_var.shape == (8, 4)
    np.testing.assert_array_equal(enc, mu)


def test_iwae_log_prob_is_above_elbo_for_discrete_likelihood():
    model = make_vae(dict(hidden=(32,), latent_dim=4, iwae_k=200, iwae_chunk=50), INFO)
    batch = _batch(16)
    loss_fn = _loss(model)

    @jax.jit
    def run(key):
        params = model.training.init(key, batch)
        keys = jax.random.split(jax.random.fold_in(key, 1), 20)
        elbos = jax.vmap(lambda k: loss_fn(params, batch, k)[1]["elbo"])(keys)  # [20, B]
        return jnp.mean(elbos, 0), model.likelihood.log_prob(params, batch, jax.random.fold_in(key, 2))

    elbo, lp = map(np.asarray, run(jax.random.PRNGKey(0)))
    # log_prob = IWAE bound on log P(levels) + D log K >= ELBO + D log K (Burda et al. Thm. 1).
    assert np.all(lp - 64 * np.log(17) > elbo - 1e-3)


@pytest.mark.slow
def test_conditional_conv_vae_adapts_to_rgb_16():
    """16x16x3 (two stride-2 halvings), label-conditioned, channel-coupled logistic mixture."""
    info = Info((16, 16, 3), 256, 10, 0, 0)
    model = make_vae(dict(encoder="conv", likelihood="logistic_mixture", num_mixtures=2, hidden=(16,),
                          conv_features=(4, 8), latent_dim=4, conditioning="label", iwae_k=4,
                          iwae_chunk=2), info)
    batch = _batch(2, info)
    params, loss, _, grads, lp, s, rec = _run_bundle(model, batch, 3, {"label": jnp.arange(3)}, real_init=False)
    assert "down1" in params["params"]["encoder"] and "down2" not in params["params"]["encoder"]
    assert np.isfinite(float(loss)) and _finite(grads)
    assert lp.shape == (2,) and _finite(lp) and model.likelihood.kind == "iwae-4"
    assert s.shape == (3, 16, 16, 3) and float(s.min()) >= 0 and float(s.max()) <= 1
    assert rec.shape == (2, 16, 16, 3)


def test_train_iwae_objective():
    model = make_vae(dict(hidden=(32,), latent_dim=4, train_iwae_k=5), INFO)
    batch = _batch()
    loss_fn = _loss(model)
    loss, m = jax.jit(lambda k: loss_fn(model.training.init(k, batch), batch, k))(jax.random.PRNGKey(0))
    np.testing.assert_allclose(float(loss), -float(jnp.mean(m["iwae"])), rtol=1e-6)
    assert np.all(np.asarray(m["iwae"]) >= np.asarray(m["elbo"]) - 1e-4)


def test_conditional_vae_uses_the_label():
    model = make_vae(dict(hidden=(32,), latent_dim=4, conditioning="label"), INFO)
    batch = _batch()

    @jax.jit
    def run(key):
        params = model.training.init(key, batch)
        s0 = model.sampler.sample(params, key, 4, {"label": jnp.zeros(4, jnp.int32)})
        s1 = model.sampler.sample(params, key, 4, {"label": jnp.ones(4, jnp.int32)})
        d = model.codec.decode(params, jnp.zeros((2, 4)), {"label": jnp.array([3, 5])})
        return s0, s1, d

    s0, s1, d = run(jax.random.PRNGKey(0))
    assert float(jnp.abs(s0 - s1).max()) > 0  # same key, different labels
    assert float(jnp.abs(d[0] - d[1]).max()) > 1e-4  # same z, different labels
    with pytest.raises(ValueError, match="'label'"):
        model.sampler.sample(None, jax.random.PRNGKey(0), 4)


@pytest.mark.parametrize("values,match", [
    ({"latent_dimm": 3}, "config.model.latent_dimm: unknown field"),
    ({"latent_dim": "8"}, "config.model.latent_dim: expected int"),
    ({"hidden": [32, "x"]}, r"config.model.hidden\[1\]: expected int"),
    ({"likelihood": "poisson"}, "config.model.likelihood: must be one of"),
    ({"encoder": "transformer"}, "config.model.encoder"),
    ({"conditioning": "text"}, "config.model.conditioning"),
    ({"train_iwae_k": 5, "beta": 4.0}, "config.model.beta"),
    ({"latent_dim": 0}, "config.model.latent_dim"),
])
def test_vae_config_errors(values, match):
    with pytest.raises(ConfigError, match=match):
        make_vae(values, INFO)


def test_vae_config_accepts_model_section_with_name():
    import ml_collections

    cfg = ml_collections.ConfigDict(dict(name="vae", latent_dim=8, hidden=(64, 32)))
    model = make_vae(cfg, INFO)
    assert model.name == "vae" and model.likelihood.kind == "iwae-1000"
    assert VAEConfig(latent_dim=3).likelihood in objectives.LIKELIHOODS
