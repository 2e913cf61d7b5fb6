"""GAN objectives: the two players' losses, weight clipping, gradient penalties and BEGAN.

Every loss takes discriminator logits / critic outputs float ``[B]`` (a trailing ``[B, 1]`` is
squeezed; any other shape is a ``ValueError`` naming the argument) and returns a float32
scalar, the mean over the batch. ``D = sigmoid(logit)``; the log-sigmoid terms are written as
``softplus`` (``-log sigmoid(t) = softplus(-t)``, ``-log(1 - sigmoid(t)) = softplus(t)``), so
every loss and its gradient is finite for any finite logit (``+-1e4`` included).

=========================  ==================================================  ========================================
name                       discriminator / generator loss                      paper
=========================  ==================================================  ========================================
:func:`d_minimax`          ``mean softplus(-r) + mean softplus(f)``            Goodfellow et al. 2014, Eq. 1
:func:`g_minimax`          ``-mean softplus(f)`` (saturating)                  Goodfellow et al. 2014, Eq. 1
:func:`g_nonsaturating`    ``mean softplus(-f)``                               Goodfellow et al. 2014, Sec. 3
:func:`d_hinge`            ``mean relu(1 - r) + mean relu(1 + f)``             Lim & Ye 2017; Miyato et al. 2018, Eq. 16
:func:`g_hinge`            ``-mean f``                                         Lim & Ye 2017; Miyato et al. 2018, Eq. 17
:func:`d_least_squares`    ``0.5 mean (r - b)^2 + 0.5 mean (f - a)^2``         Mao et al. 2017, Eq. 2
:func:`g_least_squares`    ``0.5 mean (f - c)^2``                              Mao et al. 2017, Eq. 2
:func:`d_wasserstein`      ``mean f - mean r``                                 Arjovsky et al. 2017, Eq. 3 / Alg. 1
:func:`g_wasserstein`      ``-mean f``                                         Arjovsky et al. 2017, Eq. 3 / Alg. 1
=========================  ==================================================  ========================================

(``r`` = logits on real data, ``f`` = logits on generated data.) :data:`LOSSES` maps the
names of ``config.model.loss`` to ``(d_loss_fn, g_loss_fn)`` pairs (:func:`get_losses`).

Regularizers and other objectives:

* :func:`clip_weights`: WGAN weight clipping (Arjovsky et al. 2017, Alg. 1 line 7) as an optax
  transformation chained after the critic's optimizer.
* :func:`gradient_penalty`: WGAN-GP (Gulrajani et al. 2017, Eq. 3 / Alg. 1 lines 4-8).
* :func:`r1_penalty`: R1 (Mescheder et al. 2018, Eq. 9).
* BEGAN (Berthelot et al. 2017, Eq. 1-4, Sec. 3.4.1): :func:`began_recon_loss`,
  :func:`began_losses`, :func:`began_k_update`, :func:`began_convergence`,
  :func:`check_began_gamma`.
* :func:`optimal_discriminator`: ``D*(x) = p_data / (p_data + p_g)`` (Goodfellow et al. 2014,
  Prop. 1).

The penalties return the bare penalty (no ``lambda`` / ``gamma / 2`` weight: the caller
multiplies) and the per-example gradient norms ``[B]`` (a diagnostic).
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import jax
import jax.numpy as jnp
import optax

Array = jax.Array
LossFn = Callable[..., Array]


def _logits(x, name: str) -> Array:
    """``x [B]`` or ``[B, 1]`` -> float32 ``[B]``; anything else is a ``ValueError`` naming ``name``."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name} must be a float array, got dtype {x.dtype}")
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.ndim != 1:
        raise ValueError(f"{name} must have shape [B] or [B, 1], got shape {x.shape}")
    return x.astype(jnp.float32)


# ----------------------------------------------------------------------------- minimax

def d_minimax(real_logits: Array, fake_logits: Array) -> Array:
    """Discriminator loss of the minimax GAN (Goodfellow et al. 2014, Eq. 1), ``D = sigmoid``::

        -E[log D(x)] - E[log(1 - D(G(z)))] = mean softplus(-r) + mean softplus(f)

    ``real_logits r [B]``, ``fake_logits f [B']`` (or ``[B, 1]``) -> float32 scalar. The
    binary cross-entropy of real = 1, fake = 0; its minimizer is :func:`optimal_discriminator`.
    """
    r = _logits(real_logits, "real_logits")
    f = _logits(fake_logits, "fake_logits")
    return jnp.mean(jax.nn.softplus(-r)) + jnp.mean(jax.nn.softplus(f))


