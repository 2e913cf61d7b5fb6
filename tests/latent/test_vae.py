"""VAE bounds on an exactly solvable linear-Gaussian model; VAE / autoencoder bundles;
traversals; config errors."""
import collections

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.stats

from gen_jax import distributions as dist
from gen_jax.config import ConfigError
from gen_jax.latent import objectives, traversal
from gen_jax.latent.autoencoder import make_autoencoder
from gen_jax.latent.vae import VAEConfig, make_vae

Info = collections.namedtuple("Info", "image_shape num_levels num_classes vocab_size caption_len")
INFO = Info((8, 8, 1), 17, 10, 12, 5)

# ----------------------------------------------------------------------------------------
# Linear-Gaussian model: z ~ N(0, I_2), x | z ~ N(W z + b, s^2 I_4), p(x) = N(b, W W^T + s^2 I).
# W has orthogonal columns, so the exact posterior N(m, S) is diagonal:
# S = (I + W^T W / s^2)^-1, m = S W^T (x - b) / s^2.
# ----------------------------------------------------------------------------------------

S_NOISE = 0.5
_Q = np.linalg.qr(np.random.default_rng(0).normal(size=(4, 4)))[0]
W = _Q[:, :2] * np.array([1.5, 0.8])
B_VEC = np.array([0.2, -0.1, 0.4, 0.0])


def _lg_data(n=64):
    r = np.random.default_rng(1)
    z = r.normal(size=(n, 2))
    x = z @ W.T + B_VEC + S_NOISE * r.normal(size=(n, 4))
    log_px = scipy.stats.multivariate_normal(B_VEC, W @ W.T + S_NOISE ** 2 * np.eye(4)).logpdf(x)
    return x, log_px


def _exact_posterior(x):
    s_diag = 1.0 / (1.0 + np.diag(W.T @ W) / S_NOISE ** 2)
    mean = (x - B_VEC) @ W / S_NOISE ** 2 * s_diag
    return mean, np.broadcast_to(np.log(s_diag), mean.shape)


def _lg_recon(x_img, z):
    """log p(x | z) for images [N, 2, 2, 1] and z [N, 2] (objectives.gaussian_reconstruction)."""
    mean = (z @ jnp.asarray(W.T, jnp.float32) + jnp.asarray(B_VEC, jnp.float32)).reshape(-1, 2, 2, 1)
    return objectives.gaussian_reconstruction(x_img, mean, jnp.log(jnp.float32(S_NOISE)))


def _log_weight_fn(x, q_mean, q_log_var):
    x_img = jnp.asarray(x, jnp.float32).reshape(-1, 2, 2, 1)
    q_mean, q_log_var = jnp.asarray(q_mean, jnp.float32), jnp.asarray(q_log_var, jnp.float32)

    def fn(key, n):
        b = q_mean.shape[0]
        z = dist.gaussian_sample(key, jnp.broadcast_to(q_mean, (n, b, 2)), q_log_var)
        recon = _lg_recon(jnp.tile(x_img, (n, 1, 1, 1)), z.reshape(n * b, 2)).reshape(n, b)
        return recon + dist.gaussian_log_prob(z, 0.0, jnp.zeros(())) - dist.gaussian_log_prob(z, q_mean, q_log_var)

    return fn


def test_exact_posterior_makes_elbo_equal_log_px():
    x, log_px = _lg_data()
    m, lv = _exact_posterior(x)
    fn = _log_weight_fn(x, m, lv)
    # log w = log p(x, z) - log q(z | x) = log p(x) for every z.
    lw = np.asarray(jax.jit(fn, static_argnums=1)(jax.random.PRNGKey(0), 5))
    np.testing.assert_allclose(lw, np.broadcast_to(log_px, lw.shape), atol=2e-4)
    # The analytic-KL ELBO estimator (Kingma & Welling Eq. 10) averages to log p(x).
    n = 4000
    z = dist.gaussian_sample(jax.random.PRNGKey(1), jnp.broadcast_to(jnp.asarray(m, jnp.float32), (n,) + m.shape),
                             jnp.asarray(lv, jnp.float32))
    x_img = jnp.tile(jnp.asarray(x, jnp.float32).reshape(-1, 2, 2, 1), (n, 1, 1, 1))
    recon = _lg_recon(x_img, z.reshape(-1, 2)).reshape(n, -1)
    terms = objectives.elbo(recon, jnp.asarray(m, jnp.float32), jnp.asarray(lv, jnp.float32))
    elbo = np.asarray(terms["elbo"])
    se = elbo.std(0) / np.sqrt(n)
    assert np.all(np.abs(elbo.mean(0) - log_px) < 4 * se + 1e-4)


