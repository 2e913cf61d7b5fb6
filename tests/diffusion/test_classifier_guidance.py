"""Classifier guidance with a noise-aware classifier (Dhariwal & Nichol 2021): the classifier
objective (gen_jax.diffusion.noisy_classifier), the guided eps against closed forms for Gaussian
class-conditionals, guided DDIM sampling of a two-class toy, the wiring of a DDPM's denoiser
and the classifier's parts (gen_jax.diffusion.classifier_guidance), and bad-input errors."""
import collections
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from experiments import common
from experiments.registry import get_factory
from gen_jax.config import ConfigError, typed
from gen_jax.diffusion import gaussian_diffusion as gd
from gen_jax.diffusion import samplers
from gen_jax.diffusion.classifier_guidance import (classifier_guided_model_fn,
                                                   make_classifier_guided_sampler)
from gen_jax.diffusion.model import make_ddpm
from gen_jax.diffusion.noisy_classifier import (NoisyClassifierConfig, build_noisy_classifier,
                                                check_same_process, make_noisy_classifier,
                                                noisy_classifier_terms)
from gen_jax.diffusion.schedules import make_schedule
from gen_jax.model import Predictor

Info = collections.namedtuple("Info", "image_shape num_levels num_classes")
INFO = Info((8, 8, 1), 17, 10)
CLF = dict(features=(8, 16), hidden=16, time_dim=8, num_groups=4)
UNET = dict(ch=8, ch_mult=(1,), num_res_blocks=1, attn_resolutions=(), dropout=0.0, num_groups=4)
SCHEDULE = make_schedule("linear", 1000, beta_start=1e-4, beta_end=0.02)


def _batch(n=4, seed=0):
    r = np.random.default_rng(seed)
    return {"image": jnp.asarray(r.integers(0, 17, (n, 8, 8, 1)) / 16, jnp.float32),
            "label": jnp.asarray(r.integers(0, 10, n), jnp.int32)}


def _random_params(model, seed=1, scale=0.2):
    """Random params of the model's shapes (``eval_shape`` of init: nothing compiled)."""
    r = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.training.init, jax.random.PRNGKey(0), _batch())
    return jax.tree.map(lambda s: jnp.asarray(r.normal(0.0, scale, s.shape), s.dtype), shapes)


@pytest.fixture(scope="module")
def clf():
    parts = build_noisy_classifier(CLF, INFO)
    return parts, _random_params(parts.model)


@pytest.fixture(scope="module")
def ddpm():
    model = make_ddpm(dict(unet=UNET), INFO)  # T = 1000 linear 1e-4..0.02, eps, clip_x0
    return model, _random_params(model, seed=2, scale=0.1)


# ----------------------------------------------------------------------------------------
# Two Gaussian classes N(mu_y, sig^2 I) in 2-D, equal priors: everything in closed form.
# x_t | y ~ N(a mu_y, v I) with a = sqrt(abar_t), v = a^2 sig^2 + 1 - a^2.
# ----------------------------------------------------------------------------------------
MU = np.array([[-0.3, 0.0], [0.3, 0.0]])
SIG = 0.3


def _a_v(t):
    a = gd.extract(SCHEDULE.sqrt_alpha_bars, t, 2)  # [B, 1]
    return a, a * a * SIG ** 2 + 1.0 - a * a


def _log_lik(x, t):  # [B, K]: log N(x; a mu_k, v I)
    a, v = _a_v(t)
    diff = x[:, None, :] - a[:, :, None] * jnp.asarray(MU, jnp.float32)[None]
    return -0.5 * jnp.sum(diff ** 2, -1) / v - jnp.log(2 * math.pi * v)


def toy_eps(x, t, ctx):
    """The exact eps of the mixture: ``-sqrt(1 - abar_t) grad log p_t(x)``."""
    a, v = _a_v(t)
    w = jax.nn.softmax(_log_lik(x, t), -1)  # [B, K]
    score = -(x - a * (w @ jnp.asarray(MU, jnp.float32))) / v
    return -jnp.sqrt(1.0 - a * a) * score


def toy_log_prob(x, t, ctx):
    """The exact noisy-class posterior ``log p(y | x_t)`` ``[B]``, ``y = ctx['label']``."""
    lp = jax.nn.log_softmax(_log_lik(x, t), -1)
    return jnp.take_along_axis(lp, ctx["label"][:, None], -1)[:, 0]


