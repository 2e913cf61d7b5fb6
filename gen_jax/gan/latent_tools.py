"""Latent-space tools for GANs and any generator ``z -> x``: interpolation, inversion and
semantic directions.

The tools take the generator as a pure function ``generate(z [N, Z]) -> x [N, ...]`` (for a
gen_jax GAN, e.g. ``lambda z: players.generate(p, state, z, label, train=False)[0]``); it must
act on each example independently (batch norm in inference mode), and where weights are
needed they are passed as an explicit matrix.

* Interpolation: :func:`lerp`, :func:`slerp` (Shoemake 1985; recommended for Gaussian latents
  by White 2016, "Sampling Generative Networks", Sec. 2.1) and :func:`interpolation_grid`.
* Inversion: :func:`invert` finds ``z`` with ``generate(z) ~ x`` by gradient descent on the
  reconstruction error (Zhu et al. 2016, "Generative Visual Manipulation on the Natural Image
  Manifold", Sec. 3.1; Creswell & Bharath 2018, "Inverting the Generator of a Generative
  Adversarial Network"), from a caller-given start (random draws, or an encoder's output:
  the hybrid of Zhu et al. 2016, Sec. 3.1).
* Directions: :func:`probe_direction` (a supervised linear probe, the least-squares analogue
  of InterFaceGAN's SVM boundary, Shen et al. 2020, Sec. 2), :func:`closed_form_directions`
  (unsupervised, SeFa: Shen & Zhou 2021, Eq. 5-6) and :func:`edit_grid` to render edits
  ``z + alpha n``.
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Tuple

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
Generator = Callable[[Array], Array]

_DEGENERATE_SIN = 1e-4  # below this sin(omega), slerp and lerp agree to ~1e-9 relative


# ----------------------------------------------------------------------------- checks

def _float(x, name: str, ndim: int, what: str) -> Array:
    """``x`` as a float array of rank ``ndim``; otherwise a ``ValueError`` naming ``name``."""
    x = jnp.asarray(x)
    if x.ndim != ndim:
        raise ValueError(f"{name} must be {what}, got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    return x


def _positive_int(v, name: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or int(v) != v or v < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _endpoints(z0, z1, ts, fn: str) -> Tuple[Array, Array, Array]:
    z0 = _float(z0, "z0", 1, "[Z]")
    z1 = _float(z1, "z1", 1, "[Z]")
    if z0.shape != z1.shape:
        raise ValueError(f"{fn}: z0 {z0.shape} and z1 {z1.shape} must have the same shape [Z]")
    dtype = jnp.result_type(z0, z1)
    ts = _float(ts, "ts", 1, "[T]").astype(dtype)
    return z0.astype(dtype), z1.astype(dtype), ts


# ----------------------------------------------------------------------------- interpolation

def lerp(z0: Array, z1: Array, ts: Array) -> Array:
    """Linear interpolation ``(1 - t) z0 + t z1``: ``z0, z1 [Z]``, ``ts [T]`` -> ``[T, Z]``."""
    z0, z1, ts = _endpoints(z0, z1, ts, "lerp")
    t = ts[:, None]
    return (1.0 - t) * z0 + t * z1


def slerp(z0: Array, z1: Array, ts: Array) -> Array:
    """Spherical linear interpolation (Shoemake 1985; White 2016, Sec. 2.1)::

        slerp(z0, z1; t) = sin((1 - t) w) / sin(w) z0 + sin(t w) / sin(w) z1

    with ``w`` the angle between ``z0`` and ``z1``. ``z0, z1 [Z]``, ``ts [T]`` -> ``[T, Z]``.
    For endpoints of equal norm the path stays on their sphere at constant angular speed
    (``angle(z0, z(t)) = t w``). ``w`` is computed as ``2 atan2(|u0 - u1|, |u0 + u1|)`` of the
    unit vectors (accurate for small angles, where ``arccos`` of the cosine is not). When
    ``sin(w)`` is ~0 (parallel or antipodal endpoints, a zero endpoint) the path is
    :func:`lerp` (finite, no NaN).
    """
    z0, z1, ts = _endpoints(z0, z1, ts, "slerp")
    tiny = jnp.finfo(z0.dtype).tiny
    n0, n1 = jnp.linalg.norm(z0), jnp.linalg.norm(z1)
    u0, u1 = z0 / jnp.maximum(n0, tiny), z1 / jnp.maximum(n1, tiny)
    w = 2.0 * jnp.arctan2(jnp.linalg.norm(u0 - u1), jnp.linalg.norm(u0 + u1))
    sin_w = jnp.sin(w)
    degenerate = (sin_w < _DEGENERATE_SIN) | (jnp.minimum(n0, n1) < tiny)
    safe = jnp.where(degenerate, 1.0, sin_w)
    t = ts[:, None]
    a = jnp.where(degenerate, 1.0 - t, jnp.sin((1.0 - t) * w) / safe)
    b = jnp.where(degenerate, t, jnp.sin(t * w) / safe)
    return a * z0 + b * z1


def interpolation_grid(generate: Generator, key: Array, num_rows: int, num_steps: int, z_dim: int,
                       kind: str = "slerp") -> Tuple[Array, Array]:
    """Images along ``num_rows`` interpolation paths between random latents.

    Row ``r`` runs, in ``num_steps`` evenly spaced ``t in [0, 1]`` (endpoints included), from
    ``za[r]`` to ``zb[r]`` with ``za, zb = jax.random.normal(key, (2, num_rows, z_dim))``
    (``N(0, I)`` draws), by :func:`slerp` (``kind='slerp'``, White 2016, Sec. 2.1) or
    :func:`lerp` (``kind='linear'``).

    Returns ``(images [num_rows * num_steps, ...], latents [num_rows, num_steps, z_dim])``,
    image ``r * num_steps + s`` being ``generate(latents[r, s])`` (row-major).
    """
    num_rows = _positive_int(num_rows, "num_rows")
    num_steps = _positive_int(num_steps, "num_steps", 2)
    z_dim = _positive_int(z_dim, "z_dim")
    paths = {"slerp": slerp, "linear": lerp}
    if kind not in paths:
        raise ValueError(f"kind must be 'slerp' or 'linear', got {kind!r}")
    za, zb = jax.random.normal(key, (2, num_rows, z_dim))
    ts = jnp.linspace(0.0, 1.0, num_steps)
    latents = jax.vmap(lambda a, b: paths[kind](a, b, ts))(za, zb)
    images = generate(latents.reshape(num_rows * num_steps, z_dim))
    return images, latents


# ----------------------------------------------------------------------------- inversion

def _per_example_mse(generate: Generator, z: Array, x: Array) -> Array:
    """``[N]``: mean over each example's entries of ``(generate(z) - x)^2``."""
    err = jnp.square(generate(z).astype(jnp.float32) - x)
    return jnp.mean(err.reshape(err.shape[0], -1), axis=1)


