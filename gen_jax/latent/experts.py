"""The expert algebra of multimodal VAEs: products and mixtures of diagonal Gaussian experts.

Each modality ``m`` observed for an example contributes an *expert* ``q_m(z | x_m) =
N(mu_m, diag sigma_m^2)`` over the shared latent ``z [Z]``; the joint posterior combines the
experts of the observed modalities.

* :func:`product_of_experts` (Wu & Goodman 2018, Sec. 2, "Product-of-experts"; their Eq. 2
  and Sec. 3, the Gaussian case): with a prior expert ``p(z) = N(0, I)``,

      q(z | X) propto p(z) prod_{m in X} q_m(z | x_m) = N(mu, diag sigma^2),
      T_m = 1 / sigma_m^2,   sigma^2 = 1 / (1 + sum_m T_m),   mu = sigma^2 sum_m T_m mu_m,

  the precision-weighted product; a missing modality is simply left out of the product
  (``mask[m] = 0``), so with nothing observed the product is the prior itself.
* :func:`mixture_log_prob` (Shi et al. 2019, Sec. 3, "Mixture of experts"): the uniform
  mixture ``q(z | X) = (1 / M) sum_m q_m(z | x_m)`` over the observed experts.
* :func:`stratified_iwae` (Shi et al. 2019, Eq. 3 / Eq. 4): the stratified importance-weighted
  bound ``(1 / M) sum_m log (1 / K) sum_k w(z_m^k)``, ``z_m^k ~ q_m``, from log-weights
  ``[M, K, B]`` (``K = 1`` is the stratified ELBO; DReG is not implemented).

Shapes: experts are stacked on a leading axis, ``means, log_vars [M, B, Z]``, ``mask [M, B]``
(1 = observed); ``z [..., B, Z]``.
"""
from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp

from gen_jax import distributions as dist


def _check_experts(means: jax.Array, log_vars: jax.Array, mask: Optional[jax.Array]) -> None:
    if means.ndim != 3 or means.shape != log_vars.shape:
        raise ValueError(f"experts: means and log_vars must both be [M, B, Z], got {means.shape} and "
                         f"{log_vars.shape}")
    if mask is not None and tuple(mask.shape) != tuple(means.shape[:2]):
        raise ValueError(f"experts: mask must be [M, B] = {list(means.shape[:2])}, got {mask.shape}")


def product_of_experts(means: jax.Array, log_vars: jax.Array, mask: Optional[jax.Array] = None,
                       prior_expert: bool = True) -> tuple[jax.Array, jax.Array]:
    """The precision-weighted product of Gaussian experts (Wu & Goodman 2018, Sec. 2-3).

    Args:
      means, log_vars: ``[M, B, Z]`` of the experts ``q_m(z | x_m)``.
      mask: ``[M, B]``, 1 where modality ``m`` of example ``b`` is observed, 0 where it is
        missing (left out of the product); ``None``: all observed.
      prior_expert: include the prior expert ``N(0, I)`` (precision 1, mean 0). Without it a
        row with no observed expert has no product (``ValueError`` is not raised inside jit;
        such a row gets zero precision, so callers keep ``prior_expert=True`` unless every row
        observes some modality).

    Returns:
      ``(mean, log_var)``, each ``[B, Z]``, of the normalised product.
    """
    _check_experts(means, log_vars, mask)
    precision = jnp.exp(-log_vars)  # T_m = 1 / sigma_m^2
    if mask is not None:
        precision = precision * mask[..., None].astype(precision.dtype)
    total = jnp.sum(precision, axis=0) + (1.0 if prior_expert else 0.0)  # prior precision 1, mean 0
    mean = jnp.sum(precision * means, axis=0) / total
    return mean, -jnp.log(total)


def expert_log_probs(z: jax.Array, means: jax.Array, log_vars: jax.Array) -> jax.Array:
    """``log q_m(z)`` of every expert: ``z [..., B, Z]`` -> ``[..., M, B]``."""
    return dist.gaussian_log_prob(z[..., None, :, :], means, log_vars)


def mixture_log_prob(z: jax.Array, means: jax.Array, log_vars: jax.Array,
                     mask: Optional[jax.Array] = None) -> jax.Array:
    """``log (1 / |X|) sum_{m in X} q_m(z)`` of the uniform mixture of the observed experts
    (Shi et al. 2019, Sec. 3): ``z [..., B, Z]`` -> ``[..., B]``.

    ``mask [M, B]`` leaves missing experts out (and divides by the number observed, which
    must be >= 1 per row); ``None``: all ``M`` experts.
    """
    _check_experts(means, log_vars, mask)
    lp = expert_log_probs(z, means, log_vars)  # [..., M, B]
    if mask is None:
        return jax.nn.logsumexp(lp, axis=-2) - math.log(means.shape[0])
    m = mask.astype(lp.dtype)
    lp = jnp.where(m > 0, lp, -jnp.inf)
    return jax.nn.logsumexp(lp, axis=-2) - jnp.log(jnp.sum(m, axis=0))


def stratified_iwae(log_weights: jax.Array) -> jax.Array:
    """Shi et al. 2019, Eq. 3 (the stratified IWAE of the mixture posterior):

        L(X) = (1 / M) sum_m log (1 / K) sum_k p(z_m^k, X) / q(z_m^k | X),  z_m^k ~ q_m(z | x_m),

    with ``q`` the uniform mixture. ``log_weights [M, K, B]`` -> ``[B]`` nats. It lower-bounds
    ``log p(X)``: by Jensen each stratum is at most ``log E_{q_m}[p / q] = log int (q_m / q) p``,
    and the mean over ``m`` of those logs is at most ``log int ((1/M) sum_m q_m / q) p = log p(X)``.
    ``K = 1`` is the ELBO of the mixture posterior, ``E_q[log p(z, X) - log q(z | X)]``,
    estimated with one draw per expert (stratified sampling of the mixture).
    """
    if log_weights.ndim != 3:
        raise ValueError(f"stratified_iwae: log_weights must be [M, K, B], got {log_weights.shape}")
    k = log_weights.shape[1]
    return jnp.mean(jax.nn.logsumexp(log_weights, axis=1) - math.log(k), axis=0)