def test_elbo_and_iwae_bounds_with_inexact_posterior():
    x, log_px = _lg_data()
    m, lv = _exact_posterior(x)
    q_mean, q_log_var = 0.5 * m + 0.3, lv + np.log(2.5)  # deliberately wrong posterior
    fn = _log_weight_fn(x, q_mean, q_log_var)
    key = jax.random.PRNGKey(2)

    @jax.jit
    def run(key):
        elbo = jnp.mean(fn(jax.random.fold_in(key, 0), 2000), 0)  # [B] Monte Carlo ELBO
        # Each IWAE-k averaged over 4 independent evaluations and the batch, so that the
        # monotonicity in expectation (Burda et al. 2016, Thm. 1) shows reliably.
        bounds = [jnp.mean(jax.vmap(lambda kk: objectives.iwae_bound(kk, fn, k, 100))(
            jax.random.split(jax.random.fold_in(key, k), 4))) for k in (1, 10, 100, 1000)]
        return elbo, jnp.stack(bounds)

    elbo, bounds = map(np.asarray, run(key))
    assert np.all(elbo < log_px)
    bounds = dict(zip((1, 10, 100, 1000), bounds.tolist()))
    seq = [bounds[k] for k in (1, 10, 100, 1000)]
    assert all(a < b for a, b in zip(seq, seq[1:])), seq
    assert seq[-1] <= log_px.mean() + 0.01
    gap_elbo = log_px.mean() - elbo.mean()
    assert log_px.mean() - seq[-1] < 0.25 * gap_elbo, (seq, log_px.mean(), gap_elbo)


def test_iwae_bound_chunking_matches_direct_logsumexp():
    def fn(key, n):
        return jax.random.normal(key, (n, 3)) * 2.0

    key = jax.random.PRNGKey(0)
    got = objectives.iwae_bound(key, fn, 10, chunk_size=3)
    lw = jnp.concatenate([fn(jax.random.fold_in(key, i), 3) for i in range(3)] + [fn(jax.random.fold_in(key, 3), 1)])
    np.testing.assert_allclose(got, jax.nn.logsumexp(lw, 0) - np.log(10.0), rtol=1e-6)


# ----------------------------------------------------------------------------------------
# The VAE bundle on a tiny stand-in dataset.
# ----------------------------------------------------------------------------------------


def _batch(n=8, info=INFO, seed=0):
    r = np.random.default_rng(seed)
    k = info.num_levels
    return {"image": jnp.asarray(r.integers(0, k, (n,) + tuple(info.image_shape)) / (k - 1), jnp.float32),
            "label": jnp.asarray(r.integers(0, 10, n), jnp.int32),
            "caption_tokens": jnp.asarray(np.where(np.arange(info.caption_len) < 3,
                                                   r.integers(1, info.vocab_size, (n, info.caption_len)), 0),
                                          jnp.int32)}


def _finite(tree):
    return all(bool(jnp.all(jnp.isfinite(v))) for v in jax.tree.leaves(tree))


def _random_params(model, batch, seed=0, scale=0.05):
    """Random params of the model's shapes from ``eval_shape`` (a compiled init spends most of
    its compile time on random-number code; the real init is exercised where it is tested)."""
    r = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), batch)
    return jax.tree.map(lambda s: jnp.asarray(r.normal(0.0, scale, s.shape), s.dtype), shapes)


