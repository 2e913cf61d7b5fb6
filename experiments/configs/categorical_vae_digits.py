"""Categorical VAE on digits: 20 latents of 10 classes, encoder gradients by REINFORCE (NVIL) or Gumbel-softmax.

    python -m experiments.train --config experiments/configs/categorical_vae_digits.py --workdir runs/categorical_vae_digits
    python -m experiments.train --config experiments/configs/categorical_vae_digits.py \
        --workdir runs/categorical_vae_digits_gumbel --config.model.estimator=gumbel
    python -m experiments.benchmarks.discrete_vae_estimators

``config.model.estimator`` is ``'reinforce'`` (score function with NVIL's input-dependent
baseline, moving-average centring and variance normalisation; Mnih & Gregor 2014, Sec. 3) or
``'gumbel'`` (the Gumbel-softmax relaxation, temperature 1 -> 0.5 exponentially over the run;
Jang et al. 2017). MLP 256-256 encoder/decoder, discretized logistic-mixture decoder over the
17 levels, the ELBO with the KL to the uniform prior in closed form (gen_jax.latent.categorical_vae).

Measured figures: see experiments/benchmarks/discrete_vae_estimators.py.
"""
import ml_collections

from experiments.configs.base import get_base_config


def get_config():
    c = get_base_config()
    c.model = ml_collections.ConfigDict(dict(name="categorical_vae", estimator="reinforce", num_latents=20,
                                             num_classes=10, likelihood="logistic_mixture", tau_steps=3000))
    c.optim.schedule = "cosine"
    c.train.steps = 3000
    c.train.log_every = 250
    c.train.ckpt_every = 3000
    c.train.sample_every = 3000
    return c
