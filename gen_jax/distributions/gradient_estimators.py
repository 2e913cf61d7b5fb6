"""Monte Carlo estimators of ``grad_theta E_{p_theta(x)}[f(x)]``, as pure functions.

Every estimator draws ``num`` samples ``x_i ~ p_theta`` and returns the ``num`` *per-sample*
gradient estimates ``g_i`` (a pytree like ``params`` with a leading ``[num]`` axis, in a
:class:`GradientSamples`), so that both the estimate ``mean_i g_i`` and the estimator's variance
``Var[g_i]`` are measurable (:func:`moments`). The estimators (Mohamed, Rosca, Figurnov & Mnih
2020, "Monte Carlo Gradient Estimation in Machine Learning", JMLR 21):

* :func:`score_function`: the score-function / likelihood-ratio / REINFORCE estimator
  (Williams 1992, Sec. 4, the REINFORCE update ``dw = alpha (r - b) d ln g / dw`` whose mean
  follows the gradient of ``E[r]``, his Theorem 1; Mohamed et al. 2020, Sec. 4)::

      g_i = (f(x_i) - b) grad_theta log p_theta(x_i)

  with no baseline (``b = 0``), a constant baseline, or a moving-average baseline from
  earlier batches (:func:`moving_average`); any ``b`` that does not depend on ``x_i`` keeps it
  unbiased because ``E[grad log p] = 0`` (Mohamed et al. 2020, Secs. 4 and 7.4).
* :func:`leave_one_out`: the multi-sample baseline ``b_i = mean_{j != i} f(x_j)`` (Mnih &
  Rezende 2016, VIMCO, Sec. 3; Kool et al. 2019), unbiased since ``b_i`` is independent of
  ``x_i``.
* :func:`control_variate`: the score-function estimator with a control variate of known
  mean (Mohamed et al. 2020, Sec. 7.4, ``g~ = g - c (h - E[h])`` with the optimal coefficient
  ``c* = Cov(g, h) / Var(h)``), applied per parameter element, ``c`` estimated
  from the other samples (leave-one-out) so that the estimate stays exactly unbiased.
* :func:`pathwise`: the pathwise / reparameterisation estimator (Mohamed et al. 2020, Sec. 5;
  Kingma & Welling 2014, Sec. 2.4): with ``x = g(eps; theta)``, ``eps ~ p(eps)``,
  ``g_i = grad_theta f(g(eps_i; theta))``; needs a reparameterisable ``p`` and a
  differentiable ``f``.
* :func:`score_function_surrogate`: the scalar whose autodiff gradient is the score-function
  estimate, ``stop_gradient(f - b) * log p`` (Schulman et al. 2015, Sec. 4, the surrogate
  loss), for training models with discrete latents (NVIL, Mnih & Gregor 2014, Secs. 2-3).

A distribution is a :class:`Distribution`: ``sample(params, key) -> x`` (one draw, any event
shape) and ``log_prob(params, x) -> []``, and whether ``sample`` is a differentiable function of
``params`` (``reparameterised``). :func:`normal` and :func:`bernoulli` are the two families of
the tests and the benchmark. ``f`` maps one draw ``x`` to a scalar.

All functions are pure and ``jit``-able with ``f``, the distribution and ``num`` static
(``jax.jit(functools.partial(score_function, f, dist, num=n))``); bad input (``num`` not a
positive int, a baseline of the wrong shape, a non-reparameterisable distribution asked for a
pathwise gradient, an ``f`` that is not scalar, integer params) raises a ``ValueError`` naming
the argument at trace time.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

PyTree = Any
_EPS = 1e-12


class Distribution(NamedTuple):
    """A parametric family ``p_theta(x)``.

    Attributes:
      sample: ``(params, key) -> x``, one draw (any event shape). For a ``reparameterised``
        family it is a differentiable function ``x = g(eps; params)`` of the params.
      log_prob: ``(params, x) -> []`` the log density / mass of one draw.
      reparameterised: whether :func:`pathwise` may differentiate through ``sample``.
      name: for error messages.
    """

    sample: Callable
    log_prob: Callable
    reparameterised: bool = False
    name: str = "distribution"


class GradientSamples(NamedTuple):
    """The per-sample output of an estimator.

    Attributes:
      grads: a pytree like ``params``, each leaf ``[num, *leaf.shape]``: the estimates ``g_i``
        whose mean is the gradient estimate (each ``g_i`` is itself unbiased).
      values: ``f(x_i)``, float ``[num]``.
    """

    grads: PyTree
    values: jax.Array


# ------------------------------------------------------------------------------------------
# Two families (tests, benchmark).
# ------------------------------------------------------------------------------------------


def normal() -> Distribution:
    """``N(loc, scale^2)`` elementwise, params ``{'loc': [...], 'scale': [...]}`` (``scale > 0``),
    reparameterised as ``x = loc + scale * eps``, ``eps ~ N(0, 1)`` (Mohamed et al. 2020,
    Sec. 5, location-scale transforms); ``log_prob`` sums over the elements."""

    def sample(params, key):
        loc, scale = params["loc"], params["scale"]
        eps = jax.random.normal(key, jnp.shape(loc), jnp.result_type(loc, jnp.float32))
        return loc + scale * eps

    def log_prob(params, x):
        loc, scale = params["loc"], params["scale"]
        z = (x - loc) / scale
        return jnp.sum(-0.5 * z * z - jnp.log(scale) - 0.5 * jnp.log(2.0 * jnp.pi))

    return Distribution(sample, log_prob, reparameterised=True, name="normal")


def bernoulli(param: str = "logits") -> Distribution:
    """``Bernoulli(p)`` elementwise with params ``{'logits': l}`` (``p = sigmoid(l)``) or, with
    ``param='probs'``, ``{'probs': p}`` (``0 < p < 1``). Draws are float ``0.``/``1.``; not
    reparameterisable (a step function of any noise). ``log_prob = sum x log p + (1 - x)
    log(1 - p)``."""
    if param not in ("logits", "probs"):
        raise ValueError(f"bernoulli: param must be 'logits' or 'probs', got {param!r}")

    def log_p(params):
        if param == "logits":
            l = params["logits"]
            return jax.nn.log_sigmoid(l), jax.nn.log_sigmoid(-l)
        p = params["probs"]
        return jnp.log(p), jnp.log1p(-p)

    def sample(params, key):
        lp1, _ = log_p(params)
        return (jnp.log(jax.random.uniform(key, jnp.shape(lp1))) < lp1).astype(jnp.float32)

    def log_prob(params, x):
        lp1, lp0 = log_p(params)
        return jnp.sum(x * lp1 + (1.0 - x) * lp0)

    return Distribution(sample, log_prob, reparameterised=False, name=f"bernoulli({param})")


# ------------------------------------------------------------------------------------------
# Checks and shared pieces.
# ------------------------------------------------------------------------------------------


def _check_num(num, where: str, minimum: int = 1) -> None:
    if isinstance(num, bool) or not isinstance(num, int) or num < minimum:
        raise ValueError(f"{where}: num must be a Python int >= {minimum}, got {num!r}")


def _check_params(params, where: str) -> None:
    leaves = jax.tree_util.tree_leaves_with_path(params)
    if not leaves:
        raise ValueError(f"{where}: params must hold at least one array")
    for path, leaf in leaves:
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(f"{where}: params{jax.tree_util.keystr(path)} must be a float array "
                             f"(gradients are taken w.r.t. it), got dtype {jnp.result_type(leaf)}")


def _check_dist(dist, where: str) -> None:
    if not isinstance(dist, Distribution):
        raise ValueError(f"{where}: dist must be a gradient_estimators.Distribution, got {type(dist).__name__}")


def _draw(f: Callable, dist: Distribution, params, key, num: int, where: str):
    """``num`` draws ``x [num, ...]`` (no gradient through them) and ``f(x_i) [num]``."""
    keys = jax.random.split(key, num)
    xs = jax.lax.stop_gradient(jax.vmap(dist.sample, (None, 0))(params, keys))
    values = jax.vmap(f)(xs)
    if values.shape != (num,):
        raise ValueError(f"{where}: f must map one draw to a scalar, got shape {values.shape[1:]} per draw")
    return xs, jnp.asarray(values, jnp.float32)


def scores(dist: Distribution, params, xs) -> PyTree:
    """``grad_theta log p_theta(x_i)`` for each draw: ``xs [num, ...]`` -> pytree like
    ``params`` with leaves ``[num, *leaf.shape]`` (the score, whose mean under ``p_theta`` is 0,
    Mohamed et al. 2020, Sec. 4)."""
    lp = jax.eval_shape(dist.log_prob, params, jax.tree.map(lambda x: x[0], xs))
    if lp.shape != ():
        raise ValueError(f"{dist.name}: log_prob must return a scalar per draw, got shape {lp.shape}")
    return jax.vmap(jax.grad(dist.log_prob), (None, 0))(params, jax.lax.stop_gradient(xs))


def _scale(weights: jax.Array, tree: PyTree) -> PyTree:
    """``weights[i] * leaf[i]`` for ``weights [num]`` and leaves ``[num, ...]``."""
    return jax.tree.map(lambda g: weights.reshape(weights.shape + (1,) * (g.ndim - 1)).astype(g.dtype) * g, tree)


# ------------------------------------------------------------------------------------------
# Estimators.
# ------------------------------------------------------------------------------------------


def score_function(f: Callable, dist: Distribution, params: PyTree, key: jax.Array, num: int,
                   baseline=None) -> GradientSamples:
    """The score-function (REINFORCE) estimator (Williams 1992, Sec. 4 and Theorem 1; Mohamed et
    al. 2020, Sec. 4)::

        g_i = (f(x_i) - b) grad_theta log p_theta(x_i),     x_i ~ p_theta,   i < num

    Args:
      f: one draw -> scalar (need not be differentiable).
      dist: a :class:`Distribution` (need not be reparameterisable).
      params: pytree of float arrays, ``theta``.
      key: PRNG key.
      num: draws, a Python int >= 1.
      baseline: ``None`` (no baseline), a scalar ``[]`` (constant, or a moving average of
        earlier batches' ``f``, :func:`moving_average`) or ``[num]`` (one per draw); it must
        not depend on the draw it multiplies, else the estimate is biased.

    Returns:
      :class:`GradientSamples` (leaves ``[num, *leaf.shape]``, values ``[num]``).
    """
    where = "score_function"
    _check_dist(dist, where)
    _check_num(num, where)
    _check_params(params, where)
    b = jnp.zeros((), jnp.float32) if baseline is None else jnp.asarray(baseline, jnp.float32)
    if b.shape not in ((), (num,)):
        raise ValueError(f"{where}: baseline must be a scalar [] or one per draw [{num}], got shape {b.shape}")
    xs, values = _draw(f, dist, params, key, num, where)
    return GradientSamples(_scale(values - b, scores(dist, params, xs)), values)


def leave_one_out(f: Callable, dist: Distribution, params: PyTree, key: jax.Array,
                  num: int) -> GradientSamples:
    """The score-function estimator with the leave-one-out baseline of ``num >= 2`` draws
    (Mnih & Rezende 2016, VIMCO, Sec. 3; Kool, van Hoof & Welling 2019)::

        g_i = (f(x_i) - 1/(num - 1) sum_{j != i} f(x_j)) grad_theta log p_theta(x_i)

    Each ``g_i`` is unbiased (its baseline is independent of ``x_i``); the ``g_i`` are
    weakly correlated through the shared draws, so the variance of their mean is that of
    independent groups of ``num`` (measure it over independent keys). Shapes as
    :func:`score_function`."""
    where = "leave_one_out"
    _check_dist(dist, where)
    _check_num(num, where, minimum=2)
    _check_params(params, where)
    xs, values = _draw(f, dist, params, key, num, where)
    b = (jnp.sum(values) - values) / (num - 1)
    return GradientSamples(_scale(values - b, scores(dist, params, xs)), values)


def control_variate(f: Callable, dist: Distribution, params: PyTree, key: jax.Array, num: int,
                    h: Optional[Callable] = None, h_mean: Optional[Callable] = None) -> GradientSamples:
    """The score-function estimator with a control variate and its estimated optimal
    coefficient (Mohamed et al. 2020, Sec. 7.4).

    With ``a_i = f(x_i) s_i`` (the plain estimate, ``s_i = grad log p_theta(x_i)``) and the
    control variate ``v_i = h(x_i) s_i``, the score-function estimate of ``grad E[h]``, whose
    mean ``m = grad_theta E_p[h]`` is known in closed form (autodiff of ``h_mean(params) =
    E_p[h]``)::

        g_i = a_i - c_i (v_i - m),   c_i = sum_{j != i} a_j (v_j - m) / sum_{j != i} (v_j - m)^2

    per parameter element: ``c_i`` estimates ``c* = Cov(a, v) / Var(v)``, the coefficient of
    least variance, from the other ``num - 1`` draws, so ``E[c_i (v_i - m)] = 0`` and ``g_i``
    is unbiased (a coefficient fitted on the same draw would bias it). The default
    ``h = 1`` (``m = 0``, ``v_i = s_i``) is the variance-optimal constant baseline
    ``c* = E[f s^2] / E[s^2]`` of each parameter (Mohamed et al. 2020, Sec. 7.4).

    Args:
      f, dist, params, key: as :func:`score_function`.
      num: draws, a Python int >= 2.
      h: one draw -> scalar, or ``None`` (with ``h_mean``: both or neither).
      h_mean: ``params -> []``, the closed form of ``E_{p_theta}[h]``.

    Returns:
      :class:`GradientSamples` as :func:`score_function`.
    """
    where = "control_variate"
    _check_dist(dist, where)
    _check_num(num, where, minimum=2)
    _check_params(params, where)
    if (h is None) != (h_mean is None):
        raise ValueError(f"{where}: give both h and h_mean (its closed-form mean) or neither")
    xs, values = _draw(f, dist, params, key, num, where)
    s = scores(dist, params, xs)
    if h is None:
        hv, m = jnp.ones((num,), jnp.float32), jax.tree.map(jnp.zeros_like, params)
    else:
        hv = jnp.asarray(jax.vmap(h)(xs), jnp.float32)
        if hv.shape != (num,):
            raise ValueError(f"{where}: h must map one draw to a scalar, got shape {hv.shape[1:]} per draw")
        out = jax.eval_shape(h_mean, params)
        if out.shape != ():
            raise ValueError(f"{where}: h_mean must return a scalar (E[h]), got shape {out.shape}")
        m = jax.grad(h_mean)(params)

    def leaf(s_, m_):
        a = values.reshape((num,) + (1,) * (s_.ndim - 1)) * s_
        d = hv.reshape(a.shape[:1] + (1,) * (s_.ndim - 1)) * s_ - m_
        cov = jnp.sum(a * d, 0) - a * d
        var = jnp.sum(d * d, 0) - d * d
        return a - cov / jnp.maximum(var, _EPS) * d

    return GradientSamples(jax.tree.map(leaf, s, m), values)


def pathwise(f: Callable, dist: Distribution, params: PyTree, key: jax.Array, num: int) -> GradientSamples:
    """The pathwise (reparameterisation) estimator (Mohamed et al. 2020, Sec. 5; Kingma &
    Welling 2014, Sec. 2.4)::

        g_i = grad_theta f(g(eps_i; theta)),     eps_i ~ p(eps)

    ``dist`` must be ``reparameterised`` (its ``sample`` a differentiable function of the
    params) and ``f`` differentiable; a non-reparameterisable distribution is a ``ValueError``
    (use :func:`score_function`). Shapes as :func:`score_function`."""
    where = "pathwise"
    _check_dist(dist, where)
    if not dist.reparameterised:
        raise ValueError(f"{where}: {dist.name} is not reparameterisable (its draws are not a differentiable "
                         f"function of the params); use score_function, leave_one_out or control_variate")
    _check_num(num, where)
    _check_params(params, where)
    keys = jax.random.split(key, num)

    def one(k):
        out = f(dist.sample(params, k))
        if jnp.shape(out) != ():
            raise ValueError(f"{where}: f must map one draw to a scalar, got shape {jnp.shape(out)}")
        return out

    def value_and_grad(k):
        return jax.value_and_grad(lambda p: f(dist.sample(p, k)))(params)

    jax.eval_shape(one, keys[0])
    values, grads = jax.vmap(value_and_grad)(keys)
    return GradientSamples(grads, jnp.asarray(values, jnp.float32))


# ------------------------------------------------------------------------------------------
# Baselines, surrogates, statistics.
# ------------------------------------------------------------------------------------------


def moving_average(baseline, values, decay: float) -> jax.Array:
    """``decay * b + (1 - decay) * mean(values)``: the exponential moving-average baseline of
    the score-function estimator (the reinforcement comparison ``b = r_bar`` of
    Williams 1992, Sec. 4; Mnih & Gregor 2014, Sec. 3.1). Use the returned value for the *next* batch
    (so that it is independent of that batch's draws). ``baseline`` a scalar, ``values [n]``,
    ``0 <= decay < 1``; returns float32 ``[]``."""
    b = jnp.asarray(baseline, jnp.float32)
    if b.shape != ():
        raise ValueError(f"moving_average: baseline must be a scalar, got shape {b.shape}")
    if not 0.0 <= float(decay) < 1.0:
        raise ValueError(f"moving_average: decay must lie in [0, 1), got {decay}")
    return decay * b + (1.0 - decay) * jnp.mean(jnp.asarray(values, jnp.float32))


def score_function_surrogate(log_prob: jax.Array, signal: jax.Array, baseline=0.0) -> jax.Array:
    """``stop_gradient(signal - baseline) * log_prob``, elementwise (Schulman et al. 2015,
    "Gradient Estimation Using Stochastic Computation Graphs", Sec. 4, the surrogate loss):
    its gradient w.r.t. the parameters of ``log_prob = log q_phi(z)`` (``z`` a draw of ``q_phi``
    taken without gradient) is the score-function estimate ``(signal - b) grad log q_phi(z)``
    of :func:`score_function`, while its value carries no information. Shapes broadcast;
    returns ``log_prob``'s shape."""
    log_prob = jnp.asarray(log_prob)
    b = jnp.asarray(baseline, log_prob.dtype)
    try:
        jnp.broadcast_shapes(jnp.shape(signal), b.shape, log_prob.shape)
    except ValueError:
        raise ValueError(f"score_function_surrogate: signal {jnp.shape(signal)}, baseline {b.shape} and log_prob "
                         f"{log_prob.shape} do not broadcast") from None
    return jax.lax.stop_gradient(jnp.asarray(signal, log_prob.dtype) - b) * log_prob


def moments(samples: GradientSamples) -> tuple[PyTree, PyTree]:
    """``(mean, variance)`` over the ``[num]`` axis of each leaf of ``samples.grads`` (the
    estimate, and the per-sample variance of the estimator; the variance of the mean of
    ``num`` independent draws is ``variance / num``). Variance with ``ddof=1`` (``num >= 2``)."""
    n = jax.tree.leaves(samples.grads)[0].shape[0]
    if n < 2:
        raise ValueError(f"moments: need >= 2 per-sample estimates, got {n}")
    return (jax.tree.map(lambda g: jnp.mean(g, 0), samples.grads),
            jax.tree.map(lambda g: jnp.var(g, 0, ddof=1), samples.grads))