def test_guided_eps_is_the_eps_of_the_tilted_marginal():
    """Dhariwal & Nichol Eq. 14 against closed forms: the guided eps is
    ``-sqrt(1 - abar)(grad log p_t + s grad log p(y | x_t))``; at ``s = 1`` the eps of
    ``p_t(x | y) = N(a mu_y, v I)``, i.e. ``sqrt(1 - abar)(x - a mu_y) / v``."""
    r = np.random.default_rng(0)
    t = jnp.array([0, 10, 100, 400, 700, 999], jnp.int32)
    x = jnp.asarray(r.normal(0, 0.8, (6, 2)), jnp.float32)
    y = jnp.array([0, 1, 1, 0, 1, 0], jnp.int32)
    a = np.sqrt(np.asarray(SCHEDULE.alpha_bars, np.float64)[np.asarray(t)])[:, None]
    v = a * a * SIG ** 2 + 1 - a * a
    xd = np.asarray(x, np.float64)
    ll = -0.5 * ((xd[:, None] - a[:, :, None] * MU[None]) ** 2).sum(-1) / v
    w = np.exp(ll - ll.max(1, keepdims=True))
    w /= w.sum(1, keepdims=True)
    score = -(xd - a * (w @ MU)) / v
    grad_y = a * (MU[np.asarray(y)] - w @ MU) / v  # grad_x log p(y | x_t), closed form
    scales = (0.0, 1.0, 3.0)

    @jax.jit
    def run(x, t, y):
        guided = [classifier_guided_model_fn(toy_eps, toy_log_prob, SCHEDULE, s)(x, t, {"label": y})
                  for s in scales]
        mean = lambda out: gd.p_mean_variance(SCHEDULE, out, x, t, "eps", "fixed_small", False)["mean"]
        return guided, mean(guided[2]) - mean(toy_eps(x, t, None))

    guided, mean_shift = run(x, t, y)
    for s, got in zip(scales, guided):
        want = -np.sqrt(1 - a * a) * (score + s * grad_y)
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=1e-4)
    cond_eps = np.sqrt(1 - a * a) * (xd - a * MU[np.asarray(y)]) / v
    np.testing.assert_allclose(np.asarray(guided[1]), cond_eps, atol=1e-5, rtol=1e-4)
    # Ancestral form (module docstring): the DDPM mean moves by s beta_t / sqrt(a_t) g.
    beta = np.asarray(SCHEDULE.betas)[np.asarray(t)][:, None]
    np.testing.assert_allclose(np.asarray(mean_shift), scales[2] * beta / np.sqrt(1 - beta) * grad_y,
                               atol=1e-5, rtol=1e-3)


def test_guided_ddim_samples_land_in_the_requested_class():
    """Guided DDIM (Alg. 2) on the toy: unguided ~1/2 in the requested class; ``s = 1``
    samples ``p(x | y)``, so the Bayes rule (sign of x[0]) agrees with ``y`` w.p.
    ``Phi(0.3 / 0.3)``; ``s = 10`` almost always."""
    n = 1000
    y = jnp.asarray(np.arange(n) % 2, jnp.int32)

    def draw(s):
        model_fn = classifier_guided_model_fn(toy_eps, toy_log_prob, SCHEDULE, s)
        run = samplers.make_ddim_sampler(model_fn, SCHEDULE, 100, 0.0)
        return np.asarray(jax.jit(lambda k, c: run(k, (n, 2), c))(jax.random.PRNGKey(3), {"label": y}))

    xs = {s: draw(s) for s in (0.0, 1.0, 10.0)}
    f0, f1, f10 = (float(np.mean((xs[s][:, 0] > 0) == (np.asarray(y) == 1))) for s in (0.0, 1.0, 10.0))
    assert abs(f0 - 0.5) < 0.06, f0
    assert abs(f1 - norm.cdf(1.0)) < 0.04, f1
    assert f10 > 0.98 and f10 > f0 + 0.4, (f0, f10)
    for k in (0, 1):  # s = 1: the class-conditional N(mu_y, 0.3^2 I) itself
        xk = xs[1.0][np.asarray(y) == k]
        np.testing.assert_allclose(xk.mean(0), MU[k], atol=0.05)
        np.testing.assert_allclose(xk.std(0), [SIG, SIG], atol=0.03)


# ----------------------------------------------------------------------------------------
# The noise-aware classifier.
# ----------------------------------------------------------------------------------------