def g_minimax(fake_logits: Array) -> Array:
    """Saturating generator loss (Goodfellow et al. 2014, Eq. 1)::

        E[log(1 - D(G(z)))] = -mean softplus(f)

    ``fake_logits f [B]`` (or ``[B, 1]``) -> float32 scalar. Its gradient ``sigmoid(f) / B``
    vanishes where the discriminator confidently rejects samples (``f -> -inf``).
    """
    f = _logits(fake_logits, "fake_logits")
    return -jnp.mean(jax.nn.softplus(f))


def g_nonsaturating(fake_logits: Array) -> Array:
    """Non-saturating generator loss (Goodfellow et al. 2014, Sec. 3)::

        -E[log D(G(z))] = mean softplus(-f)

    ``fake_logits f [B]`` (or ``[B, 1]``) -> float32 scalar; gradient ``-sigmoid(-f) / B``.
    """
    f = _logits(fake_logits, "fake_logits")
    return jnp.mean(jax.nn.softplus(-f))


# ----------------------------------------------------------------------------- hinge

def d_hinge(real_logits: Array, fake_logits: Array) -> Array:
    """Hinge discriminator loss (Lim & Ye 2017; Miyato et al. 2018, Eq. 16)::

        mean relu(1 - r) + mean relu(1 + f)

    ``real_logits r [B]``, ``fake_logits f [B']`` (or ``[B, 1]``) -> float32 scalar.
    """
    r = _logits(real_logits, "real_logits")
    f = _logits(fake_logits, "fake_logits")
    return jnp.mean(jax.nn.relu(1.0 - r)) + jnp.mean(jax.nn.relu(1.0 + f))


def g_hinge(fake_logits: Array) -> Array:
    """Hinge generator loss (Lim & Ye 2017; Miyato et al. 2018, Eq. 17): ``-mean f``.

    ``fake_logits f [B]`` (or ``[B, 1]``) -> float32 scalar.
    """
    return -jnp.mean(_logits(fake_logits, "fake_logits"))


# ----------------------------------------------------------------------------- least squares

def d_least_squares(real_logits: Array, fake_logits: Array, a: float = 0.0, b: float = 1.0) -> Array:
    """LSGAN discriminator loss (Mao et al. 2017, Eq. 2)::

        0.5 mean (r - b)^2 + 0.5 mean (f - a)^2

    with targets ``b`` for real and ``a`` for fake data (the paper's 0-1 coding by default).
    ``real_logits r [B]``, ``fake_logits f [B']`` (or ``[B, 1]``; the raw outputs, no
    sigmoid) -> float32 scalar.
    """
    r = _logits(real_logits, "real_logits")
    f = _logits(fake_logits, "fake_logits")
    return 0.5 * jnp.mean(jnp.square(r - b)) + 0.5 * jnp.mean(jnp.square(f - a))


def g_least_squares(fake_logits: Array, c: float = 1.0) -> Array:
    """LSGAN generator loss (Mao et al. 2017, Eq. 2): ``0.5 mean (f - c)^2``, ``c`` the value
    the generator wants the discriminator to believe. ``fake_logits f [B]`` (or ``[B, 1]``)
    -> float32 scalar.
    """
    f = _logits(fake_logits, "fake_logits")
    return 0.5 * jnp.mean(jnp.square(f - c))


# ----------------------------------------------------------------------------- Wasserstein

def d_wasserstein(real_critic: Array, fake_critic: Array) -> Array:
    """WGAN critic loss (Arjovsky et al. 2017, Eq. 3 / Alg. 1): ``mean f - mean r``, minus the
    critic's estimate of the Wasserstein-1 distance. Needs a Lipschitz critic:
    :func:`clip_weights` or :func:`gradient_penalty`. ``real_critic r [B]``,
    ``fake_critic f [B']`` (or ``[B, 1]``) -> float32 scalar.
    """
    r = _logits(real_critic, "real_critic")
    f = _logits(fake_critic, "fake_critic")
    return jnp.mean(f) - jnp.mean(r)


