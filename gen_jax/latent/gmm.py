"""Full-covariance Gaussian mixture fitted by expectation-maximization.

Model (Bishop 2006, PRML Eq. 9.7): ``p(x) = sum_k pi_k N(x; mu_k, Sigma_k)``.

EM (Dempster, Laird & Rubin 1977; PRML Sec. 9.2.2):

* E step (Eq. 9.23): ``gamma_nk = pi_k N(x_n; mu_k, Sigma_k) / sum_j pi_j N(x_n; mu_j, Sigma_j)``,
  computed as ``log gamma = log pi + log N - logsumexp`` from Cholesky factors
  ``Sigma_k = L_k L_k^T``: ``log N = -1/2 (D log 2 pi + 2 sum log diag L_k + ||L_k^{-1}(x - mu_k)||^2)``
  (triangular solves; no matrix is ever inverted).
* M step (Eqs. 9.24-9.27): ``N_k = sum_n gamma_nk``, ``mu_k = sum_n gamma_nk x_n / N_k``,
  ``Sigma_k = sum_n gamma_nk (x_n - mu_k)(x_n - mu_k)^T / N_k + reg_covar I``, ``pi_k = N_k / N``.
  ``reg_covar`` on the diagonal and ``N_k += 10 eps`` follow scikit-learn's
  ``GaussianMixture``, so from the same initialization both produce the same iterates.

Initialization: k-means++ seeding (Arthur & Vassilvitskii 2007) followed by Lloyd
iterations, or ``k`` distinct random data points as means; either way the first parameters
come from one M step on the hard assignments (as scikit-learn does). All randomness comes
from an explicit key. Every function works in the dtype of its inputs (float64 under
``jax.enable_x64``).
"""
from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Any, Literal, NamedTuple, Optional

import jax
import jax.numpy as jnp

from gen_jax import distributions as dist
from gen_jax.config import Checked, typed
from gen_jax.model import DataSpec, GenerativeModel, Likelihood, Sampler, update_training


class GMMParams(NamedTuple):
    """Mixture parameters: ``weights [K]``, ``means [K, D]``, ``covs [K, D, D]``."""

    weights: jax.Array
    means: jax.Array
    covs: jax.Array


def _check_x(x: jax.Array, params: Optional[GMMParams] = None) -> None:
    if x.ndim != 2:
        raise ValueError(f"GMM data must be [N, D], got shape {x.shape}")
    if params is not None and params.means.shape[-1] != x.shape[-1]:
        raise ValueError(f"GMM data has D={x.shape[-1]} but means are {params.means.shape}")


def component_log_probs(params: GMMParams, x: jax.Array) -> jax.Array:
    """``log N(x_n; mu_k, Sigma_k)`` for all pairs, ``[N, K]`` (via Cholesky factors)."""
    _check_x(x, params)
    d = x.shape[-1]
    chol = jnp.linalg.cholesky(params.covs)  # [K, D, D]

    def one(l, mu):
        sol = jax.scipy.linalg.solve_triangular(l, (x - mu).T, lower=True)  # [D, N]
        maha = jnp.sum(jnp.square(sol), axis=0)  # [N]
        logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(l)))
        return -0.5 * (d * math.log(2.0 * math.pi) + logdet + maha)

    return jax.vmap(one)(chol, params.means).T  # [N, K]