def test_classifier_objective_on_a_fixed_logits_fn():
    """Per-example cross-entropy of p(y | x_t) with x_t = sqrt(abar) x0 + sqrt(1 - abar) eps."""
    r = np.random.default_rng(1)
    x0 = jnp.asarray(r.uniform(-1, 1, (5, 2)), jnp.float32)
    y = jnp.array([0, 1, 1, 0, 1], jnp.int32)
    t = jnp.array([0, 5, 50, 500, 999], jnp.int32)
    noise = jnp.asarray(r.normal(size=(5, 2)), jnp.float32)
    logits_fn = lambda x_t, tt: _log_lik(x_t, tt)  # the Bayes posterior's logits
    ab = np.asarray(SCHEDULE.alpha_bars)[np.asarray(t)][:, None]
    x_t = jnp.asarray(np.sqrt(ab) * np.asarray(x0) + np.sqrt(1 - ab) * np.asarray(noise), jnp.float32)

    @jax.jit
    def run(x0, x_t):
        terms = noisy_classifier_terms(logits_fn, SCHEDULE, x0, y, jax.random.PRNGKey(0), t, noise)
        drawn = noisy_classifier_terms(logits_fn, SCHEDULE, x0, y, jax.random.PRNGKey(0))
        return terms, drawn, jax.nn.log_softmax(logits_fn(x_t, t), -1)

    terms, drawn, lp = run(x0, x_t)
    np.testing.assert_allclose(terms["ce"], -np.asarray(lp)[np.arange(5), np.asarray(y)], rtol=1e-5)
    np.testing.assert_array_equal(terms["correct"], np.argmax(lp, -1) == np.asarray(y))
    assert drawn["t"].shape == (5,) and int(drawn["t"].min()) >= 0 and int(drawn["t"].max()) < 1000
    with pytest.raises(ValueError, match=r"labels must be \[B=5\]"):
        noisy_classifier_terms(logits_fn, SCHEDULE, x0, y[:4], jax.random.PRNGKey(0))


def test_classifier_bundle_loss_logits_and_log_prob(clf):
    parts, params = clf
    model = parts.model
    batch = _batch(6)
    x_t = jax.random.normal(jax.random.PRNGKey(1), (6, 8, 8, 1))
    t = jnp.array([0, 1, 10, 100, 500, 999], jnp.int32)

    @jax.jit
    def run(params, batch, key):
        loss, metrics = model.training.phases[0].loss(params, batch, key)
        terms = noisy_classifier_terms(lambda x, tt: model.classifier.logits(params, x, tt), SCHEDULE,
                                       2.0 * batch["image"] - 1.0, batch["label"], key)
        logits = model.classifier.logits(params, x_t, t)
        lp_all = jnp.stack([parts.log_prob_y(params, x_t, t, jnp.full((6,), k)) for k in range(10)], 1)
        return loss, metrics, terms, logits, lp_all

    loss, metrics, terms, logits, lp_all = run(params, batch, jax.random.PRNGKey(2))
    assert isinstance(model, Predictor) and model.classifier.num_classes == parts.num_classes == 10
    assert logits.shape == (6, 10) and lp_all.shape == (6, 10)
    assert parts.image_shape == (8, 8, 1) and parts.num_levels == 17 and parts.config.timesteps == 1000
    np.testing.assert_allclose(loss, np.mean(terms["ce"]), rtol=1e-5)
    np.testing.assert_allclose(np.mean(metrics["accuracy"]), np.mean(terms["correct"]), rtol=1e-6)
    assert metrics["loss"].shape == (6,) and 0.0 <= float(metrics["accuracy_low_noise"]) <= 1.0
    np.testing.assert_allclose(lp_all, jax.nn.log_softmax(logits, -1), atol=1e-5)
    assert float(jnp.std(logits)) > 1e-3  # random params: not a constant classifier
    mlp = make_noisy_classifier(dict(CLF, network="mlp"), INFO)
    out = jax.eval_shape(mlp.classifier.logits, _random_params(mlp), x_t, t)
    assert out.shape == (6, 10)


def test_classifier_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="config.model.widths"):
        make_noisy_classifier(dict(widths=(8,)), INFO)
    with pytest.raises(ConfigError, match="config.model.time_dim"):
        make_noisy_classifier(dict(time_dim=7), INFO)
    with pytest.raises(ConfigError, match="config.model.num_groups"):
        make_noisy_classifier(dict(features=(6, 16), num_groups=4), INFO)
    with pytest.raises(ConfigError, match="config.model.network"):
        make_noisy_classifier(dict(network="resnet"), INFO)
    with pytest.raises(ConfigError, match="num_classes"):
        make_noisy_classifier(CLF, Info((8, 8, 1), 17, 0))


