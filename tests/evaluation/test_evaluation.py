"""gen_jax.evaluation against hand computations on fake models: bits/dim (the README
convention), bits per token with counts, dispatch on the capabilities, batched sampling."""
import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.evaluation.evaluate import evaluate_params, has_image_metrics
from gen_jax.evaluation.likelihood import split_bits_per_token, split_bpd
from gen_jax.evaluation.sampling import sample_in_batches
from gen_jax.model import GenerativeModel, Likelihood, Sampler, label_conditioning, loss_training


class Info:
    image_shape = (2, 2, 1)
    num_levels = 5
    num_classes = 3


def _arrays(n=7):
    rng = np.random.default_rng(0)
    return {"image": rng.integers(0, 5, size=(n, 2, 2, 1)).astype(np.uint8),
            "label": (np.arange(n) % 3).astype(np.int32)}


def _model(unit="dim", kind="image"):
    def log_prob(params, batch, key):  # a per-example value known in closed form
        return -jnp.sum(batch["image"], axis=(1, 2, 3)) - params["c"]

    def sample(params, key, num, cond=None):
        return jnp.broadcast_to(cond["label"][:, None, None, None] / 4.0, (num, 2, 2, 1))

    lik = Likelihood(log_prob, "exact", unit=unit, count=(lambda b: jnp.full(b["image"].shape[:1], 4.0)) if unit == "token" else None)
    return GenerativeModel(name="fake", family="latent", training=loss_training(lambda k, b: {}, lambda p, b, k: (0.0, {})),
                           sampler=Sampler(sample, kind), likelihood=lik, conditioning=label_conditioning(3))


def test_bpd_is_the_stated_convention_over_every_example():
    arrays, params = _arrays(), {"c": 1.5}
    x = arrays["image"].astype(np.float64) / 4
    lp = -x.reshape(7, -1).sum(1) - 1.5
    want = np.mean((-lp + 4 * np.log(5)) / (4 * np.log(2)))
    got = split_bpd(_model(), params, arrays, Info, jax.random.PRNGKey(0), batch_size=3)  # 7 = 3 + 3 + 1 (padded)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert split_bits_per_token(_model(), params, arrays, Info, jax.random.PRNGKey(0), 3) is None


def test_bits_per_token_divides_by_the_counted_tokens():
    arrays, params = _arrays(), {"c": 0.0}
    x = arrays["image"].astype(np.float64) / 4
    want = x.sum() / (4 * 7) / np.log(2)
    m = _model(unit="token", kind="tokens")
    np.testing.assert_allclose(split_bits_per_token(m, params, arrays, Info, jax.random.PRNGKey(0), 4), want, rtol=1e-6)
    assert split_bpd(m, params, arrays, Info, jax.random.PRNGKey(0), 4) is None
    assert not has_image_metrics(m) and has_image_metrics(_model())


def test_sampling_in_batches_keeps_conditions_in_order():
    m = _model()
    cond = m.conditioning.draw(7)
    x = sample_in_batches(m, {"c": 0.0}, jax.random.PRNGKey(0), 7, 3, cond)
    assert x.shape == (7, 2, 2, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0, 0, 0], (np.arange(7) % 3) / 4.0)


def test_evaluate_params_without_image_sampler_reports_likelihood_only():
    m = _model(unit="token", kind="tokens")
    ev = evaluate_params(m, {"c": 0.0}, Info, _arrays(), extractor=None, num_samples=5, batch_size=4)
    assert ev.samples is None and ev.metrics["bpd_kind"] is None and "test_bits_per_token" in ev.metrics


def _flat_extractor():
    from gen_jax.metrics.features import FeatureExtractor

    def apply(params, x):
        f = x.reshape(x.shape[0], -1)
        return jnp.stack([f[:, 0], -f[:, 0], f[:, 1]], -1), f
    return FeatureExtractor(jax.jit(apply), {}, batch_size=8)


def test_sample_scorer_equals_scoring_its_own_draw_and_is_deterministic():
    from gen_jax.evaluation.evaluate import make_sample_scorer
    from gen_jax.evaluation.likelihood import images01
    from gen_jax.metrics.features import score_samples

    m, ref, ext = _model(), _arrays(20), _flat_extractor()
    scorer = make_sample_scorer(m, Info, ref, ext, num=12, batch_size=5, seed=3)
    got = scorer({"c": 0.0})
    assert got == scorer({"c": 0.0})
    x = sample_in_batches(m, {"c": 0.0}, jax.random.fold_in(jax.random.PRNGKey(3), 5), 12, 5, m.conditioning.draw(12, ref))
    want = score_samples(x, images01(ref, Info.num_levels), ext, seed=3, kid_subset_size=12, kid_num_subsets=20)
    assert set(got) == {"fid", "kid", "precision", "recall", "class_kl"}
    for k in got:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-9)


def test_evaluate_params_memorization_check_with_the_train_split():
    m, ext = _model(), _flat_extractor()
    test, train = _arrays(9), {k: v[::-1] ^ 1 for k, v in _arrays(30).items()}
    ev = evaluate_params(m, {"c": 0.0}, Info, test, ext, num_samples=6, batch_size=3, likelihood=False, train=train)
    assert {"nn_train_sample", "nn_train_test", "nn_train_ratio"} <= set(ev.metrics)
    np.testing.assert_allclose(ev.metrics["nn_train_ratio"], ev.metrics["nn_train_sample"] / ev.metrics["nn_train_test"])