@jax.jit
def e_step(params: GMMParams, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """PRML Eq. 9.23 in log space.

    Args:
      params: current mixture.
      x: ``[N, D]``.

    Returns:
      ``(log_resp [N, K], log_lik [N])`` with ``log_lik = log p(x_n)``.
    """
    weighted = component_log_probs(params, x) + jnp.log(params.weights)[None]  # [N, K]
    log_lik = jax.nn.logsumexp(weighted, axis=1)
    return weighted - log_lik[:, None], log_lik


@jax.jit
def m_step(x: jax.Array, log_resp: jax.Array, reg_covar: float = 1e-6) -> GMMParams:
    """PRML Eqs. 9.24-9.27 with scikit-learn's regularization.

    Args:
      x: ``[N, D]``.
      log_resp: ``[N, K]`` log responsibilities (or log one-hot assignments).
      reg_covar: added to every covariance diagonal.

    Returns:
      new :class:`GMMParams`.
    """
    resp = jnp.exp(log_resp)
    n, d = x.shape
    nk = jnp.sum(resp, axis=0) + 10.0 * jnp.finfo(x.dtype).eps  # [K]
    means = (resp.T @ x) / nk[:, None]  # [K, D]
    diff = x[None] - means[:, None]  # [K, N, D]
    covs = jnp.einsum("kn,knd,kne->kde", resp.T, diff, diff) / nk[:, None, None]
    covs = covs + reg_covar * jnp.eye(d, dtype=x.dtype)
    covs = 0.5 * (covs + jnp.swapaxes(covs, -1, -2))  # exact symmetry for the Cholesky
    return GMMParams(weights=nk / n, means=means, covs=covs)


@jax.jit
def em_step(params: GMMParams, x: jax.Array, reg_covar: float = 1e-6) -> tuple[GMMParams, jax.Array]:
    """One EM iteration; returns ``(new_params, mean log-likelihood of x BEFORE the step)``."""
    log_resp, log_lik = e_step(params, x)
    return m_step(x, log_resp, reg_covar), jnp.mean(log_lik)


@jax.jit
def log_prob(params: GMMParams, x: jax.Array) -> jax.Array:
    """``log p(x_n)`` (nats), ``[N]`` for ``x [N, D]``."""
    return e_step(params, x)[1]


def sample(params: GMMParams, key: jax.Array, n: int) -> jax.Array:
    """``n`` draws ``[n, D]``: ``k ~ Cat(pi)``, ``x = mu_k + L_k eps`` (PRML Sec. 11.1.1:
    ancestral sampling; ``L_k`` the Cholesky factor of ``Sigma_k``)."""
    k_comp, k_eps = jax.random.split(key)
    comp = jax.random.categorical(k_comp, jnp.log(params.weights), shape=(n,))
    chol = jnp.linalg.cholesky(params.covs)
    eps = jax.random.normal(k_eps, (n, params.means.shape[-1]), params.means.dtype)
    return params.means[comp] + jnp.einsum("nde,ne->nd", chol[comp], eps)


# ----------------------------------------------------------------------------------------
# Initialization.
# ----------------------------------------------------------------------------------------


def _sq_dists(x: jax.Array, centers: jax.Array) -> jax.Array:
    """``||x_n - c_k||^2``, ``[N, K]``."""
    return (jnp.sum(x * x, 1)[:, None] - 2.0 * x @ centers.T + jnp.sum(centers * centers, 1)[None])


def kmeans_plusplus(key: jax.Array, x: jax.Array, k: int) -> jax.Array:
    """k-means++ seeding (Arthur & Vassilvitskii 2007, Sec. 2.2): the first center uniformly
    from the data, each next one with probability proportional to ``D(x)^2``, the squared
    distance to the nearest center chosen so far. Returns centers ``[k, D]``."""
    _check_x(x)
    n = x.shape[0]
    keys = jax.random.split(key, k)
    first = x[jax.random.randint(keys[0], (), 0, n)]
    centers = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(first)
    d2 = jnp.sum(jnp.square(x - first), axis=1)

    def body(i, carry):
        centers, d2 = carry
        logits = jnp.log(jnp.maximum(d2, 0.0) + jnp.finfo(x.dtype).tiny)
        idx = jax.random.categorical(keys[i], logits)
        c = x[idx]
        return centers.at[i].set(c), jnp.minimum(d2, jnp.sum(jnp.square(x - c), axis=1))

    centers, _ = jax.lax.fori_loop(1, k, body, (centers, d2))
    return centers


def kmeans(key: jax.Array, x: jax.Array, k: int, num_iters: int = 10) -> tuple[jax.Array, jax.Array]:
    """Lloyd's algorithm from k-means++ seeds; returns ``(centers [k, D], assignment [N])``.
    An empty cluster keeps its previous center."""
    centers = kmeans_plusplus(key, x, k)

    def body(_, centers):
        assign = jnp.argmin(_sq_dists(x, centers), axis=1)
        one_hot = jax.nn.one_hot(assign, k, dtype=x.dtype)  # [N, K]
        counts = one_hot.sum(0)
        new = (one_hot.T @ x) / jnp.maximum(counts, 1.0)[:, None]
        return jnp.where(counts[:, None] > 0, new, centers)

    centers = jax.lax.fori_loop(0, num_iters, body, centers)
    return centers, jnp.argmin(_sq_dists(x, centers), axis=1)


def init_params(key: jax.Array, x: jax.Array, num_components: int, reg_covar: float = 1e-6,
                method: str = "kmeans", kmeans_iters: int = 10) -> GMMParams:
    """Initial mixture from hard assignments (one M step on one-hot responsibilities).

    Args:
      key: PRNG key.
      x: ``[N, D]``.
      num_components: ``K``.
      reg_covar: covariance regularization.
      method: ``'kmeans'`` (k-means++ seeds then ``kmeans_iters`` Lloyd iterations; 0 iterations
        is plain k-means++) or ``'random'`` (``K`` distinct random data points as centers).
    """
    _check_x(x)
    if method == "kmeans":
        centers, _ = kmeans(key, x, num_components, kmeans_iters)
    elif method == "random":
        idx = jax.random.choice(key, x.shape[0], (num_components,), replace=False)
        centers = x[idx]
    else:
        raise ValueError(f"GMM init method must be 'kmeans' or 'random', got {method!r}")
    assign = jnp.argmin(_sq_dists(x, centers), axis=1)
    one_hot = jax.nn.one_hot(assign, num_components, dtype=x.dtype)
    log_resp = jnp.log(jnp.maximum(one_hot, jnp.finfo(x.dtype).tiny))
    return m_step(x, log_resp, reg_covar)


@partial(jax.jit, static_argnames=("num_components", "num_iters", "init", "kmeans_iters"))
def fit(key: jax.Array, x: jax.Array, num_components: int, num_iters: int,
        reg_covar: float = 1e-6, init: str = "kmeans", kmeans_iters: int = 10,
        params_init: Optional[GMMParams] = None) -> tuple[GMMParams, jax.Array]:
    """Fits a mixture by ``num_iters`` EM steps under ``lax.scan``.

    Args:
      key: PRNG key for the initialization (unused when ``params_init`` is given).
      x: ``[N, D]`` data.
      num_components: ``K``.
      num_iters: EM iterations.
      reg_covar: covariance regularization.
      init: ``'kmeans'`` or ``'random'`` (see :func:`init_params`).
      params_init: start from these parameters instead.

    Returns:
      ``(params, trace)``: final parameters and ``trace [num_iters]``, the mean
      log-likelihood before each step (non-decreasing, Dempster et al. 1977, Thm. 1).
    """
    params = params_init if params_init is not None else init_params(
        key, x, num_components, reg_covar, init, kmeans_iters)

    def step(p, _):
        return em_step(p, x, reg_covar)

    return jax.lax.scan(step, params, None, length=num_iters)


# ----------------------------------------------------------------------------------------
# The model bundle.
# ----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GMMConfig(Checked):
    """``config.model`` of a GMM.

    Attributes:
      name: model name.
      num_components: ``K``.
      reg_covar: added to covariance diagonals (data on ``[0, 1)``).
      init: ``'kmeans'`` (k-means++ + Lloyd) or ``'random'`` (random data points).
      kmeans_iters: Lloyd iterations after k-means++ seeding.
    """

    name: str = "gmm"
    num_components: int = 10
    reg_covar: float = 1e-6
    init: Literal["kmeans", "random"] = "kmeans"
    kmeans_iters: int = 10

    def __post_init__(self):
        self.positive("num_components")
        self.nonnegative("reg_covar", "kmeans_iters")


def _as_params(p: Any) -> GMMParams:
    return GMMParams(p["weights"], p["means"], p["covs"])


def make_gmm(cfg: Any, info: Any) -> GenerativeModel:
    """A GMM on uniformly dequantized, flattened images as a :class:`GenerativeModel`.

    The model's density is over ``y = (level + u) / K`` flattened to ``[B, D]`` (a density on
    ``R^D``; its restriction to ``[0, 1)^D`` is what the bpd convention needs, so the
    likelihood is exact, kind ``'exact'``, up to the Monte Carlo dequantization noise).

    * ``training``: one gradient-free phase (:func:`gen_jax.model.update_training`):
      ``init(key, batch)`` runs k-means++ (+ Lloyd) on the dequantized batch and one M step;
      ``update(params, batch, key)`` is one EM step on the batch, freshly dequantized with
      ``key`` (the train loop feeds the whole train set as one batch for this model);
      metrics ``loglik`` (mean log density before the step).
    * ``likelihood.log_prob(params, batch, key)``: ``[B]`` log density of the dequantized batch.
    * ``sampler.sample(params, key, num)``: ``[num, H, W, C]``, draws quantized back to the
      levels (``floor(y K)`` clipped to ``0..K-1``, divided by ``K - 1``).

    Params are a dict ``{'weights', 'means', 'covs'}`` (see :class:`GMMParams`).
    """
    cfg = typed(GMMConfig, cfg, "config.model")
    h, w, c = tuple(info.image_shape)
    k_levels = int(info.num_levels)
    d = h * w * c

    def flat_y(key, batch):
        img = batch["image"]
        if img.shape[1:] != (h, w, c):
            raise ValueError(f"batch['image'] must be [B, {h}, {w}, {c}], got {img.shape}")
        return dist.dequantize(key, img, k_levels).reshape(img.shape[0], d)

    def init(key, batch):
        k_deq, k_init = jax.random.split(key)
        y = flat_y(k_deq, batch)
        return init_params(k_init, y, cfg.num_components, cfg.reg_covar, cfg.init,
                           cfg.kmeans_iters)._asdict()

    def update(params, batch, key):
        new, ll = em_step(_as_params(params), flat_y(key, batch), cfg.reg_covar)
        return new._asdict(), {"loglik": ll}

    def log_prob_fn(params, batch, key):
        return log_prob(_as_params(params), flat_y(key, batch))

    def sample_fn(params, key, num, cond=None):
        y = sample(_as_params(params), key, num)
        return dist.quantize(y, k_levels).reshape(num, h, w, c).astype(jnp.float32)

    return GenerativeModel(name=cfg.name, family="latent", training=update_training(init, update),
                           sampler=Sampler(sample_fn, "image"),
                           likelihood=Likelihood(log_prob_fn, "exact"),
                           data=DataSpec((h, w, c), k_levels))