def _run_bundle(model, batch, num, cond, real_init=True):
    """(init,) loss + grads, log_prob, sample and reconstruct in one compiled program."""
    given = None if real_init else _random_params(model, batch)

    def run(key):
        k0, k1, k2, k3 = jax.random.split(key, 4)
        params = model.init(k0, batch) if given is None else given
        (loss, metrics), grads = jax.value_and_grad(model.loss, has_aux=True)(params, batch, k1)
        lp = None if model.log_prob is None else model.log_prob(params, batch, k2)
        s = model.sample(params, k3, num, cond)
        rec = model.extras["reconstruct"](params, batch)
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
    cond = {k: batch[k][:5] for k in ("label", "caption_tokens")}
    # The real init is compiled once (bernoulli); the other cases use eval_shape params.
    params, loss, metrics, grads, lp, s, rec = _run_bundle(model, batch, 5, cond,
                                                           real_init=likelihood == "bernoulli")
    assert np.isfinite(float(loss)) and _finite(grads) and _finite(params)
    assert set(metrics) == {"recon", "kl", "elbo"} and metrics["kl"].shape == (8,)
    np.testing.assert_allclose(metrics["elbo"], metrics["recon"] - metrics["kl"], rtol=1e-5)
    assert s.shape == (5, 8, 8, 1) and s.dtype == jnp.float32
    assert float(s.min()) >= 0.0 and float(s.max()) <= 1.0
    assert model.conditional == (conditioning != "none")
    if likelihood == "bernoulli":
        assert model.log_prob is None and model.bpd_kind is None
    else:
        assert model.bpd_kind == "iwae-16"
        assert lp.shape == (8,) and _finite(lp)
    assert rec.shape == (8, 8, 8, 1) and float(rec.min()) >= 0.0 and float(rec.max()) <= 1.0


def test_iwae_log_prob_is_above_elbo_for_discrete_likelihood():
    model = make_vae(dict(hidden=(32,), latent_dim=4, iwae_k=200, iwae_chunk=50), INFO)
    batch = _batch(16)

    @jax.jit
    def run(key):
        params = model.init(key, batch)
        keys = jax.random.split(jax.random.fold_in(key, 1), 20)
        elbos = jax.vmap(lambda k: model.loss(params, batch, k)[1]["elbo"])(keys)  # [20, B]
        return jnp.mean(elbos, 0), model.log_prob(params, batch, jax.random.fold_in(key, 2))

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
    assert lp.shape == (2,) and _finite(lp) and model.bpd_kind == "iwae-4"
    assert s.shape == (3, 16, 16, 3) and float(s.min()) >= 0 and float(s.max()) <= 1
    assert rec.shape == (2, 16, 16, 3)


def test_train_iwae_objective():
    model = make_vae(dict(hidden=(32,), latent_dim=4, train_iwae_k=5), INFO)
    batch = _batch()
    loss, m = jax.jit(lambda k: model.loss(model.init(k, batch), batch, k))(jax.random.PRNGKey(0))
    np.testing.assert_allclose(float(loss), -float(jnp.mean(m["iwae"])), rtol=1e-6)
    assert np.all(np.asarray(m["iwae"]) >= np.asarray(m["elbo"]) - 1e-4)


def test_conditional_vae_uses_the_label():
    model = make_vae(dict(hidden=(32,), latent_dim=4, conditioning="label"), INFO)
    batch = _batch()

    @jax.jit
    def run(key):
        params = model.init(key, batch)
        s0 = model.sample(params, key, 4, {"label": jnp.zeros(4, jnp.int32)})
        s1 = model.sample(params, key, 4, {"label": jnp.ones(4, jnp.int32)})
        d = model.extras["decode"](params, jnp.zeros((2, 4)), {"label": jnp.array([3, 5])})
        return s0, s1, d

    s0, s1, d = run(jax.random.PRNGKey(0))
    assert float(jnp.abs(s0 - s1).max()) > 0  # same key, different labels
    assert float(jnp.abs(d[0] - d[1]).max()) > 1e-4  # same z, different labels
    with pytest.raises(ValueError, match="'label'"):
        model.sample(None, jax.random.PRNGKey(0), 4)


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
    assert model.name == "vae" and model.bpd_kind == "iwae-1000"
    assert VAEConfig(latent_dim=3).likelihood in objectives.LIKELIHOODS


# ----------------------------------------------------------------------------------------
# Autoencoder through the real train step (two phases: gradient + code statistics).
# ----------------------------------------------------------------------------------------


