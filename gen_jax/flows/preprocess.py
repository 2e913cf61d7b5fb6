"""Pre-processing bijectors from data on ``[0, 1)`` to the flow's input space.

Their log-dets are part of the model's density, so ``log_prob`` stays the log density of
the dequantized data ``y`` on ``[0, 1)^D`` (the bits/dim convention of
:mod:`gen_jax.distributions.bpd`).

* :class:`Logit` (Dinh et al. 2017, RealNVP, Sec. 4.1: "we model the density of
  logit(alpha + (1 - alpha) * x/256)", alpha = .05; here symmetric in the two ends):

      forward:  s = alpha + (1 - 2 alpha) y,   x = logit(s) = log s - log(1 - s)
      inverse:  y = (sigmoid(x) - alpha) / (1 - 2 alpha)
      log-det:  sum_d [log(1 - 2 alpha) - log s_d - log(1 - s_d)]

* :class:`Affine` (constant, elementwise): ``x = scale * y + shift``, log-det
  ``D log|scale|``. Glow's ``y - 0.5`` (Kingma & Dhariwal 2018, code ``preprocess``) is
  ``Affine(1, -0.5)``, log-det 0.
"""
from __future__ import annotations

import math
from typing import Literal, get_args

import jax
import jax.numpy as jnp

from gen_jax.flows.bijector import Bijector, sum_except_batch


class Logit(Bijector):
    """``y in [0, 1)`` -> ``logit(alpha + (1 - 2 alpha) y)`` (see module docstring)."""

    alpha: float = 0.05

    def _check(self):
        if not 0.0 < self.alpha < 0.5:
            raise ValueError(f"Logit.alpha must be in (0, 0.5), got {self.alpha}")

    def forward(self, y, cond=None):
        self._check()
        s = self.alpha + (1.0 - 2.0 * self.alpha) * y
        x = jnp.log(s) - jnp.log1p(-s)
        ldj = math.log(1.0 - 2.0 * self.alpha) - jnp.log(s) - jnp.log1p(-s)
        return x, sum_except_batch(ldj)

    def inverse(self, x, cond=None):
        self._check()
        y = (jax.nn.sigmoid(x) - self.alpha) / (1.0 - 2.0 * self.alpha)
        ldj = jax.nn.log_sigmoid(x) + jax.nn.log_sigmoid(-x) - math.log(1.0 - 2.0 * self.alpha)
        return y, sum_except_batch(ldj)


class Affine(Bijector):
    """Constant elementwise ``x = scale * y + shift`` (see module docstring)."""

    scale: float = 1.0
    shift: float = 0.0

    def _ldj(self, x):
        if self.scale == 0:
            raise ValueError("Affine.scale must be non-zero (the map would not be invertible)")
        d = math.prod(x.shape[1:])
        return jnp.full((x.shape[0],), d * math.log(abs(self.scale)), jnp.float32)

    def forward(self, y, cond=None):
        return y * self.scale + self.shift, self._ldj(y)

    def inverse(self, x, cond=None):
        return (x - self.shift) / self.scale, -self._ldj(x)


Preprocess = Literal["shift", "logit"]
PREPROCESS = get_args(Preprocess)


def preprocessing(kind: str, alpha: float = 0.05) -> Bijector:
    """The named pre-processing: ``'shift'`` is ``Affine(1, -1/2)`` (Glow), ``'logit'`` is
    ``Logit(alpha)`` (RealNVP)."""
    if kind == "shift":
        return Affine(1.0, -0.5)
    if kind == "logit":
        return Logit(alpha)
    raise ValueError(f"preprocessing must be one of {PREPROCESS}, got {kind!r}")
