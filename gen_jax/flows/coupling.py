"""Affine and additive coupling layers with checkerboard and channel masks.

Affine coupling (Dinh et al. 2017, RealNVP, Eqs. 4-6; Glow Table 1, row "Affine coupling
layer"): split ``x`` into a conditioning part ``x_a`` and a transformed part ``x_b``;

    forward:  y_a = x_a,  y_b = x_b * s(x_a) + t(x_a)
    inverse:  x_a = y_a,  x_b = (y_b - t(y_a)) / s(y_a)
    log-det:  sum_j log s(x_a)_j                    (triangular Jacobian, Eq. 6)

Additive coupling (Dinh et al. 2015, NICE, Eq. 4 / Glow Table 1 "additive"): ``s = 1``,
log-det 0.

Masks (RealNVP Sec. 3.4, Eq. 9, ``y = b * x + (1 - b) * (x * s(b * x) + t(b * x))``):

* ``'checkerboard'``: ``b_{i,j} = 1`` where ``(i + j) % 2 == parity`` on images
  ``[B, H, W, C]`` (alternating positions ``i % 2 == parity`` on vectors ``[B, D]``); the
  network sees ``b * x`` and only the ``1 - b`` positions are transformed;
* ``'channel'``: the first ``floor(C / 2)`` channels condition the rest (``parity = 0``) or
  the other way round (``parity = 1``).

Scale ``s = exp(log s)`` from the raw network output ``h`` (stable, bounded):

* ``'sigmoid'``: ``s = sigmoid(h + 2) / sigmoid(2)`` (Glow's ``sigmoid(h + 2)``, rescaled so
  ``h = 0`` gives ``s = 1``);
* ``'tanh'``: ``log s = 2 tanh(h / 2)`` (``s`` in ``(e^-2, e^2)``; RealNVP's ``tanh``-bounded
  scale, Sec. 4.1).

The network's last layer is zero-initialized (:mod:`gen_jax.flows.nets`), so a fresh
coupling is the identity (``t = 0``, ``s = 1``).
"""
from __future__ import annotations

from typing import Any, Literal, Optional, get_args

import flax.linen as nn
import jax
import jax.numpy as jnp

from gen_jax.flows.bijector import Bijector, batch_zeros, sum_except_batch
from gen_jax.flows.nets import coupling_net

MASKS = ("checkerboard", "channel")
CouplingKind = Literal["affine", "additive"]
ScaleFn = Literal["sigmoid", "tanh"]
KINDS = get_args(CouplingKind)
SCALES = get_args(ScaleFn)

_SIGMOID_2 = float(jax.nn.log_sigmoid(2.0))


def log_scale(h: jax.Array, scale_fn: str) -> jax.Array:
    """``log s`` from the raw output ``h`` (see module docstring)."""
    if scale_fn == "sigmoid":
        return jax.nn.log_sigmoid(h + 2.0) - _SIGMOID_2
    if scale_fn == "tanh":
        return 2.0 * jnp.tanh(h / 2.0)
    raise ValueError(f"scale_fn must be one of {SCALES}, got {scale_fn!r}")


def checkerboard_mask(shape: tuple, parity: int) -> jax.Array:
    """The mask ``b`` (1 = conditioning) for an input of ``shape`` ``[B, H, W, C]`` (returns
    ``[H, W, 1]``) or ``[B, D]`` (returns ``[D]``)."""
    if len(shape) == 4:
        i = jnp.arange(shape[1])[:, None]
        j = jnp.arange(shape[2])[None, :]
        return ((i + j) % 2 == parity).astype(jnp.float32)[:, :, None]
    if len(shape) == 2:
        return (jnp.arange(shape[1]) % 2 == parity).astype(jnp.float32)
    raise ValueError(f"checkerboard mask needs [B, H, W, C] or [B, D], got shape {shape}")


