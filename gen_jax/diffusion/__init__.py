"""Diffusion models: schedules, the Gaussian forward/reverse process and its losses (DDPM,
improved DDPM), score SDEs (VP, sub-VP, VE), scan samplers (DDPM, DDIM, predictor-corrector,
probability-flow ODE) and the probability-flow ODE likelihood.

Modules are imported explicitly (``from gen_jax.diffusion import samplers``); none of them
knows a network: a denoiser is any ``model_fn(x_t [B, H, W, C], t [B], cond) -> out``.
"""