@partial(jax.jit, static_argnames=("generate", "steps"))
def _invert_loop(generate: Generator, x: Array, z_init: Array, steps: int, learning_rate: Array,
                 prior_weight: Array) -> Tuple[Array, Array]:
    opt = optax.adam(learning_rate)

    def objective(z):
        # A sum of per-example terms: each row of z gets exactly its own gradient, and Adam
        # is per-coordinate, so every example is inverted as if it were alone.
        prior = prior_weight * jnp.mean(jnp.square(z), axis=1)
        return jnp.sum(_per_example_mse(generate, z, x) + prior)

    def step(carry, _):
        z, opt_state = carry
        grad = jax.grad(objective)(z)
        updates, opt_state = opt.update(grad, opt_state, z)
        return (optax.apply_updates(z, updates), opt_state), None

    (z, _), _ = jax.lax.scan(step, (z_init, opt.init(z_init)), None, length=steps)
    return z, _per_example_mse(generate, z, x)


def invert(generate: Generator, x: Array, z_init: Array, steps: int = 500, learning_rate: float = 0.05,
           prior_weight: float = 0.0) -> Tuple[Array, Array]:
    """GAN inversion by optimization (Zhu et al. 2016, Sec. 3.1; Creswell & Bharath 2018)::

        z* = argmin_z  mean_pixels (generate(z) - x)^2  +  prior_weight * mean_j z_j^2

    per example, with ``optax.adam(learning_rate)`` for ``steps`` steps from ``z_init``; the
    loop is one ``jax.lax.scan`` under ``jax.jit`` (pure: no key, the start is the caller's).
    The prior term is the negative log-density of ``N(0, I)`` up to scale, keeping ``z`` where
    the generator was trained (Creswell & Bharath 2018 regularize likewise).

    Args:
      generate: ``z [N, Z] -> x [N, ...]``, acting on each example independently. It is a
        static argument of the compiled loop (a new closure recompiles).
      x: target images ``[N, ...]``, the shape of ``generate(z_init)``.
      z_init: starting latents ``[N, Z]``: random draws (``jax.random.normal(key, (N, Z))``),
        or an encoder's guess ``z_init = encoder(x)`` for an ``encoder(x [N, ...]) -> z [N, Z]``
        (Zhu et al. 2016's hybrid: a learned encoder initializes the optimization).
      steps: Adam steps (>= 1).
      learning_rate: Adam step size (> 0).
      prior_weight: weight (>= 0) of ``mean z^2``; ``0`` is the plain reconstruction.

    Returns:
      ``(z [N, Z], mse [N])``: the final latents and their reconstruction error
      ``mean_pixels (generate(z) - x)^2`` (without the prior term).
    """
    x = jnp.asarray(x, jnp.float32)
    z_init = _float(z_init, "z_init", 2, "[N, Z]")
    if x.ndim < 1 or x.shape[0] != z_init.shape[0]:
        raise ValueError(f"invert: x {x.shape} and z_init {z_init.shape} must have the same batch size N "
                         "(x [N, ...], z_init [N, Z])")
    out = jax.eval_shape(generate, z_init)
    if tuple(out.shape) != x.shape:
        raise ValueError(f"invert: generate(z_init) has shape {tuple(out.shape)}, but x has shape {x.shape}")
    steps = _positive_int(steps, "steps")
    if not float(learning_rate) > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    if not float(prior_weight) >= 0:
        raise ValueError(f"prior_weight must be >= 0, got {prior_weight!r}")
    return _invert_loop(generate, x, z_init, steps, jnp.float32(learning_rate), jnp.float32(prior_weight))


