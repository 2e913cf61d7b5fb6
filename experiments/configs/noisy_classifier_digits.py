"""Noise-aware digits classifier p_phi(y | x_t, t) for classifier guidance of ddpm_digits.

    python -m experiments.train --config experiments/configs/noisy_classifier_digits.py --workdir runs/noisy_classifier_digits

Dhariwal & Nichol 2021, Sec. 4: cross-entropy on x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps,
t ~ U{0..T-1}, with the forward process of experiments/configs/ddpm_digits.py (T = 1000,
linear betas 1e-4..0.02; guidance checks that the two configs agree). A small conv net
(8x8 -> 4x4, channels 32, 64) with the sinusoidal time embedding added at every stage.
`accuracy` averages over all noise levels (near chance for large t); `accuracy_low_noise`
over t < 500. Guide a DDPM with gen_jax.diffusion.classifier_guidance.make_classifier_guided_sampler.

Measured: a 200-step smoke run (13 s on 2 CPU cores, ~60 steps/s after compiling) reached
loss 1.58, accuracy 0.41, accuracy_low_noise 0.68; the full 3000 steps have not been run yet.
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.seed = 7
    c.model = ml_collections.ConfigDict(dict(name="noisy_classifier"))
    c.optim.learning_rate = 1e-3
    c.optim.schedule = "cosine"
    c.optim.warmup_steps = 100
    c.train.steps = 3000
    c.train.batch_size = 128
    c.train.log_every = 100
    c.train.ckpt_every = 1000
    return c
