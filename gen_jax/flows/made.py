"""MADE: masked autoencoder for distribution estimation (Germain et al. 2015).

An MLP whose weight matrices are multiplied by binary masks so that output ``d`` depends
only on inputs ``< d`` (in the given order). With degrees ``m^0(d) = d`` (``d = 1..D``) for
the inputs, ``m^l(k) in {1, ..., D - 1}`` for hidden unit ``k`` of layer ``l`` (assigned
cyclically; the paper samples them, Sec. 4), the masks are

    hidden (Eq. 12):  M^l[k', k] = 1  iff  m^l(k) >= m^{l-1}(k')
    output (Eq. 13):  M^V[k, d]  = 1  iff  d > m^L(k)            (strict)

(written for weights ``[in, out]``), which makes the network autoregressive. Each of the
``D`` variables gets ``num_params`` outputs (MAF uses 2: shift and log-scale). A
conditioning input ``cond [B, E]`` (conditional MADE, Papamakarios et al. 2017, Sec. 3.4)
connects to the first hidden layer unmasked. The output layer is zero-initialized, so a
fresh MADE outputs zeros (the flows built on it start at the identity).
"""
from __future__ import annotations

from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def made_degrees(dim: int, hidden: Sequence[int]) -> list[np.ndarray]:
    """Degrees ``[m^0 (D,), m^1 (H_1,), ...]`` (see module docstring)."""
    degs = [np.arange(1, dim + 1)]
    top = max(dim - 1, 1)
    for h in hidden:
        degs.append(np.arange(h) % top + 1)
    return degs


def made_masks(dim: int, hidden: Sequence[int], num_params: int) -> list[np.ndarray]:
    """Float masks ``[in, out]`` of each layer; the output layer has ``num_params * D``
    columns ordered ``(param, variable)``."""
    degs = made_degrees(dim, hidden)
    masks = [(d_out[None, :] >= d_in[:, None]).astype(np.float32) for d_in, d_out in zip(degs[:-1], degs[1:])]
    out_deg = np.tile(degs[0], num_params)
    masks.append((out_deg[None, :] > degs[-1][:, None]).astype(np.float32))
    return masks


class MaskedDense(nn.Module):
    """``x @ (W * mask) + b`` with a fixed NumPy ``mask [in, out]``."""

    mask: np.ndarray
    zero_init: bool = False

    @nn.compact
    def __call__(self, x):
        shape = self.mask.shape
        init = nn.initializers.zeros if self.zero_init else nn.initializers.lecun_normal()
        w = self.param("kernel", init, shape)
        b = self.param("bias", nn.initializers.zeros, shape[1:])
        return x @ (w * jnp.asarray(self.mask)) + b


class MADE(nn.Module):
    """``x [B, D] (+ cond [B, E]) -> [B, num_params, D]`` autoregressive outputs.

    Attributes:
      hidden: hidden widths.
      num_params: outputs per variable.
    """

    hidden: Sequence[int] = (64, 64)
    num_params: int = 2

    @nn.compact
    def __call__(self, x: jax.Array, cond: Optional[jax.Array] = None) -> jax.Array:
        if x.ndim != 2:
            raise ValueError(f"MADE: input must be [B, D], got shape {x.shape}")
        dim = x.shape[-1]
        masks = made_masks(dim, tuple(self.hidden), self.num_params)
        h = x
        for i, m in enumerate(masks[:-1]):
            h = MaskedDense(m, name=f"masked_{i}")(h)
            if i == 0 and cond is not None:
                h = h + nn.Dense(m.shape[1], name="cond_proj")(cond)
            h = nn.relu(h)
        out = MaskedDense(masks[-1], zero_init=True, name="masked_out")(h)
        return out.reshape(x.shape[0], self.num_params, dim)