# ----------------------------------------------------------------------------- directions

def probe_direction(z: Array, factor: Array) -> Array:
    """Unit latent direction ``[Z]`` along which a factor grows, from a linear probe.

    Fits ``factor ~ <z, w> + b`` by least squares over ``z [N, Z]``, ``factor [N]`` (an
    attribute score of each ``generate(z)``, e.g. a classifier's logit) and returns
    ``w / |w|``. Shen et al. 2020 (InterFaceGAN, Sec. 2) take the normal of a linear SVM
    separating binary attribute labels; this is its regression analogue for a real-valued
    factor (for a binary factor coded 0/1 it is the least-squares linear classifier). A
    factor with no linear trend in ``z`` (``w = 0``) gives the zero vector.
    """
    z = _float(z, "z", 2, "[N, Z]")
    factor = _float(factor, "factor", 1, "[N]")
    if factor.shape[0] != z.shape[0]:
        raise ValueError(f"probe_direction: z {z.shape} and factor {factor.shape} must have the same N")
    if z.shape[0] < 2:
        raise ValueError(f"probe_direction: needs N >= 2 examples, got z of shape {z.shape}")
    zc = z - jnp.mean(z, axis=0)
    fc = factor.astype(zc.dtype) - jnp.mean(factor)
    w = jnp.linalg.lstsq(zc, fc)[0]
    return w / jnp.maximum(jnp.linalg.norm(w), jnp.finfo(w.dtype).tiny)


def closed_form_directions(weight: Array, k: int) -> Tuple[Array, Array]:
    """Unsupervised semantic directions from the generator's first layer (SeFa, Shen & Zhou
    2021, Eq. 5-6).

    With the first layer ``y = z W`` (``weight W [Z, F]``, e.g. the kernel of a flax
    ``nn.Dense`` on ``z``: ``params['project']['kernel']`` of the DCGAN generator), SeFa finds
    unit ``n`` maximizing ``|n W|^2 = n^T W W^T n`` (Eq. 5; the paper writes the layer as
    ``A z`` with ``A = W^T``), solved by the eigenvectors of ``W W^T`` (Eq. 6).

    Returns ``(directions [k, Z], eigenvalues [k])``: the top-``k`` unit eigenvectors, ordered
    by descending eigenvalue (``eigenvalues[i] = |directions[i] W|^2``); each sign is fixed so
    that the largest-magnitude entry is positive.
    """
    weight = _float(weight, "weight", 2, "[Z, F]")
    k = _positive_int(k, "k")
    if k > weight.shape[0]:
        raise ValueError(f"closed_form_directions: k={k} exceeds Z={weight.shape[0]} of weight {weight.shape}")
    w = weight.astype(jnp.float32)
    vals, vecs = jnp.linalg.eigh(w @ w.T)  # ascending
    vals, vecs = vals[::-1][:k], vecs[:, ::-1][:, :k].T  # [k], [k, Z]
    lead = jnp.take_along_axis(vecs, jnp.argmax(jnp.abs(vecs), axis=1)[:, None], axis=1)
    return vecs * jnp.where(lead < 0, -1.0, 1.0), vals


def edit_grid(generate: Generator, z: Array, direction: Array, alphas: Array) -> Array:
    """Images of the edits ``z + alpha * direction``, the latent manipulation of InterFaceGAN
    (Shen et al. 2020, Sec. 2) and SeFa (Shen & Zhou 2021).

    ``z [N, Z]``, ``direction [Z]`` (e.g. from :func:`probe_direction` or a row of
    :func:`closed_form_directions`), ``alphas [A]`` -> images ``[N * A, ...]``, row-major by
    example: image ``n * A + a`` is ``generate(z[n] + alphas[a] * direction)``.
    """
    z = _float(z, "z", 2, "[N, Z]")
    direction = _float(direction, "direction", 1, "[Z]")
    alphas = _float(alphas, "alphas", 1, "[A]")
    if direction.shape[0] != z.shape[1]:
        raise ValueError(f"edit_grid: direction {direction.shape} must be [Z] with Z of z {z.shape}")
    dtype = jnp.result_type(z, direction)
    edits = z[:, None, :] + alphas.astype(dtype)[None, :, None] * direction.astype(dtype)
    return generate(edits.reshape(-1, z.shape[1]))