def g_wasserstein(fake_critic: Array) -> Array:
    """WGAN generator loss (Arjovsky et al. 2017, Eq. 3 / Alg. 1): ``-mean f``.
    ``fake_critic f [B]`` (or ``[B, 1]``) -> float32 scalar.
    """
    return -jnp.mean(_logits(fake_critic, "fake_critic"))


LOSSES: Dict[str, Tuple[LossFn, LossFn]] = {
    "minimax": (d_minimax, g_minimax),
    "nonsaturating": (d_minimax, g_nonsaturating),
    "hinge": (d_hinge, g_hinge),
    "least_squares": (d_least_squares, g_least_squares),
    "wasserstein": (d_wasserstein, g_wasserstein),
}


def get_losses(name: str) -> Tuple[LossFn, LossFn]:
    """``(d_loss_fn, g_loss_fn)`` of the loss named ``name`` (``config.model.loss``), from
    :data:`LOSSES`."""
    if name not in LOSSES:
        raise ValueError(f"config.model.loss: unknown GAN loss {name!r}; known: {sorted(LOSSES)}")
    return LOSSES[name]


# ----------------------------------------------------------------------------- weight clipping

def _clipped_step(u: Array, p: Array, c: float) -> Array:
    """An update ``s`` with ``p + s`` (rounded as ``optax.apply_updates`` rounds it) equal to
    ``p + u`` if that lies in ``[-c, c]``, else to the nearest box edge (up to one rounding,
    and never outside the box)."""
    cc = jnp.asarray(c, p.dtype)
    q = p + u
    edge = jnp.clip(q, -cc, cc)
    step = jnp.where(q == edge, u, edge - p)
    # edge - p is rounded; when |p| >> c, p + step may miss the box by a fraction of ulp(p):
    # one step of the update away from zero puts it back inside.
    r = p + step
    step = jnp.where(r > cc, jnp.nextafter(step, jnp.asarray(-jnp.inf, step.dtype)), step)
    step = jnp.where(r < -cc, jnp.nextafter(step, jnp.asarray(jnp.inf, step.dtype)), step)
    return step.astype(u.dtype)


def clip_weights(c: float) -> optax.GradientTransformation:
    """WGAN weight clipping (Arjovsky et al. 2017, Alg. 1 line 7: ``w <- clip(w, -c, c)``) as
    an optax transformation, chained after the critic's optimizer::

        optax.chain(optax.rmsprop(5e-5), clip_weights(0.01))

    It turns the update ``u`` of each parameter ``p`` into ``clip(p + u, -c, c) - p``, so the
    parameters after ``optax.apply_updates`` lie in ``[-c, c]`` (exactly: the rounding of the
    subtraction is corrected), and a parameter the plain update keeps inside the box gets the
    plain update unchanged. Stateless; ``update`` needs ``params`` (``ValueError`` without).
    Every leaf is clipped, biases included, as in the paper.
    """
    if not c > 0:
        raise ValueError(f"clip_weights: the clipping bound c must be > 0, got {c}")

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        if params is None:
            raise ValueError("clip_weights: update needs params (call update(updates, state, params))")
        return jax.tree.map(lambda u, p: _clipped_step(u, p, c), updates, params), state

    return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------- gradient penalties

def _input_grads(critic_fn: Callable[[Array], Array], x: Array) -> Array:
    """``d critic(x)_i / d x_i`` for every example, ``[B, ...]``: one ``jax.grad`` of the sum of
    the outputs, which is the per-example gradient because example ``i``'s output depends on
    ``x_i`` only (the critic must not mix examples)."""
    def total(xx):
        out = _logits(critic_fn(xx), "critic_fn output")
        if out.shape[0] != xx.shape[0]:
            raise ValueError(f"critic_fn output must have shape [B] = [{xx.shape[0]}], got shape {out.shape}")
        return jnp.sum(out)

    return jax.grad(total)(x)