def test_autoencoder_trains_and_samples_from_fitted_codes():
    from gen_jax.train.state import create_train_state
    from gen_jax.train.step import make_step_fn

    model = make_autoencoder(dict(hidden=(32,), latent_dim=3), INFO)
    batch = _batch(16)
    params = jax.jit(model.init)(jax.random.PRNGKey(0), batch)
    phases = model.train_phases()
    opts = {"net": optax.adam(1e-2)}
    state = create_train_state(params, opts, jax.random.PRNGKey(1), phases=phases, use_ema=False)
    step = jax.jit(make_step_fn(phases, opts))
    losses = []
    for _ in range(3):
        state, m = step(state, batch)
        losses.append(float(m["net/loss"]))
    assert float(m["finite"]) == 1.0 and losses[-1] < losses[0]
    codes = state.params["codes"]
    assert float(codes["count"]) == 3.0
    z, s = jax.jit(lambda p: (model.extras["encode"](p, batch["image"]),
                              model.sample(p, jax.random.PRNGKey(2), 6)))(state.params)
    assert z.shape == (16, 3)
    assert s.shape == (6, 8, 8, 1) and float(s.min()) >= 0 and float(s.max()) <= 1
    assert model.log_prob is None
    with pytest.raises(ConfigError, match="config.model.loss"):
        make_autoencoder({"loss": "l1"}, INFO)


# ----------------------------------------------------------------------------------------
# Traversals and interpolations.
# ----------------------------------------------------------------------------------------


def _fake_decode(z):
    return jnp.broadcast_to(jax.nn.sigmoid(z.sum(-1))[:, None, None, None], (z.shape[0], 8, 8, 1))


def test_traversal_and_interpolation_shapes_and_endpoints():
    z0 = jnp.array([0.5, -1.0, 2.0])
    codes = traversal.traversal_codes(z0, [0, 2], jnp.array([-1.0, 0.0, 1.0]))
    assert codes.shape == (2, 3, 3)
    np.testing.assert_allclose(codes[1, :, 2], [-1.0, 0.0, 1.0])
    np.testing.assert_allclose(codes[1, :, :2], np.tile([0.5, -1.0], (3, 1)))
    grid = traversal.latent_traversal(_fake_decode, z0, dims=[0, 1], num_values=5)
    assert grid.shape == (2, 5, 8, 8, 1)
    za, zb = jnp.array([[1.0, 0.0], [0.0, 2.0]]), jnp.array([[0.0, 1.0], [2.0, 0.0]])
    t = jnp.linspace(0, 1, 5)
    for fn in (traversal.lerp, traversal.slerp):
        path = fn(za, zb, t)
        np.testing.assert_allclose(path[:, 0], za, atol=1e-6)
        np.testing.assert_allclose(path[:, -1], zb, atol=1e-6)
    # slerp between equal-norm codes stays on the sphere; lerp cuts inside it.
    np.testing.assert_allclose(jnp.linalg.norm(traversal.slerp(za, zb, t), axis=-1),
                               [[1.0] * 5, [2.0] * 5], rtol=1e-5)
    assert float(jnp.linalg.norm(traversal.lerp(za, zb, t)[0, 2])) < 0.75
    assert traversal.interpolate(_fake_decode, za, zb, 6, "linear").shape == (2, 6, 8, 8, 1)


def test_interpolate_images_with_vae():
    model = make_vae(dict(hidden=(16,), latent_dim=3), INFO)
    batch = _batch(4)

    @jax.jit
    def run(key):
        params = model.init(key, batch)
        grid = traversal.interpolate_images(model, params, batch["image"][:2], batch["image"][2:], 5)
        rec = model.extras["reconstruct"](params, {"image": batch["image"][:2]})
        tr = traversal.traverse_image(model, params, batch["image"][0], dims=[0, 2], num_values=4)
        return grid, rec, tr

    grid, rec, tr = run(jax.random.PRNGKey(0))
    assert grid.shape == (2, 5, 8, 8, 1) and tr.shape == (2, 4, 8, 8, 1)
    np.testing.assert_allclose(grid[:, 0], rec, atol=1e-5)
