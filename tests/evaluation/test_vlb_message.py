"""A variational-bound evaluation announces its size before the long wait; other kinds print
nothing, and the numbers are those of split_log_probs."""
import types

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.diffusion.schedules import linear_betas
from gen_jax.evaluation.likelihood import split_bpd, split_log_probs
from gen_jax.model import Denoiser, GenerativeModel, Likelihood, loss_training


class _Sched:
    betas = np.asarray(linear_betas(7))


def _model(kind):
    log_prob = lambda params, batch, key: -jnp.sum(batch["image"], axis=(1, 2, 3))
    den = Denoiser(denoise=None, schedule=_Sched(), guided=None, make_sampler=None) if kind == "vlb" else None
    return GenerativeModel(name="stub", family="diffusion", training=loss_training(lambda k, b: {}, lambda p, b, k: 0.0),
                           likelihood=Likelihood(log_prob, kind), denoiser=den)


def test_vlb_prints_images_times_terms_and_exact_prints_nothing(capsys):
    arrays = {"image": np.arange(5 * 4, dtype=np.uint8).reshape(5, 2, 2, 1) % 3}
    info = types.SimpleNamespace(image_shape=(2, 2, 1), num_levels=3)  # what split_bpd reads
    key = jax.random.PRNGKey(0)
    got = split_bpd(_model("vlb"), {}, arrays, info, key, batch_size=2)
    assert capsys.readouterr().out == ("computing the variational bound: 5 test images x 7 terms (one network "
                                       "pass per term and image, in batches of 2) ...\n")
    assert split_bpd(_model("exact"), {}, arrays, info, key, batch_size=2) == got
    assert capsys.readouterr().out == ""
    lp = split_log_probs(_model("exact"), {}, arrays, 3, key, 2)
    np.testing.assert_allclose(lp, -arrays["image"].reshape(5, -1).sum(1).astype(np.float64) / 2.0)
