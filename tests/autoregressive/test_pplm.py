"""PPLM (Dathathri et al. 2020) on a tiny random character LM and a random attribute
classifier: the Eq. 3 ascent raises log p(a | h), zero step size is plain sampling, and the
attribute classifier trainer separates separable data."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gen_jax.autoregressive.pplm import (AttributeClassifier, PPLMConfig, make_pplm_sampler, mean_pool,
                                         train_attribute_classifier)
from gen_jax.autoregressive.transformer_lm import build_transformer_lm
from gen_jax.data.datasets import DatasetInfo

INFO = DatasetInfo(name="fake", image_shape=(1, 1, 1), num_levels=2, num_classes=0, num_train=0, num_test=0,
                   has_captions=True, caption_len=0, vocab_size=0, caption_char_len=5)
D = 16


def _random(shapes, scale, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: jnp.asarray(rng.normal(0.0, scale, s.shape), s.dtype), shapes)


@pytest.fixture(scope="module")
def lm():
    m = build_transformer_lm(dict(tokens="caption_chars", num_layers=1, d_model=D, num_heads=2), INFO)
    batch = {"caption_chars": jnp.ones((1, 5), jnp.int32)}
    params = _random(jax.eval_shape(m.model.training.init, jax.random.PRNGKey(0), batch), 0.3, 0)
    clf = AttributeClassifier(num_classes=2)
    clf_params = _random(jax.eval_shape(clf.init, jax.random.PRNGKey(0), jnp.zeros((1, D))), 1.0, 1)
    return m, params, clf, clf_params


MODES = {  # (config, a small step size for the ascent test)
    "paper": (PPLMConfig(num_iterations=2, gamma=1.5, kl_scale=0.01, gm_scale=0.95, horizon=1), 0.01),
    "grounded": (PPLMConfig(num_iterations=2, gamma=0.0, kl_scale=0.1, gm_scale=0.6, horizon=1, grounded=True,
                            accumulate=False), 100.0),
}


@pytest.fixture(scope="module", params=sorted(MODES))
def pplm(request, lm):
    """One compiled PPLM sampler per mode; the step size alpha is an argument (no recompile)."""
    m, params, clf, clf_params = lm
    cfg, small_step = MODES[request.param]
    sample = make_pplm_sampler(m.decoder, m.layout, clf, cfg)
    return jax.jit(sample, static_argnums=3), small_step


N = 32
_PLAIN = {}


def _plain_sampler(m):
    """The bundle's plain cached sampler, compiled once for the module."""
    if "f" not in _PLAIN:
        _PLAIN["f"] = jax.jit(m.model.sampler.sample, static_argnums=2)
    return _PLAIN["f"]


def test_perturbation_increases_the_attribute_log_prob(lm, pplm):
    m, params, clf, clf_params = lm
    sample, step = pplm
    for target in (0, 1):
        _, log_pa = sample(params, clf_params, jax.random.PRNGKey(2), N, target, None, jnp.float32(step))
        log_pa = np.asarray(log_pa)  # [L, iterations + 1, N]
        # Step 0 feeds <bos> with an empty past: nothing to perturb. Later steps: Eq. 3 ascent
        # (the last step has no horizon step, which is the only path in grounded mode).
        # Where the gradient is ~0 (|g|^2 ~ 1e-7 for a few grounded steps of this random LM)
        # float32 rounding decides the sign, hence 95% and the mean.
        np.testing.assert_allclose(log_pa[0, -1], log_pa[0, 0], atol=1e-6)
        first, final = log_pa[1:-1, 1] - log_pa[1:-1, 0], log_pa[1:-1, -1] - log_pa[1:-1, 0]
        assert np.mean(first > 0) >= 0.95 and np.mean(final > 0) >= 0.95, log_pa[1:, :, :4]
        assert np.mean(final) > np.mean(first) > 0


def test_zero_step_size_is_plain_sampling(lm, pplm):
    m, params, clf, clf_params = lm
    sample, _ = pplm
    key = jax.random.PRNGKey(3)
    plain = np.asarray(_plain_sampler(m)(params, key, N))
    toks, log_pa = sample(params, clf_params, key, N, 1, None, jnp.float32(0.0))
    np.testing.assert_array_equal(np.asarray(toks), plain)
    log_pa = np.asarray(log_pa)  # no perturbation, so every iterate scores the same
    np.testing.assert_allclose(log_pa, np.broadcast_to(log_pa[:, :1], log_pa.shape), atol=1e-6)
    assert len(set(map(tuple, plain.tolist()))) > 1  # the draws are random, not one fixed sequence
    steered, _ = sample(params, clf_params, key, N, 1, None, jnp.float32(1000.0))
    assert np.any(np.asarray(steered) != plain)  # a real step size changes the draws


def test_attribute_classifier_learns_a_separable_attribute():
    rng = np.random.default_rng(4)
    hidden = jnp.asarray(rng.normal(size=(400, 7, 5)), jnp.float32)
    mask = jnp.asarray(rng.random((400, 7)) < 0.8, jnp.float32).at[:, 0].set(1.0)
    pooled = mean_pool(hidden, mask)
    np.testing.assert_allclose(pooled[3], np.asarray(hidden[3])[np.asarray(mask[3]) > 0].mean(0), rtol=1e-5, atol=1e-6)
    labels = (pooled[:, 0] + pooled[:, 1] > 0).astype(jnp.int32)
    clf = AttributeClassifier(num_classes=2, hidden=8)
    p = train_attribute_classifier(clf, pooled, labels, jax.random.PRNGKey(5), steps=300, batch_size=64)
    acc = float(jnp.mean(jnp.argmax(clf.apply(p, pooled), -1) == labels))
    assert acc > 0.95


def test_bad_pplm_settings_raise():
    for kw, field in ((dict(step_size=-1.0), "step_size"), (dict(gm_scale=1.5), "gm_scale"),
                      (dict(horizon=2), "horizon"), (dict(kl_scale=-0.1), "kl_scale")):
        with pytest.raises(ValueError, match=field):
            PPLMConfig(**kw)
