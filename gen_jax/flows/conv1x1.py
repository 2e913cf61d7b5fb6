"""Invertible 1x1 convolution, plain and LU-decomposed.

Kingma & Dhariwal 2018 (Glow), Sec. 3.2 and Table 1, row "Invertible 1x1 convolution":
a learned ``C x C`` matrix ``W`` applied at every position,

    forward:  y_{i,j} = W x_{i,j}
    inverse:  x_{i,j} = W^{-1} y_{i,j}
    log-det:  h * w * log|det W|                    (plain: ``slogdet``, O(C^3) once per batch)

LU-decomposed (Glow Sec. 3.2, Eq. 10 and Table 1):

    W = P L (U + diag(s)),   log-det = h * w * sum_c log|s_c|

with ``P`` a fixed permutation, ``L`` lower triangular with unit diagonal, ``U`` strictly
upper triangular, and ``s = sign(s) * exp(log|s|)`` with ``sign(s)`` fixed. Trained params
are ``L``'s strict lower part, ``U``'s strict upper part and ``log|s|``.

Init (Glow Sec. 3.2): ``W`` a random rotation matrix (log-det 0), drawn from a NumPy
generator seeded by the module's static ``seed`` because ``P`` and ``sign(s)`` must be
compile-time constants; or ``w_init`` given explicitly (checked to be invertible, and
LU-factored with ``scipy.linalg.lu`` for the LU variant). The same ``seed`` / ``w_init``
gives the same ``W`` in both variants.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from gen_jax.flows.bijector import Bijector

MAX_CONDITION = 1e6


def random_rotation(seed: int, c: int) -> np.ndarray:
    """A ``c x c`` orthogonal matrix with ``det = +-1``: QR of a Gaussian matrix with the
    signs of ``diag(R)`` folded into ``Q`` (so it is Haar-distributed)."""
    g = np.random.default_rng(seed).normal(size=(c, c))
    q, r = np.linalg.qr(g)
    return (q * np.sign(np.diag(r))[None, :]).astype(np.float32)


def check_invertible(w: Any, c: int, where: str = "Invertible1x1Conv.w_init") -> np.ndarray:
    """``w`` as float64 ``[c, c]``; ``ValueError`` if the shape is wrong, a value is not
    finite, or the matrix is singular (condition number above ``1e6``)."""
    w = np.asarray(w, np.float64)
    if w.shape != (c, c):
        raise ValueError(f"{where}: must be [{c}, {c}] for an input with {c} channels, got shape {w.shape}")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"{where}: non-finite entries in a weight of shape {w.shape}")
    cond = np.linalg.cond(w)
    if not np.isfinite(cond) or cond > MAX_CONDITION:
        raise ValueError(f"{where}: the {c}x{c} weight is singular or nearly so (condition number "
                         f"{cond:.3g} > {MAX_CONDITION:.0e}); an invertible 1x1 convolution needs an "
                         f"invertible W")
    return w


def lu_factors(w: np.ndarray):
    """``W = P L (U + diag(s))`` -> ``(P, L, U_strict, sign(s), log|s|)`` as NumPy arrays."""
    p, l, u = scipy.linalg.lu(w)
    s = np.diag(u)
    if np.any(s == 0):
        raise ValueError(f"Invertible1x1Conv.w_init: LU factor has a zero pivot (diag U = {s}); W is singular")
    return (p.astype(np.float32), l.astype(np.float32), np.triu(u, 1).astype(np.float32),
            np.sign(s).astype(np.float32), np.log(np.abs(s)).astype(np.float32))


def _spatial_size(x: jax.Array) -> int:
    return int(math.prod(x.shape[1:-1]))


class Invertible1x1Conv(Bijector):
    """See module docstring. Works on ``[B, ..., C]`` (images or vectors).

    Attributes:
      lu: use the LU parameterization.
      seed: seed of the initial random rotation (static; distinct per layer).
      w_init: optional explicit initial ``W`` ``[C, C]`` (a NumPy array or nested tuples).
    """

    lu: bool = False
    seed: int = 0
    w_init: Optional[Any] = None

    def _initial_w(self, c: int) -> np.ndarray:
        if self.w_init is None:
            return random_rotation(self.seed, c).astype(np.float64)
        return check_invertible(self.w_init, c)

    @nn.compact
    def _weight(self, c: int):
        """``(W [C, C], log|det W|, W^{-1} [C, C])`` from the params."""
        w0 = self._initial_w(c)
        if not self.lu:
            w = self.param("kernel", lambda _: jnp.asarray(w0, jnp.float32))
            _, logdet = jnp.linalg.slogdet(w)
            return w, logdet, lambda: jnp.linalg.inv(w)
        p, l0, u0, sign_s, log_s0 = lu_factors(w0)
        lower = self.param("lower", lambda _: jnp.asarray(l0))
        upper = self.param("upper", lambda _: jnp.asarray(u0))
        log_s = self.param("log_s", lambda _: jnp.asarray(log_s0))
        eye = jnp.eye(c, dtype=jnp.float32)
        l_mat = jnp.tril(lower, -1) + eye
        u_mat = jnp.triu(upper, 1) + jnp.diag(sign_s * jnp.exp(log_s))
        w = jnp.asarray(p) @ l_mat @ u_mat

        def inverse():
            # W^{-1} = (U + diag s)^{-1} L^{-1} P^T by triangular solves (P^T = P^{-1}).
            l_inv = jax.scipy.linalg.solve_triangular(l_mat, eye, lower=True, unit_diagonal=True)
            u_inv = jax.scipy.linalg.solve_triangular(u_mat, eye, lower=False)
            return u_inv @ l_inv @ jnp.asarray(p.T)

        return w, jnp.sum(log_s), inverse

    def forward(self, x, cond=None):
        w, logdet, _ = self._weight(x.shape[-1])
        y = jnp.einsum("...c,dc->...d", x, w)
        return y, jnp.broadcast_to(_spatial_size(x) * logdet, (x.shape[0],))

    def inverse(self, y, cond=None):
        _, logdet, inv = self._weight(y.shape[-1])
        x = jnp.einsum("...c,dc->...d", y, inv())
        return x, jnp.broadcast_to(-_spatial_size(y) * logdet, (y.shape[0],))