def test_digits_config_builds_and_matches_ddpm_digits():
    exp = common.load_experiment("noisy_classifier_digits")
    model = get_factory(exp.model_name)(exp.model, INFO)
    params = jax.eval_shape(model.training.init, jax.random.PRNGKey(0), _batch(16))
    assert sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params)) > 0
    ddpm_exp = common.load_experiment("ddpm_digits")
    check_same_process(make_ddpm(ddpm_exp.model, INFO).denoiser.schedule,
                       typed(NoisyClassifierConfig, exp.model))


# ----------------------------------------------------------------------------------------
# The guided sampler: wiring and errors.
# ----------------------------------------------------------------------------------------


def test_bundle_sampler_wiring(ddpm, clf):
    """One compiled guided DDIM-2: with a constant classifier (zero logits weights, so zero
    gradient) it reproduces the DDPM's own DDIM sampler; a real classifier moves the samples."""
    dmodel, dparams = ddpm
    cparts, cparams = clf
    sample = make_classifier_guided_sampler(dmodel.denoiser, cparts, 50.0, "ddim", steps=2)
    labels = jnp.array([1, 4, 7], jnp.int32)
    key = jax.random.PRNGKey(5)
    flat = dict(cparams, logits=jax.tree.map(jnp.zeros_like, cparams["logits"]))
    x_flat = sample(dparams, flat, key, 3, labels)
    x_guided = sample(dparams, cparams, key, 3, labels)
    ref = jax.jit(dmodel.denoiser.make_sampler("ddim", 2, 0.0, 0.0), static_argnums=2)(dparams, key, 3)
    assert x_guided.shape == (3, 8, 8, 1) and x_guided.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(x_guided) * 16, np.round(np.asarray(x_guided) * 16), atol=1e-5)
    np.testing.assert_allclose(x_flat, ref, atol=1e-6)
    assert float(jnp.max(jnp.abs(x_guided - x_flat))) > 0.0
    anc = make_classifier_guided_sampler(dmodel.denoiser, cparts, 1.0, "ddpm")
    out = jax.eval_shape(lambda k: anc(dparams, cparams, k, 2, jnp.array([0, 9])), key)
    assert out.shape == (2, 8, 8, 1)


def test_bad_inputs_raise_clear_errors(ddpm, clf):
    dmodel, dparams = ddpm
    cparts, cparams = clf
    for field, value in (("beta_end", 0.03), ("timesteps", 500), ("beta_schedule", "cosine")):
        other = dict(unet=UNET, **{field: value})
        with pytest.raises(ConfigError, match=f"config.model.{field}"):
            make_classifier_guided_sampler(make_ddpm(other, INFO).denoiser, cparts, 1.0)
    # The DDPM's schedule is checked against the classifier's config field by field (the
    # denoiser carries its schedule: no config is passed next to it any more).
    for field, value in (("beta_start", 2e-4), ("beta_schedule", "cosine")):
        other = build_noisy_classifier(dict(CLF, **{field: value}), INFO)
        with pytest.raises(ConfigError, match=f"config.model.{field}"):
            make_classifier_guided_sampler(dmodel.denoiser, other, 1.0)
    with pytest.raises(ConfigError, match="config.model.parameterization"):
        make_classifier_guided_sampler(make_ddpm(dict(unet=UNET, parameterization="v"), INFO).denoiser, cparts, 1.0)
    with pytest.raises(ValueError, match="scale"):
        make_classifier_guided_sampler(dmodel.denoiser, cparts, -1.0)
    with pytest.raises(ValueError, match="scale"):
        classifier_guided_model_fn(toy_eps, toy_log_prob, SCHEDULE, float("nan"))
    with pytest.raises(ValueError, match="steps"):
        make_classifier_guided_sampler(dmodel.denoiser, cparts, 1.0, "ddpm", steps=10)
    sample = make_classifier_guided_sampler(dmodel.denoiser, cparts, 1.0, "ddim", steps=2)
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match=r"labels must be int \[num=3\]"):
        sample(dparams, cparams, key, 3, jnp.array([1, 2]))
    with pytest.raises(ValueError, match=r"labels must be int \[num=3\]"):
        sample(dparams, cparams, key, 3, jnp.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 9\]"):
        sample(dparams, cparams, key, 3, jnp.array([1, 2, 10]))