def _norms(g: Array) -> Tuple[Array, Array]:
    """Squared norms and norms ``[B]`` of the flattened examples of ``g [B, ...]``; the norm's
    gradient at 0 is taken as 0 (not NaN), so the penalties can be differentiated again."""
    sq = jnp.sum(jnp.square(g.reshape(g.shape[0], -1).astype(jnp.float32)), axis=1)
    pos = sq > 0
    return sq, jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def _examples(x, name: str) -> Array:
    x = jnp.asarray(x)
    if x.ndim < 1 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{name} must be a float array [B, ...], got shape {x.shape} and dtype {x.dtype}")
    return x


def gradient_penalty(critic_fn: Callable[[Array], Array], real: Array, fake: Array, key: Array,
                     target: float = 1.0) -> Tuple[Array, Array]:
    """WGAN-GP gradient penalty (Gulrajani et al. 2017, Eq. 3 / Alg. 1 lines 4-8)::

        eps_i ~ U[0, 1]                       eps = jax.random.uniform(key, (B,))
        x_hat_i = eps_i real_i + (1 - eps_i) fake_i
        n_i = || d critic(x_hat)_i / d x_hat_i ||       (over the flattened example)
        penalty = mean_i (n_i - target)^2

    ``critic_fn`` maps ``[B, ...] -> [B]`` (or ``[B, 1]``) and must treat examples
    independently: the per-example gradients are one ``jax.grad`` of the sum of its outputs.
    (A critic with batch norm mixes examples; the GAN model factory refuses it with a
    gradient penalty, this function cannot tell.) ``real``, ``fake`` float ``[B, ...]`` of
    the same shape (``ValueError`` naming both otherwise); ``key`` a PRNG key.

    Returns ``(penalty, grad_norms)``: a float32 scalar without the weight ``lambda`` (the
    caller multiplies; the paper uses 10) and the norms ``n [B]``. Differentiable w.r.t. the
    critic's parameters (double backprop); a zero gradient's norm has gradient 0.
    """
    real = _examples(real, "real")
    fake = _examples(fake, "fake")
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty: real and fake must have the same shape, "
                         f"got real {real.shape} and fake {fake.shape}")
    b = real.shape[0]
    eps = jax.random.uniform(key, (b,), jnp.float32).reshape((b,) + (1,) * (real.ndim - 1))
    x_hat = eps * real + (1.0 - eps) * fake
    _, norms = _norms(_input_grads(critic_fn, x_hat))
    return jnp.mean(jnp.square(norms - target)), norms


def r1_penalty(critic_fn: Callable[[Array], Array], real: Array) -> Tuple[Array, Array]:
    """R1 gradient penalty on real data (Mescheder et al. 2018, Eq. 9)::

        penalty = mean_i || d D(x)_i / d x_i ||^2,    x = real

    ``critic_fn`` maps ``[B, ...] -> [B]`` (or ``[B, 1]``; the logits, before any sigmoid) and
    must treat examples independently (one ``jax.grad`` of the sum, as in
    :func:`gradient_penalty`). ``real`` float ``[B, ...]``. Returns ``(penalty, grad_norms)``:
    a float32 scalar without the weight ``gamma / 2`` (the caller multiplies) and the norms
    ``[B]``.
    """
    real = _examples(real, "real")
    sq, norms = _norms(_input_grads(critic_fn, real))
    return jnp.mean(sq), norms


# ----------------------------------------------------------------------------- BEGAN

def _loss_vector(x, name: str) -> Array:
    """Per-example losses ``[B]`` (or an already averaged scalar) -> float32."""
    x = jnp.asarray(x)
    if x.ndim > 1:
        raise ValueError(f"{name} must have shape [B] (per-example losses) or (), got shape {x.shape}")
    return x.astype(jnp.float32)


def check_began_gamma(gamma: float, field: str = "config.model.began_gamma") -> None:
    """Refuse a BEGAN diversity ratio ``gamma = E[L(G(z))] / E[L(x)]`` outside ``(0, 1]``
    (Berthelot et al. 2017, Sec. 3.2); the message names ``field``."""
    if not 0.0 < gamma <= 1.0:
        raise ValueError(f"{field}: gamma must be in (0, 1], got {gamma}")