class Coupling(Bijector):
    """Affine / additive coupling (see module docstring).

    Attributes:
      mask: ``'checkerboard'`` or ``'channel'``.
      parity: 0 or 1 (which half conditions).
      kind: ``'affine'`` or ``'additive'``.
      hidden: width of the conditioner network.
      num_blocks: residual blocks of the conv conditioner.
      scale_fn: ``'sigmoid'`` or ``'tanh'``.
      use_cond: feed ``cond [B, E]`` (when given) to the conditioner network.
      dtype: compute dtype of the conditioner's hidden layers (``None``: float32;
        :mod:`gen_jax.nn.precision`); its output, the shift, log-scale and log-det are float32.
    """

    mask: str = "channel"
    parity: int = 0
    kind: str = "affine"
    hidden: int = 64
    num_blocks: int = 0
    scale_fn: str = "sigmoid"
    use_cond: bool = True
    dtype: Optional[Any] = None

    def _check(self, x):
        if self.mask not in MASKS:
            raise ValueError(f"Coupling.mask must be one of {MASKS}, got {self.mask!r}")
        if self.kind not in KINDS:
            raise ValueError(f"Coupling.kind must be one of {KINDS}, got {self.kind!r}")
        if x.ndim not in (2, 4):
            raise ValueError(f"Coupling: input must be [B, H, W, C] or [B, D], got shape {x.shape}")
        if self.mask == "channel" and x.shape[-1] < 2:
            raise ValueError(f"Coupling: a channel mask needs at least 2 channels to split, got input "
                             f"shape {x.shape}")
        if self.mask == "checkerboard" and x.ndim == 2 and x.shape[-1] < 2:
            raise ValueError(f"Coupling: a checkerboard mask needs D >= 2, got input shape {x.shape}")

    @nn.compact
    def _shift_log_scale(self, xa, cond, out_channels: int):
        """``(t, log s)`` each ``[..., out_channels]`` from the conditioning input."""
        per = 2 if self.kind == "affine" else 1
        net = coupling_net(xa.ndim, self.hidden, per * out_channels, self.num_blocks, self.dtype)
        h = net(xa, cond if self.use_cond else None)
        if self.kind == "additive":
            return h, jnp.zeros_like(h)
        return h[..., :out_channels], log_scale(h[..., out_channels:], self.scale_fn)

    def _split(self, x):
        c1 = x.shape[-1] // 2
        a, b = x[..., :c1], x[..., c1:]
        return (a, b) if self.parity == 0 else (b, a)

    def _merge(self, a, b):
        return jnp.concatenate([a, b] if self.parity == 0 else [b, a], axis=-1)

    def forward(self, x, cond=None):
        self._check(x)
        if self.mask == "channel":
            xa, xb = self._split(x)
            t, ls = self._shift_log_scale(xa, cond, xb.shape[-1])
            yb = xb * jnp.exp(ls) + t
            return self._merge(xa, yb), sum_except_batch(ls) if self.kind == "affine" else batch_zeros(x)
        b = checkerboard_mask(x.shape, self.parity)
        t, ls = self._shift_log_scale(x * b, cond, x.shape[-1])
        t, ls = t * (1 - b), ls * (1 - b)
        y = x * jnp.exp(ls) + t  # = b x + (1 - b)(x s + t): masked ls = 0, t = 0 where b = 1
        return y, sum_except_batch(ls) if self.kind == "affine" else batch_zeros(x)

    def inverse(self, y, cond=None):
        self._check(y)
        if self.mask == "channel":
            ya, yb = self._split(y)
            t, ls = self._shift_log_scale(ya, cond, yb.shape[-1])
            xb = (yb - t) * jnp.exp(-ls)
            return self._merge(ya, xb), -sum_except_batch(ls) if self.kind == "affine" else batch_zeros(y)
        b = checkerboard_mask(y.shape, self.parity)
        t, ls = self._shift_log_scale(y * b, cond, y.shape[-1])
        t, ls = t * (1 - b), ls * (1 - b)
        x = (y - t) * jnp.exp(-ls)
        return x, -sum_except_batch(ls) if self.kind == "affine" else batch_zeros(y)
