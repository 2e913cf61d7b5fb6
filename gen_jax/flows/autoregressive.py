"""Masked autoregressive flow (MAF) and inverse autoregressive flow (IAF) on vectors.

Both are affine autoregressive maps whose shift ``mu`` and log-scale ``alpha`` come from a
:class:`~gen_jax.flows.made.MADE`; they differ in which side the MADE reads
(Papamakarios et al. 2017, Sec. 3.2: IAF is MAF with the roles of ``x`` and ``u`` swapped,
so one is fast exactly where the other is sequential). With ``forward`` the normalizing
direction (data ``x`` -> noise ``u``, as everywhere in :mod:`gen_jax.flows`):

**MAF** (Papamakarios et al. 2017, Eqs. 2-5), MADE on ``x``:

    forward (density, one pass):   u_i = (x_i - mu_i(x_<i)) exp(-alpha_i(x_<i))
    inverse (sampling, D passes):  x_i = u_i exp(alpha_i(x_<i)) + mu_i(x_<i)
    log|det du/dx| = -sum_i alpha_i(x_<i)

**IAF** (Kingma et al. 2016, Eqs. 10-11, the ``z_t = mu_t + sigma_t * z_{t-1}`` form with
``sigma = exp(alpha)``), MADE on ``u``:

    inverse (sampling, one pass):  x_i = u_i exp(alpha_i(u_<i)) + mu_i(u_<i)
    forward (density, D passes):   u_i = (x_i - mu_i(u_<i)) exp(-alpha_i(u_<i))
    log|det du/dx| = -sum_i alpha_i(u_<i)

The Jacobians are triangular, so the log-dets are the sums above. The sequential
direction is a ``lax.fori_loop`` of ``D`` MADE passes (after pass ``k`` the first ``k``
variables are exact). ``alpha = 5 tanh(raw / 5)`` bounds the per-layer scale (a stability
choice; the papers use the raw output). Conditioning: ``cond [B, E]`` is fed to the MADE.
"""
from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from gen_jax.flows.bijector import Bijector
from gen_jax.flows.made import MADE

ALPHA_BOUND = 5.0


def _shift_log_scale(out: jax.Array):
    """MADE output ``[B, 2, D]`` -> ``(mu, alpha)`` each ``[B, D]``."""
    return out[:, 0], ALPHA_BOUND * jnp.tanh(out[:, 1] / ALPHA_BOUND)


def _check(x):
    if x.ndim != 2:
        raise ValueError(f"autoregressive flows act on vectors [B, D], got shape {x.shape}")


class _Autoregressive(Bijector):
    hidden: Sequence[int] = (64, 64)

    def setup(self):
        self.made = MADE(tuple(self.hidden), num_params=2)

    def _params(self, v, cond):
        return _shift_log_scale(self.made(v, cond))

    def _solve(self, target, cond, update):
        """Fixed point of ``v <- update(target, mu(v), alpha(v))`` by ``D`` passes (exact for an
        autoregressive MADE). Returns ``(v, alpha(v))``."""
        self.made(jnp.zeros_like(target), cond)  # creates the params when initializing
        variables = self.made.variables
        made = MADE(tuple(self.hidden), num_params=2, parent=None)  # unbound: a pure function

        def body(_, v):
            mu, alpha = _shift_log_scale(made.apply(variables, v, cond))
            return update(target, mu, alpha)

        v = jax.lax.fori_loop(0, target.shape[-1], body, jnp.zeros_like(target))
        return v, self._params(v, cond)[1]


class MAF(_Autoregressive):
    """Masked autoregressive flow layer (see module docstring). ``hidden``: MADE widths."""

    def forward(self, x, cond=None):
        _check(x)
        mu, alpha = self._params(x, cond)
        return (x - mu) * jnp.exp(-alpha), -jnp.sum(alpha, axis=-1)

    def inverse(self, u, cond=None):
        _check(u)
        x, alpha = self._solve(u, cond, lambda u_, mu, a: u_ * jnp.exp(a) + mu)
        return x, jnp.sum(alpha, axis=-1)


class IAF(_Autoregressive):
    """Inverse autoregressive flow layer (see module docstring). ``hidden``: MADE widths."""

    def forward(self, x, cond=None):
        _check(x)
        u, alpha = self._solve(x, cond, lambda x_, mu, a: (x_ - mu) * jnp.exp(-a))
        return u, -jnp.sum(alpha, axis=-1)

    def inverse(self, u, cond=None):
        _check(u)
        mu, alpha = self._params(u, cond)
        return u * jnp.exp(alpha) + mu, jnp.sum(alpha, axis=-1)