def began_recon_loss(x: Array, recon: Array) -> Array:
    """BEGAN's autoencoder loss per example (Berthelot et al. 2017, Eq. 1, ``eta = 1``: L1, up to
    the mean over pixels): ``L(v)_i = mean |v_i - D(v_i)|`` over the example's elements.

    ``x``, ``recon`` float ``[B, ...]`` of the same shape -> float32 ``[B]``.
    """
    x = _examples(x, "x")
    recon = _examples(recon, "recon")
    if x.shape != recon.shape:
        raise ValueError(f"began_recon_loss: x and recon must have the same shape, "
                         f"got x {x.shape} and recon {recon.shape}")
    d = jnp.abs(x.astype(jnp.float32) - recon.astype(jnp.float32))
    return jnp.mean(d.reshape(d.shape[0], -1), axis=1)


def began_losses(loss_real: Array, loss_fake: Array, k: Array) -> Tuple[Array, Array]:
    """BEGAN's two losses (Berthelot et al. 2017, Eq. 4)::

        d_loss = mean L(x) - k_t mean L(G(z))
        g_loss = mean L(G(z))

    ``loss_real``, ``loss_fake`` ``[B]`` (:func:`began_recon_loss`), ``k`` a scalar in
    ``[0, 1]`` held fixed (``stop_gradient``: it is a control variable, updated by
    :func:`began_k_update`, not trained). Returns two float32 scalars. (The generator is
    trained on ``g_loss`` w.r.t. its own parameters only, with ``loss_fake`` recomputed or
    with the discriminator's parameters held fixed, as in the paper.)
    """
    lr = jnp.mean(_loss_vector(loss_real, "loss_real"))
    lf = jnp.mean(_loss_vector(loss_fake, "loss_fake"))
    k = jnp.asarray(k, jnp.float32)
    if k.ndim:
        raise ValueError(f"began_losses: k must be a scalar, got shape {k.shape}")
    return lr - jax.lax.stop_gradient(k) * lf, lf


def began_k_update(k: Array, loss_real: Array, loss_fake: Array, gamma: float, lambda_k: float) -> Array:
    """BEGAN's proportional control of ``k`` (Berthelot et al. 2017, Eq. 4)::

        k_{t+1} = clip(k_t + lambda_k (gamma mean L(x) - mean L(G(z))), 0, 1)

    ``k`` a scalar, ``loss_real``, ``loss_fake`` ``[B]``, ``gamma`` in ``(0, 1]`` (checked
    when it is a Python number), ``lambda_k`` the gain (the paper uses 0.001). Returns the
    new float32 scalar ``k``; no gradient flows through it.
    """
    if isinstance(gamma, (int, float)):
        check_began_gamma(gamma)
    lr = jnp.mean(_loss_vector(loss_real, "loss_real"))
    lf = jnp.mean(_loss_vector(loss_fake, "loss_fake"))
    k = jnp.asarray(k, jnp.float32)
    if k.ndim:
        raise ValueError(f"began_k_update: k must be a scalar, got shape {k.shape}")
    new = jnp.clip(k + lambda_k * (gamma * lr - lf), 0.0, 1.0)
    return jax.lax.stop_gradient(new)


def began_convergence(loss_real: Array, loss_fake: Array, gamma: float) -> Array:
    """BEGAN's global convergence measure (Berthelot et al. 2017, Sec. 3.4.1)::

        M_global = mean L(x) + | gamma mean L(x) - mean L(G(z)) |

    ``loss_real``, ``loss_fake`` ``[B]``, ``gamma`` in ``(0, 1]`` -> float32 scalar.
    """
    if isinstance(gamma, (int, float)):
        check_began_gamma(gamma)
    lr = jnp.mean(_loss_vector(loss_real, "loss_real"))
    lf = jnp.mean(_loss_vector(loss_fake, "loss_fake"))
    return lr + jnp.abs(gamma * lr - lf)


# ----------------------------------------------------------------------------- theory

def optimal_discriminator(p_data: Array, p_g: Array) -> Array:
    """The discriminator that minimizes :func:`d_minimax` for a fixed generator (Goodfellow et
    al. 2014, Prop. 1): ``D*(x) = p_data(x) / (p_data(x) + p_g(x))``, elementwise on densities
    of any (broadcastable) shape. NaN where both densities are 0."""
    p_data = jnp.asarray(p_data)
    p_g = jnp.asarray(p_g)
    return p_data / (p_data + p_g)
