"""Classifier guidance with a noise-aware classifier (Dhariwal & Nichol 2021, Sec. 4).

Given an eps-prediction diffusion model ``eps_theta(x_t, t)`` and a classifier
``p_phi(y | x_t, t)`` trained on the same forward process
(:mod:`gen_jax.diffusion.noisy_classifier`), guidance with scale ``s >= 0`` replaces the
noise prediction by (Dhariwal & Nichol 2021, Sec. 4.2, Eq. 14 and Algorithm 2)

    eps_hat(x_t, t) = eps_theta(x_t, t) - s sqrt(1 - abar_t) grad_{x_t} log p_phi(y | x_t, t).

Since ``eps = -sqrt(1 - abar_t) grad log p_t(x_t)`` (Song et al. 2021, Eq. 7 / D&N Eq. 11),
``eps_hat`` is the noise prediction of the tilted marginal ``p_t(x_t) p_phi(y | x_t)^s``, whose
score is ``grad log p_t(x_t) + s grad log p_phi(y | x_t)``; ``s = 1`` targets ``p_t(x_t | y)``.

Both samplers use this eps form:

* ``'ddim'`` -- DDIM (Song, Meng & Ermon 2021, Eq. 12) on ``eps_hat``: exactly D&N Algorithm 2.
* ``'ddpm'`` -- ancestral sampling (Ho et al. 2020, Alg. 2) on ``eps_hat``. Through the eps-form
  mean ``mu = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(a_t)`` (Ho et al., Eq. 11) this
  shifts the mean by ``s (beta_t / sqrt(a_t)) g``, ``g = grad log p_phi(y | x_t)``: D&N
  Algorithm 1 (``mu + s Sigma g``) with ``Sigma = beta_t / sqrt(a_t)`` in place of the
  sampler's variance (``beta_t`` for ``fixed_large``, ``beta~_t <= beta_t`` for
  ``fixed_small``; ``1 / sqrt(a_t) <= 1.01`` for the linear 1e-4..0.02 schedule). Deviation:
  with ``clip_x0`` the shift is applied before clipping ``x0_hat``, where D&N's code shifts
  the clipped mean.

The core, :func:`classifier_guided_model_fn`, takes plain callables (any ``model_fn`` and
``log_prob_fn``), so it is tested with analytic Gaussian models; the gradient is ``jax.grad``
of the batch sum of ``log p_phi(y | x_t)`` (per-example gradients for classifiers without
cross-example interaction), inside the sampler's ``lax.scan``.
:func:`make_classifier_guided_sampler` wires a DDPM's :class:`gen_jax.model.Denoiser` (its
``make_sampler`` with a ``guide``) and a noise-aware classifier's
:class:`gen_jax.diffusion.noisy_classifier.NoisyClassifierParts`.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from gen_jax.config import ConfigError
from gen_jax.diffusion import gaussian_diffusion as gd
from gen_jax.diffusion import samplers
from gen_jax.diffusion.model import SAMPLERS
from gen_jax.diffusion.noisy_classifier import NoisyClassifierParts, check_same_process
from gen_jax.diffusion.schedules import Schedule
from gen_jax.model import Denoiser


def _check_scale(scale) -> float:
    return samplers.check_nonneg(scale, "guidance scale")


def classifier_log_prob_grad(log_prob_fn: Callable, x_t: jax.Array, t: jax.Array, ctx: Any) -> jax.Array:
    """``grad_{x_t} log p(y | x_t, t)`` ``[B, ...]`` for ``log_prob_fn(x_t, t, ctx) -> [B]``
    (``y`` lives in ``ctx``), as ``jax.grad`` of the batch sum (examples must not interact)."""
    def total(x):
        lp = log_prob_fn(x, t, ctx)
        if lp.shape != x.shape[:1]:
            raise ValueError(f"log_prob_fn must return [B={x.shape[0]}], got shape {lp.shape}")
        return jnp.sum(lp)

    return jax.grad(total)(x_t)


def classifier_guided_model_fn(model_fn: Callable, log_prob_fn: Callable, schedule: Schedule,
                               scale: float, *, var_type: str = "fixed_small") -> Callable:
    """The guided noise prediction (Dhariwal & Nichol 2021, Eq. 14 / Alg. 2) as a ``model_fn``
    for :mod:`gen_jax.diffusion.samplers`:

        eps_hat = eps_theta(x_t, t) - s sqrt(1 - abar_t) grad_{x_t} log p_phi(y | x_t, t).

    Args:
      model_fn: ``(x_t [B, ...], t int32 [B], ctx) -> eps [B, ...]`` (``[B, ..., 2C]`` with
        variance channels for ``var_type='learned_range'``; they pass through unchanged).
      log_prob_fn: ``(x_t [B, ...], t int32 [B], ctx) -> log p_phi(y | x_t, t) [B]``; the
        target labels ``y`` come through ``ctx`` (the samplers' ``cond`` or ``(params, cond)``).
      schedule: the schedule both models were trained with (``abar_t``).
      scale: ``s >= 0`` (``0`` returns ``model_fn``'s output unchanged).

    Returns:
      ``guided(x_t, t, ctx)`` with the shape of ``model_fn``'s output.
    """
    s = _check_scale(scale)
    if var_type not in gd.VAR_TYPES:
        raise ValueError(f"var_type must be one of {gd.VAR_TYPES}, got {var_type!r}")

    def guided(x_t, t, ctx):
        out = model_fn(x_t, t, ctx)
        eps, var = gd.split_model_output(out, x_t, var_type)
        if s == 0.0:
            return out
        g = classifier_log_prob_grad(log_prob_fn, x_t, t, ctx)  # [B, ...]
        eps_hat = eps - s * gd.extract(schedule.sqrt_one_minus_alpha_bars, t, x_t.ndim) * g
        return eps_hat if var is None else jnp.concatenate([eps_hat, var], axis=-1)

    return guided


def make_classifier_guided_sampler(denoiser: Denoiser, classifier: NoisyClassifierParts, scale: float,
                                   sampler: str = "ddim", steps: int = 0, eta: float = 0.0, *,
                                   clip_x0: bool | None = None) -> Callable:
    """A DDPM (:func:`gen_jax.diffusion.model.make_ddpm`) guided by a noise-aware classifier
    (:func:`gen_jax.diffusion.noisy_classifier.build_noisy_classifier`), Dhariwal & Nichol
    2021, Eq. 14 (module docstring for ``'ddim'`` vs ``'ddpm'``).

    Args:
      denoiser: the DDPM's ``model.denoiser``: must be eps-parameterized and built on the
        classifier's forward process; its ``make_sampler`` runs the guided denoiser (the
        DDPM's own variance and clipping settings; class-conditional DDPMs also receive the
        labels, without classifier-free guidance).
      classifier: the noise-aware classifier's parts, built on the same dataset info.
      scale: guidance scale ``s >= 0``.
      sampler: ``'ddim'`` (Alg. 2) or ``'ddpm'`` (ancestral, Alg. 1 in eps form).
      steps: DDIM steps ``S`` (``0`` = ``T``); ``'ddpm'`` always runs all ``T`` steps.
      eta: DDIM ``eta``.
      clip_x0: clip ``x0_hat`` to ``[-1, 1]`` (default: the DDPM config's ``clip_x0``).

    Returns:
      ``sample(ddpm_params, classifier_params, key, num, labels) -> [num, H, W, C]`` float32
      in ``[0, 1]`` on the ``K`` levels, ``labels`` int ``[num]`` in ``0..num_classes-1``.
      Jitted once per ``num``; both models' params are arguments, not constants.

    Raises:
      ConfigError naming ``config.model.<field>``: non-eps parameterization, process fields
      that differ. ValueError: bad scale, sampler, steps.
    """
    if denoiser.parameterization != "eps":
        raise ConfigError(f"config.model.parameterization: classifier guidance (Dhariwal & Nichol "
                          f"2021, Eq. 14) shifts the eps prediction; the DDPM predicts "
                          f"{denoiser.parameterization!r}, need 'eps'")
    schedule = denoiser.schedule
    check_same_process(schedule, classifier.config)
    s = _check_scale(scale)
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    big_t = schedule.num_timesteps
    if sampler == "ddpm" and steps not in (0, big_t):
        raise ValueError(f"steps={steps}: ancestral 'ddpm' sampling runs all T={big_t} steps "
                         f"(use steps=0 or sampler='ddim')")
    num_classes = classifier.num_classes

    def core(params, key, labels, num):
        def log_prob_fn(x_t, t, ctx):
            _, cond = ctx
            return classifier.log_prob_y(params["classifier"], x_t, t, cond["label"])

        guide = lambda model_fn, var_type: classifier_guided_model_fn(model_fn, log_prob_fn, schedule, s,
                                                                      var_type=var_type)
        sample = denoiser.make_sampler(sampler, steps, eta, 0.0, clip_x0=clip_x0, guide=guide)
        return sample(params["ddpm"], key, num, {"label": labels})  # [num, H, W, C] on the levels

    jitted = jax.jit(core, static_argnums=3)

    def sample(ddpm_params, classifier_params, key, num: int, labels):
        if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 1:
            raise ValueError(f"num must be a positive int, got {num!r}")
        labels = jnp.asarray(labels)
        if labels.shape != (num,) or not jnp.issubdtype(labels.dtype, jnp.integer):
            raise ValueError(f"labels must be int [num={num}], got {labels.dtype} of shape {labels.shape}")
        if not isinstance(labels, jax.core.Tracer):
            lo, hi = int(jnp.min(labels)), int(jnp.max(labels))
            if lo < 0 or hi >= num_classes:
                raise ValueError(f"labels must lie in [0, {num_classes - 1}], got min {lo}, max {hi}")
        params = {"ddpm": ddpm_params, "classifier": classifier_params}
        return jitted(params, key, labels.astype(jnp.int32), int(num))

    return sample
